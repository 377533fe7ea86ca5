//! Instantiating a topology: queues, routers and one tokio task per executor; in a cluster, only
//! the executors of this worker's tasks, with lanes to the other workers and a server for theirs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use squall_topology::{
    ACKER_COMPONENT, ChainPlan, Factory, MemoryStore, TaskId, Topology, TopologyContext, TopologyStore,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::acker::AckerFactory;
use crate::chain::{Chain, Member};
use crate::cycle::{CycleGate, cycles};
use crate::executor::{ExecutorParts, TaskFailure, TopologyStatus, run_bolts, run_spouts};
use crate::inbox::{InboxReceiver, cycle_inbox, inbox};
use crate::instruments::Instruments;
use crate::metrics::{ExecutorStats, MetricsRegistry, TopologyMetrics};
use crate::peers::{PeerPlan, PeerRoutes, PeerUpdate, Writers};
use crate::router::{ComponentRoutes, Destination, Router};
use crate::transport::{InboundLanes, Lane, RemoteSender, TransportServer, WireIdentity};
use crate::transport_metrics::TransportMetrics;
use crate::wire::StreamTable;

/// A topology whose executors run on the current tokio runtime.
pub struct RunningTopology {
    status: watch::Sender<TopologyStatus>,
    executors: Vec<(String, JoinHandle<Vec<TaskFailure>>)>,
    /// Lane writers: each ends once it has said Bye (or the topology is stopped).
    writers: Writers,
    /// Where the other workers' tasks run, and how to move them (workers only).
    peers: Option<PeerPlan>,
    server: Option<JoinHandle<()>>,
    local_addr: Option<SocketAddr>,
    metrics: MetricsRegistry,
    /// The transport's counters (workers only).
    transport: Option<Arc<TransportMetrics>>,
    /// The gates of the topology's cycles, for diagnostics.
    cycles: Vec<Arc<CycleGate>>,
    /// Components whose executors still ran when `Stopped` was first set: they stopped before
    /// they had drained.
    cut_short: Mutex<Option<Vec<String>>>,
}

/// What one worker of a topology runs and where the rest runs.
#[derive(Debug)]
pub struct WorkerPlan {
    /// The topology's id, with its version: connections from workers of any other are refused.
    pub topology_id: String,
    /// The tasks this worker runs (acker tasks included, numbered after the user's tasks).
    pub local_tasks: HashSet<TaskId>,
    /// The worker running each other task.
    pub remote: HashMap<TaskId, SocketAddr>,
    /// Where this worker accepts its peers' connections (its assigned port).
    pub listener: TcpListener,
    /// This worker's address as the other workers' `remote` maps name it; by default the
    /// listener's address (set it when listening on a wildcard address).
    pub advertised_addr: Option<SocketAddr>,
    /// The topology's durable store (ZooKeeper on a cluster); `None`: one in this process's
    /// memory, lost with it.
    pub store: Option<Arc<dyn TopologyStore>>,
}

/// A [`WorkerPlan`] that cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A task is listed as local and remote.
    #[error("task {task} is assigned to this worker and to {peer}")]
    AssignedTwice {
        /// The task.
        task: TaskId,
        /// The other worker.
        peer: SocketAddr,
    },
    /// A task is assigned to no worker.
    #[error("task {task} of `{component}` is assigned to no worker")]
    Unassigned {
        /// The task.
        task: TaskId,
        /// Its component.
        component: String,
    },
    /// The plan names a task the topology does not have.
    #[error("task {task} does not exist: the topology has tasks 1 to {count}")]
    UnknownTask {
        /// The task.
        task: TaskId,
        /// How many tasks the topology has.
        count: usize,
    },
    /// The listener's address cannot be read.
    #[error("cannot read the listening address: {0}")]
    Listener(#[source] std::io::Error),
    /// Peers were updated on a topology that runs in one process.
    #[error("a topology launched in local mode has no peer workers to update")]
    NotAWorker,
}

pub use squall_topology::executor_ranges;

/// The runs of consecutive task ids among `tasks` (ascending) that satisfy `keep`: an executor
/// runs a contiguous range of tasks.
fn local_runs(tasks: &[TaskId], keep: impl Fn(TaskId) -> bool) -> Vec<Vec<TaskId>> {
    let mut runs: Vec<Vec<TaskId>> = Vec::new();
    for &task in tasks.iter().filter(|t| keep(**t)) {
        match runs.last_mut() {
            Some(run) if run.last().is_some_and(|last| last + 1 == task) => run.push(task),
            _ => runs.push(vec![task]),
        }
    }
    runs
}

/// Acker notices to a spout are never refused: their number is bounded by the spout's trees
/// in flight, and a spout blocked on backpressure must not block the acker in turn (that
/// cycle would deadlock: spout → bolt → acker → spout).
const SPOUT_NOTICE_CAPACITY: usize = 1 << 28;

/// One executor to start: its component, tasks, and input queue.
struct ExecutorPlan {
    component: String,
    /// Its position among its component's executors.
    index: usize,
    tasks: Vec<TaskId>,
    inbox: Option<InboxReceiver>,
    /// A chained bolt's executor run by another executor: the component and index of the one
    /// that feeds it.
    host: Option<(String, usize)>,
}

/// Where a task runs, seen from this worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    Local,
    Remote(SocketAddr),
}

/// The network side of a worker: its plan, checked.
struct Network {
    topology_id: String,
    listener: TcpListener,
    advertised: SocketAddr,
}

impl RunningTopology {
    /// Starts every executor of `topology` on the current tokio runtime, with spouts in
    /// `status` (active or inactive). With `topology.acker.executors` above zero (by default
    /// one per worker), acker tasks are added after the user's tasks.
    pub fn launch(name: &str, topology: &Topology, status: TopologyStatus) -> RunningTopology {
        RunningTopology::launch_instrumented(
            name,
            topology,
            status,
            Instruments::default(),
            Arc::new(MemoryStore::new()),
        )
    }

    /// [`RunningTopology::launch`] with a test's instruments attached and the topology's
    /// durable `store` (a `LocalCluster` keeps one per topology name).
    pub fn launch_instrumented(
        name: &str,
        topology: &Topology,
        status: TopologyStatus,
        instruments: Instruments,
        store: Arc<dyn TopologyStore>,
    ) -> RunningTopology {
        let layout = topology.layout().with_system(&[(ACKER_COMPONENT, acker_count(topology))]);
        let placement = vec![Placement::Local; layout.task_count() + 1];
        start(name, topology, status, placement, None, instruments, store)
    }

    /// Starts this worker's share of `topology`: the executors of `plan.local_tasks`, a lane to
    /// every other worker it sends to, and a server on `plan.listener` for the workers that send
    /// to it. Every worker of the topology must build the same topology (same components,
    /// parallelism and streams) and be given the same assignment.
    ///
    /// Executors are formed as in local mode, then restricted to the local tasks: a worker given
    /// whole executors runs exactly those.
    ///
    /// Lifecycle across workers: a bolt's queue closes once its local upstream executors have
    /// stopped and every upstream worker has said Bye, so a finished topology drains and every
    /// worker finishes by itself. To kill, set `Killing` on every worker (each one's spouts stop
    /// and the drain follows), then `Stopped` after the wait: that ends the executors, the lanes
    /// and the server at once, whatever the peers do.
    pub fn launch_worker(
        name: &str,
        topology: &Topology,
        status: TopologyStatus,
        plan: WorkerPlan,
    ) -> Result<RunningTopology, LaunchError> {
        let layout = topology.layout().with_system(&[(ACKER_COMPONENT, acker_count(topology))]);
        let count = layout.task_count();
        for &task in plan.local_tasks.iter().chain(plan.remote.keys()) {
            if task == 0 || task as usize > count {
                return Err(LaunchError::UnknownTask { task, count });
            }
        }
        let mut placement = vec![Placement::Local; count + 1];
        for (task, slot) in placement.iter_mut().enumerate().skip(1) {
            let task = task as TaskId;
            *slot = match (plan.local_tasks.contains(&task), plan.remote.get(&task)) {
                (true, Some(peer)) => return Err(LaunchError::AssignedTwice { task, peer: *peer }),
                (true, None) => Placement::Local,
                (false, Some(peer)) => Placement::Remote(*peer),
                (false, None) => {
                    let component = layout.component_of(task).unwrap_or("?").to_owned();
                    return Err(LaunchError::Unassigned { task, component });
                }
            };
        }
        let advertised = match plan.advertised_addr {
            Some(addr) => addr,
            None => plan.listener.local_addr().map_err(LaunchError::Listener)?,
        };
        let network = Network { topology_id: plan.topology_id, listener: plan.listener, advertised };
        let store = plan.store.unwrap_or_else(|| Arc::new(MemoryStore::new()));
        Ok(start(name, topology, status, placement, Some(network), Instruments::default(), store))
    }

    /// Moves the other workers' tasks to `remote` while this worker runs (a repair or a
    /// rebalance that kept this worker's tasks): routers switch lanes between batches, lanes to
    /// workers that left are closed, connections from new workers are accepted. This worker's
    /// own tasks must be the ones it was launched with. Tuples queued for a worker that left
    /// are lost, and replayed by acking.
    pub fn update_peers(&mut self, remote: HashMap<TaskId, SocketAddr>) -> Result<PeerUpdate, LaunchError> {
        match &mut self.peers {
            Some(peers) => peers.update(remote),
            None => Err(LaunchError::NotAWorker),
        }
    }

    /// The address this worker's transport server listens on (`None` in local mode).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Changes the status; executors react at their next step. Executors still running when
    /// the status first becomes `Stopped` are reported as aborted by [`RunningTopology::finish`].
    pub fn set_status(&self, status: TopologyStatus) {
        if status == TopologyStatus::Stopped {
            let mut cut_short = self.cut_short.lock().unwrap_or_else(|e| e.into_inner());
            cut_short.get_or_insert_with(|| {
                self.executors.iter().filter(|(_, h)| !h.is_finished()).map(|(c, _)| c.clone()).collect()
            });
        }
        self.status.send_replace(status);
    }

    /// The current status.
    pub fn status(&self) -> TopologyStatus {
        *self.status.borrow()
    }

    /// The live counters.
    pub fn metrics(&self) -> TopologyMetrics {
        let mut metrics = self.metrics.snapshot();
        metrics.transport = self.transport.as_ref().map(|t| t.snapshot());
        metrics
    }

    /// Whether every executor has stopped (and every lane to another worker has delivered its
    /// last batch).
    pub fn is_finished(&self) -> bool {
        // A worker is done once its lanes have delivered their last batches too.
        self.executors.iter().all(|(_, h)| h.is_finished()) && lock(&self.writers).iter().all(|(_, h)| h.is_finished())
    }

    /// What still runs: executors by component (with a count when several run, and for bolts
    /// on a cycle the tuples outstanding there), and lanes (`component@peer`) that have not yet
    /// delivered their last batch. For errors and logs when a topology does not finish.
    pub fn unfinished(&self) -> Vec<String> {
        let mut by_component: Vec<(&str, usize)> = Vec::new();
        for (component, _) in self.executors.iter().filter(|(_, h)| !h.is_finished()) {
            match by_component.iter_mut().find(|(c, _)| c == component) {
                Some((_, n)) => *n += 1,
                None => by_component.push((component, 1)),
            }
        }
        let executors = by_component.into_iter().map(|(component, n)| {
            let mut line = component.to_owned();
            if n > 1 {
                line.push_str(&format!(" ({n} executors)"));
            }
            if let Some(gate) = self.cycles.iter().find(|g| g.members().iter().any(|m| m == component)) {
                let cycle = gate.members().join(" → ");
                line.push_str(&format!(" [on cycle {cycle}: {} tuples outstanding]", gate.outstanding()));
            }
            line
        });
        let writers = lock(&self.writers);
        let lanes = writers.iter().filter(|(_, h)| !h.is_finished()).map(|(lane, _)| format!("lane {lane}"));
        executors.chain(lanes).collect()
    }

    /// Waits until every executor (and lane) has stopped or `timeout` passes; returns whether
    /// they all did.
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

    /// Stops what still runs and collects every task failure, and the components whose
    /// executors were stopped before they had drained (by `Stopped`, or aborted here).
    pub async fn finish(self) -> (Vec<TaskFailure>, Vec<String>) {
        let mut failures = Vec::new();
        let mut aborted = self.cut_short.into_inner().unwrap_or_else(|e| e.into_inner()).unwrap_or_default();
        for (component, handle) in self.executors {
            if !handle.is_finished() {
                handle.abort();
                aborted.push(component.clone());
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
        let writers = std::mem::take(&mut *lock(&self.writers));
        for handle in writers.into_iter().map(|(_, h)| h).chain(self.server) {
            handle.abort();
            // A transport task ends by itself or by this abort; neither is a task failure.
            let _ = handle.await;
        }
        aborted.sort();
        aborted.dedup();
        (failures, aborted)
    }
}

/// Awaits an executor; a panic becomes a task failure and a recorded error of its component
/// (shown by `describe`) instead of vanishing. Dropped or aborted, it aborts the executor.
async fn watch_panics(
    executor: JoinHandle<Vec<TaskFailure>>,
    owner: (Arc<ExecutorStats>, String, TaskId),
    chained: Vec<(Arc<ExecutorStats>, String, TaskId)>,
    running: Arc<AtomicUsize>,
) -> Vec<TaskFailure> {
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _abort = AbortOnDrop(executor.abort_handle());
    match executor.await {
        Ok(failures) => failures,
        Err(e) if e.is_panic() => {
            // Inside a chain, the bolt that was running panicked.
            let index = running.load(Ordering::Relaxed);
            let (stats, component, task) = match index.checked_sub(1).and_then(|m| chained.get(m)) {
                Some(member) => member.clone(),
                None => owner,
            };
            let message = format!("executor panicked: {}", panic_message(e.into_panic()));
            tracing::error!(component, task, error = %message, "executor panicked");
            stats.add_errors(1, task, message.clone());
            vec![TaskFailure { component, task, phase: "execution", message }]
        }
        Err(_) => Vec::new(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update leaves the data consistent: a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn acker_count(topology: &Topology) -> u32 {
    let config = topology.config();
    config.acker_executors.unwrap_or(config.workers)
}

/// Whether executors of `source` send to tasks of `target`: subscribers get tuples, ackers get
/// every component's acking messages, and spouts get the ackers' notices.
fn feeds(topology: &Topology, acking: bool, source: &str, target: &str) -> bool {
    let is_spout = |id: &str| topology.component(id).is_some_and(|c| matches!(c.factory, Factory::Spout(_)));
    if source == ACKER_COMPONENT {
        return is_spout(target);
    }
    if target == ACKER_COMPONENT {
        return true;
    }
    let subscribes =
        |sub: &str, to: &str| topology.component(sub).is_some_and(|c| c.inputs.iter().any(|i| i.component == to));
    // A bolt subscribed to a spout acks that spout's sole copies itself (`squall_topology::ack`).
    subscribes(target, source) || (acking && is_spout(target) && subscribes(source, target))
}

fn start(
    name: &str,
    topology: &Topology,
    status: TopologyStatus,
    placement: Vec<Placement>,
    network: Option<Network>,
    instruments: Instruments,
    store: Arc<dyn TopologyStore>,
) -> RunningTopology {
    let (status_tx, _) = watch::channel(status);
    let config = topology.config();
    let layout = Arc::new(topology.layout().with_system(&[(ACKER_COMPONENT, acker_count(topology))]));
    let ackers: Arc<[TaskId]> = layout.tasks(ACKER_COMPONENT).into();
    let acking = !ackers.is_empty();
    let topology_name: Arc<str> = name.into();
    let topology_id: Arc<str> =
        network.as_ref().map_or_else(|| topology_name.clone(), |n| n.topology_id.as_str().into());
    let chains = ChainPlan::new(&topology.spec(), &BTreeMap::new());
    let routes = ComponentRoutes::for_topology(topology, &chains);
    let spout_tasks: Vec<TaskId> = topology
        .components()
        .iter()
        .filter(|c| matches!(c.factory, Factory::Spout(_)))
        .flat_map(|c| layout.tasks(&c.id).iter().copied())
        .collect();
    let is_local = |task: TaskId| placement.get(task as usize) == Some(&Placement::Local);
    // The inbox capacity of a component's executors, which is also the capacity of the lanes
    // to its tasks in other workers.
    let capacity_of = |component: &str| -> Option<usize> {
        if component == ACKER_COMPONENT {
            return Some(config.receive_buffer_size as usize);
        }
        let def = topology.component(component)?;
        match def.factory {
            Factory::Bolt(_) => Some(config.with_overrides(&def.config).receive_buffer_size as usize),
            Factory::Spout(_) => (!ackers.is_empty()).then_some(SPOUT_NOTICE_CAPACITY),
        }
    };

    // Bolts on a cycle share a gate per cycle (see `cycle.rs`); its capacity is the sum of its
    // local executors' queue capacities. It may close by itself only when the whole cycle runs
    // here.
    let mut gates: Vec<Arc<CycleGate>> = Vec::new();
    let mut armed: Vec<Arc<CycleGate>> = Vec::new();
    for members in topology_cycles(topology) {
        let mut capacity = 0;
        let mut all_local = true;
        for member in &members {
            let Some(def) = topology.component(member) else { continue };
            let tasks = layout.tasks(member);
            all_local &= tasks.iter().all(|t| is_local(*t));
            let executors =
                executor_ranges(tasks, def.parallelism).iter().filter(|r| r.iter().any(|t| is_local(*t))).count();
            capacity += executors * capacity_of(member).unwrap_or(0);
        }
        let gate = CycleGate::new(members, capacity);
        if all_local {
            armed.push(gate.clone());
        } else {
            tracing::info!(cycle = ?gate.members(), "cycle spans workers: it ends when the topology is killed");
        }
        gates.push(gate);
    }
    let gate_of = |component: &str| gates.iter().find(|g| g.members().iter().any(|c| c == component));

    // One input queue per local executor: bolts get tuples, ackers acking messages, spouts
    // (with acking) the ackers' notices.
    let mut senders: Vec<Option<Destination>> = vec![None; layout.task_count() + 1];
    let mut plans = Vec::new();
    let mut plan =
        |component: &str, index: usize, range: Vec<TaskId>, capacity: Option<usize>, host: Option<(String, usize)>| {
            if host.is_some() {
                // Run by the executor feeding it: no queue, its batches are handed over.
                for task in &range {
                    senders[*task as usize] = Some(Destination::Chained);
                }
                plans.push(ExecutorPlan { component: component.to_owned(), index, tasks: range, inbox: None, host });
                return;
            }
            let inbox = capacity.map(|capacity| {
                let (tx, rx) = match gate_of(component) {
                    Some(gate) => cycle_inbox(capacity, gate.clone()),
                    None => inbox(capacity),
                };
                for task in &range {
                    senders[*task as usize] = Some(Destination::Local(tx.clone()));
                }
                rx
            });
            plans.push(ExecutorPlan { component: component.to_owned(), index, tasks: range, inbox, host: None });
        };
    // A chained bolt's executor runs inside the executor feeding it when both are here whole.
    let whole_here = |component: &str, index: usize| {
        let Some(def) = topology.component(component) else { return false };
        let ranges = executor_ranges(layout.tasks(component), def.parallelism);
        ranges.get(index).is_some_and(|range| range.iter().all(|t| is_local(*t)))
    };
    for component in topology.components() {
        for (index, range) in
            executor_ranges(layout.tasks(&component.id), component.parallelism).into_iter().enumerate()
        {
            let host = chains
                .link(&component.id)
                .filter(|link| whole_here(&component.id, index) && whole_here(&link.upstream, index))
                .map(|link| (link.upstream.clone(), index));
            if host.is_some() {
                plan(&component.id, index, range.to_vec(), None, host);
                continue;
            }
            for run in local_runs(range, is_local) {
                plan(&component.id, index, run, capacity_of(&component.id), None);
            }
        }
    }
    for (index, acker) in ackers.iter().enumerate().filter(|(_, t)| is_local(**t)) {
        plan(ACKER_COMPONENT, index, vec![*acker], capacity_of(ACKER_COMPONENT), None);
    }
    let local_components: HashSet<String> = plans.iter().map(|p| p.component.clone()).collect();

    // Lanes: one per (remote worker, component) that a local executor sends to, and one per
    // (remote worker, local component) that the remote worker sends to.
    let writers: Writers = Arc::default();
    let mut server = None;
    let mut local_addr = None;
    let mut peers = None;
    let mut transport_metrics = None;
    if let Some(network) = network {
        let identity = Arc::new(WireIdentity {
            topology_id: network.topology_id,
            worker: network.advertised.to_string(),
            table: Arc::new(StreamTable::new(topology, &layout)),
            frame_timeout: Duration::from_secs(config.transport_frame_timeout_secs.into()),
            metrics: Arc::default(),
        });
        transport_metrics = Some(identity.metrics.clone());
        let all_components: Vec<&str> = topology
            .components()
            .iter()
            .map(|c| c.id.as_str())
            .chain((!ackers.is_empty()).then_some(ACKER_COMPONENT))
            .collect();
        let sends_to: HashSet<String> = all_components
            .iter()
            .filter(|target| local_components.iter().any(|source| feeds(topology, acking, source, target)))
            .map(|c| (*c).to_owned())
            .collect();
        let capacities: HashMap<String, usize> = sends_to
            .iter()
            .map(|c| (c.clone(), capacity_of(c).unwrap_or(config.receive_buffer_size as usize)))
            .collect();
        let routes =
            Arc::new(PeerRoutes::new(identity.clone(), status_tx.subscribe(), capacities.clone(), writers.clone()));
        let mut outbound: HashMap<Lane, RemoteSender> = HashMap::new();
        // A chained bolt is fed by forward partitioning: only the tasks paired with this
        // worker's executors of its feeder are reached from here, so only they get lanes.
        let feeding = Arc::new(Feeding::new(&chains, topology, &layout));
        let forward = feeding.reached_from(is_local);
        let forward_reaches = |component: &str, task: TaskId| forward.get(component).is_none_or(|r| r.contains(&task));
        let mut remote_components: HashSet<(SocketAddr, &str)> = HashSet::new();
        let mut remote: HashMap<TaskId, SocketAddr> = HashMap::new();
        let mut lane_of: Vec<Option<Lane>> = vec![None; placement.len()];
        for (task, place) in placement.iter().enumerate().skip(1) {
            let Placement::Remote(peer) = *place else { continue };
            remote.insert(task as TaskId, peer);
            let Some(component) = layout.component_of(task as TaskId) else { continue };
            remote_components.insert((peer, component));
            if !sends_to.contains(component) || !forward_reaches(component, task as TaskId) {
                continue;
            }
            let lane = Lane { peer, component: component.to_owned() };
            lane_of[task] = Some(lane.clone());
            let sender = outbound.entry(lane).or_insert_with_key(|lane| {
                let (sender, writer) =
                    RemoteSender::spawn(lane.clone(), capacities[component], identity.clone(), status_tx.subscribe());
                lock(&writers).push((lane.clone(), writer));
                sender
            });
            senders[task] = Some(Destination::Remote(sender.clone()));
        }
        routes.seed(lane_of, &outbound);
        let mut inbound = InboundLanes::new();
        for (peer, source) in remote_components.iter().copied() {
            for target in &local_components {
                if !feeds(topology, acking, source, target) {
                    continue;
                }
                // A chained bolt's task hears only from the executor paired with it.
                let paired_here =
                    |task: &TaskId, at: &SocketAddr| *at == peer && feeding.reaches(*task, target, is_local);
                if feeding.is_chained(source, target) && !remote.iter().any(|(t, at)| paired_here(t, at)) {
                    continue;
                }
                let inboxes: Vec<Option<_>> = (0..senders.len())
                    .map(|task| match &senders[task] {
                        Some(Destination::Local(inbox)) if layout.component_of(task as TaskId) == Some(target) => {
                            Some(inbox.clone())
                        }
                        _ => None,
                    })
                    .collect();
                if inboxes.iter().any(Option::is_some) {
                    inbound.expect(peer, target, inboxes);
                }
            }
        }
        local_addr = network.listener.local_addr().ok();
        tracing::info!(
            topology = name,
            worker = identity.worker,
            local_executors = plans.len(),
            outbound_lanes = outbound.len(),
            inbound_lanes = inbound.len(),
            "starting worker"
        );
        let inbound = Arc::new(inbound);
        let feeds_local: HashMap<String, Vec<String>> = all_components
            .iter()
            .map(|source| {
                let targets = local_components.iter().filter(|t| feeds(topology, acking, source, t)).cloned().collect();
                ((*source).to_owned(), targets)
            })
            .collect();
        peers = Some(PeerPlan {
            routes,
            inbound: inbound.clone(),
            layout: layout.clone(),
            local: placement.iter().map(|p| *p == Placement::Local).collect(),
            sends_to,
            feeds_local,
            forward: forward.clone(),
            feeding,
            remote,
        });
        let transport = TransportServer::new(network.listener, identity, inbound, status_tx.subscribe());
        server = Some(tokio::spawn(transport.run()));
    }

    // Each router reaches only its subscribers (and the ackers), so a bolt's queue closes
    // once every executor upstream of it has stopped: that is how a finished topology drains.
    // Within a cycle, members reach each other over feedback senders: they never wait for
    // room and do not keep the cycle open.
    let destinations_of = |source: &str| {
        let mut dest: Vec<Option<Destination>> = vec![None; senders.len()];
        let source_cycle = gate_of(source);
        let mut reach = |task: TaskId| {
            let sender = senders[task as usize].clone();
            let same_cycle = source_cycle.is_some_and(|g| {
                layout.component_of(task).and_then(gate_of).is_some_and(|target| Arc::ptr_eq(g, target))
            });
            dest[task as usize] = if same_cycle { sender.map(|s| s.feedback()) } else { sender };
        };
        if source == ACKER_COMPONENT {
            spout_tasks.iter().for_each(|t| reach(*t));
        } else {
            ackers.iter().for_each(|t| reach(*t));
            for other in topology.components() {
                if feeds(topology, acking, source, &other.id) {
                    layout.tasks(&other.id).iter().for_each(|t| reach(*t));
                }
            }
        }
        Arc::new(dest)
    };

    let mut metrics = MetricsRegistry::default();
    let mut executors = Vec::new();
    // Executors whose own loop runs, and chained ones by the executor (component, index) that
    // runs them, with how far down the chain they are.
    let mut heads = Vec::new();
    let mut members: HashMap<(String, usize), Vec<(usize, Member)>> = HashMap::new();
    for ExecutorPlan { component: component_id, index, tasks, inbox, host } in plans {
        let (config, factory, component_routes) = if component_id == ACKER_COMPONENT {
            let mut acker_config = config.clone();
            // The acker forgets trees on its own clock: one tick per message timeout.
            acker_config.tick_tuple_freq_secs = config.enable_message_timeouts.then_some(config.message_timeout_secs);
            (acker_config, Factory::Bolt(Arc::new(AckerFactory)), ComponentRoutes::system(ACKER_COMPONENT))
        } else {
            let Some(component) = topology.component(&component_id) else { continue };
            let Some((_, r)) = routes.iter().find(|(id, _)| *id == component_id) else { continue };
            (config.with_overrides(&component.config), component.factory.clone(), r.clone())
        };
        let config = Arc::new(config);
        let stats = Arc::new(ExecutorStats::new(Duration::from_secs(config.executor_stall_secs.into())));
        let queue_stats = match factory {
            Factory::Bolt(_) => inbox.as_ref().map(|q| q.stats().clone()),
            Factory::Spout(_) => None,
        };
        metrics.register(&component_id, tasks.to_vec(), stats.clone(), queue_stats);
        let mut router = Router::new(
            component_routes,
            destinations_of(&component_id),
            ackers.clone(),
            config.producer_batch_size as usize,
            config.debug,
            index,
            &is_local,
        );
        router.instrument(&instruments);
        if let Some(peers) = &peers {
            router.follow_peers(peers.routes.clone());
        }
        let parts = ExecutorParts {
            component: component_id.clone(),
            contexts: tasks
                .iter()
                .map(|t| {
                    let context = TopologyContext::new(topology_name.clone(), layout.clone(), config.clone(), *t)
                        .with_topology_id(topology_id.clone())
                        .with_store(store.clone());
                    metrics.register_task(&component_id, *t, context.status().clone(), context.metrics().clone());
                    context
                })
                .collect(),
            router,
            inbox,
            status: status_tx.subscribe(),
            stats,
            batch_size: config.producer_batch_size as usize,
            tick: config.tick_tuple_freq_secs.map(|s| Duration::from_secs(s.into())),
            message_timeout: (config.enable_message_timeouts && !ackers.is_empty())
                .then(|| Duration::from_secs(config.message_timeout_secs.into())),
            in_flight: instruments.in_flight.clone(),
            chain: None,
        };
        match (host, factory) {
            (Some(_), Factory::Bolt(f)) => {
                let bolts = tasks.iter().map(|t| f.create(*t)).collect();
                let (head, depth) = chain_head(&chains, &component_id, index);
                members.entry(head).or_default().push((depth, Member::new(parts, bolts)));
            }
            (_, factory) => heads.push((component_id, index, tasks, parts, factory)),
        }
    }
    for (component_id, index, tasks, mut parts, factory) in heads {
        let running = Arc::new(AtomicUsize::new(0));
        let mut owners = Vec::new();
        if let Some(mut chained) = members.remove(&(component_id.clone(), index)) {
            chained.sort_by_key(|(depth, _)| *depth);
            let chain = Chain::new(chained.into_iter().map(|(_, m)| m).collect(), running.clone());
            owners = chain.owners();
            tracing::debug!(component = component_id, index, chained = ?chain.components().collect::<Vec<_>>(), "chained executor");
            parts.chain = Some(chain);
        }
        let first_task = tasks.first().copied().unwrap_or(0);
        let stats = parts.stats.clone();
        let inner = match factory {
            Factory::Spout(f) => {
                let spouts = tasks.iter().map(|t| f.create(*t)).collect();
                tokio::spawn(run_spouts(parts, spouts))
            }
            Factory::Bolt(f) => {
                let bolts = tasks.iter().map(|t| f.create(*t)).collect();
                tokio::spawn(run_bolts(parts, bolts))
            }
        };
        let owner = (stats, component_id.clone(), first_task);
        let handle = tokio::spawn(watch_panics(inner, owner, owners, running));
        executors.push((component_id, handle));
    }
    for ((component, index), orphans) in members {
        // Cannot happen: a chained executor is planned only when its feeder is here whole.
        tracing::error!(
            component,
            index,
            executors = orphans.len(),
            "chained executors without their feeding executor"
        );
    }
    for gate in armed {
        gate.arm();
    }
    RunningTopology {
        status: status_tx,
        executors,
        writers,
        peers,
        server,
        local_addr,
        metrics,
        transport: transport_metrics,
        cycles: gates,
        cut_short: Mutex::new(None),
    }
}

/// The executor (component, index) whose loop runs chained executor `index` of `component`, and
/// how many links away it is.
fn chain_head(chains: &ChainPlan, component: &str, index: usize) -> ((String, usize), usize) {
    let head = chains.head(component);
    let mut depth = 0;
    let mut at = component;
    while let Some(link) = chains.link(at) {
        depth += 1;
        at = &link.upstream;
    }
    ((head.to_owned(), index), depth)
}

/// Which task of a chained bolt each task of its feeder sends to (forward partitioning).
pub(crate) struct Feeding {
    /// By the feeder's task: (chained bolt, its task).
    targets: HashMap<TaskId, Vec<(String, TaskId)>>,
    /// (feeder, chained bolt) pairs.
    links: HashSet<(String, String)>,
}

impl Feeding {
    fn new(chains: &ChainPlan, topology: &Topology, layout: &squall_topology::TaskLayout) -> Feeding {
        let mut targets: HashMap<TaskId, Vec<(String, TaskId)>> = HashMap::new();
        let mut links = HashSet::new();
        for (component, link) in chains.links() {
            links.insert((link.upstream.clone(), component.to_owned()));
            let Some(upstream) = topology.component(&link.upstream) else { continue };
            for (range, target) in
                executor_ranges(layout.tasks(&link.upstream), upstream.parallelism).iter().zip(&link.targets)
            {
                for task in range.iter() {
                    targets.entry(*task).or_default().push((component.to_owned(), *target));
                }
            }
        }
        Feeding { targets, links }
    }

    /// For each chained bolt, its tasks that the feeder's tasks which `is_local` send to.
    fn reached_from(&self, is_local: impl Fn(TaskId) -> bool) -> HashMap<String, HashSet<TaskId>> {
        let mut reached: HashMap<String, HashSet<TaskId>> =
            self.links.iter().map(|(_, bolt)| (bolt.clone(), HashSet::new())).collect();
        for (feeder, targets) in &self.targets {
            if !is_local(*feeder) {
                continue;
            }
            for (bolt, task) in targets {
                reached.entry(bolt.clone()).or_default().insert(*task);
            }
        }
        reached
    }

    /// Whether `target` is chained to `source`.
    pub(crate) fn is_chained(&self, source: &str, target: &str) -> bool {
        self.links.contains(&(source.to_owned(), target.to_owned()))
    }

    /// Whether `task` (of the feeder) sends to a task of `target` that `is_local`.
    pub(crate) fn reaches(&self, task: TaskId, target: &str, is_local: impl Fn(TaskId) -> bool) -> bool {
        self.targets.get(&task).is_some_and(|v| v.iter().any(|(c, t)| c == target && is_local(*t)))
    }
}

/// The topology's cycles, by component id.
fn topology_cycles(topology: &Topology) -> Vec<Vec<String>> {
    let components: Vec<&str> = topology.components().iter().map(|c| c.id.as_str()).collect();
    let edges: Vec<(&str, &str)> = topology
        .components()
        .iter()
        .flat_map(|c| c.inputs.iter().map(move |i| (i.component.as_str(), c.id.as_str())))
        .collect();
    cycles(&components, &edges).into_iter().map(|c| c.into_iter().map(str::to_owned).collect()).collect()
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
