//! [`IntoValue`] and [`FromValue`]: conversions between Rust types and [`Value`]s without serde.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use super::{Str, Value, ValueTypeError};

/// A Rust type that converts into a [`Value`].
pub trait IntoValue {
    /// Converts into a value.
    fn into_value(self) -> Value;

    /// Converts a vector of this type: a [`Value::List`], except that a `Vec<u8>` is
    /// [`Value::Bytes`]. Not meant to be overridden elsewhere.
    #[doc(hidden)]
    fn vec_into_value(items: Vec<Self>) -> Value
    where
        Self: Sized,
    {
        Value::List(items.into_iter().map(IntoValue::into_value).collect())
    }
}

/// A Rust type that a [`Value`] converts into.
pub trait FromValue: Sized {
    /// Converts from a value, or says which type was found instead.
    fn from_value(value: &Value) -> Result<Self, ValueTypeError>;

    /// Converts a [`Value::List`] into a vector of this type (a `Vec<u8>` also reads
    /// [`Value::Bytes`]). Not meant to be overridden elsewhere.
    #[doc(hidden)]
    fn vec_from_value(value: &Value) -> Result<Vec<Self>, ValueTypeError> {
        match value {
            Value::List(items) => items.iter().map(Self::from_value).collect(),
            _ => Err(ValueTypeError { expected: "list", found: value.type_name() }),
        }
    }
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

int_value!(i64 => I64, i32 => I64, i16 => I64, i8 => I64, u64 => U64, u32 => U64, u16 => U64);

impl IntoValue for u8 {
    fn into_value(self) -> Value {
        Value::U64(self.into())
    }

    fn vec_into_value(items: Vec<u8>) -> Value {
        Value::Bytes(items.into())
    }
}

impl FromValue for u8 {
    fn from_value(value: &Value) -> Result<Self, ValueTypeError> {
        let err = || ValueTypeError { expected: "u8", found: value.type_name() };
        match *value {
            Value::I64(v) => u8::try_from(v).map_err(|_| err()),
            Value::U64(v) => u8::try_from(v).map_err(|_| err()),
            _ => Err(err()),
        }
    }

    /// Bytes, or a list of small integers (what serde makes of a `Vec<u8>`).
    fn vec_from_value(value: &Value) -> Result<Vec<u8>, ValueTypeError> {
        match value {
            Value::Bytes(v) => Ok(v.to_vec()),
            Value::List(items) => items.iter().map(u8::from_value).collect(),
            _ => Err(ValueTypeError { expected: "bytes", found: value.type_name() }),
        }
    }
}

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

impl IntoValue for f32 {
    fn into_value(self) -> Value {
        Value::F64(self.into())
    }
}

impl FromValue for f32 {
    /// Rounds to the nearest `f32`, as `as` does.
    fn from_value(value: &Value) -> Result<Self, ValueTypeError> {
        match *value {
            Value::F64(v) => Ok(v as f32),
            Value::I64(v) => Ok(v as f32),
            Value::U64(v) => Ok(v as f32),
            _ => Err(ValueTypeError { expected: "f32", found: value.type_name() }),
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

impl IntoValue for Arc<[Value]> {
    fn into_value(self) -> Value {
        Value::List(self)
    }
}

impl FromValue for Arc<[Value]> {
    fn from_value(value: &Value) -> Result<Self, ValueTypeError> {
        match value {
            Value::List(v) => Ok(v.clone()),
            _ => Err(ValueTypeError { expected: "list", found: value.type_name() }),
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

/// A list; `Vec<u8>` is bytes.
impl<T: IntoValue> IntoValue for Vec<T> {
    fn into_value(self) -> Value {
        T::vec_into_value(self)
    }
}

/// From a list; `Vec<u8>` from bytes (or a list of small integers).
impl<T: FromValue> FromValue for Vec<T> {
    fn from_value(value: &Value) -> Result<Self, ValueTypeError> {
        T::vec_from_value(value)
    }
}

/// A map.
impl<K: IntoValue, V: IntoValue> IntoValue for BTreeMap<K, V> {
    fn into_value(self) -> Value {
        Value::map(self)
    }
}

/// From a map.
impl<K: FromValue + Ord, V: FromValue> FromValue for BTreeMap<K, V> {
    fn from_value(value: &Value) -> Result<Self, ValueTypeError> {
        match value {
            Value::Map(map) => map.iter().map(|(k, v)| Ok((K::from_value(k)?, V::from_value(v)?))).collect(),
            _ => Err(ValueTypeError { expected: "map", found: value.type_name() }),
        }
    }
}

/// A map, sorted by key: equal maps convert to equal values whatever their iteration order.
impl<K: IntoValue, V: IntoValue, S> IntoValue for HashMap<K, V, S> {
    fn into_value(self) -> Value {
        Value::map(self)
    }
}

/// From a map.
impl<K: FromValue + Eq + Hash, V: FromValue, S: BuildHasher + Default> FromValue for HashMap<K, V, S> {
    fn from_value(value: &Value) -> Result<Self, ValueTypeError> {
        match value {
            Value::Map(map) => map.iter().map(|(k, v)| Ok((K::from_value(k)?, V::from_value(v)?))).collect(),
            _ => Err(ValueTypeError { expected: "map", found: value.type_name() }),
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
impl NotValue for i16 {}
impl NotValue for i8 {}
impl NotValue for u64 {}
impl NotValue for u32 {}
impl NotValue for u16 {}
impl NotValue for u8 {}
impl NotValue for usize {}
impl NotValue for bool {}
impl NotValue for f64 {}
impl NotValue for f32 {}
impl NotValue for Str {}
impl NotValue for String {}
impl NotValue for &str {}
impl NotValue for Arc<[u8]> {}
impl NotValue for Arc<[Value]> {}
impl<T> NotValue for Option<T> {}
impl<T> NotValue for Vec<T> {}
impl<K, V> NotValue for BTreeMap<K, V> {}
impl<K, V, S> NotValue for HashMap<K, V, S> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collections_convert_both_ways() {
        let words = vec![Str::new("a"), Str::new("b")];
        let value = words.clone().into_value();
        assert_eq!(value, Value::list(["a", "b"]));
        assert_eq!(Vec::<Str>::from_value(&value), Ok(words));

        let nested = vec![vec![1u32, 2], vec![]];
        assert_eq!(Vec::<Vec<u32>>::from_value(&nested.clone().into_value()), Ok(nested));

        let tags: HashMap<String, u64> = [("red".to_owned(), 1), ("blue".to_owned(), 2)].into();
        let value = tags.clone().into_value();
        assert_eq!(value, Value::map([("blue", 2u64), ("red", 1)]));
        assert_eq!(HashMap::<String, u64>::from_value(&value), Ok(tags.clone()));
        let sorted: BTreeMap<String, u64> = tags.into_iter().collect();
        assert_eq!(BTreeMap::<String, u64>::from_value(&sorted.clone().into_value()), Ok(sorted));
        let empty = BTreeMap::<String, u64>::new().into_value();
        assert_eq!(empty, Value::map(Vec::<(String, u64)>::new()));
        assert_eq!(BTreeMap::<String, u64>::from_value(&empty), Ok(BTreeMap::new()));

        assert_eq!(Value::from(vec![Some(1i64), None]), Value::list([Value::I64(1), Value::Null]));
        assert_eq!(f32::from_value(&1.5f32.into_value()), Ok(1.5));
    }

    #[test]
    fn byte_vectors_stay_bytes() {
        let value = vec![1u8, 2, 255].into_value();
        assert_eq!(value, Value::Bytes(vec![1u8, 2, 255].into()));
        assert_eq!(Vec::<u8>::from_value(&value), Ok(vec![1, 2, 255]));
        // What serde makes of a `Vec<u8>` reads back too.
        assert_eq!(Vec::<u8>::from_value(&Value::list([1u64, 2])), Ok(vec![1, 2]));
        assert_eq!(Vec::<u8>::from_value(&Value::list([300u64])), Err(ValueTypeError { expected: "u8", found: "u64" }));
        assert_eq!(Vec::<u16>::from_value(&value), Err(ValueTypeError { expected: "list", found: "bytes" }));
    }

    #[test]
    fn wrong_shapes_name_the_types() {
        assert_eq!(Vec::<u64>::from_value(&Value::U64(1)), Err(ValueTypeError { expected: "list", found: "u64" }));
        assert_eq!(
            Vec::<u64>::from_value(&Value::list([Value::from("x")])),
            Err(ValueTypeError { expected: "u64", found: "string" })
        );
        assert_eq!(
            HashMap::<String, u64>::from_value(&Value::list([1u64])),
            Err(ValueTypeError { expected: "map", found: "list" })
        );
        assert_eq!(
            BTreeMap::<u64, u64>::from_value(&Value::map([("k", 1u64)])),
            Err(ValueTypeError { expected: "u64", found: "string" })
        );
    }
}
