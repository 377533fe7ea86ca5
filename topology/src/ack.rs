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
//! These are ordinary tuples on system streams, so acking needs nothing but the transport.

use std::collections::VecDeque;
use std::hash::Hash;
use std::sync::OnceLock;

use rustc_hash::FxHashMap;

use crate::tuple::{StreamMeta, TaskId, Tuple};
use crate::value::{Value, Values};

/// The component id of the acker tasks.
pub const ACKER_COMPONENT: &str = "__acker";
/// Spout → acker: a new tree (root, XOR of the root tuple's edges, spout task).
pub const ACK_INIT_STREAM: &str = "__ack_init";
/// Task → acker: XOR these edges into the tree. Acker → spout: the tree is complete.
pub const ACK_ACK_STREAM: &str = "__ack_ack";
/// Task → acker: the tree failed. Acker → spout: the tree failed.
pub const ACK_FAIL_STREAM: &str = "__ack_fail";
/// Task → acker → spout: restart the tree's timeout.
pub const ACK_RESET_TIMEOUT_STREAM: &str = "__ack_reset_timeout";

/// A message to the acker task that owns `root`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

/// What an acker tells a spout task about one of its trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoutNotice {
    /// Every tuple of the tree was acked.
    Acked(u64),
    /// A tuple of the tree failed.
    Failed(u64),
    /// Restart the tree's timeout.
    ResetTimeout(u64),
}

fn meta(component: &str, stream: &'static str) -> &'static StreamMeta {
    let fields: &[&str] = match stream {
        ACK_INIT_STREAM => &["id", "val", "task"],
        ACK_ACK_STREAM => &["id", "val"],
        _ => &["id"],
    };
    StreamMeta::intern(component, stream, fields)
}

fn acker_meta(stream: &'static str) -> &'static StreamMeta {
    static METAS: OnceLock<[&'static StreamMeta; 3]> = OnceLock::new();
    let metas = METAS.get_or_init(|| {
        [
            meta(ACKER_COMPONENT, ACK_ACK_STREAM),
            meta(ACKER_COMPONENT, ACK_FAIL_STREAM),
            meta(ACKER_COMPONENT, ACK_RESET_TIMEOUT_STREAM),
        ]
    });
    match stream {
        ACK_ACK_STREAM => metas[0],
        ACK_FAIL_STREAM => metas[1],
        _ => metas[2],
    }
}

/// The interned stream metadata of one component's acking messages: look it up once per
/// executor, not per message.
#[derive(Debug, Clone, Copy)]
pub struct AckStreams {
    init: &'static StreamMeta,
    ack: &'static StreamMeta,
    fail: &'static StreamMeta,
    reset: &'static StreamMeta,
}

impl AckStreams {
    /// The acking streams of `component`.
    pub fn of(component: &str) -> Self {
        AckStreams {
            init: meta(component, ACK_INIT_STREAM),
            ack: meta(component, ACK_ACK_STREAM),
            fail: meta(component, ACK_FAIL_STREAM),
            reset: meta(component, ACK_RESET_TIMEOUT_STREAM),
        }
    }
}

impl AckerMessage {
    /// The root id, which picks the acker task.
    pub fn root(&self) -> u64 {
        match *self {
            AckerMessage::Init { root, .. }
            | AckerMessage::Ack { root, .. }
            | AckerMessage::Fail { root }
            | AckerMessage::ResetTimeout { root } => root,
        }
    }

    /// The message as a tuple from task `src` of the component whose streams are `streams`.
    pub fn to_tuple(self, streams: &AckStreams, src: TaskId) -> Tuple {
        let mut values = Values::new();
        let meta = match self {
            AckerMessage::Init { root, value, spout_task } => {
                values.extend([Value::U64(root), Value::U64(value), Value::U64(spout_task.into())]);
                streams.init
            }
            AckerMessage::Ack { root, value } => {
                values.extend([Value::U64(root), Value::U64(value)]);
                streams.ack
            }
            AckerMessage::Fail { root } => {
                values.push(Value::U64(root));
                streams.fail
            }
            AckerMessage::ResetTimeout { root } => {
                values.push(Value::U64(root));
                streams.reset
            }
        };
        Tuple::new(meta, src, values, Default::default())
    }

    /// Reads a message from a tuple on an acker input stream.
    pub fn from_tuple(tuple: &Tuple) -> Option<AckerMessage> {
        let v = tuple.values();
        let u = |i: usize| v.get(i).and_then(Value::as_u64);
        Some(match tuple.source_stream() {
            ACK_INIT_STREAM => AckerMessage::Init { root: u(0)?, value: u(1)?, spout_task: u32::try_from(u(2)?).ok()? },
            ACK_ACK_STREAM => AckerMessage::Ack { root: u(0)?, value: u(1)? },
            ACK_FAIL_STREAM => AckerMessage::Fail { root: u(0)? },
            ACK_RESET_TIMEOUT_STREAM => AckerMessage::ResetTimeout { root: u(0)? },
            _ => return None,
        })
    }
}

impl SpoutNotice {
    /// The notice as a tuple from acker task `src`.
    pub fn to_tuple(self, src: TaskId) -> Tuple {
        let (stream, root) = match self {
            SpoutNotice::Acked(root) => (ACK_ACK_STREAM, root),
            SpoutNotice::Failed(root) => (ACK_FAIL_STREAM, root),
            SpoutNotice::ResetTimeout(root) => (ACK_RESET_TIMEOUT_STREAM, root),
        };
        let mut values = Values::new();
        values.push(Value::U64(root));
        Tuple::new(acker_meta(stream), src, values, Default::default())
    }

    /// Reads a notice from a tuple an acker sent.
    pub fn from_tuple(tuple: &Tuple) -> Option<SpoutNotice> {
        let root = tuple.values().first().and_then(Value::as_u64)?;
        Some(match tuple.source_stream() {
            ACK_ACK_STREAM => SpoutNotice::Acked(root),
            ACK_FAIL_STREAM => SpoutNotice::Failed(root),
            ACK_RESET_TIMEOUT_STREAM => SpoutNotice::ResetTimeout(root),
            _ => return None,
        })
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
#[derive(Debug)]
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
    fn messages_round_trip_through_tuples() {
        for m in [
            AckerMessage::Init { root: 1, value: u64::MAX, spout_task: 7 },
            AckerMessage::Ack { root: 2, value: 3 },
            AckerMessage::Fail { root: 4 },
            AckerMessage::ResetTimeout { root: 5 },
        ] {
            assert_eq!(AckerMessage::from_tuple(&m.to_tuple(&AckStreams::of("split"), 3)), Some(m));
        }
        for n in [SpoutNotice::Acked(1), SpoutNotice::Failed(2), SpoutNotice::ResetTimeout(3)] {
            let t = n.to_tuple(9);
            assert_eq!(t.source_component(), ACKER_COMPONENT);
            assert_eq!(SpoutNotice::from_tuple(&t), Some(n));
        }
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
