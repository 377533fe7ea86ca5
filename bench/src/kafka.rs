//! `squall-bench kafka [--seconds N] [--acking]`: Squall's Kafka spout and bolt beside Kafka's own
//! Java clients, on one real broker started for the run.
//!
//! In order, in one process:
//! 1. starts a [`KafkaBroker`] (Kafka's jars, KRaft, free loopback ports) and creates a topic of
//!    8 partitions;
//! 2. fills it with 100-byte values from an rdkafka `BaseProducer` (`acks=1`, no idempotence,
//!    large batches): `fill_records_per_sec`, a producer figure that involves no bolt. By
//!    default it writes 3 M records per second of warm-up and measurement plus 5 s of margin, at
//!    most 60 M (`--records` sets the count);
//! 3. reads the topic from the start through [`KafkaSpout`] with 4 spout tasks into one counting
//!    bolt (local mode, shuffle grouping) with the default translator
//!    ([`squall_kafka::KafkaRecord`]: topic, partition, offset, key, value, timestamp, headers)
//!    and measures the counted tuples per second over `--seconds` after `--warmup` seconds
//!    (counted from the first tuple): `tuples_per_sec`. Without `--acking` the topology has no
//!    acker and the spout's guarantee is [`Guarantee::NoGuarantee`] (nothing tracked); with it,
//!    one acker task, `topology.max.spout.pending` (`--max-pending`, 5000) per spout task,
//!    [`Guarantee::AtLeastOnce`], and the spout's complete latency is reported. Should the topic
//!    run dry, the measurement stops early and says so (`measured_seconds`);
//! 4. reads the same topic with Kafka's `org.apache.kafka.tools.ConsumerPerformance` (one Java
//!    consumer in a group, JVM options as `kafka-consumer-perf-test.sh` sets them) reporting
//!    every second, and takes its steady rate the same way: the records of the reports after the
//!    first `--warmup` ones over their duration (`java_consumer_records_per_sec`; `ratio` is
//!    Squall's over it);
//! 5. reads the topic again through the spout with a translator that emits only the value (one
//!    field of bytes): `tuples_per_sec_value_only`, `ratio_value_only`;
//! 6. writes N tuples (100-byte values, from one spout task, `--bolt-records`, by default 500 k
//!    per second of `--seconds`) through [`KafkaBolt`] (one task, `acks=all`, idempotent) to a new
//!    8-partition topic, timed from submission until the topic's end offsets add up to N
//!    (`bolt_records_per_sec`), then the same N records with Kafka's
//!    `org.apache.kafka.tools.ProducerPerformance` (`--record-size 100 --throughput -1`,
//!    `acks=all enable.idempotence=true`, its final records/sec) to another new topic
//!    (`java_producer_records_per_sec`, `bolt_ratio`). With `--acking` the bolt's tuples are
//!    tracked too, with a max spout pending of at least twice the bolt's in-flight bound: the
//!    bolt acks only when it runs (next input or its 1 s tick), so a lower cap holds it to that
//!    many records a second. A failed bolt run is reported in `bolt_error`.
//!
//! Each measurement runs alone beside the broker, which shares the machine's cores with it. For
//! each read it also gives the CPU time per record of the reading process and the cores it and
//! the broker used (`cpu_us_per_record`, `java_consumer_cpu_us_per_record`, …, from
//! `/proc/<pid>/stat` over the measured window): other load on the machine shows there. The last
//! line printed is the JSON object, with `peak_rss_mb` (this process over the whole run),
//! `spout_peak_rss_mb` (during the default-translator read; `rss_before_spout_mb` is what the
//! process held when it started, mostly the filling producer's memory the allocators kept) and
//! the allocator of the build.

use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};
use squall::prelude::*;
use squall::{BuildError, ComponentError, LocalCluster};
use squall_kafka::testing::KafkaBroker;
use squall_kafka::{FirstPoll, Guarantee, KafkaBolt, KafkaBoltConfig, KafkaSpout, KafkaSpoutConfig, Record};

use crate::workloads::PAYLOAD;
use crate::{ALLOCATOR, peak_rss_mb};

/// The topic the spout and the Java consumer read.
const IN_TOPIC: &str = "bench-in";
/// The topic the Kafka bolt writes.
const BOLT_TOPIC: &str = "bench-bolt";
/// The topic Kafka's ProducerPerformance writes.
const JAVA_PRODUCER_TOPIC: &str = "bench-java-producer";
/// Records filled per second of the run, unless `--records` says otherwise.
const RECORDS_PER_SEC_ESTIMATE: u64 = 3_000_000;
/// The most records filled by default (about 6.5 GB of log).
const MAX_RECORDS: u64 = 60_000_000;
/// Records the bolt and ProducerPerformance write per second of `--seconds`, unless
/// `--bolt-records` says otherwise.
const BOLT_RECORDS_PER_SEC: u64 = 500_000;
/// JVM options of Kafka's `kafka-consumer-perf-test.sh` / `kafka-producer-perf-test.sh`
/// (`KAFKA_HEAP_OPTS` and `kafka-run-class.sh`'s `KAFKA_JVM_PERFORMANCE_OPTS`).
const JAVA_PERF_OPTIONS: &[&str] = &[
    "-Xmx512M",
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
];
/// The Kafka bolt's `max_in_flight` (its default).
const BOLT_MAX_IN_FLIGHT: usize = 10_000;
/// Counted tuples are published in steps of this many.
const PUBLISH_EVERY: u64 = 4096;

/// Tuples the counting bolt has seen, published in steps.
static CONSUMED: AtomicU64 = AtomicU64::new(0);

/// `squall-bench kafka …`
#[derive(Parser, Debug)]
#[command(
    name = "squall-bench kafka",
    about = "The Kafka spout and bolt beside Kafka's Java consumer and producer on one broker; \
             the last line printed is a JSON object"
)]
struct KafkaArgs {
    /// Seconds each spout run is measured, after its warm-up.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of warm-up after the first tuple reached the counting bolt (and Java consumer
    /// reports skipped).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Track every spout tuple with acking (one acker task) and report complete latency.
    #[arg(long)]
    acking: bool,
    /// With --acking, `topology.max.spout.pending` per spout task.
    #[arg(long, default_value_t = 5_000)]
    max_pending: u32,
    /// Spout tasks.
    #[arg(long, default_value_t = 4)]
    spout_tasks: u32,
    /// Partitions of each topic.
    #[arg(long, default_value_t = 8)]
    partitions: usize,
    /// Records to fill the topic with (default: 3 M per second of warm-up and measurement plus
    /// 5 s, at most 60 M).
    #[arg(long)]
    records: Option<u64>,
    /// Records the bolt and Kafka's ProducerPerformance each write (default: 500 k per second of
    /// `--seconds`).
    #[arg(long)]
    bolt_records: Option<u64>,
    /// The spout's `max_poll_records` (records per `next_tuple` call).
    #[arg(long)]
    max_poll_records: Option<usize>,
    /// `topology.producer.batch.size`: tuples buffered per destination before they are handed
    /// over (the default, 256, unless given).
    #[arg(long)]
    batch_size: Option<u32>,
    /// A librdkafka consumer setting for the spout, `key=value`; may be repeated.
    #[arg(long = "consumer-setting", value_name = "KEY=VALUE")]
    consumer_settings: Vec<String>,
    /// Skip the value-only translator run.
    #[arg(long)]
    no_value_only: bool,
    /// Skip the bolt and ProducerPerformance.
    #[arg(long)]
    no_bolt: bool,
    /// Skip Kafka's Java consumer and producer.
    #[arg(long)]
    no_java: bool,
    /// Tokio worker threads (default: the number of cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// Runs `kafka …` (`argv` is the whole command line) and prints its JSON result last.
pub fn main(argv: &[String]) -> anyhow::Result<ExitCode> {
    let args = KafkaArgs::parse_from(&argv[1..]);
    if args.seconds < 1 {
        bail!("--seconds must be at least 1");
    }
    if args.partitions == 0 || args.spout_tasks == 0 {
        bail!("--partitions and --spout-tasks must be at least 1");
    }
    let consumer_settings = args
        .consumer_settings
        .iter()
        .map(|s| s.split_once('=').with_context(|| format!("--consumer-setting {s:?} is not key=value")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let loadavg = std::fs::read_to_string("/proc/loadavg").ok().and_then(|l| l.split(' ').next()?.parse::<f64>().ok());
    let records =
        args.records.unwrap_or(((args.warmup + args.seconds + 5) * RECORDS_PER_SEC_ESTIMATE).min(MAX_RECORDS));
    let bolt_records = args.bolt_records.unwrap_or(args.seconds * BOLT_RECORDS_PER_SEC);

    eprintln!("starting a Kafka broker …");
    let broker = KafkaBroker::start().context("cannot start the Kafka broker (run scripts/setup first?)")?;
    let bootstrap = broker.bootstrap_servers();
    broker.create_topic(IN_TOPIC, args.partitions)?;
    eprintln!(
        "filling {IN_TOPIC} ({} partitions) with {records} records of {} bytes …",
        args.partitions,
        PAYLOAD.len()
    );
    let fill_rate = fill(&bootstrap, IN_TOPIC, args.partitions, records)?;
    eprintln!("filled at {:.2} M records/s", fill_rate / 1e6);

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime.enable_all().build()?;
    let cluster = LocalCluster::new();
    let spout_config = {
        let mut config = KafkaSpoutConfig::new(&bootstrap, &[IN_TOPIC])
            .with_first_poll(FirstPoll::Earliest)
            .with_guarantee(if args.acking { Guarantee::AtLeastOnce } else { Guarantee::NoGuarantee });
        if let Some(max) = args.max_poll_records {
            config.max_poll_records = max.max(1);
        }
        for (key, value) in &consumer_settings {
            config = config.with_consumer_setting(*key, *value);
        }
        config
    };

    // Peak RSS of the default-translator run alone: reset the high-water mark first (Linux 4.0+;
    // without it, the figure is the process's peak so far).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    // What the fill left (allocators keep some of it): the spout's own share is the difference.
    let rss_before_spout = peak_rss_mb()?;
    eprintln!("squall: KafkaSpout ({} tasks), default translator …", args.spout_tasks);
    let spout = KafkaSpout::new(spout_config.clone().with_group_id("squall-bench-default"));
    let default_run =
        runtime.block_on(measure_spout(&cluster, "kafka-default", &args, records, broker.pid(), spout))?;
    let spout_peak_rss = peak_rss_mb()?;

    let java_consumer = if args.no_java {
        None
    } else {
        eprintln!("java: ConsumerPerformance …");
        Some(java_consumer(&broker, records, args.warmup)?)
    };

    let value_only_run = if args.no_value_only {
        None
    } else {
        eprintln!("squall: KafkaSpout ({} tasks), value-only translator …", args.spout_tasks);
        let spout = KafkaSpout::with_translator(spout_config.with_group_id("squall-bench-value"), |r: &Record<'_>| {
            Some(RecordValue { value: r.value.map(Arc::from) })
        });
        Some(runtime.block_on(measure_spout(&cluster, "kafka-value", &args, records, broker.pid(), spout))?)
    };

    let mut bolt_error = None;
    let (bolt_rate, java_producer) = if args.no_bolt {
        (None, None)
    } else {
        broker.create_topic(BOLT_TOPIC, args.partitions)?;
        eprintln!("squall: KafkaBolt writing {bolt_records} records …");
        let rate = match runtime.block_on(measure_bolt(&cluster, &bootstrap, &args, bolt_records)) {
            Ok(rate) => {
                eprintln!("{:>6.2} M records/s", rate / 1e6);
                Some(rate)
            }
            Err(e) => {
                eprintln!("  the bolt run failed: {e:#}");
                bolt_error = Some(format!("{e:#}"));
                None
            }
        };
        let java = if args.no_java {
            None
        } else {
            broker.create_topic(JAVA_PRODUCER_TOPIC, args.partitions)?;
            eprintln!("java: ProducerPerformance writing {bolt_records} records …");
            let rate = java_producer(&broker, bolt_records)?;
            eprintln!("{:>6.2} M records/s", rate / 1e6);
            Some(rate)
        };
        (rate, java)
    };
    runtime.block_on(cluster.shutdown());
    drop(broker);

    let ratio = |ours: f64, theirs: Option<f64>| theirs.map(|t| round3(ours / t));
    let java_rate = java_consumer.as_ref().map(|j| j.steady);
    let mut result = serde_json::json!({
        "workload": "kafka",
        "acking": args.acking,
        "allocator": ALLOCATOR,
        "partitions": args.partitions,
        "spout_tasks": args.spout_tasks,
        "records": records,
        "fill_records_per_sec": fill_rate.round(),
        "tuples_per_sec": default_run.rate.round(),
        "measured_seconds": default_run.seconds,
        "java_consumer_records_per_sec": java_rate.map(f64::round),
        "ratio": ratio(default_run.rate, java_rate),
        "tuples_per_sec_value_only": value_only_run.as_ref().map(|r| r.rate.round()),
        "ratio_value_only": value_only_run.as_ref().and_then(|r| ratio(r.rate, java_rate)),
        "bolt_records": bolt_records,
        "bolt_records_per_sec": bolt_rate.map(f64::round),
        "java_producer_records_per_sec": java_producer.map(f64::round),
        "bolt_ratio": bolt_rate.and_then(|b| ratio(b, java_producer)),
        "bolt_error": bolt_error,
        "peak_rss_mb": round1(peak_rss_mb()?),
        "spout_peak_rss_mb": round1(spout_peak_rss),
        "rss_before_spout_mb": round1(rss_before_spout),
        "loadavg_1m_at_start": loadavg,
        "cpu_us_per_record": default_run.cpu.map(|c| c.us_per_record),
        "cpu_cores": default_run.cpu.map(|c| c.process_cores),
        "broker_cores": default_run.cpu.map(|c| c.broker_cores),
        "cpu_us_per_record_value_only": value_only_run.as_ref().and_then(|r| r.cpu).map(|c| c.us_per_record),
        "java_consumer_cpu_us_per_record": java_consumer.as_ref().and_then(|j| j.cpu).map(|c| c.us_per_record),
        "java_consumer_cpu_cores": java_consumer.as_ref().and_then(|j| j.cpu).map(|c| c.process_cores),
        "java_consumer_broker_cores": java_consumer.as_ref().and_then(|j| j.cpu).map(|c| c.broker_cores),
    });
    if args.acking {
        result["max_pending"] = args.max_pending.into();
        let m = &default_run.metrics;
        result["acked"] = m.acked.into();
        result["failed"] = m.failed.into();
        result["complete_latency_p50_ms"] = m.complete_latency_p50_ms.into();
        result["complete_latency_p99_ms"] = m.complete_latency_p99_ms.into();
        result["complete_latency_max_ms"] = m.complete_latency_max_ms.into();
        if let Some(run) = &value_only_run {
            result["complete_latency_p50_ms_value_only"] = run.metrics.complete_latency_p50_ms.into();
            result["complete_latency_p99_ms_value_only"] = run.metrics.complete_latency_p99_ms.into();
        }
    }
    println!("{result}");
    Ok(ExitCode::SUCCESS)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Counts delivery failures of the fill.
#[derive(Default)]
struct FillContext {
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl ClientContext for FillContext {}

impl ProducerContext for FillContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result
            && self.failed.fetch_add(1, Ordering::Relaxed) == 0
        {
            *self.first_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
        }
    }
}

/// Writes `records` 100-byte values round-robin over the partitions of `topic`; returns the
/// rate in records per second (until every record is acknowledged).
fn fill(bootstrap: &str, topic: &str, partitions: usize, records: u64) -> anyhow::Result<f64> {
    let producer: BaseProducer<FillContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "1")
        .set("enable.idempotence", "false")
        .set("compression.type", "none")
        .set("linger.ms", "20")
        .set("batch.num.messages", "100000")
        .set("queue.buffering.max.messages", "2000000")
        .set("queue.buffering.max.kbytes", "65536")
        .create_with_context(FillContext::default())
        .context("cannot create the fill producer")?;
    let started = Instant::now();
    let mut last_report = started;
    for i in 0..records {
        let partition = (i % partitions as u64) as i32;
        let mut record = BaseRecord::<(), [u8]>::to(topic).payload(PAYLOAD.as_bytes()).partition(partition);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => bail!("cannot queue a fill record: {e}"),
            }
        }
        if i % 50_000 == 0 {
            producer.poll(Duration::ZERO);
            if last_report.elapsed() >= Duration::from_secs(5) {
                last_report = Instant::now();
                eprintln!("  {:.1} M queued", i as f64 / 1e6);
            }
        }
    }
    producer.flush(Duration::from_secs(300)).context("the fill did not finish")?;
    let elapsed = started.elapsed();
    let context = producer.context();
    let failed = context.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = context.first_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
        bail!("{failed} fill records were not written; the first error: {}", first.unwrap_or_default());
    }
    Ok(records as f64 / elapsed.as_secs_f64())
}

/// The value-only translation of a record.
#[derive(Tuple)]
struct RecordValue {
    value: Option<Arc<[u8]>>,
}

/// Counts what it receives, publishing the count in [`CONSUMED`].
#[derive(Clone, Default, Bolt)]
struct Count {
    seen: u64,
}

impl Bolt for Count {
    async fn execute(&mut self, _input: Tuple, _out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        self.seen += 1;
        if self.seen == PUBLISH_EVERY {
            CONSUMED.fetch_add(PUBLISH_EVERY, Ordering::Relaxed);
            self.seen = 0;
        }
        Ok(())
    }
}

/// What one spout run measured.
struct SpoutRun {
    /// Steady tuples per second.
    rate: f64,
    /// Seconds measured (fewer than asked when the topic ran dry).
    seconds: f64,
    /// The spout's counters at the end.
    metrics: squall::ComponentMetrics,
    /// This process's and the broker's CPU use while measured.
    cpu: Option<Cpu>,
}

fn spout_topology<T: TypedTuple>(spout: KafkaSpout<T>, args: &KafkaArgs) -> Result<Topology, BuildError> {
    let mut builder = TopologyBuilder::new();
    let config = builder.config_mut();
    if args.acking {
        config.acker_executors = Some(1);
        config.max_spout_pending = Some(args.max_pending);
    } else {
        config.acker_executors = Some(0);
    }
    if let Some(size) = args.batch_size {
        config.producer_batch_size = size;
    }
    builder.spout("kafka", spout, args.spout_tasks);
    // A counting task per spout task, fed by shuffle: each pair is chained (one executor, no
    // queue between them) unless `SQUALL_CHAINING=off`.
    builder.bolt("count", Count::default(), args.spout_tasks).shuffle_grouping("kafka");
    builder.build()
}

/// Runs the spout topology and measures the counted tuples per second after the warm-up.
async fn measure_spout<T: TypedTuple>(
    cluster: &LocalCluster,
    name: &str,
    args: &KafkaArgs,
    records: u64,
    broker: Option<u32>,
    spout: KafkaSpout<T>,
) -> anyhow::Result<SpoutRun> {
    let topology = spout_topology(spout, args)?;
    CONSUMED.store(0, Ordering::Relaxed);
    let submitted = Instant::now();
    cluster.submit(name, &topology)?;
    while CONSUMED.load(Ordering::Relaxed) == 0 {
        if submitted.elapsed() > Duration::from_secs(60) {
            let metrics = cluster.metrics(name)?.component("kafka")?;
            bail!("no tuple reached the counting bolt within 60 s; the spout's counters: {metrics:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("  first tuples after {:.2} s", submitted.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let start = (Instant::now(), CONSUMED.load(Ordering::Relaxed));
    let cpu_start = CpuSample::take(None, broker);
    let mut cpu_end = cpu_start;
    let mut end = start;
    for _ in 0..args.seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = (Instant::now(), CONSUMED.load(Ordering::Relaxed));
        let rate = (now.1 - end.1) as f64 / (now.0 - end.0).as_secs_f64();
        let left = records.saturating_sub(now.1);
        // The count trails what the spout polled by what sits in queues and unpublished steps.
        if left < 200_000 {
            eprintln!(
                "  the topic ran dry: measured {:.1} s (fill more with --records)",
                (end.0 - start.0).as_secs_f64()
            );
            break;
        }
        eprintln!("{:>6.2} M tuples/s", rate / 1e6);
        end = now;
        cpu_end = CpuSample::take(None, broker);
        if (left as f64) < rate * 1.2 {
            eprintln!(
                "  the topic is nearly read: measured {:.1} s (fill more with --records)",
                (end.0 - start.0).as_secs_f64()
            );
            break;
        }
    }
    let seconds = (end.0 - start.0).as_secs_f64();
    if seconds == 0.0 {
        bail!("nothing measured: the topic ran dry during the warm-up; fill more with --records");
    }
    let rate = (end.1 - start.1) as f64 / seconds;
    let cpu = Cpu::between(cpu_start, cpu_end, (end.1 - start.1) as f64);
    let metrics = cluster.metrics(name)?.component("kafka")?;
    cluster.kill(name, Duration::ZERO).await?;
    eprintln!("  {:.2} M tuples/s over {seconds:.1} s{}", rate / 1e6, cpu.map(|c| c.describe()).unwrap_or_default());
    Ok(SpoutRun { rate, seconds: round1(seconds), metrics, cpu })
}

/// What Kafka's ConsumerPerformance measured.
struct JavaConsumer {
    /// Records per second over the reports after the warm-up.
    steady: f64,
    /// CPU use over the reports after the warm-up, when it could be read.
    cpu: Option<Cpu>,
}

/// Reads `records` records of the input topic with Kafka's ConsumerPerformance, sampling its
/// and the broker's CPU time as each report arrives.
fn java_consumer(broker: &KafkaBroker, records: u64, warmup: u64) -> anyhow::Result<JavaConsumer> {
    let mut child = broker
        .java_command(JAVA_PERF_OPTIONS, "org.apache.kafka.tools.ConsumerPerformance")
        .args(["--bootstrap-server", &broker.bootstrap_servers(), "--topic", IN_TOPIC])
        .args(["--num-records", &records.to_string(), "--group", "bench-java-consumer"])
        .args(["--show-detailed-stats", "--reporting-interval", "1000", "--timeout", "30000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run java for ConsumerPerformance")?;
    let pid = child.id();
    let start = CpuSample::take(Some(pid), broker.pid());
    let mut lines = Vec::new();
    let stdout = child.stdout.take().context("no stdout")?;
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line.context("reading ConsumerPerformance's output")?;
        eprintln!("  | {line}");
        lines.push((line, CpuSample::take(Some(pid), broker.pid())));
    }
    let status = child.wait()?;
    let text: Vec<&str> = lines.iter().map(|(l, _)| l.as_str()).collect();
    if !status.success() {
        bail!("ConsumerPerformance ended with {status}:\n{}", text.join("\n"));
    }
    let parsed = parse_consumer_performance(&text, warmup as usize)
        .with_context(|| format!("cannot read ConsumerPerformance's output:\n{}", text.join("\n")))?;
    let cpu = parsed.window.and_then(|(first, last, records)| {
        let from = if first == 0 { start } else { lines[first - 1].1 };
        Cpu::between(from, lines[last].1, records)
    });
    eprintln!("{:>6.2} M records/s steady{}", parsed.steady / 1e6, cpu.map(|c| c.describe()).unwrap_or_default());
    Ok(JavaConsumer { steady: parsed.steady, cpu })
}

/// ConsumerPerformance's figures.
struct ConsumerReports {
    steady: f64,
    /// The line of the first and of the last report measured, and the records between.
    window: Option<(usize, usize, f64)>,
}

/// Reads ConsumerPerformance's `--show-detailed-stats` output: a header, then one CSV line per
/// report (cumulative `data.consumed.in.nMsg`, the interval's `nMsg.sec`), and perhaps a
/// summary (header with `start.time`). Skips the first `warmup` reports.
fn parse_consumer_performance(lines: &[&str], warmup: usize) -> anyhow::Result<ConsumerReports> {
    let mut header: Vec<&str> = Vec::new();
    let mut reports = Vec::new(); // (line, cumulative records, interval rate)
    let mut whole_run = None;
    let mut summary = false;
    for (index, line) in lines.iter().enumerate() {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.contains(&"nMsg.sec") {
            summary = fields.contains(&"start.time");
            header = fields;
            continue;
        }
        let column =
            |name: &str| header.iter().position(|h| *h == name).and_then(|i| fields.get(i)?.parse::<f64>().ok());
        let (Some(count), Some(rate)) = (column("data.consumed.in.nMsg"), column("nMsg.sec")) else { continue };
        if summary {
            whole_run = Some(rate);
        } else {
            reports.push((index, count, rate));
        }
    }
    // Each report's duration is its records over its rate.
    let mut previous = 0.0;
    let (mut records, mut seconds) = (0.0, 0.0);
    let mut window: Option<(usize, usize, f64)> = None;
    for (i, (line, count, rate)) in reports.iter().enumerate() {
        let n = count - previous;
        previous = *count;
        if i >= warmup && *rate > 0.0 {
            records += n;
            seconds += n / rate;
            window = Some((window.map_or(*line, |w| w.0), *line, records));
        }
    }
    let steady = if seconds > 0.0 {
        records / seconds
    } else {
        // Too short for reports past the warm-up: its whole-run figure is all there is.
        whole_run.context("no report after the warm-up and no summary")?
    };
    Ok(ConsumerReports { steady, window })
}

/// CPU time so far, in clock ticks, of a process and of the broker.
#[derive(Clone, Copy, Debug)]
struct CpuSample {
    at: Instant,
    process: Option<u64>,
    broker: Option<u64>,
}

impl CpuSample {
    /// Samples process `pid` (this one when `None`) and the broker.
    fn take(pid: Option<u32>, broker: Option<u32>) -> CpuSample {
        CpuSample { at: Instant::now(), process: cpu_ticks(pid), broker: broker.and_then(|b| cpu_ticks(Some(b))) }
    }
}

/// CPU use over a measurement window.
#[derive(Clone, Copy, Debug)]
struct Cpu {
    /// Cores the measured process used.
    process_cores: f64,
    /// Cores the broker used.
    broker_cores: f64,
    /// CPU time of the measured process per record, in microseconds.
    us_per_record: f64,
}

impl Cpu {
    fn between(from: CpuSample, to: CpuSample, records: f64) -> Option<Cpu> {
        let seconds = (to.at - from.at).as_secs_f64();
        let process = (to.process? - from.process?) as f64 / TICKS_PER_SEC;
        let broker = (to.broker? - from.broker?) as f64 / TICKS_PER_SEC;
        (seconds > 0.0 && records > 0.0).then(|| Cpu {
            process_cores: round2(process / seconds),
            broker_cores: round2(broker / seconds),
            us_per_record: round3(process * 1e6 / records),
        })
    }

    fn describe(&self) -> String {
        format!(
            " ({:.2} cores, {:.3} µs CPU per record; broker {:.2} cores)",
            self.process_cores, self.us_per_record, self.broker_cores
        )
    }
}

/// Linux's clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`, 100 on every architecture
/// Linux supports today).
const TICKS_PER_SEC: f64 = 100.0;

/// User plus system CPU time of process `pid` (this one when `None`), in clock ticks.
fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses: fields are counted after its last ')'.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[derive(Tuple)]
struct Line {
    value: Str,
}

/// Emits `left` 100-byte lines, then is done.
#[derive(Clone, Spout)]
#[squall(output = Line)]
struct Lines {
    left: u64,
    acking: bool,
    next_id: u64,
}

impl Spout for Lines {
    type MsgId = u64;

    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        if self.left == 0 {
            out.done();
            return Ok(());
        }
        self.left -= 1;
        let line = Line { value: Str::new_static(PAYLOAD) };
        if self.acking {
            self.next_id += 1;
            out.emit_with_id(line, self.next_id)?;
        } else {
            out.emit(line)?;
        }
        Ok(())
    }
}

/// Writes `records` tuples through a KafkaBolt; returns records per second from submission until
/// the topic's end offsets add up to `records`.
async fn measure_bolt(cluster: &LocalCluster, bootstrap: &str, args: &KafkaArgs, records: u64) -> anyhow::Result<f64> {
    let mut bolt_config = KafkaBoltConfig::new(bootstrap);
    bolt_config.max_in_flight = BOLT_MAX_IN_FLIGHT;
    let mut builder = TopologyBuilder::new();
    let config = builder.config_mut();
    if args.acking {
        config.acker_executors = Some(1);
        // The bolt acks a tuple when it next runs after the record's delivery report: on its next
        // input, or on its tick every second. A spout held at max pending sends no input, so a
        // cap below the bolt's own in-flight bound would allow only that many records a second.
        config.max_spout_pending = Some(args.max_pending.max(2 * BOLT_MAX_IN_FLIGHT as u32));
    } else {
        config.acker_executors = Some(0);
    }
    builder.spout("lines", Lines { left: records, acking: args.acking, next_id: 0 }, 1);
    builder.bolt("kafka", KafkaBolt::to_topic(bolt_config, BOLT_TOPIC), 1).shuffle_grouping("lines");
    let topology = builder.build()?;
    let (bootstrap, partitions) = (bootstrap.to_owned(), args.partitions);
    let watcher: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &bootstrap).set("group.id", "squall-bench-watermarks").create()?;
    let started = Instant::now();
    cluster.submit("kafka-bolt", &topology)?;
    let done = tokio::task::spawn_blocking(move || -> anyhow::Result<Instant> {
        // Far longer than a working bolt needs (10 k records/s).
        let allowed = Duration::from_secs(60 + records / 10_000);
        let deadline = Instant::now() + allowed;
        loop {
            // A new topic's leaders may not be known to this client at once: errors are retried.
            let total: Result<i64, KafkaError> = (0..partitions)
                .map(|p| watcher.fetch_watermarks(BOLT_TOPIC, p as i32, Duration::from_secs(10)).map(|w| w.1))
                .sum();
            let seen = match total {
                Ok(total) if total as u64 >= records => return Ok(Instant::now()),
                Ok(total) => format!("{total} records"),
                Err(e) => format!("end offsets not read: {e}"),
            };
            if Instant::now() > deadline {
                bail!("the bolt did not write {records} records in {allowed:?} (last seen: {seen})");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await??;
    let rate = records as f64 / (done - started).as_secs_f64();
    let report = cluster.wait_for_completion("kafka-bolt", Duration::from_secs(60)).await;
    if report.is_err() {
        cluster.kill("kafka-bolt", Duration::ZERO).await?;
    }
    let metrics = cluster.metrics("kafka-bolt").ok().and_then(|m| m.component("kafka").ok());
    if let Some(m) = metrics.filter(|m| m.failed > 0 || m.errors > 0) {
        eprintln!("  the bolt failed {} tuples, {} errors (last: {:?})", m.failed, m.errors, m.last_error);
    }
    Ok(rate)
}

/// Writes `records` 100-byte records with Kafka's ProducerPerformance; returns its records/sec.
fn java_producer(broker: &KafkaBroker, records: u64) -> anyhow::Result<f64> {
    let output = broker
        .java_command(JAVA_PERF_OPTIONS, "org.apache.kafka.tools.ProducerPerformance")
        .args(["--bootstrap-server", &broker.bootstrap_servers(), "--topic", JAVA_PRODUCER_TOPIC])
        .args(["--num-records", &records.to_string(), "--record-size", "100", "--throughput", "-1"])
        .args(["--command-property", "acks=all", "enable.idempotence=true"])
        .stdin(Stdio::null())
        .output()
        .context("cannot run java for ProducerPerformance")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "ProducerPerformance ended with {}:\n{}\n{stdout}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_producer_performance(&stdout).with_context(|| format!("cannot read ProducerPerformance's output:\n{stdout}"))
}

/// The records/sec of ProducerPerformance's final line (`N records sent, R records/sec (…), …
/// 50th, …`).
fn parse_producer_performance(stdout: &str) -> anyhow::Result<f64> {
    let line =
        stdout.lines().rev().find(|l| l.contains(" records sent, ") && l.contains("50th")).context("no final line")?;
    let rate = line.split(", ").find_map(|part| Some(part.split_once(" records/sec")?.0)).context("no records/sec")?;
    Ok(rate.trim().parse()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_consumer_performance_reports_after_the_warm_up() {
        let out = "time, threadId, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec\n\
                   2026-01-01 00:00:01:000, 0, 10.0, 10.0, 100000, 100000.0, 300, 700, 14.2, 142857.1\n\
                   2026-01-01 00:00:02:000, 0, 30.0, 20.0, 300000, 200000.0, 0, 1000, 20.0, 200000.0\n\
                   2026-01-01 00:00:04:000, 0, 70.0, 20.0, 700000, 400000.0, 0, 1000, 20.0, 400000.0\n";
        let lines: Vec<&str> = out.lines().collect();
        let parsed = parse_consumer_performance(&lines, 1).unwrap();
        // 200 k in 1 s, then 400 k in 1 s.
        assert!((parsed.steady - 300_000.0).abs() < 1e-6, "{}", parsed.steady);
        assert_eq!(parsed.window, Some((2, 3, 600_000.0)));
    }

    #[test]
    fn reads_producer_performance_final_line() {
        let out = "500000 records sent, 99999.9 records/sec (9.54 MB/sec), 3.1 ms avg latency, 90.0 ms max latency.\n\
                   1000000 records sent, 123456.7 records/sec (11.77 MB/sec), 2.50 ms avg latency, 120.00 ms max latency, 2 ms 50th, 5 ms 95th, 9 ms 99th, 30 ms 99.9th.\n";
        assert_eq!(parse_producer_performance(out).unwrap(), 123_456.7);
    }
}
