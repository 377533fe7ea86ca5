//! Tuple values: the dynamically typed cells a tuple is made of.

use std::fmt;
use std::hash::Hasher;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// An immutable string with O(1) clone: up to 23 bytes inline, `&'static str` without copying,
/// longer strings shared by reference count. Words and keys never allocate.
pub use smol_str::SmolStr as Str;

/// The values of one tuple. Up to three values live inline, so typical tuples do not allocate.
pub type Values = SmallVec<[Value; 3]>;

/// One cell of a tuple.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
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
}

impl Value {
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

    /// Feeds a stable hash of this value: the same value hashes the same in every process of a
    /// topology, which fields grouping relies on once tasks run in several workers.
    pub fn stable_hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Value::Null => state.write_u8(0),
            Value::Bool(b) => {
                state.write_u8(1);
                state.write_u8(*b as u8);
            }
            // Integers of either signedness hash alike, so a key survives a change of type.
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
        }
    }
}

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

/// A Rust type that converts into a [`Value`].
pub trait IntoValue {
    /// Converts into a value.
    fn into_value(self) -> Value;
}

/// A Rust type that a [`Value`] converts into.
pub trait FromValue: Sized {
    /// Converts from a value, or says which type was found instead.
    fn from_value(value: &Value) -> Result<Self, ValueTypeError>;
}

impl IntoValue for Value {
    fn into_value(self) -> Value {
        self
    }
}

impl FromValue for Value {
    fn from_value(value: &Value) -> Result<Self, ValueTypeError> {
        Ok(value.clone())
    }
}

macro_rules! int_value {
    ($($t:ty => $variant:ident),* $(,)?) => {$(
        impl IntoValue for $t {
            fn into_value(self) -> Value {
                Value::$variant(self.into())
            }
        }
        impl FromValue for $t {
            fn from_value(value: &Value) -> Result<Self, ValueTypeError> {
                let err = || ValueTypeError { expected: stringify!($t), found: value.type_name() };
                match *value {
                    Value::I64(v) => <$t>::try_from(v).map_err(|_| err()),
                    Value::U64(v) => <$t>::try_from(v).map_err(|_| err()),
                    _ => Err(err()),
                }
            }
        }
    )*};
}

int_value!(i64 => I64, i32 => I64, i16 => I64, i8 => I64, u64 => U64, u32 => U64, u16 => U64, u8 => U64);

impl IntoValue for usize {
    fn into_value(self) -> Value {
        Value::U64(self as u64)
    }
}

impl FromValue for usize {
    fn from_value(value: &Value) -> Result<Self, ValueTypeError> {
        let v = u64::from_value(value).map_err(|e| ValueTypeError { expected: "usize", ..e })?;
        usize::try_from(v).map_err(|_| ValueTypeError { expected: "usize", found: "u64" })
    }
}

impl IntoValue for bool {
    fn into_value(self) -> Value {
        Value::Bool(self)
    }
}

impl FromValue for bool {
    fn from_value(value: &Value) -> Result<Self, ValueTypeError> {
        match *value {
            Value::Bool(v) => Ok(v),
            _ => Err(ValueTypeError { expected: "bool", found: value.type_name() }),
        }
    }
}

impl IntoValue for f64 {
    fn into_value(self) -> Value {
        Value::F64(self)
    }
}

impl FromValue for f64 {
    fn from_value(value: &Value) -> Result<Self, ValueTypeError> {
        match *value {
            Value::F64(v) => Ok(v),
            Value::I64(v) => Ok(v as f64),
            Value::U64(v) => Ok(v as f64),
            _ => Err(ValueTypeError { expected: "f64", found: value.type_name() }),
        }
    }
}

impl IntoValue for Str {
    fn into_value(self) -> Value {
        Value::Str(self)
    }
}

impl FromValue for Str {
    fn from_value(value: &Value) -> Result<Self, ValueTypeError> {
        match value {
            Value::Str(v) => Ok(v.clone()),
            _ => Err(ValueTypeError { expected: "string", found: value.type_name() }),
        }
    }
}

impl IntoValue for String {
    fn into_value(self) -> Value {
        Value::Str(Str::from(self))
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Result<Self, ValueTypeError> {
        match value {
            Value::Str(v) => Ok(v.to_string()),
            _ => Err(ValueTypeError { expected: "String", found: value.type_name() }),
        }
    }
}

impl IntoValue for &str {
    fn into_value(self) -> Value {
        Value::Str(Str::new(self))
    }
}

impl IntoValue for Vec<u8> {
    fn into_value(self) -> Value {
        Value::Bytes(self.into())
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: &Value) -> Result<Self, ValueTypeError> {
        match value {
            Value::Bytes(v) => Ok(v.to_vec()),
            _ => Err(ValueTypeError { expected: "bytes", found: value.type_name() }),
        }
    }
}

impl IntoValue for Arc<[u8]> {
    fn into_value(self) -> Value {
        Value::Bytes(self)
    }
}

impl FromValue for Arc<[u8]> {
    fn from_value(value: &Value) -> Result<Self, ValueTypeError> {
        match value {
            Value::Bytes(v) => Ok(v.clone()),
            _ => Err(ValueTypeError { expected: "bytes", found: value.type_name() }),
        }
    }
}

impl<T: IntoValue> IntoValue for Option<T> {
    fn into_value(self) -> Value {
        match self {
            Some(v) => v.into_value(),
            None => Value::Null,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Result<Self, ValueTypeError> {
        match value {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

impl<T: IntoValue> From<T> for Value
where
    T: NotValue,
{
    fn from(v: T) -> Self {
        v.into_value()
    }
}

/// Marks the types that convert into a [`Value`] with `From`, every [`IntoValue`] but `Value`.
#[doc(hidden)]
pub trait NotValue {}
impl NotValue for i64 {}
impl NotValue for i32 {}
impl NotValue for u64 {}
impl NotValue for u32 {}
impl NotValue for usize {}
impl NotValue for bool {}
impl NotValue for f64 {}
impl NotValue for Str {}
impl NotValue for String {}
impl NotValue for &str {}
impl NotValue for Vec<u8> {}

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
    use super::*;

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
        let mut a = rustc_hash::FxHasher::default();
        let mut b = rustc_hash::FxHasher::default();
        Value::I64(5).stable_hash(&mut a);
        Value::U64(5).stable_hash(&mut b);
        assert_eq!(a.finish(), b.finish());
    }

    #[test]
    fn small_values_stay_inline() {
        assert!(std::mem::size_of::<Value>() <= 32);
        let v = values!["a", 1u64, true];
        assert!(!v.spilled());
    }
}
