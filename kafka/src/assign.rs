//! Which spout task owns which partition.
//!
//! Partition `p` of topic `t` goes to task `(rotation(t) + p) mod n`, where `rotation` is a
//! stable hash of the topic's name: round-robin over the tasks within each topic, spread across
//! topics, and — unlike Storm's round-robin over one sorted list of every partition — adding a
//! partition or a topic never moves a partition that exists. Two tasks that refresh at different
//! moments therefore never both own one partition.

use std::collections::BTreeMap;

/// The partitions task `index` of `tasks` owns, given each topic's partition count.
pub fn owned(partitions: &BTreeMap<String, i32>, index: usize, tasks: usize) -> Vec<(String, i32)> {
    let tasks = tasks.max(1) as u64;
    let mut mine = Vec::new();
    for (topic, count) in partitions {
        let rotation = rotation(topic);
        for p in 0..*count {
            if (rotation + p as u64) % tasks == index as u64 {
                mine.push((topic.clone(), p));
            }
        }
    }
    mine
}

/// FNV-1a of the topic's name: the same in every process and build.
fn rotation(topic: &str) -> u64 {
    topic.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(partitions: &BTreeMap<String, i32>, tasks: usize) -> Vec<Vec<(String, i32)>> {
        (0..tasks).map(|i| owned(partitions, i, tasks)).collect()
    }

    #[test]
    fn every_partition_has_one_owner_and_the_load_is_even() {
        let partitions = BTreeMap::from([("a".to_owned(), 8), ("b".to_owned(), 3)]);
        let split = all(&partitions, 4);
        let mut every: Vec<(String, i32)> = split.iter().flatten().cloned().collect();
        every.sort();
        every.dedup();
        assert_eq!(every.len(), 11);
        assert_eq!(split.iter().map(Vec::len).sum::<usize>(), 11, "no partition owned twice");
        // Within a topic, round-robin: topic a's 8 partitions are 2 per task.
        for tasks in &split {
            assert_eq!(tasks.iter().filter(|(t, _)| t == "a").count(), 2);
        }
    }

    #[test]
    fn new_partitions_and_topics_never_move_existing_ones() {
        let before = BTreeMap::from([("a".to_owned(), 4), ("c".to_owned(), 4)]);
        let after = BTreeMap::from([("a".to_owned(), 9), ("b".to_owned(), 5), ("c".to_owned(), 4)]);
        for task in 0..3 {
            let old = owned(&before, task, 3);
            let new = owned(&after, task, 3);
            assert!(old.iter().all(|p| new.contains(p)), "task {task} lost a partition: {old:?} → {new:?}");
        }
    }
}
