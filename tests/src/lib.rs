//! Shared components and helpers for the integration tests: a spout that emits a known
//! sequence, a bolt that records what each task received, and [`sandbox::ClusterSandbox`].

pub mod netns;
pub mod sandbox;
pub mod trident;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use squall::prelude::*;
use squall::{ComponentError, LocalCluster, RunReport, TaskId};

/// A keyed, numbered tuple.
#[derive(Tuple, Debug, Clone, PartialEq)]
pub struct Keyed {
    /// The grouping key.
    pub key: Str,
    /// The position in the spout's sequence.
    pub seq: u64,
}

/// A tuple on the `errors` stream.
#[derive(Tuple, Debug, Clone, PartialEq)]
pub struct Problem {
    /// The position in the spout's sequence.
    pub seq: u64,
}

/// Emits `count` tuples `Keyed { key: key(seq), seq }` (every `errors_every`-th also on `errors`),
/// then says it is done.
#[derive(Clone, Spout)]
#[squall(output = Keyed, stream(errors = Problem))]
pub struct SequenceSpout {
    /// How many tuples to emit.
    pub count: u64,
    /// Distinct keys: `seq % keys`.
    pub keys: u64,
    /// Also emit every n-th tuple on `errors` (0 = never).
    pub errors_every: u64,
    /// Next sequence number.
    pub next: u64,
}

impl SequenceSpout {
    /// A spout of `count` tuples over `keys` keys.
    pub fn new(count: u64, keys: u64) -> Self {
        SequenceSpout { count, keys, errors_every: 0, next: 0 }
    }
}

impl Spout for SequenceSpout {
    type MsgId = ();

    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        if self.next >= self.count {
            out.done();
            return Ok(());
        }
        let seq = self.next;
        out.emit(Keyed { key: Str::from(format!("k{}", seq % self.keys)), seq })?;
        if self.errors_every > 0 && seq.is_multiple_of(self.errors_every) {
            out.emit_on(Self::ERRORS, Problem { seq })?;
        }
        self.next += 1;
        Ok(())
    }
}

/// What a [`Recorder`] task received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The receiving task.
    pub task: TaskId,
    /// The tuple.
    pub tuple: Tuple,
}

/// Shared log of received tuples.
pub type Log = Arc<Mutex<Vec<Received>>>;

/// Records every tuple with the id of the task that received it.
#[derive(Clone, Default, Bolt)]
pub struct Recorder {
    /// Where tuples are recorded; shared by all tasks.
    pub log: Log,
    task: TaskId,
}

impl Recorder {
    /// A recorder writing to `log`.
    pub fn new(log: &Log) -> Self {
        Recorder { log: log.clone(), task: 0 }
    }
}

impl Bolt for Recorder {
    async fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), ComponentError> {
        self.task = ctx.task_id();
        Ok(())
    }

    async fn execute(&mut self, input: Tuple, _out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        lock(&self.log).push(Received { task: self.task, tuple: input });
        Ok(())
    }
}

/// Locks a mutex, ignoring poisoning (a panicking test thread already failed the test).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs a topology in a fresh local cluster until its spouts are done and it drains.
pub async fn run_to_completion(topology: &Topology) -> RunReport {
    let cluster = LocalCluster::new();
    cluster.submit("test", topology).expect("submit");
    let report = cluster.wait_for_completion("test", Duration::from_secs(60)).await.expect("topology finishes");
    assert!(report.is_success(), "tasks failed: {:?}", report.failures);
    report
}

/// A countdown: executed once per value from `left` down to 0.
#[derive(Tuple, Debug, Clone, PartialEq)]
pub struct Countdown {
    /// Which countdown.
    pub id: u64,
    /// What is left.
    pub left: u64,
}

/// Emits `count` countdowns from `from`, tracked by their id when `tracked`.
#[derive(Clone, Spout)]
#[squall(output = Countdown)]
pub struct Countdowns {
    /// How many countdowns.
    pub count: u64,
    /// Where each starts.
    pub from: u64,
    next: u64,
    /// Whether each is emitted with its id as message id.
    pub tracked: bool,
    /// Trees acked.
    pub acked: Arc<AtomicU64>,
    /// Trees failed.
    pub failed: Arc<AtomicU64>,
}

impl Countdowns {
    /// Emits with message ids: acks and fails are counted.
    pub fn tracked(mut self) -> Self {
        self.tracked = true;
        self
    }

    /// `count` untracked countdowns from `from`.
    pub fn new(count: u64, from: u64) -> Self {
        Countdowns { count, from, next: 0, tracked: false, acked: Arc::default(), failed: Arc::default() }
    }
}

impl Spout for Countdowns {
    type MsgId = u64;

    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        if self.next == self.count {
            out.done();
            return Ok(());
        }
        let tuple = Countdown { id: self.next, left: self.from };
        if self.tracked {
            out.emit_with_id(tuple, self.next)?;
        } else {
            out.emit(tuple)?;
        }
        self.next += 1;
        Ok(())
    }

    async fn ack(&mut self, _id: u64) {
        self.acked.fetch_add(1, Ordering::Relaxed);
    }

    async fn fail(&mut self, _id: u64) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Re-emits every countdown with one less left, until none is left.
#[derive(Clone, Default, Bolt)]
#[squall(output = Countdown)]
pub struct Decrement {
    /// Executions, over all tasks.
    pub executed: Arc<AtomicU64>,
}

impl Bolt for Decrement {
    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let Countdown { id, left } = input.to()?;
        self.executed.fetch_add(1, Ordering::Relaxed);
        if left > 0 {
            out.emit(Countdown { id, left: left - 1 })?;
        }
        Ok(())
    }
}
