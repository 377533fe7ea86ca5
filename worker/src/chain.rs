//! A chain's bolts, run inside the executor of the component that feeds them (see
//! `squall_topology::chain`).
//!
//! The feeding executor's router hands each full or flushed buffer for a chained task over
//! whole ([`Router::take_handoff`]); the chain runs it through that bolt's own driver, router
//! and counters right away, and what that bolt hands over in turn, depth first, so a batch's
//! consequences are done before the next batch and memory stays bounded. Each member keeps its
//! own metrics, errors, ticks and config; acking and anchoring are untouched, since the same
//! tuples travel, only not through a queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use squall_topology::driver::ErasedBolt;
use squall_topology::{TaskId, Tuple};
use tokio::time::Instant;

use crate::executor::{ExecutorParts, TaskFailure, execute, failure};
use crate::inbox::Batch;
use crate::metrics::ExecutorStats;
use crate::router::Router;

/// One chained bolt executor.
pub(crate) struct Member {
    pub(crate) parts: ExecutorParts,
    pub(crate) bolts: Vec<Box<dyn ErasedBolt>>,
    /// When its next tick tuple is due, if it has ticks.
    next_tick: Option<Instant>,
    /// Its prepare failed: it ends alone, and what is handed to it is dropped, as tuples sent
    /// to a stopped executor are.
    failed: bool,
}

impl Member {
    pub(crate) fn new(parts: ExecutorParts, bolts: Vec<Box<dyn ErasedBolt>>) -> Member {
        let next_tick = parts.tick.map(|period| Instant::now() + period);
        Member { parts, bolts, next_tick, failed: false }
    }

    fn first_task(&self) -> TaskId {
        self.parts.contexts.first().map_or(0, |c| c.task_id())
    }

    fn owns(&self, task: TaskId) -> bool {
        self.parts.contexts.iter().any(|c| c.task_id() == task)
    }
}

/// The bolts chained into one executor, in chain order (each after the one feeding it).
pub(crate) struct Chain {
    members: Vec<Member>,
    /// Who runs now: 0 the head, `m + 1` member `m`; a panic is reported as theirs.
    running: Arc<AtomicUsize>,
    /// Batches still to run, the next on top, each with who made it (0: the head, `m + 1`:
    /// member `m`) so its buffer goes back there.
    stack: Vec<(usize, Batch)>,
    scratch: Vec<Batch>,
    /// Tuples run since the last full flush whose outputs may still sit in buffers.
    unsent: usize,
}

impl Chain {
    pub(crate) fn new(members: Vec<Member>, running: Arc<AtomicUsize>) -> Chain {
        Chain { members, running, stack: Vec::new(), scratch: Vec::new(), unsent: 0 }
    }

    /// The chained components, in chain order.
    pub(crate) fn components(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.parts.component.as_str())
    }

    /// Each member's counters, component and first task, in chain order: whom a panic is
    /// reported for (see `running`).
    pub(crate) fn owners(&self) -> Vec<(Arc<ExecutorStats>, String, TaskId)> {
        self.members.iter().map(|m| (m.parts.stats.clone(), m.parts.component.clone(), m.first_task())).collect()
    }

    /// Prepares every member's tasks.
    pub(crate) async fn prepare(&mut self) -> Vec<TaskFailure> {
        let mut failures = Vec::new();
        for member in &mut self.members {
            for (bolt, ctx) in member.bolts.iter_mut().zip(&member.parts.contexts) {
                if let Err(e) = bolt.prepare(ctx).await {
                    failures.push(failure(&member.parts.stats, &member.parts.component, ctx.task_id(), "prepare", e));
                    member.failed = true;
                }
            }
        }
        failures
    }

    /// Cleans up every member's tasks.
    pub(crate) async fn cleanup(&mut self) -> Vec<TaskFailure> {
        let mut failures = Vec::new();
        for member in self.members.iter_mut().filter(|m| !m.failed) {
            let tasks: Vec<TaskId> = member.parts.contexts.iter().map(|c| c.task_id()).collect();
            for (bolt, task) in member.bolts.iter_mut().zip(tasks) {
                if let Err(e) = bolt.cleanup().await {
                    failures.push(failure(&member.parts.stats, &member.parts.component, task, "cleanup", e));
                }
            }
        }
        failures
    }

    /// Runs what `head` handed over, and everything that causes, depth first.
    pub(crate) async fn drain(&mut self, head: &mut Router) {
        head.take_handoff(&mut self.scratch);
        self.push(0);
        while let Some((maker, mut batch)) = self.stack.pop() {
            // A queue send would count against the task's cooperative budget: so does a handed
            // over batch, so a chain that never waits still lets the runtime's timers and other
            // tasks run.
            tokio::task::consume_budget().await;
            let Some(m) = self.members.iter().position(|m| m.owns(batch.task)) else {
                tracing::warn!(task = batch.task, "batch for a chained task this executor does not run; dropped");
                continue;
            };
            let member = &mut self.members[m];
            self.unsent += batch.len();
            if member.failed {
                continue;
            }
            let (first_task, component) = (member.first_task(), member.parts.component.clone());
            self.running.store(m + 1, Ordering::Relaxed);
            execute(&mut member.parts, &mut member.bolts, first_task, &component, &mut batch).await;
            self.running.store(0, Ordering::Relaxed);
            member.parts.router.flush_full().await;
            member.parts.router.take_handoff(&mut self.scratch);
            let tuples = std::mem::take(&mut batch.tuples);
            match maker {
                0 => head.recycle(tuples),
                m => self.members[m - 1].parts.router.recycle(tuples),
            }
            self.push(m + 1);
        }
    }

    /// Moves the batches in `scratch`, made by `maker`, onto the stack so the first made runs
    /// first.
    fn push(&mut self, maker: usize) {
        self.stack.extend(self.scratch.drain(..).rev().map(|batch| (maker, batch)));
    }

    /// Sends what every member still buffers (running what that hands over), after the head's
    /// own flush; then the tuples run so far have had all their outputs sent.
    pub(crate) async fn flush_all(&mut self, head: &mut Router) {
        self.drain(head).await;
        for m in 0..self.members.len() {
            self.members[m].parts.router.flush_all().await;
            self.members[m].parts.router.take_handoff(&mut self.scratch);
            self.push(m + 1);
            if !self.stack.is_empty() {
                self.drain(head).await;
            }
        }
        let unsent = std::mem::take(&mut self.unsent);
        if let Some(in_flight) = self.members.first().and_then(|m| m.parts.in_flight.as_ref()) {
            in_flight.handled(unsent);
        }
    }

    /// Sends each member whose tick is due its tick tuples; returns whether any was.
    pub(crate) async fn tick(&mut self, head: &mut Router) -> bool {
        let now = Instant::now();
        let mut ticked = false;
        for (m, member) in self.members.iter_mut().enumerate().filter(|(_, m)| !m.failed) {
            let (Some(at), Some(period)) = (member.next_tick, member.parts.tick) else { continue };
            if now < at {
                continue;
            }
            member.next_tick = Some(at.max(now - period) + period);
            let secs = period.as_secs();
            let first_task = member.first_task();
            let component = member.parts.component.clone();
            self.running.store(m + 1, Ordering::Relaxed);
            for i in 0..member.bolts.len() {
                let task = first_task + i as TaskId;
                let mut batch = Batch { task, tuples: vec![Tuple::tick(secs)], control: Vec::new() };
                execute(&mut member.parts, &mut member.bolts, first_task, &component, &mut batch).await;
            }
            self.running.store(0, Ordering::Relaxed);
            ticked = true;
        }
        if ticked {
            self.flush_all(head).await;
        }
        ticked
    }

    /// When the next member's tick is due, if any member has ticks.
    pub(crate) fn next_tick(&self) -> Option<Instant> {
        self.members.iter().filter_map(|m| m.next_tick).min()
    }

    /// How long until the next tick, at most `cap`.
    pub(crate) fn until_tick(&self, cap: Duration) -> Duration {
        self.next_tick().map_or(cap, |at| at.saturating_duration_since(Instant::now()).min(cap))
    }
}
