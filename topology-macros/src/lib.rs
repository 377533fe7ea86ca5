//! Squall's derive macros. Use them through the `squall` crate: `use squall::prelude::*;`.
//!
//! - [`Tuple`](macro@Tuple) makes a struct with named fields a typed tuple schema.
//! - [`Spout`](macro@Spout) and [`Bolt`](macro@Bolt) declare a component's output streams from
//!   `#[squall(...)]` attributes.
//!
//! Generated code names the facade crate as `::squall`; a crate that re-exports it elsewhere
//! says where with `#[squall(crate = "path::to::squall")]` on the struct.

mod attr;
mod outputs;
mod tuple;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Implements `TypedTuple` for a struct with named fields, so a bolt reads `word.text`
/// instead of `tuple.get(0)`.
///
/// The tuple's fields are the struct's fields, in order. A field's type converts to and from a
/// `Value` with `IntoValue` + `FromValue` when it implements them (scalars, strings, `Vec`,
/// `HashMap`, `BTreeMap`, `Option` of those: no serde involved), and through serde otherwise
/// (`value::to_value` / `value::from_value`): any `Serialize + Deserialize` type can be a field,
/// with no annotation. The choice is made at compile time, per field. The derive also generates
/// a hidden `<Name>Keys` struct, with one `FieldKey` per field, for typed fields grouping:
/// `.fields_grouping_by(&split, |w| w.text)`.
///
/// ```text
/// use squall::prelude::*;
///
/// #[derive(Tuple, Debug, Clone)]
/// pub struct Word {
///     #[squall(rename = "word")]
///     pub text: Str,
///     pub len: u32,
///     pub origin: Origin, // #[derive(serde::Serialize, serde::Deserialize)]
/// }
/// ```
///
/// Emitting panics if a serde field's `Serialize` fails (its own error, or a 128-bit integer
/// beyond 64 bits). Reading a serde field of the wrong shape gives `TupleError::Field` naming
/// the field and its type; `value::from_value` on that field's value says which part is wrong.
///
/// Attributes:
/// - on a field, `#[squall(rename = "name")]`: the field's name in the tuple (default: the
///   Rust field name);
/// - on the struct, `#[squall(crate = "path::to::squall")]`: where the `squall` crate is.
#[proc_macro_derive(Tuple, attributes(squall))]
pub fn derive_tuple(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    tuple::expand(&input).into()
}

/// Implements `Outputs` for a spout: its output streams, from `#[squall(...)]` attributes on
/// the struct. The struct must also implement `Spout`; the derive checks that it does.
///
/// ```text
/// use squall::prelude::*;
///
/// #[derive(Clone, Spout)]
/// #[squall(output = Sentence, stream(errors = ParseError))]
/// pub struct Lines { /* ... */ }
/// ```
///
/// Attributes (several `#[squall(...)]` attributes may be combined):
/// - `output = T`: the default stream carries the typed tuple `T`; `emit(T)` emits on it.
/// - `stream(name = T, ...)`: named streams; each gets a constant, `Self::NAME`, a
///   `Stream<Self, T>` to pass to `emit_on`.
/// - `direct(name = T, ...)`: named direct streams; `Self::NAME` is a `DirectStream<Self, T>`
///   for `emit_direct`. `direct(default = T)` makes the default stream direct (`Self::DEFAULT`).
/// - `crate = "path::to::squall"`: where the `squall` crate is.
///
/// Without a default stream, `emit` cannot be called (`Outputs::Default` is `NoOutput`).
/// The default stream has index 0; named streams 1, 2, … in the order they are written.
#[proc_macro_derive(Spout, attributes(squall))]
pub fn derive_spout(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    outputs::expand(&input, outputs::Kind::Spout).into()
}

/// Implements `Outputs` for a bolt: its output streams, from `#[squall(...)]` attributes on
/// the struct. The struct must also implement `Bolt`; the derive checks that it does.
///
/// ```text
/// use squall::prelude::*;
///
/// #[derive(Clone, Bolt)]
/// #[squall(output = Word, stream(errors = ParseError))]
/// #[squall(direct(commands = Command))]
/// pub struct Split;
/// ```
///
/// The attributes are those of [`Spout`](macro@Spout): `output = T`, `stream(name = T, ...)`,
/// `direct(name = T, ...)` and `crate = "..."`. A bolt with no attribute declares no stream
/// (a sink).
#[proc_macro_derive(Bolt, attributes(squall))]
pub fn derive_bolt(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    outputs::expand(&input, outputs::Kind::Bolt).into()
}
