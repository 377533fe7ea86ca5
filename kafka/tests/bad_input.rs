//! Bad input gets an error that names the thing and what to do: an unknown topic, brokers that
//! cannot be reached, a setting librdkafka does not know.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Recorder, Seen, wait_until};
use squall::LocalCluster;
use squall::prelude::*;
use squall_kafka::testing::KafkaBroker;
use squall_kafka::{KafkaBolt, KafkaBoltConfig, KafkaSpout, KafkaSpoutConfig};

fn topology(config: KafkaSpoutConfig) -> Topology {
    let mut b = TopologyBuilder::new();
    b.spout("kafka", KafkaSpout::new(config), 1);
    b.bolt("record", Recorder { seen: Arc::new(Mutex::new(Seen::default())), fail_percent: 0 }, 1)
        .shuffle_grouping("kafka");
    b.build().expect("a valid topology")
}

/// The `last_error` the spout's tasks show in their status, if any.
fn last_error(cluster: &LocalCluster, name: &str) -> Option<String> {
    let metrics = cluster.metrics(name).ok()?;
    let spout = metrics.component("kafka").ok()?;
    spout.status.values().find_map(|s| s.get("last_error")?.as_str().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_topic_and_unreachable_brokers_are_named_in_the_status() {
    let broker = KafkaBroker::start().unwrap_or_else(|e| panic!("cannot start kafka: {e}"));
    let cluster = LocalCluster::new();
    let config = KafkaSpoutConfig::new(broker.bootstrap_servers(), &["no-such-topic"])
        .with_partition_refresh(Duration::from_millis(200));
    cluster.submit("unknown", &topology(config)).unwrap();
    let expected = format!("topic `no-such-topic` does not exist on {}", broker.bootstrap_servers());
    wait_until("the unknown topic in the status", Duration::from_secs(30), || {
        last_error(&cluster, "unknown").is_some_and(|e| e.contains(&expected) && e.contains("create it"))
    })
    .await;
    cluster.kill("unknown", Duration::ZERO).await.unwrap();

    // Nothing listens on port 1: the spout keeps trying and says where it cannot reach.
    let config = KafkaSpoutConfig::new("127.0.0.1:1", &["events"])
        .with_partition_refresh(Duration::from_millis(200))
        .with_consumer_setting("socket.connection.setup.timeout.ms", "1000");
    cluster.submit("unreachable", &topology(config)).unwrap();
    wait_until("the unreachable brokers in the status", Duration::from_secs(40), || {
        last_error(&cluster, "unreachable").is_some_and(|e| {
            e.contains("cannot read from Kafka at 127.0.0.1:1")
                && e.contains("check that a broker runs at that address")
        })
    })
    .await;
    let report = cluster.kill("unreachable", Duration::ZERO).await.unwrap();
    assert!(report.failures.is_empty(), "an unreachable broker is no task failure: {:?}", report.failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_client_setting_fails_the_task_naming_it() {
    let cluster = LocalCluster::new();
    let config = KafkaSpoutConfig::new("127.0.0.1:9092", &["events"]).with_consumer_setting("no.such.setting", "1");
    cluster.submit("bad-consumer", &topology(config)).unwrap();
    let report = cluster.wait_for_completion("bad-consumer", Duration::from_secs(30)).await.unwrap();
    let failure = report.failures.iter().find(|f| f.component == "kafka").expect("the spout failed");
    assert!(
        failure.message.contains("no.such.setting") && failure.message.contains("check the consumer settings"),
        "{failure:?}"
    );

    let mut b = TopologyBuilder::new();
    b.spout("kafka", KafkaSpout::new(KafkaSpoutConfig::new("127.0.0.1:9092", &["events"])), 1);
    let bolt = KafkaBolt::to_topic(
        KafkaBoltConfig::new("127.0.0.1:9092").with_producer_setting("no.such.setting", "1"),
        "out",
    );
    b.bolt("write", bolt, 1).shuffle_grouping("kafka");
    cluster.submit("bad-producer", &b.build().unwrap()).unwrap();
    let report = cluster.kill("bad-producer", Duration::from_secs(1)).await.unwrap();
    let failure = report.failures.iter().find(|f| f.component == "write").expect("the bolt failed");
    assert!(
        failure.message.contains("no.such.setting") && failure.message.contains("check the producer settings"),
        "{failure:?}"
    );
}
