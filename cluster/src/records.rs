//! The records stored in ZooKeeper, as JSON.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use squall_topology::{ConfigValue, TaskId, TopologySpec};

/// How many errors are kept per component.
pub const MAX_ERRORS: usize = 10;

/// The lifecycle state of a submitted topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopologyStatus {
    /// Running; spouts emit.
    Active,
    /// Deployed, but spouts are paused.
    Inactive,
    /// Being killed: spouts paused, workers stop after the kill wait.
    Killed,
    /// Being rescheduled.
    Rebalancing,
}

/// `/topologies/<name>`: a submitted topology.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopologyRecord {
    /// The name it was submitted under.
    pub name: String,
    /// The unique id of this submission: `<name>-<counter>-<unix secs>`.
    pub id: String,
    /// Its lifecycle state.
    pub status: TopologyStatus,
    /// What the topology binary described.
    pub spec: TopologySpec,
    /// The hex SHA-256 of the topology binary.
    pub artifact_hash: String,
    /// How many worker processes it asked for.
    pub num_workers: u32,
    /// Config overrides given at submission, by Storm key.
    #[serde(default)]
    pub config: BTreeMap<String, ConfigValue>,
    /// When it was submitted, in unix seconds.
    pub submitted_at: u64,
    /// Why it is in its state, such as "waiting for 4 free slots, 2 available".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// Seconds to wait between deactivating and killing, when killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_wait_secs: Option<u32>,
    /// Executor counts changed by a rebalance, by component.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parallelism: BTreeMap<String, u32>,
    /// A log filter its workers use instead of their own (`squall set-log-level`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_filter: Option<LogFilter>,
}

/// A log filter set on a running topology: `tracing`'s `EnvFilter` syntax (`info`,
/// `my_topology=debug,squall=warn`), until a time or until reset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFilter {
    /// The filter.
    pub filter: String,
    /// When it lapses, in unix seconds; `None`: when reset.
    #[serde(default)]
    pub until: Option<u64>,
}

impl TopologyRecord {
    /// The id format: `<name>-<counter>-<unix secs>`.
    pub fn make_id(name: &str, counter: u64, unix_secs: u64) -> String {
        format!("{name}-{counter}-{unix_secs}")
    }
}

/// `/assignments/<name>`: where each task of a topology runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The [`TopologyRecord::id`] this assignment is for.
    pub topology_id: String,
    /// Bumped on every write of this node (see [`crate::ClusterState::put_assignment`]).
    pub version: u64,
    /// The hex SHA-256 of the topology binary workers must run.
    pub artifact_hash: String,
    /// One entry per worker slot.
    pub workers: Vec<WorkerAssignment>,
    /// When it was computed, in unix seconds.
    pub assigned_at: u64,
    /// Seconds a worker may go without writing its heartbeat before it deactivates its spouts
    /// (fencing); Nimbus reassigns a worker's tasks only after a longer silence. 0: the
    /// worker's default.
    #[serde(default)]
    pub fence_secs: u32,
}

impl Assignment {
    /// The worker that runs `task`.
    pub fn worker_of(&self, task: TaskId) -> Option<&WorkerAssignment> {
        self.workers.iter().find(|w| w.tasks.contains(&task))
    }

    /// The tasks of the worker in `supervisor`'s slot `port`; empty when that slot has no worker.
    pub fn tasks_of(&self, supervisor: &str, port: u16) -> &[TaskId] {
        self.workers.iter().find(|w| w.supervisor_id == supervisor && w.port == port).map_or(&[], |w| &w.tasks)
    }

    /// The workers placed on `supervisor`.
    pub fn workers_on<'a>(&'a self, supervisor: &'a str) -> impl Iterator<Item = &'a WorkerAssignment> + 'a {
        self.workers.iter().filter(move |w| w.supervisor_id == supervisor)
    }
}

/// One worker slot of an [`Assignment`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WorkerAssignment {
    /// The supervisor that runs it.
    pub supervisor_id: String,
    /// That supervisor's host, where other workers connect.
    pub host: String,
    /// The slot's port.
    pub port: u16,
    /// The tasks it runs.
    pub tasks: Vec<TaskId>,
    /// A stamp of the executors it runs and of the topology's task numbering: a worker whose
    /// tasks and stamp stay the same in a new assignment keeps running.
    #[serde(default)]
    pub layout: u64,
}

impl WorkerAssignment {
    /// Whether a worker started for `self` can go on running as `other`.
    pub fn same_work(&self, other: &WorkerAssignment) -> bool {
        self.supervisor_id == other.supervisor_id
            && self.port == other.port
            && self.tasks == other.tasks
            && self.layout == other.layout
    }
}

/// `/supervisors/<id>` (ephemeral): a live supervisor and its slots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorInfo {
    /// Its id, stable across restarts.
    pub id: String,
    /// The host workers on it are reachable at.
    pub host: String,
    /// Its worker slots.
    pub ports: Vec<u16>,
    /// When it started, in unix seconds.
    pub started_at: u64,
    /// Its Squall version.
    pub version: String,
    /// The port its logviewer (worker logs over HTTP) listens on, on `host`.
    #[serde(default)]
    pub logviewer_port: Option<u16>,
}

/// `/workerbeats/<name>/<supervisor>-<port>`: a worker's latest heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerHeartbeat {
    /// The [`TopologyRecord::id`] it runs.
    pub topology_id: String,
    /// The supervisor that launched it.
    pub supervisor_id: String,
    /// Its slot.
    pub port: u16,
    /// Its process id.
    pub pid: u32,
    /// The tasks it runs.
    pub tasks: Vec<TaskId>,
    /// When it was written, in unix milliseconds.
    pub time_millis: u64,
    /// Seconds since the worker started.
    pub uptime_secs: u64,
    /// Unused: metrics go to Nimbus over HTTP ([`WorkerMetricsReport`]). Read for records
    /// written before that, never written.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub metrics: serde_json::Value,
}

/// What a worker sends the Nimbus leader over HTTP once per heartbeat round
/// (`POST /api/v1/metrics`): its metrics, which stay out of ZooKeeper.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerMetricsReport {
    /// The topology's name.
    pub topology: String,
    /// The [`TopologyRecord::id`] it runs.
    pub topology_id: String,
    /// The supervisor that launched it.
    pub supervisor_id: String,
    /// Its slot.
    pub port: u16,
    /// The tasks it runs.
    pub tasks: Vec<TaskId>,
    /// When it was taken, in unix milliseconds.
    pub time_millis: u64,
    /// Per-component and per-executor metrics, opaque to this crate.
    pub metrics: serde_json::Value,
    /// The worker process's resident memory, in bytes.
    #[serde(default)]
    pub rss_bytes: Option<u64>,
    /// CPU time the worker process has used, user and system, in seconds.
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
}

/// One entry of `/errors/<name>/<component>`, which holds the newest [`MAX_ERRORS`], oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// When it happened, in unix seconds.
    pub time: u64,
    /// The task that reported it.
    pub task: TaskId,
    /// The error message.
    pub message: String,
}

/// `/nimbus/members/<host:port>` (ephemeral): a live Nimbus.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NimbusInfo {
    /// Its host.
    pub host: String,
    /// Its API port.
    pub port: u16,
    /// When it started, in unix seconds.
    pub started_at: u64,
}

impl NimbusInfo {
    /// `host:port`, its node name.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Now, in unix seconds (0 if the clock is before 1970).
pub fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Now, in unix milliseconds (0 if the clock is before 1970).
pub fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
