//! The topology store in ZooKeeper while ZooKeeper is away: calls fail in bounded time, naming
//! the key, instead of waiting for the connection to come back.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, zookeeper};
use squall_cluster::{ClusterState, STORE_CALL_LIMIT, ZooKeeperStore, paths};
use squall_topology::TopologyStore;

#[tokio::test(flavor = "multi_thread")]
async fn store_calls_fail_in_bounded_time_while_zookeeper_is_down_and_work_after() {
    let mut zk = zookeeper();
    // A session that outlives the outage: the client holds calls made meanwhile, waiting for the
    // connection, rather than failing them.
    let state = ClusterState::connect_within(
        &zk.connect_string(),
        paths::DEFAULT_CHROOT,
        Duration::from_secs(30),
        Duration::from_secs(10),
    )
    .await
    .expect("connect to the test ZooKeeper");
    let store = ZooKeeperStore::new(state, "outage");
    store.put("meta", b"one").await.unwrap_or_else(|e| panic!("{e}"));

    zk.stop();
    // Let the client see the connection go, so what follows is asked while it is disconnected.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let error = store.put("meta", b"two").await.expect_err("zookeeper is down");
    let took = started.elapsed();
    assert!(took < STORE_CALL_LIMIT + Duration::from_secs(1), "a write took {took:?} to fail");
    let text = error.to_string();
    assert!(text.contains("cannot write `meta`"), "{text}");
    let started = Instant::now();
    let error = store.get("meta").await.expect_err("zookeeper is down");
    assert!(started.elapsed() < STORE_CALL_LIMIT + Duration::from_secs(1), "a read took {:?}", started.elapsed());
    assert!(error.to_string().contains("cannot read `meta`"), "{error}");

    zk.restart().unwrap_or_else(|e| panic!("cannot restart zookeeper: {e}"));
    eventually("the store answering again", Duration::from_secs(20), || async {
        store.put("meta", b"three").await.is_ok()
    })
    .await;
    // Whatever was held while it was down, the last write is what the store has.
    assert_eq!(store.get("meta").await.unwrap_or_else(|e| panic!("{e}")), Some(b"three".to_vec()));
}
