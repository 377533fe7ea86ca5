//! The generic inner loops that call a spout's or bolt's methods, and their type-erased faces.
//!
//! The runtime's executor is type-erased and works in batches: it hands a whole input batch to
//! [`ErasedBolt::execute_batch`] (or asks a spout for a batch of emits) through one boxed future.
//! Inside, the loop is generic over the component type, so the per-tuple `execute` /
//! `next_tuple` futures are plain stack values: nothing is boxed or allocated per tuple.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

// tokio's clock, which a test may pause and advance: timeouts and latencies in simulated time.
use tokio::time::Instant;

use crate::ack::{Control, PendingTrees, SpoutNotice};
use crate::collector::{BoltCollector, SpoutCollector, Transfer};
use crate::component::{Bolt, ComponentError, OutputDeclarer, Spout};
use crate::context::TopologyContext;
use crate::tuple::{TaskId, Tuple};

/// A boxed, sendable future; used once per batch, never per tuple.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What one [`ErasedSpout::next_batch`] call did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SpoutProgress {
    /// Tuples emitted.
    pub emitted: usize,
    /// Whether the last `next_tuple` call emitted nothing: the executor should back off.
    pub idle: bool,
    /// Whether `topology.max.spout.pending` trees are in flight: wait for acks.
    pub throttled: bool,
    /// Whether the spout said it is done.
    pub done: bool,
    /// Whether a `next_tuple` call waited (it was not ready at once): the batch ended there so
    /// that what it emitted can be sent without waiting for a full batch.
    pub waited: bool,
}

/// What one [`ErasedBolt::execute_batch`] call did.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Tuples executed.
    pub executed: usize,
    /// Tuples emitted.
    pub emitted: usize,
    /// Tuples acked.
    pub acked: usize,
    /// Tuples failed.
    pub failed: usize,
    /// `execute` calls that returned an error.
    pub errors: usize,
    /// The first error of the batch, if any.
    pub first_error: Option<ComponentError>,
    /// Whether an `execute` call waited (it was not ready at once): the call ended there,
    /// leaving the rest of the batch in place, so that what was emitted can be sent first.
    pub waited: bool,
}

/// How often a batch future has been polled. The executor counts (see [`count_polls`]); the
/// driver compares the count around each `next_tuple` / `execute` call: when it moved, the call
/// waited (it was not ready at once), and a component that waits inside a call is slow per
/// tuple, so its outputs should not sit in buffers until a whole batch has been made. Two plain
/// loads per call, no wrapper around the user's future.
#[derive(Debug, Default)]
pub struct Polls(AtomicU32);

impl Polls {
    #[inline]
    fn now(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Polls a batch future to its end, counting its polls in `polls`.
pub async fn count_polls<T>(polls: &Polls, mut batch: BoxFuture<'_, T>) -> T {
    std::future::poll_fn(|cx| {
        polls.0.store(polls.0.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        batch.as_mut().poll(cx)
    })
    .await
}

/// The tuples of a batch left after a call that waited. Rare, so kept out of the generic
/// per-tuple loop.
#[cold]
#[inline(never)]
fn unexecuted(rest: std::vec::Drain<'_, Tuple>) -> Vec<Tuple> {
    rest.collect()
}

/// Hears how a spout's tuple trees end, for metrics.
pub trait SpoutObserver: Send {
    /// `trees` trees completed `latency` after their roots were emitted. Trees emitted in one
    /// batch share an emit time and mostly complete together, so a run of them is timed and
    /// counted once.
    fn acked(&mut self, latency: Duration, trees: u64);
    /// A tree failed.
    fn failed(&mut self);
    /// A tree timed out (and the spout's `fail` was called).
    fn timed_out(&mut self);
}

/// A spout task, type-erased at the batch boundary.
pub trait ErasedSpout: Send {
    /// Calls `open`.
    fn open<'a>(&'a mut self, ctx: &'a TopologyContext) -> BoxFuture<'a, Result<(), ComponentError>>;
    /// Calls `activate`.
    fn activate(&mut self) -> BoxFuture<'_, ()>;
    /// Calls `deactivate`.
    fn deactivate(&mut self) -> BoxFuture<'_, ()>;
    /// Calls `next_tuple` until `max_emits` tuples are emitted, a call emits nothing, the spout
    /// is done, or `topology.max.spout.pending` trees are in flight.
    /// Await it with [`count_polls`] and the same `polls`.
    fn next_batch<'a>(
        &'a mut self,
        max_emits: usize,
        transfer: &'a mut dyn Transfer,
        observer: &'a mut dyn SpoutObserver,
        polls: &'a Polls,
    ) -> BoxFuture<'a, Result<SpoutProgress, ComponentError>>;
    /// Handles the acker's notices for this task, draining them: calls `ack` / `fail`,
    /// restarts timeouts.
    fn notices<'a>(
        &'a mut self,
        notices: &'a mut Vec<Control>,
        observer: &'a mut dyn SpoutObserver,
    ) -> BoxFuture<'a, ()>;
    /// Rotates the pending trees (every `topology.message.timeout.secs`): trees older than two
    /// rotations time out and the spout's `fail` is called.
    fn expire<'a>(&'a mut self, observer: &'a mut dyn SpoutObserver) -> BoxFuture<'a, ()>;
    /// Trees in flight.
    fn pending(&self) -> usize;
    /// Calls `close`.
    fn close(&mut self) -> BoxFuture<'_, Result<(), ComponentError>>;
}

/// A bolt task, type-erased at the batch boundary.
pub trait ErasedBolt: Send {
    /// Calls `prepare`.
    fn prepare<'a>(&'a mut self, ctx: &'a TopologyContext) -> BoxFuture<'a, Result<(), ComponentError>>;
    /// Calls `execute` for every tuple of the batch, draining it.
    /// Await it with [`count_polls`] and the same `polls`.
    fn execute_batch<'a>(
        &'a mut self,
        tuples: &'a mut Vec<Tuple>,
        transfer: &'a mut dyn Transfer,
        polls: &'a Polls,
    ) -> BoxFuture<'a, BatchOutcome>;
    /// Handles control messages (only system bolts get any), draining them.
    fn control(&mut self, messages: &mut Vec<Control>, transfer: &mut dyn Transfer) {
        let _ = transfer;
        if !messages.is_empty() {
            tracing::warn!(count = messages.len(), "bolt got control messages meant for an acker or a spout");
            messages.clear();
        }
    }
    /// Calls `cleanup`.
    fn cleanup(&mut self) -> BoxFuture<'_, Result<(), ComponentError>>;
}

/// Makes spout tasks of one component.
pub trait SpoutFactory: Send + Sync + 'static {
    /// A task instance for `task`.
    fn create(&self, task: TaskId) -> Box<dyn ErasedSpout>;
    /// Declares the spout's output streams.
    fn declare_outputs(&self, declarer: &mut OutputDeclarer);
    /// The spout's Rust type name.
    fn type_name(&self) -> &'static str;
}

/// Makes bolt tasks of one component.
pub trait BoltFactory: Send + Sync + 'static {
    /// A task instance for `task`.
    fn create(&self, task: TaskId) -> Box<dyn ErasedBolt>;
    /// Declares the bolt's output streams.
    fn declare_outputs(&self, declarer: &mut OutputDeclarer);
    /// The bolt's Rust type name.
    fn type_name(&self) -> &'static str;
}

/// Clones a prototype instance per task, as Storm deserialises one per task.
pub struct Prototype<C>(pub C);

impl<C: Spout + Clone + Sync> SpoutFactory for Prototype<C> {
    fn create(&self, task: TaskId) -> Box<dyn ErasedSpout> {
        Box::new(SpoutDriver {
            spout: self.0.clone(),
            task,
            pending: PendingTrees::default(),
            max_pending: None,
            acked: Vec::new(),
        })
    }

    fn declare_outputs(&self, declarer: &mut OutputDeclarer) {
        C::declare_outputs(declarer)
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<C>()
    }
}

impl<C: Bolt + Clone + Sync> BoltFactory for Prototype<C> {
    fn create(&self, task: TaskId) -> Box<dyn ErasedBolt> {
        Box::new(BoltDriver { bolt: self.0.clone(), task })
    }

    fn declare_outputs(&self, declarer: &mut OutputDeclarer) {
        C::declare_outputs(declarer)
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<C>()
    }
}

struct SpoutDriver<C: Spout> {
    spout: C,
    task: TaskId,
    /// Trees in flight: root id → (message id, emit time).
    pending: PendingTrees<C::MsgId, Instant>,
    max_pending: Option<usize>,
    acked: Vec<C::MsgId>,
}

impl<C: Spout> ErasedSpout for SpoutDriver<C> {
    fn open<'a>(&'a mut self, ctx: &'a TopologyContext) -> BoxFuture<'a, Result<(), ComponentError>> {
        self.max_pending = ctx.config().max_spout_pending.map(|m| m as usize);
        Box::pin(self.spout.open(ctx))
    }

    fn activate(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(self.spout.activate())
    }

    fn deactivate(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(self.spout.deactivate())
    }

    fn next_batch<'a>(
        &'a mut self,
        max_emits: usize,
        transfer: &'a mut dyn Transfer,
        observer: &'a mut dyn SpoutObserver,
        polls: &'a Polls,
    ) -> BoxFuture<'a, Result<SpoutProgress, ComponentError>> {
        Box::pin(async move {
            let mut progress = SpoutProgress::default();
            // One clock reading per batch: emit times are precise to a batch's duration.
            let now = Instant::now();
            while progress.emitted < max_emits {
                // Below the tracking limit by a call's worth of emits, whatever the config says.
                let max = self
                    .max_pending
                    .unwrap_or(usize::MAX)
                    .min(PendingTrees::<C::MsgId, Instant>::MAX.saturating_sub(max_emits));
                if self.pending.len() >= max {
                    progress.throttled = true;
                    break;
                }
                let mut out =
                    SpoutCollector::<C>::new(&mut *transfer, self.task, &mut self.pending, &mut self.acked, now);
                let before = polls.now();
                let result = self.spout.next_tuple(&mut out).await;
                let waited = polls.now() != before;
                let (emitted, done) = (out.emitted(), out.is_done());
                progress.emitted += emitted;
                if !self.acked.is_empty() {
                    observer.acked(Duration::ZERO, self.acked.len() as u64);
                }
                for id in self.acked.drain(..) {
                    self.spout.ack(id).await;
                }
                result?;
                if done {
                    progress.done = true;
                    break;
                }
                if emitted == 0 {
                    progress.idle = true;
                    break;
                }
                if waited {
                    progress.waited = true;
                    break;
                }
            }
            Ok(progress)
        })
    }

    fn notices<'a>(
        &'a mut self,
        notices: &'a mut Vec<Control>,
        observer: &'a mut dyn SpoutObserver,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let now = Instant::now();
            // The acked trees of the current run of one emit time: per tree, the clock
            // arithmetic and the histogram's update were a tenth of an acking spout's time.
            let mut run: Option<(Instant, u64)> = None;
            for control in notices.drain(..) {
                match control {
                    Control::Notice(SpoutNotice::Acked(root)) => {
                        if let Some((id, emitted_at)) = self.pending.remove(root) {
                            match &mut run {
                                Some((at, trees)) if *at == emitted_at => *trees += 1,
                                _ => {
                                    if let Some((at, trees)) = run.replace((emitted_at, 1)) {
                                        observer.acked(now.saturating_duration_since(at), trees);
                                    }
                                }
                            }
                            self.spout.ack(id).await;
                        }
                    }
                    Control::Notice(SpoutNotice::Failed(root)) => {
                        if let Some((id, _)) = self.pending.remove(root) {
                            observer.failed();
                            self.spout.fail(id).await;
                        }
                    }
                    Control::Notice(SpoutNotice::ResetTimeout(root)) => {
                        self.pending.touch(root);
                    }
                    Control::Acker(message) => {
                        tracing::warn!(task = self.task, ?message, "spout got a message meant for an acker")
                    }
                }
            }
            if let Some((at, trees)) = run {
                observer.acked(now.saturating_duration_since(at), trees);
            }
        })
    }

    fn expire<'a>(&'a mut self, observer: &'a mut dyn SpoutObserver) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            for id in self.pending.rotate() {
                observer.timed_out();
                self.spout.fail(id).await;
            }
        })
    }

    fn pending(&self) -> usize {
        self.pending.len()
    }

    fn close(&mut self) -> BoxFuture<'_, Result<(), ComponentError>> {
        Box::pin(self.spout.close())
    }
}

struct BoltDriver<C: Bolt> {
    bolt: C,
    task: TaskId,
}

impl<C: Bolt> ErasedBolt for BoltDriver<C> {
    fn prepare<'a>(&'a mut self, ctx: &'a TopologyContext) -> BoxFuture<'a, Result<(), ComponentError>> {
        Box::pin(self.bolt.prepare(ctx))
    }

    fn execute_batch<'a>(
        &'a mut self,
        tuples: &'a mut Vec<Tuple>,
        transfer: &'a mut dyn Transfer,
        polls: &'a Polls,
    ) -> BoxFuture<'a, BatchOutcome> {
        Box::pin(async move {
            let mut outcome = BatchOutcome::default();
            // Drained in place: the batch's buffer goes back to its sender with its capacity.
            let mut input = tuples.drain(..);
            let mut out = BoltCollector::<C>::new(&mut *transfer, self.task, None);
            while let Some(tuple) = input.next() {
                out.next_input(&tuple);
                let before = polls.now();
                let result = self.bolt.execute(tuple, &mut out).await;
                let waited = polls.now() != before;
                outcome.emitted += out.emitted();
                let (acked, failed) = out.finish(result.is_ok(), C::AUTO_ACK);
                outcome.acked += acked;
                outcome.failed += failed;
                outcome.executed += 1;
                if let Err(e) = result {
                    outcome.errors += 1;
                    if outcome.first_error.is_none() {
                        outcome.first_error = Some(e);
                    }
                }
                if waited && input.len() > 0 {
                    outcome.waited = true;
                    let mut rest = unexecuted(input);
                    tuples.append(&mut rest);
                    return outcome;
                }
            }
            outcome
        })
    }

    fn cleanup(&mut self) -> BoxFuture<'_, Result<(), ComponentError>> {
        Box::pin(self.bolt.cleanup())
    }
}
