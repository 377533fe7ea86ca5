//! `Serialize` and `Deserialize` for [`Value`]: each kind as serde's own (untagged), like
//! `serde_json::Value`, so a `Value` inside a serde type goes through
//! [`to_value`](super::to_value) and [`from_value`](super::from_value) unchanged.
//!
//! In a self-describing format every value round-trips, except what the format cannot tell
//! apart: in JSON a non-negative `I64` reads back as a `U64`, bytes as a list of integers, and
//! only maps with string keys can be written.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Str, Value, ValueMap};

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(v) => s.serialize_bool(*v),
            Value::I64(v) => s.serialize_i64(*v),
            Value::U64(v) => s.serialize_u64(*v),
            Value::F64(v) => s.serialize_f64(*v),
            Value::Str(v) => s.serialize_str(v),
            Value::Bytes(v) => s.serialize_bytes(v),
            Value::List(items) => s.collect_seq(items.iter()),
            Value::Map(map) => s.collect_map(map.iter()),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::I64(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        match (i64::try_from(v), u64::try_from(v)) {
            (Ok(v), _) => Ok(Value::I64(v)),
            (_, Ok(v)) => Ok(Value::U64(v)),
            _ => Err(E::custom(format_args!("integer {v} does not fit in 64 bits"))),
        }
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::U64(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        u64::try_from(v).map(Value::U64).map_err(|_| E::custom(format_args!("integer {v} does not fit in 64 bits")))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::F64(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(Str::new(v)))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(Str::from(v)))
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.into()))
    }

    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(v.into()))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // A length read from the input is a hint, not a promise: never preallocate much on it.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::List(items.into()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = ValueMap::new();
        while let Some((key, value)) = access.next_entry()? {
            map.insert(key, value);
        }
        Ok(Value::Map(Arc::new(map)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_what_json_can_say() {
        let value = Value::list([
            Value::Null,
            Value::Bool(false),
            Value::I64(-3),
            Value::U64(u64::MAX),
            Value::F64(0.25),
            Value::from("a"),
            Value::map([("k", Value::list([1u64, 2]))]),
        ]);
        let json = serde_json::to_string(&value).unwrap();
        assert_eq!(json, r#"[null,false,-3,18446744073709551615,0.25,"a",{"k":[1,2]}]"#);
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), value);
        // What JSON cannot tell apart.
        assert_eq!(serde_json::from_str::<Value>("5").unwrap(), Value::U64(5));
        assert!(serde_json::to_string(&Value::map([(Value::list([1u64]), Value::Null)])).is_err());
    }
}
