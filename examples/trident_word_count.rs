//! Trident word count: fixed batches of sentences → split → group by word → a persistent count
//! per word in a map state, updated exactly once per epoch.
//!
//! `cargo run --release --example trident_word_count` counts 200 batches in memory, prints the
//! top words and checks every count against the input: the program exits with 1 if any is wrong.
//! `-- --state redb:PATH` keeps the counts in a redb file, `-- --state redis://HOST:PORT` in
//! Redis (each run expects an empty state: the coordinator does not yet keep its epochs across
//! runs, so a second run against the same state counts again).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use squall::{LocalCluster, Str, Value, Values, values};
use squall_state::{Backend, MemoryBackend, RedbBackend, RedisBackend, Semantics};
use squall_trident::{Aggregate, FixedBatchSpout, StateSpec, TridentTopology};

const BATCHES: usize = 200;
const WORDS: [&str; 12] =
    ["the", "cow", "jumped", "over", "moon", "storm", "squall", "wind", "rain", "sea", "sky", "night"];

/// The input: `BATCHES` batches of up to 20 sentences, from a fixed seed.
fn batches() -> Vec<Vec<Values>> {
    let mut state = 0x5eed_u64;
    let mut next = move |n: u64| {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % n
    };
    (0..BATCHES)
        .map(|_| {
            (0..next(20))
                .map(|_| {
                    let words: Vec<&str> = (0..1 + next(8)).map(|_| WORDS[next(WORDS.len() as u64) as usize]).collect();
                    values![words.join(" ")]
                })
                .collect()
        })
        .collect()
}

fn backend(spec: Option<&str>) -> Result<Arc<dyn Backend>, String> {
    match spec {
        None | Some("memory") => Ok(Arc::new(MemoryBackend::new())),
        Some(s) if s.starts_with("redb:") => Ok(Arc::new(RedbBackend::open(&s[5..]).map_err(|e| e.to_string())?)),
        Some(s) if s.starts_with("redis://") => Ok(Arc::new(RedisBackend::new(s).map_err(|e| e.to_string())?)),
        Some(other) => Err(format!("unknown state `{other}`: use memory, redb:PATH or redis://HOST:PORT")),
    }
}

async fn counts(state: &StateSpec) -> Result<HashMap<String, u64>, String> {
    let keys: Vec<Vec<Value>> = WORDS.iter().map(|w| vec![Value::Str(Str::from(*w))]).collect();
    let values = state.open().multi_get(&keys).await.map_err(|e| e.to_string())?;
    Ok(WORDS
        .iter()
        .zip(values)
        .filter_map(|(w, v)| match v {
            Some(Value::U64(n)) => Some(((*w).to_owned(), n)),
            _ => None,
        })
        .collect())
}

async fn run(state_arg: Option<String>) -> Result<(), String> {
    let input = batches();
    let mut want: HashMap<String, u64> = HashMap::new();
    for values in input.iter().flatten() {
        for word in values[0].as_str().unwrap_or_default().split(' ') {
            *want.entry(word.to_owned()).or_default() += 1;
        }
    }
    let state = StateSpec::new("word-counts", Semantics::Transactional, backend(state_arg.as_deref())?);

    let mut trident = TridentTopology::new();
    trident.max_open_epochs(4);
    trident
        .new_stream("sentences", FixedBatchSpout::new(["sentence"], input))
        .flat_map(["word"], |values| {
            let sentence = values[0].as_str().unwrap_or_default();
            Ok(sentence.split(' ').map(|w| values![w.to_owned()]).collect())
        })
        .group_by(["word"])
        .persistent_aggregate("count", state.clone(), Aggregate::count(), 2);
    let topology = trident.build().map_err(|e| e.to_string())?;

    let cluster = LocalCluster::new();
    let started = Instant::now();
    cluster.submit("trident-word-count", &topology).map_err(|e| e.to_string())?;
    let mut got = counts(&state).await?;
    while got != want && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        got = counts(&state).await?;
    }
    cluster.kill("trident-word-count", Duration::ZERO).await.map_err(|e| e.to_string())?;

    let mut top: Vec<(&String, &u64)> = got.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (word, count) in top.iter().take(5) {
        println!("{word:>8} {count}");
    }
    if got != want {
        return Err(format!("wrong counts after {:?}: {got:?}, expected {want:?}", started.elapsed()));
    }
    println!("{BATCHES} batches counted exactly once in {:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut state = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--state" => state = args.next(),
            other => {
                eprintln!(
                    "unknown argument `{other}`; usage: trident_word_count [--state memory|redb:PATH|redis://HOST:PORT]"
                );
                return ExitCode::from(2);
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(state)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trident_word_count: {e}");
            ExitCode::FAILURE
        }
    }
}
