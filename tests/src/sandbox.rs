//! `ClusterSandbox`: a real Squall cluster on loopback for tests — a ZooKeeper server, Nimbus
//! processes and supervisor processes started from the `squall` binary, each with its own
//! directory and log, all killed when the sandbox is dropped (after Quickwit's `ClusterSandbox`).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use squall_cluster::testing::ZooKeeperServer;

/// A daemon process of the sandbox.
pub struct Daemon {
    child: Option<Child>,
    /// Its log file.
    pub log: PathBuf,
    /// Its `host:port` (Nimbus) or id (supervisor).
    pub name: String,
    /// Its local directory.
    pub dir: PathBuf,
}

impl Daemon {
    /// Kills it with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The tail of its log, for assertion messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A free loopback port (bound, then released), never handed out twice by one test process.
///
/// Ports come from below the kernel's ephemeral range (32768 and up on Linux): a port the
/// kernel picks for `bind(0)` can be picked again, or become the source port of some outgoing
/// connection, before the daemon it was meant for binds it, and two supervisors offering one
/// worker port route tuples to the wrong process.
pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    // Test binaries run one after another; each starts elsewhere in the range.
    let next = NEXT.get_or_init(|| AtomicU32::new(std::process::id().wrapping_mul(2_654_435_761) % SPAN));
    for _ in 0..SPAN {
        let port = (FIRST + next.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + SPAN)
}

/// The workspace's `target/<profile>` directory, from the test executable's location.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/debug/deps/<test> → target/debug
    exe.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default()
}

/// Builds (once per test process) and returns the `squall` CLI binary.
pub fn squall_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-q", "-p", "squall-cli"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status();
            assert!(status.is_ok_and(|s| s.success()), "building the squall CLI (cargo build -p squall-cli) failed");
            let path = target_dir().join("squall");
            assert!(path.is_file(), "the squall CLI is not at {}", path.display());
            path
        })
        .clone()
}

/// A running test cluster.
pub struct ClusterSandbox {
    /// The ZooKeeper server.
    pub zookeeper: ZooKeeperServer,
    /// The sandbox directory (logs, local dirs, test output).
    pub dir: tempfile::TempDir,
    /// The Nimbus processes.
    pub nimbuses: Vec<Daemon>,
    /// The supervisor processes.
    pub supervisors: Vec<Daemon>,
    /// The squall.toml all processes and CLI calls use.
    pub config: PathBuf,
    /// Where test topologies write their results (`SQUALL_TEST_OUT`).
    pub out: PathBuf,
    nimbus_ports: Vec<u16>,
    squall: PathBuf,
    env: Vec<(String, String)>,
    /// The host supervisors advertise (`--host`), when not loopback.
    supervisor_host: Option<String>,
}

/// Timeouts short enough for tests (Storm's names).
const SETTINGS: &str = r#"
[nimbus]
task_timeout_secs = 6
supervisor_timeout_secs = 4
task_launch_secs = 20
monitor_freq_secs = 1

[supervisor]
worker_timeout_secs = 6
worker_start_timeout_secs = 20
monitor_freq_secs = 1
"#;

impl ClusterSandbox {
    /// Starts ZooKeeper, `nimbuses` Nimbus processes, and `supervisors` supervisors with
    /// `slots` worker ports each. Panics, saying why, when something does not come up.
    pub fn start(nimbuses: usize, supervisors: usize, slots: usize) -> ClusterSandbox {
        ClusterSandbox::start_with(nimbuses, supervisors, slots, &[])
    }

    /// [`ClusterSandbox::start`] with extra environment variables for every daemon (and so
    /// every worker), e.g. to size a test topology.
    pub fn start_with(nimbuses: usize, supervisors: usize, slots: usize, env: &[(&str, &str)]) -> ClusterSandbox {
        ClusterSandbox::start_full(nimbuses, supervisors, slots, env, None)
    }

    /// [`ClusterSandbox::start_with`] for a cluster that spans network namespaces: ZooKeeper
    /// listens on every address, and the supervisors' workers listen on and advertise `host`
    /// (an address of this namespace that the others can reach).
    pub fn start_exposed(
        nimbuses: usize,
        supervisors: usize,
        slots: usize,
        env: &[(&str, &str)],
        host: &str,
    ) -> ClusterSandbox {
        ClusterSandbox::start_full(nimbuses, supervisors, slots, env, Some(host))
    }

    fn start_full(
        nimbuses: usize,
        supervisors: usize,
        slots: usize,
        env: &[(&str, &str)],
        supervisor_host: Option<&str>,
    ) -> ClusterSandbox {
        let zookeeper = match supervisor_host {
            Some(_) => ZooKeeperServer::start_on(std::net::Ipv4Addr::UNSPECIFIED),
            None => ZooKeeperServer::start(),
        }
        .unwrap_or_else(|e| panic!("cannot start ZooKeeper: {e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let nimbus_ports: Vec<u16> = (0..nimbuses).map(|_| free_port()).collect();
        let seeds: Vec<String> = nimbus_ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
        let config = dir.path().join("squall.toml");
        let text = format!(
            "[zookeeper]\nservers = \"{}\"\nchroot = \"/squall\"\nsession_timeout_secs = 4\n\n[nimbus]\nseeds = [{}]\n{}",
            zookeeper.connect_string(),
            seeds.join(", "),
            SETTINGS.trim_start().trim_start_matches("[nimbus]\n")
        );
        std::fs::write(&config, text).unwrap_or_else(|e| panic!("cannot write squall.toml: {e}"));
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("cannot create {}: {e}", out.display()));
        let mut sandbox = ClusterSandbox {
            zookeeper,
            dir,
            nimbuses: Vec::new(),
            supervisors: Vec::new(),
            config,
            out,
            nimbus_ports,
            squall: squall_binary(),
            env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            supervisor_host: supervisor_host.map(str::to_owned),
        };
        for i in 0..nimbuses {
            sandbox.start_nimbus(i);
        }
        sandbox.wait_for("a nimbus to lead", Duration::from_secs(30), |s| s.cli(&["list"]).status.success());
        for i in 0..supervisors {
            sandbox.start_supervisor(i, slots);
        }
        sandbox
    }

    fn spawn(&self, args: &[String], log: &Path) -> Child {
        self.spawn_in(None, &self.config, args, log)
    }

    /// Spawns the `squall` binary with `config`, inside network namespace `netns` if given.
    fn spawn_in(&self, netns: Option<&str>, config: &Path, args: &[String], log: &Path) -> Child {
        let file = |p: &Path| std::fs::OpenOptions::new().create(true).append(true).open(p);
        let (stdout, stderr) = match (file(log), file(log)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => panic!("cannot open {}: {e}", log.display()),
        };
        let mut command = match netns {
            // `ip netns exec` execs the binary: the child's pid is the daemon's.
            Some(netns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", netns]).arg(&self.squall);
                c
            }
            None => Command::new(&self.squall),
        };
        command
            .arg("--config")
            .arg(config)
            .args(args)
            .env("SQUALL_TEST_OUT", &self.out)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.squall.display()))
    }

    /// Starts Nimbus number `i` (again, after a kill).
    pub fn start_nimbus(&mut self, i: usize) {
        let port = self.nimbus_ports[i];
        let dir = self.dir.path().join(format!("nimbus-{i}"));
        let log = self.dir.path().join(format!("nimbus-{i}.log"));
        let args =
            vec!["nimbus".into(), "--port".into(), port.to_string(), "--local-dir".into(), dir.display().to_string()];
        let child = self.spawn(&args, &log);
        let daemon = Daemon { child: Some(child), log, name: format!("127.0.0.1:{port}"), dir };
        if i < self.nimbuses.len() {
            self.nimbuses[i] = daemon;
        } else {
            self.nimbuses.push(daemon);
        }
    }

    /// Starts supervisor number `i` with `slots` ports.
    pub fn start_supervisor(&mut self, i: usize, slots: usize) {
        let host = self.supervisor_host.clone();
        let config = self.config.clone();
        self.start_supervisor_in(i, slots, None, host.as_deref(), &config);
    }

    /// Starts supervisor number `i` inside network namespace `netns`, advertising `host`, with
    /// its own settings file (one that names ZooKeeper by an address reachable from there).
    /// Its workers run there too. Its topology binaries must already be in its
    /// `artifacts/` directory (see [`ClusterSandbox::seed_artifact`]) when Nimbus is not
    /// reachable from the namespace.
    pub fn start_supervisor_in(
        &mut self,
        i: usize,
        slots: usize,
        netns: Option<&str>,
        host: Option<&str>,
        config: &Path,
    ) {
        let ports: Vec<String> = (0..slots).map(|_| free_port().to_string()).collect();
        let id = format!("supervisor-{i}");
        let dir = self.dir.path().join(&id);
        let log = self.dir.path().join(format!("{id}.log"));
        let mut args = vec![
            "supervisor".into(),
            "--id".into(),
            id.clone(),
            "--ports".into(),
            ports.join(","),
            "--local-dir".into(),
            dir.display().to_string(),
        ];
        if let Some(host) = host {
            args.extend(["--host".to_owned(), host.to_owned()]);
        }
        let child = self.spawn_in(netns, config, &args, &log);
        let daemon = Daemon { child: Some(child), log, name: id, dir };
        if i < self.supervisors.len() {
            self.supervisors[i] = daemon;
        } else {
            self.supervisors.push(daemon);
        }
    }

    /// Puts `binary` into supervisor `i`'s artifact store under its SHA-256, as if it had been
    /// downloaded from Nimbus.
    pub fn seed_artifact(&self, i: usize, binary: &Path) {
        let output = Command::new("sha256sum").arg(binary).output();
        let hash = match &output {
            Ok(o) if o.status.success() => {
                String::from_utf8_lossy(&o.stdout).split_whitespace().next().map(str::to_owned)
            }
            _ => None,
        }
        .unwrap_or_else(|| panic!("cannot hash {}: {output:?}", binary.display()));
        let artifacts = self.dir.path().join(format!("supervisor-{i}")).join("artifacts");
        std::fs::create_dir_all(&artifacts).unwrap_or_else(|e| panic!("cannot create {}: {e}", artifacts.display()));
        std::fs::copy(binary, artifacts.join(&hash))
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", binary.display()));
    }

    /// Writes a settings file like the sandbox's own, but naming ZooKeeper at `zookeeper_host`.
    pub fn settings_via(&self, zookeeper_host: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self.config).unwrap_or_else(|e| panic!("cannot read squall.toml: {e}"));
        let text =
            text.replace(&self.zookeeper.connect_string(), &format!("{zookeeper_host}:{}", self.zookeeper.port()));
        let path = self.dir.path().join(format!("squall-via-{zookeeper_host}.toml"));
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// Runs the `squall` CLI against this cluster.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_env(args, &[])
    }

    /// Runs the CLI with extra environment variables (what `squall query` passes to the
    /// topology's binary).
    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(&self.squall)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.squall.display()))
    }

    /// Runs the CLI and returns its stdout, panicking with its stderr when it fails.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(
            output.status.success(),
            "`squall {}` failed: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Nimbus `i`'s HTTP address, `127.0.0.1:<port>`.
    pub fn nimbus_address(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nimbus_ports[i])
    }

    /// `squall describe NAME --json`.
    pub fn describe(&self, name: &str) -> serde_json::Value {
        let text = self.cli_ok(&["describe", name, "--json"]);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("describe printed bad JSON ({e}): {text}"))
    }

    /// Polls `check` until it holds, panicking with the daemons' logs after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut check: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if check(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("timed out after {timeout:?} waiting for {what}\n{}", self.logs());
    }

    /// A JSON file the test topology wrote into `SQUALL_TEST_OUT`.
    pub fn output(&self, name: &str) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.out.join(name)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Every `acked-<task>.json` the test topology's spouts wrote.
    pub fn spout_reports(&self) -> Vec<serde_json::Value> {
        let mut reports = Vec::new();
        for entry in std::fs::read_dir(&self.out).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("acked-") && name.ends_with(".json") {
                reports.extend(self.output(&name));
            }
        }
        reports
    }

    /// The pids of the workers a supervisor started, by port (from its pid files).
    pub fn worker_pids(&self, supervisor: usize) -> BTreeMap<u16, u32> {
        let dir = self.supervisors[supervisor].dir.join("pids");
        let mut pids = BTreeMap::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let port = entry.file_name().to_string_lossy().parse::<u16>();
            let pid = std::fs::read_to_string(entry.path()).ok().and_then(|t| t.trim().parse::<u32>().ok());
            if let (Ok(port), Some(pid)) = (port, pid) {
                pids.insert(port, pid);
            }
        }
        pids
    }

    /// The tails of every daemon log and worker log, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for d in self.nimbuses.iter().chain(&self.supervisors) {
            text.push_str(&format!("--- {} ({})\n{}\n", d.name, d.log.display(), d.log_tail()));
            for entry in std::fs::read_dir(d.dir.join("workers")).into_iter().flatten().flatten() {
                text.push_str(&format!("--- worker log {}\n{}\n", entry.path().display(), tail(&entry.path())));
            }
        }
        text
    }
}

impl Drop for ClusterSandbox {
    fn drop(&mut self) {
        // Workers are the supervisors' children but outlive them (as in Storm): kill them too.
        for i in 0..self.supervisors.len() {
            for pid in self.worker_pids(i).values() {
                kill9(*pid);
            }
        }
    }
}

/// Kills a process with SIGKILL.
pub fn kill9(pid: u32) {
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
}
