//! [`KafkaBolt`]: writes each input tuple as a Kafka record and acks the tuple only once the
//! broker has acknowledged the record (its delivery report); a produce error fails the tuple so
//! its spout replays it. The producer is idempotent with `acks=all` unless told otherwise.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use squall::prelude::*;
use squall::{ComponentError, NoOutput, OutputDeclarer, Outputs, Value};

/// One record to write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProducerRecord {
    /// Its topic.
    pub topic: String,
    /// Its partition; `None`: the producer's partitioner picks one (by key).
    pub partition: Option<i32>,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub value: Option<Vec<u8>>,
    /// Its headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Turns an input tuple into the record to write; an error fails the tuple.
pub type Mapper = Arc<dyn Fn(&Tuple) -> Result<ProducerRecord, ComponentError> + Send + Sync>;

/// The bytes of a value as a record part: strings and bytes as they are, numbers and booleans
/// in decimal text, null as no bytes; lists and maps as JSON.
pub fn value_bytes(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::Null => None,
        Value::Str(s) => Some(s.as_bytes().to_vec()),
        Value::Bytes(b) => Some(b.to_vec()),
        Value::Bool(b) => Some(b.to_string().into_bytes()),
        Value::I64(n) => Some(n.to_string().into_bytes()),
        Value::U64(n) => Some(n.to_string().into_bytes()),
        Value::F64(n) => Some(n.to_string().into_bytes()),
        other => serde_json::to_vec(other).ok(),
    }
}

/// How a [`KafkaBolt`] writes.
#[derive(Debug, Clone)]
pub struct KafkaBoltConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// Records written and not yet acknowledged by the broker, per task, before `execute`
    /// waits for the oldest (bounded memory under any load).
    pub max_in_flight: usize,
    /// librdkafka producer settings, passed through; `enable.idempotence=true` and `acks=all`
    /// unless set here.
    pub producer: BTreeMap<String, String>,
}

impl KafkaBoltConfig {
    /// Writes to the cluster at `bootstrap_servers`.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaBoltConfig {
            bootstrap_servers: bootstrap_servers.into(),
            max_in_flight: 10_000,
            producer: BTreeMap::new(),
        }
    }

    /// Sets a librdkafka producer setting, such as `linger.ms`.
    pub fn with_producer_setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.producer.insert(key.into(), value.into());
        self
    }
}

/// Storm's `KafkaBolt`: each tuple becomes one record (see [`Mapper`]); the tuple is acked when
/// the broker has it, failed when it cannot be written. Emits nothing.
pub struct KafkaBolt {
    config: Arc<KafkaBoltConfig>,
    map: Mapper,
    producer: Option<FutureProducer>,
    in_flight: VecDeque<(Tuple, DeliveryFuture)>,
}

impl Clone for KafkaBolt {
    fn clone(&self) -> Self {
        KafkaBolt { config: self.config.clone(), map: self.map.clone(), producer: None, in_flight: VecDeque::new() }
    }
}

impl KafkaBolt {
    /// A bolt writing what `map` makes of each tuple.
    pub fn new(
        config: KafkaBoltConfig,
        map: impl Fn(&Tuple) -> Result<ProducerRecord, ComponentError> + Send + Sync + 'static,
    ) -> Self {
        KafkaBolt { config: Arc::new(config), map: Arc::new(map), producer: None, in_flight: VecDeque::new() }
    }

    /// A bolt writing to `topic` the tuple's fields `key` and `value` (Storm's
    /// `FieldNameBasedTupleToKafkaMapper`); a tuple without a `value` field fails.
    pub fn to_topic(config: KafkaBoltConfig, topic: impl Into<String>) -> Self {
        let topic = topic.into();
        KafkaBolt::new(config, move |tuple: &Tuple| {
            let value = tuple.get_by_field("value").ok_or_else(|| {
                ComponentError::from(format!(
                    "kafka bolt: the tuple from `{}` has no field `value` (its fields: {:?})",
                    tuple.source_component(),
                    tuple.fields()
                ))
            })?;
            Ok(ProducerRecord {
                topic: topic.clone(),
                key: tuple.get_by_field("key").and_then(value_bytes),
                value: value_bytes(value),
                ..ProducerRecord::default()
            })
        })
    }

    /// Acks or fails every tuple whose delivery report has come, oldest first.
    fn settle_ready(&mut self, out: &mut BoltCollector<'_, Self>) {
        let mut cx = Context::from_waker(Waker::noop());
        while let Some((_, delivery)) = self.in_flight.front_mut() {
            let Poll::Ready(report) = std::pin::Pin::new(delivery).poll(&mut cx) else { break };
            if let Some((tuple, _)) = self.in_flight.pop_front() {
                settle(out, &tuple, report);
            }
        }
    }

    /// Waits for the oldest delivery report and acks or fails its tuple.
    async fn settle_oldest(&mut self, out: &mut BoltCollector<'_, Self>) {
        if let Some((tuple, delivery)) = self.in_flight.pop_front() {
            let report = delivery.await;
            settle(out, &tuple, report);
        }
    }
}

/// A delivery report, or the report's channel closed.
type Report = <DeliveryFuture as Future>::Output;

fn settle(out: &mut BoltCollector<'_, KafkaBolt>, tuple: &Tuple, report: Report) {
    match report {
        Ok(Ok(_)) => out.ack(tuple),
        Ok(Err((e, _))) => {
            tracing::warn!(error = %e, "kafka bolt: the broker did not take a record; failing its tuple");
            out.fail(tuple);
        }
        Err(_) => {
            tracing::warn!("kafka bolt: a record's delivery report was lost; failing its tuple");
            out.fail(tuple);
        }
    }
}

impl Outputs for KafkaBolt {
    type Default = NoOutput;

    fn declare_outputs(_declarer: &mut OutputDeclarer) {}
}

impl Bolt for KafkaBolt {
    const AUTO_ACK: bool = false;
    // Acks of the last records must not wait for more input.
    const TICK_TUPLE_FREQ_SECS: Option<u32> = Some(1);

    async fn prepare(&mut self, _ctx: &TopologyContext) -> Result<(), ComponentError> {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", &self.config.bootstrap_servers);
        client.set("enable.idempotence", "true").set("acks", "all");
        for (key, value) in &self.config.producer {
            client.set(key, value);
        }
        let producer: FutureProducer = client.create().map_err(|e| {
            ComponentError::from(format!(
                "kafka bolt: cannot create a producer for {}: {e}; check the producer settings",
                self.config.bootstrap_servers
            ))
        })?;
        self.producer = Some(producer);
        Ok(())
    }

    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        self.settle_ready(out);
        if input.is_tick() {
            return Ok(());
        }
        let record = match (self.map)(&input) {
            Ok(record) => record,
            Err(e) => {
                out.fail(&input);
                return Err(e);
            }
        };
        let Some(producer) = self.producer.clone() else { return Err("kafka bolt: not prepared".into()) };
        let mut headers = OwnedHeaders::new();
        for (key, value) in &record.headers {
            headers = headers.insert(Header { key, value: Some(value) });
        }
        loop {
            let mut future = FutureRecord::to(&record.topic).headers(headers.clone());
            if let Some(key) = &record.key {
                future = future.key(key);
            }
            if let Some(value) = &record.value {
                future = future.payload(value);
            }
            if let Some(partition) = record.partition {
                future = future.partition(partition);
            }
            match producer.send_result(future) {
                Ok(delivery) => {
                    self.in_flight.push_back((input, delivery));
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // librdkafka's queue is full: wait for the oldest write to settle.
                    if self.in_flight.is_empty() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    } else {
                        self.settle_oldest(out).await;
                    }
                }
                Err((e, _)) => {
                    out.fail(&input);
                    return Err(format!("kafka bolt: cannot write to `{}`: {e}", record.topic).into());
                }
            }
        }
        while self.in_flight.len() > self.config.max_in_flight {
            self.settle_oldest(out).await;
        }
        Ok(())
    }

    async fn cleanup(&mut self) -> Result<(), ComponentError> {
        if let Some(producer) = self.producer.take() {
            // What is still unacknowledged is replayed by its spouts; give it a moment anyway.
            let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5))).await;
        }
        Ok(())
    }
}
