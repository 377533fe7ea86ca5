//! Leader election with ephemeral sequential nodes under `/nimbus/election`.
//!
//! Each member creates `m-<tag>-<seq>` holding its member id; the lowest sequence leads. Every
//! other member watches only its predecessor, so a leader's death wakes one member, not all. A
//! member treats a dropped connection as lost leadership until it reconnects, and rejoins at the
//! back with a new node after its session expires.

use std::sync::Arc;

use tokio::sync::watch;
use tracing::{info, warn};
use zookeeper_client::{Client, CreateMode, Error as Zk, EventType, SessionState};

use crate::backoff::Backoff;
use crate::state::{Shared, shut_down};
use crate::{ClusterError, ClusterState, paths};

/// One member of the Nimbus leader election. Dropping it leaves the election.
#[derive(Debug)]
pub struct LeaderElection {
    state: ClusterState,
    member_id: String,
    leader: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
}

impl LeaderElection {
    /// Joins the election as `member_id` (such as the Nimbus's `host:port`).
    pub async fn join(state: &ClusterState, member_id: String) -> Result<LeaderElection, ClusterError> {
        paths::check_name("election member id", &member_id)?;
        let tag = format!("{:016x}", fastrand::u64(..));
        let (client, _) = state.live("join the leader election").await?;
        let node = create_member(&client, &tag, &member_id)
            .await
            .map_err(|e| state.shared().zk("create", paths::ELECTION, e))?;
        info!(member = %member_id, node = %node, "joined the leader election");
        let (leader_tx, leader) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let member = Member { shared: state.shared().clone(), tag, member_id: member_id.clone(), leader: leader_tx };
        state.shared().spawn(member.run(stop_rx, client, node));
        Ok(LeaderElection { state: state.clone(), member_id, leader, stop })
    }

    /// This member's id.
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// Whether this member leads right now.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Waits until this member leads.
    pub async fn wait_leader(&self) -> Result<(), ClusterError> {
        let mut leader = self.leader.clone();
        match leader.wait_for(|leads| *leads).await {
            Ok(_) => Ok(()),
            Err(_) => Err(ClusterError::TaskStopped { what: "leader election" }),
        }
    }

    /// Follows this member's leadership: `true` while it leads.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leader.clone()
    }

    /// The member id of the current leader, as anyone reading ZooKeeper sees it.
    pub async fn leader(&self) -> Result<Option<String>, ClusterError> {
        Self::current_leader(&self.state).await
    }

    /// The member id of the current leader, for processes that do not take part.
    pub async fn current_leader(state: &ClusterState) -> Result<Option<String>, ClusterError> {
        for _ in 0..16 {
            let members = ordered(state.children(paths::ELECTION).await?);
            let Some((_, first)) = members.first() else { return Ok(None) };
            match state.read_raw(&format!("{}/{first}", paths::ELECTION)).await? {
                Some((data, _)) => return Ok(Some(String::from_utf8_lossy(&data).into_owned())),
                None => continue,
            }
        }
        Ok(None)
    }

    /// Leaves the election, deleting this member's node, and waits until that is done.
    pub async fn leave(mut self) {
        self.stop.send_replace(true);
        // The task drops the leadership sender when it is done.
        while self.leader.changed().await.is_ok() {}
    }
}

impl Drop for LeaderElection {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// The members in sequence order: (sequence, node name). Foreign nodes are ignored.
fn ordered(children: Vec<String>) -> Vec<(i64, String)> {
    let mut members: Vec<(i64, String)> = children
        .into_iter()
        .filter(|c| c.starts_with(paths::ELECTION_PREFIX))
        .filter_map(|c| Some((c.rsplit_once('-')?.1.parse().ok()?, c)))
        .collect();
    members.sort();
    members
}

/// Creates this member's node, first deleting any node of ours left from an earlier session.
async fn create_member(client: &Client, tag: &str, member_id: &str) -> Result<String, Zk> {
    let mine = format!("{}{tag}-", paths::ELECTION_PREFIX);
    for stale in client.list_children(paths::ELECTION).await?.into_iter().filter(|c| c.starts_with(&mine)) {
        match client.delete(&format!("{}/{stale}", paths::ELECTION), None).await {
            Ok(()) | Err(Zk::NoNode) => {}
            Err(e) => return Err(e),
        }
    }
    let options = CreateMode::EphemeralSequential.with_acls(zookeeper_client::Acls::anyone_all());
    let prefix = format!("{}/{mine}", paths::ELECTION);
    let (_, sequence) = client.create(&prefix, member_id.as_bytes(), &options).await?;
    Ok(format!("{mine}{sequence}"))
}

struct Member {
    shared: Arc<Shared>,
    tag: String,
    member_id: String,
    leader: watch::Sender<bool>,
}

/// What ended one round of watching.
enum Next {
    /// Look at the members again.
    Recheck,
    /// The session is gone: rejoin on the next one.
    Rejoin,
    /// Leave.
    Stop,
}

impl Member {
    async fn run(self, mut stop: watch::Receiver<bool>, mut client: Client, mut node: String) {
        let mut shutdown = self.shared.shutdown.subscribe();
        let mut backoff = Backoff::standard();
        loop {
            let next = tokio::select! {
                next = self.follow(&client, &node) => next,
                _ = shut_down(&mut shutdown) => Next::Stop,
                _ = shut_down(&mut stop) => Next::Stop,
            };
            match next {
                Next::Recheck => continue,
                Next::Stop => break,
                Next::Rejoin => {}
            }
            self.set_leader(false);
            // Rejoin once there is a live session, newer than the one we lost if that one ended.
            loop {
                let live = tokio::select! {
                    live = self.shared.live_client(None, "rejoin the leader election") => live,
                    _ = shut_down(&mut shutdown) => return,
                    _ = shut_down(&mut stop) => return,
                };
                let Ok((fresh, _)) = live else { return };
                match create_member(&fresh, &self.tag, &self.member_id).await {
                    Ok(created) => {
                        info!(member = %self.member_id, node = %created, "rejoined the leader election");
                        (client, node) = (fresh, created);
                        backoff.reset();
                        break;
                    }
                    Err(e) => {
                        warn!(member = %self.member_id, error = %e, "cannot rejoin the leader election, retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff.next_delay()) => {}
                            _ = shut_down(&mut shutdown) => return,
                            _ = shut_down(&mut stop) => return,
                        }
                    }
                }
            }
        }
        self.set_leader(false);
        let path = format!("{}/{node}", paths::ELECTION);
        if !client.state().is_terminated() {
            let _ = client.delete(&path, None).await;
        }
        info!(member = %self.member_id, "left the leader election");
    }

    /// Decides whether we lead, then waits for the event that may change it.
    async fn follow(&self, client: &Client, node: &str) -> Next {
        let mut session = client.state_watcher();
        if session.peek_state().is_terminated() {
            return Next::Rejoin;
        }
        let members = match client.list_children(paths::ELECTION).await {
            Ok(children) => ordered(children),
            Err(e) => return self.on_error(e).await,
        };
        let Some(position) = members.iter().position(|(_, name)| name == node) else {
            warn!(member = %self.member_id, node, "our election node is gone, rejoining");
            return Next::Rejoin;
        };
        let watched = if position == 0 { node } else { &members[position - 1].1 };
        let watcher = match client.check_and_watch_stat(&format!("{}/{watched}", paths::ELECTION)).await {
            Ok((Some(_), watcher)) => watcher,
            Ok((None, _)) => return Next::Recheck,
            Err(e) => return self.on_error(e).await,
        };
        self.set_leader(position == 0);
        tokio::select! {
            event = watcher.changed() => {
                if event.event_type == EventType::Session && event.session_state.is_terminated() {
                    return Next::Rejoin;
                }
                Next::Recheck
            }
            next = wait_disconnect(&mut session) => {
                self.set_leader(false);
                match next {
                    SessionState::Disconnected => wait_reconnect(&mut session).await,
                    _ => Next::Rejoin,
                }
            }
        }
    }

    async fn on_error(&self, e: Zk) -> Next {
        self.set_leader(false);
        warn!(member = %self.member_id, error = %e, "leader election read failed");
        match e {
            Zk::SessionExpired | Zk::ClientClosed | Zk::SessionMoved => Next::Rejoin,
            _ => {
                tokio::time::sleep(Backoff::standard().next_delay()).await;
                Next::Recheck
            }
        }
    }

    fn set_leader(&self, leads: bool) {
        let changed = self.leader.send_if_modified(|old| std::mem::replace(old, leads) != leads);
        if changed {
            info!(member = %self.member_id, leads, "leadership changed");
        }
    }
}

/// Resolves when the connection drops or the session ends.
async fn wait_disconnect(session: &mut zookeeper_client::StateWatcher) -> SessionState {
    loop {
        let state = session.changed().await;
        if state == SessionState::Disconnected || state.is_terminated() {
            return state;
        }
    }
}

/// After a disconnect: recheck once reconnected, rejoin if the session ended instead.
async fn wait_reconnect(session: &mut zookeeper_client::StateWatcher) -> Next {
    loop {
        match session.changed().await {
            SessionState::SyncConnected => return Next::Recheck,
            state if state.is_terminated() => return Next::Rejoin,
            _ => {}
        }
    }
}
