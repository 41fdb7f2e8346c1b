//! `ReadFromJson` and `ReadFromCsv`: bounded file sources that resume by
//! position.
//!
//! Each source counts the bytes it has read, and at every commit of the
//! stage puts a [`FilePos`] into its keyed state. A rebuilt source (after a
//! crash or a restart) checks that the file still holds what it read, seeks
//! to the committed offset and goes on from the next line: it does not read
//! the file again from its start. See `docs/runtime-semantics.md`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use rill_core::json::parse_json_line;
use rill_core::node::{
    BuildContext, ConfigError, Emitter, Node, NodeConfig, NodeError, NodeKind, Source, SourceStatus,
};
use rill_core::state::KeyedState;
use rill_core::{Fields, Record, Value};
use serde::Deserialize;

use super::position::FilePos;
use super::{Stamping, bad_line, check_csv, check_path, comma, delimiter_byte};

/// Opens a source's file, and the position its last commit left, checked
/// against the file.
fn open_resumable(
    ctx: &BuildContext<'_>,
    path: &Path,
) -> Result<(PathBuf, File, Option<FilePos>), NodeError> {
    let path = ctx.resolve(path);
    let file = File::open(&path)
        .map_err(|e| NodeError::failed(format!("cannot open {}: {e}", path.display())))?;
    let pos = FilePos::load(ctx.state)?;
    if let Some(p) = &pos {
        p.check(&file, &path)?;
    }
    Ok((path, file, pos))
}

/// What both file sources keep to resume: where they are and what they
/// committed last.
struct Progress {
    state: KeyedState,
    /// The position restored at build (its `records` is what `seek` must
    /// be asked for).
    restored: Option<FilePos>,
    /// The position last put into the state.
    saved: FilePos,
    records: u64,
}

impl Progress {
    fn new(state: &KeyedState, restored: Option<FilePos>) -> Progress {
        Progress {
            state: state.clone(),
            restored,
            saved: restored.unwrap_or_default(),
            records: restored.map_or(0, |p| p.records),
        }
    }

    /// Whether the source, built at its restored position, is where the
    /// runtime wants it (`made` records in).
    fn positioned_at(&self, made: u64) -> bool {
        self.restored.is_some_and(|p| p.records == made)
    }

    fn save(&mut self, file: &File, path: &str, offset: u64, line: u64) -> Result<(), NodeError> {
        if offset == self.saved.offset && self.records == self.saved.records {
            return Ok(());
        }
        let pos = FilePos::at(file, offset, line, self.records, &self.saved)
            .map_err(|e| NodeError::failed(format!("{path}: cannot fingerprint: {e}")))?;
        pos.save(&self.state)?;
        self.saved = pos;
        Ok(())
    }
}

// ---------------------------------------------------------------------------

/// `ReadFromJson`: JSON Lines, one object per line; blank lines are skipped.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadFromJson {
    pub path: PathBuf,
    /// Field whose value becomes the record key.
    pub key: Option<String>,
    /// Field holding the event time (ms since the epoch).
    pub event_time: Option<String>,
}

impl NodeConfig for ReadFromJson {
    fn kind(&self) -> NodeKind {
        NodeKind::Source
    }
    fn validate(&self) -> Result<(), ConfigError> {
        check_path(&self.path)
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let (path, file, restored) = open_resumable(ctx, &self.path)?;
        let mut src = JsonSource {
            name: self.path.display().to_string(),
            path,
            reader: BufReader::with_capacity(1 << 16, file),
            offset: 0,
            line: 0,
            stamping: Stamping {
                key: self.key.clone(),
                event_time: self.event_time.clone(),
            },
            buf: Vec::new(),
            progress: Progress::new(ctx.state, restored),
            broken: None,
        };
        if let Some(p) = restored {
            src.goto(p.offset, p.line)?;
        }
        Ok(Node::Source(Box::new(src)))
    }
}

struct JsonSource {
    /// The path as configured (for messages).
    name: String,
    path: PathBuf,
    reader: BufReader<File>,
    /// Bytes of the file read so far.
    offset: u64,
    line: u64,
    stamping: Stamping,
    buf: Vec<u8>,
    progress: Progress,
    /// Set when the source could not go back to its start.
    broken: Option<String>,
}

impl JsonSource {
    fn goto(&mut self, offset: u64, line: u64) -> Result<(), NodeError> {
        self.reader
            .seek(SeekFrom::Start(offset))
            .map_err(|e| NodeError::io(&self.path, e))?;
        self.offset = offset;
        self.line = line;
        Ok(())
    }
}

impl Source for JsonSource {
    fn seek(&mut self, made: u64) -> bool {
        if self.progress.positioned_at(made) {
            return true;
        }
        // not where the runtime wants it: start over and let it replay
        self.progress = Progress::new(&self.progress.state, None);
        if let Err(e) = self.goto(0, 0) {
            self.broken = Some(e.to_string());
        }
        false
    }

    fn poll(&mut self, max: usize, out: &mut Emitter) -> Result<SourceStatus, NodeError> {
        if let Some(e) = &self.broken {
            return Err(NodeError::failed(e.clone()));
        }
        let mut n = 0;
        while n < max {
            self.buf.clear();
            let max = rill_core::limits::get().max_line_bytes;
            let io = |e: std::io::Error, line: u64| {
                NodeError::failed(format!("{}:{line}: read error: {e}", self.name))
            };
            // at most `max` bytes of a line are held; a longer one is read
            // past and fails as a record
            let read = (&mut self.reader)
                .take(max as u64 + 1)
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| io(e, self.line + 1))?;
            if read == 0 {
                return Ok(SourceStatus::Done);
            }
            self.offset += read as u64;
            self.line += 1;
            if read > max && !self.buf.ends_with(b"\n") {
                let mut skipped = read as u64;
                loop {
                    let chunk = self.reader.fill_buf().map_err(|e| io(e, self.line))?;
                    if chunk.is_empty() {
                        break;
                    }
                    let (n, end) = match chunk.iter().position(|b| *b == b'\n') {
                        Some(i) => (i + 1, true),
                        None => (chunk.len(), false),
                    };
                    self.reader.consume(n);
                    skipped += n as u64;
                    if end {
                        break;
                    }
                }
                self.offset += skipped - read as u64;
                n += 1;
                self.progress.records += 1;
                out.fail(
                    bad_line(&self.name, self.line, &String::from_utf8_lossy(&self.buf[..self.buf.len().min(200)])),
                    format!(
                        "{}:{}: the line is {skipped} bytes, longer than the limit of {max} (RILL_MAX_LINE_BYTES sets another)",
                        self.name, self.line
                    ),
                );
                self.buf = Vec::new();
                continue;
            }
            let raw = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            // a byte-order mark at the start of the file is not content
            let raw = match raw.strip_prefix(b"\xEF\xBB\xBF") {
                Some(rest) if self.offset == read as u64 => rest,
                _ => raw,
            };
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            n += 1;
            self.progress.records += 1;
            let text = match std::str::from_utf8(raw) {
                Ok(t) => t,
                Err(e) => {
                    let text = String::from_utf8_lossy(raw);
                    out.fail(
                        bad_line(&self.name, self.line, &text),
                        format!(
                            "{}:{}:{}: the line is not UTF-8",
                            self.name,
                            self.line,
                            e.valid_up_to() + 1
                        ),
                    );
                    continue;
                }
            };
            match parse_json_line(text) {
                Ok(fields) => {
                    let mut r = Record::new(fields);
                    match self.stamping.apply(&mut r) {
                        Ok(()) => out.emit(r),
                        Err(e) => out.fail(r, format!("{}:{}: {e}", self.name, self.line)),
                    }
                }
                Err(e) => out.fail(
                    bad_line(&self.name, self.line, text),
                    format!("{}:{}: {e}", self.name, self.line),
                ),
            }
        }
        Ok(SourceStatus::More)
    }

    fn checkpoint(&mut self) -> Result<(), NodeError> {
        let (offset, line) = (self.offset, self.line);
        self.progress
            .save(self.reader.get_ref(), &self.name, offset, line)
    }
}

// ---------------------------------------------------------------------------

/// `ReadFromCsv`: a header row, then one record per row. Values that read as
/// integers become ints, then floats, `true`/`false` bools; empty cells are
/// null; everything else stays a string.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadFromCsv {
    pub path: PathBuf,
    #[serde(default = "comma")]
    pub delimiter: String,
    pub key: Option<String>,
    pub event_time: Option<String>,
}

impl NodeConfig for ReadFromCsv {
    fn kind(&self) -> NodeKind {
        NodeKind::Source
    }
    fn validate(&self) -> Result<(), ConfigError> {
        check_csv(&self.path, &self.delimiter)
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let (_, file, restored) = open_resumable(ctx, &self.path)?;
        // rows end at `\n` (a `\r` before it is cut from the last cell):
        // with CRLF as the terminator the reader counts the `\n` of a row
        // into the next one, and positions and line numbers come out wrong
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter_byte(&self.delimiter).map_err(NodeError::Failed)?)
            .terminator(csv::Terminator::Any(b'\n'))
            .flexible(true)
            .from_reader(BufReader::with_capacity(1 << 16, file));
        let header: Vec<String> = cells(reader.headers().map_err(|e| {
            NodeError::failed(format!(
                "{}:1: cannot read the CSV header: {e}",
                self.path.display()
            ))
        })?)
        .map(str::to_owned)
        .collect();
        // a repeated column name would drop a column silently
        for (i, h) in header.iter().enumerate() {
            if let Some(j) = header[..i].iter().position(|g| g == h) {
                return Err(NodeError::BadInput(format!(
                    "{}:1: the CSV header names column `{h}` twice (columns {} and {}); rename one",
                    self.path.display(),
                    j + 1,
                    i + 1
                )));
            }
        }
        let start = reader.position().clone();
        let mut src = CsvSource {
            name: self.path.display().to_string(),
            reader,
            start,
            header,
            stamping: Stamping {
                key: self.key.clone(),
                event_time: self.event_time.clone(),
            },
            progress: Progress::new(ctx.state, restored),
            broken: None,
        };
        if let Some(p) = restored {
            src.goto(p.offset, p.line)?;
        }
        Ok(Node::Source(Box::new(src)))
    }
}

struct CsvSource {
    name: String,
    reader: csv::Reader<BufReader<File>>,
    /// Where the first row after the header starts.
    start: csv::Position,
    header: Vec<String>,
    stamping: Stamping,
    progress: Progress,
    broken: Option<String>,
}

impl CsvSource {
    fn goto(&mut self, offset: u64, line: u64) -> Result<(), NodeError> {
        if offset <= self.start.byte() {
            // nothing past the header was read: go on from there
            return Ok(());
        }
        let mut pos = csv::Position::new();
        pos.set_byte(offset).set_line(line);
        self.reader
            .seek(pos)
            .map_err(|e| NodeError::failed(format!("{}: cannot seek: {e}", self.name)))
    }
}

/// The cells of a row, without the `\r` of a CRLF line ending.
fn cells(row: &csv::StringRecord) -> impl Iterator<Item = &str> {
    let last = row.len().saturating_sub(1);
    row.iter().enumerate().map(move |(i, c)| {
        if i == last {
            c.strip_suffix('\r').unwrap_or(c)
        } else {
            c
        }
    })
}

/// Reads a CSV cell as the narrowest type it spells.
pub fn infer_cell(s: &str) -> Value {
    if s.is_empty() {
        return Value::Null;
    }
    if let Ok(i) = s.parse::<i64>() {
        return Value::Int(i);
    }
    if s.bytes().any(|b| b.is_ascii_digit())
        && let Ok(f) = s.parse::<f64>()
    {
        return Value::Float(f);
    }
    match s {
        "true" | "True" => Value::Bool(true),
        "false" | "False" => Value::Bool(false),
        _ => Value::String(s.into()),
    }
}

impl Source for CsvSource {
    fn seek(&mut self, made: u64) -> bool {
        if self.progress.positioned_at(made) {
            return true;
        }
        // not where the runtime wants it: start over and let it replay
        self.progress = Progress::new(&self.progress.state, None);
        if let Err(e) = self.reader.seek(self.start.clone()) {
            self.broken = Some(format!("{}: cannot seek: {e}", self.name));
        }
        false
    }

    fn poll(&mut self, max: usize, out: &mut Emitter) -> Result<SourceStatus, NodeError> {
        if let Some(e) = &self.broken {
            return Err(NodeError::failed(e.clone()));
        }
        let mut row = csv::StringRecord::new();
        for _ in 0..max {
            let line = self.reader.position().line();
            match self.reader.read_record(&mut row) {
                Ok(false) => return Ok(SourceStatus::Done),
                Ok(true) => {
                    self.progress.records += 1;
                    let line = row.position().map_or(line, |p| p.line());
                    if row.len() != self.header.len() {
                        let text = cells(&row).collect::<Vec<_>>().join(",");
                        out.fail(
                            bad_line(&self.name, line, &text),
                            format!(
                                "{}:{line}: the row has {} cells but the header has {}",
                                self.name,
                                row.len(),
                                self.header.len()
                            ),
                        );
                        continue;
                    }
                    let fields: Fields = self
                        .header
                        .iter()
                        .map(|h| rill_core::Name::from(h.as_str()))
                        .zip(cells(&row).map(infer_cell))
                        .collect();
                    let mut r = Record::new(fields);
                    match self.stamping.apply(&mut r) {
                        Ok(()) => out.emit(r),
                        Err(e) => out.fail(r, format!("{}:{line}: {e}", self.name)),
                    }
                }
                Err(e) => {
                    if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                        return Err(NodeError::failed(format!("{}: {e}", self.name)));
                    }
                    self.progress.records += 1;
                    let line = e.position().map_or(line, |p| p.line());
                    out.fail(
                        bad_line(&self.name, line, ""),
                        format!("{}:{line}: {e}", self.name),
                    );
                }
            }
        }
        Ok(SourceStatus::More)
    }

    fn checkpoint(&mut self) -> Result<(), NodeError> {
        let pos = self.reader.position();
        let (offset, line) = (pos.byte(), pos.line());
        let file = self.reader.get_ref().get_ref();
        self.progress.save(file, &self.name, offset, line)
    }
}
