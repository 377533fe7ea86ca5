//! Tuples between workers over TCP.
//!
//! A worker sends to another through *lanes*: one connection per (remote worker, destination
//! component), each with its [`RemoteSender`] queue and writer task. The receiving worker's
//! [`TransportServer`] reads each connection in its own task and puts every batch into the local
//! inbox of its task, waiting for room: that wait is the backpressure across the wire (the
//! reader stops reading, TCP's window fills, the writer's `write` waits, the lane's queue fills
//! and the routers sending to it wait, as they would on a local inbox).
//!
//! Why one connection per destination component rather than one per worker: a reader blocked on
//! one full inbox holds up everything behind it on its connection. If acks to an acker, notices
//! to a spout or tuples to another bolt shared that connection, a full bolt could stall the very
//! traffic that would drain it (bolt waits on acker, acker on the connection, the connection on
//! the bolt) — a deadlock local mode cannot have, since there every executor has its own queue.
//! With a lane per component, a blocked reader only holds up tuples for the component that is
//! full, which is exactly the local wait-for graph.
//!
//! A lane ends with a Bye frame once every executor feeding it has stopped; the receiver then
//! drops its senders to the inboxes behind that lane, so a bolt's queue closes when everything
//! upstream of it, local or remote, has stopped: a finished topology drains across workers as it
//! does in one process.
//!
//! Anyone who can reach a worker's port is a peer until its Hello is checked, and even then
//! only tuples are trusted, never sizes: frames are read by a [`FrameReader`] (buffers grow as
//! bytes arrive; a frame under way must end within `topology.transport.frame.timeout.secs`), a
//! first frame may not exceed [`MAX_HELLO_LENGTH`], a refused peer is told only the kind of
//! refusal, and warnings about bad connections are rate-limited.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::BytesMut;
use squall_topology::{TaskId, Tuple};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::executor::TopologyStatus;
use crate::framing::{FrameError, FrameReader, LENGTH_PREFIX};
use crate::inbox::{Batch, InboxClosed, InboxReceiver, InboxSender, WeakInboxSender, inbox};
use crate::log_limit::{WarnLimiter, peer_warning};
use crate::transport_metrics::{LaneGauge, TransportMetrics};
use crate::wire::{
    BatchEncoder, Frame, Hello, MAX_FRAME_LENGTH, MAX_HELLO_LENGTH, Reject, RejectReason, StreamTable, WIRE_VERSION,
    decode_control_frame, decode_frame, encode_bye, encode_hello, encode_reject,
};

/// The first reconnection delay; doubled after every failed attempt (as Storm's Netty client).
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest reconnection delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a connection attempt may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an accepted connection has to send its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A writer stops coalescing queued batches into one write once this many bytes are ready.
const WRITE_TARGET: usize = 1 << 20;
/// Failed connection attempts are logged at debug level (a peer starting later is normal),
/// and at warn level every this many attempts.
const WARN_EVERY: u32 = 30;
/// A server logs at most one warning per kind of bad connection this often (each one at debug).
pub const BAD_CONNECTION_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Who this worker is on the wire, shared by its writers and its server.
#[derive(Debug)]
pub struct WireIdentity {
    /// The topology id (with its version) every connection's Hello carries.
    pub topology_id: String,
    /// This worker's address as its peers know it, `host:port`.
    pub worker: String,
    /// The topology's streams, to encode and rebuild tuples.
    pub table: Arc<StreamTable>,
    /// How long a frame that has begun to arrive may take to end, on any connection
    /// (`topology.transport.frame.timeout.secs`, 30 s by default).
    pub frame_timeout: Duration,
    /// The worker's transport counters, kept by its writers and its server.
    pub metrics: Arc<TransportMetrics>,
}

/// How a Hello differs from what this worker expects. Only for the local log: the peer is told
/// [`RejectReason::public_message`].
#[derive(Debug, thiserror::Error)]
enum Mismatch {
    #[error("wire version {theirs} is not {WIRE_VERSION}")]
    Version { theirs: u32 },
    #[error("topology `{theirs}` is not `{ours}`")]
    Topology { theirs: String, ours: String },
    #[error("topology `{topology}` has different tasks or streams here (fingerprint {theirs:016x}, not {ours:016x})")]
    Fingerprint { topology: String, theirs: u64, ours: u64 },
}

impl WireIdentity {
    fn check(&self, hello: &Hello) -> Result<(), Mismatch> {
        if hello.version != WIRE_VERSION {
            return Err(Mismatch::Version { theirs: hello.version });
        }
        if hello.topology_id != self.topology_id {
            return Err(Mismatch::Topology { theirs: hello.topology_id.clone(), ours: self.topology_id.clone() });
        }
        if hello.fingerprint != self.table.fingerprint() {
            return Err(Mismatch::Fingerprint {
                topology: self.topology_id.clone(),
                theirs: hello.fingerprint,
                ours: self.table.fingerprint(),
            });
        }
        Ok(())
    }
}

/// One lane: the tasks of one component on one remote worker.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lane {
    /// The remote worker's address.
    pub peer: SocketAddr,
    /// The component whose tasks there the lane feeds.
    pub component: String,
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.component, self.peer)
    }
}

/// The sending end of a lane, cloned into every router of the worker that reaches it. Its queue
/// is bounded in tuples like an inbox; a writer task drains it into the connection.
#[derive(Clone, Debug)]
pub struct RemoteSender {
    queue: InboxSender,
    lane: Arc<Lane>,
}

impl RemoteSender {
    /// A lane queue holding at most `capacity` tuples and the writer task that connects to the
    /// peer and drains it until every clone of the sender is dropped (then says Bye) or the
    /// topology is stopped.
    pub fn spawn(
        lane: Lane,
        capacity: usize,
        identity: Arc<WireIdentity>,
        status: watch::Receiver<TopologyStatus>,
    ) -> (RemoteSender, JoinHandle<()>) {
        let (tx, rx) = inbox(capacity);
        let lane = Arc::new(lane);
        let gauge = identity.metrics.lane(lane.clone(), rx.stats().clone());
        let writer = Writer {
            lane: lane.clone(),
            gauge,
            queue: rx,
            encoder: BatchEncoder::new(identity.table.clone()),
            identity,
            status,
            buf: BytesMut::with_capacity(64 << 10),
            finishing: false,
        };
        (RemoteSender { queue: tx, lane }, tokio::spawn(writer.run()))
    }

    /// Queues a batch for the peer, waiting while the lane is full. Fails once the topology is
    /// stopped (the writer is gone), never waits forever on a peer that is gone.
    pub async fn send(&self, batch: Batch) -> Result<(), InboxClosed> {
        self.queue.send(batch).await
    }

    /// The most tuples a batch sent here may hold.
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// An empty buffer for the next batch, reused from one the writer has encoded.
    pub fn spare_buffer(&self, capacity: usize) -> Vec<Tuple> {
        self.queue.spare_buffer(capacity)
    }

    /// Where the lane goes.
    pub fn lane(&self) -> &Lane {
        &self.lane
    }

    /// The same lane for a cycle's own edge: queueing never waits for room.
    pub(crate) fn feedback(&self) -> RemoteSender {
        RemoteSender { queue: self.queue.feedback(), lane: self.lane.clone() }
    }

    pub(crate) fn queue(&self) -> &InboxSender {
        &self.queue
    }

    /// Whether this is a cycle's own edge (see [`RemoteSender::feedback`]).
    pub(crate) fn is_feedback(&self) -> bool {
        self.queue.is_feedback()
    }

    /// A handle that does not keep the lane open.
    pub(crate) fn downgrade(&self) -> WeakRemoteSender {
        WeakRemoteSender { queue: self.queue.downgrade(), lane: self.lane.clone() }
    }
}

/// A [`RemoteSender`] that does not keep its lane open.
#[derive(Clone, Debug)]
pub(crate) struct WeakRemoteSender {
    queue: WeakInboxSender,
    lane: Arc<Lane>,
}

impl WeakRemoteSender {
    /// The sender, while a router still holds one.
    pub(crate) fn upgrade(&self) -> Option<RemoteSender> {
        Some(RemoteSender { queue: self.queue.upgrade()?, lane: self.lane.clone() })
    }
}

fn is_stopped(status: &watch::Receiver<TopologyStatus>) -> bool {
    // A dropped sender means the topology that ran us is gone: stop too.
    status.has_changed().is_err() || *status.borrow() == TopologyStatus::Stopped
}

/// Runs `fut` unless the topology stops first (then `None`).
async fn unless_stopped<F: Future>(status: &mut watch::Receiver<TopologyStatus>, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    loop {
        if is_stopped(status) {
            return None;
        }
        tokio::select! {
            out = &mut fut => return Some(out),
            changed = status.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
        }
    }
}

/// How one connection of a writer ended.
enum Ended {
    /// Bye sent and the peer closed: the lane is done.
    Finished,
    /// The topology was stopped.
    Stopped,
    /// The connection failed; `tuples` were in the failed write.
    Lost { tuples: u64, error: String },
    /// The peer refused the Hello.
    Rejected(Reject),
}

struct Writer {
    lane: Arc<Lane>,
    gauge: Arc<LaneGauge>,
    queue: InboxReceiver,
    identity: Arc<WireIdentity>,
    encoder: BatchEncoder,
    status: watch::Receiver<TopologyStatus>,
    buf: BytesMut,
    /// Every sender is gone: the next connection only says Bye.
    finishing: bool,
}

impl Writer {
    async fn run(mut self) {
        let peer = self.lane.peer;
        let component = self.lane.component.as_str().to_owned();
        let mut backoff = BACKOFF_MIN;
        let mut attempts = 0u32;
        let mut rejections = 0u32;
        loop {
            let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer));
            let Some(connected) = unless_stopped(&mut self.status, connect).await else { return self.stopped() };
            let error = match connected {
                Ok(Ok(stream)) => {
                    if attempts >= WARN_EVERY {
                        tracing::info!(%peer, component, attempts, "connected to peer worker");
                    } else {
                        tracing::debug!(%peer, component, "connected to peer worker");
                    }
                    attempts = 0;
                    backoff = BACKOFF_MIN;
                    self.identity.metrics.connected(&self.gauge);
                    let ended = self.serve(stream).await;
                    let lost = match &ended {
                        Ended::Lost { tuples, .. } => Some(*tuples),
                        _ => None,
                    };
                    self.identity.metrics.disconnected(&self.gauge, lost);
                    match ended {
                        Ended::Finished => {
                            tracing::debug!(%peer, component, "lane finished");
                            return;
                        }
                        Ended::Stopped => return self.stopped(),
                        Ended::Lost { tuples, error } => {
                            rejections = 0;
                            // Acking replays what was lost, as with Storm's Netty client.
                            tracing::warn!(%peer, component, tuples, error, "connection to peer worker lost; tuples in the failed write are dropped");
                            None
                        }
                        Ended::Rejected(reject) if reject.reason == RejectReason::LaneClosed && self.finishing => {
                            tracing::debug!(%peer, component, "lane already closed by the peer");
                            return;
                        }
                        Ended::Rejected(reject) => {
                            // A plan the peer does not share; it may be replaced, so keep trying
                            // slowly, saying so now and then.
                            rejections = rejections.saturating_add(1);
                            if rejections == 1 || rejections.is_multiple_of(WARN_EVERY) {
                                tracing::warn!(%peer, component, rejections, reason = ?reject.reason, message = reject.message, "peer worker rejected this worker");
                            }
                            backoff = BACKOFF_MAX;
                            None
                        }
                    }
                }
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("no answer within {CONNECT_TIMEOUT:?}")),
            };
            if let Some(error) = error {
                self.identity.metrics.connect_failed();
                attempts = attempts.saturating_add(1);
                if attempts.is_multiple_of(WARN_EVERY) {
                    tracing::warn!(%peer, component, attempts, error, "cannot connect to peer worker; retrying");
                } else {
                    tracing::debug!(%peer, component, attempts, error, "cannot connect to peer worker; retrying");
                }
            }
            if unless_stopped(&mut self.status, tokio::time::sleep(backoff)).await.is_none() {
                return self.stopped();
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn stopped(&self) {
        // Dropping the queue wakes the routers waiting on it: they get `InboxClosed`.
        tracing::debug!(peer = %self.lane.peer, component = self.lane.component, queued = self.queue.stats().depth(), "lane stopped");
    }

    async fn serve(&mut self, stream: TcpStream) -> Ended {
        // Batches are coalesced here already; Nagle's algorithm would only add latency.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(peer = %self.lane.peer, error = %e, "cannot set TCP_NODELAY");
        }
        let (read, mut write) = stream.into_split();
        // The peer only ever sends a Reject: no more than a Hello's worth.
        let mut replies = FrameReader::new(read, MAX_HELLO_LENGTH, self.identity.frame_timeout);
        self.buf.clear();
        let hello = Hello {
            topology_id: self.identity.topology_id.clone(),
            worker: self.identity.worker.clone(),
            component: self.lane.component.clone(),
            fingerprint: self.identity.table.fingerprint(),
            version: WIRE_VERSION,
        };
        if let Err(e) = encode_hello(&mut self.buf, &hello) {
            return Ended::Lost { tuples: 0, error: e.to_string() };
        }
        if let Some(ended) = self.write(&mut write, 0).await {
            return ended;
        }
        loop {
            if is_stopped(&self.status) {
                return Ended::Stopped;
            }
            if self.finishing {
                return self.say_bye(&mut write, &mut replies).await;
            }
            tokio::select! {
                biased;
                changed = self.status.changed() => {
                    if changed.is_err() {
                        return Ended::Stopped;
                    }
                }
                // The peer only ever answers to refuse us; anything else ends the connection.
                reply = replies.next() => return reply_ended(reply),
                batch = self.queue.recv() => match batch {
                    None => self.finishing = true,
                    Some(batch) => {
                        let mut tuples = self.encode(batch);
                        // Coalesce whatever else is queued into the same write.
                        while self.buf.len() < WRITE_TARGET {
                            let Some(batch) = self.queue.try_recv() else { break };
                            tuples += self.encode(batch);
                        }
                        self.encoder.finish(&mut self.buf);
                        let skipped = self.encoder.take_skipped();
                        if skipped > 0 {
                            tracing::warn!(peer = %self.lane.peer, component = self.lane.component, skipped, "tuples that cannot cross the wire were dropped");
                        }
                        if let Some(ended) = self.write(&mut write, tuples).await {
                            return ended;
                        }
                    }
                },
            }
        }
    }

    /// Encodes a batch into the write buffer and recycles its tuple buffer; returns its size.
    fn encode(&mut self, mut batch: Batch) -> u64 {
        let tuples = batch.len() as u64;
        if let Err(e) = self.encoder.push(&mut self.buf, &batch) {
            tracing::error!(peer = %self.lane.peer, component = self.lane.component, tuples, error = %e, "cannot encode a batch; dropped");
        }
        self.queue.recycle(std::mem::take(&mut batch.tuples));
        tuples
    }

    /// Writes and clears the buffer; `Some` when the connection ended.
    async fn write(&mut self, write: &mut OwnedWriteHalf, tuples: u64) -> Option<Ended> {
        let written = unless_stopped(&mut self.status, write.write_all(&self.buf)).await;
        let bytes = self.buf.len();
        self.buf.clear();
        match written {
            None => Some(Ended::Stopped),
            Some(Err(e)) => Some(Ended::Lost { tuples, error: e.to_string() }),
            Some(Ok(())) => {
                self.identity.metrics.sent(bytes, tuples);
                None
            }
        }
    }

    /// Every router feeding the lane has stopped: tells the peer, then waits for it to close
    /// the connection, which it does once it has delivered everything before the Bye.
    async fn say_bye(&mut self, write: &mut OwnedWriteHalf, replies: &mut FrameReader<OwnedReadHalf>) -> Ended {
        if let Err(e) = encode_bye(&mut self.buf) {
            return Ended::Lost { tuples: 0, error: e.to_string() };
        }
        if let Some(ended) = self.write(write, 0).await {
            return ended;
        }
        match unless_stopped(&mut self.status, replies.next()).await {
            None => Ended::Stopped,
            Some(Ok(None)) => Ended::Finished,
            Some(reply) => reply_ended(reply),
        }
    }
}

fn reply_ended(reply: Result<Option<&[u8]>, FrameError>) -> Ended {
    match reply {
        Ok(None) => Ended::Lost { tuples: 0, error: "the peer closed the connection".to_owned() },
        Err(e) => Ended::Lost { tuples: 0, error: e.to_string() },
        Ok(Some(frame)) => match decode_control_frame(frame) {
            Ok(Frame::Reject(reject)) => Ended::Rejected(reject),
            Ok(_) => Ended::Lost { tuples: 0, error: "unexpected frame from the peer".to_owned() },
            Err(e) => Ended::Lost { tuples: 0, error: e.to_string() },
        },
    }
}

/// The local inboxes one lane may feed, by task id.
type LaneInboxes = Arc<Vec<Option<InboxSender>>>;

#[derive(Debug)]
enum LaneState {
    /// Until the peer says Bye, this holds the lane's senders so the inboxes stay open.
    Open(LaneInboxes),
    Closed,
}

/// The lanes a worker accepts, by (peer worker, component).
#[derive(Debug, Default)]
pub struct InboundLanes {
    lanes: Mutex<HashMap<(SocketAddr, String), LaneState>>,
}

impl InboundLanes {
    /// No lanes.
    pub fn new() -> Self {
        InboundLanes::default()
    }

    /// Expects `peer` to send batches for `component`'s tasks, delivered to `inboxes` (by task
    /// id). The inboxes stay open until that peer says Bye on that lane.
    pub fn expect(&mut self, peer: SocketAddr, component: &str, inboxes: Vec<Option<InboxSender>>) {
        let lanes = self.lanes.get_mut().unwrap_or_else(|e| e.into_inner());
        lanes.insert((peer, component.to_owned()), LaneState::Open(Arc::new(inboxes)));
    }

    /// Replaces the expected lanes by `expected` (peer worker, local component) while the worker
    /// runs: lanes of peers that left are dropped (their inboxes no longer wait for a Bye), new
    /// ones are opened. A lane of a peer in `fresh` (a new worker, or one restarted with other
    /// tasks) is opened again even if its previous process said Bye; a kept peer's closed lane
    /// stays closed, so a draining topology still finishes.
    pub fn retarget(&self, expected: &HashSet<(SocketAddr, String)>, fresh: &HashSet<SocketAddr>) {
        let mut lanes = self.lock();
        // Every lane into one component delivers to the same inboxes.
        let mut inboxes_of: HashMap<String, LaneInboxes> = HashMap::new();
        for ((_, component), state) in lanes.iter() {
            if let LaneState::Open(inboxes) = state {
                inboxes_of.entry(component.clone()).or_insert_with(|| inboxes.clone());
            }
        }
        lanes.retain(|key, _| expected.contains(key));
        for key in expected {
            let reopen = match lanes.get(key) {
                None => true,
                Some(LaneState::Closed) => fresh.contains(&key.0),
                Some(LaneState::Open(_)) => false,
            };
            if !reopen {
                continue;
            }
            match inboxes_of.get(&key.1) {
                Some(inboxes) => {
                    lanes.insert(key.clone(), LaneState::Open(inboxes.clone()));
                }
                None => tracing::debug!(peer = %key.0, component = key.1, "no open inbox to route a new lane to"),
            }
        }
    }

    /// How many lanes are expected.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no lane is expected.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// A connection's view of its lane: it does not keep the inboxes open by itself, so a stale
    /// connection cannot hold up a finished topology.
    fn open(&self, peer: SocketAddr, component: &str) -> Result<Weak<Vec<Option<InboxSender>>>, RejectReason> {
        match self.lock().get(&(peer, component.to_owned())) {
            Some(LaneState::Open(inboxes)) => Ok(Arc::downgrade(inboxes)),
            Some(LaneState::Closed) => Err(RejectReason::LaneClosed),
            None => Err(RejectReason::UnknownLane),
        }
    }

    fn close(&self, peer: SocketAddr, component: &str) {
        self.lock().insert((peer, component.to_owned()), LaneState::Closed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(SocketAddr, String), LaneState>> {
        // Every update is a single insert: a poisoned map is still consistent.
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Accepts peer workers' connections and delivers their batches into local inboxes.
pub struct TransportServer {
    listener: TcpListener,
    shared: Arc<ServerShared>,
    status: watch::Receiver<TopologyStatus>,
}

struct ServerShared {
    identity: Arc<WireIdentity>,
    lanes: Arc<InboundLanes>,
    /// Bad connections are the peer's to multiply: their warnings are rate-limited.
    warnings: WarnLimiter,
}

impl TransportServer {
    /// A server on `listener` for the lanes this worker expects.
    pub fn new(
        listener: TcpListener,
        identity: Arc<WireIdentity>,
        lanes: Arc<InboundLanes>,
        status: watch::Receiver<TopologyStatus>,
    ) -> Self {
        let warnings = WarnLimiter::new(BAD_CONNECTION_WARN_INTERVAL);
        TransportServer { listener, shared: Arc::new(ServerShared { identity, lanes, warnings }), status }
    }

    /// Serves until the topology is stopped: one task per connection.
    pub async fn run(mut self) {
        let mut connections = JoinSet::new();
        loop {
            if is_stopped(&self.status) {
                break;
            }
            tokio::select! {
                changed = self.status.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(serve_connection(stream, peer, self.shared.clone(), self.status.clone()));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(BACKOFF_MIN).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.shutdown().await;
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<ServerShared>,
    mut status: watch::Receiver<TopologyStatus>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    let (read, mut write) = stream.into_split();
    // Until its Hello is checked, a peer may not send more than a Hello.
    let mut frames = FrameReader::new(read, MAX_HELLO_LENGTH, shared.identity.frame_timeout);
    let warnings = &shared.warnings;
    let first = match unless_stopped(&mut status, tokio::time::timeout(HELLO_TIMEOUT, frames.next())).await {
        None => return,
        Some(Err(_)) => {
            peer_warning!(warnings, "dropping connection: no hello in time", %peer);
            return;
        }
        Some(Ok(Ok(None))) => {
            tracing::debug!(%peer, "connection closed before its hello");
            return;
        }
        Some(Ok(Err(e))) => {
            peer_warning!(warnings, "dropping connection: unreadable hello", %peer, error = %e);
            return;
        }
        Some(Ok(Ok(Some(frame)))) => frame,
    };
    let hello_bytes = first.len() + LENGTH_PREFIX;
    let hello = match decode_control_frame(first) {
        Ok(Frame::Hello(hello)) => hello,
        Ok(_) => {
            return refuse(&mut write, peer, warnings, RejectReason::BadHello, "the first frame is not a hello").await;
        }
        Err(e) => return refuse(&mut write, peer, warnings, RejectReason::BadHello, &e.to_string()).await,
    };
    if let Err(mismatch) = shared.identity.check(&hello) {
        return refuse(&mut write, peer, warnings, RejectReason::WrongTopology, &mismatch.to_string()).await;
    }
    let Ok(worker) = hello.worker.parse::<SocketAddr>() else {
        let detail = format!("worker `{}` is not an address", hello.worker);
        return refuse(&mut write, peer, warnings, RejectReason::BadHello, &detail).await;
    };
    let component = hello.component;
    let lane = match shared.lanes.open(worker, &component) {
        Ok(lane) => lane,
        Err(reason) => {
            let detail = format!("this worker expects no tuples for `{component}` from {worker}");
            return refuse(&mut write, peer, warnings, reason, &detail).await;
        }
    };
    tracing::debug!(%peer, %worker, component, "accepted connection from peer worker");
    shared.identity.metrics.received(hello_bytes, 0);
    frames.set_limit(MAX_FRAME_LENGTH);
    let table = &shared.identity.table;
    let mut batches: Vec<Batch> = Vec::new();
    loop {
        let frame = match unless_stopped(&mut status, frames.next()).await {
            None => return,
            Some(Ok(None)) => {
                tracing::debug!(%peer, %worker, component, "peer worker closed the connection");
                return;
            }
            Some(Err(e @ FrameError::Stalled { .. })) => {
                peer_warning!(warnings, "dropping connection: stalled frame", %peer, %worker, component, error = %e);
                return;
            }
            Some(Err(e)) => {
                peer_warning!(warnings, "dropping connection: unreadable frame", %peer, %worker, component, error = %e);
                return;
            }
            Some(Ok(Some(frame))) => frame,
        };
        let Some(inboxes) = lane.upgrade() else {
            tracing::debug!(%peer, %worker, component, "frame on a closed lane; dropping connection");
            return;
        };
        let bytes = frame.len() + LENGTH_PREFIX;
        let decoded = decode_frame(frame, table, &mut batches, &mut |task: TaskId, hint: usize| {
            inboxes.get(task as usize)?.as_ref().map(|inbox| inbox.spare_buffer(hint))
        });
        match decoded {
            Ok(Frame::Batches) => {
                shared.identity.metrics.received(bytes, batches.iter().map(Batch::len).sum());
                for batch in batches.drain(..) {
                    let Some(Some(inbox)) = inboxes.get(batch.task as usize) else { continue };
                    // Waiting for room, the socket is not read: this is the backpressure.
                    match unless_stopped(&mut status, inbox.send(batch)).await {
                        None => return,
                        Some(Err(InboxClosed)) => {
                            tracing::debug!(%worker, component, "executor stopped; dropping its tuples");
                        }
                        Some(Ok(())) => {}
                    }
                }
                // The executors just woken would run on this thread, after this task, and
                // nowhere else (tokio's next-task slot is not stolen): reading and executing
                // then take turns on one core. Yielding puts this task where an idle thread
                // takes it, so decoding the next frame and executing this one run side by side.
                tokio::task::yield_now().await;
            }
            Ok(Frame::Bye) => {
                shared.identity.metrics.received(bytes, 0);
                tracing::debug!(%peer, %worker, component, "peer worker finished sending");
                shared.lanes.close(worker, &component);
                return;
            }
            Ok(_) => {
                peer_warning!(warnings, "dropping connection: unexpected frame", %peer, %worker, component);
                return;
            }
            Err(e) => {
                peer_warning!(warnings, "dropping connection: undecodable frame", %peer, %worker, component, error = %e);
                return;
            }
        }
    }
}

/// Refuses a peer's Hello: the local log says why (rate-limited), the peer is told only the
/// kind of refusal.
async fn refuse(
    write: &mut OwnedWriteHalf,
    peer: SocketAddr,
    warnings: &WarnLimiter,
    reason: RejectReason,
    detail: &str,
) {
    match reason {
        RejectReason::WrongTopology => {
            peer_warning!(warnings, "refusing connection: wrong topology or version", %peer, detail);
        }
        RejectReason::UnknownLane => peer_warning!(warnings, "refusing connection: unknown lane", %peer, detail),
        RejectReason::LaneClosed => peer_warning!(warnings, "refusing connection: lane closed", %peer, detail),
        RejectReason::BadHello => peer_warning!(warnings, "refusing connection: bad hello", %peer, detail),
    }
    let reject = Reject { reason, message: reason.public_message().to_owned() };
    let mut buf = BytesMut::new();
    if encode_reject(&mut buf, &reject).is_ok() {
        // Best effort: the peer may already be gone, and it is dropped either way.
        let _ = tokio::time::timeout(Duration::from_secs(1), write.write_all(&buf)).await;
    }
}
