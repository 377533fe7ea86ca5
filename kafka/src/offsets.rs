//! What one partition has emitted and had acked, and which offset may be committed: Storm's
//! `OffsetManager`, with its compaction bugs fixed (STORM-2505, -2546, -2639, -3301).

use std::collections::VecDeque;

/// An offset between the lowest pending one and the highest emitted one.
#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: i64,
    /// Acked, but kept because a lower offset is still pending.
    acked: bool,
}

/// The offsets of one partition between the committed offset and the newest emitted one.
///
/// Below the lowest pending offset, everything was acked or never emitted (Kafka delivers a
/// partition in order, and failed offsets stay pending until acked), so acks there only move a
/// watermark. Above it, emitted offsets are kept in one deque sorted by offset: a partition
/// emits in order, so an emit appends, an in-order ack pops the front, and an ack out of order
/// is a binary search; the first entry is always pending.
#[derive(Debug, Clone, Default)]
pub struct OffsetManager {
    /// The next offset to consume as of the last commit (Kafka's committed offset).
    committed: i64,
    /// From the lowest pending offset on: pending offsets and the acks that came out of order.
    entries: VecDeque<Entry>,
    /// How many of `entries` are pending.
    pending: usize,
    /// Every offset from `committed` up to here (excluded) was acked or never emitted.
    done_below: i64,
    /// The highest offset ever emitted, if any.
    highest_emitted: Option<i64>,
}

impl OffsetManager {
    /// A partition whose consumption starts (or resumes) at `committed`.
    pub fn new(committed: i64) -> Self {
        OffsetManager { committed, done_below: committed, ..OffsetManager::default() }
    }

    /// The committed offset: the next one a restarted consumer reads.
    pub fn committed(&self) -> i64 {
        self.committed
    }

    /// Where `offset` is in `entries`, or where it would go.
    fn find(&self, offset: i64) -> Result<usize, usize> {
        // An emit appends and an in-order ack hits the front: check both ends first.
        match (self.entries.front(), self.entries.back()) {
            (None, _) => Err(0),
            (Some(front), _) if front.offset == offset => Ok(0),
            (_, Some(back)) if back.offset < offset => Err(self.entries.len()),
            _ => self.entries.binary_search_by_key(&offset, |e| e.offset),
        }
    }

    /// Records that `offset` was emitted (tracked: its ack or fail will come).
    pub fn emitted(&mut self, offset: i64) {
        if offset < self.committed {
            return;
        }
        // Its ack may have come first (zero ackers ack during the emit): then it is found.
        if offset >= self.done_below
            && let Err(at) = self.find(offset)
        {
            self.entries.insert(at, Entry { offset, acked: false });
            self.pending += 1;
        }
        self.highest_emitted = Some(self.highest_emitted.map_or(offset, |h| h.max(offset)));
    }

    /// Whether `offset` is past everything emitted, acked and committed: neither done nor in
    /// flight (the usual case for a polled record, answered without a lookup).
    pub fn is_new(&self, offset: i64) -> bool {
        offset >= self.done_below && self.highest_emitted.is_none_or(|h| offset > h)
    }

    /// Records that `offset` was processed. An ack that comes before its emit was recorded
    /// (zero ackers ack at emit: STORM-2957) still counts.
    pub fn acked(&mut self, offset: i64) {
        if offset < self.committed {
            return;
        }
        self.highest_emitted = Some(self.highest_emitted.map_or(offset, |h| h.max(offset)));
        if offset < self.done_below {
            return;
        }
        match self.find(offset) {
            Ok(at) => {
                let entry = &mut self.entries[at];
                if !entry.acked {
                    entry.acked = true;
                    self.pending -= 1;
                }
            }
            // Below the lowest pending offset (or none pending): done up to here.
            Err(0) => self.done_below = offset + 1,
            Err(at) => self.entries.insert(at, Entry { offset, acked: true }),
        }
        self.pop_acked();
    }

    /// Keeps the first entry pending: acked ones in front of it are done.
    fn pop_acked(&mut self) {
        while let Some(front) = self.entries.front()
            && front.acked
        {
            self.done_below = self.done_below.max(front.offset + 1);
            self.entries.pop_front();
        }
    }

    /// Whether `offset` was emitted and neither acked nor committed.
    pub fn is_pending(&self, offset: i64) -> bool {
        self.find(offset).is_ok_and(|at| !self.entries[at].acked)
    }

    /// Whether `offset` needs no emit: it was acked or is below the committed offset.
    pub fn is_done(&self, offset: i64) -> bool {
        offset < self.done_below || self.find(offset).is_ok_and(|at| self.entries[at].acked)
    }

    /// The offset to commit now: one past the highest offset up to which everything is acked,
    /// where offsets never emitted (compacted or deleted: Kafka delivers a partition in order,
    /// so an offset skipped below an emitted one does not exist) do not hold the walk up.
    /// `None` when it would not move.
    pub fn next_commit(&self) -> Option<i64> {
        // Below the lowest pending offset (the first entry), every offset was acked or never
        // emitted; with none pending, every acked offset is below the watermark.
        let next = self.entries.front().map_or(self.done_below, |e| e.offset);
        (next > self.committed).then_some(next)
    }

    /// Records a successful commit of `offset` and forgets what lies below it.
    pub fn committed_to(&mut self, offset: i64) {
        if offset <= self.committed {
            return;
        }
        self.committed = offset;
        self.done_below = self.done_below.max(offset);
        while let Some(front) = self.entries.front()
            && front.offset < offset
        {
            if !front.acked {
                self.pending -= 1;
            }
            self.entries.pop_front();
        }
        self.pop_acked();
    }

    /// Offsets emitted or acked past the committed one: what `max.uncommitted.offsets` bounds.
    pub fn uncommitted(&self) -> u64 {
        match self.highest_emitted {
            Some(highest) if highest >= self.committed => (highest - self.committed + 1) as u64,
            _ => 0,
        }
    }

    /// Emitted offsets awaiting their ack.
    pub fn pending_count(&self) -> usize {
        self.pending
    }

    /// Acked offsets kept because an earlier one is still pending.
    pub fn acked_out_of_order(&self) -> usize {
        self.entries.len() - self.pending
    }

    /// The highest offset emitted (or acked), if any.
    pub fn highest_emitted(&self) -> Option<i64> {
        self.highest_emitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emit_all(m: &mut OffsetManager, offsets: &[i64]) {
        offsets.iter().for_each(|o| m.emitted(*o));
    }

    #[test]
    fn commits_the_highest_contiguous_acked_offset() {
        let mut m = OffsetManager::new(1);
        emit_all(&mut m, &[1, 2, 3, 4]);
        for o in [1, 2, 4] {
            m.acked(o);
        }
        assert_eq!(m.next_commit(), Some(3), "acked 1, 2, 4 → commit 3");
        m.committed_to(3);
        assert_eq!(m.next_commit(), None);
        m.acked(3);
        assert_eq!(m.next_commit(), Some(5), "ack 3 → commit 5");
        m.committed_to(5);
        assert_eq!(m.uncommitted(), 0);
        assert_eq!(m.pending_count(), 0);
    }

    #[test]
    fn a_compacted_gap_does_not_stall_commits() {
        // Offsets 12..=14 were compacted away: never delivered, never emitted.
        let mut m = OffsetManager::new(10);
        emit_all(&mut m, &[10, 11, 15, 16]);
        for o in [10, 11, 15, 16] {
            m.acked(o);
        }
        assert_eq!(m.next_commit(), Some(17));
        // The gap at the start: the committed offset itself was deleted.
        let mut m = OffsetManager::new(100);
        emit_all(&mut m, &[105, 106]);
        m.acked(105);
        assert_eq!(m.next_commit(), Some(106));
        m.acked(106);
        assert_eq!(m.next_commit(), Some(107));
    }

    #[test]
    fn an_emitted_gap_stops_the_walk_until_it_is_acked() {
        let mut m = OffsetManager::new(0);
        emit_all(&mut m, &[0, 1, 2, 3]);
        m.acked(0);
        m.acked(2);
        m.acked(3);
        assert_eq!(m.next_commit(), Some(1));
        // A never-emitted gap below a pending offset: nothing beyond the pending one commits.
        let mut m = OffsetManager::new(0);
        emit_all(&mut m, &[5, 6]);
        m.acked(6);
        assert_eq!(m.next_commit(), Some(5), "offsets 0..5 never existed; 5 is still pending");
        m.acked(5);
        assert_eq!(m.next_commit(), Some(7));
    }

    #[test]
    fn an_ack_before_its_emit_is_recorded_still_commits() {
        // Zero ackers: the ack arrives during the emit call (STORM-2957).
        let mut m = OffsetManager::new(0);
        m.acked(0);
        m.emitted(0);
        m.acked(1);
        assert_eq!(m.next_commit(), Some(2));
    }

    #[test]
    fn in_order_acks_keep_no_set_and_out_of_order_ones_wait_for_the_gap() {
        let mut m = OffsetManager::new(0);
        for o in 0..100_000 {
            m.emitted(o);
            m.acked(o);
        }
        assert_eq!((m.pending_count(), m.acked_out_of_order()), (0, 0), "nothing kept for in-order acks");
        assert!(m.is_new(100_000) && !m.is_new(99_999));
        assert_eq!(m.next_commit(), Some(100_000));
        assert!(m.is_done(99_999) && !m.is_done(100_000));
        // 100_000 fails (stays pending); later ones are acked and wait above it.
        for o in 100_000..100_010 {
            m.emitted(o);
        }
        for o in 100_001..100_010 {
            m.acked(o);
        }
        assert_eq!((m.pending_count(), m.acked_out_of_order()), (1, 9));
        assert_eq!(m.next_commit(), Some(100_000));
        assert!(m.is_done(100_005) && !m.is_done(100_000) && m.is_pending(100_000));
        assert!(!m.is_new(100_000) && !m.is_new(100_009) && m.is_new(100_010));
        // Its replay is acked: everything up to 100_009 is done.
        m.emitted(100_000);
        m.acked(100_000);
        assert_eq!((m.pending_count(), m.acked_out_of_order()), (0, 0));
        assert_eq!(m.next_commit(), Some(100_010));
        m.committed_to(100_010);
        assert_eq!(m.next_commit(), None);
        assert!(m.is_done(100_009) && !m.is_done(100_010));
    }

    /// The rules, spelled out over every offset: what the deque must agree with.
    #[derive(Default)]
    struct Model {
        committed: i64,
        emitted: std::collections::BTreeSet<i64>,
        acked: std::collections::BTreeSet<i64>,
    }

    impl Model {
        fn next_commit(&self) -> Option<i64> {
            // Up to the lowest emitted offset not acked, or past the highest acked one.
            let pending = self.emitted.iter().find(|o| **o >= self.committed && !self.acked.contains(o));
            let next = match pending {
                Some(p) => *p,
                None => self
                    .acked
                    .iter()
                    .chain(&self.emitted)
                    .filter(|o| **o >= self.committed)
                    .max()
                    .map_or(self.committed, |h| h + 1),
            };
            (next > self.committed).then_some(next)
        }
    }

    #[test]
    fn random_histories_agree_with_the_rules() {
        for seed in 0..100 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let start = rng.i64(0..5);
            let (mut m, mut model) = (OffsetManager::new(start), Model { committed: start, ..Model::default() });
            let mut next = start;
            for _ in 0..300 {
                match rng.u8(..10) {
                    // Emit the next offsets, sometimes skipping a compacted gap.
                    0..=3 => {
                        next += if rng.u8(..8) == 0 { rng.i64(1..4) } else { 0 };
                        m.emitted(next);
                        model.emitted.insert(next);
                        next += 1;
                    }
                    // Re-emit a pending offset (a retry), which changes nothing.
                    4 => {
                        if let Some(o) =
                            model.emitted.iter().find(|o| !model.acked.contains(o) && **o >= model.committed)
                        {
                            m.emitted(*o);
                        }
                    }
                    // Ack an emitted offset, in or out of order.
                    5..=8 => {
                        let candidates: Vec<i64> =
                            model.emitted.iter().copied().filter(|o| *o >= model.committed).collect();
                        if !candidates.is_empty() {
                            let o = candidates[rng.usize(..candidates.len().min(4))];
                            m.acked(o);
                            model.acked.insert(o);
                        }
                    }
                    // Commit what may be committed.
                    _ => {
                        assert_eq!(m.next_commit(), model.next_commit(), "seed {seed}");
                        if let Some(o) = m.next_commit() {
                            m.committed_to(o);
                            model.committed = o;
                        }
                    }
                }
                assert_eq!(m.next_commit(), model.next_commit(), "seed {seed}");
                let pending =
                    model.emitted.iter().filter(|o| **o >= model.committed && !model.acked.contains(o)).count();
                assert_eq!(m.pending_count(), pending, "seed {seed}");
                for o in model.committed..next {
                    let done = model.acked.contains(&o) || m.next_commit().is_some_and(|c| o < c) || o < m.committed();
                    if model.emitted.contains(&o) {
                        assert_eq!(m.is_done(o), done, "seed {seed} offset {o}");
                        assert_eq!(m.is_pending(o), !model.acked.contains(&o), "seed {seed} offset {o}");
                    }
                }
            }
        }
    }

    #[test]
    fn offsets_below_the_commit_are_ignored_and_counted_out() {
        let mut m = OffsetManager::new(50);
        m.emitted(10);
        m.acked(11);
        assert_eq!(m.next_commit(), None);
        emit_all(&mut m, &[50, 51, 52]);
        assert_eq!(m.uncommitted(), 3);
        m.acked(50);
        m.committed_to(51);
        assert_eq!(m.uncommitted(), 2);
        assert!(m.is_done(50) && !m.is_done(51) && m.is_pending(51));
    }
}
