//! [`ClusterState`]: the connection, its shared state, and generic JSON node operations.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use zookeeper_client::{Acls, Client, CreateMode, CreateOptions, Error as Zk, SessionState};

use crate::{ClusterError, paths, session};

/// Options for persistent nodes.
pub(crate) const PERSISTENT: CreateOptions<'static> = CreateMode::Persistent.with_acls(Acls::anyone_all());
/// Options for ephemeral nodes.
pub(crate) const EPHEMERAL: CreateOptions<'static> = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
/// How long [`ClusterState::connect`] keeps trying.
pub const DEFAULT_CONNECT_DEADLINE: Duration = Duration::from_secs(30);
/// How long [`ClusterState::close`] waits for ZooKeeper to close the session.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// The current session, replaced after each session loss.
#[derive(Clone, Default)]
pub(crate) struct Current {
    /// The chrooted client of the live session; `None` once closed.
    pub(crate) client: Option<Client>,
    /// Bumped each time a new session replaces an expired one.
    pub(crate) epoch: u64,
    /// Set by close.
    pub(crate) closed: bool,
}

/// What the background tasks share with the handles.
pub(crate) struct Shared {
    pub(crate) servers: String,
    pub(crate) chroot: String,
    pub(crate) session_timeout: Duration,
    pub(crate) current: watch::Sender<Current>,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Ephemeral nodes this process registered: path → data. Locked across restore and register.
    pub(crate) ephemerals: tokio::sync::Mutex<BTreeMap<String, Vec<u8>>>,
    /// Ids of this process's earlier, expired sessions: their leftover ephemerals are ours to replace.
    pub(crate) past_sessions: Mutex<Vec<i64>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    /// `path` with the chroot in front, as zkCli shows it.
    pub(crate) fn full_path(&self, path: &str) -> String {
        format!("{}{path}", self.chroot)
    }

    /// A ZooKeeper error on `path`.
    pub(crate) fn zk(&self, op: &'static str, path: &str, source: Zk) -> ClusterError {
        ClusterError::ZooKeeper { op, path: self.full_path(path), source }
    }

    /// How long a foreground operation waits for a session after a loss.
    pub(crate) fn op_wait(&self) -> Duration {
        (self.session_timeout * 2).max(Duration::from_secs(2))
    }

    /// The live client and its epoch, waiting up to `wait` (forever if `None`) while a lost session is replaced.
    pub(crate) async fn live_client(
        &self,
        wait: Option<Duration>,
        action: &str,
    ) -> Result<(Client, u64), ClusterError> {
        let mut current = self.current.subscribe();
        let live = async {
            loop {
                {
                    let now = current.borrow_and_update();
                    if now.closed {
                        return Err(ClusterError::Closed);
                    }
                    if let Some(client) = &now.client
                        && !client.state().is_terminated()
                    {
                        return Ok((client.clone(), now.epoch));
                    }
                }
                if current.changed().await.is_err() {
                    return Err(ClusterError::Closed);
                }
            }
        };
        let Some(wait) = wait else { return live.await };
        match tokio::time::timeout(wait, live).await {
            Ok(result) => result,
            Err(_) => {
                Err(ClusterError::NoSession { servers: self.servers.clone(), waited: wait, action: action.to_owned() })
            }
        }
    }

    /// Spawns a background task that [`ClusterState::close`] waits for.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// Resolves once `shutdown` is set (or its sender is gone).
pub(crate) async fn shut_down(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stopped| *stopped).await;
}

struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}

/// A typed view of Squall's ZooKeeper state, with one session that is replaced when it expires.
///
/// Cheap to clone; every clone shares the session. Dropping the last clone (or [`ClusterState::close`])
/// ends the session, which removes this process's ephemeral nodes.
#[derive(Clone)]
pub struct ClusterState {
    handle: Arc<Handle>,
}

impl fmt::Debug for ClusterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.handle.shared;
        f.debug_struct("ClusterState")
            .field("servers", &shared.servers)
            .field("chroot", &shared.chroot)
            .field("epoch", &shared.current.borrow().epoch)
            .finish()
    }
}

impl ClusterState {
    /// Connects to `servers` (`host:port[,host:port…]`, no chroot) under `chroot` (such as
    /// [`paths::DEFAULT_CHROOT`]), retrying for up to [`DEFAULT_CONNECT_DEADLINE`], and creates the base paths.
    pub async fn connect(servers: &str, chroot: &str, session_timeout: Duration) -> Result<ClusterState, ClusterError> {
        Self::connect_within(servers, chroot, session_timeout, DEFAULT_CONNECT_DEADLINE).await
    }

    /// [`ClusterState::connect`], giving up after `deadline`.
    pub async fn connect_within(
        servers: &str,
        chroot: &str,
        session_timeout: Duration,
        deadline: Duration,
    ) -> Result<ClusterState, ClusterError> {
        let chroot = paths::normalize_chroot(chroot)?;
        if servers.contains('/') {
            return Err(ClusterError::InvalidChroot {
                chroot: servers.to_owned(),
                reason: "give the chroot as its own argument, not in the connect string",
            });
        }
        let client = session::open_until(servers, &chroot, session_timeout, Instant::now() + deadline).await?;
        let state_watcher = client.state_watcher();
        let current = Current { client: Some(client), epoch: 0, closed: false };
        let shared = Arc::new(Shared {
            servers: servers.to_owned(),
            chroot,
            session_timeout,
            current: watch::Sender::new(current),
            shutdown: watch::Sender::new(false),
            ephemerals: tokio::sync::Mutex::new(BTreeMap::new()),
            past_sessions: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
        });
        shared.spawn(session::monitor(shared.clone(), state_watcher));
        Ok(ClusterState { handle: Arc::new(Handle { shared }) })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// The connect string.
    pub fn servers(&self) -> &str {
        &self.shared().servers
    }

    /// The chroot every path is relative to (`""` for the ZooKeeper root).
    pub fn chroot(&self) -> &str {
        &self.shared().chroot
    }

    /// The requested session timeout.
    pub fn session_timeout(&self) -> Duration {
        self.shared().session_timeout
    }

    /// How many times an expired session has been replaced so far.
    pub fn session_epoch(&self) -> u64 {
        self.shared().current.borrow().epoch
    }

    /// The current session's id, if connected.
    pub fn session_id(&self) -> Option<i64> {
        self.shared().current.borrow().client.as_ref().map(|c| c.session_id().0)
    }

    /// Whether the session is connected to a ZooKeeper server, waiting up to `wait` for a lost
    /// connection to come back (or a new session to replace an expired one). Lets a caller fail
    /// fast with "cannot reach ZooKeeper" instead of waiting out an operation.
    pub async fn wait_connected(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut current = self.shared().current.subscribe();
        loop {
            let (client, closed) = {
                let now = current.borrow_and_update();
                (now.client.clone(), now.closed)
            };
            if closed {
                return false;
            }
            let connected = async {
                let Some(client) = client else { return std::future::pending::<()>().await };
                let mut watcher = client.state_watcher();
                let mut state = watcher.peek_state();
                loop {
                    if matches!(state, SessionState::SyncConnected | SessionState::ConnectedReadOnly) {
                        return;
                    }
                    if state.is_terminated() {
                        // The session monitor replaces it; `current` changes then.
                        return std::future::pending::<()>().await;
                    }
                    state = watcher.changed().await;
                }
            };
            // Connected, or a new session (or close) to look at again.
            let outcome = tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    () = connected => Some(true),
                    changed = current.changed() => changed.is_ok().then_some(false),
                }
            })
            .await;
            match outcome {
                Ok(Some(true)) => return true,
                Ok(Some(false)) => continue,
                Ok(None) | Err(_) => return false,
            }
        }
    }

    /// The chrooted client of the live session, for operations this crate does not cover.
    ///
    /// Paths are relative to [`ClusterState::chroot`]. Holding a clone keeps that session open
    /// after [`ClusterState::close`]; after a session loss it is dead and a new call returns the new one.
    pub async fn client(&self) -> Result<Client, ClusterError> {
        Ok(self.live("use the client").await?.0)
    }

    /// Ends the session (removing this process's ephemeral nodes) and stops every watch and
    /// election task; waits (up to 3 s) until ZooKeeper has closed the session, unless a clone
    /// of [`ClusterState::client`] still holds it open.
    pub async fn close(&self) {
        let shared = self.shared();
        shared.shutdown.send_replace(true);
        let tasks = std::mem::take(&mut *shared.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task).await.is_err() {
                abort.abort();
            }
        }
        let mut session = shared.current.borrow().client.as_ref().map(Client::state_watcher);
        shared.current.send_modify(|c| {
            c.client = None;
            c.closed = true;
        });
        // Dropping the last client handle makes the client send CloseSession from its own task.
        // Wait until the session is closed, so a process that exits right after this leaves no
        // session (and no ephemeral nodes) behind for its next run to wait out.
        if let Some(session) = &mut session {
            let closed = async {
                while !session.state().is_terminated() {
                    session.changed().await;
                }
            };
            if tokio::time::timeout(CLOSE_WAIT, closed).await.is_err() {
                tracing::warn!(servers = %shared.servers, "the ZooKeeper session did not close in time; its ephemeral nodes stay until it expires");
            }
        }
    }

    pub(crate) async fn live(&self, action: &str) -> Result<(Client, u64), ClusterError> {
        let shared = self.shared();
        shared.live_client(Some(shared.op_wait()), action).await
    }
}
