//! `MapState` semantics against every backend: memory, a redb file and a real Redis server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use squall_state::testing::RedisServer;
use squall_state::{Backend, MapState, MemoryBackend, RedbBackend, RedisBackend, Semantics, StateError};

/// Adds `counts` (word, n) in epoch `txid`, as a persistent count aggregation would.
async fn add(map: &mut MapState<String, u64>, txid: u64, counts: &[(&str, u64)]) -> Result<Vec<u64>, StateError> {
    let keys: Vec<String> = counts.iter().map(|(k, _)| (*k).to_owned()).collect();
    map.multi_update(txid, &keys, |i, old| old.copied().unwrap_or(0) + counts[i].1).await
}

async fn get(map: &mut MapState<String, u64>, keys: &[&str]) -> Vec<Option<u64>> {
    let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    map.multi_get(&keys).await.unwrap_or_else(|e| panic!("multi_get: {e}"))
}

/// The three semantics on one backend; `fresh` makes a map over the same backend without a cache
/// (to read what the backend holds, not what a cache remembers).
async fn semantics_hold(backend: Arc<dyn Backend>, cache: usize) {
    // Non-transactional: a replayed epoch counts twice.
    let mut plain = MapState::<String, u64>::new("plain", Semantics::NonTransactional, backend.clone(), cache);
    add(&mut plain, 1, &[("a", 1), ("b", 2)]).await.unwrap();
    add(&mut plain, 1, &[("a", 1), ("b", 2)]).await.unwrap();
    assert_eq!(get(&mut plain, &["a", "b", "c"]).await, [Some(2), Some(4), None]);

    // Transactional: replaying txid n leaves it unchanged, the next epoch applies.
    let mut tx = MapState::<String, u64>::new("tx", Semantics::Transactional, backend.clone(), cache);
    assert_eq!(add(&mut tx, 1, &[("a", 1), ("b", 2)]).await.unwrap(), [1, 2]);
    assert_eq!(add(&mut tx, 1, &[("a", 1), ("b", 2)]).await.unwrap(), [1, 2], "a replay returns the stored values");
    assert_eq!(add(&mut tx, 2, &[("a", 10)]).await.unwrap(), [11]);
    assert_eq!(add(&mut tx, 2, &[("a", 10), ("c", 5)]).await.unwrap(), [11, 5], "new keys in a replay still apply");
    let mut tx_fresh = MapState::<String, u64>::new("tx", Semantics::Transactional, backend.clone(), 0);
    assert_eq!(get(&mut tx_fresh, &["a", "b", "c"]).await, [Some(11), Some(2), Some(5)]);

    // Opaque: a replay of the stored epoch with different tuples replaces the earlier attempt.
    let mut opaque = MapState::<String, u64>::new("opaque", Semantics::Opaque, backend.clone(), cache);
    assert_eq!(add(&mut opaque, 1, &[("a", 1)]).await.unwrap(), [1]);
    assert_eq!(add(&mut opaque, 2, &[("a", 5), ("b", 7)]).await.unwrap(), [6, 7]);
    // Epoch 2 again, now with other tuples (an opaque spout may replay differently).
    assert_eq!(add(&mut opaque, 2, &[("a", 3), ("b", 1)]).await.unwrap(), [4, 1], "never adds twice");
    assert_eq!(add(&mut opaque, 2, &[("a", 3)]).await.unwrap(), [4], "the same replay again changes nothing");
    assert_eq!(add(&mut opaque, 3, &[("a", 100)]).await.unwrap(), [104]);
    let mut opaque_fresh = MapState::<String, u64>::new("opaque", Semantics::Opaque, backend.clone(), 0);
    assert_eq!(get(&mut opaque_fresh, &["a", "b"]).await, [Some(104), Some(1)]);

    // States with the same keys do not see each other.
    let mut other = MapState::<String, u64>::new("other", Semantics::Opaque, backend.clone(), cache);
    assert_eq!(get(&mut other, &["a"]).await, [None]);

    // A value of another shape is reported, not misread.
    let mut wrong = MapState::<String, String>::new("opaque", Semantics::Opaque, backend, 0);
    let err = wrong.multi_get(&["a".to_owned()]).await.expect_err("a u64 state read as strings");
    assert!(matches!(err, StateError::Corrupt { ref state, .. } if state == "opaque"), "{err}");
}

#[tokio::test]
async fn memory_backend_keeps_each_semantics() {
    semantics_hold(Arc::new(MemoryBackend::new()), 0).await;
    semantics_hold(Arc::new(MemoryBackend::new()), 100).await;
}

#[tokio::test]
async fn redb_backend_keeps_each_semantics_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    {
        let backend = RedbBackend::open(&path).unwrap_or_else(|e| panic!("{e}"));
        semantics_hold(Arc::new(backend), 2).await;
    }
    // Reopened (as after a restart), the file has the last epoch's values and txids.
    let backend: Arc<dyn Backend> = Arc::new(RedbBackend::open(&path).unwrap_or_else(|e| panic!("{e}")));
    let mut opaque = MapState::<String, u64>::new("opaque", Semantics::Opaque, backend, 10);
    assert_eq!(get(&mut opaque, &["a", "b"]).await, [Some(104), Some(1)]);
    // Epoch 3 replayed after the restart: it starts again from the value before epoch 3 (4).
    assert_eq!(add(&mut opaque, 3, &[("a", 1)]).await.unwrap(), [5]);
    assert_eq!(add(&mut opaque, 4, &[("a", 1)]).await.unwrap(), [6]);
}

/// redb lets one process open a file at a time, and a topology's workers are several
/// processes: the backend holds the file only while a call runs. Opening it holds nothing; a call
/// waits while another process has the file and fails with an error naming the file once it
/// waited too long; calls of one process take turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_backend_shares_its_file_and_names_a_process_that_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.redb");
    let wait = Duration::from_millis(300);
    let backend: Arc<dyn Backend> =
        Arc::new(RedbBackend::open(&path).unwrap_or_else(|e| panic!("{e}")).with_lock_wait(wait));
    let mut counts = MapState::<String, u64>::new("counts", Semantics::Transactional, backend.clone(), 0);
    assert_eq!(add(&mut counts, 1, &[("a", 1)]).await.unwrap(), [1]);

    // Between calls the file is free: another process (here a direct open) can have it.
    let holder = redb::Database::create(&path).expect("the backend does not hold the file between calls");
    // Meanwhile a worker starting up opens the backend without an error...
    let restarted = RedbBackend::open(&path).unwrap_or_else(|e| panic!("a held file must still open: {e}"));
    // ...and a call waits for the file, then fails naming it and the reason.
    let started = Instant::now();
    let err = add(&mut counts, 2, &[("a", 1)]).await.expect_err("another process holds the file");
    assert!(started.elapsed() >= wait, "it gave up after {:?}", started.elapsed());
    let text = err.to_string();
    assert!(matches!(err, StateError::Unavailable { .. }), "{text}");
    assert!(text.contains(&path.display().to_string()) && text.contains("another process holds the file"), "{text}");

    // A holder that lets go within the wait: the call waits for it and goes through.
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        drop(holder);
    });
    assert_eq!(add(&mut counts, 2, &[("a", 1)]).await.unwrap(), [2]);
    release.join().expect("released");

    // Tasks of one process (here eight, each with its own backend as separate states would
    // have) write the file at once: every update lands once.
    let mut writers = Vec::new();
    for task in 0..8 {
        let backend: Arc<dyn Backend> = Arc::new(RedbBackend::open(&path).unwrap_or_else(|e| panic!("{e}")));
        writers.push(tokio::spawn(async move {
            let mut map = MapState::<String, u64>::new("counts", Semantics::Transactional, backend, 0);
            let key = format!("task-{task}");
            for txid in 1..=20 {
                add(&mut map, txid, &[(key.as_str(), 1)]).await.unwrap_or_else(|e| panic!("{e}"));
            }
        }));
    }
    for writer in writers {
        writer.await.expect("a writer");
    }
    let mut check = MapState::<String, u64>::new("counts", Semantics::Transactional, Arc::new(restarted), 0);
    let keys: Vec<String> = (0..8).map(|t| format!("task-{t}")).chain(["a".to_owned()]).collect();
    let values = check.multi_get(&keys).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(values, [vec![Some(20); 8], vec![Some(2)]].concat());
}

#[tokio::test]
async fn redis_backend_keeps_each_semantics_and_reports_an_outage() {
    let mut redis = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let backend = Arc::new(RedisBackend::new(&redis.url()).unwrap());
    semantics_hold(backend.clone(), 3).await;

    // Down: a clear error naming the server, and no cached value is trusted afterwards.
    redis.stop();
    let mut tx = MapState::<String, u64>::new("tx", Semantics::Transactional, backend.clone(), 0);
    let err = add(&mut tx, 3, &[("a", 1)]).await.expect_err("redis is down");
    let text = err.to_string();
    assert!(text.contains(&redis.url()) && text.contains("check that it is running"), "{text}");

    // Back (same data): the epoch goes through once.
    redis.restart().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(add(&mut tx, 3, &[("a", 1)]).await.unwrap(), [12]);
    assert_eq!(add(&mut tx, 3, &[("a", 1)]).await.unwrap(), [12]);
}

#[tokio::test]
async fn bad_backend_settings_are_named() {
    let err = RedisBackend::new("not a url").expect_err("a bad URL");
    assert!(err.to_string().contains("redis://host:port"), "{err}");
    let err = RedbBackend::open("/nonexistent-dir/state.redb").expect_err("a missing directory");
    assert!(err.to_string().contains("/nonexistent-dir/state.redb"), "{err}");
}
