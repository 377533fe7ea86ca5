//! Kafka word count: sentences from a Kafka topic → split → count (fields grouping on the word)
//! → each new count written to another topic as `word` → `count`.
//!
//! Start a broker with `scripts/dev-kafka`, create the topics and write some sentences:
//!
//! ```sh
//! scripts/dev-kafka                                   # terminal 1: a broker on 127.0.0.1:9092
//! cargo run --release --example kafka_word_count      # terminal 2: runs until Ctrl-C
//! ```
//!
//! Settings come from the environment: `KAFKA_BOOTSTRAP` (default `127.0.0.1:9092`),
//! `SENTENCES_TOPIC` (default `sentences`), `COUNTS_TOPIC` (default `word-counts`). Every
//! sentence is processed at least once: the spout commits an offset only once everything before
//! it was counted and written, and the bolt acks a count only once the broker has it.
//! `-- --describe` prints the topology's spec; submitted to a cluster, it runs there unchanged.

use std::collections::HashMap;
use std::process::ExitCode;

use squall::prelude::*;
use squall::{BuildError, ComponentError};
use squall_kafka::{KafkaBolt, KafkaBoltConfig, KafkaSpout, KafkaSpoutConfig, Record};

#[derive(Tuple)]
struct Sentence {
    text: Str,
}

#[derive(Tuple)]
struct Word {
    word: Str,
}

/// What the Kafka bolt writes: `key` and `value` become the record's key and value.
#[derive(Tuple)]
struct WordCount {
    key: Str,
    value: u64,
}

#[derive(Clone, Bolt)]
#[squall(output = Word)]
struct Split;

impl Bolt for Split {
    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        for word in input.str(0)?.split_whitespace() {
            out.emit(Word { word: Str::new(word.to_lowercase()) })?;
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
        out.emit(WordCount { key: word, value: *count })?;
        Ok(())
    }
}

fn env(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

fn build() -> Result<Topology, BuildError> {
    let bootstrap = env("KAFKA_BOOTSTRAP", "127.0.0.1:9092");
    let sentences = env("SENTENCES_TOPIC", "sentences");
    let counts = env("COUNTS_TOPIC", "word-counts");
    let source = KafkaSpoutConfig::new(&bootstrap, &[sentences.as_str()]);
    let spout = KafkaSpout::with_translator(source, |record: &Record<'_>| {
        let text = std::str::from_utf8(record.value?).ok()?;
        Some(Sentence { text: Str::new(text) })
    });
    let mut builder = TopologyBuilder::new();
    builder.spout("sentences", spout, 2);
    builder.bolt("split", Split, 2).shuffle_grouping("sentences");
    builder.bolt("count", Count::default(), 2).fields_grouping("split", ["word"]);
    builder.bolt("write", KafkaBolt::to_topic(KafkaBoltConfig::new(&bootstrap), counts), 1).shuffle_grouping("count");
    builder.build()
}

fn main() -> ExitCode {
    squall::main(build)
}
