//! [`ZooKeeperStore`]: a topology's durable store in ZooKeeper, under
//! `/transactional/<topology name>/<key>`.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use squall_topology::{StoreError, TopologyStore};

use crate::{ClusterError, ClusterState, paths};

/// How long one store call may take. ZooKeeper's client holds a call made while its connection
/// is lost until the connection is back or the session expires; a caller must learn of the outage
/// sooner (the Trident coordinator then says so in its status, and keeps handling acks).
pub const STORE_CALL_LIMIT: Duration = Duration::from_secs(3);

/// The [`TopologyStore`] of one topology name in the cluster's ZooKeeper. Values outlive the
/// topology: a kill leaves them, a resubmission under the same name reads them.
#[derive(Debug, Clone)]
pub struct ZooKeeperStore {
    state: ClusterState,
    topology: String,
}

impl ZooKeeperStore {
    /// The store of `topology` in `state`'s ZooKeeper.
    pub fn new(state: ClusterState, topology: &str) -> Self {
        ZooKeeperStore { state, topology: topology.to_owned() }
    }

    fn path(&self, action: &'static str, key: &str) -> Result<String, StoreError> {
        paths::transactional(&self.topology, key).map_err(|e| StoreError {
            action,
            key: key.to_owned(),
            reason: e.to_string(),
        })
    }
}

/// Runs a store call for at most [`STORE_CALL_LIMIT`].
async fn limited<T>(
    action: &'static str,
    key: &str,
    call: impl Future<Output = Result<T, ClusterError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(STORE_CALL_LIMIT, call).await {
        Ok(result) => result.map_err(|e| StoreError { action, key: key.to_owned(), reason: e.to_string() }),
        Err(_) => Err(StoreError {
            action,
            key: key.to_owned(),
            reason: format!(
                "ZooKeeper did not answer within {STORE_CALL_LIMIT:?}; is it running and reachable? \
                 (a lost connection is re-established in the background)"
            ),
        }),
    }
}

#[async_trait]
impl TopologyStore for ZooKeeperStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path("read", key)?;
        let found = limited("read", key, self.state.read_raw(&path)).await?;
        Ok(found.map(|(data, _)| data))
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let path = self.path("write", key)?;
        limited("write", key, self.state.write_raw(&path, value)).await
    }
}
