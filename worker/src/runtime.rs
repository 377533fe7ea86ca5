//! Instantiating a topology: queues, routers and one tokio task per executor.

use std::sync::Arc;
use std::time::Duration;

use squall_topology::{ACKER_COMPONENT, Factory, TaskId, Topology, TopologyContext};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::acker::AckerFactory;
use crate::executor::{ExecutorParts, TaskFailure, TopologyStatus, run_bolts, run_spouts};
use crate::inbox::{InboxReceiver, InboxSender, inbox};
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

/// Acker notices to a spout are never refused: their number is bounded by the spout's trees
/// in flight, and a spout blocked on backpressure must not block the acker in turn (that
/// cycle would deadlock: spout → bolt → acker → spout).
const SPOUT_NOTICE_CAPACITY: usize = 1 << 28;

/// One executor to start: its component, tasks, and input queue.
struct ExecutorPlan {
    component: String,
    tasks: Vec<TaskId>,
    inbox: Option<InboxReceiver>,
}

impl RunningTopology {
    /// Starts every executor of `topology` on the current tokio runtime, with spouts in
    /// `status` (active or inactive). With `topology.acker.executors` above zero (by default
    /// one per worker), acker tasks are added after the user's tasks.
    pub fn launch(name: &str, topology: &Topology, status: TopologyStatus) -> RunningTopology {
        let (status_tx, _) = watch::channel(status);
        let config = topology.config();
        let acker_count = config.acker_executors.unwrap_or(config.workers);
        let layout = Arc::new(topology.layout().with_system(&[(ACKER_COMPONENT, acker_count)]));
        let ackers: Arc<[TaskId]> = layout.tasks(ACKER_COMPONENT).into();
        let topology_name: Arc<str> = name.into();
        let routes = ComponentRoutes::for_topology(topology);
        let spout_tasks: Vec<TaskId> = topology
            .components()
            .iter()
            .filter(|c| matches!(c.factory, Factory::Spout(_)))
            .flat_map(|c| layout.tasks(&c.id).iter().copied())
            .collect();

        // One input queue per executor: bolts get tuples, ackers acking messages, spouts (with
        // acking) the ackers' notices.
        let mut senders: Vec<Option<InboxSender>> = vec![None; layout.task_count() + 1];
        let mut plans = Vec::new();
        let mut plan = |component: &str, range: &[TaskId], capacity: Option<usize>| {
            let inbox = capacity.map(|capacity| {
                let (tx, rx) = inbox(capacity);
                for task in range {
                    senders[*task as usize] = Some(tx.clone());
                }
                rx
            });
            plans.push(ExecutorPlan { component: component.to_owned(), tasks: range.to_vec(), inbox });
        };
        for component in topology.components() {
            let config = config.with_overrides(&component.config);
            for range in executor_ranges(layout.tasks(&component.id), component.parallelism) {
                let capacity = match component.factory {
                    Factory::Bolt(_) => Some(config.receive_buffer_size as usize),
                    Factory::Spout(_) => (!ackers.is_empty()).then_some(SPOUT_NOTICE_CAPACITY),
                };
                plan(&component.id, range, capacity);
            }
        }
        for acker in ackers.iter() {
            plan(ACKER_COMPONENT, &[*acker], Some(config.receive_buffer_size as usize));
        }

        // Each router reaches only its subscribers (and the ackers), so a bolt's queue closes
        // once every executor upstream of it has stopped: that is how a finished topology drains.
        let destinations_of = |source: &str| {
            let mut dest: Vec<Option<InboxSender>> = vec![None; senders.len()];
            let mut reach = |task: TaskId| dest[task as usize] = senders[task as usize].clone();
            if source == ACKER_COMPONENT {
                spout_tasks.iter().for_each(|t| reach(*t));
            } else {
                ackers.iter().for_each(|t| reach(*t));
                for sub in topology.components() {
                    if sub.inputs.iter().any(|i| i.component == source) {
                        layout.tasks(&sub.id).iter().for_each(|t| reach(*t));
                    }
                }
            }
            Arc::new(dest)
        };

        let mut metrics = MetricsRegistry::default();
        let mut executors = Vec::new();
        for ExecutorPlan { component: component_id, tasks, inbox } in plans {
            let (config, factory, component_routes) = if component_id == ACKER_COMPONENT {
                let mut acker_config = config.clone();
                // The acker forgets trees on its own clock: one tick per message timeout.
                acker_config.tick_tuple_freq_secs =
                    config.enable_message_timeouts.then_some(config.message_timeout_secs);
                (acker_config, Factory::Bolt(Arc::new(AckerFactory)), ComponentRoutes::system(ACKER_COMPONENT))
            } else {
                let Some(component) = topology.component(&component_id) else { continue };
                let Some((_, r)) = routes.iter().find(|(id, _)| *id == component_id) else { continue };
                (config.with_overrides(&component.config), component.factory.clone(), r.clone())
            };
            let config = Arc::new(config);
            let stats = Arc::new(ExecutorStats::default());
            let queue_stats = match factory {
                Factory::Bolt(_) => inbox.as_ref().map(|q| q.stats().clone()),
                Factory::Spout(_) => None,
            };
            metrics.register(&component_id, stats.clone(), queue_stats);
            let parts = ExecutorParts {
                component: component_id.clone(),
                contexts: tasks
                    .iter()
                    .map(|t| TopologyContext::new(topology_name.clone(), layout.clone(), config.clone(), *t))
                    .collect(),
                router: Router::new(
                    component_routes,
                    destinations_of(&component_id),
                    ackers.clone(),
                    config.producer_batch_size as usize,
                    config.debug,
                    &|_| true,
                ),
                inbox,
                status: status_tx.subscribe(),
                stats,
                batch_size: config.producer_batch_size as usize,
                tick: config.tick_tuple_freq_secs.map(|s| Duration::from_secs(s.into())),
                message_timeout: (config.enable_message_timeouts && !ackers.is_empty())
                    .then(|| Duration::from_secs(config.message_timeout_secs.into())),
            };
            let handle = match factory {
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
