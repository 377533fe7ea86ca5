//! Cycles: bolts that feed themselves, directly or through other bolts.
//!
//! Two things go wrong with a cycle on plain bounded queues. It never completes: each member's
//! router holds a sender to the next member's queue, so no queue of the cycle ever closes. And
//! it can deadlock: a member waiting for room in a full queue of its own cycle waits for itself
//! (Storm's STORM-3637).
//!
//! Every executor of a cycle's bolts shares one [`CycleGate`]. It counts the cycle's
//! *outstanding* tuples: queued for a member, or executed by one whose outputs have not yet all
//! been sent.
//!
//! - **Feedback edges never wait.** A member sends to a member without waiting for room; the
//!   gate adds the batch to the outstanding count. What enters the cycle from outside waits
//!   instead, until the outstanding count leaves room (the cycle's capacity is the sum of its
//!   members' queue capacities). A member blocks only on queues outside its cycle, which drain
//!   without it, so a cycle always makes progress. A loop that re-emits at most one tuple per
//!   input holds at most its capacity (plus one batch); a loop that multiplies its tuples
//!   holds what it multiplies to, as it would on unbounded queues.
//! - **Completion by counting.** A member retires what it executed once its outputs are sent.
//!   When nothing outside feeds the cycle any more (every producer — upstream executors and
//!   lanes from other workers — is gone) and the outstanding count is zero, no tuple is
//!   anywhere in the cycle: the gate closes and the members stop, which lets everything
//!   downstream drain and close as usual.
//!
//! A cycle whose members run partly in other workers keeps the feedback rule but never closes
//! by itself: it ends when the topology is killed.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, watch};

use crate::inbox::InboxClosed;

/// The shared admission and completion state of one cycle's bolt executors.
#[derive(Debug)]
pub struct CycleGate {
    /// The cycle's components, for logs.
    members: Vec<String>,
    state: Mutex<GateState>,
    room: Notify,
    closed: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct GateState {
    /// Tuples that entered a member's queue and are not yet retired.
    outstanding: usize,
    /// The most tuples let in from outside while tuples are outstanding.
    capacity: usize,
    /// Senders from outside the cycle still alive.
    producers: usize,
    /// Whether the cycle may close once idle: set when the topology is fully set up, and only
    /// when every member runs in this process.
    armed: bool,
    /// Whether the cycle has closed: its members stop.
    closed: bool,
    /// A member's queue is gone: senders waiting for room give up.
    broken: bool,
}

impl CycleGate {
    /// A gate for the cycle of `members`, admitting up to `capacity` outstanding tuples from
    /// outside. Closes only once [armed](CycleGate::arm).
    pub fn new(members: Vec<String>, capacity: usize) -> Arc<CycleGate> {
        Arc::new(CycleGate {
            members,
            state: Mutex::new(GateState { capacity: capacity.max(1), ..GateState::default() }),
            room: Notify::new(),
            closed: watch::channel(false).0,
        })
    }

    /// The cycle's components.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        // Every update is a few integer assignments: a holder that panicked left it consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets `n` tuples in from outside the cycle, waiting while the cycle is full. A batch
    /// always gets in when nothing is outstanding, whatever its size.
    pub(crate) async fn admit(&self, n: usize) -> Result<(), InboxClosed> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut state = self.lock();
                if state.broken {
                    return Err(InboxClosed);
                }
                if state.outstanding == 0 || state.outstanding + n <= state.capacity {
                    state.outstanding += n;
                    return Ok(());
                }
            }
            room.await;
        }
    }

    /// Counts `n` tuples sent over a feedback edge: never waits.
    pub(crate) fn add(&self, n: usize) {
        self.lock().outstanding += n;
    }

    /// Counts one tuple the cycle makes by itself (a tick tuple), unless the cycle has closed.
    pub(crate) fn reserve(&self) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        state.outstanding += 1;
        true
    }

    /// Retires `n` tuples a member executed, once everything they caused has been sent.
    pub(crate) fn retire(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut state = self.lock();
        state.outstanding = state.outstanding.saturating_sub(n);
        self.close_if_idle(&mut state);
        drop(state);
        self.room.notify_waiters();
    }

    /// Allows the cycle to close once idle: the topology is set up.
    pub fn arm(&self) {
        let mut state = self.lock();
        state.armed = true;
        self.close_if_idle(&mut state);
    }

    /// A member's queue is gone (its executor stopped or failed): nothing can enter any more.
    pub(crate) fn break_off(&self) {
        self.lock().broken = true;
        self.room.notify_waiters();
    }

    /// Whether the cycle has closed.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Resolves once the cycle has closed.
    pub(crate) async fn wait_closed(&self) {
        let mut closed = self.closed.subscribe();
        // The sender lives in `self`, which outlives this wait.
        let _ = closed.wait_for(|closed| *closed).await;
    }

    /// Outstanding tuples now, for diagnostics.
    pub fn outstanding(&self) -> usize {
        self.lock().outstanding
    }

    fn close_if_idle(&self, state: &mut GateState) {
        if state.armed && !state.closed && state.producers == 0 && state.outstanding == 0 {
            state.closed = true;
            tracing::debug!(cycle = ?self.members, "cycle idle with no producer left: closing it");
            self.closed.send_replace(true);
        }
    }
}

/// One sender from outside a cycle: keeps the cycle open while it lives.
#[derive(Debug)]
pub(crate) struct Producer(Arc<CycleGate>);

impl Producer {
    pub(crate) fn new(gate: Arc<CycleGate>) -> Producer {
        gate.lock().producers += 1;
        Producer(gate)
    }
}

impl Clone for Producer {
    fn clone(&self) -> Self {
        Producer::new(self.0.clone())
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.producers = state.producers.saturating_sub(1);
        self.0.close_if_idle(&mut state);
    }
}

/// The components on a cycle, grouped by cycle (strongly connected components of the
/// subscription graph with more than one component, or a component subscribed to itself).
/// `edges` are (source, subscriber) pairs.
pub fn cycles<'a>(components: &[&'a str], edges: &[(&'a str, &'a str)]) -> Vec<Vec<&'a str>> {
    // Tarjan's algorithm, iterative: topologies are small, but recursion depth should not
    // depend on user input.
    let index_of = |c: &str| components.iter().position(|x| *x == c);
    let n = components.len();
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut self_loop = vec![false; n];
    for (from, to) in edges {
        if let (Some(a), Some(b)) = (index_of(from), index_of(to)) {
            succ[a].push(b);
            if a == b {
                self_loop[a] = true;
            }
        }
    }
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next = 0;
    let mut found = Vec::new();
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some(&mut (v, ref mut child)) = work.last_mut() {
            if *child == 0 {
                index[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if let Some(&w) = succ[v].get(*child) {
                *child += 1;
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut scc = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    scc.push(w);
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 || self_loop[v] {
                    let members: HashSet<usize> = scc.into_iter().collect();
                    let mut names: Vec<&str> = (0..n).filter(|i| members.contains(i)).map(|i| components[i]).collect();
                    names.sort_unstable();
                    found.push(names);
                }
            }
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_self_loops_and_longer_cycles_only() {
        let components = ["spout", "a", "b", "c", "d", "sink"];
        let edges = [("spout", "a"), ("a", "b"), ("b", "a"), ("b", "c"), ("c", "c"), ("c", "d"), ("d", "sink")];
        assert_eq!(cycles(&components, &edges), vec![vec!["a", "b"], vec!["c"]]);
        assert!(cycles(&components, &[("spout", "a"), ("a", "sink")]).is_empty());
    }

    #[test]
    fn a_gate_closes_once_idle_without_producers_and_armed() {
        let gate = CycleGate::new(vec!["a".into()], 10);
        let producer = Producer::new(gate.clone());
        gate.arm();
        gate.add(3);
        drop(producer);
        assert!(!gate.is_closed(), "3 tuples are outstanding");
        gate.retire(2);
        assert!(!gate.is_closed());
        gate.retire(1);
        assert!(gate.is_closed());
        assert!(!gate.reserve(), "a closed cycle makes no tick tuples");
    }

    #[tokio::test(start_paused = true)]
    async fn admission_waits_for_room_but_feedback_does_not() {
        let gate = CycleGate::new(vec!["a".into()], 10);
        gate.admit(8).await.unwrap();
        gate.add(50);
        assert_eq!(gate.outstanding(), 58);
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.admit(5).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        assert!(!waiting.is_finished());
        gate.retire(54);
        waiting.await.unwrap().unwrap();
        assert_eq!(gate.outstanding(), 9);
    }
}
