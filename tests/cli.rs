//! What a new user hits with the `squall` CLI: names, paths, settings, closed pipes, log files,
//! and clear messages when ZooKeeper or the Nimbus leader is away. The cluster tests run a real
//! ZooKeeper, Nimbus and supervisors (`ClusterSandbox`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use squall_tests::sandbox::{ClusterSandbox, squall_binary};

const TOPOLOGY: &str = env!("CARGO_BIN_EXE_test_topology");

/// Runs `squall --config <sandbox's> args…` in `dir`.
fn cli_in(sandbox: &ClusterSandbox, dir: &Path, args: &[&str]) -> Output {
    Command::new(squall_binary())
        .arg("--config")
        .arg(&sandbox.config)
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("cannot run squall: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A raw HTTP/1.1 POST, so the test talks to Nimbus's API without the CLI's checks.
fn http_post(address: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap_or_else(|e| panic!("cannot connect to {address}: {e}"));
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Every log file of the sandbox: daemons and workers.
fn log_files(sandbox: &ClusterSandbox) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for daemon in sandbox.nimbuses.iter().chain(&sandbox.supervisors) {
        files.push(daemon.log.clone());
        for entry in std::fs::read_dir(daemon.dir.join("workers")).into_iter().flatten().flatten() {
            files.push(entry.path());
        }
    }
    files
}

#[test]
fn settings_and_names_are_checked_before_anything_else() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("no-port.toml");
    std::fs::write(&config, "[nimbus]\nseeds = [\"localhost\"]\n").unwrap();
    let run =
        |args: &[&str]| Command::new(squall_binary()).args(args).current_dir(dir.path()).output().expect("run squall");

    let output = run(&["--config", &config.display().to_string(), "list"]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("`nimbus.seeds` entry \"localhost\" is not a Nimbus address: it has no port"), "{stderr}");
    assert!(stderr.contains("seeds = [\"localhost:6627\"]"), "{stderr}");

    let output = run(&["--nimbus", "localhost", "list"]);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("`--nimbus localhost` is not a Nimbus address: it has no port"), "{stderr}");

    // The name is checked first: before the config file, which does not exist, and the binary.
    let output = run(&["--config", "missing.toml", "submit", "missing-binary", "--name", "my topo"]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("invalid topology name \"my topo\": it contains a space"), "{stderr}");
    assert!(stderr.contains("letters, digits, `_` and `-`"), "{stderr}");
}

#[test]
fn submit_runs_a_bare_file_name_and_checks_the_name_before_uploading() {
    let sandbox = ClusterSandbox::start(1, 1, 1);
    let work = sandbox.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::copy(TOPOLOGY, work.join("wcbin")).unwrap();

    // `wcbin` is the file in the working directory, not a program looked up in PATH.
    let submitted = cli_in(&sandbox, &work, &["submit", "wcbin", "--name", "bare", "-c", "topology.workers=1"]);
    assert!(submitted.status.success(), "{}\n{}", text(&submitted.stderr), sandbox.logs());
    let stdout = text(&submitted.stdout);
    assert!(stdout.contains("uploaded") && stdout.contains("is running"), "{stdout}");

    // A taken name is refused before the upload.
    let again = cli_in(&sandbox, &work, &["submit", "wcbin", "--name", "bare", "--wait", "0"]);
    assert!(!again.status.success());
    let stderr = text(&again.stderr);
    assert!(
        stderr.contains("a topology named `bare` is already running; kill it first or choose another name"),
        "{stderr}"
    );
    assert!(!text(&again.stdout).contains("uploaded"), "uploaded before checking the name");

    // Nimbus's API applies the same rule to whoever calls it.
    let spec = Command::new(TOPOLOGY).arg("--describe").output().expect("run the topology with --describe");
    let body = format!(r#"{{"name":"my topo","artifact":"00","spec":{},"config":{{}}}}"#, text(&spec.stdout));
    let (status, answer) = http_post(&sandbox.nimbuses[0].name, "/api/v1/topologies", &body);
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("invalid topology name \\\"my topo\\\": it contains a space"), "{answer}");

    // A name that cannot exist is looked up, not turned into a bad URI.
    let odd = sandbox.cli(&["describe", "my topo?"]);
    let stderr = text(&odd.stderr);
    assert!(stderr.contains("no topology named `my topo?`"), "{stderr}");
    let odd = sandbox.cli(&["kill", "a/../b"]);
    let stderr = text(&odd.stderr);
    assert!(stderr.contains("invalid topology name \"a/../b\": it contains `/`"), "{stderr}");

    // A reader that exits early is no reason to panic.
    for args in [&["describe", "bare"][..], &["list"], &["supervisors"]] {
        let mut child = Command::new(squall_binary())
            .arg("--config")
            .arg(&sandbox.config)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run squall");
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("wait for squall");
        let stderr = text(&output.stderr);
        assert!(!stderr.contains("panicked"), "squall {args:?} panicked: {stderr}");
        assert_eq!(output.status.code(), Some(0), "squall {args:?}: {stderr}");
    }

    let supervisors = sandbox.cli_ok(&["supervisors"]);
    assert!(supervisors.contains("supervisor-0") && supervisors.contains(" 1/1 "), "{supervisors}");

    // Daemon and worker logs are files: no terminal colour codes in them.
    let logs = log_files(&sandbox);
    assert!(logs.iter().any(|p| p.to_string_lossy().contains("workers")), "no worker log among {logs:?}");
    for log in logs {
        let bytes = std::fs::read(&log).unwrap_or_default();
        assert!(!bytes.is_empty(), "{} is empty", log.display());
        assert!(!bytes.contains(&0x1b), "{} has ANSI escape codes:\n{}", log.display(), text(&bytes));
    }
    sandbox.cli_ok(&["kill", "bare", "--wait", "0"]);
}

#[test]
fn a_nimbus_failover_is_waited_out_and_zookeeper_down_is_named() {
    let mut sandbox = ClusterSandbox::start(2, 0, 0);
    let leads = |log: &Path| std::fs::read_to_string(log).unwrap_or_default().contains("this nimbus now leads");
    sandbox.wait_for("a leader", Duration::from_secs(30), |s| s.nimbuses.iter().any(|n| leads(&n.log)));
    let leader = sandbox.nimbuses.iter().position(|n| leads(&n.log)).unwrap_or(0);
    sandbox.nimbuses[leader].kill9();

    // The dead leader's election node lives until its session expires: the CLI waits for the
    // standby to take over instead of failing.
    let listed = sandbox.cli(&["list"]);
    let stderr = text(&listed.stderr);
    assert!(listed.status.success(), "{stderr}\n{}", sandbox.logs());
    assert!(stderr.contains("the leader is changing, retrying"), "{stderr}");
    assert!(text(&listed.stdout).contains("no topologies"));

    sandbox.zookeeper.stop();
    let started = Instant::now();
    let down = sandbox.cli(&["list"]);
    let stderr = text(&down.stderr);
    assert!(!down.status.success());
    let standby = &sandbox.nimbuses[1 - leader].name;
    let zookeeper = sandbox.zookeeper.connect_string();
    assert!(stderr.contains(&format!("nimbus at {standby} cannot reach ZooKeeper at {zookeeper}")), "{stderr}");
    assert!(!stderr.contains("start it with `squall nimbus`"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
}

#[test]
fn a_restarted_nimbus_waits_for_its_previous_session_then_leads() {
    let mut sandbox = ClusterSandbox::start(1, 0, 0);
    // Killed, its session (and its nodes) outlive it until ZooKeeper expires the session.
    sandbox.nimbuses[0].kill9();
    sandbox.start_nimbus(0);
    // While it waits, its port answers at once, saying why nothing else does yet.
    let mut said = String::new();
    sandbox.wait_for("the restarting nimbus to answer that it is starting", Duration::from_secs(20), |s| {
        let started = Instant::now();
        let listed = s.cli(&["list"]);
        said = text(&listed.stderr);
        !listed.status.success() && said.contains("is starting") && started.elapsed() < Duration::from_secs(5)
    });
    assert!(said.contains("try again in a few seconds"), "{said}");
    sandbox.wait_for("the restarted nimbus to lead", Duration::from_secs(60), |s| s.cli(&["list"]).status.success());
    assert!(sandbox.nimbuses[0].is_running(), "{}", sandbox.nimbuses[0].log_tail());
    let log = std::fs::read_to_string(&sandbox.nimbuses[0].log).unwrap_or_default();
    assert!(log.contains("waiting for the previous session's node to expire"), "{log}");
    assert!(log.contains("the previous session's node expired; registered"), "{log}");
}
