//! Trident word count over fixed batches with random batch and commit failures: the counts in
//! the map state come out exact (every word of every batch counted once).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod common;

use async_trait::async_trait;
use squall::{LocalCluster, Values, values};
use squall_state::{Backend, MemoryBackend, Semantics, StateError};
use squall_trident::{Aggregate, FixedBatchSpout, StateSpec, TridentTopology};

/// Memory that refuses about one write in `one_in`, and surely the second.
struct FlakyBackend {
    inner: MemoryBackend,
    one_in: u64,
    refused: AtomicU64,
    calls: AtomicU64,
}

#[async_trait]
impl Backend for FlakyBackend {
    async fn multi_get(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        self.inner.multi_get(keys).await
    }

    async fn multi_put(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StateError> {
        // About one in `one_in`, and surely the second: a run of some 40 commits at one in
        // ten refuses none in about one run of seventy.
        if self.calls.fetch_add(1, Ordering::Relaxed) == 1 || fastrand::u64(..self.one_in) == 0 {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(StateError::Unavailable { backend: self.describe(), detail: "refused by the test".into() });
        }
        self.inner.multi_put(entries).await
    }

    fn describe(&self) -> String {
        "flaky memory".to_owned()
    }
}

const WORDS: &[&str] = &["the", "cow", "jumped", "over", "moon", "apple", "day", "keeps", "doctor", "away"];

fn batches() -> Vec<Vec<Values>> {
    common::sentences(7, WORDS, 40, 0..6, 1..8)
}

async fn counts(state: &StateSpec) -> HashMap<String, u64> {
    common::counts(state, WORDS).await.expect("memory state reads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn word_count_with_random_batch_and_commit_failures_is_exact() {
    let batches = batches();
    let want = common::expected(&batches);
    let backend = Arc::new(FlakyBackend {
        inner: MemoryBackend::new(),
        one_in: 10,
        refused: AtomicU64::new(0),
        calls: AtomicU64::new(0),
    });
    let state = StateSpec::new("word-counts", Semantics::Transactional, backend.clone());
    let failed_batches = Arc::new(AtomicU64::new(0));

    let mut trident = TridentTopology::new();
    trident.max_open_epochs(3);
    let failures = failed_batches.clone();
    let calls = AtomicU64::new(0);
    trident
        .new_stream("sentences", FixedBatchSpout::new(["sentence"], batches))
        .parallelism(2)
        .flat_map(["word"], move |values| {
            // About one sentence in thirty, and surely the fifth, fails its batch, which is
            // replayed (some 100 sentences at one in thirty failed none in one run of thirty).
            if calls.fetch_add(1, Ordering::Relaxed) == 4 || fastrand::u8(..30) == 0 {
                failures.fetch_add(1, Ordering::Relaxed);
                return Err("a random batch failure".into());
            }
            let sentence = values[0].as_str().unwrap_or_default();
            Ok(sentence.split(' ').map(|w| values![w.to_owned()]).collect())
        })
        .group_by(["word"])
        .persistent_aggregate("count", state.clone(), Aggregate::count(), 3);
    let topology = trident.build().expect("the topology builds");

    let cluster = LocalCluster::new();
    cluster.submit("trident-wc", &topology).expect("submits");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while counts(&state).await != want {
        assert!(tokio::time::Instant::now() < deadline, "counts never matched: {:?} vs {want:?}", counts(&state).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Later (empty) epochs keep committing; nothing is counted twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(counts(&state).await, want);
    cluster.kill("trident-wc", Duration::ZERO).await.expect("kills");
    assert!(failed_batches.load(Ordering::Relaxed) > 0, "no batch failed: the test proves nothing");
    assert!(backend.refused.load(Ordering::Relaxed) > 0, "no commit failed: the test proves nothing");
}

/// Killed mid-run and submitted again under the same name, the coordinator resumes after the
/// last epoch it committed: epochs already in the (transactional) state are not counted again,
/// the rest are counted once. Starting over from epoch 1 would count the first batches twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resubmitted_topology_resumes_after_the_last_committed_epoch() {
    let batches = batches();
    let want = common::expected(&batches);
    let state = StateSpec::new("word-counts", Semantics::Transactional, Arc::new(MemoryBackend::new()));
    let build = || {
        let mut trident = TridentTopology::new();
        trident.max_open_epochs(2);
        trident
            .new_stream("sentences", FixedBatchSpout::new(["sentence"], batches.clone()))
            .flat_map(["word"], |values| {
                let sentence = values[0].as_str().unwrap_or_default();
                Ok(sentence.split(' ').map(|w| values![w.to_owned()]).collect())
            })
            .group_by(["word"])
            .persistent_aggregate("count", state.clone(), Aggregate::count(), 2);
        // Slow enough to be killed halfway.
        trident.batch_interval(Duration::from_millis(20));
        trident.build().expect("the topology builds")
    };

    let cluster = LocalCluster::new();
    cluster.submit("resumed", &build()).expect("submits");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while common::last_committed(&cluster, "resumed").await < 10 {
        assert!(tokio::time::Instant::now() < deadline, "ten epochs never committed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.kill("resumed", Duration::ZERO).await.expect("kills");
    let before = common::last_committed(&cluster, "resumed").await;
    assert!(before < 40, "every batch was counted before the kill: the test proves nothing");
    assert_ne!(counts(&state).await, want);

    cluster.submit("resumed", &build()).expect("submits again");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while common::last_committed(&cluster, "resumed").await < 45 {
        assert!(tokio::time::Instant::now() < deadline, "epochs never got past the batches");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.kill("resumed", Duration::ZERO).await.expect("kills");
    assert_eq!(counts(&state).await, want);
}
