//! A word count for cluster tests, with results a test can check from outside the workers.
//!
//! The spout emits `SENTENCES` sentences (each task its share) with message ids, replays what
//! fails, and records what was acked; the sink keeps the latest count of every word. Both write
//! their state as JSON files into `$SQUALL_TEST_OUT` once a second (spout: `acked-<task>.json`,
//! sink: `counts.json`), so a test can check "every id acked" and "exact counts" while the
//! topology runs across processes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;

use squall::prelude::*;
use squall::{BuildError, ComponentError, Counter, Gauge, Histogram, ReplayQueue};

const WORDS: [&str; 8] = ["storm", "squall", "wind", "rain", "cloud", "sky", "sea", "wave"];

/// The sentence with id `k`: three words chosen by `k`.
pub fn sentence(k: u64) -> String {
    let w = |i: u64| WORDS[((k / 8u64.pow(i as u32)) % 8) as usize];
    format!("{} {} {}", w(0), w(1), w(2))
}

fn out_dir() -> Option<PathBuf> {
    std::env::var_os("SQUALL_TEST_OUT").map(PathBuf::from)
}

fn write_json(name: &str, value: &serde_json::Value) {
    let Some(dir) = out_dir() else { return };
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    if std::fs::write(&tmp, value.to_string()).is_ok() {
        let _ = std::fs::rename(&tmp, dir.join(name));
    }
}

#[derive(Tuple, Clone)]
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

#[derive(Clone, Spout)]
#[squall(output = Sentence)]
struct Sentences {
    total: u64,
    next: u64,
    step: u64,
    task: u32,
    index: u64,
    queue: ReplayQueue<u64, Sentence>,
    acked: BTreeSet<u64>,
    acked_twice: u64,
    last_write: Option<std::time::Instant>,
    /// Unix milliseconds of this process's first and latest emit.
    first_emit: Option<u64>,
    last_emit: Option<u64>,
    /// Whether the spout is active, and when it was last deactivated (unix milliseconds).
    active: bool,
    deactivated_at: Option<u64>,
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Sentences {
    fn report(&mut self, force: bool) {
        if !force && self.last_write.is_some_and(|t| t.elapsed().as_millis() < 500) {
            return;
        }
        self.last_write = Some(std::time::Instant::now());
        let step = self.step.max(1);
        let expected = if self.index < self.total { (self.total - self.index).div_ceil(step) } else { 0 };
        let value = serde_json::json!({
            "task": self.task,
            "expected": expected,
            "acked": self.acked.len(),
            "acked_twice": self.acked_twice,
            "in_flight": self.queue.in_flight(),
            "replayed": self.queue.replayed(),
            "pid": std::process::id(),
            "first_emit_millis": self.first_emit,
            "last_emit_millis": self.last_emit,
            "active": self.active,
            "deactivated_at_millis": self.deactivated_at,
        });
        write_json(&format!("acked-{}.json", self.task), &value);
        // The same, kept per process: a fencing test compares an old owner's emits with a new one's.
        write_json(&format!("spout-{}-{}.json", self.task, std::process::id()), &value);
    }
}

impl Sentences {
    fn emitted_now(&mut self) {
        let now = unix_millis();
        self.first_emit.get_or_insert(now);
        self.last_emit = Some(now);
    }
}

impl Spout for Sentences {
    type MsgId = u64;

    async fn open(&mut self, ctx: &TopologyContext) -> Result<(), ComponentError> {
        self.task = ctx.task_id();
        self.index = ctx.task_index() as u64;
        self.next = self.index;
        self.step = ctx.this_component_tasks().len() as u64;
        Ok(())
    }

    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        self.report(false);
        if let Some((id, sentence)) = self.queue.next_replay() {
            self.emitted_now();
            out.emit_with_id(sentence, id)?;
            return Ok(());
        }
        if self.next >= self.total {
            return Ok(());
        }
        self.emitted_now();
        let id = self.next;
        let sentence = Sentence { text: Str::from(sentence(id)) };
        self.queue.track(id, sentence.clone());
        out.emit_with_id(sentence, id)?;
        self.next += self.step;
        Ok(())
    }

    async fn activate(&mut self) {
        self.active = true;
        self.report(true);
    }

    async fn deactivate(&mut self) {
        self.active = false;
        self.deactivated_at = Some(unix_millis());
        self.report(true);
    }

    async fn ack(&mut self, id: u64) {
        self.queue.ack(&id);
        if !self.acked.insert(id) {
            self.acked_twice += 1;
        }
    }

    async fn fail(&mut self, id: u64) {
        self.queue.fail(id);
    }

    async fn close(&mut self) -> Result<(), ComponentError> {
        self.report(true);
        Ok(())
    }
}

/// Splits sentences; with `SQUALL_TEST_FAIL_EVERY=n`, every n-th call fails instead (the spout
/// replays the sentence, which then goes through).
#[derive(Clone, Bolt)]
#[squall(output = Word)]
struct Split {
    fail_every: Option<u64>,
    calls: u64,
}

impl Bolt for Split {
    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        self.calls += 1;
        if self.fail_every.is_some_and(|n| self.calls.is_multiple_of(n)) {
            return Err(format!("split: a test failure on call {}", self.calls).into());
        }
        for word in input.str(0)?.split(' ') {
            out.emit(Word { word: Str::new(word) })?;
        }
        Ok(())
    }
}

/// Counts words; also records which task saw which word (fields grouping check), and keeps
/// its own metrics: words counted, distinct words, word lengths.
#[derive(Clone, Default, Bolt)]
#[squall(output = WordCount)]
struct Count {
    counts: HashMap<Str, u64>,
    words: Counter,
    distinct: Gauge,
    lengths: Histogram,
}

impl Bolt for Count {
    async fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), ComponentError> {
        self.words = ctx.metrics().counter("words");
        self.distinct = ctx.metrics().gauge("distinct_words");
        self.lengths = ctx.metrics().histogram("word_length");
        Ok(())
    }

    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let Word { word } = input.to()?;
        self.words.inc();
        self.lengths.record(word.len() as f64);
        let count = self.counts.entry(word.clone()).or_default();
        *count += 1;
        let count = *count;
        self.distinct.set(self.counts.len() as f64);
        out.emit(WordCount { word, count })?;
        Ok(())
    }
}

/// Keeps the latest count per word, and which count task sent it; writes them every tick.
#[derive(Clone, Default, Bolt)]
struct Sink {
    counts: BTreeMap<String, u64>,
    tasks: BTreeMap<String, BTreeSet<u32>>,
    received: u64,
}

impl Bolt for Sink {
    async fn execute(&mut self, input: Tuple, _out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        if input.is_tick() {
            let value = serde_json::json!({ "counts": self.counts, "tasks": self.tasks, "received": self.received });
            write_json("counts.json", &value);
            return Ok(());
        }
        let WordCount { word, count } = input.to()?;
        self.received += 1;
        self.tasks.entry(word.to_string()).or_default().insert(input.source_task());
        let latest = self.counts.entry(word.to_string()).or_default();
        *latest = (*latest).max(count);
        Ok(())
    }
}

fn build() -> Result<Topology, BuildError> {
    let total = std::env::var("SQUALL_TEST_SENTENCES").ok().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let mut builder = TopologyBuilder::new();
    builder.config_mut().max_spout_pending = Some(500);
    builder.config_mut().message_timeout_secs = 5;
    let spout = Sentences {
        total,
        next: 0,
        step: 1,
        task: 0,
        index: 0,
        queue: ReplayQueue::new(),
        acked: BTreeSet::new(),
        acked_twice: 0,
        last_write: None,
        first_emit: None,
        last_emit: None,
        active: true,
        deactivated_at: None,
    };
    builder.spout("sentences", spout, 2);
    let fail_every = std::env::var("SQUALL_TEST_FAIL_EVERY").ok().and_then(|s| s.parse().ok()).filter(|n| *n > 0);
    builder.bolt("split", Split { fail_every, calls: 0 }, 2).shuffle_grouping("sentences");
    builder.bolt("count", Count::default(), 2).tasks(4).fields_grouping("split", ["word"]);
    builder.bolt("sink", Sink::default(), 1).global_grouping("count").tick_tuple_freq_secs(1);
    builder.build()
}

fn main() -> ExitCode {
    squall::main(build)
}
