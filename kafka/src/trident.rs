//! [`KafkaBatchSpout`]: Kafka as a Trident batch spout (storm-kafka-client's
//! `KafkaTridentSpoutOpaque` and its transactional counterpart).
//!
//! Each task owns some partitions (the same assignment as [`crate::KafkaSpout`]) and, for every
//! epoch, records per partition the offset range the epoch holds, in the topology's store
//! (ZooKeeper on a cluster) before the batch goes out:
//!
//! - **opaque**: an epoch reads from where the epoch before it ended, up to `max_poll_records`
//!   records per partition; a replay from the same start holds the same records again (it may
//!   have committed in some tasks), one from another start (the epoch before it was replayed
//!   with other records) reads afresh, and the ranges of the epochs after it are dropped (they
//!   are replayed too). Each record
//!   lands in exactly one committed epoch; aggregate into an opaque map state.
//! - **transactional**: a replay holds exactly the range recorded for the epoch (an epoch that
//!   held nothing of a partition holds nothing again), so it is exact with a transactional
//!   state as well; it waits for those records and fails the epoch if they are gone.
//!
//! When an epoch commits, each task commits its ranges' ends to Kafka for the group (with the
//! topology's name as metadata), so Kafka's lag tools see the progress; a partition without
//! recorded ranges starts from that commit, or as `first_poll` says.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use squall::{ComponentError, Str, TopologyContext, TopologyStore, Value, Values};
use squall_trident::{BatchSpout, Epoch, SpoutKind};
use tokio::time::Instant;

use crate::assign;
use crate::config::{KafkaSpoutConfig, Topics};
use crate::spout::{Record, Source};

/// How long a blocking librdkafka call (metadata, offsets, a seek) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a transactional replay waits for its recorded records.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);

/// Turns a record into the stream's values; `None` leaves it out of the batch.
pub type BatchTranslator = Arc<dyn Fn(&Record<'_>) -> Option<Values> + Send + Sync>;

/// A Kafka topic (or several) as a Trident batch spout; see the module docs.
#[derive(Clone)]
pub struct KafkaBatchSpout {
    config: KafkaSpoutConfig,
    kind: SpoutKind,
    fields: Vec<String>,
    translate: BatchTranslator,
    /// How long an epoch waits for records that are not fetched yet.
    wait: Duration,
    task: Option<Arc<tokio::sync::Mutex<Task>>>,
}

impl std::fmt::Debug for KafkaBatchSpout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBatchSpout")
            .field("kind", &self.kind)
            .field("fields", &self.fields)
            .finish_non_exhaustive()
    }
}

impl KafkaBatchSpout {
    /// An opaque spout over `config`'s topics, emitting `topic`, `partition`, `offset`, `key`,
    /// `value` (the key and value as bytes, or null).
    pub fn opaque(config: KafkaSpoutConfig) -> Self {
        KafkaBatchSpout::new(config, SpoutKind::Opaque)
    }

    /// A transactional spout over `config`'s topics, emitting the same fields.
    pub fn transactional(config: KafkaSpoutConfig) -> Self {
        KafkaBatchSpout::new(config, SpoutKind::Transactional)
    }

    fn new(config: KafkaSpoutConfig, kind: SpoutKind) -> Self {
        let translate: BatchTranslator = Arc::new(|r: &Record<'_>| {
            let bytes = |b: Option<&[u8]>| b.map_or(Value::Null, |b| Value::Bytes(Arc::from(b)));
            Some(
                [
                    Value::Str(r.topic_name()),
                    Value::I64(i64::from(r.partition)),
                    Value::I64(r.offset),
                    bytes(r.key),
                    bytes(r.value),
                ]
                .into_iter()
                .collect(),
            )
        });
        let fields = ["topic", "partition", "offset", "key", "value"].map(str::to_owned).to_vec();
        KafkaBatchSpout { config, kind, fields, translate, wait: Duration::from_millis(20), task: None }
    }

    /// Emits `translate`'s values, whose fields are `fields`, instead.
    pub fn with_translator<F: AsRef<str>>(
        mut self,
        fields: impl IntoIterator<Item = F>,
        translate: impl Fn(&Record<'_>) -> Option<Values> + Send + Sync + 'static,
    ) -> Self {
        self.fields = fields.into_iter().map(|f| f.as_ref().to_owned()).collect();
        self.translate = Arc::new(translate);
        self
    }

    /// How long an epoch waits for records not fetched yet (20 ms by default): longer fills
    /// batches more, shorter keeps epochs quick.
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }
}

/// One epoch's records of one partition: offsets `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Range {
    start: i64,
    end: i64,
}

/// What one partition gives one epoch: offsets from `start`, at least up to `at_least` and
/// at most up to `at_most`; `last` is the end of what it got.
struct Share {
    start: i64,
    at_least: i64,
    at_most: i64,
    last: i64,
}

impl Share {
    /// A first read: anything from `start`, up to `limit` records.
    fn fresh(start: i64, limit: i64) -> Self {
        Share { start, at_least: start, at_most: start.saturating_add(limit), last: start }
    }
}

/// One owned partition.
struct Owned {
    topic: String,
    partition: i32,
    topic_name: Str,
    /// Recorded epochs, by txid.
    ranges: BTreeMap<u64, Range>,
    /// Where a partition without ranges starts.
    first: i64,
    /// The offset the consumer reads next, as far as this task knows.
    position: i64,
}

struct Task {
    consumer: Arc<BaseConsumer>,
    store: Arc<dyn TopologyStore>,
    key: String,
    owner: String,
    config: KafkaSpoutConfig,
    index: usize,
    tasks: usize,
    /// The ranges read from the store at open.
    stored: Stored,
    /// The owned partitions, once assigned: the first epoch does it, and each one after a
    /// failure (the broker may not answer yet).
    partitions: Option<Vec<Owned>>,
}

impl Drop for Task {
    fn drop(&mut self) {
        // Destroying a librdkafka consumer closes it and can wait on the broker for a long
        // time: never on a runtime thread.
        let consumer = self.consumer.clone();
        let _ = std::thread::Builder::new().name("kafka-close".into()).spawn(move || drop(consumer));
    }
}

/// What the store keeps per task: each partition's recorded epochs.
type Stored = BTreeMap<String, BTreeMap<u64, Range>>;

fn partition_key(topic: &str, partition: i32) -> String {
    format!("{topic}:{partition}")
}

fn error(what: impl std::fmt::Display) -> ComponentError {
    ComponentError::from(format!("kafka batch spout: {what}"))
}

impl BatchSpout for KafkaBatchSpout {
    fn fields(&self) -> Vec<String> {
        self.fields.clone()
    }

    fn kind(&self) -> SpoutKind {
        self.kind
    }

    async fn open(&mut self, ctx: &TopologyContext) -> Result<(), ComponentError> {
        let owner = ctx.topology_name().to_owned();
        let group = self.config.group_id.clone().unwrap_or_else(|| format!("squall-{owner}"));
        let client_id = format!("squall-{}-{}", ctx.component_id(), ctx.task_id());
        let client = self.config.client_config(&group, &client_id, &[]);
        let consumer: BaseConsumer = client.create().map_err(|e| {
            error(format_args!(
                "cannot create a consumer for {}: {e}; check the consumer settings",
                self.config.bootstrap_servers
            ))
        })?;
        let consumer = Arc::new(consumer);
        let store = ctx.store().clone();
        let (index, tasks) = (ctx.task_index(), ctx.this_component_tasks().len());
        // One key per task of this parallelism: the store has no compare-and-set, so no two
        // tasks write one key.
        let key = format!("kafka-batch.{}.{index}-of-{tasks}", ctx.component_id());
        let stored: Stored = match store.get(&key).await.map_err(error)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| error(format_args!("the ranges stored at `{key}` are malformed: {e}")))?,
            None => Stored::new(),
        };
        let task =
            Task { consumer, store, key, owner, config: self.config.clone(), index, tasks, stored, partitions: None };
        self.task = Some(Arc::new(tokio::sync::Mutex::new(task)));
        Ok(())
    }

    async fn emit_batch(&mut self, epoch: Epoch, out: &mut Vec<Values>) -> Result<(), ComponentError> {
        let Some(task) = self.task.clone() else { return Err(error("not opened")) };
        let mut task = task.lock().await;
        task.emit(epoch, self.kind, self.config.max_poll_records, self.wait, &self.translate, out).await
    }

    async fn commit(&mut self, epoch: Epoch) {
        let Some(task) = self.task.clone() else { return };
        let mut task = task.lock().await;
        task.commit(epoch);
    }
}

/// The partition count of each topic `config` names (or its pattern matches).
fn partition_counts(
    consumer: &BaseConsumer,
    config: &KafkaSpoutConfig,
) -> Result<BTreeMap<String, i32>, ComponentError> {
    let metadata = consumer
        .fetch_metadata(None, CALL_TIMEOUT)
        .map_err(|e| error(format_args!("cannot read metadata from {}: {e}", config.bootstrap_servers)))?;
    let mut counts = BTreeMap::new();
    for topic in metadata.topics() {
        if config.topics.matches(topic.name()) && topic.error().is_none() {
            counts.insert(topic.name().to_owned(), i32::try_from(topic.partitions().len()).unwrap_or(i32::MAX));
        }
    }
    if let Topics::List(names) = &config.topics
        && let Some(missing) = names.iter().find(|n| !counts.contains_key(*n))
    {
        return Err(error(format_args!(
            "topic `{missing}` does not exist at {}; create it first",
            config.bootstrap_servers
        )));
    }
    Ok(counts)
}

impl Task {
    /// Lists the partitions, assigns this task's share where its ranges (or Kafka's commits, or
    /// `first_poll`) say, once.
    async fn assign(&mut self) -> Result<(), ComponentError> {
        if self.partitions.is_some() {
            return Ok(());
        }
        let (config, consumer, owner) = (self.config.clone(), self.consumer.clone(), self.owner.clone());
        let (index, tasks) = (self.index, self.tasks);
        let starts = tokio::task::spawn_blocking(move || {
            let topics = partition_counts(&consumer, &config)?;
            let mine = assign::owned(&topics, index, tasks);
            let starts = crate::spout::first_positions(&consumer, &mine, config.first_poll, &owner)
                .map_err(|e| error(format_args!("cannot read where its partitions start: {e}")))?;
            let mut list = TopicPartitionList::new();
            for (topic, partition, start) in &starts {
                list.add_partition_offset(topic, *partition, Offset::Offset(*start))
                    .map_err(|e| error(format_args!("cannot assign {topic}/{partition}: {e}")))?;
            }
            consumer.assign(&list).map_err(|e| error(format_args!("cannot assign its partitions: {e}")))?;
            Ok::<_, ComponentError>(starts)
        })
        .await
        .map_err(|e| error(format_args!("metadata call panicked: {e}")))??;
        let partitions = starts
            .into_iter()
            .map(|(topic, partition, first)| Owned {
                topic_name: Str::from(topic.as_str()),
                ranges: self.stored.get(&partition_key(&topic, partition)).cloned().unwrap_or_default(),
                topic,
                partition,
                first,
                position: first,
            })
            .collect();
        self.partitions = Some(partitions);
        Ok(())
    }

    async fn emit(
        &mut self,
        epoch: Epoch,
        kind: SpoutKind,
        limit: usize,
        wait: Duration,
        translate: &BatchTranslator,
        out: &mut Vec<Values>,
    ) -> Result<(), ComponentError> {
        self.assign().await?;
        let Some(partitions) = self.partitions.as_mut() else { return Ok(()) };
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let mut plan = Vec::with_capacity(partitions.len());
        for p in partitions.iter_mut() {
            // Where the epoch before ended; with none recorded (the partition's first epoch), where
            // this epoch's first attempt or the next recorded epoch started.
            let before = match p.ranges.range(..epoch.txid).next_back() {
                Some((_, previous)) => previous.end,
                None => p.ranges.range(epoch.txid..).next().map_or(p.first, |(_, r)| r.start),
            };
            let recorded = p.ranges.get(&epoch.txid).copied();
            let share = match kind {
                SpoutKind::Transactional => {
                    // Recorded later epochs and none for this one: it held nothing.
                    let fixed = recorded
                        .or_else(|| p.ranges.range(epoch.txid..).next().map(|_| Range { start: before, end: before }));
                    match fixed {
                        Some(r) => Share { start: r.start, at_least: r.end, at_most: r.end, last: r.start },
                        None => Share::fresh(before, limit),
                    }
                }
                _ => {
                    // Later epochs are replayed after this one: their ranges start over.
                    p.ranges.retain(|txid, _| *txid < epoch.txid);
                    let mut share = Share::fresh(before, limit);
                    // A replay from the same start holds exactly what the first attempt held:
                    // that attempt may have committed in some tasks (a state key it updated must
                    // be updated again, or its records would count there and again next epoch;
                    // a sink task that wrote it skips it, so it must not hold more).
                    if let Some(r) = recorded.filter(|r| r.start == before) {
                        share.at_least = r.end;
                        share.at_most = r.end;
                    }
                    share
                }
            };
            if p.position != share.start {
                let start = share.start;
                self.consumer
                    .seek(&p.topic, p.partition, Offset::Offset(start), CALL_TIMEOUT)
                    .map_err(|e| error(format_args!("cannot seek {}/{} to {start}: {e}", p.topic, p.partition)))?;
                p.position = start;
            }
            plan.push(share);
        }
        // Read until every partition has its share, or has what it must and no record came for
        // `wait` (a replay waits up to REPLAY_TIMEOUT for the records it must hold again).
        let deadline = Instant::now() + REPLAY_TIMEOUT;
        let mut quiet_since = Instant::now();
        let mut taken: Vec<Vec<Values>> = vec![Vec::new(); partitions.len()];
        // Partitions short of their share; whether a record came since the last empty poll (the
        // clock is read only when the queue is empty, not per record).
        let mut unfilled = partitions.iter().zip(&plan).filter(|(p, share)| p.position < share.at_most).count();
        let mut got_any = false;
        while unfilled > 0 {
            let Some(message) = self.consumer.poll(Duration::ZERO) else {
                let now = Instant::now();
                if std::mem::take(&mut got_any) {
                    quiet_since = now;
                }
                let owed = partitions.iter().zip(&plan).any(|(p, share)| p.position < share.at_least);
                if now >= deadline || (!owed && now.duration_since(quiet_since) >= wait) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            };
            let message = message.map_err(|e| error(format_args!("cannot read: {e}")))?;
            got_any = true;
            let Some(i) =
                partitions.iter().position(|p| p.partition == message.partition() && p.topic == message.topic())
            else {
                continue;
            };
            let (p, share) = (&mut partitions[i], &mut plan[i]);
            let offset = message.offset();
            // Before the epoch's start (fetched before a seek) or past its end: not this epoch's.
            let was_short = p.position < share.at_most;
            let skip = offset < p.position || offset >= share.at_most;
            p.position = if skip { p.position.max(offset.saturating_add(1)) } else { offset.saturating_add(1) };
            if was_short && p.position >= share.at_most {
                unfilled -= 1;
            }
            if skip {
                continue;
            }
            share.last = p.position;
            let record = Record {
                topic: &p.topic,
                partition: p.partition,
                offset,
                key: message.key(),
                value: message.payload(),
                timestamp: message.timestamp().to_millis(),
                topic_name: &p.topic_name,
                source: Source::Polled(&message),
            };
            if let Some(values) = translate(&record) {
                taken[i].push(values);
            }
        }
        for (p, share) in partitions.iter_mut().zip(&plan) {
            if share.last < share.at_least {
                return Err(error(format_args!(
                    "epoch {} must hold {}/{} offsets {}..{} again, but only got to {} within {REPLAY_TIMEOUT:?}; \
                     were the records deleted?",
                    epoch.txid, p.topic, p.partition, share.start, share.at_least, share.last
                )));
            }
            p.ranges.insert(epoch.txid, Range { start: share.start, end: share.last });
        }
        // Recorded before the batch goes out: a replay after any crash finds the ranges.
        self.save().await?;
        out.extend(taken.into_iter().flatten());
        Ok(())
    }

    async fn save(&self) -> Result<(), ComponentError> {
        let stored: Stored = self
            .partitions
            .iter()
            .flatten()
            .map(|p| (partition_key(&p.topic, p.partition), p.ranges.clone()))
            .collect();
        let bytes = serde_json::to_vec(&stored).map_err(|e| error(format_args!("cannot encode its ranges: {e}")))?;
        self.store.put(&self.key, &bytes).await.map_err(error)
    }

    /// `epoch`'s commit started, so the epochs before it committed: older ranges are history
    /// (kept out of the next save), and Kafka gets the ends. The range before it stays: should
    /// the commit fail, or the coordinator die before it records it, the epoch replays from
    /// where that range ended.
    fn commit(&mut self, epoch: Epoch) {
        let mut list = TopicPartitionList::new();
        for p in self.partitions.iter_mut().flatten() {
            p.ranges.retain(|txid, _| txid.saturating_add(1) >= epoch.txid);
            let Some(range) = p.ranges.get(&epoch.txid) else { continue };
            if list.add_partition_offset(&p.topic, p.partition, Offset::Offset(range.end)).is_err() {
                continue;
            }
            if let Some(mut elem) = list.find_partition(&p.topic, p.partition) {
                elem.set_metadata(&self.owner);
            }
        }
        if list.count() == 0 {
            return;
        }
        if let Err(e) = self.consumer.commit(&list, CommitMode::Async) {
            tracing::warn!(txid = epoch.txid, error = %e, "kafka batch spout: cannot commit offsets to kafka");
        }
    }
}
