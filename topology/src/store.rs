//! [`TopologyStore`]: small values a topology keeps across restarts of its tasks and workers,
//! and across resubmissions under the same name (Trident's coordinator keeps its epochs there,
//! as Storm's keeps them under `/transactional` in ZooKeeper).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A key-value store of one topology name, shared by all its tasks: in ZooKeeper on a cluster,
/// in the `LocalCluster`'s memory in local mode. Meant for metadata (a few kilobytes per key),
/// not for tuples.
#[async_trait::async_trait]
pub trait TopologyStore: Send + Sync + std::fmt::Debug + 'static {
    /// The value stored under `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores `value` under `key`, replacing what was there. Once it returns `Ok`, a later
    /// `get` from any task of the topology (after any restart) sees it.
    async fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
}

/// A store that cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[error("topology store: cannot {action} `{key}`: {reason}")]
pub struct StoreError {
    /// What was tried: `read`, `write`.
    pub action: &'static str,
    /// The key.
    pub key: String,
    /// Why it failed, and what to do.
    pub reason: String,
}

/// A [`TopologyStore`] in memory: what `LocalCluster` gives each topology name, kept for as
/// long as the cluster lives.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    values: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u8>>> {
        // Every change is one insert: a poisoned map is still consistent.
        self.values.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl TopologyStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().get(key).cloned())
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.lock().insert(key.to_owned(), value.to_vec());
        Ok(())
    }
}
