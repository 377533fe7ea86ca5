//! The stream API: a Trident topology is described with streams and compiled to ordinary spouts
//! and bolts, so it runs in `LocalCluster` and on a cluster unchanged.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use squall_state::Semantics;
use squall_topology::{BuildError, ComponentError, Config, Topology, TopologyBuilder, Value, Values};

use crate::aggregate::{Aggregate, CombinerAggregator, Fold, Folder};
use crate::batch::{BatchSpout, SpoutKind};
use crate::join::{JoinSpec, JoinType};
use crate::master::{BATCH_STREAM, COMMIT_STREAM, COORDINATOR_COMPONENT, MasterSpout};
use crate::nodes::{COUNT_STREAM, DATA_STREAM, Partition, PersistNode, SpoutNode, StateSpec, Update, declare_node};
use crate::ops::Op;
use crate::processor::{Combine, ProcessorNode};
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
    /// Streams merged have different numbers of fields.
    #[error("stream `{stream}` has {fields} fields, but the streams it merges with have {expected}")]
    MergeFields {
        /// The stream (its node).
        stream: String,
        /// Its number of fields.
        fields: usize,
        /// The first stream's.
        expected: usize,
    },
    /// `merge` of no streams.
    #[error("merge needs at least one stream")]
    EmptyMerge,
    /// A join's sides name different numbers of key fields.
    #[error(
        "join of `{left}` and `{right}` needs as many key fields on each side (it has {left_keys} and {right_keys})"
    )]
    JoinKeys {
        /// The left stream.
        left: String,
        /// The right stream.
        right: String,
        /// The left's key fields.
        left_keys: usize,
        /// The right's.
        right_keys: usize,
    },
    /// An operation's output field names do not match what it gives.
    #[error("{operation} on stream `{stream}` gives {expected} fields ({what}), but {got} names were given")]
    OutputFields {
        /// The operation.
        operation: &'static str,
        /// The stream.
        stream: String,
        /// How many fields it gives.
        expected: usize,
        /// What they are.
        what: &'static str,
        /// How many names were given.
        got: usize,
    },
    /// A general aggregator cannot update a map state (one value per key).
    #[error(
        "persistent_aggregate of stream `{0}` needs a combiner or a reducer (count, sum, min, max, Aggregate::combiner, \
         Aggregate::reducer), not a general aggregator: use it in aggregate or partition_aggregate"
    )]
    NotPersistable(String),
    /// The compiled topology is invalid (a duplicate id, for one).
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// What a stream's node needs to be added to the topology once its output's partitioning is
/// known.
struct NodeSpec {
    parallelism: u32,
    ops: Vec<Op>,
    partition: Partition,
    downstream: String,
    fields: Vec<String>,
}

type AddNode = Box<dyn FnOnce(&mut TopologyBuilder, NodeSpec)>;

/// What the topology's streams share while it is described.
#[derive(Default)]
struct Graph {
    builder: TopologyBuilder,
    errors: Vec<TridentError>,
    /// Nodes named so far (a generated name ends with this number).
    nodes: usize,
    /// Streams not finished yet, by token: the name they started with.
    open: BTreeMap<u64, String>,
    tokens: u64,
}

impl Graph {
    fn node_name(&mut self, base: &str, what: &str) -> String {
        self.nodes += 1;
        match base {
            "" => format!("{what}{}", self.nodes),
            base => format!("{base}-{what}{}", self.nodes),
        }
    }
}

/// Builds a Trident topology (Storm's `TridentTopology`): batch spouts, per-tuple operations,
/// repartitions, merges and joins, aggregates, and map states updated once per epoch.
pub struct TridentTopology {
    graph: Rc<RefCell<Graph>>,
    config: Config,
    max_open: Option<usize>,
    interval: Duration,
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
        TridentTopology { graph: Rc::default(), config: Config::default(), max_open: None, interval: Duration::ZERO }
    }

    /// The topology config.
    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.config
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
    pub fn new_stream<S: BatchSpout>(&mut self, id: &str, spout: S) -> Stream {
        let fields = spout.fields();
        let kind = spout.kind();
        let add_id = id.to_owned();
        let add: AddNode = Box::new(move |builder, spec| {
            let node = SpoutNode::new(spout, spec.ops, spec.partition, spec.downstream);
            let fields = spec.fields;
            builder
                .bolt_with_outputs(add_id, node, spec.parallelism, move |d| declare_node(d, &fields))
                .all_grouping((COORDINATOR_COMPONENT, BATCH_STREAM))
                .all_grouping((COORDINATOR_COMPONENT, COMMIT_STREAM));
        });
        Stream::open(&self.graph, id.to_owned(), fields, kind, 1, add)
    }

    /// One stream of all of `streams`' tuples (Trident's `merge`), with the first one's field
    /// names; each must have as many fields. Its operations run in a new node, with as many tasks
    /// as the first stream unless [`Stream::parallelism`] says otherwise.
    pub fn merge(&mut self, streams: impl IntoIterator<Item = Stream>) -> Stream {
        let mut streams: Vec<Stream> = streams.into_iter().collect();
        let Some(first) = streams.first() else {
            self.graph.borrow_mut().errors.push(TridentError::EmptyMerge);
            return Stream::finished(&self.graph);
        };
        let (fields, parallelism) = (first.fields.clone(), first.parallelism);
        let node = self.graph.borrow_mut().node_name("", "merge");
        let mut kind = first.kind;
        let mut upstreams = Vec::new();
        for stream in &mut streams {
            if stream.fields.len() != fields.len() {
                stream.error(TridentError::MergeFields {
                    stream: stream.id.clone(),
                    fields: stream.fields.len(),
                    expected: fields.len(),
                });
            }
            kind = weakest(kind, stream.kind);
            let all = (0..stream.fields.len()).collect();
            if stream.close(Partition::Fields(all), &node) {
                upstreams.push(stream.id.clone());
            }
        }
        let add = processor_node(node.clone(), upstreams, Combine::Concat);
        Stream::open(&self.graph, node, fields, kind, parallelism, add)
    }

    /// The tuples of `left` and `right` whose key fields are equal, joined within each batch
    /// (Trident's `join`): each output is the key, then the left's other fields, then the
    /// right's, named `fields`; `kind` says which unmatched tuples stay (their other side null).
    /// Both sides are partitioned by their keys into a new node, with as many tasks as the left
    /// stream unless [`Stream::parallelism`] says otherwise. Keys match when their values are
    /// equal, types included (`U64(1)` is not `I64(1)`).
    pub fn join<L: AsRef<str>, R: AsRef<str>, F: AsRef<str>>(
        &mut self,
        mut left: Stream,
        left_keys: impl IntoIterator<Item = L>,
        mut right: Stream,
        right_keys: impl IntoIterator<Item = R>,
        fields: impl IntoIterator<Item = F>,
        kind: JoinType,
    ) -> Stream {
        let keys = [left.positions(left_keys), right.positions(right_keys)];
        let fields = names(fields);
        let widths = [left.fields.len(), right.fields.len()];
        let expected = (widths[0] + widths[1]).saturating_sub(keys[0].len());
        if keys[0].len() != keys[1].len() {
            left.error(TridentError::JoinKeys {
                left: left.id.clone(),
                right: right.id.clone(),
                left_keys: keys[0].len(),
                right_keys: keys[1].len(),
            });
        } else if fields.len() != expected {
            left.error(TridentError::OutputFields {
                operation: "join",
                stream: left.id.clone(),
                expected,
                what: "the keys, then the left stream's other fields, then the right's",
                got: fields.len(),
            });
        }
        let node = self.graph.borrow_mut().node_name("", "join");
        let mut upstreams = Vec::new();
        for (stream, keys) in [(&mut left, &keys[0]), (&mut right, &keys[1])] {
            if stream.close(Partition::Fields(keys.clone()), &node) {
                upstreams.push(stream.id.clone());
            }
        }
        let kind_of_stream = weakest(left.kind, right.kind);
        let combine = Combine::Join(JoinSpec { keys, widths, kind });
        let add = processor_node(node.clone(), upstreams, combine);
        Stream::open(&self.graph, node, fields, kind_of_stream, left.parallelism, add)
    }

    /// The topology of spouts and bolts this compiles to.
    pub fn build(self) -> Result<Topology, TridentError> {
        let mut graph = self.graph.borrow_mut();
        if let Some(error) = graph.errors.drain(..).next() {
            return Err(error);
        }
        if let Some(stream) = graph.open.values().next() {
            return Err(TridentError::Unfinished(stream.clone()));
        }
        if self.config.acker_executors == Some(0) {
            return Err(TridentError::NoAckers);
        }
        let config_pending = self.config.max_spout_pending.map(|p| p as usize);
        let max_open = self.max_open.or(config_pending).unwrap_or(1);
        // Each open epoch has a batch tree and perhaps a commit tree in flight.
        let pending = u32::try_from(2 * max_open + 1).unwrap_or(u32::MAX);
        let master = MasterSpout::new(max_open, self.interval);
        let mut builder = std::mem::take(&mut graph.builder);
        builder.set_config(self.config);
        builder.spout_with_outputs(COORDINATOR_COMPONENT, master, 1, MasterSpout::declare).max_spout_pending(pending);
        Ok(builder.build()?)
    }
}

/// The weaker promise of two spouts' streams combined.
fn weakest(a: SpoutKind, b: SpoutKind) -> SpoutKind {
    match (a, b) {
        (SpoutKind::NonTransactional, _) | (_, SpoutKind::NonTransactional) => SpoutKind::NonTransactional,
        (SpoutKind::Opaque, _) | (_, SpoutKind::Opaque) => SpoutKind::Opaque,
        _ => SpoutKind::Transactional,
    }
}

fn names<F: AsRef<str>>(fields: impl IntoIterator<Item = F>) -> Vec<String> {
    fields.into_iter().map(|f| f.as_ref().to_owned()).collect()
}

/// A node that gathers each epoch from `upstreams`, combines, runs its operations and
/// repartitions.
fn processor_node(node: String, upstreams: Vec<String>, combine: Combine) -> AddNode {
    Box::new(move |builder, spec| {
        let fields = spec.fields;
        let processor = ProcessorNode::new(spec.ops, spec.partition, upstreams.clone(), combine, spec.downstream);
        let mut declarer =
            builder.bolt_with_outputs(node, processor, spec.parallelism, move |d| declare_node(d, &fields));
        for upstream in &upstreams {
            declarer = declarer
                .direct_grouping((upstream.as_str(), DATA_STREAM))
                .direct_grouping((upstream.as_str(), COUNT_STREAM));
        }
    })
}

/// A stream of tuples with named fields, described until it ends in a state, a sink, or
/// another stream (a merge or a join).
pub struct Stream {
    graph: Rc<RefCell<Graph>>,
    token: u64,
    /// The node it is in (the component that runs its pending operations).
    id: String,
    fields: Vec<String>,
    kind: SpoutKind,
    parallelism: u32,
    ops: Vec<Op>,
    add: Option<AddNode>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        let mut graph = self.graph.borrow_mut();
        if let Some(started) = graph.open.remove(&self.token)
            && self.add.is_some()
        {
            graph.errors.push(TridentError::Unfinished(started));
        }
    }
}

impl Stream {
    fn open(
        graph: &Rc<RefCell<Graph>>,
        id: String,
        fields: Vec<String>,
        kind: SpoutKind,
        parallelism: u32,
        add: AddNode,
    ) -> Stream {
        let token = {
            let mut g = graph.borrow_mut();
            g.tokens += 1;
            let token = g.tokens;
            g.open.insert(token, id.clone());
            token
        };
        Stream { graph: graph.clone(), token, id, fields, kind, parallelism, ops: Vec::new(), add: Some(add) }
    }

    /// A stream that is already an error, to keep describing after one.
    fn finished(graph: &Rc<RefCell<Graph>>) -> Stream {
        Stream {
            graph: graph.clone(),
            token: 0,
            id: String::new(),
            fields: Vec::new(),
            kind: SpoutKind::NonTransactional,
            parallelism: 1,
            ops: Vec::new(),
            add: None,
        }
    }

    /// Its fields.
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    fn error(&self, error: TridentError) {
        self.graph.borrow_mut().errors.push(error);
    }

    fn position(&self, field: &str) -> Option<usize> {
        let found = self.fields.iter().position(|f| f == field);
        if found.is_none() {
            self.error(TridentError::UnknownField {
                stream: self.id.clone(),
                field: field.to_owned(),
                known: self.fields.join(", "),
            });
        }
        found
    }

    fn positions<F: AsRef<str>>(&self, fields: impl IntoIterator<Item = F>) -> Vec<usize> {
        fields.into_iter().filter_map(|f| self.position(f.as_ref())).collect()
    }

    /// Adds the node its pending operations run in to the topology, its output partitioned as
    /// `partition` says for `downstream`; false if it was added already.
    fn close(&mut self, partition: Partition, downstream: &str) -> bool {
        let Some(add) = self.add.take() else { return false };
        self.graph.borrow_mut().open.remove(&self.token);
        let spec = NodeSpec {
            parallelism: self.parallelism,
            ops: std::mem::take(&mut self.ops),
            partition,
            downstream: downstream.to_owned(),
            fields: self.fields.clone(),
        };
        add(&mut self.graph.borrow_mut().builder, spec);
        true
    }

    /// Runs the operations up to the next repartition (and the spout, at the start) in
    /// `parallelism` tasks, each handling its share of every epoch.
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
        self.fields = names(fields);
        self.ops.push(Op::Map(Arc::new(f)));
        self
    }

    /// Replaces each tuple with any number of tuples, whose fields are `fields`.
    pub fn flat_map<F: AsRef<str>>(
        mut self,
        fields: impl IntoIterator<Item = F>,
        f: impl Fn(&[Value]) -> Result<Vec<Values>, ComponentError> + Send + Sync + 'static,
    ) -> Self {
        self.fields = names(fields);
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
        self.fields.extend(names(added));
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
        let names = names(fields);
        let positions = self.positions(&names);
        self.fields = names;
        self.ops.push(Op::Map(Arc::new(move |values: &[Value]| {
            Ok(positions.iter().map(|p| values.get(*p).cloned().unwrap_or(Value::Null)).collect())
        })));
        self
    }

    /// Appends to each tuple, as `field`, the value its key (the fields `keys`) has in `state`
    /// now (null if none): Trident's `stateQuery` with a `MapGet`. Each batch reads its keys at
    /// once, uncached.
    pub fn state_query<F: AsRef<str>>(
        mut self,
        state: &StateSpec,
        keys: impl IntoIterator<Item = F>,
        field: &str,
    ) -> Self {
        let keys = self.positions(keys);
        self.fields.push(field.to_owned());
        self.ops.push(Op::Query { state: state.clone(), keys });
        self
    }

    /// Writes the stream to `sink` exactly once per epoch, from `parallelism` tasks (each tuple
    /// goes to the task a hash of all its fields picks, so a replay holding the same tuples
    /// gives every task the same share), each task writing its share when the epoch commits.
    /// Exact with a transactional spout, or an opaque one that replays an epoch's tuples
    /// unchanged while it may have committed anywhere (the Kafka batch spouts do). `id` names
    /// the bolt.
    pub fn sink<S: EpochSink>(mut self, id: &str, sink: S, parallelism: u32) {
        let all = (0..self.fields.len()).collect();
        let upstream = self.id.clone();
        if !self.close(Partition::Fields(all), id) {
            return;
        }
        self.graph
            .borrow_mut()
            .builder
            .bolt_with_outputs(id, SinkNode::new(sink, upstream.clone()), parallelism, |_| {})
            .direct_grouping((upstream.as_str(), DATA_STREAM))
            .direct_grouping((upstream.as_str(), COUNT_STREAM))
            .all_grouping((COORDINATOR_COMPONENT, COMMIT_STREAM));
    }

    /// Stores each tuple's `value` field under its `keys` in the map state `state`, once per
    /// epoch, from `parallelism` tasks each owning a share of the keys (Trident's
    /// `partitionPersist` with a map put). If an epoch holds several tuples of one key, the last
    /// to arrive wins. `id` names the bolt.
    pub fn partition_persist<F: AsRef<str>>(
        self,
        id: &str,
        state: StateSpec,
        keys: impl IntoIterator<Item = F>,
        value: &str,
        parallelism: u32,
    ) {
        let keys = self.positions(keys);
        let Some(value) = self.position(value) else { return };
        self.persist(id, state, keys, Update::Put(value), parallelism);
    }

    /// Folds the whole stream with `aggregate` (a combiner or a reducer) into one value, kept in
    /// the map state `state` under the empty key and updated once per epoch by one task
    /// (Trident's ungrouped `persistentAggregate`). `id` names the bolt.
    pub fn persistent_aggregate(self, id: &str, state: StateSpec, aggregate: Aggregate) {
        self.group_by(Vec::<String>::new()).persistent_aggregate(id, state, aggregate, 1);
    }

    /// Folds each task's share of each batch into tuples of `fields` (Trident's
    /// `partitionAggregate`): one value for a combiner (nothing for an empty share, unless it
    /// has a zero, as count and sum do) or a reducer, any tuples for a general aggregator.
    pub fn partition_aggregate<F: AsRef<str>>(
        mut self,
        fields: impl IntoIterator<Item = F>,
        aggregate: Aggregate,
    ) -> Self {
        let fields = names(fields);
        if let Some(folder) = self.folder(&aggregate, "partition_aggregate", fields.len()) {
            self.ops.push(Op::Aggregate { group: Vec::new(), folder });
        }
        self.fields = fields;
        self
    }

    /// Folds each whole batch into tuples of `fields` (Trident's `aggregate`) in one task; a
    /// combiner first folds each task's share where it is, so only partial results move.
    pub fn aggregate<F: AsRef<str>>(self, fields: impl IntoIterator<Item = F>, aggregate: Aggregate) -> Self {
        let fields = names(fields);
        let Fold::Combiner(combiner) = &aggregate.fold else {
            return self.global().partition_aggregate(fields, aggregate);
        };
        let partials = Aggregate::combiner(["$partial"], Partials(combiner.clone()));
        self.partition_aggregate(["$partial"], aggregate).global().partition_aggregate(fields, partials)
    }

    /// `aggregate` resolved against this stream's fields, checked to give `outputs` fields.
    fn folder(&self, aggregate: &Aggregate, operation: &'static str, outputs: usize) -> Option<Folder> {
        if aggregate.is_single_valued() && outputs != 1 {
            self.error(TridentError::OutputFields {
                operation,
                stream: self.id.clone(),
                expected: 1,
                what: "a combiner's or a reducer's value",
                got: outputs,
            });
            return None;
        }
        let inputs: Vec<usize> = aggregate.inputs().iter().filter_map(|f| self.position(f)).collect();
        (inputs.len() == aggregate.inputs().len()).then(|| Folder { inputs, fold: aggregate.fold.clone() })
    }

    /// Repartitions by `fields`: tuples with equal values meet in one task of the operations
    /// that follow, run by `parallelism(…)` tasks of a new node.
    pub fn partition_by<F: AsRef<str>>(self, fields: impl IntoIterator<Item = F>) -> Self {
        let keys = self.positions(fields);
        self.repartition(Partition::Fields(keys))
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
        let node = self.graph.borrow_mut().node_name(&self.id, "part");
        if !self.close(partition, &node) {
            return self;
        }
        let upstream = std::mem::replace(&mut self.id, node.clone());
        self.add = Some(processor_node(node, vec![upstream], Combine::Concat));
        let mut graph = self.graph.borrow_mut();
        graph.tokens += 1;
        self.token = graph.tokens;
        graph.open.insert(self.token, self.id.clone());
        drop(graph);
        self
    }

    /// Groups the stream by `fields`: tuples with equal keys meet in one task.
    pub fn group_by<F: AsRef<str>>(self, fields: impl IntoIterator<Item = F>) -> GroupedStream {
        let names = names(fields);
        let keys = self.positions(&names);
        GroupedStream { stream: self, keys, names }
    }

    /// Ends the stream in a node that updates `state` per key at each epoch's commit.
    fn persist(mut self, id: &str, state: StateSpec, keys: Vec<usize>, update: Update, parallelism: u32) {
        if self.kind == SpoutKind::Opaque && state.semantics != Semantics::Opaque {
            self.error(TridentError::NotExact {
                stream: self.id.clone(),
                state: state.name.clone(),
                semantics: state.semantics,
            });
            self.add = None;
            return;
        }
        let upstream = self.id.clone();
        if !self.close(Partition::Fields(keys.clone()), id) {
            return;
        }
        let mut graph = self.graph.borrow_mut();
        graph.builder.queryable_state(&state.name, Arc::new(state.clone()));
        graph
            .builder
            .bolt_with_outputs(id, PersistNode::new(state, keys, update, upstream.clone()), parallelism, |_| {})
            .direct_grouping((upstream.as_str(), DATA_STREAM))
            .direct_grouping((upstream.as_str(), COUNT_STREAM))
            .all_grouping((COORDINATOR_COMPONENT, COMMIT_STREAM));
    }
}

/// A combiner's partial results combined again: `init` takes a partial as it is.
struct Partials(Arc<dyn CombinerAggregator>);

impl CombinerAggregator for Partials {
    fn init(&self, tuple: &[Value]) -> Value {
        tuple.first().cloned().unwrap_or(Value::Null)
    }

    fn combine(&self, a: &Value, b: &Value) -> Value {
        self.0.combine(a, b)
    }

    fn zero(&self) -> Value {
        self.0.zero()
    }
}

/// A stream grouped by key fields.
pub struct GroupedStream {
    stream: Stream,
    keys: Vec<usize>,
    names: Vec<String>,
}

impl GroupedStream {
    /// Folds each key's tuples with `aggregate` (a combiner or a reducer) into the map state
    /// `state`, updated once per epoch, by `parallelism` tasks (each owning a share of the
    /// keys). `id` names the bolt.
    pub fn persistent_aggregate(self, id: &str, state: StateSpec, aggregate: Aggregate, parallelism: u32) {
        let GroupedStream { stream, keys, .. } = self;
        let Some(folder) = stream.folder(&aggregate, "persistent_aggregate", 1) else { return };
        let Some(update) = Update::of(folder) else {
            stream.error(TridentError::NotPersistable(stream.id.clone()));
            let mut stream = stream;
            stream.add = None;
            return;
        };
        stream.persist(id, state, keys, update, parallelism);
    }

    /// Folds each group of each task's share of a batch (Trident's grouped
    /// `partitionAggregate`): each output is the group's key fields, then `fields`.
    pub fn partition_aggregate<F: AsRef<str>>(
        self,
        fields: impl IntoIterator<Item = F>,
        aggregate: Aggregate,
    ) -> Stream {
        let GroupedStream { mut stream, keys, names: key_names } = self;
        let fields = names(fields);
        if let Some(folder) = stream.folder(&aggregate, "aggregate", fields.len()) {
            stream.ops.push(Op::Aggregate { group: keys, folder });
        }
        stream.fields = key_names.into_iter().chain(fields).collect();
        stream
    }

    /// Folds each group of each whole batch (Trident's grouped `aggregate`): the stream is
    /// partitioned by the key, so a group meets in one task; each output is the group's key
    /// fields, then `fields`. A combiner first folds each task's share where it is, so only
    /// partial results move.
    pub fn aggregate<F: AsRef<str>>(self, fields: impl IntoIterator<Item = F>, aggregate: Aggregate) -> Stream {
        let fields = names(fields);
        let key_names = self.names.clone();
        let Fold::Combiner(combiner) = &aggregate.fold else {
            let stream = self.stream.partition_by(&key_names);
            return stream.group_by(&key_names).partition_aggregate(fields, aggregate);
        };
        let partials = Aggregate::combiner(["$partial"], Partials(combiner.clone()));
        self.partition_aggregate(["$partial"], aggregate)
            .partition_by(&key_names)
            .group_by(&key_names)
            .partition_aggregate(fields, partials)
    }
}
