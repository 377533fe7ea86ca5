//! The epoch coordinator's rules (Trident's `MasterBatchCoordinator`), as a state machine that
//! the task driving it feeds with what happened.
//!
//! - Epoch ids are strictly increasing; each try of an epoch has an attempt number.
//! - At most `max_open` epochs are open (`topology.max.spout.pending`).
//! - Epochs commit strictly in order, one at a time, each only once its batch is processed.
//! - A failed or timed-out epoch goes again with a new attempt, and so does every open epoch
//!   after it (their batches may build on its state).
//! - [`CoordinatorMeta`] is all a restarted coordinator needs: it resumes after the last
//!   committed epoch, and the epochs that were open go again with higher attempts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One attempt at one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Epoch {
    /// The epoch id, from 1 (Trident's txid).
    pub txid: u64,
    /// Which try of the epoch this is, from 0.
    pub attempt: u32,
}

/// What the coordinator keeps across restarts: in ZooKeeper on a cluster, in memory locally.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorMeta {
    /// The last committed epoch; 0 before the first.
    pub last_committed: u64,
    /// The latest attempt of each epoch opened after it.
    pub attempts: BTreeMap<u64, u32>,
}

/// Where an open epoch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Its batch is out and not yet processed everywhere.
    Processing,
    /// Processed everywhere; waiting for the epochs before it to commit.
    Processed,
    /// Its commit is under way.
    Committing,
}

/// The coordinator's state.
#[derive(Debug, Clone)]
pub struct Coordinator {
    max_open: usize,
    meta: CoordinatorMeta,
    /// Open epochs by txid: their current attempt and phase.
    open: BTreeMap<u64, (u32, Phase)>,
}

impl Coordinator {
    /// A coordinator resuming after `meta` (the default for a new topology), with at most
    /// `max_open` epochs open (at least 1).
    pub fn resume(meta: CoordinatorMeta, max_open: usize) -> Self {
        let mut meta = meta;
        // Attempts of committed epochs are history.
        let last = meta.last_committed;
        meta.attempts.retain(|&txid, _| txid > last);
        Coordinator { max_open: max_open.max(1), meta, open: BTreeMap::new() }
    }

    /// What to persist: store it after each call that changes it, before acting on the result
    /// (an epoch is emitted only once its attempt is recorded).
    pub fn meta(&self) -> &CoordinatorMeta {
        &self.meta
    }

    /// The open epochs, in order.
    pub fn open_epochs(&self) -> impl Iterator<Item = Epoch> + '_ {
        self.open.iter().map(|(&txid, &(attempt, _))| Epoch { txid, attempt })
    }

    /// Opens the next epoch, if fewer than `max_open` are open, and returns it for its batch to
    /// be emitted. An epoch that was open before a restart comes back with its next attempt.
    pub fn open_next(&mut self) -> Option<Epoch> {
        if self.open.len() >= self.max_open {
            return None;
        }
        let txid = self.open.keys().next_back().map_or(self.meta.last_committed, |&t| t) + 1;
        let attempt = self.meta.attempts.get(&txid).map_or(0, |a| a.saturating_add(1));
        self.meta.attempts.insert(txid, attempt);
        self.open.insert(txid, (attempt, Phase::Processing));
        Some(Epoch { txid, attempt })
    }

    /// Every task has processed `epoch`'s batch. A stale attempt or an epoch not open changes
    /// nothing; returns whether it counted.
    pub fn processed(&mut self, epoch: Epoch) -> bool {
        match self.open.get_mut(&epoch.txid) {
            Some((attempt, phase)) if *attempt == epoch.attempt && *phase == Phase::Processing => {
                *phase = Phase::Processed;
                true
            }
            _ => false,
        }
    }

    /// The epoch whose commit may start now: the first open one, once processed, while no
    /// other commit is under way.
    pub fn start_commit(&mut self) -> Option<Epoch> {
        let (&txid, (attempt, phase)) = self.open.iter_mut().next()?;
        if *phase != Phase::Processed {
            return None;
        }
        debug_assert_eq!(txid, self.meta.last_committed + 1);
        *phase = Phase::Committing;
        Some(Epoch { txid, attempt: *attempt })
    }

    /// `epoch`'s commit finished everywhere. Anything but the commit under way changes nothing;
    /// returns whether it counted.
    pub fn committed(&mut self, epoch: Epoch) -> bool {
        match self.open.first_key_value() {
            Some((&txid, &(attempt, Phase::Committing))) if txid == epoch.txid && attempt == epoch.attempt => {
                self.open.remove(&txid);
                self.meta.last_committed = txid;
                self.meta.attempts.remove(&txid);
                true
            }
            _ => false,
        }
    }

    /// `epoch` failed or timed out, in its batch or its commit: it and every open epoch after it
    /// go again with a new attempt. Returns them in order, for their batches to be emitted
    /// again; a stale attempt or an epoch not open changes nothing.
    pub fn failed(&mut self, epoch: Epoch) -> Vec<Epoch> {
        if self.open.get(&epoch.txid).is_none_or(|&(attempt, _)| attempt != epoch.attempt) {
            return Vec::new();
        }
        let mut again = Vec::new();
        for (&txid, (attempt, phase)) in self.open.range_mut(epoch.txid..) {
            *attempt = attempt.saturating_add(1);
            *phase = Phase::Processing;
            self.meta.attempts.insert(txid, *attempt);
            again.push(Epoch { txid, attempt: *attempt });
        }
        again
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(txid: u64, attempt: u32) -> Epoch {
        Epoch { txid, attempt }
    }

    #[test]
    fn opens_at_most_max_open_in_increasing_order() {
        let mut c = Coordinator::resume(CoordinatorMeta::default(), 3);
        assert_eq!([c.open_next(), c.open_next(), c.open_next()], [Some(e(1, 0)), Some(e(2, 0)), Some(e(3, 0))]);
        assert_eq!(c.open_next(), None);
        assert!(c.processed(e(1, 0)));
        assert_eq!(c.start_commit(), Some(e(1, 0)));
        assert!(c.committed(e(1, 0)));
        assert_eq!(c.open_next(), Some(e(4, 0)));
        assert_eq!(c.meta().last_committed, 1);
    }

    #[test]
    fn commits_in_order_one_at_a_time() {
        let mut c = Coordinator::resume(CoordinatorMeta::default(), 3);
        for _ in 0..3 {
            c.open_next();
        }
        // 3 and 2 finish before 1: nothing may commit yet.
        assert!(c.processed(e(3, 0)) && c.processed(e(2, 0)));
        assert_eq!(c.start_commit(), None);
        assert!(c.processed(e(1, 0)));
        assert_eq!(c.start_commit(), Some(e(1, 0)));
        assert_eq!(c.start_commit(), None, "one commit at a time");
        assert!(!c.committed(e(2, 0)), "2 is not the commit under way");
        assert!(c.committed(e(1, 0)));
        assert!(!c.committed(e(1, 0)), "no epoch commits twice");
        assert_eq!(c.start_commit(), Some(e(2, 0)));
        assert!(c.committed(e(2, 0)));
        assert_eq!(c.start_commit(), Some(e(3, 0)));
    }

    #[test]
    fn a_failure_replays_the_epoch_and_every_later_open_one() {
        let mut c = Coordinator::resume(CoordinatorMeta::default(), 4);
        for _ in 0..4 {
            c.open_next();
        }
        assert!(c.processed(e(1, 0)) && c.processed(e(3, 0)));
        assert_eq!(c.failed(e(2, 0)), [e(2, 1), e(3, 1), e(4, 1)]);
        // Reports of the old attempts no longer count, nor does a second failure of one.
        assert!(!c.processed(e(3, 0)));
        assert_eq!(c.failed(e(3, 0)), []);
        assert_eq!(c.start_commit(), Some(e(1, 0)), "epochs before the failure are untouched");
        assert!(c.committed(e(1, 0)));
        assert!(c.processed(e(2, 1)));
        // A failed commit goes again too.
        assert_eq!(c.start_commit(), Some(e(2, 1)));
        assert_eq!(c.failed(e(2, 1)), [e(2, 2), e(3, 2), e(4, 2)]);
        assert_eq!(c.meta().attempts, BTreeMap::from([(2, 2), (3, 2), (4, 2)]));
    }

    #[test]
    fn a_restart_resumes_after_the_last_commit_with_new_attempts() {
        let mut c = Coordinator::resume(CoordinatorMeta::default(), 3);
        for _ in 0..3 {
            c.open_next();
        }
        c.processed(e(1, 0));
        c.start_commit();
        c.committed(e(1, 0));
        c.failed(e(3, 0));
        let saved = c.meta().clone();
        assert_eq!(saved, CoordinatorMeta { last_committed: 1, attempts: BTreeMap::from([(2, 0), (3, 1)]) });

        let mut again = Coordinator::resume(saved, 3);
        assert_eq!(
            [again.open_next(), again.open_next(), again.open_next()],
            [Some(e(2, 1)), Some(e(3, 2)), Some(e(4, 0))]
        );
    }

    /// Random processing, failures and restarts: commits go 1, 2, 3 … without a gap or a repeat.
    #[test]
    fn random_histories_commit_each_epoch_once_in_order() {
        for seed in 0..200 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut c = Coordinator::resume(CoordinatorMeta::default(), rng.usize(1..5));
            let mut commits = Vec::new();
            let mut committing = None;
            for _ in 0..300 {
                while c.open_next().is_some() {}
                let open: Vec<Epoch> = c.open_epochs().collect();
                match rng.u8(0..10) {
                    0 => {
                        if let Some(&victim) = rng.choice(&open) {
                            c.failed(victim);
                            committing = committing.filter(|x: &Epoch| x.txid < victim.txid);
                        }
                    }
                    1 => {
                        c = Coordinator::resume(c.meta().clone(), rng.usize(1..5));
                        committing = None;
                    }
                    _ => {
                        if let Some(&done) = rng.choice(&open) {
                            c.processed(done);
                        }
                    }
                }
                if committing.is_none() {
                    committing = c.start_commit();
                }
                if let Some(epoch) = committing.take_if(|_| rng.bool()) {
                    assert!(c.committed(epoch));
                    commits.push(epoch.txid);
                }
            }
            assert!(commits.len() > 10, "seed {seed}: only {} commits", commits.len());
            assert!(commits.iter().copied().eq(1..=commits.len() as u64), "seed {seed}: {commits:?}");
        }
    }
}
