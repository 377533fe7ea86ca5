//! Nimbus, Squall's master: stores uploaded topology binaries by hash, schedules topologies onto
//! supervisors' worker slots through ZooKeeper, watches their health, and serves the CLI's API.

pub mod api;
pub mod artifacts;
pub mod client;
mod http;
mod prometheus;
mod reports;
pub mod scheduler;
pub mod server;
