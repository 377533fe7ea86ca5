//! What a worker's transport has done: bytes and tuples each way, connections made, lost and
//! failed, and each outbound lane's queue. Shared by the worker's lane writers and its server;
//! counters are relaxed atomics bumped once per write or frame, never per tuple.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use serde::{Deserialize, Serialize};

use crate::inbox::QueueStats;
use crate::transport::Lane;

/// A worker's transport counters (see [`TransportMetrics::snapshot`]).
#[derive(Debug, Default)]
pub struct TransportMetrics {
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    tuples_sent: AtomicU64,
    tuples_received: AtomicU64,
    connects: AtomicU64,
    reconnects: AtomicU64,
    connect_failures: AtomicU64,
    connections_lost: AtomicU64,
    tuples_lost: AtomicU64,
    lanes: Mutex<Vec<Weak<LaneGauge>>>,
}

/// One outbound lane as its writer sees it; dropped with the writer.
#[derive(Debug)]
pub(crate) struct LaneGauge {
    lane: Arc<Lane>,
    queue: Arc<QueueStats>,
    connected: AtomicBool,
    /// Whether this lane has been connected before: the next connection is a reconnect.
    was_connected: AtomicBool,
}

/// A worker's transport, as its metrics report carries it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransportSnapshot {
    /// Bytes written to peer workers (frames with their length prefix).
    pub bytes_sent: u64,
    /// Bytes read from peer workers in the frames of accepted connections (their Hello
    /// included): what a peer sent on a connection this worker accepted.
    pub bytes_received: u64,
    /// Tuples and acking messages written to peer workers.
    pub tuples_sent: u64,
    /// Tuples and acking messages received from peer workers.
    pub tuples_received: u64,
    /// Outbound connections established, first ones included.
    pub connects: u64,
    /// Outbound connections established again after one of the same lane was lost or refused.
    pub reconnects: u64,
    /// Outbound connection attempts that failed (refused, timed out).
    pub connect_failures: u64,
    /// Established outbound connections that broke.
    pub connections_lost: u64,
    /// Tuples dropped in writes that failed (acking replays them).
    pub tuples_lost: u64,
    /// The outbound lanes still open, by component then peer.
    pub lanes: Vec<LaneSnapshot>,
}

/// One outbound lane: tuples for one component's tasks on one peer worker.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneSnapshot {
    /// The peer worker, `host:port`.
    pub peer: String,
    /// The component whose tasks there the lane feeds.
    pub component: String,
    /// Tuples queued for the peer, not yet written.
    pub depth: usize,
    /// The lane queue's capacity, in tuples.
    pub capacity: usize,
    /// Whether a connection is up now.
    pub connected: bool,
}

impl TransportMetrics {
    /// The counters now, and the lanes whose writers still run.
    pub fn snapshot(&self) -> TransportSnapshot {
        let mut lanes = Vec::new();
        {
            let mut gauges = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
            gauges.retain(|gauge| match gauge.upgrade() {
                Some(gauge) => {
                    lanes.push(LaneSnapshot {
                        peer: gauge.lane.peer.to_string(),
                        component: gauge.lane.component.clone(),
                        depth: gauge.queue.depth(),
                        capacity: gauge.queue.capacity(),
                        connected: gauge.connected.load(Ordering::Relaxed),
                    });
                    true
                }
                None => false,
            });
        }
        lanes.sort_by(|a, b| (&a.component, &a.peer).cmp(&(&b.component, &b.peer)));
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TransportSnapshot {
            bytes_sent: get(&self.bytes_sent),
            bytes_received: get(&self.bytes_received),
            tuples_sent: get(&self.tuples_sent),
            tuples_received: get(&self.tuples_received),
            connects: get(&self.connects),
            reconnects: get(&self.reconnects),
            connect_failures: get(&self.connect_failures),
            connections_lost: get(&self.connections_lost),
            tuples_lost: get(&self.tuples_lost),
            lanes,
        }
    }

    /// Registers a lane writer's gauge; it is listed for as long as the writer holds it.
    pub(crate) fn lane(&self, lane: Arc<Lane>, queue: Arc<QueueStats>) -> Arc<LaneGauge> {
        let gauge = Arc::new(LaneGauge {
            lane,
            queue,
            connected: AtomicBool::new(false),
            was_connected: AtomicBool::new(false),
        });
        let mut gauges = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        gauges.retain(|g| g.strong_count() > 0);
        gauges.push(Arc::downgrade(&gauge));
        gauge
    }

    pub(crate) fn connected(&self, gauge: &LaneGauge) {
        self.connects.fetch_add(1, Ordering::Relaxed);
        if gauge.was_connected.swap(true, Ordering::Relaxed) {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        gauge.connected.store(true, Ordering::Relaxed);
    }

    pub(crate) fn disconnected(&self, gauge: &LaneGauge, lost: Option<u64>) {
        gauge.connected.store(false, Ordering::Relaxed);
        if let Some(tuples) = lost {
            self.connections_lost.fetch_add(1, Ordering::Relaxed);
            self.tuples_lost.fetch_add(tuples, Ordering::Relaxed);
        }
    }

    pub(crate) fn connect_failed(&self) {
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn sent(&self, bytes: usize, tuples: u64) {
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
        self.tuples_sent.fetch_add(tuples, Ordering::Relaxed);
    }

    pub(crate) fn received(&self, bytes: usize, tuples: usize) {
        self.bytes_received.fetch_add(bytes as u64, Ordering::Relaxed);
        self.tuples_received.fetch_add(tuples as u64, Ordering::Relaxed);
    }
}
