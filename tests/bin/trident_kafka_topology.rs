//! Kafka → Trident for cluster tests: an opaque Kafka batch spout over topic `events` at
//! `$SQUALL_TEST_KAFKA` (group `trident`), counting records per partition (the value's prefix
//! before `:`) in an opaque map state `per-partition` in Redis at `$SQUALL_TEST_REDIS` (or in the
//! redb file at `$SQUALL_TEST_REDB`, when set); or, with `$SQUALL_TEST_SINK` set, writing every
//! value to topic `out` with the transactional Kafka sink (progress in topic `progress`).

use std::process::ExitCode;
use std::sync::Arc;

use squall::{Value, values};
use squall_kafka::{KafkaBatchSpout, KafkaSpoutConfig, KafkaTransactionalSink, ProducerRecord};
use squall_state::{Backend, RedbBackend, RedisBackend, Semantics};
use squall_trident::{Aggregate, StateSpec, TridentTopology};

fn build() -> Result<squall::Topology, Box<dyn std::error::Error>> {
    let kafka = std::env::var("SQUALL_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    let backend: Arc<dyn Backend> = match std::env::var_os("SQUALL_TEST_REDB") {
        // Every worker builds the topology: the file must not stay open in one of them.
        Some(path) => Arc::new(RedbBackend::open(path)?),
        None => {
            let redis = std::env::var("SQUALL_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
            Arc::new(RedisBackend::new(&redis)?)
        }
    };
    let state = StateSpec::new("per-partition", Semantics::Opaque, backend);
    let spout = KafkaBatchSpout::opaque(
        KafkaSpoutConfig::new(kafka.clone(), &["events"]).with_group_id("trident").with_max_poll_records(500),
    );
    let mut trident = TridentTopology::new();
    trident.config_mut().message_timeout_secs = 5;
    trident.max_open_epochs(3);
    if std::env::var_os("SQUALL_TEST_SINK").is_some() {
        let sink = KafkaTransactionalSink::new(kafka.clone(), "progress", |v: &[Value]| {
            let Value::Bytes(bytes) = &v[0] else { return Err("a record without a value".into()) };
            Ok(ProducerRecord {
                topic: "out".into(),
                partition: None,
                key: None,
                value: Some(bytes.to_vec()),
                headers: Vec::new(),
            })
        });
        trident.new_stream("events", spout).parallelism(2).project(["value"]).sink("out", sink, 2);
        return Ok(trident.build()?);
    }
    trident
        .new_stream("events", spout)
        .parallelism(2)
        .flat_map(["p"], |v| {
            let Value::Bytes(bytes) = &v[4] else { return Err("a record without a value".into()) };
            let text = String::from_utf8_lossy(bytes);
            Ok(vec![values![text.split(':').next().unwrap_or_default().to_owned()]])
        })
        .group_by(["p"])
        .persistent_aggregate("count", state, Aggregate::count(), 2);
    Ok(trident.build()?)
}

fn main() -> ExitCode {
    squall::main(build)
}
