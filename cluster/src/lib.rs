//! The ZooKeeper schema shared by Nimbus, supervisors and workers.
//!
//! - [`paths`] names every node, relative to a chroot (default [`paths::DEFAULT_CHROOT`]) so several
//!   clusters can share one ZooKeeper.
//! - [`records`] holds the serde types stored there, as JSON so `zkCli.sh get` can read them.
//! - [`ClusterState`] is the typed client: reads, writes, compare-and-set updates, ephemeral
//!   registrations that survive session loss, and watches that re-arm themselves.
//! - [`LeaderElection`] elects one Nimbus with ephemeral sequential nodes.
//! - [`testing`] starts a real ZooKeeper server for tests.

mod backoff;
mod election;
mod error;
pub mod liveness;
mod nodes;
pub mod paths;
pub mod records;
mod session;
mod state;
mod store;
pub mod testing;
mod topology_store;
mod watches;

pub use election::LeaderElection;
pub use error::ClusterError;
pub use liveness::Liveness;
pub use records::{
    Assignment, ErrorRecord, LogFilter, NimbusInfo, SupervisorInfo, TopologyRecord, TopologyStatus, WorkerAssignment,
    WorkerHeartbeat, WorkerMetricsReport,
};
pub use state::{ClusterState, DEFAULT_CONNECT_DEADLINE};
pub use topology_store::{STORE_CALL_LIMIT, ZooKeeperStore};
/// The ZooKeeper client this crate is built on, for [`ClusterState::client`].
pub use zookeeper_client;
