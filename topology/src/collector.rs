//! Output collectors: how spouts and bolts emit. Typed emits are checked at compile time against
//! the component's declared streams; `emit_values` is the dynamic, checked-at-run-time form.

use std::marker::PhantomData;

use smallvec::SmallVec;

use crate::component::{Bolt, DirectStream, Spout, Stream, StreamIdx};
use crate::tuple::{TaskId, Tuple, TypedTuple};
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

/// The runtime's side of a collector: routes an emitted tuple to its destination tasks. The
/// worker implements it; one instance serves all tasks of an executor.
pub trait Transfer: Send {
    /// The index of a stream of the task's component, by name.
    fn stream_index(&self, task: TaskId, stream: &str) -> Result<StreamIdx, EmitError>;

    /// Routes one tuple emitted by task `src` on `stream` (to `direct` for direct streams).
    /// `roots` are the tuple trees it belongs to; each copy sent gets a fresh edge id per root.
    /// Returns the XOR of the edge ids created (0 when `roots` is empty).
    fn route(
        &mut self,
        src: TaskId,
        stream: StreamIdx,
        values: Values,
        direct: Option<TaskId>,
        roots: &[u64],
    ) -> Result<u64, EmitError>;
}

/// What a spout emits with.
pub struct SpoutCollector<'a, C: Spout> {
    transfer: &'a mut dyn Transfer,
    task: TaskId,
    emitted: usize,
    done: bool,
    /// Ids whose trees are complete at emit (no ackers): the driver acks them after the call.
    acked: &'a mut Vec<C::MsgId>,
    _spout: PhantomData<fn(&C)>,
}

impl<'a, C: Spout> SpoutCollector<'a, C> {
    /// A collector for one `next_tuple` call of `task`. The runtime makes these.
    pub fn new(transfer: &'a mut dyn Transfer, task: TaskId, acked: &'a mut Vec<C::MsgId>) -> Self {
        SpoutCollector { transfer, task, emitted: 0, done: false, acked, _spout: PhantomData }
    }

    /// Emits an untracked tuple on the default stream.
    pub fn emit(&mut self, tuple: C::Default) -> Result<(), EmitError>
    where
        C::Default: TypedTuple,
    {
        self.raw(0, tuple.into_values(), None, None)
    }

    /// Emits a tuple on the default stream, tracked by `id`: the spout's `ack(id)` or `fail(id)`
    /// is called once its tree completes or fails.
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

    /// Emits values on a stream named at run time, optionally tracked, optionally direct.
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

    /// Says this spout will emit nothing more. Its task stops calling `next_tuple`; a topology
    /// whose spouts are all done completes once every tuple is processed.
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
        self.transfer.route(self.task, stream, values, direct, &[])?;
        self.emitted += 1;
        if let Some(id) = id {
            // Without acker tasks a tree is complete as soon as it is emitted (Storm's rule).
            self.acked.push(id);
        }
        Ok(())
    }
}

/// Root ids of the trees a set of anchors belongs to.
pub(crate) type Roots = SmallVec<[u64; 2]>;

fn roots_of<'t>(anchors: impl IntoIterator<Item = &'t Tuple>) -> Roots {
    let mut anchors = anchors.into_iter().filter(|t| !t.message_id().is_empty()).peekable();
    if anchors.peek().is_none() {
        return Roots::new();
    }
    anchors.flat_map(|t| t.message_id().anchors().iter().map(|(root, _)| *root)).collect()
}

/// What a bolt emits with. Plain `emit*` calls anchor the new tuple to the input being executed
/// (Storm's basic bolt); `anchored` and `unanchored` choose otherwise.
pub struct BoltCollector<'a, C: Bolt> {
    transfer: &'a mut dyn Transfer,
    task: TaskId,
    input_roots: Roots,
    emitted: usize,
    _bolt: PhantomData<fn(&C)>,
}

impl<'a, C: Bolt> BoltCollector<'a, C> {
    /// A collector for one `execute` call of `task` on `input`. The runtime makes these.
    pub fn new(transfer: &'a mut dyn Transfer, task: TaskId, input: Option<&Tuple>) -> Self {
        BoltCollector { transfer, task, input_roots: roots_of(input), emitted: 0, _bolt: PhantomData }
    }

    /// Emits on the default stream, anchored to the input.
    pub fn emit(&mut self, tuple: C::Default) -> Result<(), EmitError>
    where
        C::Default: TypedTuple,
    {
        let roots = std::mem::take(&mut self.input_roots);
        let result = self.raw(0, tuple.into_values(), None, &roots);
        self.input_roots = roots;
        result
    }

    /// Emits on a named stream, anchored to the input.
    pub fn emit_on<T: TypedTuple>(&mut self, stream: Stream<C, T>, tuple: T) -> Result<(), EmitError> {
        let roots = std::mem::take(&mut self.input_roots);
        let result = self.raw(stream.index(), tuple.into_values(), None, &roots);
        self.input_roots = roots;
        result
    }

    /// Emits on a direct stream to one task, anchored to the input.
    pub fn emit_direct<T: TypedTuple>(
        &mut self,
        task: TaskId,
        stream: DirectStream<C, T>,
        tuple: T,
    ) -> Result<(), EmitError> {
        let roots = std::mem::take(&mut self.input_roots);
        let result = self.raw(stream.index(), tuple.into_values(), Some(task), &roots);
        self.input_roots = roots;
        result
    }

    /// Emits values on a stream named at run time (to `direct` for a direct stream), anchored
    /// to the input.
    pub fn emit_values(&mut self, stream: &str, values: Values, direct: Option<TaskId>) -> Result<(), EmitError> {
        let index = self.transfer.stream_index(self.task, stream)?;
        let roots = std::mem::take(&mut self.input_roots);
        let result = self.raw(index, values, direct, &roots);
        self.input_roots = roots;
        result
    }

    /// Emits anchored to the given tuples instead of the input (multi-anchoring: a join or an
    /// aggregate emits once for many inputs).
    pub fn anchored<'c>(&'c mut self, anchors: &[&Tuple]) -> Anchored<'c, 'a, C> {
        let roots = roots_of(anchors.iter().copied());
        Anchored { collector: self, roots }
    }

    /// Emits unanchored: the new tuple belongs to no tree and is never replayed.
    pub fn unanchored<'c>(&'c mut self) -> Anchored<'c, 'a, C> {
        Anchored { collector: self, roots: Roots::new() }
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
        roots: &[u64],
    ) -> Result<(), EmitError> {
        self.transfer.route(self.task, stream, values, direct, roots)?;
        self.emitted += 1;
        Ok(())
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
pub fn check_arity(component: &str, stream: &str, fields: usize, values: &[Value]) -> Result<(), EmitError> {
    if fields == values.len() {
        return Ok(());
    }
    Err(EmitError::Arity {
        component: component.to_owned(),
        stream: stream.to_owned(),
        expected: fields,
        found: values.len(),
    })
}
