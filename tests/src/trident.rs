//! The Trident word count the cluster tests run (`bin/trident_topology.rs`) and check: fixed
//! batches from a seed, so the test knows every count to expect.

use std::collections::HashMap;

use squall::{Value, Values, values};

/// How many batches the test topology's spout has; later epochs are empty.
pub const BATCHES: usize = 300;

/// The words of the sentences.
pub const WORDS: [&str; 10] = ["storm", "squall", "wind", "rain", "cloud", "sky", "sea", "wave", "gust", "calm"];

/// `batches` batches of up to 9 sentences of 1 to 6 words.
pub fn batches(batches: usize) -> Vec<Vec<Values>> {
    let mut rng = fastrand::Rng::with_seed(0x7e1d);
    (0..batches)
        .map(|_| {
            (0..rng.usize(0..10))
                .map(|_| {
                    let words: Vec<&str> = (0..rng.usize(1..7)).map(|_| WORDS[rng.usize(..WORDS.len())]).collect();
                    values![words.join(" ")]
                })
                .collect()
        })
        .collect()
}

/// Every word's count over `batches`.
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
