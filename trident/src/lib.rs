//! Exactly-once batches for Squall, as Trident gives them to Storm.
//!
//! Built so far: the epoch [`Coordinator`], the rules by which epochs (Trident's transaction
//! ids) are opened, committed in order and replayed. Batch spouts, the stream API and the system
//! task that drives the coordinator are not built yet.

pub mod coordinator;

pub use coordinator::{Coordinator, CoordinatorMeta, Epoch};
