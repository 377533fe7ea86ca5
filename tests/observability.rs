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

/// The sum of a metric's samples whose labels include all of `labels`.
fn sum_of(exposition: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    exposition
        .lines()
        .filter(|line| line.starts_with(&format!("{metric}{{")))
        .filter(|line| labels.iter().all(|(k, v)| line.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
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
