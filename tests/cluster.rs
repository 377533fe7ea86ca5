//! The cluster for real: ZooKeeper, Nimbus and supervisors as processes, workers as processes
//! exchanging tuples over TCP, driven through the `squall` CLI.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use serde_json::Value;
use squall_tests::sandbox::{ClusterSandbox, free_port, kill9};

const TOPOLOGY: &str = env!("CARGO_BIN_EXE_test_topology");
const SENTENCES: u64 = 20_000;
const WORDS: [&str; 8] = ["storm", "squall", "wind", "rain", "cloud", "sky", "sea", "wave"];

/// The counts the test topology must produce (its `sentence` function, restated).
fn expected_counts() -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for k in 0..SENTENCES {
        for i in 0..3u32 {
            let word = WORDS[((k / 8u64.pow(i)) % 8) as usize];
            *counts.entry(word.to_owned()).or_default() += 1;
        }
    }
    counts
}

fn submit(sandbox: &ClusterSandbox, name: &str, workers: u32) -> String {
    sandbox.cli_ok(&["submit", TOPOLOGY, "--name", name, "-c", &format!("topology.workers={workers}")])
}

/// Whether every spout task reports all its ids acked.
fn all_acked(sandbox: &ClusterSandbox) -> bool {
    all_acked_of(sandbox, SENTENCES)
}

fn all_acked_of(sandbox: &ClusterSandbox, total: u64) -> bool {
    let reports = sandbox.spout_reports();
    reports.len() == 2
        && reports.iter().all(|r| r["acked"] == r["expected"] && r["in_flight"] == 0)
        && reports.iter().map(|r| r["expected"].as_u64().unwrap_or(0)).sum::<u64>() == total
}

/// Tuples the sink has received so far.
fn received(sandbox: &ClusterSandbox) -> u64 {
    sandbox.output("counts.json").and_then(|o| o["received"].as_u64()).unwrap_or(0)
}

fn counts(sandbox: &ClusterSandbox) -> Option<BTreeMap<String, u64>> {
    let out = sandbox.output("counts.json")?;
    serde_json::from_value(out["counts"].clone()).ok()
}

/// Each word reached exactly one count task (fields grouping across processes).
fn one_task_per_word(sandbox: &ClusterSandbox) -> bool {
    let Some(out) = sandbox.output("counts.json") else { return false };
    let Some(tasks) = out["tasks"].as_object() else { return false };
    tasks.len() == WORDS.len() && tasks.values().all(|t| t.as_array().is_some_and(|a| a.len() == 1))
}

fn running_workers(details: &Value) -> u64 {
    details["summary"]["workers_running"].as_u64().unwrap_or(0)
}

#[test]
fn word_count_runs_on_four_workers_over_two_supervisors_with_exact_counts() {
    let sandbox = ClusterSandbox::start(1, 2, 2);
    let out = submit(&sandbox, "wc", 4);
    assert!(out.contains("submitted topology `wc`"), "{out}");
    assert!(out.contains("is running"), "{out}");

    sandbox.wait_for("every id acked", Duration::from_secs(90), all_acked);
    sandbox.wait_for("exact counts at the sink", Duration::from_secs(30), |s| counts(s) == Some(expected_counts()));
    assert!(one_task_per_word(&sandbox));

    let list = sandbox.cli_ok(&["list"]);
    assert!(list.contains("wc") && list.contains("active") && list.contains("4/4"), "{list}");
    let details = sandbox.describe("wc");
    assert_eq!(running_workers(&details), 4);
    let workers = details["workers"].as_array().cloned().unwrap_or_default();
    let supervisors: std::collections::BTreeSet<&str> =
        workers.iter().filter_map(|w| w["supervisor"].as_str()).collect();
    assert_eq!(supervisors.len(), 2, "workers spread over both supervisors: {details}");
    // Heartbeats carry each worker's counters, a second old at most.
    sandbox.wait_for("describe to count every sentence split", Duration::from_secs(10), |s| {
        let details = s.describe("wc");
        let split = details["components"].as_array().and_then(|c| c.iter().find(|c| c["id"] == "split")).cloned();
        split.is_some_and(|s| s["metrics"]["executed"].as_u64() == Some(SENTENCES))
    });

    let killed = sandbox.cli_ok(&["kill", "wc", "--wait", "1"]);
    assert!(killed.contains("killing topology `wc`"), "{killed}");
    sandbox.wait_for("the topology to be gone", Duration::from_secs(30), |s| {
        s.cli_ok(&["list"]).contains("no topologies")
    });
}

#[test]
fn bad_inputs_get_clear_errors() {
    let sandbox = ClusterSandbox::start(1, 1, 1);
    submit(&sandbox, "dup", 1);

    let again = sandbox.cli(&["submit", TOPOLOGY, "--name", "dup", "--wait", "0"]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("a topology named `dup` is already running; kill it first or choose another name"),
        "{stderr}"
    );

    let not_topology = sandbox.dir.path().join("not-a-topology.sh");
    std::fs::write(&not_topology, "#!/bin/sh\necho hello\n").unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&not_topology).status().unwrap();
    let bad = sandbox.cli(&["submit", &not_topology.display().to_string(), "--name", "x"]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(stderr.contains("is not a Squall topology binary"), "{stderr}");

    let bad_config = sandbox.cli(&["submit", TOPOLOGY, "--name", "y", "-c", "topology.wokers=2"]);
    let stderr = String::from_utf8_lossy(&bad_config.stderr);
    assert!(stderr.contains("unknown config key `topology.wokers`"), "{stderr}");

    let port = free_port();
    let unreachable = sandbox.cli(&["--nimbus", &format!("127.0.0.1:{port}"), "list"]);
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(!unreachable.status.success());
    assert!(stderr.contains("cannot reach Nimbus at 127.0.0.1:") && stderr.contains("squall nimbus"), "{stderr}");

    // Not enough free slots: the topology waits, and `list` says why.
    let waiting = sandbox.cli(&["submit", TOPOLOGY, "--name", "big", "-c", "topology.workers=2", "--wait", "0"]);
    assert!(waiting.status.success(), "{}", String::from_utf8_lossy(&waiting.stderr));
    sandbox.wait_for("list to say why `big` waits", Duration::from_secs(20), |s| {
        s.cli_ok(&["list"]).contains("waiting for 2 free worker slots, 0 available")
    });
    sandbox.cli_ok(&["kill", "big", "--wait", "0"]);

    let unknown = sandbox.cli(&["kill", "nope"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no topology named `nope`"));

    // Garbage on a worker's port: the connection is dropped, the worker keeps running.
    let details = sandbox.describe("dup");
    let port = details["workers"][0]["port"].as_u64().unwrap() as u16;
    let pids = sandbox.worker_pids(0);
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the worker port");
    let _ = socket.write_all(&[0xff; 64]);
    let _ = socket.write_all(b"GET / HTTP/1.1\r\n\r\n");
    drop(socket);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sandbox.worker_pids(0), pids, "the worker was not restarted");
    sandbox.wait_for("the worker to keep heartbeating", Duration::from_secs(10), |s| {
        running_workers(&s.describe("dup")) == 1
    });
}

#[test]
fn a_killed_worker_is_restarted_and_every_id_is_acked() {
    let sandbox = ClusterSandbox::start(1, 2, 2);
    submit(&sandbox, "wc", 4);
    let pids = sandbox.worker_pids(0);
    let (_, victim) = pids.iter().next().map(|(p, v)| (*p, *v)).expect("a worker on supervisor 0");
    kill9(victim);
    sandbox.wait_for("the supervisor to restart the worker", Duration::from_secs(30), |s| {
        s.worker_pids(0).values().all(|p| *p != victim) && running_workers(&s.describe("wc")) == 4
    });
    sandbox.wait_for("every id acked", Duration::from_secs(120), all_acked);
    let reports = sandbox.spout_reports();
    assert!(reports.iter().all(|r| r["acked_twice"] == 0), "{reports:?}");
}

#[test]
fn tasks_of_a_lost_supervisor_move_to_the_other_one() {
    let mut sandbox = ClusterSandbox::start(1, 2, 2);
    submit(&sandbox, "wc", 2);
    let details = sandbox.describe("wc");
    let victim = details["workers"][0]["supervisor"].as_str().unwrap().to_owned();
    let index = if victim == "supervisor-0" { 0 } else { 1 };
    let pids = sandbox.worker_pids(index);
    sandbox.supervisors[index].kill9();
    for pid in pids.values() {
        kill9(*pid);
    }
    sandbox.wait_for("the tasks to move to the surviving supervisor", Duration::from_secs(60), |s| {
        let d = s.describe("wc");
        let workers = d["workers"].as_array().cloned().unwrap_or_default();
        workers.iter().all(|w| w["supervisor"] != victim.as_str()) && running_workers(&d) == 2
    });
    sandbox.wait_for("every id acked", Duration::from_secs(120), all_acked);
}

#[test]
fn a_standby_nimbus_takes_over_and_kills_through_the_new_leader() {
    let mut sandbox = ClusterSandbox::start(2, 1, 2);
    submit(&sandbox, "wc", 1);
    // Find the leader: the Nimbus whose log says it leads first is nimbus-0 (it started first),
    // but ask rather than assume.
    let leader = sandbox
        .nimbuses
        .iter()
        .position(|n| std::fs::read_to_string(&n.log).unwrap_or_default().contains("this nimbus now leads"))
        .unwrap_or(0);
    // The standby must hold the artifact before the leader dies.
    let standby = 1 - leader;
    sandbox.wait_for("the standby to copy the artifact", Duration::from_secs(30), |s| {
        std::fs::read_to_string(&s.nimbuses[standby].log).unwrap_or_default().contains("copied artifact")
    });
    sandbox.nimbuses[leader].kill9();
    sandbox.wait_for("the standby to lead", Duration::from_secs(30), |s| {
        std::fs::read_to_string(&s.nimbuses[standby].log).unwrap_or_default().contains("this nimbus now leads")
    });
    sandbox.wait_for("every id acked while nimbus failed over", Duration::from_secs(90), all_acked);
    assert_eq!(running_workers(&sandbox.describe("wc")), 1);
    sandbox.cli_ok(&["kill", "wc", "--wait", "0"]);
    sandbox.wait_for("the topology to be gone", Duration::from_secs(30), |s| {
        s.cli_ok(&["list"]).contains("no topologies")
    });
}

#[test]
fn rebalance_from_two_to_four_workers_under_load_acks_every_id() {
    const TOTAL: u64 = 300_000;
    let sandbox = ClusterSandbox::start_with(1, 2, 2, &[("SQUALL_TEST_SENTENCES", "300000")]);
    submit(&sandbox, "wc", 2);
    sandbox.wait_for("load", Duration::from_secs(30), |s| received(s) > 10_000);
    sandbox.cli_ok(&["rebalance", "wc", "-n", "4", "-e", "split=1"]);
    sandbox.wait_for("four workers after the rebalance", Duration::from_secs(60), |s| {
        running_workers(&s.describe("wc")) == 4
    });
    let details = sandbox.describe("wc");
    let split = details["components"].as_array().and_then(|c| c.iter().find(|c| c["id"] == "split")).cloned();
    assert_eq!(split.map(|s| s["parallelism"].clone()), Some(Value::from(1)));
    sandbox.wait_for("every id acked", Duration::from_secs(180), |s| all_acked_of(s, TOTAL));
    assert!(one_task_per_word(&sandbox), "a word reached two count tasks");
}

#[test]
fn deactivate_stops_the_spouts_activate_resumes_and_kill_waits() {
    let sandbox = ClusterSandbox::start_with(1, 1, 2, &[("SQUALL_TEST_SENTENCES", "100000000")]);
    submit(&sandbox, "wc", 2);
    sandbox.wait_for("load", Duration::from_secs(30), |s| received(s) > 1_000);
    sandbox.cli_ok(&["deactivate", "wc"]);
    assert!(sandbox.cli_ok(&["list"]).contains("inactive"));
    // In-flight tuples drain, then nothing more arrives.
    std::thread::sleep(Duration::from_secs(4));
    let stalled = received(&sandbox);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(received(&sandbox), stalled, "tuples kept coming while deactivated");
    sandbox.cli_ok(&["activate", "wc"]);
    sandbox.wait_for("emits to resume", Duration::from_secs(20), |s| received(s) > stalled + 1_000);

    let started = std::time::Instant::now();
    let killed = sandbox.cli_ok(&["kill", "wc", "--wait", "3"]);
    assert!(killed.contains("stopping in 3 s"), "{killed}");
    assert!(sandbox.cli_ok(&["list"]).contains("killed"));
    sandbox.wait_for("the topology to be gone", Duration::from_secs(30), |s| {
        s.cli_ok(&["list"]).contains("no topologies")
    });
    assert!(started.elapsed() >= Duration::from_secs(3), "kill did not wait");
}
