//! A lock-free latency histogram with log-linear buckets (8 per power of two, so a quantile is
//! within 12.5% of the true value), recorded from the hot path with relaxed atomics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
/// Values below 2 * SUB microseconds get a bucket each.
const LINEAR: u64 = 2 * SUB;
/// Enough buckets for 2^40 µs (12 days).
const BUCKETS: usize = (LINEAR + (40 - SUB_BITS as u64) * SUB) as usize;

/// Latencies in microseconds.
#[derive(Debug)]
pub struct Histogram {
    counts: Box<[AtomicU64]>,
    max: AtomicU64,
    total: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }
}

fn bucket(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let exp = 63 - u64::from(us.leading_zeros());
    let sub = (us >> (exp - u64::from(SUB_BITS))) & (SUB - 1);
    ((LINEAR + (exp - u64::from(SUB_BITS) - 1) * SUB + sub) as usize).min(BUCKETS - 1)
}

/// The highest value that lands in a bucket.
fn upper_bound(index: usize) -> u64 {
    let index = index as u64;
    if index < LINEAR {
        return index;
    }
    let exp = (index - LINEAR) / SUB + u64::from(SUB_BITS) + 1;
    let sub = (index - LINEAR) % SUB;
    ((SUB + sub + 1) << (exp - u64::from(SUB_BITS))) - 1
}

impl Histogram {
    /// Records one latency. Only one thread may record into a histogram.
    pub fn record(&self, latency: Duration) {
        self.record_n(latency, 1);
    }

    /// Records the same latency `n` times. Only one thread may record into a histogram.
    pub fn record_n(&self, latency: Duration, n: u64) {
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        crate::metrics::bump(&self.counts[bucket(us)], n);
        if us > self.max.load(Ordering::Relaxed) {
            self.max.store(us, Ordering::Relaxed);
        }
        crate::metrics::bump(&self.total, n);
    }

    /// Adds another histogram's counts into `into` (bucket by bucket).
    pub fn add_to(&self, into: &mut Vec<u64>) {
        into.resize(BUCKETS, 0);
        for (sum, c) in into.iter_mut().zip(self.counts.iter()) {
            *sum += c.load(Ordering::Relaxed);
        }
    }

    /// The largest value recorded, in microseconds.
    pub fn max_us(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }
}

/// The value below which a fraction `q` of the recorded values fall, from merged bucket counts,
/// in microseconds (the bucket's upper bound).
pub fn quantile_us(counts: &[u64], q: f64) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(upper_bound(i));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for us in [0, 1, 15, 16, 17, 100, 1_000, 5_000, 123_456, 10_000_000] {
            let b = bucket(us);
            assert!(b >= last);
            last = b;
            let hi = upper_bound(b);
            assert!(hi >= us, "{us} above its bucket's bound {hi}");
            assert!(hi as f64 <= us as f64 * 1.125 + 1.0, "{us}: bound {hi} too loose");
        }
    }

    #[test]
    fn quantiles() {
        let h = Histogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let mut counts = Vec::new();
        h.add_to(&mut counts);
        let p50 = quantile_us(&counts, 0.5).unwrap();
        assert!((50_000..=56_250).contains(&p50), "{p50}");
        let p99 = quantile_us(&counts, 0.99).unwrap();
        assert!((99_000..=111_375).contains(&p99), "{p99}");
        assert_eq!(h.max_us(), 100_000);
    }

    #[test]
    fn recording_n_times_at_once_is_recording_n_times() {
        let (once, each) = (Histogram::default(), Histogram::default());
        for (ms, n) in [(3, 250), (40, 5), (7, 1)] {
            once.record_n(Duration::from_millis(ms), n);
            for _ in 0..n {
                each.record(Duration::from_millis(ms));
            }
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        once.add_to(&mut a);
        each.add_to(&mut b);
        assert_eq!(a, b);
        assert_eq!(a.iter().sum::<u64>(), 256);
        assert_eq!((once.max_us(), once.total.load(Ordering::Relaxed)), (40_000, 256));
    }
}
