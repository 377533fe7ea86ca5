//! `squall::testing`, as Storm's own tests use `Testing`: complete_topology with mocked
//! sources, feeder spouts, tracked topologies, simulated time; and the rough edges of #7.

use std::time::Duration;

use squall::prelude::*;
use squall::testing::{
    CompleteTopologyParam, FeederSpout, MockedSources, TestingError, TrackedTopology, advance_time, complete_topology,
    with_simulated_time,
};
use squall::{BuildError, ComponentError, ConfigValue, LocalCluster, TupleError};

#[derive(Tuple, Debug, Clone, PartialEq)]
struct Sentence {
    text: Str,
}

#[derive(Tuple, Debug, Clone, PartialEq, PartialOrd)]
struct Word {
    word: Str,
}

#[derive(Tuple, Debug, Clone, PartialEq)]
struct Count {
    word: Str,
    count: u64,
}

/// Never runs in these tests: its output is mocked.
#[derive(Clone, Spout)]
#[squall(output = Sentence)]
struct Sentences;

impl Spout for Sentences {
    type MsgId = ();
    async fn next_tuple(&mut self, _out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        Err("the real spout must not run: it is mocked".into())
    }
}

#[derive(Clone, Bolt)]
#[squall(output = Word)]
struct Split;

impl Bolt for Split {
    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let Sentence { text } = input.to()?;
        for word in text.split(' ') {
            out.emit(Word { word: Str::new(word) })?;
        }
        Ok(())
    }
}

#[derive(Clone, Default, Bolt)]
#[squall(output = Count)]
struct Counter {
    counts: std::collections::HashMap<Str, u64>,
}

impl Bolt for Counter {
    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let Word { word } = input.to()?;
        let count = self.counts.entry(word.clone()).or_default();
        *count += 1;
        out.emit(Count { word, count: *count })?;
        Ok(())
    }
}

fn word_count(acking: bool) -> Topology {
    let mut b = TopologyBuilder::new();
    if !acking {
        b.config_mut().set("topology.acker.executors", 0).unwrap();
    }
    b.spout("sentences", Sentences, 2);
    b.bolt("split", Split, 2).shuffle_grouping("sentences");
    b.bolt("count", Counter::default(), 3).fields_grouping("split", ["word"]);
    b.build().unwrap()
}

fn sorted<T: PartialOrd>(mut v: Vec<T>) -> Vec<T> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

#[test]
fn complete_topology_returns_every_components_output_per_stream() {
    for acking in [false, true] {
        with_simulated_time(async {
            let mocked = MockedSources::new()
                .add("sentences", [values!["the quick fox"], values!["the lazy dog"], values!["the end"]]);
            let cluster = LocalCluster::new();
            let done =
                complete_topology(&cluster, &word_count(acking), CompleteTopologyParam::new(mocked)).await.unwrap();
            assert!(done.report.is_success(), "{:?}", done.report);
            // The mocked spout's two tasks split the three tuples between them.
            assert_eq!(
                sorted(done.read_tuples("sentences", "default").iter().map(|v| v[0].to_string()).collect()),
                vec!["the end", "the lazy dog", "the quick fox"]
            );
            let words: Vec<Word> = done.read("split").unwrap();
            assert_eq!(words.len(), 8);
            let counts: Vec<Count> = done.read("count").unwrap();
            let the: Vec<u64> = counts.iter().filter(|c| c.word == "the").map(|c| c.count).collect();
            assert_eq!(sorted(the), vec![1, 2, 3], "one count task sees every `the`");
            if acking {
                let spout = done.report.metrics.component("sentences").unwrap();
                assert_eq!((spout.acked, spout.failed), (3, 0), "every mocked tuple is tracked and acked");
            }
        });
    }
}

#[test]
fn complete_topology_runs_cycles_to_completion() {
    #[derive(Tuple, Debug, Clone, PartialEq)]
    struct N {
        n: u64,
    }
    #[derive(Clone, Spout)]
    #[squall(output = N)]
    struct Source;
    impl Spout for Source {
        type MsgId = ();
        async fn next_tuple(&mut self, _out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
            Err("mocked".into())
        }
    }
    #[derive(Clone, Bolt)]
    #[squall(output = N)]
    struct Halve;
    impl Bolt for Halve {
        async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
            let N { n } = input.to()?;
            if n > 1 {
                out.emit(N { n: n / 2 })?;
            }
            Ok(())
        }
    }
    with_simulated_time(async {
        let mut b = TopologyBuilder::new();
        b.spout("source", Source, 1);
        b.bolt("halve", Halve, 2).shuffle_grouping("source").shuffle_grouping("halve");
        let mocked = MockedSources::new().add_typed("source", [N { n: 8 }, N { n: 3 }]);
        let cluster = LocalCluster::new();
        let done = complete_topology(&cluster, &b.build().unwrap(), CompleteTopologyParam::new(mocked)).await.unwrap();
        let halves: Vec<u64> = done.read::<N>("halve").unwrap().into_iter().map(|n| n.n).collect();
        assert_eq!(sorted(halves), vec![1, 1, 2, 4]);
    });
}

#[test]
fn complete_topology_names_what_is_wrong_with_mocked_sources() {
    with_simulated_time(async {
        let cluster = LocalCluster::new();
        let topology = word_count(false);
        let run = |mocked| complete_topology(&cluster, &topology, CompleteTopologyParam::new(mocked));
        let err = run(MockedSources::new().add("split", [values!["x"]])).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "mocked sources name `split`, which is not a spout of this topology; its spouts are: sentences"
        );
        let err = run(MockedSources::new().add("sentences", [values!["a", 1u64]])).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "mocked tuple #0 of `sentences` on `default` has 2 values but the stream has 1 fields"
        );
        let err = run(MockedSources::new().add_on("sentences", "errors", [values!["a"]])).await.unwrap_err();
        assert!(matches!(err, TestingError::UnknownStream { .. }), "{err}");

        let done = run(MockedSources::new().add("sentences", [values!["a b"]])).await.unwrap();
        let err = done.read::<Sentence>("split").unwrap_err();
        assert!(err.to_string().starts_with("stream `default` of `split` has fields (word) but `"), "{err}");
        let err = done.read_on::<Word>("split", "typo").unwrap_err();
        assert_eq!(err.to_string(), "component `split` declares no stream `typo`; its streams: default");
    });
}

/// Acks tuples whose word is not "hold"; never acks "hold"; fails "fail".
#[derive(Clone, Bolt)]
#[squall(output = Word)]
struct Picky;

impl Bolt for Picky {
    const AUTO_ACK: bool = false;

    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let Word { word } = input.to()?;
        match word.as_str() {
            "hold" => {}
            "fail" => out.fail(&input),
            _ => {
                out.emit(Word { word })?;
                out.ack(&input);
            }
        }
        Ok(())
    }
}

#[test]
fn a_feeder_and_tracked_waits_see_acks_fails_and_timeouts_in_simulated_time() {
    let started = std::time::Instant::now();
    with_simulated_time(async {
        let feeder = FeederSpout::<Word>::new();
        let mut b = TopologyBuilder::new();
        b.config_mut().set("topology.message.timeout.secs", 30u64).unwrap();
        b.spout("feeder", feeder.clone(), 1);
        b.bolt("picky", Picky, 2).shuffle_grouping("feeder");
        b.bolt("sink", Counter::default(), 1).shuffle_grouping("picky");
        let cluster = LocalCluster::new();
        let mut tracked = TrackedTopology::submit(&cluster, "tracked", &b.build().unwrap()).unwrap();

        feeder.feed_with_id(Word { word: Str::new("a") }, 1);
        feeder.feed_with_id(Word { word: Str::new("b") }, 2);
        tracked.tracked_wait(2).await.unwrap();
        assert_eq!(sorted(feeder.acked()), vec![1, 2], "acked by the time the wait returns");
        assert_eq!(tracked.read::<Count>("sink").unwrap().len(), 2);
        assert_eq!(tracked.in_flight(), 0);

        feeder.feed_with_id(Word { word: Str::new("fail") }, 3);
        feeder.feed(Word { word: Str::new("c") });
        tracked.tracked_wait(2).await.unwrap();
        assert_eq!(feeder.failed(), vec![3]);
        assert_eq!(tracked.read_tuples("picky", "default").len(), 3);

        // A held tuple times out after the 30 s message timeout — in simulated time.
        let before = tokio::time::Instant::now();
        feeder.feed_with_id(Word { word: Str::new("hold") }, 4);
        tracked.tracked_wait(1).await.unwrap();
        assert!(feeder.failed().len() == 1, "not yet timed out");
        advance_time(Duration::from_secs(59)).await;
        while feeder.failed().len() < 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let waited = before.elapsed();
        assert_eq!(feeder.failed(), vec![3, 4]);
        assert!(waited >= Duration::from_secs(30) && waited <= Duration::from_secs(61), "{waited:?}");

        feeder.finish();
        let report = cluster.wait_for_completion("tracked", Duration::from_secs(60)).await.unwrap();
        assert!(report.is_success(), "{report:?}");
        assert_eq!(report.metrics.component("feeder").unwrap().timed_out, 1);
    });
    assert!(started.elapsed() < Duration::from_secs(10), "simulated: took {:?}", started.elapsed());
}

#[test]
fn a_tracked_wait_that_cannot_be_met_says_what_it_saw() {
    with_simulated_time(async {
        let feeder = FeederSpout::<Word>::new();
        let mut b = TopologyBuilder::new();
        b.spout("feeder", feeder.clone(), 1);
        b.bolt("picky", Picky, 1).shuffle_grouping("feeder");
        let cluster = LocalCluster::new();
        let mut tracked = TrackedTopology::submit(&cluster, "never", &b.build().unwrap()).unwrap();
        feeder.feed(Word { word: Str::new("a") });
        let err = tracked.tracked_wait_for(2, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "topology `never`: waited 5s for 2 spout emits with nothing in flight; spouts emitted 1, 0 tuples in flight"
        );
        tracked.kill(Duration::from_secs(1)).await.unwrap();
    });
}

#[test]
fn rough_edges_are_gone() {
    // `Topology: Debug`, so a build result can be unwrapped either way.
    let mut b = TopologyBuilder::new();
    b.spout("sentences", Sentences, 1);
    b.bolt("split", Split, 1).shuffle_grouping("nowhere");
    let err: BuildError = b.build().unwrap_err();
    assert!(err.to_string().contains("unknown component `nowhere`"), "{err}");
    assert!(format!("{:?}", word_count(false)).contains("\"count\""));

    // Config values from u64 and usize.
    let mut config = Config::new();
    config.set("topology.message.timeout.secs", Duration::from_secs(7).as_secs()).unwrap();
    config.set("topology.max.spout.pending", 5usize).unwrap();
    assert_eq!(config.to_map()["topology.message.timeout.secs"], ConfigValue::Int(7));

    // Reading a tuple as the type of another stream with the same arity is an error.
    let meta = squall::StreamMeta::intern("count", "default", &["word", "count"]);
    let tuple = Tuple::new(meta, 1, values!["fox", 2u64], squall::MessageId::default());
    #[derive(Tuple, Debug)]
    struct Other {
        name: Str,
        total: u64,
    }
    let err = tuple.to::<Other>().unwrap_err();
    assert!(matches!(err, TupleError::Schema { .. }));
    assert!(err.to_string().starts_with("stream `default` of `count` has fields (word, count) but"), "{err}");
    assert_eq!(tuple.to::<Count>().unwrap(), Count { word: Str::new("fox"), count: 2 });

    // TaskId and ReplayQueue are in the prelude.
    let _: TaskId = 1;
    let _: ReplayQueue<u64, ()> = ReplayQueue::default();
}

/// Joins every two inputs into one output anchored to both, from a `Vec<Tuple>`.
#[derive(Clone, Default, Bolt)]
#[squall(output = Word)]
struct Pairs {
    held: Vec<Tuple>,
}

impl Bolt for Pairs {
    const AUTO_ACK: bool = false;

    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        self.held.push(input);
        if self.held.len() == 2 {
            out.anchored(&self.held).emit(Word { word: Str::new("pair") })?;
            for t in self.held.drain(..) {
                out.ack(&t);
            }
        }
        Ok(())
    }
}

#[test]
fn multi_anchoring_from_a_vec_of_tuples() {
    with_simulated_time(async {
        let feeder = FeederSpout::<Word>::new();
        let mut b = TopologyBuilder::new();
        b.spout("feeder", feeder.clone(), 1);
        b.bolt("pairs", Pairs::default(), 1).shuffle_grouping("feeder");
        b.bolt("picky", Picky, 1).shuffle_grouping("pairs");
        let cluster = LocalCluster::new();
        let mut tracked = TrackedTopology::submit(&cluster, "pairs", &b.build().unwrap()).unwrap();
        for id in 0..4 {
            feeder.feed_with_id(Word { word: Str::new("w") }, id);
        }
        tracked.tracked_wait(4).await.unwrap();
        assert_eq!(sorted(feeder.acked()), vec![0, 1, 2, 3]);
        assert_eq!(tracked.read_tuples("pairs", "default").len(), 2);
        tracked.kill(Duration::from_secs(1)).await.unwrap();
    });
}
