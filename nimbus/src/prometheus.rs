//! `GET /metrics`: the workers' latest reports in Prometheus's text format, one series per
//! executor labelled by topology, component, task (an executor's tasks, `3` or `3-4`) and
//! worker (`<host>:<port>`), plus per-worker report ages.

use prometheus::{CounterVec, Encoder, GaugeVec, IntCounterVec, Opts, Registry, TextEncoder, proto};
use serde_json::Value;
use squall_cluster::{Assignment, TopologyRecord, WorkerMetricsReport};

/// The labels of an executor's series.
const EXECUTOR_LABELS: &[&str] = &["topology", "component", "task", "worker"];

/// An executor's counters, by the name of the report's field and of the series.
const COUNTERS: &[(&str, &str, &str)] = &[
    ("emitted", "squall_emitted_total", "Tuples emitted (one per emit call)."),
    ("transferred", "squall_transferred_total", "Tuple copies sent to tasks."),
    ("executed", "squall_executed_total", "Tuples executed by a bolt."),
    ("acked", "squall_acked_total", "Spouts: tuple trees completed; bolts: tuples acked."),
    ("failed", "squall_failed_total", "Spouts: tuple trees failed, timeouts included; bolts: tuples failed."),
    ("timed_out", "squall_timed_out_total", "Spouts: tuple trees that timed out."),
    ("errors", "squall_errors_total", "execute or next_tuple calls that returned an error."),
];

/// An executor's gauges: the report's field, the series, its help, and the factor to base units.
const GAUGES: &[(&str, &str, &str, f64)] = &[
    ("execute_latency_ms", "squall_execute_latency_seconds", "Mean time per execute call.", 1e-3),
    ("complete_latency_p50_ms", "squall_complete_latency_p50_seconds", "Median emit-to-completion time.", 1e-3),
    (
        "complete_latency_p99_ms",
        "squall_complete_latency_p99_seconds",
        "99th percentile emit-to-completion time.",
        1e-3,
    ),
    ("capacity", "squall_capacity", "Fraction of time spent in execute since the previous report.", 1.0),
    ("queue_depth", "squall_queue_depth", "Tuples waiting in the executor's input queue.", 1.0),
    ("queue_capacity", "squall_queue_capacity", "The executor's input queue capacity, in tuples.", 1.0),
    (
        "stalled",
        "squall_stalled",
        "1 while the executor is inside one call longer than topology.executor.stall.secs.",
        1.0,
    ),
    ("current_call_ms", "squall_current_call_seconds", "How long the executor has been inside its current call.", 1e-3),
];

/// A worker's transport counters: the report's field, the series, its help.
const TRANSPORT_COUNTERS: &[(&str, &str, &str)] = &[
    ("bytes_sent", "squall_worker_transport_sent_bytes_total", "Bytes written to other workers."),
    ("bytes_received", "squall_worker_transport_received_bytes_total", "Bytes read from other workers."),
    (
        "tuples_sent",
        "squall_worker_transport_sent_tuples_total",
        "Tuples and acking messages written to other workers.",
    ),
    (
        "tuples_received",
        "squall_worker_transport_received_tuples_total",
        "Tuples and acking messages read from other workers.",
    ),
    ("connects", "squall_worker_transport_connects_total", "Outbound connections established."),
    (
        "reconnects",
        "squall_worker_transport_reconnects_total",
        "Outbound connections established again after one of the same lane was lost or refused.",
    ),
    ("connect_failures", "squall_worker_transport_connect_failures_total", "Outbound connection attempts that failed."),
    (
        "connections_lost",
        "squall_worker_transport_connections_lost_total",
        "Established outbound connections that broke.",
    ),
    ("tuples_lost", "squall_worker_transport_lost_tuples_total", "Tuples dropped in writes that failed."),
];

/// An outbound lane's gauges: the report's field, the series, its help.
const LANE_GAUGES: &[(&str, &str, &str)] = &[
    ("depth", "squall_worker_lane_depth", "Tuples queued on an outbound lane, not yet written."),
    ("capacity", "squall_worker_lane_capacity", "An outbound lane's queue capacity, in tuples."),
    ("connected", "squall_worker_lane_connected", "1 while the lane's connection is up."),
];

/// The exposition, in Prometheus's text format, of `topologies`' current reports.
pub(crate) fn exposition(
    topologies: &[(TopologyRecord, Option<Assignment>, Vec<WorkerMetricsReport>)],
    now_millis: u64,
) -> Result<String, prometheus::Error> {
    let registry = Registry::new();
    let mut counters = Vec::new();
    for (_, name, help) in COUNTERS {
        let family = IntCounterVec::new(Opts::new(*name, *help), EXECUTOR_LABELS)?;
        registry.register(Box::new(family.clone()))?;
        counters.push(family);
    }
    let mut gauges = Vec::new();
    for (_, name, help, _) in GAUGES {
        let family = GaugeVec::new(Opts::new(*name, *help), EXECUTOR_LABELS)?;
        registry.register(Box::new(family.clone()))?;
        gauges.push(family);
    }
    let report_age = GaugeVec::new(
        Opts::new("squall_worker_report_age_seconds", "Time since the worker's latest metrics report."),
        &["topology", "worker"],
    )?;
    registry.register(Box::new(report_age.clone()))?;
    let worker_labels = ["topology", "worker"];
    let rss =
        GaugeVec::new(Opts::new("squall_worker_rss_bytes", "The worker process's resident memory."), &worker_labels)?;
    registry.register(Box::new(rss.clone()))?;
    let cpu = CounterVec::new(
        Opts::new("squall_worker_cpu_seconds_total", "CPU time the worker process has used, user and system."),
        &worker_labels,
    )?;
    registry.register(Box::new(cpu.clone()))?;
    let mut transport = Vec::new();
    for (_, name, help) in TRANSPORT_COUNTERS {
        let family = IntCounterVec::new(Opts::new(*name, *help), &worker_labels)?;
        registry.register(Box::new(family.clone()))?;
        transport.push(family);
    }
    let lane_labels = ["topology", "worker", "component", "peer"];
    let mut lane_gauges = Vec::new();
    for (_, name, help) in LANE_GAUGES {
        let family = GaugeVec::new(Opts::new(*name, *help), &lane_labels)?;
        registry.register(Box::new(family.clone()))?;
        lane_gauges.push(family);
    }
    let mut user = UserFamilies::new(&registry)?;
    for (record, assignment, reports) in topologies {
        for report in reports {
            let host = assignment
                .iter()
                .flat_map(|a| &a.workers)
                .find(|w| w.supervisor_id == report.supervisor_id && w.port == report.port)
                .map_or("unknown", |w| w.host.as_str());
            let worker = format!("{host}:{}", report.port);
            let age = now_millis.saturating_sub(report.time_millis) as f64 / 1e3;
            report_age.get_metric_with_label_values(&[&record.name, &worker])?.set(age);
            if let Some(bytes) = report.rss_bytes {
                rss.get_metric_with_label_values(&[&record.name, &worker])?.set(bytes as f64);
            }
            if let Some(seconds) = report.cpu_seconds {
                cpu.get_metric_with_label_values(&[&record.name, &worker])?.inc_by(seconds);
            }
            if let Some(t) = report.metrics.get("transport") {
                for ((field, ..), family) in TRANSPORT_COUNTERS.iter().zip(&transport) {
                    if let Some(n) = t.get(*field).and_then(Value::as_u64) {
                        family.get_metric_with_label_values(&[&record.name, &worker])?.inc_by(n);
                    }
                }
                for lane in t.get("lanes").and_then(Value::as_array).into_iter().flatten() {
                    let label = |k: &str| lane.get(k).and_then(Value::as_str).unwrap_or("unknown");
                    let labels = [record.name.as_str(), &worker, label("component"), label("peer")];
                    for ((field, ..), family) in LANE_GAUGES.iter().zip(&lane_gauges) {
                        let value = lane.get(*field).and_then(|v| v.as_f64().or_else(|| v.as_bool().map(f64::from)));
                        if let Some(x) = value {
                            family.get_metric_with_label_values(&labels)?.set(x);
                        }
                    }
                }
            }
            let components = report.metrics.get("components").and_then(Value::as_object).into_iter().flatten();
            for (component, metrics) in components {
                for (task, metrics) in metrics.get("user").and_then(Value::as_object).into_iter().flatten() {
                    let task = task.strip_prefix("task-").unwrap_or(task);
                    user.add(&[&record.name, component, task, &worker], metrics)?;
                }
            }
            let executors = report.metrics.get("executors").and_then(Value::as_array).into_iter().flatten();
            for executor in executors {
                let labels = executor_labels(&record.name, executor, &worker);
                let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
                for ((field, ..), family) in COUNTERS.iter().zip(&counters) {
                    if let Some(n) = executor.get(*field).and_then(Value::as_u64) {
                        family.get_metric_with_label_values(&labels)?.inc_by(n);
                    }
                }
                for ((field, _, _, factor), family) in GAUGES.iter().zip(&gauges) {
                    if let Some(x) = executor.get(*field).and_then(Value::as_f64) {
                        family.get_metric_with_label_values(&labels)?.set(x * factor);
                    }
                }
            }
        }
    }
    let mut text = Vec::new();
    let mut families = registry.gather();
    families.extend(user.summary_family());
    TextEncoder::new().encode(&families, &mut text)?;
    String::from_utf8(text).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

/// An executor's labels: its topology, component, tasks and worker.
fn executor_labels(topology: &str, executor: &Value, worker: &str) -> [String; 4] {
    let component = executor.get("component").and_then(Value::as_str).unwrap_or("unknown");
    let tasks: Vec<u64> =
        executor.get("tasks").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_u64).collect();
    let task = match (tasks.first(), tasks.last()) {
        (Some(first), Some(last)) if first != last => format!("{first}-{last}"),
        (Some(first), _) => first.to_string(),
        _ => String::new(),
    };
    [topology.to_owned(), component.to_owned(), task, worker.to_owned()]
}

/// The series of the tasks' own metrics, each named by a `name` label: counters, gauges, and
/// histograms as summaries (median and 99th percentile, count, sum).
struct UserFamilies {
    counters: IntCounterVec,
    gauges: GaugeVec,
    summaries: Vec<proto::Metric>,
}

/// The summary family's name.
const USER_SUMMARY: &str = "squall_custom_distribution";

impl UserFamilies {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let labels = ["topology", "component", "task", "worker", "name"];
        let families = UserFamilies {
            counters: IntCounterVec::new(Opts::new("squall_custom_total", "A task's own counter."), &labels)?,
            gauges: GaugeVec::new(Opts::new("squall_custom_value", "A task's own gauge."), &labels)?,
            summaries: Vec::new(),
        };
        registry.register(Box::new(families.counters.clone()))?;
        registry.register(Box::new(families.gauges.clone()))?;
        Ok(families)
    }

    /// One task's metrics (a `UserMetrics` as JSON), under `labels` (topology, component,
    /// task, worker).
    fn add<'a>(&mut self, labels: &[&'a str; 4], metrics: &'a Value) -> Result<(), prometheus::Error> {
        let named = |name: &'a str| -> [&'a str; 5] { [labels[0], labels[1], labels[2], labels[3], name] };
        for (name, n) in metrics.get("counters").and_then(Value::as_object).into_iter().flatten() {
            if let Some(n) = n.as_u64() {
                self.counters.get_metric_with_label_values(&named(name))?.inc_by(n);
            }
        }
        for (name, x) in metrics.get("gauges").and_then(Value::as_object).into_iter().flatten() {
            if let Some(x) = x.as_f64() {
                self.gauges.get_metric_with_label_values(&named(name))?.set(x);
            }
        }
        for (name, h) in metrics.get("histograms").and_then(Value::as_object).into_iter().flatten() {
            let mut summary = proto::Summary::default();
            summary.set_sample_count(h.get("count").and_then(Value::as_u64).unwrap_or(0));
            summary.set_sample_sum(h.get("sum").and_then(Value::as_f64).unwrap_or(0.0));
            let quantiles = [("p50", 0.5), ("p99", 0.99)]
                .into_iter()
                .filter_map(|(field, q)| {
                    let mut quantile = proto::Quantile::default();
                    quantile.set_quantile(q);
                    quantile.set_value(h.get(field).and_then(Value::as_f64)?);
                    Some(quantile)
                })
                .collect();
            summary.set_quantile(quantiles);
            let mut metric = proto::Metric::default();
            let pairs =
                ["topology", "component", "task", "worker", "name"].into_iter().zip(named(name)).map(|(k, v)| {
                    let mut pair = proto::LabelPair::default();
                    pair.set_name(k.to_owned());
                    pair.set_value(v.to_owned());
                    pair
                });
            metric.set_label(pairs.collect());
            metric.set_summary(summary);
            self.summaries.push(metric);
        }
        Ok(())
    }

    /// The histograms' summary family, if any task has a histogram.
    fn summary_family(self) -> Option<proto::MetricFamily> {
        let metrics = self.summaries;
        if metrics.is_empty() {
            return None;
        }
        let mut family = proto::MetricFamily::default();
        family.set_name(USER_SUMMARY.to_owned());
        family.set_help("A task's own histogram: its median and 99th percentile, count and sum.".to_owned());
        family.set_field_type(proto::MetricType::SUMMARY);
        family.set_metric(metrics);
        Some(family)
    }
}
