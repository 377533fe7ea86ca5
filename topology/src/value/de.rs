//! [`from_value`]: a serde `Deserializer` over a borrowed [`Value`].

use serde::de::value::{BorrowedStrDeserializer, U8Deserializer};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, Expected, IntoDeserializer, Unexpected, VariantAccess, Visitor,
};

use super::{Value, ValueError, ValueMap};

/// Converts a [`Value`] into any serde type: the inverse of [`to_value`](super::to_value).
///
/// A struct reads a map keyed by field name (or a list of its fields in order), a sequence or
/// tuple a list, an enum a string (unit variant) or a one-entry map `{variant: content}`, an
/// `Option` null or the value. Integers convert when they fit the target type, and bytes read
/// as a sequence of `u8` too. The error names the field that is wrong, with its path:
/// `` field `address.zip`: invalid type: string "x", expected u32 ``.
///
/// ```
/// # use squall_topology::value::{from_value, Value};
/// #[derive(serde::Deserialize, Debug, PartialEq)]
/// struct Point { x: i64, y: i64 }
///
/// let point: Point = from_value(&Value::map([("x", 1i64), ("y", -2)])).unwrap();
/// assert_eq!(point, Point { x: 1, y: -2 });
/// let err = from_value::<Point>(&Value::map([("x", "one")])).unwrap_err();
/// assert_eq!(err.to_string(), r#"field `x`: invalid type: string "one", expected i64"#);
/// ```
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, ValueError> {
    T::deserialize(value)
}

/// What serde's messages call a value of this kind.
fn unexpected(value: &Value) -> Unexpected<'_> {
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(v) => Unexpected::Bool(*v),
        Value::I64(v) => Unexpected::Signed(*v),
        Value::U64(v) => Unexpected::Unsigned(*v),
        Value::F64(v) => Unexpected::Float(*v),
        Value::Str(v) => Unexpected::Str(v),
        Value::Bytes(v) => Unexpected::Bytes(v),
        Value::List(_) => Unexpected::Seq,
        Value::Map(_) => Unexpected::Map,
    }
}

fn invalid_type(value: &Value, expected: &dyn Expected) -> ValueError {
    de::Error::invalid_type(unexpected(value), expected)
}

/// A borrowed value deserializes into any serde type; strings and bytes are borrowed from it.
impl<'de> de::Deserializer<'de> for &'de Value {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::Null => visitor.visit_unit(),
            Value::Bool(v) => visitor.visit_bool(*v),
            Value::I64(v) => visitor.visit_i64(*v),
            Value::U64(v) => visitor.visit_u64(*v),
            Value::F64(v) => visitor.visit_f64(*v),
            Value::Str(v) => visitor.visit_borrowed_str(v.as_str()),
            Value::Bytes(v) => visitor.visit_borrowed_bytes(v),
            Value::List(items) => visit_list(items, visitor),
            Value::Map(map) => visit_map(map, visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::Null => visitor.visit_unit(),
            _ => Err(invalid_type(self, &visitor)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, ValueError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        visitor.visit_newtype_struct(self)
    }

    /// Bytes read as a sequence of `u8` too: that is how serde reads a `Vec<u8>`.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::Bytes(bytes) => {
                let mut seq = de::value::SeqDeserializer::new(bytes.iter().map(|b| U8Deserializer::new(*b)));
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, ValueError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        match self {
            Value::Str(variant) => visitor.visit_enum(BorrowedStrDeserializer::new(variant.as_str())),
            Value::Map(map) if map.len() == 1 => {
                let (variant, content) = map.iter().next().expect("one entry");
                let Value::Str(name) = variant else {
                    return Err(invalid_type(variant, &"a variant name"));
                };
                visitor.visit_enum(Variant { name, content })
            }
            _ => Err(invalid_type(self, &visitor)),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        map struct identifier
    }
}

impl<'de> IntoDeserializer<'de, ValueError> for &'de Value {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

/// Visits a list, checking that the visitor read every item.
fn visit_list<'de, V: Visitor<'de>>(items: &'de [Value], visitor: V) -> Result<V::Value, ValueError> {
    let mut seq = ListAccess { items: items.iter(), index: 0 };
    let value = visitor.visit_seq(&mut seq)?;
    if seq.items.len() > 0 {
        return Err(de::Error::invalid_length(items.len(), &Count(seq.index, "items")));
    }
    Ok(value)
}

/// Visits a map, checking that the visitor read every entry.
fn visit_map<'de, V: Visitor<'de>>(map: &'de ValueMap, visitor: V) -> Result<V::Value, ValueError> {
    let mut access = MapAccess { entries: map.iter(), value: None };
    let value = visitor.visit_map(&mut access)?;
    let left = access.entries.len();
    if left > 0 {
        return Err(de::Error::invalid_length(map.len(), &Count(map.len() - left, "entries")));
    }
    Ok(value)
}

/// What a visitor that stopped early expected: `2 items`.
struct Count(usize, &'static str);

impl Expected for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

struct ListAccess<'de> {
    items: std::slice::Iter<'de, Value>,
    index: usize,
}

impl<'de> de::SeqAccess<'de> for ListAccess<'de> {
    type Error = ValueError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, ValueError> {
        let Some(item) = self.items.next() else { return Ok(None) };
        let index = self.index;
        self.index += 1;
        seed.deserialize(item).map(Some).map_err(|e| e.in_item(index))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapAccess<'de> {
    entries: std::collections::btree_map::Iter<'de, Value, Value>,
    /// The entry whose key was read and whose value comes next.
    value: Option<(&'de Value, &'de Value)>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'de> {
    type Error = ValueError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, ValueError> {
        let Some((key, value)) = self.entries.next() else { return Ok(None) };
        self.value = Some((key, value));
        seed.deserialize(key).map(Some).map_err(|e| e.in_item(key))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, ValueError> {
        let (key, value) = self.value.take().ok_or_else(|| ValueError::new("a map value was read before its key"))?;
        seed.deserialize(value).map_err(|e| match key {
            Value::Str(field) => e.in_field(field),
            other => e.in_item(other),
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// An enum variant with content: `{name: content}`.
struct Variant<'de> {
    name: &'de str,
    content: &'de Value,
}

impl<'de> EnumAccess<'de> for Variant<'de> {
    type Error = ValueError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), ValueError> {
        let variant = seed.deserialize(BorrowedStrDeserializer::<ValueError>::new(self.name))?;
        Ok((variant, self))
    }
}

/// The content of the variant; errors inside it name the variant as a field.
impl<'de> VariantAccess<'de> for Variant<'de> {
    type Error = ValueError;

    fn unit_variant(self) -> Result<(), ValueError> {
        match self.content {
            Value::Null => Ok(()),
            other => Err(invalid_type(other, &"unit variant").in_field(self.name)),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, ValueError> {
        seed.deserialize(self.content).map_err(|e| e.in_field(self.name))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, ValueError> {
        de::Deserializer::deserialize_seq(self.content, visitor).map_err(|e| e.in_field(self.name))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        de::Deserializer::deserialize_any(self.content, visitor).map_err(|e| e.in_field(self.name))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde::{Deserialize, Serialize};

    use super::super::{Str, to_value};
    use super::*;

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    struct Address {
        street: String,
        zip: u32,
        geo: Option<(f64, f64)>,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    enum Status {
        Open,
        Held(String),
        Moved { to: Box<Address> },
        Split(u8, i8),
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    struct Order {
        id: u64,
        delta: i64,
        items: Vec<String>,
        address: Address,
        tags: HashMap<String, u64>,
        by_zip: BTreeMap<u32, Vec<Status>>,
        #[serde(with = "serde_bytes_compat")]
        blob: Vec<u8>,
        note: Option<String>,
        unit: (),
        ch: char,
    }

    /// Bytes as serde bytes, as `serde_bytes` would.
    mod serde_bytes_compat {
        pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }

        pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            struct Bytes;
            impl serde::de::Visitor<'_> for Bytes {
                type Value = Vec<u8>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                    Ok(v.to_vec())
                }
            }
            d.deserialize_bytes(Bytes)
        }
    }

    fn order() -> Order {
        let address = Address { street: "Main".into(), zip: 1234, geo: Some((1.5, -2.25)) };
        Order {
            id: u64::MAX,
            delta: 7,
            items: vec!["apple".into(), "pear".into()],
            address: address.clone(),
            tags: [("red".to_owned(), 1), ("blue".to_owned(), 2)].into(),
            by_zip: [
                (1, vec![Status::Open, Status::Held("why".into())]),
                (2, vec![Status::Moved { to: Box::new(address) }, Status::Split(1, -1)]),
            ]
            .into(),
            blob: vec![0, 1, 255],
            note: None,
            unit: (),
            ch: 'é',
        }
    }

    #[test]
    fn serde_types_round_trip_with_their_shape() {
        let order = order();
        let value = to_value(&order).unwrap();
        let map = value.as_map().unwrap();
        let get = |k: &str| &map[&Value::from(k)];
        assert_eq!(map.len(), 10);
        assert_eq!(get("id"), &Value::U64(u64::MAX));
        assert_eq!(get("delta"), &Value::I64(7), "a positive i64 stays an I64");
        assert_eq!(get("items"), &Value::list(["apple", "pear"]));
        assert_eq!(
            get("address"),
            &Value::map([
                ("street", Value::from("Main")),
                ("zip", Value::U64(1234)),
                ("geo", Value::list([1.5, -2.25]))
            ])
        );
        assert_eq!(get("tags"), &Value::map([("blue", 2u64), ("red", 1)]));
        let statuses = get("by_zip").as_map().unwrap()[&Value::U64(1)].clone();
        assert_eq!(statuses, Value::list([Value::from("Open"), Value::map([("Held", "why")])]));
        let split = &get("by_zip").as_map().unwrap()[&Value::U64(2)].as_list().unwrap()[1];
        assert_eq!(split, &Value::map([("Split", Value::list([Value::U64(1), Value::I64(-1)]))]));
        assert_eq!(get("blob"), &Value::Bytes(vec![0, 1, 255].into()));
        assert_eq!(get("note"), &Value::Null);
        assert_eq!(get("unit"), &Value::Null);
        assert_eq!(get("ch"), &Value::from("é"));

        assert_eq!(from_value::<Order>(&value), Ok(order));
    }

    #[test]
    fn values_and_plain_collections_round_trip() {
        let value = Value::list([
            Value::Null,
            Value::Bool(true),
            Value::I64(3),
            Value::U64(3),
            Value::F64(0.5),
            Value::from("s"),
            Value::Bytes(vec![9].into()),
            Value::map([(Value::list([1u64]), Value::map([(Value::Null, Value::I64(-1))]))]),
        ]);
        // A `Value` is its own serde representation: the bridge gives it back unchanged.
        assert_eq!(to_value(&value), Ok(value.clone()));
        assert_eq!(from_value::<Value>(&value), Ok(value.clone()));

        let bytes = vec![1u8, 2];
        // Serde sees a `Vec<u8>` as a sequence; either form reads back.
        assert_eq!(to_value(&bytes), Ok(Value::list([1u64, 2])));
        assert_eq!(from_value::<Vec<u8>>(&Value::Bytes(bytes.clone().into())), Ok(bytes));
        assert_eq!(from_value::<(u8, String)>(&Value::list([Value::U64(1), Value::from("a")])), Ok((1, "a".into())));
        assert_eq!(to_value(&Str::new("x")), Ok(Value::from("x")));
        assert_eq!(to_value(&u128::from(u64::MAX)), Ok(Value::U64(u64::MAX)));
        assert_eq!(to_value(&-5i128), Ok(Value::I64(-5)));
    }

    #[test]
    fn errors_name_the_field_and_the_types() {
        let mut value = to_value(&order()).unwrap();
        let set = |value: &mut Value, path: &[&str], new: Value| {
            let mut at = value;
            for key in path {
                let Value::Map(map) = at else { panic!("not a map") };
                at = std::sync::Arc::make_mut(map).get_mut(&Value::from(*key)).unwrap();
            }
            *at = new;
        };
        set(&mut value, &["address", "zip"], Value::from("x"));
        let err = from_value::<Order>(&value).unwrap_err();
        assert_eq!(err.to_string(), r#"field `address.zip`: invalid type: string "x", expected u32"#);
        assert_eq!(err.path(), "address.zip");

        let mut value = to_value(&order()).unwrap();
        set(&mut value, &["items"], Value::list([Value::from("a"), Value::U64(3)]));
        let err = from_value::<Order>(&value).unwrap_err();
        assert_eq!(err.to_string(), "field `items[1]`: invalid type: integer `3`, expected a string");

        let mut value = to_value(&order()).unwrap();
        set(&mut value, &["tags", "red"], Value::I64(-1));
        let err = from_value::<Order>(&value).unwrap_err();
        assert_eq!(err.to_string(), "field `tags.red`: invalid value: integer `-1`, expected u64");

        let mut value = to_value(&order()).unwrap();
        let Value::Map(map) = &mut value else { unreachable!() };
        std::sync::Arc::make_mut(map).remove(&Value::from("address"));
        assert_eq!(from_value::<Order>(&value).unwrap_err().to_string(), "missing field `address`");

        let err = from_value::<Status>(&Value::map([("Moved", Value::map([("to", 5u64)]))])).unwrap_err();
        assert_eq!(err.to_string(), "field `Moved.to`: invalid type: integer `5`, expected struct Address");
        let err = from_value::<Status>(&Value::from("Closed")).unwrap_err();
        assert_eq!(err.to_string(), "unknown variant `Closed`, expected one of `Open`, `Held`, `Moved`, `Split`");
        let err = from_value::<Status>(&Value::list([1u64])).unwrap_err();
        assert_eq!(err.to_string(), "invalid type: sequence, expected enum Status");
        let err = from_value::<Order>(&Value::U64(1)).unwrap_err();
        assert_eq!(err.to_string(), "invalid type: integer `1`, expected struct Order");
        let err = from_value::<(u8, u8)>(&Value::list([1u64, 2, 3])).unwrap_err();
        assert_eq!(err.to_string(), "invalid length 3, expected 2 items");
        let err = to_value(&u128::MAX).unwrap_err();
        assert_eq!(err.to_string(), format!("integer {} does not fit in 64 bits", u128::MAX));
        let err = to_value(&HashMap::from([("big", vec![0u128, u128::MAX])])).unwrap_err();
        assert_eq!(err.path(), "big[1]");
    }
}
