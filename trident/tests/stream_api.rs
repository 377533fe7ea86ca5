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
