//! Where state lives: byte keys to byte values, read and written in batches.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::StateError;

/// A key-value store for [`crate::MapState`]: batches of byte keys and values.
#[async_trait]
pub trait Backend: Send + Sync {
    /// The values of `keys`, in order (`None` where absent).
    async fn multi_get(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError>;

    /// Stores every entry, all or nothing where the backend can (redb: one transaction; Redis:
    /// one `MSET`).
    async fn multi_put(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StateError>;

    /// Names the backend in errors and logs: a path or an address.
    fn describe(&self) -> String;
}

/// State in this process's memory: for tests and local runs.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    entries: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        MemoryBackend::default()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Vec<u8>>> {
        // A panic while holding the lock cannot leave a half-written map: inserts are single calls.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn multi_get(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        let entries = self.entries();
        Ok(keys.iter().map(|k| entries.get(k).cloned()).collect())
    }

    async fn multi_put(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StateError> {
        let mut map = self.entries();
        for (k, v) in entries {
            map.insert(k.clone(), v.clone());
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}
