//! Ephemeral nodes and watches across session ends, against a real ZooKeeper.

mod common;

use std::time::Duration;

use common::{SESSION, connect, eventually, topology, zookeeper};
use squall_cluster::testing::expire_session;
use squall_cluster::{ClusterState, SupervisorInfo, paths};

fn supervisor(id: &str) -> SupervisorInfo {
    SupervisorInfo {
        id: id.into(),
        host: "127.0.0.1".into(),
        ports: vec![6700, 6701],
        started_at: 1,
        version: "0.1.0".into(),
        logviewer_port: None,
    }
}

/// The session that owns `path`, as seen by `observer`; retries transient errors (a loaded machine
/// can drop a 2 s session's connection).
async fn owner(observer: &ClusterState, path: &str) -> Option<i64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let error = match observer.client().await {
            Ok(client) => match client.check_stat(path).await {
                Ok(stat) => return stat.map(|stat| stat.ephemeral_owner),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        assert!(tokio::time::Instant::now() < deadline, "cannot read {path}: {error}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn supervisor_node_disappears_when_its_client_closes() {
    let zk = zookeeper();
    let supervisor_state = connect(&zk, paths::DEFAULT_CHROOT).await;
    let nimbus = connect(&zk, paths::DEFAULT_CHROOT).await;
    let mut live = nimbus.watch_supervisors().await.unwrap();
    assert!(live.borrow().is_empty());

    supervisor_state.register_supervisor(&supervisor("sup-1")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), live.wait_for(|s| s.contains_key("sup-1"))).await.unwrap().unwrap();
    assert_eq!(nimbus.supervisors().await.unwrap()["sup-1"], supervisor("sup-1"));

    supervisor_state.close().await;
    tokio::time::timeout(Duration::from_secs(5), live.wait_for(|s| s.is_empty())).await.unwrap().unwrap();
    assert!(nimbus.supervisors().await.unwrap().is_empty());
    let error = supervisor_state.supervisors().await.unwrap_err();
    assert!(error.to_string().contains("closed"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_session_restores_ephemerals_and_watches() {
    let zk = zookeeper();
    let state = connect(&zk, paths::DEFAULT_CHROOT).await;
    let other = connect(&zk, paths::DEFAULT_CHROOT).await;
    state.register_supervisor(&supervisor("sup-1")).await.unwrap();
    let mut children = state.subscribe_children(paths::TOPOLOGIES).await.unwrap();
    let mut assignments = state.watch_assignments().await.unwrap();
    let first_session = state.session_id().unwrap();
    assert_eq!(owner(&other, "/supervisors/sup-1").await, Some(first_session));

    expire_session(&state).await.unwrap();
    eventually("a new session", Duration::from_secs(10), || async { state.session_epoch() >= 1 }).await;
    assert_ne!(state.session_id(), Some(first_session));
    eventually("the supervisor node to be re-created", Duration::from_secs(5), || async {
        owner(&other, "/supervisors/sup-1").await == state.session_id()
    })
    .await;

    // Watches keep delivering changes made after the new session.
    other.put_topology(&topology("after")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), children.wait_for(|c| c.iter().any(|n| n == "after")))
        .await
        .expect("children watch delivers after the session loss")
        .unwrap();
    let assignment = squall_cluster::Assignment {
        topology_id: "after-1-1".into(),
        version: 0,
        artifact_hash: "00".into(),
        workers: vec![],
        assigned_at: 0,
        fence_secs: 0,
    };
    other.put_assignment("after", &assignment).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), assignments.wait_for(|a| a.contains_key("after")))
        .await
        .expect("assignment watch delivers after the session loss")
        .unwrap();
    other.put_assignment("after", &assignment).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), assignments.wait_for(|a| a["after"].version == 2))
        .await
        .expect("data watches are re-armed too")
        .unwrap();

    // And a second loss is handled the same way.
    expire_session(&state).await.unwrap();
    eventually("a third session", Duration::from_secs(10), || async { state.session_epoch() >= 2 }).await;
    eventually("the supervisor node to be re-created again", Duration::from_secs(5), || async {
        owner(&other, "/supervisors/sup-1").await == state.session_id()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn server_restart_after_session_timeout_restores_everything() {
    let mut zk = zookeeper();
    let state = connect(&zk, paths::DEFAULT_CHROOT).await;
    state.register_supervisor(&supervisor("sup-1")).await.unwrap();
    let mut children = state.subscribe_children(paths::TOPOLOGIES).await.unwrap();
    let first_session = state.session_id().unwrap();
    state.put_topology(&topology("before")).await.unwrap();

    zk.stop();
    // Longer than the session timeout: the client gives the session up.
    tokio::time::sleep(SESSION * 2).await;
    // Operations meanwhile fail with an error, they do not hang or panic.
    let error = state.put_topology(&topology("while-down")).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    zk.restart().unwrap();

    eventually("a new session", Duration::from_secs(15), || async { state.session_epoch() >= 1 }).await;
    assert_ne!(state.session_id(), Some(first_session));
    let other = connect(&zk, paths::DEFAULT_CHROOT).await;
    assert!(other.topology("before").await.unwrap().is_some(), "persistent data survives the restart");
    eventually("the supervisor node owned by the new session", Duration::from_secs(5), || async {
        owner(&other, "/supervisors/sup-1").await == state.session_id()
    })
    .await;
    // The server expires the old session after its timeout; that must not take our node with it.
    tokio::time::sleep(SESSION * 2).await;
    let now = owner(&other, "/supervisors/sup-1").await;
    assert!(now.is_some() && now != Some(first_session), "owner {now:?}");

    other.put_topology(&topology("after-restart")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), children.wait_for(|c| c.iter().any(|n| n == "after-restart")))
        .await
        .expect("children watch delivers after the restart")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn data_watch_follows_creation_change_and_deletion() {
    let zk = zookeeper();
    let state = connect(&zk, paths::DEFAULT_CHROOT).await;
    let mut data = state.subscribe_data("/topologies/wc").await.unwrap();
    let mut assignment = state.watch_assignment("wc").await.unwrap();
    assert_eq!(*data.borrow(), None);
    assert_eq!(*assignment.borrow(), None);

    state.put_topology(&topology("wc")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), data.wait_for(|d| d.is_some())).await.unwrap().unwrap();
    state.update_topology("wc", |r| r.num_workers = 7).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        data.wait_for(|d| d.as_deref().is_some_and(|d| String::from_utf8_lossy(d).contains("\"num_workers\":7"))),
    )
    .await
    .unwrap()
    .unwrap();
    state.delete_topology("wc").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), data.wait_for(|d| d.is_none())).await.unwrap().unwrap();

    let written = state
        .put_assignment(
            "wc",
            &squall_cluster::Assignment {
                topology_id: "wc-1-1".into(),
                version: 0,
                artifact_hash: "00".into(),
                workers: vec![],
                assigned_at: 0,
                fence_secs: 0,
            },
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), assignment.wait_for(|a| a.as_ref() == Some(&written)))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_retries_until_the_server_is_up_or_the_deadline() {
    let mut zk = zookeeper();
    let servers = zk.connect_string();
    zk.stop();

    let started = std::time::Instant::now();
    let error = ClusterState::connect_within(&servers, "/squall", SESSION, Duration::from_secs(1)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "gave up after {:?}", started.elapsed());
    assert!(error.to_string().contains(&servers), "{error}");

    let connecting = tokio::spawn({
        let servers = servers.clone();
        async move { ClusterState::connect_within(&servers, "/squall", SESSION, Duration::from_secs(20)).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    zk.restart().unwrap();
    let state = connecting.await.unwrap().expect("connect succeeds once the server is up");
    assert!(state.topologies().await.unwrap().is_empty());

    let error = state.subscribe_children("relative/path").await.unwrap_err();
    assert!(error.to_string().contains("relative/path"), "{error}");
}

/// Registers supervisor `id` on a session that is then abandoned without being closed, as when a
/// daemon is killed: its node stays until the session expires.
fn register_and_crash(servers: String, id: &'static str) -> i64 {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let state = runtime.block_on(async {
            let state = ClusterState::connect_within(&servers, paths::DEFAULT_CHROOT, SESSION, Duration::from_secs(10))
                .await
                .unwrap();
            state.register_supervisor(&supervisor(id)).await.unwrap();
            state
        });
        let session = state.session_id().unwrap();
        // Neither close nor drop it: its tasks die with the runtime and the session is never closed.
        std::mem::forget(state);
        runtime.shutdown_background();
        session
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_daemon_waits_for_its_previous_sessions_node_to_expire() {
    let zk = zookeeper();
    let dead = register_and_crash(zk.connect_string(), "sup-1");
    let state = connect(&zk, paths::DEFAULT_CHROOT).await;
    assert_eq!(owner(&state, "/supervisors/sup-1").await, Some(dead), "the killed run's node is still there");

    let started = std::time::Instant::now();
    state.register_supervisor(&supervisor("sup-1")).await.expect("registered once the old session expired");
    assert!(started.elapsed() < SESSION * 2 + Duration::from_secs(5), "waited {:?}", started.elapsed());
    assert_eq!(owner(&state, "/supervisors/sup-1").await, state.session_id());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_held_by_a_live_session_fails_after_the_wait() {
    let zk = zookeeper();
    let holder = connect(&zk, paths::DEFAULT_CHROOT).await;
    holder.register_supervisor(&supervisor("sup-2")).await.unwrap();
    let state = connect(&zk, paths::DEFAULT_CHROOT).await;

    let started = std::time::Instant::now();
    let error = state.register_supervisor(&supervisor("sup-2")).await.unwrap_err();
    assert!(started.elapsed() >= SESSION * 2 + Duration::from_secs(5), "gave up after {:?}", started.elapsed());
    assert!(error.to_string().contains("is held by another session"), "{error}");
    assert_eq!(owner(&state, "/supervisors/sup-2").await, holder.session_id());
}
