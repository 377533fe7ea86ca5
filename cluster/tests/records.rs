//! Put, get, list and delete of every record type against a real ZooKeeper.

mod common;

use std::time::Duration;

use common::{connect, topology, zookeeper};
use squall_cluster::records::MAX_ERRORS;
use squall_cluster::zookeeper_client::{Acls, CreateMode};
use squall_cluster::{
    Assignment, ClusterError, ErrorRecord, NimbusInfo, SupervisorInfo, TopologyStatus, WorkerAssignment,
    WorkerHeartbeat, paths,
};

#[tokio::test(flavor = "multi_thread")]
async fn topology_records() {
    let zk = zookeeper();
    let state = connect(&zk, paths::DEFAULT_CHROOT).await;
    assert_eq!(state.topology("wc").await.unwrap(), None);
    assert!(state.topologies().await.unwrap().is_empty());

    let wc = topology("wc");
    state.create_topology(&wc).await.unwrap();
    let again = state.create_topology(&wc).await.unwrap_err();
    assert!(matches!(again, ClusterError::AlreadyExists { .. }), "{again}");
    assert!(again.to_string().contains("/squall/topologies/wc"), "{again}");
    state.put_topology(&topology("other")).await.unwrap();

    assert_eq!(state.topology("wc").await.unwrap(), Some(wc.clone()));
    let all = state.topologies().await.unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), ["other", "wc"]);

    let updated = state
        .update_topology("wc", |r| {
            r.status = TopologyStatus::Inactive;
            r.status_reason = Some("waiting for 4 free slots, 2 available".into());
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.status, TopologyStatus::Inactive);
    assert_eq!(state.topology("wc").await.unwrap(), Some(updated));
    assert_eq!(state.update_topology("missing", |_| {}).await.unwrap(), None);

    assert!(state.delete_topology("wc").await.unwrap());
    assert!(!state.delete_topology("wc").await.unwrap());
    assert_eq!(state.topology("wc").await.unwrap(), None);

    let first = state.new_topology_id("wc").await.unwrap();
    let second = state.new_topology_id("wc").await.unwrap();
    assert_ne!(first, second);
    assert!(first.starts_with("wc-") && first.split('-').count() == 3, "{first}");

    // The JSON is readable as is, e.g. with zkCli.
    let raw = state.client().await.unwrap().get_data("/topologies/other").await.unwrap().0;
    let json: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(json["status"], "active");
    assert_eq!(json["spec"]["components"][0]["inputs"][0]["grouping"]["type"], "fields");
}

#[tokio::test(flavor = "multi_thread")]
async fn assignments_bump_their_version() {
    let zk = zookeeper();
    let state = connect(&zk, paths::DEFAULT_CHROOT).await;
    let assignment = Assignment {
        topology_id: "wc-1-1700000000".into(),
        version: 0,
        artifact_hash: "cd".repeat(32),
        workers: vec![
            WorkerAssignment {
                supervisor_id: "s1".into(),
                host: "h1".into(),
                port: 6700,
                tasks: vec![1, 2],
                layout: 7,
            },
            WorkerAssignment { supervisor_id: "s2".into(), host: "h2".into(), port: 6700, tasks: vec![3], layout: 9 },
        ],
        assigned_at: 1_700_000_001,
        fence_secs: 20,
    };
    assert_eq!(state.assignment("wc").await.unwrap(), None);
    let written = state.put_assignment("wc", &assignment).await.unwrap();
    assert_eq!(written.version, 1);
    let written = state.put_assignment("wc", &assignment).await.unwrap();
    assert_eq!(written.version, 2);
    let stored = state.assignment("wc").await.unwrap().unwrap();
    assert_eq!(stored, written);
    assert_eq!(stored.worker_of(3).map(|w| w.supervisor_id.as_str()), Some("s2"));
    assert_eq!(stored.worker_of(9), None);
    assert_eq!(stored.tasks_of("s1", 6700), [1, 2]);
    assert!(stored.tasks_of("s1", 6701).is_empty());
    assert_eq!(stored.workers_on("s2").count(), 1);
    assert_eq!(state.assignments().await.unwrap().len(), 1);
    assert!(state.delete_assignment("wc").await.unwrap());
    assert!(state.assignments().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn supervisors_heartbeats_errors_nimbuses_artifacts() {
    let zk = zookeeper();
    let state = connect(&zk, paths::DEFAULT_CHROOT).await;

    let info = SupervisorInfo {
        id: "sup-1".into(),
        host: "10.0.0.1".into(),
        ports: vec![6700, 6701],
        started_at: 1,
        version: "0.1.0".into(),
        logviewer_port: None,
    };
    state.register_supervisor(&info).await.unwrap();
    let rewritten = SupervisorInfo { ports: vec![6700], ..info.clone() };
    state.register_supervisor(&rewritten).await.unwrap();
    assert_eq!(state.supervisor("sup-1").await.unwrap(), Some(rewritten.clone()));
    assert_eq!(state.supervisors().await.unwrap().into_values().collect::<Vec<_>>(), [rewritten]);
    assert!(state.unregister_supervisor("sup-1").await.unwrap());
    assert!(state.supervisors().await.unwrap().is_empty());

    let beat = WorkerHeartbeat {
        topology_id: "wc-1-1".into(),
        supervisor_id: "sup-1".into(),
        port: 6700,
        pid: 4242,
        tasks: vec![1, 2],
        time_millis: 1_700_000_000_123,
        uptime_secs: 12,
        metrics: serde_json::json!({"count": {"executed": 10}}),
    };
    state.put_worker_heartbeat("wc", &beat).await.unwrap();
    state.put_worker_heartbeat("wc", &WorkerHeartbeat { port: 6701, ..beat.clone() }).await.unwrap();
    let beats = state.worker_heartbeats("wc").await.unwrap();
    assert_eq!(beats.keys().collect::<Vec<_>>(), ["sup-1-6700", "sup-1-6701"]);
    assert_eq!(beats["sup-1-6700"], beat);
    assert_eq!(paths::parse_worker_key("sup-1-6701"), Some(("sup-1", 6701)));
    assert!(state.delete_worker_heartbeat("wc", "sup-1", 6701).await.unwrap());
    assert_eq!(state.worker_heartbeats("wc").await.unwrap().len(), 1);
    assert!(state.delete_worker_heartbeats("wc").await.unwrap());
    assert!(state.worker_heartbeats("wc").await.unwrap().is_empty());

    for i in 0..12u64 {
        let error = ErrorRecord { time: i, task: 3, message: format!("boom {i}") };
        state.record_error("wc", "count", error).await.unwrap();
    }
    state.record_error("wc", "words", ErrorRecord { time: 1, task: 2, message: "eof".into() }).await.unwrap();
    let errors = state.errors("wc", "count").await.unwrap();
    assert_eq!(errors.len(), MAX_ERRORS);
    assert_eq!(errors.first().unwrap().message, "boom 2");
    assert_eq!(errors.last().unwrap().message, "boom 11");
    assert_eq!(state.topology_errors("wc").await.unwrap().len(), 2);
    assert!(state.errors("wc", "none").await.unwrap().is_empty());
    assert!(state.delete_errors("wc").await.unwrap());
    assert!(state.topology_errors("wc").await.unwrap().is_empty());

    let nimbus = NimbusInfo { host: "nimbus-a".into(), port: 8080, started_at: 5 };
    state.register_nimbus(&nimbus).await.unwrap();
    assert_eq!(state.nimbuses().await.unwrap().get("nimbus-a:8080"), Some(&nimbus));

    let hash = "ef".repeat(32);
    state.register_artifact(&hash, "nimbus-a:8080").await.unwrap();
    state.register_artifact(&hash, "nimbus-b:8080").await.unwrap();
    assert_eq!(state.artifact_holders(&hash).await.unwrap(), ["nimbus-a:8080", "nimbus-b:8080"]);
    assert_eq!(state.artifacts().await.unwrap(), vec![hash.clone()]);
    assert!(state.unregister_artifact(&hash, "nimbus-b:8080").await.unwrap());
    assert_eq!(state.artifact_holders(&hash).await.unwrap(), ["nimbus-a:8080"]);
    assert!(state.artifact_holders("unknown").await.unwrap().is_empty());

    state.put_topology(&topology("wc")).await.unwrap();
    state.put_worker_heartbeat("wc", &beat).await.unwrap();
    state.remove_topology_state("wc").await.unwrap();
    assert_eq!(state.topology("wc").await.unwrap(), None);
    assert!(state.worker_heartbeats("wc").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_json_and_bad_names_are_errors_naming_the_path() {
    let zk = zookeeper();
    let state = connect(&zk, "/cluster-a").await;
    let client = state.client().await.unwrap();
    let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
    client.create("/topologies/broken", b"{not json", &persistent).await.unwrap();

    let error = state.topology("broken").await.unwrap_err();
    assert!(matches!(error, ClusterError::Malformed { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("/cluster-a/topologies/broken"), "{message}");
    assert!(message.contains("topology record"), "{message}");
    let error = state.topologies().await.unwrap_err();
    assert!(error.to_string().contains("/cluster-a/topologies/broken"), "{error}");
    let error = state.update_topology("broken", |_| {}).await.unwrap_err();
    assert!(error.to_string().contains("/cluster-a/topologies/broken"), "{error}");

    // A watch skips the malformed node instead of failing.
    state.put_topology(&topology("fine")).await.unwrap();
    let watch = state.watch_topologies().await.unwrap();
    assert_eq!(watch.borrow().keys().collect::<Vec<_>>(), ["fine"]);

    for bad in ["", "a/b", "..", "tab\there"] {
        let error = state.topology(bad).await.unwrap_err();
        assert!(matches!(error, ClusterError::InvalidName { .. }), "{bad:?}: {error}");
    }
    let error =
        squall_cluster::ClusterState::connect("127.0.0.1:1", "relative", Duration::from_secs(2)).await.unwrap_err();
    assert!(matches!(error, ClusterError::InvalidChroot { .. }), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn chroots_are_isolated() {
    let zk = zookeeper();
    let a = connect(&zk, "/cluster-a").await;
    let b = connect(&zk, "/deep/cluster-b").await;
    a.put_topology(&topology("wc")).await.unwrap();
    a.register_supervisor(&SupervisorInfo {
        id: "s".into(),
        host: "h".into(),
        ports: vec![1],
        started_at: 0,
        version: "v".into(),
        logviewer_port: None,
    })
    .await
    .unwrap();
    assert!(b.topologies().await.unwrap().is_empty());
    assert!(b.supervisors().await.unwrap().is_empty());
    assert_eq!(b.topology("wc").await.unwrap(), None);
    b.put_topology(&topology("other")).await.unwrap();
    assert_eq!(a.topologies().await.unwrap().keys().collect::<Vec<_>>(), ["wc"]);
    assert_eq!(b.topologies().await.unwrap().keys().collect::<Vec<_>>(), ["other"]);
    assert_eq!(a.chroot(), "/cluster-a");
}

#[tokio::test(flavor = "multi_thread")]
async fn compare_and_set_under_concurrent_writers() {
    const WRITERS: usize = 4;
    const INCREMENTS: u32 = 25;
    let zk = zookeeper();
    let first = connect(&zk, paths::DEFAULT_CHROOT).await;
    let mut record = topology("wc");
    record.num_workers = 0;
    first.put_topology(&record).await.unwrap();

    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        // Separate sessions, as separate Nimbus processes would have.
        let state = connect(&zk, paths::DEFAULT_CHROOT).await;
        writers.push(tokio::spawn(async move {
            for _ in 0..INCREMENTS {
                state.update_topology("wc", |r| r.num_workers += 1).await.unwrap();
            }
            state.close().await;
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let stored = first.topology("wc").await.unwrap().unwrap();
    assert_eq!(stored.num_workers, WRITERS as u32 * INCREMENTS);
}
