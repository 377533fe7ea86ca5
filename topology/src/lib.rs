//! The Squall user API: spouts, bolts, tuples, groupings, the topology builder and config.
//!
//! This crate knows nothing of threads, sockets or ZooKeeper: it describes a topology and gives
//! the runtime (`squall-worker`) type-erased, batch-at-a-time handles on the user's components.

pub mod ack;
pub mod builder;
pub mod chain;
pub mod collector;
pub mod component;
pub mod config;
pub mod context;
pub mod driver;
pub mod grouping;
pub mod metrics;
pub mod query;
pub mod store;
pub mod tuple;
pub mod value;

pub use ack::{ACKER_COMPONENT, AckerMessage, Control, PendingTrees, ReplayQueue, SpoutNotice};
pub use builder::{
    BoltDeclarer, BuildError, ComponentDef, ComponentKind, ComponentSpec, Factory, Handle, InputSpec, KeyFields,
    Source, SpoutDeclarer, Subscription, Topology, TopologyBuilder, TopologySpec, TypedSource,
};
pub use chain::{ChainLink, ChainPlan};
pub use collector::{Anchored, BoltCollector, EmitError, Routed, SpoutCollector, Transfer, TupleRef};
pub use component::{
    Bolt, ComponentError, DirectStream, NoOutput, OutputDeclarer, Outputs, Spout, Stream, StreamDecl, StreamIdx,
};
pub use config::{ComponentConfig, Config, ConfigError, ConfigValue};
pub use context::{TaskLayout, TaskStatus, TopologyContext, executor_ranges};
pub use grouping::{CustomGrouping, Grouping, GroupingSpec};
pub use metrics::{Counter, Gauge, Histogram, HistogramSnapshot, TaskMetrics, UserMetrics};
pub use query::QueryableState;
pub use store::{MemoryStore, StoreError, TopologyStore};
pub use tuple::{
    DEFAULT_STREAM, FieldKey, MessageId, SYSTEM_COMPONENT, StreamMeta, TICK_STREAM, TaskId, Tuple, TupleError,
    TypedTuple,
};
pub use value::{FromValue, IntoValue, Str, Value, ValueError, ValueMap, ValueTypeError, Values};
