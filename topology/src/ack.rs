//! Acking, as in Storm: the messages between tasks and acker tasks, the rotating map that times
//! trees out, and a replay helper for spouts.
//!
//! Every tracked spout tuple roots a tree with a 64-bit root id (random in its top bits, and
//! naming the spout's slot for it: [`PendingTrees`]). Each copy of a tuple sent
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

/// A spout task's trees in flight: message id and emit time by root id, expiring like
/// [`RotatingMap`] with two buckets (between one and two rotations after the last touch).
///
/// The spout picks its root ids, so a root names its entry's slot: `[40 random bits | 24-bit
/// slot]`. A lookup is an index and a compare, freed slots are reused first (warm in cache), and
/// nothing is hashed per tuple. The random bits pick the acker evenly, keep the roots of
/// different spout tasks apart, and make a late notice for a tree that already timed out miss
/// the slot's next tree (one chance in 2⁴⁰). Memory follows the peak number of trees in flight;
/// at most [`PendingTrees::MAX`] per task.
#[derive(Debug)]
pub struct PendingTrees<M, T> {
    slots: Vec<Option<PendingTree<M, T>>>,
    free: Vec<u32>,
    len: usize,
    generation: u64,
}

#[derive(Debug)]
struct PendingTree<M, T> {
    root: u64,
    id: M,
    emitted_at: T,
    stamp: u64,
}

const SLOT_BITS: u32 = 24;

impl<M, T: Copy> Default for PendingTrees<M, T> {
    fn default() -> Self {
        PendingTrees { slots: Vec::new(), free: Vec::new(), len: 0, generation: 0 }
    }
}

impl<M, T: Copy> PendingTrees<M, T> {
    /// The most trees one spout task can have in flight.
    pub const MAX: usize = 1 << SLOT_BITS;

    /// Starts a tree for message `id` emitted at `emitted_at` and returns its root id (never
    /// 0), or gives `id` back when [`Self::MAX`] trees are in flight.
    pub fn insert(&mut self, id: M, emitted_at: T) -> Result<u64, M> {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None if self.slots.len() < Self::MAX => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
            None => return Err(id),
        };
        let root = (fastrand::u64(1..1 << (64 - SLOT_BITS)) << SLOT_BITS) | u64::from(slot);
        self.slots[slot as usize] = Some(PendingTree { root, id, emitted_at, stamp: self.generation });
        self.len += 1;
        Ok(root)
    }

    fn slot_of(&mut self, root: u64) -> Option<&mut Option<PendingTree<M, T>>> {
        let slot = self.slots.get_mut((root & ((1 << SLOT_BITS) - 1)) as usize)?;
        slot.as_ref().is_some_and(|tree| tree.root == root).then_some(slot)
    }

    /// Ends a tree: its message id and emit time, if it is still in flight.
    pub fn remove(&mut self, root: u64) -> Option<(M, T)> {
        let tree = self.slot_of(root)?.take()?;
        self.free.push((root & ((1 << SLOT_BITS) - 1)) as u32);
        self.len -= 1;
        Some((tree.id, tree.emitted_at))
    }

    /// Restarts a tree's expiry; false when it is not in flight.
    pub fn touch(&mut self, root: u64) -> bool {
        let generation = self.generation;
        match self.slot_of(root).and_then(Option::as_mut) {
            Some(tree) => {
                tree.stamp = generation;
                true
            }
            None => false,
        }
    }

    /// Advances one rotation and returns the message ids of the trees that expired with it:
    /// those not touched since the rotation before. Scans every slot, once per timeout.
    pub fn rotate(&mut self) -> Vec<M> {
        self.generation += 1;
        let mut expired = Vec::new();
        for (slot, entry) in self.slots.iter_mut().enumerate() {
            if entry.as_ref().is_some_and(|tree| self.generation - tree.stamp >= 2)
                && let Some(tree) = entry.take()
            {
                expired.push(tree.id);
                self.free.push(slot as u32);
            }
        }
        self.len -= expired.len();
        expired
    }

    /// How many trees are in flight.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len == 0
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
    fn pending_trees_find_their_slot_and_expire_after_two_rotations() {
        let mut p = PendingTrees::default();
        let a = p.insert("a", 0).unwrap();
        assert_eq!(p.rotate(), Vec::<&str>::new());
        let b = p.insert("b", 1).unwrap();
        assert_eq!((a & 0xff_ffff, b & 0xff_ffff), (0, 1), "two trees in flight, two slots");
        assert!(a >> 24 != 0 && b >> 24 != 0);
        assert_eq!(p.rotate(), vec!["a"]);
        assert_eq!(p.remove(a), None, "expired");
        assert!(p.touch(b));
        assert_eq!(p.rotate(), Vec::<&str>::new());
        assert_eq!(p.remove(b), Some(("b", 1)));
        assert!(p.is_empty() && !p.touch(b));
    }

    #[test]
    fn a_reused_slot_does_not_answer_to_the_old_root() {
        let mut p = PendingTrees::default();
        let mut seen = std::collections::HashSet::new();
        for i in 0..1_000 {
            let root = p.insert(i, 0).unwrap();
            assert_eq!(root & 0xff_ffff, 0, "the freed slot is reused");
            assert!(seen.insert(root), "a root repeats too soon");
            assert_eq!(p.remove(root), Some((i, 0)));
            assert_eq!(p.remove(root), None);
        }
        // An old root of a slot now holding another tree finds nothing.
        let old = *seen.iter().next().unwrap();
        let current = p.insert(5_000, 0).unwrap();
        assert!(old != current && p.remove(old).is_none() && !p.touch(old));
        assert_eq!((p.len(), p.remove(current)), (1, Some((5_000, 0))));
    }

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
