//! Joining two streams within a batch (Trident's `join`): both sides are partitioned by their
//! join keys, so equal keys meet in one task, which joins its share once it has the whole batch.

use rustc_hash::FxHashMap;
use squall_topology::{Value, Values};

use crate::ops::key_of;

/// Which unmatched tuples a join keeps (their other side's fields null).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JoinType {
    /// Only tuples with a match on the other side.
    #[default]
    Inner,
    /// Also the left stream's tuples without a match.
    LeftOuter,
    /// Also the right stream's tuples without a match.
    RightOuter,
    /// Also every tuple without a match, from either side.
    FullOuter,
}

/// A join's keys (positions in each side's tuples), widths and type.
#[derive(Debug, Clone)]
pub(crate) struct JoinSpec {
    pub(crate) keys: [Vec<usize>; 2],
    pub(crate) widths: [usize; 2],
    pub(crate) kind: JoinType,
}

impl JoinSpec {
    /// The joined tuples of one batch: each the key, then the left side's other fields, then
    /// the right side's.
    pub(crate) fn join(&self, left: &[Values], right: &[Values]) -> Vec<Values> {
        let mut index: FxHashMap<Vec<Value>, Vec<usize>> = FxHashMap::default();
        for (i, tuple) in right.iter().enumerate() {
            index.entry(key_of(tuple, &self.keys[1])).or_default().push(i);
        }
        let keep_left = matches!(self.kind, JoinType::LeftOuter | JoinType::FullOuter);
        let keep_right = matches!(self.kind, JoinType::RightOuter | JoinType::FullOuter);
        let mut matched = vec![false; right.len()];
        let mut out = Vec::new();
        for l in left {
            let key = key_of(l, &self.keys[0]);
            match index.get(&key) {
                Some(matches) => {
                    for &r in matches {
                        matched[r] = true;
                        out.push(self.row(&key, Some(l), Some(&right[r])));
                    }
                }
                None if keep_left => out.push(self.row(&key, Some(l), None)),
                None => {}
            }
        }
        if keep_right {
            for (_, tuple) in right.iter().enumerate().filter(|(r, _)| !matched[*r]) {
                out.push(self.row(&key_of(tuple, &self.keys[1]), None, Some(tuple)));
            }
        }
        out
    }

    fn row(&self, key: &[Value], left: Option<&Values>, right: Option<&Values>) -> Values {
        let mut row = Values::with_capacity(self.widths[0] + self.widths[1] - key.len());
        row.extend(key.iter().cloned());
        for (side, tuple) in [left, right].into_iter().enumerate() {
            let keys = &self.keys[side];
            for i in (0..self.widths[side]).filter(|i| !keys.contains(i)) {
                row.push(tuple.and_then(|t| t.get(i)).cloned().unwrap_or(Value::Null));
            }
        }
        row
    }
}

#[cfg(test)]
mod tests {
    use squall_topology::values;

    use super::*;

    #[test]
    fn joins_keep_what_their_type_says() {
        let left = vec![values![1u64, "a"], values![2u64, "b"], values![2u64, "b2"]];
        let right = vec![values!["x", 2u64], values!["y", 3u64]];
        let spec = |kind| JoinSpec { keys: [vec![0], vec![1]], widths: [2, 2], kind };
        assert_eq!(spec(JoinType::Inner).join(&left, &right), vec![values![2u64, "b", "x"], values![2u64, "b2", "x"]]);
        let left_outer = spec(JoinType::LeftOuter).join(&left, &right);
        assert_eq!(left_outer[0], values![1u64, "a", Value::Null]);
        assert_eq!(left_outer.len(), 3);
        let full = spec(JoinType::FullOuter).join(&left, &right);
        assert_eq!(full.len(), 4);
        assert_eq!(full[3], values![3u64, Value::Null, "y"]);
        assert_eq!(spec(JoinType::RightOuter).join(&left, &right).len(), 3);
    }
}
