//! Watches as `tokio::sync::watch` receivers, kept armed across events and session replacements.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, warn};
use zookeeper_client::{Client, Error as Zk, OneshotWatcher};

use crate::backoff::Backoff;
use crate::state::{Shared, shut_down};
use crate::{Assignment, ClusterError, ClusterState, SupervisorInfo, TopologyRecord, paths};

/// What a watch task follows.
#[derive(Clone, Debug)]
enum Target {
    /// The sorted child names of a node (empty while it does not exist).
    Children(String),
    /// The data of a node (`None` while it does not exist).
    Data(String),
    /// Every child of a node with its data.
    Dir(String),
}

/// One reading of a [`Target`].
enum Raw {
    Children(Vec<String>),
    Data(Option<Vec<u8>>),
    Dir(BTreeMap<String, Vec<u8>>),
}

impl ClusterState {
    /// The sorted child names of `path`, updated on every change (empty while `path` does not exist).
    pub async fn subscribe_children(&self, path: &str) -> Result<watch::Receiver<Vec<String>>, ClusterError> {
        self.subscribe(Target::Children(path.to_owned()), |raw| match raw {
            Raw::Children(children) => children,
            _ => Vec::new(),
        })
        .await
    }

    /// The raw data of `path`, updated on every change (`None` while it does not exist).
    pub async fn subscribe_data(&self, path: &str) -> Result<watch::Receiver<Option<Vec<u8>>>, ClusterError> {
        self.subscribe(Target::Data(path.to_owned()), |raw| match raw {
            Raw::Data(data) => data,
            _ => None,
        })
        .await
    }

    /// Every assignment by topology name, updated when one is added, changed or removed.
    pub async fn watch_assignments(&self) -> Result<watch::Receiver<BTreeMap<String, Assignment>>, ClusterError> {
        self.subscribe_dir(paths::ASSIGNMENTS, "assignment").await
    }

    /// The assignment of topology `name`, updated on every change.
    pub async fn watch_assignment(&self, name: &str) -> Result<watch::Receiver<Option<Assignment>>, ClusterError> {
        let path = paths::assignment(name)?;
        let shared = self.shared().clone();
        let node = path.clone();
        self.subscribe(Target::Data(path), move |raw| match raw {
            Raw::Data(Some(data)) => decode_or_log(&shared, &node, "assignment", &data),
            _ => None,
        })
        .await
    }

    /// Every live supervisor by id, updated when one joins, leaves or rewrites its info.
    pub async fn watch_supervisors(&self) -> Result<watch::Receiver<BTreeMap<String, SupervisorInfo>>, ClusterError> {
        self.subscribe_dir(paths::SUPERVISORS, "supervisor info").await
    }

    /// Every topology record by name, updated on every change.
    pub async fn watch_topologies(&self) -> Result<watch::Receiver<BTreeMap<String, TopologyRecord>>, ClusterError> {
        self.subscribe_dir(paths::TOPOLOGIES, "topology record").await
    }

    /// Every child of `dir` decoded; malformed children are logged and left out.
    async fn subscribe_dir<T>(
        &self,
        dir: &'static str,
        what: &'static str,
    ) -> Result<watch::Receiver<BTreeMap<String, T>>, ClusterError>
    where
        T: DeserializeOwned + PartialEq + Send + Sync + 'static,
    {
        let shared = self.shared().clone();
        self.subscribe(Target::Dir(dir.to_owned()), move |raw| {
            let Raw::Dir(children) = raw else { return BTreeMap::new() };
            children
                .into_iter()
                .filter_map(|(name, data)| {
                    let value = decode_or_log(&shared, &format!("{dir}/{name}"), what, &data)?;
                    Some((name, value))
                })
                .collect()
        })
        .await
    }

    /// Spawns the task that follows `target`, and waits for its first reading.
    async fn subscribe<T, F>(&self, target: Target, convert: F) -> Result<watch::Receiver<T>, ClusterError>
    where
        T: Default + PartialEq + Send + Sync + 'static,
        F: Fn(Raw) -> T + Send + 'static,
    {
        let shared = self.shared().clone();
        let path = target.path().to_owned();
        if !path.starts_with('/') || (path.len() > 1 && path.ends_with('/')) {
            return Err(ClusterError::InvalidName {
                what: "watched path",
                name: path,
                reason: "it must start with `/` and not end with `/`, relative to the chroot",
            });
        }
        let (tx, mut rx) = watch::channel(T::default());
        let (first_tx, first) = oneshot::channel();
        let wait = shared.op_wait();
        shared.spawn(follow(shared.clone(), target, convert, tx, first_tx));
        match tokio::time::timeout(wait, first).await {
            Ok(Ok(Ok(()))) => {
                rx.borrow_and_update();
                Ok(rx)
            }
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(ClusterError::TaskStopped { what: "watch" }),
            Err(_) => Err(ClusterError::NoSession {
                servers: shared.servers.clone(),
                waited: wait,
                action: format!("watch {}", shared.full_path(&path)),
            }),
        }
    }
}

impl Target {
    fn path(&self) -> &str {
        match self {
            Target::Children(path) | Target::Data(path) | Target::Dir(path) => path,
        }
    }
}

fn decode_or_log<T: DeserializeOwned>(shared: &Shared, path: &str, what: &'static str, data: &[u8]) -> Option<T> {
    match serde_json::from_slice(data) {
        Ok(value) => Some(value),
        Err(e) => {
            error!(path = %shared.full_path(path), what, error = %e, "skipping malformed ZooKeeper node");
            None
        }
    }
}

/// Reads `target`, publishes it, waits for a watch event or a new session, and again, until the
/// receiver is dropped or the state is closed.
async fn follow<T, F>(
    shared: Arc<Shared>,
    target: Target,
    convert: F,
    tx: watch::Sender<T>,
    first: oneshot::Sender<Result<(), ClusterError>>,
) where
    T: PartialEq + Send + Sync + 'static,
    F: Fn(Raw) -> T + Send + 'static,
{
    let mut shutdown = shared.shutdown.subscribe();
    let mut sessions = shared.current.subscribe();
    let mut backoff = Backoff::standard();
    let mut first = Some(first);
    loop {
        let client = tokio::select! {
            live = shared.live_client(None, "watch") => match live {
                Ok((client, _)) => client,
                Err(_) => return,
            },
            _ = tx.closed() => return,
            _ = shut_down(&mut shutdown) => return,
        };
        sessions.borrow_and_update();
        let reading = read(&client, &target).await;
        drop(client);
        let (raw, watchers) = match reading {
            Ok(reading) => reading,
            Err(e) => {
                let error = shared.zk("watch", target.path(), e);
                if !error.is_transient()
                    && let Some(first) = first.take()
                {
                    let _ = first.send(Err(error));
                    return;
                }
                warn!(path = %shared.full_path(target.path()), %error, "cannot read watched ZooKeeper node, retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => continue,
                    _ = tx.closed() => return,
                    _ = shut_down(&mut shutdown) => return,
                }
            }
        };
        backoff.reset();
        let value = convert(raw);
        if let Some(first) = first.take() {
            tx.send_replace(value);
            let _ = first.send(Ok(()));
        } else {
            tx.send_if_modified(|old| {
                let changed = *old != value;
                if changed {
                    *old = value;
                }
                changed
            });
        }
        let mut events = JoinSet::new();
        for watcher in watchers {
            events.spawn(watcher.changed());
        }
        tokio::select! {
            Some(event) = events.join_next() => debug!(path = target.path(), event = ?event.ok(), "watch fired"),
            _ = sessions.changed() => debug!(path = target.path(), "new session, re-arming watch"),
            _ = tx.closed() => return,
            _ = shut_down(&mut shutdown) => return,
        }
    }
}

/// Reads `target` and arms one-shot watches on everything read.
async fn read(client: &Client, target: &Target) -> Result<(Raw, Vec<OneshotWatcher>), Zk> {
    // A node may appear between a failed read and the existence watch: then read again.
    for _ in 0..8 {
        match target {
            Target::Children(path) | Target::Dir(path) => match client.get_and_watch_children(path).await {
                Ok((mut children, _, watcher)) => {
                    children.sort();
                    if let Target::Children(_) = target {
                        return Ok((Raw::Children(children), vec![watcher]));
                    }
                    let mut watchers = vec![watcher];
                    let mut dir = BTreeMap::new();
                    for child in children {
                        // A child deleted meanwhile fires the children watch; skip it.
                        match client.get_and_watch_data(&format!("{path}/{child}")).await {
                            Ok((data, _, watcher)) => {
                                watchers.push(watcher);
                                dir.insert(child, data);
                            }
                            Err(Zk::NoNode) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    return Ok((Raw::Dir(dir), watchers));
                }
                Err(Zk::NoNode) => {
                    let (stat, watcher) = client.check_and_watch_stat(path).await?;
                    if stat.is_none() {
                        let raw = match target {
                            Target::Children(_) => Raw::Children(Vec::new()),
                            _ => Raw::Dir(BTreeMap::new()),
                        };
                        return Ok((raw, vec![watcher]));
                    }
                }
                Err(e) => return Err(e),
            },
            Target::Data(path) => match client.get_and_watch_data(path).await {
                Ok((data, _, watcher)) => return Ok((Raw::Data(Some(data)), vec![watcher])),
                Err(Zk::NoNode) => {
                    let (stat, watcher) = client.check_and_watch_stat(path).await?;
                    if stat.is_none() {
                        return Ok((Raw::Data(None), vec![watcher]));
                    }
                }
                Err(e) => return Err(e),
            },
        }
    }
    Err(Zk::RuntimeInconsistent)
}
