//! `squall`: submit and manage topologies on a Squall cluster, and run its daemons.

mod daemons;
mod output;
mod settings;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use squall_nimbus::api::{
    RebalanceRequest, SubmitRequest, SupervisorSummary, TopologyDetails, TopologySummary, check_topology_name,
};
use squall_nimbus::client::NimbusClient;
use squall_topology::{Config, TopologySpec};

use crate::output::out;
use crate::settings::Settings;

#[derive(Parser, Debug)]
#[command(name = "squall", version, about = "Submit and manage Squall topologies; run Nimbus and supervisors")]
struct Cli {
    /// Cluster settings (default: ./squall.toml when it exists, else everything on localhost).
    #[arg(long, global = true, env = "SQUALL_CONF")]
    config: Option<PathBuf>,
    /// Nimbus addresses (`host:port`), overriding `nimbus.seeds`.
    #[arg(long, global = true, value_delimiter = ',')]
    nimbus: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Upload a topology binary and run it on the cluster.
    Submit {
        /// The topology program (built with `squall::main`).
        binary: PathBuf,
        /// The topology's name: ASCII letters, digits, `_` and `-`.
        #[arg(long)]
        name: String,
        /// Override a config key, e.g. `-c topology.workers=4`. Repeatable.
        #[arg(short = 'c', long = "config-value", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Start with spouts deactivated.
        #[arg(long)]
        inactive: bool,
        /// How long to wait for every worker to run, in seconds (0: do not wait).
        #[arg(long, default_value_t = 60)]
        wait: u64,
    },
    /// Kill a topology: deactivate its spouts, let it drain for `--wait` seconds, stop it.
    Kill {
        /// The topology.
        name: String,
        /// Seconds to drain before stopping (Storm's `-w`).
        #[arg(short, long, default_value_t = 30)]
        wait: u64,
    },
    /// Let a topology's spouts emit.
    Activate {
        /// The topology.
        name: String,
    },
    /// Stop a topology's spouts from emitting; bolts go on.
    Deactivate {
        /// The topology.
        name: String,
    },
    /// Change a topology's number of workers or a component's parallelism.
    Rebalance {
        /// The topology.
        name: String,
        /// The new number of workers.
        #[arg(short = 'n', long)]
        workers: Option<u32>,
        /// `component=parallelism`. Repeatable.
        #[arg(short = 'e', long = "executors", value_name = "COMPONENT=N")]
        executors: Vec<String>,
    },
    /// List the topologies.
    List,
    /// List the live supervisors and their worker slots.
    Supervisors,
    /// Show where a topology runs and its counters.
    Describe {
        /// The topology.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a running topology's log filter (`tracing`'s syntax: `debug`,
    /// `my_topology=trace,squall=info`), for a while or until reset.
    SetLogLevel {
        /// The topology.
        name: String,
        /// The filter; leave it out with `--reset`.
        #[arg(required_unless_present = "reset")]
        filter: Option<String>,
        /// How long it holds: `90`, `90s`, `5m`, `2h` (default: until reset).
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        for_: Option<Duration>,
        /// Go back to the workers' own filter.
        #[arg(long, conflicts_with = "filter")]
        reset: bool,
    },
    /// Watch a topology's throughput per component, live (Storm's `monitor`): every interval,
    /// tuples per second emitted, executed, acked and failed since the one before.
    Monitor {
        /// The topology.
        name: String,
        /// Seconds between samples.
        #[arg(short, long, default_value_t = 2)]
        interval: u64,
        /// Only this component.
        #[arg(short = 'm', long)]
        component: Option<String>,
        /// Stop after this many samples (default: until interrupted).
        #[arg(short = 'n', long)]
        samples: Option<u64>,
    },
    /// Print a topology's worker logs, fetched from their supervisors' logviewers (Storm's
    /// logviewer); each line starts with its worker's `host:port`.
    Logs {
        /// The topology.
        name: String,
        /// Only the workers running this component.
        #[arg(short = 'm', long)]
        component: Option<String>,
        /// Keep printing new lines as they are written (Ctrl-C stops).
        #[arg(short, long)]
        follow: bool,
        /// Bytes from the end of each log to start with.
        #[arg(long, default_value_t = 8192)]
        tail: u64,
    },
    /// Read a running topology's state by key: runs the topology's own binary (fetched from
    /// Nimbus) in query mode, which opens the state's store as the topology does (give it the
    /// same environment). Prints one JSON line per key.
    Query {
        /// The topology.
        name: String,
        /// The state (for Trident, the name given to its `StateSpec`).
        state: String,
        /// Keys: JSON (`5`, `"5"`, `["a", 1]` for several key fields) or a plain string.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Run a Nimbus (the master).
    Nimbus {
        /// The host to advertise.
        #[arg(long)]
        host: Option<String>,
        /// The port of the HTTP API.
        #[arg(long)]
        port: Option<u16>,
        /// Where to keep artifacts.
        #[arg(long)]
        local_dir: Option<PathBuf>,
    },
    /// Run a supervisor (a node daemon that runs workers).
    Supervisor {
        /// Its id.
        #[arg(long)]
        id: Option<String>,
        /// The host its workers advertise.
        #[arg(long)]
        host: Option<String>,
        /// Worker ports, e.g. `6700,6701`.
        #[arg(long, value_delimiter = ',')]
        ports: Vec<u16>,
        /// Where to keep artifacts and worker logs.
        #[arg(long)]
        local_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Daemons' output usually goes to a log file: colour codes only on a terminal.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour_logs())
        .try_init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`squall describe wc | head`): nothing left to say.
        Err(e) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each cause only when the messages before it do not already
/// quote it (many of our errors end with their source's text).
fn error_chain(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // A bad name is the cheapest mistake to report: before reading settings or the binary.
    if let Command::Submit { name, .. } = &cli.command {
        check_topology_name(name)?;
    }
    let mut settings = Settings::load(cli.config.as_deref())?;
    if !cli.nimbus.is_empty() {
        for seed in &cli.nimbus {
            settings::check_seed(seed).map_err(|why| {
                anyhow::anyhow!("`--nimbus {seed}` is not a Nimbus address: {why}; e.g. --nimbus localhost:6627")
            })?;
        }
        settings.nimbus.seeds = cli.nimbus.clone();
    }
    // A dead leader's election node lives for a ZooKeeper session timeout: wait a little longer.
    let failover_wait = Duration::from_secs(2 * settings.zookeeper.session_timeout_secs + 5);
    let client = NimbusClient::new(settings.nimbus.seeds.clone(), Duration::from_secs(60))
        .with_failover_wait(failover_wait)
        .on_retry(|message| {
            let _ = writeln!(std::io::stderr(), "note: {message}");
        });
    match cli.command {
        Command::Submit { binary, name, overrides, inactive, wait } => {
            submit(&client, &binary, &name, &overrides, inactive, wait)
        }
        Command::Kill { name, wait } => {
            let summary = client.kill(&name, wait)?;
            out!("killing topology `{}`: spouts deactivated, stopping in {wait} s", summary.name);
            Ok(())
        }
        Command::Activate { name } => {
            client.activate(&name)?;
            out!("activated topology `{name}`");
            Ok(())
        }
        Command::Deactivate { name } => {
            client.deactivate(&name)?;
            out!("deactivated topology `{name}`");
            Ok(())
        }
        Command::Rebalance { name, workers, executors } => {
            let mut parallelism = BTreeMap::new();
            for assignment in &executors {
                let (component, n) = assignment
                    .split_once('=')
                    .with_context(|| format!("`-e {assignment}` is not of the form component=parallelism"))?;
                let n: u32 = n.trim().parse().with_context(|| format!("`{n}` in `-e {assignment}` is not a number"))?;
                parallelism.insert(component.trim().to_owned(), n);
            }
            if workers.is_none() && parallelism.is_empty() {
                bail!("nothing to rebalance: give -n WORKERS and/or -e COMPONENT=N");
            }
            let summary = client.rebalance(&name, &RebalanceRequest { workers, parallelism })?;
            out!("rebalancing topology `{}` to {} workers", summary.name, summary.workers);
            Ok(())
        }
        Command::List => print_list(&client.list()?),
        Command::Supervisors => print_supervisors(&client.supervisors()?),
        Command::Describe { name, json } => {
            let details = client.describe(&name)?;
            if json {
                out!("{}", serde_json::to_string_pretty(&details)?);
                Ok(())
            } else {
                print_details(&details)
            }
        }
        Command::Query { name, state, keys } => query(&client, &name, &state, &keys),
        Command::SetLogLevel { name, filter, for_, reset: _ } => {
            let request =
                squall_nimbus::api::LogLevelRequest { filter: filter.clone(), for_secs: for_.map(|d| d.as_secs()) };
            client.set_log_level(&name, &request)?;
            match (filter, for_) {
                (Some(filter), Some(d)) => out!("topology `{name}` logs with `{filter}` for {} s", d.as_secs()),
                (Some(filter), None) => out!("topology `{name}` logs with `{filter}` until reset"),
                (None, _) => out!("topology `{name}` logs with its workers' own filter again"),
            }
            Ok(())
        }
        Command::Logs { name, component, follow, tail } => logs(&client, &name, component.as_deref(), follow, tail),
        Command::Monitor { name, interval, component, samples } => {
            monitor(&client, &name, Duration::from_secs(interval.max(1)), component.as_deref(), samples)
        }
        Command::Nimbus { host, port, local_dir } => {
            if let Some(host) = host {
                settings.nimbus.host = host;
            }
            if let Some(port) = port {
                settings.nimbus.port = port;
            }
            if let Some(dir) = local_dir {
                settings.nimbus.local_dir = dir;
            }
            daemons::nimbus(&settings)
        }
        Command::Supervisor { id, host, ports, local_dir } => {
            if id.is_some() {
                settings.supervisor.id = id;
            }
            if let Some(host) = host {
                settings.supervisor.host = host;
            }
            if !ports.is_empty() {
                settings.supervisor.ports = ports;
            }
            if let Some(dir) = local_dir {
                settings.supervisor.local_dir = dir;
            }
            daemons::supervisor(&settings)
        }
    }
}

/// The binary to run: a relative path is made absolute, so `wcbin` means the file in the current
/// directory, not a program looked up in `PATH`.
fn resolve_binary(binary: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(binary).with_context(|| format!("cannot resolve the path {}", binary.display()))
}

/// Runs the binary with `--describe` to learn its spec, which also proves it is a topology program.
fn describe_binary(binary: &Path) -> anyhow::Result<TopologySpec> {
    let meta = std::fs::metadata(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    if !meta.is_file() {
        bail!("{} is not a file", binary.display());
    }
    let output = std::process::Command::new(binary)
        .arg("--describe")
        .env("RUST_LOG", "error")
        .output()
        .with_context(|| format!("cannot run {}; is it an executable built for this machine?", binary.display()))?;
    let not_topology = |why: String| {
        anyhow::anyhow!(
            "{} is not a Squall topology binary: running it with --describe {why}; build it with `squall::main`",
            binary.display()
        )
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(not_topology(format!("failed ({}): {}", output.status, stderr.lines().last().unwrap_or(""))));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| not_topology(format!("did not print a topology spec ({e})")))
}

fn submit(
    client: &NimbusClient,
    binary: &Path,
    name: &str,
    overrides: &[String],
    inactive: bool,
    wait: u64,
) -> anyhow::Result<()> {
    let binary = &resolve_binary(binary)?;
    let spec = describe_binary(binary)?;
    let mut config = Config::default();
    let mut overrides_map = BTreeMap::new();
    for assignment in overrides {
        config.apply_override(assignment)?;
        if let Some((k, v)) = assignment.split_once('=') {
            overrides_map.insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
    // Before the upload: a taken name (or no leader) should not cost the upload's time.
    client.check_name_free(name)?;
    let bytes = std::fs::read(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    let bar = ProgressBar::new(bytes.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("uploading {bytes:>10} / {total_bytes} [{bar:30}] {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let uploaded = client.upload(&bytes, &mut |sent| bar.set_position(sent))?;
    bar.finish_and_clear();
    out!("uploaded {} ({} bytes, sha256 {})", binary.display(), uploaded.size, uploaded.hash.get(..12).unwrap_or(""));
    let request =
        SubmitRequest { name: name.to_owned(), artifact: uploaded.hash, spec, config: overrides_map, inactive };
    let summary = client.submit(&request)?;
    out!("submitted topology `{}` (id {}) with {} workers", summary.name, summary.id, summary.workers);
    if wait == 0 {
        return Ok(());
    }
    let spinner = ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(120));
    let deadline = Instant::now() + Duration::from_secs(wait);
    loop {
        let details = client.describe(name)?;
        let s = &details.summary;
        spinner.set_message(format!(
            "{}/{} workers running{}",
            s.workers_running,
            s.workers,
            s.reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
        ));
        if s.workers_running >= s.workers && s.workers > 0 {
            spinner.finish_and_clear();
            out!("topology `{name}` is running:");
            for w in &details.workers {
                out!("  {}:{} on supervisor {} — tasks {:?}", w.host, w.port, w.supervisor, w.tasks);
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            spinner.finish_and_clear();
            bail!(
                "topology `{name}` was submitted but is not running after {wait} s: {}/{} workers up{}; see `squall describe {name}`",
                s.workers_running,
                s.workers,
                s.reason.as_ref().map(|r| format!(", {r}")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn print_list(topologies: &[TopologySummary]) -> anyhow::Result<()> {
    if topologies.is_empty() {
        out!("no topologies");
        return Ok(());
    }
    out!("{:<20} {:<10} {:>8} {:>6} {:>8}  note", "name", "status", "workers", "tasks", "uptime");
    for t in topologies {
        out!(
            "{:<20} {:<10} {:>3}/{:<4} {:>6} {:>7}s  {}",
            t.name,
            t.status,
            t.workers_running,
            t.workers,
            t.tasks,
            t.uptime_secs,
            t.reason.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

fn print_supervisors(supervisors: &[SupervisorSummary]) -> anyhow::Result<()> {
    if supervisors.is_empty() {
        out!("no supervisors; start one with `squall supervisor`");
        return Ok(());
    }
    out!("{:<24} {:<16} {:>5} {:>8}  ports", "id", "host", "used", "uptime");
    for s in supervisors {
        let ports: Vec<String> = s.ports.iter().map(u16::to_string).collect();
        out!(
            "{:<24} {:<16} {:>2}/{:<2} {:>7}s  {}",
            s.id,
            s.host,
            s.used_ports.len(),
            s.ports.len(),
            s.uptime_secs,
            ports.join(",")
        );
    }
    Ok(())
}

fn print_details(details: &TopologyDetails) -> anyhow::Result<()> {
    let s = &details.summary;
    out!(
        "topology `{}` (id {}): {}, {}/{} workers, {} tasks, up {} s",
        s.name,
        s.id,
        s.status,
        s.workers_running,
        s.workers,
        s.tasks,
        s.uptime_secs
    );
    if let Some(reason) = &s.reason {
        out!("  note: {reason}");
    }
    out!("workers:");
    for w in &details.workers {
        let beat = w.heartbeat_age_ms.map(|ms| format!("{ms} ms ago")).unwrap_or_else(|| "never".into());
        let usage = match (w.rss_bytes, w.cpu_seconds) {
            (Some(rss), Some(cpu)) => format!(" rss {} MB cpu {cpu:.1} s", rss / (1 << 20)),
            _ => String::new(),
        };
        out!("  {}:{} supervisor {} tasks {:?} heartbeat {beat}{usage}", w.host, w.port, w.supervisor, w.tasks);
        if let Some(t) = &w.transport {
            let get = |k: &str| t.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
            out!(
                "    transport: sent {} MB ({} tuples) received {} MB ({} tuples) reconnects {} lost connections {}",
                get("bytes_sent") / (1 << 20),
                get("tuples_sent"),
                get("bytes_received") / (1 << 20),
                get("tuples_received"),
                get("reconnects"),
                get("connections_lost"),
            );
            for lane in t.get("lanes").and_then(|l| l.as_array()).into_iter().flatten() {
                let text = |k: &str| lane.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_owned();
                let n = |k: &str| lane.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
                let up = if lane.get("connected").and_then(|v| v.as_bool()) == Some(true) { "up" } else { "down" };
                out!("    lane {}@{} {up} depth {}/{}", text("component"), text("peer"), n("depth"), n("capacity"));
            }
        }
    }
    out!("components:");
    for c in &details.components {
        let m = &c.metrics;
        let get = |k: &str| m.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        out!(
            "  {:<16} {:<6} p={:<3} tasks {:?} emitted {} executed {} acked {} failed {} errors {}",
            c.id,
            c.kind,
            c.parallelism,
            c.tasks,
            get("emitted"),
            get("executed"),
            get("acked"),
            get("failed"),
            get("errors")
        );
        if let Some(upstream) = &c.chained_to {
            out!("    chained to {upstream}: runs inside its executors, no queue between them");
        }
        if get("stalled") > 0 {
            let secs = get("current_call_ms") / 1000;
            out!("    STALLED: {} executor(s) inside one call, the longest for {secs} s", get("stalled"));
        }
        // Its newest errors, with their tasks and times.
        for error in m.get("recent_errors").and_then(|e| e.as_array()).into_iter().flatten() {
            let task = error.get("task").and_then(|t| t.as_u64()).unwrap_or(0);
            let at = error.get("time_secs").and_then(|t| t.as_u64()).unwrap_or(0);
            let message = error.get("message").and_then(|m| m.as_str()).unwrap_or("");
            out!("    error (task {task}, unix time {at}): {message}");
        }
        // What its tasks report about themselves, such as a Kafka spout's partitions.
        for (task, status) in m.get("status").and_then(|s| s.as_object()).into_iter().flatten() {
            for (key, value) in status.as_object().into_iter().flatten() {
                out!("    {task} {key}: {value}");
            }
        }
    }
    Ok(())
}

/// Colour codes in logs only on a terminal, and not when `NO_COLOR` is set (no-color.org).
fn colour_logs() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `squall query`: fetches the topology's binary from the leading Nimbus and runs it as
/// A duration as `90`, `90s`, `5m` or `2h`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = digits.parse().map_err(|_| format!("`{text}` is not a duration such as 90s, 5m or 2h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        other => return Err(format!("unknown unit `{other}` in `{text}`: use s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

/// One worker log `squall logs` reads: where, how far it got, and a line not yet complete.
struct LogCursor {
    worker: String,
    url: String,
    offset: Option<u64>,
    partial: String,
}

/// Prints the workers' logs (those running `component`, if given), then with `follow` what they
/// add, once a second.
fn logs(client: &NimbusClient, name: &str, component: Option<&str>, follow: bool, tail: u64) -> anyhow::Result<()> {
    let details = client.describe(name)?;
    let tasks: Option<Vec<u32>> = match component {
        None => None,
        Some(id) => match details.components.iter().find(|c| c.id == id) {
            Some(c) => Some(c.tasks.clone()),
            None => {
                let known: Vec<&str> = details.components.iter().map(|c| c.id.as_str()).collect();
                bail!("topology `{name}` has no component `{id}`; its components are: {}", known.join(", "));
            }
        },
    };
    let mut cursors = Vec::new();
    for w in &details.workers {
        if tasks.as_ref().is_some_and(|t| !w.tasks.iter().any(|task| t.contains(task))) {
            continue;
        }
        let worker = format!("{}:{}", w.host, w.port);
        let Some(url) = w.log_url.clone() else {
            bail!(
                "worker {worker} has no logviewer (its supervisor {} predates it); its log is in the supervisor's local_dir/workers",
                w.supervisor
            );
        };
        cursors.push(LogCursor { worker, url, offset: None, partial: String::new() });
    }
    if cursors.is_empty() {
        bail!("topology `{name}` has no workers running yet; see `squall describe {name}`");
    }
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).build().into();
    loop {
        for cursor in &mut cursors {
            let url = match cursor.offset {
                Some(offset) => format!("{}?start={offset}", cursor.url),
                None => format!("{}?tail={tail}", cursor.url),
            };
            let mut response = match agent.get(&url).call() {
                Ok(response) => response,
                Err(e) if follow => {
                    eprintln!("cannot read {} ({e}); trying again", cursor.url);
                    continue;
                }
                Err(e) => bail!("cannot read the log of worker {} at {}: {e}", cursor.worker, cursor.url),
            };
            let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            let (start, size) = (header("x-log-start").unwrap_or(0), header("x-log-size").unwrap_or(0));
            let bytes = response.body_mut().with_config().limit(2 << 20).read_to_vec().unwrap_or_default();
            if cursor.offset.is_some_and(|o| size < o) {
                // The log was truncated: start it over.
                cursor.offset = Some(0);
                continue;
            }
            cursor.offset = Some(start + bytes.len() as u64);
            cursor.partial.push_str(&String::from_utf8_lossy(&bytes));
            while let Some(end) = cursor.partial.find('\n') {
                let line: String = cursor.partial.drain(..=end).collect();
                out!("[{}] {}", cursor.worker, line.trim_end_matches(['\n', '\r']));
            }
        }
        if !follow {
            for cursor in &cursors {
                if !cursor.partial.is_empty() {
                    out!("[{}] {}", cursor.worker, cursor.partial);
                }
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The counters `monitor` follows.
const MONITORED: [&str; 4] = ["emitted", "executed", "acked", "failed"];

/// Prints each component's rates every `interval`, from the differences between two describes.
fn monitor(
    client: &NimbusClient,
    name: &str,
    interval: Duration,
    only: Option<&str>,
    samples: Option<u64>,
) -> anyhow::Result<()> {
    let counters = |details: &TopologyDetails| -> BTreeMap<String, [u64; 4]> {
        details
            .components
            .iter()
            .filter(|c| only.is_none_or(|o| o == c.id))
            .map(|c| (c.id.clone(), MONITORED.map(|k| c.metrics.get(k).and_then(|v| v.as_u64()).unwrap_or(0))))
            .collect()
    };
    let first = client.describe(name)?;
    if let Some(only) = only.filter(|o| !first.components.iter().any(|c| c.id == *o)) {
        let known: Vec<&str> = first.components.iter().map(|c| c.id.as_str()).collect();
        bail!("topology `{name}` has no component `{only}`; its components are: {}", known.join(", "));
    }
    let (mut before, mut at) = (counters(&first), Instant::now());
    out!("watching topology `{name}` every {} s (tuples per second; Ctrl-C stops)", interval.as_secs());
    out!("{:<20} {:>12} {:>12} {:>12} {:>12}", "component", MONITORED[0], MONITORED[1], MONITORED[2], MONITORED[3]);
    let mut taken = 0;
    while samples.is_none_or(|n| taken < n) {
        std::thread::sleep(interval);
        let now = counters(&client.describe(name)?);
        let secs = at.elapsed().as_secs_f64().max(1e-3);
        at = Instant::now();
        for (component, values) in &now {
            let old = before.get(component).copied().unwrap_or_default();
            let rate = |i: usize| values[i].saturating_sub(old[i]) as f64 / secs;
            out!("{component:<20} {:>12.0} {:>12.0} {:>12.0} {:>12.0}", rate(0), rate(1), rate(2), rate(3));
        }
        out!("");
        before = now;
        taken += 1;
    }
    Ok(())
}

/// `<binary> query <state> <keys>…`, passing its output and exit status through.
fn query(client: &NimbusClient, name: &str, state: &str, keys: &[String]) -> anyhow::Result<()> {
    let details = client.describe(name)?;
    if details.artifact.is_empty() {
        bail!("Nimbus does not say which binary runs `{name}` (an older Nimbus?); upgrade it to query states");
    }
    let leader = client.leader()?;
    let binary = client
        .download(&leader, &details.artifact)
        .with_context(|| format!("cannot fetch the binary of `{name}` from {leader}"))?;
    let dir = tempfile::tempdir().context("cannot create a temp dir for the topology's binary")?;
    let path = dir.path().join(name);
    std::fs::write(&path, &binary).with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot make {} executable", path.display()))?;
    }
    let output = std::process::Command::new(&path)
        .arg("query")
        .arg(state)
        .args(keys)
        .output()
        .with_context(|| format!("cannot run the binary of `{name}`"))?;
    std::io::stdout().write_all(&output.stdout)?;
    if !output.status.success() {
        bail!("{}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_already_quoted_are_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let error = anyhow::Error::new(io).context("cannot listen on 127.0.0.1:6627: Address already in use");
        assert_eq!(error_chain(&error), "cannot listen on 127.0.0.1:6627: Address already in use");
        let error = anyhow::anyhow!("disk full").context("cannot write the artifact");
        assert_eq!(error_chain(&error), "cannot write the artifact: disk full");
    }
}
