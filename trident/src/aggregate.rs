//! Aggregators that fold a group's tuples into one value per key.

use std::cmp::Ordering;

use squall_topology::Value;

/// How a grouped stream's tuples fold into one value per key (Trident's combiner aggregators:
/// partial results per batch and task combine with the stored value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Aggregate {
    /// How many tuples.
    Count,
    /// The sum of a numeric field.
    Sum(String),
    /// The least value of a field.
    Min(String),
    /// The greatest value of a field.
    Max(String),
}

impl Aggregate {
    /// How many tuples.
    pub fn count() -> Self {
        Aggregate::Count
    }

    /// The sum of `field` (integers stay integers; a float makes the sum a float).
    pub fn sum(field: &str) -> Self {
        Aggregate::Sum(field.to_owned())
    }

    /// The least value of `field`.
    pub fn min(field: &str) -> Self {
        Aggregate::Min(field.to_owned())
    }

    /// The greatest value of `field`.
    pub fn max(field: &str) -> Self {
        Aggregate::Max(field.to_owned())
    }

    /// The field it reads, if any.
    pub(crate) fn field(&self) -> Option<&str> {
        match self {
            Aggregate::Count => None,
            Aggregate::Sum(f) | Aggregate::Min(f) | Aggregate::Max(f) => Some(f),
        }
    }
}

/// An [`Aggregate`] with its field resolved to a position in the tuple.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Combiner {
    Count,
    Sum(usize),
    Min(usize),
    Max(usize),
}

impl Combiner {
    /// One tuple's value.
    pub(crate) fn init(self, tuple: &[Value]) -> Value {
        let field = |i: usize| tuple.get(i).cloned().unwrap_or(Value::Null);
        match self {
            Combiner::Count => Value::U64(1),
            Combiner::Sum(i) | Combiner::Min(i) | Combiner::Max(i) => field(i),
        }
    }

    /// Two partial results combined.
    pub(crate) fn combine(self, a: &Value, b: &Value) -> Value {
        match self {
            Combiner::Count | Combiner::Sum(_) => add(a, b),
            Combiner::Min(_) => pick(a, b, Ordering::Less),
            Combiner::Max(_) => pick(a, b, Ordering::Greater),
        }
    }
}

fn pick(a: &Value, b: &Value, keep: Ordering) -> Value {
    match (a, b) {
        (Value::Null, other) | (other, Value::Null) => other.clone(),
        _ if b.cmp(a) == keep => b.clone(),
        _ => a.clone(),
    }
}

fn add(a: &Value, b: &Value) -> Value {
    match (a, b) {
        (Value::Null, other) | (other, Value::Null) => other.clone(),
        (Value::U64(x), Value::U64(y)) => Value::U64(x.saturating_add(*y)),
        (Value::I64(x), Value::I64(y)) => Value::I64(x.saturating_add(*y)),
        (Value::I64(x), Value::U64(y)) | (Value::U64(y), Value::I64(x)) => {
            Value::I64(x.saturating_add(i64::try_from(*y).unwrap_or(i64::MAX)))
        }
        _ => Value::F64(as_f64(a) + as_f64(b)),
    }
}

fn as_f64(v: &Value) -> f64 {
    match v {
        Value::I64(x) => *x as f64,
        Value::U64(x) => *x as f64,
        Value::F64(x) => *x,
        _ => f64::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combiners_fold_as_named() {
        let (one, two) = (Value::U64(1), Value::I64(2));
        assert_eq!(Combiner::Count.combine(&Value::U64(3), &Value::U64(4)), Value::U64(7));
        assert_eq!(Combiner::Sum(0).combine(&one, &two), Value::I64(3));
        assert_eq!(Combiner::Sum(0).combine(&one, &Value::F64(0.5)), Value::F64(1.5));
        assert_eq!(Combiner::Min(0).combine(&Value::Null, &two), two);
        assert_eq!(Combiner::Max(0).combine(&Value::I64(5), &two), Value::I64(5));
        assert_eq!(Combiner::Min(0).combine(&Value::I64(5), &two), two);
        assert_eq!(Combiner::Sum(1).init(&[Value::Null, Value::I64(9)]), Value::I64(9));
    }
}
