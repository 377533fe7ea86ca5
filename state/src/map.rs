//! [`MapState`]: typed keys and values over a [`Backend`], updated once per epoch.

use std::hash::Hash;
use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Backend, StateError};

/// How a [`MapState`] makes a replayed epoch safe (Trident's three map states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Semantics {
    /// The value alone: a replayed epoch is applied again.
    NonTransactional,
    /// `(txid, value)`: an update in an epoch already stored for the key is skipped. Exactly-once
    /// with a transactional spout (an epoch always holds the same tuples).
    Transactional,
    /// `(txid, current, previous)`: an update in the stored epoch starts again from `previous`.
    /// Exactly-once with an opaque spout (each tuple in exactly one committed epoch).
    Opaque,
}

/// What a transactional map stores per key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransactionalValue<V> {
    /// The epoch that last wrote the value.
    pub txid: u64,
    /// The value.
    pub value: V,
}

/// What an opaque map stores per key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpaqueValue<V> {
    /// The epoch that last wrote `current`.
    pub txid: u64,
    /// The value after epoch `txid`.
    pub current: V,
    /// The value before epoch `txid` (`None`: the key was new then).
    pub previous: Option<V>,
}

/// A key's stored form, per semantics. Written without a tag (the state's semantics say which
/// form to decode, see `decode`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
enum Stored<V> {
    Plain(V),
    Transactional(TransactionalValue<V>),
    Opaque(OpaqueValue<V>),
}

/// A map from `K` to `V` in a backend, named so that several share one backend, with an LRU
/// cache of stored values in front (Trident's `CachedMap`).
///
/// One task owns each key (the stream is partitioned by key before it reaches the state), so the
/// cache never holds a value another writer changed.
pub struct MapState<K, V> {
    name: String,
    semantics: Semantics,
    backend: Arc<dyn Backend>,
    cache: Option<LruCache<Vec<u8>, Stored<V>>>,
    _keys: PhantomData<fn(K)>,
}

impl<K, V> std::fmt::Debug for MapState<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapState")
            .field("name", &self.name)
            .field("semantics", &self.semantics)
            .field("backend", &self.backend.describe())
            .finish_non_exhaustive()
    }
}

impl<K, V> MapState<K, V>
where
    K: Serialize + Hash + Eq,
    V: Serialize + DeserializeOwned + Clone,
{
    /// The state `name` in `backend`, caching up to `cache_size` keys (0: no cache).
    pub fn new(name: &str, semantics: Semantics, backend: Arc<dyn Backend>, cache_size: usize) -> Self {
        MapState {
            name: name.to_owned(),
            semantics,
            backend,
            cache: NonZeroUsize::new(cache_size).map(LruCache::new),
            _keys: PhantomData,
        }
    }

    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its semantics.
    pub fn semantics(&self) -> Semantics {
        self.semantics
    }

    /// The current values of `keys`, in order.
    pub async fn multi_get(&mut self, keys: &[K]) -> Result<Vec<Option<V>>, StateError> {
        let encoded = self.encode_keys(keys)?;
        let stored = self.load(&encoded).await?;
        Ok(stored.into_iter().map(|s| s.map(current)).collect())
    }

    /// Applies `update` to each key's value in epoch `txid` and returns the new values. `update`
    /// gets the value the epoch builds on: the current one, or for an opaque map replaying its
    /// stored epoch, the one before it; a transactional map skips keys the epoch already wrote
    /// (and returns their stored value).
    pub async fn multi_update(
        &mut self,
        txid: u64,
        keys: &[K],
        mut update: impl FnMut(usize, Option<&V>) -> V,
    ) -> Result<Vec<V>, StateError> {
        let encoded = self.encode_keys(keys)?;
        let stored = self.load(&encoded).await?;
        let mut results = Vec::with_capacity(keys.len());
        let mut writes = Vec::with_capacity(keys.len());
        for (i, (key, old)) in encoded.into_iter().zip(stored).enumerate() {
            let new = match (self.semantics, old) {
                (Semantics::NonTransactional, old) => {
                    let old = old.map(current);
                    Stored::Plain(update(i, old.as_ref()))
                }
                (Semantics::Transactional, Some(Stored::Transactional(t))) if t.txid == txid => {
                    results.push(t.value);
                    continue;
                }
                (Semantics::Transactional, old) => {
                    let old = old.map(current);
                    Stored::Transactional(TransactionalValue { txid, value: update(i, old.as_ref()) })
                }
                (Semantics::Opaque, old) => {
                    let base = match old {
                        Some(Stored::Opaque(o)) if o.txid == txid => o.previous,
                        other => other.map(current),
                    };
                    Stored::Opaque(OpaqueValue { txid, current: update(i, base.as_ref()), previous: base })
                }
            };
            results.push(current(new.clone()));
            writes.push((key, new));
        }
        self.store(writes).await?;
        Ok(results)
    }

    /// Sets `keys` to `values` in epoch `txid` (a transactional map skips keys the epoch already
    /// wrote).
    ///
    /// # Panics
    /// If `values` and `keys` differ in length.
    pub async fn multi_put(&mut self, txid: u64, keys: &[K], values: Vec<V>) -> Result<(), StateError> {
        assert_eq!(keys.len(), values.len(), "multi_put needs one value per key");
        let mut values = values.into_iter().map(Some).collect::<Vec<_>>();
        self.multi_update(txid, keys, |i, _| values[i].take().expect("each value is used once")).await.map(drop)
    }

    fn encode_keys(&self, keys: &[K]) -> Result<Vec<Vec<u8>>, StateError> {
        keys.iter()
            .map(|k| {
                let mut bytes = Vec::with_capacity(self.name.len() + 16);
                bytes.extend_from_slice(self.name.as_bytes());
                bytes.push(0);
                rmp_serde::encode::write(&mut bytes, k).map_err(|e| self.encode_error(e))?;
                Ok(bytes)
            })
            .collect()
    }

    fn encode_error(&self, e: impl std::fmt::Display) -> StateError {
        StateError::Encode { state: self.name.clone(), detail: e.to_string() }
    }

    /// The stored values of `keys`, from the cache where it has them.
    async fn load(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Stored<V>>>, StateError> {
        let mut found: Vec<Option<Stored<V>>> = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            match self.cache.as_mut().and_then(|c| c.get(key)) {
                Some(stored) => found.push(Some(stored.clone())),
                None => {
                    found.push(None);
                    missing.push(i);
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let wanted: Vec<Vec<u8>> = missing.iter().map(|&i| keys[i].clone()).collect();
        let bytes = self.backend.multi_get(&wanted).await?;
        for (&i, bytes) in missing.iter().zip(bytes) {
            let Some(bytes) = bytes else { continue };
            let stored = self.decode(&bytes)?;
            if let Some(cache) = self.cache.as_mut() {
                cache.put(keys[i].clone(), stored.clone());
            }
            found[i] = Some(stored);
        }
        Ok(found)
    }

    /// Writes `entries` to the backend, then to the cache (only once the backend has them).
    async fn store(&mut self, entries: Vec<(Vec<u8>, Stored<V>)>) -> Result<(), StateError> {
        if entries.is_empty() {
            return Ok(());
        }
        let bytes = entries
            .iter()
            .map(|(k, v)| Ok((k.clone(), rmp_serde::to_vec(v).map_err(|e| self.encode_error(e))?)))
            .collect::<Result<Vec<_>, StateError>>()?;
        if let Err(e) = self.backend.multi_put(&bytes).await {
            // The backend may have applied part of it: what the cache holds is no longer known.
            if let Some(cache) = self.cache.as_mut() {
                cache.clear();
            }
            return Err(e);
        }
        if let Some(cache) = self.cache.as_mut() {
            for (k, v) in entries {
                cache.put(k, v);
            }
        }
        Ok(())
    }

    fn decode(&self, bytes: &[u8]) -> Result<Stored<V>, StateError> {
        let corrupt = |detail: String| StateError::Corrupt { state: self.name.clone(), detail };
        Ok(match self.semantics {
            Semantics::NonTransactional => {
                Stored::Plain(rmp_serde::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?)
            }
            Semantics::Transactional => {
                Stored::Transactional(rmp_serde::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?)
            }
            Semantics::Opaque => Stored::Opaque(rmp_serde::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?),
        })
    }
}

/// The value a stored form stands for now.
fn current<V>(stored: Stored<V>) -> V {
    match stored {
        Stored::Plain(v) => v,
        Stored::Transactional(t) => t.value,
        Stored::Opaque(o) => o.current,
    }
}
