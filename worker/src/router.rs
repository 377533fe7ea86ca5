//! Routing: turns one emitted tuple into copies for its destination tasks, by grouping, and
//! batches them per destination task.

use std::hash::Hasher;
use std::sync::Arc;

use rustc_hash::FxHasher;
use squall_topology::collector::check_arity;
use squall_topology::grouping::CustomGrouping;
use squall_topology::{
    AckerMessage, ChainPlan, Control, EmitError, Grouping, MessageId, Routed, SpoutNotice, StreamIdx, StreamMeta,
    TaskId, Topology, Transfer, Tuple, Value, Values,
};

use crate::inbox::{Batch, InboxClosed, InboxSender};
use crate::instruments::{Captured, InFlight, Instruments};
use crate::peers::PeerRoutes;
use crate::transport::RemoteSender;

/// Where each task's tuples go, indexed by task id: the inbox of the executor that runs it, or
/// the lane to the worker that does.
pub type Destinations = Arc<Vec<Option<Destination>>>;

/// Where one task's tuples go.
#[derive(Clone, Debug)]
pub enum Destination {
    /// An executor of this worker.
    Local(InboxSender),
    /// A task of another worker.
    Remote(RemoteSender),
    /// A chained bolt's task run by the same executor (see `squall_topology::chain`): its
    /// batches are handed over, not queued.
    Chained,
}

impl Destination {
    /// Both queued kinds end in a bounded queue of batches: one code path, no dispatch per
    /// call beyond picking the queue.
    fn queue(&self) -> Option<&InboxSender> {
        match self {
            Destination::Local(inbox) => Some(inbox),
            Destination::Remote(remote) => Some(remote.queue()),
            Destination::Chained => None,
        }
    }

    /// Queues a batch, waiting while the destination is full (backpressure). A chained task
    /// has no queue: its batches go through [`Router::take_handoff`].
    pub async fn send(&self, batch: Batch) -> Result<(), InboxClosed> {
        match self.queue() {
            Some(queue) => queue.send(batch).await,
            None => Err(InboxClosed),
        }
    }

    /// The most tuples a batch sent here may hold.
    pub fn capacity(&self) -> usize {
        self.queue().map_or(usize::MAX, InboxSender::capacity)
    }

    /// An empty buffer for the next batch to this destination, reused when one came back.
    pub fn spare_buffer(&self, capacity: usize) -> Vec<Tuple> {
        match self.queue() {
            Some(queue) => queue.spare_buffer(capacity),
            None => Vec::with_capacity(capacity),
        }
    }

    /// The same destination reached over a cycle's own edge: sends never wait for room.
    pub fn feedback(&self) -> Destination {
        match self {
            Destination::Local(inbox) => Destination::Local(inbox.feedback()),
            Destination::Remote(remote) => Destination::Remote(remote.feedback()),
            Destination::Chained => Destination::Chained,
        }
    }

    /// Whether the task runs in this worker.
    pub fn is_local(&self) -> bool {
        matches!(self, Destination::Local(_) | Destination::Chained)
    }
}

/// The static routing of one component's output streams.
#[derive(Debug)]
pub struct ComponentRoutes {
    component: String,
    /// By stream index; `None` for an undeclared default stream.
    streams: Vec<Option<StreamRoutes>>,
}

#[derive(Debug)]
struct StreamRoutes {
    meta: &'static StreamMeta,
    direct: bool,
    subscribers: Vec<Subscriber>,
}

#[derive(Debug)]
struct Subscriber {
    /// The subscriber's tasks, ascending.
    tasks: Arc<[TaskId]>,
    grouping: Grouping,
    /// Positions of the grouping's key fields in the stream.
    keys: Vec<usize>,
    /// A chained subscriber's task for each executor of the source (forward partitioning).
    forward: Option<Arc<[TaskId]>>,
}

impl ComponentRoutes {
    /// The routes of a system component that emits only system tuples (the acker).
    pub fn system(component: &str) -> Arc<ComponentRoutes> {
        Arc::new(ComponentRoutes { component: component.to_owned(), streams: Vec::new() })
    }

    /// The routes of every component of a topology, by component id; a bolt chained to its
    /// source (see `squall_topology::chain`) is fed by forward partitioning.
    pub fn for_topology(topology: &Topology, chains: &ChainPlan) -> Vec<(String, Arc<ComponentRoutes>)> {
        topology
            .components()
            .iter()
            .map(|source| {
                let streams = source
                    .streams
                    .iter()
                    .map(|decl| {
                        let decl = decl.as_ref()?;
                        let fields: Vec<&str> = decl.fields.iter().map(String::as_str).collect();
                        let subscribers = topology
                            .components()
                            .iter()
                            .flat_map(|sub| sub.inputs.iter().map(move |input| (sub, input)))
                            .filter(|(_, input)| input.component == source.id && input.stream == decl.name)
                            .map(|(sub, input)| Subscriber {
                                tasks: topology.layout().tasks(&sub.id).into(),
                                keys: input
                                    .grouping
                                    .fields()
                                    .iter()
                                    .filter_map(|f| decl.fields.iter().position(|d| d == f))
                                    .collect(),
                                grouping: input.grouping.clone(),
                                forward: chains
                                    .link(&sub.id)
                                    .filter(|link| link.upstream == source.id)
                                    .map(|link| link.targets.as_slice().into()),
                            })
                            .collect();
                        Some(StreamRoutes {
                            meta: StreamMeta::intern(&source.id, &decl.name, &fields),
                            direct: decl.direct,
                            subscribers,
                        })
                    })
                    .collect();
                (source.id.clone(), Arc::new(ComponentRoutes { component: source.id.clone(), streams }))
            })
            .collect()
    }
}

/// The mutable state of one subscription's grouping, per emitting executor.
enum Chooser {
    /// Round-robin over a shuffled order: exactly even, like Storm's `ShuffleGrouping`.
    RoundRobin {
        order: Vec<TaskId>,
        next: usize,
    },
    Fields,
    All,
    Global,
    Direct,
    Random,
    PartialKey {
        load: Vec<u64>,
    },
    Custom(Box<dyn CustomGrouping>),
    /// A chained subscriber: always its task paired with this executor.
    Forward(TaskId),
}

/// A stream whose every emit goes to one task, whatever its values: its one subscriber is
/// chained, or has a single task under a grouping that needs no state to pick it. Routing
/// such an emit skips the general walk over subscribers (a third of a chained word count's
/// routing time).
#[derive(Clone, Copy, Debug)]
struct SoleTarget {
    task: TaskId,
    /// The stream's field count: a tuple of another size takes the general path, which
    /// reports the error.
    arity: usize,
    meta: &'static StreamMeta,
}

impl SoleTarget {
    fn of_streams(routes: &ComponentRoutes, choosers: &[Vec<Chooser>]) -> Vec<Option<SoleTarget>> {
        routes
            .streams
            .iter()
            .zip(choosers)
            .map(|(stream, choosers)| {
                let stream = stream.as_ref().filter(|s| !s.direct)?;
                let ([sub], [chooser]) = (stream.subscribers.as_slice(), choosers.as_slice()) else { return None };
                let only = |tasks: &[TaskId]| match tasks {
                    [task] => Some(*task),
                    _ => None,
                };
                let task = match chooser {
                    Chooser::Forward(task) => Some(*task),
                    Chooser::RoundRobin { order, .. } => only(order),
                    Chooser::Fields | Chooser::All | Chooser::Global | Chooser::Random | Chooser::PartialKey { .. } => {
                        only(&sub.tasks)
                    }
                    Chooser::Direct | Chooser::Custom(_) => None,
                }?;
                Some(SoleTarget { task, arity: stream.meta.fields.len(), meta: stream.meta })
            })
            .collect()
    }
}

impl Chooser {
    fn new(
        sub: &Subscriber,
        source: &str,
        stream: &str,
        executor: usize,
        is_local: &dyn Fn(TaskId) -> bool,
    ) -> Chooser {
        if let Some(task) = sub.forward.as_ref().and_then(|targets| targets.get(executor)) {
            return Chooser::Forward(*task);
        }
        let shuffled = |tasks: Vec<TaskId>| {
            let mut order = tasks;
            fastrand::shuffle(&mut order);
            let next = if order.is_empty() { 0 } else { fastrand::usize(..order.len()) };
            Chooser::RoundRobin { order, next }
        };
        match &sub.grouping {
            Grouping::Shuffle => shuffled(sub.tasks.to_vec()),
            Grouping::LocalOrShuffle => {
                let local: Vec<TaskId> = sub.tasks.iter().copied().filter(|t| is_local(*t)).collect();
                shuffled(if local.is_empty() { sub.tasks.to_vec() } else { local })
            }
            Grouping::Fields(_) => Chooser::Fields,
            Grouping::All => Chooser::All,
            Grouping::Global => Chooser::Global,
            Grouping::Direct => Chooser::Direct,
            Grouping::None => Chooser::Random,
            Grouping::PartialKey(_) => Chooser::PartialKey { load: vec![0; sub.tasks.len()] },
            Grouping::Custom(factory) => {
                let mut grouping = factory.instance();
                grouping.prepare(source, stream, &sub.tasks);
                Chooser::Custom(grouping)
            }
        }
    }
}

fn key_hash(values: &[Value], keys: &[usize], seed: u64) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write_u64(seed);
    for &k in keys {
        if let Some(v) = values.get(k) {
            v.stable_hash(&mut hasher);
        }
    }
    hasher.finish()
}

/// Maps a hash onto `0..n` without a division (Lemire's multiply-shift); the same in every
/// process, which fields grouping needs.
fn bucket(hash: u64, n: usize) -> usize {
    ((u128::from(hash) * n as u128) >> 64) as usize
}

/// Pushes `make()` onto `buffer`, made after the room is reserved so that it is written
/// straight into its slot, and returns the new length. Made first and then pushed, a value is
/// kept on the stack across the push's possible growth and copied in from there; reading back
/// fields just written with narrower stores stalls store forwarding (a fifth of a word count's
/// time went to that).
#[inline(always)]
fn push_in_place<T>(buffer: &mut Vec<T>, make: impl FnOnce() -> T) -> usize {
    buffer.reserve(1);
    let len = buffer.len();
    buffer.spare_capacity_mut()[0].write(make());
    // SAFETY: the slot at `len` was reserved above and has just been written.
    #[allow(unsafe_code)]
    unsafe {
        buffer.set_len(len + 1)
    };
    len + 1
}

/// Routes the emits of one executor's tasks and batches them per destination task.
pub struct Router {
    routes: Arc<ComponentRoutes>,
    /// `choosers[stream][subscriber]`.
    choosers: Vec<Vec<Chooser>>,
    /// Per stream, its one destination when every emit on it goes to the same task (see
    /// [`SoleTarget`]); empty while emits are logged or captured.
    sole_targets: Vec<Option<SoleTarget>>,
    destinations: Destinations,
    /// The acker tasks, ascending; empty without acking.
    ackers: Arc<[TaskId]>,
    /// Per acker (by position in `ackers`): the root and buffer index of the last `Ack` pushed
    /// to it, so consecutive acks of one tree are XORed into one message.
    last_ack: Vec<Option<(u64, usize)>>,
    /// Tuples waiting to be sent, by destination task id.
    out: Vec<Vec<Tuple>>,
    /// Control messages waiting to be sent, by destination task id.
    control: Vec<Vec<Control>>,
    /// Destination tasks whose buffer reached the batch size.
    full: Vec<TaskId>,
    /// Destination tasks with a non-empty buffer.
    dirty: Vec<TaskId>,
    batch_size: usize,
    custom_scratch: Vec<TaskId>,
    /// The destinations of the tuple being routed (see `route`).
    targets_scratch: Vec<TaskId>,
    debug: bool,
    /// Tuples emitted (one per emit call) since the last `take_counts`.
    emitted: u64,
    /// Tuple copies sent to tasks since the last `take_counts`.
    transferred: u64,
    /// Records every emitted tuple (tests only).
    capture: Option<Arc<Captured>>,
    /// Emitted tuples not yet handed to `capture`.
    captured: Vec<(&'static StreamMeta, Values)>,
    /// Counts what is sent as in flight (tests only).
    in_flight: Option<Arc<InFlight>>,
    /// Where other workers' tasks run now (workers only), and the version this router follows.
    peers: Option<(Arc<PeerRoutes>, u64)>,
    /// The next `route` is a spout's tracked emit rooting a tree: a sole copy takes the root
    /// as its edge (`squall_topology::ack`).
    sole_root: bool,
    /// Batches for chained tasks, waiting for the executor to run them.
    handoff: Vec<Batch>,
    /// Emptied buffers of handed-over batches, for the next ones.
    spare: Vec<Vec<Tuple>>,
}

impl Router {
    /// A router for executor number `executor` (counted within its component) of the
    /// component with `routes`.
    pub fn new(
        routes: Arc<ComponentRoutes>,
        destinations: Destinations,
        ackers: Arc<[TaskId]>,
        batch_size: usize,
        debug: bool,
        executor: usize,
        is_local: &dyn Fn(TaskId) -> bool,
    ) -> Self {
        let choosers: Vec<Vec<Chooser>> = routes
            .streams
            .iter()
            .map(|s| match s {
                Some(s) => s
                    .subscribers
                    .iter()
                    .map(|sub| Chooser::new(sub, &routes.component, s.meta.stream, executor, is_local))
                    .collect(),
                None => Vec::new(),
            })
            .collect();
        let out = (0..destinations.len()).map(|_| Vec::new()).collect();
        let control = (0..destinations.len()).map(|_| Vec::new()).collect();
        let sole_targets = if debug { Vec::new() } else { SoleTarget::of_streams(&routes, &choosers) };
        Router {
            routes,
            choosers,
            sole_targets,
            destinations,
            control,
            last_ack: vec![None; ackers.len()],
            ackers,
            out,
            full: Vec::new(),
            dirty: Vec::new(),
            batch_size: batch_size.max(1),
            custom_scratch: Vec::new(),
            targets_scratch: Vec::new(),
            debug,
            emitted: 0,
            transferred: 0,
            capture: None,
            captured: Vec::new(),
            in_flight: None,
            peers: None,
            sole_root: false,
            handoff: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// Moves the batches handed over to chained tasks since the last call onto `into`, in the
    /// order they were made.
    pub fn take_handoff(&mut self, into: &mut Vec<Batch>) {
        into.append(&mut self.handoff);
    }

    /// Whether batches wait for chained tasks.
    pub fn has_handoff(&self) -> bool {
        !self.handoff.is_empty()
    }

    /// Takes back the emptied buffer of a handed-over batch.
    pub fn recycle(&mut self, mut tuples: Vec<Tuple>) {
        if self.spare.len() < 4 && tuples.capacity() > 0 {
            tuples.clear();
            self.spare.push(tuples);
        }
    }

    /// Follows `peers` for the lanes to other workers' tasks.
    pub(crate) fn follow_peers(&mut self, peers: Arc<PeerRoutes>) {
        let version = peers.version();
        self.peers = Some((peers, version));
    }

    /// Takes up a new placement of other workers' tasks, if there is one: one atomic load per
    /// flush otherwise.
    fn refresh_peers(&mut self) {
        let Some((peers, seen)) = &mut self.peers else { return };
        let version = peers.version();
        if version == *seen {
            return;
        }
        *seen = version;
        let destinations = Arc::make_mut(&mut self.destinations);
        for (task, slot) in destinations.iter_mut().enumerate() {
            let Some(Destination::Remote(old)) = slot else { continue };
            let Some(sender) = peers.sender(task as TaskId) else { continue };
            let sender = if old.is_feedback() { sender.feedback() } else { sender };
            *slot = Some(Destination::Remote(sender));
        }
    }

    /// Attaches a test's instruments.
    pub fn instrument(&mut self, instruments: &Instruments) {
        self.capture = instruments.capture.clone();
        self.in_flight = instruments.in_flight.clone();
        if self.capture.is_some() {
            self.sole_targets.clear();
        }
    }

    /// Sends every buffer that reached the batch size, waiting while a destination is full.
    pub async fn flush_full(&mut self) {
        self.refresh_peers();
        while let Some(task) = self.full.pop() {
            if self.out[task as usize].len() >= self.batch_size || self.control[task as usize].len() >= self.batch_size
            {
                self.send(task).await;
            }
        }
    }

    fn buffered(&self, task: TaskId) -> usize {
        self.out[task as usize].len() + self.control[task as usize].len()
    }

    /// Sends every non-empty buffer.
    pub async fn flush_all(&mut self) {
        self.refresh_peers();
        self.full.clear();
        while let Some(task) = self.dirty.pop() {
            if self.buffered(task) > 0 {
                self.send(task).await;
            }
        }
    }

    /// Whether tuples are waiting to be sent.
    pub fn has_pending(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// The (emitted, transferred) counts since the last call; hands what was captured since to
    /// a test's capture.
    pub fn take_counts(&mut self) -> (u64, u64) {
        if let Some(capture) = &self.capture {
            capture.record(&mut self.captured);
        }
        (std::mem::take(&mut self.emitted), std::mem::take(&mut self.transferred))
    }

    async fn send(&mut self, task: TaskId) {
        let Some(Some(dest)) = self.destinations.get(task as usize) else {
            tracing::warn!(task, "dropping tuples for a task with no executor");
            self.out[task as usize].clear();
            self.control[task as usize].clear();
            return;
        };
        if let Ok(i) = self.ackers.binary_search(&task) {
            self.last_ack[i] = None;
        }
        if let Some(in_flight) = &self.in_flight {
            in_flight.sent(self.buffered(task));
        }
        if let Destination::Chained = dest {
            // The executor runs it: hand the buffer over whole, no queue, no copy.
            let spare = self.spare.pop().unwrap_or_else(|| Vec::with_capacity(self.batch_size));
            let tuples = std::mem::replace(&mut self.out[task as usize], spare);
            let control = std::mem::take(&mut self.control[task as usize]);
            self.handoff.push(Batch { task, tuples, control });
            return;
        }
        // Reuse a buffer the receiver has emptied: warm memory, no allocation per batch.
        let mut tuples = if self.out[task as usize].is_empty() {
            Vec::new()
        } else {
            std::mem::replace(&mut self.out[task as usize], dest.spare_buffer(self.batch_size))
        };
        let control = if self.control[task as usize].is_empty() {
            Vec::new()
        } else {
            std::mem::replace(&mut self.control[task as usize], Vec::with_capacity(self.batch_size))
        };
        // A single call may have emitted more than a queue holds: send it in pieces.
        let capacity = dest.capacity();
        while tuples.len() > capacity {
            let rest = tuples.split_off(capacity);
            if dest.send(Batch { task, tuples, control: Vec::new() }).await.is_err() {
                return;
            }
            tuples = rest;
        }
        let mut batch = Batch { task, tuples, control };
        if batch.len() > capacity {
            let control = std::mem::take(&mut batch.control);
            if dest.send(batch).await.is_err() {
                return;
            }
            for chunk in control.chunks(capacity) {
                let batch = Batch { task, tuples: Vec::new(), control: chunk.to_vec() };
                if dest.send(batch).await.is_err() {
                    return;
                }
            }
            return;
        }
        if dest.send(batch).await.is_err() {
            tracing::debug!(task, "destination executor stopped; dropping its tuples");
        }
    }

    /// Buffers one copy of an emitted tuple for `task`, anchored to `roots` with a new edge
    /// (the root itself for a spout's `sole` copy, see `squall_topology::ack`); returns the
    /// edge, 0 when untracked.
    #[inline(always)]
    fn push_copy(
        &mut self,
        task: TaskId,
        meta: &'static StreamMeta,
        src: TaskId,
        values: Values,
        roots: &[u64],
        sole: bool,
    ) -> u64 {
        if roots.is_empty() {
            // The tracked case is a call of its own: sharing this push, the id went through a
            // stack slot whose read-back stalled store forwarding; here the constant is
            // written straight into the buffered tuple.
            self.push_new(task, meta, src, values, || MessageId::Untracked);
            return 0;
        }
        self.push_anchored(task, meta, src, values, roots, sole)
    }

    /// [`Router::push_copy`] of a tracked tuple.
    #[inline(never)]
    fn push_anchored(
        &mut self,
        task: TaskId,
        meta: &'static StreamMeta,
        src: TaskId,
        values: Values,
        roots: &[u64],
        sole: bool,
    ) -> u64 {
        let edge = if sole { roots[0] } else { fastrand::u64(1..) };
        if let [root] = roots {
            // The usual single tree, without the general case's iterator.
            self.push_new(task, meta, src, values, || MessageId::One([(*root, edge)]));
        } else {
            self.push_new(task, meta, src, values, || MessageId::from_anchors(roots.iter().map(|root| (*root, edge))));
        }
        edge
    }

    /// Buffers a tuple for `task`, made in its slot (see [`push_in_place`]).
    #[inline(always)]
    fn push_new(
        &mut self,
        task: TaskId,
        meta: &'static StreamMeta,
        src: TaskId,
        values: Values,
        id: impl FnOnce() -> MessageId,
    ) {
        let Some(buffer) = self.out.get_mut(task as usize) else {
            tracing::warn!(task, "dropping a tuple for an unknown task");
            return;
        };
        let len = push_in_place(buffer, || Tuple::new(meta, src, values, id()));
        self.note_buffered(task, len);
    }

    /// Buffers a control message for `task`, made in its slot (see [`push_in_place`]).
    #[inline(always)]
    fn push_control(&mut self, task: TaskId, message: impl FnOnce() -> Control) {
        let Some(buffer) = self.control.get_mut(task as usize) else {
            tracing::warn!(task, "dropping a control message for an unknown task");
            return;
        };
        let len = push_in_place(buffer, message);
        self.note_buffered(task, len);
    }

    /// Tuple and control buffers are counted apart: a task may be listed twice as dirty or
    /// full, which the flushes tolerate, and the hot path touches only one buffer.
    fn note_buffered(&mut self, task: TaskId, len: usize) {
        if len == 1 {
            self.dirty.push(task);
        }
        if len == self.batch_size {
            self.full.push(task);
        }
    }

    fn targets(
        &mut self,
        src: TaskId,
        stream: StreamIdx,
        values: &[Value],
        direct: Option<TaskId>,
        targets: &mut Vec<TaskId>,
    ) -> Result<&'static StreamMeta, EmitError> {
        let routes = &self.routes;
        let Some(Some(s)) = routes.streams.get(stream as usize) else {
            return Err(EmitError::UnknownStream { component: routes.component.clone(), stream: format!("#{stream}") });
        };
        if s.direct != direct.is_some() {
            return Err(EmitError::DirectMismatch {
                component: routes.component.clone(),
                stream: s.meta.stream.to_owned(),
                direct: s.direct,
            });
        }
        check_arity(&routes.component, s.meta.stream, s.meta.fields.len(), values)?;
        let choosers = &mut self.choosers[stream as usize];
        for (sub, chooser) in s.subscribers.iter().zip(choosers.iter_mut()) {
            let tasks = &sub.tasks;
            match chooser {
                Chooser::RoundRobin { order, next } => {
                    if !order.is_empty() {
                        targets.push(order[*next]);
                        *next = if *next + 1 == order.len() { 0 } else { *next + 1 };
                    }
                }
                Chooser::Fields => {
                    // One task takes every key: no hash to compute.
                    let task = if tasks.len() == 1 { 0 } else { bucket(key_hash(values, &sub.keys, 0), tasks.len()) };
                    targets.push(tasks[task]);
                }
                Chooser::All => targets.extend(tasks.iter().copied()),
                Chooser::Global => targets.push(tasks[0]),
                Chooser::Direct => {
                    if let Some(task) = direct.filter(|t| tasks.contains(t)) {
                        targets.push(task);
                    }
                }
                Chooser::Random => targets.push(tasks[fastrand::usize(..tasks.len())]),
                Chooser::Forward(task) => targets.push(*task),
                Chooser::PartialKey { load } => {
                    let a = bucket(key_hash(values, &sub.keys, 0), tasks.len());
                    let b = bucket(key_hash(values, &sub.keys, 0x9e37_79b9_7f4a_7c15), tasks.len());
                    let pick = if load[b] < load[a] { b } else { a };
                    load[pick] += 1;
                    targets.push(tasks[pick]);
                }
                Chooser::Custom(grouping) => {
                    self.custom_scratch.clear();
                    grouping.choose_tasks(src, values, &mut self.custom_scratch);
                    for task in self.custom_scratch.drain(..) {
                        if tasks.contains(&task) {
                            targets.push(task);
                        } else {
                            tracing::warn!(task, component = %routes.component, "custom grouping chose a task that does not subscribe; dropped");
                        }
                    }
                }
            }
        }
        if let Some(task) = direct
            && targets.is_empty()
        {
            return Err(EmitError::NotASubscriber {
                component: routes.component.clone(),
                stream: s.meta.stream.to_owned(),
                task,
            });
        }
        Ok(s.meta)
    }
}

impl Router {
    /// [`Transfer::route`] past the one-target fast path: every subscriber's grouping picks
    /// its tasks. Out of line, so the fast path keeps a small frame.
    #[inline(never)]
    fn route_to_subscribers(
        &mut self,
        src: TaskId,
        stream: StreamIdx,
        values: Values,
        direct: Option<TaskId>,
        roots: &[u64],
        sole_root: bool,
    ) -> Result<Routed, EmitError> {
        // A buffer kept across calls rather than a SmallVec on the stack: reading a SmallVec's
        // length right after the push that wrote it stalls store forwarding (its union overlaps
        // a 4-byte task with an 8-byte length), a quarter of routing's time.
        let mut targets = std::mem::take(&mut self.targets_scratch);
        targets.clear();
        let meta = match self.targets(src, stream, &values, direct, &mut targets) {
            Ok(meta) => meta,
            Err(e) => {
                self.targets_scratch = targets;
                return Err(e);
            }
        };
        if self.debug {
            tracing::info!(component = meta.component, stream = meta.stream, task = src, ?values, ?targets, "emit");
        }
        self.emitted += 1;
        if self.capture.is_some() {
            self.captured.push((meta, values.clone()));
        }
        let mut edges_xor = 0;
        // The last copy takes the values themselves, moved once, straight into its buffer.
        let sole = sole_root && targets.len() == 1;
        if let Some((&last, rest)) = targets.split_last() {
            for &task in rest {
                edges_xor ^= self.push_copy(task, meta, src, values.clone(), roots, false);
            }
            edges_xor ^= self.push_copy(last, meta, src, values, roots, sole);
        }
        let tasks = targets.len();
        self.transferred += tasks as u64;
        self.targets_scratch = targets;
        Ok(Routed { tasks, edges: edges_xor })
    }
}

impl Transfer for Router {
    fn stream_index(&self, _task: TaskId, stream: &str) -> Result<StreamIdx, EmitError> {
        self.routes
            .streams
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.meta.stream == stream))
            .map(|i| i as StreamIdx)
            .ok_or_else(|| EmitError::UnknownStream {
                component: self.routes.component.clone(),
                stream: stream.to_owned(),
            })
    }

    fn route(
        &mut self,
        src: TaskId,
        stream: StreamIdx,
        values: Values,
        direct: Option<TaskId>,
        roots: &[u64],
    ) -> Result<Routed, EmitError> {
        // Set by `route_root` for this one call: a field rather than a parameter lets
        // `route_root` call this instead of being a second copy of it.
        let sole_root = std::mem::take(&mut self.sole_root);
        if direct.is_none()
            && let Some(Some(sole)) = self.sole_targets.get(stream as usize)
            && sole.arity == values.len()
        {
            let (task, meta) = (sole.task, sole.meta);
            self.emitted += 1;
            self.transferred += 1;
            let edges = self.push_copy(task, meta, src, values, roots, sole_root);
            return Ok(Routed { tasks: 1, edges });
        }
        self.route_to_subscribers(src, stream, values, direct, roots, sole_root)
    }

    fn route_root(
        &mut self,
        src: TaskId,
        stream: StreamIdx,
        values: Values,
        direct: Option<TaskId>,
        root: u64,
    ) -> Result<Routed, EmitError> {
        // Every bolt subscribed to a spout reaches its tasks (`destinations_of`), so the sole
        // copy's bolt can tell the spout itself.
        self.sole_root = true;
        self.route(src, stream, values, direct, &[root])
    }

    fn acking(&self) -> bool {
        !self.ackers.is_empty()
    }

    fn to_acker(&mut self, message: AckerMessage) {
        if self.ackers.is_empty() {
            return;
        }
        // The top bits of a root id are random (`PendingTrees`): they pick the acker evenly.
        let index = bucket(message.root(), self.ackers.len());
        let acker = self.ackers[index];
        if let AckerMessage::Ack { root, value } = message {
            // XOR is associative: consecutive acks of one tree waiting in the same buffer merge
            // into one message (a word count's eight word acks become one).
            let buffer = &mut self.control[acker as usize];
            if let Some((last_root, i)) = self.last_ack[index]
                && last_root == root
                && let Some(Control::Acker(AckerMessage::Ack { value: unsent, .. })) = buffer.get_mut(i)
            {
                *unsent ^= value;
                return;
            }
            self.last_ack[index] = Some((root, buffer.len()));
            // Made again from its fields, which are at hand, rather than copied from `message`.
            self.push_control(acker, || Control::Acker(AckerMessage::Ack { root, value }));
            return;
        }
        self.push_control(acker, || Control::Acker(message));
    }

    fn notify_spout(&mut self, spout_task: TaskId, notice: SpoutNotice) {
        self.push_control(spout_task, || Control::Notice(notice));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use squall_topology::{ChainPlan, Str, TopologyBuilder, Value};

    use super::*;
    use crate::test_components::{Sink, Words};

    /// The router of `words`' one executor in `builder`'s topology.
    fn router(builder: TopologyBuilder, debug: bool) -> Router {
        let topology = builder.build().expect("a valid topology");
        let chains = ChainPlan::new(&topology.spec(), &BTreeMap::new());
        let (_, routes) = ComponentRoutes::for_topology(&topology, &chains)
            .into_iter()
            .find(|(component, _)| component == "words")
            .expect("routes of words");
        Router::new(routes, Arc::new(vec![None; 8]), Arc::from([]), 64, debug, 0, &|_| true)
    }

    fn word(text: &str) -> Values {
        Values::from_iter([Value::Str(Str::new(text))])
    }

    /// Tasks with buffered tuples, and how many each has.
    fn buffered(router: &Router) -> Vec<(TaskId, usize)> {
        router.out.iter().enumerate().filter(|(_, b)| !b.is_empty()).map(|(t, b)| (t as TaskId, b.len())).collect()
    }

    #[test]
    fn a_stream_with_one_target_task_routes_straight_to_it() {
        let mut b = TopologyBuilder::new();
        b.spout("words", Words, 1);
        b.bolt("sink", Sink, 1).fields_grouping("words", ["word"]).direct_grouping(("words", "direct"));
        let mut router = router(b, false);
        let sole = router.sole_targets[0].expect("default has one target task");
        assert!(router.sole_targets[2].is_none(), "a direct stream takes the general path");

        for text in ["a", "b", "c"] {
            let routed = router.route(2, 0, word(text), None, &[]).expect("routed");
            assert_eq!((routed.tasks, routed.edges), (1, 0));
        }
        assert_eq!(buffered(&router), [(sole.task, 3)]);
        let texts: Vec<&str> = router.out[sole.task as usize].iter().map(|t| t.str(0).unwrap_or("?")).collect();
        assert_eq!(texts, ["a", "b", "c"]);
        assert_eq!(router.take_counts(), (3, 3));

        // A wrong arity takes the general path, which names it.
        let two = Values::from_iter([Value::U64(1), Value::U64(2)]);
        assert!(matches!(router.route(2, 0, two, None, &[]), Err(EmitError::Arity { expected: 1, found: 2, .. })));
        // A tracked emit gets its tree's root as the sole copy's edge.
        router.sole_root = true;
        let routed = router.route(2, 0, word("d"), None, &[7]).expect("routed");
        assert_eq!((routed.tasks, routed.edges), (1, 7));
        assert_eq!(buffered(&router), [(sole.task, 4)]);
    }

    #[test]
    fn a_stream_read_by_two_components_reaches_both() {
        let mut b = TopologyBuilder::new();
        b.spout("words", Words, 1);
        b.bolt("sink", Sink, 1).shuffle_grouping("words");
        b.bolt("tap", Sink, 1).all_grouping("words");
        let mut router = router(b, false);
        assert!(router.sole_targets[0].is_none());
        let routed = router.route(2, 0, word("a"), None, &[]).expect("routed");
        assert_eq!(routed.tasks, 2);
        assert_eq!(buffered(&router).len(), 2);
    }

    #[test]
    fn debug_logging_keeps_every_emit_on_the_general_path() {
        let mut b = TopologyBuilder::new();
        b.spout("words", Words, 1);
        b.bolt("sink", Sink, 1).shuffle_grouping("words");
        let mut router = router(b, true);
        assert!(router.sole_targets.is_empty());
        router.route(2, 0, word("a"), None, &[]).expect("routed");
        assert_eq!(buffered(&router).iter().map(|(_, n)| n).sum::<usize>(), 1);
    }
}
