//! An executor's input queue: batches of tuples, bounded in tuples (not batches), so the memory a
//! queue holds is capped by `topology.executor.receive.buffer.size` whatever the batch sizes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use squall_topology::{TaskId, Tuple};
use tokio::sync::{Semaphore, mpsc};

/// Tuples for one task, moved between executors as one unit.
#[derive(Debug)]
pub struct Batch {
    /// The task the tuples are for.
    pub task: TaskId,
    /// The tuples.
    pub tuples: Vec<Tuple>,
}

/// Queue occupancy, observable while the topology runs.
#[derive(Debug, Default)]
pub struct QueueStats {
    capacity: usize,
    peak: AtomicUsize,
}

impl QueueStats {
    /// The most tuples ever queued at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// The queue's capacity in tuples.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// The sending side; cloned into every executor that routes to this one.
#[derive(Clone, Debug)]
pub struct InboxSender {
    tx: mpsc::UnboundedSender<Batch>,
    permits: Arc<Semaphore>,
    stats: Arc<QueueStats>,
}

/// The receiving side, owned by the executor.
#[derive(Debug)]
pub struct InboxReceiver {
    rx: mpsc::UnboundedReceiver<Batch>,
    permits: Arc<Semaphore>,
    stats: Arc<QueueStats>,
}

/// The receiving executor is gone.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the receiving executor has stopped")]
pub struct InboxClosed;

/// A queue holding at most `capacity` tuples.
pub fn inbox(capacity: usize) -> (InboxSender, InboxReceiver) {
    let capacity = capacity.max(1);
    let (tx, rx) = mpsc::unbounded_channel();
    let permits = Arc::new(Semaphore::new(capacity));
    let stats = Arc::new(QueueStats { capacity, peak: AtomicUsize::new(0) });
    (InboxSender { tx, permits: permits.clone(), stats: stats.clone() }, InboxReceiver { rx, permits, stats })
}

impl InboxSender {
    /// Queues a batch, waiting while the queue is full: this wait is the backpressure that
    /// reaches the spouts. The batch must not exceed the capacity.
    pub async fn send(&self, batch: Batch) -> Result<(), InboxClosed> {
        let n = batch.tuples.len().min(self.stats.capacity) as u32;
        let permit = self.permits.acquire_many(n).await.map_err(|_| InboxClosed)?;
        permit.forget();
        let queued = self.stats.capacity - self.permits.available_permits();
        self.stats.peak.fetch_max(queued, Ordering::Relaxed);
        self.tx.send(batch).map_err(|_| InboxClosed)
    }

    /// The queue's occupancy.
    pub fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }

    /// The most tuples a batch sent here may hold.
    pub fn capacity(&self) -> usize {
        self.stats.capacity
    }
}

impl InboxReceiver {
    /// The next batch; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<Batch> {
        let batch = self.rx.recv().await?;
        self.release(&batch);
        Some(batch)
    }

    /// The next batch if one is queued.
    pub fn try_recv(&mut self) -> Option<Batch> {
        let batch = self.rx.try_recv().ok()?;
        self.release(&batch);
        Some(batch)
    }

    /// The queue's occupancy.
    pub fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }

    fn release(&self, batch: &Batch) {
        self.permits.add_permits(batch.tuples.len().min(self.stats.capacity));
    }
}

impl Drop for InboxReceiver {
    fn drop(&mut self) {
        // Wake senders waiting for room: they get `InboxClosed` instead of waiting forever.
        self.permits.close();
    }
}
