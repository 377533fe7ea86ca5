//! Map state for Squall's exactly-once batches (Trident's `MapState`).
//!
//! A [`MapState`] stores one value per key in a [`Backend`] ([`MemoryBackend`], [`RedbBackend`]
//! for a durable file on one machine, [`RedisBackend`] for a cluster) and updates it once per
//! epoch (Trident's txid) with one of three [`Semantics`]:
//!
//! - [`Semantics::NonTransactional`]: the value alone; a replayed epoch applies twice.
//! - [`Semantics::Transactional`]: `(txid, value)`; an update whose epoch is already stored is
//!   skipped, which is exactly-once when a replayed epoch always holds the same tuples.
//! - [`Semantics::Opaque`]: `(txid, current, previous)`; a replayed epoch is applied on top of
//!   `previous`, replacing its earlier attempt, which is exactly-once even when a replay holds
//!   different tuples.
//!
//! Each key carries its own epoch, so no multi-key transaction is needed (Redis Cluster works).

mod backend;
mod error;
mod map;
mod redb_backend;
mod redis_backend;
pub mod testing;

pub use backend::{Backend, MemoryBackend};
pub use error::StateError;
pub use map::{MapState, OpaqueValue, Semantics, TransactionalValue};
pub use redb_backend::RedbBackend;
pub use redis_backend::RedisBackend;
