//! The supervisor: a node daemon that registers its worker slots in ZooKeeper, watches the
//! assignments, downloads topology binaries from Nimbus (checking their hash), and keeps exactly
//! the assigned worker processes running: it starts them, restarts those that exit or stop
//! heartbeating, and kills those no longer assigned.

pub mod logviewer;
pub mod process;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use squall_cluster::records::unix_secs;
use squall_cluster::{ClusterError, ClusterState, LeaderElection, Liveness, SupervisorInfo, TopologyStatus};

use crate::process::{WorkerEnv, WorkerLaunch, WorkerProcess};

/// How a supervisor runs; the timeouts carry Storm's names and defaults.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Its id, stable across restarts.
    pub id: String,
    /// The host its workers advertise.
    pub host: String,
    /// `supervisor.slots.ports`.
    pub ports: Vec<u16>,
    /// Where artifacts, worker logs and worker pids live.
    pub local_dir: PathBuf,
    /// ZooKeeper servers.
    pub zookeeper: String,
    /// The cluster's chroot.
    pub chroot: String,
    /// ZooKeeper session timeout.
    pub session_timeout: Duration,
    /// `supervisor.worker.timeout.secs` (30): a worker silent this long is restarted.
    pub worker_timeout: Duration,
    /// `supervisor.worker.start.timeout.secs` (120): grace for a new worker's first heartbeat.
    pub worker_start_timeout: Duration,
    /// How often it reconciles workers with assignments.
    pub monitor_freq: Duration,
    /// The logviewer's port on `host` (0: any free one; it is registered in ZooKeeper).
    pub logviewer_port: u16,
}

/// Why a supervisor stopped.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// ZooKeeper failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The local directory failed.
    #[error("supervisor directory {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Runs a supervisor until `shutdown` completes. Its workers are left running, as Storm's are:
/// a restarted supervisor finds them through their pid files and kills them.
pub async fn run(config: SupervisorConfig, shutdown: impl Future<Output = ()>) -> Result<(), SupervisorError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SupervisorError::Io { path, source }
    };
    for dir in ["artifacts", "workers", "pids"] {
        let path = config.local_dir.join(dir);
        std::fs::create_dir_all(&path).map_err(io(&path))?;
    }
    kill_orphans(&config.local_dir.join("pids"));
    let state = ClusterState::connect(&config.zookeeper, &config.chroot, config.session_timeout).await?;
    let logviewer = tokio::net::TcpListener::bind((config.host.as_str(), config.logviewer_port))
        .await
        .map_err(io(Path::new(&format!("logviewer port {}:{}", config.host, config.logviewer_port))))?;
    let logviewer_port = logviewer.local_addr().map_err(io(Path::new("logviewer")))?.port();
    let app = logviewer::router(config.local_dir.join("workers"));
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(logviewer, app).await {
            tracing::error!(error = %e, "logviewer stopped");
        }
    });
    let info = SupervisorInfo {
        id: config.id.clone(),
        host: config.host.clone(),
        ports: config.ports.clone(),
        started_at: unix_secs(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        logviewer_port: Some(logviewer_port),
    };
    state.register_supervisor(&info).await?;
    tracing::info!(supervisor = %config.id, ports = ?config.ports, logviewer_port, "supervisor started");
    let mut assignments = state.watch_assignments().await?;
    let mut supervisor = Supervisor { config, state, workers: BTreeMap::new(), beats: Liveness::new() };
    tokio::pin!(shutdown);
    loop {
        if let Err(e) = supervisor.reconcile().await {
            // Time without ZooKeeper does not count as a worker's silence.
            supervisor.beats.failed();
            tracing::warn!(error = %e, "supervisor round failed; retrying");
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = assignments.changed() => {}
            _ = tokio::time::sleep(supervisor.config.monitor_freq) => {}
        }
    }
    supervisor.state.unregister_supervisor(&supervisor.config.id).await.ok();
    supervisor.state.close().await;
    server.abort();
    Ok(())
}

struct Supervisor {
    config: SupervisorConfig,
    state: ClusterState,
    /// The running worker of each port.
    workers: BTreeMap<u16, WorkerProcess>,
    /// Heartbeat silence of each port's worker, on a clock that stops while ZooKeeper is away.
    beats: Liveness<u16>,
}

impl Supervisor {
    /// Makes the running workers match the assignments.
    async fn reconcile(&mut self) -> Result<(), ClusterError> {
        let assignments = self.state.assignments().await?;
        let topologies = self.state.topologies().await?;
        let mut beats_of = BTreeMap::new();
        for worker in self.workers.values() {
            let topology = &worker.launch.topology;
            if !beats_of.contains_key(topology) {
                beats_of.insert(topology.clone(), self.state.worker_heartbeats(topology).await?);
            }
        }
        self.beats.round(std::time::Instant::now());
        let mut wanted: BTreeMap<u16, WorkerLaunch> = BTreeMap::new();
        for (name, assignment) in &assignments {
            let Some(record) = topologies.get(name).filter(|r| r.id == assignment.topology_id) else { continue };
            for w in assignment.workers_on(&self.config.id) {
                wanted.insert(
                    w.port,
                    WorkerLaunch {
                        topology: name.clone(),
                        topology_id: record.id.clone(),
                        tasks: w.tasks.clone(),
                        layout: w.layout,
                        artifact: assignment.artifact_hash.clone(),
                        port: w.port,
                    },
                );
            }
        }
        // Workers no longer assigned, or assigned something else: stop them.
        let stale: Vec<u16> =
            self.workers.iter().filter(|(port, w)| wanted.get(port) != Some(&w.launch)).map(|(p, _)| *p).collect();
        for port in stale {
            if let Some(worker) = self.workers.remove(&port) {
                let killed = topologies.get(&worker.launch.topology).is_none_or(|r| r.status == TopologyStatus::Killed);
                tracing::info!(port, topology = %worker.launch.topology, killed, "stopping a worker that is no longer assigned");
                self.forget_pid(port);
                worker.kill().await;
            }
        }
        // Running workers that exited or went silent: restart them.
        let mut restart = Vec::new();
        for (port, worker) in &mut self.workers {
            if let Some(status) = worker.exited() {
                tracing::warn!(port, topology = %worker.launch.topology, %status, log = %worker.log.display(), "worker exited; restarting it");
                restart.push(*port);
                continue;
            }
            let key = squall_cluster::paths::worker_key(&self.config.id, *port);
            let marker = beats_of
                .get(&worker.launch.topology)
                .and_then(|beats| beats.get(&key))
                .filter(|b| b.topology_id == worker.launch.topology_id && Some(b.pid) == worker.pid())
                .map(|b| b.time_millis);
            worker.beaten |= marker.is_some();
            let silent = self.beats.observe(port, marker);
            let limit = if worker.beaten { self.config.worker_timeout } else { self.config.worker_start_timeout };
            if silent > limit {
                tracing::warn!(port, topology = %worker.launch.topology, silent = ?silent, "worker stopped heartbeating; restarting it");
                restart.push(*port);
            }
        }
        for port in restart {
            if let Some(worker) = self.workers.remove(&port) {
                worker.kill().await;
            }
        }
        let running: Vec<u16> = self.workers.keys().copied().collect();
        self.beats.retain(|port| running.contains(port));
        // Assigned workers that are not running: start them.
        for (port, launch) in wanted {
            if self.workers.contains_key(&port) {
                continue;
            }
            let binary = match self.artifact(&launch.artifact).await {
                Ok(binary) => binary,
                Err(e) => {
                    tracing::warn!(topology = %launch.topology, artifact = %launch.artifact, error = %e, "cannot fetch the topology binary; will retry");
                    continue;
                }
            };
            let env = WorkerEnv {
                zookeeper: self.config.zookeeper.clone(),
                chroot: self.config.chroot.clone(),
                supervisor: self.config.id.clone(),
                host: self.config.host.clone(),
            };
            match WorkerProcess::start(&binary, launch.clone(), &env, &self.config.local_dir.join("workers")) {
                Ok(worker) => {
                    self.remember_pid(port, worker.pid());
                    self.workers.insert(port, worker);
                }
                Err(e) => tracing::error!(topology = %launch.topology, port, error = %e, "cannot start worker"),
            }
        }
        Ok(())
    }

    /// The local path of an artifact, downloading it from a Nimbus that holds it (the leader
    /// first) and checking its hash.
    async fn artifact(&self, hash: &str) -> Result<PathBuf, String> {
        let path = self.config.local_dir.join("artifacts").join(hash);
        if path.is_file() {
            return Ok(path);
        }
        let leader = LeaderElection::current_leader(&self.state).await.map_err(|e| e.to_string())?;
        let mut holders = self.state.artifact_holders(hash).await.map_err(|e| e.to_string())?;
        holders.sort_by_key(|h| Some(h) != leader.as_ref());
        let mut last = "no nimbus holds it".to_owned();
        for holder in holders {
            let client = squall_nimbus_client(&holder);
            let (from, h) = (holder.clone(), hash.to_owned());
            let bytes = match tokio::task::spawn_blocking(move || client.download(&from, &h)).await {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(e)) => {
                    last = e.to_string();
                    continue;
                }
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let actual = squall_nimbus::artifacts::hash_of(&bytes);
            if actual != hash {
                last = format!("{holder} sent bytes hashing to {actual}");
                continue;
            }
            let tmp = path.with_extension("part");
            std::fs::write(&tmp, &bytes).map_err(|e| e.to_string())?;
            make_executable(&tmp).map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, &path).map_err(|e| e.to_string())?;
            tracing::info!(artifact = %hash, from = %holder, size = bytes.len(), "downloaded topology binary");
            return Ok(path);
        }
        Err(last)
    }

    fn pid_file(&self, port: u16) -> PathBuf {
        self.config.local_dir.join("pids").join(port.to_string())
    }

    fn remember_pid(&self, port: u16, pid: Option<u32>) {
        if let Some(pid) = pid
            && let Err(e) = std::fs::write(self.pid_file(port), pid.to_string())
        {
            tracing::warn!(port, error = %e, "cannot record a worker pid");
        }
    }

    fn forget_pid(&self, port: u16) {
        let _ = std::fs::remove_file(self.pid_file(port));
    }
}

fn squall_nimbus_client(address: &str) -> squall_nimbus::client::NimbusClient {
    squall_nimbus::client::NimbusClient::new(vec![address.to_owned()], Duration::from_secs(300))
}

fn make_executable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

/// Kills workers a previous run of this supervisor left behind (their ports are needed).
fn kill_orphans(pids: &Path) {
    let Ok(entries) = std::fs::read_dir(pids) else { return };
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else { continue };
        if let Ok(pid) = text.trim().parse::<i32>() {
            tracing::info!(pid, "killing a worker left by a previous supervisor run");
            let _ = std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
        let _ = std::fs::remove_file(entry.path());
    }
}
