//! The master coordinator: the one spout task that opens epochs, emits their batch and commit
//! tuples, and drives the [`Coordinator`] from their acks and fails.

use std::collections::VecDeque;
use std::time::Duration;

use squall_topology::component::NoOutput;
use squall_topology::{ComponentError, OutputDeclarer, Outputs, Spout, SpoutCollector, TopologyContext, values};
use tokio::time::Instant;

use crate::coordinator::{Coordinator, CoordinatorMeta, Epoch};

/// The component id of the master coordinator.
pub const COORDINATOR_COMPONENT: &str = "$coordinator";
/// Its stream of batch tuples `[txid, attempt]`: every batch spout task emits its share.
pub const BATCH_STREAM: &str = "batch";
/// Its stream of commit tuples `[txid, attempt]`: every committer task commits the epoch.
pub const COMMIT_STREAM: &str = "commit";

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
    running: Option<Running>,
}

#[derive(Clone)]
struct Running {
    coordinator: Coordinator,
    /// Epochs whose batch is to be emitted (again).
    to_emit: VecDeque<Epoch>,
    next_open: Instant,
}

impl MasterSpout {
    /// A coordinator keeping at most `max_open` epochs open and opening one at most every
    /// `interval`.
    pub(crate) fn new(max_open: usize, interval: Duration) -> Self {
        MasterSpout { max_open: max_open.max(1), interval, running: None }
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

    async fn open(&mut self, _ctx: &TopologyContext) -> Result<(), ComponentError> {
        // Not stored yet: a restarted coordinator task starts over from epoch 1.
        let coordinator = Coordinator::resume(CoordinatorMeta::default(), self.max_open);
        self.running = Some(Running { coordinator, to_emit: VecDeque::new(), next_open: Instant::now() });
        Ok(())
    }

    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        let Some(running) = self.running.as_mut() else { return Ok(()) };
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
            let values = values![epoch.txid, u64::from(epoch.attempt)];
            out.emit_values(BATCH_STREAM, values, None, Some((epoch, Phase::Batch)))?;
        }
        Ok(())
    }

    async fn ack(&mut self, (epoch, phase): (Epoch, Phase)) {
        let Some(running) = self.running.as_mut() else { return };
        match phase {
            Phase::Batch => running.coordinator.processed(epoch),
            Phase::Commit => running.coordinator.committed(epoch),
        };
    }

    async fn fail(&mut self, (epoch, phase): (Epoch, Phase)) {
        let Some(running) = self.running.as_mut() else { return };
        let again = running.coordinator.failed(epoch);
        if !again.is_empty() {
            tracing::info!(txid = epoch.txid, attempt = epoch.attempt, ?phase, replayed = again.len(), "epoch failed");
        }
        for epoch in again {
            running.to_emit.retain(|queued| queued.txid != epoch.txid);
            running.to_emit.push_back(epoch);
        }
    }
}
