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
//!
//! **New partitions.** Each task lists the topics again every `partition_refresh` (2 s), on a
//! blocking thread, and takes up the partitions it now owns (a new topic matching a pattern, or
//! partitions added to a topic) at the next epoch; the assignment never moves a partition that
//! exists, so no two tasks read one. Beside the ranges the task stores the newest epoch it
//! recorded (`emitted`): a replay of an epoch up to that one holds nothing of a partition without
//! a range in it (the partition was found after the epoch first went out), with both kinds — a
//! replay must not hold records its first attempt did not (a transactional state skips a key
//! that attempt committed, a sink task skips the epoch). So a new partition is read from the
//! first epoch past `emitted`. Partitions are only added while the spout runs, never dropped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use squall::{ComponentError, Str, TopologyContext, TopologyStore, Value, Values};
use squall_trident::{BatchSpout, Epoch, SpoutKind};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::KafkaSpoutConfig;
use crate::spout::{Listing, Record, Source};

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

    /// Exactly `range` again.
    fn exact(range: Range) -> Self {
        Share { start: range.start, at_least: range.end, at_most: range.end, last: range.start }
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
    /// The ranges read from the store at open, for partitions not taken up yet.
    stored: BTreeMap<String, BTreeMap<u64, Range>>,
    /// The newest epoch this task recorded ranges of (none: 0); see the module docs.
    emitted: u64,
    /// The owned partitions, once assigned: the first epoch does it, and each one after a
    /// failure (the broker may not answer yet).
    partitions: Option<Vec<Owned>>,
    /// A listing of the partitions under way on a blocking thread.
    refresh: Option<JoinHandle<Result<Listing, KafkaError>>>,
    next_refresh: Instant,
    /// Refreshes that failed in a row.
    refresh_failures: u32,
}

impl Drop for KafkaBatchSpout {
    fn drop(&mut self) {
        // Destroying a librdkafka consumer closes it, which waits on the broker (for good while
        // none answers): never on a runtime thread. The whole task goes, so no reference to the
        // consumer is left behind to be dropped last here.
        if let Some(task) = self.task.take() {
            let _ = std::thread::Builder::new().name("kafka-close".into()).spawn(move || drop(task));
        }
    }
}

/// What the store keeps per task: the newest epoch it recorded, and each partition's recorded
/// epochs by `topic:partition`.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    emitted: u64,
    partitions: BTreeMap<String, BTreeMap<u64, Range>>,
}

impl Stored {
    /// Decodes what `save` wrote, or the ranges alone as written before `emitted` was kept (the
    /// newest recorded epoch then stands for it).
    fn decode(bytes: &[u8]) -> Result<Stored, serde_json::Error> {
        serde_json::from_slice::<Stored>(bytes).or_else(|e| {
            let partitions: BTreeMap<String, BTreeMap<u64, Range>> = serde_json::from_slice(bytes).map_err(|_| e)?;
            let emitted = partitions.values().filter_map(|r| r.keys().next_back()).max().copied().unwrap_or(0);
            Ok(Stored { emitted, partitions })
        })
    }
}

/// What partition `p` gives epoch `txid` (`limit` records at most when it reads afresh), given
/// that this task recorded epochs up to `emitted`; see the module docs.
fn plan_share(p: &Owned, txid: u64, kind: SpoutKind, emitted: u64, limit: i64) -> Share {
    // Where the epoch before ended; with none recorded (the partition's first epoch), where this
    // epoch's first attempt or the next recorded epoch started.
    let before = match p.ranges.range(..txid).next_back() {
        Some((_, previous)) => previous.end,
        None => p.ranges.range(txid..).next().map_or(p.first, |(_, r)| r.start),
    };
    let recorded = p.ranges.get(&txid).copied();
    // An epoch this task recorded (or a later one) without this partition: it held nothing of it
    // (the partition was found later, or the task never got the epoch's first attempt), and a
    // replay must not hold more than that attempt did.
    let held_nothing = (txid <= emitted).then_some(Range { start: before, end: before });
    match kind {
        SpoutKind::Transactional => match recorded.or(held_nothing) {
            Some(range) => Share::exact(range),
            None => Share::fresh(before, limit),
        },
        _ => {
            // A replay from the same start holds exactly what the first attempt held: that
            // attempt may have committed in some tasks (a state key it updated must be updated
            // again, or its records would count there and again next epoch; a sink task that
            // wrote it skips it, so it must not hold more). From another start (the epoch before
            // was replayed with other records) it reads afresh.
            match recorded {
                Some(range) if range.start == before => Share::exact(range),
                Some(_) => Share::fresh(before, limit),
                None => held_nothing.map_or(Share::fresh(before, limit), Share::exact),
            }
        }
    }
}

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
        let stored = match store.get(&key).await.map_err(error)? {
            Some(bytes) => Stored::decode(&bytes)
                .map_err(|e| error(format_args!("the ranges stored at `{key}` are malformed: {e}")))?,
            None => Stored::default(),
        };
        let task = Task {
            consumer,
            store,
            key,
            owner,
            config: self.config.clone(),
            index,
            tasks,
            stored: stored.partitions,
            emitted: stored.emitted,
            partitions: None,
            refresh: None,
            next_refresh: Instant::now() + self.config.partition_refresh,
            refresh_failures: 0,
        };
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
            let result = list_and_assign(&consumer, &config, (index, tasks), &owner);
            crate::spout::release_consumer(consumer);
            result
        })
        .await
        .map_err(|e| error(format_args!("metadata call panicked: {e}")))??;
        let partitions =
            starts.into_iter().map(|(topic, partition, first)| self.owned(topic, partition, first)).collect();
        self.partitions = Some(partitions);
        self.next_refresh = Instant::now() + self.config.partition_refresh;
        Ok(())
    }

    /// An owned partition, with the ranges stored for it.
    fn owned(&mut self, topic: String, partition: i32, first: i64) -> Owned {
        Owned {
            topic_name: Str::from(topic.as_str()),
            ranges: self.stored.remove(&partition_key(&topic, partition)).unwrap_or_default(),
            topic,
            partition,
            first,
            position: first,
        }
    }

    /// Lists the partitions again on a blocking thread when it is time.
    fn start_refresh(&mut self) {
        let now = Instant::now();
        if self.refresh.is_some() || now < self.next_refresh {
            return;
        }
        self.next_refresh = now + self.config.partition_refresh;
        let known: Vec<(String, i32)> =
            self.partitions.iter().flatten().map(|p| (p.topic.clone(), p.partition)).collect();
        let (consumer, topics, first_poll) =
            (self.consumer.clone(), self.config.topics.clone(), self.config.first_poll);
        let (index, tasks, owner) = (self.index, self.tasks, self.owner.clone());
        self.refresh = Some(tokio::task::spawn_blocking(move || {
            let listed = crate::spout::list_owned(&consumer, &topics, (index, tasks), &known, first_poll, &owner);
            crate::spout::release_consumer(consumer);
            listed
        }));
    }

    /// Takes up a finished refresh: assigns the partitions this task now owns and did not, at
    /// their first positions. Between epochs, so no poll sees a record of one before it is
    /// known.
    async fn take_up_refresh(&mut self) {
        if !self.refresh.as_ref().is_some_and(JoinHandle::is_finished) {
            return;
        }
        let Some(handle) = self.refresh.take() else { return };
        let listing = match handle.await {
            Ok(Ok(listing)) => listing,
            Ok(Err(e)) => {
                self.refresh_failed(format!("cannot list the partitions at {}: {e}", self.config.bootstrap_servers));
                return;
            }
            Err(e) => {
                self.refresh_failed(format!("the partition listing panicked: {e}"));
                return;
            }
        };
        if let Some(missing) = listing.missing.first() {
            // Its partitions stay assigned: only added partitions are taken up while running.
            self.refresh_failed(format!(
                "topic `{missing}` does not exist at {} any more",
                self.config.bootstrap_servers
            ));
        } else {
            self.refresh_failures = 0;
        }
        if listing.starts.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for (topic, partition, start) in &listing.starts {
            if let Err(e) = list.add_partition_offset(topic, *partition, Offset::Offset(*start)) {
                self.refresh_failed(format!("cannot assign {topic}/{partition}: {e}"));
                return;
            }
        }
        let consumer = self.consumer.clone();
        let assign = move || {
            let result = consumer.incremental_assign(&list);
            crate::spout::release_consumer(consumer);
            result
        };
        match tokio::task::spawn_blocking(assign).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return self.refresh_failed(format!("cannot assign its new partitions: {e}")),
            Err(e) => return self.refresh_failed(format!("assigning its new partitions panicked: {e}")),
        }
        for (topic, partition, first) in listing.starts {
            tracing::info!(
                topic = %topic, partition, first, task = self.index, from_epoch = self.emitted + 1,
                "kafka batch spout: partition taken up"
            );
            let owned = self.owned(topic, partition, first);
            self.partitions.get_or_insert_with(Vec::new).push(owned);
        }
    }

    /// A refresh did not work: the partitions stay as they are and the next refresh tries again.
    /// Logged at the first failure of a run and about every minute after.
    fn refresh_failed(&mut self, what: String) {
        self.refresh_failures = self.refresh_failures.saturating_add(1);
        let every = (Duration::from_secs(60).as_millis() / self.config.partition_refresh.as_millis().max(1)).max(1);
        if self.refresh_failures == 1 || u128::from(self.refresh_failures).is_multiple_of(every) {
            tracing::warn!(task = self.index, failures = self.refresh_failures, error = %what, "kafka batch spout: partition refresh failed");
        }
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
        self.take_up_refresh().await;
        self.start_refresh();
        let Some(partitions) = self.partitions.as_mut() else { return Ok(()) };
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let mut plan = Vec::with_capacity(partitions.len());
        for p in partitions.iter_mut() {
            let share = plan_share(p, epoch.txid, kind, self.emitted, limit);
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
            if kind != SpoutKind::Transactional {
                // Later epochs are replayed after this one: their ranges start over (only now
                // that it worked: a failed attempt leaves the record of the first one).
                p.ranges.retain(|txid, _| *txid < epoch.txid);
            }
            p.ranges.insert(epoch.txid, Range { start: share.start, end: share.last });
        }
        self.emitted = match kind {
            SpoutKind::Transactional => self.emitted.max(epoch.txid),
            // The later epochs' ranges were dropped: they read afresh, so may new partitions.
            _ => epoch.txid,
        };
        // Recorded before the batch goes out: a replay after any crash finds the ranges.
        self.save().await?;
        out.extend(taken.into_iter().flatten());
        Ok(())
    }

    async fn save(&self) -> Result<(), ComponentError> {
        let partitions = self
            .partitions
            .iter()
            .flatten()
            .map(|p| (partition_key(&p.topic, p.partition), p.ranges.clone()))
            .collect();
        let stored = Stored { emitted: self.emitted, partitions };
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

/// Lists the partitions a task owns and where they start, and assigns them to `consumer`.
fn list_and_assign(
    consumer: &BaseConsumer,
    config: &KafkaSpoutConfig,
    (index, tasks): (usize, usize),
    owner: &str,
) -> Result<Vec<(String, i32, i64)>, ComponentError> {
    let listing = crate::spout::list_owned(consumer, &config.topics, (index, tasks), &[], config.first_poll, owner)
        .map_err(|e| {
            error(format_args!("cannot list its partitions and where they start at {}: {e}", config.bootstrap_servers))
        })?;
    if let Some(missing) = listing.missing.first() {
        return Err(error(format_args!(
            "topic `{missing}` does not exist at {}; create it first",
            config.bootstrap_servers
        )));
    }
    let mut list = TopicPartitionList::new();
    for (topic, partition, start) in &listing.starts {
        list.add_partition_offset(topic, *partition, Offset::Offset(*start))
            .map_err(|e| error(format_args!("cannot assign {topic}/{partition}: {e}")))?;
    }
    consumer.assign(&list).map_err(|e| error(format_args!("cannot assign its partitions: {e}")))?;
    Ok(listing.starts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(first: i64, ranges: &[(u64, i64, i64)]) -> Owned {
        Owned {
            topic: "t".to_owned(),
            partition: 0,
            topic_name: Str::from("t"),
            ranges: ranges.iter().map(|&(txid, start, end)| (txid, Range { start, end })).collect(),
            first,
            position: first,
        }
    }

    fn bounds(share: &Share) -> (i64, i64, i64) {
        (share.start, share.at_least, share.at_most)
    }

    #[test]
    fn a_partition_found_after_an_epoch_went_out_holds_nothing_in_its_replays() {
        // The task recorded epochs up to 3, then found a partition whose records start at 10.
        let found = partition(10, &[]);
        for kind in [SpoutKind::Transactional, SpoutKind::Opaque] {
            for txid in 1..=3 {
                assert_eq!(bounds(&plan_share(&found, txid, kind, 3, 100)), (10, 10, 10), "{kind:?} replay of {txid}");
            }
            assert_eq!(bounds(&plan_share(&found, 4, kind, 3, 100)), (10, 10, 110), "{kind:?}: read from epoch 4");
        }
        // Once it held nothing in epoch 3, epoch 4 reads from there.
        let after = partition(10, &[(3, 10, 10)]);
        assert_eq!(bounds(&plan_share(&after, 4, SpoutKind::Transactional, 3, 100)), (10, 10, 110));
    }

    #[test]
    fn replays_hold_their_recorded_ranges_as_the_kinds_say() {
        let p = partition(0, &[(1, 0, 50), (2, 50, 80), (3, 80, 80)]);
        // Transactional: exactly the recorded range, an empty one included.
        assert_eq!(bounds(&plan_share(&p, 2, SpoutKind::Transactional, 3, 100)), (50, 80, 80));
        assert_eq!(bounds(&plan_share(&p, 3, SpoutKind::Transactional, 3, 100)), (80, 80, 80));
        // Opaque from the same start: the same records.
        assert_eq!(bounds(&plan_share(&p, 2, SpoutKind::Opaque, 3, 100)), (50, 80, 80));
        // Opaque after the epoch before was replayed with other records: afresh.
        let replayed = partition(0, &[(1, 0, 60), (2, 50, 80)]);
        assert_eq!(bounds(&plan_share(&replayed, 2, SpoutKind::Opaque, 2, 100)), (60, 60, 160));
        // A new epoch reads afresh from where the one before ended.
        assert_eq!(bounds(&plan_share(&p, 4, SpoutKind::Transactional, 3, 100)), (80, 80, 180));
    }

    #[test]
    fn ranges_stored_without_the_newest_epoch_decode_with_it() {
        let old = br#"{"t:0":{"4":{"start":0,"end":5},"6":{"start":5,"end":9}},"t:1":{"7":{"start":0,"end":0}}}"#;
        let stored = Stored::decode(old).expect("decodes");
        assert_eq!(stored.emitted, 7);
        assert_eq!(stored.partitions.len(), 2);
        let new = Stored { emitted: 9, partitions: stored.partitions };
        let bytes = serde_json::to_vec(&new).expect("encodes");
        assert_eq!(Stored::decode(&bytes).expect("decodes"), new);
        assert_eq!(Stored::decode(b"{}").expect("an empty store decodes"), Stored::default());
        assert!(Stored::decode(b"[1]").is_err());
    }
}
