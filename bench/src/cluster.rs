//! `squall-bench cluster <workload> [--seconds N] [--acking]`: the workload across processes.
//!
//! Starts a real ZooKeeper and, in this process on one tokio runtime, a Nimbus and a supervisor
//! with two worker slots. It submits this very binary as the topology with
//! `topology.workers=2`, so the supervisor starts it twice in `worker` mode and every tuple
//! crosses the process boundary over the TCP transport. It measures the sink's throughput from
//! Nimbus's `/metrics` (the workers' reports), the spout's complete latency with `--acking`, each worker's peak
//! RSS, the RSS of an idle worker, and the time from submission to the first tuple at the sink.
//!
//! The workers build their topology from the environment ([`crate::workloads::Params::from_env`]),
//! which they inherit from the supervisor, so from this process. A process cannot safely change
//! its own environment once threads run (`std::env::set_var` is `unsafe`, which this workspace
//! forbids), so this mode re-executes itself once with the variables set.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use squall::TopologySpec;
use squall_cluster::records::unix_millis;
use squall_cluster::testing::ZooKeeperServer;
use squall_cluster::{ClusterState, WorkerHeartbeat};
use squall_nimbus::api::{SubmitRequest, TopologyDetails, TopologySummary};
use squall_nimbus::client::NimbusClient;
use squall_nimbus::server::{NimbusConfig, NimbusError};
use squall_supervisor::{SupervisorConfig, SupervisorError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::workloads::{ENV_ACKING, ENV_MAX_PENDING, ENV_OUT, ENV_WORKLOAD, FIRST_TUPLE_PREFIX, Workload};

/// Set in the re-executed bench process, which runs the cluster.
const ENV_CHILD: &str = "SQUALL_BENCH_CLUSTER_CHILD";
/// The cluster's ZooKeeper chroot.
const CHROOT: &str = "/squall";
/// The supervisor's id.
const SUPERVISOR_ID: &str = "bench-supervisor";
/// The name of the inactive topology whose workers give the idle RSS.
const IDLE_TOPOLOGY: &str = "bench-idle";
/// How long a ZooKeeper read of this process may take before the run is abandoned.
const ZK_TIMEOUT: Duration = Duration::from_secs(15);
/// How long daemons and workers get to come up or go away.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(30);

/// `squall-bench cluster …`
#[derive(Parser, Debug)]
#[command(
    name = "squall-bench cluster",
    about = "Runs a workload across two worker processes of a real cluster; the last line printed is a JSON object"
)]
struct ClusterArgs {
    /// The workload.
    workload: Workload,
    /// How long to measure, in seconds, after the warm-up.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of warm-up after the first tuple reached the sink.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Track every spout tuple with acking (one acker task) and report complete latency.
    #[arg(long)]
    acking: bool,
    /// With --acking, `topology.max.spout.pending` per spout task.
    #[arg(long, default_value_t = 5_000)]
    max_pending: u32,
    /// Seconds the topology gets to process its first tuple after submission.
    #[arg(long, default_value_t = 60)]
    start_timeout: u64,
    /// Skip the idle-worker measurement.
    #[arg(long)]
    no_idle: bool,
    /// Keep the cluster's directory (daemon state, worker logs) and print where it is.
    #[arg(long)]
    keep_dir: bool,
}

/// Runs `cluster …` (`argv` is the whole command line): re-executes this binary with the
/// workers' environment set, or, in that re-executed process, runs the benchmark and prints its
/// JSON result as the last line.
pub fn main(argv: &[String]) -> anyhow::Result<ExitCode> {
    let args = ClusterArgs::parse_from(&argv[1..]);
    if args.seconds < 1 {
        bail!("--seconds must be at least 1");
    }
    if std::env::var(ENV_CHILD).as_deref() != Ok("1") {
        return reexec(&args, argv);
    }
    let out =
        std::env::var_os(ENV_OUT).map(PathBuf::from).context("the cluster bench process lost SQUALL_BENCH_OUT")?;
    let result = run(&args, &out)?;
    println!("{result}");
    Ok(ExitCode::SUCCESS)
}

/// Runs this binary again with the environment its workers must inherit.
fn reexec(args: &ClusterArgs, argv: &[String]) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find this executable to run it as the topology")?;
    let out = tempfile::Builder::new().prefix("squall-bench-out-").tempdir().context("cannot create a temp dir")?;
    let status = Command::new(&exe)
        .args(&argv[1..])
        .env(ENV_CHILD, "1")
        .env(ENV_WORKLOAD, args.workload.name())
        .env(ENV_ACKING, if args.acking { "1" } else { "0" })
        .env(ENV_MAX_PENDING, args.max_pending.to_string())
        .env(ENV_OUT, out.path())
        .status()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    match status.code() {
        Some(0) => Ok(ExitCode::SUCCESS),
        Some(code) => Ok(ExitCode::from(u8::try_from(code).unwrap_or(1))),
        None => bail!("the benchmark process was killed ({status})"),
    }
}

/// A worker process seen in the heartbeats.
#[derive(Debug, Clone)]
struct WorkerInfo {
    port: u16,
    pid: u32,
    components: Vec<String>,
}

/// Where each component's tasks run, from `describe`: component id → worker ports.
fn placement(details: &TopologyDetails) -> BTreeMap<String, BTreeSet<u16>> {
    details
        .components
        .iter()
        .map(|c| {
            let ports = details
                .workers
                .iter()
                .filter(|w| w.tasks.iter().any(|t| c.tasks.contains(t)))
                .map(|w| w.port)
                .collect();
            (c.id.clone(), ports)
        })
        .collect()
}

fn run(args: &ClusterArgs, out: &Path) -> anyhow::Result<serde_json::Value> {
    let workload = args.workload;
    let exe = std::env::current_exe().context("cannot find this executable to submit it")?;
    let mut cluster = Cluster::start(args.keep_dir)?;
    let outcome = measure(&mut cluster, args, &exe, out);
    // Stop everything whether the measurement worked or not; report its error first.
    let stopped = cluster.stop();
    let mut result = outcome?;
    stopped?;
    result["workload"] = format!("cluster-{}", workload.name()).into();
    Ok(result)
}

fn measure(cluster: &mut Cluster, args: &ClusterArgs, exe: &Path, out: &Path) -> anyhow::Result<serde_json::Value> {
    let workload = args.workload;
    let name = format!("bench-{}", workload.name());

    eprintln!("describing {}", exe.display());
    let described = Instant::now();
    let spec = describe_binary(exe)?;
    let describe_ms = described.elapsed().as_secs_f64() * 1e3;
    let binary = std::fs::read(exe).with_context(|| format!("cannot read {}", exe.display()))?;
    let mut config = BTreeMap::new();
    config.insert("topology.workers".to_owned(), "2".to_owned());
    // What is measured is the wire: chained, Nimbus would place each edge in one worker.
    config.insert("topology.chaining".to_owned(), "false".to_owned());
    // The spec already says the same (the even scheduler counts ackers from the spec alone).
    config.insert("topology.acker.executors".to_owned(), if args.acking { "1" } else { "0" }.to_owned());

    // Just before the upload: what `squall submit` would do from here on is measured.
    let upload_start = unix_millis();
    let upload_clock = Instant::now();
    let uploaded = cluster.client.upload(&binary, &mut |_| {}).context("uploading the bench binary to Nimbus")?;
    let upload_ms = upload_clock.elapsed().as_secs_f64() * 1e3;
    let submit_start = unix_millis();
    let request = SubmitRequest { name: name.clone(), artifact: uploaded.hash.clone(), spec, config, inactive: false };
    let summary = cluster.client.submit(&request).with_context(|| format!("submitting `{name}`"))?;
    eprintln!(
        "uploaded {:.1} MB in {upload_ms:.0} ms; submitted `{name}` (id {})",
        binary.len() as f64 / 1e6,
        summary.id
    );

    let timeout = Duration::from_secs(args.start_timeout);
    let first_tuple_ms =
        cluster.wait_for("the sink's first tuple", timeout, Duration::from_millis(10), |_| first_tuple(out))?;
    let submit_to_first_tuple_ms = first_tuple_ms.saturating_sub(upload_start);
    let submit_request_to_first_tuple_ms = first_tuple_ms.saturating_sub(submit_start);
    eprintln!(
        "first tuple at the sink {submit_to_first_tuple_ms} ms after the upload started ({submit_request_to_first_tuple_ms} ms after submit)"
    );

    let workers = cluster.wait_for_workers(&name, &summary.id, 2, timeout)?;
    check_placement(cluster, &name, workload)?;
    for w in &workers {
        eprintln!("worker port {} pid {}: {}", w.port, w.pid, w.components.join(", "));
    }

    // Steady state: skip the warm-up, then follow the sink's `executed` counter per worker in
    // Nimbus's `/metrics`, which holds each worker's latest report (sent once a second); the
    // report's age there dates each sample.
    let warm_until = first_tuple_ms + args.warmup * 1000;
    let wanted = args.seconds * 1000;
    let deadline = Instant::now() + Duration::from_secs(args.warmup + args.seconds + 15);
    let mut samples: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    eprintln!("warming up for {} s, then measuring for {} s", args.warmup, args.seconds);
    loop {
        cluster.check_daemons()?;
        for (worker, time_millis, executed) in cluster.sink_reports(&name, workload.sink())? {
            if time_millis < warm_until {
                continue;
            }
            let series = samples.entry(worker.clone()).or_default();
            // The same report again, or one dated a little differently by rounding.
            if series.last().is_some_and(|(t, n)| *n == executed || time_millis <= *t + 100) {
                continue;
            }
            if let Some((t, n)) = series.last() {
                let rate = executed.saturating_sub(*n) as f64 / ((time_millis - t) as f64 / 1e3);
                eprintln!("{:>6.2} M tuples/s at the sink (worker {worker})", rate / 1e6);
            }
            series.push((time_millis, executed));
        }
        let measured = samples.values().map(|s| span(s)).min().unwrap_or(0);
        if !samples.is_empty() && measured + 500 >= wanted {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the sink's workers did not heartbeat for {} s of steady state in time (measured {measured} ms)\n{}",
                args.seconds,
                cluster.diagnostics()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let tuples_per_sec: f64 = samples
        .values()
        .filter(|s| s.len() >= 2)
        .map(|s| {
            let ((t0, n0), (t1, n1)) = (s[0], s[s.len() - 1]);
            n1.saturating_sub(n0) as f64 / ((t1 - t0) as f64 / 1e3)
        })
        .sum();
    let measured_secs = samples.values().map(|s| span(s)).max().unwrap_or(0) as f64 / 1e3;

    // Peak RSS of each worker, just before the kill.
    let mut worker_json = Vec::new();
    let mut peaks = Vec::new();
    for w in &workers {
        let peak = proc_status_kb(w.pid, "VmHWM").map(kb_to_mb);
        peaks.push(peak);
        worker_json.push(serde_json::json!({
            "port": w.port,
            "pid": w.pid,
            "components": w.components,
            "peak_rss_mb": peak,
            "rss_mb": proc_status_kb(w.pid, "VmRSS").map(kb_to_mb),
        }));
    }
    // The spout's latencies and acks as `describe` merges them over its executors.
    let details = cluster.client.describe(&name).with_context(|| format!("describing `{name}`"))?;
    let spout_metrics =
        details.components.iter().find(|c| c.id == workload.spout()).map(|c| c.metrics.clone()).unwrap_or_default();
    let latency = |key: &str| -> serde_json::Value { spout_metrics.get(key).cloned().unwrap_or_default() };
    let mut result = serde_json::json!({
        "tuples_per_sec": tuples_per_sec.round(),
        "measured_secs": (measured_secs * 10.0).round() / 10.0,
        "acking": args.acking,
        "complete_latency_p50_ms": if args.acking { latency("complete_latency_p50_ms") } else { serde_json::Value::Null },
        "complete_latency_p99_ms": if args.acking { latency("complete_latency_p99_ms") } else { serde_json::Value::Null },
        "worker_peak_rss_mb": peaks,
        "submit_to_first_tuple_ms": submit_to_first_tuple_ms,
        "submit_request_to_first_tuple_ms": submit_request_to_first_tuple_ms,
        "upload_ms": upload_ms.round(),
        "describe_ms": describe_ms.round(),
        "binary_mb": (binary.len() as f64 / 1e5).round() / 10.0,
        "workers": worker_json,
    });
    if args.acking {
        result["complete_latency_max_ms"] = latency("complete_latency_max_ms");
        result["acked"] = latency("acked");
        result["failed"] = latency("failed");
    }
    eprintln!("{:.2} M tuples/s over {measured_secs:.1} s; killing `{name}`", tuples_per_sec / 1e6);
    cluster.kill(&name, &workers)?;

    if !args.no_idle {
        // The idle RSS: the same topology submitted inactive, so its spouts never emit.
        let request = SubmitRequest { name: IDLE_TOPOLOGY.to_owned(), inactive: true, ..request };
        let idle = cluster.client.submit(&request).context("submitting the idle topology")?;
        let idle_workers = cluster.wait_for_workers(IDLE_TOPOLOGY, &idle.id, 2, timeout)?;
        // Let them settle: two more heartbeats.
        std::thread::sleep(Duration::from_secs(2));
        let rss: Vec<Option<f64>> = idle_workers.iter().map(|w| proc_status_kb(w.pid, "VmRSS").map(kb_to_mb)).collect();
        let peak: Vec<Option<f64>> =
            idle_workers.iter().map(|w| proc_status_kb(w.pid, "VmHWM").map(kb_to_mb)).collect();
        let max_rss = rss.iter().flatten().copied().fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
        eprintln!("idle workers: RSS {rss:?} MB, peak {peak:?} MB; killing `{IDLE_TOPOLOGY}`");
        result["idle_worker_rss_mb"] = max_rss.into();
        result["idle_worker_rss_mb_each"] = rss.into();
        result["idle_worker_peak_rss_mb"] = peak.into();
        cluster.kill(IDLE_TOPOLOGY, &idle_workers)?;
    }
    Ok(result)
}

/// The time in a series of (time, count) samples, in ms.
fn span(series: &[(u64, u64)]) -> u64 {
    match (series.first(), series.last()) {
        (Some((t0, _)), Some((t1, _))) => t1 - t0,
        _ => 0,
    }
}

/// The value of a Prometheus sample line whose labels include all of `labels`.
fn sample(line: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let rest = line.strip_prefix(metric)?.strip_prefix('{')?;
    let (label_text, value) = rest.rsplit_once("} ")?;
    labels.iter().all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\""))).then(|| value.trim().parse().ok())?
}

/// A label's value in a Prometheus sample line.
fn label<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("{key}=\""))? + key.len() + 2;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// The earliest unix-millis time a sink recorded for its first tuple, if any did yet.
fn first_tuple(out: &Path) -> anyhow::Result<Option<u64>> {
    let entries = std::fs::read_dir(out).with_context(|| format!("cannot read {}", out.display()))?;
    let mut first: Option<u64> = None;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(FIRST_TUPLE_PREFIX) {
            continue;
        }
        if let Ok(millis) = std::fs::read_to_string(entry.path()).unwrap_or_default().trim().parse::<u64>() {
            first = Some(first.map_or(millis, |f| f.min(millis)));
        }
    }
    Ok(first)
}

/// Every edge of the workload must cross workers, or the benchmark measures something else.
fn check_placement(cluster: &mut Cluster, name: &str, workload: Workload) -> anyhow::Result<()> {
    let details = cluster.client.describe(name).with_context(|| format!("describing `{name}`"))?;
    let placed = placement(&details);
    for (from, to) in workload.edges() {
        let (a, b) = (placed.get(*from), placed.get(*to));
        let (Some(a), Some(b)) = (a, b) else {
            bail!("`{name}` has no component `{from}` or `{to}`: {placed:?}");
        };
        if a.is_empty() || b.is_empty() || !a.is_disjoint(b) {
            bail!(
                "`{from}` (workers {a:?}) and `{to}` (workers {b:?}) are not in different workers, so tuples \
                 between them would not cross processes; placement: {placed:?}"
            );
        }
    }
    Ok(())
}

/// Runs `binary --describe` and reads the spec it prints, as `squall submit` does.
fn describe_binary(binary: &Path) -> anyhow::Result<TopologySpec> {
    let output = Command::new(binary)
        .arg("--describe")
        .env("RUST_LOG", "error")
        .output()
        .with_context(|| format!("cannot run {} --describe", binary.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!("{} --describe failed ({}): {}", binary.display(), output.status, stderr.trim());
    }
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("{} --describe did not print a topology spec", binary.display()))
}

/// A field of `/proc/<pid>/status` in kB, such as `VmHWM` (peak RSS) or `VmRSS`.
pub(crate) fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.strip_prefix(key).is_some_and(|rest| rest.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub(crate) fn kb_to_mb(kb: u64) -> f64 {
    (kb as f64 / 1024.0 * 10.0).round() / 10.0
}

/// Whether a process runs (a zombie does not).
fn alive(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return false };
    !status.lines().any(|l| l.starts_with("State:") && l.contains('Z'))
}

/// A free loopback port (bound, then released).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(listener.local_addr().context("cannot read a bound port")?.port())
}

/// The daemons of the benchmark's cluster. Dropping it kills any worker it left running.
struct Cluster {
    client: NimbusClient,
    /// Nimbus's HTTP address, `host:port`.
    nimbus_address: String,
    state: ClusterState,
    nimbus: Option<JoinHandle<Result<(), NimbusError>>>,
    supervisor: Option<JoinHandle<Result<(), SupervisorError>>>,
    stop_nimbus: Option<oneshot::Sender<()>>,
    stop_supervisor: Option<oneshot::Sender<()>>,
    supervisor_dir: PathBuf,
    /// Worker pids seen in heartbeats.
    pids: BTreeSet<u32>,
    /// Leftover workers already killed.
    killed: BTreeSet<u32>,
    runtime: tokio::runtime::Runtime,
    zookeeper: ZooKeeperServer,
    dir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Starts ZooKeeper, a Nimbus and a supervisor with two slots, and waits until Nimbus leads
    /// and the supervisor is registered.
    fn start(keep_dir: bool) -> anyhow::Result<Cluster> {
        eprintln!("starting ZooKeeper");
        let zookeeper = ZooKeeperServer::start().map_err(|e| anyhow!("cannot start ZooKeeper: {e}"))?;
        let dir =
            tempfile::Builder::new().prefix("squall-bench-cluster-").tempdir().context("cannot create a temp dir")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the tokio runtime")?;
        let zk = zookeeper.connect_string();
        let session_timeout = Duration::from_secs(10);

        let listener =
            runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).context("cannot bind Nimbus's API port")?;
        let port = listener.local_addr().context("cannot read Nimbus's port")?.port();
        let nimbus_config = NimbusConfig {
            host: "127.0.0.1".to_owned(),
            port,
            local_dir: dir.path().join("nimbus"),
            zookeeper: zk.clone(),
            chroot: CHROOT.to_owned(),
            session_timeout,
            task_timeout: Duration::from_secs(15),
            supervisor_timeout: Duration::from_secs(15),
            task_launch: Duration::from_secs(30),
            monitor_freq: Duration::from_secs(1),
        };
        let (stop_nimbus, stopped) = oneshot::channel::<()>();
        let nimbus = runtime.spawn(squall_nimbus::server::run_on(nimbus_config, listener, async move {
            let _ = stopped.await;
        }));

        let supervisor_dir = dir.path().join("supervisor");
        let supervisor_config = SupervisorConfig {
            id: SUPERVISOR_ID.to_owned(),
            host: "127.0.0.1".to_owned(),
            ports: vec![free_port()?, free_port()?],
            local_dir: supervisor_dir.clone(),
            zookeeper: zk.clone(),
            chroot: CHROOT.to_owned(),
            session_timeout,
            worker_timeout: Duration::from_secs(15),
            worker_start_timeout: Duration::from_secs(30),
            monitor_freq: Duration::from_secs(1),
            logviewer_port: 0,
        };
        let (stop_supervisor, stopped) = oneshot::channel::<()>();
        let supervisor = runtime.spawn(squall_supervisor::run(supervisor_config, async move {
            let _ = stopped.await;
        }));

        let state = runtime
            .block_on(ClusterState::connect(&zk, CHROOT, session_timeout))
            .map_err(|e| anyhow!("cannot connect to ZooKeeper at {zk}: {e}"))?;
        let client = NimbusClient::new(vec![format!("127.0.0.1:{port}")], Duration::from_secs(60));
        let mut cluster = Cluster {
            client,
            nimbus_address: format!("127.0.0.1:{port}"),
            state,
            nimbus: Some(nimbus),
            supervisor: Some(supervisor),
            stop_nimbus: Some(stop_nimbus),
            stop_supervisor: Some(stop_supervisor),
            supervisor_dir,
            pids: BTreeSet::new(),
            killed: BTreeSet::new(),
            runtime,
            zookeeper,
            dir: Some(dir),
        };
        if keep_dir && let Some(dir) = cluster.dir.take() {
            eprintln!("cluster directory (kept): {}", dir.keep().display());
        }
        cluster.wait_for("Nimbus to lead", DAEMON_TIMEOUT, Duration::from_millis(50), |c| {
            Ok(c.client.leader().ok().map(|_| ()))
        })?;
        cluster.wait_for("the supervisor to register", DAEMON_TIMEOUT, Duration::from_millis(50), |c| {
            let supervisors = c.zk(c.state.supervisors())?;
            Ok(supervisors.contains_key(SUPERVISOR_ID).then_some(()))
        })?;
        eprintln!("cluster up: ZooKeeper {zk}, Nimbus 127.0.0.1:{port}, supervisor with 2 slots");
        Ok(cluster)
    }

    /// Runs a ZooKeeper read of this process, with a timeout.
    fn zk<T>(&self, read: impl Future<Output = Result<T, squall_cluster::ClusterError>>) -> anyhow::Result<T> {
        match self.runtime.block_on(async { tokio::time::timeout(ZK_TIMEOUT, read).await }) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(anyhow!("ZooKeeper read failed: {e}")),
            Err(_) => Err(anyhow!("ZooKeeper did not answer within {ZK_TIMEOUT:?}; is it still running?")),
        }
    }

    /// Fails when a daemon stopped.
    fn check_daemons(&mut self) -> anyhow::Result<()> {
        if self.nimbus.as_ref().is_some_and(JoinHandle::is_finished)
            && let Some(handle) = self.nimbus.take()
        {
            let why = match self.runtime.block_on(handle) {
                Ok(Ok(())) => "it returned".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => format!("it panicked: {e}"),
            };
            bail!("Nimbus stopped unexpectedly: {why}");
        }
        if self.supervisor.as_ref().is_some_and(JoinHandle::is_finished)
            && let Some(handle) = self.supervisor.take()
        {
            let why = match self.runtime.block_on(handle) {
                Ok(Ok(())) => "it returned".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => format!("it panicked: {e}"),
            };
            bail!("the supervisor stopped unexpectedly: {why}");
        }
        Ok(())
    }

    /// Polls `check` every `every` until it returns a value, failing after `timeout` (with the
    /// cluster's state and worker logs) or as soon as a daemon stops.
    fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        every: Duration,
        mut check: impl FnMut(&mut Cluster) -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_daemons()?;
            if let Some(value) = check(self)? {
                return Ok(value);
            }
            if Instant::now() >= deadline {
                bail!("timed out after {timeout:?} waiting for {what}\n{}", self.diagnostics());
            }
            std::thread::sleep(every);
        }
    }

    /// Each worker's latest report of `sink`'s executed tuples, from Nimbus's `/metrics`:
    /// (worker, when the report was taken in unix ms, executed).
    fn sink_reports(&self, name: &str, sink: &str) -> anyhow::Result<Vec<(String, u64, u64)>> {
        let url = format!("http://{}/metrics", self.nimbus_address);
        let now = unix_millis();
        let mut response = ureq::get(&url).call().with_context(|| format!("GET {url}"))?;
        let text = response.body_mut().read_to_string().with_context(|| format!("GET {url}"))?;
        let mut executed: BTreeMap<String, u64> = BTreeMap::new();
        let mut age: BTreeMap<String, f64> = BTreeMap::new();
        for line in text.lines() {
            let Some(worker) = label(line, "worker") else { continue };
            if let Some(n) = sample(line, "squall_executed_total", &[("topology", name), ("component", sink)]) {
                *executed.entry(worker.to_owned()).or_default() += n as u64;
            } else if let Some(secs) = sample(line, "squall_worker_report_age_seconds", &[("topology", name)]) {
                age.insert(worker.to_owned(), secs);
            }
        }
        Ok(executed
            .into_iter()
            .filter_map(|(worker, n)| {
                let secs = *age.get(&worker)?;
                Some((worker, now.saturating_sub((secs * 1e3) as u64), n))
            })
            .collect())
    }

    /// The current heartbeats of a topology's workers, by worker key.
    fn heartbeats(&mut self, name: &str, id: &str) -> anyhow::Result<BTreeMap<String, WorkerHeartbeat>> {
        let beats = self.zk(self.state.worker_heartbeats(name))?;
        let beats: BTreeMap<String, WorkerHeartbeat> = beats.into_iter().filter(|(_, b)| b.topology_id == id).collect();
        self.pids.extend(beats.values().map(|b| b.pid));
        Ok(beats)
    }

    /// Waits until `count` workers of a topology heartbeat, and says which components each runs.
    fn wait_for_workers(
        &mut self,
        name: &str,
        id: &str,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<WorkerInfo>> {
        let beats = self.wait_for(
            &format!("{count} workers of `{name}` to heartbeat"),
            timeout,
            Duration::from_millis(100),
            |c| {
                let beats = c.heartbeats(name, id)?;
                Ok((beats.len() >= count).then_some(beats))
            },
        )?;
        let details = self.client.describe(name).with_context(|| format!("describing `{name}`"))?;
        let mut workers: Vec<WorkerInfo> = beats
            .values()
            .map(|b| WorkerInfo {
                port: b.port,
                pid: b.pid,
                components: details
                    .components
                    .iter()
                    .filter(|c| c.tasks.iter().any(|t| b.tasks.contains(t)))
                    .map(|c| c.id.clone())
                    .collect(),
            })
            .collect();
        workers.sort_by_key(|w| w.port);
        Ok(workers)
    }

    /// Kills a topology and waits until its workers exited.
    fn kill(&mut self, name: &str, workers: &[WorkerInfo]) -> anyhow::Result<TopologySummary> {
        let summary = self.client.kill(name, 0).with_context(|| format!("killing `{name}`"))?;
        let pids: Vec<u32> = workers.iter().map(|w| w.pid).collect();
        self.wait_for(&format!("the workers of `{name}` to exit"), DAEMON_TIMEOUT, Duration::from_millis(100), |c| {
            let gone = pids.iter().all(|p| !alive(*p));
            let removed = c.zk(c.state.topology(name))?.is_none();
            Ok((gone && removed).then_some(()))
        })?;
        Ok(summary)
    }

    /// What the cluster says about its topologies, and the ends of the worker logs.
    fn diagnostics(&self) -> String {
        let mut text = String::new();
        match self.client.list() {
            Ok(topologies) => {
                for t in topologies {
                    text.push_str(&format!(
                        "topology `{}`: {}, {}/{} workers running{}\n",
                        t.name,
                        t.status,
                        t.workers_running,
                        t.workers,
                        t.reason.map(|r| format!(" ({r})")).unwrap_or_default()
                    ));
                }
            }
            Err(e) => text.push_str(&format!("cannot list topologies: {e}\n")),
        }
        for entry in std::fs::read_dir(self.supervisor_dir.join("workers")).into_iter().flatten().flatten() {
            let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            text.push_str(&format!(
                "--- worker log {}\n{}\n",
                entry.path().display(),
                lines[lines.len().saturating_sub(15)..].join("\n")
            ));
        }
        text
    }

    /// Stops the supervisor and Nimbus, reporting how they ended.
    fn stop(&mut self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if let Some(stop) = self.stop_supervisor.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.supervisor.take() {
            match self.runtime.block_on(async { tokio::time::timeout(Duration::from_secs(15), handle).await }) {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => problems.push(format!("the supervisor failed: {e}")),
                Ok(Err(e)) => problems.push(format!("the supervisor panicked: {e}")),
                Err(_) => problems.push("the supervisor did not stop within 15 s".to_owned()),
            }
        }
        if let Some(stop) = self.stop_nimbus.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.nimbus.take() {
            match self.runtime.block_on(async { tokio::time::timeout(Duration::from_secs(15), handle).await }) {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => problems.push(format!("Nimbus failed: {e}")),
                Ok(Err(e)) => problems.push(format!("Nimbus panicked: {e}")),
                Err(_) => problems.push("Nimbus did not stop within 15 s".to_owned()),
            }
        }
        let state = self.state.clone();
        self.runtime.block_on(async move { tokio::time::timeout(Duration::from_secs(5), state.close()).await.ok() });
        self.kill_workers();
        if problems.is_empty() { Ok(()) } else { bail!("{}", problems.join("; ")) }
    }

    /// Kills (SIGKILL) every worker still running that this run's supervisor started: those
    /// seen in heartbeats and those in its pid files.
    fn kill_workers(&mut self) {
        let mut pids = self.pids.clone();
        for entry in std::fs::read_dir(self.supervisor_dir.join("pids")).into_iter().flatten().flatten() {
            if let Ok(pid) = std::fs::read_to_string(entry.path()).unwrap_or_default().trim().parse::<u32>() {
                pids.insert(pid);
            }
        }
        for pid in pids {
            // Only processes running a binary from this supervisor's artifact directory.
            let ours =
                std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe.starts_with(&self.supervisor_dir));
            if alive(pid) && ours && self.killed.insert(pid) {
                eprintln!("killing leftover worker {pid}");
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_workers();
        // The daemons' tasks end with the runtime; ZooKeeper is killed when dropped.
        let _ = &self.zookeeper;
    }
}
