//! The Nimbus daemon: the HTTP API, the leader's scheduling loop, and a standby's artifact copies.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use squall_cluster::records::{unix_millis, unix_secs};
use squall_cluster::{
    Assignment, ClusterError, ClusterState, LeaderElection, Liveness, NimbusInfo, SupervisorInfo, TopologyRecord,
    TopologyStatus, WorkerAssignment, WorkerHeartbeat,
};
use tokio::sync::Notify;

use crate::api::{TopologySummary, WorkerDetails};
use crate::artifacts::{ArtifactError, ArtifactStore};
use crate::client::NimbusClient;
use crate::scheduler::{self, Slot};

/// Topologies whose heartbeats a monitor round reads at once.
const HEARTBEAT_READS_IN_FLIGHT: usize = 16;
/// New assignments a monitor round writes at once.
const ASSIGNMENT_WRITES_IN_FLIGHT: usize = 32;

/// How a Nimbus runs; the timeouts carry Storm's names and defaults.
#[derive(Debug, Clone)]
pub struct NimbusConfig {
    /// The host it advertises.
    pub host: String,
    /// The port of its HTTP API.
    pub port: u16,
    /// Where it keeps artifacts.
    pub local_dir: PathBuf,
    /// ZooKeeper servers.
    pub zookeeper: String,
    /// The cluster's chroot.
    pub chroot: String,
    /// ZooKeeper session timeout.
    pub session_timeout: Duration,
    /// `nimbus.task.timeout.secs` (30): a worker silent this long is replaced.
    pub task_timeout: Duration,
    /// `nimbus.supervisor.timeout.secs` (60): a supervisor gone this long loses its workers.
    pub supervisor_timeout: Duration,
    /// `nimbus.task.launch.secs` (120): grace for a new worker's first heartbeat.
    pub task_launch: Duration,
    /// `nimbus.monitor.freq.secs` (10): how often the leader checks every topology.
    pub monitor_freq: Duration,
}

/// Why Nimbus stopped.
#[derive(Debug, thiserror::Error)]
pub enum NimbusError {
    /// ZooKeeper failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The artifact directory failed.
    #[error(transparent)]
    Artifacts(#[from] ArtifactError),
    /// The API port could not be bound.
    #[error("cannot listen on {address}: {source}; is another Nimbus using the port?")]
    Bind {
        /// The address.
        address: String,
        /// The error.
        source: std::io::Error,
    },
}

/// What the API handlers and the loops share.
pub(crate) struct Shared {
    pub(crate) config: NimbusConfig,
    pub(crate) me: String,
    pub(crate) state: ClusterState,
    pub(crate) election: LeaderElection,
    pub(crate) artifacts: ArtifactStore,
    /// Wakes the scheduling loop early (a submission, a kill, a supervisor change).
    pub(crate) wake: Notify,
    /// What this leader has seen: when each worker slot was first assigned, when each
    /// supervisor was last seen, when each kill started.
    pub(crate) memory: Mutex<Memory>,
    /// Workers' newest metrics reports.
    pub(crate) reports: crate::reports::Reports,
}

#[derive(Default)]
pub(crate) struct Memory {
    /// When each worker's work (slot, tasks, layout) was first seen in an assignment.
    assigned_at: HashMap<(String, WorkerAssignment), Instant>,
    /// Heartbeat silence by (topology, supervisor, port), on a clock that stops while
    /// ZooKeeper cannot be read.
    beats: Liveness<(String, String, u16)>,
    /// Supervisor absence, on the same clock.
    supervisors: Liveness<String>,
    /// Successful rounds so far: the marker of a supervisor that is present.
    rounds: u64,
    killed_at: HashMap<String, Instant>,
}

/// The fencing timeout Nimbus gives workers: two thirds of `nimbus.task.timeout.secs`, and at
/// least 2 s less, so a worker cut off from ZooKeeper (which checks its fence every 1.5 s at
/// most) has deactivated its spouts before its heartbeat is old enough for its tasks to move.
pub(crate) fn fence_secs(config: &NimbusConfig) -> u32 {
    let task_timeout = config.task_timeout.as_secs();
    let fence = (task_timeout * 2 / 3).min(task_timeout.saturating_sub(2)).max(1);
    u32::try_from(fence).unwrap_or(u32::MAX)
}

/// Runs a Nimbus until `shutdown` completes.
pub async fn run(config: NimbusConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), NimbusError> {
    let me = format!("{}:{}", config.host, config.port);
    let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port))
        .await
        .map_err(|source| NimbusError::Bind { address: me.clone(), source })?;
    run_on(config, listener, shutdown).await
}

/// Runs a Nimbus on an already bound listener (its port is the advertised one).
pub async fn run_on(
    config: NimbusConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NimbusError> {
    let local: SocketAddr =
        listener.local_addr().map_err(|source| NimbusError::Bind { address: config.host.clone(), source })?;
    let me = format!("{}:{}", config.host, local.port());
    let starting = async {
        let state = ClusterState::connect(&config.zookeeper, &config.chroot, config.session_timeout).await?;
        let artifacts = ArtifactStore::open(config.local_dir.join("artifacts"))?;
        state
            .register_nimbus(&NimbusInfo { host: config.host.clone(), port: local.port(), started_at: unix_secs() })
            .await?;
        let election = LeaderElection::join(&state, me.clone()).await?;
        Ok::<_, NimbusError>((state, artifacts, election))
    };
    let why = format!(
        "nimbus at {me} is starting (connecting to ZooKeeper at {} and registering); try again in a few seconds",
        config.zookeeper
    );
    let (state, artifacts, election) = answer_while_starting(&listener, &why, starting).await?;
    tracing::info!(nimbus = %me, "nimbus started");
    let shared = Arc::new(Shared {
        config,
        me,
        state,
        election,
        artifacts,
        wake: Notify::new(),
        memory: Mutex::new(Memory::default()),
        reports: crate::reports::Reports::default(),
    });
    let monitor = tokio::spawn(monitor_loop(shared.clone()));
    let app = crate::http::router(shared.clone());
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    monitor.abort();
    shared.state.close().await;
    if let Err(e) = served {
        tracing::error!(error = %e, "nimbus api server failed");
    }
    Ok(())
}

/// Runs `starting` while answering every request on `listener` with 503 and `why`: a CLI that
/// finds the port open learns at once why nothing else answers yet (ZooKeeper may be slow, or
/// the previous run's session may still hold this Nimbus's node).
async fn answer_while_starting<T>(
    listener: &tokio::net::TcpListener,
    why: &str,
    starting: impl Future<Output = T>,
) -> T {
    let body: Arc<str> = serde_json::json!({ "error": why }).to_string().into();
    tokio::pin!(starting);
    loop {
        tokio::select! {
            done = &mut starting => return done,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                tokio::spawn(answer_starting(stream, body.clone()));
            }
        }
    }
}

async fn answer_starting(mut stream: tokio::net::TcpStream, body: Arc<str>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Read the request head first: closing with unread bytes would reset the connection and
    // lose the answer. Bounded in size and time; the body, if any, is not awaited.
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let read_head = async {
        while head.len() < 16 << 10 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), read_head).await;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(response.as_bytes())).await;
    let _ = stream.shutdown().await;
}

async fn monitor_loop(shared: Arc<Shared>) {
    let mut leading = shared.election.subscribe();
    loop {
        let result = if shared.election.is_leader() {
            match ensure_artifacts(&shared).await {
                Ok(()) => monitor_once(&shared).await,
                Err(e) => Err(e),
            }
        } else {
            ensure_artifacts(&shared).await
        };
        if let Err(e) = result {
            // The time until the next round that reads ZooKeeper does not count as silence.
            let mut memory = shared.memory.lock().unwrap_or_else(|e| e.into_inner());
            memory.beats.failed();
            memory.supervisors.failed();
            drop(memory);
            tracing::warn!(error = %e, "nimbus monitor round failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(shared.config.monitor_freq) => {}
            _ = shared.wake.notified() => {}
            _ = leading.changed() => {
                if *leading.borrow() {
                    tracing::info!(nimbus = %shared.me, "this nimbus now leads");
                    // Liveness clocks restart with a new leader, as Storm's heartbeat cache does.
                    *shared.memory.lock().unwrap_or_else(|e| e.into_inner()) = Memory::default();
                }
            }
        }
    }
}

/// Copies every topology's artifact this Nimbus lacks from a Nimbus that has it, so any Nimbus
/// can lead.
async fn ensure_artifacts(shared: &Shared) -> Result<(), ClusterError> {
    for record in shared.state.topologies().await?.into_values() {
        let hash = record.artifact_hash;
        if shared.artifacts.contains(&hash) {
            shared.state.register_artifact(&hash, &shared.me).await?;
            continue;
        }
        for holder in shared.state.artifact_holders(&hash).await? {
            if holder == shared.me {
                continue;
            }
            let client = NimbusClient::new(vec![holder.clone()], Duration::from_secs(120));
            let (h, from) = (hash.clone(), holder.clone());
            let bytes = tokio::task::spawn_blocking(move || client.download(&from, &h)).await;
            match bytes {
                Ok(Ok(bytes)) => match shared.artifacts.put_as(&hash, &bytes) {
                    Ok(()) => {
                        tracing::info!(artifact = %hash, from = %holder, "copied artifact");
                        shared.state.register_artifact(&hash, &shared.me).await?;
                        break;
                    }
                    Err(e) => tracing::warn!(artifact = %hash, from = %holder, error = %e, "copied artifact is bad"),
                },
                Ok(Err(e)) => tracing::warn!(artifact = %hash, from = %holder, error = %e, "cannot copy artifact"),
                Err(e) => tracing::warn!(error = %e, "artifact copy task failed"),
            }
        }
    }
    Ok(())
}

/// The slots of live supervisors that no assignment uses, by supervisor.
///
/// Workers are addressed by `host:port`, so an address is one slot however many supervisors
/// advertise it: a port some assignment already uses is not free on another supervisor, and
/// when two supervisors on one host list the same port only the first (by id) offers it.
pub(crate) fn free_slots(
    supervisors: &BTreeMap<String, SupervisorInfo>,
    assignments: &BTreeMap<String, Assignment>,
    except: Option<&str>,
) -> BTreeMap<String, Vec<Slot>> {
    let mut taken: BTreeMap<(&str, u16), &str> = assignments
        .iter()
        .filter(|(name, _)| Some(name.as_str()) != except)
        .flat_map(|(_, a)| a.workers.iter().map(|w| ((w.host.as_str(), w.port), w.supervisor_id.as_str())))
        .collect();
    let mut free = BTreeMap::new();
    for s in supervisors.values() {
        let mut slots = Vec::new();
        for &port in &s.ports {
            match taken.get(&(s.host.as_str(), port)) {
                None => {
                    taken.insert((s.host.as_str(), port), s.id.as_str());
                    slots.push(Slot { supervisor: s.id.clone(), host: s.host.clone(), port });
                }
                Some(&owner) if owner != s.id => tracing::warn!(
                    supervisor = %s.id,
                    other = %owner,
                    address = %format_args!("{}:{port}", s.host),
                    "two supervisors offer the same worker address; only the other one gets workers there, give each supervisor on a host its own ports"
                ),
                Some(_) => {}
            }
        }
        free.insert(s.id.clone(), slots);
    }
    free
}

/// The workers of an assignment, each stamped with the executors it runs and the topology's
/// task count, so a worker whose work did not change is recognised in a new version.
fn to_workers(placed: Vec<(Slot, Vec<u32>)>, executors: &[scheduler::Executor]) -> Vec<WorkerAssignment> {
    let task_count = executors.iter().flatten().count() as u64;
    placed
        .into_iter()
        .map(|(slot, tasks)| {
            let mine = executors.iter().filter(|e| e.iter().all(|t| tasks.binary_search(t).is_ok()));
            let mut stamp = Fnv::default();
            stamp.write(task_count);
            for executor in mine {
                stamp.write(executor.len() as u64);
                executor.iter().for_each(|t| stamp.write(u64::from(*t)));
            }
            WorkerAssignment {
                supervisor_id: slot.supervisor,
                host: slot.host,
                port: slot.port,
                tasks,
                layout: stamp.0,
            }
        })
        .collect()
}

/// FNV-1a over u64 words: stable across processes and builds, which a layout stamp needs.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, word: u64) {
        for byte in word.to_le_bytes() {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn from_workers(workers: &[WorkerAssignment]) -> Vec<(Slot, Vec<u32>)> {
    workers
        .iter()
        .map(|w| (Slot { supervisor: w.supervisor_id.clone(), host: w.host.clone(), port: w.port }, w.tasks.clone()))
        .collect()
}

/// The record's spec with its `-c` overrides applied to the config keys scheduling reads, so
/// Nimbus and the workers agree on the acker tasks.
pub(crate) fn effective_spec(record: &TopologyRecord) -> squall_topology::TopologySpec {
    let mut spec = record.spec.clone();
    for (key, value) in &record.config {
        let value = match value {
            squall_topology::ConfigValue::Str(text) if text.trim() == "null" => squall_topology::ConfigValue::Null,
            squall_topology::ConfigValue::Str(text) if matches!(text.trim(), "true" | "false") => {
                squall_topology::ConfigValue::Bool(text.trim() == "true")
            }
            squall_topology::ConfigValue::Str(text) => match text.trim().parse::<i64>() {
                Ok(n) => squall_topology::ConfigValue::Int(n),
                Err(_) => continue,
            },
            other => other.clone(),
        };
        if key == "topology.acker.executors" || key == "topology.chaining" {
            spec.config.insert(key.clone(), value);
        }
    }
    spec
}

/// The units `record`'s topology is placed in: its executors as its workers form them, a
/// chained bolt's with the executor feeding it.
fn executors_of(record: &TopologyRecord) -> Vec<scheduler::Executor> {
    scheduler::placement_units(&effective_spec(record), &record.parallelism, record.num_workers)
}

/// A fresh assignment for `record` over `free` slots.
pub(crate) fn fresh_assignment(
    config: &NimbusConfig,
    record: &TopologyRecord,
    free: &BTreeMap<String, Vec<Slot>>,
) -> Result<Assignment, scheduler::NotEnoughSlots> {
    let executors = executors_of(record);
    let placed = scheduler::assign(&executors, record.num_workers as usize, free)?;
    Ok(Assignment {
        topology_id: record.id.clone(),
        version: 0,
        artifact_hash: record.artifact_hash.clone(),
        workers: to_workers(placed, &executors),
        assigned_at: unix_secs(),
        fence_secs: fence_secs(config),
    })
}

/// The assignment of `record` after a rebalance, moving as little of `current` as it can.
pub(crate) fn rebalanced_assignment(
    config: &NimbusConfig,
    record: &TopologyRecord,
    current: Option<&Assignment>,
    free: &BTreeMap<String, Vec<Slot>>,
) -> Result<Assignment, scheduler::NotEnoughSlots> {
    let Some(current) = current.filter(|a| a.topology_id == record.id) else {
        return fresh_assignment(config, record, free);
    };
    let executors = executors_of(record);
    let placed = scheduler::rebalance(&from_workers(&current.workers), &executors, record.num_workers as usize, free)?;
    Ok(Assignment {
        workers: to_workers(placed, &executors),
        assigned_at: unix_secs(),
        fence_secs: fence_secs(config),
        ..current.clone()
    })
}

async fn monitor_once(shared: &Shared) -> Result<(), ClusterError> {
    let state = &shared.state;
    let records = state.topologies().await?;
    let supervisors = state.supervisors().await?;
    let mut assignments = state.assignments().await?;
    let now = Instant::now();
    {
        let mut memory = shared.memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.beats.round(now);
        memory.supervisors.round(now);
        memory.rounds += 1;
        let round = memory.rounds;
        let known: Vec<String> = assignments
            .values()
            .flat_map(|a| a.workers.iter().map(|w| w.supervisor_id.clone()))
            .chain(supervisors.keys().cloned())
            .collect();
        for id in known {
            memory.supervisors.observe(&id, supervisors.contains_key(&id).then_some(round));
        }
    }
    // Assignments whose topology is gone.
    for name in assignments.keys().filter(|n| !records.contains_key(*n)).cloned().collect::<Vec<_>>() {
        state.delete_assignment(&name).await?;
        assignments.remove(&name);
    }
    // The heartbeats of every assigned topology, read together rather than one topology after
    // another: a round over many topologies takes a few round trips.
    let watched: Vec<String> = records
        .values()
        .filter(|r| {
            r.status != TopologyStatus::Killed && assignments.get(&r.name).is_some_and(|a| a.topology_id == r.id)
        })
        .map(|r| r.name.clone())
        .collect();
    let beats_of: BTreeMap<String, BTreeMap<String, WorkerHeartbeat>> = futures_util::stream::iter(watched)
        .map(|name| async move {
            let beats = state.worker_heartbeats(&name).await?;
            Ok::<_, ClusterError>((name, beats))
        })
        .buffer_unordered(HEARTBEAT_READS_IN_FLIGHT)
        .try_collect()
        .await?;
    let mut fresh: Vec<(String, Assignment)> = Vec::new();
    for (name, record) in &records {
        if record.status == TopologyStatus::Killed {
            let wait = Duration::from_secs(record.kill_wait_secs.unwrap_or(0).into());
            let started =
                *shared.memory.lock().unwrap_or_else(|e| e.into_inner()).killed_at.entry(name.clone()).or_insert(now);
            if now.duration_since(started) >= wait {
                tracing::info!(topology = %name, "removing killed topology");
                state.remove_topology_state(name).await?;
                shared.reports.forget(name);
                assignments.remove(name);
                shared.memory.lock().unwrap_or_else(|e| e.into_inner()).killed_at.remove(name);
            }
            continue;
        }
        let current = assignments.get(name).filter(|a| a.topology_id == record.id).cloned();
        let Some(current) = current else {
            let free = free_slots(&supervisors, &assignments, Some(name));
            match fresh_assignment(&shared.config, record, &free) {
                Ok(assignment) => {
                    // Its slots are taken from now on; it is written with the others below.
                    assignments.insert(name.clone(), assignment.clone());
                    fresh.push((name.clone(), assignment));
                }
                Err(waiting) => set_reason(state, record, Some(waiting.to_string())).await?,
            }
            continue;
        };
        let Some(beats) = beats_of.get(name) else { continue };
        remove_stale_heartbeats(state, name, record, &current, beats).await?;
        let dead = dead_slots(shared, name, record, &current, &supervisors, beats, now);
        if dead.is_empty() {
            continue;
        }
        let free = free_slots(&supervisors, &assignments, None);
        match scheduler::repair(&from_workers(&current.workers), &dead, &free) {
            Ok(repaired) => {
                let moved: Vec<String> = dead.iter().map(|s| format!("{}:{}", s.supervisor, s.port)).collect();
                let workers = to_workers(repaired, &executors_of(record));
                let fence_secs = fence_secs(&shared.config);
                let assignment = Assignment { workers, assigned_at: unix_secs(), fence_secs, ..current };
                let written = state.put_assignment(name, &assignment).await?;
                tracing::warn!(topology = %name, ?moved, version = written.version, "reassigned the tasks of dead workers");
                assignments.insert(name.clone(), written);
            }
            Err(waiting) => set_reason(state, record, Some(format!("workers died and {waiting}"))).await?,
        }
    }
    // New assignments are written together: ZooKeeper commits concurrent writes in one log
    // sync, so a burst of submissions is assigned in a few syncs instead of one each.
    let written: Vec<(String, Assignment)> = futures_util::stream::iter(fresh)
        .map(|(name, assignment)| async move {
            let written = state.put_assignment(&name, &assignment).await?;
            Ok::<_, ClusterError>((name, written))
        })
        .buffer_unordered(ASSIGNMENT_WRITES_IN_FLIGHT)
        .try_collect()
        .await?;
    for (name, written) in written {
        tracing::info!(topology = %name, version = written.version, workers = written.workers.len(), "assigned topology");
        if let Some(record) = records.get(&name) {
            set_reason(state, record, None).await?;
        }
    }
    Ok(())
}

/// Sets why `record`'s topology waits, when that changed since the round read it.
async fn set_reason(state: &ClusterState, record: &TopologyRecord, reason: Option<String>) -> Result<(), ClusterError> {
    if record.status_reason == reason {
        return Ok(());
    }
    state.update_topology(&record.name, |r| r.status_reason = reason.clone()).await?;
    Ok(())
}

/// Deletes the heartbeats of workers the assignment no longer has (a rebalance or a repair
/// moved them), so nothing counts them; a worker that stops deletes its own.
async fn remove_stale_heartbeats(
    state: &ClusterState,
    name: &str,
    record: &TopologyRecord,
    assignment: &Assignment,
    beats: &BTreeMap<String, WorkerHeartbeat>,
) -> Result<(), ClusterError> {
    for (key, beat) in beats {
        let assigned = assignment.workers.iter().any(|w| w.supervisor_id == beat.supervisor_id && w.port == beat.port);
        if assigned && beat.topology_id == record.id {
            continue;
        }
        tracing::info!(topology = %name, worker = %key, "removing the heartbeat of a worker that is no longer assigned");
        state.delete_worker_heartbeat(name, &beat.supervisor_id, beat.port).await?;
    }
    Ok(())
}

/// The slots of `assignment` whose worker is dead: its heartbeat has been silent for
/// `nimbus.task.timeout.secs`, after `nimbus.task.launch.secs` of grace for new work (no grace
/// once its supervisor has been gone for `nimbus.supervisor.timeout.secs`). Silence is counted
/// only while ZooKeeper can be read, so an outage moves nothing; and it is always longer than
/// the worker's fencing timeout, so its spouts are off before its tasks move.
fn dead_slots(
    shared: &Shared,
    name: &str,
    record: &TopologyRecord,
    assignment: &Assignment,
    supervisors: &BTreeMap<String, SupervisorInfo>,
    beats: &BTreeMap<String, WorkerHeartbeat>,
    now: Instant,
) -> BTreeSet<Slot> {
    let config = &shared.config;
    let mut memory = shared.memory.lock().unwrap_or_else(|e| e.into_inner());
    let mut dead = BTreeSet::new();
    for w in &assignment.workers {
        let slot = Slot { supervisor: w.supervisor_id.clone(), host: w.host.clone(), port: w.port };
        let assigned = *memory.assigned_at.entry((name.to_owned(), w.clone())).or_insert(now);
        let beat = beats.get(&squall_cluster::paths::worker_key(&w.supervisor_id, w.port));
        let marker = beat.filter(|b| b.topology_id == record.id && b.tasks == w.tasks).map(|b| b.time_millis);
        let silent = memory.beats.observe(&(name.to_owned(), w.supervisor_id.clone(), w.port), marker);
        let supervisor_gone = !supervisors.contains_key(&w.supervisor_id)
            && memory.supervisors.silent(&w.supervisor_id).is_some_and(|gone| gone >= config.supervisor_timeout);
        if now.duration_since(assigned) < config.task_launch && !supervisor_gone {
            continue;
        }
        if silent >= config.task_timeout {
            dead.insert(slot);
        }
    }
    let live: std::collections::HashSet<&WorkerAssignment> = assignment.workers.iter().collect();
    memory.assigned_at.retain(|(topology, w), _| topology != name || live.contains(w));
    dead
}

/// The summary of a topology as `list` shows it.
pub(crate) fn summary(
    record: &TopologyRecord,
    assignment: Option<&Assignment>,
    beats: &BTreeMap<String, WorkerHeartbeat>,
    task_timeout: Duration,
) -> TopologySummary {
    let running = assignment.map_or(0, |a| {
        a.workers
            .iter()
            .filter(|w| heartbeat_age(record, w, beats).is_some_and(|age| age < task_timeout.as_millis() as u64))
            .count()
    });
    let tasks = assignment.map_or(0, |a| a.workers.iter().map(|w| w.tasks.len()).sum::<usize>());
    TopologySummary {
        name: record.name.clone(),
        id: record.id.clone(),
        status: match record.status {
            TopologyStatus::Active => "active",
            TopologyStatus::Inactive => "inactive",
            TopologyStatus::Killed => "killed",
            TopologyStatus::Rebalancing => "rebalancing",
        }
        .to_owned(),
        workers: record.num_workers,
        workers_running: running as u32,
        tasks: tasks as u32,
        uptime_secs: unix_secs().saturating_sub(record.submitted_at),
        reason: record.status_reason.clone(),
    }
}

/// Milliseconds since the worker in `w`'s slot last heartbeated for this topology.
pub(crate) fn heartbeat_age(
    record: &TopologyRecord,
    w: &WorkerAssignment,
    beats: &BTreeMap<String, WorkerHeartbeat>,
) -> Option<u64> {
    let beat = current_beat(record, w, beats)?;
    Some(unix_millis().saturating_sub(beat.time_millis))
}

/// The heartbeat of the worker that runs `w` now: one from an earlier worker on the slot (other
/// tasks, or another submission) is not its.
pub(crate) fn current_beat<'a>(
    record: &TopologyRecord,
    w: &WorkerAssignment,
    beats: &'a BTreeMap<String, WorkerHeartbeat>,
) -> Option<&'a WorkerHeartbeat> {
    let beat = beats.get(&squall_cluster::paths::worker_key(&w.supervisor_id, w.port))?;
    (beat.topology_id == record.id && beat.tasks == w.tasks).then_some(beat)
}

/// The workers of a topology with their heartbeat ages.
pub(crate) fn worker_details(
    record: &TopologyRecord,
    assignment: Option<&Assignment>,
    beats: &BTreeMap<String, WorkerHeartbeat>,
) -> Vec<WorkerDetails> {
    assignment
        .map(|a| {
            a.workers
                .iter()
                .map(|w| WorkerDetails {
                    supervisor: w.supervisor_id.clone(),
                    host: w.host.clone(),
                    port: w.port,
                    tasks: w.tasks.clone(),
                    heartbeat_age_ms: heartbeat_age(record, w, beats),
                    rss_bytes: None,
                    cpu_seconds: None,
                    log_url: None,
                    transport: None,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supervisor(id: &str, ports: &[u16]) -> (String, SupervisorInfo) {
        let info = SupervisorInfo {
            id: id.into(),
            host: "127.0.0.1".into(),
            ports: ports.to_vec(),
            started_at: 0,
            version: String::new(),
            logviewer_port: None,
        };
        (id.into(), info)
    }

    fn ports(free: &BTreeMap<String, Vec<Slot>>, supervisor: &str) -> Vec<u16> {
        free[supervisor].iter().map(|s| s.port).collect()
    }

    #[test]
    fn an_address_two_supervisors_offer_is_one_slot() {
        let supervisors = BTreeMap::from([supervisor("a", &[7000, 7001]), supervisor("b", &[7001, 7002])]);
        let free = free_slots(&supervisors, &BTreeMap::new(), None);
        assert_eq!(ports(&free, "a"), [7000, 7001]);
        assert_eq!(ports(&free, "b"), [7002]);
    }

    #[test]
    fn an_address_in_use_is_not_free_on_another_supervisor() {
        let supervisors = BTreeMap::from([supervisor("a", &[7000, 7001]), supervisor("b", &[7001, 7002])]);
        let worker = WorkerAssignment {
            supervisor_id: "b".into(),
            host: "127.0.0.1".into(),
            port: 7001,
            tasks: vec![1],
            layout: 0,
        };
        let assignment = Assignment {
            topology_id: "t-1-0".into(),
            version: 1,
            artifact_hash: String::new(),
            workers: vec![worker],
            assigned_at: 0,
            fence_secs: 0,
        };
        let assignments = BTreeMap::from([("t".to_owned(), assignment)]);
        let free = free_slots(&supervisors, &assignments, None);
        assert_eq!(ports(&free, "a"), [7000]);
        assert_eq!(ports(&free, "b"), [7002]);
        // Rebalancing `t` itself may reuse its own slots.
        let free = free_slots(&supervisors, &assignments, Some("t"));
        assert_eq!(ports(&free, "a"), [7000, 7001]);
        assert_eq!(ports(&free, "b"), [7002]);
    }
}
