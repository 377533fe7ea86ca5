//! Leader election against a real ZooKeeper.

mod common;

use std::time::Duration;

use common::{connect, eventually, zookeeper};
use squall_cluster::testing::expire_session;
use squall_cluster::{ClusterState, LeaderElection, paths};

async fn leaders(members: &[&LeaderElection]) -> Vec<String> {
    members.iter().filter(|m| m.is_leader()).map(|m| m.member_id().to_owned()).collect()
}

/// Waits until exactly `expected` leads among `members` and every observer's `leader()` agrees.
async fn settled(expected: &str, members: &[&LeaderElection], observers: &[&ClusterState]) {
    eventually(&format!("{expected} to lead alone"), Duration::from_secs(10), || async {
        if leaders(members).await != [expected] {
            return false;
        }
        for observer in observers {
            // Read errors (a loaded machine can drop a 2 s session's connection) mean "not yet".
            if LeaderElection::current_leader(observer).await.ok().flatten().as_deref() != Some(expected) {
                return false;
            }
        }
        for member in members {
            if member.leader().await.ok().flatten().as_deref() != Some(expected) {
                return false;
            }
        }
        true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_when_the_leader_closes() {
    let zk = zookeeper();
    let observer = connect(&zk, paths::DEFAULT_CHROOT).await;
    assert_eq!(LeaderElection::current_leader(&observer).await.unwrap(), None);
    let s1 = connect(&zk, paths::DEFAULT_CHROOT).await;
    let s2 = connect(&zk, paths::DEFAULT_CHROOT).await;
    let s3 = connect(&zk, paths::DEFAULT_CHROOT).await;
    let n1 = LeaderElection::join(&s1, "nimbus-1:8080".into()).await.unwrap();
    let n2 = LeaderElection::join(&s2, "nimbus-2:8080".into()).await.unwrap();
    let n3 = LeaderElection::join(&s3, "nimbus-3:8080".into()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), n1.wait_leader()).await.unwrap().unwrap();
    settled("nimbus-1:8080", &[&n1, &n2, &n3], &[&observer, &s1, &s2, &s3]).await;

    let mut follower = n3.subscribe();
    let mut second = n2.subscribe();
    s1.close().await;
    tokio::time::timeout(Duration::from_secs(5), second.wait_for(|leads| *leads)).await.unwrap().unwrap();
    settled("nimbus-2:8080", &[&n2, &n3], &[&observer, &s2, &s3]).await;
    assert!(!n1.is_leader());
    // The third member watched the second, not the leader: it never led.
    assert!(!follower.has_changed().unwrap() && !*follower.borrow_and_update());

    n2.leave().await;
    tokio::time::timeout(Duration::from_secs(5), n3.wait_leader()).await.unwrap().unwrap();
    settled("nimbus-3:8080", &[&n3], &[&observer, &s3]).await;
    drop(n3);
    eventually("no leader", Duration::from_secs(5), || async {
        matches!(LeaderElection::current_leader(&observer).await, Ok(None))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_whose_session_expires_rejoins_at_the_back() {
    let zk = zookeeper();
    let observer = connect(&zk, paths::DEFAULT_CHROOT).await;
    let s1 = connect(&zk, paths::DEFAULT_CHROOT).await;
    let s2 = connect(&zk, paths::DEFAULT_CHROOT).await;
    let n1 = LeaderElection::join(&s1, "a".into()).await.unwrap();
    let n2 = LeaderElection::join(&s2, "b".into()).await.unwrap();
    settled("a", &[&n1, &n2], &[&observer]).await;

    expire_session(&s1).await.unwrap();
    settled("b", &[&n1, &n2], &[&observer, &s1, &s2]).await;
    eventually("the expired member to rejoin", Duration::from_secs(10), || async {
        let Ok(client) = observer.client().await else { return false };
        client.list_children(paths::ELECTION).await.is_ok_and(|members| members.len() == 2)
    })
    .await;
    assert!(!n1.is_leader());

    // When the new leader goes, the rejoined member takes over.
    s2.close().await;
    settled("a", &[&n1], &[&observer, &s1]).await;
}
