//! Output collectors: how spouts and bolts emit. Typed emits are checked at compile time against
//! the component's declared streams; `emit_values` is the dynamic, checked-at-run-time form.

use std::marker::PhantomData;

use smallvec::SmallVec;

use tokio::time::Instant;

use crate::ack::{AckerMessage, PendingTrees, SpoutNotice};
use crate::component::{Bolt, DirectStream, Spout, Stream, StreamIdx};
use crate::tuple::{MessageId, TaskId, Tuple, TypedTuple};
use crate::value::{Value, Values};

/// An emit that could not be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// The component declared no stream of this name.
    #[error("component `{component}` declares no stream `{stream}`")]
    UnknownStream {
        /// The emitting component.
        component: String,
        /// The stream named in the emit.
        stream: String,
    },
    /// `emit_direct` on a stream not declared direct, or a plain emit on a direct stream.
    #[error("stream `{stream}` of `{component}` is {}: use {}", if *.direct { "direct" } else { "not direct" }, if *.direct { "emit_direct" } else { "emit" })]
    DirectMismatch {
        /// The emitting component.
        component: String,
        /// The stream.
        stream: String,
        /// Whether the stream is direct.
        direct: bool,
    },
    /// `emit_direct` to a task that does not subscribe to the stream with a direct grouping.
    #[error("task {task} does not subscribe to direct stream `{stream}` of `{component}`")]
    NotASubscriber {
        /// The emitting component.
        component: String,
        /// The stream.
        stream: String,
        /// The task asked for.
        task: TaskId,
    },
    /// A spout task has the most trees in flight it can track (the driver stops calling
    /// `next_tuple` well before; only a single call emitting millions gets here).
    #[error("{max} tuple trees are in flight from this spout task: set topology.max.spout.pending lower")]
    TooManyInFlight {
        /// The limit.
        max: usize,
    },
    /// The values do not match the stream's fields.
    #[error("stream `{stream}` of `{component}` has {expected} fields but {found} values were emitted")]
    Arity {
        /// The emitting component.
        component: String,
        /// The stream.
        stream: String,
        /// Fields declared.
        expected: usize,
        /// Values emitted.
        found: usize,
    },
}

/// How one emit was routed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Routed {
    /// Copies sent (one per destination task).
    pub tasks: usize,
    /// XOR of the edge ids given to the copies (0 when untracked).
    pub edges: u64,
}

/// The runtime's side of a collector: routes an emitted tuple to its destination tasks and
/// carries acking messages. The worker implements it; one instance serves all tasks of an
/// executor.
pub trait Transfer: Send {
    /// The index of a stream of the task's component, by name.
    fn stream_index(&self, task: TaskId, stream: &str) -> Result<StreamIdx, EmitError>;

    /// Routes one tuple emitted by task `src` on `stream` (to `direct` for direct streams).
    /// `roots` are the tuple trees it belongs to; each copy sent gets a fresh edge id, the same
    /// for every root.
    fn route(
        &mut self,
        src: TaskId,
        stream: StreamIdx,
        values: Values,
        direct: Option<TaskId>,
        roots: &[u64],
    ) -> Result<Routed, EmitError>;

    /// Routes a spout's tracked emit, the root tuple of tree `root`. When it goes to exactly one
    /// task, a runtime may give that copy `root` itself as its edge id (`Routed::edges == root`):
    /// the receiving bolt then acks for the spout (see [`crate::ack`]) and the spout sends no
    /// `Init`. The default routes like any emit.
    fn route_root(
        &mut self,
        src: TaskId,
        stream: StreamIdx,
        values: Values,
        direct: Option<TaskId>,
        root: u64,
    ) -> Result<Routed, EmitError> {
        self.route(src, stream, values, direct, &[root])
    }

    /// Whether the topology has acker tasks. Without them a tracked tuple is acked at emit.
    fn acking(&self) -> bool;

    /// Sends an acking message to the acker task that owns its root.
    fn to_acker(&mut self, message: AckerMessage);

    /// Sends an acker's notice to a spout task.
    fn notify_spout(&mut self, spout_task: TaskId, notice: SpoutNotice);
}

/// What a spout emits with.
pub struct SpoutCollector<'a, C: Spout> {
    transfer: &'a mut dyn Transfer,
    task: TaskId,
    emitted: usize,
    done: bool,
    /// The task's trees in flight, where tracked emits start theirs.
    pending: &'a mut PendingTrees<C::MsgId, Instant>,
    /// The emit time recorded for this call's trees.
    now: Instant,
    /// Ids complete at emit (no ackers, or no destination): the driver acks them.
    acked: &'a mut Vec<C::MsgId>,
    _spout: PhantomData<fn(&C)>,
}

impl<'a, C: Spout> SpoutCollector<'a, C> {
    /// A collector for one `next_tuple` call of `task`, whose trees count as emitted at `now`.
    /// The runtime makes these.
    pub fn new(
        transfer: &'a mut dyn Transfer,
        task: TaskId,
        pending: &'a mut PendingTrees<C::MsgId, Instant>,
        acked: &'a mut Vec<C::MsgId>,
        now: Instant,
    ) -> Self {
        SpoutCollector { transfer, task, emitted: 0, done: false, pending, now, acked, _spout: PhantomData }
    }

    /// Emits an untracked tuple on the default stream.
    pub fn emit(&mut self, tuple: C::Default) -> Result<(), EmitError>
    where
        C::Default: TypedTuple,
    {
        self.raw(0, tuple.into_values(), None, None)
    }

    /// Emits a tuple on the default stream, tracked by `id`: the spout's `ack(id)` is called once
    /// every tuple of its tree is acked, `fail(id)` if one fails or the tree times out.
    pub fn emit_with_id(&mut self, tuple: C::Default, id: C::MsgId) -> Result<(), EmitError>
    where
        C::Default: TypedTuple,
    {
        self.raw(0, tuple.into_values(), None, Some(id))
    }

    /// Emits an untracked tuple on a named stream.
    pub fn emit_on<T: TypedTuple>(&mut self, stream: Stream<C, T>, tuple: T) -> Result<(), EmitError> {
        self.raw(stream.index(), tuple.into_values(), None, None)
    }

    /// Emits a tracked tuple on a named stream.
    pub fn emit_on_with_id<T: TypedTuple>(
        &mut self,
        stream: Stream<C, T>,
        tuple: T,
        id: C::MsgId,
    ) -> Result<(), EmitError> {
        self.raw(stream.index(), tuple.into_values(), None, Some(id))
    }

    /// Emits a tuple on a direct stream to one task.
    pub fn emit_direct<T: TypedTuple>(
        &mut self,
        task: TaskId,
        stream: DirectStream<C, T>,
        tuple: T,
    ) -> Result<(), EmitError> {
        self.raw(stream.index(), tuple.into_values(), Some(task), None)
    }

    /// Emits values on a stream named at run time, optionally direct, optionally tracked.
    pub fn emit_values(
        &mut self,
        stream: &str,
        values: Values,
        direct: Option<TaskId>,
        id: Option<C::MsgId>,
    ) -> Result<(), EmitError> {
        let index = self.transfer.stream_index(self.task, stream)?;
        self.raw(index, values, direct, id)
    }

    /// Says this spout will emit nothing more. Its task stops calling `next_tuple` and closes
    /// once its tracked trees are acked or failed; a topology whose spouts are all done
    /// completes once every tuple is processed.
    pub fn done(&mut self) {
        self.done = true;
    }

    /// Whether `done` was called.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// How many tuples this collector emitted.
    pub fn emitted(&self) -> usize {
        self.emitted
    }

    fn raw(
        &mut self,
        stream: StreamIdx,
        values: Values,
        direct: Option<TaskId>,
        id: Option<C::MsgId>,
    ) -> Result<(), EmitError> {
        match id {
            Some(id) if self.transfer.acking() => {
                let root = match self.pending.insert(id, self.now) {
                    Ok(root) => root,
                    Err(_) => return Err(EmitError::TooManyInFlight { max: PendingTrees::<C::MsgId, Instant>::MAX }),
                };
                let routed = match self.transfer.route_root(self.task, stream, values, direct, root) {
                    Ok(routed) => routed,
                    Err(e) => {
                        self.pending.remove(root);
                        return Err(e);
                    }
                };
                if routed.tasks == 0 {
                    // Nobody subscribes: the tree is complete already (Storm acks at once too).
                    self.acked.extend(self.pending.remove(root).map(|(id, _)| id));
                } else if !is_sole(root, routed.edges) {
                    // A sole copy's bolt speaks for the spout (see `ack`): no `Init` then.
                    let init = AckerMessage::Init { root, value: routed.edges, spout_task: self.task };
                    self.transfer.to_acker(init);
                }
            }
            id => {
                self.transfer.route(self.task, stream, values, direct, &[])?;
                // Without acker tasks a tree is complete as soon as it is emitted (Storm's rule).
                self.acked.extend(id);
            }
        }
        self.emitted += 1;
        Ok(())
    }
}

/// Whether an anchor `(root, edge)` is a spout tuple's sole copy (see [`crate::ack`]).
fn is_sole(root: u64, edge: u64) -> bool {
    root == edge
}

/// Root ids of the trees a set of anchors belongs to, each once.
pub(crate) type Roots = SmallVec<[u64; 2]>;

/// What a bolt emits and acks with.
///
/// Plain `emit*` calls anchor the new tuple to the input being executed; `anchored` and
/// `unanchored` choose otherwise. With [`Bolt::AUTO_ACK`] (the default) the input is acked
/// when `execute` returns `Ok` and failed when it returns an error; otherwise call
/// [`BoltCollector::ack`] / [`BoltCollector::fail`] for every input, now or later.
pub struct BoltCollector<'a, C: Bolt> {
    transfer: &'a mut dyn Transfer,
    task: TaskId,
    input: MessageId,
    /// The task that emitted the input.
    input_source: TaskId,
    input_roots: Roots,
    /// Roots of spout tuples' sole copies anchored to in this call, with their spout task:
    /// child edges of these trees go to the acker as `Adopt`.
    sole: SmallVec<[(u64, TaskId); 1]>,
    /// Whether the input was acked or failed explicitly.
    settled: bool,
    /// Per root, the XOR of child edges not yet reported to the acker. Folded into the next
    /// ack of a tuple of that root, or sent on its own when the call ends.
    edges: SmallVec<[(u64, u64); 2]>,
    emitted: usize,
    acked: usize,
    failed: usize,
    _bolt: PhantomData<fn(&C)>,
}

impl<'a, C: Bolt> BoltCollector<'a, C> {
    /// A collector for one `execute` call of `task` on `input`. The runtime makes these.
    pub fn new(transfer: &'a mut dyn Transfer, task: TaskId, input: Option<&Tuple>) -> Self {
        let mut collector = BoltCollector {
            transfer,
            task,
            input: MessageId::Untracked,
            input_source: 0,
            input_roots: Roots::new(),
            sole: SmallVec::new(),
            settled: false,
            edges: SmallVec::new(),
            emitted: 0,
            acked: 0,
            failed: 0,
            _bolt: PhantomData,
        };
        if let Some(input) = input {
            collector.next_input(input);
        }
        collector
    }

    /// Readies the collector for the next `execute` call, on `input`, as a new one would be
    /// after [`BoltCollector::finish`] ended the last. The runtime keeps one collector per
    /// batch: made per tuple, its id was built aside and copied in, and reading that copy back
    /// stalled store forwarding (a tenth of a word count's time).
    pub fn next_input(&mut self, input: &Tuple) {
        self.input_source = input.source_task();
        self.settled = false;
        self.sole.clear();
        self.edges.clear();
        self.emitted = 0;
        self.acked = 0;
        self.failed = 0;
        let id = input.message_id();
        if id.is_empty() {
            self.input = MessageId::Untracked;
            self.input_roots.clear();
            return;
        }
        self.input = id.clone();
        note_sole(&mut self.sole, id, self.input_source);
        // Filled in place: a vector built aside and moved in was read back too soon (a stall).
        self.input_roots.clear();
        self.input_roots.extend(id.anchors().iter().map(|(root, _)| *root));
        if self.input_roots.len() > 1 {
            self.input_roots.sort_unstable();
            self.input_roots.dedup();
        }
    }

    /// Emits on the default stream, anchored to the input.
    pub fn emit(&mut self, tuple: C::Default) -> Result<(), EmitError>
    where
        C::Default: TypedTuple,
    {
        self.raw_from_input(0, tuple.into_values(), None)
    }

    /// Emits on a named stream, anchored to the input.
    pub fn emit_on<T: TypedTuple>(&mut self, stream: Stream<C, T>, tuple: T) -> Result<(), EmitError> {
        self.raw_from_input(stream.index(), tuple.into_values(), None)
    }

    /// Emits on a direct stream to one task, anchored to the input.
    pub fn emit_direct<T: TypedTuple>(
        &mut self,
        task: TaskId,
        stream: DirectStream<C, T>,
        tuple: T,
    ) -> Result<(), EmitError> {
        self.raw_from_input(stream.index(), tuple.into_values(), Some(task))
    }

    /// Emits values on a stream named at run time (to `direct` for a direct stream), anchored
    /// to the input.
    pub fn emit_values(&mut self, stream: &str, values: Values, direct: Option<TaskId>) -> Result<(), EmitError> {
        let index = self.transfer.stream_index(self.task, stream)?;
        self.raw_from_input(index, values, direct)
    }

    /// Emits anchored to the given tuples instead of the input (multi-anchoring: a join or an
    /// aggregate emits once for many inputs). The new tuple completes its trees only once it
    /// is acked too.
    ///
    /// Takes any collection of tuples: `&[&a, &b]`, `&held` for a `Vec<Tuple>`, an iterator.
    pub fn anchored<'c, 't, I>(&'c mut self, anchors: I) -> Anchored<'c, 'a, C>
    where
        I: IntoIterator,
        I::Item: TupleRef<'t>,
    {
        let mut roots = Roots::new();
        for anchor in anchors {
            let tuple = anchor.tuple();
            note_sole(&mut self.sole, tuple.message_id(), tuple.source_task());
            roots.extend(tuple.message_id().anchors().iter().map(|(root, _)| *root));
        }
        if roots.len() > 1 {
            roots.sort_unstable();
            roots.dedup();
        }
        Anchored { collector: self, roots }
    }

    /// Emits unanchored: the new tuple belongs to no tree and is never replayed.
    pub fn unanchored<'c>(&'c mut self) -> Anchored<'c, 'a, C> {
        Anchored { collector: self, roots: Roots::new() }
    }

    /// Acks a tuple: this bolt is done with it. Its trees complete once all their tuples are
    /// acked. Ack each tuple once.
    pub fn ack(&mut self, tuple: &Tuple) {
        let own_call = self.is_unsettled_input(tuple.message_id());
        self.ack_id(tuple.message_id(), tuple.source_task(), own_call);
    }

    /// Fails a tuple: the spout of each of its trees gets `fail` at once.
    pub fn fail(&mut self, tuple: &Tuple) {
        self.fail_id(tuple.message_id(), tuple.source_task());
    }

    /// Restarts the timeout of a tuple's trees, for a bolt that holds a tuple a long time.
    pub fn reset_timeout(&mut self, tuple: &Tuple) {
        for &(root, edge) in tuple.message_id().anchors() {
            self.transfer.to_acker(AckerMessage::ResetTimeout { root });
            if is_sole(root, edge) {
                // The acker may not know the spout yet: tell it directly.
                self.transfer.notify_spout(tuple.source_task(), SpoutNotice::ResetTimeout(root));
            }
        }
    }

    /// How many tuples this collector emitted.
    pub fn emitted(&self) -> usize {
        self.emitted
    }

    /// Ends the `execute` call: with `auto_ack`, acks the input on success or fails it on
    /// error unless the bolt already did; then reports child edges still unreported. Returns
    /// (acked, failed) counts. The runtime calls this.
    pub fn finish(&mut self, success: bool, auto_ack: bool) -> (usize, usize) {
        if auto_ack && !self.settled && !self.input.is_empty() {
            let input = std::mem::take(&mut self.input);
            if success { self.ack_id(&input, self.input_source, true) } else { self.fail_id(&input, self.input_source) }
        }
        if !self.edges.is_empty() {
            for (root, value) in std::mem::take(&mut self.edges) {
                if value == 0 {
                    continue;
                }
                let message = match self.sole.iter().find(|(r, _)| *r == root) {
                    Some(&(_, spout_task)) => AckerMessage::Adopt { root, value, spout_task },
                    None => AckerMessage::Ack { root, value },
                };
                self.transfer.to_acker(message);
            }
        }
        (self.acked, self.failed)
    }

    /// Whether `id` is this call's input, not yet acked or failed: the one tuple whose child
    /// edges cannot have been reported by an earlier call.
    fn is_unsettled_input(&self, id: &MessageId) -> bool {
        !self.settled && *id == self.input
    }

    /// Acks `id`, a tuple from task `source`; `own_call` when it is this call's unsettled input.
    fn ack_id(&mut self, id: &MessageId, source: TaskId, own_call: bool) {
        if id.is_empty() {
            return;
        }
        for &(root, edge) in id.anchors() {
            let children = self.take_edges(root);
            if !is_sole(root, edge) {
                self.transfer.to_acker(AckerMessage::Ack { root, value: edge ^ children });
            } else if own_call && children == 0 {
                // The tree's only tuple, with no children: complete.
                self.transfer.notify_spout(source, SpoutNotice::Acked(root));
            } else {
                self.transfer.to_acker(AckerMessage::Adopt { root, value: edge ^ children, spout_task: source });
            }
        }
        self.settle(id);
        self.acked += 1;
    }

    fn fail_id(&mut self, id: &MessageId, source: TaskId) {
        if id.is_empty() {
            return;
        }
        for &(root, edge) in id.anchors() {
            self.take_edges(root);
            if is_sole(root, edge) {
                self.transfer.notify_spout(source, SpoutNotice::Failed(root));
            } else {
                self.transfer.to_acker(AckerMessage::Fail { root });
            }
        }
        self.settle(id);
        self.failed += 1;
    }

    fn settle(&mut self, id: &MessageId) {
        if *id == self.input {
            self.settled = true;
        }
    }

    fn take_edges(&mut self, root: u64) -> u64 {
        match self.edges.iter().position(|(r, _)| *r == root) {
            Some(i) => self.edges.swap_remove(i).1,
            None => 0,
        }
    }

    fn raw(
        &mut self,
        stream: StreamIdx,
        values: Values,
        direct: Option<TaskId>,
        roots: &[u64],
    ) -> Result<(), EmitError> {
        let routed = self.transfer.route(self.task, stream, values, direct, roots)?;
        self.emitted += 1;
        if routed.edges != 0 {
            add_edges(&mut self.edges, roots, routed.edges);
        }
        Ok(())
    }

    /// [`BoltCollector::raw`] anchored to the input. The roots are borrowed in place: taken out
    /// and put back around the call, as before, they crossed the stack twice per emit.
    #[inline]
    fn raw_from_input(&mut self, stream: StreamIdx, values: Values, direct: Option<TaskId>) -> Result<(), EmitError> {
        let routed = self.transfer.route(self.task, stream, values, direct, &self.input_roots)?;
        self.emitted += 1;
        if routed.edges != 0 {
            add_edges(&mut self.edges, &self.input_roots, routed.edges);
        }
        Ok(())
    }
}

/// XORs the child edges of an emit into each of its roots' unreported edges.
fn add_edges(edges: &mut SmallVec<[(u64, u64); 2]>, roots: &[u64], routed: u64) {
    for &root in roots {
        match edges.iter_mut().find(|(r, _)| *r == root) {
            Some((_, value)) => *value ^= routed,
            None => edges.push((root, routed)),
        }
    }
}

/// Adds the sole-copy roots among `id`'s anchors (see [`crate::ack`]) to `sole`.
#[inline]
fn note_sole(sole: &mut SmallVec<[(u64, TaskId); 1]>, id: &MessageId, source: TaskId) {
    for &(root, edge) in id.anchors() {
        if is_sole(root, edge) && !sole.iter().any(|(r, _)| *r == root) {
            sole.push((root, source));
        }
    }
}

/// A reference to a tuple, direct or through another reference: what
/// [`BoltCollector::anchored`] takes a collection of.
pub trait TupleRef<'t> {
    /// The tuple.
    fn tuple(self) -> &'t Tuple;
}

impl<'t> TupleRef<'t> for &'t Tuple {
    fn tuple(self) -> &'t Tuple {
        self
    }
}

impl<'t> TupleRef<'t> for &&'t Tuple {
    fn tuple(self) -> &'t Tuple {
        self
    }
}

/// A bolt collector with explicit anchors; see [`BoltCollector::anchored`].
pub struct Anchored<'c, 'a, C: Bolt> {
    collector: &'c mut BoltCollector<'a, C>,
    roots: Roots,
}

impl<C: Bolt> Anchored<'_, '_, C> {
    /// Emits on the default stream.
    pub fn emit(&mut self, tuple: C::Default) -> Result<(), EmitError>
    where
        C::Default: TypedTuple,
    {
        self.collector.raw(0, tuple.into_values(), None, &self.roots)
    }

    /// Emits on a named stream.
    pub fn emit_on<T: TypedTuple>(&mut self, stream: Stream<C, T>, tuple: T) -> Result<(), EmitError> {
        self.collector.raw(stream.index(), tuple.into_values(), None, &self.roots)
    }

    /// Emits on a direct stream to one task.
    pub fn emit_direct<T: TypedTuple>(
        &mut self,
        task: TaskId,
        stream: DirectStream<C, T>,
        tuple: T,
    ) -> Result<(), EmitError> {
        self.collector.raw(stream.index(), tuple.into_values(), Some(task), &self.roots)
    }

    /// Emits values on a stream named at run time.
    pub fn emit_values(&mut self, stream: &str, values: Values, direct: Option<TaskId>) -> Result<(), EmitError> {
        let index = self.collector.transfer.stream_index(self.collector.task, stream)?;
        self.collector.raw(index, values, direct, &self.roots)
    }
}

/// Checks dynamic values against a declared field count; the runtime calls it.
#[inline]
pub fn check_arity(component: &str, stream: &str, fields: usize, values: &[Value]) -> Result<(), EmitError> {
    if fields == values.len() {
        return Ok(());
    }
    Err(arity_error(component, stream, fields, values))
}

#[cold]
#[inline(never)]
fn arity_error(component: &str, stream: &str, fields: usize, values: &[Value]) -> EmitError {
    EmitError::Arity {
        component: component.to_owned(),
        stream: stream.to_owned(),
        expected: fields,
        found: values.len(),
    }
}
