//! Kafka for Squall: a spout and a bolt with Storm's storm-kafka-client semantics, and
//! [`testing::KafkaBroker`], a real Apache Kafka broker (KRaft mode) for tests.

pub mod testing;
