//! A worker's metrics go to the Nimbus leader over HTTP, not to ZooKeeper: one small POST per
//! heartbeat round, sent from a blocking thread so a slow Nimbus never delays the round.

use std::time::Duration;

use squall_cluster::{ClusterState, LeaderElection, WorkerMetricsReport};
use tokio::task::JoinHandle;

/// How long looking the leader up in ZooKeeper may take.
const LEADER_LOOKUP_LIMIT: Duration = Duration::from_millis(300);

/// How long one report may take.
const REPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// Sends reports to the leader it last found, finding it again after a failed report.
pub(crate) struct MetricsReporter {
    agent: ureq::Agent,
    leader: Option<String>,
    in_flight: Option<JoinHandle<Result<(), String>>>,
    /// Failed reports in a row: logged at first, then now and then.
    failures: u32,
}

impl MetricsReporter {
    pub(crate) fn new() -> Self {
        let config = ureq::Agent::config_builder().timeout_global(Some(REPORT_TIMEOUT)).build();
        MetricsReporter { agent: config.into(), leader: None, in_flight: None, failures: 0 }
    }

    /// Sends `report`, unless the previous one is still on its way (then this one is dropped:
    /// the next round's counters include it).
    pub(crate) async fn report(&mut self, state: &ClusterState, report: &WorkerMetricsReport) {
        if self.in_flight.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        if let Some(handle) = self.in_flight.take() {
            match handle.await {
                Ok(Ok(())) => self.failures = 0,
                Ok(Err(error)) => self.failed(&error),
                Err(error) => self.failed(&error.to_string()),
            }
        }
        if self.leader.is_none() {
            // Bounded: the heartbeat comes after this in the same round.
            let lookup = tokio::time::timeout(LEADER_LOOKUP_LIMIT, LeaderElection::current_leader(state)).await;
            self.leader = lookup.ok().and_then(Result::ok).flatten();
        }
        let Some(leader) = self.leader.clone() else { return };
        let body = match serde_json::to_vec(report) {
            Ok(body) => body,
            Err(e) => return tracing::warn!(error = %e, "cannot encode the metrics report"),
        };
        let agent = self.agent.clone();
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            let url = format!("http://{leader}/api/v1/metrics");
            let response = agent
                .post(&url)
                .header("content-type", "application/json")
                .send(&body[..])
                .map_err(|e| format!("{url}: {e}"))?;
            match response.status().is_success() {
                true => Ok(()),
                false => Err(format!("{url}: http {}", response.status())),
            }
        }));
    }

    fn failed(&mut self, error: &str) {
        // The leader may have moved: look it up again next round.
        self.leader = None;
        self.failures += 1;
        if self.failures < 3 || self.failures.is_multiple_of(60) {
            tracing::warn!(error, failures = self.failures, "cannot send metrics to nimbus");
        }
    }
}

/// This process's resident memory in bytes and CPU time in seconds, from `/proc` (`None`
/// where there is none).
pub(crate) fn process_usage() -> (Option<u64>, Option<f64>) {
    let rss = std::fs::read_to_string("/proc/self/status").ok().and_then(|status| {
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
    });
    let cpu = std::fs::read_to_string("/proc/self/stat").ok().and_then(|stat| {
        // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let (utime, stime) = (fields.get(11)?.parse::<u64>().ok()?, fields.get(12)?.parse::<u64>().ok()?);
        // Linux reports them in clock ticks of 1/100 s (USER_HZ) on every architecture it runs.
        Some((utime + stime) as f64 / 100.0)
    });
    (rss, cpu)
}
