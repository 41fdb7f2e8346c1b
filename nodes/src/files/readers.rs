//! Readers of one file: lines (JSON Lines or text) and CSV rows. A
//! [`FileSource`](super::set::FileSource) runs one per file it reads, and
//! keeps the count of records, the list of files and the committed state.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};

use rill_core::json::parse_json_line;
use rill_core::node::{Emitter, NodeError};
use rill_core::{Fields, Name, Record, Value};

use super::growing::Growing;
use super::position::FilePos;
use super::{Stamping, bad_line};

/// What a reader made in one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    /// Records made (emitted or failed).
    pub(crate) made: usize,
    /// Whether the reader is at the end of what it may read now.
    pub(crate) end: bool,
}

/// What each record of a file is stamped with.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stamp {
    pub(crate) stamping: Stamping,
    /// `filename_column`: the field, and the file's path.
    pub(crate) filename: Option<(Name, Value)>,
}

impl Stamp {
    /// Finishes a record read at `at` (`file:line`): emits it, or fails it
    /// when its key or event time cannot be read.
    pub(crate) fn emit(&self, mut fields: Fields, at: &str, out: &mut Emitter) {
        if let Some((k, v)) = &self.filename {
            fields.insert(k.clone(), v.clone());
        }
        let mut r = Record::new(fields);
        match self.stamping.apply(&mut r) {
            Ok(()) => out.emit(r),
            Err(e) => out.fail(r, format!("{at}: {e}")),
        }
    }
}

/// A reader of one file.
pub(crate) trait FileReader: Send {
    /// Reads at most `max` records.
    fn read(&mut self, max: usize, out: &mut Emitter) -> Result<Step, NodeError>;

    /// The position just past the last record made, fingerprinted, with
    /// `records` as the source's count.
    fn position(&self, records: u64, prev: &FilePos) -> Result<FilePos, NodeError>;

    /// Whether the file still holds what was read of it by `pos`.
    fn check(&mut self, pos: &FilePos, path: &std::path::Path) -> Result<(), NodeError> {
        pos.check(self.input().file(), path)
    }

    /// Goes to a committed position (checked with [`FileReader::check`]).
    fn goto(&mut self, pos: &FilePos) -> Result<(), NodeError>;

    /// The file and the limit it is read through.
    fn input(&mut self) -> &mut Growing;

    /// Following: new whole rows were taken in (the reader may have to
    /// forget that it had seen the end).
    fn grown(&mut self) -> Result<(), NodeError> {
        Ok(())
    }
}

fn fingerprint(
    g: &Growing,
    name: &str,
    offset: u64,
    line: u64,
    records: u64,
    prev: &FilePos,
) -> Result<FilePos, NodeError> {
    FilePos::at(g.file(), offset, line, records, prev)
        .map_err(|e| NodeError::failed(format!("{name}: cannot fingerprint: {e}")))
}

// ---------------------------------------------------------------------------

/// How a line becomes a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineKind {
    /// JSON Lines: one object per line; blank lines are skipped.
    Json,
    /// Text: every line is a record with one field, `line`.
    Text,
}

/// Reads lines: JSON Lines or text.
pub(crate) struct LineReader {
    /// The file's path as it is named in messages.
    name: String,
    reader: BufReader<Growing>,
    kind: LineKind,
    /// Bytes of the file read so far.
    offset: u64,
    line: u64,
    stamp: Stamp,
    buf: Vec<u8>,
}

impl LineReader {
    pub(crate) fn new(name: String, input: Growing, kind: LineKind, stamp: Stamp) -> LineReader {
        LineReader {
            name,
            reader: BufReader::with_capacity(1 << 16, input),
            kind,
            offset: 0,
            line: 0,
            stamp,
            buf: Vec::new(),
        }
    }

    fn seek_to(&mut self, offset: u64, line: u64) -> Result<(), NodeError> {
        self.reader
            .seek(SeekFrom::Start(offset))
            .map_err(|e| NodeError::failed(format!("{}: cannot seek: {e}", self.name)))?;
        self.offset = offset;
        self.line = line;
        Ok(())
    }
}

impl FileReader for LineReader {
    fn read(&mut self, max: usize, out: &mut Emitter) -> Result<Step, NodeError> {
        let mut n = 0;
        while n < max {
            self.buf.clear();
            let limit = rill_core::limits::get().max_line_bytes;
            let io = |e: std::io::Error, line: u64| {
                NodeError::failed(format!("{}:{line}: read error: {e}", self.name))
            };
            // at most `limit` bytes of a line are held; a longer one is read
            // past and fails as a record
            let read = (&mut self.reader)
                .take(limit as u64 + 1)
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| io(e, self.line + 1))?;
            if read == 0 {
                return Ok(Step { made: n, end: true });
            }
            self.offset += read as u64;
            self.line += 1;
            if read > limit && !self.buf.ends_with(b"\n") {
                let mut skipped = read as u64;
                loop {
                    let chunk = self.reader.fill_buf().map_err(|e| io(e, self.line))?;
                    if chunk.is_empty() {
                        break;
                    }
                    let (k, end) = match chunk.iter().position(|b| *b == b'\n') {
                        Some(i) => (i + 1, true),
                        None => (chunk.len(), false),
                    };
                    self.reader.consume(k);
                    skipped += k as u64;
                    if end {
                        break;
                    }
                }
                self.offset += skipped - read as u64;
                n += 1;
                out.fail(
                    bad_line(&self.name, self.line, &String::from_utf8_lossy(&self.buf[..self.buf.len().min(200)])),
                    format!(
                        "{}:{}: the line is {skipped} bytes, longer than the limit of {limit} (RILL_MAX_LINE_BYTES sets another)",
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
            if self.kind == LineKind::Json && raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            n += 1;
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
            let at = || format!("{}:{}", self.name, self.line);
            match self.kind {
                LineKind::Text => {
                    let mut f = Fields::default();
                    f.insert("line".into(), Value::String(text.into()));
                    self.stamp.emit(f, &at(), out);
                }
                LineKind::Json => match parse_json_line(text) {
                    Ok(fields) => self.stamp.emit(fields, &at(), out),
                    Err(e) => out.fail(
                        bad_line(&self.name, self.line, text),
                        format!("{}: {e}", at()),
                    ),
                },
            }
        }
        Ok(Step {
            made: n,
            end: false,
        })
    }

    fn position(&self, records: u64, prev: &FilePos) -> Result<FilePos, NodeError> {
        fingerprint(
            self.reader.get_ref(),
            &self.name,
            self.offset,
            self.line,
            records,
            prev,
        )
    }

    fn goto(&mut self, pos: &FilePos) -> Result<(), NodeError> {
        self.seek_to(pos.offset, pos.line)
    }

    fn input(&mut self) -> &mut Growing {
        self.reader.get_mut()
    }

    fn grown(&mut self) -> Result<(), NodeError> {
        // the buffer may hold the end it saw: read on from the offset
        let (offset, line) = (self.offset, self.line);
        self.seek_to(offset, line)
    }
}

// ---------------------------------------------------------------------------

/// How a CSV file names its columns.
#[derive(Debug, Clone)]
pub(crate) enum Columns {
    /// From its first row.
    Header,
    /// From the config; every row is data (`header: false`).
    Named(Vec<String>),
}

/// Reads CSV rows.
pub(crate) struct CsvReader {
    name: String,
    reader: csv::Reader<Growing>,
    columns: Columns,
    /// The columns, once known (a followed file may not have its header yet).
    header: Option<Vec<String>>,
    /// Where the first row after the header starts.
    start: csv::Position,
    stamp: Stamp,
}

impl CsvReader {
    pub(crate) fn new(
        name: String,
        input: Growing,
        delimiter: u8,
        columns: Columns,
        stamp: Stamp,
    ) -> CsvReader {
        // rows end at `\n` (a `\r` before it is cut from the last cell):
        // with CRLF as the terminator the reader counts the `\n` of a row
        // into the next one, and positions and line numbers come out wrong
        let reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .terminator(csv::Terminator::Any(b'\n'))
            .flexible(true)
            .has_headers(false)
            .buffer_capacity(1 << 16)
            .from_reader(input);
        let header = match &columns {
            Columns::Named(n) => Some(n.clone()),
            Columns::Header => None,
        };
        CsvReader {
            name,
            reader,
            columns,
            header,
            start: csv::Position::new(),
            stamp,
        }
    }

    /// Reads the header row, if the file has it yet: whether it has.
    fn read_header(&mut self) -> Result<bool, NodeError> {
        let mut row = csv::StringRecord::new();
        let got = self.reader.read_record(&mut row).map_err(|e| {
            NodeError::failed(format!("{}:1: cannot read the CSV header: {e}", self.name))
        })?;
        if !got {
            return Ok(false);
        }
        let header: Vec<String> = cells(&row).map(str::to_owned).collect();
        // a repeated column name would drop a column silently
        for (i, h) in header.iter().enumerate() {
            if let Some(j) = header[..i].iter().position(|g| g == h) {
                return Err(NodeError::BadInput(format!(
                    "{}:1: the CSV header names column `{h}` twice (columns {} and {}); rename one",
                    self.name,
                    j + 1,
                    i + 1
                )));
            }
        }
        self.start = self.reader.position().clone();
        self.header = Some(header);
        Ok(true)
    }

    /// Opens at the start: reads the header when there is one.
    pub(crate) fn begin(&mut self) -> Result<(), NodeError> {
        if matches!(self.columns, Columns::Header) && self.header.is_none() {
            self.read_header()?;
        }
        Ok(())
    }

    fn seek_to(&mut self, pos: csv::Position) -> Result<(), NodeError> {
        // `seek` does nothing when the reader is at `pos` already, and then
        // keeps the end it saw: `seek_raw` always seeks
        self.reader
            .seek_raw(SeekFrom::Start(pos.byte()), pos)
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

impl FileReader for CsvReader {
    fn read(&mut self, max: usize, out: &mut Emitter) -> Result<Step, NodeError> {
        if self.header.is_none() && !self.read_header()? {
            return Ok(Step { made: 0, end: true });
        }
        let header = self.header.as_ref().expect("read above");
        let mut row = csv::StringRecord::new();
        for n in 0..max {
            let line = self.reader.position().line();
            match self.reader.read_record(&mut row) {
                Ok(false) => return Ok(Step { made: n, end: true }),
                Ok(true) => {
                    let line = row.position().map_or(line, |p| p.line());
                    if row.len() != header.len() {
                        let text = cells(&row).collect::<Vec<_>>().join(",");
                        out.fail(
                            bad_line(&self.name, line, &text),
                            format!(
                                "{}:{line}: the row has {} cells but the {} has {}",
                                self.name,
                                row.len(),
                                if matches!(self.columns, Columns::Header) {
                                    "header"
                                } else {
                                    "`names` list"
                                },
                                header.len()
                            ),
                        );
                        continue;
                    }
                    let fields: Fields = header
                        .iter()
                        .map(|h| Name::from(h.as_str()))
                        .zip(cells(&row).map(infer_cell))
                        .collect();
                    self.stamp
                        .emit(fields, &format!("{}:{line}", self.name), out);
                }
                Err(e) => {
                    if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                        return Err(NodeError::failed(format!("{}: {e}", self.name)));
                    }
                    let line = e.position().map_or(line, |p| p.line());
                    out.fail(
                        bad_line(&self.name, line, ""),
                        format!("{}:{line}: {e}", self.name),
                    );
                }
            }
        }
        Ok(Step {
            made: max,
            end: false,
        })
    }

    fn position(&self, records: u64, prev: &FilePos) -> Result<FilePos, NodeError> {
        let pos = self.reader.position();
        fingerprint(
            self.reader.get_ref(),
            &self.name,
            pos.byte(),
            pos.line(),
            records,
            prev,
        )
    }

    fn goto(&mut self, pos: &FilePos) -> Result<(), NodeError> {
        if self.header.is_none() {
            self.begin()?;
        }
        if pos.offset <= self.start.byte() {
            // nothing past the header was read: go on from there
            return self.seek_to(self.start.clone());
        }
        let mut p = csv::Position::new();
        p.set_byte(pos.offset).set_line(pos.line);
        self.seek_to(p)
    }

    fn input(&mut self) -> &mut Growing {
        self.reader.get_mut()
    }

    fn grown(&mut self) -> Result<(), NodeError> {
        // the reader remembers the end it saw: seek clears that
        let at = self.reader.position().clone();
        self.seek_to(at)
    }
}
