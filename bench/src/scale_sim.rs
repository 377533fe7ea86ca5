//! `squall-bench scale-sim --supervisors N --topologies M`: how Nimbus and ZooKeeper cope with a
//! large cluster, without running its workers.
//!
//! Starts a real ZooKeeper and a real Nimbus (this binary re-executed as `scale-sim-nimbus`, so
//! its memory is its own), registers N simulated supervisors with 4 slots each (ephemeral nodes,
//! as real supervisors register, spread over a few ZooKeeper sessions), uploads one artifact and
//! submits M small topologies (the word count, 2 workers each) over Nimbus's HTTP API, 8 at a
//! time. Every worker Nimbus assigns is then simulated as a real worker behaves towards
//! ZooKeeper: one heartbeat write per second (workers send their metrics to Nimbus over HTTP,
//! not to ZooKeeper). With its workers beating, no topology should ever be reassigned.
//!
//! Measured: `schedule_all_ms`, from the first submission to the moment every topology has an
//! assignment (watched in ZooKeeper); `zk_writes_per_sec` at steady state, from the growth of
//! ZooKeeper's last transaction id (every write bumps it) over `--measure-secs`; Nimbus's
//! resident memory then (`nimbus_rss_mb`) and at its peak. `--parallelism` sets the executors of
//! each bolt: the write rate should not change with it, only with workers and supervisors.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use futures_util::StreamExt;
use squall_cluster::records::{unix_millis, unix_secs};
use squall_cluster::testing::ZooKeeperServer;
use squall_cluster::{Assignment, ClusterState, SupervisorInfo, WorkerHeartbeat};
use squall_nimbus::api::SubmitRequest;
use squall_nimbus::client::NimbusClient;
use squall_nimbus::server::NimbusConfig;
use tokio::sync::watch;

use crate::cluster::{free_port, kb_to_mb, proc_status_kb};
use crate::workloads::{Params, Workload, build};

/// The cluster's ZooKeeper chroot.
const CHROOT: &str = "/squall";
/// Slots per simulated supervisor.
const SLOTS: u16 = 4;
/// Simulated supervisors per ZooKeeper session (ZooKeeper allows 60 connections per client
/// address by default).
const SUPERVISORS_PER_SESSION: usize = 100;
/// Submissions under way at once.
const SUBMITTERS: usize = 8;
/// ZooKeeper requests of this process under way at once.
const IN_FLIGHT: usize = 64;
/// How often a worker writes its heartbeat, as real workers do.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
const SESSION_TIMEOUT: Duration = Duration::from_secs(20);

/// `squall-bench scale-sim …`
#[derive(Parser, Debug)]
#[command(
    name = "squall-bench scale-sim",
    about = "Schedules many topologies on many simulated supervisors; the last line printed is a JSON object"
)]
struct ScaleArgs {
    /// Simulated supervisors, 4 slots each.
    #[arg(long, default_value_t = 100)]
    supervisors: usize,
    /// Topologies submitted (the word count: a spout and two bolts).
    #[arg(long, default_value_t = 10)]
    topologies: usize,
    /// Workers per topology.
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// Executors of each bolt of every topology.
    #[arg(long, default_value_t = 1)]
    parallelism: u32,
    /// Seconds to let the cluster settle after the last assignment.
    #[arg(long, default_value_t = 3)]
    settle_secs: u64,
    /// Seconds over which the steady-state ZooKeeper write rate is measured.
    #[arg(long, default_value_t = 10)]
    measure_secs: u64,
    /// Keep the run's directory (Nimbus's log and state) and print where it is.
    #[arg(long)]
    keep_dir: bool,
}

/// `squall-bench scale-sim-nimbus <zookeeper> <port> <dir>`: the Nimbus of a scale-sim run,
/// until its standard input closes.
pub(crate) fn nimbus_main(argv: &[String]) -> anyhow::Result<ExitCode> {
    let [_, _, zookeeper, port, dir] = argv else {
        bail!("usage: squall-bench scale-sim-nimbus <zookeeper> <port> <dir>")
    };
    let config = NimbusConfig {
        host: "127.0.0.1".to_owned(),
        port: port.parse().context("the port")?,
        local_dir: PathBuf::from(dir),
        zookeeper: zookeeper.clone(),
        chroot: CHROOT.to_owned(),
        session_timeout: SESSION_TIMEOUT,
        // Nimbus's defaults, as a production cluster runs it.
        task_timeout: Duration::from_secs(30),
        supervisor_timeout: Duration::from_secs(60),
        task_launch: Duration::from_secs(120),
        monitor_freq: Duration::from_secs(10),
    };
    // Its log goes to a file the run shows when something fails.
    tracing_subscriber::fmt().with_ansi(false).with_env_filter(tracing_subscriber::EnvFilter::new("info")).init();
    let runtime = tokio::runtime::Runtime::new()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        // The parent holds our stdin: when it goes, so do we.
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = stop.send(());
    });
    runtime.block_on(squall_nimbus::server::run(config, async move {
        let _ = stopped.await;
    }))?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `scale-sim …` (`argv` is the whole command line).
pub(crate) fn main(argv: &[String]) -> anyhow::Result<ExitCode> {
    let args = ScaleArgs::parse_from(argv.iter().skip(1));
    if args.supervisors == 0 || args.topologies == 0 {
        bail!("--supervisors and --topologies must be at least 1");
    }
    let slots = args.supervisors * usize::from(SLOTS);
    let wanted = args.topologies * args.workers as usize;
    if wanted > slots {
        bail!(
            "{} topologies of {} workers need {wanted} slots; {} supervisors have {slots}",
            args.topologies,
            args.workers,
            args.supervisors
        );
    }
    let zookeeper = ZooKeeperServer::start().map_err(|e| anyhow!("cannot start ZooKeeper: {e}"))?;
    let connect = zookeeper.connect_string();
    let dir = tempfile::tempdir().context("a temp dir")?;
    let port = free_port()?;
    let mut nimbus = NimbusProcess::start(&connect, port, dir.path().join("nimbus"))?;
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(simulate(&args, &zookeeper, &connect, port, &mut nimbus));
    drop(nimbus);
    if args.keep_dir {
        eprintln!("kept {}", dir.keep().display());
    }
    let result = result?;
    println!("{result}");
    Ok(ExitCode::SUCCESS)
}

async fn simulate(
    args: &ScaleArgs,
    zookeeper: &ZooKeeperServer,
    connect: &str,
    port: u16,
    nimbus: &mut NimbusProcess,
) -> anyhow::Result<serde_json::Value> {
    let client = NimbusClient::new(vec![format!("127.0.0.1:{port}")], Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leader = client.clone();
        match tokio::task::spawn_blocking(move || leader.leader()).await? {
            Ok(_) => break,
            Err(e) if Instant::now() >= deadline => {
                bail!("the scale-sim Nimbus did not start leading within 30 s: {e}\n{}", nimbus.log_tail())
            }
            Err(_) => {
                nimbus.check()?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    // Supervisors, each an ephemeral node as a real one registers, a hundred per session.
    let started = Instant::now();
    let sessions = args.supervisors.div_ceil(SUPERVISORS_PER_SESSION);
    let mut states = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        states.push(ClusterState::connect(connect, CHROOT, SESSION_TIMEOUT).await.context("connecting to ZooKeeper")?);
    }
    let registered = futures_util::stream::iter(0..args.supervisors)
        .map(|i| {
            let state = &states[i / SUPERVISORS_PER_SESSION];
            let info = SupervisorInfo {
                id: format!("sim-{i:05}"),
                host: format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255),
                ports: (6700..6700 + SLOTS).collect(),
                started_at: unix_secs(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                logviewer_port: Some(8000),
            };
            async move { state.register_supervisor(&info).await }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    for r in registered {
        r.context("registering a simulated supervisor")?;
    }
    let register_ms = started.elapsed().as_millis();
    eprintln!("{} supervisors registered in {register_ms} ms", args.supervisors);

    // Workers beat for every assignment as it appears.
    let state = Arc::new(ClusterState::connect(connect, CHROOT, SESSION_TIMEOUT).await?);
    let assignments = state.watch_assignments().await?;
    let beats = tokio::spawn(beat_for(state.clone(), assignments.clone()));

    let spec = build(&Params {
        workload: Workload::WordCount,
        acking: false,
        max_pending: 1,
        alloc_strings: false,
        parallelism: args.parallelism,
        rate: None,
        first_tuple_dir: None,
    })?
    .spec();
    let executors_per_topology: u32 = spec.components.iter().map(|c| c.parallelism).sum();
    let artifact = {
        let client = client.clone();
        tokio::task::spawn_blocking(move || client.upload(b"scale-sim: no worker runs this", &mut |_| {})).await??
    };

    // Submissions, SUBMITTERS at a time, from the first until every topology is assigned.
    let start = Instant::now();
    let names: Vec<String> = (0..args.topologies).map(|i| format!("sim-topology-{i:04}")).collect();
    let submitted = futures_util::stream::iter(names.clone())
        .map(|name| {
            let client = client.clone();
            let request = SubmitRequest {
                name: name.clone(),
                artifact: artifact.hash.clone(),
                spec: spec.clone(),
                config: BTreeMap::from([("topology.workers".to_owned(), args.workers.to_string())]),
                inactive: false,
            };
            tokio::task::spawn_blocking(move || client.submit(&request).with_context(|| format!("submitting {name}")))
        })
        .buffer_unordered(SUBMITTERS)
        .collect::<Vec<_>>()
        .await;
    for s in submitted {
        s??;
    }
    let submit_all_ms = start.elapsed().as_secs_f64() * 1e3;
    let mut watched = assignments.clone();
    let all_assigned = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            if names.iter().all(|n| watched.borrow().contains_key(n)) {
                return Ok(start.elapsed());
            }
            if watched.changed().await.is_err() {
                return Err(anyhow!("the assignment watch ended"));
            }
        }
    })
    .await
    .map_err(|_| anyhow!("not every topology was assigned within 120 s; nimbus log:\n{}", nimbus.log_tail()))??;
    let schedule_all_ms = all_assigned.as_secs_f64() * 1e3;
    eprintln!(
        "{} topologies submitted in {submit_all_ms:.0} ms, all assigned after {schedule_all_ms:.0} ms",
        args.topologies
    );
    nimbus.check()?;

    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let versions_before = versions(&assignments.borrow());
    let first = zookeeper.last_zxid().context("ZooKeeper does not answer srvr")?;
    let measuring = Instant::now();
    for _ in 0..args.measure_secs {
        tokio::time::sleep(Duration::from_secs(1)).await;
        eprintln!("zxid 0x{:x}", zookeeper.last_zxid().unwrap_or(0));
    }
    let last = zookeeper.last_zxid().context("ZooKeeper does not answer srvr")?;
    let zk_writes_per_sec = last.saturating_sub(first) as f64 / measuring.elapsed().as_secs_f64();
    let nimbus_rss_mb = nimbus.memory_mb("VmRSS");
    let nimbus_peak_rss_mb = nimbus.memory_mb("VmHWM");
    nimbus.check()?;
    let versions_after = versions(&assignments.borrow());
    beats.abort();
    let reassigned = versions_after.iter().filter(|(name, v)| versions_before.get(*name) != Some(v)).count();
    if reassigned > 0 {
        bail!("{reassigned} topologies were reassigned while their workers beat; nimbus log:\n{}", nimbus.log_tail());
    }
    let workers = assignments.borrow().values().map(|a| a.workers.len()).sum::<usize>();
    Ok(serde_json::json!({
        "supervisors": args.supervisors,
        "slots": args.supervisors * usize::from(SLOTS),
        "topologies": args.topologies,
        "workers": workers,
        "executors": args.topologies as u64 * u64::from(executors_per_topology),
        "register_ms": register_ms,
        "submit_all_ms": submit_all_ms.round(),
        "schedule_all_ms": schedule_all_ms.round(),
        "zk_writes_per_sec": (zk_writes_per_sec * 10.0).round() / 10.0,
        "heartbeat_writes_per_sec": workers as f64 / HEARTBEAT_EVERY.as_secs_f64(),
        "nimbus_rss_mb": nimbus_rss_mb,
        "nimbus_peak_rss_mb": nimbus_peak_rss_mb,
    }))
}

/// Each assignment's version, by topology.
fn versions(assignments: &BTreeMap<String, Assignment>) -> BTreeMap<String, u64> {
    assignments.iter().map(|(name, a)| (name.clone(), a.version)).collect()
}

/// Writes a heartbeat for every assigned worker once per [`HEARTBEAT_EVERY`], as each worker
/// would, spread over the period.
async fn beat_for(state: Arc<ClusterState>, assignments: watch::Receiver<BTreeMap<String, Assignment>>) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        tick.tick().await;
        let workers: Vec<(String, WorkerHeartbeat)> = assignments
            .borrow()
            .iter()
            .flat_map(|(name, a)| {
                a.workers.iter().map(move |w| {
                    let beat = WorkerHeartbeat {
                        topology_id: a.topology_id.clone(),
                        supervisor_id: w.supervisor_id.clone(),
                        port: w.port,
                        pid: 0,
                        tasks: w.tasks.clone(),
                        time_millis: unix_millis(),
                        uptime_secs: started.elapsed().as_secs(),
                        metrics: serde_json::Value::Null,
                    };
                    (name.clone(), beat)
                })
            })
            .collect();
        let gap = HEARTBEAT_EVERY / u32::try_from(workers.len().max(1)).unwrap_or(u32::MAX);
        let state = &state;
        futures_util::stream::iter(workers.into_iter().enumerate())
            .map(|(i, (name, beat))| async move {
                tokio::time::sleep(gap * u32::try_from(i).unwrap_or(u32::MAX)).await;
                if let Err(e) = state.put_worker_heartbeat(&name, &beat).await {
                    eprintln!("warning: a simulated heartbeat failed: {e}");
                }
            })
            .buffer_unordered(usize::MAX)
            .collect::<Vec<_>>()
            .await;
    }
}

/// The scale-sim's Nimbus process; killed on drop.
struct NimbusProcess {
    child: Child,
    log: PathBuf,
}

impl NimbusProcess {
    fn start(zookeeper: &str, port: u16, dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log = dir.join("nimbus.log");
        let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let me = std::env::current_exe().context("this binary's path")?;
        let child = Command::new(me)
            .args(["scale-sim-nimbus", zookeeper, &port.to_string()])
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting the scale-sim Nimbus")?;
        Ok(NimbusProcess { child, log })
    }

    /// Fails, with its log, if Nimbus has exited.
    fn check(&mut self) -> anyhow::Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!("the scale-sim Nimbus exited ({status}):\n{}", self.log_tail());
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// A `/proc/<pid>/status` memory field in MB, one decimal.
    fn memory_mb(&self, key: &str) -> Option<f64> {
        proc_status_kb(self.child.id(), key).map(kb_to_mb)
    }
}

impl Drop for NimbusProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
