//! Opening sessions, replacing expired ones, and the ephemeral nodes re-created on each new session.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info, warn};
use zookeeper_client::{Client, Error as Zk, SessionState, StateWatcher};

use crate::backoff::Backoff;
use crate::state::{EPHEMERAL, PERSISTENT, Shared, shut_down};
use crate::{ClusterError, ClusterState, paths};

/// Opens one session: connects, creates the chroot, and the base paths under it.
async fn open(servers: &str, chroot: &str, session_timeout: Duration) -> Result<Client, Zk> {
    let root = Client::connector().with_session_timeout(session_timeout).with_fail_eagerly().connect(servers).await?;
    let client = if chroot.is_empty() {
        root
    } else {
        root.mkdir(chroot, &PERSISTENT).await?;
        root.chroot(chroot.to_owned()).map_err(|_| Zk::BadArguments(&"invalid chroot"))?
    };
    for path in paths::BASE_PATHS {
        match client.create(path, &[], &PERSISTENT).await {
            Ok(_) | Err(Zk::NodeExists) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(client)
}

/// Opens a session, retrying with backoff until `deadline`.
pub(crate) async fn open_until(
    servers: &str,
    chroot: &str,
    session_timeout: Duration,
    deadline: Instant,
) -> Result<Client, ClusterError> {
    let started = Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let attempt = tokio::time::timeout_at(deadline, open(servers, chroot, session_timeout)).await;
        let source = match attempt {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(e)) => e,
            Err(_) => Zk::Timeout,
        };
        let delay = backoff.next_delay();
        if Instant::now() + delay >= deadline {
            return Err(ClusterError::Connect { servers: servers.to_owned(), waited: started.elapsed(), source });
        }
        warn!(servers, error = %source, retry_in_ms = delay.as_millis() as u64, "cannot connect to ZooKeeper yet");
        tokio::time::sleep(delay).await;
    }
}

/// Watches the session; when it expires, opens a new one, restores the ephemerals and publishes it.
pub(crate) async fn monitor(shared: Arc<Shared>, mut state: StateWatcher) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let mut session_state = state.peek_state();
        if !session_state.is_terminated() {
            session_state = tokio::select! {
                _ = shut_down(&mut shutdown) => break,
                changed = state.changed() => changed,
            };
        }
        match session_state {
            SessionState::Disconnected => warn!(servers = %shared.servers, "ZooKeeper connection lost, reconnecting"),
            SessionState::SyncConnected => info!(servers = %shared.servers, "ZooKeeper connection re-established"),
            _ => {}
        }
        if !session_state.is_terminated() {
            continue;
        }
        if shared.is_shut_down() {
            break;
        }
        let old = shared.current.borrow().client.as_ref().map(|c| c.session_id());
        warn!(servers = %shared.servers, session = ?old, state = %session_state, "ZooKeeper session ended, opening a new one");
        if let Some(old) = old {
            shared.past_sessions.lock().unwrap_or_else(PoisonError::into_inner).push(old.0);
        }
        let Some(client) = reconnect(&shared, &mut shutdown).await else { break };
        info!(servers = %shared.servers, session = %client.session_id(), "new ZooKeeper session established");
        state = client.state_watcher();
        shared.current.send_modify(|c| {
            c.client = Some(client);
            c.epoch += 1;
        });
    }
    shared.current.send_modify(|c| {
        c.client = None;
        c.closed = true;
    });
}

/// Opens a new session and restores the ephemerals, with backoff, until it works or we shut down.
async fn reconnect(shared: &Shared, shutdown: &mut tokio::sync::watch::Receiver<bool>) -> Option<Client> {
    // Short delays: once ZooKeeper is back, a worker must heartbeat again well within the
    // supervisor's worker timeout. A connection attempt costs ZooKeeper next to nothing.
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut attempts = 0u64;
    loop {
        attempts += 1;
        // A long outage is said at first and then every minute or so, not every attempt.
        let loud = attempts <= 3 || attempts.is_multiple_of(30);
        let attempt = open(&shared.servers, &shared.chroot, shared.session_timeout).await;
        match attempt {
            Ok(client) => match restore_ephemerals(shared, &client).await {
                Ok(()) => return Some(client),
                Err(e) => {
                    warn!(servers = %shared.servers, error = %e, "cannot restore ephemeral nodes on the new session")
                }
            },
            Err(e) if loud => {
                warn!(servers = %shared.servers, attempts, error = %e, "cannot open a new ZooKeeper session")
            }
            Err(e) => {
                tracing::debug!(servers = %shared.servers, attempts, error = %e, "cannot open a new ZooKeeper session")
            }
        }
        tokio::select! {
            _ = shut_down(shutdown) => return None,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// Re-creates every registered ephemeral on `client`'s session. Fails only if the session itself fails.
async fn restore_ephemerals(shared: &Shared, client: &Client) -> Result<(), Zk> {
    let registry = shared.ephemerals.lock().await;
    for (path, data) in registry.iter() {
        match create_ephemeral(shared, client, path, data).await {
            Ok(()) => info!(path = %shared.full_path(path), "restored ephemeral node"),
            Err(Claim::Zk(e)) if is_session_error(&e) => return Err(e),
            Err(Claim::Zk(e)) => error!(path = %shared.full_path(path), error = %e, "cannot restore ephemeral node"),
            Err(Claim::HeldBy(owner)) => {
                error!(path = %shared.full_path(path), owner = %format!("{owner:#x}"), "ephemeral node held by another session")
            }
        }
    }
    Ok(())
}

fn is_session_error(e: &Zk) -> bool {
    matches!(e, Zk::ConnectionLoss | Zk::SessionExpired | Zk::ClientClosed | Zk::SessionMoved | Zk::Timeout)
}

/// Why an ephemeral could not be created.
pub(crate) enum Claim {
    Zk(Zk),
    /// Another live session owns it (0 for a persistent node).
    HeldBy(i64),
}

/// Creates the ephemeral `path` on `client`'s session, replacing our own leftovers from expired sessions.
pub(crate) async fn create_ephemeral(shared: &Shared, client: &Client, path: &str, data: &[u8]) -> Result<(), Claim> {
    let ours = client.session_id().0;
    for _ in 0..8 {
        let err = match client.create(path, data, &EPHEMERAL).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        match err {
            Zk::NoNode => {
                let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
                if parent.is_empty() {
                    return Err(Claim::Zk(Zk::NoNode));
                }
                client.mkdir(parent, &PERSISTENT).await.map_err(Claim::Zk)?;
            }
            Zk::NodeExists => {
                let Some(stat) = client.check_stat(path).await.map_err(Claim::Zk)? else { continue };
                if stat.ephemeral_owner == ours {
                    return client.set_data(path, data, None).await.map(|_| ()).map_err(Claim::Zk);
                }
                let past =
                    shared.past_sessions.lock().unwrap_or_else(PoisonError::into_inner).contains(&stat.ephemeral_owner);
                if !past {
                    return Err(Claim::HeldBy(stat.ephemeral_owner));
                }
                match client.delete(path, Some(stat.version)).await {
                    Ok(()) | Err(Zk::NoNode | Zk::BadVersion) => {}
                    Err(e) => return Err(Claim::Zk(e)),
                }
            }
            e => return Err(Claim::Zk(e)),
        }
    }
    Err(Claim::Zk(Zk::RuntimeInconsistent))
}

impl ClusterState {
    /// Creates (or rewrites) the ephemeral `path` and records it so it is re-created on every new session.
    pub(crate) async fn register_ephemeral(
        &self,
        path: &str,
        what: &'static str,
        data: Vec<u8>,
    ) -> Result<(), ClusterError> {
        let shared = self.shared();
        let (client, _) = self.live("register an ephemeral node").await?;
        let mut registry = shared.ephemerals.lock().await;
        match create_ephemeral(shared, &client, path, &data).await {
            Ok(()) => {
                registry.insert(path.to_owned(), data);
                Ok(())
            }
            Err(Claim::Zk(e)) => Err(shared.zk("create ephemeral", path, e)),
            Err(Claim::HeldBy(owner)) => Err(ClusterError::HeldByOther {
                path: shared.full_path(path),
                what,
                owner: if owner == 0 { "a persistent node".to_owned() } else { format!("{owner:#x}") },
            }),
        }
    }

    /// [`ClusterState::register_ephemeral`] for a daemon's identity node: when another session
    /// holds `path` — normally this daemon's previous run, killed before it could close its
    /// session, whose nodes live until that session expires — waits for the node to go, up to
    /// twice the session timeout and 5 s more, then fails with [`ClusterError::HeldByOther`] (a
    /// live process with the same identity never lets go).
    pub(crate) async fn register_ephemeral_waiting(
        &self,
        path: &str,
        what: &'static str,
        data: Vec<u8>,
    ) -> Result<(), ClusterError> {
        let mut waiting: Option<(Instant, Duration)> = None;
        loop {
            let held = match self.register_ephemeral(path, what, data.clone()).await {
                Err(held @ ClusterError::HeldByOther { .. }) => held,
                Ok(()) => {
                    if let Some((since, _)) = waiting {
                        info!(node = %self.shared().full_path(path), waited_ms = since.elapsed().as_millis() as u64,
                            "the previous session's node expired; registered");
                    }
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            let (client, _) = self.live("wait for an ephemeral node to expire").await?;
            let (since, limit) = *waiting.get_or_insert_with(|| {
                let limit = self.shared().session_timeout.max(client.session_timeout()) * 2 + Duration::from_secs(5);
                if let ClusterError::HeldByOther { path, owner, .. } = &held {
                    warn!(node = %path, owner = %owner, what, up_to_secs = limit.as_secs(),
                        "waiting for the previous session's node to expire");
                }
                (Instant::now(), limit)
            });
            let Some(left) = limit.checked_sub(since.elapsed()) else { return Err(held) };
            // Wake when the node goes, or look again after a while in case the watch is lost.
            let pause = left.min(Duration::from_secs(1));
            match client.check_and_watch_stat(path).await {
                Ok((None, _)) => {}
                Ok((Some(_), watcher)) => {
                    let _ = tokio::time::timeout(pause, watcher.changed()).await;
                }
                Err(_) => tokio::time::sleep(pause).await,
            }
        }
    }

    /// Forgets the ephemeral `path` and deletes it if this session owns it; `false` if it was not registered.
    pub(crate) async fn unregister_ephemeral(&self, path: &str) -> Result<bool, ClusterError> {
        let shared = self.shared();
        let (client, _) = self.live("remove an ephemeral node").await?;
        let mut registry = shared.ephemerals.lock().await;
        let known = registry.remove(path).is_some();
        let stat = match client.check_stat(path).await {
            Ok(stat) => stat,
            Err(e) => return Err(shared.zk("check", path, e)),
        };
        if let Some(stat) = stat
            && stat.ephemeral_owner == client.session_id().0
        {
            match client.delete(path, Some(stat.version)).await {
                Ok(()) | Err(Zk::NoNode) => {}
                Err(e) => return Err(shared.zk("delete", path, e)),
            }
        }
        Ok(known)
    }
}
