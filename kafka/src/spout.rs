//! [`KafkaSpout`]: Storm's storm-kafka-client spout. Each task owns some partitions
//! ([`crate::assign`]), consumes them with its own librdkafka consumer (manual assignment, no
//! group membership), emits each record as a typed tuple, and commits per partition the offset
//! below which everything was acked ([`OffsetManager`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use rustc_hash::FxHashMap;
use squall::prelude::*;
use squall::{ComponentError, OutputDeclarer, Outputs, Stream, TaskStatus, TypedTuple};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::assign;
use crate::config::{Exhausted, FirstPoll, Guarantee, KafkaSpoutConfig, Topics};
use crate::fetch::{FetchQueue, Fetched};
use crate::offsets::OffsetManager;

/// How long a blocking librdkafka call (metadata, committed offsets, a commit) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One Kafka record as the spout's translator sees it.
#[derive(Debug)]
pub struct Record<'a> {
    /// Its topic.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<&'a [u8]>,
    /// Its value.
    pub value: Option<&'a [u8]>,
    /// Its timestamp, in unix milliseconds.
    pub timestamp: Option<i64>,
    /// The topic as a shared string, made once per partition.
    pub(crate) topic_name: &'a Str,
    pub(crate) source: Source<'a>,
}

/// Where a record's headers are read from, only when the translator asks.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source<'a> {
    Polled(&'a BorrowedMessage<'a>),
    Fetched(&'a Fetched),
}

impl Record<'_> {
    /// Its topic as a [`Str`]: cloning it copies no bytes (names over 23 bytes are shared).
    pub fn topic_name(&self) -> Str {
        self.topic_name.clone()
    }

    /// Its headers, in order.
    pub fn headers(&self) -> Vec<(&str, Option<&[u8]>)> {
        match self.source {
            Source::Polled(message) => {
                message.headers().map(|h| h.iter().map(|h| (h.key, h.value)).collect()).unwrap_or_default()
            }
            Source::Fetched(message) => message.headers(),
        }
    }
}

/// The tuple the default translator emits: every part of the record.
#[derive(Tuple, Debug, Clone, PartialEq)]
pub struct KafkaRecord {
    /// Its topic.
    pub topic: Str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<Arc<[u8]>>,
    /// Its value.
    pub value: Option<Arc<[u8]>>,
    /// Its timestamp, in unix milliseconds.
    pub timestamp: Option<i64>,
    /// Its headers (a repeated header keeps its last value).
    pub headers: BTreeMap<Str, Arc<[u8]>>,
}

impl KafkaRecord {
    /// The default translation of a record.
    pub fn of(record: &Record<'_>) -> KafkaRecord {
        KafkaRecord {
            topic: record.topic_name(),
            partition: record.partition,
            offset: record.offset,
            key: record.key.map(Arc::from),
            value: record.value.map(Arc::from),
            timestamp: record.timestamp,
            headers: {
                let headers = record.headers();
                if headers.is_empty() {
                    BTreeMap::new()
                } else {
                    headers.into_iter().filter_map(|(k, v)| Some((Str::new(k), Arc::from(v?)))).collect()
                }
            },
        }
    }
}

/// What the `dead_letter` stream carries: a record whose retries were used up.
#[derive(Tuple, Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Its topic.
    pub topic: Str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<Arc<[u8]>>,
    /// Its value.
    pub value: Option<Arc<[u8]>>,
    /// How often it failed.
    pub failures: u32,
}

/// Turns a record into the spout's tuple; `None` skips the record (it counts as processed).
pub type Translator<T> = Arc<dyn Fn(&Record<'_>) -> Option<T> + Send + Sync>;

/// Identifies an emitted record: the partition's slot in this task and the offset. Acks for a
/// partition the task no longer owns find no slot and are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KafkaMsgId {
    slot: u32,
    offset: i64,
}

/// Storm's `KafkaSpout`, emitting `T` (by default [`KafkaRecord`]) on its default stream and
/// [`DeadLetter`]s on `dead_letter`.
pub struct KafkaSpout<T = KafkaRecord> {
    config: Arc<KafkaSpoutConfig>,
    translate: Translator<T>,
    task: Option<Box<TaskState>>,
}

impl<T> Clone for KafkaSpout<T> {
    fn clone(&self) -> Self {
        KafkaSpout { config: self.config.clone(), translate: self.translate.clone(), task: None }
    }
}

impl KafkaSpout<KafkaRecord> {
    /// A spout emitting every record as a [`KafkaRecord`].
    pub fn new(config: KafkaSpoutConfig) -> Self {
        KafkaSpout::with_translator(config, |r: &Record<'_>| Some(KafkaRecord::of(r)))
    }
}

impl<T> KafkaSpout<T> {
    /// The stream failed records go to once their retries are used up, with
    /// [`Exhausted::DeadLetter`].
    pub const DEAD_LETTER: Stream<Self, DeadLetter> = Stream::new("dead_letter", 1);

    /// A spout emitting what `translate` makes of each record.
    pub fn with_translator(
        config: KafkaSpoutConfig,
        translate: impl Fn(&Record<'_>) -> Option<T> + Send + Sync + 'static,
    ) -> Self {
        KafkaSpout { config: Arc::new(config), translate: Arc::new(translate), task: None }
    }

    /// Per-partition status of this task, once opened.
    pub fn status(&self) -> Vec<PartitionStatus> {
        self.task.as_ref().map(|t| t.status()).unwrap_or_default()
    }
}

impl<T: TypedTuple> Outputs for KafkaSpout<T> {
    type Default = T;

    fn declare_outputs(declarer: &mut OutputDeclarer) {
        declarer.declare::<T>("default", false);
        declarer.declare::<DeadLetter>("dead_letter", false);
    }
}

/// One owned partition's state.
struct Partition {
    topic: Arc<str>,
    /// `topic` as the tuples carry it.
    topic_name: Str,
    partition: i32,
    offsets: OffsetManager,
    /// Failed offsets: failures so far, when they may go again, and whether to the dead
    /// letter stream.
    retries: BTreeMap<i64, Retry>,
    /// Whether a ready retry has made us seek back already.
    sought: bool,
    paused: bool,
    /// The next offset polling returns (what was polled last, plus one).
    position: i64,
    /// The batch ([`TaskState::batch`]) in which a record over the uncommitted limit made us
    /// seek back: its later records of this partition were taken already and are skipped.
    sought_in_batch: Option<u64>,
    /// The partition's end offset at the last refresh.
    end: Option<i64>,
}

/// A record that failed: kept until it is acked, so its failures add up across retries.
#[derive(Debug, Clone, Copy)]
struct Retry {
    failures: u32,
    /// When it may go again; `None` while it is out again (emitted, awaiting ack or fail).
    ready_at: Option<Instant>,
    dead_letter: bool,
}

impl Partition {
    /// At the uncommitted limit: the record at `offset` waits, read again (seeking back to it)
    /// once the partition resumes; the rest of `batch` for this partition is skipped.
    fn hold_back(&mut self, consumer: &BaseConsumer, offset: i64, batch: u64) {
        let _ = consumer.seek(&self.topic, self.partition, Offset::Offset(offset), Duration::ZERO);
        self.position = offset;
        self.sought_in_batch = Some(batch);
    }
}

impl Retry {
    fn is_due(&self, now: Instant) -> bool {
        self.ready_at.is_some_and(|at| at <= now)
    }
}

/// The status of one partition, for metrics and `describe`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PartitionStatus {
    /// `topic-partition`.
    pub partition: String,
    /// The committed offset.
    pub committed: i64,
    /// Offsets emitted past the commit.
    pub uncommitted: u64,
    /// Failed records waiting to go again.
    pub retries_pending: usize,
    /// Whether polling it is paused at `max_uncommitted_offsets`.
    pub paused: bool,
    /// End offset minus committed offset, as of the last refresh.
    pub lag: Option<i64>,
}

/// What a task keeps between calls.
struct TaskState {
    consumer: Arc<BaseConsumer>,
    /// Where the owned partitions' records arrive; taken out while it is drained.
    fetch: Option<FetchQueue>,
    /// Slots by librdkafka's topic handle and partition, for fetched records; cleared whenever
    /// partitions are revoked (a handle may then go away and its address be reused).
    fetched_slot: FxHashMap<(usize, i32), u32>,
    /// Counts the batches of records taken, from the consumer's queue or the fetch queue.
    batch: u64,
    bootstrap: String,
    group: String,
    topology_id: String,
    index: usize,
    tasks: usize,
    slots: FxHashMap<u32, Partition>,
    slot_of: HashMap<(Arc<str>, i32), u32>,
    /// The partition of the last polled record and its slot: records come in runs per
    /// partition, so most find their slot here without hashing the topic's name.
    last_slot: Option<(Arc<str>, i32, u32)>,
    next_slot: u32,
    next_refresh: Instant,
    next_commit: Instant,
    refresh: Option<JoinHandle<Result<Assigned, KafkaError>>>,
    commit: Option<JoinHandle<CommitOutcome>>,
    /// The last consumer or broker error, cleared by a good poll.
    last_error: Option<String>,
    errors_in_a_row: u32,
    /// Where this task's status is shown, and when it was last written.
    board: TaskStatus,
    next_report: Instant,
}

/// A finished commit: what was committed per slot, and whether it worked.
type CommitOutcome = (Vec<(u32, i64)>, Result<(), KafkaError>);

/// Partitions to take up, with where each starts.
struct Assigned {
    owned: Vec<(String, i32)>,
    starts: Vec<(String, i32, i64)>,
    /// The end offset of each owned partition.
    ends: Vec<(String, i32, i64)>,
    /// Listed topics the cluster does not have.
    missing: Vec<String>,
}

impl<T: TypedTuple> Spout for KafkaSpout<T> {
    type MsgId = KafkaMsgId;

    async fn open(&mut self, ctx: &TopologyContext) -> Result<(), ComponentError> {
        let group = self.config.group_id.clone().unwrap_or_else(|| format!("squall-{}", ctx.topology_name()));
        // librdkafka prefetches up to 100k records per partition and 64 MB of payload per
        // consumer (more than twice that in memory with its per-record overhead); a task needs
        // far less to keep its bolts busy, and reads faster from a smaller, warmer queue.
        // A fetch, though, may carry more than librdkafka's 1 MB per partition: a task owns a
        // few partitions, so its fetches were 2 MB where Kafka's Java consumer, one for all of
        // them, fetches 8, and the broker spent a quarter more CPU per record on the extra
        // requests (on two cores that CPU is the spout's). 4 MB per partition and per fetch
        // (librdkafka's default is 50 MB per fetch): as fast as 8 MB, and a task holds at most
        // 4 MB of records beyond its queue.
        let client_id = format!("squall-{}-{}", ctx.component_id(), ctx.task_id());
        let client = self.config.client_config(
            &group,
            &client_id,
            &[
                ("queued.min.messages", "20000"),
                ("queued.max.messages.kbytes", "16384"),
                ("fetch.message.max.bytes", "4194304"),
                ("fetch.max.bytes", "4194304"),
            ],
        );
        let consumer: BaseConsumer = client.create().map_err(|e| {
            ComponentError::from(format!(
                "kafka spout: cannot create a consumer for {}: {e}; check the consumer settings",
                self.config.bootstrap_servers
            ))
        })?;
        let now = Instant::now();
        let consumer = Arc::new(consumer);
        self.task = Some(Box::new(TaskState {
            fetch: Some(FetchQueue::new(consumer.clone())),
            fetched_slot: FxHashMap::default(),
            batch: 0,
            consumer,
            bootstrap: self.config.bootstrap_servers.clone(),
            group,
            topology_id: ctx.topology_id().to_owned(),
            index: ctx.task_index(),
            tasks: ctx.this_component_tasks().len(),
            slots: FxHashMap::default(),
            slot_of: HashMap::new(),
            last_slot: None,
            next_slot: 0,
            next_refresh: now,
            next_commit: now + self.config.commit_period,
            refresh: None,
            commit: None,
            last_error: None,
            errors_in_a_row: 0,
            board: ctx.status().clone(),
            next_report: now,
        }));
        Ok(())
    }

    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        let config = self.config.clone();
        let Some(task) = self.task.as_mut() else { return Ok(()) };
        task.take_up_assignment(&config).await;
        task.finish_commit();
        task.start_refresh(&config);
        task.seek_ready_retries();
        task.pause_or_resume(&config);
        let now = Instant::now();
        if now >= task.next_report {
            task.next_report = now + Duration::from_secs(1);
            task.report();
        }
        if now >= task.next_commit {
            task.next_commit = now + config.commit_period;
            task.start_commit(&config);
        }
        let mut polled = Vec::new();
        // The consumer's own queue: commit results and errors, and records of a partition not
        // yet routed to the fetch queue.
        let consumer = task.consumer.clone();
        let mut budget = config.max_poll_records;
        while budget > 0 {
            match consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(e)) => {
                    task.note_error(&e);
                    break;
                }
                Some(Ok(message)) => {
                    budget -= 1;
                    // A batch of one: librdkafka drops what a seek made stale from its queue.
                    task.batch += 1;
                    task.polled_fine();
                    let Some(slot) = task.slot_for(message.topic(), message.partition()) else { continue };
                    if config.guarantee == Guarantee::AtMostOnce {
                        polled.push((slot, message.offset()));
                    }
                    emit_record(task, &config, &self.translate, out, slot, RecordParts::polled(&message))?;
                }
            }
        }
        let Some(mut fetch) = task.fetch.take() else { return Ok(()) };
        task.batch += 1;
        let mut failed = Ok(());
        fetch.drain(budget, |message| {
            if failed.is_err() {
                return;
            }
            if let Some(e) = message.error() {
                task.note_error(&e);
                return;
            }
            task.polled_fine();
            let Some(slot) = task.fetched_slot_for(message) else { return };
            if config.guarantee == Guarantee::AtMostOnce {
                polled.push((slot, message.offset()));
            }
            failed = emit_record(task, &config, &self.translate, out, slot, RecordParts::fetched(message));
        });
        task.fetch = Some(fetch);
        failed?;
        if config.guarantee == Guarantee::AtMostOnce && !polled.is_empty() {
            // Storm's at-most-once commits before emitting; the emits above are buffered in the
            // router until this call returns, so committing here still comes first.
            task.commit_positions_now().await;
        }
        Ok(())
    }

    async fn ack(&mut self, id: KafkaMsgId) {
        let Some(task) = self.task.as_mut() else { return };
        if let Some(p) = task.slots.get_mut(&id.slot) {
            p.offsets.acked(id.offset);
            p.retries.remove(&id.offset);
        }
    }

    async fn fail(&mut self, id: KafkaMsgId) {
        let config = self.config.clone();
        let Some(task) = self.task.as_mut() else { return };
        let Some(p) = task.slots.get_mut(&id.slot) else { return };
        if p.offsets.is_done(id.offset) {
            return;
        }
        let failures = p.retries.get(&id.offset).map_or(0, |r| r.failures).saturating_add(1);
        match config.retry.delay(failures) {
            Some(delay) => {
                let ready_at = Some(Instant::now() + delay);
                p.retries.insert(id.offset, Retry { failures, ready_at, dead_letter: false });
            }
            None if config.exhausted == Exhausted::DeadLetter => {
                p.retries.insert(id.offset, Retry { failures, ready_at: Some(Instant::now()), dead_letter: true });
            }
            None => {
                tracing::warn!(topic = %p.topic, partition = p.partition, offset = id.offset, failures, "retries used up; acking the record");
                p.offsets.acked(id.offset);
                p.retries.remove(&id.offset);
            }
        }
    }

    async fn deactivate(&mut self) {
        if let Some(task) = self.task.as_mut() {
            task.commit_now(&self.config).await;
        }
    }

    async fn close(&mut self) -> Result<(), ComponentError> {
        if let Some(task) = self.task.as_mut() {
            task.commit_now(&self.config).await;
        }
        Ok(())
    }
}

/// What `emit_record` needs of a polled or fetched record.
struct RecordParts<'a> {
    offset: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    timestamp: Option<i64>,
    source: Source<'a>,
}

impl<'a> RecordParts<'a> {
    fn polled(message: &'a BorrowedMessage<'a>) -> Self {
        RecordParts {
            offset: message.offset(),
            key: message.key(),
            value: message.payload(),
            timestamp: message.timestamp().to_millis(),
            source: Source::Polled(message),
        }
    }

    fn fetched(message: &'a Fetched) -> Self {
        RecordParts {
            offset: message.offset(),
            key: message.key(),
            value: message.payload(),
            timestamp: message.timestamp(),
            source: Source::Fetched(message),
        }
    }
}

/// Emits one polled record, or skips it when it needs no emit.
fn emit_record<T: TypedTuple>(
    task: &mut TaskState,
    config: &KafkaSpoutConfig,
    translate: &Translator<T>,
    out: &mut SpoutCollector<'_, KafkaSpout<T>>,
    slot: u32,
    message: RecordParts<'_>,
) -> Result<(), ComponentError> {
    let Some(p) = task.slots.get_mut(&slot) else { return Ok(()) };
    if p.sought_in_batch == Some(task.batch) {
        // Sought back within this batch: the rest of it for this partition comes again.
        return Ok(());
    }
    let offset = message.offset;
    p.position = p.position.max(offset + 1);
    let tracked = config.guarantee == Guarantee::AtLeastOnce;
    let mut dead_letter = None;
    if tracked && p.offsets.is_new(offset) {
        // The usual case, a record never seen: not done, not in flight, not failed.
        if p.offsets.uncommitted() >= config.max_uncommitted_offsets && p.offsets.highest_emitted().is_some() {
            p.hold_back(&task.consumer, offset, task.batch);
            return Ok(());
        }
    } else if tracked {
        if p.offsets.is_done(offset) {
            return Ok(());
        }
        match p.retries.get_mut(&offset) {
            Some(retry) if retry.is_due(Instant::now()) => {
                retry.ready_at = None;
                dead_letter = retry.dead_letter.then_some(retry.failures);
            }
            // Failed and not yet due (the seek for it comes when it is), or out again.
            Some(_) => return Ok(()),
            // In flight.
            None if p.offsets.is_pending(offset) => return Ok(()),
            None => {
                if p.offsets.uncommitted() >= config.max_uncommitted_offsets
                    && p.offsets.highest_emitted().is_some_and(|h| offset > h)
                {
                    p.hold_back(&task.consumer, offset, task.batch);
                    return Ok(());
                }
            }
        }
    }
    let record = Record {
        topic: &p.topic,
        partition: p.partition,
        offset,
        key: message.key,
        value: message.value,
        timestamp: message.timestamp,
        topic_name: &p.topic_name,
        source: message.source,
    };
    let id = KafkaMsgId { slot, offset };
    if let Some(failures) = dead_letter {
        let letter = DeadLetter {
            topic: record.topic_name(),
            partition: record.partition,
            offset,
            key: record.key.map(Arc::from),
            value: record.value.map(Arc::from),
            failures,
        };
        out.emit_on(KafkaSpout::<T>::DEAD_LETTER, letter)?;
        p.offsets.acked(offset);
        p.retries.remove(&offset);
        return Ok(());
    }
    match translate(&record) {
        None => {
            if tracked {
                p.offsets.acked(offset);
                p.retries.remove(&offset);
            }
        }
        Some(tuple) if tracked => {
            p.offsets.emitted(offset);
            out.emit_with_id(tuple, id)?;
        }
        Some(tuple) => out.emit(tuple)?,
    }
    Ok(())
}

impl TaskState {
    /// A record arrived: the consumer works, whatever failed before.
    fn polled_fine(&mut self) {
        self.errors_in_a_row = 0;
        if self.last_error.is_some() {
            self.last_error = None;
        }
    }

    /// The slot of an owned partition's fetched record.
    fn fetched_slot_for(&mut self, message: &Fetched) -> Option<u32> {
        let key = (message.topic_key(), message.partition());
        if let Some(slot) = self.fetched_slot.get(&key) {
            return Some(*slot);
        }
        let slot = self.slot_for(message.topic(), message.partition())?;
        self.fetched_slot.insert(key, slot);
        Some(slot)
    }

    /// The slot of an owned partition.
    fn slot_for(&mut self, topic: &str, partition: i32) -> Option<u32> {
        if let Some((last_topic, last_partition, slot)) = &self.last_slot
            && *last_partition == partition
            && **last_topic == *topic
        {
            return Some(*slot);
        }
        let (topic, slot) = self.slot_of.get_key_value(&(Arc::from(topic), partition)).map(|((t, _), s)| (t, *s))?;
        self.last_slot = Some((topic.clone(), partition, slot));
        Some(slot)
    }

    /// Shows this task's partitions and last error in its metrics and `squall describe`.
    fn report(&self) {
        self.board.set("partitions", self.status());
        match &self.last_error {
            Some(error) => self.board.set("last_error", error),
            None => self.board.remove("last_error"),
        }
    }

    fn status(&self) -> Vec<PartitionStatus> {
        let mut status: Vec<PartitionStatus> = self
            .slots
            .values()
            .map(|p| PartitionStatus {
                partition: format!("{}-{}", p.topic, p.partition),
                committed: p.offsets.committed(),
                uncommitted: p.offsets.uncommitted(),
                retries_pending: p.retries.values().filter(|r| r.ready_at.is_some()).count(),
                paused: p.paused,
                lag: p.end.map(|end| (end - p.offsets.committed()).max(0)),
            })
            .collect();
        status.sort_by(|a, b| a.partition.cmp(&b.partition));
        status
    }

    fn note_error(&mut self, e: &KafkaError) {
        let text = format!(
            "cannot read from Kafka at {}: {e}; retrying (if this lasts, check that a broker runs at that address)",
            self.bootstrap
        );
        self.note(text);
    }

    /// Records a problem in the status and says it in the log: the first of a run, then about
    /// once a minute of polling.
    fn note(&mut self, text: String) {
        self.errors_in_a_row = self.errors_in_a_row.saturating_add(1);
        if self.errors_in_a_row == 1 || self.errors_in_a_row.is_multiple_of(10_000) {
            tracing::warn!(error = %text, group = %self.group, "kafka spout");
        }
        self.last_error = Some(text);
    }

    /// Lists the topics again in the background when it is time.
    fn start_refresh(&mut self, config: &KafkaSpoutConfig) {
        let now = Instant::now();
        if self.refresh.is_some() || now < self.next_refresh {
            return;
        }
        self.next_refresh = now + config.partition_refresh;
        let consumer = self.consumer.clone();
        let topics = config.topics.clone();
        let first_poll = config.first_poll;
        let (index, tasks) = (self.index, self.tasks);
        let topology_id = self.topology_id.clone();
        let known: Vec<(String, i32)> = self.slot_of.keys().map(|(t, p)| (t.to_string(), *p)).collect();
        self.refresh = Some(tokio::task::spawn_blocking(move || {
            let listed = (|| {
                let Listing { owned, starts, missing } =
                    list_owned(&consumer, &topics, (index, tasks), &known, first_poll, &topology_id)?;
                let mut ends = Vec::with_capacity(owned.len());
                for (topic, partition) in &owned {
                    let (_, end) = consumer.fetch_watermarks(topic, *partition, CALL_TIMEOUT)?;
                    ends.push((topic.clone(), *partition, end));
                }
                Ok(Assigned { owned, starts, ends, missing })
            })();
            release_consumer(consumer);
            listed
        }));
    }

    /// Takes up a finished refresh: revokes partitions no longer owned (committing what they
    /// acked first) and assigns new ones at their first positions.
    async fn take_up_assignment(&mut self, config: &KafkaSpoutConfig) {
        if !self.refresh.as_ref().is_some_and(JoinHandle::is_finished) {
            return;
        }
        let Some(handle) = self.refresh.take() else { return };
        let assigned = match handle.await {
            Ok(Ok(assigned)) => assigned,
            Ok(Err(e)) => {
                self.note_error(&e);
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "kafka partition refresh failed");
                return;
            }
        };
        if !assigned.missing.is_empty() {
            let text = format!(
                "topic {} does not exist on {}; create it (kafka-topics.sh --create) or check the name",
                assigned.missing.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", "),
                self.bootstrap
            );
            self.note(text);
        } else if self.last_error.as_deref().is_some_and(|e| e.starts_with("topic ")) {
            self.last_error = None;
        }
        let revoked: Vec<u32> = self
            .slot_of
            .iter()
            .filter(|((t, p), _)| !assigned.owned.iter().any(|(ot, op)| ot.as_str() == &**t && op == p))
            .map(|(_, slot)| *slot)
            .collect();
        if !revoked.is_empty() {
            self.last_slot = None;
            self.fetched_slot.clear();
            self.commit_now(config).await;
            let mut list = TopicPartitionList::new();
            for slot in revoked {
                if let Some(p) = self.slots.remove(&slot) {
                    list.add_partition(&p.topic, p.partition);
                    self.slot_of.remove(&(p.topic.clone(), p.partition));
                    tracing::info!(topic = %p.topic, partition = p.partition, "kafka partition revoked");
                }
            }
            if let Err(e) = self.consumer.incremental_unassign(&list) {
                self.note_error(&e);
            }
        }
        for (topic, partition, end) in &assigned.ends {
            if let Some(slot) = self.slot_of.get(&(Arc::from(topic.as_str()), *partition))
                && let Some(p) = self.slots.get_mut(slot)
            {
                p.end = Some(*end);
            }
        }
        if assigned.starts.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for (topic, partition, start) in &assigned.starts {
            // Routed before it is assigned, so no record of it reaches the consumer's queue.
            if let Some(fetch) = &self.fetch
                && !fetch.route(topic, *partition)
            {
                tracing::warn!(
                    topic,
                    partition,
                    "kafka partition not routed to the fetch queue; polling it one by one"
                );
            }
            if let Err(e) = list.add_partition_offset(topic, *partition, Offset::Offset(*start)) {
                self.note_error(&e);
                return;
            }
        }
        if let Err(e) = self.consumer.incremental_assign(&list) {
            self.note_error(&e);
            return;
        }
        for (topic, partition, start) in assigned.starts {
            let end = assigned.ends.iter().find(|(t, p, _)| *t == topic && *p == partition).map(|e| e.2);
            let topic: Arc<str> = topic.into();
            let slot = self.next_slot;
            self.next_slot += 1;
            tracing::info!(topic = %topic, partition, start, task = self.index, "kafka partition assigned");
            self.slot_of.insert((topic.clone(), partition), slot);
            self.slots.insert(
                slot,
                Partition {
                    topic_name: Str::new(&*topic),
                    topic,
                    partition,
                    offsets: OffsetManager::new(start),
                    retries: BTreeMap::new(),
                    sought: false,
                    paused: false,
                    position: start,
                    sought_in_batch: None,
                    end,
                },
            );
        }
    }

    /// Seeks each partition with a retry that has come due back to its earliest such offset.
    fn seek_ready_retries(&mut self) {
        let now = Instant::now();
        for p in self.slots.values_mut() {
            let ready = p.retries.iter().find(|(_, r)| r.is_due(now)).map(|(o, _)| *o);
            match ready {
                Some(offset) if !p.sought || offset < p.position => {
                    if let Err(e) = self.consumer.seek(&p.topic, p.partition, Offset::Offset(offset), Duration::ZERO) {
                        tracing::debug!(topic = %p.topic, partition = p.partition, error = %e, "cannot seek for a retry yet");
                        continue;
                    }
                    p.position = offset;
                    p.sought = true;
                }
                Some(_) => {}
                None => p.sought = false,
            }
        }
    }

    /// Pauses partitions at the uncommitted limit, unless a due retry lies within it; resumes
    /// the others (STORM-2549: failures must not stall a paused partition).
    fn pause_or_resume(&mut self, config: &KafkaSpoutConfig) {
        let now = Instant::now();
        let max = config.max_uncommitted_offsets;
        for p in self.slots.values_mut() {
            let limit = p.offsets.committed().saturating_add(i64::try_from(max).unwrap_or(i64::MAX));
            let retry_within = p.retries.iter().any(|(o, r)| r.is_due(now) && *o < limit);
            let pause = p.offsets.uncommitted() >= max && !retry_within;
            if pause == p.paused {
                continue;
            }
            let mut list = TopicPartitionList::new();
            list.add_partition(&p.topic, p.partition);
            let done = if pause { self.consumer.pause(&list) } else { self.consumer.resume(&list) };
            if done.is_ok() {
                p.paused = pause;
                tracing::debug!(topic = %p.topic, partition = p.partition, paused = pause, "kafka partition at its uncommitted limit");
            }
        }
    }

    /// What to commit now: per partition, the offset below which all is done (positions for
    /// the untracked guarantees), with this topology's id as metadata.
    fn to_commit(&self, config: &KafkaSpoutConfig) -> Vec<(u32, i64)> {
        self.slots
            .iter()
            .filter_map(|(slot, p)| match config.guarantee {
                Guarantee::AtLeastOnce => p.offsets.next_commit().map(|o| (*slot, o)),
                _ => (p.position > p.offsets.committed()).then_some((*slot, p.position)),
            })
            .collect()
    }

    fn commit_list(&self, offsets: &[(u32, i64)]) -> Option<TopicPartitionList> {
        let mut list = TopicPartitionList::new();
        for (slot, offset) in offsets {
            let p = self.slots.get(slot)?;
            list.add_partition_offset(&p.topic, p.partition, Offset::Offset(*offset)).ok()?;
            if let Some(mut elem) = list.find_partition(&p.topic, p.partition) {
                elem.set_metadata(&self.topology_id);
            }
        }
        Some(list)
    }

    /// Starts a commit in the background (one at a time).
    fn start_commit(&mut self, config: &KafkaSpoutConfig) {
        if self.commit.is_some() {
            return;
        }
        let offsets = self.to_commit(config);
        let Some(list) = self.commit_list(&offsets).filter(|l| l.count() > 0) else { return };
        let consumer = self.consumer.clone();
        self.commit = Some(tokio::task::spawn_blocking(move || {
            let result = consumer.commit(&list, CommitMode::Sync);
            release_consumer(consumer);
            (offsets, result)
        }));
    }

    /// Records a finished background commit.
    fn finish_commit(&mut self) {
        if !self.commit.as_ref().is_some_and(JoinHandle::is_finished) {
            return;
        }
        let Some(handle) = self.commit.take() else { return };
        // A finished handle's output is ready: no waiting.
        let Some(Ok((offsets, result))) = futures_now(handle) else { return };
        self.apply_commit(&offsets, result);
    }

    fn apply_commit(&mut self, offsets: &[(u32, i64)], result: Result<(), KafkaError>) {
        match result {
            Ok(()) => {
                for (slot, offset) in offsets {
                    if let Some(p) = self.slots.get_mut(slot) {
                        p.offsets.committed_to(*offset);
                        p.retries = p.retries.split_off(offset);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, group = %self.group, "cannot commit kafka offsets; trying again later");
                self.last_error = Some(e.to_string());
            }
        }
    }

    /// Commits now and waits (on deactivate, close and revocation).
    async fn commit_now(&mut self, config: &KafkaSpoutConfig) {
        if let Some(handle) = self.commit.take()
            && let Ok((offsets, result)) = handle.await
        {
            self.apply_commit(&offsets, result);
        }
        let offsets = self.to_commit(config);
        let Some(list) = self.commit_list(&offsets).filter(|l| l.count() > 0) else { return };
        let consumer = self.consumer.clone();
        let commit = move || {
            let result = consumer.commit(&list, CommitMode::Sync);
            release_consumer(consumer);
            result
        };
        match tokio::task::spawn_blocking(commit).await {
            Ok(result) => self.apply_commit(&offsets, result),
            Err(e) => tracing::error!(error = %e, "kafka commit task failed"),
        }
    }

    /// At-most-once: commits the polled positions before the emits leave this call.
    async fn commit_positions_now(&mut self) {
        let offsets: Vec<(u32, i64)> = self
            .slots
            .iter()
            .filter(|(_, p)| p.position > p.offsets.committed())
            .map(|(slot, p)| (*slot, p.position))
            .collect();
        let Some(list) = self.commit_list(&offsets).filter(|l| l.count() > 0) else { return };
        let consumer = self.consumer.clone();
        let commit = move || {
            let result = consumer.commit(&list, CommitMode::Sync);
            release_consumer(consumer);
            result
        };
        match tokio::task::spawn_blocking(commit).await {
            Ok(result) => self.apply_commit(&offsets, result),
            Err(e) => tracing::error!(error = %e, "kafka commit task failed"),
        }
    }
}

/// The output of a finished task, without waiting.
fn futures_now<T>(handle: JoinHandle<T>) -> Option<Result<T, tokio::task::JoinError>> {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let mut handle = handle;
    let mut cx = Context::from_waker(Waker::noop());
    match std::pin::Pin::new(&mut handle).poll(&mut cx) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// A task's share of the partitions, as listed now.
pub(crate) struct Listing {
    /// The partitions it owns.
    pub(crate) owned: Vec<(String, i32)>,
    /// Where each owned partition it did not know of starts.
    pub(crate) starts: Vec<(String, i32, i64)>,
    /// Listed topics the cluster does not have.
    pub(crate) missing: Vec<String>,
}

/// Lists `topics` (a list, or every topic a pattern matches) and the partitions task `index`
/// of `tasks` owns ([`assign::owned`]), with where each one not in `known` starts
/// ([`first_positions`]). Blocks on the broker: call it on a blocking thread.
pub(crate) fn list_owned(
    consumer: &BaseConsumer,
    topics: &Topics,
    (index, tasks): (usize, usize),
    known: &[(String, i32)],
    first_poll: FirstPoll,
    topology_id: &str,
) -> Result<Listing, KafkaError> {
    let metadata = consumer.fetch_metadata(None, CALL_TIMEOUT)?;
    let mut partitions = BTreeMap::new();
    for topic in metadata.topics() {
        if topics.matches(topic.name()) && topic.error().is_none() {
            partitions.insert(topic.name().to_owned(), i32::try_from(topic.partitions().len()).unwrap_or(i32::MAX));
        }
    }
    let missing: Vec<String> =
        topics.names().into_iter().flatten().filter(|t| !partitions.contains_key(*t)).cloned().collect();
    let owned = assign::owned(&partitions, index, tasks);
    let new: Vec<(String, i32)> = owned.iter().filter(|p| !known.contains(p)).cloned().collect();
    let starts = first_positions(consumer, &new, first_poll, topology_id)?;
    Ok(Listing { owned, starts, missing })
}

/// Where each new partition starts: this topology's own commit if there is one, else as
/// `first_poll` says.
pub(crate) fn first_positions(
    consumer: &BaseConsumer,
    new: &[(String, i32)],
    first_poll: FirstPoll,
    topology_id: &str,
) -> Result<Vec<(String, i32, i64)>, KafkaError> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let mut list = TopicPartitionList::new();
    for (topic, partition) in new {
        list.add_partition(topic, *partition);
    }
    let committed = consumer.committed_offsets(list, CALL_TIMEOUT)?;
    let mut starts = Vec::new();
    for (topic, partition) in new {
        let (low, high) = consumer.fetch_watermarks(topic, *partition, CALL_TIMEOUT)?;
        let found = committed.find_partition(topic, *partition);
        let commit = found.as_ref().and_then(|e| match e.offset() {
            Offset::Offset(o) => Some((o, e.metadata() == topology_id)),
            _ => None,
        });
        let start = match (commit, first_poll) {
            (Some((offset, true)), _) => offset,
            (_, FirstPoll::Earliest) => low,
            (_, FirstPoll::Latest) => high,
            (Some((offset, _)), FirstPoll::UncommittedEarliest | FirstPoll::UncommittedLatest) => offset,
            (None, FirstPoll::UncommittedEarliest) => low,
            (None, FirstPoll::UncommittedLatest) => high,
            (_, FirstPoll::Timestamp(millis)) => {
                let mut at = TopicPartitionList::new();
                at.add_partition_offset(topic, *partition, Offset::Offset(millis))?;
                let found = consumer.offsets_for_times(at, CALL_TIMEOUT)?;
                match found.find_partition(topic, *partition).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => high,
                }
            }
        };
        // A commit below what retention kept starts at the oldest record still there.
        starts.push((topic.clone(), *partition, start.clamp(low, high)));
    }
    Ok(starts)
}

impl Topics {
    /// The topics as a list, when given as one.
    pub fn names(&self) -> Option<&[String]> {
        match self {
            Topics::List(list) => Some(list),
            Topics::Pattern(_) => None,
        }
    }
}

/// Lets go of a blocking task's handle on a consumer on a thread of its own: if the spout is
/// gone, this is the last handle, and closing a consumer waits for its broker, which may be
/// down — on a runtime thread that would hold up the runtime's shutdown for good.
pub(crate) fn release_consumer<T: Send + 'static>(consumer: T) {
    let spawned = std::thread::Builder::new().name("kafka-close".into()).spawn(move || drop(consumer));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start a thread to close a kafka consumer");
    }
}
