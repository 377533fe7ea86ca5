//! Sinks: where a stream's tuples leave the topology exactly once, each epoch written as a
//! whole when it commits (Trident's `partitionPersist` into an external system).

use std::future::Future;

use squall_topology::component::NoOutput;
use squall_topology::{Bolt, BoltCollector, ComponentError, OutputDeclarer, Outputs, TopologyContext, Tuple, Values};

use crate::coordinator::Epoch;
use crate::master::{COMMIT_STREAM, COORDINATOR_COMPONENT};
use crate::nodes::{COUNT_STREAM, DATA_STREAM, Shares, epoch_or_fail, for_each_row};

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

/// Collects each epoch's tuples and hands them to the sink at the epoch's commit.
pub(crate) struct SinkNode<S> {
    sink: S,
    upstream: String,
    upstream_tasks: usize,
    /// Open epochs' tuples.
    pending: Shares<Vec<Values>>,
}

impl<S: Clone> Clone for SinkNode<S> {
    fn clone(&self) -> Self {
        SinkNode {
            sink: self.sink.clone(),
            upstream: self.upstream.clone(),
            upstream_tasks: 0,
            pending: Shares::default(),
        }
    }
}

impl<S: EpochSink> SinkNode<S> {
    pub(crate) fn new(sink: S, upstream: String) -> Self {
        SinkNode { sink, upstream, upstream_tasks: 0, pending: Shares::default() }
    }

    async fn commit(&mut self, epoch: Epoch) -> Result<(), ComponentError> {
        let tuples = std::mem::take(self.pending.complete(epoch, self.upstream_tasks)?);
        self.sink.write(epoch, tuples).await?;
        self.pending.committed(epoch.txid);
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
                if let Some(share) = self.pending.newest(epoch) {
                    share.tally.announced(source, count);
                }
            }
            (false, DATA_STREAM) => {
                if let Some(share) = self.pending.newest(epoch) {
                    let tuples = &mut share.data;
                    if let Err(e) = for_each_row(&input, |row| tuples.push(row.iter().cloned().collect())) {
                        out.fail(&input);
                        return Err(e);
                    }
                    share.tally.received(source);
                }
            }
            _ => {}
        }
        out.ack(&input);
        Ok(())
    }
}
