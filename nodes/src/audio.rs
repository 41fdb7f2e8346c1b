//! Audio transforms: `LogMel` (a frame of samples to a log-mel
//! spectrogram, resampled first when asked) and `BestWindow` (the
//! best-scoring stretch of each key's sequence, fired when the sequence is
//! complete). `ReadFromWav` and `WriteToWav` are with the file nodes. See
//! `docs/audio.md`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};
use rill_core::node::{
    BuildContext, ConfigError, Emitter, Node, NodeConfig, NodeError, NodeKind, Transform,
};
use rill_core::state::KeyedState;
use rill_core::units::Dur;
use rill_core::value::{Tensor, TensorData};
use rill_core::{Record, Value};
use rill_expr::spec::{Compiled, ExprSpec, check_language};
use rubato::{FftFixedIn, Resampler};
use serde::Deserialize;

// ---------------------------------------------------------------------------
// The log-mel spectrogram

/// The parameters of a log-mel spectrogram.
#[derive(Debug, Clone, PartialEq)]
pub struct MelParams {
    pub sample_rate: u32,
    pub n_fft: usize,
    pub win_length: usize,
    pub hop_length: usize,
    pub n_mels: usize,
    pub f_min: f64,
    pub f_max: f64,
    /// Added before the logarithm (`ln(mel + floor)`).
    pub floor: f64,
}

impl MelParams {
    /// Checks the parameters make a filterbank.
    pub fn check(&self) -> Result<(), String> {
        if self.n_fft < 16 || self.n_fft > 65536 {
            return Err(format!("n_fft {} is not between 16 and 65536", self.n_fft));
        }
        if self.win_length == 0 || self.win_length > self.n_fft {
            return Err(format!(
                "win_length {} must be between 1 and n_fft ({})",
                self.win_length, self.n_fft
            ));
        }
        if self.hop_length == 0 {
            return Err("hop_length must be at least 1".into());
        }
        if self.n_mels == 0 || self.n_mels > self.n_fft / 2 {
            return Err(format!(
                "n_mels {} must be between 1 and n_fft / 2 ({})",
                self.n_mels,
                self.n_fft / 2
            ));
        }
        let nyquist = self.sample_rate as f64 / 2.0;
        if !(self.f_min >= 0.0 && self.f_min < self.f_max && self.f_max <= nyquist) {
            return Err(format!(
                "the band [{}, {}] Hz must lie within [0, {nyquist}] Hz (half the sample rate)",
                self.f_min, self.f_max
            ));
        }
        if self.floor.is_nan() || self.floor <= 0.0 {
            return Err("floor must be above 0 (the logarithm of 0 is -inf)".into());
        }
        Ok(())
    }
}

fn hz_to_mel(f: f64) -> f64 {
    2595.0 * (1.0 + f / 700.0).log10()
}

fn mel_to_hz(m: f64) -> f64 {
    700.0 * (10f64.powf(m / 2595.0) - 1.0)
}

/// A log-mel spectrogram maker: the window, the filterbank and the FFT plan,
/// made once.
pub struct MelSpectrogram {
    p: MelParams,
    window: Vec<f32>,
    /// Per mel band: the first FFT bin it weighs and the weights.
    bank: Vec<(usize, Vec<f32>)>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl MelSpectrogram {
    pub fn new(p: MelParams) -> Result<MelSpectrogram, String> {
        p.check()?;
        // a periodic Hann window, centred in the FFT's length
        let w = p.win_length;
        let pad = (p.n_fft - w) / 2;
        let mut window = vec![0f32; p.n_fft];
        for i in 0..w {
            window[pad + i] =
                (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / w as f64).cos()) as f32;
        }
        // triangular filters evenly spaced on the mel scale (HTK's formula)
        let bins = p.n_fft / 2 + 1;
        let (lo, hi) = (hz_to_mel(p.f_min), hz_to_mel(p.f_max));
        let edges: Vec<f64> = (0..p.n_mels + 2)
            .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (p.n_mels + 1) as f64))
            .collect();
        let bin_hz = p.sample_rate as f64 / p.n_fft as f64;
        let mut bank = Vec::with_capacity(p.n_mels);
        for m in 0..p.n_mels {
            let (l, c, r) = (edges[m], edges[m + 1], edges[m + 2]);
            let mut first = None;
            let mut weights = Vec::new();
            for b in 0..bins {
                let f = b as f64 * bin_hz;
                let wgt = if f > l && f <= c {
                    (f - l) / (c - l)
                } else if f > c && f < r {
                    (r - f) / (r - c)
                } else {
                    0.0
                };
                if wgt > 0.0 {
                    first.get_or_insert(b);
                    weights.push(wgt as f32);
                } else if first.is_some() {
                    break;
                }
            }
            // a band narrower than one bin takes the bin nearest its centre
            let first = first.unwrap_or_else(|| {
                weights.push(1.0);
                ((c / bin_hz).round() as usize).min(bins - 1)
            });
            bank.push((first, weights));
        }
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(p.n_fft);
        Ok(MelSpectrogram {
            p,
            window,
            bank,
            fft,
        })
    }

    pub fn params(&self) -> &MelParams {
        &self.p
    }

    /// The number of spectrogram frames of `len` samples (no centring: the
    /// first frame starts at sample 0; shorter input is one padded frame).
    pub fn frames(&self, len: usize) -> usize {
        if len <= self.p.n_fft {
            1
        } else {
            1 + (len - self.p.n_fft) / self.p.hop_length
        }
    }

    /// The log-mel spectrogram of `x`: `[n_mels, frames]`, row-major.
    pub fn compute(&self, x: &[f32]) -> (usize, Vec<f32>) {
        let n = self.p.n_fft;
        let t = self.frames(x.len());
        let mut out = vec![0f32; self.p.n_mels * t];
        let mut input = self.fft.make_input_vec();
        let mut spec = self.fft.make_output_vec();
        let mut power = vec![0f32; spec.len()];
        for f in 0..t {
            let s = f * self.p.hop_length;
            for (i, (v, w)) in input.iter_mut().zip(&self.window).enumerate().take(n) {
                *v = x.get(s + i).copied().unwrap_or(0.0) * w;
            }
            // the lengths match the plan, so it cannot fail
            let _ = self.fft.process(&mut input, &mut spec);
            for (p, c) in power.iter_mut().zip(&spec) {
                *p = c.norm_sqr();
            }
            for (m, (first, w)) in self.bank.iter().enumerate() {
                let e: f32 = w.iter().zip(&power[*first..]).map(|(a, b)| a * b).sum();
                out[m * t + f] = (e as f64 + self.p.floor).ln() as f32;
            }
        }
        (t, out)
    }
}

/// Resamples mono `x` from `from` Hz to `to` Hz (band-limited, by FFT);
/// the result has `round(len * to / from)` samples.
pub fn resample(x: &[f32], from: u32, to: u32) -> Result<Vec<f32>, String> {
    if from == to {
        return Ok(x.to_vec());
    }
    let want = (x.len() as f64 * to as f64 / from as f64).round() as usize;
    let mut r = FftFixedIn::<f32>::new(from as usize, to as usize, 1024, 2, 1)
        .map_err(|e| format!("cannot resample from {from} Hz to {to} Hz: {e}"))?;
    let delay = r.output_delay();
    let mut out = Vec::with_capacity(want + delay + 2048);
    let mut pos = 0;
    let mut chunk = Vec::new();
    while out.len() < want + delay {
        let need = r.input_frames_next();
        chunk.clear();
        chunk.extend((pos..pos + need).map(|i| x.get(i).copied().unwrap_or(0.0)));
        pos += need;
        let y = r
            .process(&[&chunk], None)
            .map_err(|e| format!("resampling failed: {e}"))?;
        out.extend_from_slice(&y[0]);
    }
    Ok(out[delay..delay + want].to_vec())
}

fn d_input() -> String {
    "samples".into()
}
fn d_output() -> String {
    "mel".into()
}
fn d_n_fft() -> usize {
    512
}
fn d_hop() -> usize {
    160
}
fn d_mels() -> usize {
    40
}
fn d_floor() -> f64 {
    1e-6
}

/// `LogMel`: the log-mel spectrogram of each record's samples.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogMel {
    /// The field holding the samples (a tensor or a list of numbers).
    #[serde(default = "d_input")]
    pub input: String,
    /// The field the spectrogram goes to: a tensor `[n_mels, frames]`.
    #[serde(default = "d_output")]
    pub output: String,
    /// Resample to this rate first (the record's `sample_rate` field says
    /// what it has; default: keep it).
    pub sample_rate: Option<u32>,
    #[serde(default = "d_n_fft")]
    pub n_fft: usize,
    /// The analysis window's length (default: `n_fft`).
    pub win_length: Option<usize>,
    #[serde(default = "d_hop")]
    pub hop_length: usize,
    #[serde(default = "d_mels")]
    pub n_mels: usize,
    #[serde(default)]
    pub f_min: f64,
    /// Default: half the sample rate.
    pub f_max: Option<f64>,
    #[serde(default = "d_floor")]
    pub floor: f64,
    /// Keep the samples in the record (default: they are dropped, the
    /// spectrogram replaces them).
    #[serde(default)]
    pub keep_input: bool,
}

impl LogMel {
    /// The parameters for audio at `rate` Hz.
    pub fn params(&self, rate: u32) -> MelParams {
        MelParams {
            sample_rate: rate,
            n_fft: self.n_fft,
            win_length: self.win_length.unwrap_or(self.n_fft),
            hop_length: self.hop_length,
            n_mels: self.n_mels,
            f_min: self.f_min,
            f_max: self.f_max.unwrap_or(rate as f64 / 2.0),
            floor: self.floor,
        }
    }
}

impl NodeConfig for LogMel {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(r) = self.sample_rate {
            if !(1000..=384_000).contains(&r) {
                return Err(ConfigError::at(
                    "sample_rate",
                    format!("{r} Hz is not between 1000 and 384000"),
                ));
            }
            self.params(r).check().map_err(ConfigError::whole)?;
        } else {
            // the rate is the record's: check what does not depend on it
            let mut p = self.params(48_000);
            p.f_max = p.f_max.min(24_000.0);
            p.check().map_err(ConfigError::whole)?;
        }
        Ok(())
    }
    fn build(&self, _ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        Ok(Node::Transform(Box::new(LogMelNode {
            input: self.input.clone(),
            output: self.output.clone(),
            target: self.sample_rate,
            keep: self.keep_input,
            config: self.clone(),
            made: HashMap::new(),
        })))
    }
}

struct LogMelNode {
    input: String,
    output: String,
    target: Option<u32>,
    keep: bool,
    config: LogMel,
    /// One spectrogram maker per sample rate seen.
    made: HashMap<u32, MelSpectrogram>,
}

/// The samples of a field: borrowed when they are f32 already (a frame
/// from `ReadFromWav`), converted otherwise.
fn samples_of(v: &Value) -> Result<Cow<'_, [f32]>, String> {
    match v {
        Value::Tensor(t) => match t.data() {
            TensorData::F32(d) => Ok(Cow::Borrowed(d)),
            TensorData::F64(d) => Ok(d.iter().map(|x| *x as f32).collect()),
            TensorData::I64(d) => Ok(d.iter().map(|x| *x as f32).collect()),
            TensorData::U8(_) => Err("samples must be numbers, found a byte tensor".into()),
        },
        Value::List(l) => l
            .iter()
            .map(|x| match x {
                Value::Float(f) => Ok(*f as f32),
                Value::Int(i) => Ok(*i as f32),
                o => Err(format!(
                    "samples must be numbers, found a {}",
                    o.type_name()
                )),
            })
            .collect(),
        o => Err(format!(
            "samples must be a tensor or a list of numbers, found a {}",
            o.type_name()
        )),
    }
}

impl LogMelNode {
    fn one(&mut self, r: &mut Record) -> Result<(), String> {
        let x = match r.get(&self.input) {
            Some(v) => samples_of(v)?,
            None => return Err(format!("the record has no field `{}`", self.input)),
        };
        let have = match r.get("sample_rate") {
            Some(Value::Int(i)) if *i > 0 && *i <= 768_000 => Some(*i as u32),
            Some(o) => {
                return Err(format!(
                    "`sample_rate` must be a positive int of Hz, found {o}"
                ));
            }
            None => None,
        };
        let rate = self.target.or(have).ok_or(
            "the record has no `sample_rate` field and the config sets none (`sample_rate:`)",
        )?;
        let x = match have {
            Some(h) if h != rate => Cow::Owned(resample(&x, h, rate)?),
            _ => x,
        };
        if !self.made.contains_key(&rate) {
            let m = MelSpectrogram::new(self.config.params(rate))
                .map_err(|e| format!("at {rate} Hz: {e}"))?;
            self.made.insert(rate, m);
        }
        let m = &self.made[&rate];
        let (t, data) = m.compute(&x);
        let mel = Tensor::new(vec![m.params().n_mels, t], TensorData::F32(data))
            .map_err(|e| e.to_string())?;
        if !self.keep {
            r.fields.shift_remove(self.input.as_str());
        }
        r.fields
            .insert(self.output.as_str().into(), Value::Tensor(Box::new(mel)));
        if have.is_some() || self.target.is_some() {
            r.fields
                .insert("sample_rate".into(), Value::Int(rate as i64));
        }
        Ok(())
    }
}

impl Transform for LogMelNode {
    fn process(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        for mut r in batch {
            match self.one(&mut r) {
                Ok(()) => out.emit(r),
                Err(e) => out.fail(r, e),
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The best window of each key

fn d_score() -> ExprSpec {
    ExprSpec::Text("score".into())
}
fn d_count() -> String {
    "frames".into()
}
fn d_index() -> String {
    "frame".into()
}
fn d_start() -> String {
    "start".into()
}
fn d_end() -> String {
    "end".into()
}

/// `BestWindow`: for each key, the stretch of `length` seconds whose
/// records score highest on average, emitted once every record of the
/// key's sequence has come (as many as its `count` field says, told apart
/// by their `index` field), in whatever order they come.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BestWindow {
    /// The record's score: a field name, an expression or a callable.
    #[serde(default = "d_score")]
    pub score: ExprSpec,
    pub language: Option<String>,
    /// The window's length (`30s`); a sequence shorter than it is one
    /// window.
    pub length: Dur,
    /// The field with the number of records in the key's sequence.
    #[serde(default = "d_count")]
    pub count: String,
    /// The field with the record's index in it (0-based).
    #[serde(default = "d_index")]
    pub index: String,
    /// The fields with each record's start and end, in seconds.
    #[serde(default = "d_start")]
    pub start: String,
    #[serde(default = "d_end")]
    pub end: String,
    /// Fields copied from the sequence's last record to the output
    /// (`[file, model_id]`).
    #[serde(default)]
    pub keep: Vec<String>,
}

impl NodeConfig for BestWindow {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }
    fn validate(&self) -> Result<(), ConfigError> {
        check_language(&self.language)?;
        self.score.check("score")?;
        if self.length.0.is_zero() {
            return Err(ConfigError::at(
                "length",
                "the window must be longer than 0s",
            ));
        }
        Ok(())
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let score = self
            .score
            .compile("score", ctx.base_dir)
            .map_err(NodeError::Failed)?;
        // what the last commit holds: the records seen of each open key
        let mut open: HashMap<String, Seq> = HashMap::new();
        for (k, v) in ctx.state.scan(b"s/")? {
            let Some((key, index)) = split_key(&k) else {
                continue;
            };
            let e: Entry = postcard::from_bytes(&v)
                .map_err(|e| NodeError::failed(format!("a committed entry is damaged: {e}")))?;
            open.entry(key).or_default().items.insert(index, e);
        }
        Ok(Node::Transform(Box::new(BestWindowNode {
            score,
            length: self.length.0.as_secs_f64(),
            count: self.count.clone(),
            index: self.index.clone(),
            start: self.start.clone(),
            end: self.end.clone(),
            keep: self.keep.clone(),
            state: ctx.state.clone(),
            open,
        })))
    }
}

/// One record of a sequence, as kept.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Entry {
    start: f64,
    end: f64,
    score: f64,
    count: u64,
    /// The kept fields (last record's), encoded.
    kept: Vec<(String, Value)>,
}

#[derive(Debug, Default)]
struct Seq {
    items: BTreeMap<u64, Entry>,
}

fn state_key(key: &str, index: u64) -> Vec<u8> {
    let mut k = b"s/".to_vec();
    k.extend_from_slice(key.as_bytes());
    k.push(0);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

fn split_key(k: &[u8]) -> Option<(String, u64)> {
    let rest = k.strip_prefix(b"s/")?;
    let z = rest.len().checked_sub(9)?;
    if rest[z] != 0 {
        return None;
    }
    let key = String::from_utf8(rest[..z].to_vec()).ok()?;
    let index = u64::from_be_bytes(rest[z + 1..].try_into().ok()?);
    Some((key, index))
}

struct BestWindowNode {
    score: Compiled,
    length: f64,
    count: String,
    index: String,
    start: String,
    end: String,
    keep: Vec<String>,
    state: KeyedState,
    open: HashMap<String, Seq>,
}

fn num(r: &Record, f: &str) -> Result<f64, String> {
    match r.get(f) {
        Some(Value::Float(x)) if x.is_finite() => Ok(*x),
        Some(Value::Int(i)) => Ok(*i as f64),
        Some(o) => Err(format!("`{f}` must be a number, found {o}")),
        None => Err(format!("the record has no field `{f}`")),
    }
}

/// The best window over `items` (by start): `(first, last, mean score)`.
/// A window is the records whose span fits in `length`; among equal means
/// the earliest wins.
fn best(items: &[&Entry], length: f64) -> (usize, usize, f64) {
    let mut best = (0, 0, f64::NEG_INFINITY);
    let mut sum = 0.0;
    let mut lo = 0;
    for hi in 0..items.len() {
        sum += items[hi].score;
        while items[hi].end - items[lo].start > length + 1e-9 && lo < hi {
            sum -= items[lo].score;
            lo += 1;
        }
        // only windows as long as they can be (or the whole sequence, if
        // shorter) compete: a short stretch of high scores is no preview
        let full =
            items[hi].end - items[lo].start >= length - 1e-6 || (lo == 0 && hi + 1 == items.len());
        let mean = sum / (hi - lo + 1) as f64;
        if full && mean > best.2 {
            best = (lo, hi, mean);
        }
    }
    if best.2 == f64::NEG_INFINITY {
        // every window is cut short (records longer than the window)
        let (i, e) = items
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.score.total_cmp(&b.1.score))
            .map(|(i, e)| (i, e.score))
            .unwrap_or((0, 0.0));
        best = (i, i, e);
    }
    best
}

impl BestWindowNode {
    fn one(&mut self, r: &Record) -> Result<Option<Record>, String> {
        let key = r
            .key
            .as_ref()
            .map(|k| k.to_string())
            .ok_or("the record has no key: BestWindow finds a window per key")?;
        let score = match self.score.eval(r)? {
            Value::Float(f) if f.is_finite() => f,
            Value::Int(i) => i as f64,
            Value::Bool(b) => b as i64 as f64,
            other => return Err(format!("the score must be a number, found {other}")),
        };
        let count = num(r, &self.count)?;
        let index = num(r, &self.index)?;
        if count < 1.0
            || count.fract() != 0.0
            || index < 0.0
            || index >= count
            || index.fract() != 0.0
        {
            return Err(format!(
                "`{}` = {index} is not an index into a sequence of `{}` = {count} records",
                self.index, self.count
            ));
        }
        let (start, end) = (num(r, &self.start)?, num(r, &self.end)?);
        let kept = self
            .keep
            .iter()
            .filter_map(|f| r.get(f).map(|v| (f.clone(), v.clone())))
            .collect();
        let e = Entry {
            start,
            end,
            score,
            count: count as u64,
            kept,
        };
        let index = index as u64;
        self.state.put(
            &state_key(&key, index),
            postcard::to_allocvec(&e).map_err(|e| e.to_string())?,
        );
        let seq = self.open.entry(key.clone()).or_default();
        seq.items.insert(index, e);
        if (seq.items.len() as u64) < count as u64 {
            return Ok(None);
        }
        let seq = self.open.remove(&key).unwrap_or_default();
        for i in seq.items.keys() {
            self.state.delete(&state_key(&key, *i));
        }
        let mut items: Vec<&Entry> = seq.items.values().collect();
        items.sort_by(|a, b| a.start.total_cmp(&b.start));
        let (lo, hi, mean) = best(&items, self.length);
        let last = seq.items.values().next_back().expect("a complete sequence");
        let mut out = Record::default()
            .with_key(key.as_str())
            .with_time(r.event_time)
            .with("key", key.as_str());
        for (f, v) in &last.kept {
            out = out.with(f.as_str(), v.clone());
        }
        Ok(Some(
            out.with(self.start.as_str(), items[lo].start)
                .with(self.end.as_str(), items[hi].end)
                .with("score", mean)
                .with("records", (hi - lo + 1) as i64)
                .with(
                    "sequence_end",
                    items.iter().map(|e| e.end).fold(0.0, f64::max),
                ),
        ))
    }
}

impl Transform for BestWindowNode {
    fn process(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        for r in batch {
            match self.one(&r) {
                Ok(Some(w)) => out.emit(w),
                Ok(None) => {}
                Err(e) => out.fail(r, e),
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Emitter) -> Result<(), NodeError> {
        // sequences that never completed: say so, as dead letters
        let mut keys: Vec<String> = self.open.keys().cloned().collect();
        keys.sort();
        for key in keys {
            let seq = self.open.remove(&key).unwrap_or_default();
            let want = seq.items.values().next().map_or(0, |e| e.count);
            for i in seq.items.keys() {
                self.state.delete(&state_key(&key, *i));
            }
            let r = Record::default()
                .with_key(key.as_str())
                .with("key", key.as_str())
                .with("records", seq.items.len() as i64)
                .with(self.count.as_str(), want as i64);
            out.fail(
                r,
                format!(
                    "`{key}`: the input ended with {} of its {want} records: no window",
                    seq.items.len()
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(rate: u32) -> MelParams {
        MelParams {
            sample_rate: rate,
            n_fft: 512,
            win_length: 400,
            hop_length: 160,
            n_mels: 40,
            f_min: 0.0,
            f_max: rate as f64 / 2.0,
            floor: 1e-6,
        }
    }

    fn sine(hz: f64, rate: u32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (2.0 * std::f64::consts::PI * hz * i as f64 / rate as f64).sin() as f32 * 0.5)
            .collect()
    }

    fn loudest_band(m: &MelSpectrogram, x: &[f32]) -> usize {
        let (t, d) = m.compute(x);
        (0..m.params().n_mels)
            .max_by(|a, b| {
                let s = |m: usize| d[m * t..(m + 1) * t].iter().sum::<f32>();
                s(*a).total_cmp(&s(*b))
            })
            .unwrap()
    }

    #[test]
    fn a_tone_lands_in_the_band_of_its_frequency() {
        let m = MelSpectrogram::new(params(16_000)).unwrap();
        assert_eq!(m.frames(16_000), 1 + (16_000 - 512) / 160);
        let mut last = 0;
        for hz in [200.0, 800.0, 2500.0, 6000.0] {
            let band = loudest_band(&m, &sine(hz, 16_000, 16_000));
            let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(8000.0));
            let expect = ((hz_to_mel(hz) - lo) / (hi - lo) * 41.0).round() as usize - 1;
            assert!(
                band.abs_diff(expect) <= 1,
                "{hz} Hz: band {band}, expected {expect}"
            );
            assert!(band > last || last == 0, "bands rise with frequency");
            last = band;
        }
        // silence is the floor everywhere
        let (_, d) = m.compute(&vec![0.0; 4000]);
        assert!(d.iter().all(|v| (*v - (1e-6f32).ln()).abs() < 1e-3));
    }

    #[test]
    fn resampling_keeps_the_tone_and_the_length() {
        let x = sine(440.0, 44_100, 44_100);
        let y = resample(&x, 44_100, 16_000).unwrap();
        assert_eq!(y.len(), 16_000);
        // the same tone at the new rate: compare with one made at 16 kHz
        let z = sine(440.0, 16_000, 16_000);
        let err: f32 = y[1000..15000]
            .iter()
            .zip(&z[1000..15000])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 0.02, "max error {err}");
    }

    #[test]
    fn the_best_window_is_the_highest_mean_of_full_length() {
        let e = |start: f64, score: f64| Entry {
            start,
            end: start + 1.0,
            score,
            count: 0,
            kept: vec![],
        };
        let mut items: Vec<Entry> = (0..100).map(|i| e(i as f64, 0.1)).collect();
        for it in items.iter_mut().take(70).skip(40) {
            it.score = 0.9;
        }
        // a short burst scores higher than the highlight but is no window
        items[5].score = 5.0;
        let refs: Vec<&Entry> = items.iter().collect();
        let (lo, hi, mean) = best(&refs, 30.0);
        assert_eq!((refs[lo].start, refs[hi].end), (40.0, 70.0));
        assert!((mean - 0.9).abs() < 1e-9);
        // a sequence shorter than the window is one window
        let (lo, hi, _) = best(&refs[..10], 30.0);
        assert_eq!((lo, hi), (0, 9));
    }

    #[test]
    fn state_keys_split_back() {
        let k = state_key("ep-1", 77);
        assert_eq!(split_key(&k), Some(("ep-1".to_owned(), 77)));
        assert_eq!(split_key(b"s/x"), None);
    }
}
