//! What the Kafka tests share: filling topics, reading committed and end offsets, and a bolt
//! that records what reached it.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use squall::ComponentError;
use squall::prelude::*;
use squall_kafka::KafkaRecord;

/// Writes `per_partition` records to each of `partitions` partitions of `topic`: value
/// `"<partition>:<i>"`, keyless.
pub async fn fill(bootstrap: &str, topic: &str, partitions: i32, per_partition: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()
        .expect("a producer");
    let mut pending = Vec::new();
    for p in 0..partitions {
        for i in 0..per_partition {
            let value = format!("{p}:{i}");
            let record = FutureRecord::<(), _>::to(topic).partition(p).payload(value.as_bytes());
            match producer.send_result(record) {
                Ok(delivery) => pending.push(delivery),
                Err((e, _)) => panic!("cannot queue a record: {e}"),
            }
            if pending.len() >= 10_000 {
                for d in pending.drain(..) {
                    d.await.expect("delivery").expect("written");
                }
            }
        }
    }
    for d in pending {
        d.await.expect("delivery").expect("written");
    }
    producer.flush(Duration::from_secs(10)).expect("flushed");
}

fn consumer(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer")
}

/// The offsets `group` committed for each partition of `topic` (-1: none), and their metadata.
pub fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<(i64, String)> {
    let consumer = consumer(bootstrap, group);
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    // A fresh broker's group coordinator may not be ready yet: no commit to see then.
    let Ok(found) = consumer.committed_offsets(list, Duration::from_secs(10)) else {
        return vec![(-1, String::new()); partitions as usize];
    };
    (0..partitions)
        .map(|p| {
            let e = found.find_partition(topic, p).expect("the partition");
            let offset = match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            };
            (offset, e.metadata().to_owned())
        })
        .collect()
}

/// The end offset of each partition of `topic`.
pub fn end_offsets(bootstrap: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer = consumer(bootstrap, "squall-test-watermarks");
    (0..partitions)
        .map(|p| consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).expect("watermarks").1)
        .collect()
}

/// What reached a [`Recorder`]: each (partition, offset) with how often, and the tasks that
/// emitted each partition.
#[derive(Debug, Default)]
pub struct Seen {
    pub times: BTreeMap<(i32, i64), u32>,
    pub spout_tasks: BTreeMap<i32, BTreeSet<u32>>,
    pub failed: u64,
}

/// Records every Kafka record it gets; fails a share of them (each at most `fail_limit` times).
#[derive(Clone, Bolt)]
pub struct Recorder {
    pub seen: Arc<Mutex<Seen>>,
    pub fail_percent: u32,
}

impl Bolt for Recorder {
    async fn execute(&mut self, input: Tuple, _out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let record: KafkaRecord = input.to()?;
        if self.fail_percent > 0 && fastrand::u32(0..100) < self.fail_percent {
            self.seen.lock().unwrap().failed += 1;
            return Err("failing on purpose".into());
        }
        let mut seen = self.seen.lock().unwrap();
        *seen.times.entry((record.partition, record.offset)).or_default() += 1;
        seen.spout_tasks.entry(record.partition).or_default().insert(input.source_task());
        Ok(())
    }
}

/// Polls `check` every 100 ms until it holds, panicking after `timeout` with `what`.
pub async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Records the dead letters it gets.
#[derive(Clone, Bolt)]
pub struct LetterRecorder {
    pub seen: Arc<Mutex<Seen>>,
}

impl Bolt for LetterRecorder {
    async fn execute(&mut self, input: Tuple, _out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let letter: squall_kafka::DeadLetter = input.to()?;
        assert_eq!(letter.failures, 3, "a dead letter failed once and twice more");
        *self.seen.lock().unwrap().times.entry((letter.partition, letter.offset)).or_default() += 1;
        Ok(())
    }
}
