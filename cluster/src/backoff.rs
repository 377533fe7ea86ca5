//! Jittered exponential backoff for reconnects and retries.

use std::time::Duration;

/// Doubles from `min` to `max`, each delay jittered down by up to half.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff between `min` and `max`.
    pub(crate) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max, next: min }
    }

    /// The default for background retries: 50 ms up to 5 s.
    pub(crate) fn standard() -> Backoff {
        Backoff::new(Duration::from_millis(50), Duration::from_secs(5))
    }

    /// The next delay.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay.mul_f64(0.5 + fastrand::f64() / 2.0)
    }

    /// Starts over at `min` after a success.
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}
