//! Hostile peers on a worker's port (issue #8, item 4): frames that claim far more than they
//! send, peers that stall in the middle of a frame, and hellos for another topology. The worker
//! must keep its memory, drop stalled connections after the frame timeout, tell a refused peer
//! nothing it could use, rate-limit its warnings, and keep serving its real peers.
//!
//! One test in its own binary: it measures this process's resident memory, which tests running
//! alongside it would disturb.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use squall::prelude::*;
use squall::{ACKER_COMPONENT, TaskId};
use squall_tests::{Log, Recorder, SequenceSpout, lock};
use squall_worker::wire::{Hello, StreamTable, WIRE_VERSION, encode_hello};
use squall_worker::{RunningTopology, TopologyStatus, WorkerPlan};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

const TOPOLOGY_ID: &str = "hardening-topology-7";
const TUPLES: u64 = 2_000;
/// The frame timeout the test topology sets (`topology.transport.frame.timeout.secs`).
const FRAME_TIMEOUT: Duration = Duration::from_secs(1);
/// Bad connections in the first phase, and how many are open at once.
const BAD_CONNECTIONS: usize = 10_000;
const WAVE: usize = 50;
/// What each bad connection sends after its length prefix.
const BAD_PAYLOAD: usize = 4 << 10;
/// Connections held open in the middle of a frame, the length each claims and what each sends.
const HELD: usize = 10;
const HELD_CLAIM: u32 = 60 << 20;
const HELD_SENT: usize = 1 << 20;
/// How far resident memory may move from where it started, beyond what peers actually sent.
const SLACK: u64 = 3 << 20;

/// This process's resident set size, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("a VmRSS line");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS in kB");
    kib << 10
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// Counts the warnings the transport logs.
#[derive(Clone, Default)]
struct WarningCount(Arc<AtomicU64>);

impl<S: tracing::Subscriber> Layer<S> for WarningCount {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() == tracing::Level::WARN && meta.target().starts_with("squall_worker::transport") {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// seq (1 task, on worker 1) → shuffle → record (2 tasks, on worker 0), one acker on worker 0.
fn build(log: &Log) -> Topology {
    let mut b = TopologyBuilder::new();
    b.config_mut().set("topology.acker.executors", 1).unwrap();
    b.config_mut().set("topology.transport.frame.timeout.secs", FRAME_TIMEOUT.as_secs()).unwrap();
    b.spout("seq", SequenceSpout::new(TUPLES, 10), 1);
    b.bolt("record", Recorder::new(log), 2).shuffle_grouping("seq");
    b.build().unwrap()
}

fn launch(topology: &Topology, addrs: &[SocketAddr], w: usize, listener: TcpListener) -> RunningTopology {
    let layout = topology.layout().with_system(&[(ACKER_COMPONENT, 1)]);
    let mut tasks: HashMap<TaskId, usize> = HashMap::new();
    for (component, ids) in layout.components() {
        for task in ids {
            tasks.insert(*task, usize::from(component == "seq"));
        }
    }
    let plan = WorkerPlan {
        topology_id: TOPOLOGY_ID.to_owned(),
        local_tasks: tasks.iter().filter(|(_, at)| **at == w).map(|(t, _)| *t).collect(),
        remote: tasks.iter().filter(|(_, at)| **at != w).map(|(t, at)| (*t, addrs[*at])).collect(),
        listener,
        advertised_addr: Some(addrs[w]),
        store: None,
    };
    RunningTopology::launch_worker("hardening", topology, TopologyStatus::Active, plan).expect("valid plan")
}

/// A frame header claiming `claim` bytes, then `sent` bytes of them.
fn partial_frame(claim: u32, sent: usize) -> Vec<u8> {
    let mut bytes = claim.to_be_bytes().to_vec();
    bytes.extend((0..sent).map(|_| fastrand::u8(..)));
    bytes
}

fn hello_frame(hello: &Hello) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode_hello(&mut buf, hello).unwrap();
    buf.to_vec()
}

/// Connects, sends `bytes` and closes, ignoring whether the worker hung up first.
async fn hit_and_close(target: SocketAddr, bytes: Arc<Vec<u8>>) {
    let mut stream = TcpStream::connect(target).await.expect("the worker accepts connections");
    let _ = stream.write_all(&bytes).await;
    let _ = stream.shutdown().await;
    // Wait for the worker to hang up, so a wave's connections are all gone before the next.
    let mut sink = [0u8; 256];
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Sends a hello and returns everything the worker answers until it closes the connection.
async fn reply_to(target: SocketAddr, hello: &Hello) -> Vec<u8> {
    let mut stream = TcpStream::connect(target).await.unwrap();
    stream.write_all(&hello_frame(hello)).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply))
        .await
        .expect("the worker answers and closes")
        .expect("a readable answer");
    reply
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_cost_no_memory_and_learn_nothing() {
    let warnings = WarningCount::default();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_test_writer().with_filter(filter))
        .with(warnings.clone())
        .init();

    let log = Log::default();
    let topology = build(&log);
    let fingerprint =
        StreamTable::new(&topology, &topology.layout().with_system(&[(ACKER_COMPONENT, 1)])).fingerprint();
    let listeners = [TcpListener::bind("127.0.0.1:0").await.unwrap(), TcpListener::bind("127.0.0.1:0").await.unwrap()];
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let [first, second] = listeners;
    // Worker 0 runs alone through the attack; worker 1, its real peer, starts afterwards.
    let target_worker = launch(&topology, &addrs, 0, first);
    let target = target_worker.local_addr().unwrap();
    let good = Hello {
        topology_id: TOPOLOGY_ID.into(),
        worker: addrs[1].to_string(),
        component: "record".into(),
        fingerprint,
        version: WIRE_VERSION,
    };

    // A refused hello says nothing of what the worker expects.
    for wrong in [
        Hello { topology_id: "hardening-topology-8".into(), ..good.clone() },
        Hello { fingerprint: fingerprint ^ 1, ..good.clone() },
        Hello { version: WIRE_VERSION + 1, ..good.clone() },
    ] {
        let reply = reply_to(target, &wrong).await;
        assert!(reply.len() > 4, "{wrong:?}: no reject frame");
        assert!(!contains(&reply, TOPOLOGY_ID.as_bytes()), "{wrong:?}: {:?}", String::from_utf8_lossy(&reply));
        for secret in [format!("{fingerprint:016x}"), format!("{fingerprint:x}"), fingerprint.to_string()] {
            assert!(!contains(&reply, secret.as_bytes()), "{wrong:?}: {:?}", String::from_utf8_lossy(&reply));
        }
        assert!(!contains(&reply, &fingerprint.to_be_bytes()), "{wrong:?}: the fingerprint's bytes");
        assert!(!contains(&reply, &(fingerprint ^ 1).to_be_bytes()), "{wrong:?}: an echoed fingerprint");
    }

    // Bad connections: a length prefix of 1–64 MiB and a few KB of it, before any hello (where
    // no frame that large is allowed) and after a valid one (where it is).
    let hello = hello_frame(&good);
    let bad = |i: usize| {
        let claim = fastrand::u32((1 << 20)..=(64 << 20));
        let mut bytes = if i.is_multiple_of(2) { Vec::new() } else { hello.clone() };
        bytes.extend(partial_frame(claim, BAD_PAYLOAD));
        Arc::new(bytes)
    };
    let wave = |from: usize| {
        let tasks: Vec<_> = (from..from + WAVE).map(|i| tokio::spawn(hit_and_close(target, bad(i)))).collect();
        async move {
            for task in tasks {
                task.await.unwrap();
            }
        }
    };
    // Warm up what any connection allocates once (the runtime's and the logger's buffers).
    for from in (0..1_000).step_by(WAVE) {
        wave(from).await;
    }
    // What the stalling peers send, made before measuring: the test's own memory is not the
    // worker's.
    let stalled = partial_frame(HELD_CLAIM, HELD_SENT);
    // A worker that has run a while has freed large blocks, and glibc then serves (and keeps)
    // every block up to that size from its heap rather than mapping it: buffers that live on
    // the heap would not give their memory back. Put the allocator in that state.
    drop(std::hint::black_box(vec![1u8; 16 << 20]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = rss();
    let warned_before = warnings.0.load(Ordering::Relaxed);
    let began = Instant::now();
    let mut peak = start;
    for from in (0..BAD_CONNECTIONS).step_by(WAVE) {
        wave(from).await;
        peak = peak.max(rss());
    }
    let bad_elapsed = began.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_bad = rss();
    eprintln!(
        "{BAD_CONNECTIONS} bad connections in {bad_elapsed:?}: rss start {}, peak {}, after {}",
        mib(start),
        mib(peak),
        mib(after_bad)
    );
    assert!(peak <= start + SLACK, "bad connections took rss from {} to {}", mib(start), mib(peak));
    assert!(after_bad <= start + SLACK, "rss {} after bad connections, {} before", mib(after_bad), mib(start));

    // Peers that send a valid hello and part of a huge frame, then stall.
    let mut held = Vec::new();
    for _ in 0..HELD {
        let mut stream = TcpStream::connect(target).await.unwrap();
        stream.write_all(&hello).await.unwrap();
        // The frame cannot have begun to arrive before this.
        let since = Instant::now();
        stream.write_all(&stalled).await.unwrap();
        held.push((stream, since));
    }
    // The worker has read what they sent well before it may drop them.
    tokio::time::sleep(FRAME_TIMEOUT / 2).await;
    let during = rss();
    let sent = (HELD * HELD_SENT) as u64;
    eprintln!("{HELD} stalled connections of {} each: rss {}", mib(HELD_SENT as u64), mib(during));
    assert!(
        during <= start + sent + SLACK,
        "{HELD} stalled frames of {} each took rss from {} to {}",
        mib(HELD_SENT as u64),
        mib(start),
        mib(during)
    );
    peak = peak.max(during);
    for (stream, since) in &mut held {
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(FRAME_TIMEOUT * 5, stream.read(&mut buf)).await;
        let waited = since.elapsed();
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "a stalled connection is still open after {waited:?}");
        assert!(waited >= FRAME_TIMEOUT, "a stalled connection was dropped after {waited:?}, before the timeout");
    }
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss();
    eprintln!("rss start {}, peak {}, after {}", mib(start), mib(peak), mib(after));
    assert!(after <= start + SLACK, "rss {} after the stalled connections ended, {} before", mib(after), mib(start));

    // Thousands of bad connections, a few warnings: the first of each kind was logged during
    // the warm-up, the stalled frames are a new kind.
    let warned = warnings.0.load(Ordering::Relaxed) - warned_before;
    eprintln!("{warned} warnings for {} bad connections", BAD_CONNECTIONS + HELD);
    assert!((1..=6).contains(&warned), "{warned} warnings for {} bad connections", BAD_CONNECTIONS + HELD);

    // The real peer still gets through: every tuple arrives.
    let peer = launch(&build(&log), &addrs, 1, second);
    let mut workers = [target_worker, peer];
    for worker in &mut workers {
        assert!(worker.join(Duration::from_secs(30)).await, "unfinished: {:?}", worker.unfinished());
    }
    for worker in workers {
        let (failures, aborted) = worker.finish().await;
        assert!(failures.is_empty() && aborted.is_empty(), "{failures:?} {aborted:?}");
    }
    let log = lock(&log);
    assert_eq!(log.len() as u64, TUPLES);
    let mut seqs: Vec<u64> = log.iter().map(|r| r.tuple.get_field_as::<u64>("seq").unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..TUPLES).collect::<Vec<_>>());
}
