//! Bad input: the state backend goes away mid-run. A Trident word count persists into a real
//! Redis server that is stopped for several seconds and started again on the same port and
//! data: meanwhile every epoch fails at its commit and is tried again, the failure names the
//! state and the server, no epoch commits; afterwards the counts come out exact.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use squall::{LocalCluster, Values, values};
use squall_state::testing::RedisServer;
use squall_state::{RedisBackend, Semantics};
use squall_trident::{Aggregate, FixedBatchSpout, StateSpec, TridentTopology};
use tokio::time::Instant;

const WORDS: &[&str] = &["storm", "squall", "wind", "rain", "cloud", "sky", "sea", "wave", "gust", "calm"];
const BATCHES: usize = 200;

/// `BATCHES` batches of 1 to 4 sentences of 1 to 6 words: none is empty, so every epoch with a
/// batch has something to write.
fn batches() -> Vec<Vec<Values>> {
    common::sentences(0x5a11, WORDS, BATCHES, 1..5, 1..7)
}

/// The counts in Redis, or `None` while it cannot be read.
async fn counts(state: &StateSpec) -> Option<HashMap<String, u64>> {
    common::counts(state, WORDS).await.ok()
}

/// The error count and last error of component `id`.
fn errors_of(cluster: &LocalCluster, id: &str) -> (u64, Option<String>) {
    let metrics = cluster.metrics("outage").expect("the topology runs");
    let component = metrics.component(id).expect("the component exists");
    (component.errors, component.last_error)
}

/// How many of the coordinator's tuples (batches and commits) failed.
fn coordinator_failed(cluster: &LocalCluster) -> u64 {
    let metrics = cluster.metrics("outage").expect("the topology runs");
    metrics.component(squall_trident::COORDINATOR_COMPONENT).expect("the coordinator").failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_fails_epochs_visibly_commits_nothing_and_the_counts_end_exact() {
    let mut redis = RedisServer::start().unwrap_or_else(|e| panic!("cannot start redis: {e}"));
    let url = redis.url();
    let batches = batches();
    let want = common::expected(&batches);
    let backend = RedisBackend::new(&url).unwrap_or_else(|e| panic!("{e}"));
    let state = StateSpec::new("word-counts", Semantics::Transactional, Arc::new(backend));
    let mut trident = TridentTopology::new();
    trident.max_open_epochs(3);
    trident.batch_interval(Duration::from_millis(20));
    trident
        .new_stream("sentences", FixedBatchSpout::new(["sentence"], batches))
        .parallelism(2)
        .flat_map(["word"], |values| {
            let sentence = values[0].as_str().unwrap_or_default();
            Ok(sentence.split(' ').map(|w| values![w.to_owned()]).collect())
        })
        .group_by(["word"])
        .persistent_aggregate("count", state.clone(), Aggregate::count(), 2);
    let topology = trident.build().expect("the topology builds");
    let cluster = LocalCluster::new();
    cluster.submit("outage", &topology).expect("submits");

    // Mid-run: some epochs committed, most batches still to come.
    let deadline = Instant::now() + Duration::from_secs(30);
    while common::last_committed(&cluster, "outage").await < 20 {
        assert!(Instant::now() < deadline, "twenty epochs never committed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    redis.stop();
    let stopped = Instant::now();
    let (errors_before, _) = errors_of(&cluster, "count");

    // What a user sees: the counting tasks' error names the state and the server.
    let deadline = Instant::now() + Duration::from_secs(10);
    let error = loop {
        let (errors, last) = errors_of(&cluster, "count");
        if let Some(error) = last.filter(|_| errors > errors_before) {
            break error;
        }
        assert!(Instant::now() < deadline, "no commit failed while redis was down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(error.contains("not committed to state `word-counts`"), "{error}");
    assert!(error.contains(&format!("state backend {url} failed")), "{error}");
    assert!(error.contains("check that it is running and reachable"), "{error}");
    let frozen = common::last_committed(&cluster, "outage").await;
    assert!(frozen < BATCHES as u64 / 2, "{frozen} epochs committed before the outage: the test proves little");
    let coordinator_failed_before = coordinator_failed(&cluster);

    // Down for six seconds: epochs keep failing and going again, none commits.
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(stopped.elapsed())).await;
    assert_eq!(common::last_committed(&cluster, "outage").await, frozen, "an epoch committed while its state was down");
    let (errors_during, _) = errors_of(&cluster, "count");
    let failed_during = coordinator_failed(&cluster);
    assert!(errors_during >= errors_before + 3, "commits were not tried again: {errors_before} → {errors_during}");
    assert!(failed_during >= coordinator_failed_before + 3, "epochs were not failed and replayed");

    // Back on the same port and data: every epoch goes through once.
    redis.restart().unwrap_or_else(|e| panic!("cannot restart redis: {e}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while counts(&state).await.as_ref() != Some(&want) {
        assert!(Instant::now() < deadline, "counts never matched: {:?} vs {want:?}", counts(&state).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Empty epochs go on committing; nothing is counted twice later either.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(counts(&state).await, Some(want));
    assert!(
        common::last_committed(&cluster, "outage").await >= BATCHES as u64,
        "the epochs of the batches all committed"
    );
    cluster.kill("outage", Duration::ZERO).await.expect("kills");
    eprintln!(
        "redis down 6 s: {} commit errors, {} coordinator fails; the error: {error}",
        errors_during - errors_before,
        failed_during - coordinator_failed_before
    );
}
