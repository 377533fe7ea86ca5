//! A Kafka topology for cluster tests: a Kafka spout (`$SQUALL_TEST_KAFKA`, topic `events`,
//! group `cluster`) → a bolt that records each offset it processed before acking it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use squall::prelude::*;
use squall::{BuildError, ComponentError};
use squall_kafka::{KafkaRecord, KafkaSpout, KafkaSpoutConfig};

/// Records what it processed before it acks it (one `partition offset` line per record,
/// written through to `$SQUALL_TEST_OUT/processed-<task>-<pid>.log`), so a kill loses no record
/// of anything whose offset may have been committed.
#[derive(Default, Bolt)]
struct Processed {
    log: Option<std::fs::File>,
}

impl Clone for Processed {
    fn clone(&self) -> Self {
        Processed::default()
    }
}

impl Bolt for Processed {
    async fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), ComponentError> {
        let Some(dir) = std::env::var_os("SQUALL_TEST_OUT").map(PathBuf::from) else { return Ok(()) };
        let path = dir.join(format!("processed-{}-{}.log", ctx.task_id(), std::process::id()));
        self.log = Some(std::fs::OpenOptions::new().create(true).append(true).open(path)?);
        Ok(())
    }

    async fn execute(&mut self, input: Tuple, _out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let record: KafkaRecord = input.to()?;
        if let Some(log) = &mut self.log {
            writeln!(log, "{} {}", record.partition, record.offset)?;
        }
        Ok(())
    }
}

fn build() -> Result<Topology, BuildError> {
    let bootstrap = std::env::var("SQUALL_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    let config = KafkaSpoutConfig::new(bootstrap, &["events"])
        .with_group_id("cluster")
        .with_commit_period(Duration::from_millis(500))
        .with_partition_refresh(Duration::from_millis(500));
    let mut builder = TopologyBuilder::new();
    builder.config_mut().message_timeout_secs = 5;
    builder.config_mut().max_spout_pending = Some(2_000);
    builder.spout("kafka", KafkaSpout::new(config), 2);
    builder.bolt("processed", Processed::default(), 2).shuffle_grouping("kafka");
    builder.build()
}

fn main() -> ExitCode {
    squall::main(build)
}
