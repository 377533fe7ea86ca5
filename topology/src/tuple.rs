//! Tuples: the runtime [`Tuple`] a bolt receives, and [`TypedTuple`], the trait
//! `#[derive(Tuple)]` implements so user code reads `word.text`, not `t.get(0)`.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Mutex, OnceLock};

use crate::value::{FromValue, Str, Value, ValueTypeError, Values};

/// The id of a task: unique within a topology, numbered from 1 as in Storm.
pub type TaskId = u32;

/// The component id of the tasks that emit tick tuples and other system tuples.
pub const SYSTEM_COMPONENT: &str = "__system";
/// The stream of tick tuples.
pub const TICK_STREAM: &str = "__tick";
/// The name of the stream a component emits on when no stream is named.
pub const DEFAULT_STREAM: &str = "default";

/// Where a tuple comes from: the emitting component, its stream, and the stream's fields.
///
/// Interned for the life of the process (see [`StreamMeta::intern`]), so a tuple carries one
/// pointer instead of reference-counted names: no atomic traffic per tuple.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct StreamMeta {
    /// The emitting component's id.
    pub component: &'static str,
    /// The stream's id.
    pub stream: &'static str,
    /// The stream's declared fields, in order.
    pub fields: &'static [&'static str],
}

type InternKey = (String, String, Vec<String>);

impl StreamMeta {
    /// Returns the one process-wide `StreamMeta` for this component, stream and fields. Memory
    /// grows with the number of distinct streams ever declared, not with topologies submitted.
    pub fn intern(component: &str, stream: &str, fields: &[&str]) -> &'static StreamMeta {
        static TABLE: OnceLock<Mutex<HashMap<InternKey, &'static StreamMeta>>> = OnceLock::new();
        let key = (component.to_owned(), stream.to_owned(), fields.iter().map(|f| (*f).to_owned()).collect::<Vec<_>>());
        // A poisoned lock only means another thread panicked while inserting; the map is intact.
        let mut table = TABLE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(meta) = table.get(&key) {
            return meta;
        }
        let leak = |s: &str| -> &'static str { Box::leak(s.to_owned().into_boxed_str()) };
        let fields: Vec<&'static str> = fields.iter().map(|f| leak(f)).collect();
        let meta: &'static StreamMeta = Box::leak(Box::new(StreamMeta {
            component: leak(component),
            stream: leak(stream),
            fields: Box::leak(fields.into_boxed_slice()),
        }));
        table.insert(key, meta);
        meta
    }

    /// The stream of tick tuples.
    pub fn tick() -> &'static StreamMeta {
        static TICK: OnceLock<&'static StreamMeta> = OnceLock::new();
        TICK.get_or_init(|| StreamMeta::intern(SYSTEM_COMPONENT, TICK_STREAM, &["rate_secs"]))
    }

    /// The position of a field, if the stream has it.
    pub fn field_index(&self, field: &str) -> Option<usize> {
        self.fields.iter().position(|f| *f == field)
    }
}

/// The acking ids a tuple carries: for each spout tuple tree it belongs to, the root id and this
/// tuple's edge id. Empty when the tuple is not tracked. One tree (the common case) is stored
/// inline; several (multi-anchoring) share one allocation.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MessageId {
    /// Not tracked.
    #[default]
    Untracked,
    /// In one tree: (root id, edge id).
    One([(u64, u64); 1]),
    /// In several trees.
    Many(std::sync::Arc<[(u64, u64)]>),
}

impl MessageId {
    /// A message id for a tuple that belongs to the given (root id, edge id) pairs.
    pub fn from_anchors(anchors: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut anchors = anchors.into_iter();
        let Some(first) = anchors.next() else { return MessageId::Untracked };
        match anchors.next() {
            None => MessageId::One([first]),
            Some(second) => MessageId::Many([first, second].into_iter().chain(anchors).collect()),
        }
    }

    /// The (root id, edge id) pairs.
    pub fn anchors(&self) -> &[(u64, u64)] {
        match self {
            MessageId::Untracked => &[],
            MessageId::One(one) => one,
            MessageId::Many(many) => many,
        }
    }

    /// Whether the tuple belongs to no tracked tree.
    pub fn is_empty(&self) -> bool {
        matches!(self, MessageId::Untracked)
    }
}

/// A tuple as a bolt receives it: its values, where it came from, and its acking ids.
#[derive(Clone)]
pub struct Tuple {
    values: Values,
    meta: &'static StreamMeta,
    source_task: TaskId,
    id: MessageId,
}

impl Tuple {
    /// Makes a tuple. The runtime does this; user code receives tuples.
    pub fn new(meta: &'static StreamMeta, source_task: TaskId, values: Values, id: MessageId) -> Self {
        Tuple { values, meta, source_task, id }
    }

    /// A tick tuple, as the runtime delivers every `topology.tick.tuple.freq.secs`.
    pub fn tick(rate_secs: u64) -> Self {
        let mut values = Values::new();
        values.push(Value::U64(rate_secs));
        Tuple::new(StreamMeta::tick(), 0, values, MessageId::default())
    }

    /// Whether this is a tick tuple.
    pub fn is_tick(&self) -> bool {
        std::ptr::eq(self.meta, StreamMeta::tick())
    }

    /// All values, in field order.
    #[inline]
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// Takes the values out of the tuple.
    pub fn into_values(self) -> Values {
        self.values
    }

    /// The number of values.
    #[inline]
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the tuple has no values.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The value at a position.
    #[inline]
    pub fn get(&self, index: usize) -> Option<&Value> {
        self.values.get(index)
    }

    /// The value of a field by name.
    pub fn get_by_field(&self, field: &str) -> Option<&Value> {
        self.meta.field_index(field).and_then(|i| self.values.get(i))
    }

    /// The value at a position, converted to `T`.
    pub fn get_as<T: FromValue>(&self, index: usize) -> Result<T, TupleError> {
        let value = self.values.get(index).ok_or(TupleError::NoSuchIndex { index, len: self.values.len() })?;
        T::from_value(value).map_err(|source| TupleError::Field {
            field: self.meta.fields.get(index).copied().unwrap_or("?").to_owned(),
            source,
        })
    }

    /// The value of a field by name, converted to `T`.
    pub fn get_field_as<T: FromValue>(&self, field: &str) -> Result<T, TupleError> {
        let index = self.meta.field_index(field).ok_or_else(|| self.unknown_field(field))?;
        self.get_as(index)
    }

    /// The string at a position, borrowed.
    #[inline]
    pub fn str(&self, index: usize) -> Result<&str, TupleError> {
        self.get_str(index).map(Str::as_str)
    }

    /// The string at a position, borrowed as a [`Str`]: a `HashMap<Str, _>` looked up with it
    /// compares short keys word by word instead of byte by byte.
    #[inline]
    pub fn get_str(&self, index: usize) -> Result<&Str, TupleError> {
        match self.values.get(index) {
            Some(Value::Str(text)) => Ok(text),
            _ => Err(self.not_a_str(index)),
        }
    }

    #[cold]
    #[inline(never)]
    fn not_a_str(&self, index: usize) -> TupleError {
        let Some(value) = self.values.get(index) else {
            return TupleError::NoSuchIndex { index, len: self.values.len() };
        };
        TupleError::Field {
            field: self.meta.fields.get(index).copied().unwrap_or("?").to_owned(),
            source: ValueTypeError { expected: "string", found: value.type_name() },
        }
    }

    /// Converts the tuple into a typed tuple. The tuple's stream must have exactly `T`'s
    /// fields, in order: reading a tuple as the type of another stream is an error, not a
    /// silent misreading of values that happen to line up.
    pub fn to<T: TypedTuple>(&self) -> Result<T, TupleError> {
        let fields = self.meta.fields;
        if !std::ptr::eq(fields, T::FIELDS) && fields != T::FIELDS {
            return Err(TupleError::Schema {
                type_name: std::any::type_name::<T>(),
                component: self.meta.component,
                stream: self.meta.stream,
                expected: T::FIELDS.join(", "),
                found: fields.join(", "),
            });
        }
        T::from_values(&self.values)
    }

    /// The fields of the stream this tuple was emitted on.
    pub fn fields(&self) -> &'static [&'static str] {
        self.meta.fields
    }

    /// The id of the component that emitted this tuple (`__system` for ticks).
    pub fn source_component(&self) -> &'static str {
        self.meta.component
    }

    /// The stream this tuple was emitted on.
    pub fn source_stream(&self) -> &'static str {
        self.meta.stream
    }

    /// The task that emitted this tuple (0 for system tuples).
    pub fn source_task(&self) -> TaskId {
        self.source_task
    }

    /// The stream metadata of this tuple.
    pub fn meta(&self) -> &'static StreamMeta {
        self.meta
    }

    /// The acking ids of this tuple.
    pub fn message_id(&self) -> &MessageId {
        &self.id
    }

    fn unknown_field(&self, field: &str) -> TupleError {
        TupleError::UnknownField {
            field: field.to_owned(),
            component: self.meta.component,
            stream: self.meta.stream,
            fields: self.meta.fields.join(", "),
        }
    }
}

impl fmt::Debug for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tuple")
            .field("source", &format_args!("{}:{}", self.meta.component, self.meta.stream))
            .field("task", &self.source_task)
            .field("values", &self.values)
            .finish()
    }
}

/// Reading a tuple as something it is not.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TupleError {
    /// The tuple has a different number of values than the typed tuple has fields.
    #[error("tuple has {found} values but `{type_name}` has {expected} fields ({fields})")]
    Arity {
        /// The typed tuple.
        type_name: &'static str,
        /// How many fields it has.
        expected: usize,
        /// How many values the tuple has.
        found: usize,
        /// The typed tuple's field names.
        fields: String,
    },
    /// The tuple's stream does not have the typed tuple's fields.
    #[error(
        "stream `{stream}` of `{component}` has fields ({found}) but `{type_name}` has fields ({expected}): read it as the type declared for that stream"
    )]
    Schema {
        /// The typed tuple.
        type_name: &'static str,
        /// The emitting component.
        component: &'static str,
        /// The stream.
        stream: &'static str,
        /// The typed tuple's fields.
        expected: String,
        /// The stream's fields.
        found: String,
    },
    /// A value has the wrong type.
    #[error("field `{field}`: {source}")]
    Field {
        /// The field.
        field: String,
        /// What was expected and found.
        source: ValueTypeError,
    },
    /// A field of a serde type does not have that type's shape; the error says where inside.
    #[error("{0}")]
    Value(crate::value::ValueError),
    /// The stream has no such field.
    #[error("stream `{stream}` of `{component}` has no field `{field}`; its fields are: {fields}")]
    UnknownField {
        /// The field asked for.
        field: String,
        /// The emitting component.
        component: &'static str,
        /// The stream.
        stream: &'static str,
        /// The fields the stream has.
        fields: String,
    },
    /// No value at this index.
    #[error("no value at index {index}: the tuple has {len} values")]
    NoSuchIndex {
        /// The index asked for.
        index: usize,
        /// How many values there are.
        len: usize,
    },
}

/// A Rust struct that is a tuple schema: named fields that convert to and from [`Value`]s.
/// Implemented by `#[derive(Tuple)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a typed tuple",
    note = "derive it with #[derive(Tuple)]; a component without a default stream has `Default = NoOutput`, so `emit` is unavailable: emit on a named stream with `emit_on`"
)]
pub trait TypedTuple: Sized + Send + 'static {
    /// The field names, in order.
    const FIELDS: &'static [&'static str];
    /// One [`FieldKey`] per field, for typed fields grouping: `|w| w.word`.
    type Keys: Copy;
    /// The field keys.
    fn keys() -> Self::Keys;
    /// Converts into values, in field order.
    fn into_values(self) -> Values;
    /// Converts from values, in field order.
    fn from_values(values: &[Value]) -> Result<Self, TupleError>;
}

/// A typed reference to one field of the typed tuple `T`, used by typed fields grouping.
pub struct FieldKey<T> {
    index: usize,
    name: &'static str,
    _tuple: PhantomData<fn() -> T>,
}

impl<T> FieldKey<T> {
    /// A key for the field at `index` named `name`. Generated by `#[derive(Tuple)]`.
    pub const fn new(index: usize, name: &'static str) -> Self {
        FieldKey { index, name, _tuple: PhantomData }
    }

    /// The field's position.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The field's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl<T> Clone for FieldKey<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for FieldKey<T> {}

impl<T> fmt::Debug for FieldKey<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FieldKey({})", self.name)
    }
}

/// Helpers the code generated by `#[derive(Tuple)]` calls.
#[doc(hidden)]
pub mod derive_support {
    use super::*;

    pub fn check_arity<T: TypedTuple>(values: &[Value]) -> Result<(), TupleError> {
        if values.len() == T::FIELDS.len() {
            return Ok(());
        }
        Err(TupleError::Arity {
            type_name: std::any::type_name::<T>(),
            expected: T::FIELDS.len(),
            found: values.len(),
            fields: T::FIELDS.join(", "),
        })
    }

    pub fn field<V: FromValue>(values: &[Value], index: usize, name: &str) -> Result<V, TupleError> {
        V::from_value(&values[index]).map_err(|source| TupleError::Field { field: name.to_owned(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values;

    #[test]
    fn interning_returns_one_pointer_per_stream() {
        let a = StreamMeta::intern("split", "default", &["word"]);
        let b = StreamMeta::intern("split", "default", &["word"]);
        let c = StreamMeta::intern("split", "errors", &["word"]);
        assert!(std::ptr::eq(a, b));
        assert!(!std::ptr::eq(a, c));
    }

    #[test]
    fn a_tuple_stays_96_bytes() {
        // Tuples are moved by value from buffer to bolt: their size is copied per hop (see
        // `Values`). Growing it needs a measurement.
        assert_eq!(std::mem::size_of::<Tuple>(), 96);
    }

    #[test]
    fn access_by_field_and_index() {
        let meta = StreamMeta::intern("count", "default", &["word", "count"]);
        let t = Tuple::new(meta, 3, values!["fox", 2u64], MessageId::default());
        assert_eq!(t.str(0), Ok("fox"));
        assert_eq!(t.get_str(0).map(Str::as_str), Ok("fox"));
        assert!(matches!(t.get_str(1), Err(TupleError::Field { .. })));
        assert!(matches!(t.get_str(2), Err(TupleError::NoSuchIndex { index: 2, len: 2 })));
        assert_eq!(t.get_field_as::<u64>("count"), Ok(2));
        assert_eq!(t.source_component(), "count");
        let err = t.get_field_as::<u64>("cnt").unwrap_err();
        assert_eq!(err.to_string(), "stream `default` of `count` has no field `cnt`; its fields are: word, count");
        assert!(matches!(t.get_as::<u64>(0), Err(TupleError::Field { .. })));
        assert!(Tuple::tick(1).is_tick());
        assert!(!t.is_tick());
    }
}
