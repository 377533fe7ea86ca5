//! The master coordinator: the one spout task that opens epochs, emits their batch and commit
//! tuples, and drives the [`Coordinator`] from their acks and fails.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use squall_topology::component::NoOutput;
use squall_topology::{
    ComponentError, OutputDeclarer, Outputs, Spout, SpoutCollector, TaskStatus, TopologyContext, TopologyStore, values,
};
use tokio::time::Instant;

use crate::coordinator::{Coordinator, CoordinatorMeta, Epoch};

/// The component id of the master coordinator.
pub const COORDINATOR_COMPONENT: &str = "$coordinator";
/// Its stream of batch tuples `[txid, attempt]`: every batch spout task emits its share.
pub const BATCH_STREAM: &str = "batch";
/// Its stream of commit tuples `[txid, attempt]`: every committer task commits the epoch.
pub const COMMIT_STREAM: &str = "commit";
/// The key of its [`CoordinatorMeta`] in the topology's store (ZooKeeper on a cluster).
pub const COORDINATOR_KEY: &str = "trident-coordinator";

/// How long the coordinator waits before trying its store again.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// Which tree of an epoch a tracked coordinator tuple roots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The batch: complete once every task has processed the epoch's tuples.
    Batch,
    /// The commit: complete once every committer has committed the epoch.
    Commit,
}

/// The master coordinator spout.
#[derive(Clone)]
pub(crate) struct MasterSpout {
    max_open: usize,
    interval: Duration,
    store: Option<Store>,
    running: Option<Running>,
}

#[derive(Clone)]
struct Running {
    coordinator: Coordinator,
    /// Epochs whose batch is to be emitted (again).
    to_emit: VecDeque<Epoch>,
    next_open: Instant,
    /// The coordinator's meta changed since it was last stored: nothing is emitted until it is
    /// (an epoch goes out only once its attempt is recorded).
    unsaved: bool,
    /// Epoch failures since the last commit: from the second on, replays wait (a state store
    /// that is down would otherwise fail thousands of epochs a second).
    failures: u32,
    /// No replay before this.
    replay_at: Instant,
}

/// How long replays wait after `failures` failures in a row: none after the first, then 10 ms
/// doubling up to 1 s.
fn replay_backoff(failures: u32) -> Duration {
    match failures {
        0 | 1 => Duration::ZERO,
        n => Duration::from_millis(10u64.saturating_mul(1 << (n - 2).min(7))).min(Duration::from_secs(1)),
    }
}

/// Where the coordinator keeps its meta, and what it says about it.
#[derive(Clone)]
struct Store {
    store: Arc<dyn TopologyStore>,
    status: TaskStatus,
    /// No store call before this (after a failure).
    retry_at: Instant,
    failing: bool,
}

impl Store {
    async fn load(&mut self) -> Option<CoordinatorMeta> {
        if Instant::now() < self.retry_at {
            return None;
        }
        let loaded = match self.store.get(COORDINATOR_KEY).await {
            Ok(None) => Ok(CoordinatorMeta::default()),
            Ok(Some(bytes)) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("the stored epochs at `{COORDINATOR_KEY}` are malformed: {e}")),
            Err(e) => Err(e.to_string()),
        };
        self.outcome(loaded.map_err(|e| format!("{e}; the coordinator opens no epoch until it can read them")))
    }

    async fn save(&mut self, meta: &CoordinatorMeta) -> bool {
        if Instant::now() < self.retry_at {
            return false;
        }
        let saved = match serde_json::to_vec(meta) {
            Ok(bytes) => self.store.put(COORDINATOR_KEY, &bytes).await.map_err(|e| e.to_string()),
            Err(e) => Err(format!("cannot encode the epochs: {e}")),
        };
        let saved = saved.map_err(|e| format!("{e}; no epoch is opened, replayed or committed until it is stored"));
        self.outcome(saved).is_some()
    }

    fn outcome<T>(&mut self, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => {
                if self.failing {
                    self.failing = false;
                    self.status.remove("store_error");
                    tracing::info!("trident coordinator: its store answers again");
                }
                Some(value)
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(error = %e, "trident coordinator: store call failed");
                }
                self.failing = true;
                self.status.set("store_error", &e);
                self.retry_at = Instant::now() + STORE_RETRY;
                None
            }
        }
    }
}

impl MasterSpout {
    /// A coordinator keeping at most `max_open` epochs open and opening one at most every
    /// `interval`.
    pub(crate) fn new(max_open: usize, interval: Duration) -> Self {
        MasterSpout { max_open: max_open.max(1), interval, store: None, running: None }
    }

    /// Its output streams.
    pub(crate) fn declare(declarer: &mut OutputDeclarer) {
        declarer.declare_fields(BATCH_STREAM, &["$txid", "$attempt"], false);
        declarer.declare_fields(COMMIT_STREAM, &["$txid", "$attempt"], false);
    }
}

impl Outputs for MasterSpout {
    type Default = NoOutput;

    fn declare_outputs(_declarer: &mut OutputDeclarer) {}
}

impl Spout for MasterSpout {
    type MsgId = (Epoch, Phase);

    async fn open(&mut self, ctx: &TopologyContext) -> Result<(), ComponentError> {
        self.store = Some(Store {
            store: ctx.store().clone(),
            status: ctx.status().clone(),
            retry_at: Instant::now(),
            failing: false,
        });
        self.running = None;
        Ok(())
    }

    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        let Some(store) = self.store.as_mut() else { return Ok(()) };
        let Some(running) = self.running.as_mut() else {
            // Resumes after the last committed epoch; the epochs that were open go again.
            if let Some(meta) = store.load().await {
                if meta.last_committed > 0 {
                    tracing::info!(last_committed = meta.last_committed, "trident coordinator resumes");
                }
                let coordinator = Coordinator::resume(meta, self.max_open);
                self.running = Some(Running {
                    coordinator,
                    to_emit: VecDeque::new(),
                    next_open: Instant::now(),
                    unsaved: false,
                    failures: 0,
                    replay_at: Instant::now(),
                });
            }
            return Ok(());
        };
        if running.unsaved {
            if !store.save(running.coordinator.meta()).await {
                return Ok(());
            }
            running.unsaved = false;
        }
        if !running.to_emit.is_empty() && Instant::now() < running.replay_at {
            return Ok(());
        }
        if let Some(epoch) = running.to_emit.pop_front() {
            let values = values![epoch.txid, u64::from(epoch.attempt)];
            out.emit_values(BATCH_STREAM, values, None, Some((epoch, Phase::Batch)))?;
            return Ok(());
        }
        if let Some(epoch) = running.coordinator.start_commit() {
            let values = values![epoch.txid, u64::from(epoch.attempt)];
            out.emit_values(COMMIT_STREAM, values, None, Some((epoch, Phase::Commit)))?;
            return Ok(());
        }
        let now = Instant::now();
        if now >= running.next_open
            && let Some(epoch) = running.coordinator.open_next()
        {
            running.next_open = now + self.interval;
            running.to_emit.push_back(epoch);
            running.unsaved = true;
        }
        Ok(())
    }

    async fn ack(&mut self, (epoch, phase): (Epoch, Phase)) {
        let (Some(running), Some(store)) = (self.running.as_mut(), self.store.as_mut()) else { return };
        match phase {
            Phase::Batch => {
                running.coordinator.processed(epoch);
            }
            // Stored at once: a coordinator restarted from here replays nothing committed.
            Phase::Commit if running.coordinator.committed(epoch) => {
                running.unsaved = !store.save(running.coordinator.meta()).await;
                if running.failures > 0 {
                    running.failures = 0;
                    store.status.remove("epoch_failures_in_a_row");
                }
            }
            Phase::Commit => {}
        }
    }

    async fn fail(&mut self, (epoch, phase): (Epoch, Phase)) {
        let (Some(running), Some(store)) = (self.running.as_mut(), self.store.as_mut()) else { return };
        let again = running.coordinator.failed(epoch);
        if !again.is_empty() {
            running.failures = running.failures.saturating_add(1);
            let backoff = replay_backoff(running.failures);
            running.replay_at = Instant::now() + backoff;
            store.status.set("epoch_failures_in_a_row", running.failures);
            // Loud at first and then now and then: a store that is down fails every epoch.
            if running.failures <= 3 || running.failures.is_multiple_of(100) {
                tracing::info!(
                    txid = epoch.txid,
                    attempt = epoch.attempt,
                    ?phase,
                    replayed = again.len(),
                    failures_in_a_row = running.failures,
                    ?backoff,
                    "epoch failed"
                );
            }
        }
        for epoch in again {
            running.to_emit.retain(|queued| queued.txid != epoch.txid);
            running.to_emit.push_back(epoch);
            running.unsaved = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_back_off_from_the_second_failure_up_to_a_second() {
        let waits: Vec<u64> = (0..12).map(|n| replay_backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [0, 0, 10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        assert_eq!(replay_backoff(u32::MAX), Duration::from_secs(1));
    }
}
