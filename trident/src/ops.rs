//! The per-tuple operations a stream applies before it is repartitioned: run one after the
//! other inside one bolt, as Trident fuses them.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use squall_topology::{ComponentError, Value, Values};

use crate::aggregate::Folder;
use crate::coordinator::Epoch;
use crate::nodes::StateSpec;

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
    /// Folds the batch here (each group of it by `group`, a key's output after its key
    /// values; all of it when `group` is empty).
    Aggregate { group: Vec<usize>, folder: Folder },
    /// Appends to each tuple the value its key (the fields at `keys`) has in `state`.
    Query { state: StateSpec, keys: Vec<usize> },
}

impl Op {
    /// Whether it works on the whole batch rather than tuple by tuple.
    fn is_batch(&self) -> bool {
        matches!(self, Op::Aggregate { .. } | Op::Query { .. })
    }
}

/// Runs `ops` on a whole batch of `epoch`, `tuples`, and appends what comes out to `out`.
pub(crate) async fn apply_batch(
    ops: &[Op],
    epoch: Epoch,
    tuples: Vec<Values>,
    out: &mut Vec<Values>,
) -> Result<(), ComponentError> {
    let (mut current, mut rest) = (tuples, ops);
    loop {
        let end = rest.iter().position(Op::is_batch).unwrap_or(rest.len());
        if end > 0 {
            let mut next = Vec::with_capacity(current.len());
            for values in current {
                apply(&rest[..end], values, &mut next)?;
            }
            current = next;
        }
        let Some(op) = rest.get(end) else {
            out.extend(current);
            return Ok(());
        };
        current = match op {
            Op::Aggregate { group, folder } => aggregate(epoch, group, folder, &current)?,
            Op::Query { state, keys } => query(state, keys, current).await?,
            _ => current,
        };
        rest = &rest[end + 1..];
    }
}

/// The values of `keys` in `tuple`.
pub(crate) fn key_of(tuple: &[Value], keys: &[usize]) -> Vec<Value> {
    keys.iter().map(|k| tuple.get(*k).cloned().unwrap_or(Value::Null)).collect()
}

fn aggregate(epoch: Epoch, group: &[usize], folder: &Folder, tuples: &[Values]) -> Result<Vec<Values>, ComponentError> {
    let mut out = Vec::new();
    if group.is_empty() {
        folder.fold(epoch, tuples.iter().map(|t| t.as_slice()), &[], &mut out)?;
        return Ok(out);
    }
    // Groups in the order their first tuple came.
    let mut groups: FxHashMap<Vec<Value>, usize> = FxHashMap::default();
    let mut members: Vec<(Vec<Value>, Vec<usize>)> = Vec::new();
    for (i, tuple) in tuples.iter().enumerate() {
        let key = key_of(tuple, group);
        match groups.get(&key) {
            Some(&g) => members[g].1.push(i),
            None => {
                groups.insert(key.clone(), members.len());
                members.push((key, vec![i]));
            }
        }
    }
    for (key, indices) in &members {
        folder.fold(epoch, indices.iter().map(|i| tuples[*i].as_slice()), key, &mut out)?;
    }
    Ok(out)
}

async fn query(state: &StateSpec, keys: &[usize], tuples: Vec<Values>) -> Result<Vec<Values>, ComponentError> {
    let mut index: FxHashMap<Vec<Value>, usize> = FxHashMap::default();
    let mut unique = Vec::new();
    let slots: Vec<usize> = tuples
        .iter()
        .map(|t| {
            let key = key_of(t, keys);
            *index.entry(key).or_insert_with_key(|key| {
                unique.push(key.clone());
                unique.len() - 1
            })
        })
        .collect();
    let found = state
        .open_uncached()
        .multi_get(&unique)
        .await
        .map_err(|e| format!("trident: state `{}` could not be queried: {e}", state.name))?;
    Ok(tuples
        .into_iter()
        .zip(slots)
        .map(|(mut values, slot)| {
            values.push(found.get(slot).cloned().flatten().unwrap_or(Value::Null));
            values
        })
        .collect())
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
        // `apply_batch` runs them on the batch: none reaches here.
        Op::Aggregate { .. } | Op::Query { .. } => apply(rest, input, out),
    }
}
