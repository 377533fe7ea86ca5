//! Per-executor counters, aggregated per component for `LocalCluster::metrics`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::transport_metrics::TransportSnapshot;
use squall_topology::driver::SpoutObserver;
use squall_topology::{TaskId, TaskMetrics, TaskStatus, UserMetrics};

use crate::histogram::{Histogram, quantile_us};
use crate::inbox::QueueStats;

/// Adds to a counter that only one executor writes: a plain load and store, no locked
/// read-modify-write on the hot path. Readers may see a value one update old.
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// Counters of one executor, written only by that executor, updated once per batch (latencies
/// once per tree).
#[derive(Debug, Default)]
pub struct ExecutorStats {
    emitted: AtomicU64,
    transferred: AtomicU64,
    executed: AtomicU64,
    execute_nanos: AtomicU64,
    acked: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// The newest [`RECENT_ERRORS`] errors, oldest first.
    recent_errors: Mutex<VecDeque<ErrorEntry>>,
    complete_latency: Histogram,
    /// When the call the executor is in (`execute`, `next_tuple`) started, in nanoseconds on
    /// [`clock_nanos`]'s clock; 0 between calls.
    busy_since: AtomicU64,
    /// A call longer than this many milliseconds is a stall (0: the default, 30 s).
    stall_after_ms: AtomicU64,
}

/// Nanoseconds since the first call, on a monotonic clock (never 0).
fn clock_nanos() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    (start.elapsed().as_nanos() as u64).max(1)
}

/// Marks an executor busy in one user call until dropped.
pub(crate) struct Busy<'a>(&'a ExecutorStats);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy_since.store(0, Ordering::Relaxed);
    }
}

/// How many recent errors an executor, and a component in a report, keeps.
pub const RECENT_ERRORS: usize = 10;

/// One error a task hit: `execute` or `next_tuple` returned one, `open`/`prepare` failed, or
/// the executor panicked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEntry {
    /// When, in unix seconds.
    pub time_secs: u64,
    /// The task (the executor's first, for a panic).
    pub task: TaskId,
    /// What happened.
    pub message: String,
}

impl ExecutorStats {
    /// Counters for an executor that stalls after `stall_after` in one call.
    pub(crate) fn new(stall_after: Duration) -> Self {
        let stats = ExecutorStats::default();
        stats.stall_after_ms.store(stall_after.as_millis() as u64, Ordering::Relaxed);
        stats
    }

    /// The executor enters a user call (one batch of `execute` or `next_tuple`).
    pub(crate) fn busy(&self) -> Busy<'_> {
        self.busy_since.store(clock_nanos(), Ordering::Relaxed);
        Busy(self)
    }

    /// How long the executor has been in its current call, if it is in one.
    fn busy_for(&self) -> Option<Duration> {
        match self.busy_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_nanos(clock_nanos().saturating_sub(since))),
        }
    }

    pub(crate) fn add_emits(&self, emitted: u64, transferred: u64) {
        if emitted > 0 {
            bump(&self.emitted, emitted);
        }
        if transferred > 0 {
            bump(&self.transferred, transferred);
        }
    }

    pub(crate) fn add_executed(&self, executed: u64, took: Duration) {
        bump(&self.executed, executed);
        bump(&self.execute_nanos, took.as_nanos() as u64);
    }

    pub(crate) fn add_acks(&self, acked: u64, failed: u64) {
        if acked > 0 {
            bump(&self.acked, acked);
        }
        if failed > 0 {
            bump(&self.failed, failed);
        }
    }

    /// `errors` errors happened in `task`, the last of them `last`.
    pub(crate) fn add_errors(&self, errors: u64, task: TaskId, last: String) {
        bump(&self.errors, errors);
        let time_secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut recent = self.recent_errors.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT_ERRORS {
            recent.pop_front();
        }
        recent.push_back(ErrorEntry { time_secs, task, message: last.clone() });
        drop(recent);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(last);
    }
}

impl SpoutObserver for &ExecutorStats {
    fn acked(&mut self, latency: Duration, trees: u64) {
        bump(&self.acked, trees);
        self.complete_latency.record_n(latency, trees);
    }

    fn failed(&mut self) {
        bump(&self.failed, 1);
    }

    fn timed_out(&mut self) {
        bump(&self.failed, 1);
        bump(&self.timed_out, 1);
    }
}

/// Counters of one component, summed over its executors.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentMetrics {
    /// Tuples emitted (one per emit call).
    pub emitted: u64,
    /// Tuple copies sent to tasks (an emit to three tasks counts three).
    pub transferred: u64,
    /// Tuples executed (bolts; tick tuples included).
    pub executed: u64,
    /// Mean time per `execute`, in milliseconds.
    pub execute_latency_ms: f64,
    /// Storm's capacity: the fraction of time spent in `execute` since the previous snapshot
    /// (about a second on a cluster); near 1, the bolt is the bottleneck. Per component, its
    /// busiest executor's.
    #[serde(default)]
    pub capacity: f64,
    /// Spouts: trees completed. Bolts: tuples acked.
    pub acked: u64,
    /// Spouts: trees failed, timeouts included. Bolts: tuples failed.
    pub failed: u64,
    /// Spouts: trees that timed out.
    pub timed_out: u64,
    /// Spouts: time from emit to tree completion, median, in milliseconds.
    pub complete_latency_p50_ms: Option<f64>,
    /// Spouts: 99th percentile of the complete latency, in milliseconds.
    pub complete_latency_p99_ms: Option<f64>,
    /// Spouts: the largest complete latency, in milliseconds.
    pub complete_latency_max_ms: Option<f64>,
    /// `execute` / `next_tuple` calls that returned an error.
    pub errors: u64,
    /// The latest such error.
    pub last_error: Option<String>,
    /// The newest errors (at most [`RECENT_ERRORS`], oldest first): those above, failed
    /// `open`/`prepare` calls and panics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_errors: Vec<ErrorEntry>,
    /// Tuples waiting in its executors' input queues now.
    pub queue_depth: usize,
    /// The most tuples ever waiting in one of its executors' input queues.
    pub queue_peak: usize,
    /// The capacity of each of its executors' input queues, in tuples.
    pub queue_capacity: usize,
    /// Executors inside one `execute`/`next_tuple` call for longer than
    /// `topology.executor.stall.secs` now.
    pub stalled: u64,
    /// The longest time any of its executors has been inside its current call, in
    /// milliseconds (0 when none is in one).
    pub current_call_ms: u64,
    /// Each task's own counters, gauges and histograms (`TopologyContext::metrics`), by
    /// `task-<id>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user: BTreeMap<String, UserMetrics>,
    /// What each task reported about itself (`TopologyContext::status`), by `task-<id>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub status: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
}

/// The counters of one executor (one thread of a component, running one or more tasks).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutorMetrics {
    /// Its component.
    pub component: String,
    /// The tasks it runs.
    pub tasks: Vec<TaskId>,
    /// Its counters (`status` empty: it is per component).
    #[serde(flatten)]
    pub metrics: ComponentMetrics,
}

/// The counters of every component of a topology.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopologyMetrics {
    /// By component id.
    pub components: BTreeMap<String, ComponentMetrics>,
    /// Per executor, in the order they were started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub executors: Vec<ExecutorMetrics>,
    /// The worker's transport to its peers (workers of a cluster only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<TransportSnapshot>,
}

/// Metrics asked for a component the topology does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no component `{component}` in this topology; its components are: {known}")]
pub struct UnknownComponent {
    /// The id asked for.
    pub component: String,
    /// The topology's components, comma-separated.
    pub known: String,
}

impl TopologyMetrics {
    /// One component's counters, or an error naming the components there are.
    pub fn component(&self, id: &str) -> Result<ComponentMetrics, UnknownComponent> {
        self.components.get(id).cloned().ok_or_else(|| UnknownComponent {
            component: id.to_owned(),
            known: self.components.keys().map(String::as_str).collect::<Vec<_>>().join(", "),
        })
    }
}

/// The live counters of a running topology's executors.
#[derive(Debug, Default, Clone)]
pub(crate) struct MetricsRegistry {
    executors: Vec<Registered>,
    statuses: Vec<(String, TaskId, TaskStatus, TaskMetrics)>,
}

/// One executor's live counters.
#[derive(Debug, Clone)]
struct Registered {
    component: String,
    tasks: Vec<TaskId>,
    stats: Arc<ExecutorStats>,
    queue: Option<Arc<QueueStats>>,
    /// When the previous snapshot was taken and the execute time then: capacity is measured
    /// between two snapshots.
    previous: Arc<Mutex<Option<(std::time::Instant, u64)>>>,
}

impl Registered {
    /// Its counters now, and its complete latencies' histogram counts.
    fn snapshot(&self) -> (ExecutorMetrics, Vec<u64>) {
        let (stats, load) = (&self.stats, |a: &AtomicU64| a.load(Ordering::Relaxed));
        let mut m = ComponentMetrics {
            emitted: load(&stats.emitted),
            transferred: load(&stats.transferred),
            executed: load(&stats.executed),
            acked: load(&stats.acked),
            failed: load(&stats.failed),
            timed_out: load(&stats.timed_out),
            errors: load(&stats.errors),
            last_error: stats.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            recent_errors: stats.recent_errors.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect(),
            ..ComponentMetrics::default()
        };
        if let Some(busy) = stats.busy_for() {
            m.current_call_ms = busy.as_millis() as u64;
            let stall_after = match stats.stall_after_ms.load(Ordering::Relaxed) {
                0 => 30_000,
                ms => ms,
            };
            m.stalled = u64::from(m.current_call_ms >= stall_after);
        }
        if let Some(q) = &self.queue {
            m.queue_depth = q.depth();
            m.queue_peak = q.peak();
            m.queue_capacity = q.capacity();
        }
        let execute_nanos = load(&stats.execute_nanos);
        if m.executed > 0 {
            m.execute_latency_ms = execute_nanos as f64 / m.executed as f64 / 1e6;
        }
        let now = std::time::Instant::now();
        let mut previous = self.previous.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, nanos)) = previous.replace((now, execute_nanos)) {
            let window = now.saturating_duration_since(at).as_nanos() as f64;
            if window > 0.0 {
                m.capacity = execute_nanos.saturating_sub(nanos) as f64 / window;
            }
        }
        drop(previous);
        let mut counts = Vec::new();
        stats.complete_latency.add_to(&mut counts);
        set_latencies(&mut m, &counts, stats.complete_latency.max_us());
        (ExecutorMetrics { component: self.component.clone(), tasks: self.tasks.clone(), metrics: m }, counts)
    }
}

/// Adds `more` to `into`, keeping the newest [`RECENT_ERRORS`] in time order.
pub fn merge_recent(into: &mut Vec<ErrorEntry>, more: &[ErrorEntry]) {
    into.extend_from_slice(more);
    into.sort_by_key(|e| e.time_secs);
    let excess = into.len().saturating_sub(RECENT_ERRORS);
    into.drain(..excess);
}

/// Sets the complete latency quantiles from histogram `counts` and the largest value seen.
fn set_latencies(m: &mut ComponentMetrics, counts: &[u64], max_us: u64) {
    // A quantile is its bucket's upper bound, which may pass the largest value seen.
    let ms = |us: u64| us.min(max_us) as f64 / 1000.0;
    m.complete_latency_p50_ms = quantile_us(counts, 0.5).map(ms);
    m.complete_latency_p99_ms = quantile_us(counts, 0.99).map(ms);
    m.complete_latency_max_ms = m.complete_latency_p50_ms.map(|_| ms(max_us));
}

impl MetricsRegistry {
    pub(crate) fn register(
        &mut self,
        component: &str,
        tasks: Vec<TaskId>,
        stats: Arc<ExecutorStats>,
        queue: Option<Arc<QueueStats>>,
    ) {
        let previous = Arc::default();
        self.executors.push(Registered { component: component.to_owned(), tasks, stats, queue, previous });
    }

    /// Registers what a task reports about itself: its status and its own metrics.
    pub(crate) fn register_task(&mut self, component: &str, task: TaskId, status: TaskStatus, metrics: TaskMetrics) {
        self.statuses.push((component.to_owned(), task, status, metrics));
    }

    pub(crate) fn snapshot(&self) -> TopologyMetrics {
        let mut metrics = TopologyMetrics::default();
        for (component, task, status, user) in &self.statuses {
            let entries = status.snapshot();
            if !entries.is_empty() {
                let m = metrics.components.entry(component.clone()).or_default();
                m.status.insert(format!("task-{task}"), entries);
            }
            let user = user.snapshot();
            if !user.is_empty() {
                let m = metrics.components.entry(component.clone()).or_default();
                m.user.insert(format!("task-{task}"), user);
            }
        }
        // Per component: histogram counts, the largest latency, execute time.
        let mut latencies: BTreeMap<String, (Vec<u64>, u64, u64)> = BTreeMap::new();
        for registered in &self.executors {
            let (executor, counts) = registered.snapshot();
            let (e, m) = (&executor.metrics, metrics.components.entry(executor.component.clone()).or_default());
            m.emitted += e.emitted;
            m.transferred += e.transferred;
            m.executed += e.executed;
            m.acked += e.acked;
            m.failed += e.failed;
            m.timed_out += e.timed_out;
            m.errors += e.errors;
            m.stalled += e.stalled;
            m.capacity = m.capacity.max(e.capacity);
            m.current_call_ms = m.current_call_ms.max(e.current_call_ms);
            if e.last_error.is_some() {
                m.last_error.clone_from(&e.last_error);
            }
            merge_recent(&mut m.recent_errors, &e.recent_errors);
            m.queue_depth += e.queue_depth;
            m.queue_peak = m.queue_peak.max(e.queue_peak);
            m.queue_capacity = e.queue_capacity.max(m.queue_capacity);
            let entry = latencies.entry(executor.component.clone()).or_default();
            if entry.0.len() < counts.len() {
                entry.0.resize(counts.len(), 0);
            }
            entry.0.iter_mut().zip(&counts).for_each(|(sum, n)| *sum += n);
            entry.1 = entry.1.max(registered.stats.complete_latency.max_us());
            entry.2 += registered.stats.execute_nanos.load(Ordering::Relaxed);
            metrics.executors.push(executor);
        }
        for (component, (counts, max_us, execute_nanos)) in latencies {
            let Some(m) = metrics.components.get_mut(&component) else { continue };
            set_latencies(m, &counts, max_us);
            if m.executed > 0 {
                m.execute_latency_ms = execute_nanos as f64 / m.executed as f64 / 1e6;
            }
        }
        metrics
    }
}
