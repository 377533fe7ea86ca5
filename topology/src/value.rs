//! Tuple values: the dynamically typed cells a tuple is made of.
//!
//! A [`Value`] is a scalar (null, bool, integer, float, string, bytes) or a nested list or map
//! of values. Rust types convert to and from values with [`IntoValue`] and [`FromValue`]; any
//! serde type converts with [`to_value`] and [`from_value`] (structs become maps keyed by field
//! name, sequences lists, enums are externally tagged as in `serde_json`).
//!
//! Values have a total order ([`Ord`]): by kind first (null < bool < integer < float < string <
//! bytes < list < map), then within the kind. Integers of both signednesses are one kind ordered
//! by numeric value (`I64(-1) < U64(0) < I64(1)`), an `I64` just before the `U64` of the same
//! value; floats are ordered by [`f64::total_cmp`], so `NaN == NaN` and `-0.0 < 0.0`. That makes
//! any value a map key. [`Value::stable_hash`] is the hash fields grouping uses: the same in
//! every process.

mod convert;
mod de;
#[doc(hidden)]
pub mod derive_support;
mod error;
mod ser;
mod serde_impl;
mod string;

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use smallvec::SmallVec;

pub use convert::{FromValue, IntoValue, NotValue};
pub use de::from_value;
pub use error::ValueError;
pub use ser::to_value;

pub use string::Str;

/// The values of one tuple. Up to two values live inline, so typical tuples do not allocate.
///
/// Two, not three: a `Tuple` is moved by value from buffer to bolt, and every inline slot is
/// copied with it whether used or not. A third slot made the word count's tuples 120 bytes
/// instead of 96 and the chained word count about 11% slower; a tuple of three or more values
/// takes one exact allocation instead (see `docs/architecture.md`).
pub type Values = SmallVec<[Value; 2]>;

/// The map inside [`Value::Map`]: entries sorted by key in [`Value`]'s order.
pub type ValueMap = BTreeMap<Value, Value>;

/// One cell of a tuple.
///
/// Equality, order and hashing are structural and agree with each other (see the [module
/// docs](self) for the order). `I64(5)` and `U64(5)` are different values that hash alike.
#[derive(Clone, Debug, Default)]
pub enum Value {
    /// No value.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    I64(i64),
    /// An unsigned integer.
    U64(u64),
    /// A floating point number.
    F64(f64),
    /// A string.
    Str(Str),
    /// Raw bytes, shared by reference count.
    Bytes(Arc<[u8]>),
    /// A list of values, shared by reference count.
    List(Arc<[Value]>),
    /// A map from values to values, sorted by key, shared by reference count.
    Map(Arc<ValueMap>),
}

impl Value {
    /// A list of the given items: `Value::list(["a", "b"])`.
    pub fn list<T: IntoValue>(items: impl IntoIterator<Item = T>) -> Value {
        Value::List(items.into_iter().map(IntoValue::into_value).collect())
    }

    /// A map of the given entries: `Value::map([("red", 1u64), ("blue", 2)])`. A key given twice
    /// keeps its last value.
    pub fn map<K: IntoValue, V: IntoValue>(entries: impl IntoIterator<Item = (K, V)>) -> Value {
        let entries = entries.into_iter();
        // Known empty (a map's own iterator says so): no collecting at all.
        let map: ValueMap = if entries.size_hint().1 == Some(0) {
            ValueMap::new()
        } else {
            entries.map(|(k, v)| (k.into_value(), v.into_value())).collect()
        };
        if map.is_empty() {
            // Shared: an empty map (a Kafka record without headers, say) allocates nothing.
            thread_local! {
                static EMPTY: Arc<ValueMap> = Arc::new(ValueMap::new());
            }
            return Value::Map(EMPTY.with(Arc::clone));
        }
        Value::Map(Arc::new(map))
    }

    /// The name of this value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::I64(_) => "i64",
            Value::U64(_) => "u64",
            Value::F64(_) => "f64",
            Value::Str(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Map(_) => "map",
        }
    }

    /// The string inside, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s.as_str()),
            _ => None,
        }
    }

    /// The integer inside, if this is an integer that fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I64(v) => Some(v),
            Value::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The integer inside, if this is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U64(v) => Some(v),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The items, if this is a list.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// The entries, if this is a map.
    pub fn as_map(&self) -> Option<&ValueMap> {
        match self {
            Value::Map(map) => Some(map),
            _ => None,
        }
    }

    /// Feeds a stable hash of this value: the same value hashes the same in every process of a
    /// topology, which fields grouping relies on once tasks run in several workers.
    ///
    /// Each value writes a kind tag and then its contents: integers of either signedness alike
    /// (a key survives a change of type), floats by their bits, strings and bytes followed by
    /// `0xff`, lists by their length and items, maps by their length and then key and value of
    /// each entry in key order (so the order entries were inserted in never matters). Changing
    /// this moves keys between tasks: a test pins it.
    #[inline]
    pub fn stable_hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Value::Null => state.write_u8(0),
            Value::Bool(b) => {
                state.write_u8(1);
                state.write_u8(*b as u8);
            }
            Value::I64(v) => {
                state.write_u8(2);
                state.write_u64(*v as u64);
            }
            Value::U64(v) => {
                state.write_u8(2);
                state.write_u64(*v);
            }
            Value::F64(v) => {
                state.write_u8(3);
                state.write_u64(v.to_bits());
            }
            Value::Str(s) => {
                state.write_u8(4);
                state.write(s.as_bytes());
                state.write_u8(0xff);
            }
            Value::Bytes(b) => {
                state.write_u8(5);
                state.write(b);
                state.write_u8(0xff);
            }
            Value::List(_) | Value::Map(_) => self.stable_hash_nested(state),
        }
    }

    /// [`Value::stable_hash`] of a list or map: apart, so that the scalar cases stay small and
    /// inline into the router's hashing (a recursive function would not).
    #[inline(never)]
    fn stable_hash_nested<H: Hasher>(&self, state: &mut H) {
        match self {
            Value::List(items) => {
                state.write_u8(6);
                state.write_u64(items.len() as u64);
                for item in items.iter() {
                    item.stable_hash(state);
                }
            }
            Value::Map(map) => {
                state.write_u8(7);
                state.write_u64(map.len() as u64);
                for (key, value) in map.iter() {
                    key.stable_hash(state);
                    value.stable_hash(state);
                }
            }
            scalar => scalar.stable_hash(state),
        }
    }

    /// The rank of this value's kind in the order of values (and its hash tag).
    fn kind_rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::I64(_) | Value::U64(_) => 2,
            Value::F64(_) => 3,
            Value::Str(_) => 4,
            Value::Bytes(_) => 5,
            Value::List(_) => 6,
            Value::Map(_) => 7,
        }
    }
}

/// Orders a signed and an unsigned integer by value; equal values put the signed one first.
fn cmp_signed_unsigned(signed: i64, unsigned: u64) -> Ordering {
    match u64::try_from(signed) {
        Ok(signed) => signed.cmp(&unsigned).then(Ordering::Less),
        Err(_) => Ordering::Less,
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::I64(a), Value::I64(b)) => a == b,
            (Value::U64(a), Value::U64(b)) => a == b,
            // As `total_cmp` sees them: equal exactly when the bits are.
            (Value::F64(a), Value::F64(b)) => a.to_bits() == b.to_bits(),
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::List(a), Value::List(b)) => Arc::ptr_eq(a, b) || a == b,
            (Value::Map(a), Value::Map(b)) => Arc::ptr_eq(a, b) || a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::I64(a), Value::I64(b)) => a.cmp(b),
            (Value::U64(a), Value::U64(b)) => a.cmp(b),
            (Value::I64(a), Value::U64(b)) => cmp_signed_unsigned(*a, *b),
            (Value::U64(a), Value::I64(b)) => cmp_signed_unsigned(*b, *a).reverse(),
            (Value::F64(a), Value::F64(b)) => a.total_cmp(b),
            (Value::Str(a), Value::Str(b)) => a.as_str().cmp(b.as_str()),
            (Value::Bytes(a), Value::Bytes(b)) => a.cmp(b),
            (Value::List(a), Value::List(b)) => a.cmp(b),
            (Value::Map(a), Value::Map(b)) => a.cmp(b),
            _ => self.kind_rank().cmp(&other.kind_rank()),
        }
    }
}

/// Hashes with [`Value::stable_hash`], so values can be keys of a `HashMap` too.
impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.stable_hash(state);
    }
}

/// Scalars print bare (a string as its text); lists print as `[a, b]` and maps as `{k: v}`,
/// strings inside them quoted: `["fox", 3, {"red": true}]`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::Str(v) => f.write_str(v),
            Value::Bytes(v) => write!(f, "<{} bytes>", v.len()),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}", Nested(item))?;
                }
                f.write_str("]")
            }
            Value::Map(map) => {
                f.write_str("{")?;
                for (i, (key, value)) in map.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}: {}", Nested(key), Nested(value))?;
                }
                f.write_str("}")
            }
        }
    }
}

/// A value inside a list or map: strings quoted.
struct Nested<'a>(&'a Value);

impl fmt::Display for Nested<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Value::Str(s) => write!(f, "{:?}", s.as_str()),
            other => write!(f, "{other}"),
        }
    }
}

/// Error converting a [`Value`] into a Rust type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected}, found {found}")]
pub struct ValueTypeError {
    /// The Rust type that was asked for.
    pub expected: &'static str,
    /// The type of the value that was there.
    pub found: &'static str,
}

/// Builds [`Values`] from a list of expressions that convert into [`Value`]:
/// `values!["word", 3u64]`.
#[macro_export]
macro_rules! values {
    ($($v:expr),* $(,)?) => {{
        let mut values = $crate::Values::new();
        $(values.push($crate::IntoValue::into_value($v));)*
        values
    }};
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use rustc_hash::FxHasher;

    use super::*;

    fn fx(value: &Value) -> u64 {
        let mut hasher = FxHasher::default();
        value.stable_hash(&mut hasher);
        hasher.finish()
    }

    #[test]
    fn conversions_round_trip_and_name_the_wrong_type() {
        assert_eq!(u32::from_value(&7u32.into_value()), Ok(7));
        assert_eq!(String::from_value(&"hi".into_value()).as_deref(), Ok("hi"));
        assert_eq!(u8::from_value(&Value::Str(Str::new("x"))), Err(ValueTypeError { expected: "u8", found: "string" }));
        assert_eq!(u8::from_value(&Value::U64(300)).unwrap_err().expected, "u8");
        assert_eq!(Option::<u64>::from_value(&Value::Null), Ok(None));
    }

    #[test]
    fn integers_hash_alike_across_signedness() {
        assert_eq!(fx(&Value::I64(5)), fx(&Value::U64(5)));
        // Inside lists and maps too, keys included: ints sort by value whatever their type.
        let signed = Value::map([(Value::I64(1), Value::list([-1i64, 2])), (Value::I64(2), Value::Null)]);
        let mixed =
            Value::map([(Value::U64(2), Value::Null), (Value::U64(1), Value::list([Value::I64(-1), 2u64.into()]))]);
        assert_ne!(signed, mixed);
        assert_eq!(fx(&signed), fx(&mixed));
    }

    /// The hash decides which task gets a key, in every worker: it must never change by
    /// accident. The scalar constants are those of the hash before lists and maps existed.
    #[test]
    fn stable_hashes_are_pinned() {
        let pins = [
            (Value::Null, 0x0000000000000000),
            (Value::Bool(true), 0x5d97316d781574d8),
            (Value::I64(-7), 0xcca882fb3e3f6467),
            (Value::U64(42), 0x182c0cf612ec5683),
            (Value::I64(42), 0x182c0cf612ec5683),
            (Value::F64(1.5), 0x1e98f4532cb93cc6),
            (Value::Str(Str::new("fox")), 0x78cf0612c7916945),
            (Value::Str(Str::new("")), 0x5faebe1e036f08a2),
            (Value::Bytes(vec![0u8, 1, 255].into()), 0x884dcb89a36a64f3),
            (Value::list(Vec::<Value>::new()), 0x3d31e8a659e3b98c),
            (Value::list(["a", "b"]), 0x28e9b0a701d703b5),
            (Value::list([Value::list([1u64]), Value::Null]), 0x8c0aba6f89af3d84),
            (Value::map([("red", 1u64), ("blue", 2)]), 0xb282f9b7f5a39e2f),
            (Value::map([(Value::list([1u64]), Value::map([("x", 1.5f64)]))]), 0xd93af7637aa49a22),
        ];
        for (value, pin) in pins {
            assert_eq!(fx(&value), pin, "the stable hash of {value:?} changed: {:#018x}", fx(&value));
        }
    }

    #[test]
    fn map_hash_and_equality_ignore_insertion_order() {
        let mut a = HashMap::new();
        let mut b = HashMap::new();
        for i in 0..100u64 {
            a.insert(format!("k{i}"), i);
        }
        for i in (0..100u64).rev() {
            b.insert(format!("k{i}"), i);
        }
        let (a, b) = (a.into_value(), b.into_value());
        assert_eq!(a, b);
        assert_eq!(fx(&a), fx(&b));
        assert_ne!(fx(&a), fx(&Value::map([("k0", 0u64)])));
    }

    #[test]
    fn values_order_by_kind_then_within_it() {
        let ascending = [
            Value::Null,
            Value::Bool(false),
            Value::Bool(true),
            Value::I64(i64::MIN),
            Value::I64(-1),
            Value::I64(0),
            Value::U64(0),
            Value::U64(1),
            Value::I64(2),
            Value::U64(u64::MAX),
            Value::F64(f64::NEG_INFINITY),
            Value::F64(-0.0),
            Value::F64(0.0),
            Value::F64(f64::NAN),
            Value::from(""),
            Value::from("a"),
            Value::from("b"),
            Value::Bytes(vec![].into()),
            Value::Bytes(vec![0].into()),
            Value::list(Vec::<u64>::new()),
            Value::list([1u64]),
            Value::list([1u64, 0]),
            Value::list([2u64]),
            Value::map(Vec::<(u64, u64)>::new()),
            Value::map([(1u64, 1u64)]),
            Value::map([(1u64, 2u64)]),
            Value::map([(2u64, 0u64)]),
        ];
        for (i, a) in ascending.iter().enumerate() {
            for (j, b) in ascending.iter().enumerate() {
                assert_eq!(a.cmp(b), i.cmp(&j), "{a:?} vs {b:?}");
                assert_eq!(a == b, i == j, "{a:?} == {b:?}");
            }
        }
        assert_eq!(Value::F64(f64::NAN), Value::F64(f64::NAN));
        // Any value is a map key.
        let map: BTreeMap<Value, u32> = ascending.iter().cloned().zip(0..).collect();
        assert_eq!(map.len(), ascending.len());
        assert_eq!(map[&Value::list([1u64, 0])], 21);
    }

    #[test]
    fn display_and_accessors() {
        let v = Value::list([Value::from("fox"), Value::U64(3), Value::map([("red", true)]), Value::Null]);
        assert_eq!(v.to_string(), r#"["fox", 3, {"red": true}, null]"#);
        assert_eq!(Value::from("fox").to_string(), "fox");
        assert_eq!(v.type_name(), "list");
        assert_eq!(v.as_list().map(<[Value]>::len), Some(4));
        assert_eq!(v.as_list().unwrap()[2].as_map().unwrap()[&Value::from("red")], Value::Bool(true));
        assert_eq!(Value::map([(1u64, 2u64)]).type_name(), "map");
        assert!(Value::Null.as_list().is_none() && Value::Null.as_map().is_none());
    }

    #[test]
    fn small_values_stay_inline() {
        assert!(std::mem::size_of::<Value>() <= 32);
        // Lists and maps fit beside the other kinds: the value is no larger than before them.
        assert_eq!(std::mem::size_of::<Value>(), 24);
        let v = values!["a", 1u64];
        assert!(!v.spilled());
        assert!(values!["a", 1u64, true].spilled());
        let nested = values![vec!["a", "b"], BTreeMap::from([("k", 1u64)])];
        assert_eq!(nested[0], Value::list(["a", "b"]));
    }
}
