//! When a failed record is emitted again: Storm's `KafkaSpoutRetryExponentialBackoff` with
//! saturating arithmetic (the Java code overflows after about 43 failures with a 2 ms period).

use std::time::Duration;

/// Exponential backoff for failed records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The delay after the first failure.
    pub initial_delay: Duration,
    /// The delay after the n-th failure (n ≥ 2) is `period · 2^(n−2)`, capped at `max_delay`.
    pub period: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// How many times a record is retried; `None`: for ever.
    pub max_retries: Option<u32>,
}

impl Default for RetryPolicy {
    /// Storm's defaults: at once, then 2 ms doubling up to 10 s, for ever.
    fn default() -> Self {
        RetryPolicy {
            initial_delay: Duration::ZERO,
            period: Duration::from_millis(2),
            max_delay: Duration::from_secs(10),
            max_retries: None,
        }
    }
}

impl RetryPolicy {
    /// How long to wait before the retry that follows failure number `failures` (1 for the
    /// first), or `None` when retries are used up.
    pub fn delay(&self, failures: u32) -> Option<Duration> {
        if failures == 0 {
            return Some(Duration::ZERO);
        }
        if self.max_retries.is_some_and(|max| failures > max) {
            return None;
        }
        if failures == 1 {
            return Some(self.initial_delay.min(self.max_delay));
        }
        let factor = 1u32.checked_shl(failures - 2).unwrap_or(u32::MAX);
        Some(self.period.saturating_mul(factor).min(self.max_delay))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_and_saturate() {
        let policy = RetryPolicy {
            initial_delay: Duration::from_millis(100),
            period: Duration::from_millis(2),
            max_delay: Duration::from_secs(10),
            max_retries: Some(100),
        };
        assert_eq!(policy.delay(1), Some(Duration::from_millis(100)));
        assert_eq!(policy.delay(2), Some(Duration::from_millis(2)));
        assert_eq!(policy.delay(3), Some(Duration::from_millis(4)));
        assert_eq!(policy.delay(5), Some(Duration::from_millis(16)));
        // Far past where Storm's long arithmetic overflows.
        assert_eq!(policy.delay(44), Some(Duration::from_secs(10)));
        assert_eq!(policy.delay(100), Some(Duration::from_secs(10)));
        assert_eq!(policy.delay(101), None, "retries used up");
        assert_eq!(RetryPolicy::default().delay(u32::MAX), Some(Duration::from_secs(10)));
    }
}
