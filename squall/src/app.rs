//! The entry point of a topology binary: one program that runs its topology locally, describes
//! it, and (with the cluster) submits itself or serves as a worker.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use squall_topology::{ConfigError, Topology, Value};
use squall_worker::{LocalCluster, LocalClusterError, RunReport};

/// Why a topology program could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The topology does not build (a `BuildError`, a Trident error, the build function's own).
    #[error("the topology does not build: {0}")]
    Build(String),
    /// A `-c key=value` override was rejected.
    #[error("bad config override: {0}")]
    Config(#[from] ConfigError),
    /// The local cluster refused.
    #[error(transparent)]
    Local(#[from] LocalClusterError),
    /// The async runtime could not start.
    #[error("cannot start the tokio runtime: {0}")]
    Runtime(std::io::Error),
    /// Tasks failed.
    #[error("{} task(s) failed; first: {}", .0.failures.len(), .0.failures.first().map(|f| f.to_string()).unwrap_or_default())]
    Failed(Box<RunReport>),
    /// A query could not be answered.
    #[error("query: {0}")]
    Query(String),
    /// Worker mode failed.
    #[error("worker: {0}")]
    Worker(Box<dyn std::error::Error + Send + Sync>),
}

#[derive(Parser, Debug)]
#[command(about = "A Squall topology program: runs its topology locally unless told otherwise")]
struct Cli {
    /// Print the topology's spec as JSON and exit.
    #[arg(long, global = true)]
    describe: bool,
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    local: LocalArgs,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Run the topology in this process (the default).
    Local(LocalArgs),
    /// Run one worker of the topology on a cluster (started by a supervisor).
    Worker(crate::worker_mode::WorkerArgs),
    /// Read a state's current values by key while the topology runs (what `squall query` runs).
    Query(QueryArgs),
}

#[derive(Args, Debug, Clone)]
struct QueryArgs {
    /// The state's name.
    state: String,
    /// Keys: JSON (`5`, `"5"`, `["a", 1]` for a key of several fields) or else a plain string.
    keys: Vec<String>,
}

#[derive(Args, Debug, Clone, Default)]
struct LocalArgs {
    /// The topology's name (default: the program's name).
    #[arg(long)]
    name: Option<String>,
    /// Stop after this many seconds; by default run until the spouts are done, or Ctrl-C.
    #[arg(long)]
    seconds: Option<u64>,
    /// Override a config key, e.g. `-c topology.message.timeout.secs=10`. Repeatable.
    #[arg(short = 'c', long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
}

/// Runs a topology program: call it from `fn main` with the function that builds the topology.
///
/// ```no_run
/// # use squall::{TopologyBuilder, Topology, BuildError};
/// fn build() -> Result<Topology, BuildError> {
///     let builder = TopologyBuilder::new();
///     // builder.spout(...); builder.bolt(...);
///     builder.build()
/// }
/// fn main() -> std::process::ExitCode {
///     squall::main(build)
/// }
/// ```
///
/// Modes: no arguments (or `local`) runs it in-process until its spouts are done (`--seconds N`
/// to stop earlier); `--describe` prints its spec as JSON (which `squall submit` reads);
/// `worker …` runs one worker of a cluster assignment (a supervisor starts it). The exit code is
/// 1 when the topology does not build or a task fails.
pub fn main<F, E>(build: F) -> ExitCode
where
    F: Fn() -> Result<Topology, E>,
    E: std::fmt::Display,
{
    let cli = Cli::parse();
    init_tracing(matches!(cli.mode, Some(Mode::Worker(_))));
    match run(cli, build) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run<F, E>(cli: Cli, build: F) -> Result<(), AppError>
where
    F: Fn() -> Result<Topology, E>,
    E: std::fmt::Display,
{
    let mut topology = build().map_err(|e| AppError::Build(e.to_string()))?;
    if cli.describe {
        let spec = topology.spec();
        // Serialising plain data to a string cannot fail. A reader that went away (`--describe |
        // head`) is not an error worth a panic.
        let _ = writeln!(std::io::stdout().lock(), "{}", serde_json::to_string_pretty(&spec).unwrap_or_default());
        return Ok(());
    }
    let args = match cli.mode {
        Some(Mode::Local(args)) => args,
        Some(Mode::Worker(args)) => {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(AppError::Runtime)?;
            return runtime.block_on(crate::worker_mode::run(args, topology));
        }
        Some(Mode::Query(args)) => return query(&topology, &args),
        None => cli.local,
    };
    for assignment in &args.config {
        topology.config_mut().apply_override(assignment)?;
    }
    let name = args.name.clone().unwrap_or_else(program_name);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(AppError::Runtime)?;
    let report = runtime.block_on(run_local(&name, &topology, args.seconds))?;
    print_summary(&report);
    if report.is_success() { Ok(()) } else { Err(AppError::Failed(Box::new(report))) }
}

/// Prints one JSON line `{"key": …, "value": …}` per key (`value` null when the state lacks it).
fn query(topology: &Topology, args: &QueryArgs) -> Result<(), AppError> {
    let Some(state) = topology.queryable_state(&args.state) else {
        let known: Vec<&str> = topology.queryable_states().collect();
        return Err(AppError::Query(format!(
            "the topology has no queryable state `{}`; it has: {}",
            args.state,
            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
        )));
    };
    let keys: Vec<Vec<Value>> = args.keys.iter().map(|k| parse_key(k)).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(AppError::Runtime)?;
    let values = runtime
        .block_on(state.query(&keys))
        .map_err(|e| AppError::Query(format!("cannot read state `{}`: {e}", args.state)))?;
    let mut out = std::io::stdout().lock();
    for (key, value) in keys.iter().zip(values) {
        let line = serde_json::json!({ "key": key, "value": value });
        let _ = writeln!(out, "{line}");
    }
    Ok(())
}

/// A key from the command line: JSON when it parses as JSON (an array for several fields),
/// else the text as a string.
fn parse_key(text: &str) -> Vec<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::List(fields)) => fields.to_vec(),
        Ok(value) => vec![value],
        Err(_) => vec![Value::Str(text.into())],
    }
}

async fn run_local(name: &str, topology: &Topology, seconds: Option<u64>) -> Result<RunReport, AppError> {
    let cluster = LocalCluster::new();
    cluster.submit(name, topology)?;
    let limit = seconds.map(Duration::from_secs).unwrap_or(Duration::MAX / 4);
    let report = tokio::select! {
        done = cluster.wait_for_completion(name, limit) => match done {
            Ok(report) => report,
            Err(LocalClusterError::Timeout { .. }) => {
                tracing::info!(topology = name, "time is up; killing the topology");
                cluster.kill(name, Duration::from_secs(5)).await?
            }
            Err(e) => return Err(e.into()),
        },
        _ = tokio::signal::ctrl_c() => {
            tracing::info!(topology = name, "interrupted; killing the topology");
            cluster.kill(name, Duration::from_secs(5)).await?
        }
    };
    Ok(report)
}

fn print_summary(report: &RunReport) {
    eprintln!("topology `{}` finished:", report.name);
    for (id, m) in &report.metrics.components {
        eprintln!("  {id:<16} emitted {:>12}  executed {:>12}  errors {:>6}", m.emitted, m.executed, m.errors);
    }
    for failure in &report.failures {
        eprintln!("  failed: {failure}");
    }
}

fn program_name() -> String {
    std::env::args()
        .next()
        .and_then(|p| std::path::Path::new(&p).file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "topology".to_owned())
}

/// The process's own log filter and the handle that swaps it (`squall set-log-level`).
struct LogControl {
    own: String,
    handle: tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
}

static LOG_CONTROL: std::sync::OnceLock<LogControl> = std::sync::OnceLock::new();

fn init_tracing(worker: bool) {
    use tracing_subscriber::prelude::*;
    // A worker's output is its log file: say what it does. Local runs stay quiet.
    let default = if worker { "info" } else { "warn" };
    let own = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| tracing_subscriber::EnvFilter::try_new(f).is_ok())
        .unwrap_or_else(|| default.to_owned());
    let (filter, handle) = tracing_subscriber::reload::Layer::new(tracing_subscriber::EnvFilter::new(&own));
    // A worker's stderr is its log file: colour codes only on a terminal.
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(colour_logs());
    if tracing_subscriber::registry().with(filter).with(fmt).try_init().is_ok() {
        let _ = LOG_CONTROL.set(LogControl { own, handle });
    }
}

/// Logs with `filter` from now on, or with the process's own filter again (`None`). Returns
/// the filter now in force, or an error saying why it could not change.
pub(crate) fn set_log_filter(filter: Option<&str>) -> Result<String, String> {
    let control = LOG_CONTROL.get().ok_or("logging was set up elsewhere")?;
    let wanted = filter.unwrap_or(&control.own);
    let parsed =
        tracing_subscriber::EnvFilter::try_new(wanted).map_err(|e| format!("bad log filter `{wanted}`: {e}"))?;
    control.handle.reload(parsed).map_err(|e| e.to_string())?;
    Ok(wanted.to_owned())
}

/// Colour codes in logs only on a terminal, and not when `NO_COLOR` is set (no-color.org).
fn colour_logs() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
