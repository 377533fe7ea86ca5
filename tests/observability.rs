//! What operators see of a running cluster: workers' metrics reach Nimbus over HTTP (not
//! ZooKeeper) and come out as Prometheus metrics that `promtool` accepts.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use squall_cluster::ClusterState;
use squall_tests::sandbox::ClusterSandbox;

const TOPOLOGY: &str = env!("CARGO_BIN_EXE_test_topology");
const SENTENCES: u64 = 20_000;

fn get(url: &str) -> String {
    let mut response = ureq::get(url).call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    response.body_mut().read_to_string().unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// The values of a metric's samples whose labels include all of `labels`.
fn values_of(exposition: &str, metric: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    exposition
        .lines()
        .filter(|line| line.starts_with(&format!("{metric}{{")))
        .filter(|line| labels.iter().all(|(k, v)| line.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .collect()
}

/// The sum of a metric's samples whose labels include all of `labels`.
fn sum_of(exposition: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    values_of(exposition, metric, labels).into_iter().sum()
}

/// `promtool check metrics` on `exposition`: its exit status and output.
fn promtool_check(exposition: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool (Debian's `prometheus` package; scripts/setup installs it): {e}")
        });
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(exposition.as_bytes()).expect("writes to promtool");
    }
    let output = child.wait_with_output().expect("promtool ran");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// What `squall logs <topology> --follow` prints in `time`, starting at the logs' ends.
fn follow_logs(sandbox: &ClusterSandbox, topology: &str, time: Duration) -> String {
    let mut follow = Command::new(squall_tests::sandbox::squall_binary())
        .arg("--config")
        .arg(&sandbox.config)
        .args(["logs", topology, "--follow", "--tail", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("runs squall logs --follow");
    std::thread::sleep(time);
    let _ = follow.kill();
    let output = follow.wait_with_output().expect("its output");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn metrics_reach_nimbus_over_http_and_export_to_prometheus() {
    let sandbox = ClusterSandbox::start(1, 1, 2);
    let out = sandbox.cli_ok(&["submit", TOPOLOGY, "--name", "wc", "-c", "topology.workers=2"]);
    assert!(out.contains("is running"), "{out}");
    let url = format!("http://{}/metrics", sandbox.nimbus_address(0));
    sandbox.wait_for("every sentence split, in /metrics", Duration::from_secs(90), |_| {
        let text = get(&url);
        sum_of(&text, "squall_executed_total", &[("topology", "wc"), ("component", "split")]) == SENTENCES as f64
    });
    let text = get(&url);
    let (valid, report) = promtool_check(&text);
    assert!(valid, "promtool rejects the exposition: {report}\n{text}");
    // One series per executor, labelled by its task and worker.
    let split_series: Vec<&str> =
        text.lines().filter(|l| l.starts_with("squall_executed_total{") && l.contains("component=\"split\"")).collect();
    assert!(!split_series.is_empty(), "{text}");
    for line in &split_series {
        assert!(line.contains("task=\"") && line.contains("worker=\"127.0.0.1:"), "{line}");
    }
    assert!(sum_of(&text, "squall_emitted_total", &[("component", "sentences")]) >= SENTENCES as f64, "{text}");
    assert!(sum_of(&text, "squall_worker_report_age_seconds", &[("topology", "wc")]) < 30.0, "{text}");
    // The count bolt's own metrics, per task: every word counted once, eight distinct words
    // over its tasks, lengths of 3 to 6 letters.
    let words = [("topology", "wc"), ("component", "count"), ("name", "words")];
    assert_eq!(sum_of(&text, "squall_custom_total", &words), (3 * SENTENCES) as f64, "{text}");
    let distinct = [("component", "count"), ("name", "distinct_words")];
    assert_eq!(sum_of(&text, "squall_custom_value", &distinct), 8.0, "{text}");
    let lengths = [("component", "count"), ("name", "word_length")];
    assert_eq!(sum_of(&text, "squall_custom_distribution_count", &lengths), (3 * SENTENCES) as f64);
    let p99 = [("component", "count"), ("name", "word_length"), ("quantile", "0.99")];
    // Per task: the longest word ("squall") has six letters, the shortest three.
    let p99s = values_of(&text, "squall_custom_distribution", &p99);
    assert_eq!(p99s.len(), 4, "{text}");
    assert!(p99s.iter().all(|p| (3.0..=6.8).contains(p)), "{p99s:?}");
    assert!(p99s.iter().any(|p| *p >= 6.0), "{p99s:?}");
    assert!(sum_of(&text, "squall_worker_rss_bytes", &[("topology", "wc")]) > 1e6, "{text}");
    assert!(sum_of(&text, "squall_worker_cpu_seconds_total", &[("topology", "wc")]) > 0.0, "{text}");
    // The two workers' transport: what one wrote, the other read (once nothing is in flight),
    // over lanes that are up.
    sandbox.wait_for("sent and received tuples to match", Duration::from_secs(30), |_| {
        let text = get(&url);
        let sent = sum_of(&text, "squall_worker_transport_sent_tuples_total", &[("topology", "wc")]);
        sent > 0.0 && sent == sum_of(&text, "squall_worker_transport_received_tuples_total", &[("topology", "wc")])
    });
    let text = get(&url);
    assert!(sum_of(&text, "squall_worker_transport_sent_bytes_total", &[("topology", "wc")]) > 0.0, "{text}");
    let lanes = values_of(&text, "squall_worker_lane_connected", &[("topology", "wc")]);
    assert!(!lanes.is_empty() && lanes.iter().all(|up| *up == 1.0), "{text}");
    assert_eq!(sum_of(&text, "squall_worker_lane_depth", &[("topology", "wc")]), 0.0, "{text}");
    assert!(values_of(&text, "squall_worker_lane_capacity", &[("topology", "wc")]).iter().all(|c| *c > 0.0));
    assert_eq!(sum_of(&text, "squall_worker_transport_reconnects_total", &[("topology", "wc")]), 0.0, "{text}");
    let described = sandbox.cli_ok(&["describe", "wc"]);
    assert!(described.contains("transport: sent") && described.contains(" up depth "), "{described}");
    let details = sandbox.describe("wc");
    let count = details["components"].as_array().and_then(|c| c.iter().find(|c| c["id"] == "count")).cloned();
    let user = count.map(|c| c["metrics"]["user"].clone()).unwrap_or_default();
    let described: u64 =
        user.as_object().into_iter().flatten().filter_map(|(_, t)| t["counters"]["words"].as_u64()).sum();
    assert_eq!(described, 3 * SENTENCES, "{user}");
    assert!(details["workers"].as_array().is_some_and(|w| w.iter().all(|w| w["rss_bytes"].as_u64() > Some(1 << 20))));

    // ZooKeeper holds the workers' liveness only: no metrics in their heartbeats.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let beats = runtime.block_on(async {
        let state = ClusterState::connect(&sandbox.zookeeper.connect_string(), "/squall", Duration::from_secs(10))
            .await
            .expect("connects to zookeeper");
        state.worker_heartbeats("wc").await.expect("reads heartbeats")
    });
    assert_eq!(beats.len(), 2, "{beats:?}");
    assert!(beats.values().all(|b| b.metrics.is_null()), "metrics left in zookeeper: {beats:?}");
    sandbox.cli_ok(&["kill", "wc", "--wait", "0"]);
}

/// Errors from `execute` are recorded per component with their task and time, newest kept:
/// `describe` and `/metrics` show them while every sentence still gets through.
#[test]
fn execute_errors_are_recorded_per_component_and_shown() {
    // Sentences enough to still run when `monitor` watches.
    let env = [("SQUALL_TEST_FAIL_EVERY", "500"), ("SQUALL_TEST_SENTENCES", "5000000")];
    let sandbox = ClusterSandbox::start_with(1, 1, 2, &env);
    sandbox.cli_ok(&["submit", TOPOLOGY, "--name", "errs", "-c", "topology.workers=2"]);
    let split_of = |details: &serde_json::Value| {
        details["components"].as_array().and_then(|c| c.iter().find(|c| c["id"] == "split")).cloned()
    };
    // Each split task fails every 500th call: 20,000 sentences and their replays give dozens.
    sandbox.wait_for("split errors in describe", Duration::from_secs(90), |s| {
        split_of(&s.describe("errs")).is_some_and(|c| c["metrics"]["errors"].as_u64() >= Some(20))
    });
    let split = split_of(&sandbox.describe("errs")).expect("a split component");
    let recent = split["metrics"]["recent_errors"].as_array().cloned().unwrap_or_default();
    assert_eq!(recent.len(), 10, "the newest ten are kept: {split}");
    let tasks: Vec<u64> = split["tasks"].as_array().into_iter().flatten().filter_map(|t| t.as_u64()).collect();
    let times: Vec<u64> = recent.iter().filter_map(|e| e["time_secs"].as_u64()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first: {recent:?}");
    for error in &recent {
        assert!(error["message"].as_str().is_some_and(|m| m.starts_with("split: a test failure on call ")), "{error}");
        assert!(error["task"].as_u64().is_some_and(|t| tasks.contains(&t)), "{error}");
    }
    let text = sandbox.cli_ok(&["describe", "errs"]);
    assert!(text.contains("error (task ") && text.contains("split: a test failure on call "), "{text}");
    let metrics = get(&format!("http://{}/metrics", sandbox.nimbus_address(0)));
    assert!(sum_of(&metrics, "squall_errors_total", &[("component", "split")]) >= 20.0, "{metrics}");

    // `monitor`: one line per component per sample, with the rates since the sample before.
    let watched = sandbox.cli_ok(&["monitor", "errs", "--interval", "1", "--samples", "2"]);
    let rows: Vec<Vec<&str>> = watched.lines().map(|l| l.split_whitespace().collect()).collect();
    let rates = |component: &str| -> Vec<f64> {
        rows.iter().filter(|r| r.first() == Some(&component)).filter_map(|r| r.get(1)?.parse().ok()).collect()
    };
    assert_eq!(rates("sentences").len(), 2, "{watched}");
    assert!(rates("sentences").iter().all(|r| *r > 0.0), "the spout emits all along: {watched}");
    assert_eq!(rates("split").len(), 2, "{watched}");
    let only = sandbox.cli_ok(&["monitor", "errs", "-i", "1", "-n", "1", "-m", "count"]);
    assert!(only.lines().any(|l| l.starts_with("count ")) && !only.contains("split "), "{only}");
    let unknown = sandbox.cli(&["monitor", "errs", "-n", "1", "-m", "nope"]);
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(!unknown.status.success() && stderr.contains("has no component `nope`"), "{stderr}");

    // The workers' logs through their supervisor's logviewer.
    let logs = sandbox.cli_ok(&["logs", "errs"]);
    let workers: std::collections::BTreeSet<&str> =
        logs.lines().filter_map(|l| l.strip_prefix('[')?.split(']').next()).collect();
    assert_eq!(workers.len(), 2, "both workers' lines: {logs}");
    assert!(logs.contains("execute failed"), "{logs}");
    let sink = sandbox.cli_ok(&["logs", "errs", "-m", "sink"]);
    let sink_workers: std::collections::BTreeSet<&str> =
        sink.lines().filter_map(|l| l.strip_prefix('[')?.split(']').next()).collect();
    assert_eq!(sink_workers.len(), 1, "the one worker running the sink: {sink}");
    let unknown = sandbox.cli(&["logs", "errs", "-m", "nope"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("has no component `nope`"));
    // --follow prints what is written after it starts.
    let followed = follow_logs(&sandbox, "errs", Duration::from_secs(4));
    assert!(followed.lines().any(|l| l.contains("execute failed")), "new lines while following: {followed}");

    // set-log-level: `error` silences the split's warnings, a reset brings them back, and so
    // does a filter's lapse.
    let set = sandbox.cli_ok(&["set-log-level", "errs", "error"]);
    assert!(set.contains("logs with `error` until reset"), "{set}");
    std::thread::sleep(Duration::from_millis(2500));
    let quiet = follow_logs(&sandbox, "errs", Duration::from_secs(3));
    assert!(!quiet.contains("execute failed"), "warnings under an `error` filter: {quiet}");
    sandbox.cli_ok(&["set-log-level", "errs", "--reset"]);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(follow_logs(&sandbox, "errs", Duration::from_secs(3)).contains("execute failed"), "after the reset");
    // Whole seconds: the filter holds 5 to 6 s.
    sandbox.cli_ok(&["set-log-level", "errs", "error", "--for", "6s"]);
    std::thread::sleep(Duration::from_millis(2000));
    assert!(!follow_logs(&sandbox, "errs", Duration::from_millis(1500)).contains("execute failed"));
    std::thread::sleep(Duration::from_millis(4000));
    assert!(follow_logs(&sandbox, "errs", Duration::from_secs(3)).contains("execute failed"), "after the lapse");
    let bad = sandbox.cli(&["set-log-level", "errs", "a=b=c"]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && stderr.contains("bad log filter `a=b=c`"), "{stderr}");
    // The logviewer serves worker logs only.
    let details = sandbox.describe("errs");
    let log_url = details["workers"][0]["log_url"].as_str().expect("a log url").to_owned();
    let viewer = log_url.split("/api/v1/logs/").next().unwrap_or_default().to_owned();
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    for bad in ["..%2F..%2Fetc%2Fpasswd", "secret.txt", "..log"] {
        let status = agent.get(&format!("{viewer}/api/v1/logs/{bad}")).call().map(|r| r.status().as_u16());
        assert!(matches!(status, Ok(400 | 404)), "{bad}: {status:?}");
    }
    let listed: Vec<serde_json::Value> =
        agent.get(&format!("{viewer}/api/v1/logs")).call().expect("lists").body_mut().read_json().expect("json");
    assert!(listed.iter().any(|f| f["file"].as_str().is_some_and(|f| f.starts_with("errs-"))), "{listed:?}");
    sandbox.cli_ok(&["kill", "errs", "--wait", "0"]);
}

/// Emits forever.
#[derive(Clone, Default, squall::prelude::Spout)]
#[squall(output = squall_tests::Keyed)]
struct Endless {
    seq: u64,
}

impl squall::prelude::Spout for Endless {
    type MsgId = ();

    async fn next_tuple(
        &mut self,
        out: &mut squall::prelude::SpoutCollector<'_, Self>,
    ) -> Result<(), squall::ComponentError> {
        self.seq += 1;
        out.emit(squall_tests::Keyed { key: squall::Str::new_static("k"), seq: self.seq })?;
        Ok(())
    }
}

/// Panics on its tenth tuple.
#[derive(Clone, Default, squall::prelude::Bolt)]
struct Boom {
    seen: u64,
}

impl squall::prelude::Bolt for Boom {
    async fn execute(
        &mut self,
        _input: squall::Tuple,
        _out: &mut squall::prelude::BoltCollector<'_, Self>,
    ) -> Result<(), squall::ComponentError> {
        self.seen += 1;
        assert!(self.seen < 10, "boom on tuple {}", self.seen);
        Ok(())
    }
}

/// Cannot prepare.
#[derive(Clone, Default, squall::prelude::Bolt)]
struct Unprepared;

impl squall::prelude::Bolt for Unprepared {
    async fn prepare(&mut self, _ctx: &squall::TopologyContext) -> Result<(), squall::ComponentError> {
        Err("no database at db.invalid:5432".into())
    }

    async fn execute(
        &mut self,
        _input: squall::Tuple,
        _out: &mut squall::prelude::BoltCollector<'_, Self>,
    ) -> Result<(), squall::ComponentError> {
        Ok(())
    }
}

/// A panic in `execute` and a failed `prepare` are recorded as their components' errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_and_failed_prepares_are_recorded_errors() {
    let mut b = squall::TopologyBuilder::new();
    b.spout("spout", Endless::default(), 1);
    b.bolt("boom", Boom::default(), 1).shuffle_grouping("spout");
    b.bolt("unprepared", Unprepared, 1).shuffle_grouping("spout");
    let cluster = squall::LocalCluster::new();
    cluster.submit("errors", &b.build().expect("builds")).expect("submits");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (boom, unprepared) = loop {
        let metrics = cluster.metrics("errors").expect("metrics");
        let boom = metrics.component("boom").expect("boom");
        let unprepared = metrics.component("unprepared").expect("unprepared");
        if !boom.recent_errors.is_empty() && !unprepared.recent_errors.is_empty() {
            break (boom, unprepared);
        }
        assert!(std::time::Instant::now() < deadline, "no errors recorded: {boom:?} {unprepared:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = cluster.kill("errors", Duration::ZERO).await;
    let panic = &boom.recent_errors[0];
    assert!(panic.message.contains("executor panicked: boom on tuple 10"), "{panic:?}");
    assert!(panic.time_secs > 0);
    let failed = &unprepared.recent_errors[0];
    assert_eq!(failed.message, "prepare failed: no database at db.invalid:5432");
    assert_eq!(boom.errors, 1);
}

/// Sleeps three seconds in its fifth `execute` call.
#[derive(Clone, Default, squall::prelude::Bolt)]
struct Sleepy {
    seen: u64,
}

impl squall::prelude::Bolt for Sleepy {
    async fn execute(
        &mut self,
        _input: squall::Tuple,
        _out: &mut squall::prelude::BoltCollector<'_, Self>,
    ) -> Result<(), squall::ComponentError> {
        self.seen += 1;
        if self.seen == 5 {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        Ok(())
    }
}

/// An executor inside one call for longer than `topology.executor.stall.secs` shows as stalled
/// while it is, and not once the call returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_stuck_in_one_call_shows_as_stalled() {
    let mut b = squall::TopologyBuilder::new();
    b.spout("spout", Endless::default(), 1);
    b.bolt("sleepy", Sleepy::default(), 1).shuffle_grouping("spout").set("topology.executor.stall.secs", 1);
    let cluster = squall::LocalCluster::new();
    cluster.submit("stall", &b.build().expect("builds")).expect("submits");
    let sleepy = || cluster.metrics("stall").expect("metrics").component("sleepy").expect("sleepy");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seen_busy = false;
    let stalled = loop {
        let m = sleepy();
        seen_busy |= m.current_call_ms > 0;
        if m.stalled == 1 {
            break m;
        }
        assert!(m.current_call_ms < 1_500, "in a call for {} ms and not stalled", m.current_call_ms);
        assert!(std::time::Instant::now() < deadline, "never stalled: {m:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(seen_busy || stalled.current_call_ms >= 1_000);
    assert!(stalled.current_call_ms >= 1_000, "{stalled:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sleepy().stalled != 0 {
        assert!(std::time::Instant::now() < deadline, "still stalled after the call returned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = cluster.kill("stall", Duration::ZERO).await;
}
