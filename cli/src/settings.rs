//! `squall.toml`: where ZooKeeper and Nimbus are, and how daemons run. Every key has a default,
//! so a missing file means "everything on this machine".

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `[zookeeper]`
    pub zookeeper: ZooKeeperSettings,
    /// `[nimbus]`
    pub nimbus: NimbusSettings,
    /// `[supervisor]`
    pub supervisor: SupervisorSettings,
}

/// `[zookeeper]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ZooKeeperSettings {
    /// `host:port[,host:port…]`
    pub servers: String,
    /// The root of this cluster's nodes, so clusters can share one ZooKeeper.
    pub chroot: String,
    /// Session timeout in seconds.
    pub session_timeout_secs: u64,
}

impl Default for ZooKeeperSettings {
    fn default() -> Self {
        ZooKeeperSettings { servers: "127.0.0.1:2181".into(), chroot: "/squall".into(), session_timeout_secs: 20 }
    }
}

/// `[nimbus]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NimbusSettings {
    /// Where the CLI and supervisors look for Nimbus (`host:port` of every Nimbus).
    pub seeds: Vec<String>,
    /// The host this Nimbus advertises.
    pub host: String,
    /// The port of its HTTP API.
    pub port: u16,
    /// Where it keeps artifacts.
    pub local_dir: PathBuf,
    /// `nimbus.task.timeout.secs`: a worker silent this long is replaced.
    pub task_timeout_secs: u64,
    /// `nimbus.supervisor.timeout.secs`: a supervisor gone this long loses its workers.
    pub supervisor_timeout_secs: u64,
    /// `nimbus.task.launch.secs`: grace for a new worker's first heartbeat.
    pub task_launch_secs: u64,
    /// `nimbus.monitor.freq.secs`: how often Nimbus checks assignments.
    pub monitor_freq_secs: u64,
}

impl Default for NimbusSettings {
    fn default() -> Self {
        NimbusSettings {
            seeds: vec!["127.0.0.1:6627".into()],
            host: "127.0.0.1".into(),
            port: 6627,
            local_dir: PathBuf::from("squall-local/nimbus"),
            task_timeout_secs: 30,
            supervisor_timeout_secs: 60,
            task_launch_secs: 120,
            monitor_freq_secs: 10,
        }
    }
}

/// `[supervisor]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisorSettings {
    /// Its id (default: host and a random suffix, kept in `local_dir`).
    pub id: Option<String>,
    /// The host its workers advertise.
    pub host: String,
    /// `supervisor.slots.ports`: one worker per port.
    pub ports: Vec<u16>,
    /// Where it keeps artifacts and worker logs.
    pub local_dir: PathBuf,
    /// `supervisor.worker.timeout.secs`: a worker silent this long is restarted.
    pub worker_timeout_secs: u64,
    /// `supervisor.worker.start.timeout.secs`: grace for a new worker's first heartbeat.
    pub worker_start_timeout_secs: u64,
    /// How often it reconciles its workers with the assignments, in seconds.
    pub monitor_freq_secs: u64,
    /// `logviewer.port`: where it serves its workers' logs over HTTP (0: any free port; it is
    /// registered in ZooKeeper, where `squall logs` and the UI find it).
    pub logviewer_port: u16,
}

impl Default for SupervisorSettings {
    fn default() -> Self {
        SupervisorSettings {
            id: None,
            host: "127.0.0.1".into(),
            ports: vec![6700, 6701, 6702, 6703],
            local_dir: PathBuf::from("squall-local/supervisor"),
            worker_timeout_secs: 30,
            worker_start_timeout_secs: 120,
            monitor_freq_secs: 3,
            logviewer_port: 0,
        }
    }
}

impl Settings {
    /// Reads `path`, or `squall.toml` in the working directory when it exists, or defaults.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Settings> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from("squall.toml"), false),
        };
        if !required && !path.exists() {
            return Ok(Settings::default());
        }
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read config file {}", path.display()))?;
        let settings: Settings =
            toml::from_str(&text).with_context(|| format!("config file {} is not valid", path.display()))?;
        settings.check().with_context(|| format!("config file {} is not valid", path.display()))?;
        Ok(settings)
    }

    /// Checks what the types alone do not: every `nimbus.seeds` entry is `host:port`.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.nimbus.seeds.is_empty() {
            bail!("`nimbus.seeds` is empty; list every Nimbus's address, e.g. seeds = [\"localhost:6627\"]");
        }
        for seed in &self.nimbus.seeds {
            if let Err(why) = check_seed(seed) {
                bail!(
                    "`nimbus.seeds` entry {seed:?} is not a Nimbus address: {why}; write host:port with the port of \
                     Nimbus's API (`nimbus.port`, 6627 by default), e.g. seeds = [\"localhost:6627\"]"
                );
            }
        }
        Ok(())
    }
}

/// Checks that `seed` is `host:port` (an IPv6 host in brackets: `[::1]:6627`).
pub fn check_seed(seed: &str) -> Result<(), &'static str> {
    if seed.contains(['/', ' ']) {
        return Err("it is not a bare host:port (no scheme, path or spaces)");
    }
    let Some((host, port)) = seed.rsplit_once(':') else { return Err("it has no port") };
    if host.is_empty() {
        return Err("it has no host");
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err("an IPv6 host must be in brackets, such as [::1]:6627");
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err("its port is not a number from 1 to 65535"),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_files_keep_defaults_and_unknown_keys_are_errors() {
        let s: Settings = toml::from_str("[zookeeper]\nservers = \"zk:2181\"\n[supervisor]\nports = [7000]").unwrap();
        assert_eq!(s.zookeeper.servers, "zk:2181");
        assert_eq!(s.zookeeper.chroot, "/squall");
        assert_eq!(s.supervisor.ports, vec![7000]);
        let err = toml::from_str::<Settings>("[nimbus]\nseed = []").unwrap_err();
        assert!(err.to_string().contains("unknown field `seed`"), "{err}");
    }

    #[test]
    fn seeds_must_be_host_and_port() {
        for good in ["localhost:6627", "10.0.0.1:1", "[::1]:6627", "nimbus-1.example.com:65535"] {
            assert_eq!(check_seed(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("localhost", "it has no port"),
            (":6627", "it has no host"),
            ("localhost:", "its port is not a number from 1 to 65535"),
            ("localhost:0", "its port is not a number from 1 to 65535"),
            ("localhost:70000", "its port is not a number from 1 to 65535"),
            ("::1:6627", "an IPv6 host must be in brackets, such as [::1]:6627"),
            ("http://localhost:6627", "it is not a bare host:port (no scheme, path or spaces)"),
        ] {
            assert_eq!(check_seed(bad), Err(why), "{bad}");
        }
        let settings: Settings = toml::from_str("[nimbus]\nseeds = [\"localhost\"]").unwrap();
        let err = settings.check().unwrap_err().to_string();
        assert!(err.contains("`nimbus.seeds` entry \"localhost\""), "{err}");
        assert!(err.contains("it has no port") && err.contains("seeds = [\"localhost:6627\"]"), "{err}");
        assert!(Settings::default().check().is_ok());
    }
}
