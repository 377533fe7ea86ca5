//! Workers' metrics reports (`POST /api/v1/metrics`), kept in memory only: every worker sends
//! one per heartbeat round, so a new leader has them all again after a second.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use squall_cluster::{Assignment, TopologyRecord, WorkerMetricsReport, paths};

/// A report older than this is not shown (its worker stopped sending).
const STALE: Duration = Duration::from_secs(30);

/// Each worker's newest report and when it came, by topology name and worker key
/// (`<supervisor>-<port>`).
type ByTopology = HashMap<String, BTreeMap<String, (Instant, WorkerMetricsReport)>>;

/// The newest report of each worker.
#[derive(Default)]
pub(crate) struct Reports(Mutex<ByTopology>);

impl Reports {
    fn lock(&self) -> MutexGuard<'_, ByTopology> {
        // Every critical section is one map operation: a panicking holder leaves nothing half done.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `report` as its worker's newest, and forgets reports nobody has sent for a while.
    pub(crate) fn insert(&self, report: WorkerMetricsReport) {
        let now = Instant::now();
        let mut reports = self.lock();
        for workers in reports.values_mut() {
            workers.retain(|_, (at, _)| now.duration_since(*at) < STALE * 4);
        }
        reports.retain(|_, workers| !workers.is_empty());
        let key = paths::worker_key(&report.supervisor_id, report.port);
        reports.entry(report.topology.clone()).or_default().insert(key, (now, report));
    }

    /// The fresh reports of the workers `assignment` names for `record` (a report from an
    /// earlier worker on a slot, with other tasks or of another submission, is not theirs).
    pub(crate) fn current(&self, record: &TopologyRecord, assignment: Option<&Assignment>) -> Vec<WorkerMetricsReport> {
        let reports = self.lock();
        let Some(workers) = reports.get(&record.name) else { return Vec::new() };
        assignment
            .iter()
            .flat_map(|a| &a.workers)
            .filter_map(|w| workers.get(&paths::worker_key(&w.supervisor_id, w.port)).map(|r| (w, r)))
            .filter(|(w, (at, r))| r.topology_id == record.id && r.tasks == w.tasks && at.elapsed() < STALE)
            .map(|(_, (_, r))| r.clone())
            .collect()
    }

    /// Forgets a topology's reports (it was killed).
    pub(crate) fn forget(&self, topology: &str) {
        self.lock().remove(topology);
    }
}
