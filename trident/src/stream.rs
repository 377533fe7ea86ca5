//! The stream API: a Trident topology is described with streams and compiled to ordinary spouts
//! and bolts, so it runs in `LocalCluster` and on a cluster unchanged.

use std::sync::Arc;
use std::time::Duration;

use squall_state::Semantics;
use squall_topology::{BuildError, ComponentError, Config, Topology, TopologyBuilder, Value, Values};

use crate::aggregate::{Aggregate, Combiner};
use crate::batch::{BatchSpout, SpoutKind};
use crate::master::{BATCH_STREAM, COMMIT_STREAM, COORDINATOR_COMPONENT, MasterSpout};
use crate::nodes::{COUNT_STREAM, DATA_STREAM, Partition, PersistNode, SpoutNode, StateSpec, declare_node};
use crate::ops::Op;
use crate::processor::ProcessorNode;
use crate::sink::{EpochSink, SinkNode};

/// A Trident topology that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TridentError {
    /// An operation names a field its stream does not have.
    #[error("stream `{stream}` has no field `{field}` (it has: {known})")]
    UnknownField {
        /// The stream (its spout's id).
        stream: String,
        /// The field asked for.
        field: String,
        /// The fields it has.
        known: String,
    },
    /// Trident needs acker tasks: it learns that an epoch is processed from its tuple tree.
    #[error("trident needs acking: topology.acker.executors must not be 0")]
    NoAckers,
    /// A stream was declared but never ends in a persistent aggregate.
    #[error("stream `{0}` ends nowhere: finish it with group_by(…).persistent_aggregate(…) or sink(…)")]
    Unfinished(String),
    /// An opaque spout's stream is aggregated into a map state that would count a replayed
    /// epoch's other tuples twice.
    #[error(
        "stream `{stream}` comes from an opaque spout, so its state `{state}` must be Semantics::Opaque, \
         not {semantics:?}: a replay may hold other tuples, which only an opaque state replaces exactly"
    )]
    NotExact {
        /// The stream (its spout's id).
        stream: String,
        /// The state.
        state: String,
        /// The state's semantics.
        semantics: Semantics,
    },
    /// The compiled topology is invalid (a duplicate id, for one).
    #[error(transparent)]
    Build(#[from] BuildError),
}

type AddSpoutNode = Box<dyn FnOnce(&mut TopologyBuilder, u32, Vec<Op>, Partition, String, Vec<String>)>;

/// Builds a Trident topology (Storm's `TridentTopology`): batch spouts, per-tuple operations,
/// and aggregates kept in map states updated once per epoch.
pub struct TridentTopology {
    builder: TopologyBuilder,
    max_open: Option<usize>,
    interval: Duration,
    errors: Vec<TridentError>,
    /// Repartition nodes added so far (they are named after them).
    nodes: usize,
    streams: usize,
    finished: usize,
}

impl Default for TridentTopology {
    fn default() -> Self {
        Self::new()
    }
}

impl TridentTopology {
    /// An empty topology: as many epochs open at once as `topology.max.spout.pending` says (one
    /// if it is unset), each opened as soon as there is room.
    pub fn new() -> Self {
        TridentTopology {
            builder: TopologyBuilder::new(),
            max_open: None,
            interval: Duration::ZERO,
            errors: Vec::new(),
            nodes: 0,
            streams: 0,
            finished: 0,
        }
    }

    /// The topology config.
    pub fn config_mut(&mut self) -> &mut Config {
        self.builder.config_mut()
    }

    /// Keeps up to `epochs` epochs open at once (their batches pipelined; commits stay in
    /// order), whatever `topology.max.spout.pending` says.
    pub fn max_open_epochs(&mut self, epochs: usize) -> &mut Self {
        self.max_open = Some(epochs.max(1));
        self
    }

    /// Opens an epoch at most every `interval` (Trident's batch emit interval).
    pub fn batch_interval(&mut self, interval: Duration) -> &mut Self {
        self.interval = interval;
        self
    }

    /// A stream of the batches of `spout`, run by one task unless [`Stream::parallelism`] says
    /// otherwise; `id` names the bolt that runs it.
    pub fn new_stream<S: BatchSpout>(&mut self, id: &str, spout: S) -> Stream<'_> {
        self.streams += 1;
        let fields = spout.fields();
        let kind = spout.kind();
        let id = id.to_owned();
        let add_id = id.clone();
        let add: AddSpoutNode = Box::new(move |builder, parallelism, ops, partition, downstream, fields| {
            let node = SpoutNode::new(spout, ops, partition, downstream);
            builder
                .bolt_with_outputs(add_id, node, parallelism, move |d| declare_node(d, &fields))
                .all_grouping((COORDINATOR_COMPONENT, BATCH_STREAM))
                .all_grouping((COORDINATOR_COMPONENT, COMMIT_STREAM));
        });
        Stream { topology: self, id, fields, kind, parallelism: 1, ops: Vec::new(), add: Some(add) }
    }

    /// The topology of spouts and bolts this compiles to.
    pub fn build(mut self) -> Result<Topology, TridentError> {
        if let Some(error) = self.errors.into_iter().next() {
            return Err(error);
        }
        if self.builder.config_mut().acker_executors == Some(0) {
            return Err(TridentError::NoAckers);
        }
        let config_pending = self.builder.config_mut().max_spout_pending.map(|p| p as usize);
        let max_open = self.max_open.or(config_pending).unwrap_or(1);
        // Each open epoch has a batch tree and perhaps a commit tree in flight.
        let pending = u32::try_from(2 * max_open + 1).unwrap_or(u32::MAX);
        let master = MasterSpout::new(max_open, self.interval);
        self.builder
            .spout_with_outputs(COORDINATOR_COMPONENT, master, 1, MasterSpout::declare)
            .max_spout_pending(pending);
        Ok(self.builder.build()?)
    }
}

/// A stream of tuples with named fields, before it is repartitioned.
pub struct Stream<'t> {
    topology: &'t mut TridentTopology,
    id: String,
    fields: Vec<String>,
    kind: SpoutKind,
    parallelism: u32,
    ops: Vec<Op>,
    add: Option<AddSpoutNode>,
}

impl Drop for Stream<'_> {
    fn drop(&mut self) {
        if self.add.is_some() {
            self.topology.errors.push(TridentError::Unfinished(self.id.clone()));
        }
    }
}

impl<'t> Stream<'t> {
    /// Its fields.
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    fn position(&mut self, field: &str) -> Option<usize> {
        let found = self.fields.iter().position(|f| f == field);
        if found.is_none() {
            self.topology.errors.push(TridentError::UnknownField {
                stream: self.id.clone(),
                field: field.to_owned(),
                known: self.fields.join(", "),
            });
        }
        found
    }

    /// Runs the spout and the operations up to the next repartition in `parallelism` tasks
    /// (each emitting its share of every epoch).
    pub fn parallelism(mut self, parallelism: u32) -> Self {
        self.parallelism = parallelism;
        self
    }

    /// Replaces each tuple with `f`'s, whose fields are `fields`.
    pub fn map<F: AsRef<str>>(
        mut self,
        fields: impl IntoIterator<Item = F>,
        f: impl Fn(&[Value]) -> Result<Values, ComponentError> + Send + Sync + 'static,
    ) -> Self {
        self.fields = fields.into_iter().map(|f| f.as_ref().to_owned()).collect();
        self.ops.push(Op::Map(Arc::new(f)));
        self
    }

    /// Replaces each tuple with any number of tuples, whose fields are `fields`.
    pub fn flat_map<F: AsRef<str>>(
        mut self,
        fields: impl IntoIterator<Item = F>,
        f: impl Fn(&[Value]) -> Result<Vec<Values>, ComponentError> + Send + Sync + 'static,
    ) -> Self {
        self.fields = fields.into_iter().map(|f| f.as_ref().to_owned()).collect();
        self.ops.push(Op::FlatMap(Arc::new(f)));
        self
    }

    /// Trident's `each` with a function: for each tuple, `f` gives any number of value lists,
    /// each emitted as the tuple's values followed by them; `added` names the new fields.
    pub fn each<F: AsRef<str>>(
        mut self,
        added: impl IntoIterator<Item = F>,
        f: impl Fn(&[Value]) -> Result<Vec<Values>, ComponentError> + Send + Sync + 'static,
    ) -> Self {
        self.fields.extend(added.into_iter().map(|f| f.as_ref().to_owned()));
        self.ops.push(Op::Each(Arc::new(f)));
        self
    }

    /// Calls `f` on each tuple and passes it on unchanged (logging, metrics).
    pub fn peek(mut self, f: impl Fn(&[Value]) + Send + Sync + 'static) -> Self {
        self.ops.push(Op::Peek(Arc::new(f)));
        self
    }

    /// Keeps the tuples for which `f` is true.
    pub fn filter(mut self, f: impl Fn(&[Value]) -> Result<bool, ComponentError> + Send + Sync + 'static) -> Self {
        self.ops.push(Op::Filter(Arc::new(f)));
        self
    }

    /// Keeps only `fields`, in this order.
    pub fn project<F: AsRef<str>>(mut self, fields: impl IntoIterator<Item = F>) -> Self {
        let names: Vec<String> = fields.into_iter().map(|f| f.as_ref().to_owned()).collect();
        let positions: Vec<usize> = names.iter().filter_map(|f| self.position(f)).collect();
        self.fields = names;
        self.ops.push(Op::Map(Arc::new(move |values: &[Value]| {
            Ok(positions.iter().map(|p| values.get(*p).cloned().unwrap_or(Value::Null)).collect())
        })));
        self
    }

    /// Writes the stream to `sink` exactly once per epoch, from `parallelism` tasks (each tuple
    /// goes to the task a hash of all its fields picks, so a replay holding the same tuples
    /// gives every task the same share), each task writing its share when the epoch commits.
    /// Exact with a transactional spout, or an opaque one that replays an epoch's tuples
    /// unchanged while it may have committed anywhere (the Kafka batch spouts do). `id` names
    /// the bolt.
    pub fn sink<S: EpochSink>(mut self, id: &str, sink: S, parallelism: u32) {
        let Some(add) = self.add.take() else { return };
        let topology = &mut *self.topology;
        let spout = self.id.clone();
        let ops = std::mem::take(&mut self.ops);
        let all = (0..self.fields.len()).collect();
        add(&mut topology.builder, self.parallelism, ops, Partition::Fields(all), id.to_owned(), self.fields.clone());
        topology
            .builder
            .bolt_with_outputs(id, SinkNode::new(sink, spout.clone()), parallelism, |_| {})
            .direct_grouping((spout.as_str(), DATA_STREAM))
            .direct_grouping((spout.as_str(), COUNT_STREAM))
            .all_grouping((COORDINATOR_COMPONENT, COMMIT_STREAM));
        topology.finished += 1;
    }

    /// Folds each batch's tuples in each task of this node into one tuple with the one field
    /// `field` (Trident's `partitionAggregate` with a combiner): count, sum, min or max.
    pub fn partition_aggregate(mut self, field: &str, aggregate: Aggregate) -> Self {
        if let Some(combiner) = self.combiner(&aggregate) {
            self.ops.push(Op::Aggregate(combiner));
        }
        self.fields = vec![field.to_owned()];
        self
    }

    /// Folds each whole batch into one tuple with the one field `field` (Trident's `aggregate`):
    /// the stream goes to one task, which folds it.
    pub fn aggregate(self, field: &str, aggregate: Aggregate) -> Self {
        self.global().partition_aggregate(field, aggregate)
    }

    fn combiner(&mut self, aggregate: &Aggregate) -> Option<Combiner> {
        match aggregate.field() {
            None => Some(Combiner::Count),
            Some(field) => self.position(field).map(|i| match aggregate {
                Aggregate::Sum(_) => Combiner::Sum(i),
                Aggregate::Min(_) => Combiner::Min(i),
                _ => Combiner::Max(i),
            }),
        }
    }

    /// Repartitions by `fields`: tuples with equal values meet in one task of the operations
    /// that follow, run by `parallelism(…)` tasks of a new node.
    pub fn partition_by<F: AsRef<str>>(self, fields: impl IntoIterator<Item = F>) -> Self {
        let mut this = self;
        let keys: Vec<usize> = fields.into_iter().filter_map(|f| this.position(f.as_ref())).collect();
        this.repartition(Partition::Fields(keys))
    }

    /// Repartitions evenly (by a hash of all fields, so a replayed epoch goes the same way).
    pub fn shuffle(self) -> Self {
        let all = (0..self.fields.len()).collect();
        self.repartition(Partition::Fields(all))
    }

    /// Sends every tuple to one task (the operations that follow run once per epoch's batch).
    pub fn global(self) -> Self {
        self.repartition(Partition::Global).parallelism(1)
    }

    /// Sends every tuple to every task of the operations that follow.
    pub fn broadcast(self) -> Self {
        self.repartition(Partition::All)
    }

    /// Ends the current node, its output partitioned as `partition` says for a new node that runs
    /// the operations that follow (with the same parallelism unless told otherwise).
    fn repartition(mut self, partition: Partition) -> Self {
        let Some(add) = self.add.take() else { return self };
        self.topology.nodes += 1;
        let node = format!("{}-part{}", self.id, self.topology.nodes);
        let ops = std::mem::take(&mut self.ops);
        add(&mut self.topology.builder, self.parallelism, ops, partition, node.clone(), self.fields.clone());
        let upstream = std::mem::replace(&mut self.id, node.clone());
        self.add = Some(Box::new(move |builder, parallelism, ops, partition, downstream, fields| {
            let processor = ProcessorNode::new(ops, partition, upstream.clone(), downstream);
            builder
                .bolt_with_outputs(node, processor, parallelism, move |d| declare_node(d, &fields))
                .direct_grouping((upstream.as_str(), DATA_STREAM))
                .direct_grouping((upstream.as_str(), COUNT_STREAM));
        }));
        self
    }

    /// Groups the stream by `fields`: tuples with equal keys meet in one task.
    pub fn group_by<F: AsRef<str>>(mut self, fields: impl IntoIterator<Item = F>) -> GroupedStream<'t> {
        let keys: Vec<usize> = fields.into_iter().filter_map(|f| self.position(f.as_ref())).collect();
        GroupedStream { stream: self, keys }
    }
}

/// A stream grouped by key fields.
pub struct GroupedStream<'t> {
    stream: Stream<'t>,
    keys: Vec<usize>,
}

impl GroupedStream<'_> {
    /// Folds each key's tuples with `aggregate` into the map state `state`, updated once per
    /// epoch, by `parallelism` tasks (each owning a share of the keys). `id` names the bolt.
    pub fn persistent_aggregate(mut self, id: &str, state: StateSpec, aggregate: Aggregate, parallelism: u32) {
        let Some(add) = self.stream.add.take() else { return };
        if self.stream.kind == SpoutKind::Opaque && state.semantics != Semantics::Opaque {
            self.stream.topology.errors.push(TridentError::NotExact {
                stream: self.stream.id.clone(),
                state: state.name.clone(),
                semantics: state.semantics,
            });
            return;
        }
        let Some(combiner) = self.stream.combiner(&aggregate) else { return };
        let topology = &mut *self.stream.topology;
        let spout = self.stream.id.clone();
        let keys = self.keys.clone();
        let ops = std::mem::take(&mut self.stream.ops);
        add(
            &mut topology.builder,
            self.stream.parallelism,
            ops,
            Partition::Fields(keys.clone()),
            id.to_owned(),
            self.stream.fields.clone(),
        );
        topology.builder.queryable_state(&state.name, Arc::new(state.clone()));
        topology
            .builder
            .bolt_with_outputs(id, PersistNode::new(state, keys, combiner, spout.clone()), parallelism, |_| {})
            .direct_grouping((spout.as_str(), DATA_STREAM))
            .direct_grouping((spout.as_str(), COUNT_STREAM))
            .all_grouping((COORDINATOR_COMPONENT, COMMIT_STREAM));
        topology.finished += 1;
    }
}
