//! Worker mode: a supervisor starts the topology binary as `worker …` for one slot of one
//! assignment. The worker rebuilds the topology from the same compiled code, runs its tasks,
//! connects to the other workers, heartbeats to ZooKeeper, sends its metrics to the Nimbus
//! leader over HTTP, and follows the topology's status.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use squall_cluster::records::unix_millis;
use squall_cluster::{
    Assignment, ClusterState, TopologyRecord, TopologyStatus as ClusterStatus, WorkerAssignment, WorkerHeartbeat,
    WorkerMetricsReport, ZooKeeperStore,
};
use squall_topology::{ConfigValue, Topology};
use squall_worker::runtime::{LaunchError, WorkerPlan};
use squall_worker::{RunningTopology, TopologyStatus};

use crate::app::AppError;
use crate::report::{MetricsReporter, process_usage};

/// `worker` arguments, as the supervisor passes them.
#[derive(Args, Debug, Clone)]
pub(crate) struct WorkerArgs {
    /// ZooKeeper servers.
    #[arg(long)]
    zookeeper: String,
    /// The cluster's chroot.
    #[arg(long, default_value = "/squall")]
    chroot: String,
    /// The topology's name.
    #[arg(long)]
    topology: String,
    /// The topology's id (a resubmission under the same name has another).
    #[arg(long)]
    topology_id: String,
    /// The supervisor that started this worker.
    #[arg(long)]
    supervisor: String,
    /// The host to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The slot's port.
    #[arg(long)]
    port: u16,
}

/// Follows the log filter set on the topology (`squall set-log-level`): a new one takes over,
/// a reset or lapsed one gives the worker its own filter back.
fn follow_log_filter(record: &TopologyRecord, current: &mut Option<String>) {
    let now = squall_cluster::records::unix_secs();
    let wanted =
        record.log_filter.as_ref().filter(|f| f.until.is_none_or(|until| until > now)).map(|f| f.filter.clone());
    if wanted == *current {
        return;
    }
    match crate::app::set_log_filter(wanted.as_deref()) {
        Ok(filter) => {
            tracing::info!(filter, "log filter changed");
            *current = wanted;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot change the log filter");
            *current = wanted;
        }
    }
}

/// How often a worker heartbeats and re-reads its topology's status
/// (`worker.heartbeat.frequency.secs`).
const HEARTBEAT: Duration = Duration::from_secs(1);

/// The longest one round of ZooKeeper calls may take: fencing and the orphan check must run on
/// time even while ZooKeeper hangs (a round that times out is followed by no sleep, so the
/// fence is checked at least every 1.5 s).
const ROUND_LIMIT: Duration = Duration::from_millis(1500);

/// The fencing timeout when the assignment does not say (an assignment from an older Nimbus).
const DEFAULT_FENCE: Duration = Duration::from_secs(20);

/// A worker whose supervisor is gone and that cannot heartbeat this long has lost its cluster
/// (the cluster was shut down, or its node is cut off): it stops rather than run on as an
/// orphan. With its supervisor alive it stays, fenced, until ZooKeeper answers again.
const ORPHAN_AFTER: Duration = Duration::from_secs(30);

/// Why a worker stops.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkerError {
    /// ZooKeeper failed.
    #[error(transparent)]
    Cluster(#[from] squall_cluster::ClusterError),
    /// The topology or this worker's slot is gone.
    #[error("{0}")]
    NotAssigned(String),
    /// The assignment cannot run.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The port is taken.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// The error.
        source: std::io::Error,
    },
    /// A rebalance asked for an impossible parallelism.
    #[error("cannot apply the topology's rebalance: {0}")]
    Rebalance(squall_topology::BuildError),
}

pub(crate) async fn run(args: WorkerArgs, mut topology: Topology) -> Result<(), AppError> {
    run_worker(args, &mut topology).await.map_err(|e| AppError::Worker(Box::new(e)))
}

async fn run_worker(args: WorkerArgs, topology: &mut Topology) -> Result<(), WorkerError> {
    let started = Instant::now();
    let supervisor_pid = std::os::unix::process::parent_id();
    let state = ClusterState::connect(&args.zookeeper, &args.chroot, Duration::from_secs(10)).await?;
    let name = args.topology.as_str();
    let record = current_record(&state, &args).await?;
    let mut assignment = current_assignment(&state, &args).await?;
    apply_record(topology, &record)?;
    let mine = my_slot(&assignment, &args)?.clone();
    let local_tasks: HashSet<u32> = mine.tasks.iter().copied().collect();
    let listener = bind(&args.host, args.port).await?;
    let plan = WorkerPlan {
        // Not the assignment version: workers of one layout accept each other across versions,
        // so a repair that keeps a worker does not cut it off from the new ones.
        topology_id: record.id.clone(),
        local_tasks,
        remote: remote_tasks(&assignment, &args)?,
        listener,
        advertised_addr: Some(resolve(&mine.host, mine.port)?),
        store: Some(Arc::new(ZooKeeperStore::new(state.clone(), name))),
    };
    let mut running = RunningTopology::launch_worker(name, topology, status_of(record.status), plan)?;
    tracing::info!(topology = name, port = args.port, tasks = ?mine.tasks, version = assignment.version, "worker running");
    let fence_after = match assignment.fence_secs {
        0 => DEFAULT_FENCE,
        secs => Duration::from_secs(secs.into()),
    };
    let mut kill_deadline: Option<Instant> = None;
    let mut last_beat = Instant::now();
    let mut fenced = false;
    let mut wanted = status_of(record.status);
    // Rounds in a row whose heartbeat failed: an outage is logged at first and then now and then.
    let mut failed_rounds = 0u32;
    let mut reporter = MetricsReporter::new();
    // The topology's log filter in force (`squall set-log-level`), if any.
    let mut log_filter: Option<String> = None;
    loop {
        let loud = failed_rounds < 3 || failed_rounds.is_multiple_of(30);
        let beat_before = last_beat;
        let round = async {
            let beat = WorkerHeartbeat {
                topology_id: record.id.clone(),
                supervisor_id: args.supervisor.clone(),
                port: args.port,
                pid: std::process::id(),
                tasks: mine.tasks.clone(),
                time_millis: unix_millis(),
                uptime_secs: started.elapsed().as_secs(),
                metrics: serde_json::Value::Null,
            };
            let (rss_bytes, cpu_seconds) = process_usage();
            let report = WorkerMetricsReport {
                topology: name.to_owned(),
                topology_id: record.id.clone(),
                supervisor_id: args.supervisor.clone(),
                port: args.port,
                tasks: mine.tasks.clone(),
                time_millis: beat.time_millis,
                metrics: serde_json::to_value(running.metrics()).unwrap_or_default(),
                rss_bytes,
                cpu_seconds,
            };
            reporter.report(&state, &report).await;
            match state.put_worker_heartbeat(name, &beat).await {
                Ok(()) => {
                    last_beat = Instant::now();
                    if fenced {
                        fenced = false;
                        tracing::info!(topology = name, "heartbeat written again; lifting the fence");
                        if kill_deadline.is_none() {
                            running.set_status(wanted);
                        }
                    }
                }
                Err(e) if loud => tracing::warn!(error = %e, silent = ?last_beat.elapsed(), "cannot write heartbeat"),
                Err(e) => tracing::debug!(error = %e, silent = ?last_beat.elapsed(), "cannot write heartbeat"),
            }
            match state.topology(name).await {
                Ok(Some(r)) if r.id == record.id => {
                    follow_log_filter(&r, &mut log_filter);
                    match r.status {
                        ClusterStatus::Killed => {
                            if kill_deadline.is_none() {
                                let wait = Duration::from_secs(r.kill_wait_secs.unwrap_or(0).into());
                                tracing::info!(topology = name, ?wait, "topology killed; draining");
                                running.set_status(TopologyStatus::Killing);
                                kill_deadline = Some(Instant::now() + wait);
                            }
                        }
                        status => {
                            wanted = status_of(status);
                            if !fenced && kill_deadline.is_none() {
                                running.set_status(wanted);
                            }
                        }
                    }
                }
                Ok(_) => return Some("the topology is gone".to_owned()),
                Err(e) if loud => tracing::warn!(error = %e, "cannot read the topology's status"),
                Err(e) => tracing::debug!(error = %e, "cannot read the topology's status"),
            }
            match state.assignment(name).await {
                Ok(Some(a)) if a.version == assignment.version => None,
                Ok(Some(a)) if a.topology_id == record.id => {
                    let kept = a.workers.iter().find(|w| w.supervisor_id == args.supervisor && w.port == args.port);
                    if !kept.is_some_and(|w| w.same_work(&mine)) {
                        return Some(format!("assignment version {} gives this slot other work", a.version));
                    }
                    let update = remote_tasks(&a, &args).and_then(|remote| Ok(running.update_peers(remote)?));
                    match update {
                        Ok(update) => {
                            tracing::info!(
                                topology = name,
                                version = a.version,
                                moved_tasks = update.moved_tasks,
                                lanes_added = update.lanes_added,
                                lanes_closed = update.lanes_closed,
                                "assignment changed; this worker keeps its tasks and follows its peers"
                            );
                            assignment = a;
                            None
                        }
                        Err(e) => Some(format!("cannot follow assignment version {}: {e}", a.version)),
                    }
                }
                Ok(_) => Some("the topology has no assignment for this submission".to_owned()),
                Err(e) => {
                    if loud {
                        tracing::warn!(error = %e, "cannot read the assignment");
                    }
                    None
                }
            }
        };
        let finished = match tokio::time::timeout(ROUND_LIMIT, round).await {
            Ok(Some(reason)) => {
                tracing::info!(topology = name, reason, "stopping; the supervisor starts what the assignment needs");
                break;
            }
            Ok(None) => true,
            Err(_) => false,
        };
        failed_rounds = if last_beat > beat_before { 0 } else { failed_rounds.saturating_add(1) };
        let silent = last_beat.elapsed();
        if silent > fence_after && !fenced && kill_deadline.is_none() {
            fenced = true;
            running.set_status(TopologyStatus::Inactive);
            tracing::warn!(
                topology = name,
                silent = ?silent,
                fence = ?fence_after,
                "cut off from zookeeper: deactivating spouts before nimbus can move these tasks (fenced)"
            );
        }
        if silent > ORPHAN_AFTER && std::os::unix::process::parent_id() != supervisor_pid {
            tracing::error!(topology = name, silent = ?silent, "supervisor gone and zookeeper unreachable; stopping");
            break;
        }
        if kill_deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if finished {
            tokio::time::sleep(HEARTBEAT).await;
        }
    }
    running.set_status(TopologyStatus::Killing);
    if !running.join(Duration::from_secs(2)).await {
        running.set_status(TopologyStatus::Stopped);
        running.join(Duration::from_secs(5)).await;
    }
    let _ = running.finish().await;
    let goodbye = async {
        let _ = state.delete_worker_heartbeat(name, &args.supervisor, args.port).await;
        state.close().await;
    };
    let _ = tokio::time::timeout(ROUND_LIMIT, goodbye).await;
    tracing::info!(topology = name, uptime_secs = started.elapsed().as_secs(), "worker stopped");
    Ok(())
}

/// This worker's slot in `assignment`.
fn my_slot<'a>(assignment: &'a Assignment, args: &WorkerArgs) -> Result<&'a WorkerAssignment, WorkerError> {
    assignment.workers.iter().find(|w| w.supervisor_id == args.supervisor && w.port == args.port).ok_or_else(|| {
        WorkerError::NotAssigned(format!(
            "slot {}:{} is not in the assignment of `{}`",
            args.supervisor, args.port, args.topology
        ))
    })
}

/// Where every task of the other workers of `assignment` runs.
fn remote_tasks(assignment: &Assignment, args: &WorkerArgs) -> Result<HashMap<u32, SocketAddr>, WorkerError> {
    let mut remote = HashMap::new();
    for w in assignment.workers.iter().filter(|w| !(w.supervisor_id == args.supervisor && w.port == args.port)) {
        let address = resolve(&w.host, w.port)?;
        for task in &w.tasks {
            remote.insert(*task, address);
        }
    }
    Ok(remote)
}

async fn current_record(state: &ClusterState, args: &WorkerArgs) -> Result<TopologyRecord, WorkerError> {
    state.topology(&args.topology).await?.filter(|r| r.id == args.topology_id).ok_or_else(|| {
        WorkerError::NotAssigned(format!("topology `{}` ({}) is no longer submitted", args.topology, args.topology_id))
    })
}

async fn current_assignment(state: &ClusterState, args: &WorkerArgs) -> Result<Assignment, WorkerError> {
    state.assignment(&args.topology).await?.filter(|a| a.topology_id == args.topology_id).ok_or_else(|| {
        WorkerError::NotAssigned(format!("topology `{}` ({}) has no assignment", args.topology, args.topology_id))
    })
}

/// Applies what Nimbus knows and the binary does not: `-c` overrides, the number of workers,
/// rebalanced parallelism.
fn apply_record(topology: &mut Topology, record: &TopologyRecord) -> Result<(), WorkerError> {
    let config = topology.config_mut();
    // Chaining as the submitted spec had it (its default may come from the environment), so
    // every worker routes as Nimbus placed: the same in every process of the topology.
    if let Some(ConfigValue::Bool(chaining)) = record.spec.config.get(squall_topology::Config::CHAINING) {
        config.chaining = *chaining;
    }
    for (key, value) in &record.config {
        let applied = match value {
            ConfigValue::Str(text) => config.set_text(key, text).map(|_| ()),
            other => config.set(key, other.clone()).map(|_| ()),
        };
        if let Err(e) = applied {
            tracing::warn!(key = %key, error = %e, "ignoring a config override the binary does not accept");
        }
    }
    config.workers = record.num_workers.max(1);
    for (component, parallelism) in &record.parallelism {
        topology.set_parallelism(component, *parallelism).map_err(WorkerError::Rebalance)?;
    }
    Ok(())
}

fn status_of(status: ClusterStatus) -> TopologyStatus {
    match status {
        ClusterStatus::Active => TopologyStatus::Active,
        ClusterStatus::Inactive | ClusterStatus::Rebalancing => TopologyStatus::Inactive,
        ClusterStatus::Killed => TopologyStatus::Killing,
    }
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, WorkerError> {
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| WorkerError::NotAssigned(format!("cannot resolve worker address {host}:{port}")))
}

/// Binds the slot's port, retrying briefly: the previous worker on it may still be exiting.
async fn bind(host: &str, port: u16) -> Result<tokio::net::TcpListener, WorkerError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpListener::bind((host, port)).await {
            Ok(listener) => return Ok(listener),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(port, error = %e, "port busy; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(source) => return Err(WorkerError::Bind { address: format!("{host}:{port}"), source }),
        }
    }
}
