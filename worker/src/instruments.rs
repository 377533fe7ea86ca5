//! What a test observes of a running topology: every tuple each component emitted, per stream,
//! and how many tuples are in flight. `squall::testing` is built on these; they cost nothing
//! when not asked for.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use squall_topology::{StreamMeta, Values};
use tokio::sync::Notify;

/// Instruments to attach to a topology when it starts.
#[derive(Clone, Debug, Default)]
pub struct Instruments {
    /// Records every emitted tuple.
    pub capture: Option<Arc<Captured>>,
    /// Counts tuples in flight.
    pub in_flight: Option<Arc<InFlight>>,
}

/// Every tuple the components of a topology emitted, by (component, stream), in the order each
/// executor emitted them.
#[derive(Debug, Default)]
pub struct Captured {
    streams: Mutex<BTreeMap<(String, String), Vec<Values>>>,
}

impl Captured {
    /// The values of every tuple `component` emitted on `stream` (empty if none).
    pub fn tuples(&self, component: &str, stream: &str) -> Vec<Values> {
        let streams = self.lock();
        streams.get(&(component.to_owned(), stream.to_owned())).cloned().unwrap_or_default()
    }

    /// Everything captured, by (component, stream).
    pub fn all(&self) -> BTreeMap<(String, String), Vec<Values>> {
        self.lock().clone()
    }

    pub(crate) fn record(&self, emitted: &mut Vec<(&'static StreamMeta, Values)>) {
        if emitted.is_empty() {
            return;
        }
        let mut streams = self.lock();
        for (meta, values) in emitted.drain(..) {
            streams.entry((meta.component.to_owned(), meta.stream.to_owned())).or_default().push(values);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Vec<Values>>> {
        // Each update is one push: a holder that panicked left the map consistent.
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Tuples and acking messages sent to a task and not yet handled there, with everything they
/// caused sent on (Storm's tracked topologies), and the tuples spouts have emitted.
#[derive(Debug, Default)]
pub struct InFlight {
    pending: AtomicI64,
    spout_emits: AtomicU64,
    changed: Notify,
}

/// [`InFlight::wait`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "waited {waited:?} for {target} spout emits with nothing in flight; spouts emitted {emitted}, {pending} tuples in flight"
)]
pub struct InFlightTimeout {
    /// How long it waited.
    pub waited: Duration,
    /// The spout emits waited for.
    pub target: u64,
    /// The spout emits seen.
    pub emitted: u64,
    /// Tuples still in flight.
    pub pending: i64,
}

impl InFlight {
    /// Tuples (and acking messages) in flight now.
    pub fn pending(&self) -> i64 {
        self.pending.load(Ordering::SeqCst)
    }

    /// Tuples the spouts have emitted and sent so far.
    pub fn spout_emits(&self) -> u64 {
        self.spout_emits.load(Ordering::SeqCst)
    }

    /// Waits until the spouts have emitted at least `target` tuples in all and nothing is in
    /// flight, or `timeout` passes (on tokio's clock, so simulated time applies).
    pub async fn wait(&self, target: u64, timeout: Duration) -> Result<(), InFlightTimeout> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // Emits are published after their tuples were counted in flight: read them first.
            let emitted = self.spout_emits();
            let pending = self.pending();
            if emitted >= target && pending == 0 {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(InFlightTimeout { waited: timeout, target, emitted, pending });
            }
        }
    }

    pub(crate) fn sent(&self, n: usize) {
        self.pending.fetch_add(n as i64, Ordering::SeqCst);
    }

    pub(crate) fn handled(&self, n: usize) {
        if n > 0 && self.pending.fetch_sub(n as i64, Ordering::SeqCst) == n as i64 {
            self.changed.notify_waiters();
        }
    }

    pub(crate) fn spout_emitted(&self, n: usize) {
        if n > 0 {
            self.spout_emits.fetch_add(n as u64, Ordering::SeqCst);
            self.changed.notify_waiters();
        }
    }
}
