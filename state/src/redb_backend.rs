//! State in a `redb` file: durable on one machine, one write transaction per `multi_put`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, TableDefinition};

use crate::{Backend, StateError};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("squall_state");

/// A `redb` database file. Its calls block, so they run on tokio's blocking threads.
#[derive(Clone)]
pub struct RedbBackend {
    db: Arc<Database>,
    path: PathBuf,
}

impl std::fmt::Debug for RedbBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbBackend").field("path", &self.path).finish_non_exhaustive()
    }
}

impl RedbBackend {
    /// Opens the database at `path`, creating it if missing.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StateError> {
        let path = path.as_ref().to_owned();
        let db = Database::create(&path).map_err(|e| StateError::unavailable(format!("redb:{}", path.display()), e))?;
        Ok(RedbBackend { db: Arc::new(db), path })
    }

    fn name(&self) -> String {
        format!("redb:{}", self.path.display())
    }
}

#[async_trait]
impl Backend for RedbBackend {
    async fn multi_get(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        let (db, keys, name) = (self.db.clone(), keys.to_vec(), self.name());
        let read = move || -> Result<Vec<Option<Vec<u8>>>, redb::Error> {
            let txn = db.begin_read()?;
            let table = match txn.open_table(TABLE) {
                Ok(table) => table,
                // Nothing was ever written.
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![None; keys.len()]),
                Err(e) => return Err(e.into()),
            };
            keys.iter().map(|k| Ok(table.get(k.as_slice())?.map(|v| v.value().to_vec()))).collect()
        };
        tokio::task::spawn_blocking(read)
            .await
            .map_err(|e| StateError::unavailable(&name, e))?
            .map_err(|e| StateError::unavailable(&name, e))
    }

    async fn multi_put(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StateError> {
        let (db, entries, name) = (self.db.clone(), entries.to_vec(), self.name());
        let write = move || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(TABLE)?;
                for (k, v) in &entries {
                    table.insert(k.as_slice(), v.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        };
        tokio::task::spawn_blocking(write)
            .await
            .map_err(|e| StateError::unavailable(&name, e))?
            .map_err(|e| StateError::unavailable(&name, e))
    }

    fn describe(&self) -> String {
        self.name()
    }
}
