//! Storm UI's REST API shapes (`/api/v1/cluster/summary`, `/api/v1/topology/{id}`, …), where
//! they fit, built on the native handlers: Storm's dashboards and scripts read these. A
//! topology's `{id}` is its name or its id. Described by `docs/openapi.json`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::Value;
use squall_cluster::LeaderElection;
use squall_cluster::records::unix_secs;

use super::{AppState, Failure, activate, deactivate, describe, kill, list, not_found, rebalance, supervisors};
use crate::api::{ComponentDetails, RebalanceRequest, TopologyDetails, TopologySummary, WorkerDetails};
use crate::scheduler;
use crate::server::effective_spec;

pub(super) fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/api/v1/cluster/summary", get(cluster_summary))
        .route("/api/v1/nimbus/summary", get(nimbus_summary))
        .route("/api/v1/supervisor/summary", get(supervisor_summary))
        .route("/api/v1/topology/summary", get(topology_summary))
        .route("/api/v1/topology/{id}", get(topology))
        .route("/api/v1/topology/{id}/component/{component}", get(component))
        .route("/api/v1/topology/{id}/activate", post(activate_topology))
        .route("/api/v1/topology/{id}/deactivate", post(deactivate_topology))
        .route("/api/v1/topology/{id}/rebalance/{wait}", post(rebalance_topology))
        .route("/api/v1/topology/{id}/kill/{wait}", post(kill_topology))
}

type StormAnswer<T> = Result<Json<T>, Failure>;

/// `GET /api/v1/cluster/summary`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterSummary {
    storm_version: String,
    supervisors: usize,
    topologies: usize,
    slots_total: usize,
    slots_used: usize,
    slots_free: usize,
    executors_total: u64,
    tasks_total: u64,
}

async fn cluster_summary(State(shared): State<AppState>) -> StormAnswer<ClusterSummary> {
    let Json(topologies) = list(State(shared.clone())).await?;
    let Json(supervisors) = supervisors(State(shared.clone())).await?;
    let slots_total = supervisors.iter().map(|s| s.ports.len()).sum();
    let slots_used = supervisors.iter().map(|s| s.used_ports.len()).sum();
    // Executors (ackers included) as the scheduler places them: from the records, no describe.
    let executors_total = shared
        .state
        .topologies()
        .await?
        .values()
        .map(|r| scheduler::executors(&effective_spec(r), &r.parallelism, r.num_workers).len() as u64)
        .sum();
    Ok(Json(ClusterSummary {
        storm_version: format!("squall {}", env!("CARGO_PKG_VERSION")),
        supervisors: supervisors.len(),
        topologies: topologies.len(),
        slots_total,
        slots_used,
        slots_free: slots_total.saturating_sub(slots_used),
        executors_total,
        tasks_total: topologies.iter().map(|t| u64::from(t.tasks)).sum(),
    }))
}

/// One Nimbus of `GET /api/v1/nimbus/summary`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NimbusEntry {
    host: String,
    port: u16,
    /// `Leader` or `Not a Leader`, as Storm says it.
    status: String,
    nimbus_up_time_seconds: u64,
}

#[derive(Serialize)]
struct NimbusSummary {
    nimbuses: Vec<NimbusEntry>,
}

async fn nimbus_summary(State(shared): State<AppState>) -> StormAnswer<NimbusSummary> {
    let leader = LeaderElection::current_leader(&shared.state).await?;
    let now = unix_secs();
    let nimbuses = shared
        .state
        .nimbuses()
        .await?
        .into_values()
        .map(|n| NimbusEntry {
            status: if leader.as_deref() == Some(n.address().as_str()) { "Leader" } else { "Not a Leader" }.to_owned(),
            nimbus_up_time_seconds: now.saturating_sub(n.started_at),
            host: n.host,
            port: n.port,
        })
        .collect();
    Ok(Json(NimbusSummary { nimbuses }))
}

/// One supervisor of `GET /api/v1/supervisor/summary`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SupervisorEntry {
    id: String,
    host: String,
    uptime_seconds: u64,
    slots_total: usize,
    slots_used: usize,
    version: String,
}

#[derive(Serialize)]
struct SupervisorList {
    supervisors: Vec<SupervisorEntry>,
}

async fn supervisor_summary(State(shared): State<AppState>) -> StormAnswer<SupervisorList> {
    let Json(supervisors) = supervisors(State(shared)).await?;
    let supervisors = supervisors
        .into_iter()
        .map(|s| SupervisorEntry {
            slots_total: s.ports.len(),
            slots_used: s.used_ports.len(),
            id: s.id,
            host: s.host,
            uptime_seconds: s.uptime_secs,
            version: s.version,
        })
        .collect();
    Ok(Json(SupervisorList { supervisors }))
}

/// One topology of `GET /api/v1/topology/summary`, and the head of a topology's details.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TopologyEntry {
    id: String,
    name: String,
    /// `ACTIVE`, `INACTIVE`, `KILLED` or `REBALANCING`.
    status: String,
    uptime_seconds: u64,
    tasks_total: u32,
    workers_total: u32,
    workers_running: u32,
    /// Why it is not (fully) running.
    scheduler_info: Option<String>,
}

impl From<&TopologySummary> for TopologyEntry {
    fn from(s: &TopologySummary) -> Self {
        TopologyEntry {
            id: s.id.clone(),
            name: s.name.clone(),
            status: s.status.to_uppercase(),
            uptime_seconds: s.uptime_secs,
            tasks_total: s.tasks,
            workers_total: s.workers,
            workers_running: s.workers_running,
            scheduler_info: s.reason.clone(),
        }
    }
}

#[derive(Serialize)]
struct TopologyList {
    topologies: Vec<TopologyEntry>,
}

async fn topology_summary(State(shared): State<AppState>) -> StormAnswer<TopologyList> {
    let Json(topologies) = list(State(shared)).await?;
    Ok(Json(TopologyList { topologies: topologies.iter().map(TopologyEntry::from).collect() }))
}

/// The counters a component and an executor both show, read from their metrics (a
/// component's summed by `describe`, an executor's as its worker reported them: same names).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Counters {
    emitted: u64,
    transferred: u64,
    executed: u64,
    acked: u64,
    failed: u64,
    /// Milliseconds, the mean of `execute` (bolts).
    execute_latency: f64,
    /// Milliseconds, median emit-to-completion (spouts with acking).
    complete_latency: Option<f64>,
    /// Fraction of time in `execute` (bolts); a component's busiest executor's.
    capacity: f64,
}

impl Counters {
    fn of(m: &Value) -> Self {
        let n = |k: &str| m.get(k).and_then(Value::as_u64).unwrap_or(0);
        let x = |k: &str| m.get(k).and_then(Value::as_f64);
        Counters {
            emitted: n("emitted"),
            transferred: n("transferred"),
            executed: n("executed"),
            acked: n("acked"),
            failed: n("failed"),
            execute_latency: x("execute_latency_ms").unwrap_or(0.0),
            complete_latency: x("complete_latency_p50_ms"),
            capacity: x("capacity").unwrap_or(0.0),
        }
    }
}

/// A component's counters, as Storm's topology page lists spouts and bolts.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ComponentStats {
    /// The spout's or bolt's id (`spoutId` / `boltId` in Storm; `id` here for both).
    id: String,
    /// `spout`, `bolt` or `acker`.
    component_type: String,
    executors: u32,
    tasks: usize,
    #[serde(flatten)]
    counters: Counters,
    /// Executors inside one call longer than `topology.executor.stall.secs`.
    stalled: u64,
    error_count: u64,
    last_error: Option<String>,
    /// The component whose executors run this bolt's, when it is chained.
    chained_to: Option<String>,
}

impl From<&ComponentDetails> for ComponentStats {
    fn from(c: &ComponentDetails) -> Self {
        let m = &c.metrics;
        ComponentStats {
            id: c.id.clone(),
            component_type: c.kind.clone(),
            executors: c.parallelism,
            tasks: c.tasks.len(),
            counters: Counters::of(m),
            stalled: m.get("stalled").and_then(Value::as_u64).unwrap_or(0),
            error_count: m.get("errors").and_then(Value::as_u64).unwrap_or(0),
            last_error: m.get("last_error").and_then(Value::as_str).map(str::to_owned),
            chained_to: c.chained_to.clone(),
        }
    }
}

/// One worker of a topology's details.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WorkerEntry {
    supervisor_id: String,
    host: String,
    port: u16,
    tasks: usize,
    heartbeat_age_ms: Option<u64>,
    rss_bytes: Option<u64>,
    cpu_seconds: Option<f64>,
    /// Its log on its supervisor's logviewer.
    worker_log_link: Option<String>,
    /// Bytes written to and read from the other workers.
    bytes_sent: Option<u64>,
    bytes_received: Option<u64>,
    /// Outbound connections made again after a loss.
    reconnects: Option<u64>,
    /// Tuples queued on its outbound lanes, all lanes together.
    lane_depth: Option<u64>,
}

/// A counter of a worker's transport report.
fn transport_field(worker: &WorkerDetails, field: &str) -> Option<u64> {
    worker.transport.as_ref()?.get(field)?.as_u64()
}

/// `GET /api/v1/topology/{id}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TopologyPage {
    #[serde(flatten)]
    summary: TopologyEntry,
    spouts: Vec<ComponentStats>,
    bolts: Vec<ComponentStats>,
    workers: Vec<WorkerEntry>,
}

/// The details of the topology whose name or id is `id`.
async fn details_of(shared: &AppState, id: &str) -> Result<TopologyDetails, Failure> {
    let name = match shared.state.topology(id).await? {
        Some(_) => id.to_owned(),
        None => {
            let records = shared.state.topologies().await?;
            records.into_values().find(|r| r.id == id).map(|r| r.name).ok_or_else(|| not_found(id))?
        }
    };
    let Json(details) = describe(State(shared.clone()), Path(name)).await?;
    Ok(details)
}

async fn topology(State(shared): State<AppState>, Path(id): Path<String>) -> StormAnswer<TopologyPage> {
    let details = details_of(&shared, &id).await?;
    let of_kind = |kind: &str| details.components.iter().filter(|c| c.kind == kind).map(ComponentStats::from).collect();
    let mut bolts: Vec<ComponentStats> = of_kind("bolt");
    bolts.extend(of_kind("acker"));
    Ok(Json(TopologyPage {
        summary: TopologyEntry::from(&details.summary),
        spouts: of_kind("spout"),
        bolts,
        workers: details
            .workers
            .iter()
            .map(|w| WorkerEntry {
                supervisor_id: w.supervisor.clone(),
                host: w.host.clone(),
                port: w.port,
                tasks: w.tasks.len(),
                heartbeat_age_ms: w.heartbeat_age_ms,
                rss_bytes: w.rss_bytes,
                cpu_seconds: w.cpu_seconds,
                worker_log_link: w.log_url.clone(),
                bytes_sent: transport_field(w, "bytes_sent"),
                bytes_received: transport_field(w, "bytes_received"),
                reconnects: transport_field(w, "reconnects"),
                lane_depth: w.transport.as_ref().map(|t| {
                    let lanes = t.get("lanes").and_then(Value::as_array).into_iter().flatten();
                    lanes.filter_map(|l| l.get("depth").and_then(Value::as_u64)).sum()
                }),
            })
            .collect(),
    }))
}

/// One executor of a component's page.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExecutorEntry {
    /// Storm's executor id: `[first-last]` task.
    id: String,
    host: String,
    port: u16,
    #[serde(flatten)]
    counters: Counters,
    stalled: bool,
}

/// One recorded error of a component.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ComponentError {
    /// Unix seconds.
    time: u64,
    task: u64,
    error_host: String,
    error_port: u16,
    error: String,
}

/// `GET /api/v1/topology/{id}/component/{component}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ComponentPage {
    #[serde(flatten)]
    stats: ComponentStats,
    topology_id: String,
    topology_name: String,
    executor_stats: Vec<ExecutorEntry>,
    component_errors: Vec<ComponentError>,
}

async fn component(
    State(shared): State<AppState>,
    Path((id, component)): Path<(String, String)>,
) -> StormAnswer<ComponentPage> {
    let details = details_of(&shared, &id).await?;
    let Some(found) = details.components.iter().find(|c| c.id == component) else {
        let known: Vec<&str> = details.components.iter().map(|c| c.id.as_str()).collect();
        let error =
            format!("topology `{}` has no component `{component}`; it has: {}", details.summary.name, known.join(", "));
        return Err(Failure::new(StatusCode::NOT_FOUND, error));
    };
    let name = &details.summary.name;
    let record = shared.state.topology(name).await?.ok_or_else(|| not_found(name))?;
    let assignment = shared.state.assignment(name).await?.filter(|a| a.topology_id == record.id);
    let mut executor_stats = Vec::new();
    let mut component_errors = Vec::new();
    for report in shared.reports.current(&record, assignment.as_ref()) {
        let host = details
            .workers
            .iter()
            .find(|w| w.supervisor == report.supervisor_id && w.port == report.port)
            .map_or_else(String::new, |w| w.host.clone());
        let executors = report.metrics.get("executors").and_then(Value::as_array).into_iter().flatten();
        for e in executors.filter(|e| e.get("component").and_then(Value::as_str) == Some(component.as_str())) {
            let tasks: Vec<u64> =
                e.get("tasks").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_u64).collect();
            executor_stats.push(ExecutorEntry {
                id: format!("[{}-{}]", tasks.first().unwrap_or(&0), tasks.last().unwrap_or(&0)),
                host: host.clone(),
                port: report.port,
                counters: Counters::of(e),
                stalled: e.get("stalled").and_then(Value::as_u64).unwrap_or(0) > 0,
            });
            for error in e.get("recent_errors").and_then(Value::as_array).into_iter().flatten() {
                component_errors.push(ComponentError {
                    time: error.get("time_secs").and_then(Value::as_u64).unwrap_or(0),
                    task: error.get("task").and_then(Value::as_u64).unwrap_or(0),
                    error_host: host.clone(),
                    error_port: report.port,
                    error: error.get("message").and_then(Value::as_str).unwrap_or_default().to_owned(),
                });
            }
        }
    }
    executor_stats.sort_by(|a, b| a.id.cmp(&b.id));
    component_errors.sort_by_key(|e| std::cmp::Reverse(e.time));
    Ok(Json(ComponentPage {
        stats: ComponentStats::from(found),
        topology_id: details.summary.id.clone(),
        topology_name: name.clone(),
        executor_stats,
        component_errors,
    }))
}

/// What Storm answers to a topology action.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Operation {
    topology_operation: &'static str,
    topology_id: String,
    status: &'static str,
}

async fn name_of(shared: &AppState, id: &str) -> Result<String, Failure> {
    Ok(details_of(shared, id).await?.summary.name)
}

async fn activate_topology(State(shared): State<AppState>, Path(id): Path<String>) -> StormAnswer<Operation> {
    let name = name_of(&shared, &id).await?;
    let Json(summary) = activate(State(shared), Path(name)).await?;
    Ok(Json(Operation { topology_operation: "activate", topology_id: summary.id, status: "success" }))
}

async fn deactivate_topology(State(shared): State<AppState>, Path(id): Path<String>) -> StormAnswer<Operation> {
    let name = name_of(&shared, &id).await?;
    let Json(summary) = deactivate(State(shared), Path(name)).await?;
    Ok(Json(Operation { topology_operation: "deactivate", topology_id: summary.id, status: "success" }))
}

/// Storm's rebalance options: `{"rebalanceOptions": {"numWorkers": 2, "executors": {"split": 3}}}`.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct StormRebalance {
    #[serde(default)]
    rebalance_options: RebalanceOptions,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RebalanceOptions {
    num_workers: Option<u32>,
    #[serde(default)]
    executors: std::collections::BTreeMap<String, u32>,
}

/// Storm's rebalance: the body (optional) gives new worker and executor counts; without one,
/// the topology is placed afresh with the same counts. The wait is not used: workers move at
/// once, each draining as a kill does.
async fn rebalance_topology(
    State(shared): State<AppState>,
    Path((id, _wait)): Path<(String, u64)>,
    body: axum::body::Bytes,
) -> StormAnswer<Operation> {
    let name = name_of(&shared, &id).await?;
    let options: StormRebalance = match body.is_empty() {
        true => StormRebalance::default(),
        false => serde_json::from_slice(&body).map_err(|e| {
            let error = format!("bad rebalance options ({e}); send {{\"rebalanceOptions\": {{\"numWorkers\": 2, \"executors\": {{\"bolt\": 3}}}}}}");
            Failure::new(StatusCode::BAD_REQUEST, error)
        })?,
    };
    let request = RebalanceRequest {
        workers: options.rebalance_options.num_workers,
        parallelism: options.rebalance_options.executors,
    };
    let Json(summary) = rebalance(State(shared), Path(name), Json(request)).await?;
    Ok(Json(Operation { topology_operation: "rebalance", topology_id: summary.id, status: "success" }))
}

async fn kill_topology(
    State(shared): State<AppState>,
    Path((id, wait)): Path<(String, u32)>,
) -> StormAnswer<Operation> {
    let name = name_of(&shared, &id).await?;
    let query = axum::extract::Query(super::KillQuery { wait: Some(wait) });
    let Json(summary) = kill(State(shared), Path(name), query).await?;
    Ok(Json(Operation { topology_operation: "kill", topology_id: summary.id, status: "success" }))
}
