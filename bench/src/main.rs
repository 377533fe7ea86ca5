//! Squall's benchmarks: `cargo run --release -p squall-bench -- <workload> [--seconds N]`.
//!
//! Runs a workload in local mode for a fixed time and prints progress, then, as its last line,
//! one JSON object with the steady-state throughput (the first second is warm-up) and the
//! process's peak resident memory.
//!
//! Workloads (the same as `../shared/peers`' timely and Flink programs):
//! - `const-null`: a spout of 100-byte strings → shuffle → a discarding bolt, 1 + 1 tasks.
//! - `word-count`: sentences round-robin from ten 8-word sentences → split → fields grouping on
//!   the word → count in a map; reports words/s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use rustc_hash::FxBuildHasher;
use squall::prelude::*;
use squall::{BuildError, ComponentError, LocalCluster};

const PAYLOAD: &str =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyzAB";

const SENTENCES: [&str; 10] = [
    "the quick brown fox jumps over the dog",
    "an apple a day keeps the doctor away",
    "four score and seven years ago our fathers",
    "to be or not to be that is",
    "all that glitters is not gold my friend",
    "a journey of a thousand miles begins here",
    "the cow jumped over the moon last night",
    "snow white and the seven dwarfs went home",
    "i am at two with nature said he",
    "stream processing engines move many tuples very fast",
];

/// Tuples that reached the measured sink, published in steps to keep the counter off the hot path.
static PROCESSED: AtomicU64 = AtomicU64::new(0);
const PUBLISH_EVERY: u64 = 4096;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Workload {
    ConstNull,
    WordCount,
}

#[derive(Parser, Debug)]
#[command(about = "Squall benchmarks; the last line printed is a JSON object")]
struct Args {
    /// The workload.
    workload: Workload,
    /// How long to run, in seconds (the first second is warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// const-null: allocate a fresh 100-byte string per tuple instead of sharing one static
    /// string (the timely peer allocates one per record).
    #[arg(long)]
    alloc_strings: bool,
    /// Executors for each bolt of the workload.
    #[arg(long, default_value_t = 1)]
    parallelism: u32,
    /// Tokio worker threads (default: the number of cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Track every spout tuple with acking (one acker task) and report complete latency.
    #[arg(long)]
    acking: bool,
    /// With --acking, `topology.max.spout.pending` per spout task.
    #[arg(long, default_value_t = 5_000)]
    max_pending: u32,
    /// Pace the spout to this many tuples per second at the sink (words/s for word-count),
    /// to measure latency below peak load.
    #[arg(long)]
    rate: Option<u64>,
}

/// Paces a spout: `next_tuple` emits only while the spout is behind its schedule.
#[derive(Clone, Default)]
struct Pace {
    per_sec: Option<f64>,
    started: Option<Instant>,
    emitted: u64,
}

impl Pace {
    fn ready(&mut self) -> bool {
        let Some(per_sec) = self.per_sec else { return true };
        let started = *self.started.get_or_insert_with(Instant::now);
        let due = started.elapsed().as_secs_f64() * per_sec;
        if (self.emitted as f64) < due {
            self.emitted += 1;
            return true;
        }
        false
    }
}

#[derive(Tuple)]
struct Payload {
    payload: Str,
}

#[derive(Tuple)]
struct Sentence {
    text: Str,
}

#[derive(Tuple)]
struct Word {
    word: Str,
}

#[derive(Clone, Spout)]
#[squall(output = Payload)]
struct ConstSpout {
    alloc: bool,
    acking: bool,
    pace: Pace,
    next_id: u64,
}

impl Spout for ConstSpout {
    type MsgId = u64;

    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        if !self.pace.ready() {
            return Ok(());
        }
        let payload = if self.alloc { Str::from(String::from(PAYLOAD)) } else { Str::new_static(PAYLOAD) };
        if self.acking {
            self.next_id += 1;
            out.emit_with_id(Payload { payload }, self.next_id)?;
        } else {
            out.emit(Payload { payload })?;
        }
        Ok(())
    }
}

/// Counts and drops what it receives.
#[derive(Clone, Default, Bolt)]
struct NullBolt {
    seen: u64,
}

impl Bolt for NullBolt {
    async fn execute(&mut self, _input: Tuple, _out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        self.seen += 1;
        if self.seen == PUBLISH_EVERY {
            PROCESSED.fetch_add(PUBLISH_EVERY, Ordering::Relaxed);
            self.seen = 0;
        }
        Ok(())
    }
}

#[derive(Clone, Default, Spout)]
#[squall(output = Sentence)]
struct SentenceSpout {
    next: usize,
    acking: bool,
    pace: Pace,
    next_id: u64,
}

impl Spout for SentenceSpout {
    type MsgId = u64;

    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        if !self.pace.ready() {
            return Ok(());
        }
        let sentence = Sentence { text: Str::new_static(SENTENCES[self.next]) };
        if self.acking {
            self.next_id += 1;
            out.emit_with_id(sentence, self.next_id)?;
        } else {
            out.emit(sentence)?;
        }
        self.next = (self.next + 1) % SENTENCES.len();
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
struct Count {
    counts: HashMap<Str, u64, FxBuildHasher>,
    seen: u64,
}

impl Bolt for Count {
    async fn execute(&mut self, input: Tuple, _out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let word = input.str(0)?;
        match self.counts.get_mut(word) {
            Some(count) => *count += 1,
            None => {
                self.counts.insert(Str::new(word), 1);
            }
        }
        self.seen += 1;
        if self.seen == PUBLISH_EVERY {
            PROCESSED.fetch_add(PUBLISH_EVERY, Ordering::Relaxed);
            self.seen = 0;
        }
        Ok(())
    }
}

fn build(args: &Args) -> Result<Topology, BuildError> {
    let mut builder = TopologyBuilder::new();
    let config = builder.config_mut();
    if args.acking {
        config.acker_executors = Some(1);
        config.max_spout_pending = Some(args.max_pending);
    } else {
        config.acker_executors = Some(0);
    }
    match args.workload {
        Workload::ConstNull => {
            let pace = Pace { per_sec: args.rate.map(|r| r as f64), ..Pace::default() };
            builder.spout("spout", ConstSpout { alloc: args.alloc_strings, acking: args.acking, pace, next_id: 0 }, 1);
            builder.bolt("null", NullBolt::default(), args.parallelism).shuffle_grouping("spout");
        }
        Workload::WordCount => {
            // Eight words per sentence: pace sentences at an eighth of the word rate.
            let pace = Pace { per_sec: args.rate.map(|r| r as f64 / 8.0), ..Pace::default() };
            builder.spout("sentences", SentenceSpout { acking: args.acking, pace, ..SentenceSpout::default() }, 1);
            builder.bolt("split", Split, args.parallelism).shuffle_grouping("sentences");
            builder.bolt("count", Count::default(), args.parallelism).fields_grouping("split", ["word"]);
        }
    }
    builder.build()
}

/// The process's peak resident set size in MB, from `/proc/self/status`.
fn peak_rss_mb() -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("no VmHWM in /proc/self/status")?;
    let kb: f64 = line.split_whitespace().nth(1).context("malformed VmHWM line")?.parse()?;
    Ok(kb / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.seconds < 2 {
        bail!("--seconds must be at least 2 (the first second is warm-up)");
    }
    let topology = build(&args)?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime.enable_all().build()?;
    let name = format!("{:?}", args.workload).to_lowercase();
    let (tuples_per_sec, spout_metrics) = runtime.block_on(async {
        let cluster = LocalCluster::new();
        cluster.submit(&name, &topology)?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (start, start_count) = (Instant::now(), PROCESSED.load(Ordering::Relaxed));
        let mut last = (start, start_count);
        for _ in 1..args.seconds {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = (Instant::now(), PROCESSED.load(Ordering::Relaxed));
            let rate = (now.1 - last.1) as f64 / (now.0 - last.0).as_secs_f64();
            eprintln!("{:>6.1} M tuples/s", rate / 1e6);
            last = now;
        }
        let rate = (last.1 - start_count) as f64 / (last.0 - start).as_secs_f64();
        let spout = if matches!(args.workload, Workload::ConstNull) { "spout" } else { "sentences" };
        let metrics = cluster.metrics(&name)?.component(spout);
        cluster.kill(&name, Duration::ZERO).await?;
        anyhow::Ok((rate, metrics))
    })?;
    let workload = match args.workload {
        Workload::ConstNull => "const-null",
        Workload::WordCount => "word-count",
    };
    let mut result = serde_json::json!({
        "workload": workload,
        "tuples_per_sec": tuples_per_sec.round(),
        "peak_rss_mb": (peak_rss_mb()? * 10.0).round() / 10.0,
    });
    if args.acking {
        result["acking"] = true.into();
        result["acked"] = spout_metrics.acked.into();
        result["complete_latency_p50_ms"] = spout_metrics.complete_latency_p50_ms.into();
        result["complete_latency_p99_ms"] = spout_metrics.complete_latency_p99_ms.into();
        result["complete_latency_max_ms"] = spout_metrics.complete_latency_max_ms.into();
    }
    if let Some(rate) = args.rate {
        result["rate"] = rate.into();
    }
    println!("{result}");
    Ok(())
}
