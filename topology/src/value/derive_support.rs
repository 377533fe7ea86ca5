//! How `#[derive(Tuple)]` converts a field: with [`IntoValue`]/[`FromValue`] when its type has
//! them, through serde ([`to_value`]/[`from_value`]) otherwise. Not a public API.
//!
//! The choice is made at compile time by autoref specialization: the generated code calls
//! `Write::<T>(field).write_field(name)` and `(&Read::<T>::new()).read_field(..)`. Method lookup
//! tries the receiver's own type before taking one more reference, so the impls on `Write<T>`
//! and `Read<T>` (for `T: IntoValue` / `T: FromValue`) win over those on `&Write<T>` and
//! `&Read<T>` (serde), which apply to every `T` and demand `Serialize` / `Deserialize` only
//! once chosen: a type that has neither is reported at the field by the messages of
//! [`SerializeField`] and [`DeserializeField`]. A scalar field compiles to the very
//! `into_value` / `from_value` call it would be without this.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{FromValue, IntoValue, Value, ValueError, Values, from_value, to_value};
use crate::tuple::TupleError;

/// A tuple's values from its fields' values, in order, past the inline capacity: moved into one
/// allocation of the exact size at once. Pushing them one by one chains every write on the
/// length stored before it, which costs a tuple of seven fields a third of its building.
#[inline(always)]
pub fn values<const N: usize>(fields: [Value; N]) -> Values {
    Values::from_vec(Vec::from(fields))
}

/// The values of a tuple of one field, inline.
#[inline(always)]
pub fn values1(a: Value) -> Values {
    Values::from_buf_and_len([a, Value::Null], 1)
}

/// The values of a tuple of two fields, inline.
#[inline(always)]
pub fn values2(a: Value, b: Value) -> Values {
    Values::from_buf([a, b])
}

/// A field's value on its way into a tuple.
pub struct Write<T>(pub T);

/// The type of a field being read from a tuple.
pub struct Read<T>(PhantomData<fn() -> T>);

impl<T> Read<T> {
    /// A reader of `T` fields.
    #[inline(always)]
    pub const fn new() -> Self {
        Read(PhantomData)
    }
}

impl<T> Default for Read<T> {
    fn default() -> Self {
        Read::new()
    }
}

/// Writes a field with [`IntoValue`]: preferred.
pub trait WriteWithIntoValue {
    /// The field's value.
    fn write_field(self, name: &'static str) -> Value;
}

impl<T: IntoValue> WriteWithIntoValue for Write<T> {
    #[inline(always)]
    fn write_field(self, _name: &'static str) -> Value {
        self.0.into_value()
    }
}

/// Writes a field through serde: when its type is not [`IntoValue`].
pub trait WriteWithSerde {
    /// The field's type.
    type Field;

    /// The field's value.
    ///
    /// # Panics
    ///
    /// When the type's `Serialize` fails (its own error, or a 128-bit integer that does not
    /// fit 64 bits): `TypedTuple::into_values` cannot fail.
    fn write_field(self, name: &'static str) -> Value
    where
        Self::Field: SerializeField;
}

impl<T> WriteWithSerde for &Write<T> {
    type Field = T;

    fn write_field(self, name: &'static str) -> Value
    where
        T: SerializeField,
    {
        match self.0.to_field_value() {
            Ok(value) => value,
            Err(e) => cannot_write(name, std::any::type_name::<T>(), e),
        }
    }
}

#[cold]
#[inline(never)]
fn cannot_write(name: &str, type_name: &str, e: ValueError) -> ! {
    panic!("tuple field `{name}` ({type_name}) cannot be converted to a value: {e}")
}

/// Reads a field with [`FromValue`]: preferred.
pub trait ReadWithFromValue {
    /// The field's type.
    type Field;

    /// Reads the field at `index`, named `name`.
    fn read_field(&self, values: &[Value], index: usize, name: &str) -> Result<Self::Field, TupleError>;
}

impl<T: FromValue> ReadWithFromValue for Read<T> {
    type Field = T;

    #[inline(always)]
    fn read_field(&self, values: &[Value], index: usize, name: &str) -> Result<T, TupleError> {
        crate::tuple::derive_support::field(values, index, name)
    }
}

/// Reads a field through serde: when its type is not [`FromValue`].
pub trait ReadWithSerde {
    /// The field's type.
    type Field;

    /// Reads the field at `index`, named `name`.
    fn read_field(&self, values: &[Value], index: usize, name: &str) -> Result<Self::Field, TupleError>
    where
        Self::Field: DeserializeField;
}

impl<T> ReadWithSerde for &Read<T> {
    type Field = T;

    fn read_field(&self, values: &[Value], index: usize, name: &str) -> Result<T, TupleError>
    where
        T: DeserializeField,
    {
        // Where inside the field it is wrong, from the field's name down: `address.zip`.
        T::from_field_value(&values[index]).map_err(|e| TupleError::Value(e.in_field(name)))
    }
}

/// The types a tuple field of a type that is not [`IntoValue`] can have: serde's `Serialize`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a tuple field: it implements neither `IntoValue` nor serde's `Serialize`",
    label = "not a tuple field type",
    note = "derive `serde::Serialize` and `serde::Deserialize` for it, or implement `IntoValue` and `FromValue`"
)]
pub trait SerializeField {
    /// [`to_value`].
    fn to_field_value(&self) -> Result<Value, ValueError>;
}

impl<T: Serialize + ?Sized> SerializeField for T {
    fn to_field_value(&self) -> Result<Value, ValueError> {
        to_value(self)
    }
}

/// The types a tuple field of a type that is not [`FromValue`] can have: serde's
/// `DeserializeOwned`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be read from a tuple field: it implements neither `FromValue` nor serde's `Deserialize`",
    label = "not a tuple field type",
    note = "derive `serde::Deserialize` for it, or implement `FromValue`"
)]
pub trait DeserializeField: Sized {
    /// [`from_value`].
    fn from_field_value(value: &Value) -> Result<Self, ValueError>;
}

impl<T: DeserializeOwned> DeserializeField for T {
    fn from_field_value(value: &Value) -> Result<Self, ValueError> {
        from_value(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_derive_writes_up_to_two_values_inline() {
        // `#[derive(Tuple)]` calls `values1` and `values2` up to this capacity.
        assert_eq!(Values::new().inline_size(), 2);
        let one = values1(Value::Bool(true));
        assert!(!one.spilled());
        assert_eq!(&one[..], &[Value::Bool(true)]);
        let two = values2(Value::U64(1), Value::from("b"));
        assert!(!two.spilled());
        assert_eq!(&two[..], &[Value::U64(1), Value::from("b")]);
        let three = values([Value::U64(1), Value::Null, Value::from("c")]);
        assert_eq!(&three[..], &[Value::U64(1), Value::Null, Value::from("c")]);
        assert_eq!(three.capacity(), 3);
        let seven = values([1u64, 2, 3, 4, 5, 6, 7].map(Value::U64));
        assert_eq!(seven.len(), 7);
        assert_eq!(seven.capacity(), 7);
    }
}
