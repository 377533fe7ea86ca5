//! Tests of the code `#[derive(Tuple)]`, `#[derive(Spout)]` and `#[derive(Bolt)]` generate.

use std::any::TypeId;

use squall::prelude::*;
use squall::{
    DirectStream, EmitError, MessageId, NoOutput, OutputDeclarer, Outputs, PendingTrees, Stream, StreamDecl, StreamIdx,
    StreamMeta, TaskId, Transfer, TupleError,
};
use tokio::time::Instant;

// --- Tuples -------------------------------------------------------------------------------

/// A line of text.
#[derive(Tuple, Debug, Clone, PartialEq)]
pub struct Sentence {
    /// The text.
    pub text: Str,
}

/// A word, renamed in the tuple.
#[derive(Tuple, Debug, Clone, PartialEq)]
pub struct Word {
    /// The word, named `word` in the tuple.
    #[squall(rename = "word")]
    pub text: Str,
    /// Its length.
    pub len: u32,
}

/// Something that went wrong.
#[derive(Tuple, Debug, Clone, PartialEq)]
pub struct ParseError {
    /// Why.
    pub reason: String,
}

/// Raw identifiers, options and several field types.
#[derive(Tuple, Debug, Clone, PartialEq)]
struct Mixed {
    r#type: String,
    count: u64,
    ratio: f64,
    flag: bool,
    maybe: Option<i32>,
    #[squall(rename = "payload")]
    bytes: Vec<u8>,
}

/// A tuple with no fields: a signal.
#[derive(Tuple, Debug, Clone, PartialEq)]
struct Tick {}

#[test]
fn fields_are_in_order_with_renames() {
    assert_eq!(Sentence::FIELDS, ["text"]);
    assert_eq!(Word::FIELDS, ["word", "len"]);
    assert_eq!(ParseError::FIELDS, ["reason"]);
    assert_eq!(Mixed::FIELDS, ["type", "count", "ratio", "flag", "maybe", "payload"]);
    assert!(Tick::FIELDS.is_empty());
}

#[test]
fn into_values_and_from_values_round_trip() {
    let word = Word { text: Str::new("fox"), len: 3 };
    let values = word.clone().into_values();
    assert_eq!(values, values!["fox", 3u32]);
    assert_eq!(Word::from_values(&values), Ok(word));

    let mixed = Mixed { r#type: "t".to_owned(), count: 7, ratio: 0.5, flag: true, maybe: None, bytes: vec![1, 2] };
    let values = mixed.clone().into_values();
    assert_eq!(values.len(), 6);
    assert_eq!(values[4], Value::Null);
    assert_eq!(Mixed::from_values(&values), Ok(mixed));

    assert!(Tick {}.into_values().is_empty());
    assert_eq!(Tick::from_values(&[]), Ok(Tick {}));
}

#[test]
fn from_values_reports_arity_with_counts_and_fields() {
    let err = Word::from_values(&values!["fox"]).unwrap_err();
    match &err {
        TupleError::Arity { expected, found, fields, type_name } => {
            assert_eq!((*expected, *found), (2, 1));
            assert_eq!(fields, "word, len");
            assert!(type_name.ends_with("Word"), "{type_name}");
        }
        other => panic!("expected an arity error, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.starts_with("tuple has 1 values but `"), "{message}");
    assert!(message.ends_with("Word` has 2 fields (word, len)"), "{message}");

    let err = Tick::from_values(&values![1u64]).unwrap_err();
    assert!(matches!(err, TupleError::Arity { expected: 0, found: 1, .. }), "{err:?}");
}

#[test]
fn from_values_names_the_field_of_a_type_error() {
    // The renamed field is reported by its tuple name.
    let err = Word::from_values(&values![1u64, 3u32]).unwrap_err();
    assert!(matches!(&err, TupleError::Field { field, .. } if field == "word"), "{err:?}");
    assert_eq!(err.to_string(), "field `word`: expected string, found u64");

    let err = Word::from_values(&values!["fox", "three"]).unwrap_err();
    assert_eq!(err.to_string(), "field `len`: expected u32, found string");

    let err = Word::from_values(&values!["fox", u64::MAX]).unwrap_err();
    assert!(matches!(&err, TupleError::Field { field, .. } if field == "len"), "{err:?}");
}

#[test]
fn tuples_convert_from_runtime_tuples() {
    let meta = StreamMeta::intern("split", "default", Word::FIELDS);
    let tuple = squall::Tuple::new(meta, 1, values!["fox", 3u32], MessageId::default());
    assert_eq!(tuple.to::<Word>(), Ok(Word { text: Str::new("fox"), len: 3 }));
    assert_eq!(tuple.get_field_as::<Str>("word").as_deref(), Ok("fox"));
}

#[test]
fn keys_carry_index_and_tuple_name() {
    let keys = Word::keys();
    assert_eq!(keys.text.name(), "word");
    assert_eq!(keys.text.index(), 0);
    assert_eq!(keys.len.name(), "len");
    assert_eq!(keys.len.index(), 1);
    // The keys struct is nameable (the associated type) and `Copy`.
    let copy: WordKeys = keys;
    assert_eq!(copy.len.name(), keys.len.name());

    let keys = Mixed::keys();
    assert_eq!(keys.r#type.name(), "type");
    assert_eq!(keys.bytes.name(), "payload");
    assert_eq!(keys.bytes.index(), 5);
}

// --- Fields of any serde type -----------------------------------------------------------------

/// A serde type that is not `IntoValue`.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
struct Address {
    street: String,
    zip: u32,
}

/// A serde enum.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
enum Priority {
    Low,
    High { reason: String },
}

/// Collections convert with `IntoValue`; `Address`, `Priority` and `Vec<Address>` through serde.
#[derive(Tuple, Debug, Clone, PartialEq)]
struct Order {
    id: u64,
    items: Vec<String>,
    address: Address,
    tags: std::collections::HashMap<String, u64>,
    priority: Priority,
    history: Vec<Address>,
    note: Option<Str>,
}

fn order() -> Order {
    let address = Address { street: "Main".into(), zip: 1234 };
    Order {
        id: 7,
        items: vec!["apple".into(), "pear".into()],
        address: address.clone(),
        tags: [("red".to_owned(), 1), ("blue".to_owned(), 2)].into(),
        priority: Priority::High { reason: "late".into() },
        history: vec![address],
        note: None,
    }
}

#[test]
fn fields_of_serde_types_round_trip() {
    let values = order().into_values();
    assert_eq!(values.len(), 7);
    assert_eq!(values[0], Value::U64(7));
    assert_eq!(values[1], Value::list(["apple", "pear"]));
    assert_eq!(values[2], Value::map([("street", Value::from("Main")), ("zip", Value::U64(1234))]));
    assert_eq!(values[3], Value::map([("blue", 2u64), ("red", 1)]));
    assert_eq!(values[4], Value::map([("High", Value::map([("reason", "late")]))]));
    assert_eq!(values[5], Value::list([values[2].clone()]));
    assert_eq!(values[6], Value::Null);
    assert_eq!(Order::from_values(&values), Ok(order()));
    assert_eq!(Order::FIELDS, ["id", "items", "address", "tags", "priority", "history", "note"]);
    let keys = Order::keys();
    assert_eq!((keys.address.name(), keys.address.index()), ("address", 2));
}

#[test]
fn a_serde_field_of_the_wrong_shape_names_the_field() {
    let mut values = order().into_values();
    values[2] = Value::map([("street", Value::from("Main")), ("zip", Value::from("x"))]);
    let err = Order::from_values(&values).unwrap_err();
    assert!(matches!(&err, TupleError::Value(e) if e.path() == "address.zip"), "{err:?}");
    assert_eq!(err.to_string(), r#"field `address.zip`: invalid type: string "x", expected u32"#);

    values[1] = Value::list([Value::U64(1)]);
    let err = Order::from_values(&values).unwrap_err();
    assert_eq!(err.to_string(), "field `items`: expected String, found u64");
}

// --- Components -----------------------------------------------------------------------------

/// Splits sentences into words: the example of the macros' documentation.
#[derive(Clone, Bolt)]
#[squall(output = Word, stream(errors = ParseError))]
#[squall(direct(commands = Word))]
pub struct Split;

impl squall::Bolt for Split {
    async fn execute(
        &mut self,
        input: squall::Tuple,
        out: &mut squall::BoltCollector<'_, Self>,
    ) -> Result<(), squall::ComponentError> {
        let s: Sentence = input.to()?;
        for w in s.text.split(' ') {
            out.emit(Word { text: Str::new(w), len: w.len() as u32 })?;
        }
        out.emit_on(Self::ERRORS, ParseError { reason: "x".into() })?;
        Ok(())
    }
}

/// A sink: no streams at all.
#[derive(Clone, Bolt)]
struct Sink;

impl squall::Bolt for Sink {
    async fn execute(&mut self, _: squall::Tuple, _: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        Ok(())
    }
}

/// Named streams only, spread over several attributes, stream and direct interleaved.
#[derive(Clone, Bolt)]
#[squall(direct(acks = Sentence), stream(words = Word))]
#[squall(stream(parseErrors = ParseError, r#type = Sentence))]
struct NamedOnly;

impl squall::Bolt for NamedOnly {
    async fn execute(&mut self, _: squall::Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        out.emit_direct(4, Self::ACKS, Sentence { text: Str::new("a") })?;
        out.emit_on(Self::WORDS, Word { text: Str::new("a"), len: 1 })?;
        Ok(())
    }
}

/// A direct default stream: `emit` does not work, `emit_direct(_, Self::DEFAULT, _)` does.
#[derive(Clone, Spout)]
#[squall(stream(errors = ParseError), direct(default = Sentence))]
struct DirectDefault;

impl squall::Spout for DirectDefault {
    type MsgId = ();
    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        out.emit_direct(2, Self::DEFAULT, Sentence { text: Str::new("to two") })?;
        Ok(())
    }
}

/// A spout whose default stream is declared with `stream(default = ...)`.
#[derive(Clone, Spout)]
#[squall(stream(default = Sentence))]
struct Lines {
    lines: Vec<&'static str>,
}

impl squall::Spout for Lines {
    type MsgId = u64;
    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        match self.lines.pop() {
            Some(line) => out.emit_with_id(Sentence { text: Str::new(line) }, self.lines.len() as u64)?,
            None => out.done(),
        }
        Ok(())
    }
}

/// A generic bolt: the generics and bounds pass through to the impls.
#[derive(Clone, Bolt)]
#[squall(output = T, stream(errors = ParseError))]
struct Relay<T: TypedTuple + Clone, const N: usize>
where
    T: Sync,
{
    last: Option<T>,
}

impl<T: TypedTuple + Clone + Sync, const N: usize> squall::Bolt for Relay<T, N> {
    async fn execute(&mut self, input: squall::Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let t: T = input.to()?;
        for _ in 0..N {
            out.emit(t.clone())?;
        }
        self.last = Some(t);
        Ok(())
    }
}

mod renamed {
    //! The facade crate under another name, through `#[squall(crate = ...)]`.
    pub use ::squall as engine;
}

#[derive(Tuple, Debug, PartialEq)]
#[squall(crate = "renamed::engine")]
struct Renamed {
    a: u64,
}

#[derive(Clone, Bolt)]
#[squall(crate = "::squall", output = Renamed)]
#[squall(stream(more = Renamed))]
struct ExplicitCrate;

impl squall::Bolt for ExplicitCrate {
    async fn execute(&mut self, _: squall::Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        out.emit(Renamed { a: 1 })?;
        out.emit_on(Self::MORE, Renamed { a: 2 }).map_err(Into::into)
    }
}

fn streams<C: Outputs>() -> Vec<Option<StreamDecl>> {
    let mut declarer = OutputDeclarer::new();
    C::declare_outputs(&mut declarer);
    declarer.into_streams().expect("valid declarations")
}

fn decl(name: &str, fields: &[&str], direct: bool) -> Option<StreamDecl> {
    Some(StreamDecl { name: name.to_owned(), fields: fields.iter().map(|f| (*f).to_owned()).collect(), direct })
}

fn default_is<C: Outputs<Default: 'static>, T: 'static>() -> bool {
    TypeId::of::<C::Default>() == TypeId::of::<T>()
}

#[test]
fn declared_streams_fill_the_slots_in_order() {
    assert_eq!(
        streams::<Split>(),
        vec![
            decl("default", &["word", "len"], false),
            decl("errors", &["reason"], false),
            decl("commands", &["word", "len"], true),
        ]
    );
    assert!(default_is::<Split, Word>());
}

#[test]
fn stream_constants_match_the_slots() {
    let errors: Stream<Split, ParseError> = Split::ERRORS;
    assert_eq!((errors.name(), errors.index()), ("errors", 1));
    let commands: DirectStream<Split, Word> = Split::COMMANDS;
    assert_eq!((commands.name(), commands.index()), ("commands", 2));

    // Every constant's index is the slot of its stream.
    let slots = streams::<NamedOnly>();
    let check = |name: &str, index: StreamIdx| {
        assert_eq!(slots[usize::from(index)].as_ref().map(|s| s.name.as_str()), Some(name));
    };
    check(NamedOnly::ACKS.name(), NamedOnly::ACKS.index());
    check(NamedOnly::WORDS.name(), NamedOnly::WORDS.index());
    check(NamedOnly::PARSE_ERRORS.name(), NamedOnly::PARSE_ERRORS.index());
    check(NamedOnly::TYPE.name(), NamedOnly::TYPE.index());
}

#[test]
fn a_component_without_default_stream_has_no_output() {
    assert_eq!(streams::<Sink>(), vec![None]);
    assert!(default_is::<Sink, NoOutput>());

    assert_eq!(
        streams::<NamedOnly>(),
        vec![
            None,
            decl("acks", &["text"], true),
            decl("words", &["word", "len"], false),
            decl("parseErrors", &["reason"], false),
            decl("type", &["text"], false),
        ]
    );
    assert!(default_is::<NamedOnly, NoOutput>());
    assert_eq!(NamedOnly::PARSE_ERRORS.index(), 3);
    assert_eq!(NamedOnly::TYPE.name(), "type");
}

#[test]
fn a_direct_default_stream_has_a_constant_and_no_plain_output() {
    assert_eq!(streams::<DirectDefault>(), vec![decl("default", &["text"], true), decl("errors", &["reason"], false)]);
    assert!(default_is::<DirectDefault, NoOutput>());
    let default: DirectStream<DirectDefault, Sentence> = DirectDefault::DEFAULT;
    assert_eq!((default.name(), default.index()), ("default", 0));
    assert_eq!(DirectDefault::ERRORS.index(), 1);
}

#[test]
fn stream_default_is_the_default_stream() {
    assert_eq!(streams::<Lines>(), vec![decl("default", &["text"], false)]);
    assert!(default_is::<Lines, Sentence>());
}

#[test]
fn generic_components_pass_their_generics_through() {
    assert_eq!(
        streams::<Relay<Word, 2>>(),
        vec![decl("default", &["word", "len"], false), decl("errors", &["reason"], false)]
    );
    assert!(default_is::<Relay<Sentence, 1>, Sentence>());
    assert_eq!(Relay::<Word, 2>::ERRORS.index(), 1);
}

#[test]
fn the_crate_path_can_be_overridden() {
    assert_eq!(Renamed::FIELDS, ["a"]);
    assert_eq!(Renamed::from_values(&Renamed { a: 4 }.into_values()), Ok(Renamed { a: 4 }));
    assert_eq!(streams::<ExplicitCrate>(), vec![decl("default", &["a"], false), decl("more", &["a"], false)]);
}

// --- Emitting through the generated handles ---------------------------------------------------

/// Records what a collector routes.
#[derive(Default)]
struct Recorder {
    routed: Vec<(StreamIdx, Values, Option<TaskId>)>,
}

impl Transfer for Recorder {
    fn stream_index(&self, _task: TaskId, stream: &str) -> Result<StreamIdx, EmitError> {
        Err(EmitError::UnknownStream { component: "test".to_owned(), stream: stream.to_owned() })
    }

    fn route(
        &mut self,
        _src: TaskId,
        stream: StreamIdx,
        values: Values,
        direct: Option<TaskId>,
        _roots: &[u64],
    ) -> Result<squall::Routed, EmitError> {
        self.routed.push((stream, values, direct));
        Ok(squall::Routed { tasks: 1, edges: 0 })
    }

    fn acking(&self) -> bool {
        false
    }

    fn to_acker(&mut self, _message: squall::AckerMessage) {}

    fn notify_spout(&mut self, _spout_task: TaskId, _notice: squall::SpoutNotice) {}
}

#[test]
fn typed_emits_land_on_the_declared_slots() {
    let mut rec = Recorder::default();
    let mut out = BoltCollector::<Split>::new(&mut rec, 1, None);
    out.emit(Word { text: Str::new("a"), len: 1 }).unwrap();
    out.emit_on(Split::ERRORS, ParseError { reason: "bad".to_owned() }).unwrap();
    out.emit_direct(7, Split::COMMANDS, Word { text: Str::new("stop"), len: 4 }).unwrap();
    assert_eq!(out.emitted(), 3);

    let slots = streams::<Split>();
    assert_eq!(
        rec.routed,
        vec![(0, values!["a", 1u32], None), (1, values!["bad"], None), (2, values!["stop", 4u32], Some(7)),]
    );
    // Each emit went to a slot whose direct flag and arity match.
    for (index, values, direct) in &rec.routed {
        let slot = slots[usize::from(*index)].as_ref().unwrap();
        assert_eq!(slot.direct, direct.is_some());
        assert_eq!(slot.fields.len(), values.len());
    }
}

#[tokio::test]
async fn a_derived_bolt_executes() {
    let meta = StreamMeta::intern("lines", "default", Sentence::FIELDS);
    let input = squall::Tuple::new(meta, 1, Sentence { text: Str::new("the fox") }.into_values(), MessageId::default());
    let mut rec = Recorder::default();
    let mut out = BoltCollector::<Split>::new(&mut rec, 1, Some(&input));
    Split.execute(input.clone(), &mut out).await.unwrap();
    assert_eq!(
        rec.routed,
        vec![(0, values!["the", 3u32], None), (0, values!["fox", 3u32], None), (1, values!["x"], None)]
    );

    let mut rec = Recorder::default();
    let mut out = BoltCollector::<NamedOnly>::new(&mut rec, 1, None);
    NamedOnly.execute(input.clone(), &mut out).await.unwrap();
    assert_eq!(rec.routed, vec![(1, values!["a"], Some(4)), (2, values!["a", 1u32], None)]);

    let mut rec = Recorder::default();
    let mut out = BoltCollector::<Relay<Sentence, 2>>::new(&mut rec, 1, None);
    let mut relay = Relay::<Sentence, 2> { last: None };
    relay.execute(input, &mut out).await.unwrap();
    assert_eq!(rec.routed, vec![(0, values!["the fox"], None), (0, values!["the fox"], None)]);
    assert_eq!(relay.last, Some(Sentence { text: Str::new("the fox") }));
}

#[tokio::test]
async fn a_derived_spout_emits() {
    let mut rec = Recorder::default();
    let (mut pending, mut acked) = (PendingTrees::default(), Vec::new());
    let mut out = SpoutCollector::<DirectDefault>::new(&mut rec, 1, &mut pending, &mut acked, Instant::now());
    DirectDefault.next_tuple(&mut out).await.unwrap();
    assert_eq!(rec.routed, vec![(0, values!["to two"], Some(2))]);

    let mut rec = Recorder::default();
    let (mut pending, mut acked) = (PendingTrees::default(), Vec::new());
    let mut lines = Lines { lines: vec!["b", "a"] };
    for _ in 0..3 {
        let mut out = SpoutCollector::<Lines>::new(&mut rec, 1, &mut pending, &mut acked, Instant::now());
        lines.next_tuple(&mut out).await.unwrap();
    }
    assert_eq!(rec.routed, vec![(0, values!["a"], None), (0, values!["b"], None)]);
    assert_eq!(acked, vec![1, 0]);
}

// --- The builder --------------------------------------------------------------------------------

#[test]
fn typed_fields_grouping_uses_the_tuple_names() {
    let mut builder = TopologyBuilder::new();
    let lines = builder.spout("lines", Lines { lines: vec![] }, 1).handle();
    let split = builder.bolt("split", Split, 2).shuffle_grouping(&lines).handle();
    builder.bolt("count", Sink, 2).fields_grouping_by(&split, |w| w.text);
    builder.bolt("both", Sink, 1).fields_grouping_by(&split, |w| [w.len, w.text]);
    builder.bolt("errors", Sink, 1).fields_grouping_by(split.stream(Split::ERRORS), |e| e.reason);
    builder.bolt("commands", Sink, 1).direct_grouping(split.direct_stream(Split::COMMANDS));
    let topology = builder.build().expect("a valid topology");

    let fields = |id: &str| topology.component(id).unwrap().inputs[0].grouping.fields().to_vec();
    assert_eq!(fields("count"), ["word"]);
    assert_eq!(fields("both"), ["len", "word"]);
    assert_eq!(fields("errors"), ["reason"]);
    assert_eq!(topology.component("errors").unwrap().inputs[0].stream, "errors");
    assert_eq!(topology.component("commands").unwrap().inputs[0].stream, "commands");
    assert_eq!(topology.component("split").unwrap().streams, streams::<Split>());
}
