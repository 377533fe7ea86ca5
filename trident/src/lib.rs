//! Exactly-once batches for Squall, as Trident gives them to Storm.
//!
//! A [`TridentTopology`] describes streams of batches: a [`BatchSpout`] emits each epoch's
//! tuples, per-tuple operations run where the spout runs, and `group_by(…)`
//! `.persistent_aggregate(…)` folds each key into a `MapState` once per epoch. It compiles to
//! ordinary spouts and bolts: a master coordinator spout (`$coordinator`) opens epochs and
//! commits them in order (the [`Coordinator`]'s rules), learning from the acker that an epoch's
//! batch or commit tree completed or failed; every node tells each downstream task how many
//! tuples of an epoch it sent it, so a task commits only a batch it has whole.
//!
//! The coordinator keeps its [`CoordinatorMeta`] in the topology's store (ZooKeeper on a
//! cluster, the `LocalCluster`'s memory locally): restarted, or resubmitted under the same name,
//! it resumes after the last committed epoch.
//!
//! Streams merge and join within a batch ([`TridentTopology::merge`],
//! [`TridentTopology::join`]), repartition, aggregate per batch (whole or grouped) with
//! combiners, reducers or general aggregators, read a map state (`state_query`) and write one
//! (`persistent_aggregate`, `partition_persist`) or a [`EpochSink`].

pub mod aggregate;
pub mod batch;
pub mod coordinator;
mod join;
mod master;
mod nodes;
mod ops;
mod processor;
pub mod sink;
mod stream;

pub use aggregate::{Aggregate, Aggregator, CombinerAggregator, ReducerAggregator};
pub use batch::{BatchSpout, FixedBatchSpout, SpoutKind};
pub use coordinator::{Coordinator, CoordinatorMeta, Epoch};
pub use join::JoinType;
pub use master::{COORDINATOR_COMPONENT, COORDINATOR_KEY};
pub use nodes::StateSpec;
pub use sink::EpochSink;
pub use stream::{GroupedStream, Stream, TridentError, TridentTopology};
