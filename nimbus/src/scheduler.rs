//! Storm's even scheduler: executors dealt round-robin onto worker slots chosen across
//! supervisors with the most free slots first; on failure only the dead workers' executors move.

use std::collections::{BTreeMap, BTreeSet};

use squall_topology::{ChainPlan, ComponentKind, ConfigValue, TaskId, TopologySpec, executor_ranges};

/// A worker slot: one port of one supervisor.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    /// The supervisor's id.
    pub supervisor: String,
    /// The supervisor's host.
    pub host: String,
    /// The port a worker listens on.
    pub port: u16,
}

/// The tasks of one executor, ascending.
pub type Executor = Vec<TaskId>;

/// Not enough free slots for the workers asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("waiting for {needed} free worker slots, {available} available")]
pub struct NotEnoughSlots {
    /// Slots needed.
    pub needed: usize,
    /// Free slots there are.
    pub available: usize,
}

/// The number of acker tasks of a topology run with `workers` workers.
pub fn acker_count(spec: &TopologySpec, workers: u32) -> u32 {
    match spec.config.get("topology.acker.executors") {
        Some(ConfigValue::Int(n)) if *n >= 0 => *n as u32,
        _ => workers,
    }
}

/// Every executor of a topology: each component's tasks split by its parallelism (or an
/// override from a rebalance), then one executor per acker task, numbered after the user's
/// tasks exactly as the worker numbers them.
pub fn executors(spec: &TopologySpec, parallelism: &BTreeMap<String, u32>, workers: u32) -> Vec<Executor> {
    let mut executors = Vec::new();
    let mut last_task = 0;
    for component in &spec.components {
        let p = parallelism.get(&component.id).copied().unwrap_or(component.parallelism);
        executors.extend(executor_ranges(&component.task_ids, p).into_iter().map(<[TaskId]>::to_vec));
        last_task = last_task.max(component.task_ids.iter().copied().max().unwrap_or(0));
    }
    for i in 0..acker_count(spec, workers) {
        executors.push(vec![last_task + 1 + i]);
    }
    executors.sort();
    executors
}

/// What is placed as one: [`executors`], except that a chained bolt's executor joins the
/// executor of the component feeding it (see `squall_topology::chain`), so the worker that
/// runs one runs both and can chain them.
pub fn placement_units(spec: &TopologySpec, parallelism: &BTreeMap<String, u32>, workers: u32) -> Vec<Executor> {
    let chains = ChainPlan::new(spec, parallelism);
    let mut units: BTreeMap<(String, usize), Executor> = BTreeMap::new();
    let mut last_task = 0;
    for component in &spec.components {
        let p = parallelism.get(&component.id).copied().unwrap_or(component.parallelism);
        for (index, range) in executor_ranges(&component.task_ids, p).into_iter().enumerate() {
            let head = chains.head(&component.id).to_owned();
            units.entry((head, index)).or_default().extend_from_slice(range);
        }
        last_task = last_task.max(component.task_ids.iter().copied().max().unwrap_or(0));
    }
    let mut units: Vec<Executor> = units.into_values().collect();
    for unit in &mut units {
        unit.sort_unstable();
    }
    for i in 0..acker_count(spec, workers) {
        units.push(vec![last_task + 1 + i]);
    }
    units.sort();
    units
}

/// Whether a spec has at least one spout (a sanity check before scheduling).
pub fn has_spout(spec: &TopologySpec) -> bool {
    spec.components.iter().any(|c| c.kind == ComponentKind::Spout)
}

/// Orders free slots Storm's way: supervisors with the most free slots first, interleaved, so
/// consecutive picks land on different supervisors.
pub fn interleave(free: &BTreeMap<String, Vec<Slot>>) -> Vec<Slot> {
    let mut by_supervisor: Vec<&Vec<Slot>> = free.values().filter(|s| !s.is_empty()).collect();
    by_supervisor.sort_by_key(|slots| std::cmp::Reverse(slots.len()));
    let longest = by_supervisor.first().map_or(0, |s| s.len());
    let mut ordered = Vec::new();
    for i in 0..longest {
        for slots in &by_supervisor {
            if let Some(slot) = slots.get(i) {
                ordered.push(slot.clone());
            }
        }
    }
    ordered
}

/// A fresh assignment: `workers` slots picked from `free`, executors dealt round-robin.
pub fn assign(
    executors: &[Executor],
    workers: usize,
    free: &BTreeMap<String, Vec<Slot>>,
) -> Result<Vec<(Slot, Vec<TaskId>)>, NotEnoughSlots> {
    let slots = interleave(free);
    let workers = workers.max(1).min(executors.len().max(1));
    if slots.len() < workers {
        return Err(NotEnoughSlots { needed: workers, available: slots.len() });
    }
    let mut placed: Vec<(Slot, Vec<TaskId>)> = slots.into_iter().take(workers).map(|s| (s, Vec::new())).collect();
    for (i, executor) in executors.iter().enumerate() {
        placed[i % workers].1.extend(executor);
    }
    for (_, tasks) in &mut placed {
        tasks.sort_unstable();
    }
    Ok(placed)
}

/// Repairs an assignment after some of its slots died: workers on live slots keep their tasks;
/// each dead worker's tasks move to a free slot, or, when none is free, are dealt over the live
/// workers.
pub fn repair(
    current: &[(Slot, Vec<TaskId>)],
    dead: &BTreeSet<Slot>,
    free: &BTreeMap<String, Vec<Slot>>,
) -> Result<Vec<(Slot, Vec<TaskId>)>, NotEnoughSlots> {
    let mut kept: Vec<(Slot, Vec<TaskId>)> = current.iter().filter(|(s, _)| !dead.contains(s)).cloned().collect();
    let orphans: Vec<&Vec<TaskId>> = current.iter().filter(|(s, _)| dead.contains(s)).map(|(_, t)| t).collect();
    if orphans.is_empty() {
        return Ok(kept);
    }
    let mut replacements = interleave(free).into_iter().filter(|s| !dead.contains(s));
    let mut leftovers = Vec::new();
    for tasks in orphans {
        match replacements.next() {
            Some(slot) => kept.push((slot, tasks.clone())),
            None => leftovers.extend(tasks.iter().copied()),
        }
    }
    if !leftovers.is_empty() {
        if kept.is_empty() {
            return Err(NotEnoughSlots { needed: 1, available: 0 });
        }
        let n = kept.len();
        for (i, task) in leftovers.into_iter().enumerate() {
            kept[i % n].1.push(task);
        }
        for (_, tasks) in &mut kept {
            tasks.sort_unstable();
        }
    }
    Ok(kept)
}

/// A rebalance that moves as little as it can: `workers` slots, as many of them the current
/// ones (those still free to this topology, the ones keeping the most executors first); each
/// keeps up to its even share of the new executors it already runs, and the rest are dealt to
/// the least loaded slots. A worker whose executors come out the same keeps running.
pub fn rebalance(
    current: &[(Slot, Vec<TaskId>)],
    executors: &[Executor],
    workers: usize,
    free: &BTreeMap<String, Vec<Slot>>,
) -> Result<Vec<(Slot, Vec<TaskId>)>, NotEnoughSlots> {
    let workers = workers.max(1).min(executors.len().max(1));
    let available: BTreeSet<&Slot> = free.values().flatten().collect();
    let runs = |tasks: &[TaskId], executor: &Executor| executor.iter().all(|t| tasks.contains(t));
    let mut kept: Vec<(&Slot, &Vec<TaskId>)> =
        current.iter().filter(|(slot, _)| available.contains(slot)).map(|(s, t)| (s, t)).collect();
    kept.sort_by_key(|(_, tasks)| std::cmp::Reverse(executors.iter().filter(|e| runs(tasks, e)).count()));
    kept.truncate(workers);
    let mut slots: Vec<Slot> = kept.iter().map(|(s, _)| (*s).clone()).collect();
    for slot in interleave(free) {
        if slots.len() >= workers {
            break;
        }
        if !slots.contains(&slot) {
            slots.push(slot);
        }
    }
    if slots.len() < workers {
        return Err(NotEnoughSlots { needed: workers, available: slots.len() });
    }
    let share = executors.len().div_ceil(workers);
    let mut placed: Vec<Vec<&Executor>> = vec![Vec::new(); workers];
    let mut pool = Vec::new();
    for executor in executors {
        let home = kept.iter().position(|(_, tasks)| runs(tasks, executor));
        match home {
            Some(i) if placed[i].len() < share => placed[i].push(executor),
            _ => pool.push(executor),
        }
    }
    for executor in pool {
        let lightest = (0..workers).min_by_key(|i| placed[*i].len()).unwrap_or(0);
        placed[lightest].push(executor);
    }
    Ok(slots
        .into_iter()
        .zip(placed)
        .map(|(slot, executors)| {
            let mut tasks: Vec<TaskId> = executors.into_iter().flatten().copied().collect();
            tasks.sort_unstable();
            (slot, tasks)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(supervisor: &str, ports: &[u16]) -> Vec<Slot> {
        ports.iter().map(|p| Slot { supervisor: supervisor.into(), host: "127.0.0.1".into(), port: *p }).collect()
    }

    fn free(list: &[(&str, &[u16])]) -> BTreeMap<String, Vec<Slot>> {
        list.iter().map(|(s, p)| ((*s).to_owned(), slots(s, p))).collect()
    }

    #[test]
    fn slots_interleave_across_supervisors_most_free_first() {
        let order = interleave(&free(&[("a", &[1, 2]), ("b", &[3, 4, 5])]));
        let picked: Vec<(&str, u16)> = order.iter().map(|s| (s.supervisor.as_str(), s.port)).collect();
        assert_eq!(picked, vec![("b", 3), ("a", 1), ("b", 4), ("a", 2), ("b", 5)]);
    }

    #[test]
    fn executors_are_dealt_evenly_and_every_task_placed_once() {
        let executors: Vec<Executor> = (1..=9).map(|t| vec![t]).collect();
        let placed = assign(&executors, 4, &free(&[("a", &[1, 2]), ("b", &[3, 4])])).unwrap();
        assert_eq!(placed.len(), 4);
        let supervisors: BTreeSet<&str> = placed.iter().map(|(s, _)| s.supervisor.as_str()).collect();
        assert_eq!(supervisors.len(), 2);
        let mut all: Vec<TaskId> = placed.iter().flat_map(|(_, t)| t.clone()).collect();
        all.sort_unstable();
        assert_eq!(all, (1..=9).collect::<Vec<_>>());
        assert!(placed.iter().all(|(_, t)| (2..=3).contains(&t.len())));
        let err = assign(&executors, 5, &free(&[("a", &[1, 2])])).unwrap_err();
        assert_eq!(err.to_string(), "waiting for 5 free worker slots, 2 available");
    }

    #[test]
    fn repair_moves_only_dead_workers() {
        let executors: Vec<Executor> = (1..=4).map(|t| vec![t]).collect();
        let placed = assign(&executors, 2, &free(&[("a", &[1]), ("b", &[2])])).unwrap();
        let dead: BTreeSet<Slot> = placed.iter().filter(|(s, _)| s.supervisor == "a").map(|(s, _)| s.clone()).collect();
        let repaired = repair(&placed, &dead, &free(&[("b", &[3])])).unwrap();
        assert_eq!(repaired.len(), 2);
        let live = placed.iter().find(|(s, _)| s.supervisor == "b").unwrap();
        assert!(repaired.contains(live), "the live worker keeps its tasks");
        assert!(repaired.iter().any(|(s, _)| s.port == 3));
        // No free slot: the dead worker's tasks join the live one.
        let repaired = repair(&placed, &dead, &BTreeMap::new()).unwrap();
        assert_eq!(repaired.len(), 1);
        assert_eq!(repaired[0].1, vec![1, 2, 3, 4]);
    }

    #[test]
    fn rebalance_keeps_what_it_can() {
        let executors: Vec<Executor> = (1..=8).map(|t| vec![t]).collect();
        let all = free(&[("a", &[1, 2]), ("b", &[3, 4])]);
        let placed = assign(&executors, 4, &all).unwrap();
        // Nothing changed: nothing moves.
        assert_eq!(rebalance(&placed, &executors, 4, &all).unwrap(), placed);
        // Two executors merge: only the workers that ran them change.
        let mut merged: Vec<Executor> = (1..=6).map(|t| vec![t]).collect();
        merged.push(vec![7, 8]);
        let after = rebalance(&placed, &merged, 4, &all).unwrap();
        let unchanged = after.iter().filter(|w| placed.contains(w)).count();
        assert!(unchanged >= 2, "{placed:?} → {after:?}");
        let mut tasks: Vec<TaskId> = after.iter().flat_map(|(_, t)| t.clone()).collect();
        tasks.sort_unstable();
        assert_eq!(tasks, (1..=8).collect::<Vec<_>>());
        // More workers: the old ones keep their share, the new ones take the rest, evenly.
        let two = assign(&executors, 2, &all).unwrap();
        let four = rebalance(&two, &executors, 4, &all).unwrap();
        assert_eq!(four.len(), 4);
        assert!(four.iter().all(|(_, t)| t.len() == 2), "{four:?}");
        for (slot, tasks) in &two {
            let now = four.iter().find(|(s, _)| s == slot).map(|(_, t)| t).unwrap();
            assert!(now.iter().all(|t| tasks.contains(t)), "a kept slot only loses executors");
        }
        // Fewer workers than slots that are free.
        assert!(rebalance(&placed, &executors, 5, &free(&[("a", &[1, 2])])).is_err());
    }

    #[test]
    fn acker_tasks_follow_user_tasks() {
        let spec: TopologySpec = serde_json::from_value(serde_json::json!({
            "config": {"topology.workers": 2, "topology.acker.executors": null},
            "components": [
                {"id": "a", "kind": "spout", "type_name": "A", "parallelism": 1, "tasks": 2, "task_ids": [1, 2],
                 "streams": [], "inputs": [], "config": {}},
                {"id": "b", "kind": "bolt", "type_name": "B", "parallelism": 3, "tasks": 3, "task_ids": [3, 4, 5],
                 "streams": [], "inputs": [], "config": {}}
            ]
        }))
        .unwrap();
        let all = executors(&spec, &BTreeMap::new(), 2);
        assert_eq!(all, vec![vec![1, 2], vec![3], vec![4], vec![5], vec![6], vec![7]]);
        let rebalanced = executors(&spec, &BTreeMap::from([("b".to_owned(), 1)]), 1);
        assert_eq!(rebalanced, vec![vec![1, 2], vec![3, 4, 5], vec![6]]);
    }
}
