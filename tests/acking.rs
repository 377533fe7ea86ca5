//! At-least-once delivery: acker trees, anchoring, timeouts, max spout pending and replay, with
//! exact outcomes (after Storm's `TopologyIntegrationTest`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock: the timeout tests run on simulated time.
use tokio::time::Instant;

use squall::prelude::*;
use squall::{ACKER_COMPONENT, ComponentError, LocalCluster, ReplayQueue};
use squall_tests::lock;

/// A numbered tuple.
#[derive(Tuple, Debug, Clone, PartialEq)]
struct Msg {
    seq: u64,
}

/// What a spout heard back, with the time since the spout opened.
#[derive(Default, Debug)]
struct Outcomes {
    emitted: Vec<(u64, Duration)>,
    acked: Vec<(u64, Duration)>,
    failed: Vec<(u64, Duration)>,
    max_in_flight: u64,
}

type Shared = Arc<Mutex<Outcomes>>;

/// Emits `Msg { seq }` with id `seq` for seq in 0..count, then replays what fails (with
/// `replay`) until everything is acked, then says it is done.
#[derive(Clone, Spout)]
#[squall(output = Msg)]
struct ReliableSpout {
    count: u64,
    next: u64,
    /// Re-emit failed tuples; otherwise a failed tuple is given up.
    replay: bool,
    outcomes: Shared,
    queue: Arc<Mutex<ReplayQueue<u64, Msg>>>,
    started: Option<Instant>,
}

impl ReliableSpout {
    fn new(count: u64, replay: bool) -> Self {
        ReliableSpout {
            count,
            next: 0,
            replay,
            outcomes: Shared::default(),
            queue: Arc::new(Mutex::new(ReplayQueue::new())),
            started: None,
        }
    }

    fn now(&self) -> Duration {
        self.started.map(|s| s.elapsed()).unwrap_or_default()
    }

    fn in_flight(&self) -> u64 {
        lock(&self.queue).in_flight() as u64
    }
}

impl Spout for ReliableSpout {
    type MsgId = u64;

    async fn open(&mut self, _ctx: &TopologyContext) -> Result<(), ComponentError> {
        self.started = Some(Instant::now());
        Ok(())
    }

    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        let replay = if self.replay { lock(&self.queue).next_replay() } else { None };
        let (id, msg) = match replay {
            Some(r) => r,
            None if self.next < self.count => {
                let msg = Msg { seq: self.next };
                self.next += 1;
                lock(&self.queue).track(msg.seq, msg.clone());
                (msg.seq, msg)
            }
            None => {
                if self.in_flight() == 0 {
                    out.done();
                }
                return Ok(());
            }
        };
        out.emit_with_id(msg, id)?;
        let now = self.now();
        let in_flight = self.in_flight();
        let mut o = lock(&self.outcomes);
        o.emitted.push((id, now));
        o.max_in_flight = o.max_in_flight.max(in_flight);
        Ok(())
    }

    async fn ack(&mut self, id: u64) {
        lock(&self.queue).ack(&id);
        let now = self.now();
        lock(&self.outcomes).acked.push((id, now));
    }

    async fn fail(&mut self, id: u64) {
        if self.replay {
            lock(&self.queue).fail(id);
        } else {
            // Without replay a failed tuple is given up: it is no longer in flight.
            lock(&self.queue).ack(&id);
        }
        let now = self.now();
        lock(&self.outcomes).failed.push((id, now));
    }
}

/// Acks every other tuple it receives and ignores the rest (manual acking).
#[derive(Clone, Default, Bolt)]
struct AckEveryOther {
    received: u64,
    seen: Arc<Mutex<Vec<u64>>>,
}

impl Bolt for AckEveryOther {
    const AUTO_ACK: bool = false;

    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let Msg { seq } = input.to()?;
        lock(&self.seen).push(seq);
        if self.received.is_multiple_of(2) {
            out.ack(&input);
        }
        self.received += 1;
        Ok(())
    }
}

fn ids(v: &[(u64, Duration)]) -> Vec<u64> {
    let mut ids: Vec<u64> = v.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids
}

// Simulated time: seconds of timeouts pass in milliseconds.
#[tokio::test(start_paused = true)]
async fn unacked_tuples_time_out_within_twice_the_timeout_and_are_replayed() {
    let spout = ReliableSpout::new(6, true);
    let bolt = AckEveryOther::default();
    let mut b = TopologyBuilder::new();
    b.config_mut().set("topology.message.timeout.secs", 2).unwrap();
    b.spout("spout", spout.clone(), 1);
    b.bolt("bolt", bolt.clone(), 1).shuffle_grouping("spout");
    let cluster = LocalCluster::new();
    cluster.submit("timeouts", &b.build().unwrap()).unwrap();
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    cluster.kill("timeouts", Duration::ZERO).await.unwrap();

    let o = lock(&spout.outcomes);
    // The first six arrive in order; 0, 2 and 4 are acked at once and never failed.
    assert_eq!(&lock(&bolt.seen)[..6], &[0, 1, 2, 3, 4, 5]);
    let first_acks: Vec<u64> =
        o.acked.iter().filter(|(_, at)| *at < Duration::from_secs(1)).map(|(id, _)| *id).collect();
    assert_eq!(first_acks, vec![0, 2, 4]);
    let failed = ids(&o.failed);
    assert!(failed.iter().all(|id| id % 2 == 1), "only unacked ids fail: {failed:?}");
    // 1, 3 and 5 fail between one and two timeouts after they were emitted.
    for id in [1, 3, 5] {
        let emitted = o.emitted.iter().find(|(e, _)| *e == id).unwrap().1;
        let failed = o.failed.iter().find(|(f, _)| *f == id).unwrap_or_else(|| panic!("{id} never failed")).1;
        let after = failed - emitted;
        // Simulated time: exactly within [T, 2T].
        assert!(after >= Duration::from_secs(2) && after <= Duration::from_secs(4), "{id} failed after {after:?}");
    }
    // ... and are replayed: the bolt saw them again.
    let seen = lock(&bolt.seen);
    for id in [1, 3, 5] {
        assert!(seen.iter().filter(|s| **s == id).count() >= 2, "{id} was not replayed: {seen:?}");
    }
}

/// Holds each tuple, resetting its timeout every tick, and acks it after `hold`.
#[derive(Clone, Bolt)]
struct Holder {
    hold: Duration,
    reset: bool,
    held: Vec<(Tuple, Instant)>,
}

impl Bolt for Holder {
    const AUTO_ACK: bool = false;

    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        if !input.is_tick() {
            self.held.push((input, Instant::now()));
            return Ok(());
        }
        let hold = self.hold;
        let (due, keep): (Vec<_>, Vec<_>) = self.held.drain(..).partition(|(_, at)| at.elapsed() >= hold);
        for (tuple, _) in &due {
            out.ack(tuple);
        }
        for (tuple, _) in &keep {
            if self.reset {
                out.reset_timeout(tuple);
            }
        }
        self.held = keep;
        Ok(())
    }
}

// Simulated time: seconds of timeouts pass in milliseconds.
#[tokio::test(start_paused = true)]
async fn reset_timeout_keeps_a_held_tuple_alive_until_it_is_acked() {
    let spout = ReliableSpout::new(3, false);
    let mut b = TopologyBuilder::new();
    b.config_mut().set("topology.message.timeout.secs", 2).unwrap();
    b.spout("spout", spout.clone(), 1);
    let holder = Holder { hold: Duration::from_millis(5_500), reset: true, held: Vec::new() };
    b.bolt("holder", holder, 1).shuffle_grouping("spout").tick_tuple_freq_secs(1);
    let cluster = LocalCluster::new();
    cluster.submit("reset", &b.build().unwrap()).unwrap();
    let report = cluster.wait_for_completion("reset", Duration::from_secs(20)).await.unwrap();
    assert!(report.is_success());

    let o = lock(&spout.outcomes);
    assert!(o.failed.is_empty(), "held tuples timed out: {:?}", o.failed);
    assert_eq!(ids(&o.acked), vec![0, 1, 2]);
    // Held past twice the timeout, then acked.
    assert!(o.acked.iter().all(|(_, at)| *at > Duration::from_secs(5)), "{:?}", o.acked);
    let spout_metrics = report.metrics.component("spout").unwrap();
    assert_eq!((spout_metrics.acked, spout_metrics.failed, spout_metrics.timed_out), (3, 0, 0));
}

// Simulated time: seconds of timeouts pass in milliseconds.
#[tokio::test(start_paused = true)]
async fn without_resets_a_held_tuple_times_out() {
    let spout = ReliableSpout::new(2, false);
    let mut b = TopologyBuilder::new();
    b.config_mut().set("topology.message.timeout.secs", 1).unwrap();
    b.spout("spout", spout.clone(), 1);
    let holder = Holder { hold: Duration::from_millis(3_500), reset: false, held: Vec::new() };
    b.bolt("holder", holder, 1).shuffle_grouping("spout").tick_tuple_freq_secs(1);
    let cluster = LocalCluster::new();
    cluster.submit("noreset", &b.build().unwrap()).unwrap();
    let report = cluster.wait_for_completion("noreset", Duration::from_secs(20)).await.unwrap();
    let o = lock(&spout.outcomes);
    assert_eq!(ids(&o.failed), vec![0, 1]);
    assert!(o.acked.is_empty(), "a late ack of a timed-out tree is ignored");
    assert_eq!(report.metrics.component("spout").unwrap().timed_out, 2);
}

/// Emits two children per input, anchored to it (branching).
#[derive(Clone, Bolt)]
#[squall(output = Msg)]
struct Fork;

impl Bolt for Fork {
    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let msg: Msg = input.to()?;
        out.emit(msg.clone())?;
        out.emit(msg)?;
        Ok(())
    }
}

/// Passes tuples on; fails `fail_seq` when set.
#[derive(Clone, Bolt)]
#[squall(output = Msg)]
struct Pass {
    fail_seq: Option<u64>,
}

impl Bolt for Pass {
    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let msg: Msg = input.to()?;
        if Some(msg.seq) == self.fail_seq {
            return Err(format!("refusing {}", msg.seq).into());
        }
        out.emit(msg)?;
        Ok(())
    }
}

/// Joins the copies of each seq: when `copies` have arrived, emits one tuple anchored to all of
/// them (and to the first twice), then acks them — but only once `gate` is open.
#[derive(Clone, Bolt)]
#[squall(output = Msg)]
struct Join {
    copies: usize,
    gate: Arc<AtomicBool>,
    waiting: HashMap<u64, Vec<Tuple>>,
}

impl Bolt for Join {
    const AUTO_ACK: bool = false;

    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        if !input.is_tick() {
            let Msg { seq } = input.to()?;
            self.waiting.entry(seq).or_default().push(input);
        }
        if !self.gate.load(Ordering::Relaxed) {
            return Ok(());
        }
        let ready: Vec<u64> = self.waiting.iter().filter(|(_, t)| t.len() == self.copies).map(|(s, _)| *s).collect();
        for seq in ready {
            let Some(parts) = self.waiting.remove(&seq) else { continue };
            let mut anchors: Vec<&Tuple> = parts.iter().collect();
            anchors.push(&parts[0]);
            out.anchored(&anchors).emit(Msg { seq })?;
            for part in &parts {
                out.ack(part);
            }
        }
        Ok(())
    }
}

/// Counts what reaches the end of the DAG.
#[derive(Clone, Default, Bolt)]
struct Sink {
    seen: Arc<AtomicU64>,
}

impl Bolt for Sink {
    async fn execute(&mut self, _input: Tuple, _out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        self.seen.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// spout → fork → (left, right) → join → sink: every spout tuple branches into four tuples
/// that join back into one.
fn diamond(spout: &ReliableSpout, fail_seq: Option<u64>, gate: &Arc<AtomicBool>, sink: &Sink) -> Topology {
    let mut b = TopologyBuilder::new();
    b.spout("spout", spout.clone(), 1);
    b.bolt("fork", Fork, 2).shuffle_grouping("spout");
    b.bolt("left", Pass { fail_seq }, 1).shuffle_grouping("fork");
    b.bolt("right", Pass { fail_seq: None }, 2).shuffle_grouping("fork");
    let join = Join { copies: 4, gate: gate.clone(), waiting: HashMap::new() };
    b.bolt("join", join, 1).fields_grouping("left", ["seq"]).fields_grouping("right", ["seq"]).tick_tuple_freq_secs(1);
    b.bolt("sink", sink.clone(), 1).shuffle_grouping("join");
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branching_and_joining_tree_acks_only_after_every_descendant() {
    let (spout, gate, sink) = (ReliableSpout::new(20, false), Arc::new(AtomicBool::new(false)), Sink::default());
    let cluster = LocalCluster::new();
    cluster.submit("diamond", &diamond(&spout, None, &gate, &sink)).unwrap();

    // Everything but the join has acked; the join holds every tuple: no tree is complete.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(lock(&spout.outcomes).emitted.len(), 20);
    assert!(lock(&spout.outcomes).acked.is_empty(), "acked before the join acked");
    let fork = cluster.metrics("diamond").unwrap().component("fork").unwrap();
    assert_eq!(fork.acked, 20);

    gate.store(true, Ordering::Relaxed);
    let report = cluster.wait_for_completion("diamond", Duration::from_secs(10)).await.unwrap();
    assert!(report.is_success());
    let o = lock(&spout.outcomes);
    assert_eq!(ids(&o.acked), (0..20).collect::<Vec<_>>());
    assert!(o.failed.is_empty());
    assert_eq!(sink.seen.load(Ordering::Relaxed), 20);
    // Anchored twice to the same tuple and to four parts, every join output still completed.
    let m = report.metrics.component("spout").unwrap();
    assert_eq!((m.acked, m.failed), (20, 0));
    assert!(m.complete_latency_p50_ms.is_some() && m.complete_latency_max_ms >= m.complete_latency_p99_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_anywhere_fails_the_root_at_once() {
    let (spout, gate, sink) = (ReliableSpout::new(10, false), Arc::new(AtomicBool::new(false)), Sink::default());
    let mut topology = diamond(&spout, Some(7), &gate, &sink);
    // A long timeout: a fail that arrives quickly cannot be a timeout.
    topology.config_mut().set("topology.message.timeout.secs", 30).unwrap();
    let cluster = LocalCluster::new();
    cluster.submit("failing", &topology).unwrap();
    let start = Instant::now();
    while lock(&spout.outcomes).failed.is_empty() && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(start.elapsed() < Duration::from_secs(2), "the fail took {:?}", start.elapsed());
    assert_eq!(ids(&lock(&spout.outcomes).failed), vec![7]);
    // The join still holds 7's other copies; the others complete once it lets them through.
    gate.store(true, Ordering::Relaxed);
    // Spout 7 is failed and not replayed: the spout is done once nothing is in flight.
    let report = cluster.wait_for_completion("failing", Duration::from_secs(10)).await.unwrap();
    assert!(report.is_success());
    let o = lock(&spout.outcomes);
    assert_eq!(ids(&o.acked), vec![0, 1, 2, 3, 4, 5, 6, 8, 9]);
    assert_eq!(ids(&o.failed), vec![7]);
    // Both copies of 7 that reached `left` failed there.
    assert_eq!(report.metrics.component("left").unwrap().failed, 2);
}

/// Fails about one tuple in ten, at random.
#[derive(Clone, Default, Bolt)]
struct Flaky {
    processed: Arc<Mutex<HashSet<u64>>>,
}

impl Bolt for Flaky {
    async fn execute(&mut self, input: Tuple, _out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let Msg { seq } = input.to()?;
        if fastrand::u8(..10) == 0 {
            return Err("random failure".into());
        }
        lock(&self.processed).insert(seq);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_random_failures_every_message_is_processed_and_acked_exactly_once() {
    const N: u64 = 20_000;
    let spout = ReliableSpout::new(N, true);
    let flaky = Flaky::default();
    let mut b = TopologyBuilder::new();
    b.config_mut().set("topology.max.spout.pending", 2_000).unwrap();
    b.spout("spout", spout.clone(), 1);
    b.bolt("fork", Fork, 2).shuffle_grouping("spout");
    b.bolt("flaky", flaky.clone(), 3).shuffle_grouping("fork");
    let cluster = LocalCluster::new();
    cluster.submit("flaky", &b.build().unwrap()).unwrap();
    let report = cluster.wait_for_completion("flaky", Duration::from_secs(60)).await.unwrap();
    assert!(report.is_success(), "{:?}", report.failures);

    let o = lock(&spout.outcomes);
    // Every id processed at least once ...
    assert_eq!(lock(&flaky.processed).len() as u64, N);
    // ... acked exactly once, and the spout's acked count equals the distinct ids emitted.
    let acked = ids(&o.acked);
    assert_eq!(acked, (0..N).collect::<Vec<_>>());
    let distinct: HashSet<u64> = o.emitted.iter().map(|(id, _)| *id).collect();
    assert_eq!(distinct.len() as u64, N);
    // Roughly one tree in five fails (two tuples per tree, 10% each) and is replayed.
    assert!(o.failed.len() as u64 > N / 10, "{} failures", o.failed.len());
    assert_eq!(o.emitted.len(), N as usize + o.failed.len());
    // Nothing is left pending.
    assert!(lock(&spout.queue).is_empty());
    let m = report.metrics.component("spout").unwrap();
    assert_eq!(m.acked, N);
    assert_eq!(m.failed, o.failed.len() as u64);
    assert_eq!(m.timed_out, 0);
}

/// Acks after a short sleep, so trees stay in flight a while.
#[derive(Clone, Default, Bolt)]
struct Sluggish;

impl Bolt for Sluggish {
    async fn execute(&mut self, _input: Tuple, _out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        tokio::time::sleep(Duration::from_micros(200)).await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_spout_pending_bounds_the_trees_in_flight() {
    let spout = ReliableSpout::new(3_000, false);
    let mut b = TopologyBuilder::new();
    b.spout("spout", spout.clone(), 1).max_spout_pending(50);
    b.bolt("slow", Sluggish, 2).shuffle_grouping("spout");
    let report = squall_tests::run_to_completion(&b.build().unwrap()).await;
    let o = lock(&spout.outcomes);
    assert_eq!(o.acked.len(), 3_000);
    // Measured by the spout after each emit: it reached the bound and never passed it.
    assert_eq!(o.max_in_flight, 50);
    assert_eq!(report.metrics.component("spout").unwrap().acked, 3_000);
}

/// Records whether acker tasks exist.
#[derive(Clone, Default, Bolt)]
struct SeesAckers {
    ackers: Arc<Mutex<Option<Vec<u32>>>>,
}

impl Bolt for SeesAckers {
    async fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), ComponentError> {
        *lock(&self.ackers) = Some(ctx.component_tasks(ACKER_COMPONENT).to_vec());
        Ok(())
    }

    async fn execute(&mut self, _input: Tuple, _out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_zero_ackers_tuples_are_acked_at_emit_and_no_acker_exists() {
    let spout = ReliableSpout::new(500, false);
    let sees = SeesAckers::default();
    let mut b = TopologyBuilder::new();
    b.config_mut().set("topology.acker.executors", 0).unwrap();
    b.spout("spout", spout.clone(), 1);
    b.bolt("bolt", sees.clone(), 1).shuffle_grouping("spout");
    let report = squall_tests::run_to_completion(&b.build().unwrap()).await;
    assert_eq!(*lock(&sees.ackers), Some(vec![]));
    assert!(!report.metrics.components.contains_key(ACKER_COMPONENT));
    {
        let o = lock(&spout.outcomes);
        assert_eq!(ids(&o.acked), (0..500).collect::<Vec<_>>());
        // Acked during the very call that emitted it: never more than one in flight.
        assert!(o.max_in_flight <= 1);
    }

    // The default: one acker per worker, numbered after the user's tasks.
    let sees = SeesAckers::default();
    let spout = ReliableSpout::new(10, false);
    let mut b = TopologyBuilder::new();
    b.spout("spout", spout.clone(), 1);
    b.bolt("bolt", sees.clone(), 1).shuffle_grouping("spout");
    let report = squall_tests::run_to_completion(&b.build().unwrap()).await;
    assert_eq!(*lock(&sees.ackers), Some(vec![3]));
    assert_eq!(ids(&lock(&spout.outcomes).acked), (0..10).collect::<Vec<_>>());
    // Each tuple's only copy is acked by its bolt straight to the spout: the acker hears nothing.
    assert_eq!(report.metrics.component(ACKER_COMPONENT).unwrap().executed, 0, "no acker message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tuple_sent_to_two_tasks_goes_through_the_acker() {
    let spout = ReliableSpout::new(10, false);
    let mut b = TopologyBuilder::new();
    b.spout("spout", spout.clone(), 1);
    b.bolt("bolt", Sink::default(), 2).all_grouping("spout");
    let report = squall_tests::run_to_completion(&b.build().unwrap()).await;
    assert_eq!(ids(&lock(&spout.outcomes).acked), (0..10).collect::<Vec<_>>());
    // Per tuple: the spout's `Init` and one ack per copy (those of one tree may merge).
    let executed = report.metrics.component(ACKER_COMPONENT).unwrap().executed;
    assert!((20..=30).contains(&executed), "{executed} acker messages");
}

/// Emits one child per input anchored to it and holds the input; acks or fails (odd seqs) what
/// it holds only once `release` is set, in a later call (on a tick).
#[derive(Clone, Bolt)]
#[squall(output = Msg)]
struct Stash {
    release: Arc<AtomicBool>,
    held: Vec<Tuple>,
}

impl Bolt for Stash {
    const AUTO_ACK: bool = false;

    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        if !input.is_tick() {
            let msg: Msg = input.to()?;
            out.emit(msg)?;
            self.held.push(input);
            return Ok(());
        }
        if self.release.load(Ordering::Relaxed) {
            for tuple in self.held.drain(..) {
                let Msg { seq } = tuple.to()?;
                if seq % 2 == 1 { out.fail(&tuple) } else { out.ack(&tuple) }
            }
        }
        Ok(())
    }
}

/// Holds every tuple until `release` is set, then acks them (on a tick).
#[derive(Clone, Bolt)]
struct Gate {
    release: Arc<AtomicBool>,
    held: Vec<Tuple>,
}

impl Bolt for Gate {
    const AUTO_ACK: bool = false;

    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        if !input.is_tick() {
            self.held.push(input);
        } else if self.release.load(Ordering::Relaxed) {
            for tuple in self.held.drain(..) {
                out.ack(&tuple);
            }
        }
        Ok(())
    }
}

/// The bolt holding a spout tuple's only copy reports its children in one call and acks or
/// fails the tuple in a later one: the tree completes only once the children are acked too, and
/// a fail reaches the spout at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_only_copy_completes_its_tree_only_after_children_reported_earlier() {
    let spout = ReliableSpout::new(20, false);
    let (stash_release, gate_release) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let mut b = TopologyBuilder::new();
    b.config_mut().set("topology.message.timeout.secs", 30).unwrap();
    b.spout("spout", spout.clone(), 1);
    let stash = Stash { release: stash_release.clone(), held: Vec::new() };
    b.bolt("stash", stash, 1).shuffle_grouping("spout").tick_tuple_freq_secs(1);
    let gate = Gate { release: gate_release.clone(), held: Vec::new() };
    b.bolt("gate", gate, 1).shuffle_grouping("stash").tick_tuple_freq_secs(1);
    let cluster = LocalCluster::new();
    cluster.submit("held", &b.build().unwrap()).unwrap();

    let wait_for = |what: &'static str, done: &dyn Fn(&Outcomes) -> bool| {
        let start = std::time::Instant::now();
        while !done(&lock(&spout.outcomes)) {
            assert!(start.elapsed() < Duration::from_secs(10), "{what}: {:?}", lock(&spout.outcomes));
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for("every tuple emitted", &|o| o.emitted.len() == 20);
    // The stash releases its inputs: the odd ones fail at once, the even ones wait for the gate.
    stash_release.store(true, Ordering::Relaxed);
    wait_for("the odd ones failed", &|o| o.failed.len() == 10);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    {
        let o = lock(&spout.outcomes);
        assert_eq!(ids(&o.failed), (0..20).filter(|s| s % 2 == 1).collect::<Vec<_>>());
        assert!(o.acked.is_empty(), "acked while the children were held: {:?}", o.acked);
    }
    gate_release.store(true, Ordering::Relaxed);
    let report = cluster.wait_for_completion("held", Duration::from_secs(10)).await.unwrap();
    assert!(report.is_success());
    let o = lock(&spout.outcomes);
    assert_eq!(ids(&o.acked), (0..20).filter(|s| s % 2 == 0).collect::<Vec<_>>());
    assert_eq!(ids(&o.failed), (0..20).filter(|s| s % 2 == 1).collect::<Vec<_>>());
}
