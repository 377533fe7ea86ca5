//! Chaining (Flink's operator chains, in Storm's model): which bolts run inside the executors of
//! the component that feeds them.
//!
//! A bolt `B` is chained to `A` when every tuple an executor of `A` sends `B` is known to go to
//! one task of `B`, the same one every time, and nothing else sends `B` anything:
//! - `B` subscribes to one stream of `A` and nothing else, not on a direct stream, not with a
//!   direct or custom grouping, and neither is on a cycle;
//! - either `A` has one executor and `B` one task (every grouping then picks that task), or the
//!   grouping is shuffle, local-or-shuffle or none and `A`'s executors, `B`'s executors and
//!   `B`'s tasks are equally many: `A`'s executor `i` then sends all its tuples for `B` to `B`'s
//!   task `i` (forward partitioning, an even spread as a shuffle's when `A`'s executors are
//!   even);
//! - `topology.chaining` is on for the topology and for both components.
//!
//! The plan is a function of the spec and the parallelism in force, so Nimbus (placing each
//! chained pair in one worker) and every worker (routing and running them) agree. Where the
//! pair lands in one worker, `B`'s executor `i` runs inside `A`'s executor `i`: an emit hands
//! the batch over without a queue. Elsewhere the forward routing still holds and the tuples
//! travel as any others.

use std::collections::BTreeMap;

use crate::builder::{ComponentSpec, TopologySpec};
use crate::config::{Config, ConfigValue};
use crate::context::executor_ranges;
use crate::grouping::GroupingSpec;
use crate::{ComponentKind, TaskId};

/// One chained bolt: the component that feeds it and, for each of that component's executors,
/// the task it sends to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink {
    /// The component whose executors run this bolt's.
    pub upstream: String,
    /// By the upstream component's executor index: the task of this bolt it sends to.
    pub targets: Vec<TaskId>,
}

/// Which bolts of a topology are chained, by component id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainPlan {
    links: BTreeMap<String, ChainLink>,
}

impl ChainPlan {
    /// The plan for `spec` run with `parallelism` (executors by component; a component not
    /// listed keeps the spec's).
    pub fn new(spec: &TopologySpec, parallelism: &BTreeMap<String, u32>) -> ChainPlan {
        let on = |config: Option<&ConfigValue>| !matches!(config, Some(ConfigValue::Bool(false)));
        let default = Config::default().chaining;
        let enabled = match spec.config.get(Config::CHAINING) {
            Some(ConfigValue::Bool(b)) => *b,
            _ => default,
        };
        let mut links = BTreeMap::new();
        if !enabled {
            return ChainPlan { links };
        }
        let find = |id: &str| spec.components.iter().find(|c| c.id == id);
        let executors = |c: &ComponentSpec| parallelism.get(&c.id).copied().unwrap_or(c.parallelism).max(1);
        for b in &spec.components {
            if b.kind != ComponentKind::Bolt || !on(b.config.get(Config::CHAINING)) {
                continue;
            }
            let [input] = b.inputs.as_slice() else { continue };
            let Some(a) = find(&input.component) else { continue };
            if a.id == b.id || !on(a.config.get(Config::CHAINING)) {
                continue;
            }
            let direct_stream = a.streams.iter().any(|s| s.name == input.stream && s.direct);
            if direct_stream || matches!(input.grouping, GroupingSpec::Direct | GroupingSpec::Custom { .. }) {
                continue;
            }
            if on_cycle(spec, &a.id) || on_cycle(spec, &b.id) {
                continue;
            }
            let a_executors = executor_ranges(&a.task_ids, executors(a)).len();
            let pb = executors(b);
            let targets = if b.task_ids.len() == 1 && a_executors == 1 {
                vec![b.task_ids[0]]
            } else if matches!(
                input.grouping,
                GroupingSpec::Shuffle | GroupingSpec::LocalOrShuffle | GroupingSpec::None
            ) && a_executors == pb as usize
                && b.task_ids.len() == pb as usize
            {
                b.task_ids.clone()
            } else {
                continue;
            };
            links.insert(b.id.clone(), ChainLink { upstream: a.id.clone(), targets });
        }
        ChainPlan { links }
    }

    /// The link of a chained bolt, `None` for a component that is not chained.
    pub fn link(&self, component: &str) -> Option<&ChainLink> {
        self.links.get(component)
    }

    /// The component whose executors run `component`'s, following chains to their head.
    pub fn head<'a>(&'a self, component: &'a str) -> &'a str {
        let mut at = component;
        // Links never form a cycle (no component on a cycle is chained); bound the walk anyway.
        for _ in 0..=self.links.len() {
            match self.links.get(at) {
                Some(link) => at = &link.upstream,
                None => break,
            }
        }
        at
    }

    /// Every chained bolt with its link, by component id.
    pub fn links(&self) -> impl Iterator<Item = (&str, &ChainLink)> {
        self.links.iter().map(|(id, link)| (id.as_str(), link))
    }

    /// Whether nothing is chained.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }
}

/// Whether `component` can reach itself through subscriptions.
fn on_cycle(spec: &TopologySpec, component: &str) -> bool {
    let mut seen: Vec<&str> = Vec::new();
    let mut stack: Vec<&str> = vec![component];
    while let Some(at) = stack.pop() {
        let Some(c) = spec.components.iter().find(|c| c.id == at) else { continue };
        for input in &c.inputs {
            if input.component == component {
                return true;
            }
            if !seen.contains(&input.component.as_str()) {
                seen.push(&input.component);
                stack.push(&input.component);
            }
        }
    }
    false
}
