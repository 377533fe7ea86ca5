//! Warnings that a peer can trigger at will, limited to one per reason per interval.
//!
//! Anyone who can reach a worker's port can make it refuse connections as fast as it accepts
//! them; a warning line each would let them fill the disk. The first occurrence of a reason is
//! logged, then at most one line per interval, which says how many were left out since.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Admits one warning per reason per interval; see the module documentation.
#[derive(Debug)]
pub(crate) struct WarnLimiter {
    interval: Duration,
    /// One entry per reason seen: a handful, so a vector beats a map.
    reasons: Mutex<Vec<Slot>>,
}

#[derive(Debug)]
struct Slot {
    reason: &'static str,
    last: Instant,
    suppressed: u64,
}

impl WarnLimiter {
    /// At most one warning per reason every `interval`.
    pub(crate) fn new(interval: Duration) -> Self {
        WarnLimiter { interval, reasons: Mutex::new(Vec::new()) }
    }

    /// Whether a warning for `reason` may be logged now; if so, with how many were left out
    /// since the last one. Every call that returns `None` is counted.
    pub(crate) fn admit(&self, reason: &'static str) -> Option<u64> {
        self.admit_at(reason, Instant::now())
    }

    fn admit_at(&self, reason: &'static str, now: Instant) -> Option<u64> {
        // A panic elsewhere cannot leave a slot half-updated: the counts stay usable.
        let mut reasons = self.reasons.lock().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = reasons.iter_mut().find(|s| s.reason == reason) else {
            reasons.push(Slot { reason, last: now, suppressed: 0 });
            return Some(0);
        };
        if now.duration_since(slot.last) < self.interval {
            slot.suppressed += 1;
            return None;
        }
        slot.last = now;
        Some(std::mem::take(&mut slot.suppressed))
    }
}

/// Logs a peer's misbehaviour: a warning (with `suppressed`, the count left out since the last
/// one) when the limiter admits it, else the same line at debug level.
macro_rules! peer_warning {
    ($limiter:expr, $message:literal, $($field:tt)+) => {
        match $limiter.admit($message) {
            Some(suppressed) => tracing::warn!(suppressed, $($field)+, $message),
            None => tracing::debug!($($field)+, $message),
        }
    };
}

pub(crate) use peer_warning;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_reason_per_interval_with_the_count_left_out() {
        let limiter = WarnLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        assert_eq!(limiter.admit_at("stalled", at(0)), Some(0));
        // Another reason has its own allowance.
        assert_eq!(limiter.admit_at("refused", at(0)), Some(0));
        for secs in 1..10 {
            assert_eq!(limiter.admit_at("stalled", at(secs)), None);
        }
        assert_eq!(limiter.admit_at("refused", at(5)), None);
        assert_eq!(limiter.admit_at("stalled", at(10)), Some(9));
        assert_eq!(limiter.admit_at("stalled", at(11)), None);
        assert_eq!(limiter.admit_at("refused", at(10)), Some(1));
        assert_eq!(limiter.admit_at("stalled", at(100)), Some(1));
        assert_eq!(limiter.admit_at("stalled", at(200)), Some(0));
    }
}
