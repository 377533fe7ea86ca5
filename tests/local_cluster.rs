//! LocalCluster behaviour: lifecycle, ticks, backpressure, context, errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use squall::prelude::*;
use squall::{ComponentError, LocalCluster, LocalClusterError, TaskId};
use squall_tests::{Keyed, Log, Recorder, SequenceSpout, lock, run_to_completion};

/// Emits forever, counting what it emitted.
#[derive(Clone, Default, Spout)]
#[squall(output = Keyed)]
struct Endless {
    emitted: Arc<AtomicU64>,
}

impl Spout for Endless {
    type MsgId = ();

    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        let seq = self.emitted.fetch_add(1, Ordering::Relaxed);
        out.emit(Keyed { key: Str::new_static("k"), seq })?;
        Ok(())
    }
}

/// Takes a millisecond per tuple.
#[derive(Clone, Default, Bolt)]
struct Slow {
    executed: Arc<AtomicU64>,
}

impl Bolt for Slow {
    async fn execute(&mut self, _input: Tuple, _out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.executed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_spout_is_slowed_by_a_slow_bolt_and_queues_stay_bounded() {
    const CAPACITY: u64 = 1_000;
    let (emitted, executed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut b = TopologyBuilder::new();
    b.config_mut().set("topology.producer.batch.size", 100).unwrap();
    b.spout("spout", Endless { emitted: emitted.clone() }, 1);
    b.bolt("slow", Slow { executed: executed.clone() }, 1)
        .shuffle_grouping("spout")
        .set("topology.executor.receive.buffer.size", CAPACITY as i64)
        // The queue between them is what is tested: chained, the bolt would have none.
        .set("topology.chaining", false);
    let cluster = LocalCluster::new();
    cluster.submit("bp", &b.build().unwrap()).unwrap();

    let mut max_in_flight = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let in_flight = emitted.load(Ordering::Relaxed) - executed.load(Ordering::Relaxed);
        max_in_flight = max_in_flight.max(in_flight);
    }
    let metrics = cluster.metrics("bp").unwrap().component("slow").unwrap();
    cluster.kill("bp", Duration::ZERO).await.unwrap();

    // The queue never held more than its capacity ...
    assert_eq!(metrics.queue_capacity, CAPACITY as usize);
    assert!(metrics.queue_peak <= CAPACITY as usize, "queue peaked at {}", metrics.queue_peak);
    assert!(metrics.queue_peak >= CAPACITY as usize / 2, "the queue did fill: {}", metrics.queue_peak);
    // ... and tuples in flight (queued, in the bolt's batch, or in the spout's output buffer)
    // stay bounded by the queue plus one batch on each side, however long it runs.
    assert!(max_in_flight <= CAPACITY + 2 * 100 + 1, "{max_in_flight} tuples in flight");
    // The slow bolt did run at its pace; the spout was held to it instead of running free.
    let done = executed.load(Ordering::Relaxed);
    assert!(done > 300, "the bolt executed only {done} tuples");
    assert!(emitted.load(Ordering::Relaxed) <= done + CAPACITY + 2 * 100 + 1);
}

/// Counts tick tuples.
#[derive(Clone, Default, Bolt)]
struct TickCounter {
    ticks: Arc<AtomicU64>,
    others: Arc<AtomicU64>,
}

impl Bolt for TickCounter {
    async fn execute(&mut self, input: Tuple, _out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        if input.is_tick() {
            assert_eq!(input.source_component(), "__system");
            assert_eq!(input.source_stream(), "__tick");
            self.ticks.fetch_add(1, Ordering::Relaxed);
        } else {
            self.others.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Emits a tuple every 100 ms.
#[derive(Clone, Default, Spout)]
#[squall(output = Keyed)]
struct Paced {
    seq: u64,
}

impl Spout for Paced {
    type MsgId = ();

    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.seq += 1;
        out.emit(Keyed { key: Str::new_static("k"), seq: self.seq })?;
        Ok(())
    }
}

// Simulated time: exactly one tick per simulated second. (Simulated time moves while every task
// waits on a timer, so the spout here paces itself instead of emitting flat out.)
#[tokio::test(start_paused = true)]
async fn tick_tuples_arrive_at_the_configured_frequency() {
    let counter = TickCounter::default();
    let mut b = TopologyBuilder::new();
    b.spout("spout", Paced::default(), 1);
    b.bolt("ticked", counter.clone(), 1).shuffle_grouping("spout").tick_tuple_freq_secs(1);
    let cluster = LocalCluster::new();
    cluster.submit("ticks", &b.build().unwrap()).unwrap();
    tokio::time::sleep(Duration::from_millis(5_300)).await;
    let ticks = counter.ticks.load(Ordering::Relaxed);
    cluster.kill("ticks", Duration::ZERO).await.unwrap();
    assert_eq!(ticks, 5, "5 ticks in 5.3 s at 1 per second");
    let others = counter.others.load(Ordering::Relaxed);
    assert!((50..=53).contains(&others), "ticks come on top of normal tuples: {others}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivate_stops_the_spouts_and_activate_resumes_them() {
    let emitted = Arc::new(AtomicU64::new(0));
    let mut b = TopologyBuilder::new();
    b.spout("spout", Endless { emitted: emitted.clone() }, 1);
    b.bolt("sink", Slow::default(), 1).shuffle_grouping("spout");
    let cluster = LocalCluster::new();
    cluster.submit_inactive("lifecycle", &b.build().unwrap()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(emitted.load(Ordering::Relaxed), 0, "an inactive topology emits nothing");

    cluster.activate("lifecycle").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(emitted.load(Ordering::Relaxed) > 0);

    cluster.deactivate("lifecycle").unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped_at = emitted.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(emitted.load(Ordering::Relaxed), stopped_at, "no next_tuple while inactive");

    cluster.activate("lifecycle").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(emitted.load(Ordering::Relaxed) > stopped_at);
    cluster.kill("lifecycle", Duration::ZERO).await.unwrap();
    assert_eq!(cluster.activate("lifecycle"), Err(LocalClusterError::NotFound("lifecycle".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_topology_drains_every_tuple() {
    let log = Log::default();
    let mut b = TopologyBuilder::new();
    b.spout("spout", SequenceSpout::new(50_000, 7), 2);
    b.bolt("sink", Recorder::new(&log), 3).shuffle_grouping("spout");
    let report = run_to_completion(&b.build().unwrap()).await;
    // Two spout tasks each emit the whole sequence.
    assert_eq!(lock(&log).len(), 100_000);
    assert_eq!(report.metrics.component("spout").unwrap().emitted, 100_000);
    assert_eq!(report.metrics.component("sink").unwrap().executed, 100_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_in_use_and_invalid_names_are_refused() {
    let mut b = TopologyBuilder::new();
    b.spout("spout", Endless::default(), 1);
    b.bolt("sink", Slow::default(), 1).shuffle_grouping("spout");
    let topology = b.build().unwrap();
    let cluster = LocalCluster::new();
    cluster.submit("wc", &topology).unwrap();
    let e = cluster.submit("wc", &topology).unwrap_err();
    assert_eq!(e.to_string(), "a topology named `wc` is already running; kill it first or choose another name");
    assert!(matches!(cluster.submit("a/b", &topology), Err(LocalClusterError::InvalidName(_))));
    assert_eq!(cluster.topologies(), vec!["wc".to_owned()]);
    cluster.shutdown().await;
    assert!(cluster.topologies().is_empty());
    assert!(matches!(cluster.kill("wc", Duration::ZERO).await, Err(LocalClusterError::NotFound(_))));
}

/// What a task saw in `prepare`: its id, index, the spout's tasks, and its component id.
type Seen = Arc<std::sync::Mutex<Vec<(TaskId, usize, Vec<TaskId>, String)>>>;

/// Records its context; fails in prepare when told to; fails every third execute.
#[derive(Clone, Default, Bolt)]
struct Picky {
    fail_prepare: bool,
    seen: Seen,
}

impl Bolt for Picky {
    async fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), ComponentError> {
        if self.fail_prepare {
            return Err("cannot reach the database".into());
        }
        lock(&self.seen).push((
            ctx.task_id(),
            ctx.task_index(),
            ctx.component_tasks("spout").to_vec(),
            ctx.component_id().to_owned(),
        ));
        Ok(())
    }

    async fn execute(&mut self, input: Tuple, _out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let seq: u64 = input.get_field_as("seq")?;
        if seq.is_multiple_of(3) {
            return Err(format!("tuple {seq} is divisible by three").into());
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_execute_errors_and_prepare_failures() {
    let picky = Picky::default();
    let mut b = TopologyBuilder::new();
    b.spout("spout", SequenceSpout::new(300, 3), 2);
    b.bolt("picky", picky.clone(), 2).tasks(3).shuffle_grouping("spout");
    let topology = b.build().unwrap();
    let report = run_to_completion(&topology).await;

    let mut seen = lock(&picky.seen).clone();
    seen.sort();
    let spouts = topology.layout().tasks("spout").to_vec();
    assert_eq!(
        seen,
        vec![
            (1, 0, spouts.clone(), "picky".to_owned()),
            (2, 1, spouts.clone(), "picky".to_owned()),
            (3, 2, spouts, "picky".to_owned())
        ]
    );
    let m = report.metrics.component("picky").unwrap();
    assert_eq!(m.executed, 600);
    assert_eq!(m.errors, 200);
    assert!(m.last_error.unwrap().ends_with("is divisible by three"));

    let mut b = TopologyBuilder::new();
    b.spout("spout", SequenceSpout::new(10, 3), 1);
    b.bolt("picky", Picky { fail_prepare: true, ..Picky::default() }, 1).shuffle_grouping("spout");
    let cluster = LocalCluster::new();
    cluster.submit("failing", &b.build().unwrap()).unwrap();
    let report = cluster.wait_for_completion("failing", Duration::from_secs(10)).await.unwrap();
    assert!(!report.is_success());
    assert_eq!(report.failures[0].to_string(), "component `picky` task 1 failed in prepare: cannot reach the database");
}

/// Emits with the dynamic API, including mistakes.
#[derive(Clone, Default, Spout)]
#[squall(output = Keyed)]
struct Dynamic {
    done: bool,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Spout for Dynamic {
    type MsgId = ();

    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        if self.done {
            out.done();
            return Ok(());
        }
        self.done = true;
        out.emit_values("default", values!["dyn", 7u64], None, None)?;
        let mut errors = lock(&self.errors);
        for e in [
            out.emit_values("nope", values!["x", 1u64], None, None),
            out.emit_values("default", values!["x"], None, None),
            out.emit_values("default", values!["x", 1u64], Some(1), None),
        ] {
            errors.push(e.unwrap_err().to_string());
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_emits_are_checked_at_run_time() {
    let (log, spout) = (Log::default(), Dynamic::default());
    let mut b = TopologyBuilder::new();
    b.spout("spout", spout.clone(), 1);
    b.bolt("sink", Recorder::new(&log), 1).shuffle_grouping("spout");
    run_to_completion(&b.build().unwrap()).await;
    let log = lock(&log);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].tuple.get_by_field("key"), Some(&Value::Str(Str::new("dyn"))));
    assert_eq!(
        *lock(&spout.errors),
        vec![
            "component `spout` declares no stream `nope`".to_owned(),
            "stream `default` of `spout` has 2 fields but 1 values were emitted".to_owned(),
            "stream `default` of `spout` is not direct: use emit".to_owned(),
        ]
    );
}
