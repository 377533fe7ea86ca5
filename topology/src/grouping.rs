//! Stream groupings: how the tuples of a stream are divided among the tasks of a subscriber.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::tuple::TaskId;
use crate::value::Value;

/// A grouping chosen by the user's code (Storm's `CustomStreamGrouping`). One instance runs per
/// emitting task, cloned from the one given to the builder.
pub trait CustomGrouping: Send + 'static {
    /// Called once per emitting task with the subscriber's tasks, ascending.
    fn prepare(&mut self, source_component: &str, stream: &str, target_tasks: &[TaskId]) {
        let _ = (source_component, stream, target_tasks);
    }

    /// Pushes the tasks that get this tuple onto `out`. Every task must be one of the target
    /// tasks given to `prepare`; others are dropped with a warning.
    fn choose_tasks(&mut self, source_task: TaskId, values: &[Value], out: &mut Vec<TaskId>);
}

/// Makes one [`CustomGrouping`] instance per emitting task.
pub trait CustomGroupingFactory: Send + Sync + 'static {
    /// A fresh instance.
    fn instance(&self) -> Box<dyn CustomGrouping>;
    /// The grouping's type name, shown in the topology spec.
    fn name(&self) -> &'static str;
}

impl<G: CustomGrouping + Clone + Sync> CustomGroupingFactory for G {
    fn instance(&self) -> Box<dyn CustomGrouping> {
        Box::new(self.clone())
    }

    fn name(&self) -> &'static str {
        std::any::type_name::<G>()
    }
}

/// How a stream's tuples are divided among a subscriber's tasks.
#[derive(Clone)]
pub enum Grouping {
    /// Evenly, each tuple to one task.
    Shuffle,
    /// Equal values of these fields always go to the same task.
    Fields(Vec<String>),
    /// Every tuple to every task.
    All,
    /// Every tuple to the task with the lowest id.
    Global,
    /// The emitter picks the task with `emit_direct`; the stream must be declared direct.
    Direct,
    /// Shuffle among tasks in the emitter's worker process when there are any, else shuffle.
    LocalOrShuffle,
    /// No preference: a random task.
    None,
    /// Equal values of these fields go to one of two tasks, the less loaded of the two
    /// ("power of two choices"), spreading skewed keys.
    PartialKey(Vec<String>),
    /// The user's [`CustomGrouping`].
    Custom(Arc<dyn CustomGroupingFactory>),
}

impl Grouping {
    /// The grouping as it appears in the topology spec.
    pub fn spec(&self) -> GroupingSpec {
        match self {
            Grouping::Shuffle => GroupingSpec::Shuffle,
            Grouping::Fields(f) => GroupingSpec::Fields { fields: f.clone() },
            Grouping::All => GroupingSpec::All,
            Grouping::Global => GroupingSpec::Global,
            Grouping::Direct => GroupingSpec::Direct,
            Grouping::LocalOrShuffle => GroupingSpec::LocalOrShuffle,
            Grouping::None => GroupingSpec::None,
            Grouping::PartialKey(f) => GroupingSpec::PartialKey { fields: f.clone() },
            Grouping::Custom(c) => GroupingSpec::Custom { name: c.name().to_owned() },
        }
    }

    /// The fields this grouping reads, if any.
    pub fn fields(&self) -> &[String] {
        match self {
            Grouping::Fields(f) | Grouping::PartialKey(f) => f,
            _ => &[],
        }
    }
}

impl fmt::Debug for Grouping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.spec(), f)
    }
}

/// The serialisable description of a grouping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GroupingSpec {
    /// See [`Grouping::Shuffle`].
    Shuffle,
    /// See [`Grouping::Fields`].
    Fields {
        /// The key fields.
        fields: Vec<String>,
    },
    /// See [`Grouping::All`].
    All,
    /// See [`Grouping::Global`].
    Global,
    /// See [`Grouping::Direct`].
    Direct,
    /// See [`Grouping::LocalOrShuffle`].
    LocalOrShuffle,
    /// See [`Grouping::None`].
    None,
    /// See [`Grouping::PartialKey`].
    PartialKey {
        /// The key fields.
        fields: Vec<String>,
    },
    /// See [`Grouping::Custom`].
    Custom {
        /// The grouping's type name.
        name: String,
    },
}
