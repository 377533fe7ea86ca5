//! The errors of this crate.

use std::time::Duration;

/// What can go wrong talking to the cluster state in ZooKeeper.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No session could be established before the deadline.
    #[error(
        "cannot connect to ZooKeeper at {servers} within {waited:?}: {source}; check that ZooKeeper is running and \
         that the connect string is right"
    )]
    Connect {
        /// The connect string.
        servers: String,
        /// How long we tried.
        waited: Duration,
        /// The last error.
        source: zookeeper_client::Error,
    },
    /// The session was lost and no new one came up in time.
    #[error(
        "no ZooKeeper session to {servers} for {waited:?} while trying to {action}; the session is being \
         re-established, retry later"
    )]
    NoSession {
        /// The connect string.
        servers: String,
        /// How long we waited.
        waited: Duration,
        /// What we were about to do.
        action: String,
    },
    /// A ZooKeeper operation failed.
    #[error("cannot {op} ZooKeeper node {path}: {source}")]
    ZooKeeper {
        /// The operation, such as "read" or "create".
        op: &'static str,
        /// The full path, chroot included.
        path: String,
        /// The client's error.
        source: zookeeper_client::Error,
    },
    /// A node holds data that is not the JSON of the expected record.
    #[error(
        "ZooKeeper node {path} holds malformed {what} JSON: {source}; fix or delete the node (zkCli.sh delete {path})"
    )]
    Malformed {
        /// The full path, chroot included.
        path: String,
        /// The record type expected there.
        what: &'static str,
        /// The decoding error.
        source: serde_json::Error,
    },
    /// A record could not be encoded as JSON.
    #[error("cannot encode {what} as JSON for ZooKeeper node {path}: {source}")]
    Encode {
        /// The full path, chroot included.
        path: String,
        /// The record type.
        what: &'static str,
        /// The encoding error.
        source: serde_json::Error,
    },
    /// A node that must be created fresh already exists.
    #[error("ZooKeeper node {path} already exists; pick another name or remove the existing {what} first")]
    AlreadyExists {
        /// The full path, chroot included.
        path: String,
        /// What the node describes.
        what: &'static str,
    },
    /// An ephemeral node this process wants is held by another live session.
    #[error(
        "ZooKeeper node {path} is held by another session ({owner}); another process registered the same {what}, \
         or a previous run's session has not expired yet (wait for the session timeout and retry)"
    )]
    HeldByOther {
        /// The full path, chroot included.
        path: String,
        /// What the node describes.
        what: &'static str,
        /// The owning session id, in hex.
        owner: String,
    },
    /// A compare-and-set update kept losing to other writers.
    #[error("gave up updating ZooKeeper node {path} after {attempts} conflicting concurrent writes; retry later")]
    Contended {
        /// The full path, chroot included.
        path: String,
        /// How many times we tried.
        attempts: u32,
    },
    /// A name used in a path is empty or contains a character ZooKeeper paths cannot hold.
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        /// What the name is for.
        what: &'static str,
        /// The name.
        name: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// The chroot is not an absolute ZooKeeper path.
    #[error("invalid ZooKeeper chroot {chroot:?}: {reason}")]
    InvalidChroot {
        /// The chroot.
        chroot: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// [`crate::ClusterState::close`] was called, or every handle was dropped.
    #[error("the cluster state connection is closed; connect again")]
    Closed,
    /// The background task behind a watch or an election ended.
    #[error("the {what} task stopped because the cluster state connection closed")]
    TaskStopped {
        /// Which task.
        what: &'static str,
    },
}

impl ClusterError {
    /// Whether retrying later may succeed: the session or connection was lost, or writers raced.
    pub fn is_transient(&self) -> bool {
        use zookeeper_client::Error as Zk;
        match self {
            ClusterError::NoSession { .. }
            | ClusterError::Contended { .. }
            | ClusterError::Connect { .. }
            | ClusterError::HeldByOther { .. } => true,
            ClusterError::ZooKeeper { source, .. } => {
                matches!(
                    source,
                    Zk::ConnectionLoss | Zk::SessionExpired | Zk::ClientClosed | Zk::Timeout | Zk::SessionMoved
                )
            }
            _ => false,
        }
    }
}
