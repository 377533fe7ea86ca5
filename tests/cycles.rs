//! Cycles: a bolt feeding itself, and A → B → A, complete once nothing is in flight and never
//! deadlock on their own backpressure.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use squall::prelude::*;
use squall::{ComponentError, LocalCluster, LocalClusterError};
use squall_tests::{Countdown, Countdowns, Decrement};

/// Passes every countdown on unchanged.
#[derive(Clone, Default, Bolt)]
#[squall(output = Countdown)]
struct Forward {
    executed: Arc<AtomicU64>,
}

impl Bolt for Forward {
    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let countdown: Countdown = input.to()?;
        self.executed.fetch_add(1, Ordering::Relaxed);
        out.emit(countdown)?;
        Ok(())
    }
}

/// Counts what leaves the cycle.
#[derive(Clone, Default, Bolt)]
struct Sink {
    executed: Arc<AtomicU64>,
}

impl Bolt for Sink {
    async fn execute(&mut self, _input: Tuple, _out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        self.executed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn self_loop(count: u64, from: u64, small_queues: bool) -> (Topology, Arc<AtomicU64>, Arc<AtomicU64>) {
    let decrement = Decrement::default();
    let executed = decrement.executed.clone();
    let sink = Sink::default();
    let sunk = sink.executed.clone();
    let mut b = TopologyBuilder::new();
    if small_queues {
        b.config_mut().set("topology.executor.receive.buffer.size", 1000).unwrap();
        b.config_mut().set("topology.producer.batch.size", 100).unwrap();
    }
    b.spout("countdowns", Countdowns::new(count, from), 1);
    b.bolt("decrement", decrement, 2).shuffle_grouping("countdowns").shuffle_grouping("decrement");
    b.bolt("sink", sink, 1).shuffle_grouping("decrement");
    (b.build().unwrap(), executed, sunk)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bolt_feeding_itself_completes_with_exact_counts() {
    let (topology, executed, sunk) = self_loop(100, 5, false);
    let cluster = LocalCluster::new();
    cluster.submit("loop", &topology).unwrap();
    let report = cluster.wait_for_completion("loop", Duration::from_secs(30)).await.unwrap();
    assert!(report.is_success(), "{report:?}");
    assert_eq!(executed.load(Ordering::Relaxed), 100 * 6);
    assert_eq!(report.metrics.component("decrement").unwrap().executed, 600);
    assert_eq!(sunk.load(Ordering::Relaxed), 100 * 5, "every re-emitted countdown also reached the sink");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_under_full_queues_makes_progress_and_completes() {
    // 5,000 countdowns from 20 through queues of 1,000: the cycle holds far more than its
    // queues, and used to stop for good after ~600 executions.
    let (topology, executed, sunk) = self_loop(5_000, 20, true);
    let cluster = LocalCluster::new();
    cluster.submit("full", &topology).unwrap();
    let report = match cluster.wait_for_completion("full", Duration::from_secs(60)).await {
        Ok(report) => report,
        Err(e) => panic!("{e}; executed {}", executed.load(Ordering::Relaxed)),
    };
    assert!(report.is_success(), "{report:?}");
    assert_eq!(executed.load(Ordering::Relaxed), 105_000);
    assert_eq!(sunk.load(Ordering::Relaxed), 100_000);
    // What enters the cycle waits for room: the cycle's queues (2 × 1,000) hold at most their
    // capacity plus a batch per sender, since the loop re-emits at most one tuple per input.
    let decrement = report.metrics.component("decrement").unwrap();
    assert!(decrement.queue_peak <= 2_000 + 3 * 100, "queue peaked at {}", decrement.queue_peak);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_bolt_cycle_with_acking_acks_every_tree_once() {
    let spout = Countdowns::new(2_000, 10).tracked();
    let (acked, failed) = (spout.acked.clone(), spout.failed.clone());
    let a = Decrement::default();
    let b_ = Forward::default();
    let (a_executed, b_executed) = (a.executed.clone(), b_.executed.clone());
    let mut b = TopologyBuilder::new();
    b.config_mut().set("topology.executor.receive.buffer.size", 200).unwrap();
    b.config_mut().set("topology.producer.batch.size", 50).unwrap();
    b.spout("countdowns", spout, 1);
    b.bolt("a", a, 2).shuffle_grouping("countdowns").fields_grouping("b", ["id"]);
    b.bolt("b", b_, 3).shuffle_grouping("a");
    let topology = b.build().unwrap();
    let cluster = LocalCluster::new();
    cluster.submit("ab", &topology).unwrap();
    let report = cluster.wait_for_completion("ab", Duration::from_secs(60)).await.unwrap();
    assert!(report.is_success(), "{report:?}");
    assert_eq!(a_executed.load(Ordering::Relaxed), 2_000 * 11);
    assert_eq!(b_executed.load(Ordering::Relaxed), 2_000 * 10);
    assert_eq!(acked.load(Ordering::Relaxed), 2_000, "every tree acked");
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    let spout = report.metrics.component("countdowns").unwrap();
    assert_eq!((spout.acked, spout.failed), (2_000, 0));
}

/// Emits forever.
#[derive(Clone, Spout)]
#[squall(output = Countdown)]
struct Endless;

impl Spout for Endless {
    type MsgId = ();

    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        out.emit(Countdown { id: 0, left: 3 })?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_names_what_still_runs_and_an_aborted_kill_is_no_success() {
    let mut b = TopologyBuilder::new();
    b.spout("endless", Endless, 1);
    b.bolt("decrement", Decrement::default(), 2).shuffle_grouping("endless").shuffle_grouping("decrement");
    let cluster = LocalCluster::new();
    cluster.submit("endless", &b.build().unwrap()).unwrap();
    let err = cluster.wait_for_completion("endless", Duration::from_millis(300)).await.unwrap_err();
    let LocalClusterError::Timeout { unfinished, .. } = &err else { panic!("{err}") };
    assert!(unfinished.iter().any(|u| u == "endless"), "{unfinished:?}");
    assert!(unfinished.iter().any(|u| u.starts_with("decrement (2 executors) [on cycle decrement:")), "{unfinished:?}");
    assert!(err.to_string().contains("still running: "), "{err}");
    assert_eq!(cluster.unfinished("endless").unwrap().len(), unfinished.len());

    let report = cluster.kill("endless", Duration::ZERO).await.unwrap();
    assert!(!report.is_success(), "a kill that could not drain is no success");
    assert!(report.aborted.iter().any(|a| a.starts_with("decrement")), "{:?}", report.aborted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cycle_drains_and_stops() {
    let mut b = TopologyBuilder::new();
    b.spout("endless", Endless, 1);
    b.bolt("decrement", Decrement::default(), 2).shuffle_grouping("endless").shuffle_grouping("decrement");
    let cluster = LocalCluster::new();
    cluster.submit("drain", &b.build().unwrap()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = cluster.kill("drain", Duration::from_secs(10)).await.unwrap();
    assert!(report.is_success(), "the cycle drained within the wait: {report:?}");
    let m = report.metrics.component("decrement").unwrap();
    assert_eq!(m.executed, report.metrics.component("endless").unwrap().emitted * 4, "each countdown ran 4 times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_of_an_unknown_component_say_so() {
    let (topology, _, _) = self_loop(10, 1, false);
    let cluster = LocalCluster::new();
    cluster.submit("m", &topology).unwrap();
    let report = cluster.wait_for_completion("m", Duration::from_secs(30)).await.unwrap();
    let err = report.metrics.component("decrment").unwrap_err();
    assert_eq!(
        err.to_string(),
        "no component `decrment` in this topology; its components are: __acker, countdowns, decrement, sink"
    );
}
