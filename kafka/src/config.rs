//! How a [`KafkaSpout`](crate::KafkaSpout) consumes: Storm's `KafkaSpoutConfig`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::retry::RetryPolicy;

/// Where a partition's consumption starts when this topology has not committed to it yet
/// (Storm's `FirstPollOffsetStrategy`). Offsets committed by this very topology (same
/// submission id) always win: the strategies apply to a first deployment or a redeployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstPoll {
    /// From the beginning, whatever an earlier deployment committed.
    Earliest,
    /// From the end, whatever an earlier deployment committed.
    Latest,
    /// From an earlier deployment's commit, else from the beginning (the default).
    UncommittedEarliest,
    /// From an earlier deployment's commit, else from the end.
    UncommittedLatest,
    /// From the first record at or after this time (unix milliseconds), whatever was committed.
    Timestamp(i64),
}

/// What the spout promises about each record (Storm's `ProcessingGuarantee`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarantee {
    /// Every record is processed at least once: tuples are tracked, failures retried, and an
    /// offset is committed only once everything below it was acked (the default).
    AtLeastOnce,
    /// Positions are committed right after each poll, before the records are emitted: a crash
    /// loses what was polled; nothing is retried.
    AtMostOnce,
    /// Positions are committed now and then, whatever became of the records; nothing is
    /// tracked or retried.
    NoGuarantee,
}

/// What happens to a record whose retries are used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// It is acked, so commits move past it (Storm's behaviour).
    Ack,
    /// It is emitted once on the spout's `dead_letter` stream (untracked), then acked.
    DeadLetter,
}

/// The topics a spout reads.
#[derive(Debug, Clone)]
pub enum Topics {
    /// These topics.
    List(Vec<String>),
    /// Every topic whose name matches (anchored at both ends), checked at each refresh.
    Pattern(regex::Regex),
}

impl Topics {
    /// Whether `topic` is one of these.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Topics::List(list) => list.iter().any(|t| t == topic),
            Topics::Pattern(re) => re.find(topic).is_some_and(|m| m.start() == 0 && m.end() == topic.len()),
        }
    }
}

/// The spout's settings; build with [`KafkaSpoutConfig::new`] and the `with_*` methods.
#[derive(Debug, Clone)]
pub struct KafkaSpoutConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// What it reads.
    pub topics: Topics,
    /// The consumer group its offsets are committed under; default `squall-<topology name>`.
    pub group_id: Option<String>,
    /// Where a first deployment starts.
    pub first_poll: FirstPoll,
    /// What is promised per record.
    pub guarantee: Guarantee,
    /// When failed records are emitted again.
    pub retry: RetryPolicy,
    /// What happens when retries are used up.
    pub exhausted: Exhausted,
    /// How often acked offsets are committed (Storm: 30 s).
    pub commit_period: Duration,
    /// How often topics and partitions are listed again, to pick up new ones (Storm: 2 s).
    pub partition_refresh: Duration,
    /// A partition is paused while this many offsets past its commit were emitted and not all
    /// acked (Storm: 10,000,000); failed records are still retried.
    pub max_uncommitted_offsets: u64,
    /// Most records emitted per `next_tuple` call (by a `KafkaBatchSpout`: per partition and
    /// epoch).
    pub max_poll_records: usize,
    /// Other librdkafka consumer settings, passed through. The spout sets
    /// `fetch.queue.backoff.ms=10` unless this says otherwise: librdkafka's 1 s default starves
    /// a task that reads more than `queued.min.messages` records of a partition per second.
    /// `KafkaSpout` also sets `queued.min.messages=20000`, `queued.max.messages.kbytes=16384`,
    /// `fetch.message.max.bytes=4194304` and `fetch.max.bytes=4194304` (a smaller prefetch
    /// than librdkafka's, in fewer, larger fetches); settings given here win.
    pub consumer: BTreeMap<String, String>,
}

impl KafkaSpoutConfig {
    /// Reads `topics` from the cluster at `bootstrap_servers`, with Storm's defaults.
    pub fn new(bootstrap_servers: impl Into<String>, topics: &[&str]) -> Self {
        KafkaSpoutConfig {
            bootstrap_servers: bootstrap_servers.into(),
            topics: Topics::List(topics.iter().map(|t| (*t).to_owned()).collect()),
            group_id: None,
            first_poll: FirstPoll::UncommittedEarliest,
            guarantee: Guarantee::AtLeastOnce,
            retry: RetryPolicy::default(),
            exhausted: Exhausted::Ack,
            commit_period: Duration::from_secs(30),
            partition_refresh: Duration::from_secs(2),
            max_uncommitted_offsets: 10_000_000,
            max_poll_records: 500,
            consumer: BTreeMap::new(),
        }
    }

    /// Reads every topic whose whole name matches `pattern`.
    pub fn with_pattern(mut self, pattern: &str) -> Result<Self, regex::Error> {
        self.topics = Topics::Pattern(regex::Regex::new(pattern)?);
        Ok(self)
    }

    /// Commits under consumer group `group`.
    pub fn with_group_id(mut self, group: impl Into<String>) -> Self {
        self.group_id = Some(group.into());
        self
    }

    /// Starts a first deployment as `first_poll` says.
    pub fn with_first_poll(mut self, first_poll: FirstPoll) -> Self {
        self.first_poll = first_poll;
        self
    }

    /// Promises `guarantee`.
    pub fn with_guarantee(mut self, guarantee: Guarantee) -> Self {
        self.guarantee = guarantee;
        self
    }

    /// Retries failed records with `retry`; used-up ones go as `exhausted` says.
    pub fn with_retry(mut self, retry: RetryPolicy, exhausted: Exhausted) -> Self {
        self.retry = retry;
        self.exhausted = exhausted;
        self
    }

    /// Commits every `period`.
    pub fn with_commit_period(mut self, period: Duration) -> Self {
        self.commit_period = period;
        self
    }

    /// Lists partitions again every `period`.
    pub fn with_partition_refresh(mut self, period: Duration) -> Self {
        self.partition_refresh = period;
        self
    }

    /// Pauses a partition at `max` uncommitted offsets.
    pub fn with_max_uncommitted_offsets(mut self, max: u64) -> Self {
        self.max_uncommitted_offsets = max.max(1);
        self
    }

    /// Emits at most `max` records per `next_tuple` call (per partition and epoch in a batch
    /// spout).
    pub fn with_max_poll_records(mut self, max: usize) -> Self {
        self.max_poll_records = max.max(1);
        self
    }

    /// A consumer's settings: manual commits and offsets, no end-of-partition events, `extra`,
    /// then the user's settings (which win).
    pub(crate) fn client_config(&self, group: &str, client_id: &str, extra: &[(&str, &str)]) -> rdkafka::ClientConfig {
        let mut client = rdkafka::ClientConfig::new();
        client
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("client.id", client_id)
            // Once a partition's local queue holds `queued.min.messages`, librdkafka postpones
            // its next fetch by this much (1 s by default): a task reading faster than that many
            // records per partition per second would wait with an empty queue.
            .set("fetch.queue.backoff.ms", "10");
        for (key, value) in extra {
            client.set(*key, *value);
        }
        for (key, value) in &self.consumer {
            client.set(key, value);
        }
        client
    }

    /// Sets a librdkafka consumer setting, such as `fetch.min.bytes`.
    pub fn with_consumer_setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.consumer.insert(key.into(), value.into());
        self
    }
}
