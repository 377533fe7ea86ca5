//! What a task knows about itself and the topology it runs in (Storm's `TopologyContext`).

use std::sync::Arc;

use crate::config::Config;
use crate::metrics::TaskMetrics;
use crate::store::{MemoryStore, TopologyStore};
use crate::tuple::TaskId;

/// The task layout of a built topology: which tasks each component has. Task ids are numbered
/// from 1 across components sorted by id, as Storm numbers them, so every process that builds
/// the same topology agrees on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskLayout {
    components: Vec<(String, Vec<TaskId>)>,
    /// `task_component[task]` is the index into `components` (slot 0 unused).
    task_component: Vec<usize>,
}

impl TaskLayout {
    /// Numbers tasks for components given as (id, task count), in any order.
    pub fn new(mut components: Vec<(String, u32)>) -> Self {
        components.sort_by(|a, b| a.0.cmp(&b.0));
        let mut next: TaskId = 1;
        let mut task_component = vec![usize::MAX];
        let components = components
            .into_iter()
            .enumerate()
            .map(|(index, (id, tasks))| {
                let ids: Vec<TaskId> = (next..next + tasks).collect();
                next += tasks;
                task_component.extend(std::iter::repeat_n(index, tasks as usize));
                (id, ids)
            })
            .collect();
        TaskLayout { components, task_component }
    }

    /// This layout plus system components (the ackers), numbered after every user task so
    /// that turning acking on or off never renumbers the user's tasks.
    pub fn with_system(&self, system: &[(&str, u32)]) -> TaskLayout {
        let mut layout = self.clone();
        let mut next = layout.task_component.len() as TaskId;
        for (id, tasks) in system {
            let index = layout.components.len();
            layout.components.push(((*id).to_owned(), (next..next + tasks).collect()));
            layout.task_component.extend(std::iter::repeat_n(index, *tasks as usize));
            next += tasks;
        }
        layout
    }

    /// The tasks of a component, ascending; empty for an unknown component.
    pub fn tasks(&self, component: &str) -> &[TaskId] {
        self.components.iter().find(|(id, _)| id == component).map(|(_, tasks)| tasks.as_slice()).unwrap_or(&[])
    }

    /// The component a task belongs to.
    pub fn component_of(&self, task: TaskId) -> Option<&str> {
        let index = *self.task_component.get(task as usize)?;
        self.components.get(index).map(|(id, _)| id.as_str())
    }

    /// Every component id with its tasks, sorted by id.
    pub fn components(&self) -> impl Iterator<Item = (&str, &[TaskId])> {
        self.components.iter().map(|(id, tasks)| (id.as_str(), tasks.as_slice()))
    }

    /// The number of tasks in the topology.
    pub fn task_count(&self) -> usize {
        self.task_component.len() - 1
    }
}

/// Splits `tasks` into `executors` contiguous ranges whose sizes differ by at most one. Nimbus
/// (placing executors) and the worker (running them) both use this, so they agree on executor
/// boundaries.
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

/// What a task is told at `open` / `prepare`.
#[derive(Debug, Clone)]
pub struct TopologyContext {
    topology: Arc<str>,
    /// The submission's id; the name in local mode.
    id: Arc<str>,
    layout: Arc<TaskLayout>,
    config: Arc<Config>,
    task: TaskId,
    component: Arc<str>,
    status: TaskStatus,
    metrics: TaskMetrics,
    store: Arc<dyn TopologyStore>,
}

/// What a task says about itself beyond the runtime's counters (a Kafka spout: its partitions,
/// their lag, its last error): shown per task in the component's metrics and `squall describe`.
/// Cheap to clone; the runtime reads it when it takes a metrics snapshot.
#[derive(Debug, Clone, Default)]
pub struct TaskStatus {
    entries: Arc<std::sync::Mutex<std::collections::BTreeMap<String, serde_json::Value>>>,
}

impl TaskStatus {
    /// Sets `key` to `value` (anything serde can serialize); a value that does not serialize
    /// is shown as its error.
    pub fn set(&self, key: &str, value: impl serde::Serialize) {
        let value = serde_json::to_value(value).unwrap_or_else(|e| serde_json::Value::String(e.to_string()));
        self.lock().insert(key.to_owned(), value);
    }

    /// Removes `key`.
    pub fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Everything set, by key.
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, serde_json::Value>> {
        // Every update is one insert or remove: a poisoned map is still consistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl TopologyContext {
    /// A context for one task. The runtime makes these; `config` already has the component's
    /// overrides applied.
    pub fn new(topology: Arc<str>, layout: Arc<TaskLayout>, config: Arc<Config>, task: TaskId) -> Self {
        let component: Arc<str> = layout.component_of(task).unwrap_or("?").into();
        TopologyContext {
            id: topology.clone(),
            topology,
            layout,
            config,
            task,
            component,
            status: TaskStatus::default(),
            metrics: TaskMetrics::default(),
            store: Arc::new(MemoryStore::new()),
        }
    }

    /// The same context with the topology's durable store (the runtime sets it: ZooKeeper on a
    /// cluster, the `LocalCluster`'s memory locally); by default a store of this context alone.
    pub fn with_store(mut self, store: Arc<dyn TopologyStore>) -> Self {
        self.store = store;
        self
    }

    /// The topology's [`TopologyStore`]: small values that outlive this task, its worker and the
    /// submission (a resubmission under the same name sees them).
    pub fn store(&self) -> &Arc<dyn TopologyStore> {
        &self.store
    }

    /// The same context for a submission with its own id (a cluster gives each submission of a
    /// name another one).
    pub fn with_topology_id(mut self, id: Arc<str>) -> Self {
        self.id = id;
        self
    }

    /// The id of this submission of the topology: in a cluster, a resubmission under the same
    /// name has another; in local mode, the topology's name. A Kafka spout stores it with its
    /// committed offsets to tell its own commits from an earlier deployment's.
    pub fn topology_id(&self) -> &str {
        &self.id
    }

    /// Where this task reports its own status (see [`TaskStatus`]).
    pub fn status(&self) -> &TaskStatus {
        &self.status
    }

    /// This task's own counters, gauges and histograms: `ctx.metrics().counter("words")`.
    /// Reported with the component and task (keep the handles; asking by name takes a lock).
    pub fn metrics(&self) -> &TaskMetrics {
        &self.metrics
    }

    /// The topology's name.
    pub fn topology_name(&self) -> &str {
        &self.topology
    }

    /// This task's id.
    pub fn task_id(&self) -> TaskId {
        self.task
    }

    /// This task's component id.
    pub fn component_id(&self) -> &str {
        &self.component
    }

    /// This task's position among its component's tasks, from 0.
    pub fn task_index(&self) -> usize {
        self.this_component_tasks().iter().position(|t| *t == self.task).unwrap_or(0)
    }

    /// The tasks of this task's component.
    pub fn this_component_tasks(&self) -> &[TaskId] {
        self.layout.tasks(&self.component)
    }

    /// The tasks of any component, ascending; empty for an unknown component.
    pub fn component_tasks(&self, component: &str) -> &[TaskId] {
        self.layout.tasks(component)
    }

    /// The component of any task.
    pub fn component_of(&self, task: TaskId) -> Option<&str> {
        self.layout.component_of(task)
    }

    /// The task layout of the whole topology.
    pub fn layout(&self) -> &TaskLayout {
        &self.layout
    }

    /// The effective configuration of this task's component.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_numbered_from_one_by_sorted_component_id() {
        let layout = TaskLayout::new(vec![("split".into(), 2), ("count".into(), 3), ("a".into(), 1)]);
        assert_eq!(layout.tasks("a"), &[1]);
        assert_eq!(layout.tasks("count"), &[2, 3, 4]);
        assert_eq!(layout.tasks("split"), &[5, 6]);
        assert_eq!(layout.component_of(4), Some("count"));
        assert_eq!(layout.component_of(7), None);
        assert_eq!(layout.task_count(), 6);
        let ctx = TopologyContext::new("t".into(), Arc::new(layout), Arc::new(Config::default()), 3);
        assert_eq!(ctx.component_id(), "count");
        assert_eq!(ctx.task_index(), 1);
    }
}
