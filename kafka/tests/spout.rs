//! The Kafka spout against a real broker, in local mode: exact outcomes per record.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Recorder, Seen, committed, end_offsets, fill, wait_until};
use squall::LocalCluster;
use squall::prelude::*;
use squall_kafka::testing::KafkaBroker;
use squall_kafka::{Exhausted, FirstPoll, Guarantee, KafkaSpout, KafkaSpoutConfig, RetryPolicy};

fn broker() -> KafkaBroker {
    KafkaBroker::start().unwrap_or_else(|e| panic!("cannot start kafka: {e}"))
}

fn spout_config(broker: &KafkaBroker, topic: &str) -> KafkaSpoutConfig {
    KafkaSpoutConfig::new(broker.bootstrap_servers(), &[topic])
        .with_commit_period(Duration::from_millis(500))
        .with_partition_refresh(Duration::from_millis(500))
        .with_retry(
            RetryPolicy {
                initial_delay: Duration::ZERO,
                period: Duration::from_millis(10),
                max_delay: Duration::from_millis(200),
                max_retries: None,
            },
            Exhausted::Ack,
        )
}

fn topology(config: KafkaSpoutConfig, spouts: u32, seen: &Arc<Mutex<Seen>>, fail_percent: u32) -> Topology {
    let mut b = TopologyBuilder::new();
    b.config_mut().set("topology.message.timeout.secs", 10).unwrap();
    b.spout("kafka", KafkaSpout::new(config), spouts);
    b.bolt("record", Recorder { seen: seen.clone(), fail_percent }, 2).shuffle_grouping("kafka");
    b.build().expect("a valid topology")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_is_processed_with_failures_and_commits_reach_the_end() {
    const PARTITIONS: i32 = 8;
    const PER_PARTITION: usize = 12_500;
    let broker = broker();
    broker.create_topic("events", PARTITIONS as usize).expect("topic");
    let bootstrap = broker.bootstrap_servers();
    fill(&bootstrap, "events", PARTITIONS, PER_PARTITION).await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let cluster = LocalCluster::new();
    let config = spout_config(&broker, "events").with_group_id("exact");
    cluster.submit("exact", &topology(config, 4, &seen, 10)).unwrap();
    wait_until("every record processed", Duration::from_secs(120), || {
        seen.lock().unwrap().times.len() == PARTITIONS as usize * PER_PARTITION
    })
    .await;
    let ends = end_offsets(&bootstrap, "events", PARTITIONS);
    wait_until("commits at the end offsets", Duration::from_secs(30), || {
        committed(&bootstrap, "exact", "events", PARTITIONS).iter().map(|(o, _)| *o).collect::<Vec<_>>() == ends
    })
    .await;
    // Each task shows its partitions in its status: all 8 between the 4 tasks, none behind.
    wait_until("every partition's lag at zero in the status", Duration::from_secs(30), || {
        let Ok(metrics) = cluster.metrics("exact") else { return false };
        let Ok(spout) = metrics.component("kafka") else { return false };
        let partitions: Vec<&serde_json::Value> =
            spout.status.values().filter_map(|s| s.get("partitions")?.as_array()).flatten().collect();
        spout.status.len() == 4
            && partitions.len() == PARTITIONS as usize
            && partitions
                .iter()
                .all(|p| p["lag"] == 0 && p["committed"] == PER_PARTITION as i64 && p["uncommitted"] == 0)
    })
    .await;
    cluster.kill("exact", Duration::ZERO).await.unwrap();
    let seen = seen.lock().unwrap();
    assert!(seen.failed > 0, "the bolt failed some tuples");
    for p in 0..PARTITIONS {
        for o in 0..PER_PARTITION as i64 {
            assert!(seen.times.contains_key(&(p, o)), "record {p}/{o} never processed");
        }
        assert_eq!(seen.spout_tasks[&p].len(), 1, "partition {p} read by tasks {:?}", seen.spout_tasks[&p]);
    }
    let metadata = committed(&bootstrap, "exact", "events", PARTITIONS);
    assert!(metadata.iter().all(|(_, m)| m == "exact"), "commits carry the topology's id: {metadata:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_poll_strategies_and_restarts_follow_the_committed_offsets() {
    let broker = broker();
    broker.create_topic("firsts", 1).expect("topic");
    let bootstrap = broker.bootstrap_servers();
    fill(&bootstrap, "firsts", 1, 100).await;

    // LATEST skips what is there; what comes after is read.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let cluster = LocalCluster::new();
    let config = spout_config(&broker, "firsts").with_group_id("latest").with_first_poll(FirstPoll::Latest);
    cluster.submit("latest", &topology(config, 1, &seen, 0)).unwrap();
    // Time to take up its partition at the end (were it later, the new records would be
    // skipped too and the wait below would fail).
    tokio::time::sleep(Duration::from_secs(3)).await;
    fill(&bootstrap, "firsts", 1, 10).await;
    wait_until("the 10 new records", Duration::from_secs(30), || seen.lock().unwrap().times.len() == 10).await;
    cluster.kill("latest", Duration::ZERO).await.unwrap();
    let offsets: Vec<i64> = seen.lock().unwrap().times.keys().map(|(_, o)| *o).collect();
    assert_eq!(offsets, (100..110).collect::<Vec<_>>(), "LATEST read only what came after it started");

    // UNCOMMITTED_EARLIEST (the default) with no commit: everything, once; then a restart of
    // the same topology re-emits nothing committed (STORM-2666).
    let seen = Arc::new(Mutex::new(Seen::default()));
    let config = spout_config(&broker, "firsts").with_group_id("again");
    cluster.submit("again", &topology(config.clone(), 1, &seen, 0)).unwrap();
    wait_until("all 110", Duration::from_secs(30), || seen.lock().unwrap().times.len() == 110).await;
    wait_until("the commit", Duration::from_secs(30), || committed(&bootstrap, "again", "firsts", 1)[0].0 == 110).await;
    cluster.kill("again", Duration::ZERO).await.unwrap();
    fill(&bootstrap, "firsts", 1, 5).await;
    let after = Arc::new(Mutex::new(Seen::default()));
    cluster.submit("again", &topology(config.clone(), 1, &after, 0)).unwrap();
    wait_until("the 5 new records", Duration::from_secs(30), || after.lock().unwrap().times.len() == 5).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.kill("again", Duration::ZERO).await.unwrap();
    let offsets: Vec<i64> = after.lock().unwrap().times.keys().map(|(_, o)| *o).collect();
    assert_eq!(offsets, (110..115).collect::<Vec<_>>(), "a restart re-emitted committed records");

    // EARLIEST under another topology id (a redeploy) starts over; under the same id it resumes.
    let redeploy = Arc::new(Mutex::new(Seen::default()));
    let config = config.with_first_poll(FirstPoll::Earliest);
    cluster.submit("redeployed", &topology(config, 1, &redeploy, 0)).unwrap();
    wait_until("all 115 again", Duration::from_secs(30), || redeploy.lock().unwrap().times.len() == 115).await;
    cluster.kill("redeployed", Duration::ZERO).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarantees_zero_ackers_and_the_uncommitted_limit() {
    let broker = broker();
    broker.create_topic("guarantees", 2).expect("topic");
    let bootstrap = broker.bootstrap_servers();
    fill(&bootstrap, "guarantees", 2, 500).await;

    // Zero ackers: tuples are acked at emit, and the spout still commits (STORM-2957).
    let seen = Arc::new(Mutex::new(Seen::default()));
    let cluster = LocalCluster::new();
    let config = spout_config(&broker, "guarantees").with_group_id("no-ackers");
    let mut b = TopologyBuilder::new();
    b.config_mut().set("topology.acker.executors", 0).unwrap();
    b.spout("kafka", KafkaSpout::new(config), 1);
    b.bolt("record", Recorder { seen: seen.clone(), fail_percent: 0 }, 1).shuffle_grouping("kafka");
    cluster.submit("no-ackers", &b.build().unwrap()).unwrap();
    wait_until("commits with zero ackers", Duration::from_secs(30), || {
        committed(&bootstrap, "no-ackers", "guarantees", 2).iter().all(|(o, _)| *o == 500)
    })
    .await;
    cluster.kill("no-ackers", Duration::ZERO).await.unwrap();

    // At most once and no guarantee: every record once, positions committed, nothing retried
    // although the bolt fails some.
    for (name, guarantee) in [("at-most-once", Guarantee::AtMostOnce), ("no-guarantee", Guarantee::NoGuarantee)] {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let config = spout_config(&broker, "guarantees").with_group_id(name).with_guarantee(guarantee);
        cluster.submit(name, &topology(config, 1, &seen, 20)).unwrap();
        wait_until("positions committed", Duration::from_secs(30), || {
            committed(&bootstrap, name, "guarantees", 2).iter().all(|(o, _)| *o == 500)
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster.kill(name, Duration::ZERO).await.unwrap();
        let seen = seen.lock().unwrap();
        assert!(seen.failed > 0);
        assert_eq!(seen.times.len() as u64 + seen.failed, 1_000, "{name}: each record emitted exactly once");
        assert!(seen.times.values().all(|n| *n == 1));
    }

    // A low uncommitted limit pauses the partitions, and failing tuples still get retried
    // (STORM-2549): everything is processed in the end.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let config = spout_config(&broker, "guarantees").with_group_id("limited").with_max_uncommitted_offsets(20);
    cluster.submit("limited", &topology(config, 1, &seen, 30)).unwrap();
    wait_until("every record through the limit", Duration::from_secs(60), || seen.lock().unwrap().times.len() == 1_000)
        .await;
    wait_until("commits at the end", Duration::from_secs(30), || {
        committed(&bootstrap, "limited", "guarantees", 2).iter().all(|(o, _)| *o == 500)
    })
    .await;
    cluster.kill("limited", Duration::ZERO).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_while_running_are_consumed_and_a_broker_restart_loses_nothing() {
    let mut broker = broker();
    broker.create_topic("growing", 2).expect("topic");
    let bootstrap = broker.bootstrap_servers();
    fill(&bootstrap, "growing", 2, 100).await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let cluster = LocalCluster::new();
    let config = spout_config(&broker, "growing").with_group_id("growing");
    cluster.submit("growing", &topology(config, 2, &seen, 5)).unwrap();
    wait_until("the first 200", Duration::from_secs(30), || seen.lock().unwrap().times.len() == 200).await;
    broker.add_partitions("growing", 4).expect("more partitions");
    fill(&bootstrap, "growing", 4, 100).await;
    wait_until("records of the new partitions", Duration::from_secs(30), || seen.lock().unwrap().times.len() == 600)
        .await;

    broker.stop();
    let stopped = std::time::Instant::now();
    // Meanwhile the spout's status says it cannot reach the broker.
    wait_until("the outage in the spout's status", Duration::from_secs(30), || {
        let metrics = cluster.metrics("growing").ok();
        let spout = metrics.as_ref().and_then(|m| m.component("kafka").ok());
        spout.is_some_and(|c| {
            c.status.values().any(|s| {
                s.get("last_error").and_then(|e| e.as_str()).is_some_and(|e| e.contains("cannot read from Kafka"))
            })
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(stopped.elapsed())).await;
    broker.restart().unwrap_or_else(|e| panic!("cannot restart kafka: {e}"));
    fill(&bootstrap, "growing", 4, 50).await;
    wait_until("every record after the restart", Duration::from_secs(60), || seen.lock().unwrap().times.len() == 800)
        .await;
    wait_until("commits at the end", Duration::from_secs(30), || {
        committed(&bootstrap, "growing", "growing", 4).iter().map(|(o, _)| *o).collect::<Vec<_>>()
            == end_offsets(&bootstrap, "growing", 4)
    })
    .await;
    cluster.kill("growing", Duration::ZERO).await.unwrap();
    let seen = seen.lock().unwrap();
    assert!(seen.spout_tasks.values().all(|tasks| tasks.len() == 1), "{:?}", seen.spout_tasks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_and_uncommitted_latest_start_where_they_say() {
    let broker = broker();
    broker.create_topic("times", 1).expect("topic");
    let bootstrap = broker.bootstrap_servers();
    fill(&bootstrap, "times", 1, 50).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    tokio::time::sleep(Duration::from_millis(500)).await;
    fill(&bootstrap, "times", 1, 30).await;
    let cluster = LocalCluster::new();

    // TIMESTAMP: the first record at or after the time.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let config = spout_config(&broker, "times").with_group_id("by-time").with_first_poll(FirstPoll::Timestamp(since));
    cluster.submit("by-time", &topology(config, 1, &seen, 0)).unwrap();
    wait_until("the records after the time", Duration::from_secs(30), || seen.lock().unwrap().times.len() == 30).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill("by-time", Duration::ZERO).await.unwrap();
    let offsets: Vec<i64> = seen.lock().unwrap().times.keys().map(|(_, o)| *o).collect();
    assert_eq!(offsets, (50..80).collect::<Vec<_>>());

    // UNCOMMITTED_LATEST: an earlier deployment's commit (here: `by-time` committed 80 in group
    // `by-time`) is resumed from; without one, the end.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let config = spout_config(&broker, "times").with_group_id("fresh").with_first_poll(FirstPoll::UncommittedLatest);
    cluster.submit("fresh", &topology(config, 1, &seen, 0)).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    fill(&bootstrap, "times", 1, 5).await;
    wait_until("the 5 new records", Duration::from_secs(30), || seen.lock().unwrap().times.len() == 5).await;
    cluster.kill("fresh", Duration::ZERO).await.unwrap();
    let offsets: Vec<i64> = seen.lock().unwrap().times.keys().map(|(_, o)| *o).collect();
    assert_eq!(offsets, (80..85).collect::<Vec<_>>(), "no commit: from the end");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let config = spout_config(&broker, "times").with_group_id("by-time").with_first_poll(FirstPoll::UncommittedLatest);
    cluster.submit("redeployed", &topology(config, 1, &seen, 0)).unwrap();
    wait_until("the records after the earlier commit", Duration::from_secs(30), || {
        seen.lock().unwrap().times.len() == 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill("redeployed", Duration::ZERO).await.unwrap();
    let offsets: Vec<i64> = seen.lock().unwrap().times.keys().map(|(_, o)| *o).collect();
    assert_eq!(offsets, (80..85).collect::<Vec<_>>(), "an earlier deployment's commit: from there");
}

/// Fails every record whose offset is a multiple of ten; records the rest.
#[derive(Clone, Bolt)]
struct FailTens {
    seen: Arc<Mutex<Seen>>,
}

impl Bolt for FailTens {
    async fn execute(
        &mut self,
        input: Tuple,
        _out: &mut BoltCollector<'_, Self>,
    ) -> Result<(), squall::ComponentError> {
        let record: squall_kafka::KafkaRecord = input.to()?;
        if record.offset % 10 == 0 {
            self.seen.lock().unwrap().failed += 1;
            return Err("offsets that are multiples of ten always fail".into());
        }
        *self.seen.lock().unwrap().times.entry((record.partition, record.offset)).or_default() += 1;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_up_retries_go_to_the_dead_letter_stream_once_and_commits_move_on() {
    let broker = broker();
    broker.create_topic("poison", 2).expect("topic");
    let bootstrap = broker.bootstrap_servers();
    fill(&bootstrap, "poison", 2, 100).await;
    let retry = RetryPolicy {
        initial_delay: Duration::ZERO,
        period: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_retries: Some(2),
    };
    for (name, exhausted) in [("dead-letters", Exhausted::DeadLetter), ("acked", Exhausted::Ack)] {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let letters = Arc::new(Mutex::new(Seen::default()));
        let config = spout_config(&broker, "poison").with_group_id(name).with_retry(retry.clone(), exhausted);
        let mut b = TopologyBuilder::new();
        b.spout("kafka", KafkaSpout::new(config), 1);
        b.bolt("work", FailTens { seen: seen.clone() }, 1).shuffle_grouping("kafka");
        b.bolt("letters", common::LetterRecorder { seen: letters.clone() }, 1)
            .shuffle_grouping(("kafka", KafkaSpout::<squall_kafka::KafkaRecord>::DEAD_LETTER.name()));
        let cluster = LocalCluster::new();
        cluster.submit(name, &b.build().unwrap()).unwrap();
        wait_until("commits at the end", Duration::from_secs(60), || {
            committed(&bootstrap, name, "poison", 2).iter().all(|(o, _)| *o == 100)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.kill(name, Duration::ZERO).await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.times.len(), 180, "{name}: every other record processed");
        assert_eq!(seen.failed, 20 * 3, "{name}: each poison record tried three times (two retries)");
        let letters = letters.lock().unwrap();
        match exhausted {
            Exhausted::DeadLetter => {
                let expected: Vec<(i32, i64)> =
                    (0..2).flat_map(|p| (0..100).step_by(10).map(move |o| (p, o))).collect();
                assert_eq!(letters.times.keys().copied().collect::<Vec<_>>(), expected);
                assert!(letters.times.values().all(|n| *n == 1), "each dead letter once");
            }
            Exhausted::Ack => assert!(letters.times.is_empty()),
        }
    }
}

/// Collects every record the default translator made.
#[derive(Clone, Bolt)]
struct Collect {
    records: Arc<Mutex<Vec<squall_kafka::KafkaRecord>>>,
}

impl Bolt for Collect {
    async fn execute(
        &mut self,
        input: Tuple,
        _out: &mut BoltCollector<'_, Self>,
    ) -> Result<(), squall::ComponentError> {
        self.records.lock().unwrap().push(input.to()?);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_record_carries_key_value_timestamp_and_headers() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
    use std::collections::BTreeMap;

    let broker = broker();
    broker.create_topic("parts", 1).expect("topic");
    let producer: FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", broker.bootstrap_servers()).create().expect("a producer");
    let headers = OwnedHeaders::new()
        .insert(Header { key: "trace", value: Some("abc") })
        .insert(Header { key: "empty", value: None::<&str> })
        .insert(Header { key: "trace", value: Some("last wins") });
    let with_all = FutureRecord::to("parts").key("k1").payload("v1").timestamp(1_700_000_000_123).headers(headers);
    producer.send(with_all, Duration::from_secs(10)).await.expect("written");
    let bare = FutureRecord::<(), [u8]>::to("parts").timestamp(1_700_000_000_456);
    producer.send(bare, Duration::from_secs(10)).await.expect("written");
    producer.flush(Duration::from_secs(10)).expect("flushed");

    let records = Arc::new(Mutex::new(Vec::new()));
    let mut b = TopologyBuilder::new();
    b.spout("kafka", KafkaSpout::new(spout_config(&broker, "parts")), 1);
    b.bolt("collect", Collect { records: records.clone() }, 1).shuffle_grouping("kafka");
    let cluster = LocalCluster::new();
    cluster.submit("parts", &b.build().expect("a valid topology")).unwrap();
    wait_until("both records", Duration::from_secs(30), || records.lock().unwrap().len() == 2).await;
    cluster.kill("parts", Duration::ZERO).await.unwrap();

    let mut records = records.lock().unwrap().clone();
    records.sort_by_key(|r| r.offset);
    let first = &records[0];
    assert_eq!((first.topic.as_str(), first.partition, first.offset), ("parts", 0, 0));
    assert_eq!(first.key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(first.value.as_deref(), Some(&b"v1"[..]));
    assert_eq!(first.timestamp, Some(1_700_000_000_123));
    // A header without a value is left out; a repeated one keeps its last value.
    let expected: BTreeMap<Str, Arc<[u8]>> = BTreeMap::from([(Str::new("trace"), Arc::from(&b"last wins"[..]))]);
    assert_eq!(first.headers, expected);
    let second = &records[1];
    assert_eq!((second.offset, second.key.as_deref(), second.value.as_deref()), (1, None, None));
    assert_eq!(second.timestamp, Some(1_700_000_000_456));
    assert!(second.headers.is_empty());
}
