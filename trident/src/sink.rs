//! Sinks: where a stream's tuples leave the topology exactly once, each epoch written as a
//! whole when it commits (Trident's `partitionPersist` into an external system).

use std::collections::BTreeMap;
use std::future::Future;

use squall_topology::component::NoOutput;
use squall_topology::{Bolt, BoltCollector, ComponentError, OutputDeclarer, Outputs, TopologyContext, Tuple, Values};

use crate::coordinator::Epoch;
use crate::master::{COMMIT_STREAM, COORDINATOR_COMPONENT};
use crate::nodes::{AttemptShare, COUNT_STREAM, DATA_STREAM, Tally, epoch_or_fail, newest_share};

/// Writes each committed epoch's tuples somewhere, once. One instance runs per sink task,
/// cloned from the one given to [`crate::Stream::sink`]; each task writes its share.
pub trait EpochSink: Clone + Send + Sync + 'static {
    /// Called once per task before the first epoch.
    fn open(&mut self, ctx: &TopologyContext) -> impl Future<Output = Result<(), ComponentError>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Writes this task's tuples of `epoch`, which commits now: atomically, or not at all (an
    /// error fails the epoch, which is replayed). Epochs come in order; after a restart an epoch
    /// the sink already wrote may come again, and the sink must skip it.
    fn write(&mut self, epoch: Epoch, tuples: Vec<Values>) -> impl Future<Output = Result<(), ComponentError>> + Send;
}

/// One epoch's share at a sink task.
#[derive(Default)]
struct Pending {
    attempt: u32,
    tuples: Vec<Values>,
    tally: Tally,
}

impl AttemptShare for Pending {
    fn attempt(&self) -> u32 {
        self.attempt
    }

    fn of_attempt(attempt: u32) -> Self {
        Pending { attempt, ..Pending::default() }
    }
}

/// Collects each epoch's tuples and hands them to the sink at the epoch's commit.
pub(crate) struct SinkNode<S> {
    sink: S,
    upstream: String,
    upstream_tasks: usize,
    pending: BTreeMap<u64, Pending>,
}

impl<S: Clone> Clone for SinkNode<S> {
    fn clone(&self) -> Self {
        SinkNode {
            sink: self.sink.clone(),
            upstream: self.upstream.clone(),
            upstream_tasks: 0,
            pending: BTreeMap::new(),
        }
    }
}

impl<S: EpochSink> SinkNode<S> {
    pub(crate) fn new(sink: S, upstream: String) -> Self {
        SinkNode { sink, upstream, upstream_tasks: 0, pending: BTreeMap::new() }
    }

    fn share(&mut self, epoch: Epoch) -> Option<&mut Pending> {
        newest_share(&mut self.pending, epoch)
    }

    async fn commit(&mut self, epoch: Epoch) -> Result<(), ComponentError> {
        let complete = self
            .pending
            .get(&epoch.txid)
            .is_some_and(|share| share.attempt == epoch.attempt && share.tally.is_complete(self.upstream_tasks));
        if !complete {
            return Err(format!("trident: epoch {} attempt {} is incomplete here", epoch.txid, epoch.attempt).into());
        }
        let tuples =
            self.pending.get_mut(&epoch.txid).map(|share| std::mem::take(&mut share.tuples)).unwrap_or_default();
        self.sink.write(epoch, tuples).await?;
        self.pending.retain(|txid, _| *txid > epoch.txid);
        Ok(())
    }
}

impl<S> Outputs for SinkNode<S> {
    type Default = NoOutput;

    fn declare_outputs(_declarer: &mut OutputDeclarer) {}
}

impl<S: EpochSink> Bolt for SinkNode<S> {
    // The commit tuple is acked only once the sink wrote the epoch.
    const AUTO_ACK: bool = false;

    async fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), ComponentError> {
        self.upstream_tasks = ctx.component_tasks(&self.upstream).len();
        self.sink.open(ctx).await
    }

    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let epoch = epoch_or_fail(&input, out)?;
        let source = input.source_task();
        match (input.source_component() == COORDINATOR_COMPONENT, input.source_stream()) {
            (true, COMMIT_STREAM) => {
                let result = self.commit(epoch).await;
                match &result {
                    Ok(()) => out.ack(&input),
                    Err(_) => out.fail(&input),
                }
                return result;
            }
            (false, COUNT_STREAM) => {
                let count: u64 = input.get_as(2)?;
                if let Some(share) = self.share(epoch) {
                    share.tally.announced(source, count);
                }
            }
            (false, DATA_STREAM) => {
                let values: Values = input.values()[2..].iter().cloned().collect();
                if let Some(share) = self.share(epoch) {
                    share.tuples.push(values);
                    share.tally.received(source);
                }
            }
            _ => {}
        }
        out.ack(&input);
        Ok(())
    }
}
