//! Squall's benchmarks: `cargo run --release -p squall-bench -- <workload> [--seconds N]`.
//!
//! Runs a workload in local mode for a fixed time and prints progress, then, as its last line,
//! one JSON object with the steady-state throughput (the first second is warm-up) and the
//! process's peak resident memory.
//!
//! Workloads (the same as `../shared/peers`' timely and Flink programs):
//! - `const-null`: a spout of 100-byte strings → shuffle → a discarding bolt, 1 + 1 tasks.
//! - `word-count`: sentences round-robin from ten 8-word sentences → split → fields grouping on
//!   the word → count in a map; reports words/s.
//!
//! `trident-word-count [--seconds N] [--rate R]` counts the same sentences through the Trident
//! stream API (batches of sentences → split → group by word → a persistent count in a memory map
//! state) and reports committed words/s, the batch latency (emit → state commit) and, measured
//! in the same run, the plain word count's words/s (see [`trident`]).
//!
//! `cluster <workload> [--seconds N] [--acking]` runs the workload across processes instead: a
//! real ZooKeeper, and in this process a Nimbus and a supervisor with two slots, which start
//! this binary twice in `worker` mode (see [`cluster`]). Given `worker …` or `--describe`, this
//! binary is that topology program.
//!
//! `kafka [--seconds N] [--acking]` starts a real Kafka broker and measures the Kafka spout (4
//! tasks reading an 8-partition topic of 100-byte records into a counting bolt) beside Kafka's
//! own Java consumer (`ConsumerPerformance`), and the Kafka bolt beside Kafka's
//! `ProducerPerformance`, in the same run (see [`kafka`]).
//!
//! `scale-sim --supervisors N --topologies M` measures scheduling and ZooKeeper load on a large
//! simulated cluster: a real ZooKeeper and Nimbus, simulated supervisors and workers (see
//! [`scale_sim`]).
//!
//! The binary uses mimalloc for Rust's allocations (the default `mimalloc` feature, as the README
//! recommends for topologies); built with `--no-default-features` it uses the system allocator;
//! with `--features mimalloc-override`, mimalloc replaces `malloc` for the whole process,
//! librdkafka included. The kafka workload's JSON says which (`allocator`).

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The allocator this build uses, as the JSON results name it.
pub(crate) const ALLOCATOR: &str = if cfg!(feature = "mimalloc-override") {
    "mimalloc-override"
} else if cfg!(feature = "mimalloc") {
    "mimalloc"
} else {
    "system"
};

mod cluster;
mod kafka;
mod scale_sim;
mod trident;
mod workloads;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use squall::{ComponentMetrics, LocalCluster, Topology};

use crate::workloads::{PROCESSED, Params, Workload, build};

#[derive(Parser, Debug)]
#[command(about = "Squall benchmarks; the last line printed is a JSON object")]
struct Args {
    /// The workload.
    workload: Workload,
    /// How long to run, in seconds (the first second is warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// const-null: allocate a fresh 100-byte string per tuple instead of sharing one static
    /// string (the timely peer allocates one per record).
    #[arg(long)]
    alloc_strings: bool,
    /// Executors for each bolt of the workload.
    #[arg(long, default_value_t = 1)]
    parallelism: u32,
    /// Tokio worker threads (default: the number of cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Track every spout tuple with acking (one acker task) and report complete latency.
    #[arg(long)]
    acking: bool,
    /// With --acking, `topology.max.spout.pending` per spout task.
    #[arg(long, default_value_t = 5_000)]
    max_pending: u32,
    /// Pace the spout to this many tuples per second at the sink (words/s for word-count),
    /// to measure latency below peak load.
    #[arg(long)]
    rate: Option<u64>,
}

/// The process's peak resident set size in MB, from `/proc/self/status`.
fn peak_rss_mb() -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("no VmHWM in /proc/self/status")?;
    let kb: f64 = line.split_whitespace().nth(1).context("malformed VmHWM line")?.parse()?;
    Ok(kb / 1024.0)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let first = argv.get(1).map(String::as_str);
    // A supervisor starts this binary as `worker …`; `squall submit` (and the cluster mode) runs
    // it with `--describe`. Both build the topology the environment names.
    if first == Some("worker") || argv.iter().skip(1).any(|a| a == "--describe") {
        let params = match Params::from_env() {
            Ok(params) => params,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        return squall::main(move || build(&params));
    }
    let result = match first {
        Some("cluster") => cluster::main(&argv),
        Some("kafka") => kafka::main(&argv),
        Some("trident-word-count") => trident::main(&argv),
        Some("scale-sim") => scale_sim::main(&argv),
        Some("scale-sim-nimbus") => scale_sim::nimbus_main(&argv),
        _ => local_main(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `topology` as `name` in `cluster`: `warmup`, then `seconds` measured, printing the rate
/// at the sink ([`PROCESSED`]) every second. Returns the sink's tuples per second over the
/// measured seconds and the metrics of component `spout`, and kills the topology.
async fn measure(
    cluster: &LocalCluster,
    name: &str,
    topology: &Topology,
    warmup: Duration,
    seconds: u64,
    spout: &str,
) -> anyhow::Result<(f64, ComponentMetrics)> {
    cluster.submit(name, topology)?;
    tokio::time::sleep(warmup).await;
    let (start, start_count) = (Instant::now(), PROCESSED.load(Ordering::Relaxed));
    let mut last = (start, start_count);
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = (Instant::now(), PROCESSED.load(Ordering::Relaxed));
        let rate = (now.1 - last.1) as f64 / (now.0 - last.0).as_secs_f64();
        eprintln!("{:>6.1} M tuples/s", rate / 1e6);
        last = now;
    }
    let rate = (last.1 - start_count) as f64 / (last.0 - start).as_secs_f64();
    let metrics = cluster.metrics(name)?.component(spout)?;
    cluster.kill(name, Duration::ZERO).await?;
    Ok((rate, metrics))
}

/// The plain word count (`word-count`, one task per component, no acking, unpaced) in `cluster`:
/// its words per second over `seconds` after `warmup`, as the `word-count` workload measures it.
pub(crate) async fn plain_word_count(cluster: &LocalCluster, warmup: Duration, seconds: u64) -> anyhow::Result<f64> {
    let params = Params {
        workload: Workload::WordCount,
        acking: false,
        max_pending: 5_000,
        alloc_strings: false,
        parallelism: 1,
        rate: None,
        first_tuple_dir: None,
    };
    let topology = build(&params)?;
    let (rate, _) = measure(cluster, "plain-word-count", &topology, warmup, seconds, params.workload.spout()).await?;
    Ok(rate)
}

fn local_main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if args.seconds < 2 {
        bail!("--seconds must be at least 2 (the first second is warm-up)");
    }
    let params = Params {
        workload: args.workload,
        acking: args.acking,
        max_pending: args.max_pending,
        alloc_strings: args.alloc_strings,
        parallelism: args.parallelism,
        rate: args.rate,
        first_tuple_dir: None,
    };
    let topology = build(&params)?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime.enable_all().build()?;
    let name = format!("{:?}", args.workload).to_lowercase();
    let (tuples_per_sec, spout_metrics) = runtime.block_on(async {
        let cluster = LocalCluster::new();
        let seconds = args.seconds - 1;
        measure(&cluster, &name, &topology, Duration::from_secs(1), seconds, args.workload.spout()).await
    })?;
    let mut result = serde_json::json!({
        "workload": args.workload.name(),
        "tuples_per_sec": tuples_per_sec.round(),
        "peak_rss_mb": (peak_rss_mb()? * 10.0).round() / 10.0,
    });
    if args.acking {
        result["acking"] = true.into();
        result["acked"] = spout_metrics.acked.into();
        result["complete_latency_p50_ms"] = spout_metrics.complete_latency_p50_ms.into();
        result["complete_latency_p99_ms"] = spout_metrics.complete_latency_p99_ms.into();
        result["complete_latency_max_ms"] = spout_metrics.complete_latency_max_ms.into();
    }
    if let Some(rate) = args.rate {
        result["rate"] = rate.into();
    }
    println!("{result}");
    Ok(ExitCode::SUCCESS)
}
