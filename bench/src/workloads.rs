//! The benchmark topologies, shared by the local mode and the cluster mode (whose workers are
//! this binary started in `worker` mode, rebuilding the topology from [`Params::from_env`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::ValueEnum;
use rustc_hash::FxBuildHasher;
use squall::prelude::*;
use squall::{BuildError, ComponentError};

/// The 100-byte string of const-null (and the Kafka benchmark's record value).
pub const PAYLOAD: &str =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyzAB";

/// The word-count workloads' sentences (eight words each).
pub(crate) const SENTENCES: [&str; 10] = [
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
pub static PROCESSED: AtomicU64 = AtomicU64::new(0);
const PUBLISH_EVERY: u64 = 4096;

/// The environment variable naming the workload a worker (or `--describe`) builds.
pub const ENV_WORKLOAD: &str = "SQUALL_BENCH_WORKLOAD";
/// The environment variable that turns acking on (`1`) in a worker (or `--describe`).
pub const ENV_ACKING: &str = "SQUALL_BENCH_ACKING";
/// The environment variable holding `topology.max.spout.pending` with acking.
pub const ENV_MAX_PENDING: &str = "SQUALL_BENCH_MAX_PENDING";
/// The environment variable naming the directory where a sink writes the unix-millis time of its
/// first tuple (file `first-tuple-<pid>`).
pub const ENV_OUT: &str = "SQUALL_BENCH_OUT";
/// The prefix of the files a sink writes into [`ENV_OUT`].
pub const FIRST_TUPLE_PREFIX: &str = "first-tuple-";

/// A benchmark workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// A spout of 100-byte strings → shuffle → a discarding bolt.
    ConstNull,
    /// Sentences → split → fields grouping on the word → count.
    WordCount,
}

impl Workload {
    /// Its name on the command line and in the JSON result.
    pub fn name(self) -> &'static str {
        match self {
            Workload::ConstNull => "const-null",
            Workload::WordCount => "word-count",
        }
    }

    /// The component id of its spout.
    pub fn spout(self) -> &'static str {
        match self {
            Workload::ConstNull => "spout",
            Workload::WordCount => "sentences",
        }
    }

    /// The component id of the sink whose executed tuples are the throughput.
    pub fn sink(self) -> &'static str {
        match self {
            Workload::ConstNull => "null",
            Workload::WordCount => "word-count",
        }
    }

    /// Every (source, subscriber) edge of the topology.
    pub fn edges(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Workload::ConstNull => &[("spout", "null")],
            Workload::WordCount => &[("sentences", "split"), ("split", "word-count")],
        }
    }
}

/// How to build a benchmark topology.
#[derive(Clone, Debug)]
pub struct Params {
    /// The workload.
    pub workload: Workload,
    /// Track every spout tuple with one acker task.
    pub acking: bool,
    /// With acking, `topology.max.spout.pending` per spout task.
    pub max_pending: u32,
    /// const-null: allocate a fresh string per tuple.
    pub alloc_strings: bool,
    /// Executors for each bolt.
    pub parallelism: u32,
    /// Pace the spout to this many tuples per second at the sink.
    pub rate: Option<u64>,
    /// Where the sink records the time of its first tuple, if anywhere.
    pub first_tuple_dir: Option<PathBuf>,
}

impl Params {
    /// The parameters a worker (or `--describe`) reads from the environment the bench's cluster
    /// mode set: [`ENV_WORKLOAD`], [`ENV_ACKING`], [`ENV_MAX_PENDING`] and [`ENV_OUT`].
    pub fn from_env() -> Result<Params, String> {
        let workload = std::env::var(ENV_WORKLOAD).map_err(|_| {
            format!("{ENV_WORKLOAD} is not set: the bench's `cluster` mode sets it to const-null or word-count")
        })?;
        let workload = Workload::from_str(&workload, true)
            .map_err(|_| format!("{ENV_WORKLOAD}={workload:?} is not a workload (const-null or word-count)"))?;
        let acking = std::env::var(ENV_ACKING).is_ok_and(|v| v == "1" || v == "true");
        let max_pending = match std::env::var(ENV_MAX_PENDING) {
            Ok(text) => text.parse().map_err(|_| format!("{ENV_MAX_PENDING}={text:?} is not a count"))?,
            Err(_) => 5_000,
        };
        Ok(Params {
            workload,
            acking,
            max_pending,
            alloc_strings: false,
            parallelism: 1,
            rate: None,
            first_tuple_dir: std::env::var_os(ENV_OUT).map(PathBuf::from),
        })
    }
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

/// Writes the unix-millis time of a sink's first tuple to `<dir>/first-tuple-<pid>`, once.
#[derive(Clone, Default)]
struct FirstTuple {
    dir: Option<Arc<Path>>,
}

impl FirstTuple {
    /// Records the first tuple; a branch on a `None` afterwards.
    #[inline]
    fn seen(&mut self) {
        if let Some(dir) = self.dir.take() {
            record_first_tuple(&dir);
        }
    }
}

#[cold]
fn record_first_tuple(dir: &Path) {
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let pid = std::process::id();
    let final_path = dir.join(format!("{FIRST_TUPLE_PREFIX}{pid}"));
    if final_path.exists() {
        // Another executor of this worker was first.
        return;
    }
    // Written aside and renamed, so a reader never sees a partial file.
    let tmp = dir.join(format!(".{FIRST_TUPLE_PREFIX}{pid}-{:?}", std::thread::current().id()));
    if let Err(e) = std::fs::write(&tmp, millis.to_string()).and_then(|()| std::fs::rename(&tmp, &final_path)) {
        eprintln!("cannot record the first tuple in {}: {e}", dir.display());
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
    first: FirstTuple,
}

impl Bolt for NullBolt {
    async fn execute(&mut self, _input: Tuple, _out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        self.first.seen();
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
    first: FirstTuple,
}

impl Bolt for Count {
    async fn execute(&mut self, input: Tuple, _out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        self.first.seen();
        let word = input.get_str(0)?;
        match self.counts.get_mut(word) {
            Some(count) => *count += 1,
            None => {
                self.counts.insert(word.clone(), 1);
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

/// Builds a workload's topology.
///
/// Tasks are numbered by component id in alphabetical order, and Storm's even scheduler deals
/// executors sorted by first task round-robin over the workers. The ids are chosen so that on
/// two workers every edge crosses a process boundary: const-null is `null` (1) and `spout` (2);
/// word-count is `sentences` (1), `split` (2) and `word-count` (3), so `split` runs alone in the
/// second worker. The acker, numbered last, does not change that.
pub fn build(params: &Params) -> Result<Topology, BuildError> {
    let mut builder = TopologyBuilder::new();
    let config = builder.config_mut();
    if params.acking {
        config.acker_executors = Some(1);
        config.max_spout_pending = Some(params.max_pending);
    } else {
        config.acker_executors = Some(0);
    }
    let first = FirstTuple { dir: params.first_tuple_dir.as_deref().map(Arc::from) };
    let workload = params.workload;
    match workload {
        Workload::ConstNull => {
            let pace = Pace { per_sec: params.rate.map(|r| r as f64), ..Pace::default() };
            let spout = ConstSpout { alloc: params.alloc_strings, acking: params.acking, pace, next_id: 0 };
            builder.spout(workload.spout(), spout, 1);
            builder
                .bolt(workload.sink(), NullBolt { seen: 0, first }, params.parallelism)
                .shuffle_grouping(workload.spout());
        }
        Workload::WordCount => {
            // Eight words per sentence: pace sentences at an eighth of the word rate.
            let pace = Pace { per_sec: params.rate.map(|r| r as f64 / 8.0), ..Pace::default() };
            builder.spout(
                workload.spout(),
                SentenceSpout { acking: params.acking, pace, ..SentenceSpout::default() },
                1,
            );
            builder.bolt("split", Split, params.parallelism).shuffle_grouping(workload.spout());
            builder
                .bolt(workload.sink(), Count { first, ..Count::default() }, params.parallelism)
                .fields_grouping("split", ["word"]);
        }
    }
    builder.build()
}
