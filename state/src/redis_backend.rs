//! State in Redis: `MGET` and `MSET` over one multiplexed connection, reopened after an error.

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

use crate::{Backend, StateError};

/// A Redis server (`redis://host:port[/db]`). Keys are prefixed with `squall:`.
pub struct RedisBackend {
    client: redis::Client,
    url: String,
    connection: Mutex<Option<MultiplexedConnection>>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend").field("url", &self.url).finish_non_exhaustive()
    }
}

/// Prefix of every key this backend writes.
const PREFIX: &[u8] = b"squall:";

impl RedisBackend {
    /// A backend for the server at `url`; it connects on first use, so a server that is down now
    /// only fails the calls made while it is.
    pub fn new(url: &str) -> Result<Self, StateError> {
        let client = redis::Client::open(url)
            .map_err(|e| StateError::unavailable(url, format!("not a Redis URL ({e}); use redis://host:port")))?;
        Ok(RedisBackend { client, url: url.to_owned(), connection: Mutex::new(None) })
    }

    async fn connection(&self) -> Result<MultiplexedConnection, StateError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let connection =
            self.client.get_multiplexed_async_connection().await.map_err(|e| StateError::unavailable(&self.url, e))?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Forgets the connection after an error, so the next call connects again.
    async fn reset(&self) {
        *self.connection.lock().await = None;
    }

    fn key(key: &[u8]) -> Vec<u8> {
        [PREFIX, key].concat()
    }
}

#[async_trait]
impl Backend for RedisBackend {
    async fn multi_get(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut connection = self.connection().await?;
        let mut cmd = redis::cmd("MGET");
        for key in keys {
            cmd.arg(Self::key(key));
        }
        match cmd.query_async::<Vec<Option<Vec<u8>>>>(&mut connection).await {
            Ok(values) => Ok(values),
            Err(e) => {
                self.reset().await;
                Err(StateError::unavailable(&self.url, e))
            }
        }
    }

    async fn multi_put(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StateError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut connection = self.connection().await?;
        let mut cmd = redis::cmd("MSET");
        for (k, v) in entries {
            cmd.arg(Self::key(k)).arg(v.as_slice());
        }
        match cmd.query_async::<()>(&mut connection).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.reset().await;
                Err(StateError::unavailable(&self.url, e))
            }
        }
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}
