//! Squall: Storm-style distributed stream processing in Rust.
//!
//! Declare spouts and bolts as plain Rust types, wire them into a topology with
//! [`TopologyBuilder`], and run it in-process with [`LocalCluster`] — or make the program a
//! topology binary with [`main`], which runs locally by default and prints its spec with
//! `--describe`.
//!
//! ```
//! use squall::prelude::*;
//! use squall::{ComponentError, LocalCluster};
//!
//! #[derive(Tuple)]
//! struct Number { n: u64 }
//!
//! #[derive(Clone, Spout)]
//! #[squall(output = Number)]
//! struct Numbers { next: u64 }
//!
//! impl Spout for Numbers {
//!     type MsgId = ();
//!     async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
//!         if self.next == 100 { out.done(); return Ok(()); }
//!         self.next += 1;
//!         out.emit(Number { n: self.next })?;
//!         Ok(())
//!     }
//! }
//!
//! #[derive(Clone, Default, Bolt)]
//! struct Sum { total: u64 }
//!
//! impl Bolt for Sum {
//!     async fn execute(&mut self, input: Tuple, _out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
//!         let Number { n } = input.to()?;
//!         self.total += n;
//!         Ok(())
//!     }
//!     async fn cleanup(&mut self) -> Result<(), ComponentError> {
//!         assert_eq!(self.total, 5050);
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main] async fn main() {
//! let mut builder = TopologyBuilder::new();
//! builder.spout("numbers", Numbers { next: 0 }, 1);
//! builder.bolt("sum", Sum::default(), 1).global_grouping("numbers");
//! let topology = builder.build().unwrap();
//! let cluster = LocalCluster::new();
//! cluster.submit("sum", &topology).unwrap();
//! let report = cluster.wait_for_completion("sum", std::time::Duration::from_secs(10)).await.unwrap();
//! assert!(report.is_success());
//! # }
//! ```

mod app;
mod report;
mod worker_mode;

pub use app::{AppError, main};
pub use squall_macros::{Bolt, Spout, Tuple};
pub use squall_topology::*;
pub use squall_worker::{
    ComponentMetrics, ErrorEntry, ExecutorMetrics, LocalCluster, LocalClusterError, RunReport, TaskFailure,
    TopologyMetrics, TopologyStatus, UnknownComponent,
};

#[cfg(feature = "testing")]
pub mod testing;

/// What generated code refers to; not a public API.
#[doc(hidden)]
pub use squall_topology as __private;

/// The names most topologies use.
pub mod prelude {
    pub use squall_macros::{Bolt, Spout, Tuple};
    pub use squall_topology::{
        Bolt, BoltCollector, ComponentError, Config, ReplayQueue, Spout, SpoutCollector, Str, TaskId, Topology,
        TopologyBuilder, TopologyContext, Tuple, TypedTuple, Value, Values, values,
    };
}
