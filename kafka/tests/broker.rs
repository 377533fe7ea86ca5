//! The test broker against a real Apache Kafka: the jars `scripts/setup` downloads.

use squall_kafka::testing::{KAFKA_VERSION, KafkaBroker, KafkaBrokerError};

/// Fails the test with the error's message (a test returning the error would print its `Debug`
/// form, without the advice the message gives).
fn ok<T>(what: &str, result: Result<T, KafkaBrokerError>) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// One broker through its life: it serves, creates and grows topics with Kafka's own tool, says
/// why a duplicate topic fails, and keeps its topics when killed and restarted on the same port.
#[test]
fn broker_serves_creates_topics_and_keeps_them_across_a_restart() {
    let mut broker = ok("start the test broker", KafkaBroker::start());
    let port = broker.port();
    assert_eq!(broker.bootstrap_servers(), format!("127.0.0.1:{port}"));
    assert!(broker.log_path().is_file());
    let count = |broker: &KafkaBroker| ok("ask for the partitions of events", broker.partition_count("events"));
    assert_eq!(count(&broker), None, "auto-creation is off, and the topic does not exist yet");

    ok("create events", broker.create_topic("events", 8));
    assert_eq!(count(&broker), Some(8));
    let described = ok("describe events", broker.describe_topic("events"));
    assert!(described.contains("PartitionCount: 8"), "{described}");

    let duplicate = broker.create_topic("events", 8).expect_err("the topic exists");
    assert!(duplicate.to_string().contains("already exists"), "{duplicate}");

    ok("grow events", broker.add_partitions("events", 12));
    assert_eq!(count(&broker), Some(12));

    broker.stop();
    assert!(broker.partition_count("events").is_err(), "a stopped broker does not answer");
    ok("restart the test broker", broker.restart());
    assert_eq!(broker.port(), port);
    assert_eq!(count(&broker), Some(12), "the topic survives the restart");
}

#[test]
fn missing_jars_are_an_error_that_says_to_run_scripts_setup() {
    let empty = tempfile::tempdir().expect("a temporary directory");
    let err = KafkaBroker::start_with("java", empty.path()).expect_err("there are no jars");
    let message = err.to_string();
    assert!(matches!(err, KafkaBrokerError::Jars { .. }), "{message}");
    assert!(message.contains("scripts/setup"), "{message}");
    assert!(message.contains(&format!("{}", empty.path().join("libs").display())), "{message}");
    assert!(message.contains(&format!("kafka_2.13-{KAFKA_VERSION}.jar")), "{message}");
}
