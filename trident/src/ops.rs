//! The per-tuple operations a stream applies before it is repartitioned: run one after the
//! other inside one bolt, as Trident fuses them.

use std::sync::Arc;

use squall_topology::{ComponentError, Value, Values};

use crate::aggregate::Combiner;

type MapFn = dyn Fn(&[Value]) -> Result<Values, ComponentError> + Send + Sync;
type FlatMapFn = dyn Fn(&[Value]) -> Result<Vec<Values>, ComponentError> + Send + Sync;
type FilterFn = dyn Fn(&[Value]) -> Result<bool, ComponentError> + Send + Sync;
type PeekFn = dyn Fn(&[Value]) + Send + Sync;

/// One operation.
#[derive(Clone)]
pub(crate) enum Op {
    /// One tuple in, one out.
    Map(Arc<MapFn>),
    /// One tuple in, any number out.
    FlatMap(Arc<FlatMapFn>),
    /// Keeps the tuples for which it is true.
    Filter(Arc<FilterFn>),
    /// One tuple in, any number of tuples out, each the input followed by the function's values
    /// (Trident's `each` with a function).
    Each(Arc<FlatMapFn>),
    /// Sees each tuple and passes it on.
    Peek(Arc<PeekFn>),
    /// Folds all the tuples of the batch here into one (`partition_aggregate`); nothing for an
    /// empty batch, except a count of 0.
    Aggregate(Combiner),
}

/// Runs `ops` on a whole batch, `tuples`, and appends what comes out to `out`.
pub(crate) fn apply_batch(ops: &[Op], tuples: Vec<Values>, out: &mut Vec<Values>) -> Result<(), ComponentError> {
    let (mut current, mut rest) = (tuples, ops);
    loop {
        let end = rest.iter().position(|op| matches!(op, Op::Aggregate(_))).unwrap_or(rest.len());
        let mut next = Vec::with_capacity(current.len());
        for values in current {
            apply(&rest[..end], values, &mut next)?;
        }
        let Some((Op::Aggregate(combiner), tail)) = rest[end..].split_first() else {
            out.extend(next);
            return Ok(());
        };
        let folded = next.iter().map(|t| combiner.init(t)).reduce(|a, b| combiner.combine(&a, &b));
        current = match (folded, combiner) {
            (Some(value), _) => vec![std::iter::once(value).collect()],
            (None, Combiner::Count) => vec![std::iter::once(Value::U64(0)).collect()],
            (None, _) => Vec::new(),
        };
        rest = tail;
    }
}

/// Runs the per-tuple `ops` on `input` and appends what comes out to `out`.
fn apply(ops: &[Op], input: Values, out: &mut Vec<Values>) -> Result<(), ComponentError> {
    let Some((op, rest)) = ops.split_first() else {
        out.push(input);
        return Ok(());
    };
    match op {
        Op::Map(f) => apply(rest, f(&input)?, out),
        Op::FlatMap(f) => {
            for values in f(&input)? {
                apply(rest, values, out)?;
            }
            Ok(())
        }
        Op::Filter(f) => {
            if f(&input)? {
                apply(rest, input, out)?;
            }
            Ok(())
        }
        Op::Each(f) => {
            for added in f(&input)? {
                let mut values = Values::with_capacity(input.len() + added.len());
                values.extend(input.iter().cloned());
                values.extend(added);
                apply(rest, values, out)?;
            }
            Ok(())
        }
        Op::Peek(f) => {
            f(&input);
            apply(rest, input, out)
        }
        // `apply_batch` folds at aggregates: none reaches here.
        Op::Aggregate(_) => apply(rest, input, out),
    }
}
