//! Heartbeat silence measured on a clock that stops while ZooKeeper cannot be read: after an
//! outage every worker looks as fresh as before it, instead of as old as the outage.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How long each heartbeat has been silent, counting only time between consecutive rounds
/// that read the heartbeats successfully.
#[derive(Debug)]
pub struct Liveness<K> {
    /// When the last successful round ran; `None` after a failed one.
    last_round: Option<Instant>,
    seen: HashMap<K, Seen>,
    /// Connected time added by the current round.
    step: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    /// The heartbeat's own marker (its write time), compared only for change.
    marker: u64,
    silent: Duration,
}

impl<K: Eq + Hash + Clone> Default for Liveness<K> {
    fn default() -> Self {
        Liveness { last_round: None, seen: HashMap::new(), step: Duration::ZERO }
    }
}

impl<K: Eq + Hash + Clone> Liveness<K> {
    /// A clock that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a round that read the heartbeats at `now`. The time since the previous round
    /// counts only if that round succeeded too.
    pub fn round(&mut self, now: Instant) {
        self.step = self.last_round.map_or(Duration::ZERO, |last| now.saturating_duration_since(last));
        self.last_round = Some(now);
    }

    /// A round that could not read ZooKeeper: the time until the next successful one does
    /// not count.
    pub fn failed(&mut self) {
        self.last_round = None;
        self.step = Duration::ZERO;
    }

    /// Records `key`'s heartbeat marker in this round (`None`: no heartbeat) and returns how
    /// long it has been silent. A key seen for the first time, or whose marker changed, is
    /// silent for zero.
    pub fn observe(&mut self, key: &K, marker: Option<u64>) -> Duration {
        match self.seen.get_mut(key) {
            Some(seen) if marker.is_some_and(|m| m != seen.marker) => {
                *seen = Seen { marker: marker.unwrap_or(seen.marker), silent: Duration::ZERO };
                Duration::ZERO
            }
            Some(seen) => {
                seen.silent += self.step;
                seen.silent
            }
            None => {
                self.seen.insert(key.clone(), Seen { marker: marker.unwrap_or(0), silent: Duration::ZERO });
                Duration::ZERO
            }
        }
    }

    /// How long `key` has been silent, without observing it.
    pub fn silent(&self, key: &K) -> Option<Duration> {
        self.seen.get(key).map(|s| s.silent)
    }

    /// Forgets the keys `keep` rejects.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.seen.retain(|k, _| keep(k));
    }

    /// Forgets `key`: the next observation starts it at zero.
    pub fn forget(&mut self, key: &K) {
        self.seen.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_counts_only_between_successful_rounds() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut clock = Liveness::new();
        clock.round(at(0));
        assert_eq!(clock.observe(&"w", Some(1)), Duration::ZERO);
        clock.round(at(1));
        assert_eq!(clock.observe(&"w", Some(1)), Duration::from_secs(1));
        // ZooKeeper away for 60 s: the rounds in between failed.
        clock.failed();
        clock.round(at(61));
        assert_eq!(clock.observe(&"w", Some(1)), Duration::from_secs(1), "the outage must not count");
        clock.round(at(63));
        assert_eq!(clock.observe(&"w", Some(1)), Duration::from_secs(3));
        clock.round(at(64));
        assert_eq!(clock.observe(&"w", Some(2)), Duration::ZERO, "a new heartbeat resets the silence");
        clock.round(at(70));
        assert_eq!(clock.observe(&"w", None), Duration::from_secs(6), "a missing heartbeat is silent");
        clock.forget(&"w");
        assert_eq!(clock.silent(&"w"), None);
    }
}
