//! Kafka for Squall: [`KafkaSpout`], Storm's storm-kafka-client spout (manual partition
//! assignment, an offset manager that commits only what is done, retries with backoff, first-poll
//! strategies and processing guarantees), and [`testing::KafkaBroker`], a real Apache Kafka
//! broker (KRaft mode) for tests.

pub mod assign;
pub mod bolt;
pub mod config;
mod fetch;
pub mod offsets;
pub mod retry;
pub mod sink;
pub mod spout;
pub mod testing;
pub mod trident;

pub use bolt::{KafkaBolt, KafkaBoltConfig, Mapper, ProducerRecord, value_bytes};
pub use config::{Exhausted, FirstPoll, Guarantee, KafkaSpoutConfig, Topics};
pub use retry::RetryPolicy;
pub use sink::{KafkaTransactionalSink, RecordMapper};
pub use spout::{DeadLetter, KafkaMsgId, KafkaRecord, KafkaSpout, PartitionStatus, Record, Translator};
pub use trident::{BatchTranslator, KafkaBatchSpout};
