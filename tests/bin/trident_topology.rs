//! A Trident word count for cluster tests: `BATCHES` fixed batches (`squall_tests::trident`)
//! → split → count per word in a transactional map state in Redis at `$SQUALL_TEST_REDIS`
//! (state `word-counts`), two spout tasks and two counting tasks.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use squall::values;
use squall_state::{RedisBackend, Semantics};
use squall_tests::trident::{BATCHES, batches};
use squall_trident::{Aggregate, FixedBatchSpout, StateSpec, TridentTopology};

fn build() -> Result<squall::Topology, Box<dyn std::error::Error>> {
    let url = std::env::var("SQUALL_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let state = StateSpec::new("word-counts", Semantics::Transactional, Arc::new(RedisBackend::new(&url)?));
    let mut trident = TridentTopology::new();
    trident.config_mut().message_timeout_secs = 5;
    trident.max_open_epochs(3);
    trident.batch_interval(Duration::from_millis(50));
    trident
        .new_stream("sentences", FixedBatchSpout::new(["sentence"], batches(BATCHES)))
        .parallelism(2)
        .flat_map(["word"], |values| {
            let sentence = values[0].as_str().unwrap_or_default();
            Ok(sentence.split(' ').map(|w| values![w.to_owned()]).collect())
        })
        .group_by(["word"])
        .persistent_aggregate("count", state, Aggregate::count(), 2);
    Ok(trident.build()?)
}

fn main() -> ExitCode {
    squall::main(build)
}
