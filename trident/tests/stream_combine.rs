//! Merges, joins, aggregators of every kind, state queries and partition persist: exact
//! outcomes, with random batch failures where a replay could count twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use squall::{ComponentError, LocalCluster, Str, TopologyContext, Value, Values, values};
use squall_state::{MemoryBackend, Semantics};
use squall_trident::{
    Aggregate, Aggregator, Epoch, EpochSink, FixedBatchSpout, JoinType, ReducerAggregator, StateSpec, TridentError,
    TridentTopology,
};

/// What each sink task wrote, by epoch and task.
type Written = BTreeMap<(u64, usize), Vec<Values>>;

/// Keeps what each sink task wrote per epoch; a task writing an epoch again replaces it.
#[derive(Clone, Default)]
struct Collect {
    written: Arc<Mutex<Written>>,
    task: usize,
}

impl Collect {
    fn all(&self) -> Vec<Values> {
        let written = self.written.lock().expect("not poisoned");
        let mut all: Vec<Values> = written.values().flatten().cloned().collect();
        all.sort();
        all
    }

    async fn wait_for(&self, want: &[Values]) {
        let mut want = want.to_vec();
        want.sort();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.all();
            if got == want {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "sink never matched:\n got {got:?}\nwant {want:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl EpochSink for Collect {
    async fn open(&mut self, ctx: &TopologyContext) -> Result<(), ComponentError> {
        self.task = ctx.task_index();
        Ok(())
    }

    async fn write(&mut self, epoch: Epoch, tuples: Vec<Values>) -> Result<(), ComponentError> {
        self.written.lock().expect("not poisoned").insert((epoch.txid, self.task), tuples);
        Ok(())
    }
}

/// Fails about one call in `one_in`, and surely the second, counting the failures (streams of
/// some 20 calls at one in eight failed none in one run of fifteen).
fn flaky(failed: &Arc<AtomicU64>, one_in: u8) -> impl Fn() -> Result<(), ComponentError> + Send + Sync + 'static {
    let failed = failed.clone();
    let calls = AtomicU64::new(0);
    move || {
        if calls.fetch_add(1, Ordering::Relaxed) == 1 || fastrand::u8(..one_in) == 0 {
            failed.fetch_add(1, Ordering::Relaxed);
            return Err("a random batch failure".into());
        }
        Ok(())
    }
}

fn memory(name: &str) -> StateSpec {
    StateSpec::new(name, Semantics::Transactional, Arc::new(MemoryBackend::new()))
}

async fn wait_for_values(state: &StateSpec, want: &[(Vec<Value>, Value)]) {
    let keys: Vec<Vec<Value>> = want.iter().map(|(k, _)| k.clone()).collect();
    let want: Vec<Option<Value>> = want.iter().map(|(_, v)| Some(v.clone())).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = state.open().multi_get(&keys).await.expect("reads");
        if got == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "state never matched: {got:?} vs {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn s(text: &str) -> Value {
    Value::Str(Str::from(text))
}

/// An inner and a left outer join of two spouts' batches (keys meet only within one batch), and
/// a merge of two streams counted per word: with random batch failures after the join and the
/// merge, each output is written once and the counts are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_and_merges_are_exact_within_each_batch_through_failures() {
    // Epoch n holds batch n-1 of each spout.
    let orders = vec![
        vec![values![1u64, "ann"], values![2u64, "bob"], values![3u64, "ann"], values![4u64, "eve"]],
        vec![values![5u64, "bob"], values![6u64, "cat"]],
        vec![],
        vec![values![7u64, "ann"]],
    ];
    let customers = vec![
        vec![values!["ann", "oslo"], values!["bob", "rome"], values!["dan", "kyiv"]],
        vec![values!["ann", "lima"], values!["cat", "nice"], values!["cat", "bern"]],
        vec![values!["ann", "oslo"]],
        vec![],
    ];
    let inner = vec![
        values!["ann", 1u64, "oslo"],
        values!["bob", 2u64, "rome"],
        values!["ann", 3u64, "oslo"],
        values!["cat", 6u64, "nice"],
        values!["cat", 6u64, "bern"],
    ];
    let mut left_outer = inner.clone();
    left_outer.extend([
        values!["eve", 4u64, Value::Null],
        values!["bob", 5u64, Value::Null],
        values!["ann", 7u64, Value::Null],
    ]);
    let failed = Arc::new(AtomicU64::new(0));
    let (joined, outer) = (Collect::default(), Collect::default());
    let mut trident = TridentTopology::new();
    trident.max_open_epochs(2);
    for (suffix, kind, sink) in [("inner", JoinType::Inner, &joined), ("outer", JoinType::LeftOuter, &outer)] {
        let left = trident
            .new_stream(&format!("orders-{suffix}"), FixedBatchSpout::new(["order", "customer"], orders.clone()))
            .parallelism(2);
        let right = trident
            .new_stream(&format!("customers-{suffix}"), FixedBatchSpout::new(["name", "city"], customers.clone()));
        let fail = flaky(&failed, 8);
        trident
            .join(left, ["customer"], right, ["name"], ["customer", "order", "city"], kind)
            .parallelism(2)
            .filter(move |_| fail().map(|()| true))
            .sink(&format!("joined-{suffix}"), sink.clone(), 2);
    }
    let words =
        vec![vec![values!["red"], values!["blue"]], vec![values!["red"]], vec![values!["blue"], values!["red"]]];
    let more = vec![vec![values!["red"]], vec![], vec![values!["green"]]];
    let counts = memory("merged");
    let a = trident.new_stream("words-a", FixedBatchSpout::new(["word"], words)).parallelism(2);
    let b = trident.new_stream("words-b", FixedBatchSpout::new(["w"], more));
    let fail = flaky(&failed, 8);
    trident.merge([a, b]).filter(move |_| fail().map(|()| true)).group_by(["word"]).persistent_aggregate(
        "count",
        counts.clone(),
        Aggregate::count(),
        2,
    );
    let topology = trident.build().expect("builds");
    let cluster = LocalCluster::new();
    cluster.submit("combine", &topology).expect("submits");
    joined.wait_for(&inner).await;
    outer.wait_for(&left_outer).await;
    let want = [(vec![s("red")], Value::U64(4)), (vec![s("blue")], Value::U64(2)), (vec![s("green")], Value::U64(1))];
    wait_for_values(&counts, &want).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    joined.wait_for(&inner).await;
    cluster.kill("combine", Duration::ZERO).await.expect("kills");
    assert!(failed.load(Ordering::Relaxed) > 0, "no batch failed: the test proves nothing");
}

/// The sum of the lengths of a key's words (a reducer).
struct Lengths;

impl ReducerAggregator for Lengths {
    fn init(&self) -> Value {
        Value::U64(0)
    }

    fn reduce(&self, current: Value, tuple: &[Value]) -> Value {
        let len = tuple.first().and_then(Value::as_str).map_or(0, str::len) as u64;
        match current {
            Value::U64(n) => Value::U64(n + len),
            other => other,
        }
    }
}

/// How many tuples a group has and how many of them are distinct (a general aggregator,
/// emitting one tuple per group at its end).
struct Sizes;

impl Aggregator for Sizes {
    type State = Vec<Value>;

    fn init(&self, _epoch: Epoch) -> Self::State {
        Vec::new()
    }

    fn aggregate(&self, state: &mut Vec<Value>, tuple: &[Value], _out: &mut Vec<Values>) -> Result<(), ComponentError> {
        state.push(tuple.first().cloned().unwrap_or(Value::Null));
        Ok(())
    }

    fn complete(&self, mut state: Vec<Value>, out: &mut Vec<Values>) -> Result<(), ComponentError> {
        let all = state.len() as u64;
        state.sort();
        state.dedup();
        out.push(values![all, state.len() as u64]);
        Ok(())
    }
}

/// Grouped per-batch aggregates (a combiner, a general aggregator), a persisted reducer and an
/// ungrouped persisted count, with random batch failures: each comes out exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combiners_reducers_and_general_aggregators_are_exact_through_failures() {
    let mut rng = fastrand::Rng::with_seed(11);
    let colours = ["red", "green", "blue", "teal"];
    let batches: Vec<Vec<Values>> = (0..25)
        .map(|_| (0..rng.usize(0..8)).map(|_| values![colours[rng.usize(..colours.len())], rng.u64(0..3)]).collect())
        .collect();
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for tuple in batches.iter().flatten() {
        *counts.entry(tuple[0].as_str().unwrap_or_default()).or_default() += 1;
    }
    let total: u64 = counts.values().sum();
    let failed = Arc::new(AtomicU64::new(0));
    let (per_batch, lengths, sizes, totals) =
        (memory("per-batch"), memory("lengths"), memory("sizes"), memory("total"));
    let mut trident = TridentTopology::new();
    trident.max_open_epochs(3);
    let fail = flaky(&failed, 10);
    // A combiner: counts per colour per batch (partial counts move, not tuples), summed.
    trident
        .new_stream("a", FixedBatchSpout::new(["colour", "n"], batches.clone()))
        .parallelism(2)
        .group_by(["colour"])
        .aggregate(["count"], Aggregate::count())
        .parallelism(2)
        .filter(move |_| fail().map(|()| true))
        .group_by(["colour"])
        .persistent_aggregate("sum-counts", per_batch.clone(), Aggregate::sum("count"), 2);
    // A reducer persisted: the lengths of each colour's words.
    trident
        .new_stream("b", FixedBatchSpout::new(["colour", "n"], batches.clone()))
        .parallelism(2)
        .group_by(["colour"])
        .persistent_aggregate("lengths", lengths.clone(), Aggregate::reducer(["colour"], Lengths), 2);
    // A general aggregator per colour per batch: (tuples, distinct n), the tuples summed.
    let fail = flaky(&failed, 10);
    trident
        .new_stream("c", FixedBatchSpout::new(["colour", "n"], batches.clone()))
        .group_by(["colour"])
        .aggregate(["all", "distinct"], Aggregate::aggregator(["n"], Sizes))
        .filter(move |v| fail().map(|()| v[2].as_u64() <= v[1].as_u64() && v[2].as_u64() <= Some(3)))
        .group_by(["colour"])
        .persistent_aggregate("sizes", sizes.clone(), Aggregate::sum("all"), 1);
    // An ungrouped persisted count.
    trident
        .new_stream("d", FixedBatchSpout::new(["colour", "n"], batches.clone()))
        .parallelism(2)
        .persistent_aggregate("total", totals.clone(), Aggregate::count());
    let topology = trident.build().expect("builds");
    let cluster = LocalCluster::new();
    cluster.submit("aggregators", &topology).expect("submits");
    let want = |f: &dyn Fn(&str, u64) -> u64| -> Vec<(Vec<Value>, Value)> {
        counts.iter().map(|(c, n)| (vec![s(c)], Value::U64(f(c, *n)))).collect()
    };
    wait_for_values(&per_batch, &want(&|_, n| n)).await;
    wait_for_values(&lengths, &want(&|c, n| n * c.len() as u64)).await;
    wait_for_values(&sizes, &want(&|_, n| n)).await;
    wait_for_values(&totals, &[(vec![], Value::U64(total))]).await;
    cluster.kill("aggregators", Duration::ZERO).await.expect("kills");
    assert!(failed.load(Ordering::Relaxed) > 0, "no batch failed: the test proves nothing");
}

/// `state_query` reads a map state's values into the stream (null for a key it lacks);
/// `partition_persist` puts values, a later epoch's replacing an earlier one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_query_reads_and_partition_persist_puts() {
    let prices = memory("prices");
    prices
        .open()
        .multi_put(1, &[vec![s("apple")], vec![s("pear")]], vec![Value::U64(3), Value::U64(5)])
        .await
        .expect("writes prices");
    let orders = vec![vec![values!["apple", 2u64], values!["kiwi", 1u64]], vec![], vec![values!["pear", 4u64]]];
    let quoted = Collect::default();
    let latest = memory("latest");
    let updates = vec![
        vec![values!["a", 1u64], values!["b", 2u64]],
        vec![values!["a", 3u64]],
        vec![values!["c", 4u64], values!["b", 5u64]],
    ];
    let mut trident = TridentTopology::new();
    trident
        .new_stream("orders", FixedBatchSpout::new(["fruit", "qty"], orders))
        .state_query(&prices, ["fruit"], "price")
        .map(["fruit", "cost"], |v| {
            let cost = match (v[1].as_u64(), v[2].as_u64()) {
                (Some(qty), Some(price)) => Value::U64(qty * price),
                _ => Value::Null,
            };
            Ok(values![v[0].clone(), cost])
        })
        .sink("quoted", quoted.clone(), 1);
    trident.new_stream("updates", FixedBatchSpout::new(["key", "value"], updates)).parallelism(2).partition_persist(
        "latest",
        latest.clone(),
        ["key"],
        "value",
        2,
    );
    let topology = trident.build().expect("builds");
    let cluster = LocalCluster::new();
    cluster.submit("queries", &topology).expect("submits");
    quoted.wait_for(&[values!["apple", 6u64], values!["kiwi", Value::Null], values!["pear", 20u64]]).await;
    let want = [(vec![s("a")], Value::U64(3)), (vec![s("b")], Value::U64(5)), (vec![s("c")], Value::U64(4))];
    wait_for_values(&latest, &want).await;
    cluster.kill("queries", Duration::ZERO).await.expect("kills");
}

#[test]
fn stream_misuse_is_a_build_error_naming_it() {
    let spout = || FixedBatchSpout::new(["word", "n"], vec![]);
    let build = |describe: &dyn Fn(&mut TridentTopology)| {
        let mut trident = TridentTopology::new();
        describe(&mut trident);
        trident.build().expect_err("misuse")
    };

    let error = build(&|t| {
        t.new_stream("s", spout()).group_by(["word"]).persistent_aggregate(
            "p",
            memory("m"),
            Aggregate::aggregator(["n"], Sizes),
            1,
        )
    });
    assert!(matches!(&error, TridentError::NotPersistable(s) if s == "s"), "{error}");
    assert!(error.to_string().contains("needs a combiner or a reducer"), "{error}");

    let error = build(&|t| {
        t.new_stream("s", spout()).aggregate(["a", "b"], Aggregate::count()).sink("k", Collect::default(), 1)
    });
    assert!(matches!(&error, TridentError::OutputFields { expected: 1, got: 2, .. }), "{error}");

    let error = build(&|t| {
        let (a, b) = (t.new_stream("a", spout()), t.new_stream("b", spout()));
        t.join(a, ["word", "n"], b, ["word"], ["x"], JoinType::Inner).sink("k", Collect::default(), 1);
    });
    assert!(matches!(&error, TridentError::JoinKeys { left_keys: 2, right_keys: 1, .. }), "{error}");

    let error = build(&|t| {
        let (a, b) = (t.new_stream("a", spout()), t.new_stream("b", spout()));
        t.join(a, ["word"], b, ["word"], ["word", "n"], JoinType::Inner).sink("k", Collect::default(), 1);
    });
    assert!(matches!(&error, TridentError::OutputFields { operation: "join", expected: 3, got: 2, .. }), "{error}");

    let error = build(&|t| {
        let (a, b) = (t.new_stream("a", spout()), t.new_stream("b", spout()));
        t.join(a, ["word"], b, ["colour"], ["w", "n", "m"], JoinType::Inner).sink("k", Collect::default(), 1);
    });
    assert!(matches!(&error, TridentError::UnknownField { stream, field, .. } if stream == "b" && field == "colour"));

    let error = build(&|t| {
        let (a, b) = (t.new_stream("a", spout()), t.new_stream("b", spout()).project(["word"]));
        t.merge([a, b]).sink("k", Collect::default(), 1);
    });
    assert!(matches!(&error, TridentError::MergeFields { stream, fields: 1, expected: 2 } if stream == "b"), "{error}");

    let error = build(&|t| t.merge([]).sink("k", Collect::default(), 1));
    assert!(matches!(error, TridentError::EmptyMerge), "{error}");

    // A stream still held when the topology is built ends nowhere.
    let mut trident = TridentTopology::new();
    let held = trident.new_stream("held", spout());
    let error = trident.build().expect_err("unfinished");
    assert!(matches!(&error, TridentError::Unfinished(s) if s == "held"), "{error}");
    drop(held);
}

/// Batches larger than a data tuple's chunk of rows, and rows whose width changes from one to
/// the next (each change starts a new chunk), with random batch failures: exact counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_many_chunks_and_changing_widths_count_exactly() {
    let words = ["ant", "bee", "cat", "dog", "elk"];
    let batches: Vec<Vec<Values>> =
        (0..4).map(|b| (0..3_000).map(|i| values![words[(i * 7 + b) % words.len()]]).collect()).collect();
    let mut want: HashMap<String, u64> = HashMap::new();
    for tuple in batches.iter().flatten() {
        *want.entry(tuple[0].as_str().unwrap_or_default().to_owned()).or_default() += 1;
    }
    let failed = Arc::new(AtomicU64::new(0));
    let (counts, wide) = (memory("chunked"), memory("wide"));
    let mut trident = TridentTopology::new();
    trident.max_open_epochs(2);
    let fail = flaky(&failed, 6);
    trident
        .new_stream("words", FixedBatchSpout::new(["word"], batches.clone()))
        .parallelism(2)
        .filter(move |_| if fastrand::u16(..500) == 0 { fail().map(|()| true) } else { Ok(true) })
        .group_by(["word"])
        .persistent_aggregate("count", counts.clone(), Aggregate::count(), 2);
    let fail = flaky(&failed, 6);
    trident
        .new_stream("ragged", FixedBatchSpout::new(["word"], batches))
        // Every other row carries one more value than the stream's one field.
        .map(["word"], |v| {
            Ok(if v[0].as_str() < Some("c") { values![v[0].clone(), 1u64] } else { values![v[0].clone()] })
        })
        .shuffle()
        .filter(move |_| if fastrand::u16(..500) == 0 { fail().map(|()| true) } else { Ok(true) })
        .group_by(["word"])
        .persistent_aggregate("wide", wide.clone(), Aggregate::count(), 1);
    let topology = trident.build().expect("builds");
    let cluster = LocalCluster::new();
    cluster.submit("chunks", &topology).expect("submits");
    let want: Vec<(Vec<Value>, Value)> = want.iter().map(|(w, n)| (vec![s(w)], Value::U64(*n))).collect();
    wait_for_values(&counts, &want).await;
    wait_for_values(&wide, &want).await;
    cluster.kill("chunks", Duration::ZERO).await.expect("kills");
    assert!(failed.load(Ordering::Relaxed) > 0, "no batch failed: the test proves nothing");
}
