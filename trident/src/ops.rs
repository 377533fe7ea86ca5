//! The per-tuple operations a stream applies before it is repartitioned: run one after the
//! other inside one bolt, as Trident fuses them.

use std::sync::Arc;

use squall_topology::{ComponentError, Value, Values};

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
}

/// Runs `ops` on `input` and appends what comes out to `out`.
pub(crate) fn apply(ops: &[Op], input: Values, out: &mut Vec<Values>) -> Result<(), ComponentError> {
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
    }
}
