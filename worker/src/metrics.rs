//! Per-executor counters, aggregated per component for `LocalCluster::metrics`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::inbox::QueueStats;

/// Counters of one executor, updated once per batch.
#[derive(Debug, Default)]
pub struct ExecutorStats {
    emitted: AtomicU64,
    transferred: AtomicU64,
    executed: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl ExecutorStats {
    pub(crate) fn add_emits(&self, emitted: u64, transferred: u64) {
        if emitted > 0 {
            self.emitted.fetch_add(emitted, Ordering::Relaxed);
        }
        if transferred > 0 {
            self.transferred.fetch_add(transferred, Ordering::Relaxed);
        }
    }

    pub(crate) fn add_executed(&self, executed: u64) {
        self.executed.fetch_add(executed, Ordering::Relaxed);
    }

    pub(crate) fn add_errors(&self, errors: u64, last: String) {
        self.errors.fetch_add(errors, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(last);
    }
}

/// Counters of one component, summed over its executors.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentMetrics {
    /// Tuples emitted (one per emit call).
    pub emitted: u64,
    /// Tuple copies sent to tasks (an emit to three tasks counts three).
    pub transferred: u64,
    /// Tuples executed (bolts; tick tuples included).
    pub executed: u64,
    /// `execute` / `next_tuple` calls that returned an error.
    pub errors: u64,
    /// The latest such error.
    pub last_error: Option<String>,
    /// The most tuples ever waiting in one of its executors' input queues.
    pub queue_peak: usize,
    /// The capacity of each of its executors' input queues, in tuples.
    pub queue_capacity: usize,
}

/// The counters of every component of a topology.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyMetrics {
    /// By component id.
    pub components: BTreeMap<String, ComponentMetrics>,
}

impl TopologyMetrics {
    /// One component's counters (zero for an unknown component).
    pub fn component(&self, id: &str) -> ComponentMetrics {
        self.components.get(id).cloned().unwrap_or_default()
    }
}

/// The live counters of a running topology's executors.
#[derive(Debug, Default, Clone)]
pub(crate) struct MetricsRegistry {
    executors: Vec<(String, Arc<ExecutorStats>, Option<Arc<QueueStats>>)>,
}

impl MetricsRegistry {
    pub(crate) fn register(&mut self, component: &str, stats: Arc<ExecutorStats>, queue: Option<Arc<QueueStats>>) {
        self.executors.push((component.to_owned(), stats, queue));
    }

    pub(crate) fn snapshot(&self) -> TopologyMetrics {
        let mut metrics = TopologyMetrics::default();
        for (component, stats, queue) in &self.executors {
            let m = metrics.components.entry(component.clone()).or_default();
            m.emitted += stats.emitted.load(Ordering::Relaxed);
            m.transferred += stats.transferred.load(Ordering::Relaxed);
            m.executed += stats.executed.load(Ordering::Relaxed);
            m.errors += stats.errors.load(Ordering::Relaxed);
            if let Some(e) = stats.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                m.last_error = Some(e);
            }
            if let Some(q) = queue {
                m.queue_peak = m.queue_peak.max(q.peak());
                m.queue_capacity = q.capacity();
            }
        }
        metrics
    }
}
