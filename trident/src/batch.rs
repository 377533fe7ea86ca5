//! Batch spouts: what emits the tuples of an epoch.

use std::future::Future;
use std::sync::Arc;

use squall_topology::{ComponentError, TopologyContext, Values};

use crate::coordinator::Epoch;

/// What a batch spout promises about replays, and so which map states keep its counts exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoutKind {
    /// No promise: a replay may emit other tuples and counts may be off after failures.
    NonTransactional,
    /// An epoch holds the same tuples on every attempt: exact with a transactional or an opaque
    /// map state.
    Transactional,
    /// Each tuple lands in exactly one committed epoch, though a replay may emit other tuples:
    /// exact with an opaque map state only.
    Opaque,
}

/// A source of batches (Trident's `ITridentSpout`). One instance runs per task, cloned from the
/// one given to [`crate::TridentTopology::new_stream`]; each task emits its share of every
/// epoch.
///
/// A *transactional* spout emits the same tuples for an epoch on every attempt; an *opaque* one
/// may emit others on a replay but puts each tuple in exactly one committed epoch. The map state
/// a stream ends in must match (`Semantics::Transactional` / `Semantics::Opaque`).
pub trait BatchSpout: Clone + Send + Sync + 'static {
    /// The fields of the tuples it emits.
    fn fields(&self) -> Vec<String>;

    /// What it promises about replays (by default [`SpoutKind::Transactional`]); a persistent
    /// aggregate whose map state cannot keep that exact is a build error.
    fn kind(&self) -> SpoutKind {
        SpoutKind::Transactional
    }

    /// Called once per task before the first batch.
    fn open(&mut self, ctx: &TopologyContext) -> impl Future<Output = Result<(), ComponentError>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Emits this task's tuples of `epoch` into `out`. An error fails the epoch, which is
    /// replayed with its next attempt.
    fn emit_batch(
        &mut self,
        epoch: Epoch,
        out: &mut Vec<Values>,
    ) -> impl Future<Output = Result<(), ComponentError>> + Send;

    /// `epoch`'s commit has started: every task processed its batch, and the epochs before it
    /// committed. The commit itself may still fail (then the epoch is replayed), so keep what a
    /// replay of `epoch` needs; what only earlier epochs' replays need can go. A Kafka spout
    /// reports its progress to Kafka here. Nothing depends on it succeeding.
    fn commit(&mut self, epoch: Epoch) -> impl Future<Output = ()> + Send {
        let _ = epoch;
        async {}
    }
}

/// Emits fixed batches: epoch *n* holds the *n*-th batch, on every attempt (transactional), and
/// epochs past the last are empty (Trident's `FixedBatchSpout`, without the cycling). With
/// several tasks, task *i* of *p* emits the tuples at positions *i*, *i + p*, … of each batch.
#[derive(Debug, Clone)]
pub struct FixedBatchSpout {
    fields: Vec<String>,
    batches: Arc<[Vec<Values>]>,
    task: (usize, usize),
}

impl FixedBatchSpout {
    /// A spout of `batches`, whose tuples have `fields`.
    pub fn new<F: AsRef<str>>(fields: impl IntoIterator<Item = F>, batches: Vec<Vec<Values>>) -> Self {
        FixedBatchSpout {
            fields: fields.into_iter().map(|f| f.as_ref().to_owned()).collect(),
            batches: batches.into(),
            task: (0, 1),
        }
    }
}

impl BatchSpout for FixedBatchSpout {
    fn fields(&self) -> Vec<String> {
        self.fields.clone()
    }

    async fn open(&mut self, ctx: &TopologyContext) -> Result<(), ComponentError> {
        self.task = (ctx.task_index(), ctx.this_component_tasks().len().max(1));
        Ok(())
    }

    async fn emit_batch(&mut self, epoch: Epoch, out: &mut Vec<Values>) -> Result<(), ComponentError> {
        let Some(batch) = usize::try_from(epoch.txid).ok().and_then(|n| self.batches.get(n.wrapping_sub(1))) else {
            return Ok(());
        };
        let (index, tasks) = self.task;
        out.extend(batch.iter().skip(index).step_by(tasks).cloned());
        Ok(())
    }
}
