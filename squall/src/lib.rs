//! Squall: Storm-style distributed stream processing in Rust.
//!
//! Declare spouts and bolts as plain Rust types, wire them into a topology with
//! [`TopologyBuilder`], and run it in-process with [`LocalCluster`] — or make the program a
//! topology binary with [`main`], which runs locally by default and prints its spec with
//! `--describe`.

mod app;

pub use app::{AppError, main};
pub use squall_macros::{Bolt, Spout, Tuple};
pub use squall_topology::*;
pub use squall_worker::{
    ComponentMetrics, LocalCluster, LocalClusterError, RunReport, TaskFailure, TopologyMetrics, TopologyStatus,
};

/// What generated code refers to; not a public API.
#[doc(hidden)]
pub use squall_topology as __private;

/// The names most topologies use.
pub mod prelude {
    pub use squall_macros::{Bolt, Spout, Tuple};
    pub use squall_topology::{
        Bolt, BoltCollector, ComponentError, Config, Spout, SpoutCollector, Str, Topology, TopologyBuilder,
        TopologyContext, Tuple, TypedTuple, Value, Values, values,
    };
}
