//! Word count: sentences spout → split bolt → count bolt (fields grouping on the word) → report.
//!
//! `cargo run --release --example word_count` generates a fixed pseudo-random input, counts its
//! words, prints the top words, and checks every count against the input it generated: the
//! program exits with 1 if any count is wrong. `-- --describe` prints the topology's spec.

use std::collections::HashMap;
use std::process::ExitCode;

use squall::prelude::*;
use squall::{BuildError, ComponentError};

/// Sentences to generate.
const SENTENCES: u64 = 400_000;
/// The seed of the input: the report regenerates the same input to check the counts.
const SEED: u64 = 0x5eed_cafe;

const VOCABULARY: [&str; 32] = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "storm",
    "squall",
    "stream",
    "tuple",
    "spout",
    "bolt",
    "acker",
    "nimbus",
    "worker",
    "task",
    "grouping",
    "fields",
    "shuffle",
    "river",
    "cloud",
    "rain",
    "wind",
    "thunder",
    "lightning",
    "calm",
    "sea",
    "wave",
    "sky",
    "night",
];

/// The `k`-th sentence of the input: 4 to 11 words drawn by a hash of `k`, so every spout task
/// can generate its share without coordination.
fn sentence(k: u64) -> String {
    let mut state = SEED ^ k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut next = || {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let words = 4 + next() % 8;
    let mut sentence = String::new();
    for i in 0..words {
        if i > 0 {
            sentence.push(' ');
        }
        // Skew the distribution so the top words are clear: low indices are drawn more often.
        let a = next() % VOCABULARY.len() as u64;
        let b = next() % VOCABULARY.len() as u64;
        sentence.push_str(VOCABULARY[a.min(b) as usize]);
    }
    sentence
}

#[derive(Tuple)]
struct Sentence {
    text: Str,
}

#[derive(Tuple)]
struct Word {
    word: Str,
}

#[derive(Tuple)]
struct WordCount {
    word: Str,
    count: u64,
}

/// Emits this task's share of the input, then says it is done.
#[derive(Clone, Spout)]
#[squall(output = Sentence)]
struct SentenceSpout {
    next: u64,
    step: u64,
}

impl Spout for SentenceSpout {
    type MsgId = ();

    async fn open(&mut self, ctx: &TopologyContext) -> Result<(), ComponentError> {
        self.next = ctx.task_index() as u64;
        self.step = ctx.this_component_tasks().len() as u64;
        Ok(())
    }

    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        if self.next >= SENTENCES {
            out.done();
            return Ok(());
        }
        out.emit(Sentence { text: Str::from(sentence(self.next)) })?;
        self.next += self.step;
        Ok(())
    }
}

#[derive(Clone, Bolt)]
#[squall(output = Word)]
struct Split;

impl Bolt for Split {
    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        for word in input.str(0)?.split(' ') {
            out.emit(Word { word: Str::new(word) })?;
        }
        Ok(())
    }
}

#[derive(Clone, Default, Bolt)]
#[squall(output = WordCount)]
struct Count {
    counts: HashMap<Str, u64>,
}

impl Bolt for Count {
    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let Word { word } = input.to()?;
        let count = self.counts.entry(word.clone()).or_default();
        *count += 1;
        out.emit(WordCount { word, count: *count })?;
        Ok(())
    }
}

/// Keeps the latest count of every word; at the end prints the top words and checks them all.
#[derive(Clone, Default, Bolt)]
struct Report {
    counts: HashMap<Str, u64>,
}

impl Bolt for Report {
    async fn execute(&mut self, input: Tuple, _out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let WordCount { word, count } = input.to()?;
        let latest = self.counts.entry(word).or_default();
        *latest = (*latest).max(count);
        Ok(())
    }

    async fn cleanup(&mut self) -> Result<(), ComponentError> {
        let mut top: Vec<(&Str, &u64)> = self.counts.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        println!("top words:");
        for (word, count) in top.iter().take(10) {
            println!("  {word:<10} {count}");
        }
        let mut expected: HashMap<String, u64> = HashMap::new();
        for k in 0..SENTENCES {
            for word in sentence(k).split(' ') {
                *expected.entry(word.to_owned()).or_default() += 1;
            }
        }
        let mut wrong = 0;
        for (word, want) in &expected {
            let got = self.counts.get(word.as_str()).copied().unwrap_or(0);
            if got != *want {
                eprintln!("wrong count for `{word}`: counted {got}, the input has {want}");
                wrong += 1;
            }
        }
        wrong += self.counts.keys().filter(|w| !expected.contains_key(w.as_str())).count();
        let total: u64 = expected.values().sum();
        if wrong > 0 {
            return Err(format!("{wrong} of {} word counts are wrong", expected.len()).into());
        }
        println!("all {} word counts match the input ({total} words in {SENTENCES} sentences)", expected.len());
        Ok(())
    }
}

fn build() -> Result<Topology, BuildError> {
    let mut builder = TopologyBuilder::new();
    builder.spout("sentences", SentenceSpout { next: 0, step: 1 }, 1);
    let split = builder.bolt("split", Split, 2).shuffle_grouping("sentences").handle();
    builder.bolt("count", Count::default(), 2).tasks(4).fields_grouping_by(&split, |w| w.word);
    builder.bolt("report", Report::default(), 1).global_grouping("count");
    builder.build()
}

fn main() -> ExitCode {
    squall::main(build)
}
