//! Storm's testing kit (`org.apache.storm.Testing`) for Squall: run a topology to completion
//! on mocked inputs and read what every component emitted, feed tuples from the test, wait until
//! fed tuples are fully processed without sleeping, and run time-based behaviour (message
//! timeouts, tick tuples, a bolt's own timers) on a simulated clock.
//!
//! Turn it on for tests: `squall = { version = "…", features = ["testing"] }` under
//! `[dev-dependencies]`.
//!
//! - [`complete_topology`]: replaces spouts by [`MockedSources`], runs until every spout is done
//!   and every tuple processed (cycles included), and returns every tuple each component
//!   emitted, per stream ([`CompletedTopology::read_tuples`], [`CompletedTopology::read`]).
//! - [`FeederSpout`]: a spout the test feeds, with or without message ids; it records which ids
//!   were acked or failed.
//! - [`TrackedTopology`]: [`TrackedTopology::tracked_wait`]`(n)` waits until the spouts have
//!   emitted `n` more tuples and nothing is in flight anywhere (acks included), and captures
//!   outputs like `complete_topology`.
//! - Simulated time: [`with_simulated_time`] runs a test on a paused tokio clock. Executors,
//!   timeouts, ticks and `tokio::time::sleep` all read that clock, which jumps ahead whenever
//!   every task waits on a timer (and [`advance_time`] moves it by hand): a 30 s message
//!   timeout passes in milliseconds.
//!
//! ```
//! use squall::prelude::*;
//! use squall::testing::{CompleteTopologyParam, MockedSources, complete_topology, with_simulated_time};
//! use squall::{ComponentError, LocalCluster};
//!
//! #[derive(Tuple, Debug, PartialEq)]
//! struct Word { word: Str }
//!
//! #[derive(Tuple, Debug, PartialEq)]
//! struct Shout { text: Str }
//!
//! /// A real spout: never runs in the test, its outputs are mocked.
//! #[derive(Clone, Spout)]
//! #[squall(output = Word)]
//! struct Words;
//!
//! impl Spout for Words {
//!     type MsgId = ();
//!     async fn next_tuple(&mut self, _out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
//!         unreachable!("mocked")
//!     }
//! }
//!
//! #[derive(Clone, Bolt)]
//! #[squall(output = Shout)]
//! struct Upper;
//!
//! impl Bolt for Upper {
//!     async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
//!         let Word { word } = input.to()?;
//!         out.emit(Shout { text: Str::from(word.to_uppercase()) })?;
//!         Ok(())
//!     }
//! }
//!
//! with_simulated_time(async {
//!     let mut b = TopologyBuilder::new();
//!     b.spout("words", Words, 1);
//!     b.bolt("upper", Upper, 2).shuffle_grouping("words");
//!     let topology = b.build().unwrap();
//!
//!     let mocked = MockedSources::new().add("words", [values!["a"], values!["b"]]);
//!     let cluster = LocalCluster::new();
//!     let done = complete_topology(&cluster, &topology, CompleteTopologyParam::new(mocked)).await.unwrap();
//!     assert_eq!(done.read_tuples("words", "default"), vec![values!["a"], values!["b"]]);
//!     let mut shouts: Vec<Shout> = done.read("upper").unwrap();
//!     shouts.sort_by(|a, b| a.text.cmp(&b.text));
//!     assert_eq!(shouts, vec![Shout { text: Str::new("A") }, Shout { text: Str::new("B") }]);
//! });
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use squall_topology::driver::{ErasedSpout, Prototype, SpoutFactory};
use squall_topology::{
    ComponentError, DEFAULT_STREAM, Factory, NoOutput, OutputDeclarer, Outputs, Spout, SpoutCollector, TaskId,
    Topology, TopologyContext, TupleError, TypedTuple, Values,
};
use squall_worker::{Captured, InFlight, InFlightTimeout, Instruments, LocalCluster, LocalClusterError, RunReport};

/// A test helper that could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum TestingError {
    /// Mocked tuples name a component that is not a spout of the topology.
    #[error("mocked sources name `{component}`, which is not a spout of this topology; its spouts are: {spouts}")]
    NotASpout {
        /// The component named.
        component: String,
        /// The topology's spouts.
        spouts: String,
    },
    /// Mocked tuples name a stream the spout does not declare.
    #[error(
        "mocked sources name stream `{stream}` of spout `{spout}`, which declares no such stream; its streams: {known}"
    )]
    UnknownStream {
        /// The spout.
        spout: String,
        /// The stream named.
        stream: String,
        /// The streams it declares.
        known: String,
    },
    /// A mocked tuple has another number of values than its stream has fields.
    #[error("mocked tuple #{index} of `{spout}` on `{stream}` has {found} values but the stream has {expected} fields")]
    Arity {
        /// The spout.
        spout: String,
        /// The stream.
        stream: String,
        /// The tuple's position among the spout's mocked tuples.
        index: usize,
        /// The stream's field count.
        expected: usize,
        /// The tuple's value count.
        found: usize,
    },
    /// Starting, waiting for or killing the topology failed (a timeout names what still runs).
    #[error(transparent)]
    Cluster(#[from] LocalClusterError),
    /// A tracked wait gave up.
    #[error("topology `{name}`: {source}")]
    TrackedWait {
        /// The topology.
        name: String,
        /// What was waited for and seen.
        source: InFlightTimeout,
    },
    /// Captured tuples read as a typed tuple they are not.
    #[error("reading what `{component}` emitted on `{stream}`: {source}")]
    Read {
        /// The component.
        component: String,
        /// The stream.
        stream: String,
        /// Why the values are not that type.
        source: Box<TupleError>,
    },
    /// Captured tuples read as a typed tuple whose fields are not the stream's.
    #[error("stream `{stream}` of `{component}` has fields ({found}) but `{type_name}` has fields ({expected})")]
    WrongType {
        /// The component.
        component: String,
        /// The stream.
        stream: String,
        /// The typed tuple asked for.
        type_name: &'static str,
        /// Its fields.
        expected: String,
        /// The stream's fields.
        found: String,
    },
    /// A read names a stream the component does not declare.
    #[error("component `{component}` declares no stream `{stream}`; its streams: {known}")]
    NoSuchStream {
        /// The component.
        component: String,
        /// The stream named.
        stream: String,
        /// Its streams (empty for an unknown component).
        known: String,
    },
}

/// Tuples that replace spouts' output in [`complete_topology`] (Storm's `MockedSources`): by
/// spout id, the values of each tuple and the stream it goes on.
#[derive(Clone, Debug, Default)]
pub struct MockedSources {
    by_spout: BTreeMap<String, Vec<(String, Values)>>,
}

impl MockedSources {
    /// No mocked spouts.
    pub fn new() -> Self {
        MockedSources::default()
    }

    /// Tuples for `spout`'s default stream, in order.
    pub fn add(self, spout: &str, tuples: impl IntoIterator<Item = Values>) -> Self {
        self.add_on(spout, DEFAULT_STREAM, tuples)
    }

    /// Tuples for a named stream of `spout`, after those already added.
    pub fn add_on(mut self, spout: &str, stream: &str, tuples: impl IntoIterator<Item = Values>) -> Self {
        let list = self.by_spout.entry(spout.to_owned()).or_default();
        list.extend(tuples.into_iter().map(|values| (stream.to_owned(), values)));
        self
    }

    /// Typed tuples for `spout`'s default stream.
    pub fn add_typed<T: TypedTuple>(self, spout: &str, tuples: impl IntoIterator<Item = T>) -> Self {
        self.add(spout, tuples.into_iter().map(T::into_values))
    }
}

/// How [`complete_topology`] runs (Storm's `CompleteTopologyParam`).
#[derive(Clone, Debug)]
pub struct CompleteTopologyParam {
    /// Spouts replaced by fixed tuples; other spouts run as they are and must finish by
    /// themselves (`out.done()`).
    pub mocked_sources: MockedSources,
    /// How long to wait for completion (on tokio's clock: simulated time applies).
    pub timeout: Duration,
    /// The name the topology runs under.
    pub topology_name: String,
}

impl CompleteTopologyParam {
    /// These mocked sources, a 60 s timeout, the name `complete-topology`.
    pub fn new(mocked_sources: MockedSources) -> Self {
        CompleteTopologyParam {
            mocked_sources,
            timeout: Duration::from_secs(60),
            topology_name: "complete-topology".into(),
        }
    }

    /// Another timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Stream declarations of a topology, to check typed reads of captured tuples.
#[derive(Clone, Debug)]
struct Streams(BTreeMap<String, Vec<(String, Vec<String>)>>);

impl Streams {
    fn of(topology: &Topology) -> Streams {
        let by_component = topology
            .components()
            .iter()
            .map(|c| (c.id.clone(), c.streams.iter().flatten().map(|s| (s.name.clone(), s.fields.clone())).collect()))
            .collect();
        Streams(by_component)
    }

    fn fields(&self, component: &str, stream: &str) -> Result<&[String], TestingError> {
        let streams = self.0.get(component).map(Vec::as_slice).unwrap_or_default();
        streams.iter().find(|(name, _)| name == stream).map(|(_, fields)| fields.as_slice()).ok_or_else(|| {
            TestingError::NoSuchStream {
                component: component.to_owned(),
                stream: stream.to_owned(),
                known: streams.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(", "),
            }
        })
    }

    fn read<T: TypedTuple>(&self, captured: &Captured, component: &str, stream: &str) -> Result<Vec<T>, TestingError> {
        let read_error = |source: TupleError| TestingError::Read {
            component: component.to_owned(),
            stream: stream.to_owned(),
            source: Box::new(source),
        };
        let fields = self.fields(component, stream)?;
        if fields.iter().map(String::as_str).ne(T::FIELDS.iter().copied()) {
            return Err(TestingError::WrongType {
                component: component.to_owned(),
                stream: stream.to_owned(),
                type_name: std::any::type_name::<T>(),
                expected: T::FIELDS.join(", "),
                found: fields.join(", "),
            });
        }
        captured.tuples(component, stream).iter().map(|values| T::from_values(values).map_err(read_error)).collect()
    }
}

/// What [`complete_topology`] saw: every tuple each component emitted, and how the run ended.
#[derive(Debug)]
pub struct CompletedTopology {
    /// How the run ended: failures, aborted executors, final metrics.
    pub report: RunReport,
    captured: Arc<Captured>,
    streams: Streams,
}

impl CompletedTopology {
    /// The values of every tuple `component` emitted on `stream` (Storm's `readTuples`), in the
    /// order each of its executors emitted them.
    pub fn read_tuples(&self, component: &str, stream: &str) -> Vec<Values> {
        self.captured.tuples(component, stream)
    }

    /// What `component` emitted on its default stream, as typed tuples.
    pub fn read<T: TypedTuple>(&self, component: &str) -> Result<Vec<T>, TestingError> {
        self.streams.read(&self.captured, component, DEFAULT_STREAM)
    }

    /// What `component` emitted on `stream`, as typed tuples; the stream must have `T`'s fields.
    pub fn read_on<T: TypedTuple>(&self, component: &str, stream: &str) -> Result<Vec<T>, TestingError> {
        self.streams.read(&self.captured, component, stream)
    }

    /// Everything captured, by (component, stream).
    pub fn captured(&self) -> &Captured {
        &self.captured
    }
}

/// Runs `topology` on `cluster` with the spouts in `param.mocked_sources` replaced by their
/// fixed tuples (tracked by message id, so with acking the run waits for every tree), until
/// every spout is done and every tuple is processed — cycles included — and returns every
/// tuple each component emitted (Storm's `completeTopology`). A mocked spout with several tasks
/// splits its tuples among them round-robin, as Storm's `FixedTupleSpout` does.
///
/// A run that does not complete within `param.timeout` is killed and reported with what still
/// ran. Task failures do not make this an error: check `report.is_success()`.
pub async fn complete_topology(
    cluster: &LocalCluster,
    topology: &Topology,
    param: CompleteTopologyParam,
) -> Result<CompletedTopology, TestingError> {
    let mut topology = topology.clone();
    for (spout, tuples) in param.mocked_sources.by_spout {
        let Some(def) = topology.component(&spout).filter(|c| matches!(c.factory, Factory::Spout(_))) else {
            return Err(TestingError::NotASpout { component: spout, spouts: spout_ids(&topology) });
        };
        for (index, (stream, values)) in tuples.iter().enumerate() {
            let Some((_, decl)) = def.stream(stream) else {
                let known = def.streams.iter().flatten().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ");
                return Err(TestingError::UnknownStream { spout, stream: stream.clone(), known });
            };
            if decl.fields.len() != values.len() {
                return Err(TestingError::Arity {
                    spout,
                    stream: stream.clone(),
                    index,
                    expected: decl.fields.len(),
                    found: values.len(),
                });
            }
        }
        if let Some(factory) = topology.spout_factory_mut(&spout) {
            let mock = MockedSpout { tuples: Arc::new(tuples), serve: Vec::new(), next: 0 };
            *factory = Arc::new(MockedFactory { mock: Prototype(mock), original: factory.clone() });
        }
    }
    let captured = Arc::new(Captured::default());
    let instruments = Instruments { capture: Some(captured.clone()), in_flight: None };
    let name = param.topology_name;
    cluster.submit_instrumented(&name, &topology, instruments)?;
    let report = match cluster.wait_for_completion(&name, param.timeout).await {
        Ok(report) => report,
        Err(e) => {
            let _ = cluster.kill(&name, Duration::ZERO).await;
            return Err(e.into());
        }
    };
    Ok(CompletedTopology { report, captured, streams: Streams::of(&topology) })
}

fn spout_ids(topology: &Topology) -> String {
    let ids: Vec<&str> = topology
        .components()
        .iter()
        .filter(|c| matches!(c.factory, Factory::Spout(_)))
        .map(|c| c.id.as_str())
        .collect();
    ids.join(", ")
}

/// A mocked spout: the original's streams, the mock's tasks.
struct MockedFactory {
    mock: Prototype<MockedSpout>,
    original: Arc<dyn SpoutFactory>,
}

impl SpoutFactory for MockedFactory {
    fn create(&self, task: TaskId) -> Box<dyn ErasedSpout> {
        self.mock.create(task)
    }

    fn declare_outputs(&self, declarer: &mut OutputDeclarer) {
        self.original.declare_outputs(declarer)
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<MockedSpout>()
    }
}

/// Emits its share of fixed tuples, each tracked by its position, then says it is done.
#[derive(Clone)]
struct MockedSpout {
    tuples: Arc<Vec<(String, Values)>>,
    /// Positions this task serves.
    serve: Vec<usize>,
    next: usize,
}

impl Outputs for MockedSpout {
    // Its streams are the mocked spout's, declared by `MockedFactory`.
    type Default = NoOutput;
    fn declare_outputs(_declarer: &mut OutputDeclarer) {}
}

impl Spout for MockedSpout {
    type MsgId = u64;

    async fn open(&mut self, ctx: &TopologyContext) -> Result<(), ComponentError> {
        let tasks = ctx.this_component_tasks().len().max(1);
        self.serve = (ctx.task_index()..self.tuples.len()).step_by(tasks).collect();
        Ok(())
    }

    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        let Some(&position) = self.serve.get(self.next) else {
            out.done();
            return Ok(());
        };
        self.next += 1;
        let (stream, values) = &self.tuples[position];
        out.emit_values(stream, values.clone(), None, Some(position as u64))?;
        Ok(())
    }
}

/// What a [`FeederSpout`]'s tasks and the test share.
#[derive(Debug, Default)]
struct FeederState {
    queue: VecDeque<(Values, Option<u64>)>,
    acked: Vec<u64>,
    failed: Vec<u64>,
    finished: bool,
}

/// A spout the test feeds (Storm's `FeederSpout`): [`feed`](FeederSpout::feed) queues an
/// untracked tuple, [`feed_with_id`](FeederSpout::feed_with_id) a tracked one whose ack or
/// fail is recorded ([`acked`](FeederSpout::acked), [`failed`](FeederSpout::failed)). Clones
/// share one queue: keep a clone in the test and give one to the builder. Its tasks stop once
/// [`finish`](FeederSpout::finish) was called and the queue is empty, so a topology fed this
/// way can also run to completion.
pub struct FeederSpout<T> {
    state: Arc<Mutex<FeederState>>,
    _tuple: PhantomData<fn() -> T>,
}

impl<T> Clone for FeederSpout<T> {
    fn clone(&self) -> Self {
        FeederSpout { state: self.state.clone(), _tuple: PhantomData }
    }
}

impl<T: TypedTuple> Default for FeederSpout<T> {
    fn default() -> Self {
        FeederSpout::new()
    }
}

impl<T: TypedTuple> FeederSpout<T> {
    /// A feeder with nothing queued.
    pub fn new() -> Self {
        FeederSpout { state: Arc::default(), _tuple: PhantomData }
    }

    fn lock(&self) -> MutexGuard<'_, FeederState> {
        // Every update is a single push or pop: a holder that panicked left it consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an untracked tuple.
    pub fn feed(&self, tuple: T) {
        self.lock().queue.push_back((tuple.into_values(), None));
    }

    /// Queues a tuple tracked by `id`: its tree's ack or fail is recorded.
    pub fn feed_with_id(&self, tuple: T, id: u64) {
        self.lock().queue.push_back((tuple.into_values(), Some(id)));
    }

    /// Queues raw values (checked against the stream's fields when emitted).
    pub fn feed_values(&self, values: Values, id: Option<u64>) {
        self.lock().queue.push_back((values, id));
    }

    /// Says nothing more will be fed: the spout's tasks finish once the queue is empty and
    /// their tracked tuples are acked or failed.
    pub fn finish(&self) {
        self.lock().finished = true;
    }

    /// Ids whose trees completed, in order.
    pub fn acked(&self) -> Vec<u64> {
        self.lock().acked.clone()
    }

    /// Ids whose trees failed or timed out, in order.
    pub fn failed(&self) -> Vec<u64> {
        self.lock().failed.clone()
    }

    /// Tuples fed and not yet emitted.
    pub fn queued(&self) -> usize {
        self.lock().queue.len()
    }
}

impl<T: TypedTuple> Outputs for FeederSpout<T> {
    type Default = T;

    fn declare_outputs(declarer: &mut OutputDeclarer) {
        declarer.declare::<T>(DEFAULT_STREAM, false);
    }
}

impl<T: TypedTuple> Spout for FeederSpout<T> {
    type MsgId = u64;

    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        let next = {
            let mut state = self.lock();
            let next = state.queue.pop_front();
            if next.is_none() && state.finished {
                out.done();
            }
            next
        };
        if let Some((values, id)) = next {
            out.emit_values(DEFAULT_STREAM, values, None, id)?;
        }
        Ok(())
    }

    async fn ack(&mut self, id: u64) {
        self.lock().acked.push(id);
    }

    async fn fail(&mut self, id: u64) {
        self.lock().failed.push(id);
    }
}

/// How long [`TrackedTopology::tracked_wait`] waits, on tokio's clock.
pub const TRACKED_WAIT_TIMEOUT: Duration = Duration::from_secs(60);

/// A topology running on a [`LocalCluster`] whose tuples are tracked (Storm's
/// `TrackedTopology`): [`tracked_wait`](TrackedTopology::tracked_wait) returns once fed tuples
/// are fully processed, and every component's outputs are captured.
pub struct TrackedTopology<'c> {
    cluster: &'c LocalCluster,
    name: String,
    in_flight: Arc<InFlight>,
    captured: Arc<Captured>,
    streams: Streams,
    /// Spout emits waited for so far.
    waited_for: u64,
}

impl<'c> TrackedTopology<'c> {
    /// Starts `topology` on `cluster` under `name`, tracked.
    pub fn submit(cluster: &'c LocalCluster, name: &str, topology: &Topology) -> Result<Self, TestingError> {
        let in_flight = Arc::new(InFlight::default());
        let captured = Arc::new(Captured::default());
        let instruments = Instruments { capture: Some(captured.clone()), in_flight: Some(in_flight.clone()) };
        cluster.submit_instrumented(name, topology, instruments)?;
        Ok(TrackedTopology {
            cluster,
            name: name.to_owned(),
            in_flight,
            captured,
            streams: Streams::of(topology),
            waited_for: 0,
        })
    }

    /// Waits until the spouts have emitted `n` more tuples than at the end of the previous
    /// wait, and every tuple and acking message they caused has been processed (Storm's
    /// `trackedWait`). Gives up after [`TRACKED_WAIT_TIMEOUT`].
    pub async fn tracked_wait(&mut self, n: u64) -> Result<(), TestingError> {
        self.tracked_wait_for(n, TRACKED_WAIT_TIMEOUT).await
    }

    /// [`tracked_wait`](TrackedTopology::tracked_wait) with another timeout.
    pub async fn tracked_wait_for(&mut self, n: u64, timeout: Duration) -> Result<(), TestingError> {
        let target = self.waited_for + n;
        self.in_flight
            .wait(target, timeout)
            .await
            .map_err(|source| TestingError::TrackedWait { name: self.name.clone(), source })?;
        self.waited_for = target;
        Ok(())
    }

    /// Tuples (and acking messages) in flight now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.pending()
    }

    /// The values of every tuple `component` emitted on `stream` so far.
    pub fn read_tuples(&self, component: &str, stream: &str) -> Vec<Values> {
        self.captured.tuples(component, stream)
    }

    /// What `component` emitted on its default stream so far, as typed tuples.
    pub fn read<T: TypedTuple>(&self, component: &str) -> Result<Vec<T>, TestingError> {
        self.streams.read(&self.captured, component, DEFAULT_STREAM)
    }

    /// Everything captured so far, by (component, stream).
    pub fn captured(&self) -> &Captured {
        &self.captured
    }

    /// The name it runs under on the cluster.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Kills it, letting bolts drain for up to `wait`.
    pub async fn kill(self, wait: Duration) -> Result<RunReport, TestingError> {
        Ok(self.cluster.kill(&self.name, wait).await?)
    }
}

/// Runs `test` to its end on a current-thread tokio runtime whose clock is paused (Storm's
/// `withSimulatedTime`): every executor, message timeout, tick tuple and `tokio::time` call of
/// the topologies it starts reads that clock. The clock jumps to the next timer whenever every
/// task waits on one, so timeouts of seconds pass in milliseconds; [`advance_time`] moves it
/// explicitly. Inside `#[tokio::test]`, `#[tokio::test(start_paused = true)]` does the same.
///
/// The clock only jumps while nothing can run: a spout that emits without ever waiting keeps
/// simulated time still (feed tuples with a [`FeederSpout`], or pace the spout with
/// `tokio::time::sleep`). Everything runs on one thread.
///
/// Panics if the runtime cannot be built (as `#[tokio::test]` does).
pub fn with_simulated_time<F: Future>(test: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("building a current-thread tokio runtime");
    runtime.block_on(test)
}

/// Moves the simulated clock forward by `by` (Storm's `advanceClusterTime`), running whatever
/// becomes due. Panics outside a runtime with a paused clock.
pub async fn advance_time(by: Duration) {
    tokio::time::advance(by).await;
}
