//! `squall-bench trident-word-count [--seconds N] [--rate R]`: the word count through the Trident
//! stream API, beside the plain word count measured in the same run.
//!
//! In order, in one process and one `LocalCluster`:
//! 1. the plain `word-count` workload (one task per component, no acking, unpaced), measured as
//!    that workload measures it, for `--seconds` after `--warmup`: `plain_words_per_sec`;
//! 2. the Trident word count: a batch spout emits, per epoch, `--sentences-per-epoch` (1,000)
//!    sentences of the word-count workload's ten 8-word sentences (the same ones on every attempt
//!    of an epoch: transactional) → `flat_map` into words → `group_by(["word"])` →
//!    `persistent_aggregate` of a count into a transactional map state in memory, one task each,
//!    `--max-open-epochs` (4) epochs pipelined, epochs opened as fast as possible. With
//!    `--rate R` the spout paces its epochs so that R words per second go out on average (epoch
//!    *n* is not emitted before its due time, the first epoch's emission plus *n − 1* epochs'
//!    worth of words at R words/s); without it, as fast as the topology takes them.
//!
//! The memory backend is wrapped to see each epoch reach the state: a transactional map writes
//! every key of an epoch with the epoch's txid, in one `multi_put` per epoch commit and
//! aggregate task, so the first successful `multi_put` of a txid is the moment the epoch is in
//! the state. Over `--seconds` after `--warmup` (2 s) the run reports
//! - `tuples_per_sec`: words of the epochs that reached the state, per second;
//! - `batch_latency_p50_ms` / `_p99_ms` / `_max_ms`: for each of those epochs, from the moment
//!   its batch went out (the start of its first `emit_batch`, after any pacing wait) until its
//!   `multi_put` returned; exact percentiles (nearest rank) over the epochs, which are few;
//! - `commit_notice_latency_p50_ms` / `_p99_ms`: from the same start until the spout's
//!   [`BatchSpout::commit`] for the epoch, and `commit_notices_before_state_write`: how many of
//!   those calls came before the epoch's state write had returned;
//! - `exact`: whether, after the topology was killed, the counts in the state add up to the
//!   words of every epoch that reached it (nothing counted twice, nothing lost).
//!
//! Progress goes to stderr; the last line on stdout is the JSON object.

use std::collections::{BTreeSet, HashMap};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::bail;
use async_trait::async_trait;
use clap::Parser;
use squall::{ComponentError, LocalCluster, Str, Value, Values, values};
use squall_state::{Backend, MemoryBackend, Semantics, StateError, TransactionalValue};
use squall_trident::{Aggregate, BatchSpout, COORDINATOR_COMPONENT, Epoch, StateSpec, TridentTopology};

use crate::workloads::SENTENCES;
use crate::{ALLOCATOR, peak_rss_mb, plain_word_count};

/// The name of the Trident topology in the local cluster.
const NAME: &str = "trident-word-count";

/// `squall-bench trident-word-count …`
#[derive(Parser, Debug)]
#[command(
    name = "squall-bench trident-word-count",
    about = "The word count through Trident into a memory map state, beside the plain word count; \
             the last line printed is a JSON object"
)]
struct TridentArgs {
    /// Seconds each word count is measured, after its warm-up.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of warm-up before each measurement.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Pace the Trident spout's epochs to this many words per second on average (the plain word
    /// count always runs unpaced).
    #[arg(long)]
    rate: Option<u64>,
    /// Sentences (of 8 words) per epoch.
    #[arg(long, default_value_t = 1_000)]
    sentences_per_epoch: usize,
    /// Epochs open at once (pipelined; commits stay in order).
    #[arg(long, default_value_t = 4)]
    max_open_epochs: usize,
    /// Skip the plain word count (`plain_words_per_sec` is then null).
    #[arg(long)]
    no_plain: bool,
    /// Tokio worker threads (default: the number of cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// When one epoch went out and where it got to.
#[derive(Debug, Clone, Copy)]
struct EpochTimes {
    /// The start of its first `emit_batch` (after any pacing wait).
    emitted: Instant,
    /// Its words.
    words: u64,
    /// Its state write returned.
    stored: bool,
    /// The spout's `commit` was called for it.
    notified: bool,
}

/// What the spout and the state backend saw, shared between them and the measuring loop.
#[derive(Debug, Default)]
struct Record {
    /// Every epoch emitted in this run, by txid.
    epochs: HashMap<u64, EpochTimes>,
    /// Epochs that reached the state.
    stored_epochs: u64,
    /// Their words.
    stored_words: u64,
    /// Latencies are kept only while this is set.
    measuring: bool,
    /// Emit → state write, of the epochs stored while measuring, in the order they were.
    latencies: Vec<Duration>,
    /// Emit → the spout's `commit`, of the epochs notified while measuring.
    notice_latencies: Vec<Duration>,
    /// `commit` calls, while measuring, for an epoch whose state write had not returned.
    notices_before_store: u64,
}

/// A [`Record`] behind a lock: taken once per epoch by the spout and the backend, once a second
/// by the measuring loop.
#[derive(Debug, Default)]
struct Tracker(Mutex<Record>);

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, Record> {
        // Every update is a few field writes: a panicking holder leaves nothing half done.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Epoch `txid` of `words` words went out at `at` (kept from its first attempt).
    fn emitted(&self, txid: u64, words: u64, at: Instant) {
        self.lock().epochs.entry(txid).or_insert(EpochTimes { emitted: at, words, stored: false, notified: false });
    }

    /// Epoch `txid`'s state write returned at `at`.
    fn stored(&self, txid: u64, at: Instant) {
        let mut guard = self.lock();
        let record = &mut *guard;
        let Some(epoch) = record.epochs.get_mut(&txid) else { return };
        if epoch.stored {
            return;
        }
        epoch.stored = true;
        record.stored_epochs += 1;
        record.stored_words += epoch.words;
        if record.measuring {
            record.latencies.push(at.saturating_duration_since(epoch.emitted));
        }
    }

    /// The spout was told at `at` that epoch `txid` committed.
    fn notified(&self, txid: u64, at: Instant) {
        let mut guard = self.lock();
        let record = &mut *guard;
        let Some(epoch) = record.epochs.get_mut(&txid) else { return };
        if epoch.notified {
            return;
        }
        epoch.notified = true;
        if record.measuring {
            record.notice_latencies.push(at.saturating_duration_since(epoch.emitted));
            if !epoch.stored {
                record.notices_before_store += 1;
            }
        }
    }
}

/// A memory backend that tells the tracker when each epoch's write returned.
struct TimedBackend {
    inner: MemoryBackend,
    tracker: Arc<Tracker>,
}

#[async_trait]
impl Backend for TimedBackend {
    async fn multi_get(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        self.inner.multi_get(keys).await
    }

    async fn multi_put(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StateError> {
        self.inner.multi_put(entries).await?;
        let at = Instant::now();
        // A transactional map writes every key of an epoch with the epoch's txid.
        if let Some((_, bytes)) = entries.first()
            && let Ok(stored) = rmp_serde::from_slice::<TransactionalValue<Value>>(bytes)
        {
            self.tracker.stored(stored.txid, at);
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("timed {}", self.inner.describe())
    }
}

/// Emits `per_epoch` sentences per epoch, cycling through [`SENTENCES`]: epoch *n* starts at
/// sentence *(n − 1) · per_epoch*, on every attempt.
#[derive(Clone)]
struct SentenceBatches {
    per_epoch: usize,
    /// Time between two epochs' due times, when paced.
    interval: Option<Duration>,
    /// The first epoch this task emitted and when: the pacing's origin.
    origin: Option<(u64, Instant)>,
    tracker: Arc<Tracker>,
}

impl BatchSpout for SentenceBatches {
    fn fields(&self) -> Vec<String> {
        vec!["sentence".to_owned()]
    }

    async fn emit_batch(&mut self, epoch: Epoch, out: &mut Vec<Values>) -> Result<(), ComponentError> {
        let mut now = Instant::now();
        if let Some(interval) = self.interval
            && epoch.attempt == 0
        {
            let (first, start) = *self.origin.get_or_insert((epoch.txid, now));
            let due = start + interval.mul_f64(epoch.txid.saturating_sub(first) as f64);
            if due > now {
                tokio::time::sleep_until(due.into()).await;
                now = Instant::now();
            }
        }
        let first = (epoch.txid.wrapping_sub(1) as usize).wrapping_mul(self.per_epoch);
        let mut words = 0;
        out.extend((0..self.per_epoch).map(|i| {
            let sentence = SENTENCES[first.wrapping_add(i) % SENTENCES.len()];
            words += sentence.split(' ').count() as u64;
            values![Str::new_static(sentence)]
        }));
        self.tracker.emitted(epoch.txid, words, now);
        Ok(())
    }

    async fn commit(&mut self, epoch: Epoch) {
        self.tracker.notified(epoch.txid, Instant::now());
    }
}

/// The value at quantile `q` of `sorted` (nearest rank), in milliseconds.
fn quantile_ms(sorted: &[Duration], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = ((q * sorted.len() as f64).ceil() as usize).saturating_sub(1).min(last);
    Some(round2(sorted[rank].as_secs_f64() * 1e3))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `latencies`, sorted.
fn sorted(latencies: &[Duration]) -> Vec<Duration> {
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    sorted
}

/// What the Trident run measured.
struct TridentRun {
    words_per_sec: f64,
    seconds: f64,
    epochs: u64,
    words_per_epoch: u64,
    latencies: Vec<Duration>,
    notice_latencies: Vec<Duration>,
    notices_before_store: u64,
    epochs_failed: Option<u64>,
    /// The counts in the state add up to the words of the epochs that reached it.
    exact: bool,
}

/// Builds and runs the Trident word count in `cluster`.
async fn run_trident(cluster: &LocalCluster, args: &TridentArgs) -> anyhow::Result<TridentRun> {
    let tracker = Arc::new(Tracker::default());
    let words_per_epoch: u64 =
        (0..args.sentences_per_epoch).map(|i| SENTENCES[i % SENTENCES.len()].split(' ').count() as u64).sum();
    let interval = args.rate.map(|rate| Duration::from_secs_f64(words_per_epoch as f64 / rate as f64));
    let spout =
        SentenceBatches { per_epoch: args.sentences_per_epoch, interval, origin: None, tracker: tracker.clone() };
    let backend = Arc::new(TimedBackend { inner: MemoryBackend::new(), tracker: tracker.clone() });
    let state = StateSpec::new("counts", Semantics::Transactional, backend);

    let mut trident = TridentTopology::new();
    trident.max_open_epochs(args.max_open_epochs);
    trident.batch_interval(Duration::ZERO);
    trident
        .new_stream("sentences", spout)
        .parallelism(1)
        .flat_map(["word"], |values| {
            let sentence = values.first().and_then(Value::as_str).unwrap_or_default();
            Ok(sentence.split(' ').map(|word| values![Str::new(word)]).collect())
        })
        .group_by(["word"])
        .persistent_aggregate("count", state.clone(), Aggregate::count(), 1);
    let topology = trident.build()?;

    cluster.submit(NAME, &topology)?;
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let (start, start_words, start_epochs) = {
        let mut record = tracker.lock();
        record.measuring = true;
        (Instant::now(), record.stored_words, record.stored_epochs)
    };
    let (mut last, mut last_words, mut seen) = (start, start_words, 0);
    for _ in 0..args.seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (now, words, second) = {
            let record = tracker.lock();
            (Instant::now(), record.stored_words, sorted(&record.latencies[seen..]))
        };
        let rate = (words - last_words) as f64 / (now - last).as_secs_f64();
        let p = |q| quantile_ms(&second, q).map_or("-".to_owned(), |ms| format!("{ms:.1}"));
        eprintln!(
            "{:>6.2} M words/s committed, {:>4} epochs, batch latency p50 {} ms, p99 {} ms",
            rate / 1e6,
            second.len(),
            p(0.5),
            p(0.99)
        );
        (last, last_words, seen) = (now, words, seen + second.len());
    }
    let (end, end_words, end_epochs, latencies, notice_latencies, notices_before_store) = {
        let mut record = tracker.lock();
        record.measuring = false;
        let latencies = (sorted(&record.latencies), sorted(&record.notice_latencies));
        (
            Instant::now(),
            record.stored_words,
            record.stored_epochs,
            latencies.0,
            latencies.1,
            record.notices_before_store,
        )
    };
    let seconds = (end - start).as_secs_f64();
    let epochs_failed = cluster.metrics(NAME)?.component(COORDINATOR_COMPONENT).ok().map(|m| m.failed);
    cluster.kill(NAME, Duration::ZERO).await?;

    // Every epoch that reached the state counted once: the counts add up to their words.
    let words: BTreeSet<&str> = SENTENCES.iter().flat_map(|s| s.split(' ')).collect();
    let keys: Vec<Vec<Value>> = words.iter().map(|w| vec![Value::Str(Str::new(w))]).collect();
    let counted: u64 = state.open().multi_get(&keys).await?.into_iter().flatten().filter_map(|v| v.as_u64()).sum();
    let stored_words = tracker.lock().stored_words;
    if counted != stored_words {
        eprintln!("  the state counts {counted} words, the epochs that reached it held {stored_words}");
    }
    Ok(TridentRun {
        words_per_sec: (end_words - start_words) as f64 / seconds,
        seconds,
        epochs: end_epochs - start_epochs,
        words_per_epoch,
        latencies,
        notice_latencies,
        notices_before_store,
        epochs_failed,
        exact: counted == stored_words,
    })
}

/// Runs `trident-word-count …` (`argv` is the whole command line) and prints its JSON result
/// last.
pub fn main(argv: &[String]) -> anyhow::Result<ExitCode> {
    let args = TridentArgs::parse_from(&argv[1..]);
    if args.seconds < 1 {
        bail!("--seconds must be at least 1");
    }
    if args.sentences_per_epoch == 0 || args.max_open_epochs == 0 {
        bail!("--sentences-per-epoch and --max-open-epochs must be at least 1");
    }
    if args.rate == Some(0) {
        bail!("--rate must be at least 1 word per second");
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime.enable_all().build()?;
    let cluster = LocalCluster::new();
    let warmup = Duration::from_secs(args.warmup);

    let plain = if args.no_plain {
        None
    } else {
        eprintln!("plain word count ({} s warm-up, {} s measured) …", args.warmup, args.seconds);
        let rate = runtime.block_on(plain_word_count(&cluster, warmup, args.seconds))?;
        eprintln!("  {:.2} M words/s", rate / 1e6);
        Some(rate)
    };

    let pace = args.rate.map_or("unpaced".to_owned(), |r| format!("paced to {r} words/s"));
    eprintln!(
        "trident word count ({} sentences per epoch, {} epochs open, {pace}; {} s warm-up, {} s measured) …",
        args.sentences_per_epoch, args.max_open_epochs, args.warmup, args.seconds
    );
    let run = runtime.block_on(run_trident(&cluster, &args))?;
    let ms = |q| quantile_ms(&run.latencies, q).map_or("-".to_owned(), |ms| format!("{ms:.1}"));
    eprintln!(
        "  {:.2} M words/s committed over {:.1} s ({} epochs of {} words), batch latency p50 {} ms, p99 {} ms",
        run.words_per_sec / 1e6,
        run.seconds,
        run.epochs,
        run.words_per_epoch,
        ms(0.5),
        ms(0.99),
    );

    let mut result = serde_json::json!({
        "workload": NAME,
        "tuples_per_sec": run.words_per_sec.round(),
        "batch_latency_p50_ms": quantile_ms(&run.latencies, 0.5),
        "batch_latency_p99_ms": quantile_ms(&run.latencies, 0.99),
        "batch_latency_max_ms": quantile_ms(&run.latencies, 1.0),
        "plain_words_per_sec": plain.map(f64::round),
        "ratio_to_plain": plain.filter(|p| *p > 0.0).map(|p| (run.words_per_sec / p * 1000.0).round() / 1000.0),
        "epochs_committed": run.epochs,
        "words_per_epoch": run.words_per_epoch,
        "sentences_per_epoch": args.sentences_per_epoch,
        "max_open_epochs": args.max_open_epochs,
        "commit_notice_latency_p50_ms": quantile_ms(&run.notice_latencies, 0.5),
        "commit_notice_latency_p99_ms": quantile_ms(&run.notice_latencies, 0.99),
        "commit_notices_before_state_write": run.notices_before_store,
        "epochs_failed": run.epochs_failed,
        "exact": run.exact,
        "measured_seconds": round2(run.seconds),
        "peak_rss_mb": (peak_rss_mb()? * 10.0).round() / 10.0,
        "allocator": ALLOCATOR,
    });
    if let Some(rate) = args.rate {
        result["rate"] = rate.into();
    }
    println!("{result}");
    Ok(if run.exact { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let ms: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile_ms(&ms, 0.5), Some(50.0));
        assert_eq!(quantile_ms(&ms, 0.99), Some(99.0));
        assert_eq!(quantile_ms(&ms, 1.0), Some(100.0));
        assert_eq!(quantile_ms(&[], 0.5), None);
    }
}
