//! `LocalCluster`: runs topologies in-process on tokio, for development, tests and examples.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use squall_topology::{MemoryStore, Topology, TopologyStore};

use crate::executor::{TaskFailure, TopologyStatus};
use crate::instruments::Instruments;
use crate::metrics::TopologyMetrics;
use crate::runtime::RunningTopology;

/// A request to the local cluster that cannot be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalClusterError {
    /// A topology of that name is running.
    #[error("a topology named `{0}` is already running; kill it first or choose another name")]
    NameInUse(String),
    /// No topology of that name is running.
    #[error("no topology named `{0}` is running")]
    NotFound(String),
    /// The name is empty or has a character Storm forbids.
    #[error("topology name `{0}` is invalid: use a non-empty name without `/`, `.`, `:` or `\\`")]
    InvalidName(String),
    /// The topology did not finish in time; it keeps running.
    #[error("topology `{name}` did not finish within {waited:?}; still running: {}", unfinished.join(", "))]
    Timeout {
        /// The topology.
        name: String,
        /// How long we waited.
        waited: Duration,
        /// What had not finished: executors by component (with the cycles they are on and
        /// what is outstanding there) and lanes.
        unfinished: Vec<String>,
    },
}

/// How a topology's run ended.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The topology.
    pub name: String,
    /// Tasks that failed in `open`, `prepare`, `cleanup` or `close`, or panicked.
    pub failures: Vec<TaskFailure>,
    /// The final counters.
    pub metrics: TopologyMetrics,
    /// Executors stopped before they had drained (a kill whose wait ran out), by component.
    pub aborted: Vec<String>,
}

impl RunReport {
    /// Whether every task ran to its end: none failed and none was stopped before draining.
    pub fn is_success(&self) -> bool {
        self.failures.is_empty() && self.aborted.is_empty()
    }
}

/// Runs topologies in this process. Every task is a tokio task with bounded queues between
/// them, exactly as in a worker process. Dropping the cluster stops its topologies.
#[derive(Default)]
pub struct LocalCluster {
    topologies: Mutex<HashMap<String, RunningTopology>>,
    /// Each topology name's durable store, kept across kills and resubmissions for as long as
    /// the cluster lives (ZooKeeper's part on a cluster).
    stores: Mutex<HashMap<String, MemoryStore>>,
}

/// How long killed bolts get to stop by themselves once told to stop now.
const STOP_GRACE: Duration = Duration::from_secs(10);

impl LocalCluster {
    /// A cluster with nothing running. Must be used from within a tokio runtime.
    pub fn new() -> Self {
        LocalCluster::default()
    }

    /// Starts a topology, active.
    pub fn submit(&self, name: &str, topology: &Topology) -> Result<(), LocalClusterError> {
        self.submit_with_status(name, topology, TopologyStatus::Active)
    }

    /// Starts a topology with its spouts inactive until [`LocalCluster::activate`].
    pub fn submit_inactive(&self, name: &str, topology: &Topology) -> Result<(), LocalClusterError> {
        self.submit_with_status(name, topology, TopologyStatus::Inactive)
    }

    /// Starts a topology, active, with a test's instruments attached (what `squall::testing`
    /// uses to capture outputs and track tuples in flight).
    pub fn submit_instrumented(
        &self,
        name: &str,
        topology: &Topology,
        instruments: Instruments,
    ) -> Result<(), LocalClusterError> {
        self.start(name, topology, TopologyStatus::Active, instruments)
    }

    fn submit_with_status(
        &self,
        name: &str,
        topology: &Topology,
        status: TopologyStatus,
    ) -> Result<(), LocalClusterError> {
        self.start(name, topology, status, Instruments::default())
    }

    fn start(
        &self,
        name: &str,
        topology: &Topology,
        status: TopologyStatus,
        instruments: Instruments,
    ) -> Result<(), LocalClusterError> {
        validate_name(name)?;
        let mut topologies = self.lock();
        if topologies.contains_key(name) {
            return Err(LocalClusterError::NameInUse(name.to_owned()));
        }
        tracing::info!(topology = name, "starting topology in local mode");
        let running = RunningTopology::launch_instrumented(name, topology, status, instruments, self.store(name));
        topologies.insert(name.to_owned(), running);
        Ok(())
    }

    /// The durable store of topology name `name` (what its tasks see as
    /// `TopologyContext::store`): kept across kills and resubmissions while the cluster lives.
    pub fn store(&self, name: &str) -> Arc<dyn TopologyStore> {
        Arc::new(self.stores.lock().unwrap_or_else(|e| e.into_inner()).entry(name.to_owned()).or_default().clone())
    }

    /// Lets the spouts of a topology emit.
    pub fn activate(&self, name: &str) -> Result<(), LocalClusterError> {
        self.with(name, |t| t.set_status(TopologyStatus::Active))
    }

    /// Stops the spouts of a topology from emitting; bolts go on processing.
    pub fn deactivate(&self, name: &str) -> Result<(), LocalClusterError> {
        self.with(name, |t| t.set_status(TopologyStatus::Inactive))
    }

    /// The live counters of a topology.
    pub fn metrics(&self, name: &str) -> Result<TopologyMetrics, LocalClusterError> {
        self.with(name, |t| t.metrics())
    }

    /// What of a topology still runs: executors by component (with the tuples outstanding in
    /// their cycle, for bolts on one) and lanes to other workers.
    pub fn unfinished(&self, name: &str) -> Result<Vec<String>, LocalClusterError> {
        self.with(name, |t| t.unfinished())
    }

    /// The names of the running topologies.
    pub fn topologies(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().keys().cloned().collect();
        names.sort();
        names
    }

    /// Waits until a topology finishes by itself (its spouts are done and every tuple is
    /// processed), then removes it.
    pub async fn wait_for_completion(&self, name: &str, timeout: Duration) -> Result<RunReport, LocalClusterError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.with(name, |t| t.is_finished())? {
                return self.remove_and_finish(name).await;
            }
            if tokio::time::Instant::now() >= deadline {
                let unfinished = self.unfinished(name)?;
                return Err(LocalClusterError::Timeout { name: name.to_owned(), waited: timeout, unfinished });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Kills a topology: spouts stop at once, bolts drain what is queued for up to `wait`,
    /// then everything stops.
    pub async fn kill(&self, name: &str, wait: Duration) -> Result<RunReport, LocalClusterError> {
        let mut running = self.lock().remove(name).ok_or_else(|| LocalClusterError::NotFound(name.to_owned()))?;
        tracing::info!(topology = name, ?wait, "killing topology");
        running.set_status(TopologyStatus::Killing);
        if !running.join(wait).await {
            tracing::info!(topology = name, unfinished = ?running.unfinished(), "kill wait over; stopping what still runs");
            running.set_status(TopologyStatus::Stopped);
            running.join(STOP_GRACE).await;
        }
        Ok(finish(name, running).await)
    }

    /// Kills every topology without waiting.
    pub async fn shutdown(&self) {
        for name in self.topologies() {
            let _ = self.kill(&name, Duration::ZERO).await;
        }
    }

    async fn remove_and_finish(&self, name: &str) -> Result<RunReport, LocalClusterError> {
        let running = self.lock().remove(name).ok_or_else(|| LocalClusterError::NotFound(name.to_owned()))?;
        Ok(finish(name, running).await)
    }

    fn with<T>(&self, name: &str, f: impl FnOnce(&mut RunningTopology) -> T) -> Result<T, LocalClusterError> {
        let mut topologies = self.lock();
        let running = topologies.get_mut(name).ok_or_else(|| LocalClusterError::NotFound(name.to_owned()))?;
        Ok(f(running))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunningTopology>> {
        // The map stays consistent even if a holder panicked: every update is a single call.
        self.topologies.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn finish(name: &str, running: RunningTopology) -> RunReport {
    let metrics = running.metrics();
    let (failures, aborted) = running.finish().await;
    RunReport { name: name.to_owned(), failures, metrics, aborted }
}

fn validate_name(name: &str) -> Result<(), LocalClusterError> {
    if name.is_empty() || name.contains(['/', '.', ':', '\\']) {
        return Err(LocalClusterError::InvalidName(name.to_owned()));
    }
    Ok(())
}
