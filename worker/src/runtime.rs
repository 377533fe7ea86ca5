//! Instantiating a topology: queues, routers and one tokio task per executor.

use std::sync::Arc;
use std::time::Duration;

use squall_topology::{ComponentDef, Factory, TaskId, Topology, TopologyContext};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::executor::{ExecutorParts, TaskFailure, TopologyStatus, run_bolts, run_spouts};
use crate::inbox::{InboxSender, inbox};
use crate::metrics::{ExecutorStats, MetricsRegistry, TopologyMetrics};
use crate::router::{ComponentRoutes, Router};

/// A topology whose executors run on the current tokio runtime.
pub struct RunningTopology {
    status: watch::Sender<TopologyStatus>,
    executors: Vec<(String, JoinHandle<Vec<TaskFailure>>)>,
    metrics: MetricsRegistry,
}

/// Splits `tasks` into `executors` contiguous ranges whose sizes differ by at most one.
pub fn executor_ranges(tasks: &[TaskId], executors: u32) -> Vec<&[TaskId]> {
    let executors = (executors.max(1) as usize).min(tasks.len().max(1));
    let (base, extra) = (tasks.len() / executors, tasks.len() % executors);
    let mut ranges = Vec::with_capacity(executors);
    let mut start = 0;
    for i in 0..executors {
        let len = base + usize::from(i < extra);
        ranges.push(&tasks[start..start + len]);
        start += len;
    }
    ranges
}

impl RunningTopology {
    /// Starts every executor of `topology` on the current tokio runtime, with spouts in
    /// `status` (active or inactive).
    pub fn launch(name: &str, topology: &Topology, status: TopologyStatus) -> RunningTopology {
        let (status_tx, _) = watch::channel(status);
        let layout = topology.layout().clone();
        let topology_name: Arc<str> = name.into();
        let routes = ComponentRoutes::for_topology(topology);

        // One input queue per bolt executor.
        let mut senders: Vec<Option<InboxSender>> = vec![None; layout.task_count() + 1];
        let mut receivers = Vec::new();
        for component in topology.components() {
            let config = topology.config().with_overrides(&component.config);
            for range in executor_ranges(layout.tasks(&component.id), component.parallelism) {
                let queue = match component.factory {
                    Factory::Bolt(_) => {
                        let (tx, rx) = inbox(config.receive_buffer_size as usize);
                        for task in range {
                            senders[*task as usize] = Some(tx.clone());
                        }
                        Some(rx)
                    }
                    Factory::Spout(_) => None,
                };
                receivers.push((component.id.clone(), range.to_vec(), queue));
            }
        }

        // Each component's router reaches only its subscribers, so a bolt's queue closes once
        // every executor upstream of it has stopped: that is how a finished topology drains.
        let destinations_of = |source: &ComponentDef| {
            let mut dest: Vec<Option<InboxSender>> = vec![None; senders.len()];
            for sub in topology.components() {
                if sub.inputs.iter().any(|i| i.component == source.id) {
                    for task in layout.tasks(&sub.id) {
                        dest[*task as usize] = senders[*task as usize].clone();
                    }
                }
            }
            Arc::new(dest)
        };

        let mut metrics = MetricsRegistry::default();
        let mut executors = Vec::new();
        for (component_id, tasks, queue) in receivers {
            let Some(component) = topology.component(&component_id) else { continue };
            let config = Arc::new(topology.config().with_overrides(&component.config));
            let component_routes = routes.iter().find(|(id, _)| *id == component_id).map(|(_, r)| r.clone());
            let Some(component_routes) = component_routes else { continue };
            let stats = Arc::new(ExecutorStats::default());
            metrics.register(&component_id, stats.clone(), queue.as_ref().map(|q| q.stats().clone()));
            let parts = ExecutorParts {
                component: component_id.clone(),
                contexts: tasks
                    .iter()
                    .map(|t| TopologyContext::new(topology_name.clone(), layout.clone(), config.clone(), *t))
                    .collect(),
                router: Router::new(
                    component_routes,
                    destinations_of(component),
                    config.producer_batch_size as usize,
                    config.debug,
                    &|_| true,
                ),
                inbox: queue,
                status: status_tx.subscribe(),
                stats,
                batch_size: config.producer_batch_size as usize,
                tick: config.tick_tuple_freq_secs.map(|s| Duration::from_secs(s.into())),
            };
            let handle = match &component.factory {
                Factory::Spout(f) => {
                    let spouts = tasks.iter().map(|t| f.create(*t)).collect();
                    tokio::spawn(run_spouts(parts, spouts))
                }
                Factory::Bolt(f) => {
                    let bolts = tasks.iter().map(|t| f.create(*t)).collect();
                    tokio::spawn(run_bolts(parts, bolts))
                }
            };
            executors.push((component_id, handle));
        }
        RunningTopology { status: status_tx, executors, metrics }
    }

    /// Changes the status; executors react at their next step.
    pub fn set_status(&self, status: TopologyStatus) {
        self.status.send_replace(status);
    }

    /// The current status.
    pub fn status(&self) -> TopologyStatus {
        *self.status.borrow()
    }

    /// The live counters.
    pub fn metrics(&self) -> TopologyMetrics {
        self.metrics.snapshot()
    }

    /// Whether every executor has stopped.
    pub fn is_finished(&self) -> bool {
        self.executors.iter().all(|(_, h)| h.is_finished())
    }

    /// Waits until every executor has stopped or `timeout` passes; returns whether they all did.
    pub async fn join(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.is_finished() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops what still runs and collects every task failure.
    pub async fn finish(self) -> Vec<TaskFailure> {
        let mut failures = Vec::new();
        for (component, handle) in self.executors {
            if !handle.is_finished() {
                handle.abort();
            }
            match handle.await {
                Ok(f) => failures.extend(f),
                Err(e) if e.is_panic() => failures.push(TaskFailure {
                    component: component.clone(),
                    task: 0,
                    phase: "execution",
                    message: format!("executor panicked: {}", panic_message(e.into_panic())),
                }),
                Err(_) => {}
            }
        }
        failures
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        return (*s).to_owned();
    }
    if let Some(s) = payload.downcast_ref::<String>() {
        return s.clone();
    }
    "a non-string panic payload".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_split_evenly_and_contiguously() {
        let tasks = [1, 2, 3, 4, 5];
        assert_eq!(executor_ranges(&tasks, 2), vec![&[1, 2, 3][..], &[4, 5][..]]);
        assert_eq!(executor_ranges(&tasks, 5).len(), 5);
        assert_eq!(executor_ranges(&tasks, 1), vec![&tasks[..]]);
    }
}
