//! What the Trident word count tests share: fixed sentences, their expected counts, the counts
//! a state holds, and the coordinator's last commit.

use std::collections::HashMap;
use std::ops::Range;

use squall::{LocalCluster, Str, Value, Values, values};
use squall_state::StateError;
use squall_trident::{CoordinatorMeta, StateSpec};

/// `batches` batches of `sentences` sentences (a count in that range) of `words_each` words
/// from `words`, the same for a seed.
pub fn sentences(
    seed: u64,
    words: &[&str],
    batches: usize,
    sentences: Range<usize>,
    words_each: Range<usize>,
) -> Vec<Vec<Values>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..batches)
        .map(|_| {
            (0..rng.usize(sentences.clone()))
                .map(|_| {
                    let chosen: Vec<&str> =
                        (0..rng.usize(words_each.clone())).map(|_| words[rng.usize(..words.len())]).collect();
                    values![chosen.join(" ")]
                })
                .collect()
        })
        .collect()
}

/// Each word's count over `batches`.
pub fn expected(batches: &[Vec<Values>]) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for values in batches.iter().flatten() {
        if let Some(Value::Str(sentence)) = values.first() {
            for word in sentence.split(' ') {
                *counts.entry(word.to_owned()).or_default() += 1;
            }
        }
    }
    counts
}

/// The counts `state` holds for `words`.
pub async fn counts(state: &StateSpec, words: &[&str]) -> Result<HashMap<String, u64>, StateError> {
    let keys: Vec<Vec<Value>> = words.iter().map(|w| vec![Value::Str(Str::from(*w))]).collect();
    let values = state.open().multi_get(&keys).await?;
    Ok(words
        .iter()
        .zip(values)
        .filter_map(|(w, v)| match v {
            Some(Value::U64(n)) => Some(((*w).to_owned(), n)),
            _ => None,
        })
        .collect())
}

/// The coordinator's last committed epoch, as stored for topology `name`.
pub async fn last_committed(cluster: &LocalCluster, name: &str) -> u64 {
    match cluster.store(name).get(squall_trident::COORDINATOR_KEY).await.expect("memory store reads") {
        Some(bytes) => serde_json::from_slice::<CoordinatorMeta>(&bytes).expect("stored meta decodes").last_committed,
        None => 0,
    }
}
