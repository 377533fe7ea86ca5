//! Squall: Storm-style distributed stream processing in Rust.
//!
//! Declare spouts and bolts as plain Rust types, wire them into a topology with
//! [`TopologyBuilder`], and run it in-process or on a cluster.

pub use squall_macros::{Bolt, Spout, Tuple};
pub use squall_topology::*;

/// What generated code refers to; not a public API.
#[doc(hidden)]
pub use squall_topology as __private;

/// The names most topologies use.
pub mod prelude {
    pub use squall_macros::{Bolt, Spout, Tuple};
    pub use squall_topology::{
        Bolt, BoltCollector, ComponentError, Config, Spout, SpoutCollector, Str, TopologyBuilder, TopologyContext,
        Tuple, TypedTuple, Value, Values, values,
    };
}
