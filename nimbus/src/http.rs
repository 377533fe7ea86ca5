//! Nimbus's HTTP API handlers (see [`crate::api`] for the routes and types).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use squall_cluster::records::unix_secs;
use squall_cluster::{ClusterError, LogFilter, TopologyRecord, TopologyStatus, WorkerMetricsReport};
use squall_topology::{ComponentKind, Config, ConfigValue};

use crate::api::{
    ApiError, ArtifactUploaded, ComponentDetails, LeaderInfo, LogLevelRequest, RebalanceRequest, SubmitRequest,
    SupervisorSummary, TopologyDetails, TopologySummary, check_topology_name,
};
use crate::scheduler;
use crate::server::{Shared, effective_spec, free_slots, rebalanced_assignment, summary, worker_details};

/// How many of a component's newest errors `describe` shows.
const RECENT_ERRORS: usize = 10;
mod storm;
mod ui;

/// The largest topology binary accepted.
const MAX_ARTIFACT_BYTES: usize = 1 << 30;
/// How long a request waits for a lost ZooKeeper connection to come back before it is answered
/// 503 "cannot reach ZooKeeper".
const ZOOKEEPER_WAIT: Duration = Duration::from_secs(3);

type AppState = Arc<Shared>;

pub(crate) fn router(shared: AppState) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/leader", get(leader))
        .route("/api/v1/artifacts", put(upload))
        .route("/api/v1/artifacts/{hash}", get(download))
        .route("/api/v1/topologies", post(submit).get(list))
        .route("/api/v1/topologies/{name}", get(describe))
        .route("/api/v1/topologies/{name}/kill", post(kill))
        .route("/api/v1/topologies/{name}/activate", post(activate))
        .route("/api/v1/topologies/{name}/deactivate", post(deactivate))
        .route("/api/v1/topologies/{name}/rebalance", post(rebalance))
        .route("/api/v1/topologies/{name}/log-level", post(log_level))
        .route("/api/v1/supervisors", get(supervisors))
        .route("/api/v1/metrics", post(metrics_report))
        .route("/metrics", get(prometheus_metrics))
        .merge(storm::routes())
        .merge(ui::routes())
        .layer(DefaultBodyLimit::max(MAX_ARTIFACT_BYTES))
        .layer(middleware::from_fn_with_state(shared.clone(), zookeeper_failures))
        .with_state(shared)
}

/// The detail of a failure to reach ZooKeeper, carried from [`Failure`] to [`zookeeper_failures`],
/// which knows the addresses to name.
#[derive(Clone)]
struct ZooKeeperUnreachable(String);

/// Answers 503 naming this Nimbus and the ZooKeeper servers when ZooKeeper cannot be reached:
/// at once when the connection is down (rather than after an operation's long session wait),
/// and when a handler's ZooKeeper operation failed for want of a connection.
async fn zookeeper_failures(State(shared): State<AppState>, request: Request, next: Next) -> Response {
    // Serving an artifact or the UI's files and taking a worker's metrics do not touch
    // ZooKeeper.
    let (method, path) = (request.method(), request.uri().path());
    let local = (method == Method::GET
        && (path.starts_with("/api/v1/artifacts/") || path == "/" || path.starts_with("/ui/")))
        || (method == Method::POST && path == "/api/v1/metrics");
    if !local && !shared.state.wait_connected(ZOOKEEPER_WAIT).await {
        let detail = format!("no connection for {} s", ZOOKEEPER_WAIT.as_secs());
        return zookeeper_unreachable(&shared, &detail).into_response();
    }
    let response = next.run(request).await;
    match response.extensions().get::<ZooKeeperUnreachable>() {
        Some(ZooKeeperUnreachable(detail)) => zookeeper_unreachable(&shared, detail).into_response(),
        None => response,
    }
}

fn zookeeper_unreachable(shared: &Shared, detail: &str) -> Failure {
    Failure::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "nimbus at {} cannot reach ZooKeeper at {}: {detail}; check that ZooKeeper is running and \
             `zookeeper.servers` in squall.toml",
            shared.me,
            shared.state.servers()
        ),
    )
}

/// An error answer with its status.
struct Failure(StatusCode, ApiError);

impl Failure {
    fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Failure(status, ApiError { error: error.into(), leader: None })
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let unreachable = (self.0 == StatusCode::SERVICE_UNAVAILABLE).then(|| self.1.error.clone());
        let mut response = (self.0, Json(self.1)).into_response();
        if let Some(detail) = unreachable {
            response.extensions_mut().insert(ZooKeeperUnreachable(detail));
        }
        response
    }
}

impl From<ClusterError> for Failure {
    fn from(e: ClusterError) -> Self {
        use squall_cluster::zookeeper_client::Error as Zk;
        let status = match &e {
            ClusterError::Connect { .. }
            | ClusterError::NoSession { .. }
            | ClusterError::Closed
            | ClusterError::TaskStopped { .. }
            | ClusterError::ZooKeeper {
                source: Zk::ConnectionLoss | Zk::SessionExpired | Zk::ClientClosed | Zk::Timeout | Zk::SessionMoved,
                ..
            } => StatusCode::SERVICE_UNAVAILABLE,
            ClusterError::InvalidName { .. } => StatusCode::BAD_REQUEST,
            ClusterError::Contended { .. } | ClusterError::HeldByOther { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure::new(status, e.to_string())
    }
}

type Answer<T> = Result<Json<T>, Failure>;

/// Writes go to the leader only.
async fn require_leader(shared: &Shared) -> Result<(), Failure> {
    if shared.election.is_leader() {
        return Ok(());
    }
    let leader = shared.election.leader().await.ok().flatten();
    Err(Failure(
        StatusCode::MISDIRECTED_REQUEST,
        ApiError {
            error: format!(
                "this nimbus ({}) does not lead; send writes to the leader{}",
                shared.me,
                leader.as_ref().map(|l| format!(" at {l}")).unwrap_or_default()
            ),
            leader,
        },
    ))
}

fn not_found(name: &str) -> Failure {
    Failure::new(StatusCode::NOT_FOUND, format!("no topology named `{name}`; `squall list` shows the running ones"))
}

async fn leader(State(shared): State<AppState>) -> Answer<LeaderInfo> {
    let leader = shared.election.leader().await?;
    Ok(Json(LeaderInfo { me: shared.me.clone(), leader }))
}

async fn upload(State(shared): State<AppState>, body: Bytes) -> Answer<ArtifactUploaded> {
    require_leader(&shared).await?;
    if body.is_empty() {
        return Err(Failure::new(StatusCode::BAD_REQUEST, "the uploaded topology binary is empty"));
    }
    let store = shared.artifacts.clone();
    let bytes = body.clone();
    let hash = tokio::task::spawn_blocking(move || store.put(&bytes))
        .await
        .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    shared.state.register_artifact(&hash, &shared.me).await?;
    tracing::info!(artifact = %hash, size = body.len(), "stored artifact");
    Ok(Json(ArtifactUploaded { hash, size: body.len() as u64 }))
}

async fn download(State(shared): State<AppState>, Path(hash): Path<String>) -> Response {
    let store = shared.artifacts.clone();
    match tokio::task::spawn_blocking(move || store.get(&hash)).await {
        Ok(Ok(bytes)) => ([("content-type", "application/octet-stream")], bytes).into_response(),
        Ok(Err(e)) => Failure::new(StatusCode::NOT_FOUND, e.to_string()).into_response(),
        Err(e) => Failure::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn submit(State(shared): State<AppState>, Json(request): Json<SubmitRequest>) -> Answer<TopologySummary> {
    require_leader(&shared).await?;
    let name = request.name.as_str();
    check_topology_name(name).map_err(|e| Failure::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    if !scheduler::has_spout(&request.spec) {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "the topology spec has no spout; is this a Squall topology?",
        ));
    }
    if !shared.artifacts.contains(&request.artifact) {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            format!("artifact {} was not uploaded to this nimbus; upload it first", request.artifact),
        ));
    }
    // The workers apply the overrides to the spec's config: check them now, not in every worker.
    let mut config = Config::default();
    let spec_config = serde_json::to_value(&request.spec.config).unwrap_or_default();
    config
        .merge_json(&spec_config)
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, format!("topology config: {e}")))?;
    for (key, value) in &request.config {
        config.set_text(key, value).map_err(|e| Failure::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    }
    if shared.state.topology(name).await?.is_some() {
        return Err(Failure::new(
            StatusCode::CONFLICT,
            format!("a topology named `{name}` is already running; kill it first or choose another name"),
        ));
    }
    let record = TopologyRecord {
        name: name.to_owned(),
        id: shared.state.new_topology_id(name).await?,
        status: if request.inactive { TopologyStatus::Inactive } else { TopologyStatus::Active },
        spec: request.spec,
        artifact_hash: request.artifact,
        num_workers: config.workers,
        config: request.config.into_iter().map(|(k, v)| (k, ConfigValue::Str(v))).collect(),
        submitted_at: unix_secs(),
        status_reason: None,
        kill_wait_secs: None,
        parallelism: BTreeMap::new(),
        log_filter: None,
    };
    if let Err(e) = shared.state.create_topology(&record).await {
        return Err(match e {
            ClusterError::AlreadyExists { .. } => Failure::new(
                StatusCode::CONFLICT,
                format!("a topology named `{name}` is already running; kill it first or choose another name"),
            ),
            e => e.into(),
        });
    }
    tracing::info!(topology = %name, id = %record.id, workers = record.num_workers, "submitted topology");
    shared.wake.notify_one();
    Ok(Json(summary(&record, None, &BTreeMap::new(), shared.config.task_timeout)))
}

async fn list(State(shared): State<AppState>) -> Answer<Vec<TopologySummary>> {
    let records = shared.state.topologies().await?;
    let assignments = shared.state.assignments().await?;
    let mut out = Vec::new();
    for (name, record) in &records {
        let beats = shared.state.worker_heartbeats(name).await?;
        out.push(summary(record, assignments.get(name), &beats, shared.config.task_timeout));
    }
    Ok(Json(out))
}

async fn supervisors(State(shared): State<AppState>) -> Answer<Vec<SupervisorSummary>> {
    let supervisors = shared.state.supervisors().await?;
    let assignments = shared.state.assignments().await?;
    let now = unix_secs();
    let summaries = supervisors
        .into_values()
        .map(|s| {
            let used: BTreeSet<u16> = assignments
                .values()
                .flat_map(|a| &a.workers)
                .filter(|w| w.supervisor_id == s.id)
                .map(|w| w.port)
                .collect();
            SupervisorSummary {
                logviewer: s.logviewer_port.map(|port| format!("{}:{port}", s.host)),
                id: s.id,
                host: s.host,
                ports: s.ports,
                used_ports: used.into_iter().collect(),
                uptime_secs: now.saturating_sub(s.started_at),
                version: s.version,
            }
        })
        .collect();
    Ok(Json(summaries))
}

/// A worker's metrics report: kept in memory, never written to ZooKeeper.
async fn metrics_report(State(shared): State<AppState>, Json(report): Json<WorkerMetricsReport>) -> StatusCode {
    shared.reports.insert(report);
    StatusCode::NO_CONTENT
}

/// The Prometheus exposition of every running topology's metrics.
async fn prometheus_metrics(State(shared): State<AppState>) -> Result<Response, Failure> {
    let mut topologies = Vec::new();
    for (name, record) in shared.state.topologies().await? {
        let assignment = shared.state.assignment(&name).await?.filter(|a| a.topology_id == record.id);
        let reports = shared.reports.current(&record, assignment.as_ref());
        topologies.push((record, assignment, reports));
    }
    let text = crate::prometheus::exposition(&topologies, squall_cluster::records::unix_millis())
        .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the metrics: {e}")))?;
    Ok(([(axum::http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response())
}

async fn describe(State(shared): State<AppState>, Path(name): Path<String>) -> Answer<TopologyDetails> {
    let record = shared.state.topology(&name).await?.ok_or_else(|| not_found(&name))?;
    let assignment = shared.state.assignment(&name).await?.filter(|a| a.topology_id == record.id);
    let beats = shared.state.worker_heartbeats(&name).await?;
    let supervisors = shared.state.supervisors().await?;
    // Sum each component's counters over the latest reports of the workers assigned now.
    let mut metrics: BTreeMap<String, serde_json::Map<String, serde_json::Value>> = BTreeMap::new();
    let reports = shared.reports.current(&record, assignment.as_ref());
    for report in &reports {
        let Some(components) = report.metrics.get("components").and_then(|c| c.as_object()) else { continue };
        for (component, counters) in components {
            let sum = metrics.entry(component.clone()).or_default();
            for (key, value) in counters.as_object().into_iter().flatten() {
                if let Some(n) = value.as_u64() {
                    let total = sum.get(key).and_then(|v| v.as_u64()).unwrap_or(0) + n;
                    sum.insert(key.clone(), total.into());
                } else if let Some(x) = value.as_f64() {
                    // Latencies and capacity: the worst worker's; the mean execute latency is
                    // weighted by executions below.
                    let worst = sum.get(key).and_then(|v| v.as_f64()).map_or(x, |y| y.max(x));
                    sum.insert(key.clone(), worst.into());
                    if key == "execute_latency_ms" {
                        let executed = counters.get("executed").and_then(|e| e.as_u64()).unwrap_or(0) as f64;
                        let weighted = sum.get("$execute_ms_total").and_then(|v| v.as_f64()).unwrap_or(0.0);
                        sum.insert("$execute_ms_total".to_owned(), (weighted + x * executed).into());
                    }
                } else if let Some(errors) = value.as_array().filter(|_| key == "recent_errors") {
                    // Each worker's newest errors; the newest of all are kept below.
                    let merged = sum.entry(key.clone()).or_insert_with(|| serde_json::Value::Array(Vec::new()));
                    if let Some(merged) = merged.as_array_mut() {
                        merged.extend(errors.iter().cloned());
                    }
                } else if key == "last_error" && value.is_string() {
                    sum.insert(key.clone(), value.clone());
                } else if let Some(tasks) = value.as_object().filter(|_| key == "status" || key == "user") {
                    // What tasks report about themselves and their own metrics, by task: each
                    // task runs in one worker.
                    let merged =
                        sum.entry(key.clone()).or_insert_with(|| serde_json::Value::Object(Default::default()));
                    if let Some(merged) = merged.as_object_mut() {
                        merged.extend(tasks.iter().map(|(k, v)| (k.clone(), v.clone())));
                    }
                }
            }
        }
    }
    for sum in metrics.values_mut() {
        if let Some(total_ms) = sum.remove("$execute_ms_total").and_then(|v| v.as_f64()) {
            let executed = sum.get("executed").and_then(|e| e.as_u64()).unwrap_or(0);
            if executed > 0 {
                sum.insert("execute_latency_ms".to_owned(), (total_ms / executed as f64).into());
            }
        }
        if let Some(errors) = sum.get_mut("recent_errors").and_then(|e| e.as_array_mut()) {
            errors.sort_by_key(|e| e.get("time_secs").and_then(|t| t.as_u64()).unwrap_or(0));
            let excess = errors.len().saturating_sub(RECENT_ERRORS);
            errors.drain(..excess);
        }
    }
    let chains = squall_topology::ChainPlan::new(&effective_spec(&record), &record.parallelism);
    let mut components: Vec<ComponentDetails> = record
        .spec
        .components
        .iter()
        .map(|c| ComponentDetails {
            chained_to: chains.link(&c.id).map(|link| link.upstream.clone()),
            id: c.id.clone(),
            kind: match c.kind {
                ComponentKind::Spout => "spout",
                ComponentKind::Bolt => "bolt",
            }
            .to_owned(),
            parallelism: record.parallelism.get(&c.id).copied().unwrap_or(c.parallelism),
            tasks: c.task_ids.clone(),
            metrics: metrics.remove(&c.id).map(serde_json::Value::Object).unwrap_or_default(),
        })
        .collect();
    if let Some(acker) = metrics.remove(squall_topology::ACKER_COMPONENT) {
        let acker_tasks = scheduler::executors(&effective_spec(&record), &record.parallelism, record.num_workers)
            .into_iter()
            .flatten()
            .filter(|t| !record.spec.components.iter().any(|c| c.task_ids.contains(t)))
            .collect::<Vec<_>>();
        components.push(ComponentDetails {
            id: squall_topology::ACKER_COMPONENT.to_owned(),
            kind: "acker".to_owned(),
            parallelism: acker_tasks.len() as u32,
            tasks: acker_tasks,
            metrics: serde_json::Value::Object(acker),
            chained_to: None,
        });
    }
    Ok(Json(TopologyDetails {
        summary: summary(&record, assignment.as_ref(), &beats, shared.config.task_timeout),
        workers: worker_details(&record, assignment.as_ref(), &beats)
            .into_iter()
            .map(|mut w| {
                if let Some(r) = reports.iter().find(|r| r.supervisor_id == w.supervisor && r.port == w.port) {
                    (w.rss_bytes, w.cpu_seconds) = (r.rss_bytes, r.cpu_seconds);
                    w.transport = r.metrics.get("transport").cloned();
                }
                if let Some(lv) = supervisors.get(&w.supervisor).and_then(|s| s.logviewer_port) {
                    w.log_url = Some(format!("http://{}:{lv}/api/v1/logs/{}-{}.log", w.host, name, w.port));
                }
                w
            })
            .collect(),
        components,
        artifact: record.artifact_hash.clone(),
    }))
}

#[derive(Deserialize)]
struct KillQuery {
    #[serde(default)]
    wait: Option<u32>,
}

async fn kill(
    State(shared): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<KillQuery>,
) -> Answer<TopologySummary> {
    require_leader(&shared).await?;
    let record = shared
        .state
        .update_topology(&name, |r| {
            r.status = TopologyStatus::Killed;
            r.kill_wait_secs = Some(q.wait.unwrap_or(30));
            r.status_reason = Some(format!("killed; stopping after {} s", q.wait.unwrap_or(30)));
        })
        .await?
        .ok_or_else(|| not_found(&name))?;
    tracing::info!(topology = %name, wait = ?q.wait, "killing topology");
    shared.wake.notify_one();
    Ok(Json(summary(&record, None, &BTreeMap::new(), shared.config.task_timeout)))
}

async fn set_status(shared: &Shared, name: &str, status: TopologyStatus) -> Answer<TopologySummary> {
    require_leader(shared).await?;
    let current = shared.state.topology(name).await?.ok_or_else(|| not_found(name))?;
    if current.status == TopologyStatus::Killed {
        return Err(Failure::new(StatusCode::CONFLICT, format!("topology `{name}` is being killed")));
    }
    let record = shared
        .state
        .update_topology(name, |r| {
            if r.status != TopologyStatus::Killed {
                r.status = status;
            }
        })
        .await?
        .ok_or_else(|| not_found(name))?;
    Ok(Json(summary(&record, None, &BTreeMap::new(), shared.config.task_timeout)))
}

/// Sets or resets the log filter the topology's workers use (they pick it up within a second).
async fn log_level(
    State(shared): State<AppState>,
    Path(name): Path<String>,
    Json(request): Json<LogLevelRequest>,
) -> Answer<TopologySummary> {
    require_leader(&shared).await?;
    let filter = match request.filter {
        None => None,
        Some(filter) => {
            if let Err(e) = tracing_subscriber::EnvFilter::try_new(&filter) {
                let error = format!(
                    "bad log filter `{filter}`: {e}; use tracing's syntax, such as `debug` or `my_topology=trace,squall=info`"
                );
                return Err(Failure::new(StatusCode::BAD_REQUEST, error));
            }
            Some(LogFilter { filter, until: request.for_secs.map(|s| unix_secs().saturating_add(s)) })
        }
    };
    let record = shared
        .state
        .update_topology(&name, |r| r.log_filter = filter.clone())
        .await?
        .ok_or_else(|| not_found(&name))?;
    tracing::info!(topology = %name, filter = ?record.log_filter, "log filter set");
    let assignment = shared.state.assignment(&name).await?;
    let beats = shared.state.worker_heartbeats(&name).await?;
    Ok(Json(summary(&record, assignment.as_ref(), &beats, shared.config.task_timeout)))
}

async fn activate(State(shared): State<AppState>, Path(name): Path<String>) -> Answer<TopologySummary> {
    set_status(&shared, &name, TopologyStatus::Active).await
}

async fn deactivate(State(shared): State<AppState>, Path(name): Path<String>) -> Answer<TopologySummary> {
    set_status(&shared, &name, TopologyStatus::Inactive).await
}

async fn rebalance(
    State(shared): State<AppState>,
    Path(name): Path<String>,
    Json(request): Json<RebalanceRequest>,
) -> Answer<TopologySummary> {
    require_leader(&shared).await?;
    let current = shared.state.topology(&name).await?.ok_or_else(|| not_found(&name))?;
    if current.status == TopologyStatus::Killed {
        return Err(Failure::new(StatusCode::CONFLICT, format!("topology `{name}` is being killed")));
    }
    for (component, n) in &request.parallelism {
        let Some(spec) = current.spec.components.iter().find(|c| &c.id == component) else {
            return Err(Failure::new(
                StatusCode::BAD_REQUEST,
                format!("topology `{name}` has no component `{component}`"),
            ));
        };
        if *n == 0 || *n > spec.tasks {
            return Err(Failure::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "component `{component}` has {} tasks: its parallelism must be 1 to {}",
                    spec.tasks, spec.tasks
                ),
            ));
        }
    }
    if request.workers == Some(0) {
        return Err(Failure::new(StatusCode::BAD_REQUEST, "a topology needs at least one worker"));
    }
    let record = shared
        .state
        .update_topology(&name, |r| {
            if let Some(w) = request.workers {
                r.num_workers = w;
            }
            r.parallelism.extend(request.parallelism.clone());
        })
        .await?
        .ok_or_else(|| not_found(&name))?;
    // The topology's own slots count as free: it moves onto the new layout at once.
    let supervisors = shared.state.supervisors().await?;
    let assignments = shared.state.assignments().await?;
    let free = free_slots(&supervisors, &assignments, Some(&name));
    match rebalanced_assignment(&shared.config, &record, assignments.get(&name), &free) {
        Ok(assignment) => {
            let written = shared.state.put_assignment(&name, &assignment).await?;
            tracing::info!(topology = %name, version = written.version, workers = written.workers.len(), "rebalanced topology");
        }
        Err(waiting) => {
            return Err(Failure::new(StatusCode::CONFLICT, format!("cannot rebalance `{name}`: {waiting}")));
        }
    }
    shared.wake.notify_one();
    Ok(Json(summary(&record, None, &BTreeMap::new(), shared.config.task_timeout)))
}
