//! Worker processes: the topology binary started in worker mode, its output in its own log file.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use tokio::process::{Child, Command};

/// What a worker process runs: one slot of one topology's assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerLaunch {
    /// The topology's name.
    pub topology: String,
    /// The topology's unique id (a resubmission under the same name gets a new one).
    pub topology_id: String,
    /// The tasks it runs: a new assignment that gives the slot other tasks restarts the worker;
    /// one that only moves other workers does not.
    pub tasks: Vec<u32>,
    /// The slot's layout stamp (see `WorkerAssignment::layout`).
    pub layout: u64,
    /// The binary's hash.
    pub artifact: String,
    /// The port it serves.
    pub port: u16,
}

/// A running worker process.
#[derive(Debug)]
pub struct WorkerProcess {
    /// What it runs.
    pub launch: WorkerLaunch,
    /// When it was started.
    pub started_at: Instant,
    /// Whether it has heartbeated yet: until then the start timeout applies.
    pub beaten: bool,
    /// Where its output goes.
    pub log: PathBuf,
    child: Child,
}

/// A worker that could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The log file could not be opened.
    #[error("cannot open worker log {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The binary did not start.
    #[error("cannot start worker binary {path}: {source}")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// How a worker finds the cluster.
#[derive(Debug, Clone)]
pub struct WorkerEnv {
    /// ZooKeeper servers.
    pub zookeeper: String,
    /// The cluster's chroot.
    pub chroot: String,
    /// This supervisor's id.
    pub supervisor: String,
    /// The host workers advertise.
    pub host: String,
}

impl WorkerProcess {
    /// Starts `binary` in worker mode for `launch`, appending its output to
    /// `<log_dir>/<topology>-<port>.log`.
    pub fn start(binary: &Path, launch: WorkerLaunch, env: &WorkerEnv, log_dir: &Path) -> Result<Self, LaunchError> {
        std::fs::create_dir_all(log_dir).map_err(|source| LaunchError::Log { path: log_dir.to_path_buf(), source })?;
        let log = log_dir.join(format!("{}-{}.log", launch.topology, launch.port));
        let open = || std::fs::OpenOptions::new().create(true).append(true).open(&log);
        let stdout = open().map_err(|source| LaunchError::Log { path: log.clone(), source })?;
        let stderr = open().map_err(|source| LaunchError::Log { path: log.clone(), source })?;
        let child = Command::new(binary)
            .arg("worker")
            .args(["--zookeeper", &env.zookeeper, "--chroot", &env.chroot])
            .args(["--topology", &launch.topology, "--topology-id", &launch.topology_id])
            .args(["--supervisor", &env.supervisor, "--host", &env.host])
            .args(["--port", &launch.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(false)
            .spawn()
            .map_err(|source| LaunchError::Spawn { path: binary.to_path_buf(), source })?;
        tracing::info!(topology = %launch.topology, port = launch.port, pid = child.id(), log = %log.display(), "started worker");
        Ok(WorkerProcess { launch, started_at: Instant::now(), beaten: false, log, child })
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub async fn kill(mut self) {
        let pid = self.child.id();
        if let Err(e) = self.child.kill().await {
            tracing::warn!(pid, error = %e, "killing a worker failed");
        }
        tracing::info!(topology = %self.launch.topology, port = self.launch.port, pid, "killed worker");
    }
}
