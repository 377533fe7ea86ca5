//! The bolts a Trident stream compiles to: the batch spout's node (emit the epoch's tuples, run
//! the stream's operations, partition, announce per-task counts) and the persistent aggregate
//! (fold each epoch per key, check the counts, update the map state at the epoch's commit).

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHasher};
use squall_state::{Backend, MapState, Semantics};
use squall_topology::component::NoOutput;
use squall_topology::{
    Bolt, BoltCollector, ComponentError, OutputDeclarer, Outputs, TaskId, TopologyContext, Tuple, Value, Values,
};

use crate::aggregate::{CombinerAggregator, Fold, Folder, ReducerAggregator, with_inputs};
use crate::batch::BatchSpout;
use crate::coordinator::Epoch;
use crate::master::{BATCH_STREAM, COMMIT_STREAM, COORDINATOR_COMPONENT};
use crate::ops::{Op, apply_batch};

/// A node's stream of rows `[$txid, $attempt, $rows, $values]`, sent direct to the task its
/// partitioning picks: up to [`CHUNK_ROWS`] rows of the stream's fields, of one width, in one
/// flat list (so routing, acking and transfer are paid per chunk, not per row).
pub(crate) const DATA_STREAM: &str = "data";
/// A node's stream of counts `[$txid, $attempt, $count]`: after its share of an epoch, one to
/// every downstream task, saying how many data tuples of the epoch it sent that task.
pub(crate) const COUNT_STREAM: &str = "$count";
/// The most rows in one data tuple.
pub(crate) const CHUNK_ROWS: usize = 1024;

/// How a node's output is spread over the downstream tasks.
#[derive(Debug, Clone)]
pub(crate) enum Partition {
    /// By a hash of these fields (`group_by`, `partition_by`; all fields for `shuffle`): equal
    /// keys meet in one task.
    Fields(Vec<usize>),
    /// All to the first task (`global`).
    Global,
    /// A copy to every task (`broadcast`).
    All,
}

/// Declares a node's data stream (rows of `fields`) and count stream.
pub(crate) fn declare_node(declarer: &mut OutputDeclarer, fields: &[String]) {
    let rows = format!("$rows({})", fields.join(","));
    declarer.declare_fields(DATA_STREAM, &["$txid", "$attempt", "$rows", &rows], true);
    declarer.declare_fields(COUNT_STREAM, &["$txid", "$attempt", "$count"], true);
}

/// One epoch attempt's share at a task: what arrived, tallied, and the node's own `data`.
#[derive(Default)]
pub(crate) struct Share<T> {
    attempt: u32,
    pub(crate) tally: Tally,
    pub(crate) data: T,
}

/// Each open epoch's newest share at a task, by txid.
pub(crate) struct Shares<T>(BTreeMap<u64, Share<T>>);

impl<T> Default for Shares<T> {
    fn default() -> Self {
        Shares(BTreeMap::new())
    }
}

impl<T: Default> Shares<T> {
    /// `epoch`'s share, started over when a newer attempt shows up; `None` for a stale attempt.
    pub(crate) fn newest(&mut self, epoch: Epoch) -> Option<&mut Share<T>> {
        let share = self.0.entry(epoch.txid).or_default();
        if epoch.attempt < share.attempt {
            return None;
        }
        if epoch.attempt > share.attempt {
            *share = Share { attempt: epoch.attempt, ..Share::default() };
        }
        Some(share)
    }

    /// `epoch`'s share if every one of `upstream_tasks` announced it and sent that many tuples;
    /// else an error (a batch that would pass short).
    pub(crate) fn complete(&mut self, epoch: Epoch, upstream_tasks: usize) -> Result<&mut T, ComponentError> {
        match self.0.get_mut(&epoch.txid) {
            Some(share) if share.attempt == epoch.attempt && share.tally.is_complete(upstream_tasks) => {
                Ok(&mut share.data)
            }
            _ => Err(format!("trident: epoch {} attempt {} is incomplete here", epoch.txid, epoch.attempt).into()),
        }
    }

    /// Forgets `txid` and every epoch before it.
    pub(crate) fn committed(&mut self, txid: u64) {
        self.0.retain(|t, _| *t > txid);
    }
}

/// The epoch an input belongs to; an input without one is failed.
pub(crate) fn epoch_or_fail<C: Bolt>(input: &Tuple, out: &mut BoltCollector<'_, C>) -> Result<Epoch, ComponentError> {
    epoch_of(input).inspect_err(|_| out.fail(input))
}

/// What arrived of one epoch attempt from each upstream task, and what each announced: the
/// share is whole when every task announced and sent that many (a lost tuple fails the epoch,
/// never passes short).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    received: BTreeMap<TaskId, u64>,
    announced: BTreeMap<TaskId, u64>,
}

impl Tally {
    /// A data tuple from `task` arrived.
    pub(crate) fn received(&mut self, task: TaskId) {
        *self.received.entry(task).or_default() += 1;
    }

    /// `task` says it sent `count` data tuples.
    pub(crate) fn announced(&mut self, task: TaskId, count: u64) {
        self.announced.insert(task, count);
    }

    /// Whether all `upstream_tasks` announced and everything announced arrived.
    pub(crate) fn is_complete(&self, upstream_tasks: usize) -> bool {
        self.announced.len() == upstream_tasks
            && self.announced.iter().all(|(task, n)| self.received.get(task).copied().unwrap_or(0) == *n)
    }
}

pub(crate) fn epoch_of(tuple: &Tuple) -> Result<Epoch, ComponentError> {
    let txid: u64 = tuple.get_as(0)?;
    let attempt: u64 = tuple.get_as(1)?;
    Ok(Epoch { txid, attempt: u32::try_from(attempt)? })
}

/// Runs a batch spout and the operations after it; one task per spout task.
#[derive(Clone)]
pub(crate) struct SpoutNode<S> {
    pub(crate) spout: S,
    pub(crate) ops: Arc<[Op]>,
    pub(crate) partition: Partition,
    /// The component the data goes to.
    pub(crate) downstream: String,
    pub(crate) targets: Vec<TaskId>,
    pub(crate) batch: Vec<Values>,
    pub(crate) out: Vec<Values>,
}

impl<S: BatchSpout> SpoutNode<S> {
    pub(crate) fn new(spout: S, ops: Vec<Op>, partition: Partition, downstream: String) -> Self {
        SpoutNode {
            spout,
            ops: ops.into(),
            partition,
            downstream,
            targets: Vec::new(),
            batch: Vec::new(),
            out: Vec::new(),
        }
    }
}

impl<S> Outputs for SpoutNode<S> {
    type Default = NoOutput;

    fn declare_outputs(_declarer: &mut OutputDeclarer) {}
}

impl<S: BatchSpout> Bolt for SpoutNode<S> {
    async fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), ComponentError> {
        self.targets = ctx.component_tasks(&self.downstream).to_vec();
        if self.targets.is_empty() {
            return Err(format!("trident: component `{}` has no tasks", self.downstream).into());
        }
        self.spout.open(ctx).await
    }

    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        if input.source_component() != COORDINATOR_COMPONENT {
            return Err(format!("trident: unexpected tuple from {}", input.source_component()).into());
        }
        let epoch = epoch_of(&input)?;
        match input.source_stream() {
            COMMIT_STREAM => {
                self.spout.commit(epoch).await;
                return Ok(());
            }
            BATCH_STREAM => {}
            other => return Err(format!("trident: unexpected stream `{other}` from the coordinator").into()),
        }
        self.batch.clear();
        self.out.clear();
        self.spout.emit_batch(epoch, &mut self.batch).await?;
        apply_batch(&self.ops, epoch, std::mem::take(&mut self.batch), &mut self.out).await?;
        // Everything is anchored to the batch tuple, which is acked when this returns: the
        // epoch's tree stays open until every downstream task has acked what it got.
        emit_partitioned(out, epoch, self.out.drain(..), &self.partition, &self.targets)
    }
}

/// Sends `tuples` of `epoch` to `targets` as `partition` says, in chunks of rows, then one
/// count to every target.
pub(crate) fn emit_partitioned<C: Bolt>(
    out: &mut BoltCollector<'_, C>,
    epoch: Epoch,
    tuples: impl Iterator<Item = Values>,
    partition: &Partition,
    targets: &[TaskId],
) -> Result<(), ComponentError> {
    let mut chunks: Vec<Chunk> = targets.iter().map(|_| Chunk::default()).collect();
    for values in tuples {
        let index = match partition {
            Partition::Fields(keys) => bucket(key_hash(&values, keys), targets.len()),
            Partition::Global => 0,
            Partition::All => {
                for (task, chunk) in targets.iter().zip(chunks.iter_mut()) {
                    chunk.push(out, epoch, *task, values.iter().cloned(), values.len())?;
                }
                continue;
            }
        };
        let width = values.len();
        chunks[index].push(out, epoch, targets[index], values.into_iter(), width)?;
    }
    for (task, mut chunk) in targets.iter().zip(chunks) {
        chunk.flush(out, epoch, *task)?;
        let values: Values = [Value::U64(epoch.txid), Value::U64(u64::from(epoch.attempt)), Value::U64(chunk.sent)]
            .into_iter()
            .collect();
        out.emit_values(COUNT_STREAM, values, Some(*task))?;
    }
    Ok(())
}

/// The rows gathered for one target, and how many data tuples went to it.
#[derive(Default)]
struct Chunk {
    values: Vec<Value>,
    rows: usize,
    width: usize,
    sent: u64,
}

impl Chunk {
    fn push<C: Bolt>(
        &mut self,
        out: &mut BoltCollector<'_, C>,
        epoch: Epoch,
        task: TaskId,
        row: impl Iterator<Item = Value>,
        width: usize,
    ) -> Result<(), ComponentError> {
        if self.rows == CHUNK_ROWS || (self.rows > 0 && width != self.width) {
            self.flush(out, epoch, task)?;
        }
        self.width = width;
        self.values.extend(row);
        self.rows += 1;
        Ok(())
    }

    fn flush<C: Bolt>(
        &mut self,
        out: &mut BoltCollector<'_, C>,
        epoch: Epoch,
        task: TaskId,
    ) -> Result<(), ComponentError> {
        if self.rows == 0 {
            return Ok(());
        }
        let rows = Value::U64(self.rows as u64);
        let values = Value::List(std::mem::take(&mut self.values).into());
        self.rows = 0;
        self.sent += 1;
        let tuple: Values =
            [Value::U64(epoch.txid), Value::U64(u64::from(epoch.attempt)), rows, values].into_iter().collect();
        out.emit_values(DATA_STREAM, tuple, Some(task))?;
        Ok(())
    }
}

/// Calls `f` with each row of a data tuple.
pub(crate) fn for_each_row(input: &Tuple, mut f: impl FnMut(&[Value])) -> Result<(), ComponentError> {
    let rows: u64 = input.get_as(2)?;
    let Some(Value::List(values)) = input.values().get(3) else {
        return Err("trident: a data tuple without its rows".into());
    };
    let rows = usize::try_from(rows).ok().filter(|r| (1..=CHUNK_ROWS).contains(r));
    let Some(rows) = rows.filter(|r| values.len() % r == 0) else {
        return Err(format!("trident: a data tuple of {} values cannot hold its row count", values.len()).into());
    };
    match values.len() / rows {
        0 => (0..rows).for_each(|_| f(&[])),
        width => values.chunks(width).for_each(f),
    }
    Ok(())
}

fn key_hash(values: &[Value], keys: &[usize]) -> u64 {
    let mut hasher = FxHasher::default();
    for &k in keys {
        values.get(k).unwrap_or(&Value::Null).stable_hash(&mut hasher);
    }
    hasher.finish()
}

fn bucket(hash: u64, n: usize) -> usize {
    ((u128::from(hash) * n as u128) >> 64) as usize
}

/// Where one map state lives and how it is updated.
#[derive(Clone)]
pub struct StateSpec {
    pub(crate) name: String,
    pub(crate) semantics: Semantics,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) cache_size: usize,
}

impl std::fmt::Debug for StateSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateSpec")
            .field("name", &self.name)
            .field("semantics", &self.semantics)
            .field("backend", &self.backend.describe())
            .finish_non_exhaustive()
    }
}

impl StateSpec {
    /// The map state `name` in `backend` with `semantics`, caching 10,000 keys per task.
    pub fn new(name: &str, semantics: Semantics, backend: Arc<dyn Backend>) -> Self {
        StateSpec { name: name.to_owned(), semantics, backend, cache_size: 10_000 }
    }

    /// Caches this many keys per task (0: none).
    pub fn cache_size(mut self, keys: usize) -> Self {
        self.cache_size = keys;
        self
    }

    /// The state itself, to read it (a test, a query).
    pub fn open(&self) -> MapState<Vec<Value>, Value> {
        MapState::new(&self.name, self.semantics, self.backend.clone(), self.cache_size)
    }

    /// The state without a cache, which would go stale while other tasks write.
    pub(crate) fn open_uncached(&self) -> MapState<Vec<Value>, Value> {
        MapState::new(&self.name, self.semantics, self.backend.clone(), 0)
    }
}

/// `squall query` reads it through this.
#[async_trait::async_trait]
impl squall_topology::QueryableState for StateSpec {
    async fn query(&self, keys: &[Vec<Value>]) -> Result<Vec<Option<Value>>, String> {
        self.open_uncached().multi_get(keys).await.map_err(|e| e.to_string())
    }
}

/// How a persisting node turns an epoch's tuples of a key into the key's new value.
#[derive(Clone)]
pub(crate) enum Update {
    /// The epoch's partial (its tuples' `init`s combined) combines with the stored value.
    Combine { inputs: Vec<usize>, combiner: Arc<dyn CombinerAggregator> },
    /// The epoch's tuples reduce onto the stored value (or `init`'s).
    Reduce { inputs: Vec<usize>, reducer: Arc<dyn ReducerAggregator> },
    /// The field at this position becomes the value (the last tuple's, if several share a key).
    Put(usize),
}

impl Update {
    /// An aggregate's update, if it is a combiner or a reducer.
    pub(crate) fn of(folder: Folder) -> Option<Update> {
        match folder.fold {
            Fold::Combiner(combiner) => Some(Update::Combine { inputs: folder.inputs, combiner }),
            Fold::Reducer(reducer) => Some(Update::Reduce { inputs: folder.inputs, reducer }),
            Fold::General(_) => None,
        }
    }
}

/// What an epoch brings to one key.
#[derive(Clone)]
enum Partial {
    /// A combined partial or a value to put.
    Value(Value),
    /// The tuples to reduce (their input fields).
    Tuples(Vec<Vec<Value>>),
}

/// Folds each epoch per key and updates a map state when the epoch commits.
pub(crate) struct PersistNode {
    state: StateSpec,
    /// Key field positions in a data tuple's fields (after `$txid`, `$attempt`).
    keys: Vec<usize>,
    update: Update,
    upstream: String,
    upstream_tasks: usize,
    map: Option<MapState<Vec<Value>, Value>>,
    /// Open epochs' shares.
    pending: Shares<FxHashMap<Vec<Value>, Partial>>,
}

impl Clone for PersistNode {
    fn clone(&self) -> Self {
        PersistNode::new(self.state.clone(), self.keys.clone(), self.update.clone(), self.upstream.clone())
    }
}

impl PersistNode {
    pub(crate) fn new(state: StateSpec, keys: Vec<usize>, update: Update, upstream: String) -> Self {
        PersistNode { state, keys, update, upstream, upstream_tasks: 0, map: None, pending: Shares::default() }
    }

    /// Adds a data tuple's rows to their keys' partials.
    fn add(&mut self, epoch: Epoch, input: &Tuple) -> Result<(), ComponentError> {
        let Some(share) = self.pending.newest(epoch) else { return Ok(()) };
        share.tally.received(input.source_task());
        let (keys, update, data) = (&self.keys, &self.update, &mut share.data);
        for_each_row(input, |fields| {
            with_inputs(keys, fields, |key| add_row(data, key, update, fields));
        })
    }

    async fn commit(
        &mut self,
        epoch: Epoch,
        input: Tuple,
        out: &mut BoltCollector<'_, Self>,
    ) -> Result<(), ComponentError> {
        // The batch tree completed before the commit was sent, so every count and tuple arrived:
        // anything else is a batch that would pass short.
        let (keys, partials): (Vec<Vec<Value>>, Vec<Partial>) = match self.pending.complete(epoch, self.upstream_tasks)
        {
            Ok(partials) => partials.iter().map(|(k, v)| (k.clone(), v.clone())).unzip(),
            Err(e) => {
                out.fail(&input);
                return Err(e);
            }
        };
        let update = &self.update;
        let Some(map) = self.map.as_mut() else {
            out.fail(&input);
            return Err("trident: state not prepared".into());
        };
        let result = map
            .multi_update(epoch.txid, &keys, |i, old| match (update, &partials[i]) {
                (Update::Combine { combiner, .. }, Partial::Value(partial)) => match old {
                    Some(old) => combiner.combine(old, partial),
                    None => partial.clone(),
                },
                (Update::Reduce { reducer, .. }, Partial::Tuples(tuples)) => {
                    let start = old.cloned().unwrap_or_else(|| reducer.init());
                    tuples.iter().fold(start, |current, tuple| reducer.reduce(current, tuple))
                }
                (_, Partial::Value(value)) => value.clone(),
                (_, Partial::Tuples(_)) => old.cloned().unwrap_or(Value::Null),
            })
            .await;
        match result {
            Ok(_) => {
                self.pending.committed(epoch.txid);
                out.ack(&input);
                Ok(())
            }
            Err(e) => {
                out.fail(&input);
                Err(format!("trident: epoch {} not committed to state `{}`: {e}", epoch.txid, self.state.name).into())
            }
        }
    }
}

/// Adds one row, `fields`, to the partial of its `key`.
fn add_row(data: &mut FxHashMap<Vec<Value>, Partial>, key: &[Value], update: &Update, fields: &[Value]) {
    // Looked up by the borrowed key: the key is copied only the first time it shows up.
    if let Some(partial) = data.get_mut(key) {
        match (update, partial) {
            (Update::Combine { inputs, combiner }, Partial::Value(partial)) => {
                let value = with_inputs(inputs, fields, |t| combiner.init(t));
                *partial = combiner.combine(partial, &value);
            }
            (Update::Reduce { inputs, .. }, Partial::Tuples(tuples)) => {
                tuples.push(with_inputs(inputs, fields, <[Value]>::to_vec));
            }
            (Update::Put(field), partial) => {
                *partial = Partial::Value(fields.get(*field).cloned().unwrap_or(Value::Null));
            }
            _ => {}
        }
        return;
    }
    let partial = match update {
        Update::Combine { inputs, combiner } => Partial::Value(with_inputs(inputs, fields, |t| combiner.init(t))),
        Update::Reduce { inputs, .. } => Partial::Tuples(vec![with_inputs(inputs, fields, <[Value]>::to_vec)]),
        Update::Put(field) => Partial::Value(fields.get(*field).cloned().unwrap_or(Value::Null)),
    };
    data.insert(key.to_vec(), partial);
}

impl Outputs for PersistNode {
    type Default = NoOutput;

    fn declare_outputs(_declarer: &mut OutputDeclarer) {}
}

impl Bolt for PersistNode {
    // Inputs are acked as they are folded; the commit tuple only once the state has it.
    const AUTO_ACK: bool = false;

    async fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), ComponentError> {
        self.upstream_tasks = ctx.component_tasks(&self.upstream).len();
        self.map = Some(self.state.open());
        Ok(())
    }

    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let epoch = epoch_or_fail(&input, out)?;
        let source = input.source_task();
        match (input.source_component() == COORDINATOR_COMPONENT, input.source_stream()) {
            (true, COMMIT_STREAM) => return self.commit(epoch, input, out).await,
            (false, COUNT_STREAM) => {
                let count: u64 = input.get_as(2)?;
                if let Some(share) = self.pending.newest(epoch) {
                    share.tally.announced(source, count);
                }
            }
            (false, DATA_STREAM) => {
                if let Err(e) = self.add(epoch, &input) {
                    out.fail(&input);
                    return Err(e);
                }
            }
            _ => {}
        }
        out.ack(&input);
        Ok(())
    }
}
