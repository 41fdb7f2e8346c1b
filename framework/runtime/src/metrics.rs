//! Per-stage counters, shared between a stage's incarnations and read by the
//! CLI for progress and the end-of-run summary.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Upper bounds (µs) of the processing-latency histogram buckets.
pub const LATENCY_BUCKETS_US: [u64; 12] = [
    10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000, 1_000_000,
];

/// Counters of one stage.
#[derive(Debug)]
pub struct StageMetrics {
    pub stage: String,
    pub type_name: String,
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    /// Records that failed (dead letters or stage failures).
    pub errors: AtomicU64,
    pub restarts: AtomicU64,
    /// Records received and not yet processed.
    pub queue_depth: AtomicI64,
    /// Highest `queue_depth` seen.
    pub queue_high_water: AtomicI64,
    /// Most records an output of this stage held unacknowledged at once.
    pub log_high_water: AtomicU64,
    /// Records dropped by a `drop_oldest` queue.
    pub dropped: AtomicU64,
    /// Processing latency per batch, by bucket (last bucket: above all bounds).
    pub latency: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    pub busy_us: AtomicU64,
    pub started: Mutex<Option<Instant>>,
    pub finished: Mutex<Option<Instant>>,
    pub last_error: Mutex<Option<String>>,
    /// Durable commits, and the time spent in them (µs).
    pub commits: AtomicU64,
    pub commit_us: AtomicU64,
    /// Calls or start-ups past the stage's `timeout`.
    pub timeouts: AtomicU64,
    /// Messages on an input from a producer epoch no live producer
    /// announced (forged, or from a stale process): dropped.
    pub foreign: AtomicU64,
    /// The stage's event-time watermark (ms since the epoch; `i64::MIN`
    /// before one is known).
    pub watermark: AtomicI64,
    /// The node's own metrics (a model's batch sizes, load times...).
    pub node: std::sync::Arc<rill_core::metrics::NodeMetrics>,
    /// The stage's request queue, when it has `serve:`.
    pub requests: std::sync::OnceLock<std::sync::Arc<rill_core::serve::RequestQueue>>,
    /// How long (ms) the consumers of an output have left its records
    /// unacknowledged, once past the warning threshold (0 otherwise).
    pub unreachable_ms: AtomicU64,
}

impl StageMetrics {
    pub fn new(stage: &str, type_name: &str) -> StageMetrics {
        StageMetrics {
            stage: stage.to_owned(),
            type_name: type_name.to_owned(),
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            queue_depth: AtomicI64::new(0),
            queue_high_water: AtomicI64::new(0),
            log_high_water: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            latency: Default::default(),
            busy_us: AtomicU64::new(0),
            started: Mutex::new(None),
            finished: Mutex::new(None),
            last_error: Mutex::new(None),
            commits: AtomicU64::new(0),
            commit_us: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            node: Default::default(),
            requests: std::sync::OnceLock::new(),
            unreachable_ms: AtomicU64::new(0),
        }
    }

    pub fn observe_latency(&self, d: Duration) {
        let us = d.as_micros() as u64;
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency[i].fetch_add(1, Relaxed);
        self.busy_us.fetch_add(us, Relaxed);
    }

    /// The latency bucket bound (µs) below which `q` (0..1) of batches fell.
    pub fn latency_quantile_us(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self.latency.iter().map(|c| c.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let target = (total as f64 * q).ceil() as u64;
        let mut acc = 0;
        for (i, c) in counts.iter().enumerate() {
            acc += c;
            if acc >= target {
                return Some(LATENCY_BUCKETS_US.get(i).copied().unwrap_or(u64::MAX));
            }
        }
        None
    }

    pub fn snapshot(&self) -> StageSnapshot {
        let elapsed = match (
            *self.started.lock().unwrap(),
            *self.finished.lock().unwrap(),
        ) {
            (Some(s), Some(f)) => f.duration_since(s),
            (Some(s), None) => s.elapsed(),
            _ => Duration::ZERO,
        };
        StageSnapshot {
            stage: self.stage.clone(),
            type_name: self.type_name.clone(),
            records_in: self.records_in.load(Relaxed),
            records_out: self.records_out.load(Relaxed),
            errors: self.errors.load(Relaxed),
            restarts: self.restarts.load(Relaxed),
            queue_depth: self.queue_depth.load(Relaxed).max(0) as u64,
            queue_high_water: self.queue_high_water.load(Relaxed).max(0) as u64,
            log_high_water: self.log_high_water.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            elapsed,
            p50_us: self.latency_quantile_us(0.5),
            p99_us: self.latency_quantile_us(0.99),
            finished: self.finished.lock().unwrap().is_some(),
            commits: self.commits.load(Relaxed),
            commit_us: self.commit_us.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            node: self
                .node
                .snapshot()
                .into_iter()
                .map(|(k, m)| (k, rill_core::metrics::render(&m)))
                .collect(),
        }
    }
}

/// A stage's counters at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct StageSnapshot {
    pub stage: String,
    pub type_name: String,
    pub records_in: u64,
    pub records_out: u64,
    pub errors: u64,
    pub restarts: u64,
    pub queue_depth: u64,
    pub queue_high_water: u64,
    pub log_high_water: u64,
    pub dropped: u64,
    pub elapsed: Duration,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub finished: bool,
    pub commits: u64,
    pub commit_us: u64,
    pub timeouts: u64,
    /// The node's own metrics, rendered (`num_inferences`, ...).
    pub node: Vec<(String, String)>,
}
