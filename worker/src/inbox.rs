//! An executor's input queue: batches of tuples, bounded in tuples (not batches), so the memory a
//! queue holds is capped by `topology.executor.receive.buffer.size` whatever the batch sizes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use squall_topology::{Control, TaskId, Tuple};
use tokio::sync::{Semaphore, mpsc};

/// Tuples and control messages for one task, moved between executors as one unit.
#[derive(Debug, Default)]
pub struct Batch {
    /// The task they are for.
    pub task: TaskId,
    /// The tuples.
    pub tuples: Vec<Tuple>,
    /// Acking messages.
    pub control: Vec<Control>,
}

impl Batch {
    /// How many queue slots the batch takes: one per tuple or control message.
    pub fn len(&self) -> usize {
        self.tuples.len() + self.control.len()
    }

    /// Whether it carries nothing.
    pub fn is_empty(&self) -> bool {
        self.tuples.is_empty() && self.control.is_empty()
    }
}

/// Queue occupancy, observable while the topology runs.
#[derive(Debug, Default)]
pub struct QueueStats {
    capacity: usize,
    peak: AtomicUsize,
    queued: AtomicUsize,
}

/// Emptied batch buffers travelling back from the receiver to the senders.
#[derive(Debug, Default)]
struct BufferPool {
    spare: Mutex<Vec<Vec<Tuple>>>,
}

/// Buffers kept per queue: enough for every batch the queue can hold to come back.
const MAX_SPARE_BUFFERS: usize = 64;

impl QueueStats {
    /// The most tuples ever queued at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Tuples queued now.
    pub fn depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
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
    pool: Arc<BufferPool>,
}

/// The receiving side, owned by the executor.
#[derive(Debug)]
pub struct InboxReceiver {
    rx: mpsc::UnboundedReceiver<Batch>,
    permits: Arc<Semaphore>,
    stats: Arc<QueueStats>,
    pool: Arc<BufferPool>,
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
    let stats = Arc::new(QueueStats { capacity, peak: AtomicUsize::new(0), queued: AtomicUsize::new(0) });
    let pool = Arc::new(BufferPool::default());
    (
        InboxSender { tx, permits: permits.clone(), stats: stats.clone(), pool: pool.clone() },
        InboxReceiver { rx, permits, stats, pool },
    )
}

impl InboxSender {
    /// Queues a batch, waiting while the queue is full: this wait is the backpressure that
    /// reaches the spouts. The batch must not exceed the capacity.
    pub async fn send(&self, batch: Batch) -> Result<(), InboxClosed> {
        let n = batch.len().min(self.stats.capacity) as u32;
        let permit = self.permits.acquire_many(n).await.map_err(|_| InboxClosed)?;
        permit.forget();
        let queued = self.stats.capacity - self.permits.available_permits();
        self.stats.peak.fetch_max(queued, Ordering::Relaxed);
        self.stats.queued.store(queued, Ordering::Relaxed);
        self.tx.send(batch).map_err(|_| InboxClosed)
    }

    /// The queue's occupancy.
    pub fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }

    /// An empty buffer for the next batch to this queue, reused when one came back.
    pub fn spare_buffer(&self, capacity: usize) -> Vec<Tuple> {
        let spare = self.pool.spare.lock().unwrap_or_else(|e| e.into_inner()).pop();
        spare.unwrap_or_else(|| Vec::with_capacity(capacity))
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

    /// Hands an emptied batch buffer back to the senders.
    pub fn recycle(&self, mut buffer: Vec<Tuple>) {
        buffer.clear();
        let mut spare = self.pool.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < MAX_SPARE_BUFFERS {
            spare.push(buffer);
        }
    }

    fn release(&self, batch: &Batch) {
        self.permits.add_permits(batch.len().min(self.stats.capacity));
        let queued = self.stats.capacity.saturating_sub(self.permits.available_permits());
        self.stats.queued.store(queued, Ordering::Relaxed);
    }
}

impl Drop for InboxReceiver {
    fn drop(&mut self) {
        // Wake senders waiting for room: they get `InboxClosed` instead of waiting forever.
        self.permits.close();
    }
}
