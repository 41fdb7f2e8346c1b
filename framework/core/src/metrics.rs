//! Metrics a node reports about its own work (a model's batch sizes, load
//! times, version), kept beside the runtime's per-stage counters and shown
//! in the end-of-run summary. Names follow Beam's where Beam has the metric.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// The upper bounds of a distribution's buckets: 1, 2, 4, ... 2^31 (the
/// last bucket holds what is above them all).
pub const DISTRIBUTION_BOUNDS: [u64; 32] = {
    let mut b = [0u64; 32];
    let mut i = 0;
    while i < 32 {
        b[i] = 1 << i;
        i += 1;
    }
    b
};

/// A distribution: count, sum, min and max of observed values, and how
/// many fell in each power-of-two bucket ([`DISTRIBUTION_BOUNDS`]).
#[derive(Debug)]
pub struct Distribution {
    count: AtomicU64,
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
    buckets: Box<[AtomicU64; 33]>,
}

impl Default for Distribution {
    fn default() -> Self {
        Distribution {
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            min: AtomicU64::new(0),
            max: AtomicU64::new(0),
            buckets: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

impl Distribution {
    /// The bucket of `v`: the first bound at or above it.
    fn bucket(v: u64) -> usize {
        if v <= 1 {
            0
        } else {
            (64 - (v - 1).leading_zeros() as usize).min(32)
        }
    }

    /// Observations per bucket (not cumulative).
    pub fn buckets(&self) -> Vec<u64> {
        self.buckets.iter().map(|b| b.load(Relaxed)).collect()
    }

    pub fn observe(&self, v: u64) {
        self.buckets[Self::bucket(v)].fetch_add(1, Relaxed);
        if self.count.fetch_add(1, Relaxed) == 0 {
            self.min.store(v, Relaxed);
        } else {
            self.min.fetch_min(v, Relaxed);
        }
        self.sum.fetch_add(v, Relaxed);
        self.max.fetch_max(v, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    pub fn sum(&self) -> u64 {
        self.sum.load(Relaxed)
    }

    pub fn min(&self) -> u64 {
        self.min.load(Relaxed)
    }

    pub fn max(&self) -> u64 {
        self.max.load(Relaxed)
    }

    pub fn mean(&self) -> f64 {
        let n = self.count();
        if n == 0 {
            0.0
        } else {
            self.sum() as f64 / n as f64
        }
    }
}

/// One metric.
#[derive(Debug)]
pub enum Metric {
    Counter(AtomicU64),
    Gauge(AtomicI64),
    Distribution(Distribution),
    /// A text value (a model version).
    Label(Mutex<String>),
}

/// A node's metrics, by name, in the order they were first asked for.
/// Shared by every incarnation of the stage.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    entries: Mutex<Vec<(String, Arc<Metric>)>>,
}

impl NodeMetrics {
    fn get(&self, name: &str, new: impl FnOnce() -> Metric) -> Arc<Metric> {
        let mut e = self.entries.lock().unwrap();
        if let Some((_, m)) = e.iter().find(|(n, _)| n == name) {
            return m.clone();
        }
        let m = Arc::new(new());
        e.push((name.to_owned(), m.clone()));
        m
    }

    /// Adds `v` to the counter `name`.
    pub fn count(&self, name: &str, v: u64) {
        if let Metric::Counter(c) = &*self.get(name, || Metric::Counter(AtomicU64::new(0))) {
            c.fetch_add(v, Relaxed);
        }
    }

    /// Sets the gauge `name`.
    pub fn set(&self, name: &str, v: i64) {
        if let Metric::Gauge(g) = &*self.get(name, || Metric::Gauge(AtomicI64::new(0))) {
            g.store(v, Relaxed);
        }
    }

    /// Records one value of the distribution `name`.
    pub fn observe(&self, name: &str, v: u64) {
        if let Metric::Distribution(d) =
            &*self.get(name, || Metric::Distribution(Distribution::default()))
        {
            d.observe(v);
        }
    }

    /// Sets the label `name`.
    pub fn label(&self, name: &str, v: &str) {
        if let Metric::Label(l) = &*self.get(name, || Metric::Label(Mutex::new(String::new()))) {
            *l.lock().unwrap() = v.to_owned();
        }
    }

    /// Every metric, in order.
    pub fn snapshot(&self) -> Vec<(String, Arc<Metric>)> {
        self.entries.lock().unwrap().clone()
    }

    /// The counter `name`, 0 if absent.
    pub fn counter(&self, name: &str) -> u64 {
        self.entries
            .lock()
            .unwrap()
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, m)| match &**m {
                Metric::Counter(c) => Some(c.load(Relaxed)),
                _ => None,
            })
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.lock().unwrap().is_empty()
    }
}

/// Renders a metric's value for a summary line.
pub fn render(m: &Metric) -> String {
    match m {
        Metric::Counter(c) => c.load(Relaxed).to_string(),
        Metric::Gauge(g) => g.load(Relaxed).to_string(),
        Metric::Distribution(d) => format!(
            "n={} mean={:.1} min={} max={}",
            d.count(),
            d.mean(),
            d.min(),
            d.max()
        ),
        Metric::Label(l) => l.lock().unwrap().clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_accumulate_by_name() {
        let m = NodeMetrics::default();
        m.count("num_inferences", 3);
        m.count("num_inferences", 4);
        m.observe("batch", 10);
        m.observe("batch", 2);
        m.label("model_version", "3");
        assert_eq!(m.counter("num_inferences"), 7);
        let s = m.snapshot();
        assert_eq!(s.len(), 3);
        assert_eq!(render(&s[1].1), "n=2 mean=6.0 min=2 max=10");
        assert_eq!(render(&s[2].1), "3");
    }

    #[test]
    fn distribution_buckets_are_powers_of_two() {
        let d = Distribution::default();
        for v in [0, 1, 2, 3, 4, 5, 64, 65, u64::MAX] {
            d.observe(v);
        }
        let b = d.buckets();
        // le=1: 0 and 1; le=2: 2; le=4: 3, 4; le=8: 5; le=64: 64; le=128: 65
        assert_eq!(&b[..8], &[2, 1, 2, 1, 0, 0, 1, 1]);
        assert_eq!(b[32], 1, "past 2^31: the last bucket");
        assert_eq!(b.iter().sum::<u64>(), 9);
    }
}
