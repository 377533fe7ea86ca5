//! One topology across several workers connected over loopback TCP: exact results with acking,
//! backpressure across the wire, workers that start late, connections that drop, and peers that
//! send garbage or belong to another topology.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::StreamExt;
use squall::prelude::*;
use squall::{ACKER_COMPONENT, ComponentError, ReplayQueue, TaskId};
use squall_tests::{Countdowns, Decrement, Log, Recorder, SequenceSpout, lock};
use squall_worker::wire::{
    Frame, Hello, RejectReason, StreamTable, WIRE_VERSION, codec, decode_control_frame, encode_hello,
};
use squall_worker::{RunningTopology, TopologyStatus, TransportSnapshot, WorkerPlan};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

const SENTENCES: [&str; 5] = [
    "the quick brown fox jumps over the lazy dog",
    "an apple a day keeps the doctor away",
    "to be or not to be",
    "all that glitters is not gold",
    "the cow jumped over the moon",
];

/// A numbered sentence.
#[derive(Tuple, Debug, Clone)]
struct Sentence {
    id: u64,
    text: Str,
}

/// A word and where it comes from, so replays can be told apart from new words.
#[derive(Tuple, Debug, Clone)]
struct Word {
    word: Str,
    sentence: u64,
    pos: u64,
}

/// What the spout tasks heard back.
#[derive(Default, Debug)]
struct SpoutLog {
    emitted: u64,
    acked: Vec<u64>,
    failed: Vec<u64>,
}

/// What the count tasks saw.
#[derive(Default, Debug)]
struct CountLog {
    /// Distinct (sentence, position) pairs per word.
    counts: HashMap<String, u64>,
    seen: HashSet<(u64, u64)>,
    duplicates: u64,
    /// The tasks that received each word.
    tasks: HashMap<String, HashSet<TaskId>>,
}

/// A replay queue per spout task: cloning the prototype gives each task an empty one.
#[derive(Debug, Default)]
struct Pending(ReplayQueue<u64, Sentence>);

impl Clone for Pending {
    fn clone(&self) -> Self {
        Pending::default()
    }
}

/// Emits `per_task` sentences per task with message ids (ids of task i start at i * per_task),
/// only as many as `released` allows, replays what fails, and is done once all are acked.
#[derive(Clone, Spout)]
#[squall(output = Sentence)]
struct Sentences {
    per_task: u64,
    released: Arc<AtomicU64>,
    log: Arc<Mutex<SpoutLog>>,
    pending: Pending,
    base: u64,
    next: u64,
}

impl Spout for Sentences {
    type MsgId = u64;

    async fn open(&mut self, ctx: &TopologyContext) -> Result<(), ComponentError> {
        self.base = ctx.task_index() as u64 * self.per_task;
        Ok(())
    }

    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        if let Some((id, sentence)) = self.pending.0.next_replay() {
            out.emit_with_id(sentence, id)?;
            return Ok(());
        }
        if self.next < self.per_task && self.next < self.released.load(Ordering::Relaxed) {
            let id = self.base + self.next;
            self.next += 1;
            let sentence = Sentence { id, text: Str::new_static(SENTENCES[(id % SENTENCES.len() as u64) as usize]) };
            self.pending.0.track(id, sentence.clone());
            out.emit_with_id(sentence, id)?;
            lock(&self.log).emitted += 1;
        } else if self.next == self.per_task && self.pending.0.is_empty() {
            out.done();
        }
        Ok(())
    }

    async fn ack(&mut self, id: u64) {
        self.pending.0.ack(&id);
        lock(&self.log).acked.push(id);
    }

    async fn fail(&mut self, id: u64) {
        self.pending.0.fail(id);
        lock(&self.log).failed.push(id);
    }
}

/// Splits sentences into words, anchored to the sentence.
#[derive(Clone, Bolt)]
#[squall(output = Word)]
struct Split;

impl Bolt for Split {
    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let Sentence { id, text } = input.to()?;
        for (pos, word) in text.split(' ').enumerate() {
            out.emit(Word { word: Str::new(word), sentence: id, pos: pos as u64 })?;
        }
        Ok(())
    }
}

/// Counts words (each (sentence, position) once) and records which task saw each word.
#[derive(Clone, Bolt)]
struct Count {
    log: Arc<Mutex<CountLog>>,
    task: TaskId,
}

impl Bolt for Count {
    async fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), ComponentError> {
        self.task = ctx.task_id();
        Ok(())
    }

    async fn execute(&mut self, input: Tuple, _out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let Word { word, sentence, pos } = input.to()?;
        let mut log = lock(&self.log);
        if log.seen.insert((sentence, pos)) {
            *log.counts.entry(word.to_string()).or_default() += 1;
        } else {
            log.duplicates += 1;
        }
        log.tasks.entry(word.to_string()).or_default().insert(self.task);
        Ok(())
    }
}

/// The state the components of every worker share (all workers run in this process).
struct Shared {
    per_task: u64,
    released: Arc<AtomicU64>,
    spout: Arc<Mutex<SpoutLog>>,
    count: Arc<Mutex<CountLog>>,
}

impl Shared {
    fn new(per_task: u64) -> Self {
        Shared { per_task, released: Arc::new(AtomicU64::new(u64::MAX)), spout: Arc::default(), count: Arc::default() }
    }

    fn spout_prototype(&self) -> Sentences {
        Sentences {
            per_task: self.per_task,
            released: self.released.clone(),
            log: self.spout.clone(),
            pending: Pending::default(),
            base: 0,
            next: 0,
        }
    }

    /// sentences (2 tasks) → shuffle → split (2) → fields(word) → count (4), one acker: tasks
    /// count 1-4, sentences 5-6, split 7-8, acker 9.
    fn topology(&self, settings: &[(&str, i64)]) -> Topology {
        let mut b = TopologyBuilder::new();
        b.config_mut().set("topology.acker.executors", 1).unwrap();
        // Bounded trees in flight keep every tree far below its timeout even on a busy machine:
        // a replay would make exact counts impossible to check.
        b.config_mut().set("topology.max.spout.pending", 1_000).unwrap();
        for (key, value) in settings {
            b.config_mut().set(key, *value).unwrap();
        }
        b.spout("sentences", self.spout_prototype(), 2);
        b.bolt("split", Split, 2).shuffle_grouping("sentences");
        b.bolt("count", Count { log: self.count.clone(), task: 0 }, 4).fields_grouping("split", ["word"]);
        b.build().unwrap()
    }

    fn expected_counts(&self) -> HashMap<String, u64> {
        let mut counts = HashMap::new();
        for id in 0..2 * self.per_task {
            for word in SENTENCES[(id % SENTENCES.len() as u64) as usize].split(' ') {
                *counts.entry(word.to_owned()).or_default() += 1;
            }
        }
        counts
    }

    /// Exact counts, each word at one task, every id acked exactly once.
    fn check(&self, replays_allowed: bool) {
        let count = lock(&self.count);
        assert_eq!(count.counts, self.expected_counts());
        for (word, tasks) in &count.tasks {
            assert_eq!(tasks.len(), 1, "`{word}` reached tasks {tasks:?}");
        }
        let spout = lock(&self.spout);
        let mut acked = spout.acked.clone();
        acked.sort_unstable();
        assert_eq!(acked, (0..2 * self.per_task).collect::<Vec<_>>(), "every id acked exactly once");
        if !replays_allowed {
            assert_eq!(count.duplicates, 0);
            assert!(spout.failed.is_empty(), "failed: {:?}", spout.failed);
            assert_eq!(spout.emitted, 2 * self.per_task);
        }
    }
}

/// Which worker runs the `index`-th task of `component`.
type Assign = fn(&str, usize, usize) -> usize;

/// Tasks of every component dealt round-robin over the workers; the acker on worker 0.
fn round_robin(component: &str, index: usize, workers: usize) -> usize {
    if component == ACKER_COMPONENT { 0 } else { index % workers }
}

fn layout_of(topology: &Topology) -> squall::TaskLayout {
    topology.layout().with_system(&[(ACKER_COMPONENT, 1)])
}

/// The task → worker assignment of `workers` workers.
fn assignment(topology: &Topology, workers: usize, assign: Assign) -> HashMap<TaskId, usize> {
    let mut tasks = HashMap::new();
    for (component, ids) in layout_of(topology).components() {
        for (index, task) in ids.iter().enumerate() {
            tasks.insert(*task, assign(component, index, workers));
        }
    }
    tasks
}

/// Launches worker `w` of an assignment, with the workers reachable at `addrs`.
fn launch(
    topology: &Topology,
    tasks: &HashMap<TaskId, usize>,
    addrs: &[SocketAddr],
    w: usize,
    listener: TcpListener,
) -> RunningTopology {
    init_logs();
    let plan = WorkerPlan {
        topology_id: "word-count-1".to_owned(),
        local_tasks: tasks.iter().filter(|(_, at)| **at == w).map(|(t, _)| *t).collect(),
        remote: tasks.iter().filter(|(_, at)| **at != w).map(|(t, at)| (*t, addrs[*at])).collect(),
        listener,
        advertised_addr: Some(addrs[w]),
        store: None,
    };
    RunningTopology::launch_worker("word-count", topology, TopologyStatus::Active, plan).expect("valid plan")
}

async fn listeners(n: usize) -> Vec<TcpListener> {
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    listeners
}

/// Logs of the runtime, shown for failed tests (filter with `RUST_LOG`, default warnings).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// Starts `n` workers, each building its own copy of the topology.
async fn start_workers(shared: &Shared, settings: &[(&str, i64)], n: usize, assign: Assign) -> Vec<RunningTopology> {
    let listeners = listeners(n).await;
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let tasks = assignment(&shared.topology(settings), n, assign);
    listeners.into_iter().enumerate().map(|(w, l)| launch(&shared.topology(settings), &tasks, &addrs, w, l)).collect()
}

/// Waits for every worker to finish by itself, checks no task failed, and returns each
/// worker's transport counters at the end.
async fn finish_all(workers: Vec<RunningTopology>, timeout: Duration) -> Vec<TransportSnapshot> {
    let mut workers = workers;
    for (w, worker) in workers.iter_mut().enumerate() {
        if !worker.join(timeout).await {
            let state: Vec<_> = workers.iter().map(|w| (w.unfinished(), w.metrics())).collect();
            panic!("worker {w} did not finish: {state:#?}");
        }
    }
    let transport = workers.iter().map(|w| w.metrics().transport.expect("a worker reports its transport")).collect();
    for worker in workers {
        let (failures, aborted) = worker.finish().await;
        assert!(failures.is_empty(), "{failures:?}");
        assert!(aborted.is_empty(), "{aborted:?}");
    }
    transport
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_count_words_exactly_with_acking() {
    let shared = Shared::new(2_000);
    let workers = start_workers(&shared, &[], 2, round_robin).await;
    assert!(workers.iter().all(|w| w.local_addr().is_some()));
    let metrics: Vec<_> = workers.iter().map(|w| w.metrics()).collect();
    let transport = finish_all(workers, Duration::from_secs(120)).await;
    shared.check(false);
    // Each worker's lanes are listed from the start, sized like the queues behind them, and
    // gone once they have said Bye.
    for m in &metrics {
        let lanes = &m.transport.as_ref().expect("a worker reports its transport").lanes;
        assert!(!lanes.is_empty() && lanes.iter().all(|l| l.capacity > 0), "{lanes:?}");
    }
    assert!(transport.iter().all(|t| t.lanes.is_empty()), "{transport:#?}");
    // What one worker wrote, the other read: bytes and tuples match exactly, and no
    // connection was lost or made twice.
    for (from, to) in [(0, 1), (1, 0)] {
        let (sent, received) = (&transport[from], &transport[to]);
        assert!(sent.tuples_sent > 0, "{transport:#?}");
        assert_eq!((sent.bytes_sent, sent.tuples_sent), (received.bytes_received, received.tuples_received));
        assert_eq!((sent.reconnects, sent.connections_lost, sent.tuples_lost), (0, 0, 0), "{transport:#?}");
        assert!(sent.connects >= 1, "{transport:#?}");
    }
    // Both workers' count tasks did count: words crossed the wire both ways.
    let count = lock(&shared.count);
    let tasks: HashSet<TaskId> = count.tasks.values().flatten().copied().collect();
    assert!(tasks.contains(&1) && tasks.contains(&3), "count tasks used: {tasks:?}");
    // The acker runs on worker 0 only.
    assert!(metrics[0].components.contains_key(ACKER_COMPONENT));
    assert!(!metrics[1].components.contains_key(ACKER_COMPONENT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_with_small_queues_exert_backpressure_across_the_wire() {
    // Queues of 64 tuples and batches of 16: every hop fills up and waits on the next,
    // including hops between workers. Task placement: consecutive tasks on different workers,
    // the acker on the last worker.
    let settings = [("topology.executor.receive.buffer.size", 64), ("topology.producer.batch.size", 16)];
    let shared = Shared::new(3_000);
    let assign: Assign = |component, index, workers| {
        if component == ACKER_COMPONENT { workers - 1 } else { (index + component.len()) % workers }
    };
    let workers = start_workers(&shared, &settings, 3, assign).await;
    let start = Instant::now();
    let mut peak = 0;
    while !workers.iter().all(RunningTopology::is_finished) && start.elapsed() < Duration::from_secs(120) {
        for w in &workers {
            if let Some(count) = w.metrics().components.get("count") {
                peak = peak.max(count.queue_peak);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    finish_all(workers, Duration::from_secs(1)).await;
    shared.check(false);
    assert!(peak <= 64, "a count queue held {peak} tuples");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_starts_late_is_reached_by_retrying() {
    let shared = Shared::new(500);
    let topology = shared.topology(&[]);
    let tasks = assignment(&topology, 2, round_robin);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    // Worker 1's port is closed while worker 0 starts sending to it. (On its own loopback
    // address, so the other tests' workers cannot be given its port meanwhile.)
    let closed = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addrs = vec![listener.local_addr().unwrap(), closed.local_addr().unwrap()];
    drop(closed);
    let first = launch(&topology, &tasks, &addrs, 0, listener);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!first.is_finished());
    let late = TcpListener::bind(addrs[1]).await.expect("the port is free again");
    let second = launch(&shared.topology(&[]), &tasks, &addrs, 1, late);
    finish_all(vec![first, second], Duration::from_secs(120)).await;
    shared.check(false);
}

/// Reads until the peer closes the connection; false if it is still open after a while.
async fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_workers_port_drops_that_connection_only() {
    let shared = Shared::new(1_000);
    shared.released.store(500, Ordering::Relaxed);
    let workers = start_workers(&shared, &[], 2, round_robin).await;
    let target = workers[0].local_addr().unwrap();
    let peer = workers[1].local_addr().unwrap();
    // Half the sentences go through first.
    let start = Instant::now();
    while lock(&shared.spout).acked.len() < 1_000 && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lock(&shared.spout).acked.len(), 1_000);

    // Random bytes behind a plausible length prefix: not a hello.
    let mut garbage = TcpStream::connect(target).await.unwrap();
    let mut bytes = vec![0, 0, 0, 60];
    bytes.extend((0..60).map(|_| fastrand::u8(..)));
    garbage.write_all(&bytes).await.unwrap();
    assert!(closed_by_peer(&mut garbage).await, "garbage hello: connection still open");

    // A length prefix beyond the largest frame.
    let mut huge = TcpStream::connect(target).await.unwrap();
    huge.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).await.unwrap();
    assert!(closed_by_peer(&mut huge).await, "oversized frame: connection still open");

    // A valid hello on a real lane (as worker 1 feeding `count`), then garbage, then a batch
    // for a task that does not exist.
    let topology = shared.topology(&[]);
    let fingerprint = StreamTable::new(&topology, &layout_of(&topology)).fingerprint();
    let hello = |component: &str| Hello {
        topology_id: "word-count-1".into(),
        worker: peer.to_string(),
        component: component.into(),
        fingerprint,
        version: WIRE_VERSION,
    };
    for payload in [vec![0x92, 0x01, 0xc1, 0xc1, 0xc1], vec![0x92, 0x01, 0x91, 0x93, 0xcd, 0x03, 0xe7, 0x90, 0x90]] {
        let mut stream = TcpStream::connect(target).await.unwrap();
        let mut buf = BytesMut::new();
        encode_hello(&mut buf, &hello("count")).unwrap();
        buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        buf.extend_from_slice(&payload);
        stream.write_all(&buf).await.unwrap();
        assert!(closed_by_peer(&mut stream).await, "bad frame {payload:x?}: connection still open");
    }

    // The workers never noticed: the other half goes through and every count is exact.
    shared.released.store(u64::MAX, Ordering::Relaxed);
    finish_all(workers, Duration::from_secs(120)).await;
    shared.check(false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_from_another_topology_is_rejected() {
    let shared = Shared::new(10);
    shared.released.store(0, Ordering::Relaxed);
    let workers = start_workers(&shared, &[], 2, round_robin).await;
    let target = workers[0].local_addr().unwrap();
    let peer = workers[1].local_addr().unwrap();
    let topology = shared.topology(&[]);
    let fingerprint = StreamTable::new(&topology, &layout_of(&topology)).fingerprint();
    let good = Hello {
        topology_id: "word-count-1".into(),
        worker: peer.to_string(),
        component: "count".into(),
        fingerprint,
        version: WIRE_VERSION,
    };
    // Another topology (or another version of this one), another build of it with other
    // parallelism, another wire version, a worker that is not in the plan.
    let cases = [
        (Hello { topology_id: "word-count-2".into(), ..good.clone() }, RejectReason::WrongTopology),
        (Hello { fingerprint: fingerprint ^ 1, ..good.clone() }, RejectReason::WrongTopology),
        (Hello { version: WIRE_VERSION + 1, ..good.clone() }, RejectReason::WrongTopology),
        (Hello { worker: "127.0.0.1:1".into(), ..good.clone() }, RejectReason::UnknownLane),
        (Hello { component: "split-typo".into(), ..good.clone() }, RejectReason::UnknownLane),
        (Hello { worker: "not an address".into(), ..good.clone() }, RejectReason::BadHello),
    ];
    for (hello, reason) in cases {
        let mut stream = TcpStream::connect(target).await.unwrap();
        let mut buf = BytesMut::new();
        encode_hello(&mut buf, &hello).unwrap();
        stream.write_all(&buf).await.unwrap();
        let mut replies = FramedRead::new(stream, codec());
        let reply = tokio::time::timeout(Duration::from_secs(5), replies.next()).await.expect("an answer");
        let frame = decode_control_frame(&reply.expect("a frame").expect("readable")).unwrap();
        let Frame::Reject(reject) = frame else { panic!("{hello:?} was not rejected: {frame:?}") };
        assert_eq!(reject.reason, reason, "{hello:?}: {}", reject.message);
        let end = tokio::time::timeout(Duration::from_secs(5), replies.next()).await.expect("closed");
        assert!(end.is_none_or(|r| r.is_err()), "{hello:?}: connection still open");
    }
    let different = Shared::new(10);
    let other_build = {
        let mut b = TopologyBuilder::new();
        b.config_mut().set("topology.acker.executors", 1).unwrap();
        b.spout("sentences", Sentences { per_task: 1, ..different.spout_prototype() }, 3);
        b.bolt("split", Split, 2).shuffle_grouping("sentences");
        b.bolt("count", Count { log: different.count.clone(), task: 0 }, 4).fields_grouping("split", ["word"]);
        b.build().unwrap()
    };
    assert_ne!(StreamTable::new(&other_build, &layout_of(&other_build)).fingerprint(), fingerprint);

    // Worker 0 is unaffected.
    shared.released.store(u64::MAX, Ordering::Relaxed);
    finish_all(workers, Duration::from_secs(120)).await;
    shared.check(false);
}

/// A TCP proxy that can cut every connection through it.
struct Proxy {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    cut: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, cut) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (counter, cutter) = (accepted.clone(), cut.clone());
        let task = tokio::spawn(async move {
            let mut pipes: Vec<JoinHandle<()>> = Vec::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { continue };
                        counter.fetch_add(1, Ordering::Relaxed);
                        pipes.push(tokio::spawn(async move {
                            if let Ok(mut outbound) = TcpStream::connect(target).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            }
                        }));
                    }
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {
                        if cutter.swap(false, Ordering::Relaxed) {
                            pipes.drain(..).for_each(|p| p.abort());
                        }
                    }
                }
            }
        });
        Proxy { addr, accepted, cut, task }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_reestablished_and_acking_replays_what_was_lost() {
    let settings = [("topology.message.timeout.secs", 2), ("topology.max.spout.pending", 500)];
    let shared = Shared::new(5_000);
    shared.released.store(0, Ordering::Relaxed);
    let topology = shared.topology(&settings);
    let tasks = assignment(&topology, 2, round_robin);
    let mut listeners = listeners(2).await;
    let real = listeners[1].local_addr().unwrap();
    // Worker 0 reaches worker 1 only through the proxy, which worker 1 advertises as itself.
    let proxy = Proxy::start(real).await;
    let addrs = vec![listeners[0].local_addr().unwrap(), proxy.addr];
    let second = launch(&shared.topology(&settings), &tasks, &addrs, 1, listeners.pop().unwrap());
    let first = launch(&topology, &tasks, &addrs, 0, listeners.pop().unwrap());
    // The lanes through the proxy: to `count`, the `sentences` spout, and `split` unless
    // `split` is chained to `sentences` (then the first worker's sentences feed its own split).
    let lanes = first.metrics().transport.map_or(0, |t| t.lanes.len() as u64);
    assert!(lanes >= 2, "{lanes} lanes");

    // Release the sentences in steps and cut every connection through the proxy a few times
    // while they flow.
    let mut cuts = 0;
    for step in 1..=25 {
        if step % 5 == 0 {
            // Sentences are still to be released: nothing can have finished yet.
            assert!(!first.is_finished() && !second.is_finished());
            proxy.cut.store(true, Ordering::Relaxed);
            cuts += 1;
        }
        shared.released.store(step * 200, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let transport = finish_all(vec![first, second], Duration::from_secs(90)).await;
    proxy.task.abort();
    // Every lane reconnected after the cuts, and every id was still acked exactly once.
    let accepted = proxy.accepted.load(Ordering::Relaxed);
    assert!(accepted >= lanes + cuts, "{accepted} connections for {cuts} cuts");
    // The first worker counted each cut as lost connections and reconnects (each lane made
    // one connection, then one again after each loss it saw); the second lost none.
    let (through, direct) = (&transport[0], &transport[1]);
    assert!(through.connections_lost >= cuts && through.reconnects >= cuts, "{through:#?}");
    assert!(through.reconnects <= through.connections_lost + through.connect_failures, "{through:#?}");
    assert_eq!(through.connects, lanes + through.reconnects, "{through:#?}");
    assert_eq!((direct.connections_lost, direct.reconnects), (0, 0), "{direct:#?}");
    shared.check(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_or_shuffle_keeps_tuples_in_their_worker() {
    let log = Log::default();
    let build = || {
        let mut b = TopologyBuilder::new();
        b.config_mut().set("topology.acker.executors", 1).unwrap();
        b.spout("seq", SequenceSpout::new(500, 7), 2);
        b.bolt("record", Recorder::new(&log), 4).local_or_shuffle_grouping("seq");
        b.build().unwrap()
    };
    // Tasks: record 1-4, seq 5-6, acker 7; worker 0 runs record 1 and 3, seq 5 and the acker.
    let topology = build();
    let tasks = assignment(&topology, 2, round_robin);
    let listeners = listeners(2).await;
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let workers: Vec<RunningTopology> =
        listeners.into_iter().enumerate().map(|(w, l)| launch(&build(), &tasks, &addrs, w, l)).collect();
    finish_all(workers, Duration::from_secs(120)).await;
    let log = lock(&log);
    assert_eq!(log.len(), 1_000);
    for received in log.iter() {
        assert_eq!(tasks[&received.task], tasks[&received.tuple.source_task()], "{received:?}");
    }
    // Both of each worker's record tasks got tuples.
    let used: HashSet<TaskId> = log.iter().map(|r| r.task).collect();
    assert_eq!(used, HashSet::from([1, 2, 3, 4]));
}

/// Spout → `decrement` (4 tasks, subscribed to itself), with small queues and batches; tasks
/// placed by `place(component, index)`.
async fn countdown_workers(
    executed: &Arc<AtomicU64>,
    place: impl Fn(&str, usize) -> usize,
) -> (Vec<RunningTopology>, Topology) {
    let build = || {
        let mut b = TopologyBuilder::new();
        b.config_mut().set("topology.acker.executors", 0).unwrap();
        b.config_mut().set("topology.executor.receive.buffer.size", 1_000).unwrap();
        b.config_mut().set("topology.producer.batch.size", 100).unwrap();
        b.spout("countdowns", Countdowns::new(5_000, 20), 1);
        b.bolt("decrement", Decrement { executed: executed.clone() }, 4)
            .shuffle_grouping("countdowns")
            .shuffle_grouping("decrement");
        b.build().unwrap()
    };
    let topology = build();
    let mut tasks = HashMap::new();
    for (component, ids) in topology.layout().components() {
        for (index, task) in ids.iter().enumerate() {
            tasks.insert(*task, place(component, index));
        }
    }
    let listeners = listeners(2).await;
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let workers = listeners.into_iter().enumerate().map(|(w, l)| launch(&build(), &tasks, &addrs, w, l)).collect();
    (workers, topology)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_inside_one_worker_fed_from_another_completes_by_itself() {
    // The spout runs in worker 0, the whole cycle in worker 1: it closes once worker 0's lane
    // said Bye and nothing is outstanding.
    let executed = Arc::new(AtomicU64::new(0));
    let (workers, _) = countdown_workers(&executed, |c, _| usize::from(c != "countdowns")).await;
    finish_all(workers, Duration::from_secs(60)).await;
    assert_eq!(executed.load(Ordering::Relaxed), 105_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_across_workers_under_full_queues_never_deadlocks() {
    // Each worker runs two of the cycle's tasks: feedback crosses the wire both ways while every
    // queue is full. It cannot tell it is finished across workers, so it is killed once done.
    let executed = Arc::new(AtomicU64::new(0));
    let (mut workers, _) = countdown_workers(&executed, |_, index| index % 2).await;
    let start = Instant::now();
    while executed.load(Ordering::Relaxed) < 105_000 && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(executed.load(Ordering::Relaxed), 105_000, "progress stopped");
    for worker in &workers {
        worker.set_status(TopologyStatus::Killing);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for worker in &mut workers {
        worker.set_status(TopologyStatus::Stopped);
        assert!(worker.join(Duration::from_secs(10)).await, "{:?}", worker.unfinished());
    }
    assert_eq!(executed.load(Ordering::Relaxed), 105_000, "nothing ran twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_follow_a_moved_worker_live_and_every_id_is_acked() {
    let settings = [("topology.message.timeout.secs", 2), ("topology.max.spout.pending", 500)];
    let shared = Shared::new(5_000);
    shared.released.store(0, Ordering::Relaxed);
    let topology = shared.topology(&settings);
    let mut tasks = assignment(&topology, 3, round_robin);
    let mut listeners = listeners(4).await;
    let mut addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let spare = listeners.pop().unwrap();
    let mut workers: Vec<RunningTopology> = listeners
        .into_iter()
        .enumerate()
        .map(|(w, l)| launch(&shared.topology(&settings), &tasks, &addrs[..3], w, l))
        .collect();
    shared.released.store(2_000, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Worker 2 dies; its tasks start on a new worker at another address, and the two others
    // are told where they went, without restarting.
    let dead = workers.pop().unwrap();
    dead.set_status(TopologyStatus::Stopped);
    let _ = dead.finish().await;
    let moved: Vec<TaskId> = tasks.iter().filter(|(_, w)| **w == 2).map(|(t, _)| *t).collect();
    assert!(!moved.is_empty());
    addrs[2] = addrs[3];
    let replacement = launch(&shared.topology(&settings), &tasks, &addrs[..3], 2, spare);
    for (w, worker) in workers.iter_mut().enumerate() {
        let remote = tasks.iter().filter(|(_, at)| **at != w).map(|(t, at)| (*t, addrs[*at])).collect();
        let update = worker.update_peers(remote).expect("the worker's own tasks did not change");
        assert_eq!(update.moved_tasks, moved.len());
    }
    workers.push(replacement);

    // A placement that takes a worker's own task away is refused.
    let mut wrong: HashMap<TaskId, SocketAddr> =
        tasks.iter().filter(|(_, at)| **at != 0).map(|(t, at)| (*t, addrs[*at])).collect();
    let own = *tasks.iter().find(|(_, at)| **at == 0).unwrap().0;
    wrong.insert(own, addrs[1]);
    assert!(workers[0].update_peers(wrong).is_err());
    tasks.clear();

    shared.released.store(u64::MAX, Ordering::Relaxed);
    finish_all(workers, Duration::from_secs(90)).await;
    shared.check(true);
}
