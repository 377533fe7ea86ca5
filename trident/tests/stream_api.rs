//! The stream API's per-tuple operations and its build errors.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use squall::{LocalCluster, Str, Value, values};
use squall_state::{MemoryBackend, Semantics};
use squall_trident::{Aggregate, FixedBatchSpout, StateSpec, TridentError, TridentTopology};

/// `each` appends fields, `filter` drops, `peek` sees every tuple, `project` keeps some fields,
/// and a sum over the new field comes out exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_filter_peek_and_project_compose() {
    let batches = vec![
        vec![values!["a b"], values!["b c c"]],
        vec![values!["skip me"], values!["a"]],
        vec![],
        vec![values!["c"]],
    ];
    let state = StateSpec::new("lengths", Semantics::Transactional, Arc::new(MemoryBackend::new()));
    let peeked = Arc::new(AtomicU64::new(0));
    let seen = peeked.clone();
    let mut trident = TridentTopology::new();
    trident
        .new_stream("lines", FixedBatchSpout::new(["line"], batches))
        .filter(|v| Ok(!v[0].as_str().unwrap_or_default().starts_with("skip")))
        .each(["word"], |v| Ok(v[0].as_str().unwrap_or_default().split(' ').map(|w| values![w.to_owned()]).collect()))
        .peek(move |_| {
            seen.fetch_add(1, Ordering::Relaxed);
        })
        .each(["len"], |v| Ok(vec![values![v[1].as_str().unwrap_or_default().len() as u64]]))
        .project(["word", "len"])
        .group_by(["word"])
        .persistent_aggregate("sum", state.clone(), Aggregate::sum("len"), 1);
    let topology = trident.build().expect("builds");
    let cluster = LocalCluster::new();
    cluster.submit("each", &topology).expect("submits");
    // a: 2 (len 1 each), b: 2, c: 3.
    let want: HashMap<&str, u64> = HashMap::from([("a", 2), ("b", 2), ("c", 3)]);
    let keys: Vec<Vec<Value>> = ["a", "b", "c"].iter().map(|w| vec![Value::Str(Str::from(*w))]).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = state.open().multi_get(&keys).await.expect("reads");
        let got: HashMap<&str, u64> = ["a", "b", "c"]
            .into_iter()
            .zip(got)
            .filter_map(|(w, v)| match v {
                Some(Value::U64(n)) => Some((w, n)),
                Some(Value::I64(n)) => u64::try_from(n).ok().map(|n| (w, n)),
                _ => None,
            })
            .collect();
        if got == want {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "sums never matched: {got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.kill("each", Duration::ZERO).await.expect("kills");
    assert!(peeked.load(Ordering::Relaxed) >= 7, "peek saw every word of every attempt");
}

#[test]
fn an_unknown_field_and_an_unfinished_stream_are_build_errors() {
    let state = || StateSpec::new("s", Semantics::Transactional, Arc::new(MemoryBackend::new()));
    let mut trident = TridentTopology::new();
    trident.new_stream("lines", FixedBatchSpout::new(["line"], vec![])).group_by(["word"]).persistent_aggregate(
        "count",
        state(),
        Aggregate::count(),
        1,
    );
    let error = trident.build().expect_err("no field `word`");
    assert!(matches!(&error, TridentError::UnknownField { field, .. } if field == "word"), "{error}");
    assert!(error.to_string().contains("stream `lines` has no field `word` (it has: line)"), "{error}");

    let mut trident = TridentTopology::new();
    let _ = trident.new_stream("lines", FixedBatchSpout::new(["line"], vec![])).project(["line"]);
    let error = trident.build().expect_err("the stream ends nowhere");
    assert!(matches!(&error, TridentError::Unfinished(s) if s == "lines"), "{error}");
}

fn sentences() -> Vec<Vec<squall::Values>> {
    let mut rng = fastrand::Rng::with_seed(3);
    let words = ["red", "green", "blue", "cyan", "pink"];
    (0..30)
        .map(|_| {
            (0..rng.usize(0..6))
                .map(|_| {
                    let s: Vec<&str> = (0..rng.usize(1..6)).map(|_| words[rng.usize(..words.len())]).collect();
                    values![s.join(" ")]
                })
                .collect()
        })
        .collect()
}

async fn wait_for_counts(state: &StateSpec, keys: &[&str], want: &HashMap<String, u64>) {
    let query: Vec<Vec<Value>> = keys.iter().map(|w| vec![Value::Str(Str::from(*w))]).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got: HashMap<String, u64> = keys
            .iter()
            .zip(state.open().multi_get(&query).await.expect("reads"))
            .filter_map(|(k, v)| if let Some(Value::U64(n)) = v { Some(((*k).to_owned(), n)) } else { None })
            .collect();
        if &got == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "counts never matched: {got:?} vs {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Repartitions in the middle of a stream (shuffle, then partition_by), with about one batch in
/// ten failing in the second node: the counts come out exact; global() sums a whole batch in
/// one task; broadcast() gives every task every tuple.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repartitions_keep_counts_exact_through_failures() {
    let batches = sentences();
    let mut want: HashMap<String, u64> = HashMap::new();
    let mut total = 0u64;
    for v in batches.iter().flatten() {
        for w in v[0].as_str().unwrap_or_default().split(' ') {
            *want.entry(w.to_owned()).or_default() += 1;
            total += 1;
        }
    }
    let words = ["red", "green", "blue", "cyan", "pink"];
    let counts = StateSpec::new("counts", Semantics::Transactional, Arc::new(MemoryBackend::new()));
    let totals = StateSpec::new("totals", Semantics::Transactional, Arc::new(MemoryBackend::new()));
    let doubled = StateSpec::new("doubled", Semantics::Transactional, Arc::new(MemoryBackend::new()));
    let failed = Arc::new(AtomicU64::new(0));
    let failures = failed.clone();
    let calls = AtomicU64::new(0);
    let mut trident = TridentTopology::new();
    trident.max_open_epochs(3);
    let split = |v: &[Value]| Ok(v[0].as_str().unwrap_or_default().split(' ').map(|w| values![w.to_owned()]).collect());
    trident
        .new_stream("sentences", FixedBatchSpout::new(["sentence"], batches.clone()))
        .parallelism(2)
        .shuffle()
        .parallelism(3)
        .flat_map(["word"], move |v| {
            // About one in forty, and surely the fifth call: with some 75 calls in all, a
            // purely random choice failed none in about one run of seven.
            if calls.fetch_add(1, Ordering::Relaxed) == 4 || fastrand::u8(..40) == 0 {
                failures.fetch_add(1, Ordering::Relaxed);
                return Err("a random batch failure".into());
            }
            split(v)
        })
        .partition_by(["word"])
        .parallelism(2)
        .group_by(["word"])
        .persistent_aggregate("count", counts.clone(), Aggregate::count(), 2);
    trident
        .new_stream("sentences-2", FixedBatchSpout::new(["sentence"], batches.clone()))
        .parallelism(2)
        .flat_map(["word"], split)
        .global()
        .map(["all"], |_| Ok(values!["all"]))
        .group_by(["all"])
        .persistent_aggregate("total", totals.clone(), Aggregate::count(), 1);
    trident
        .new_stream("sentences-3", FixedBatchSpout::new(["sentence"], batches))
        .flat_map(["word"], split)
        .broadcast()
        .parallelism(2)
        .group_by(["word"])
        .persistent_aggregate("twice", doubled.clone(), Aggregate::count(), 1);
    // aggregate: one count per batch, summed per epoch into one key.
    let summed = StateSpec::new("summed", Semantics::Transactional, Arc::new(MemoryBackend::new()));
    trident
        .new_stream("sentences-4", FixedBatchSpout::new(["sentence"], sentences()))
        .parallelism(2)
        .flat_map(["word"], split)
        .aggregate(["n"], Aggregate::count())
        .map(["k", "n"], |v| Ok(values!["all", v[0].clone()]))
        .group_by(["k"])
        .persistent_aggregate("sum", summed.clone(), Aggregate::sum("n"), 1);
    let topology = trident.build().expect("builds");
    let cluster = LocalCluster::new();
    cluster.submit("repartitions", &topology).expect("submits");
    wait_for_counts(&summed, &["all"], &HashMap::from([("all".to_owned(), total)])).await;
    wait_for_counts(&counts, &words, &want).await;
    wait_for_counts(&totals, &["all"], &HashMap::from([("all".to_owned(), total)])).await;
    let twice: HashMap<String, u64> = want.iter().map(|(w, n)| (w.clone(), 2 * n)).collect();
    wait_for_counts(&doubled, &words, &twice).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_for_counts(&counts, &words, &want).await;
    cluster.kill("repartitions", Duration::ZERO).await.expect("kills");
    assert!(failed.load(Ordering::Relaxed) > 0, "no batch failed: the test proves nothing");
}
