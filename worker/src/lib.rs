//! Squall's runtime: executors, routing by grouping, bounded queues with backpressure, metrics,
//! and [`LocalCluster`], the in-process mode.

pub mod acker;
mod chain;
pub mod cycle;
pub mod executor;
pub mod framing;
pub mod histogram;
pub mod inbox;
pub mod instruments;
pub mod local;
mod log_limit;
pub mod metrics;
mod peers;
pub mod router;
pub mod runtime;
#[cfg(test)]
mod test_components;
pub mod transport;
pub mod transport_metrics;
pub mod wire;

pub use executor::{TaskFailure, TopologyStatus};
pub use instruments::{Captured, InFlight, InFlightTimeout, Instruments};
pub use local::{LocalCluster, LocalClusterError, RunReport};
pub use metrics::{ComponentMetrics, ErrorEntry, ExecutorMetrics, RECENT_ERRORS, TopologyMetrics, UnknownComponent};
pub use peers::PeerUpdate;
pub use runtime::{LaunchError, RunningTopology, WorkerPlan};
pub use transport_metrics::{LaneSnapshot, TransportSnapshot};
