//! `Generate`: a synthetic stream for demos and benchmarks.
//!
//! Each record is `{id, key, value}` (plus `payload` bytes when asked):
//! `id` counts from 0, `key` is `k<id % keys>` (also the record key), and
//! `value` is a deterministic pseudo-random float in [0, 1) drawn from
//! `seed` and `id`, so two runs generate the same stream. With `rate`, event
//! times advance by 1/rate from `start_time` and records are released at
//! that pace; without, the stream is as fast as downstream takes it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rill_core::node::{
    BuildContext, ConfigError, Emitter, Node, NodeConfig, NodeError, NodeKind, Source, SourceStatus,
};
use rill_core::{Record, Value};
use serde::Deserialize;

/// `rate` bounds: one record in 1,000 s, and a billion a second (past
/// them the pacing arithmetic leaves the range of a duration).
const MIN_RATE: f64 = 0.001;
const MAX_RATE: f64 = 1e9;

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Generate {
    /// Records to make; unbounded when absent.
    pub count: Option<u64>,
    /// Records per second; as fast as possible when absent.
    pub rate: Option<f64>,
    /// Distinct keys (default 1).
    pub keys: Option<u64>,
    /// Event time of the first record in ms since the epoch (default: now).
    pub start_time: Option<i64>,
    pub seed: Option<u64>,
    /// Adds a `payload` field of this many bytes.
    pub payload_bytes: Option<usize>,
}

impl NodeConfig for Generate {
    fn kind(&self) -> NodeKind {
        NodeKind::Source
    }
    fn unbounded(&self) -> bool {
        self.count.is_none()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(r) = self.rate
            && !(MIN_RATE..=MAX_RATE).contains(&r)
        {
            return Err(ConfigError::at(
                "rate",
                format!(
                    "`rate` must be between {MIN_RATE} and {MAX_RATE:e} records per second, got {r}"
                ),
            ));
        }
        if self.keys == Some(0) {
            return Err(ConfigError::at("keys", "`keys` must be at least 1"));
        }
        if self.payload_bytes.is_some_and(|b| b > 16 << 20) {
            return Err(ConfigError::at(
                "payload_bytes",
                "`payload_bytes` must be at most 16 MiB",
            ));
        }
        Ok(())
    }

    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        // the clock's start is part of the stream: a restarted source takes
        // the one its first incarnation committed
        let start_time = match (self.start_time, ctx.state.get_value("start_time")?) {
            (Some(t), _) => t,
            (None, Some(Value::Int(t))) => t,
            (None, _) => {
                let t = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                ctx.state.put_value("start_time", &Value::Int(t))?;
                t
            }
        };
        Ok(Node::Source(Box::new(GenerateSource {
            cfg: self.clone(),
            next: 0,
            start_time,
            started: Instant::now(),
        })))
    }
}

struct GenerateSource {
    cfg: Generate,
    next: u64,
    start_time: i64,
    started: Instant,
}

/// splitmix64: a fast, well-mixed deterministic hash.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl GenerateSource {
    fn make(&self, id: u64) -> Record {
        let keys = self.cfg.keys.unwrap_or(1);
        let key = format!("k{}", id % keys);
        let h = mix(self.cfg.seed.unwrap_or(0) ^ mix(id));
        let value = (h >> 11) as f64 / (1u64 << 53) as f64;
        let t = match self.cfg.rate {
            Some(r) => self.start_time + (id as f64 * 1000.0 / r) as i64,
            None => self.start_time + id as i64,
        };
        let mut r = Record::default().with_key(key.clone()).with_time(t);
        r.fields.insert("id".into(), Value::Int(id as i64));
        r.fields.insert("key".into(), Value::String(key.into()));
        r.fields.insert("value".into(), Value::Float(value));
        if let Some(n) = self.cfg.payload_bytes {
            r.fields
                .insert("payload".into(), Value::Bytes(vec![(id % 251) as u8; n]));
        }
        r
    }
}

impl Source for GenerateSource {
    fn seek(&mut self, emitted: u64) -> bool {
        self.next = emitted;
        if let Some(r) = self.cfg.rate {
            // resume the pace where it was, not with a burst
            let ahead = Duration::from_secs_f64(emitted as f64 / r);
            self.started = Instant::now()
                .checked_sub(ahead)
                .unwrap_or_else(Instant::now);
        }
        true
    }

    fn poll(&mut self, max: usize, out: &mut Emitter) -> Result<SourceStatus, NodeError> {
        let remaining = self
            .cfg
            .count
            .map_or(u64::MAX, |c| c.saturating_sub(self.next));
        if remaining == 0 {
            return Ok(SourceStatus::Done);
        }
        // how many are due by now
        let due = match self.cfg.rate {
            Some(r) => {
                let due = (self.started.elapsed().as_secs_f64() * r) as u64 + 1;
                due.saturating_sub(self.next)
            }
            None => u64::MAX,
        };
        let n = remaining.min(due).min(max as u64);
        for _ in 0..n {
            out.emit(self.make(self.next));
            self.next += 1;
        }
        if self.cfg.count.is_some_and(|c| self.next >= c) {
            return Ok(SourceStatus::Done);
        }
        Ok(match self.cfg.rate {
            Some(r) if n >= due || n == 0 => {
                let next_at = Duration::from_secs_f64(self.next as f64 / r);
                SourceStatus::Wait(next_at.saturating_sub(self.started.elapsed()))
            }
            _ => SourceStatus::More,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_bounded() {
        let g = Generate {
            count: Some(10),
            keys: Some(3),
            start_time: Some(1000),
            ..Default::default()
        };
        let run = |g: &Generate| {
            let state = Default::default();
            let built = rill_core::testkit::with_context(
                "g",
                std::path::Path::new("."),
                &state,
                Default::default(),
                &Default::default(),
                |ctx| g.build(ctx),
            );
            let Node::Source(mut s) = built.unwrap() else {
                panic!()
            };
            rill_core::testkit::drain_source(s.as_mut(), 1000)
                .unwrap()
                .main
        };
        let a = run(&g);
        assert_eq!(a.len(), 10);
        assert_eq!(a, run(&g));
        assert_eq!(a[4].key.as_deref(), Some("k1"));
        assert_eq!(a[4].event_time, 1004);
    }

    #[test]
    fn rates_out_of_range_are_refused() {
        for r in [1e308, 1e-300, 0.0, -1.0, f64::NAN, f64::INFINITY] {
            let g = Generate {
                rate: Some(r),
                ..Default::default()
            };
            let e = g.validate().unwrap_err();
            assert!(e.message.contains("between 0.001 and 1e9"), "{r}: {e}");
            assert_eq!(e.path, ["rate"]);
        }
        for r in [0.001, 1.0, 1e9] {
            let g = Generate {
                rate: Some(r),
                ..Default::default()
            };
            assert!(g.validate().is_ok(), "{r}");
        }
    }
}
