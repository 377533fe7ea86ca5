//! Kafka as a Trident batch spout against a real broker: opaque and transactional spouts with
//! random batch failures count every record exactly once, partitions added while they run
//! included, and commit their progress to Kafka.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{committed, end_offsets, fill, wait_until};
use squall::{LocalCluster, Str, Value, values};
use squall_kafka::testing::{KafkaBroker, read_committed};
use squall_kafka::{KafkaBatchSpout, KafkaSpoutConfig};
use squall_state::{MemoryBackend, Semantics};
use squall_trident::SpoutKind;
use squall_trident::{Aggregate, StateSpec, TridentError, TridentTopology};

const PARTITIONS: i32 = 4;
const PER_PARTITION: usize = 3_000;

fn broker() -> KafkaBroker {
    KafkaBroker::start().unwrap_or_else(|e| panic!("cannot start kafka: {e}"))
}

/// Records per partition, as counted in `state` (the partition is the value's prefix).
async fn counts(state: &StateSpec) -> HashMap<String, u64> {
    counts_of(state, PARTITIONS).await
}

/// Records of each of partitions `0..partitions`, as counted in `state`.
async fn counts_of(state: &StateSpec, partitions: i32) -> HashMap<String, u64> {
    let keys: Vec<Vec<Value>> = (0..partitions).map(|p| vec![Value::Str(Str::from(p.to_string()))]).collect();
    let values = state.open().multi_get(&keys).await.expect("memory state reads");
    (0..partitions)
        .zip(values)
        .filter_map(|(p, v)| match v {
            Some(Value::U64(n)) => Some((p.to_string(), n)),
            _ => None,
        })
        .collect()
}

/// Runs, as topology `name` in a new local cluster, a count of `spout`'s records per partition
/// (the partition read from a value `<partition>:…`) into `state`, with every 2,000th record
/// failing its batch; returns the cluster and the count of failures.
fn count_per_partition(spout: KafkaBatchSpout, state: &StateSpec, name: &str) -> (LocalCluster, Arc<AtomicU64>) {
    let failed = Arc::new(AtomicU64::new(0));
    let failures = failed.clone();
    let calls = AtomicU64::new(0);
    let mut trident = TridentTopology::new();
    trident.max_open_epochs(3);
    trident
        .new_stream("events", spout)
        .parallelism(2)
        .flat_map(["p"], move |v| {
            // Every 2,000th record fails its batch: a fixed rate, so that every run fails some
            // batches (one in 3,000 at random missed all of them in one run out of twenty).
            if calls.fetch_add(1, Ordering::Relaxed) % 2_000 == 1_999 {
                failures.fetch_add(1, Ordering::Relaxed);
                return Err("a batch failure on purpose".into());
            }
            let text = match &v[4] {
                Value::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                other => return Err(format!("a value that is not bytes: {other:?}").into()),
            };
            Ok(vec![values![text.split(':').next().unwrap_or_default().to_owned()]])
        })
        .group_by(["p"])
        .persistent_aggregate("count", state.clone(), Aggregate::count(), 2);
    let topology = trident.build().expect("builds");
    let cluster = LocalCluster::new();
    cluster.submit(name, &topology).expect("submits");
    (cluster, failed)
}

/// Counts the records of each partition through `spout` with every 2,000th record failing
/// its batch, and checks the counts and the group's commits.
async fn counts_every_record_once(spout: KafkaBatchSpout, semantics: Semantics, broker: &KafkaBroker, topic: &str) {
    let want: HashMap<String, u64> = (0..PARTITIONS).map(|p| (p.to_string(), PER_PARTITION as u64)).collect();
    let state = StateSpec::new("per-partition", semantics, Arc::new(MemoryBackend::new()));
    let (cluster, failed) = count_per_partition(spout, &state, "kafka-trident");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while counts(&state).await != want {
        assert!(tokio::time::Instant::now() < deadline, "counts never matched: {:?}", counts(&state).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bootstrap = broker.bootstrap_servers();
    let ends = end_offsets(&bootstrap, topic, PARTITIONS);
    wait_until("commits at the end offsets", Duration::from_secs(30), || {
        committed(&bootstrap, "trident", topic, PARTITIONS).iter().map(|(o, _)| *o).collect::<Vec<_>>() == ends
    })
    .await;
    assert!(committed(&bootstrap, "trident", topic, PARTITIONS).iter().all(|(_, m)| m == "kafka-trident"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(counts(&state).await, want, "later (empty) epochs count nothing again");
    cluster.kill("kafka-trident", Duration::ZERO).await.expect("kills");
    assert!(failed.load(Ordering::Relaxed) > 0, "no batch failed: the test proves nothing");
}

fn config(broker: &KafkaBroker, topic: &str) -> KafkaSpoutConfig {
    // Small batches: many epochs, each failure replays a few of them.
    KafkaSpoutConfig::new(broker.bootstrap_servers(), &[topic]).with_group_id("trident").with_max_poll_records(200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opaque_kafka_spout_counts_every_record_once_through_failures() {
    let _ = tracing_subscriber::fmt().with_env_filter("info").try_init();
    let broker = broker();
    broker.create_topic("opaque", PARTITIONS as usize).expect("topic");
    fill(&broker.bootstrap_servers(), "opaque", PARTITIONS, PER_PARTITION).await;
    let spout = KafkaBatchSpout::opaque(config(&broker, "opaque"));
    counts_every_record_once(spout, Semantics::Opaque, &broker, "opaque").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_kafka_spout_counts_every_record_once_through_failures() {
    let broker = broker();
    broker.create_topic("transactional", PARTITIONS as usize).expect("topic");
    fill(&broker.bootstrap_servers(), "transactional", PARTITIONS, PER_PARTITION).await;
    let spout = KafkaBatchSpout::transactional(config(&broker, "transactional"));
    counts_every_record_once(spout, Semantics::Transactional, &broker, "transactional").await;
}

/// Counts per partition through a spout of `kind` with every 2,000th record failing its batch,
/// while the topic grows from 2 to 6 partitions: every record of the new partitions is counted
/// exactly once too, and the group's commits reach the end of all six.
async fn counts_records_of_partitions_added_while_running(kind: SpoutKind) {
    const BEFORE: i32 = 2;
    const AFTER: i32 = 6;
    const FIRST: usize = 1_500;
    const SECOND: usize = 1_000;
    let broker = broker();
    let bootstrap = broker.bootstrap_servers();
    let topic = format!("growing-{kind:?}").to_lowercase();
    broker.create_topic(&topic, BEFORE as usize).expect("topic");
    fill(&bootstrap, &topic, BEFORE, FIRST).await;
    let config = config(&broker, &topic).with_partition_refresh(Duration::from_millis(300));
    let (spout, semantics) = match kind {
        SpoutKind::Transactional => (KafkaBatchSpout::transactional(config), Semantics::Transactional),
        _ => (KafkaBatchSpout::opaque(config), Semantics::Opaque),
    };
    let state = StateSpec::new("per-partition", semantics, Arc::new(MemoryBackend::new()));
    let (cluster, failed) = count_per_partition(spout, &state, "kafka-growing");
    // Running, its partitions assigned and read: then the topic grows.
    let first: HashMap<String, u64> = (0..BEFORE).map(|p| (p.to_string(), FIRST as u64)).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while counts_of(&state, BEFORE).await != first {
        assert!(
            tokio::time::Instant::now() < deadline,
            "first counts never matched: {:?}",
            counts_of(&state, BEFORE).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    broker.add_partitions(&topic, AFTER as usize).expect("more partitions");
    fill(&bootstrap, &topic, AFTER, SECOND).await;
    let want: HashMap<String, u64> =
        (0..AFTER).map(|p| (p.to_string(), if p < BEFORE { FIRST + SECOND } else { SECOND } as u64)).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while counts_of(&state, AFTER).await != want {
        assert!(tokio::time::Instant::now() < deadline, "counts never matched: {:?}", counts_of(&state, AFTER).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ends = end_offsets(&bootstrap, &topic, AFTER);
    wait_until("commits at the end offsets of all partitions", Duration::from_secs(30), || {
        committed(&bootstrap, "trident", &topic, AFTER).iter().map(|(o, _)| *o).collect::<Vec<_>>() == ends
    })
    .await;
    assert!(committed(&bootstrap, "trident", &topic, AFTER).iter().all(|(_, m)| m == "kafka-growing"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(counts_of(&state, AFTER).await, want, "later (empty) epochs count nothing again");
    cluster.kill("kafka-growing", Duration::ZERO).await.expect("kills");
    assert!(failed.load(Ordering::Relaxed) > 0, "no batch failed: the test proves nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opaque_kafka_spout_counts_partitions_added_while_running_once() {
    counts_records_of_partitions_added_while_running(SpoutKind::Opaque).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_kafka_spout_counts_partitions_added_while_running_once() {
    counts_records_of_partitions_added_while_running(SpoutKind::Transactional).await;
}

#[test]
fn an_opaque_spout_into_a_transactional_state_is_a_build_error() {
    let spout = KafkaBatchSpout::opaque(KafkaSpoutConfig::new("127.0.0.1:9", &["t"]));
    let state = StateSpec::new("s", Semantics::Transactional, Arc::new(MemoryBackend::new()));
    let mut trident = TridentTopology::new();
    trident.new_stream("events", spout).group_by(["partition"]).persistent_aggregate(
        "count",
        state,
        Aggregate::count(),
        1,
    );
    let error = trident.build().expect_err("an opaque spout needs an opaque state");
    assert!(matches!(error, TridentError::NotExact { .. }), "{error}");
    assert!(error.to_string().contains("must be Semantics::Opaque"), "{error}");
}

/// Kafka → opaque spout → transactional Kafka sink, with every 2,000th record failing its
/// batch: a `read_committed` consumer of the output sees every input record exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_kafka_sink_writes_every_record_once_through_failures() {
    use squall_kafka::{KafkaTransactionalSink, ProducerRecord};
    let broker = broker();
    let bootstrap = broker.bootstrap_servers();
    for (topic, partitions) in [("sink-in", PARTITIONS as usize), ("sink-out", 2), ("sink-progress", 1)] {
        broker.create_topic(topic, partitions).expect("topic");
    }
    fill(&bootstrap, "sink-in", PARTITIONS, PER_PARTITION).await;
    let failed = Arc::new(AtomicU64::new(0));
    let failures = failed.clone();
    let calls = AtomicU64::new(0);
    let sink = KafkaTransactionalSink::new(bootstrap.clone(), "sink-progress", |v: &[Value]| {
        let value = match &v[0] {
            Value::Bytes(bytes) => bytes.to_vec(),
            other => return Err(format!("not bytes: {other:?}").into()),
        };
        Ok(ProducerRecord {
            topic: "sink-out".into(),
            partition: None,
            key: None,
            value: Some(value),
            headers: Vec::new(),
        })
    });
    let mut trident = TridentTopology::new();
    trident.max_open_epochs(3);
    trident
        .new_stream("events", KafkaBatchSpout::opaque(config(&broker, "sink-in")))
        .parallelism(2)
        .filter(move |_| {
            if calls.fetch_add(1, Ordering::Relaxed) % 2_000 == 1_999 {
                failures.fetch_add(1, Ordering::Relaxed);
                return Err("a batch failure on purpose".into());
            }
            Ok(true)
        })
        .project(["value"])
        .sink("out", sink, 2);
    let topology = trident.build().expect("builds");
    let cluster = LocalCluster::new();
    cluster.submit("kafka-sink", &topology).expect("submits");
    let total = PARTITIONS as usize * PER_PARTITION;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut seen = Vec::new();
    while seen.len() < total {
        assert!(tokio::time::Instant::now() < deadline, "only {} of {total} records written", seen.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let bootstrap = bootstrap.clone();
        seen = tokio::task::spawn_blocking(move || read_committed(&bootstrap, "sink-out", 2).expect("reads"))
            .await
            .expect("read");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.kill("kafka-sink", Duration::ZERO).await.expect("kills");
    let seen = tokio::task::spawn_blocking(move || read_committed(&bootstrap, "sink-out", 2).expect("reads"))
        .await
        .expect("read");
    let distinct: std::collections::BTreeSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), total, "duplicates or losses");
    assert_eq!(distinct.len(), total);
    for p in 0..PARTITIONS {
        for i in 0..PER_PARTITION {
            assert!(distinct.contains(&format!("{p}:{i}")), "{p}:{i} missing");
        }
    }
    assert!(failed.load(Ordering::Relaxed) > 0, "no batch failed: the test proves nothing");
}
