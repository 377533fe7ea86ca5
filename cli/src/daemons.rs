//! `squall nimbus` and `squall supervisor`: the daemons, configured from `squall.toml` and flags.

use std::time::Duration;

use anyhow::Context;
use squall_nimbus::server::NimbusConfig;
use squall_supervisor::SupervisorConfig;

use crate::settings::Settings;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the tokio runtime")
}

async fn ctrl_c() {
    if let Err(e) = tokio::signal::ctrl_c().await {
        tracing::error!(error = %e, "cannot listen for ctrl-c; stop with SIGKILL");
        std::future::pending::<()>().await;
    }
    tracing::info!("shutting down");
}

/// Runs a Nimbus until Ctrl-C.
pub fn nimbus(settings: &Settings) -> anyhow::Result<()> {
    let n = &settings.nimbus;
    let config = NimbusConfig {
        host: n.host.clone(),
        port: n.port,
        local_dir: n.local_dir.clone(),
        zookeeper: settings.zookeeper.servers.clone(),
        chroot: settings.zookeeper.chroot.clone(),
        session_timeout: Duration::from_secs(settings.zookeeper.session_timeout_secs),
        task_timeout: Duration::from_secs(n.task_timeout_secs),
        supervisor_timeout: Duration::from_secs(n.supervisor_timeout_secs),
        task_launch: Duration::from_secs(n.task_launch_secs),
        monitor_freq: Duration::from_secs(n.monitor_freq_secs),
    };
    runtime()?.block_on(squall_nimbus::server::run(config, ctrl_c())).context("nimbus failed")
}

/// Runs a supervisor until Ctrl-C.
pub fn supervisor(settings: &Settings) -> anyhow::Result<()> {
    let s = &settings.supervisor;
    let local_dir = s.local_dir.clone();
    std::fs::create_dir_all(&local_dir).with_context(|| format!("cannot create {}", local_dir.display()))?;
    let id = match &s.id {
        Some(id) => id.clone(),
        None => stable_id(&local_dir, &s.host)?,
    };
    let config = SupervisorConfig {
        id,
        host: s.host.clone(),
        ports: s.ports.clone(),
        local_dir,
        zookeeper: settings.zookeeper.servers.clone(),
        chroot: settings.zookeeper.chroot.clone(),
        session_timeout: Duration::from_secs(settings.zookeeper.session_timeout_secs),
        worker_timeout: Duration::from_secs(s.worker_timeout_secs),
        worker_start_timeout: Duration::from_secs(s.worker_start_timeout_secs),
        monitor_freq: Duration::from_secs(s.monitor_freq_secs),
        logviewer_port: s.logviewer_port,
    };
    runtime()?.block_on(squall_supervisor::run(config, ctrl_c())).context("supervisor failed")
}

/// A supervisor id kept in its local directory, so a restart keeps its identity.
fn stable_id(dir: &std::path::Path, host: &str) -> anyhow::Result<String> {
    let path = dir.join("supervisor-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        return Ok(id.trim().to_owned());
    }
    let id = format!(
        "{}-{:08x}",
        host.replace(['.', ':'], "-"),
        std::process::id()
            ^ (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos()))
    );
    std::fs::write(&path, &id).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}
