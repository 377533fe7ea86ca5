//! Aggregators (Trident's three kinds): a combiner folds values pairwise, so partial results
//! per batch and task combine with a stored value; a reducer folds tuples one by one onto a
//! value; a general aggregator keeps any state over a batch and emits any tuples.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use squall_topology::{ComponentError, Value, Values};

use crate::coordinator::Epoch;

/// Folds values pairwise (Trident's `CombinerAggregator`): `init` turns one tuple into a value,
/// `combine` merges two partial results and must be associative and commutative, `zero` is the
/// result of no tuples. Persisted, each batch's partials combine with the stored value.
pub trait CombinerAggregator: Send + Sync + 'static {
    /// One tuple's value; `tuple` holds the aggregate's input fields.
    fn init(&self, tuple: &[Value]) -> Value;
    /// Two partial results combined.
    fn combine(&self, a: &Value, b: &Value) -> Value;
    /// The result of no tuples (`Value::Null`: nothing is emitted for an empty batch).
    fn zero(&self) -> Value;
}

/// Folds tuples one by one onto a value (Trident's `ReducerAggregator`). Persisted, a batch's
/// tuples of a key reduce onto the stored value (or `init`'s) at the commit.
pub trait ReducerAggregator: Send + Sync + 'static {
    /// The value before any tuple.
    fn init(&self) -> Value;
    /// `current` with one more tuple; `tuple` holds the aggregate's input fields.
    fn reduce(&self, current: Value, tuple: &[Value]) -> Value;
}

/// Any fold over a batch (Trident's `Aggregator`): state started per batch (and per group),
/// fed each tuple, completed at the batch's end; each may emit tuples of the output fields.
pub trait Aggregator: Send + Sync + 'static {
    /// The state over one batch (or one group of it).
    type State: Send;
    /// A new batch (or group) of `epoch` starts.
    fn init(&self, epoch: Epoch) -> Self::State;
    /// One tuple (its input fields).
    fn aggregate(&self, state: &mut Self::State, tuple: &[Value], out: &mut Vec<Values>) -> Result<(), ComponentError>;
    /// The batch (or group) ended.
    fn complete(&self, state: Self::State, out: &mut Vec<Values>) -> Result<(), ComponentError>;
}

/// An [`Aggregator`] with its state type hidden, run over a whole group at once.
pub(crate) trait RunAggregator: Send + Sync {
    fn run(
        &self,
        epoch: Epoch,
        inputs: &[usize],
        tuples: &mut dyn Iterator<Item = &[Value]>,
        out: &mut Vec<Values>,
    ) -> Result<(), ComponentError>;
}

impl<A: Aggregator> RunAggregator for A {
    fn run(
        &self,
        epoch: Epoch,
        inputs: &[usize],
        tuples: &mut dyn Iterator<Item = &[Value]>,
        out: &mut Vec<Values>,
    ) -> Result<(), ComponentError> {
        let mut state = self.init(epoch);
        for tuple in tuples {
            with_inputs(inputs, tuple, |t| self.aggregate(&mut state, t, out))?;
        }
        self.complete(state, out)
    }
}

/// How tuples fold: one of the three kinds.
#[derive(Clone)]
pub(crate) enum Fold {
    Combiner(Arc<dyn CombinerAggregator>),
    Reducer(Arc<dyn ReducerAggregator>),
    General(Arc<dyn RunAggregator>),
}

/// An aggregation: its input fields and how they fold. Count, sum, min and max are built in;
/// [`Aggregate::combiner`], [`Aggregate::reducer`] and [`Aggregate::aggregator`] take your own.
#[derive(Clone)]
pub struct Aggregate {
    inputs: Vec<String>,
    name: &'static str,
    pub(crate) fold: Fold,
}

impl fmt::Debug for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aggregate").field("name", &self.name).field("inputs", &self.inputs).finish()
    }
}

impl Aggregate {
    /// How many tuples.
    pub fn count() -> Self {
        Aggregate::builtin("count", Vec::new(), Builtin::Count)
    }

    /// The sum of `field` (integers stay integers; a float makes the sum a float).
    pub fn sum(field: &str) -> Self {
        Aggregate::builtin("sum", vec![field.to_owned()], Builtin::Sum)
    }

    /// The least value of `field`.
    pub fn min(field: &str) -> Self {
        Aggregate::builtin("min", vec![field.to_owned()], Builtin::Min)
    }

    /// The greatest value of `field`.
    pub fn max(field: &str) -> Self {
        Aggregate::builtin("max", vec![field.to_owned()], Builtin::Max)
    }

    fn builtin(name: &'static str, inputs: Vec<String>, builtin: Builtin) -> Self {
        Aggregate { inputs, name, fold: Fold::Combiner(Arc::new(builtin)) }
    }

    /// Your combiner over `inputs` (the fields it is given, in this order).
    pub fn combiner<F: AsRef<str>>(inputs: impl IntoIterator<Item = F>, combiner: impl CombinerAggregator) -> Self {
        Aggregate { inputs: names(inputs), name: "combiner", fold: Fold::Combiner(Arc::new(combiner)) }
    }

    /// Your reducer over `inputs`.
    pub fn reducer<F: AsRef<str>>(inputs: impl IntoIterator<Item = F>, reducer: impl ReducerAggregator) -> Self {
        Aggregate { inputs: names(inputs), name: "reducer", fold: Fold::Reducer(Arc::new(reducer)) }
    }

    /// Your general aggregator over `inputs`. It cannot be persisted (a map state holds one
    /// value per key): use it in `aggregate` or `partition_aggregate`.
    pub fn aggregator<F: AsRef<str>>(inputs: impl IntoIterator<Item = F>, aggregator: impl Aggregator) -> Self {
        Aggregate { inputs: names(inputs), name: "aggregator", fold: Fold::General(Arc::new(aggregator)) }
    }

    /// The fields it reads.
    pub fn inputs(&self) -> &[String] {
        &self.inputs
    }

    /// Whether it emits one value per group (a combiner or a reducer), not any tuples.
    pub(crate) fn is_single_valued(&self) -> bool {
        !matches!(self.fold, Fold::General(_))
    }
}

fn names<F: AsRef<str>>(fields: impl IntoIterator<Item = F>) -> Vec<String> {
    fields.into_iter().map(|f| f.as_ref().to_owned()).collect()
}

/// An [`Aggregate`] with its input fields resolved to positions in the stream's tuples.
#[derive(Clone)]
pub(crate) struct Folder {
    pub(crate) inputs: Vec<usize>,
    pub(crate) fold: Fold,
}

impl Folder {
    /// Calls `f` with `tuple`'s input fields.
    pub(crate) fn with_inputs<R>(&self, tuple: &[Value], f: impl FnOnce(&[Value]) -> R) -> R {
        with_inputs(&self.inputs, tuple, f)
    }

    /// Folds `tuples` (one group of a batch, or all of it) and appends what comes out, each
    /// output after `prefix` (the group's key).
    pub(crate) fn fold<'a>(
        &self,
        epoch: Epoch,
        mut tuples: impl Iterator<Item = &'a [Value]>,
        prefix: &[Value],
        out: &mut Vec<Values>,
    ) -> Result<(), ComponentError> {
        let one = |value: Value| -> Values { prefix.iter().cloned().chain(std::iter::once(value)).collect() };
        match &self.fold {
            Fold::Combiner(c) => {
                let folded = tuples.map(|t| self.with_inputs(t, |t| c.init(t))).reduce(|a, b| c.combine(&a, &b));
                match folded.unwrap_or_else(|| c.zero()) {
                    Value::Null => {}
                    value => out.push(one(value)),
                }
            }
            Fold::Reducer(r) => {
                let value = tuples.fold(r.init(), |current, t| self.with_inputs(t, |t| r.reduce(current, t)));
                out.push(one(value));
            }
            Fold::General(a) => {
                let start = out.len();
                a.run(epoch, &self.inputs, &mut tuples, out)?;
                if !prefix.is_empty() {
                    for row in &mut out[start..] {
                        let mut keyed = Values::with_capacity(prefix.len() + row.len());
                        keyed.extend(prefix.iter().cloned());
                        keyed.extend(row.drain(..));
                        *row = keyed;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Calls `f` with the fields of `tuple` at `inputs`, without copying them when they are one
/// field or a run of adjacent ones.
pub(crate) fn with_inputs<R>(inputs: &[usize], tuple: &[Value], f: impl FnOnce(&[Value]) -> R) -> R {
    let adjacent = inputs.windows(2).all(|w| w[1] == w[0] + 1);
    match inputs.first() {
        None => f(&[]),
        Some(&first) if adjacent && first + inputs.len() <= tuple.len() => f(&tuple[first..first + inputs.len()]),
        _ => {
            let projected: Vec<Value> = inputs.iter().map(|i| tuple.get(*i).cloned().unwrap_or(Value::Null)).collect();
            f(&projected)
        }
    }
}

/// Count, sum, min and max.
#[derive(Debug, Clone, Copy)]
enum Builtin {
    Count,
    Sum,
    Min,
    Max,
}

impl CombinerAggregator for Builtin {
    fn init(&self, tuple: &[Value]) -> Value {
        match self {
            Builtin::Count => Value::U64(1),
            _ => tuple.first().cloned().unwrap_or(Value::Null),
        }
    }

    fn combine(&self, a: &Value, b: &Value) -> Value {
        match self {
            Builtin::Count | Builtin::Sum => add(a, b),
            Builtin::Min => pick(a, b, Ordering::Less),
            Builtin::Max => pick(a, b, Ordering::Greater),
        }
    }

    fn zero(&self) -> Value {
        match self {
            Builtin::Count | Builtin::Sum => Value::U64(0),
            Builtin::Min | Builtin::Max => Value::Null,
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
    fn builtins_fold_as_named() {
        let (one, two) = (Value::U64(1), Value::I64(2));
        assert_eq!(Builtin::Count.combine(&Value::U64(3), &Value::U64(4)), Value::U64(7));
        assert_eq!(Builtin::Sum.combine(&one, &two), Value::I64(3));
        assert_eq!(Builtin::Sum.combine(&one, &Value::F64(0.5)), Value::F64(1.5));
        assert_eq!(Builtin::Min.combine(&Value::Null, &two), two);
        assert_eq!(Builtin::Max.combine(&Value::I64(5), &two), Value::I64(5));
        assert_eq!(Builtin::Min.combine(&Value::I64(5), &two), two);
        assert_eq!(Builtin::Sum.init(&[Value::I64(9)]), Value::I64(9));
    }

    #[test]
    fn inputs_are_projected_in_their_order() {
        let folder = |inputs: Vec<usize>| Folder { inputs, fold: Fold::Combiner(Arc::new(Builtin::Count)) };
        let tuple = [Value::U64(0), Value::U64(1), Value::U64(2)];
        assert_eq!(folder(vec![1, 2]).with_inputs(&tuple, <[Value]>::to_vec), &tuple[1..]);
        assert_eq!(folder(vec![2, 0]).with_inputs(&tuple, <[Value]>::to_vec), vec![Value::U64(2), Value::U64(0)]);
        assert_eq!(folder(vec![]).with_inputs(&tuple, <[Value]>::len), 0);
    }
}
