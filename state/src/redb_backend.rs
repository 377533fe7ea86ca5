//! State in a `redb` file: durable on one machine, one write transaction per `multi_put`.
//!
//! redb lets one process open a file at a time (it locks it), while the tasks of a topology run
//! in several worker processes, and `squall query` is one more. So the backend holds the file
//! only for the length of one call: each `multi_get` and `multi_put` opens the database, runs
//! its transaction and closes it again, waiting (up to [`RedbBackend::with_lock_wait`], 2 s by
//! default) while another process, or another call of this one, has it. A call that waited in
//! vain fails with [`StateError::Unavailable`] naming the file and saying another process holds
//! it: the epoch fails and is replayed, nothing crashes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, TryLockError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{Database, DatabaseError, ReadableDatabase, TableDefinition};

use crate::{Backend, StateError};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("squall_state");

/// How long a call waits for the file by default.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// One lock per file in this process: calls of one process take turns before they open it (two
/// opens in one process conflict as two processes do).
static IN_PROCESS: LazyLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = LazyLock::new(Default::default);

/// A `redb` database file, opened for each call (see the module docs). Its calls block, so they
/// run on tokio's blocking threads.
#[derive(Clone)]
pub struct RedbBackend {
    path: PathBuf,
    turn: Arc<Mutex<()>>,
    lock_wait: Duration,
}

impl std::fmt::Debug for RedbBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbBackend").field("path", &self.path).field("lock_wait", &self.lock_wait).finish()
    }
}

impl RedbBackend {
    /// The database at `path`, created if missing. It is opened once to check it (a missing
    /// folder, or a file that is not a redb database, is an error now), then closed; a file
    /// another process holds is taken as it is.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StateError> {
        let path = path.as_ref().to_owned();
        // The key of the in-process lock: one file under two spellings is still one file.
        let key = match (path.parent(), path.file_name()) {
            (Some(dir), Some(file)) if !dir.as_os_str().is_empty() => {
                dir.canonicalize().map(|d| d.join(file)).unwrap_or_else(|_| path.clone())
            }
            _ => std::env::current_dir().map(|d| d.join(&path)).unwrap_or_else(|_| path.clone()),
        };
        let turn = {
            let mut files = IN_PROCESS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            files.entry(key).or_default().clone()
        };
        let backend = RedbBackend { path, turn, lock_wait: LOCK_WAIT };
        match backend.try_open() {
            Ok(Some(db)) => drop(db),
            // Held: by this process's other calls or by another process; it is a database then.
            Ok(None) => {}
            Err(e) => return Err(StateError::unavailable(backend.name(), e)),
        }
        Ok(backend)
    }

    /// Waits up to `wait` for the file when another process has it, before a call fails.
    pub fn with_lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    fn name(&self) -> String {
        format!("redb:{}", self.path.display())
    }

    /// Opens the database if neither another call of this process nor another process has it.
    fn try_open(&self) -> Result<Option<Database>, DatabaseError> {
        let _turn = match self.turn.try_lock() {
            Ok(turn) => turn,
            Err(TryLockError::WouldBlock) => return Ok(None),
            // A call that panicked left nothing half-done: its database closed as it unwound.
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        };
        match Database::create(&self.path) {
            Ok(db) => Ok(Some(db)),
            Err(DatabaseError::DatabaseAlreadyOpen) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Runs `work` on the opened database, on a blocking thread, holding this process's turn
    /// so no other call of it opens the file meanwhile; waits for the file up to `lock_wait`.
    async fn with_database<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, redb::Error> + Send + 'static,
    ) -> Result<T, StateError> {
        let (path, turn, wait, name) = (self.path.clone(), self.turn.clone(), self.lock_wait, self.name());
        let call = move || -> Result<T, StateError> {
            let deadline = Instant::now() + wait;
            let mut pause = Duration::from_millis(1);
            loop {
                let held_here = {
                    let my_turn = match turn.try_lock() {
                        Ok(guard) => Some(guard),
                        Err(TryLockError::WouldBlock) => None,
                        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
                    };
                    if my_turn.is_some() {
                        match Database::create(&path) {
                            // The database closes when `db` drops, before the turn is given up.
                            Ok(db) => return work(&db).map_err(|e| StateError::unavailable(&name, e)),
                            Err(DatabaseError::DatabaseAlreadyOpen) => false,
                            Err(e) => return Err(StateError::unavailable(&name, e)),
                        }
                    } else {
                        true
                    }
                };
                let now = Instant::now();
                if now >= deadline {
                    let detail = if held_here {
                        format!("other calls of this process kept the file busy for {wait:?}")
                    } else {
                        format!(
                            "another process holds the file open (redb lets one process open it at a time; \
                             waited {wait:?})"
                        )
                    };
                    return Err(StateError::Unavailable { backend: name, detail });
                }
                // Short pauses first, then up to 20 ms, uneven so that waiting processes do not
                // keep colliding.
                let jitter = Duration::from_micros(fastrand::u64(..=pause.as_micros().try_into().unwrap_or(u64::MAX)));
                std::thread::sleep((pause + jitter).min(deadline - now));
                pause = (pause * 2).min(Duration::from_millis(20));
            }
        };
        tokio::task::spawn_blocking(call).await.map_err(|e| StateError::unavailable(self.name(), e))?
    }
}

#[async_trait]
impl Backend for RedbBackend {
    async fn multi_get(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        let keys = keys.to_vec();
        self.with_database(move |db| {
            let txn = db.begin_read()?;
            let table = match txn.open_table(TABLE) {
                Ok(table) => table,
                // Nothing was ever written.
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![None; keys.len()]),
                Err(e) => return Err(e.into()),
            };
            keys.iter().map(|k| Ok(table.get(k.as_slice())?.map(|v| v.value().to_vec()))).collect()
        })
        .await
    }

    async fn multi_put(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StateError> {
        let entries = entries.to_vec();
        self.with_database(move |db| {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(TABLE)?;
                for (k, v) in &entries {
                    table.insert(k.as_slice(), v.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }

    fn describe(&self) -> String {
        self.name()
    }
}
