//! The topology builder: components, their parallelism and subscriptions, validated at `build`.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::chain::ChainPlan;
use crate::component::{Bolt, DirectStream, OutputDeclarer, Outputs, Spout, Stream, StreamDecl};
use crate::config::{ComponentConfig, Config, ConfigError, ConfigValue};
use crate::context::TaskLayout;
use crate::driver::{BoltFactory, Prototype, SpoutFactory};
use crate::grouping::{CustomGrouping, Grouping, GroupingSpec};
use crate::query::QueryableState;
use crate::tuple::{DEFAULT_STREAM, FieldKey, TypedTuple};

/// A topology that does not hold together. Each variant names the offender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// Two components share an id.
    #[error("component id `{0}` is used twice; every spout and bolt needs its own id")]
    DuplicateComponent(String),
    /// An empty id, or one starting with `__`, which is reserved for system components.
    #[error("component id `{0}` is invalid: ids must be non-empty and must not start with `__`")]
    InvalidId(String),
    /// A subscription names a component that does not exist.
    #[error("`{subscriber}` subscribes to unknown component `{component}`; known components: {known}")]
    UnknownComponent {
        /// The bolt subscribing.
        subscriber: String,
        /// The missing component.
        component: String,
        /// The components that exist.
        known: String,
    },
    /// A subscription names a stream its source does not declare.
    #[error(
        "`{subscriber}` subscribes to stream `{stream}` of `{component}`, which declares no such stream; its streams: {known}"
    )]
    UnknownStream {
        /// The bolt subscribing.
        subscriber: String,
        /// The source component.
        component: String,
        /// The missing stream.
        stream: String,
        /// The streams it declares.
        known: String,
    },
    /// A fields or partial-key grouping names a field the stream does not have.
    #[error(
        "`{subscriber}` groups stream `{stream}` of `{component}` by unknown field `{field}`; the stream's fields: {known}"
    )]
    UnknownField {
        /// The bolt subscribing.
        subscriber: String,
        /// The source component.
        component: String,
        /// The stream.
        stream: String,
        /// The missing field.
        field: String,
        /// The fields it has.
        known: String,
    },
    /// Parallelism or task count of zero.
    #[error("component `{0}` has zero parallelism; it needs at least one executor")]
    ZeroParallelism(String),
    /// Fewer tasks than executors.
    #[error(
        "component `{component}` has {tasks} tasks but {parallelism} executors; tasks must be at least the parallelism"
    )]
    TooFewTasks {
        /// The component.
        component: String,
        /// Its task count.
        tasks: u32,
        /// Its parallelism.
        parallelism: u32,
    },
    /// A direct grouping on a stream not declared direct, or another grouping on a direct stream.
    #[error("`{subscriber}` subscribes to {} stream `{stream}` of `{component}` with {}", if *.direct { "direct" } else { "non-direct" }, if *.direct { "a non-direct grouping; use direct_grouping" } else { "direct_grouping; declare the stream direct or use another grouping" })]
    DirectMismatch {
        /// The bolt subscribing.
        subscriber: String,
        /// The source component.
        component: String,
        /// The stream.
        stream: String,
        /// Whether the stream is direct.
        direct: bool,
    },
    /// A component's output declaration is inconsistent.
    #[error("component `{component}`: {message}")]
    InvalidOutputs {
        /// The component.
        component: String,
        /// What is wrong.
        message: String,
    },
    /// A config key or value was rejected.
    #[error("component `{component}`: {source}")]
    ComponentConfig {
        /// The component.
        component: String,
        /// The config error.
        source: ConfigError,
    },
    /// The topology has no spout.
    #[error("the topology has no spout; add one with TopologyBuilder::spout")]
    NoSpout,
}

/// Whether a component is a spout or a bolt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentKind {
    /// A source.
    Spout,
    /// A processor.
    Bolt,
}

/// A subscription of a bolt to a stream of another component.
#[derive(Clone, Debug)]
pub struct Subscription {
    /// The source component.
    pub component: String,
    /// The source stream.
    pub stream: String,
    /// How tuples are divided among the bolt's tasks.
    pub grouping: Grouping,
}

/// How a component's tasks are made.
#[derive(Clone)]
pub enum Factory {
    /// Spout tasks.
    Spout(Arc<dyn SpoutFactory>),
    /// Bolt tasks.
    Bolt(Arc<dyn BoltFactory>),
}

/// One spout or bolt of a built topology.
#[derive(Clone)]
pub struct ComponentDef {
    /// Its id.
    pub id: String,
    /// Executors: concurrent instances.
    pub parallelism: u32,
    /// Tasks: routing targets, spread over the executors.
    pub tasks: u32,
    /// Output streams indexed by stream index; slot 0 (the default stream) may be empty.
    pub streams: Vec<Option<StreamDecl>>,
    /// What it subscribes to.
    pub inputs: Vec<Subscription>,
    /// Per-component config overrides.
    pub config: ComponentConfig,
    /// How its tasks are made.
    pub factory: Factory,
}

impl ComponentDef {
    /// Spout or bolt.
    pub fn kind(&self) -> ComponentKind {
        match self.factory {
            Factory::Spout(_) => ComponentKind::Spout,
            Factory::Bolt(_) => ComponentKind::Bolt,
        }
    }

    /// A stream by name with its index.
    pub fn stream(&self, name: &str) -> Option<(u16, &StreamDecl)> {
        self.streams.iter().enumerate().find_map(|(i, s)| s.as_ref().filter(|s| s.name == name).map(|s| (i as u16, s)))
    }

    fn stream_names(&self) -> String {
        let names: Vec<&str> = self.streams.iter().flatten().map(|s| s.name.as_str()).collect();
        if names.is_empty() { "(none)".to_owned() } else { names.join(", ") }
    }
}

/// A component whose output streams are declared by a closure rather than its type.
struct DeclaredOutputs<C> {
    prototype: Prototype<C>,
    declare: Box<dyn Fn(&mut OutputDeclarer) + Send + Sync>,
}

impl<S: Spout + Clone + Sync> SpoutFactory for DeclaredOutputs<S> {
    fn create(&self, task: crate::tuple::TaskId) -> Box<dyn crate::driver::ErasedSpout> {
        self.prototype.create(task)
    }

    fn declare_outputs(&self, declarer: &mut OutputDeclarer) {
        (self.declare)(declarer)
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<S>()
    }
}

impl<B: Bolt + Clone + Sync> BoltFactory for DeclaredOutputs<B> {
    fn create(&self, task: crate::tuple::TaskId) -> Box<dyn crate::driver::ErasedBolt> {
        self.prototype.create(task)
    }

    fn declare_outputs(&self, declarer: &mut OutputDeclarer) {
        (self.declare)(declarer)
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<B>()
    }
}

/// Builds a topology (Storm's `TopologyBuilder`). Mistakes are collected and reported by
/// [`TopologyBuilder::build`], so declarations chain without `?` at every step.
#[derive(Default)]
pub struct TopologyBuilder {
    components: Vec<ComponentDef>,
    errors: Vec<BuildError>,
    config: Config,
    states: BTreeMap<String, Arc<dyn QueryableState>>,
}

impl TopologyBuilder {
    /// Lets `squall query <topology> {name} <key>…` (and [`Topology::queryable_state`]) read
    /// `state` while the topology runs. A name registered twice keeps the last state.
    pub fn queryable_state(&mut self, name: &str, state: Arc<dyn QueryableState>) -> &mut Self {
        self.states.insert(name.to_owned(), state);
        self
    }

    /// An empty builder with the default config.
    pub fn new() -> Self {
        TopologyBuilder::default()
    }

    /// Replaces the topology config.
    pub fn set_config(&mut self, config: Config) -> &mut Self {
        self.config = config;
        self
    }

    /// The topology config, to change keys in place.
    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    /// Adds a spout with `parallelism` executors (and as many tasks unless `.tasks(n)` says
    /// otherwise). Each task runs a clone of `spout`.
    pub fn spout<S: Spout + Clone + Sync>(
        &mut self,
        id: impl Into<String>,
        spout: S,
        parallelism: u32,
    ) -> SpoutDeclarer<'_, S> {
        let index = self.add(id.into(), parallelism, Factory::Spout(Arc::new(Prototype(spout))));
        SpoutDeclarer { builder: self, index, _spout: PhantomData }
    }

    /// Adds a bolt with `parallelism` executors (and as many tasks unless `.tasks(n)` says
    /// otherwise). Each task runs a clone of `bolt`. Subscribe it with the grouping methods.
    pub fn bolt<B: Bolt + Clone + Sync>(
        &mut self,
        id: impl Into<String>,
        bolt: B,
        parallelism: u32,
    ) -> BoltDeclarer<'_, B> {
        let index = self.add(id.into(), parallelism, Factory::Bolt(Arc::new(Prototype(bolt))));
        let declarer = BoltDeclarer { builder: self, index, _bolt: PhantomData };
        match B::TICK_TUPLE_FREQ_SECS {
            Some(secs) => declarer.tick_tuple_freq_secs(secs),
            None => declarer,
        }
    }

    /// Adds a spout whose output streams `declare` names at run time instead of its type (code
    /// that builds components from a description, such as the Trident layer). It emits with
    /// `emit_values` on the streams declared here.
    pub fn spout_with_outputs<S: Spout + Clone + Sync>(
        &mut self,
        id: impl Into<String>,
        spout: S,
        parallelism: u32,
        declare: impl Fn(&mut OutputDeclarer) + Send + Sync + 'static,
    ) -> SpoutDeclarer<'_, S> {
        let factory = DeclaredOutputs { prototype: Prototype(spout), declare: Box::new(declare) };
        let index = self.add(id.into(), parallelism, Factory::Spout(Arc::new(factory)));
        SpoutDeclarer { builder: self, index, _spout: PhantomData }
    }

    /// Adds a bolt whose output streams `declare` names at run time instead of its type; see
    /// [`TopologyBuilder::spout_with_outputs`].
    pub fn bolt_with_outputs<B: Bolt + Clone + Sync>(
        &mut self,
        id: impl Into<String>,
        bolt: B,
        parallelism: u32,
        declare: impl Fn(&mut OutputDeclarer) + Send + Sync + 'static,
    ) -> BoltDeclarer<'_, B> {
        let factory = DeclaredOutputs { prototype: Prototype(bolt), declare: Box::new(declare) };
        let index = self.add(id.into(), parallelism, Factory::Bolt(Arc::new(factory)));
        let declarer = BoltDeclarer { builder: self, index, _bolt: PhantomData };
        match B::TICK_TUPLE_FREQ_SECS {
            Some(secs) => declarer.tick_tuple_freq_secs(secs),
            None => declarer,
        }
    }

    fn add(&mut self, id: String, parallelism: u32, factory: Factory) -> usize {
        if id.is_empty() || id.starts_with("__") {
            self.errors.push(BuildError::InvalidId(id.clone()));
        }
        if self.components.iter().any(|c| c.id == id) {
            self.errors.push(BuildError::DuplicateComponent(id.clone()));
        }
        if parallelism == 0 {
            self.errors.push(BuildError::ZeroParallelism(id.clone()));
        }
        let mut declarer = OutputDeclarer::new();
        match &factory {
            Factory::Spout(f) => f.declare_outputs(&mut declarer),
            Factory::Bolt(f) => f.declare_outputs(&mut declarer),
        }
        let streams = declarer.into_streams().unwrap_or_else(|messages| {
            for message in messages {
                self.errors.push(BuildError::InvalidOutputs { component: id.clone(), message });
            }
            Vec::new()
        });
        self.components.push(ComponentDef {
            id,
            parallelism,
            tasks: parallelism,
            streams,
            inputs: Vec::new(),
            config: ComponentConfig::default(),
            factory,
        });
        self.components.len() - 1
    }

    /// Validates the graph and returns the topology, or the first mistake found.
    pub fn build(self) -> Result<Topology, BuildError> {
        if let Some(error) = self.errors.into_iter().next() {
            return Err(error);
        }
        let components = self.components;
        if !components.iter().any(|c| c.kind() == ComponentKind::Spout) {
            return Err(BuildError::NoSpout);
        }
        let known = || components.iter().map(|c| c.id.as_str()).collect::<Vec<_>>().join(", ");
        for component in &components {
            if component.tasks < component.parallelism {
                return Err(BuildError::TooFewTasks {
                    component: component.id.clone(),
                    tasks: component.tasks,
                    parallelism: component.parallelism,
                });
            }
            for input in &component.inputs {
                let source = components.iter().find(|c| c.id == input.component).ok_or_else(|| {
                    BuildError::UnknownComponent {
                        subscriber: component.id.clone(),
                        component: input.component.clone(),
                        known: known(),
                    }
                })?;
                let (_, stream) = source.stream(&input.stream).ok_or_else(|| BuildError::UnknownStream {
                    subscriber: component.id.clone(),
                    component: source.id.clone(),
                    stream: input.stream.clone(),
                    known: source.stream_names(),
                })?;
                if let Some(field) = input.grouping.fields().iter().find(|f| !stream.fields.contains(f)) {
                    return Err(BuildError::UnknownField {
                        subscriber: component.id.clone(),
                        component: source.id.clone(),
                        stream: stream.name.clone(),
                        field: field.clone(),
                        known: stream.fields.join(", "),
                    });
                }
                if matches!(input.grouping, Grouping::Direct) != stream.direct {
                    return Err(BuildError::DirectMismatch {
                        subscriber: component.id.clone(),
                        component: source.id.clone(),
                        stream: stream.name.clone(),
                        direct: stream.direct,
                    });
                }
            }
        }
        let layout = TaskLayout::new(components.iter().map(|c| (c.id.clone(), c.tasks)).collect());
        Ok(Topology { components, config: self.config, layout: Arc::new(layout), states: self.states })
    }
}

/// A typed reference to a component added to the builder, for typed subscriptions.
pub struct Handle<C> {
    id: String,
    _component: PhantomData<fn() -> C>,
}

impl<C> Clone for Handle<C> {
    fn clone(&self) -> Self {
        Handle { id: self.id.clone(), _component: PhantomData }
    }
}

impl<C> Handle<C> {
    /// The component's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// One of the component's named streams, typed.
    pub fn stream<T>(&self, stream: Stream<C, T>) -> TypedSource<T> {
        TypedSource { source: Source::new(&self.id, stream.name()), _tuple: PhantomData }
    }

    /// One of the component's direct streams, typed.
    pub fn direct_stream<T>(&self, stream: DirectStream<C, T>) -> TypedSource<T> {
        TypedSource { source: Source::new(&self.id, stream.name()), _tuple: PhantomData }
    }
}

/// A stream to subscribe to: a component and one of its streams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The component id.
    pub component: String,
    /// The stream id.
    pub stream: String,
}

impl Source {
    /// A stream of a component.
    pub fn new(component: &str, stream: &str) -> Self {
        Source { component: component.to_owned(), stream: stream.to_owned() }
    }
}

impl From<&str> for Source {
    fn from(component: &str) -> Self {
        Source::new(component, DEFAULT_STREAM)
    }
}

impl From<&String> for Source {
    fn from(component: &String) -> Self {
        Source::new(component, DEFAULT_STREAM)
    }
}

impl From<(&str, &str)> for Source {
    fn from((component, stream): (&str, &str)) -> Self {
        Source::new(component, stream)
    }
}

impl<C> From<&Handle<C>> for Source {
    fn from(handle: &Handle<C>) -> Self {
        Source::new(&handle.id, DEFAULT_STREAM)
    }
}

impl<T> From<TypedSource<T>> for Source {
    fn from(source: TypedSource<T>) -> Self {
        source.source
    }
}

/// A stream whose tuples are known to be `T`, for typed fields grouping.
pub struct TypedSource<T> {
    source: Source,
    _tuple: PhantomData<fn() -> T>,
}

impl<C: Outputs> From<&Handle<C>> for TypedSource<C::Default> {
    fn from(handle: &Handle<C>) -> Self {
        TypedSource { source: Source::new(&handle.id, DEFAULT_STREAM), _tuple: PhantomData }
    }
}

/// One or more typed keys of `T`, as returned by the closure of
/// [`BoltDeclarer::fields_grouping_by`].
pub trait KeyFields<T> {
    /// The field names.
    fn names(&self) -> Vec<String>;
}

impl<T> KeyFields<T> for FieldKey<T> {
    fn names(&self) -> Vec<String> {
        vec![self.name().to_owned()]
    }
}

impl<T, const N: usize> KeyFields<T> for [FieldKey<T>; N] {
    fn names(&self) -> Vec<String> {
        self.iter().map(|k| k.name().to_owned()).collect()
    }
}

macro_rules! component_declarer_common {
    () => {
        /// Sets the number of tasks (at least the parallelism; Storm's `setNumTasks`).
        pub fn tasks(self, tasks: u32) -> Self {
            if tasks == 0 {
                let id = self.def().id.clone();
                self.builder.errors.push(BuildError::ZeroParallelism(id));
            }
            self.builder.components[self.index].tasks = tasks;
            self
        }

        /// Overrides a config key for this component (tick frequency, max spout pending, …).
        pub fn set(self, key: &str, value: impl Into<ConfigValue>) -> Self {
            let index = self.index;
            if let Err(source) = self.builder.components[index].config.set(key, value) {
                let component = self.builder.components[index].id.clone();
                self.builder.errors.push(BuildError::ComponentConfig { component, source });
            }
            self
        }

        fn def(&self) -> &ComponentDef {
            &self.builder.components[self.index]
        }
    };
}

/// Declares a spout's options.
pub struct SpoutDeclarer<'b, S> {
    builder: &'b mut TopologyBuilder,
    index: usize,
    _spout: PhantomData<fn() -> S>,
}

impl<S> SpoutDeclarer<'_, S> {
    component_declarer_common!();

    /// Bounds the tuple trees in flight per task of this spout.
    pub fn max_spout_pending(self, pending: u32) -> Self {
        self.set(Config::MAX_SPOUT_PENDING, pending)
    }

    /// A typed handle on this spout, for typed subscriptions.
    pub fn handle(self) -> Handle<S> {
        Handle { id: self.def().id.clone(), _component: PhantomData }
    }
}

/// Declares a bolt's options and subscriptions.
pub struct BoltDeclarer<'b, B> {
    builder: &'b mut TopologyBuilder,
    index: usize,
    _bolt: PhantomData<fn() -> B>,
}

impl<B> BoltDeclarer<'_, B> {
    component_declarer_common!();

    /// Sends this bolt's tasks a tick tuple every `secs` seconds.
    pub fn tick_tuple_freq_secs(self, secs: u32) -> Self {
        self.set(Config::TICK_TUPLE_FREQ_SECS, secs)
    }

    /// A typed handle on this bolt, for typed subscriptions.
    pub fn handle(self) -> Handle<B> {
        Handle { id: self.def().id.clone(), _component: PhantomData }
    }

    /// Subscribes with any grouping.
    pub fn grouping(self, source: impl Into<Source>, grouping: Grouping) -> Self {
        let Source { component, stream } = source.into();
        self.builder.components[self.index].inputs.push(Subscription { component, stream, grouping });
        self
    }

    /// Each tuple to one task, evenly.
    pub fn shuffle_grouping(self, source: impl Into<Source>) -> Self {
        self.grouping(source, Grouping::Shuffle)
    }

    /// Equal values of `fields` always reach the same task.
    pub fn fields_grouping<F: AsRef<str>>(
        self,
        source: impl Into<Source>,
        fields: impl IntoIterator<Item = F>,
    ) -> Self {
        let fields = fields.into_iter().map(|f| f.as_ref().to_owned()).collect();
        self.grouping(source, Grouping::Fields(fields))
    }

    /// Fields grouping by typed keys, checked at compile time: `.fields_grouping_by(&split, |w| w.word)`.
    pub fn fields_grouping_by<T: TypedTuple, K: KeyFields<T>>(
        self,
        source: impl Into<TypedSource<T>>,
        key: impl FnOnce(T::Keys) -> K,
    ) -> Self {
        let fields = key(T::keys()).names();
        self.grouping(source.into(), Grouping::Fields(fields))
    }

    /// Every tuple to every task.
    pub fn all_grouping(self, source: impl Into<Source>) -> Self {
        self.grouping(source, Grouping::All)
    }

    /// Every tuple to the task with the lowest id.
    pub fn global_grouping(self, source: impl Into<Source>) -> Self {
        self.grouping(source, Grouping::Global)
    }

    /// The emitter chooses the task (`emit_direct`); the stream must be declared direct.
    pub fn direct_grouping(self, source: impl Into<Source>) -> Self {
        self.grouping(source, Grouping::Direct)
    }

    /// Shuffle, preferring tasks in the emitter's own worker process.
    pub fn local_or_shuffle_grouping(self, source: impl Into<Source>) -> Self {
        self.grouping(source, Grouping::LocalOrShuffle)
    }

    /// No preference: a random task.
    pub fn none_grouping(self, source: impl Into<Source>) -> Self {
        self.grouping(source, Grouping::None)
    }

    /// Each key to the less loaded of two candidate tasks.
    pub fn partial_key_grouping<F: AsRef<str>>(
        self,
        source: impl Into<Source>,
        fields: impl IntoIterator<Item = F>,
    ) -> Self {
        let fields = fields.into_iter().map(|f| f.as_ref().to_owned()).collect();
        self.grouping(source, Grouping::PartialKey(fields))
    }

    /// The user's grouping; each emitting task gets a clone.
    pub fn custom_grouping(self, source: impl Into<Source>, grouping: impl CustomGrouping + Clone + Sync) -> Self {
        self.grouping(source, Grouping::Custom(Arc::new(grouping)))
    }
}

/// A validated topology, ready to run.
#[derive(Clone)]
pub struct Topology {
    components: Vec<ComponentDef>,
    config: Config,
    layout: Arc<TaskLayout>,
    states: BTreeMap<String, Arc<dyn QueryableState>>,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let spec = self.spec();
        f.debug_struct("Topology").field("components", &spec.components).field("config", &spec.config).finish()
    }
}

impl Topology {
    /// The state named `name` that the topology registered for queries.
    pub fn queryable_state(&self, name: &str) -> Option<&Arc<dyn QueryableState>> {
        self.states.get(name)
    }

    /// The names of the states it registered for queries.
    pub fn queryable_states(&self) -> impl Iterator<Item = &str> {
        self.states.keys().map(String::as_str)
    }

    /// The factory of a spout, to replace its implementation while keeping its id, tasks and
    /// streams (`squall::testing` mocks sources this way). `None` if `id` is not a spout.
    pub fn spout_factory_mut(&mut self, id: &str) -> Option<&mut Arc<dyn SpoutFactory>> {
        match &mut self.components.iter_mut().find(|c| c.id == id)?.factory {
            Factory::Spout(factory) => Some(factory),
            Factory::Bolt(_) => None,
        }
    }

    /// Its components, in the order they were added.
    pub fn components(&self) -> &[ComponentDef] {
        &self.components
    }

    /// A component by id.
    pub fn component(&self, id: &str) -> Option<&ComponentDef> {
        self.components.iter().find(|c| c.id == id)
    }

    /// The topology config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The topology config, to change keys before running (e.g. from `-c key=value`).
    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    /// Changes a component's number of executors (a rebalance); its tasks stay as they are, so
    /// `parallelism` must be between 1 and its task count.
    pub fn set_parallelism(&mut self, component: &str, parallelism: u32) -> Result<(), BuildError> {
        let def =
            self.components.iter_mut().find(|c| c.id == component).ok_or_else(|| BuildError::UnknownComponent {
                subscriber: "rebalance".to_owned(),
                component: component.to_owned(),
                known: String::new(),
            })?;
        if parallelism == 0 {
            return Err(BuildError::ZeroParallelism(component.to_owned()));
        }
        if parallelism > def.tasks {
            return Err(BuildError::TooFewTasks { component: component.to_owned(), tasks: def.tasks, parallelism });
        }
        def.parallelism = parallelism;
        Ok(())
    }

    /// The task ids of every component.
    pub fn layout(&self) -> &Arc<TaskLayout> {
        &self.layout
    }

    /// The serialisable description of this topology.
    pub fn spec(&self) -> TopologySpec {
        let components = self
            .components
            .iter()
            .map(|c| ComponentSpec {
                id: c.id.clone(),
                kind: c.kind(),
                type_name: match &c.factory {
                    Factory::Spout(f) => f.type_name(),
                    Factory::Bolt(f) => f.type_name(),
                }
                .to_owned(),
                parallelism: c.parallelism,
                tasks: c.tasks,
                task_ids: self.layout.tasks(&c.id).to_vec(),
                streams: c.streams.iter().flatten().cloned().collect(),
                inputs: c
                    .inputs
                    .iter()
                    .map(|s| InputSpec {
                        component: s.component.clone(),
                        stream: s.stream.clone(),
                        grouping: s.grouping.spec(),
                    })
                    .collect(),
                config: c.config.clone(),
                chained_to: None,
            })
            .collect();
        let mut spec = TopologySpec {
            config: self.config.to_map().into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            components,
        };
        let chains = ChainPlan::new(&spec, &BTreeMap::new());
        for component in &mut spec.components {
            component.chained_to = chains.link(&component.id).map(|link| link.upstream.clone());
        }
        spec
    }
}

/// The serialisable description of a built topology: what `--describe` prints and what a
/// cluster master validates and schedules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologySpec {
    /// The topology config, by Storm key.
    pub config: BTreeMap<String, ConfigValue>,
    /// Every component.
    pub components: Vec<ComponentSpec>,
}

/// One component in a [`TopologySpec`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentSpec {
    /// Its id.
    pub id: String,
    /// Spout or bolt.
    pub kind: ComponentKind,
    /// The Rust type that implements it.
    pub type_name: String,
    /// Executors.
    pub parallelism: u32,
    /// Tasks.
    pub tasks: u32,
    /// Its task ids.
    pub task_ids: Vec<u32>,
    /// Its output streams.
    pub streams: Vec<StreamDecl>,
    /// Its subscriptions.
    pub inputs: Vec<InputSpec>,
    /// Its config overrides.
    pub config: ComponentConfig,
    /// The component whose executors run this bolt's, when it is chained to it (see
    /// [`crate::chain`]); informational, the plan is recomputed from the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chained_to: Option<String>,
}

/// One subscription in a [`ComponentSpec`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSpec {
    /// The source component.
    pub component: String,
    /// The source stream.
    pub stream: String,
    /// The grouping.
    pub grouping: GroupingSpec,
}
