//! An executor's input queue: batches of tuples, bounded in tuples (not batches), so the memory a
//! queue holds is capped by `topology.executor.receive.buffer.size` whatever the batch sizes.
//!
//! A queue of a bolt inside a cycle is admitted through its cycle's [`CycleGate`] instead of a
//! semaphore of its own, and its cycle's own edges never wait (see `cycle.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use squall_topology::{Control, TaskId, Tuple};
use tokio::sync::{Semaphore, mpsc};

use crate::cycle::{CycleGate, Producer};

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

/// A batch in the queue with the semaphore permits it holds (none when it was sent on a loop
/// edge or into a cycle, whose admission is the gate's).
#[derive(Debug)]
struct Queued {
    batch: Batch,
    permits: usize,
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

    fn add(&self, n: usize) {
        let queued = self.queued.fetch_add(n, Ordering::Relaxed) + n;
        self.peak.fetch_max(queued, Ordering::Relaxed);
    }

    fn remove(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
    }
}

/// How a queue admits batches.
#[derive(Debug, Clone)]
enum Admission {
    /// Room of its own: a semaphore of tuple permits.
    Queue(Arc<Semaphore>),
    /// A bolt in a cycle: room shared by the whole cycle.
    Cycle(Arc<CycleGate>),
}

/// The sending side; cloned into every executor that routes to this one (a clone of a cycle
/// queue's sender counts as one more producer).
#[derive(Clone, Debug)]
pub struct InboxSender {
    tx: mpsc::UnboundedSender<Queued>,
    admission: Admission,
    stats: Arc<QueueStats>,
    pool: Arc<BufferPool>,
    /// A sender on one of its cycle's own edges: it never waits for room, so a cycle cannot
    /// block on itself.
    feedback: bool,
    /// Counts this sender among the producers that keep its cycle open while it lives (cycle
    /// queues only); held for its `Drop`.
    _producer: Option<Producer>,
}

/// A sender that does not keep the queue open: a lane's live-peer table holds these, so a lane
/// ends (says Bye) once the routers that use it are gone.
#[derive(Clone, Debug)]
pub(crate) struct WeakInboxSender {
    tx: mpsc::WeakUnboundedSender<Queued>,
    admission: Admission,
    stats: Arc<QueueStats>,
    pool: Arc<BufferPool>,
}

impl WeakInboxSender {
    /// A sender again, while some other sender still lives. Never a cycle producer: only lane
    /// queues are held weakly.
    pub(crate) fn upgrade(&self) -> Option<InboxSender> {
        Some(InboxSender {
            tx: self.tx.upgrade()?,
            admission: self.admission.clone(),
            stats: self.stats.clone(),
            pool: self.pool.clone(),
            feedback: false,
            _producer: None,
        })
    }
}

/// The receiving side, owned by the executor.
#[derive(Debug)]
pub struct InboxReceiver {
    rx: mpsc::UnboundedReceiver<Queued>,
    admission: Admission,
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
    with_admission(capacity, Admission::Queue(Arc::new(Semaphore::new(capacity))), None)
}

/// A queue of a bolt executor inside a cycle: admitted through the cycle's gate.
pub(crate) fn cycle_inbox(capacity: usize, gate: Arc<CycleGate>) -> (InboxSender, InboxReceiver) {
    let producer = Producer::new(gate.clone());
    with_admission(capacity.max(1), Admission::Cycle(gate), Some(producer))
}

fn with_admission(capacity: usize, admission: Admission, producer: Option<Producer>) -> (InboxSender, InboxReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stats = Arc::new(QueueStats { capacity, peak: AtomicUsize::new(0), queued: AtomicUsize::new(0) });
    let pool = Arc::new(BufferPool::default());
    (
        InboxSender {
            tx,
            admission: admission.clone(),
            stats: stats.clone(),
            pool: pool.clone(),
            feedback: false,
            _producer: producer,
        },
        InboxReceiver { rx, admission, stats, pool },
    )
}

impl InboxSender {
    /// Queues a batch, waiting while the queue is full: this wait is the backpressure that
    /// reaches the spouts. The batch must not exceed the capacity. A feedback sender never
    /// waits.
    pub async fn send(&self, batch: Batch) -> Result<(), InboxClosed> {
        let n = batch.len();
        let permits = match &self.admission {
            Admission::Queue(_) if self.feedback => 0,
            Admission::Queue(semaphore) => {
                let n = n.min(self.stats.capacity);
                semaphore.acquire_many(n as u32).await.map_err(|_| InboxClosed)?.forget();
                n
            }
            Admission::Cycle(gate) if self.feedback => {
                gate.add(n);
                0
            }
            Admission::Cycle(gate) => {
                gate.admit(n).await?;
                0
            }
        };
        self.stats.add(n);
        self.tx.send(Queued { batch, permits }).map_err(|_| InboxClosed)
    }

    /// The same queue, reached over one of its cycle's own edges: sends never wait for room
    /// (the cycle's gate holds back what enters the cycle instead), and this sender does not
    /// keep the cycle open. Outside a cycle (a lane to a worker running part of one), sends
    /// just do not wait.
    pub fn feedback(&self) -> InboxSender {
        InboxSender { feedback: true, _producer: None, ..self.clone() }
    }

    /// Whether this sender is on one of its cycle's own edges.
    pub(crate) fn is_feedback(&self) -> bool {
        self.feedback
    }

    /// A sender that does not keep the queue open.
    pub(crate) fn downgrade(&self) -> WeakInboxSender {
        WeakInboxSender {
            tx: self.tx.downgrade(),
            admission: self.admission.clone(),
            stats: self.stats.clone(),
            pool: self.pool.clone(),
        }
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
        let queued = self.rx.recv().await?;
        Some(self.release(queued))
    }

    /// The next batch if one is queued.
    pub fn try_recv(&mut self) -> Option<Batch> {
        let queued = self.rx.try_recv().ok()?;
        Some(self.release(queued))
    }

    /// The queue's occupancy.
    pub fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }

    /// The cycle this queue belongs to, if any.
    pub(crate) fn cycle(&self) -> Option<&Arc<CycleGate>> {
        match &self.admission {
            Admission::Cycle(gate) => Some(gate),
            Admission::Queue(_) => None,
        }
    }

    /// Hands an emptied batch buffer back to the senders.
    pub fn recycle(&self, mut buffer: Vec<Tuple>) {
        buffer.clear();
        let mut spare = self.pool.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < MAX_SPARE_BUFFERS {
            spare.push(buffer);
        }
    }

    fn release(&self, Queued { batch, permits }: Queued) -> Batch {
        self.stats.remove(batch.len());
        if let Admission::Queue(semaphore) = &self.admission
            && permits > 0
        {
            semaphore.add_permits(permits);
        }
        batch
    }
}

impl Drop for InboxReceiver {
    fn drop(&mut self) {
        // Wake senders waiting for room: they get `InboxClosed` instead of waiting forever.
        match &self.admission {
            Admission::Queue(semaphore) => semaphore.close(),
            Admission::Cycle(gate) => gate.break_off(),
        }
    }
}
