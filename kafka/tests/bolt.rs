//! The Kafka bolt against a real broker: every acked tuple's record is in the topic.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::wait_until;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use squall::prelude::*;
use squall::{ComponentError, LocalCluster, ReplayQueue};
use squall_kafka::testing::KafkaBroker;
use squall_kafka::{KafkaBolt, KafkaBoltConfig};

#[derive(Tuple, Debug, Clone)]
struct Line {
    key: Str,
    value: Str,
}

/// What the spout heard back.
#[derive(Default, Debug)]
struct Outcome {
    acked: BTreeSet<u64>,
    failed: u64,
}

/// Emits lines 0..total with ids; replays failures.
#[derive(Clone, Spout)]
#[squall(output = Line)]
struct Lines {
    total: u64,
    next: u64,
    queue: Arc<Mutex<ReplayQueue<u64, Line>>>,
    outcome: Arc<Mutex<Outcome>>,
}

impl Spout for Lines {
    type MsgId = u64;

    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        let replay = self.queue.lock().unwrap().next_replay();
        if let Some((id, line)) = replay {
            out.emit_with_id(line, id)?;
            return Ok(());
        }
        if self.next < self.total {
            let id = self.next;
            self.next += 1;
            let line = Line { key: Str::from(format!("k{}", id % 7)), value: Str::from(format!("line-{id}")) };
            self.queue.lock().unwrap().track(id, line.clone());
            out.emit_with_id(line, id)?;
        }
        Ok(())
    }

    async fn ack(&mut self, id: u64) {
        self.queue.lock().unwrap().ack(&id);
        self.outcome.lock().unwrap().acked.insert(id);
    }

    async fn fail(&mut self, id: u64) {
        self.queue.lock().unwrap().fail(id);
        self.outcome.lock().unwrap().failed += 1;
    }
}

/// Every value in `topic` (one partition), read from the beginning.
fn read_all(bootstrap: &str, topic: &str, expected_at_least: usize) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "squall-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Beginning).expect("partition");
    consumer.assign(&list).expect("assign");
    let (_, end) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(10)).expect("watermarks");
    let mut values = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (values.len() as i64) < end && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            values.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    assert!(values.len() >= expected_at_least, "read {} of at least {expected_at_least}", values.len());
    values
}

fn topology(bootstrap: &str, topic: &str, total: u64, outcome: &Arc<Mutex<Outcome>>) -> Topology {
    let mut b = TopologyBuilder::new();
    b.config_mut().set("topology.message.timeout.secs", 5).unwrap();
    b.config_mut().set("topology.max.spout.pending", 2_000).unwrap();
    let lines = Lines { total, next: 0, queue: Arc::default(), outcome: outcome.clone() };
    b.spout("lines", lines, 1);
    let config = KafkaBoltConfig::new(bootstrap).with_producer_setting("message.timeout.ms", "3000");
    b.bolt("write", KafkaBolt::to_topic(config, topic), 2).shuffle_grouping("lines");
    b.build().expect("a valid topology")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_tuples_become_exactly_n_records() {
    const N: u64 = 20_000;
    let broker = KafkaBroker::start().unwrap_or_else(|e| panic!("cannot start kafka: {e}"));
    broker.create_topic("out", 1).expect("topic");
    let bootstrap = broker.bootstrap_servers();
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let cluster = LocalCluster::new();
    cluster.submit("write", &topology(&bootstrap, "out", N, &outcome)).unwrap();
    wait_until("every tuple acked", Duration::from_secs(60), || outcome.lock().unwrap().acked.len() == N as usize)
        .await;
    cluster.kill("write", Duration::ZERO).await.unwrap();
    assert_eq!(outcome.lock().unwrap().failed, 0);
    let mut values = read_all(&bootstrap, "out", N as usize);
    values.sort();
    let mut expected: Vec<String> = (0..N).map(|i| format!("line-{i}")).collect();
    expected.sort();
    assert_eq!(values, expected, "exactly one record per tuple");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_acks_only_what_was_written() {
    const N: u64 = 50_000;
    let mut broker = KafkaBroker::start().unwrap_or_else(|e| panic!("cannot start kafka: {e}"));
    broker.create_topic("out", 1).expect("topic");
    let bootstrap = broker.bootstrap_servers();
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let cluster = LocalCluster::new();
    cluster.submit("write", &topology(&bootstrap, "out", N, &outcome)).unwrap();
    wait_until("some acks", Duration::from_secs(60), || outcome.lock().unwrap().acked.len() > 2_000).await;
    broker.stop();
    let acked_before = outcome.lock().unwrap().acked.len();
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Nothing can be acked while the broker is away.
    let acked_during = outcome.lock().unwrap().acked.len();
    broker.restart().unwrap_or_else(|e| panic!("cannot restart kafka: {e}"));
    wait_until("every tuple acked", Duration::from_secs(120), || outcome.lock().unwrap().acked.len() == N as usize)
        .await;
    cluster.kill("write", Duration::ZERO).await.unwrap();
    assert!(acked_during <= acked_before + 10_000, "acks went on without a broker: {acked_before} → {acked_during}");
    let values: BTreeSet<String> = read_all(&bootstrap, "out", N as usize).into_iter().collect();
    for id in 0..N {
        assert!(values.contains(&format!("line-{id}")), "tuple {id} was acked but its record is not in the topic");
    }
}
