//! [`KafkaTransactionalSink`]: a Trident stream written to Kafka exactly once. Each sink task
//! writes its share of an epoch and a progress record `(topology, component, task, epoch)` in
//! one Kafka transaction when the epoch commits (Materialize's sink, per task). Its
//! `transactional.id` is fixed per task, so a restarted task fences the producer of the one
//! before it; it then reads its last progress record (`read_committed`) and skips the epochs
//! already written. A consumer with `isolation.level=read_committed` sees every record once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use squall::{ComponentError, TopologyContext, Value, Values};
use squall_trident::{Epoch, EpochSink};

use crate::bolt::ProducerRecord;

/// How long one transaction call (init, commit, abort) or the progress read may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Turns a stream tuple (its values, in the stream's field order) into the record to write.
pub type RecordMapper = Arc<dyn Fn(&[Value]) -> Result<ProducerRecord, ComponentError> + Send + Sync>;

/// A progress record's value.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    topology: String,
    component: String,
    task: usize,
    epoch: u64,
}

/// Writes a Trident stream to Kafka exactly once; see the module docs.
#[derive(Clone)]
pub struct KafkaTransactionalSink {
    bootstrap_servers: String,
    progress_topic: String,
    map: RecordMapper,
    producer: BTreeMap<String, String>,
    task: Option<Arc<tokio::sync::Mutex<SinkTask>>>,
}

impl std::fmt::Debug for KafkaTransactionalSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTransactionalSink")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("progress_topic", &self.progress_topic)
            .finish_non_exhaustive()
    }
}

struct SinkTask {
    producer: Arc<ThreadedProducer<DefaultProducerContext>>,
    /// The progress record's key: `<topology>/<component>/<task index>`.
    key: String,
    progress: Progress,
}

impl KafkaTransactionalSink {
    /// Writes each tuple as `map` says, to the cluster at `bootstrap_servers`, with progress
    /// records in `progress_topic` (an existing topic; compacted is best).
    pub fn new(
        bootstrap_servers: impl Into<String>,
        progress_topic: impl Into<String>,
        map: impl Fn(&[Value]) -> Result<ProducerRecord, ComponentError> + Send + Sync + 'static,
    ) -> Self {
        KafkaTransactionalSink {
            bootstrap_servers: bootstrap_servers.into(),
            progress_topic: progress_topic.into(),
            map: Arc::new(map),
            producer: BTreeMap::new(),
            task: None,
        }
    }

    /// Sets a librdkafka producer setting (not `transactional.id`, which the sink sets per task).
    pub fn with_producer_setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.producer.insert(key.into(), value.into());
        self
    }
}

fn error(what: impl std::fmt::Display) -> ComponentError {
    ComponentError::from(format!("kafka sink: {what}"))
}

/// Runs a blocking librdkafka call off the runtime threads.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, ComponentError> + Send + 'static,
) -> Result<T, ComponentError> {
    tokio::task::spawn_blocking(call).await.map_err(|e| error(format_args!("a blocking call panicked: {e}")))?
}

impl EpochSink for KafkaTransactionalSink {
    async fn open(&mut self, ctx: &TopologyContext) -> Result<(), ComponentError> {
        let key = format!("{}/{}/{}", ctx.topology_name(), ctx.component_id(), ctx.task_index());
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("transaction.timeout.ms", "60000");
        for (k, v) in &self.producer {
            config.set(k, v);
        }
        config.set("transactional.id", format!("squall-{key}"));
        let producer: ThreadedProducer<DefaultProducerContext> = config
            .create()
            .map_err(|e| error(format_args!("cannot create a producer for {}: {e}", self.bootstrap_servers)))?;
        let producer = Arc::new(producer);
        let init = producer.clone();
        // Fences any earlier producer of this task: its open transaction is aborted.
        blocking(move || {
            init.init_transactions(CALL_TIMEOUT).map_err(|e| {
                error(format_args!("cannot start transactions (is the broker up and does it allow them?): {e}"))
            })
        })
        .await?;
        let (bootstrap, topic, wanted) = (self.bootstrap_servers.clone(), self.progress_topic.clone(), key.clone());
        let last = blocking(move || last_progress(&bootstrap, &topic, &wanted)).await?;
        if let Some(epoch) = last {
            tracing::info!(key, epoch, "kafka sink resumes after the last epoch it wrote");
        }
        let progress = Progress {
            topology: ctx.topology_name().to_owned(),
            component: ctx.component_id().to_owned(),
            task: ctx.task_index(),
            epoch: last.unwrap_or(0),
        };
        self.task = Some(Arc::new(tokio::sync::Mutex::new(SinkTask { producer, key, progress })));
        Ok(())
    }

    async fn write(&mut self, epoch: Epoch, tuples: Vec<Values>) -> Result<(), ComponentError> {
        let Some(task) = self.task.clone() else { return Err(error("not opened")) };
        let mut task = task.lock().await;
        if epoch.txid <= task.progress.epoch {
            // Written before a restart; the commit is being replayed.
            return Ok(());
        }
        let records: Vec<ProducerRecord> = tuples.iter().map(|t| (self.map)(t)).collect::<Result<_, _>>()?;
        let mut progress = Progress { epoch: epoch.txid, ..task.progress.clone() };
        let progress_value =
            serde_json::to_vec(&progress).map_err(|e| error(format_args!("cannot encode progress: {e}")))?;
        let (producer, key, topic) = (task.producer.clone(), task.key.clone(), self.progress_topic.clone());
        blocking(move || write_transaction(&producer, &records, &topic, &key, &progress_value)).await?;
        progress.epoch = epoch.txid;
        task.progress = progress;
        Ok(())
    }
}

/// One transaction: the records, then the progress record; aborted on any error.
fn write_transaction(
    producer: &ThreadedProducer<DefaultProducerContext>,
    records: &[ProducerRecord],
    progress_topic: &str,
    key: &str,
    progress: &[u8],
) -> Result<(), ComponentError> {
    producer.begin_transaction().map_err(|e| error(format_args!("cannot begin a transaction: {e}")))?;
    let sent = (|| {
        for r in records {
            let mut record = BaseRecord::<Vec<u8>, Vec<u8>>::to(&r.topic);
            if let Some(p) = r.partition {
                record = record.partition(p);
            }
            if let Some(k) = &r.key {
                record = record.key(k);
            }
            if let Some(v) = &r.value {
                record = record.payload(v);
            }
            if !r.headers.is_empty() {
                let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
                for (name, value) in &r.headers {
                    headers = headers.insert(Header { key: name, value: Some(value) });
                }
                record = record.headers(headers);
            }
            send(producer, record)?;
        }
        let key = key.as_bytes().to_vec();
        let value = progress.to_vec();
        send(producer, BaseRecord::<Vec<u8>, Vec<u8>>::to(progress_topic).key(&key).payload(&value))?;
        producer.commit_transaction(CALL_TIMEOUT).map_err(|e| error(format_args!("cannot commit: {e}")))
    })();
    if let Err(e) = sent {
        if let Err(abort) = producer.abort_transaction(CALL_TIMEOUT) {
            tracing::warn!(error = %abort, "kafka sink: cannot abort the transaction");
        }
        return Err(e);
    }
    Ok(())
}

/// Queues one record, waiting while the producer's queue is full.
fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    mut record: BaseRecord<'_, Vec<u8>, Vec<u8>>,
) -> Result<(), ComponentError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(error(format_args!("cannot send to {}: {e}", "kafka"))),
        }
    }
}

/// The last epoch the progress topic records for `key`, read committed.
fn last_progress(bootstrap: &str, topic: &str, key: &str) -> Result<Option<u64>, ComponentError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "squall-sink-progress")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .map_err(|e| error(format_args!("cannot create a consumer for {bootstrap}: {e}")))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), CALL_TIMEOUT)
        .map_err(|e| error(format_args!("cannot read the metadata of progress topic `{topic}`: {e}")))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            error(format_args!("progress topic `{topic}` does not exist at {bootstrap}; create it first"))
        })?;
    let mut last = None;
    for p in 0..i32::try_from(partitions).unwrap_or(i32::MAX) {
        // Read committed, the high watermark is the last stable offset's bound.
        let (low, high) = consumer
            .fetch_watermarks(topic, p, CALL_TIMEOUT)
            .map_err(|e| error(format_args!("cannot read offsets of `{topic}`: {e}")))?;
        if high <= low {
            continue;
        }
        let mut list = TopicPartitionList::new();
        let _ = list.add_partition_offset(topic, p, Offset::Offset(low));
        consumer.assign(&list).map_err(|e| error(format_args!("cannot read `{topic}`: {e}")))?;
        // Read up to the end (the last stable offset, reading committed): librdkafka says when.
        let deadline = std::time::Instant::now() + CALL_TIMEOUT;
        loop {
            if std::time::Instant::now() > deadline {
                return Err(error(format_args!("cannot read `{topic}` to its end within {CALL_TIMEOUT:?}")));
            }
            let message = match consumer.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(error(format_args!("cannot read `{topic}`: {e}"))),
                Some(Ok(message)) => message,
            };
            if message.key() == Some(key.as_bytes())
                && let Some(progress) = message.payload().and_then(|v| serde_json::from_slice::<Progress>(v).ok())
            {
                last = Some(progress.epoch);
            }
        }
    }
    Ok(last)
}
