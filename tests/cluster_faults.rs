//! Faults on a real cluster (ZooKeeper, Nimbus, supervisors and workers as processes): a lost
//! supervisor moves only its workers, a ZooKeeper restart kills no worker, and heartbeats of
//! workers that are gone stop counting.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;
use squall_kafka::testing::read_committed;
use squall_tests::netns::NetNamespace;
use squall_tests::sandbox::{ClusterSandbox, kill9};

const TOPOLOGY: &str = env!("CARGO_BIN_EXE_test_topology");

fn submit(sandbox: &ClusterSandbox, name: &str, workers: u32) -> String {
    sandbox.cli_ok(&["submit", TOPOLOGY, "--name", name, "-c", &format!("topology.workers={workers}")])
}

fn received(sandbox: &ClusterSandbox) -> u64 {
    sandbox.output("counts.json").and_then(|o| o["received"].as_u64()).unwrap_or(0)
}

fn all_acked_of(sandbox: &ClusterSandbox, total: u64) -> bool {
    let reports = sandbox.spout_reports();
    reports.len() == 2
        && reports.iter().all(|r| r["acked"] == r["expected"] && r["in_flight"] == 0)
        && reports.iter().map(|r| r["expected"].as_u64().unwrap_or(0)).sum::<u64>() == total
}

fn running_workers(details: &Value) -> u64 {
    details["summary"]["workers_running"].as_u64().unwrap_or(0)
}

/// The tasks of `component`, from `describe`.
fn tasks_of(details: &Value, component: &str) -> Vec<u64> {
    let components = details["components"].as_array().cloned().unwrap_or_default();
    let found = components.iter().find(|c| c["id"] == component).cloned().unwrap_or_default();
    found["tasks"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect()
}

/// `(supervisor, port)` → tasks of every assigned worker, from `describe`.
fn assigned(details: &Value) -> BTreeMap<(String, u64), Vec<u64>> {
    let workers = details["workers"].as_array().cloned().unwrap_or_default();
    workers
        .iter()
        .map(|w| {
            let key = (w["supervisor"].as_str().unwrap_or("").to_owned(), w["port"].as_u64().unwrap_or(0));
            (key, w["tasks"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect())
        })
        .collect()
}

/// A component's summed counter in `describe`.
fn metric(details: &Value, component: &str, key: &str) -> u64 {
    let components = details["components"].as_array().cloned().unwrap_or_default();
    components.iter().find(|c| c["id"] == component).map_or(0, |c| c["metrics"][key].as_u64().unwrap_or(0))
}

/// The heartbeat nodes under `/workerbeats/<name>`, read from ZooKeeper itself.
fn heartbeat_nodes(sandbox: &ClusterSandbox, name: &str) -> BTreeSet<String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(async {
        let state = squall_cluster::ClusterState::connect(
            &sandbox.zookeeper.connect_string(),
            "/squall",
            Duration::from_secs(4),
        )
        .await
        .expect("connect to the sandbox's zookeeper");
        let beats = state.worker_heartbeats(name).await.expect("read the heartbeats");
        state.close().await;
        beats.into_keys().collect()
    })
}

/// Each spout task's latest report, by task.
fn spout_reports_by_task(sandbox: &ClusterSandbox) -> BTreeMap<u64, Value> {
    sandbox.spout_reports().into_iter().map(|r| (r["task"].as_u64().unwrap_or(0), r)).collect()
}

#[test]
fn a_lost_supervisor_moves_only_its_workers_and_the_others_keep_running() {
    const TOTAL: u64 = 200_000;
    let sandbox = ClusterSandbox::start_with(1, 3, 2, &[("SQUALL_TEST_SENTENCES", "200000")]);
    submit(&sandbox, "wc", 4);
    sandbox
        .wait_for("load", Duration::from_secs(60), |s| received(s) > 5_000 && running_workers(&s.describe("wc")) == 4);
    let before = sandbox.describe("wc");
    // The victim: a supervisor running a spout task, so a stale heartbeat would show in the
    // spout's counters.
    let spout_tasks = tasks_of(&before, "sentences");
    let placed = assigned(&before);
    let victim = placed
        .iter()
        .find(|(_, tasks)| tasks.iter().any(|t| spout_tasks.contains(t)))
        .map(|((supervisor, _), _)| supervisor.clone())
        .expect("a worker runs a spout task");
    let index: usize = victim.trim_start_matches("supervisor-").parse().expect("a sandbox supervisor id");
    let survivors: Vec<usize> = (0..3).filter(|i| *i != index).collect();
    let pids_before: BTreeMap<usize, BTreeMap<u16, u32>> =
        survivors.iter().map(|i| (*i, sandbox.worker_pids(*i))).collect();
    let reports_before = spout_reports_by_task(&sandbox);
    let surviving_spouts: Vec<u64> = placed
        .iter()
        .filter(|((supervisor, _), _)| *supervisor != victim)
        .flat_map(|(_, tasks)| tasks.iter().copied().filter(|t| spout_tasks.contains(t)))
        .collect();

    let mut sandbox = sandbox;
    let victim_pids = sandbox.worker_pids(index);
    sandbox.supervisors[index].kill9();
    for pid in victim_pids.values() {
        kill9(*pid);
    }
    let lost = std::time::Instant::now();
    sandbox.wait_for("the lost supervisor's workers to move", Duration::from_secs(60), |s| {
        let d = s.describe("wc");
        assigned(&d).keys().all(|(supervisor, _)| *supervisor != victim) && running_workers(&d) == 4
    });
    eprintln!("supervisor lost: its workers run elsewhere after {:?}", lost.elapsed());
    sandbox.wait_for("every id acked", Duration::from_secs(180), |s| all_acked_of(s, TOTAL));

    // The workers of the surviving supervisors were not restarted, and their spouts did not
    // start over: the same processes acked everything.
    for (i, pids) in &pids_before {
        let now = sandbox.worker_pids(*i);
        for (port, pid) in pids {
            assert_eq!(now.get(port), Some(pid), "supervisor-{i} restarted its worker on {port}\n{}", sandbox.logs());
        }
    }
    let reports_after = spout_reports_by_task(&sandbox);
    for task in &surviving_spouts {
        assert_eq!(
            reports_after[task]["pid"], reports_before[task]["pid"],
            "spout task {task} was restarted: {reports_after:?}"
        );
        assert!(reports_after[task]["acked"].as_u64() >= reports_before[task]["acked"].as_u64());
        assert_eq!(reports_after[task]["acked_twice"], 0);
    }
    let kept_logs: String = survivors
        .iter()
        .flat_map(|i| std::fs::read_dir(sandbox.supervisors[*i].dir.join("workers")).into_iter().flatten().flatten())
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(kept_logs.contains("this worker keeps its tasks and follows its peers"), "{}", sandbox.logs());

    // Only the current workers' heartbeats remain and count: the spouts' acks in `describe`
    // equal what the current spout processes acked.
    sandbox.wait_for("heartbeats of the moved workers to be removed", Duration::from_secs(30), |s| {
        let slots: BTreeSet<String> =
            assigned(&s.describe("wc")).keys().map(|(supervisor, port)| format!("{supervisor}-{port}")).collect();
        heartbeat_nodes(s, "wc") == slots
    });
    sandbox.wait_for("describe to count only current workers", Duration::from_secs(30), |s| {
        let acked: u64 = s
            .spout_reports()
            .iter()
            .map(|r| r["acked"].as_u64().unwrap_or(0) + r["acked_twice"].as_u64().unwrap_or(0))
            .sum();
        metric(&s.describe("wc"), "sentences", "acked") == acked
    });
    let list = sandbox.cli_ok(&["list"]);
    assert!(list.lines().any(|l| l.starts_with("wc ") && l.contains("  4/4")), "{list}");
}

#[test]
fn a_zookeeper_restart_kills_no_worker_and_every_id_is_acked() {
    // Enough that the spouts are still emitting when the fence comes, 4 s into the outage.
    const TOTAL: u64 = 1_000_000;
    let mut sandbox = ClusterSandbox::start_with(1, 2, 2, &[("SQUALL_TEST_SENTENCES", "1000000")]);
    submit(&sandbox, "wc", 4);
    sandbox
        .wait_for("load", Duration::from_secs(60), |s| received(s) > 5_000 && running_workers(&s.describe("wc")) == 4);
    let pids_before: Vec<BTreeMap<u16, u32>> = (0..2).map(|i| sandbox.worker_pids(i)).collect();
    // Longer than the daemons' session timeout (4 s) and the workers' fencing timeout (4 s).
    sandbox.zookeeper.stop();
    let received_at_outage = received(&sandbox);
    assert!(received_at_outage < TOTAL / 2, "the topology was nearly done ({received_at_outage}) before the outage");
    std::thread::sleep(Duration::from_secs(10));
    sandbox.zookeeper.restart().unwrap_or_else(|e| panic!("cannot restart zookeeper: {e}"));
    let back = std::time::Instant::now();
    sandbox.wait_for("every id acked after the outage", Duration::from_secs(180), |s| all_acked_of(s, TOTAL));
    eprintln!("zookeeper outage of 10 s: every id acked {:?} after it returned", back.elapsed());
    // The workers fenced their spouts while cut off, and lifted the fence when ZooKeeper returned.
    let worker_logs: String = sandbox
        .supervisors
        .iter()
        .flat_map(|d| std::fs::read_dir(d.dir.join("workers")).into_iter().flatten().flatten())
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(worker_logs.contains("(fenced)") && worker_logs.contains("lifting the fence"), "{}", sandbox.logs());
    let pids_after: Vec<BTreeMap<u16, u32>> = (0..2).map(|i| sandbox.worker_pids(i)).collect();
    assert_eq!(pids_after, pids_before, "workers were restarted\n{}", sandbox.logs());
    assert!(spout_reports_by_task(&sandbox).values().all(|r| r["acked_twice"] == 0));
    // The ids may all be acked before every worker has written a heartbeat again (each
    // reconnects to ZooKeeper on its own backoff); `describe` shows all four once they have.
    sandbox.wait_for("every worker's heartbeat after the outage", Duration::from_secs(30), |s| {
        running_workers(&s.describe("wc")) == 4
    });
    let pids_now: Vec<BTreeMap<u16, u32>> = (0..2).map(|i| sandbox.worker_pids(i)).collect();
    assert_eq!(pids_now, pids_before, "workers were restarted\n{}", sandbox.logs());
    for supervisor in &sandbox.supervisors {
        let log = std::fs::read_to_string(&supervisor.log).unwrap_or_default();
        assert!(!log.contains("restarting it"), "a supervisor restarted a worker:\n{log}");
    }
}

/// A spout task's report written by process `pid` (`spout-<task>-<pid>.json`).
fn spout_report_of(sandbox: &ClusterSandbox, task: u64, pid: u32) -> Option<Value> {
    sandbox.output(&format!("spout-{task}-{pid}.json"))
}

/// The reports of `task` written by processes other than `pid`.
fn other_reports(sandbox: &ClusterSandbox, task: u64, pid: u32) -> Vec<Value> {
    let prefix = format!("spout-{task}-");
    std::fs::read_dir(&sandbox.out)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&prefix) && name != &format!("spout-{task}-{pid}.json"))
        .filter_map(|name| sandbox.output(&name))
        .collect()
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `text` without terminal colour sequences.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn a_partitioned_worker_fences_its_spouts_before_its_tasks_move() {
    let ns = NetNamespace::create().unwrap_or_else(|e| panic!("cannot create a network namespace: {e}"));
    let mut sandbox = ClusterSandbox::start_exposed(1, 1, 2, &[("SQUALL_TEST_SENTENCES", "100000000")], &ns.outside);
    // supervisor-1 and its workers live behind the link; Nimbus is not reachable from there, so
    // its copy of the binary is put in place beforehand.
    let config = sandbox.settings_via(&ns.outside);
    sandbox.seed_artifact(1, std::path::Path::new(TOPOLOGY));
    sandbox.start_supervisor_in(1, 2, Some(&ns.name), Some(&ns.inside), &config);
    submit(&sandbox, "wc", 2);
    sandbox.wait_for("load on both workers", Duration::from_secs(60), |s| {
        let d = s.describe("wc");
        received(s) > 5_000 && running_workers(&d) == 2 && assigned(&d).keys().any(|(sup, _)| sup == "supervisor-1")
    });
    let details = sandbox.describe("wc");
    let spout_tasks = tasks_of(&details, "sentences");
    let (port, tasks) = assigned(&details)
        .into_iter()
        .find(|((sup, _), _)| sup == "supervisor-1")
        .map(|((_, port), tasks)| (port, tasks))
        .expect("a worker behind the link");
    let task = *tasks.iter().find(|t| spout_tasks.contains(t)).expect("a spout task behind the link");
    let old_pid = sandbox.worker_pids(1)[&(port as u16)];
    assert_eq!(spout_report_of(&sandbox, task, old_pid).map(|r| r["active"].clone()), Some(Value::Bool(true)));

    ns.cut().unwrap_or_else(|e| panic!("cannot cut the link: {e}"));
    let cut_at = unix_millis();
    sandbox.wait_for("the cut-off worker's tasks to move", Duration::from_secs(60), |s| {
        let d = s.describe("wc");
        assigned(&d).keys().all(|(sup, _)| sup != "supervisor-1") && running_workers(&d) == 2
    });
    let moved_at = unix_millis();
    sandbox.wait_for("the spout task to emit in its new worker", Duration::from_secs(60), |s| {
        other_reports(s, task, old_pid).iter().any(|r| r["first_emit_millis"].is_u64())
    });
    let new_first_emit = other_reports(&sandbox, task, old_pid)
        .iter()
        .filter_map(|r| r["first_emit_millis"].as_u64())
        .min()
        .expect("a first emit");
    let old = spout_report_of(&sandbox, task, old_pid).expect("the old owner's report");
    let deactivated_at = old["deactivated_at_millis"].as_u64();
    eprintln!(
        "partition: spout fenced {:?} ms after the cut, tasks moved by {} ms, new owner emitted at {} ms",
        deactivated_at.map(|d| d.saturating_sub(cut_at)),
        moved_at - cut_at,
        new_first_emit.saturating_sub(cut_at)
    );
    // The old owner's spout was switched off before the new owner emitted anything, and
    // emitted nothing after that.
    assert_eq!(old["active"], Value::Bool(false), "the cut-off spout was not deactivated: {old}\n{}", sandbox.logs());
    let deactivated_at = deactivated_at.expect("a deactivation time");
    assert!(deactivated_at < new_first_emit, "deactivated at {deactivated_at}, new owner emitted at {new_first_emit}");
    assert!(old["last_emit_millis"].as_u64().is_some_and(|last| last <= deactivated_at), "{old}");
    let worker_log = std::fs::read_to_string(sandbox.supervisors[1].dir.join("workers").join(format!("wc-{port}.log")))
        .unwrap_or_default();
    assert!(worker_log.contains("(fenced)"), "the worker did not say it fenced:\n{worker_log}");

    // Once the link is back, the old worker learns its work moved and stops.
    ns.heal().unwrap_or_else(|e| panic!("cannot heal the link: {e}"));
    sandbox.wait_for("the old worker to stop", Duration::from_secs(60), |_| !process_alive(old_pid));
}

/// Worker pids by `(supervisor, port)` over every supervisor of the sandbox.
fn all_worker_pids(sandbox: &ClusterSandbox) -> BTreeMap<(String, u64), u32> {
    let mut pids = BTreeMap::new();
    for (i, supervisor) in sandbox.supervisors.iter().enumerate() {
        for (port, pid) in sandbox.worker_pids(i) {
            pids.insert((supervisor.name.clone(), u64::from(port)), pid);
        }
    }
    pids
}

#[test]
fn a_rebalance_restarts_only_the_workers_whose_tasks_change() {
    const TOTAL: u64 = 200_000;
    let sandbox = ClusterSandbox::start_with(1, 2, 2, &[("SQUALL_TEST_SENTENCES", "200000")]);
    // Unchained: chained, split's executors run inside the spout's, so merging them would
    // rightly move the spout's executors too.
    let config = ["-c", "topology.workers=4", "-c", "topology.chaining=false"];
    sandbox.cli_ok(&[&["submit", TOPOLOGY, "--name", "wc"][..], &config[..]].concat());
    sandbox
        .wait_for("load", Duration::from_secs(60), |s| received(s) > 5_000 && running_workers(&s.describe("wc")) == 4);
    let before = assigned(&sandbox.describe("wc"));
    let pids_before = all_worker_pids(&sandbox);
    // Merging split's two executors into one changes the workers that ran them, no other.
    sandbox.cli_ok(&["rebalance", "wc", "-e", "split=1"]);
    sandbox.wait_for("the rebalanced workers to run", Duration::from_secs(60), |s| {
        let d = s.describe("wc");
        assigned(&d) != before && running_workers(&d) == 4
    });
    let after = assigned(&sandbox.describe("wc"));
    let unchanged: Vec<&(String, u64)> =
        after.iter().filter(|(k, t)| before.get(*k) == Some(t)).map(|(k, _)| k).collect();
    assert!(unchanged.len() >= 2, "the rebalance moved more than it had to: {before:?} → {after:?}");
    sandbox.wait_for("every id acked", Duration::from_secs(180), |s| all_acked_of(s, TOTAL));
    let pids_after = all_worker_pids(&sandbox);
    for slot in &unchanged {
        assert_eq!(pids_after.get(*slot), pids_before.get(*slot), "worker {slot:?} kept its tasks but was restarted");
    }
    let changed: Vec<&(String, u64)> = after.keys().filter(|k| !unchanged.contains(k)).collect();
    for slot in &changed {
        assert_ne!(pids_after.get(*slot), pids_before.get(*slot), "worker {slot:?} got new tasks but kept running");
    }
    assert!(spout_reports_by_task(&sandbox).values().all(|r| r["acked_twice"] == 0));
}

#[test]
fn orphaned_workers_stop_once_their_supervisor_and_zookeeper_are_gone() {
    let mut sandbox = ClusterSandbox::start_with(1, 1, 2, &[("SQUALL_TEST_SENTENCES", "100000000")]);
    submit(&sandbox, "wc", 2);
    sandbox.wait_for("load", Duration::from_secs(60), |s| received(s) > 1_000);
    let pids: Vec<u32> = sandbox.worker_pids(0).values().copied().collect();
    assert_eq!(pids.len(), 2);
    // The whole cluster goes away (as after Ctrl-C on scripts/dev-cluster); workers are left.
    for nimbus in &mut sandbox.nimbuses {
        nimbus.kill9();
    }
    sandbox.supervisors[0].kill9();
    sandbox.zookeeper.stop();
    let gone = std::time::Instant::now();
    sandbox.wait_for("the orphaned workers to stop", Duration::from_secs(45), |_| {
        pids.iter().all(|pid| !process_alive(*pid))
    });
    eprintln!("orphaned workers stopped {:?} after their cluster was gone", gone.elapsed());
    assert!(gone.elapsed() >= Duration::from_secs(29), "workers stopped before the orphan timeout");
    let logs: String = std::fs::read_dir(sandbox.supervisors[0].dir.join("workers"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    let uptimes: Vec<u64> = strip_ansi(&logs)
        .lines()
        .filter(|l| l.contains("worker stopped"))
        .filter_map(|l| l.split("uptime_secs=").nth(1))
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect();
    assert_eq!(uptimes.len(), 2, "{logs}");
    assert!(uptimes.iter().all(|u| *u < 600), "uptime is not a duration: {uptimes:?}");
}

/// Offsets processed per partition, over every log the Kafka test topology wrote.
fn kafka_processed(sandbox: &ClusterSandbox) -> BTreeMap<i32, BTreeSet<i64>> {
    let mut processed: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
    for entry in std::fs::read_dir(&sandbox.out).into_iter().flatten().flatten() {
        if !entry.file_name().to_string_lossy().starts_with("processed-") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            let mut parts = line.split(' ');
            if let (Some(Ok(p)), Some(Ok(o))) =
                (parts.next().map(str::parse::<i32>), parts.next().map(str::parse::<i64>))
            {
                processed.entry(p).or_default().insert(o);
            }
        }
    }
    processed
}

#[test]
fn a_killed_kafka_spout_worker_loses_no_record_and_commits_reach_the_end() {
    const PARTITIONS: i32 = 4;
    const PER_PARTITION: i64 = 25_000;
    let broker = squall_kafka::testing::KafkaBroker::start().unwrap_or_else(|e| panic!("cannot start kafka: {e}"));
    broker.create_topic("events", PARTITIONS as usize).expect("topic");
    let bootstrap = broker.bootstrap_servers();
    fill_topic(&bootstrap, "events", PARTITIONS, PER_PARTITION);
    let sandbox = ClusterSandbox::start_with(1, 2, 1, &[("SQUALL_TEST_KAFKA", bootstrap.as_str())]);
    let topology = env!("CARGO_BIN_EXE_kafka_topology");
    sandbox.cli_ok(&["submit", topology, "--name", "kafka", "-c", "topology.workers=2"]);
    sandbox.wait_for("records flowing", Duration::from_secs(60), |s| {
        kafka_processed(s).values().map(BTreeSet::len).sum::<usize>() > 5_000
    });
    // Kill -9 a worker running a spout task (each worker runs one of the two).
    let victim = sandbox.worker_pids(0).values().next().copied().expect("a worker on supervisor 0");
    kill9(victim);
    sandbox.wait_for("every record processed after the kill", Duration::from_secs(120), |s| {
        let processed = kafka_processed(s);
        (0..PARTITIONS).all(|p| processed.get(&p).is_some_and(|o| o.len() as i64 == PER_PARTITION))
    });
    sandbox.wait_for("commits at the end offsets", Duration::from_secs(60), |_| {
        committed_offsets(&bootstrap, "cluster", "events", PARTITIONS) == vec![PER_PARTITION; PARTITIONS as usize]
    });
    let processed = kafka_processed(&sandbox);
    for p in 0..PARTITIONS {
        let offsets = &processed[&p];
        assert_eq!(offsets.first(), Some(&0));
        assert_eq!(offsets.last(), Some(&(PER_PARTITION - 1)), "partition {p}");
    }
}

/// Writes `per_partition` small records to each partition of `topic`.
fn fill_topic(bootstrap: &str, topic: &str, partitions: i32, per_partition: i64) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .expect("a producer");
    for p in 0..partitions {
        for i in 0..per_partition {
            let value = format!("{p}:{i}");
            loop {
                match producer.send(BaseRecord::<(), _>::to(topic).partition(p).payload(value.as_bytes())) {
                    Ok(()) => break,
                    Err((_, _)) => {
                        producer.poll(Duration::from_millis(50));
                    }
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flushed");
}

/// The offsets `group` committed on each partition of `topic` (-1: none).
fn committed_offsets(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("a consumer");
    let mut list = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let Ok(found) = consumer.committed_offsets(list, Duration::from_secs(10)) else { return Vec::new() };
    (0..partitions)
        .map(|p| match found.find_partition(topic, p).map(|e| e.offset()) {
            Some(rdkafka::Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect()
}

/// The Trident test topology's counts in Redis (`word-counts`), by word.
fn trident_counts(url: &str) -> std::collections::HashMap<String, u64> {
    use squall::{Str, Value as TupleValue};
    use squall_state::{RedisBackend, Semantics};
    use squall_tests::trident::WORDS;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let backend = RedisBackend::new(url).expect("a redis url");
    let state = squall_trident::StateSpec::new("word-counts", Semantics::Transactional, std::sync::Arc::new(backend));
    let keys: Vec<Vec<TupleValue>> = WORDS.iter().map(|w| vec![TupleValue::Str(Str::from(*w))]).collect();
    let Ok(values) = runtime.block_on(state.open().multi_get(&keys)) else { return Default::default() };
    WORDS
        .iter()
        .zip(values)
        .filter_map(|(w, v)| match v {
            Some(TupleValue::U64(n)) => Some(((*w).to_owned(), n)),
            _ => None,
        })
        .collect()
}

/// Trident on a cluster: a word count into Redis while a worker is killed with -9 every 5 s
/// (whichever runs, the coordinator included) and once the Nimbus leader, ends with every count
/// exact — each batch counted once, none lost, none twice.
#[test]
fn trident_counts_stay_exact_through_worker_kills_and_a_nimbus_failover() {
    use squall_tests::trident::{BATCHES, batches, expected};
    let want = expected(&batches(BATCHES));
    let redis = squall_state::testing::RedisServer::start().unwrap_or_else(|e| panic!("cannot start redis: {e}"));
    let url = redis.url();
    let mut sandbox = ClusterSandbox::start_with(2, 2, 2, &[("SQUALL_TEST_REDIS", url.as_str())]);
    let topology = env!("CARGO_BIN_EXE_trident_topology");
    sandbox.cli_ok(&["submit", topology, "--name", "trident", "-c", "topology.workers=3"]);
    sandbox.wait_for("the first counts", Duration::from_secs(60), |_| !trident_counts(&url).is_empty());

    let mut rng = fastrand::Rng::with_seed(11);
    for round in 0..4 {
        assert_ne!(trident_counts(&url), want, "every batch was counted before kill {round}: the test is too short");
        if round == 2 {
            let leader = sandbox
                .nimbuses
                .iter()
                .position(|n| std::fs::read_to_string(&n.log).unwrap_or_default().contains("this nimbus now leads"))
                .unwrap_or(0);
            sandbox.nimbuses[leader].kill9();
        }
        // The first victim is the coordinator's worker; then any.
        let victim = if round == 0 {
            let details = sandbox.describe("trident");
            let coordinator = tasks_of(&details, squall_trident::COORDINATOR_COMPONENT);
            let (supervisor, port) = assigned(&details)
                .into_iter()
                .find(|(_, tasks)| tasks.iter().any(|t| coordinator.contains(t)))
                .map(|(slot, _)| slot)
                .expect("a worker runs the coordinator");
            let index: usize = supervisor.trim_start_matches("supervisor-").parse().expect("supervisor-<i>");
            sandbox.worker_pids(index).get(&(port as u16)).copied()
        } else {
            let pids: Vec<u32> = (0..2).flat_map(|s| sandbox.worker_pids(s).into_values()).collect();
            rng.choice(&pids).copied()
        };
        kill9(victim.expect("a worker to kill"));
        std::thread::sleep(Duration::from_secs(5));
    }
    sandbox.wait_for("exact counts", Duration::from_secs(180), |_| trident_counts(&url) == want);
    // Empty epochs go on committing: nothing is counted twice later either.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(trident_counts(&url), want);

    // `squall query` reads the state while the topology runs, through the topology's binary.
    let output = sandbox.cli_env(
        &["query", "trident", "word-counts", "storm", "wind", "no-such-word"],
        &[("SQUALL_TEST_REDIS", url.as_str())],
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}\n{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0]["key"], serde_json::json!(["storm"]));
    assert_eq!(lines[0]["value"], serde_json::json!(want["storm"]));
    assert_eq!(lines[1]["value"], serde_json::json!(want["wind"]));
    assert_eq!(lines[2]["value"], Value::Null);
    let unknown = sandbox.cli_env(&["query", "trident", "nope", "storm"], &[("SQUALL_TEST_REDIS", url.as_str())]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no queryable state `nope`; it has: word-counts"));
}

/// Records counted per partition by the Kafka Trident test topology, from its state in `backend`.
fn per_partition_counts_in(backend: std::sync::Arc<dyn squall_state::Backend>, partitions: i32) -> Vec<u64> {
    use squall::{Str, Value as TupleValue};
    use squall_state::Semantics;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let state = squall_trident::StateSpec::new("per-partition", Semantics::Opaque, backend);
    let keys: Vec<Vec<TupleValue>> = (0..partitions).map(|p| vec![TupleValue::Str(Str::from(p.to_string()))]).collect();
    let Ok(values) = runtime.block_on(state.open().multi_get(&keys)) else { return Vec::new() };
    values.into_iter().map(|v| if let Some(TupleValue::U64(n)) = v { n } else { 0 }).collect()
}

/// Records counted per partition by the Kafka Trident test topology, from Redis.
fn per_partition_counts(url: &str, partitions: i32) -> Vec<u64> {
    let backend = squall_state::RedisBackend::new(url).expect("a redis url");
    per_partition_counts_in(std::sync::Arc::new(backend), partitions)
}

/// Records counted per partition by the Kafka Trident test topology, from its redb file (read
/// while the workers write it, as `squall query` would).
fn per_partition_counts_redb(path: &std::path::Path, partitions: i32) -> Vec<u64> {
    let Ok(backend) = squall_state::RedbBackend::open(path) else { return Vec::new() };
    per_partition_counts_in(std::sync::Arc::new(backend), partitions)
}

/// Everything the workers of `sandbox` logged.
fn worker_logs(sandbox: &ClusterSandbox) -> String {
    sandbox
        .supervisors
        .iter()
        .flat_map(|d| std::fs::read_dir(d.dir.join("workers")).into_iter().flatten().flatten())
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect()
}

/// Trident on a cluster with ZooKeeper, where the coordinator keeps its epochs, down for 10 s
/// mid-run: the coordinator cannot store its epochs, says so in its worker's log and commits
/// nothing meanwhile (the counts in Redis stand still), then goes on once ZooKeeper is back; every
/// count ends exact.
#[test]
fn trident_counts_stay_exact_through_a_zookeeper_outage() {
    use squall_tests::trident::{BATCHES, batches, expected};
    let want = expected(&batches(BATCHES));
    let redis = squall_state::testing::RedisServer::start().unwrap_or_else(|e| panic!("cannot start redis: {e}"));
    let url = redis.url();
    let mut sandbox = ClusterSandbox::start_with(1, 2, 2, &[("SQUALL_TEST_REDIS", url.as_str())]);
    let topology = env!("CARGO_BIN_EXE_trident_topology");
    sandbox.cli_ok(&["submit", topology, "--name", "trident-zk", "-c", "topology.workers=3"]);
    sandbox.wait_for("the first counts", Duration::from_secs(60), |_| !trident_counts(&url).is_empty());

    sandbox.zookeeper.stop();
    let stopped = std::time::Instant::now();
    // Whatever commit was under way when ZooKeeper went has finished by now; then nothing moves.
    std::thread::sleep(Duration::from_secs(3));
    let during = trident_counts(&url);
    assert_ne!(during, want, "every batch was counted before the outage: the test proves nothing");
    std::thread::sleep(Duration::from_secs(10).saturating_sub(stopped.elapsed()));
    assert_eq!(trident_counts(&url), during, "epochs committed while the coordinator could not store them");
    sandbox.zookeeper.restart().unwrap_or_else(|e| panic!("cannot restart zookeeper: {e}"));
    let back = std::time::Instant::now();

    sandbox.wait_for("exact counts after the outage", Duration::from_secs(180), |_| trident_counts(&url) == want);
    eprintln!("zookeeper down 10 s: counts exact {:?} after it returned", back.elapsed());
    // Empty epochs go on committing: nothing is counted twice later either.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(trident_counts(&url), want);
    // What an operator sees: the coordinator's worker says its store failed, and that it came back.
    let logs = worker_logs(&sandbox);
    let failed = logs.lines().find(|l| l.contains("trident coordinator: store call failed"));
    let failed = failed.unwrap_or_else(|| panic!("no store failure logged\n{}", sandbox.logs()));
    assert!(failed.contains("trident-coordinator"), "the failure does not name the key: {failed}");
    assert!(logs.contains("trident coordinator: its store answers again"), "{}", sandbox.logs());
    eprintln!("logged: {failed}");
}

/// Kafka → opaque batch spout → the state `env` names (the counts read by `counts`) on a
/// cluster of two supervisors and three workers, a worker killed with -9 every 5 s: every record
/// is counted exactly once, and the group's commits reach the end offsets. Returns the cluster
/// and the broker, still running.
fn kafka_through_an_opaque_spout_counts_exactly_through_worker_kills(
    name: &str,
    env: &[(&str, &str)],
    counts: impl Fn(i32) -> Vec<u64>,
) -> (ClusterSandbox, squall_kafka::testing::KafkaBroker) {
    const PARTITIONS: i32 = 4;
    const PER_PARTITION: i64 = 20_000;
    let broker = squall_kafka::testing::KafkaBroker::start().unwrap_or_else(|e| panic!("cannot start kafka: {e}"));
    broker.create_topic("events", PARTITIONS as usize).expect("topic");
    let bootstrap = broker.bootstrap_servers();
    fill_topic(&bootstrap, "events", PARTITIONS, PER_PARTITION);
    let env: Vec<(&str, &str)> =
        [("SQUALL_TEST_KAFKA", bootstrap.as_str())].into_iter().chain(env.iter().copied()).collect();
    let sandbox = ClusterSandbox::start_with(1, 2, 2, &env);
    let topology = env!("CARGO_BIN_EXE_trident_kafka_topology");
    sandbox.cli_ok(&["submit", topology, "--name", name, "-c", "topology.workers=3"]);
    let want = vec![PER_PARTITION as u64; PARTITIONS as usize];
    sandbox.wait_for("the first counts", Duration::from_secs(60), |_| counts(PARTITIONS).iter().sum::<u64>() > 0);
    let mut rng = fastrand::Rng::with_seed(5);
    for round in 0..3 {
        assert_ne!(counts(PARTITIONS), want, "everything was counted before kill {round}");
        let pids: Vec<u32> = (0..2).flat_map(|s| sandbox.worker_pids(s).into_values()).collect();
        kill9(*rng.choice(&pids).expect("a worker to kill"));
        std::thread::sleep(Duration::from_secs(5));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while counts(PARTITIONS) != want {
        let now = counts(PARTITIONS);
        assert!(std::time::Instant::now() < deadline, "counts {now:?}, expected {want:?}\n{}", sandbox.logs());
        std::thread::sleep(Duration::from_millis(500));
    }
    sandbox.wait_for("commits at the end offsets", Duration::from_secs(60), |_| {
        committed_offsets(&bootstrap, "trident", "events", PARTITIONS) == vec![PER_PARTITION; PARTITIONS as usize]
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(counts(PARTITIONS), want, "counted again later");
    (sandbox, broker)
}

/// Kafka → opaque batch spout → Redis on a cluster, a worker killed with -9 every 5 s: every
/// record is counted exactly once, and the group's commits reach the end offsets.
#[test]
fn kafka_through_an_opaque_spout_into_redis_counts_exactly_through_worker_kills() {
    let redis = squall_state::testing::RedisServer::start().unwrap_or_else(|e| panic!("cannot start redis: {e}"));
    let url = redis.url();
    kafka_through_an_opaque_spout_counts_exactly_through_worker_kills(
        "kafka-trident",
        &[("SQUALL_TEST_REDIS", url.as_str())],
        |partitions| per_partition_counts(&url, partitions),
    );
}

/// The same into a redb file, which every worker process (and the test, and `squall query`)
/// opens: each holds it only for a call, so the counts stay exact through the kills, and
/// `squall query` reads them while the topology runs.
#[test]
fn kafka_through_an_opaque_spout_into_redb_counts_exactly_through_worker_kills() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("counts.redb");
    let file = path.to_str().expect("a UTF-8 path").to_owned();
    let (sandbox, _broker) = kafka_through_an_opaque_spout_counts_exactly_through_worker_kills(
        "kafka-redb",
        &[("SQUALL_TEST_REDB", file.as_str())],
        |partitions| per_partition_counts_redb(&path, partitions),
    );
    // Keys are JSON: the partitions are counted under strings.
    let output =
        sandbox.cli_env(&["query", "kafka-redb", "per-partition", r#""0""#, r#""3""#], &[("SQUALL_TEST_REDB", &file)]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}\n{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["key"], serde_json::json!(["0"]));
    assert_eq!(lines[0]["value"], serde_json::json!(20_000));
    assert_eq!(lines[1]["value"], serde_json::json!(20_000));
}

/// Kafka → opaque spout → transactional Kafka sink on a cluster, a worker killed with -9 every
/// 5 s: a `read_committed` consumer of the output sees every input record exactly once.
#[test]
fn kafka_through_trident_into_a_transactional_sink_is_exactly_once_through_worker_kills() {
    const PARTITIONS: i32 = 4;
    const PER_PARTITION: i64 = 20_000;
    let broker = squall_kafka::testing::KafkaBroker::start().unwrap_or_else(|e| panic!("cannot start kafka: {e}"));
    for (topic, partitions) in [("events", PARTITIONS as usize), ("out", 2), ("progress", 1)] {
        broker.create_topic(topic, partitions).expect("topic");
    }
    let bootstrap = broker.bootstrap_servers();
    fill_topic(&bootstrap, "events", PARTITIONS, PER_PARTITION);
    let sandbox =
        ClusterSandbox::start_with(1, 2, 2, &[("SQUALL_TEST_KAFKA", bootstrap.as_str()), ("SQUALL_TEST_SINK", "1")]);
    let topology = env!("CARGO_BIN_EXE_trident_kafka_topology");
    sandbox.cli_ok(&["submit", topology, "--name", "kafka-sink", "-c", "topology.workers=3"]);
    let total = (PARTITIONS as i64 * PER_PARTITION) as usize;
    sandbox.wait_for("the first output", Duration::from_secs(60), |_| {
        !read_committed(&bootstrap, "out", 2).expect("reads").is_empty()
    });
    let mut rng = fastrand::Rng::with_seed(3);
    for round in 0..3 {
        assert!(
            read_committed(&bootstrap, "out", 2).expect("reads").len() < total,
            "everything was written before kill {round}"
        );
        let pids: Vec<u32> = (0..2).flat_map(|s| sandbox.worker_pids(s).into_values()).collect();
        kill9(*rng.choice(&pids).expect("a worker to kill"));
        std::thread::sleep(Duration::from_secs(5));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let seen = read_committed(&bootstrap, "out", 2).expect("reads");
        if seen.len() >= total {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "only {} of {total} written\n{}", seen.len(), sandbox.logs());
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_secs(3));
    let seen = read_committed(&bootstrap, "out", 2).expect("reads");
    let distinct: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), total, "records lost");
    assert_eq!(seen.len(), total, "records written twice");
}
