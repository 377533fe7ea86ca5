//! Every grouping, run in a LocalCluster with exact outcomes.

use std::collections::{HashMap, HashSet};

use squall::prelude::*;
use squall::{ComponentError, CustomGrouping, DirectStream, TaskId};
use squall_tests::{Keyed, Log, Problem, Recorder, SequenceSpout, lock, run_to_completion};

const N: u64 = 100_000;

fn seqs_by_task(log: &Log) -> HashMap<TaskId, Vec<u64>> {
    let mut by_task: HashMap<TaskId, Vec<u64>> = HashMap::new();
    for r in lock(log).iter() {
        let k: Keyed = r.tuple.to().expect("a Keyed tuple");
        by_task.entry(r.task).or_default().push(k.seq);
    }
    by_task
}

fn assert_each_seq_once(log: &Log, n: u64) {
    let mut seen: Vec<u64> = lock(log).iter().map(|r| r.tuple.get_field_as::<u64>("seq").unwrap()).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..n).collect::<Vec<_>>(), "every tuple arrives exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_grouping_sends_equal_keys_to_exactly_one_task() {
    let log = Log::default();
    let mut b = TopologyBuilder::new();
    b.spout("spout", SequenceSpout::new(N, 1000), 1);
    b.bolt("sink", Recorder::new(&log), 4).fields_grouping("spout", ["key"]);
    run_to_completion(&b.build().unwrap()).await;

    assert_each_seq_once(&log, N);
    let mut task_of_key: HashMap<Str, HashSet<TaskId>> = HashMap::new();
    for r in lock(&log).iter() {
        task_of_key.entry(r.tuple.get_field_as("key").unwrap()).or_default().insert(r.task);
    }
    assert_eq!(task_of_key.len(), 1000);
    assert!(task_of_key.values().all(|tasks| tasks.len() == 1), "a key reached two tasks");
    let used: HashSet<TaskId> = task_of_key.values().flatten().copied().collect();
    assert_eq!(used.len(), 4, "1000 keys spread over all 4 tasks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_fields_grouping_matches_the_named_one() {
    let log = Log::default();
    let mut b = TopologyBuilder::new();
    let spout = b.spout("spout", SequenceSpout::new(10_000, 50), 1).handle();
    b.bolt("sink", Recorder::new(&log), 3).fields_grouping_by(&spout, |k| k.key);
    let topology = b.build().unwrap();
    let spec = topology.spec();
    let input = &spec.components.iter().find(|c| c.id == "sink").unwrap().inputs[0];
    assert_eq!(input.grouping, squall::GroupingSpec::Fields { fields: vec!["key".into()] });
    run_to_completion(&topology).await;
    let mut task_of_key: HashMap<Str, HashSet<TaskId>> = HashMap::new();
    for r in lock(&log).iter() {
        task_of_key.entry(r.tuple.get_field_as("key").unwrap()).or_default().insert(r.task);
    }
    assert!(task_of_key.values().all(|tasks| tasks.len() == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shuffle_grouping_balances_within_five_percent() {
    let log = Log::default();
    let mut b = TopologyBuilder::new();
    b.spout("spout", SequenceSpout::new(N, 10), 1);
    b.bolt("sink", Recorder::new(&log), 4).shuffle_grouping("spout");
    run_to_completion(&b.build().unwrap()).await;

    assert_each_seq_once(&log, N);
    let by_task = seqs_by_task(&log);
    assert_eq!(by_task.len(), 4);
    for (task, seqs) in &by_task {
        let share = seqs.len() as f64 / N as f64;
        assert!((share - 0.25).abs() <= 0.25 * 0.05, "task {task} got {share:.4} of the tuples");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_grouping_sends_every_tuple_to_every_task() {
    let log = Log::default();
    let mut b = TopologyBuilder::new();
    b.spout("spout", SequenceSpout::new(2_000, 10), 1);
    b.bolt("sink", Recorder::new(&log), 3).all_grouping("spout");
    run_to_completion(&b.build().unwrap()).await;

    let by_task = seqs_by_task(&log);
    assert_eq!(by_task.len(), 3);
    for seqs in by_task.values() {
        let mut seqs = seqs.clone();
        seqs.sort_unstable();
        assert_eq!(seqs, (0..2_000).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_grouping_sends_everything_to_the_lowest_task() {
    let log = Log::default();
    let mut b = TopologyBuilder::new();
    b.spout("spout", SequenceSpout::new(5_000, 10), 1);
    b.bolt("sink", Recorder::new(&log), 4).global_grouping("spout");
    let topology = b.build().unwrap();
    let lowest = topology.layout().tasks("sink")[0];
    run_to_completion(&topology).await;

    assert_each_seq_once(&log, 5_000);
    assert!(lock(&log).iter().all(|r| r.task == lowest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_and_local_or_shuffle_deliver_each_tuple_once() {
    for local in [false, true] {
        let log = Log::default();
        let mut b = TopologyBuilder::new();
        b.spout("spout", SequenceSpout::new(20_000, 10), 1);
        let sink = b.bolt("sink", Recorder::new(&log), 4);
        if local {
            sink.local_or_shuffle_grouping("spout")
        } else {
            sink.none_grouping("spout")
        };
        run_to_completion(&b.build().unwrap()).await;
        assert_each_seq_once(&log, 20_000);
        if local {
            // In local mode every task is in this process, so it is an even shuffle.
            assert!(seqs_by_task(&log).values().all(|s| s.len() == 5_000));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_key_grouping_sends_each_key_to_at_most_two_tasks() {
    let log = Log::default();
    let mut b = TopologyBuilder::new();
    // 20 keys over 8 tasks, many tuples per key: a key's load would pile on one task with
    // fields grouping; here it splits over two.
    b.spout("spout", SequenceSpout::new(N, 20), 1);
    b.bolt("sink", Recorder::new(&log), 8).partial_key_grouping("spout", ["key"]);
    run_to_completion(&b.build().unwrap()).await;

    assert_each_seq_once(&log, N);
    let mut tasks_of_key: HashMap<Str, HashSet<TaskId>> = HashMap::new();
    for r in lock(&log).iter() {
        tasks_of_key.entry(r.tuple.get_field_as("key").unwrap()).or_default().insert(r.task);
    }
    assert_eq!(tasks_of_key.len(), 20);
    assert!(tasks_of_key.values().all(|t| t.len() <= 2), "{tasks_of_key:?}");
    assert!(tasks_of_key.values().any(|t| t.len() == 2), "load is split for some key");
}

/// Sends each tuple to the subscriber task at `seq % 3` (or to a task that is not a subscriber
/// when asked to misbehave).
#[derive(Clone)]
struct ModuloGrouping {
    targets: Vec<TaskId>,
}

impl CustomGrouping for ModuloGrouping {
    fn prepare(&mut self, _source: &str, _stream: &str, target_tasks: &[TaskId]) {
        self.targets = target_tasks.to_vec();
    }

    fn choose_tasks(&mut self, _source_task: TaskId, values: &[Value], out: &mut Vec<TaskId>) {
        let seq = values[1].as_u64().unwrap_or(0) as usize;
        out.push(self.targets[seq % self.targets.len()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_grouping_is_honoured() {
    let log = Log::default();
    let mut b = TopologyBuilder::new();
    b.spout("spout", SequenceSpout::new(9_000, 10), 1);
    b.bolt("sink", Recorder::new(&log), 3).custom_grouping("spout", ModuloGrouping { targets: vec![] });
    let topology = b.build().unwrap();
    let tasks = topology.layout().tasks("sink").to_vec();
    run_to_completion(&topology).await;

    assert_each_seq_once(&log, 9_000);
    for r in lock(&log).iter() {
        let seq: u64 = r.tuple.get_field_as("seq").unwrap();
        assert_eq!(r.task, tasks[seq as usize % 3]);
    }
}

/// A tuple for a direct stream.
#[derive(Tuple, Debug)]
struct Order {
    seq: u64,
}

/// Sends tuple `seq` directly to the sink task `seq % tasks`.
#[derive(Clone, Spout)]
#[squall(direct(orders = Order))]
struct DirectSpout {
    next: u64,
    sinks: Vec<TaskId>,
}

impl Spout for DirectSpout {
    type MsgId = ();

    async fn open(&mut self, ctx: &TopologyContext) -> Result<(), ComponentError> {
        self.sinks = ctx.component_tasks("sink").to_vec();
        Ok(())
    }

    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        if self.next == 3_000 {
            // A task that does not subscribe is refused with an error naming it.
            let err = out.emit_direct(9_999, Self::ORDERS, Order { seq: 0 }).unwrap_err();
            assert!(err.to_string().contains("task 9999 does not subscribe"), "{err}");
            out.done();
            return Ok(());
        }
        let task = self.sinks[(self.next % self.sinks.len() as u64) as usize];
        out.emit_direct(task, Self::ORDERS, Order { seq: self.next })?;
        self.next += 1;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_grouping_reaches_exactly_the_chosen_task() {
    let _: DirectStream<DirectSpout, Order> = DirectSpout::ORDERS;
    let log = Log::default();
    let mut b = TopologyBuilder::new();
    b.spout("spout", DirectSpout { next: 0, sinks: vec![] }, 1);
    b.bolt("sink", Recorder::new(&log), 3).direct_grouping(("spout", "orders"));
    let topology = b.build().unwrap();
    let sinks = topology.layout().tasks("sink").to_vec();
    run_to_completion(&topology).await;

    let log = lock(&log);
    assert_eq!(log.len(), 3_000);
    for r in log.iter() {
        let seq: u64 = r.tuple.get_field_as("seq").unwrap();
        assert_eq!(r.task, sinks[seq as usize % 3]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bolt_subscribed_to_a_named_stream_gets_only_its_tuples() {
    let (all, errors) = (Log::default(), Log::default());
    let mut b = TopologyBuilder::new();
    let spout = b.spout("spout", SequenceSpout { errors_every: 10, ..SequenceSpout::new(10_000, 10) }, 1).handle();
    b.bolt("all", Recorder::new(&all), 2).shuffle_grouping("spout");
    b.bolt("errors", Recorder::new(&errors), 2).shuffle_grouping(spout.stream(SequenceSpout::ERRORS));
    run_to_completion(&b.build().unwrap()).await;

    assert_eq!(lock(&all).len(), 10_000);
    let errors = lock(&errors);
    assert_eq!(errors.len(), 1_000);
    for r in errors.iter() {
        assert_eq!(r.tuple.source_stream(), "errors");
        assert_eq!(r.tuple.fields(), &["seq"]);
        let p: Problem = r.tuple.to().unwrap();
        assert_eq!(p.seq % 10, 0);
    }
}
