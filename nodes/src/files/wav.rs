//! `ReadFromWav` and `WriteToWav`: audio as a stream of frames, and
//! segments of it back to files. See `docs/audio.md`.
//!
//! A WAV file is an *episode*: `ReadFromWav` cuts it into frames of a set
//! length and hop (the last one padded with silence), each a record keyed
//! by the episode with its samples as a tensor (mono: channels are
//! averaged) and its position in the episode as its event time. The
//! source resumes by frame: a restarted source goes on from the first
//! frame not committed, in the file it was in. A file that is not a WAV
//! file, holds a format rill does not decode, or is shorter than its header
//! says (a truncated copy) is one dead letter naming it, and no frames.
//!
//! `WriteToWav` writes one WAV file per record: a segment `[start, end)` of
//! the record's source file (or the samples the record holds), to a path
//! made from the record's fields. Each file is written aside, synced and
//! renamed into place, so a reader never sees half a preview; a record
//! replayed after a crash writes the same bytes to the same name, so each
//! segment exists once (exactly once by idempotence).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hound::{SampleFormat, WavSpec};

use rill_core::node::{
    BuildContext, ConfigError, Emitter, Node, NodeConfig, NodeError, NodeKind, Sink,
};
use rill_core::units::Dur;
use rill_core::value::{Tensor, TensorData};
use rill_core::{Fields, Record, Value};
use serde::Deserialize;

use super::Rows;
use super::growing::Growing;
use super::position::FilePos;
use super::readers::{FileReader, Stamp, Step};
use super::set::{FileOpts, FileSource, Opener};

fn one_second() -> Dur {
    Dur(Duration::from_secs(1))
}

/// `ReadFromWav`: WAV files (one file or a glob, optionally watched) as
/// frames of `frame` seconds every `hop` seconds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadFromWav {
    /// A file or a glob (`episodes/*.wav`).
    pub path: PathBuf,
    /// The length of a frame (`1s`, `500ms`).
    #[serde(default = "one_second")]
    pub frame: Dur,
    /// How far apart frames start (default: `frame`, no overlap).
    pub hop: Option<Dur>,
    /// Look for new files matching the glob this often (`1s`); a file is
    /// read once it has not changed for a second.
    pub watch: Option<Dur>,
}

impl ReadFromWav {
    fn opts(&self) -> FileOpts {
        FileOpts {
            path: self.path.clone(),
            key: None,
            event_time: None,
            filename_column: None,
            follow: false,
            watch: self.watch.map(|d| d.0),
        }
    }
    fn hop(&self) -> Duration {
        self.hop.map_or(self.frame.0, |h| h.0)
    }
}

impl NodeConfig for ReadFromWav {
    fn kind(&self) -> NodeKind {
        NodeKind::Source
    }
    fn validate(&self) -> Result<(), ConfigError> {
        self.opts().validate()?;
        if self.frame.0 < Duration::from_millis(1) || self.frame.0 > Duration::from_secs(600) {
            return Err(ConfigError::at(
                "frame",
                "a frame is between 1ms and 10 minutes long",
            ));
        }
        let hop = self.hop();
        if hop < Duration::from_millis(1) || hop > self.frame.0 {
            return Err(ConfigError::at(
                "hop",
                format!(
                    "the hop must be at least 1ms and at most the frame ({:?}): frames may overlap, not leave gaps",
                    self.frame.0
                ),
            ));
        }
        Ok(())
    }
    fn unbounded(&self) -> bool {
        self.opts().unbounded()
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let (frame, hop) = (self.frame.0.as_secs_f64(), self.hop().as_secs_f64());
        let open: Opener = Box::new(move |path: &Path, name: &str, input: Growing, _: Stamp| {
            Ok(Box::new(WavReader::new(path, name, input, frame, hop)) as Box<dyn FileReader>)
        });
        let src = FileSource::build(ctx, &self.opts(), Rows::Lines, open)?;
        Ok(Node::Source(Box::new(src)))
    }
}

/// Where the samples of an open file are and how they are stored.
#[derive(Debug, Clone)]
struct Layout {
    data_start: u64,
    /// Bytes of one sample of every channel.
    block: usize,
    channels: usize,
    bytes: usize,
    float: bool,
    rate: u32,
    /// Samples per channel.
    len: u64,
    frame: usize,
    hop: usize,
    frames: u64,
}

/// The parts of a WAV header the reader needs.
struct Header {
    channels: u16,
    rate: u32,
    bits: u16,
    /// Bytes of one sample of every channel.
    block_align: u16,
    float: bool,
    data_start: u64,
    data_len: u64,
}

/// Walks the RIFF chunks of a WAV file up to its `data` chunk.
fn header(r: &mut impl Read) -> Result<Header, String> {
    let mut head = [0u8; 12];
    r.read_exact(&mut head)
        .map_err(|_| "not a WAV file (shorter than a RIFF header)".to_owned())?;
    if &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return Err("not a WAV file (no RIFF/WAVE header)".into());
    }
    let mut at = 12u64;
    let mut fmt: Option<(u16, u16, u32, u16, u16)> = None;
    loop {
        let mut ch = [0u8; 8];
        r.read_exact(&mut ch)
            .map_err(|_| "truncated: the file ends before its `data` chunk".to_owned())?;
        at += 8;
        let len = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]) as u64;
        match &ch[0..4] {
            b"fmt " => {
                if len < 16 {
                    return Err(format!("its `fmt ` chunk is {len} bytes, less than 16"));
                }
                let mut f = vec![0u8; len as usize];
                r.read_exact(&mut f)
                    .map_err(|_| "truncated: the file ends in its `fmt ` chunk".to_owned())?;
                let u16_at = |i: usize| u16::from_le_bytes([f[i], f[i + 1]]);
                let mut tag = u16_at(0);
                // WAVE_FORMAT_EXTENSIBLE: the real format is the first two
                // bytes of the sub-format GUID
                if tag == 0xFFFE && len >= 26 {
                    tag = u16_at(24);
                }
                let rate = u32::from_le_bytes([f[4], f[5], f[6], f[7]]);
                fmt = Some((tag, u16_at(2), rate, u16_at(12), u16_at(14)));
                at += len;
                if len % 2 == 1 {
                    r.read_exact(&mut [0u8; 1]).map_err(|e| e.to_string())?;
                    at += 1;
                }
            }
            b"data" => {
                let Some((tag, channels, rate, block_align, bits)) = fmt else {
                    return Err("its `data` chunk comes before its `fmt ` chunk".into());
                };
                return Ok(Header {
                    channels,
                    rate,
                    bits,
                    block_align,
                    float: match tag {
                        1 => false,
                        3 => true,
                        t => {
                            return Err(format!(
                                "a format rill does not decode (format tag {t:#06x}; rill reads integer and float PCM)"
                            ));
                        }
                    },
                    data_start: at,
                    data_len: len,
                });
            }
            _ => {
                // another chunk (LIST, fact, ...): passed over
                let skip = len + len % 2;
                let got = std::io::copy(&mut r.take(skip), &mut std::io::sink())
                    .map_err(|e| e.to_string())?;
                if got < skip {
                    return Err("truncated: the file ends before its `data` chunk".into());
                }
                at += skip;
            }
        }
    }
}

/// Reads the header of a WAV file: where its samples are, and checks the
/// file holds all of them.
fn layout(input: &mut Growing, frame_s: f64, hop_s: f64) -> Result<Layout, String> {
    let file_len = input.file().metadata().map_err(|e| e.to_string())?.len();
    input.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let h = header(&mut BufReader::new(&mut *input))?;
    let (channels, sample_rate, float) = (h.channels, h.rate, h.float);
    let bytes = h.block_align.checked_div(h.channels).unwrap_or(0) as usize;
    let known = match (float, bytes, h.bits) {
        (true, 4, 32) => true,
        (false, 1..=4, b) => b > 0 && b as usize <= bytes * 8,
        _ => false,
    };
    // a hostile header must not make a frame of gigabytes
    if channels > 64 || sample_rate > 768_000 {
        return Err(format!(
            "{channels} channels at {sample_rate} Hz: rill reads up to 64 channels at up to 768000 Hz"
        ));
    }
    if !known
        || channels == 0
        || sample_rate == 0
        || h.block_align as usize != bytes * channels as usize
    {
        return Err(format!(
            "a format rill does not decode ({channels} channels at {sample_rate} Hz, {}-bit {}, {}-byte blocks; rill reads 8/16/24/32-bit integer and 32-bit float PCM)",
            h.bits,
            if float { "float" } else { "integer" },
            h.block_align
        ));
    }
    let data_start = h.data_start;
    // a header written before the length was known (streamed WAV) says
    // 0 or 0xFFFFFFFF: the samples then run to the end of the file
    let declared = if h.data_len == 0 || h.data_len == u32::MAX as u64 {
        let whole = file_len.saturating_sub(data_start);
        whole - whole % (h.block_align as u64)
    } else {
        h.data_len
    };
    let block = bytes * channels as usize;
    if data_start + declared > file_len {
        return Err(format!(
            "truncated: its header declares {declared} bytes of samples, the file holds {} (a copy that did not finish?)",
            file_len.saturating_sub(data_start)
        ));
    }
    if declared % block as u64 != 0 {
        return Err(format!(
            "truncated: {declared} bytes of samples are not a whole number of {block}-byte samples"
        ));
    }
    let len = declared / block as u64;
    let frame = ((frame_s * sample_rate as f64).round() as usize).max(1);
    let hop = ((hop_s * sample_rate as f64).round() as usize).clamp(1, frame);
    let frames = if len <= frame as u64 {
        1
    } else {
        1 + (len - frame as u64).div_ceil(hop as u64)
    };
    Ok(Layout {
        data_start,
        block,
        channels: channels as usize,
        bytes,
        float,
        rate: sample_rate,
        len,
        frame,
        hop,
        frames,
    })
}

/// One stored sample as a float in [-1, 1).
fn sample(b: &[u8], float: bool) -> f32 {
    match (float, b.len()) {
        (true, _) => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        (false, 1) => (b[0] as f32 - 128.0) / 128.0,
        (false, 2) => i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0,
        (false, 3) => (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32 / 8_388_608.0,
        _ => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 / 2_147_483_648.0,
    }
}

/// The episode a file holds: its name without the extension.
fn episode_of(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Reads one WAV file frame by frame.
struct WavReader {
    name: String,
    episode: String,
    input: Growing,
    frame_s: f64,
    hop_s: f64,
    layout: Option<Layout>,
    /// Frames of this file made so far (a failed file: 1).
    made: u64,
    ended: bool,
    buf: Vec<u8>,
}

impl WavReader {
    fn new(path: &Path, name: &str, input: Growing, frame_s: f64, hop_s: f64) -> WavReader {
        WavReader {
            name: name.to_owned(),
            episode: episode_of(path),
            input,
            frame_s,
            hop_s,
            layout: None,
            made: 0,
            ended: false,
            buf: Vec::new(),
        }
    }

    fn frame(&mut self, l: &Layout, i: u64) -> Result<Record, String> {
        let first = i * l.hop as u64;
        let n = (l.len - first.min(l.len)).min(l.frame as u64) as usize;
        self.input
            .seek(SeekFrom::Start(l.data_start + first * l.block as u64))
            .map_err(|e| e.to_string())?;
        self.buf.resize(n * l.block, 0);
        self.input
            .read_exact(&mut self.buf)
            .map_err(|e| format!("cannot read frame {i}: {e}"))?;
        let mut mono = vec![0f32; l.frame];
        let scale = 1.0 / l.channels as f32;
        for (s, out) in self.buf.chunks_exact(l.block).zip(mono.iter_mut()) {
            *out = s
                .chunks_exact(l.bytes)
                .map(|b| sample(b, l.float))
                .sum::<f32>()
                * scale;
        }
        let rate = l.rate as f64;
        let start = first as f64 / rate;
        let end = (first + n as u64) as f64 / rate;
        let samples =
            Tensor::new(vec![l.frame], TensorData::F32(mono)).map_err(|e| e.to_string())?;
        Ok(Record::default()
            .with_key(self.episode.as_str())
            .with_time((start * 1000.0).round() as i64)
            .with("episode", self.episode.as_str())
            .with("file", self.name.as_str())
            .with("sample_rate", l.rate as i64)
            .with("frame", i as i64)
            .with("frames", l.frames as i64)
            .with("offset", first as i64)
            .with("start", start)
            .with("end", end)
            .with("duration", l.len as f64 / rate)
            .with("samples", samples))
    }

    fn bad_file(&self) -> Record {
        let mut f = Fields::default();
        f.insert("file".into(), Value::String(self.name.as_str().into()));
        f.insert(
            "episode".into(),
            Value::String(self.episode.as_str().into()),
        );
        Record::new(f).with_key(self.episode.as_str())
    }
}

impl FileReader for WavReader {
    fn read(&mut self, max: usize, out: &mut Emitter) -> Result<Step, NodeError> {
        if self.ended {
            return Ok(Step { made: 0, end: true });
        }
        let l = match &self.layout {
            Some(l) => l.clone(),
            None => match layout(&mut self.input, self.frame_s, self.hop_s) {
                Ok(l) => {
                    self.layout = Some(l.clone());
                    l
                }
                Err(e) => {
                    self.ended = true;
                    if self.made > 0 {
                        // failed before the restart: its dead letter is out
                        return Ok(Step { made: 0, end: true });
                    }
                    self.made = 1;
                    let msg = format!("{}: {e}", self.name);
                    out.fail(self.bad_file(), msg);
                    return Ok(Step { made: 1, end: true });
                }
            },
        };
        let mut n = 0;
        while n < max && self.made < l.frames {
            let i = self.made;
            match self.frame(&l, i) {
                Ok(r) => out.emit(r),
                Err(e) => {
                    // the file changed under the reader (it was checked
                    // whole at open): the rest of it is one dead letter
                    self.ended = true;
                    self.made = l.frames;
                    let msg = format!("{}: {e}", self.name);
                    out.fail(self.bad_file().with("frame", i as i64), msg);
                    return Ok(Step {
                        made: n + 1,
                        end: true,
                    });
                }
            }
            self.made += 1;
            n += 1;
        }
        let end = self.made >= l.frames;
        self.ended = end;
        Ok(Step { made: n, end })
    }

    fn position(&self, records: u64, _prev: &FilePos) -> Result<FilePos, NodeError> {
        FilePos::whole(self.input.file(), self.made, records)
            .map_err(|e| NodeError::failed(format!("{}: cannot fingerprint: {e}", self.name)))
    }

    fn check(&mut self, pos: &FilePos, path: &Path) -> Result<(), NodeError> {
        pos.check_whole(self.input.file(), path)
    }

    fn goto(&mut self, pos: &FilePos) -> Result<(), NodeError> {
        self.made = pos.offset;
        self.layout = None;
        self.ended = false;
        Ok(())
    }

    fn input(&mut self) -> &mut Growing {
        &mut self.input
    }
}

// ---------------------------------------------------------------------------

fn field_file() -> String {
    "file".into()
}
fn field_start() -> String {
    "start".into()
}
fn field_end() -> String {
    "end".into()
}

/// `WriteToWav`: one WAV file per record, at a path made from its fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteToWav {
    /// The file to write, with `{field}` placeholders:
    /// `previews/{episode}.wav`.
    pub path: String,
    /// The field naming the WAV file the segment is cut from.
    #[serde(default = "field_file")]
    pub file: String,
    /// The fields holding the segment's start and end, in seconds.
    #[serde(default = "field_start")]
    pub start: String,
    #[serde(default = "field_end")]
    pub end: String,
    /// A field holding the samples themselves (a tensor or a list of
    /// numbers in [-1, 1], mono) instead of a source file; the rate is then
    /// the record's `sample_rate`. Written as 16-bit PCM.
    pub samples: Option<String>,
}

/// A path template: literal parts and field names.
#[derive(Debug, Clone)]
enum Part {
    Lit(String),
    Field(String),
}

fn template(s: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        if i > 0 {
            parts.push(Part::Lit(rest[..i].to_owned()));
        }
        let Some(j) = rest[i..].find('}') else {
            return Err(format!("`{s}`: a `{{` without its `}}`"));
        };
        let name = &rest[i + 1..i + j];
        if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Err(format!("`{s}`: `{{{name}}}` is not a field name"));
        }
        parts.push(Part::Field(name.to_owned()));
        rest = &rest[i + j + 1..];
    }
    if rest.contains('}') {
        return Err(format!("`{s}`: a `}}` without its `{{`"));
    }
    if !rest.is_empty() {
        parts.push(Part::Lit(rest.to_owned()));
    }
    if !parts.iter().any(|p| matches!(p, Part::Field(_))) {
        return Err(format!(
            "`{s}` names no field: every record would overwrite the same file (write `{{episode}}` or another field into it)"
        ));
    }
    Ok(parts)
}

impl NodeConfig for WriteToWav {
    fn kind(&self) -> NodeKind {
        NodeKind::Sink
    }
    fn validate(&self) -> Result<(), ConfigError> {
        template(&self.path).map_err(|e| ConfigError::at("path", e))?;
        Ok(())
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let parts = template(&self.path).map_err(NodeError::Failed)?;
        Ok(Node::Sink(Box::new(WavSink {
            parts,
            base: ctx.resolve(Path::new("")),
            file: self.file.clone(),
            start: self.start.clone(),
            end: self.end.clone(),
            samples: self.samples.clone(),
            dirs: BTreeSet::new(),
        })))
    }
}

struct WavSink {
    parts: Vec<Part>,
    base: PathBuf,
    file: String,
    start: String,
    end: String,
    samples: Option<String>,
    /// Directories that got a new file since the last checkpoint.
    dirs: BTreeSet<PathBuf>,
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.to_string()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(_) | Value::Bool(_) => Some(v.to_string()),
        _ => None,
    }
}

fn number(r: &Record, field: &str) -> Result<f64, String> {
    match r.get(field) {
        Some(Value::Float(f)) if f.is_finite() => Ok(*f),
        Some(Value::Int(i)) => Ok(*i as f64),
        Some(other) => Err(format!(
            "`{field}` must be a number of seconds, found a {}",
            other.type_name()
        )),
        None => Err(format!("the record has no field `{field}`")),
    }
}

impl WavSink {
    fn target(&self, r: &Record) -> Result<PathBuf, String> {
        let mut s = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(l) => s.push_str(l),
                Part::Field(f) => {
                    let v = r.get(f).and_then(text_of).ok_or_else(|| {
                        format!("the record has no text or number field `{f}` for the path")
                    })?;
                    if v.is_empty() || v == "." || v == ".." || v.contains(['/', '\\', '\0']) {
                        return Err(format!("`{f}` = {v:?} cannot be part of a file name"));
                    }
                    s.push_str(&v);
                }
            }
        }
        Ok(self.base.join(s))
    }

    fn write_one(&mut self, r: &Record) -> Result<(), String> {
        let target = self.target(r)?;
        let dir = target.parent().map(Path::to_owned).unwrap_or_default();
        rill_core::perms::create_shared_dirs(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = dir.join(format!(".{name}.part"));
        match &self.samples {
            Some(field) => self.write_samples(r, field, &temp)?,
            None => self.write_segment(r, &temp)?,
        }
        File::open(&temp)
            .and_then(|f| rill_core::perms::shared_file(&f).and_then(|_| f.sync_all()))
            .and_then(|_| std::fs::rename(&temp, &target))
            .map_err(|e| format!("cannot move {} into place: {e}", target.display()))?;
        self.dirs.insert(dir);
        Ok(())
    }

    fn write_samples(&self, r: &Record, field: &str, temp: &Path) -> Result<(), String> {
        let rate = match r.get("sample_rate") {
            Some(Value::Int(i)) if *i > 0 && *i <= 768_000 => *i as u32,
            _ => {
                return Err(
                    "the record has no `sample_rate` (an int of Hz) for its samples".into(),
                );
            }
        };
        let values: Vec<f32> = match r.get(field) {
            Some(Value::Tensor(t)) => match t.data() {
                TensorData::F32(d) => d.clone(),
                TensorData::F64(d) => d.iter().map(|x| *x as f32).collect(),
                _ => return Err(format!("`{field}` is not a float tensor")),
            },
            Some(Value::List(l)) => l
                .iter()
                .map(|v| match v {
                    Value::Float(f) => Ok(*f as f32),
                    Value::Int(i) => Ok(*i as f32),
                    o => Err(format!("`{field}` holds a {}", o.type_name())),
                })
                .collect::<Result<_, _>>()?,
            Some(o) => {
                return Err(format!(
                    "`{field}` must be samples, found a {}",
                    o.type_name()
                ));
            }
            None => return Err(format!("the record has no field `{field}`")),
        };
        let spec = WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: SampleFormat::Int,
        };
        let mut w =
            hound::WavWriter::create(temp, spec).map_err(|e| format!("{}: {e}", temp.display()))?;
        for x in values {
            w.write_sample((x.clamp(-1.0, 1.0) * 32767.0).round() as i16)
                .map_err(|e| e.to_string())?;
        }
        w.finalize().map_err(|e| format!("{}: {e}", temp.display()))
    }

    fn write_segment(&self, r: &Record, temp: &Path) -> Result<(), String> {
        let src = match r.get(&self.file) {
            Some(Value::String(s)) => self.base.join(s.as_str()),
            _ => {
                return Err(format!(
                    "the record has no text field `{}` naming its source WAV file",
                    self.file
                ));
            }
        };
        let (start, end) = (number(r, &self.start)?, number(r, &self.end)?);
        if start < 0.0 || end < start {
            return Err(format!("the segment [{start}, {end}) s is not a segment"));
        }
        let mut reader =
            hound::WavReader::open(&src).map_err(|e| format!("{}: {e}", src.display()))?;
        let spec = reader.spec();
        let rate = spec.sample_rate as f64;
        let first = ((start * rate).round() as u64).min(reader.duration() as u64) as u32;
        let last = ((end * rate).round() as u64).min(reader.duration() as u64) as u32;
        reader
            .seek(first)
            .map_err(|e| format!("{}: cannot seek to {start} s: {e}", src.display()))?;
        let n = (last - first) as usize * spec.channels as usize;
        let mut w =
            hound::WavWriter::create(temp, spec).map_err(|e| format!("{}: {e}", temp.display()))?;
        let bad = |e: hound::Error| format!("{}: {e}", src.display());
        match (spec.sample_format, spec.bits_per_sample) {
            (SampleFormat::Float, _) => {
                for s in reader.samples::<f32>().take(n) {
                    w.write_sample(s.map_err(bad)?).map_err(|e| e.to_string())?;
                }
            }
            (SampleFormat::Int, b) if b <= 16 => {
                for s in reader.samples::<i16>().take(n) {
                    w.write_sample(s.map_err(bad)?).map_err(|e| e.to_string())?;
                }
            }
            _ => {
                for s in reader.samples::<i32>().take(n) {
                    w.write_sample(s.map_err(bad)?).map_err(|e| e.to_string())?;
                }
            }
        }
        w.finalize().map_err(|e| format!("{}: {e}", temp.display()))
    }
}

impl Sink for WavSink {
    fn write(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        for r in batch {
            if let Err(e) = self.write_one(&r) {
                let at = self
                    .target(&r)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                let msg = if at.is_empty() {
                    e
                } else {
                    format!("{at}: {e}")
                };
                out.fail(r, msg);
            }
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), NodeError> {
        // the renames are durable once their directories are synced
        for d in std::mem::take(&mut self.dirs) {
            File::open(&d)
                .and_then(|f| f.sync_all())
                .map_err(|e| NodeError::io(&d, e))?;
        }
        Ok(())
    }
}
