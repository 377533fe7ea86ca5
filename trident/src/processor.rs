//! The node a repartition starts (`partition_by`, `shuffle`, `global`, `broadcast`, `merge`,
//! `join`): it gathers each epoch's tuples from the nodes before it, and once it has them all
//! (every upstream task's count arrived and matched) combines them (one after the other, or
//! joined), runs its operations and sends the results on, partitioned for the node after it.

use std::collections::BTreeMap;
use std::sync::Arc;

use squall_topology::component::NoOutput;
use squall_topology::{
    Bolt, BoltCollector, ComponentError, OutputDeclarer, Outputs, TaskId, TopologyContext, Tuple, Values,
};

use crate::join::JoinSpec;
use crate::nodes::{COUNT_STREAM, DATA_STREAM, Partition, Tally, emit_partitioned, epoch_or_fail, for_each_row};
use crate::ops::{Op, apply_batch};

/// How the inputs' tuples of a batch become one.
#[derive(Debug, Clone)]
pub(crate) enum Combine {
    /// One input's after another's.
    Concat,
    /// The two inputs joined.
    Join(JoinSpec),
}

/// One epoch's share gathered at one task.
#[derive(Default)]
struct Gathered {
    attempt: u32,
    /// Per input.
    tuples: Vec<Vec<Values>>,
    tally: Tally,
    /// Inputs not yet acked: the epoch's tree must stay open until the results are sent on.
    held: Vec<Tuple>,
}

/// Gathers, runs operations, repartitions.
pub(crate) struct ProcessorNode {
    ops: Arc<[Op]>,
    partition: Partition,
    upstreams: Vec<String>,
    combine: Combine,
    upstream_tasks: usize,
    downstream: String,
    targets: Vec<TaskId>,
    pending: BTreeMap<u64, Gathered>,
}

impl Clone for ProcessorNode {
    fn clone(&self) -> Self {
        ProcessorNode {
            ops: self.ops.clone(),
            partition: self.partition.clone(),
            upstreams: self.upstreams.clone(),
            combine: self.combine.clone(),
            upstream_tasks: 0,
            downstream: self.downstream.clone(),
            targets: Vec::new(),
            pending: BTreeMap::new(),
        }
    }
}

impl ProcessorNode {
    pub(crate) fn new(
        ops: Vec<Op>,
        partition: Partition,
        upstreams: Vec<String>,
        combine: Combine,
        downstream: String,
    ) -> Self {
        ProcessorNode {
            ops: ops.into(),
            partition,
            upstreams,
            combine,
            upstream_tasks: 0,
            downstream,
            targets: Vec::new(),
            pending: BTreeMap::new(),
        }
    }
}

impl Outputs for ProcessorNode {
    type Default = NoOutput;

    fn declare_outputs(_declarer: &mut OutputDeclarer) {}
}

impl Bolt for ProcessorNode {
    // Inputs are held until the epoch's results are sent on.
    const AUTO_ACK: bool = false;

    async fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), ComponentError> {
        self.upstream_tasks = self.upstreams.iter().map(|u| ctx.component_tasks(u).len()).sum();
        self.targets = ctx.component_tasks(&self.downstream).to_vec();
        if self.targets.is_empty() {
            return Err(format!("trident: component `{}` has no tasks", self.downstream).into());
        }
        Ok(())
    }

    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let epoch = epoch_or_fail(&input, out)?;
        let share = self.pending.entry(epoch.txid).or_default();
        if epoch.attempt < share.attempt {
            // A stale attempt's tuple: its tree failed already.
            out.ack(&input);
            return Ok(());
        }
        if epoch.attempt > share.attempt {
            for stale in std::mem::take(&mut share.held) {
                out.ack(&stale);
            }
            *share = Gathered { attempt: epoch.attempt, ..Gathered::default() };
        }
        if share.tuples.is_empty() {
            share.tuples.resize_with(self.upstreams.len(), Vec::new);
        }
        let source = input.source_task();
        match input.source_stream() {
            COUNT_STREAM => {
                let count: u64 = input.get_as(2)?;
                share.tally.announced(source, count);
            }
            DATA_STREAM => {
                let side = match self.upstreams.len() {
                    1 => 0,
                    _ => self.upstreams.iter().position(|u| u == input.source_component()).unwrap_or(0),
                };
                let tuples = &mut share.tuples[side];
                if let Err(e) = for_each_row(&input, |row| tuples.push(row.iter().cloned().collect())) {
                    out.fail(&input);
                    return Err(e);
                }
                share.tally.received(source);
            }
            other => {
                out.fail(&input);
                return Err(format!("trident: unexpected stream `{other}`").into());
            }
        }
        let complete = share.tally.is_complete(self.upstream_tasks);
        if !complete {
            share.held.push(input);
            return Ok(());
        }
        let Some(share) = self.pending.remove(&epoch.txid) else { return Ok(()) };
        let batch = match &self.combine {
            Combine::Concat => share.tuples.into_iter().flatten().collect(),
            Combine::Join(spec) => match share.tuples.as_slice() {
                [left, right] => spec.join(left, right),
                _ => Vec::new(),
            },
        };
        let mut results = Vec::new();
        let outcome = apply_batch(&self.ops, epoch, batch, &mut results).await;
        // Anchored to this input, acked last: the tree stays open until they are acked downstream.
        let outcome =
            outcome.and_then(|()| emit_partitioned(out, epoch, results.into_iter(), &self.partition, &self.targets));
        for held in share.held.iter().chain([&input]) {
            if outcome.is_ok() { out.ack(held) } else { out.fail(held) }
        }
        outcome
    }
}
