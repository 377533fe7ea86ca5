//! Executors: the tokio tasks that run a component's tasks. One executor runs a contiguous range
//! of tasks of one component, reads one input queue, and routes through one [`Router`].
//!
//! The executor is type-erased; the per-tuple loop lives in the component's driver (see
//! `squall_topology::driver`), entered once per batch.

use std::sync::Arc;
use std::time::Duration;

// tokio's clock, which a test may pause and advance (simulated time).
use tokio::time::Instant;

use squall_topology::driver::{ErasedBolt, ErasedSpout, Polls, count_polls};
use squall_topology::{ComponentError, TaskId, TopologyContext, Tuple};
use tokio::sync::watch;

use crate::chain::Chain;
use crate::cycle::CycleGate;
use crate::inbox::{Batch, InboxReceiver};
use crate::instruments::InFlight;
use crate::metrics::ExecutorStats;
use crate::router::Router;

/// The lifecycle state of a running topology, broadcast to its executors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopologyStatus {
    /// Spouts emit.
    Active,
    /// Spouts are deactivated; bolts process what reaches them.
    Inactive,
    /// Spouts have stopped for good; bolts drain their queues and stop when their inputs end.
    Killing,
    /// Everything stops now, without draining.
    Stopped,
}

/// A failure that ends a task: an error from `open`, `prepare`, `cleanup` or `close`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[error("component `{component}` task {task} failed in {phase}: {message}")]
pub struct TaskFailure {
    /// The component.
    pub component: String,
    /// The task.
    pub task: TaskId,
    /// The lifecycle method that failed.
    pub phase: &'static str,
    /// The error.
    pub message: String,
}

/// Everything an executor needs besides its component instances.
pub struct ExecutorParts {
    /// The component id.
    pub component: String,
    /// One context per task, in task order (tasks are contiguous).
    pub contexts: Vec<TopologyContext>,
    /// Routes the executor's emits.
    pub router: Router,
    /// Tuples for the executor's tasks (bolts).
    pub inbox: Option<InboxReceiver>,
    /// The topology's status.
    pub status: watch::Receiver<TopologyStatus>,
    /// Counters.
    pub stats: Arc<ExecutorStats>,
    /// Tuples per emitted batch.
    pub batch_size: usize,
    /// Tick tuple period for bolts.
    pub tick: Option<Duration>,
    /// Spouts: how long a tree may take before it times out (with acking and timeouts on).
    pub message_timeout: Option<Duration>,
    /// Counts tuples in flight (tests only).
    pub in_flight: Option<Arc<InFlight>>,
    /// The bolts chained into this executor, if any.
    pub(crate) chain: Option<Chain>,
}

/// How often partially filled output batches are sent even while busy.
const FLUSH_INTERVAL: Duration = Duration::from_millis(1);

pub(crate) fn failure(
    stats: &ExecutorStats,
    component: &str,
    task: TaskId,
    phase: &'static str,
    e: ComponentError,
) -> TaskFailure {
    tracing::error!(component, task, phase, error = %e, "task failed");
    stats.add_errors(1, task, format!("{phase} failed: {e}"));
    TaskFailure { component: component.to_owned(), task, phase, message: e.to_string() }
}

fn status_now(status: &mut watch::Receiver<TopologyStatus>) -> TopologyStatus {
    // A dropped sender means the cluster that ran us is gone: stop.
    if status.has_changed().is_err() {
        return TopologyStatus::Stopped;
    }
    *status.borrow_and_update()
}

/// Runs spout tasks until they are all done (and their trees settled) or the topology is killed.
pub async fn run_spouts(mut parts: ExecutorParts, mut spouts: Vec<Box<dyn ErasedSpout>>) -> Vec<TaskFailure> {
    let mut failures = Vec::new();
    let component = parts.component.clone();
    for (spout, ctx) in spouts.iter_mut().zip(&parts.contexts) {
        if let Err(e) = spout.open(ctx).await {
            failures.push(failure(&parts.stats, &component, ctx.task_id(), "open", e));
        }
    }
    if !failures.is_empty() {
        return failures;
    }
    // A chained bolt whose prepare failed ends alone, as its own executor would.
    let chain_failures = parts.prepare_chain().await;
    let stats = parts.stats.clone();
    let mut observer: &ExecutorStats = &stats;
    let tasks: Vec<TaskId> = parts.contexts.iter().map(|c| c.task_id()).collect();
    let first_task = tasks.first().copied().unwrap_or(0);
    let mut inbox = parts.inbox.take();
    let mut received: Option<Batch> = None;
    let mut next_rotation = parts.message_timeout.map(|t| Instant::now() + t);
    let mut done = vec![false; spouts.len()];
    let mut active = false;
    let mut idle_rounds = 0u32;
    let mut last_flush = Instant::now();
    // Emits whose tuples may still sit in the router's buffers: announced to a test's
    // in-flight counter only once sent.
    let mut unannounced = 0;
    let mut slow = false;
    loop {
        parts.chain_ticks().await;
        match status_now(&mut parts.status) {
            TopologyStatus::Killing | TopologyStatus::Stopped => break,
            TopologyStatus::Active if !active => {
                for spout in &mut spouts {
                    spout.activate().await;
                }
                active = true;
            }
            TopologyStatus::Inactive if active => {
                // Told first: a flush may wait on a full queue (a fenced worker's lanes to
                // peers it cannot reach), and the spout must know it is off before that.
                for spout in &mut spouts {
                    spout.deactivate().await;
                }
                active = false;
                parts.flush_all().await;
                parts.announce(&mut unannounced);
            }
            _ => {}
        }

        // The acker's notices: acks, fails, timeout resets. Handled whatever the status.
        if let Some(inbox) = inbox.as_mut() {
            while let Some(mut batch) = received.take().or_else(|| inbox.try_recv()) {
                let handled = batch.len();
                if let Some(spout) = batch.task.checked_sub(first_task).and_then(|i| spouts.get_mut(i as usize)) {
                    spout.notices(&mut batch.control, &mut observer).await;
                }
                inbox.recycle(std::mem::take(&mut batch.tuples));
                if let Some(in_flight) = &parts.in_flight {
                    in_flight.handled(handled);
                }
            }
        }
        if let (Some(at), Some(timeout)) = (next_rotation, parts.message_timeout)
            && Instant::now() >= at
        {
            for spout in &mut spouts {
                spout.expire(&mut observer).await;
            }
            next_rotation = Some(at + timeout);
        }

        let all_done = done.iter().all(|d| *d);
        if all_done && spouts.iter().all(|s| s.pending() == 0) {
            break;
        }
        let mut wait = true;
        if active && !all_done {
            for (i, spout) in spouts.iter_mut().enumerate() {
                if done[i] {
                    continue;
                }
                let polls = Polls::default();
                let busy = stats.busy();
                let outcome =
                    count_polls(&polls, spout.next_batch(parts.batch_size, &mut parts.router, &mut observer, &polls))
                        .await;
                drop(busy);
                match outcome {
                    Ok(progress) => {
                        unannounced += progress.emitted;
                        slow |= progress.waited;
                        wait &= progress.idle || progress.throttled || progress.done;
                        done[i] = progress.done;
                    }
                    Err(e) => {
                        tracing::warn!(component, task = tasks[i], error = %e, "next_tuple failed");
                        parts.stats.add_errors(1, tasks[i], e.to_string());
                    }
                }
            }
            parts.flush_counts();
            parts.flush_full().await;
        }
        if !wait {
            idle_rounds = 0;
            // A spout that waits inside `next_tuple` is slow per tuple: send its tuples now.
            if parts.router.has_pending() && (std::mem::take(&mut slow) || last_flush.elapsed() >= FLUSH_INTERVAL) {
                parts.flush_all().await;
                parts.announce(&mut unannounced);
                last_flush = Instant::now();
            }
            continue;
        }

        // Nothing to emit now: send what is buffered, then wait for a notice, a status change,
        // the next timeout rotation, or (when idle) a short back-off as Storm's spout wait.
        parts.flush_all().await;
        parts.announce(&mut unannounced);
        last_flush = Instant::now();
        idle_rounds = idle_rounds.saturating_add(1);
        if idle_rounds < 8 && active && !all_done {
            tokio::task::yield_now().await;
            continue;
        }
        let backoff = if active && !all_done { Duration::from_millis(1) } else { Duration::from_millis(100) };
        let until = next_rotation.map_or(backoff, |at| at.saturating_duration_since(Instant::now()).min(backoff));
        let until = parts.until_chain_tick(until);
        tokio::select! {
            batch = recv_or_pending(&mut inbox) => received = batch,
            changed = parts.status.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = tokio::time::sleep(until) => {}
        }
    }
    parts.flush_all().await;
    parts.announce(&mut unannounced);
    if active {
        for spout in &mut spouts {
            spout.deactivate().await;
        }
    }
    for (spout, task) in spouts.iter_mut().zip(&tasks) {
        if let Err(e) = spout.close().await {
            failures.push(failure(&parts.stats, &component, *task, "close", e));
        }
    }
    failures.extend(chain_failures);
    failures.extend(parts.cleanup_chain().await);
    failures
}

/// The next batch of an optional inbox; never ready without one (or once it is closed).
async fn recv_or_pending(inbox: &mut Option<InboxReceiver>) -> Option<Batch> {
    match inbox {
        Some(inbox) => match inbox.recv().await {
            Some(batch) => Some(batch),
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Runs bolt tasks until every upstream executor is gone and the queue is drained, or the
/// topology is stopped.
pub async fn run_bolts(mut parts: ExecutorParts, mut bolts: Vec<Box<dyn ErasedBolt>>) -> Vec<TaskFailure> {
    let mut failures = Vec::new();
    let component = parts.component.clone();
    for (bolt, ctx) in bolts.iter_mut().zip(&parts.contexts) {
        if let Err(e) = bolt.prepare(ctx).await {
            failures.push(failure(&parts.stats, &component, ctx.task_id(), "prepare", e));
        }
    }
    if !failures.is_empty() {
        return failures;
    }
    // A chained bolt whose prepare failed ends alone, as its own executor would.
    let chain_failures = parts.prepare_chain().await;
    let tasks: Vec<TaskId> = parts.contexts.iter().map(|c| c.task_id()).collect();
    let first_task = tasks.first().copied().unwrap_or(0);
    let Some(mut inbox) = parts.inbox.take() else {
        return failures;
    };
    let mut ticks = parts.tick.map(|period| tokio::time::interval_at(tokio::time::Instant::now() + period, period));
    let mut batch_buf: Vec<Tuple> = Vec::new();
    // In a cycle, the gate decides when the queue is finished: feedback senders keep it open.
    let cycle = inbox.cycle().cloned();
    loop {
        if status_now(&mut parts.status) == TopologyStatus::Stopped {
            break;
        }
        let chain_tick =
            parts.chain.as_ref().and_then(|c| c.next_tick()).map(|_| parts.until_chain_tick(Duration::MAX));
        let chained = chain_tick.is_some();
        tokio::select! {
            biased;
            changed = parts.status.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = next_tick(&mut ticks) => {
                if cycle.as_ref().is_some_and(|gate| !gate.reserve()) {
                    continue;
                }
                let secs = parts.tick.map_or(0, |t| t.as_secs());
                for bolt in bolts.iter_mut() {
                    batch_buf.push(Tuple::tick(secs));
                    let started = Instant::now();
                    let polls = Polls::default();
                    let busy = parts.stats.busy();
                    let outcome = count_polls(&polls, bolt.execute_batch(&mut batch_buf, &mut parts.router, &polls)).await;
                    drop(busy);
                    record(&mut parts, &component, first_task, outcome, started.elapsed());
                }
                parts.flush_all().await;
                if let Some(gate) = &cycle {
                    gate.retire(1);
                }
            }
            batch = inbox.recv() => {
                let Some(mut batch) = batch else { break };
                let mut last_flush = Instant::now();
                // Tuples executed whose outputs may still sit in the router's buffers.
                let mut unsent = 0;
                loop {
                    unsent += batch.len();
                    execute(&mut parts, &mut bolts, first_task, &component, &mut batch).await;
                    inbox.recycle(std::mem::take(&mut batch.tuples));
                    parts.flush_full().await;
                    match inbox.try_recv() {
                        Some(next) => {
                            batch = next;
                            if last_flush.elapsed() >= FLUSH_INTERVAL {
                                parts.flush_all().await;
                                parts.retire(&cycle, &mut unsent);
                                parts.chain_ticks().await;
                                last_flush = Instant::now();
                            }
                        }
                        None => break,
                    }
                }
                parts.flush_all().await;
                parts.retire(&cycle, &mut unsent);
            }
            _ = closed(&cycle) => break,
            _ = tokio::time::sleep(chain_tick.unwrap_or_default()), if chained => {
                parts.chain_ticks().await;
            }
        }
    }
    parts.flush_all().await;
    for (bolt, task) in bolts.iter_mut().zip(&tasks) {
        if let Err(e) = bolt.cleanup().await {
            failures.push(failure(&parts.stats, &component, *task, "cleanup", e));
        }
    }
    failures.extend(chain_failures);
    failures.extend(parts.cleanup_chain().await);
    failures
}

pub(crate) async fn execute(
    parts: &mut ExecutorParts,
    bolts: &mut [Box<dyn ErasedBolt>],
    first_task: TaskId,
    component: &str,
    batch: &mut Batch,
) {
    let Some(bolt) = batch.task.checked_sub(first_task).and_then(|i| bolts.get_mut(i as usize)) else {
        tracing::warn!(component, task = batch.task, "batch for a task this executor does not run; dropped");
        return;
    };
    while !batch.tuples.is_empty() {
        let started = Instant::now();
        let polls = Polls::default();
        let busy = parts.stats.busy();
        let outcome = count_polls(&polls, bolt.execute_batch(&mut batch.tuples, &mut parts.router, &polls)).await;
        drop(busy);
        let waited = outcome.waited;
        record(parts, component, batch.task, outcome, started.elapsed());
        if waited {
            // A slow bolt: send what it emitted before going on with the batch.
            parts.router.flush_all().await;
        }
    }
    if !batch.control.is_empty() {
        let started = Instant::now();
        let handled = batch.control.len() as u64;
        bolt.control(&mut batch.control, &mut parts.router);
        parts.stats.add_executed(handled, started.elapsed());
    }
}

fn record(
    parts: &mut ExecutorParts,
    component: &str,
    task: TaskId,
    outcome: squall_topology::driver::BatchOutcome,
    took: Duration,
) {
    parts.stats.add_executed(outcome.executed as u64, took);
    parts.stats.add_acks(outcome.acked as u64, outcome.failed as u64);
    parts.flush_counts();
    if let Some(e) = outcome.first_error {
        tracing::warn!(component, task, errors = outcome.errors, error = %e, "execute failed");
        parts.stats.add_errors(outcome.errors as u64, task, e.to_string());
    }
}

/// Resolves once the executor's cycle has closed; never outside a cycle.
async fn closed(cycle: &Option<Arc<CycleGate>>) {
    match cycle {
        Some(gate) => gate.wait_closed().await,
        None => std::future::pending().await,
    }
}

async fn next_tick(ticks: &mut Option<tokio::time::Interval>) {
    match ticks {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

impl ExecutorParts {
    /// `unsent` executed tuples have had all their outputs sent: tells the executor's cycle
    /// and a test's in-flight counter.
    fn retire(&self, cycle: &Option<Arc<CycleGate>>, unsent: &mut usize) {
        let n = std::mem::take(unsent);
        if let Some(gate) = cycle {
            gate.retire(n);
        }
        if let Some(in_flight) = &self.in_flight {
            in_flight.handled(n);
        }
    }

    /// `emitted` spout emits have been sent: tells a test's in-flight counter.
    fn announce(&self, emitted: &mut usize) {
        let n = std::mem::take(emitted);
        if let Some(in_flight) = &self.in_flight {
            in_flight.spout_emitted(n);
        }
    }

    fn flush_counts(&mut self) {
        let (emitted, transferred) = self.router.take_counts();
        self.stats.add_emits(emitted, transferred);
    }

    /// Sends every buffer that reached the batch size, and runs the chained bolts on what
    /// that hands over.
    async fn flush_full(&mut self) {
        self.router.flush_full().await;
        if let Some(chain) = &mut self.chain
            && self.router.has_handoff()
        {
            chain.drain(&mut self.router).await;
        }
    }

    /// Sends every buffer, the chained bolts' too (running what is handed over).
    async fn flush_all(&mut self) {
        self.router.flush_all().await;
        if let Some(chain) = &mut self.chain {
            chain.flush_all(&mut self.router).await;
        }
    }

    /// Prepares the chained bolts.
    async fn prepare_chain(&mut self) -> Vec<TaskFailure> {
        match &mut self.chain {
            Some(chain) => chain.prepare().await,
            None => Vec::new(),
        }
    }

    /// Cleans up the chained bolts.
    async fn cleanup_chain(&mut self) -> Vec<TaskFailure> {
        match &mut self.chain {
            Some(chain) => chain.cleanup().await,
            None => Vec::new(),
        }
    }

    /// Runs the chained bolts' due ticks.
    async fn chain_ticks(&mut self) {
        if let Some(chain) = &mut self.chain {
            chain.tick(&mut self.router).await;
        }
    }

    /// How long until a chained bolt's next tick, at most `cap`.
    fn until_chain_tick(&self, cap: Duration) -> Duration {
        self.chain.as_ref().map_or(cap, |c| c.until_tick(cap))
    }
}

impl Drop for ExecutorParts {
    fn drop(&mut self) {
        self.flush_counts();
    }
}
