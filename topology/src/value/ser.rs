//! [`to_value`]: a serde `Serializer` whose output is a [`Value`].

use std::sync::Arc;

use serde::ser::{self, Serialize};

use super::{Str, Value, ValueError, ValueMap};

/// Converts any serde type into a [`Value`].
///
/// Structs become maps keyed by field name, sequences and tuples lists, `Option`s null or the
/// value, unit variants strings, other enum variants one-entry maps `{variant: content}`
/// (externally tagged, as in `serde_json`); bytes stay bytes, and signed and unsigned integers
/// stay `I64` and `U64`. Fails on 128-bit integers that do not fit 64 bits and on errors of the
/// type's own `Serialize` impl, naming the field.
///
/// ```
/// # use squall_topology::value::{to_value, Value};
/// #[derive(serde::Serialize)]
/// struct Point { x: i64, y: i64 }
///
/// let value = to_value(&Point { x: 1, y: -2 }).unwrap();
/// assert_eq!(value, Value::map([("x", 1i64), ("y", -2)]));
/// ```
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, ValueError> {
    value.serialize(ValueSerializer)
}

/// The serializer behind [`to_value`].
struct ValueSerializer;

/// A string key of a struct field or enum variant: `&'static str`s are not copied.
fn name(name: &'static str) -> Value {
    Value::Str(Str::new_static(name))
}

/// `{variant: content}`.
fn tagged(variant: &'static str, content: Value) -> Value {
    Value::Map(Arc::new(ValueMap::from([(name(variant), content)])))
}

impl ser::Serializer for ValueSerializer {
    type Ok = Value;
    type Error = ValueError;
    type SerializeSeq = SerializeList;
    type SerializeTuple = SerializeList;
    type SerializeTupleStruct = SerializeList;
    type SerializeTupleVariant = SerializeList;
    type SerializeMap = SerializeMap;
    type SerializeStruct = SerializeMap;
    type SerializeStructVariant = SerializeMap;

    fn serialize_bool(self, v: bool) -> Result<Value, ValueError> {
        Ok(Value::Bool(v))
    }

    fn serialize_i8(self, v: i8) -> Result<Value, ValueError> {
        Ok(Value::I64(v.into()))
    }

    fn serialize_i16(self, v: i16) -> Result<Value, ValueError> {
        Ok(Value::I64(v.into()))
    }

    fn serialize_i32(self, v: i32) -> Result<Value, ValueError> {
        Ok(Value::I64(v.into()))
    }

    fn serialize_i64(self, v: i64) -> Result<Value, ValueError> {
        Ok(Value::I64(v))
    }

    fn serialize_i128(self, v: i128) -> Result<Value, ValueError> {
        match (i64::try_from(v), u64::try_from(v)) {
            (Ok(v), _) => Ok(Value::I64(v)),
            (_, Ok(v)) => Ok(Value::U64(v)),
            _ => Err(ValueError::new(format_args!("integer {v} does not fit in 64 bits"))),
        }
    }

    fn serialize_u8(self, v: u8) -> Result<Value, ValueError> {
        Ok(Value::U64(v.into()))
    }

    fn serialize_u16(self, v: u16) -> Result<Value, ValueError> {
        Ok(Value::U64(v.into()))
    }

    fn serialize_u32(self, v: u32) -> Result<Value, ValueError> {
        Ok(Value::U64(v.into()))
    }

    fn serialize_u64(self, v: u64) -> Result<Value, ValueError> {
        Ok(Value::U64(v))
    }

    fn serialize_u128(self, v: u128) -> Result<Value, ValueError> {
        u64::try_from(v)
            .map(Value::U64)
            .map_err(|_| ValueError::new(format_args!("integer {v} does not fit in 64 bits")))
    }

    fn serialize_f32(self, v: f32) -> Result<Value, ValueError> {
        Ok(Value::F64(v.into()))
    }

    fn serialize_f64(self, v: f64) -> Result<Value, ValueError> {
        Ok(Value::F64(v))
    }

    fn serialize_char(self, v: char) -> Result<Value, ValueError> {
        Ok(Value::Str(Str::new(v.encode_utf8(&mut [0; 4]))))
    }

    fn serialize_str(self, v: &str) -> Result<Value, ValueError> {
        Ok(Value::Str(Str::new(v)))
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<Value, ValueError> {
        Ok(Value::Bytes(v.into()))
    }

    fn serialize_none(self) -> Result<Value, ValueError> {
        Ok(Value::Null)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, ValueError> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<Value, ValueError> {
        Ok(Value::Null)
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, ValueError> {
        Ok(Value::Null)
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value, ValueError> {
        Ok(name(variant))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Value, ValueError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value, ValueError> {
        Ok(tagged(variant, value.serialize(self).map_err(|e| e.in_field(variant))?))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<SerializeList, ValueError> {
        Ok(SerializeList { items: Vec::with_capacity(len.unwrap_or(0)), variant: None })
    }

    fn serialize_tuple(self, len: usize) -> Result<SerializeList, ValueError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<SerializeList, ValueError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<SerializeList, ValueError> {
        Ok(SerializeList { items: Vec::with_capacity(len), variant: Some(variant) })
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<SerializeMap, ValueError> {
        Ok(SerializeMap { map: ValueMap::new(), key: None, variant: None })
    }

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<SerializeMap, ValueError> {
        self.serialize_map(None)
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<SerializeMap, ValueError> {
        Ok(SerializeMap { map: ValueMap::new(), key: None, variant: Some(variant) })
    }
}

/// A sequence, tuple, tuple struct or tuple variant being serialized into a list.
struct SerializeList {
    items: Vec<Value>,
    /// The enum variant, for a tuple variant.
    variant: Option<&'static str>,
}

impl SerializeList {
    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        let item = value.serialize(ValueSerializer).map_err(|e| {
            let e = e.in_item(self.items.len());
            match self.variant {
                Some(variant) => e.in_field(variant),
                None => e,
            }
        })?;
        self.items.push(item);
        Ok(())
    }

    fn finish(self) -> Value {
        let list = Value::List(self.items.into());
        match self.variant {
            Some(variant) => tagged(variant, list),
            None => list,
        }
    }
}

impl ser::SerializeSeq for SerializeList {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        self.push(value)
    }

    fn end(self) -> Result<Value, ValueError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTuple for SerializeList {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        self.push(value)
    }

    fn end(self) -> Result<Value, ValueError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleStruct for SerializeList {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        self.push(value)
    }

    fn end(self) -> Result<Value, ValueError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleVariant for SerializeList {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        self.push(value)
    }

    fn end(self) -> Result<Value, ValueError> {
        Ok(self.finish())
    }
}

/// A map, struct or struct variant being serialized into a map.
struct SerializeMap {
    map: ValueMap,
    /// The key whose value comes next.
    key: Option<Value>,
    /// The enum variant, for a struct variant.
    variant: Option<&'static str>,
}

impl SerializeMap {
    /// Adds an entry; a key given twice keeps its last value.
    fn insert<T: Serialize + ?Sized>(&mut self, key: Value, value: &T) -> Result<(), ValueError> {
        let value = value.serialize(ValueSerializer).map_err(|e| {
            let e = match &key {
                Value::Str(field) => e.in_field(field),
                other => e.in_item(other),
            };
            match self.variant {
                Some(variant) => e.in_field(variant),
                None => e,
            }
        })?;
        self.map.insert(key, value);
        Ok(())
    }

    fn finish(self) -> Value {
        let map = Value::Map(Arc::new(self.map));
        match self.variant {
            Some(variant) => tagged(variant, map),
            None => map,
        }
    }
}

impl ser::SerializeMap for SerializeMap {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), ValueError> {
        self.key = Some(key.serialize(ValueSerializer)?);
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        let key = self.key.take().ok_or_else(|| ValueError::new("a map value was serialized before its key"))?;
        self.insert(key, value)
    }

    fn end(self) -> Result<Value, ValueError> {
        Ok(self.finish())
    }
}

impl ser::SerializeStruct for SerializeMap {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), ValueError> {
        self.insert(name(key), value)
    }

    fn end(self) -> Result<Value, ValueError> {
        Ok(self.finish())
    }
}

impl ser::SerializeStructVariant for SerializeMap {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), ValueError> {
        self.insert(name(key), value)
    }

    fn end(self) -> Result<Value, ValueError> {
        Ok(self.finish())
    }
}
