//! Topology validation and config errors: each names the offender.

use squall::prelude::*;
use squall::{BuildError, ConfigError};
use squall_tests::{Log, Recorder, SequenceSpout};

fn spout() -> SequenceSpout {
    SequenceSpout::new(10, 2)
}

fn err(b: TopologyBuilder) -> (BuildError, String) {
    let e = b.build().expect_err("the topology must not build");
    let message = e.to_string();
    (e, message)
}

#[test]
fn unknown_component() {
    let mut b = TopologyBuilder::new();
    b.spout("spout", spout(), 1);
    b.bolt("sink", Recorder::default(), 1).shuffle_grouping("spuot");
    let (e, m) = err(b);
    assert!(matches!(e, BuildError::UnknownComponent { .. }));
    assert_eq!(m, "`sink` subscribes to unknown component `spuot`; known components: spout, sink");
}

#[test]
fn unknown_stream() {
    let mut b = TopologyBuilder::new();
    b.spout("spout", spout(), 1);
    b.bolt("sink", Recorder::default(), 1).shuffle_grouping(("spout", "warnings"));
    let (e, m) = err(b);
    assert!(matches!(e, BuildError::UnknownStream { .. }));
    assert_eq!(
        m,
        "`sink` subscribes to stream `warnings` of `spout`, which declares no such stream; its streams: default, errors"
    );
}

#[test]
fn unknown_field() {
    let mut b = TopologyBuilder::new();
    b.spout("spout", spout(), 1);
    b.bolt("sink", Recorder::default(), 2).fields_grouping("spout", ["kye"]);
    let (e, m) = err(b);
    assert!(matches!(e, BuildError::UnknownField { .. }));
    assert_eq!(m, "`sink` groups stream `default` of `spout` by unknown field `kye`; the stream's fields: key, seq");

    let mut b = TopologyBuilder::new();
    b.spout("spout", spout(), 1);
    b.bolt("sink", Recorder::default(), 2).partial_key_grouping("spout", ["key", "nope"]);
    assert!(matches!(err(b).0, BuildError::UnknownField { field, .. } if field == "nope"));
}

#[test]
fn duplicate_component_id() {
    let mut b = TopologyBuilder::new();
    b.spout("spout", spout(), 1);
    b.bolt("spout", Recorder::default(), 1).shuffle_grouping("spout");
    let (e, m) = err(b);
    assert_eq!(e, BuildError::DuplicateComponent("spout".into()));
    assert!(m.contains("`spout` is used twice"), "{m}");
}

#[test]
fn zero_parallelism_and_too_few_tasks() {
    let mut b = TopologyBuilder::new();
    b.spout("spout", spout(), 0);
    assert_eq!(err(b).0, BuildError::ZeroParallelism("spout".into()));

    let mut b = TopologyBuilder::new();
    b.spout("spout", spout(), 1);
    b.bolt("sink", Recorder::default(), 4).tasks(2).shuffle_grouping("spout");
    let (e, m) = err(b);
    assert!(matches!(e, BuildError::TooFewTasks { tasks: 2, parallelism: 4, .. }));
    assert!(m.contains("component `sink` has 2 tasks but 4 executors"), "{m}");
}

#[test]
fn direct_grouping_needs_a_direct_stream_and_back() {
    let mut b = TopologyBuilder::new();
    b.spout("spout", spout(), 1);
    b.bolt("sink", Recorder::default(), 1).direct_grouping("spout");
    let (e, m) = err(b);
    assert!(matches!(e, BuildError::DirectMismatch { direct: false, .. }));
    assert!(m.contains("non-direct stream `default` of `spout` with direct_grouping"), "{m}");
}

#[test]
fn reserved_ids_and_no_spout() {
    let mut b = TopologyBuilder::new();
    b.spout("__acker", spout(), 1);
    assert_eq!(err(b).0, BuildError::InvalidId("__acker".into()));

    let mut b = TopologyBuilder::new();
    b.bolt("sink", Recorder::default(), 1);
    assert_eq!(err(b).0, BuildError::NoSpout);
}

#[test]
fn component_config_errors_name_the_component_and_key() {
    let mut b = TopologyBuilder::new();
    b.spout("spout", spout(), 1).set("topology.workers", 3);
    let (e, m) = err(b);
    assert!(matches!(e, BuildError::ComponentConfig { source: ConfigError::NotPerComponent { .. }, .. }));
    assert!(m.starts_with("component `spout`: config key `topology.workers` applies to the whole topology"), "{m}");

    let mut b = TopologyBuilder::new();
    b.spout("spout", spout(), 1);
    b.bolt("sink", Recorder::default(), 1).shuffle_grouping("spout").set("topology.tick.tuple.freq.secs", "often");
    let m = err(b).1;
    assert_eq!(
        m,
        "component `sink`: config key `topology.tick.tuple.freq.secs` expects a positive integer or null, got a string (\"often\")"
    );
}

#[test]
fn topology_config_errors_name_the_key() {
    let mut config = Config::new();
    let e = config.set("topology.max.spout.pendng", 10).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("unknown config key `topology.max.spout.pendng` (did you mean `topology.max.spout.pending`?)")
    );
    let e = config.apply_override("topology.message.timeout.secs=soon").unwrap_err();
    assert_eq!(
        e.to_string(),
        "config key `topology.message.timeout.secs` expects a positive integer, got a string (\"soon\")"
    );
    assert!(config.set("topology.enable.message.timeouts", "yes").is_err());
}

#[test]
fn the_spec_describes_the_topology() {
    let log = Log::default();
    let mut b = TopologyBuilder::new();
    b.config_mut().set("topology.workers", 2).unwrap();
    b.spout("spout", spout(), 2).tasks(4);
    b.bolt("sink", Recorder::new(&log), 3).fields_grouping("spout", ["key"]).tick_tuple_freq_secs(5);
    let spec = b.build().unwrap().spec();
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["config"]["topology.workers"], 2);
    let sink = &json["components"][1];
    assert_eq!(sink["id"], "sink");
    assert_eq!(sink["kind"], "bolt");
    assert_eq!(sink["parallelism"], 3);
    assert_eq!(sink["task_ids"], serde_json::json!([1, 2, 3]));
    assert_eq!(
        sink["inputs"][0],
        serde_json::json!({"component": "spout", "stream": "default", "grouping": {"type": "fields", "fields": ["key"]}})
    );
    assert_eq!(sink["config"]["topology.tick.tuple.freq.secs"], 5);
    let spout = &json["components"][0];
    assert_eq!(spout["task_ids"], serde_json::json!([4, 5, 6, 7]));
    assert_eq!(spout["streams"][1], serde_json::json!({"name": "errors", "fields": ["seq"], "direct": false}));
    let back: squall::TopologySpec = serde_json::from_value(json).unwrap();
    assert_eq!(back, spec);
}
