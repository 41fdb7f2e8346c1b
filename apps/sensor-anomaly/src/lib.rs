//! The sensor-anomaly example, end to end: [`Generator`] makes multi-device
//! sensor streams (temperature, vibration, current, with a daily cycle and
//! noise) with labelled anomalies of three kinds (spike, drift, stuck
//! sensor); [`train`] fits an autoencoder on the window features of normal
//! data; [`evaluate`] scores alerts against the labels.
//!
//! A "day" is [`CYCLE_SECONDS`] of event time, so a short file holds
//! several of them.

use std::io::Write;

use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use burn_autodiff::Autodiff;
use rill_ml::nets::Autoencoder;

pub type Cpu = burn_ndarray::NdArray<f32>;
type Train = Autodiff<Cpu>;

/// One day of event time, in seconds.
pub const CYCLE_SECONDS: f64 = 600.0;

/// The window features, in the model's input order (the pipeline's
/// `preprocess` lists them the same way).
pub const FEATURES: [&str; 12] = [
    "temp_mean",
    "temp_std",
    "temp_min",
    "temp_max",
    "vibration_mean",
    "vibration_std",
    "vibration_min",
    "vibration_max",
    "current_mean",
    "current_std",
    "current_min",
    "current_max",
];

/// The autoencoder's layers.
pub const ENCODER: [usize; 3] = [12, 8, 3];
pub const DECODER: [usize; 3] = [3, 8, 12];

/// An injected anomaly: `kind` on `device` over `[start, end)` (ms).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub device: String,
    pub kind: &'static str,
    pub start: i64,
    pub end: i64,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Config {
    pub devices: usize,
    /// Readings per second and device.
    pub hz: f64,
    /// Event time of the first reading (ms since the epoch).
    pub start_ms: i64,
    pub seed: u64,
    /// Inject anomalies (never in training data).
    pub anomalies: bool,
    /// One reading in this many has a temperature that is not a number (a
    /// dead letter for the pipeline); 0: none.
    pub bad_every: u64,
}

struct Device {
    name: String,
    base: f64,
    phase: f64,
    active: Option<Active>,
    next_at: i64,
}

struct Active {
    kind: &'static str,
    start: i64,
    end: i64,
    stuck: f64,
}

/// A reading as the JSON Lines stream has it.
#[derive(Debug, Clone)]
pub struct Reading {
    pub ts: i64,
    pub device: String,
    pub temp: Option<f64>,
    pub vibration: f64,
    pub current: f64,
    pub anomaly: &'static str,
}

impl Reading {
    pub fn json(&self) -> String {
        let temp = match self.temp {
            Some(t) => serde_json::json!((t * 1000.0).round() / 1000.0),
            None => serde_json::json!("ERR"),
        };
        serde_json::json!({
            "ts": self.ts,
            "device": self.device,
            "temp": temp,
            "vibration": (self.vibration * 10000.0).round() / 10000.0,
            "current": (self.current * 1000.0).round() / 1000.0,
            "anomaly": self.anomaly,
        })
        .to_string()
    }
}

/// Sensor streams, a step (one reading per device) at a time.
pub struct Generator {
    cfg: Config,
    devices: Vec<Device>,
    step: u64,
    made: u64,
    rng: fastrand::Rng,
    /// Every anomaly started so far.
    pub events: Vec<Event>,
}

fn normal(rng: &mut fastrand::Rng) -> f64 {
    // Box-Muller
    let u1 = rng.f64().max(f64::MIN_POSITIVE);
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl Generator {
    pub fn new(cfg: Config) -> Generator {
        let mut rng = fastrand::Rng::with_seed(cfg.seed);
        let devices = (0..cfg.devices)
            .map(|i| Device {
                name: format!("dev-{i:03}"),
                base: 39.0 + 2.0 * rng.f64(),
                phase: std::f64::consts::TAU * rng.f64(),
                active: None,
                next_at: cfg.start_ms + 20_000 + rng.i64(0..60_000),
            })
            .collect();
        Generator {
            cfg,
            devices,
            step: 0,
            made: 0,
            rng,
            events: Vec::new(),
        }
    }

    /// Event time of the next step.
    pub fn next_ts(&self) -> i64 {
        self.cfg.start_ms + (self.step as f64 * 1000.0 / self.cfg.hz) as i64
    }

    /// One reading per device at the next step's time.
    pub fn step(&mut self) -> Vec<Reading> {
        let ts = self.next_ts();
        self.step += 1;
        let t = (ts - self.cfg.start_ms) as f64 / 1000.0;
        let mut out = Vec::with_capacity(self.devices.len());
        for d in &mut self.devices {
            let rng = &mut self.rng;
            let load = 0.5 + 0.4 * (std::f64::consts::TAU * t / CYCLE_SECONDS + d.phase).sin();
            let mut temp = d.base + 10.0 * load + 0.6 * normal(rng);
            let mut vibration = 0.15 + 0.1 * load + 0.02 * normal(rng);
            let mut current = 8.0 + 6.0 * load + 0.4 * normal(rng);
            if d.active.as_ref().is_some_and(|a| ts >= a.end) {
                d.active = None;
                d.next_at = ts + 40_000 + rng.i64(0..60_000);
            }
            if self.cfg.anomalies && d.active.is_none() && ts >= d.next_at {
                let (kind, len) = match rng.u8(0..3) {
                    0 => ("spike", 1_000),
                    1 => ("drift", 45_000),
                    _ => ("stuck", 20_000),
                };
                d.active = Some(Active {
                    kind,
                    start: ts,
                    end: ts + len,
                    stuck: current,
                });
                self.events.push(Event {
                    device: d.name.clone(),
                    kind,
                    start: ts,
                    end: ts + len,
                });
            }
            let mut label = "none";
            if let Some(a) = &d.active {
                label = a.kind;
                match a.kind {
                    "spike" => {
                        vibration += 0.2;
                        temp += 2.0;
                    }
                    "drift" => temp += 16.0 * (ts - a.start) as f64 / (a.end - a.start) as f64,
                    _ => current = a.stuck,
                }
            }
            self.made += 1;
            let bad = self.cfg.bad_every > 0 && self.made.is_multiple_of(self.cfg.bad_every);
            out.push(Reading {
                ts,
                device: d.name.clone(),
                temp: (!bad).then_some(temp),
                vibration,
                current,
                anomaly: label,
            });
        }
        out
    }

    /// Writes `seconds` of readings as JSON Lines to `w`.
    pub fn write(&mut self, seconds: f64, w: &mut impl Write) -> std::io::Result<u64> {
        let steps = (seconds * self.cfg.hz) as u64;
        let mut n = 0;
        for _ in 0..steps {
            for r in self.step() {
                writeln!(w, "{}", r.json())?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Events as JSON (what [`evaluate`] reads back).
pub fn events_json(events: &[Event]) -> String {
    let v: Vec<serde_json::Value> = events
        .iter()
        .map(|e| serde_json::json!({"device": e.device, "kind": e.kind, "start": e.start, "end": e.end}))
        .collect();
    serde_json::to_string_pretty(&v).expect("JSON")
}

pub fn parse_events(text: &str) -> Result<Vec<Event>, String> {
    let v: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    v.iter()
        .map(|e| {
            let kind = match e["kind"].as_str() {
                Some("spike") => "spike",
                Some("drift") => "drift",
                Some("stuck") => "stuck",
                other => return Err(format!("unknown anomaly kind {other:?}")),
            };
            Ok(Event {
                device: e["device"].as_str().ok_or("no device")?.to_owned(),
                kind,
                start: e["start"].as_i64().ok_or("no start")?,
                end: e["end"].as_i64().ok_or("no end")?,
            })
        })
        .collect()
}

/// An alert: a device's window `[start, end)` (ms) scored past the
/// threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub device: String,
    pub start: i64,
    pub end: i64,
}

/// Precision (alerts whose window overlaps an anomaly of their device),
/// recall (anomalies with an alert overlapping them), and per kind the
/// anomalies found and injected.
pub fn evaluate(
    alerts: &[Alert],
    events: &[Event],
) -> (f64, f64, Vec<(&'static str, usize, usize)>) {
    let hits = |a: &Alert, e: &Event| a.device == e.device && a.start < e.end && a.end > e.start;
    let right = alerts
        .iter()
        .filter(|a| events.iter().any(|e| hits(a, e)))
        .count();
    let mut kinds = Vec::new();
    for kind in ["spike", "drift", "stuck"] {
        let of: Vec<&Event> = events.iter().filter(|e| e.kind == kind).collect();
        let found = of
            .iter()
            .filter(|e| alerts.iter().any(|a| hits(a, e)))
            .count();
        kinds.push((kind, found, of.len()));
    }
    let found: usize = kinds.iter().map(|k| k.1).sum();
    let precision = if alerts.is_empty() {
        0.0
    } else {
        right as f64 / alerts.len() as f64
    };
    let recall = if events.is_empty() {
        0.0
    } else {
        found as f64 / events.len() as f64
    };
    (precision, recall, kinds)
}

/// The feature vector of a row of the features file.
pub fn features(row: &serde_json::Value) -> Option<[f32; 12]> {
    let mut x = [0f32; 12];
    for (i, f) in FEATURES.iter().enumerate() {
        x[i] = row[*f].as_f64()? as f32;
    }
    Some(x)
}

fn batch<B: Backend>(rows: &[[f32; 12]], device: &B::Device) -> Tensor<B, 2> {
    let x: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(x, [rows.len(), 12]), device)
}

/// Reconstruction errors (mean squared, as `BurnAutoencoder` scores).
pub fn scores(model: &Autoencoder<Cpu>, rows: &[[f32; 12]]) -> Vec<f32> {
    let device = Default::default();
    let x = batch::<Cpu>(rows, &device);
    let err = (model.forward(x.clone()) - x).powi_scalar(2).mean_dim(1);
    err.into_data().to_vec().expect("f32 scores")
}

/// Fits the autoencoder with Adam on mini-batches of 64.
pub fn train(rows: &[[f32; 12]], epochs: usize, seed: u64) -> Autoencoder<Cpu> {
    let device = Default::default();
    <Train as Backend>::seed(&device, seed);
    let mut model = match rill_ml::nets::Net::<Train>::init(
        &rill_ml::nets::Arch::Autoencoder {
            encoder: ENCODER.to_vec(),
            decoder: DECODER.to_vec(),
        },
        &device,
    ) {
        rill_ml::nets::Net::Autoencoder(a) => a,
        _ => unreachable!("an autoencoder architecture makes an autoencoder"),
    };
    let mut optim = AdamConfig::new().init();
    let mut order: Vec<usize> = (0..rows.len()).collect();
    let mut rng = fastrand::Rng::with_seed(seed);
    for _ in 0..epochs {
        rng.shuffle(&mut order);
        for idx in order.chunks(64) {
            let part: Vec<[f32; 12]> = idx.iter().map(|&i| rows[i]).collect();
            let x = batch::<Train>(&part, &device);
            let loss = (model.forward(x.clone()) - x).powi_scalar(2).mean();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(3e-3, model, grads);
        }
    }
    model.valid()
}

/// The alert threshold: the `q` quantile of the training scores, times
/// `margin`.
pub fn threshold(scores: &[f32], q: f64, margin: f64) -> f64 {
    let mut s: Vec<f32> = scores.to_vec();
    s.sort_by(f32::total_cmp);
    let i = ((s.len() as f64 * q) as usize).min(s.len().saturating_sub(1));
    f64::from(s.get(i).copied().unwrap_or(0.0)) * margin
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(anomalies: bool) -> Config {
        Config {
            devices: 4,
            hz: 10.0,
            start_ms: 1_767_225_600_000,
            seed: 5,
            anomalies,
            bad_every: 0,
        }
    }

    #[test]
    fn generation_is_repeatable_and_labelled() {
        let mut a = Generator::new(cfg(true));
        let mut b = Generator::new(cfg(true));
        let (mut x, mut y) = (Vec::new(), Vec::new());
        a.write(300.0, &mut x).unwrap();
        b.write(300.0, &mut y).unwrap();
        assert_eq!(x, y);
        assert_eq!(a.events, b.events);
        let kinds: std::collections::BTreeSet<&str> = a.events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds.len(), 3, "{:?}", a.events);
        let text = String::from_utf8(x).unwrap();
        let labelled = text.lines().filter(|l| !l.contains("\"none\"")).count();
        assert!(labelled > 0);
        // no anomalies in training data
        let mut n = Generator::new(cfg(false));
        let mut z = Vec::new();
        n.write(300.0, &mut z).unwrap();
        assert!(n.events.is_empty());
        assert!(!String::from_utf8(z).unwrap().contains("spike"));
    }

    #[test]
    fn evaluation_counts_overlaps() {
        let events = vec![Event {
            device: "d".into(),
            kind: "spike",
            start: 10_000,
            end: 11_000,
        }];
        let alert = |s: i64| Alert {
            device: "d".into(),
            start: s,
            end: s + 5_000,
        };
        let (p, r, _) = evaluate(&[alert(7_000), alert(20_000)], &events);
        assert_eq!((p, r), (0.5, 1.0));
        let (p, r, _) = evaluate(&[alert(20_000)], &events);
        assert_eq!((p, r), (0.0, 0.0));
    }
}
