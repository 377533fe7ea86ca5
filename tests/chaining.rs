//! Chaining: bolts fed one-to-one run inside their feeder's executor, with the same outcomes as
//! unchained — exact counts, forward partitioning, acking and replay, ticks, per-component
//! metrics and errors — and only where it is safe.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use squall::prelude::*;
use squall::{ComponentError, ReplayQueue};
use squall_tests::{Keyed, Log, Recorder, SequenceSpout, lock, run_to_completion};

/// Passes each tuple on, anchored; fails the first delivery of every `fail_every`-th seq.
#[derive(Clone, Default, Bolt)]
#[squall(output = Keyed)]
struct Relay {
    fail_every: u64,
    failed_once: Arc<Mutex<BTreeSet<u64>>>,
    ticks: Arc<AtomicU64>,
}

impl Bolt for Relay {
    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        if input.is_tick() {
            self.ticks.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let keyed: Keyed = input.to()?;
        if self.fail_every > 0 && keyed.seq.is_multiple_of(self.fail_every) && lock(&self.failed_once).insert(keyed.seq)
        {
            return Err(format!("first delivery of {} fails", keyed.seq).into());
        }
        out.emit(keyed)?;
        Ok(())
    }
}

/// Components chained to something, from the spec.
fn chained(topology: &Topology) -> BTreeMap<String, String> {
    topology.spec().components.into_iter().filter_map(|c| Some((c.id, c.chained_to?))).collect()
}

/// The seqs each recording task received, by task.
fn seqs_by_task(log: &Log) -> BTreeMap<TaskId, Vec<u64>> {
    let mut by_task: BTreeMap<TaskId, Vec<u64>> = BTreeMap::new();
    for r in lock(log).iter() {
        let keyed: Keyed = r.tuple.to().expect("a Keyed tuple");
        by_task.entry(r.task).or_default().push(keyed.seq);
    }
    by_task
}

fn pipeline(count: u64, chaining: bool) -> (Topology, Log) {
    let log = Log::default();
    let mut b = TopologyBuilder::new();
    b.config_mut().set("topology.chaining", chaining).unwrap();
    b.spout("spout", SequenceSpout::new(count, 7), 1);
    b.bolt("relay", Relay::default(), 1).shuffle_grouping("spout");
    b.bolt("sink", Recorder::new(&log), 1).fields_grouping("relay", ["key"]);
    (b.build().unwrap(), log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_runs_chained_in_one_executor_and_counts_exactly_both_ways() {
    const COUNT: u64 = 50_000;
    for chaining in [true, false] {
        let (topology, log) = pipeline(COUNT, chaining);
        let expected: BTreeMap<String, String> = if chaining {
            [("relay", "spout"), ("sink", "relay")].map(|(a, b)| (a.to_owned(), b.to_owned())).into()
        } else {
            BTreeMap::new()
        };
        assert_eq!(chained(&topology), expected);
        let report = run_to_completion(&topology).await;
        let seqs: Vec<u64> = seqs_by_task(&log).into_values().flatten().collect();
        assert_eq!(seqs, (0..COUNT).collect::<Vec<_>>(), "chaining {chaining}: every tuple once, in order");
        for id in ["relay", "sink"] {
            let m = report.metrics.component(id).unwrap();
            assert_eq!(m.executed, COUNT, "{id}, chaining {chaining}");
            // Chained, a bolt has no input queue at all.
            assert_eq!(m.queue_capacity == 0, chaining, "{id}: {m:?}");
        }
        assert_eq!(report.metrics.component("relay").unwrap().emitted, COUNT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shuffle_between_equal_parallelism_is_forward_and_loses_nothing() {
    const COUNT: u64 = 20_000;
    let log = Log::default();
    let mut b = TopologyBuilder::new();
    b.spout("spout", SequenceSpout::new(COUNT, 5), 3);
    b.bolt("sink", Recorder::new(&log), 3).shuffle_grouping("spout");
    let topology = b.build().unwrap();
    assert_eq!(chained(&topology), BTreeMap::from([("sink".to_owned(), "spout".to_owned())]));
    run_to_completion(&topology).await;
    // Each sink task hears from exactly one spout task, a different one each, and gets all of
    // its COUNT tuples in order.
    let mut sources: HashMap<TaskId, BTreeSet<TaskId>> = HashMap::new();
    for r in lock(&log).iter() {
        sources.entry(r.task).or_default().insert(r.tuple.source_task());
    }
    assert_eq!(sources.len(), 3, "{sources:?}");
    assert!(sources.values().all(|s| s.len() == 1), "{sources:?}");
    let distinct: BTreeSet<TaskId> = sources.values().flatten().copied().collect();
    assert_eq!(distinct.len(), 3, "{sources:?}");
    for (task, seqs) in seqs_by_task(&log) {
        assert_eq!(seqs, (0..COUNT).collect::<Vec<_>>(), "sink task {task}");
    }
}

#[test]
fn nothing_is_chained_where_it_is_not_safe() {
    let log = Log::default();
    let mut b = TopologyBuilder::new();
    b.spout("a", SequenceSpout::new(1, 1), 1);
    b.spout("b", SequenceSpout::new(1, 1), 2);
    // Fields grouping over several tasks: the task depends on the key.
    b.bolt("fields", Recorder::new(&log), 2).fields_grouping("a", ["key"]);
    // Two inputs.
    b.bolt("two-inputs", Recorder::new(&log), 1).shuffle_grouping("a").shuffle_grouping("b");
    // Unequal parallelism.
    b.bolt("unequal", Recorder::new(&log), 3).shuffle_grouping("b");
    // All grouping over several tasks.
    b.bolt("all", Recorder::new(&log), 2).all_grouping("a");
    // Opted out, though safe.
    b.bolt("opted-out", Recorder::new(&log), 1).shuffle_grouping("a").set("topology.chaining", false);
    // Safe: one executor feeding one task, whatever the grouping.
    b.bolt("global", Recorder::new(&log), 1).global_grouping("a");
    let topology = b.build().unwrap();
    assert_eq!(chained(&topology), BTreeMap::from([("global".to_owned(), "a".to_owned())]));
}

/// Emits `Keyed` with ids and replays what fails, until all `count` are acked.
#[derive(Clone, Spout)]
#[squall(output = Keyed)]
struct ReliableSpout {
    count: u64,
    next: u64,
    queue: Arc<Mutex<ReplayQueue<u64, Keyed>>>,
    acked: Arc<Mutex<Vec<u64>>>,
    failed: Arc<AtomicU64>,
}

impl Spout for ReliableSpout {
    type MsgId = u64;

    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        let next = lock(&self.queue).next_replay();
        let (id, tuple) = match next {
            Some(replay) => replay,
            None if self.next < self.count => {
                let tuple = Keyed { key: Str::from(format!("k{}", self.next % 3)), seq: self.next };
                self.next += 1;
                lock(&self.queue).track(tuple.seq, tuple.clone());
                (tuple.seq, tuple)
            }
            None => {
                if lock(&self.queue).in_flight() == 0 {
                    out.done();
                }
                return Ok(());
            }
        };
        out.emit_with_id(tuple, id)?;
        Ok(())
    }

    async fn ack(&mut self, id: u64) {
        lock(&self.queue).ack(&id);
        lock(&self.acked).push(id);
    }

    async fn fail(&mut self, id: u64) {
        lock(&self.queue).fail(id);
        self.failed.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_tuples_in_a_chain_are_replayed_and_every_id_is_acked_once() {
    const COUNT: u64 = 5_000;
    let log = Log::default();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(AtomicU64::new(0));
    let spout = ReliableSpout {
        count: COUNT,
        next: 0,
        queue: Arc::new(Mutex::new(ReplayQueue::new())),
        acked: acked.clone(),
        failed: failed.clone(),
    };
    let relay = Relay { fail_every: 7, ..Relay::default() };
    let mut b = TopologyBuilder::new();
    b.config_mut().set("topology.acker.executors", 1).unwrap();
    b.spout("spout", spout, 1);
    b.bolt("relay", relay, 1).shuffle_grouping("spout");
    b.bolt("sink", Recorder::new(&log), 1).shuffle_grouping("relay");
    let topology = b.build().unwrap();
    assert_eq!(chained(&topology).len(), 2);
    let report = run_to_completion(&topology).await;
    let mut acked = lock(&acked).clone();
    acked.sort_unstable();
    assert_eq!(acked, (0..COUNT).collect::<Vec<_>>(), "every id acked exactly once");
    let fails = COUNT.div_ceil(7);
    assert_eq!(failed.load(Ordering::Relaxed), fails);
    let mut seqs: Vec<u64> = seqs_by_task(&log).into_values().flatten().collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..COUNT).collect::<Vec<_>>(), "each tuple reached the sink once");
    // The chained bolt's errors are its own, in its own metrics.
    let relay = report.metrics.component("relay").unwrap();
    assert_eq!(relay.errors, fails);
    assert!(relay.last_error.is_some_and(|e| e.contains("first delivery")));
    assert_eq!(report.metrics.component("sink").unwrap().errors, 0);
    assert_eq!(report.metrics.component("spout").unwrap().acked, COUNT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chained_bolt_gets_its_tick_tuples() {
    let ticks = Arc::new(AtomicU64::new(0));
    let relay = Relay { ticks: ticks.clone(), ..Relay::default() };
    let mut b = TopologyBuilder::new();
    // A spout that never finishes, so the chain's executor keeps running.
    b.spout("spout", SequenceSpout::new(u64::MAX, 3), 1);
    b.bolt("relay", relay, 1).shuffle_grouping("spout").set("topology.tick.tuple.freq.secs", 1);
    b.bolt("sink", Relay::default(), 1).shuffle_grouping("relay");
    let topology = b.build().unwrap();
    assert_eq!(chained(&topology).get("relay").map(String::as_str), Some("spout"));
    let cluster = squall::LocalCluster::new();
    cluster.submit("ticks", &topology).unwrap();
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    cluster.kill("ticks", Duration::ZERO).await.unwrap();
    let ticks = ticks.load(Ordering::Relaxed);
    assert!((2..=4).contains(&ticks), "{ticks} ticks in 3.5 s at one a second");
}
