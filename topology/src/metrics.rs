//! A task's own metrics (Storm's metrics v2, through the context): counters, gauges and
//! histograms by name. The runtime reports them with the task's component and task id, in the
//! component's metrics, `squall describe` and Nimbus's `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

/// Sub-buckets per power of two in a [`Histogram`]: quantiles within about 9 %.
const SUB_BUCKETS: usize = 8;
/// Powers of two a [`Histogram`] tells apart: 2^-20 up to 2^44 (smaller and larger values
/// land in the first and last).
const OCTAVES: usize = 64;
const LOWEST_OCTAVE: i32 = -20;

/// A task's counters, gauges and histograms by name. Cheap to clone; one per task.
#[derive(Debug, Clone, Default)]
pub struct TaskMetrics {
    inner: Arc<Mutex<Registered>>,
}

#[derive(Debug, Default)]
struct Registered {
    counters: BTreeMap<String, Counter>,
    gauges: BTreeMap<String, Gauge>,
    histograms: BTreeMap<String, Histogram>,
}

impl TaskMetrics {
    fn lock(&self) -> MutexGuard<'_, Registered> {
        // Each critical section is one map insert or read: a poisoned map is still whole.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The counter `name` (the same one each time it is asked for).
    pub fn counter(&self, name: &str) -> Counter {
        self.lock().counters.entry(name.to_owned()).or_default().clone()
    }

    /// The gauge `name`.
    pub fn gauge(&self, name: &str) -> Gauge {
        self.lock().gauges.entry(name.to_owned()).or_default().clone()
    }

    /// The histogram `name`.
    pub fn histogram(&self, name: &str) -> Histogram {
        self.lock().histograms.entry(name.to_owned()).or_default().clone()
    }

    /// Every metric's value now.
    pub fn snapshot(&self) -> UserMetrics {
        let registered = self.lock();
        UserMetrics {
            counters: registered.counters.iter().map(|(k, c)| (k.clone(), c.get())).collect(),
            gauges: registered.gauges.iter().map(|(k, g)| (k.clone(), g.get())).collect(),
            histograms: registered.histograms.iter().map(|(k, h)| (k.clone(), h.snapshot())).collect(),
        }
    }
}

/// A count that only goes up.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Its value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    /// Sets it.
    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }

    /// Its value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// A distribution of values (latencies, sizes): count, sum, largest, and quantiles within
/// about 9 % (log-linear buckets).
#[derive(Debug, Clone, Default)]
pub struct Histogram(Arc<Mutex<Buckets>>);

#[derive(Debug)]
struct Buckets {
    counts: Vec<u64>,
    count: u64,
    sum: f64,
    max: f64,
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets { counts: vec![0; OCTAVES * SUB_BUCKETS], count: 0, sum: 0.0, max: 0.0 }
    }
}

/// The bucket of a value, and the upper bound of a bucket.
fn bucket_of(value: f64) -> usize {
    if value.is_nan() || value <= 0.0 {
        return 0;
    }
    let octave = (value.log2().floor() as i32 - LOWEST_OCTAVE).clamp(0, OCTAVES as i32 - 1) as usize;
    let base = 2f64.powi(octave as i32 + LOWEST_OCTAVE);
    let sub = (((value / base) - 1.0) * SUB_BUCKETS as f64).floor().clamp(0.0, SUB_BUCKETS as f64 - 1.0) as usize;
    octave * SUB_BUCKETS + sub
}

fn upper_bound(bucket: usize) -> f64 {
    let (octave, sub) = (bucket / SUB_BUCKETS, bucket % SUB_BUCKETS);
    2f64.powi(octave as i32 + LOWEST_OCTAVE) * (1.0 + (sub + 1) as f64 / SUB_BUCKETS as f64)
}

impl Histogram {
    /// Records one value (negative values and NaN count as 0).
    pub fn record(&self, value: f64) {
        let value = if value.is_nan() { 0.0 } else { value.max(0.0) };
        let mut buckets = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = bucket_of(value);
        buckets.counts[bucket] += 1;
        buckets.count += 1;
        buckets.sum += value;
        buckets.max = buckets.max.max(value);
    }

    /// Its count, sum, largest value and median and 99th percentile.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let quantile = |q: f64| -> Option<f64> {
            let rank = ((buckets.count as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, n) in buckets.counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    // A bucket's bound may pass the largest value recorded.
                    return Some(upper_bound(i).min(buckets.max));
                }
            }
            None
        };
        HistogramSnapshot {
            count: buckets.count,
            sum: buckets.sum,
            max: buckets.max,
            p50: quantile(0.5).filter(|_| buckets.count > 0),
            p99: quantile(0.99).filter(|_| buckets.count > 0),
        }
    }
}

/// A histogram's values at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistogramSnapshot {
    /// How many values.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// The largest.
    pub max: f64,
    /// The median (within about 9 %), if any value was recorded.
    pub p50: Option<f64>,
    /// The 99th percentile.
    pub p99: Option<f64>,
}

/// A task's metrics at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserMetrics {
    /// Counters by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counters: BTreeMap<String, u64>,
    /// Gauges by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gauges: BTreeMap<String, f64>,
    /// Histograms by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub histograms: BTreeMap<String, HistogramSnapshot>,
}

impl UserMetrics {
    /// Whether nothing was registered.
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty() && self.gauges.is_empty() && self.histograms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_keep_their_values_by_name() {
        let metrics = TaskMetrics::default();
        metrics.counter("words").inc();
        metrics.counter("words").add(4);
        metrics.gauge("depth").set(2.5);
        let latency = metrics.histogram("latency_ms");
        for v in 1..=1000 {
            latency.record(v as f64);
        }
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.counters["words"], 5);
        assert_eq!(snapshot.gauges["depth"], 2.5);
        let h = &snapshot.histograms["latency_ms"];
        assert_eq!((h.count, h.sum, h.max), (1000, 500_500.0, 1000.0));
        let (p50, p99) = (h.p50.unwrap_or(0.0), h.p99.unwrap_or(0.0));
        assert!((500.0..=500.0 * 1.13).contains(&p50), "{p50}");
        assert!((990.0..=1000.0).contains(&p99), "{p99}");
        assert_eq!(TaskMetrics::default().histogram("x").snapshot().p50, None);
    }

    #[test]
    fn every_value_lands_in_a_bucket_whose_bound_is_above_it() {
        for v in [1e-9, 0.001, 0.5, 1.0, 1.1, 3.0, 1e6, 1e15, 1e30] {
            let b = bucket_of(v);
            assert!(b < OCTAVES * SUB_BUCKETS);
            if (1e-6..1e13).contains(&v) {
                assert!(upper_bound(b) >= v && upper_bound(b) <= v * 1.13, "{v}: {}", upper_bound(b));
            }
        }
    }
}
