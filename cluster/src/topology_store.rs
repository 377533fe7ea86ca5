//! [`ZooKeeperStore`]: a topology's durable store in ZooKeeper, under
//! `/transactional/<topology name>/<key>`.

use async_trait::async_trait;
use squall_topology::{StoreError, TopologyStore};

use crate::{ClusterState, paths};

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

#[async_trait]
impl TopologyStore for ZooKeeperStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path("read", key)?;
        match self.state.read_raw(&path).await {
            Ok(found) => Ok(found.map(|(data, _)| data)),
            Err(e) => Err(StoreError { action: "read", key: key.to_owned(), reason: e.to_string() }),
        }
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let path = self.path("write", key)?;
        self.state.write_raw(&path, value).await.map_err(|e| StoreError {
            action: "write",
            key: key.to_owned(),
            reason: e.to_string(),
        })
    }
}
