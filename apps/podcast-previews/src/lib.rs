//! The podcast-preview example: synthetic episodes with a labelled
//! highlight, the features and the Conv1d segment scorer the pipeline runs,
//! and the overlap of previews with highlights (README, "Podcast
//! previews").
//!
//! An episode is speech from two hosts in phrases and pauses, a music bed
//! that comes and goes, a few loud music stings, and one *highlight* of
//! 30 to 40 s: excited speech (higher and more varied pitch, faster
//! syllables) with bursts of laughter. Loudness alone does not give it
//! away: the hosts' levels vary as much, and the stings are louder.
//! Everything is made from a seed, so tests and the README need no
//! downloads.

use std::f64::consts::PI;
use std::path::Path;

use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use burn_autodiff::Autodiff;
use rill_ml::nets::{Arch, Conv1dNet, Net};
use rill_nodes::audio::{MelParams, MelSpectrogram};

pub type Cpu = burn_ndarray::NdArray<f32>;
type Train = Autodiff<Cpu>;

/// The episodes' sample rate.
pub const RATE: u32 = 16_000;
/// The preview's length, in seconds.
pub const PREVIEW_SECONDS: f64 = 30.0;
/// A preview overlaps its episode's highlight when they share at least
/// this many seconds (half the preview).
pub const OVERLAP_SECONDS: f64 = 15.0;

/// The log-mel features of a 1-second frame, as `configs/podcast-previews.yaml`
/// asks `LogMel` for them: `[32 bands, 49 steps]`.
pub fn mel_params() -> MelParams {
    MelParams {
        sample_rate: RATE,
        n_fft: 512,
        win_length: 400,
        hop_length: 320,
        n_mels: 32,
        f_min: 50.0,
        f_max: 8000.0,
        floor: 1e-6,
    }
}

/// The scorer: two 1-D convolutions over the frame's 49 steps of 32 bands,
/// then `[other, highlight]`.
pub fn arch() -> Arch {
    Arch::Conv1d {
        channels: vec![32, 32, 32],
        kernel_size: 5,
        outputs: 2,
    }
}

/// A generated episode.
#[derive(Debug, Clone)]
pub struct Episode {
    pub name: String,
    pub samples: Vec<f32>,
    /// The highlight, `[start, end)` in seconds.
    pub highlight: (f64, f64),
}

impl Episode {
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / RATE as f64
    }

    /// Writes the episode as 16-bit mono WAV.
    pub fn write_wav(&self, path: &Path) -> Result<(), String> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w =
            hound::WavWriter::create(path, spec).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut i16w = w.get_i16_writer(self.samples.len() as u32);
        for s in &self.samples {
            i16w.write_sample((s.clamp(-1.0, 1.0) * 32767.0).round() as i16);
        }
        i16w.flush().map_err(|e| e.to_string())?;
        w.finalize().map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The labels as JSON: `{"episode", "seconds", "highlight_start", "highlight_end"}`.
    pub fn labels_json(&self) -> String {
        serde_json::json!({
            "episode": self.name,
            "seconds": self.seconds(),
            "highlight_start": self.highlight.0,
            "highlight_end": self.highlight.1,
        })
        .to_string()
    }
}

/// Vowels as their first three formants (Hz).
const VOWELS: [(f64, f64, f64); 5] = [
    (730.0, 1090.0, 2440.0),
    (270.0, 2290.0, 3010.0),
    (300.0, 870.0, 2240.0),
    (530.0, 1840.0, 2480.0),
    (570.0, 840.0, 2410.0),
];

struct Synth {
    x: Vec<f32>,
    rng: fastrand::Rng,
}

impl Synth {
    fn at(&self, t: f64) -> usize {
        ((t * RATE as f64) as usize).min(self.x.len())
    }

    fn noise(&mut self) -> f64 {
        self.rng.f64() * 2.0 - 1.0
    }

    /// One syllable: a consonant burst, then a voiced vowel whose pitch
    /// moves by `glide` (a ratio) over it.
    fn syllable(&mut self, t0: f64, t1: f64, f0: f64, glide: f64, level: f64) {
        let (s0, s1) = (self.at(t0), self.at(t1));
        if s1 <= s0 + 8 {
            return;
        }
        let (f1, f2, f3) = VOWELS[self.rng.usize(0..VOWELS.len())];
        let k_max = ((3800.0 / f0) as usize).clamp(4, 40);
        // the harmonics' gains through the vowel's formants (for the mean
        // pitch: the glide moves them a little)
        let gains: Vec<f64> = (1..=k_max)
            .map(|k| {
                let f = k as f64 * f0;
                let g = |fc: f64, bw: f64| (-((f - fc) / bw).powi(2)).exp();
                (0.15 + g(f1, 90.0) + 0.8 * g(f2, 120.0) + 0.4 * g(f3, 180.0)) / (k as f64).sqrt()
            })
            .collect();
        let n = s1 - s0;
        let burst = (n as f64 * 0.15) as usize;
        let mut phase = self.rng.f64() * 2.0 * PI;
        let mut prev = 0.0;
        for i in 0..n {
            let u = i as f64 / n as f64;
            let f = f0 * (1.0 + (glide - 1.0) * u);
            phase += 2.0 * PI * f / RATE as f64;
            // sin(k phase) for k = 1.. by Chebyshev's recurrence
            let (s1v, c) = (phase.sin(), phase.cos());
            let (mut a, mut b) = (0.0, s1v);
            let mut v = 0.0;
            for g in &gains {
                v += g * b;
                let next = 2.0 * c * b - a;
                a = b;
                b = next;
            }
            let env = (PI * u).sin().powi(2);
            let mut y = 0.25 * v * env;
            if i < burst {
                // a consonant: high-passed noise
                let w = self.noise();
                y += 0.35 * (w - prev) * (1.0 - i as f64 / burst as f64);
                prev = w;
            }
            self.x[s0 + i] += (level * y) as f32;
        }
    }

    /// A phrase of speech from `t0` to `t1`: syllables at `rate` per second
    /// around pitch `f0`, the pitch drifting by `spread`.
    fn phrase(&mut self, t0: f64, t1: f64, f0: f64, rate: f64, spread: f64, level: f64) {
        let mut t = t0;
        while t < t1 {
            let d = (1.0 / rate) * (0.7 + 0.6 * self.rng.f64());
            let end = (t + d).min(t1);
            let f = f0 * (1.0 + spread * self.noise());
            let glide = 1.0 + spread * 0.8 * self.noise();
            let l = level * (0.8 + 0.4 * self.rng.f64());
            self.syllable(t, end, f, glide, l);
            t = end;
        }
    }

    /// Laughter: breathy "ha"s about five a second.
    fn laugh(&mut self, t0: f64, t1: f64, f0: f64, level: f64) {
        let mut t = t0;
        while t + 0.1 < t1 {
            let d = 0.16 + 0.06 * self.rng.f64();
            let (s0, s1) = (self.at(t), self.at((t + d * 0.7).min(t1)));
            let mut phase = 0.0;
            for i in s0..s1 {
                let u = (i - s0) as f64 / (s1 - s0).max(1) as f64;
                phase += 2.0 * PI * f0 * (1.1 - 0.2 * u) / RATE as f64;
                let voiced = phase.sin() + 0.5 * (2.0 * phase).sin() + 0.3 * (3.0 * phase).sin();
                let y = (0.5 * voiced + 0.6 * self.noise()) * (PI * u).sin();
                self.x[i] += (level * 0.3 * y) as f32;
            }
            t += d;
        }
    }

    /// Music: chords of three notes changing every couple of seconds, and
    /// a soft kick twice a second.
    fn music(&mut self, t0: f64, t1: f64, level: f64) {
        let mut t = t0;
        while t < t1 {
            let d = (1.5 + self.rng.f64()).min(t1 - t);
            let root = [0, 3, 5, 7, 10][self.rng.usize(0..5)] as f64;
            let notes = [root, root + 4.0, root + 7.0].map(|n| 196.0 * 2f64.powf(n / 12.0));
            let (s0, s1) = (self.at(t), self.at(t + d));
            for i in s0..s1 {
                let tt = i as f64 / RATE as f64;
                let u = (i - s0) as f64 / (s1 - s0).max(1) as f64;
                let fade = (u * 40.0).min(1.0) * ((1.0 - u) * 40.0).min(1.0);
                let mut v = 0.0;
                for f in notes {
                    for (h, w) in [(1.0, 1.0), (2.0, 0.5), (3.0, 0.3), (4.0, 0.15)] {
                        v += w * (2.0 * PI * f * h * tt).sin();
                    }
                }
                let beat = (tt - t0) % 0.5;
                let kick = (2.0 * PI * 55.0 * beat).sin() * (-beat * 18.0).exp();
                self.x[i] += (level * fade * (0.12 * v + 0.5 * kick)) as f32;
            }
            t += d;
        }
    }
}

/// Generates an episode of `seconds` (at least 60) from `seed`.
pub fn generate(name: &str, seconds: f64, seed: u64) -> Episode {
    let seconds = seconds.max(60.0);
    let mut s = Synth {
        x: vec![0f32; (seconds * RATE as f64) as usize],
        rng: fastrand::Rng::with_seed(seed),
    };
    let hl_len = 30.0 + 10.0 * s.rng.f64();
    let hl_start = 8.0 + (seconds - hl_len - 16.0) * s.rng.f64();
    let hl = (hl_start, hl_start + hl_len);
    let hosts = [
        95.0 + 40.0 * s.rng.f64(),  // a lower voice
        165.0 + 40.0 * s.rng.f64(), // a higher one
    ];
    let levels = [0.6 + 0.5 * s.rng.f64(), 0.6 + 0.5 * s.rng.f64()];
    // the music bed: an intro, then sections that come and go
    let intro = 3.0 + 3.0 * s.rng.f64();
    s.music(0.0, intro, 0.9);
    let mut t = intro + 2.0 + 8.0 * s.rng.f64();
    while t < seconds {
        let len = 8.0 + 20.0 * s.rng.f64();
        s.music(t, (t + len).min(seconds), 0.2);
        t += len + 10.0 + 25.0 * s.rng.f64();
    }
    // stings: short loud music, away from the highlight
    for _ in 0..2 {
        let at = intro + (seconds - intro - 4.0) * s.rng.f64();
        if at + 4.0 < hl.0 - 2.0 || at > hl.1 + 2.0 {
            let len = 2.0 + 2.0 * s.rng.f64();
            s.music(at, at + len, 1.3);
        }
    }
    // the conversation, in phrases; the highlight's phrases are excited
    // and broken by laughter
    let mut t = intro + 0.3;
    let mut who = s.rng.usize(0..2);
    while t < seconds - 0.5 {
        let in_hl = t >= hl.0 && t < hl.1;
        let len = if in_hl {
            1.0 + 2.5 * s.rng.f64()
        } else {
            1.5 + 4.0 * s.rng.f64()
        };
        // phrases do not cross the highlight's edges
        let mut end = (t + len).min(seconds - 0.2);
        if !in_hl && t < hl.0 && end > hl.0 {
            end = hl.0;
        }
        if in_hl && end > hl.1 {
            end = hl.1;
        }
        if s.rng.f64() < 0.35 {
            who = 1 - who;
        }
        let f0 = hosts[who];
        if in_hl {
            let rate = 6.5 + 1.5 * s.rng.f64();
            s.phrase(t, end, f0 * 1.5, rate, 0.25, levels[who] * 1.1);
            if s.rng.f64() < 0.6 {
                let l = 0.5 + 1.0 * s.rng.f64();
                let e2 = (end + l).min(hl.1);
                s.laugh(end, e2, f0 * 1.8, levels[1 - who] * 1.2);
                end = e2;
            }
            t = end + 0.05 + 0.2 * s.rng.f64();
        } else {
            let rate = 3.0 + 2.0 * s.rng.f64();
            s.phrase(t, end, f0, rate, 0.08, levels[who]);
            t = end + 0.2 + 0.8 * s.rng.f64();
        }
        if t < hl.0 && t + 0.1 > hl.0 {
            t = hl.0;
        }
    }
    // a little room noise, and a peak below full scale
    for v in s.x.iter_mut() {
        *v += (0.002 * (s.rng.f64() * 2.0 - 1.0)) as f32;
    }
    let peak = s.x.iter().fold(0f32, |m, v| m.max(v.abs()));
    if peak > 0.9 {
        let k = 0.9 / peak;
        s.x.iter_mut().for_each(|v| *v *= k);
    }
    Episode {
        name: name.to_owned(),
        samples: s.x,
        highlight: hl,
    }
}

/// The name of episode `i` of a set.
pub fn episode_name(i: usize) -> String {
    format!("episode-{i:04}")
}

/// The seed of episode `i` of the set made from `seed`.
pub fn episode_seed(seed: u64, i: usize) -> u64 {
    seed.wrapping_mul(1_000_003).wrapping_add(i as u64)
}

/// The 1-second frames of an episode as the scorer sees them, with whether
/// each lies in the highlight (`Some(true)`), outside it (`Some(false)`)
/// or across an edge (`None`).
pub fn frames(mel: &MelSpectrogram, e: &Episode) -> Vec<(Vec<f32>, Option<bool>)> {
    let n = RATE as usize;
    e.samples
        .chunks(n)
        .enumerate()
        .map(|(i, c)| {
            let mut frame = c.to_vec();
            frame.resize(n, 0.0);
            let (s, t) = (i as f64, i as f64 + 1.0);
            let label = if s >= e.highlight.0 && t <= e.highlight.1 {
                Some(true)
            } else if t <= e.highlight.0 || s >= e.highlight.1 {
                Some(false)
            } else {
                None
            };
            (mel.compute(&frame).1, label)
        })
        .collect()
}

fn batch<B: Backend>(rows: &[&[f32]], device: &B::Device) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let p = mel_params();
    let t = rows[0].len() / p.n_mels;
    let data: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    let x = Tensor::<B, 3>::from_data(TensorData::new(data, [rows.len(), p.n_mels, t]), device);
    let mask = Tensor::<B, 3>::ones([rows.len(), 1, t], device);
    (x, mask)
}

/// What training did.
#[derive(Debug, Clone)]
pub struct Trained {
    pub model: Conv1dNet<Cpu>,
    /// Mean loss of the first and the last epoch.
    pub first_loss: f64,
    pub last_loss: f64,
    pub examples: usize,
}

/// Trains the scorer on the frames of `episodes` that lie wholly in or out
/// of their highlight (Adam, mini-batches of 32, the classes balanced by
/// repeating highlight frames).
pub fn train(episodes: &[Episode], epochs: usize, seed: u64) -> Trained {
    let mel = MelSpectrogram::new(mel_params()).expect("valid parameters");
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for e in episodes {
        for (x, l) in frames(&mel, e) {
            if let Some(l) = l {
                xs.push(x);
                ys.push(l as i64);
            }
        }
    }
    let pos: Vec<usize> = (0..ys.len()).filter(|i| ys[*i] == 1).collect();
    let neg = ys.len() - pos.len();
    let mut order: Vec<usize> = (0..ys.len()).collect();
    // balance: highlight frames again until the classes are about even
    let mut k = 0;
    while !pos.is_empty() && order.len() < 2 * neg {
        order.push(pos[k % pos.len()]);
        k += 1;
    }
    let device = Default::default();
    <Train as Backend>::seed(&device, seed);
    let Arch::Conv1d {
        channels,
        kernel_size,
        outputs,
    } = arch()
    else {
        unreachable!("the scorer is a Conv1d net")
    };
    let mut model = Conv1dNet::<Train>::new(&channels, kernel_size, outputs, &device);
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut first, mut last) = (0.0, 0.0);
    for epoch in 0..epochs {
        rng.shuffle(&mut order);
        let (mut sum, mut n) = (0.0, 0);
        let lr = if epoch + 2 >= epochs { 1e-3 } else { 3e-3 };
        for idx in order.chunks(32) {
            let rows: Vec<&[f32]> = idx.iter().map(|&i| xs[i].as_slice()).collect();
            let (x, mask) = batch::<Train>(&rows, &device);
            let y = Tensor::<Train, 1, Int>::from_data(
                TensorData::new(idx.iter().map(|&i| ys[i]).collect::<Vec<_>>(), [idx.len()]),
                &device,
            );
            let loss = loss_fn.forward(model.forward(x, mask), y);
            sum += loss.clone().into_scalar() as f64;
            n += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
        }
        let mean = sum / n.max(1) as f64;
        if epoch == 0 {
            first = mean;
        }
        last = mean;
    }
    Trained {
        model: model.valid(),
        first_loss: first,
        last_loss: last,
        examples: order.len(),
    }
}

/// The highlight probability of each 1-second frame of `e`.
pub fn scores(model: &Conv1dNet<Cpu>, e: &Episode) -> Vec<f32> {
    let mel = MelSpectrogram::new(mel_params()).expect("valid parameters");
    let fr = frames(&mel, e);
    let device = Default::default();
    let rows: Vec<&[f32]> = fr.iter().map(|(x, _)| x.as_slice()).collect();
    let (x, mask) = batch::<Cpu>(&rows, &device);
    let p = burn::tensor::activation::softmax(model.forward(x, mask), 1);
    let v: Vec<f32> = p.into_data().to_vec().expect("f32 probabilities");
    v.chunks(2).map(|c| c[1]).collect()
}

/// Saves the scorer as a model version folder (`model.mpk`, `model.json`).
pub fn save(model: Conv1dNet<Cpu>, dir: &Path) -> Result<(), String> {
    rill_ml::nets::save(Net::Conv1d(model), &arch(), dir)
}

/// How previews met their episodes' highlights.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overlap {
    pub episodes: usize,
    pub previews: usize,
    /// Previews sharing at least [`OVERLAP_SECONDS`] with the highlight.
    pub hits: usize,
    /// Episodes with no preview.
    pub missing: Vec<String>,
}

impl Overlap {
    pub fn rate(&self) -> f64 {
        self.hits as f64 / self.episodes.max(1) as f64
    }
}

/// Scores previews (`{episode, start, end}` per line of `previews`) against
/// the labels of the episodes in `labels` (`{episode, highlight_start,
/// highlight_end}`).
pub fn overlap(previews: &[serde_json::Value], labels: &[serde_json::Value]) -> Overlap {
    let mut o = Overlap {
        episodes: labels.len(),
        ..Overlap::default()
    };
    for l in labels {
        let name = l["episode"].as_str().unwrap_or_default();
        let (hs, he) = (
            l["highlight_start"].as_f64().unwrap_or(0.0),
            l["highlight_end"].as_f64().unwrap_or(0.0),
        );
        let mine: Vec<&serde_json::Value> = previews
            .iter()
            .filter(|p| p["episode"].as_str() == Some(name))
            .collect();
        if mine.is_empty() {
            o.missing.push(name.to_owned());
            continue;
        }
        o.previews += 1;
        let (s, e) = (
            mine[0]["start"].as_f64().unwrap_or(0.0),
            mine[0]["end"].as_f64().unwrap_or(0.0),
        );
        if (e.min(he) - s.max(hs)) >= OVERLAP_SECONDS {
            o.hits += 1;
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn episodes_are_repeatable_and_labelled() {
        let a = generate("a", 60.0, 7);
        let b = generate("a", 60.0, 7);
        let c = generate("a", 60.0, 8);
        assert_eq!(a.samples, b.samples);
        assert_ne!(a.samples, c.samples);
        assert_eq!(a.samples.len(), 60 * RATE as usize);
        let (s, e) = a.highlight;
        assert!(
            s >= 8.0 && e <= 52.0 && (30.0..=40.0).contains(&(e - s)),
            "{s}..{e}"
        );
        assert!(a.samples.iter().all(|v| v.abs() <= 0.9 + 1e-6));
        // not silent, in and out of the highlight
        let rms = |a: f64, b: f64| {
            let x = &c.samples[(a * 16e3) as usize..(b * 16e3) as usize];
            (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
        };
        assert!(rms(c.highlight.0, c.highlight.1) > 0.01);
        assert!(rms(0.0, c.highlight.0) > 0.01);
    }

    #[test]
    fn training_lowers_the_loss_and_saves_a_model_rill_loads() {
        // small (a debug build trains slowly: about 250 ms a frame); the
        // quality of a full training is floored by tests/previews.rs with
        // the committed model, made by the same code (`train`)
        let eps = vec![generate("t", 60.0, 5)];
        let t = train(&eps, 2, 5);
        assert!(
            t.last_loss < t.first_loss,
            "{} -> {}",
            t.first_loss,
            t.last_loss
        );
        let held = generate("held", 60.0, 31337);
        let before = scores(&t.model, &held);
        let dir = tempfile::tempdir().unwrap();
        save(t.model, dir.path()).unwrap();
        let files = rill_ml::nets::ModelFiles::find(dir.path(), None).unwrap();
        assert_eq!(files.arch, arch());
        let Net::Conv1d(loaded) = files.load::<Cpu>(&Default::default()).unwrap() else {
            panic!("not a Conv1d net")
        };
        assert_eq!(scores(&loaded, &held), before);
    }

    #[test]
    fn overlap_counts_half_a_preview_inside() {
        let labels = vec![
            serde_json::json!({"episode": "a", "highlight_start": 40.0, "highlight_end": 75.0}),
            serde_json::json!({"episode": "b", "highlight_start": 10.0, "highlight_end": 40.0}),
            serde_json::json!({"episode": "c", "highlight_start": 10.0, "highlight_end": 40.0}),
        ];
        let previews = vec![
            serde_json::json!({"episode": "a", "start": 55.0, "end": 85.0}), // 20 s in
            serde_json::json!({"episode": "b", "start": 30.0, "end": 60.0}), // 10 s in
        ];
        let o = overlap(&previews, &labels);
        assert_eq!((o.episodes, o.previews, o.hits), (3, 2, 1));
        assert_eq!(o.missing, vec!["c".to_owned()]);
    }
}
