//! Acking, as in Storm: the messages between tasks and acker tasks, the rotating map that times
//! trees out, and a replay helper for spouts.
//!
//! Every tracked spout tuple roots a tree with a random 64-bit root id. Each copy of a tuple sent
//! to a task gets a random edge id. The acker for a root keeps the XOR of every edge id it has
//! been told about: the spout's `Init` adds the edges of the root tuple's copies; a bolt's `Ack`
//! of a tuple adds that tuple's edge (removing it) and the edges of the children it emitted
//! (adding them). Each edge is XORed in exactly twice, so the value is zero exactly when every
//! tuple of the tree has been acked.
//!
//! These messages travel in the same batches as tuples ([`Control`]), so acking needs nothing
//! but the transport.
//!
//! **Sole copies skip the acker.** When a spout's tracked emit goes to exactly one task, the
//! runtime gives that copy the root id itself as its edge id (a random edge equals its root with
//! probability 2⁻⁶⁴), and the spout sends no `Init`. The bolt that receives such a tuple knows it
//! holds the tree's only root-level tuple, so it speaks for the spout: acking it with no
//! anchored children in the same `execute` call completes the tree, and the bolt tells the spout
//! task (the tuple's source) directly; failing it fails the tree directly. Otherwise the bolt
//! sends [`AckerMessage::Adopt`], which carries the spout task and, the first time the acker sees
//! it for a tree, the root (the sole edge the spout never reported). A spout feeding a sink bolt
//! thus costs no acker message at all.

use std::collections::VecDeque;
use std::hash::Hash;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::tuple::TaskId;

/// The component id of the acker tasks.
pub const ACKER_COMPONENT: &str = "__acker";
/// A message to the acker task that owns `root`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AckerMessage {
    /// A spout emitted a tracked tuple.
    Init {
        /// The tree.
        root: u64,
        /// XOR of the edge ids of the root tuple's copies.
        value: u64,
        /// The spout task to notify.
        spout_task: TaskId,
    },
    /// XOR `value` into the tree: an acked tuple's edge and its children's edges.
    Ack {
        /// The tree.
        root: u64,
        /// The edges to XOR in.
        value: u64,
    },
    /// The tree failed.
    Fail {
        /// The tree.
        root: u64,
    },
    /// Restart the tree's timeout.
    ResetTimeout {
        /// The tree.
        root: u64,
    },
    /// From the bolt holding a spout tuple's sole copy (whose edge id is `root`): XOR `value` in
    /// like `Ack`, learn the spout task like `Init`, and XOR `root` in once per tree in place of
    /// the spout's missing `Init`.
    Adopt {
        /// The tree.
        root: u64,
        /// The edges to XOR in.
        value: u64,
        /// The spout task to notify.
        spout_task: TaskId,
    },
}

/// What an acker tells a spout task about one of its trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpoutNotice {
    /// Every tuple of the tree was acked.
    Acked(u64),
    /// A tuple of the tree failed.
    Failed(u64),
    /// Restart the tree's timeout.
    ResetTimeout(u64),
}

/// A control message between tasks: acking traffic, carried in batches beside the tuples (as
/// Heron carries acks in control tuple sets) so it costs a few bytes, not a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// To an acker task.
    Acker(AckerMessage),
    /// From an acker to a spout task.
    Notice(SpoutNotice),
}

impl AckerMessage {
    /// The root id, which picks the acker task.
    pub fn root(&self) -> u64 {
        match *self {
            AckerMessage::Init { root, .. }
            | AckerMessage::Ack { root, .. }
            | AckerMessage::Fail { root }
            | AckerMessage::ResetTimeout { root }
            | AckerMessage::Adopt { root, .. } => root,
        }
    }
}

/// A map whose entries expire after between `buckets - 1` and `buckets` rotations, as Storm's
/// `RotatingMap`, kept as one hash map with a generation stamp per entry: every operation is one
/// lookup, and `rotate` (once per timeout) scans the map.
#[derive(Debug)]
pub struct RotatingMap<K, V> {
    entries: FxHashMap<K, (V, u64)>,
    generation: u64,
    buckets: u64,
}

impl<K: Hash + Eq, V> RotatingMap<K, V> {
    /// A map with `buckets` buckets (at least 2).
    pub fn new(buckets: usize) -> Self {
        RotatingMap { entries: FxHashMap::default(), generation: 0, buckets: buckets.max(2) as u64 }
    }

    /// Inserts or replaces, restarting the key's expiry.
    pub fn insert(&mut self, key: K, value: V) {
        self.entries.insert(key, (value, self.generation));
    }

    /// The value of a key, inserted with `make` when absent.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let generation = self.generation;
        &mut self.entries.entry(key).or_insert_with(|| (make(), generation)).0
    }

    /// The value of a key.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.entries.get_mut(key).map(|(v, _)| v)
    }

    /// Removes a key.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.entries.remove(key).map(|(v, _)| v)
    }

    /// Restarts a key's expiry.
    pub fn touch(&mut self, key: K) -> bool {
        match self.entries.get_mut(&key) {
            Some(entry) => {
                entry.1 = self.generation;
                true
            }
            None => false,
        }
    }

    /// Advances one rotation and returns the entries that expired with it.
    pub fn rotate(&mut self) -> impl Iterator<Item = (K, V)> + '_ {
        self.generation += 1;
        let (generation, buckets) = (self.generation, self.buckets);
        self.entries.extract_if(move |_, (_, stamp)| generation - *stamp >= buckets).map(|(k, (v, _))| (k, v))
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The common "keep what is in flight, re-emit what failed" bookkeeping of a reliable spout.
///
/// ```
/// # use squall_topology::ack::ReplayQueue;
/// let mut q: ReplayQueue<u64, &str> = ReplayQueue::new();
/// q.track(1, "a");
/// q.track(2, "b");
/// q.fail(1);               // in `Spout::fail`
/// assert_eq!(q.next_replay(), Some((1, "a")));  // in `next_tuple`, before new tuples
/// assert!(q.ack(&1));      // in `Spout::ack`
/// assert_eq!(q.in_flight(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct ReplayQueue<K, T> {
    in_flight: FxHashMap<K, T>,
    failed: VecDeque<K>,
    acked: u64,
    replayed: u64,
}

impl<K, T> Default for ReplayQueue<K, T> {
    fn default() -> Self {
        ReplayQueue { in_flight: FxHashMap::default(), failed: VecDeque::new(), acked: 0, replayed: 0 }
    }
}

impl<K: Hash + Eq + Clone, T: Clone> ReplayQueue<K, T> {
    /// An empty queue.
    pub fn new() -> Self {
        ReplayQueue::default()
    }

    /// Remembers a tuple emitted with `id` until it is acked.
    pub fn track(&mut self, id: K, tuple: T) {
        self.in_flight.insert(id, tuple);
    }

    /// The tree of `id` completed: forget it. Returns whether it was in flight.
    pub fn ack(&mut self, id: &K) -> bool {
        let known = self.in_flight.remove(id).is_some();
        self.acked += u64::from(known);
        known
    }

    /// The tree of `id` failed: queue it for replay.
    pub fn fail(&mut self, id: K) {
        if self.in_flight.contains_key(&id) {
            self.failed.push_back(id);
        }
    }

    /// The next failed tuple to emit again (it stays in flight under the same id).
    pub fn next_replay(&mut self) -> Option<(K, T)> {
        while let Some(id) = self.failed.pop_front() {
            if let Some(tuple) = self.in_flight.get(&id) {
                self.replayed += 1;
                return Some((id, tuple.clone()));
            }
        }
        None
    }

    /// Tuples emitted and not yet acked (including those waiting for replay).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// How many trees were acked.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// How many replays were handed out.
    pub fn replayed(&self) -> u64 {
        self.replayed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotating_map_expires_after_the_last_bucket() {
        let mut m = RotatingMap::new(2);
        m.insert(1, "a");
        assert_eq!(m.rotate().count(), 0);
        m.insert(2, "b");
        assert_eq!(m.rotate().collect::<Vec<_>>(), vec![(1, "a")]);
        assert!(m.touch(2));
        assert_eq!(m.rotate().count(), 0);
        assert_eq!(m.len(), 1);
        assert_eq!(m.rotate().collect::<Vec<_>>(), vec![(2, "b")]);
        assert!(m.is_empty());
    }

    #[test]
    fn replay_queue_replays_only_what_is_in_flight() {
        let mut q = ReplayQueue::new();
        q.track(1u64, 'a');
        q.fail(1);
        q.fail(9);
        assert!(q.ack(&1));
        assert_eq!(q.next_replay(), None);
        assert_eq!((q.acked(), q.replayed()), (1, 0));
    }
}
