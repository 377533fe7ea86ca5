//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use squall_cluster::testing::ZooKeeperServer;
use squall_cluster::{ClusterState, TopologyRecord, TopologyStatus};
use squall_topology::{
    ComponentConfig, ComponentKind, ComponentSpec, ConfigValue, GroupingSpec, InputSpec, StreamDecl, TopologySpec,
};

/// The session timeout used by tests.
pub const SESSION: Duration = Duration::from_secs(2);

/// Starts a ZooKeeper server or fails the test with the reason.
pub fn zookeeper() -> ZooKeeperServer {
    match ZooKeeperServer::start() {
        Ok(server) => server,
        Err(e) => panic!("the test ZooKeeper server did not start: {e}"),
    }
}

/// Connects under `chroot`.
pub async fn connect(zk: &ZooKeeperServer, chroot: &str) -> ClusterState {
    ClusterState::connect_within(&zk.connect_string(), chroot, SESSION, Duration::from_secs(10))
        .await
        .expect("connect to the test ZooKeeper")
}

/// Polls `check` every 50 ms until it returns true, failing after `within`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A two-component topology spec.
pub fn spec() -> TopologySpec {
    let mut config = BTreeMap::new();
    config.insert("topology.workers".to_owned(), ConfigValue::Int(2));
    config.insert("topology.debug".to_owned(), ConfigValue::Bool(false));
    let words = ComponentSpec {
        id: "words".into(),
        kind: ComponentKind::Spout,
        type_name: "example::Words".into(),
        parallelism: 1,
        tasks: 1,
        task_ids: vec![2],
        streams: vec![StreamDecl { name: "default".into(), fields: vec!["word".into()], direct: false }],
        inputs: vec![],
        config: ComponentConfig::default(),
        chained_to: None,
    };
    let count = ComponentSpec {
        id: "count".into(),
        kind: ComponentKind::Bolt,
        type_name: "example::Count".into(),
        parallelism: 2,
        tasks: 2,
        task_ids: vec![1, 3],
        streams: vec![],
        inputs: vec![InputSpec {
            component: "words".into(),
            stream: "default".into(),
            grouping: GroupingSpec::Fields { fields: vec!["word".into()] },
        }],
        config: ComponentConfig::default(),
        chained_to: None,
    };
    TopologySpec { config, components: vec![count, words] }
}

/// A topology record named `name`.
pub fn topology(name: &str) -> TopologyRecord {
    TopologyRecord {
        name: name.to_owned(),
        id: TopologyRecord::make_id(name, 1, 1_700_000_000),
        status: TopologyStatus::Active,
        spec: spec(),
        artifact_hash: "ab".repeat(32),
        num_workers: 2,
        config: BTreeMap::from([("topology.max.spout.pending".to_owned(), ConfigValue::Int(100))]),
        submitted_at: 1_700_000_000,
        status_reason: None,
        kill_wait_secs: None,
        parallelism: BTreeMap::new(),
        log_filter: None,
    }
}
