//! File sources and sinks: JSON Lines and CSV.
//!
//! Relative paths resolve against the working directory of `rill run` (as in
//! Beam). Sources read one record per line or row; a line that is not valid
//! fails that record only (with `file:line` in the message), so with
//! `error_handling` the rest of the file flows on.
//!
//! Sinks write effects exactly once: at every commit of the stage they
//! `fsync` the file and record its length in the stage's state; a restarted
//! sink cuts the file back to that length before it goes on, so what it
//! wrote after its last commit (and will write again) is not doubled. Under
//! `at_least_once` it keeps what it wrote. A first run truncates the file.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::PathBuf;

use rill_core::json::{parse_json_line, record_to_json_line, value_to_json};
use rill_core::node::{
    BuildContext, Emitter, Node, NodeConfig, NodeError, NodeKind, Sink, Source, SourceStatus,
};
use rill_core::spec::Delivery;
use rill_core::state::KeyedState;
use rill_core::{Fields, Record, Value};
use serde::Deserialize;

/// Where a source takes record keys and event times from.
#[derive(Debug, Clone, Default)]
struct Stamping {
    key: Option<String>,
    event_time: Option<String>,
}

impl Stamping {
    /// Sets key and event time from the named fields.
    fn apply(&self, r: &mut Record) -> Result<(), String> {
        if let Some(k) = &self.key {
            match r.fields.get(k.as_str()) {
                Some(Value::String(s)) => r.key = Some(s.clone()),
                Some(Value::Int(i)) => r.key = Some(i.to_string().into()),
                Some(Value::Null) | None => return Err(format!("key field `{k}` is missing")),
                Some(other) => r.key = Some(other.to_string().into()),
            }
        }
        if let Some(t) = &self.event_time {
            r.event_time = match r.fields.get(t.as_str()) {
                Some(Value::Int(i)) => *i,
                Some(Value::Float(f)) if f.is_finite() => *f as i64,
                Some(Value::Null) | None => {
                    return Err(format!("event_time field `{t}` is missing"));
                }
                Some(other) => {
                    return Err(format!(
                        "event_time field `{t}` must be milliseconds since the epoch (int), found {} {other}",
                        other.type_name()
                    ));
                }
            };
        }
        Ok(())
    }
}

fn check_path(p: &std::path::Path) -> Result<(), String> {
    if p.as_os_str().is_empty() {
        return Err("`path` must not be empty".into());
    }
    Ok(())
}

/// A record describing an unreadable line, for the dead-letter output.
fn bad_line(file: &str, line: u64, text: &str) -> Record {
    let mut f = Fields::default();
    f.insert("file".into(), Value::String(file.into()));
    f.insert("line".into(), Value::Int(line as i64));
    f.insert("text".into(), Value::String(text.into()));
    Record::new(f)
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
    fn validate(&self) -> Result<(), String> {
        check_path(&self.path)
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let path = ctx.resolve(&self.path);
        let file = File::open(&path)
            .map_err(|e| NodeError::failed(format!("cannot open {}: {e}", path.display())))?;
        Ok(Node::Source(Box::new(JsonSource {
            name: self.path.display().to_string(),
            reader: BufReader::with_capacity(1 << 16, file),
            line: 0,
            stamping: Stamping {
                key: self.key.clone(),
                event_time: self.event_time.clone(),
            },
            buf: String::new(),
        })))
    }
}

struct JsonSource {
    name: String,
    reader: BufReader<File>,
    line: u64,
    stamping: Stamping,
    buf: String,
}

impl Source for JsonSource {
    fn poll(&mut self, max: usize, out: &mut Emitter) -> Result<SourceStatus, NodeError> {
        let mut n = 0;
        while n < max {
            self.buf.clear();
            let read = self.reader.read_line(&mut self.buf).map_err(|e| {
                NodeError::failed(format!("{}:{}: read error: {e}", self.name, self.line + 1))
            })?;
            if read == 0 {
                return Ok(SourceStatus::Done);
            }
            self.line += 1;
            let text = self.buf.trim_end_matches(['\n', '\r']);
            if text.trim().is_empty() {
                continue;
            }
            n += 1;
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

fn comma() -> String {
    ",".into()
}

fn delimiter_byte(d: &str) -> Result<u8, String> {
    match d.as_bytes() {
        [b] if b.is_ascii() => Ok(*b),
        _ if d == "\\t" => Ok(b'\t'),
        _ => Err(format!(
            "`delimiter` must be one ASCII character, got {d:?}"
        )),
    }
}

impl NodeConfig for ReadFromCsv {
    fn kind(&self) -> NodeKind {
        NodeKind::Source
    }
    fn validate(&self) -> Result<(), String> {
        check_path(&self.path)?;
        delimiter_byte(&self.delimiter).map(|_| ())
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let path = ctx.resolve(&self.path);
        let file = File::open(&path)
            .map_err(|e| NodeError::failed(format!("cannot open {}: {e}", path.display())))?;
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter_byte(&self.delimiter).map_err(NodeError::Failed)?)
            .flexible(true)
            .from_reader(BufReader::new(file));
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| {
                NodeError::failed(format!(
                    "{}:1: cannot read the CSV header: {e}",
                    self.path.display()
                ))
            })?
            .iter()
            .map(str::to_owned)
            .collect();
        Ok(Node::Source(Box::new(CsvSource {
            name: self.path.display().to_string(),
            reader,
            header,
            stamping: Stamping {
                key: self.key.clone(),
                event_time: self.event_time.clone(),
            },
        })))
    }
}

struct CsvSource {
    name: String,
    reader: csv::Reader<BufReader<File>>,
    header: Vec<String>,
    stamping: Stamping,
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
    fn poll(&mut self, max: usize, out: &mut Emitter) -> Result<SourceStatus, NodeError> {
        let mut row = csv::StringRecord::new();
        for _ in 0..max {
            let line = self.reader.position().line();
            match self.reader.read_record(&mut row) {
                Ok(false) => return Ok(SourceStatus::Done),
                Ok(true) => {
                    let line = row.position().map_or(line, |p| p.line());
                    if row.len() != self.header.len() {
                        let text = row.iter().collect::<Vec<_>>().join(",");
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
                        .zip(row.iter().map(infer_cell))
                        .collect();
                    let mut r = Record::new(fields);
                    match self.stamping.apply(&mut r) {
                        Ok(()) => out.emit(r),
                        Err(e) => out.fail(r, format!("{}:{line}: {e}", self.name)),
                    }
                }
                Err(e) => {
                    let line = e.position().map_or(line, |p| p.line());
                    out.fail(
                        bad_line(&self.name, line, ""),
                        format!("{}:{line}: {e}", self.name),
                    );
                    if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                        return Err(NodeError::failed(format!("{}: {e}", self.name)));
                    }
                }
            }
        }
        Ok(SourceStatus::More)
    }
}

// ---------------------------------------------------------------------------

/// The state key of a file sink's committed length.
const OFFSET_KEY: &str = "offset";

fn open_for_write(
    ctx: &BuildContext<'_>,
    path: &std::path::Path,
) -> Result<(PathBuf, File), NodeError> {
    let path = ctx.resolve(path);
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| NodeError::io(dir, e))?;
    }
    let cannot = |e: std::io::Error| {
        NodeError::failed(format!("cannot open {} for writing: {e}", path.display()))
    };
    let committed = match ctx.state.get_value(OFFSET_KEY)? {
        Some(Value::Int(n)) if n >= 0 => Some(n as u64),
        Some(other) => {
            return Err(NodeError::failed(format!(
                "the committed length of {} is not a length: {other:?}",
                path.display()
            )));
        }
        None => None,
    };
    let replay = ctx.extensions.get::<rill_core::node::ReplayRun>().is_some();
    let file = match committed {
        // a replay of dead letters adds to what the pipeline wrote
        None if replay => OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(cannot)?,
        // a first run starts the file over
        None => File::create(&path).map_err(cannot)?,
        // a restarted sink continues from its last commit
        Some(len) => {
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .read(true)
                .open(&path)
                .map_err(cannot)?;
            let on_disk = f.metadata().map_err(|e| NodeError::io(&path, e))?.len();
            if on_disk < len {
                return Err(NodeError::failed(format!(
                    "{} is {on_disk} bytes but {len} were committed to it: it was cut or replaced outside rill; run with --reset-state to write it again",
                    path.display()
                )));
            }
            if ctx.delivery == Delivery::ExactlyOnce {
                f.set_len(len).map_err(|e| NodeError::io(&path, e))?;
            }
            f.seek(SeekFrom::End(0))
                .map_err(|e| NodeError::io(&path, e))?;
            f
        }
    };
    Ok((path, file))
}

/// A file sink's commit: everything written reaches the disk, and its
/// length goes into the stage's state.
fn checkpoint_file(state: &KeyedState, path: &std::path::Path, f: &File) -> Result<(), NodeError> {
    f.sync_data().map_err(|e| NodeError::io(path, e))?;
    let len = f.metadata().map_err(|e| NodeError::io(path, e))?.len();
    state.put_value(OFFSET_KEY, &Value::Int(len as i64))
}

/// `WriteToJson`: one JSON object per line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteToJson {
    pub path: PathBuf,
}

impl WriteToJson {
    pub fn new(path: impl Into<PathBuf>) -> WriteToJson {
        WriteToJson { path: path.into() }
    }
}

impl NodeConfig for WriteToJson {
    fn kind(&self) -> NodeKind {
        NodeKind::Sink
    }
    fn validate(&self) -> Result<(), String> {
        check_path(&self.path)
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let (path, file) = open_for_write(ctx, &self.path)?;
        Ok(Node::Sink(Box::new(JsonSink {
            path,
            out: BufWriter::with_capacity(1 << 16, file),
            state: ctx.state.clone(),
        })))
    }
}

struct JsonSink {
    path: PathBuf,
    out: BufWriter<File>,
    state: KeyedState,
}

impl Sink for JsonSink {
    fn write(&mut self, batch: Vec<Record>, _out: &mut Emitter) -> Result<(), NodeError> {
        for r in &batch {
            let line = record_to_json_line(r);
            self.out
                .write_all(line.as_bytes())
                .and_then(|_| self.out.write_all(b"\n"))
                .map_err(|e| NodeError::io(&self.path, e))?;
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), NodeError> {
        self.out.flush().map_err(|e| NodeError::io(&self.path, e))?;
        checkpoint_file(&self.state, &self.path, self.out.get_ref())
    }
}

/// `WriteToCsv`: a header row from the first record's fields, then one row
/// per record. Lists, maps and tensors are written as JSON text. A record
/// with a field the header lacks fails (it would not fit the file).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteToCsv {
    pub path: PathBuf,
    #[serde(default = "comma")]
    pub delimiter: String,
}

impl NodeConfig for WriteToCsv {
    fn kind(&self) -> NodeKind {
        NodeKind::Sink
    }
    fn validate(&self) -> Result<(), String> {
        check_path(&self.path)?;
        delimiter_byte(&self.delimiter).map(|_| ())
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let (path, file) = open_for_write(ctx, &self.path)?;
        let has_content = file.metadata().map(|m| m.len() > 0).unwrap_or(false);
        // a restarted sink reads the header its first incarnation wrote
        let header = if has_content {
            let f = File::open(&path).map_err(|e| NodeError::io(&path, e))?;
            let mut r = csv::ReaderBuilder::new()
                .delimiter(delimiter_byte(&self.delimiter).map_err(NodeError::Failed)?)
                .from_reader(f);
            r.headers()
                .ok()
                .map(|h| h.iter().map(str::to_owned).collect())
        } else {
            None
        };
        let writer = csv::WriterBuilder::new()
            .delimiter(delimiter_byte(&self.delimiter).map_err(NodeError::Failed)?)
            .from_writer(BufWriter::new(file));
        Ok(Node::Sink(Box::new(CsvSink {
            path,
            writer,
            header,
            state: ctx.state.clone(),
        })))
    }
}

struct CsvSink {
    path: PathBuf,
    writer: csv::Writer<BufWriter<File>>,
    header: Option<Vec<String>>,
    state: KeyedState,
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => value_to_json(&Value::Float(*f)).to_string(),
        other => value_to_json(other).to_string(),
    }
}

impl Sink for CsvSink {
    fn write(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        let io = |e: csv::Error| NodeError::failed(format!("{}: {e}", self.path.display()));
        for r in batch {
            if self.header.is_none() {
                let h: Vec<String> = r.fields.keys().map(|k| k.to_string()).collect();
                self.writer.write_record(&h).map_err(io)?;
                self.header = Some(h);
            }
            let header = self.header.as_ref().expect("set above");
            if let Some(extra) = r.fields.keys().find(|k| !header.iter().any(|h| h == k)) {
                let msg = format!(
                    "field `{extra}` is not a column of {} (columns: {})",
                    self.path.display(),
                    header.join(", ")
                );
                out.fail(r, msg);
                continue;
            }
            let row: Vec<String> = header
                .iter()
                .map(|h| r.fields.get(h.as_str()).map(cell).unwrap_or_default())
                .collect();
            self.writer.write_record(&row).map_err(io)?;
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), NodeError> {
        self.writer
            .flush()
            .map_err(|e| NodeError::io(&self.path, e))?;
        checkpoint_file(&self.state, &self.path, self.writer.get_ref().get_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill_core::testkit;

    #[test]
    fn json_round_trip_and_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("in.jsonl"),
            "{\"a\": 1, \"ts\": 5}\n\nnot json\n{\"a\": 2, \"ts\": 6}\n",
        )
        .unwrap();
        let reg = crate::registry();
        let Node::Source(mut s) = testkit::build_yaml(
            &reg,
            "ReadFromJson",
            "{path: in.jsonl, event_time: ts}",
            dir.path(),
        )
        .unwrap() else {
            panic!()
        };
        let run = testkit::drain_source(s.as_mut(), 100).unwrap();
        assert_eq!(run.main.len(), 2);
        assert_eq!(run.main[1].event_time, 6);
        assert_eq!(run.failures.len(), 1);
        assert!(
            run.failures[0].msg.starts_with("in.jsonl:3: invalid JSON"),
            "{}",
            run.failures[0].msg
        );

        let Node::Sink(mut w) =
            testkit::build_yaml(&reg, "WriteToJson", "{path: out/o.jsonl}", dir.path()).unwrap()
        else {
            panic!()
        };
        testkit::run_sink(w.as_mut(), vec![run.main.clone()]).unwrap();
        let text = std::fs::read_to_string(dir.path().join("out/o.jsonl")).unwrap();
        assert_eq!(text, "{\"a\":1,\"ts\":5}\n{\"a\":2,\"ts\":6}\n");
    }

    #[test]
    fn csv_types_and_ragged_rows() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("in.csv"),
            "name,n,x,ok\na,1,1.5,true\nb,2\nc,,2e3,false\n",
        )
        .unwrap();
        let reg = crate::registry();
        let Node::Source(mut s) =
            testkit::build_yaml(&reg, "ReadFromCsv", "{path: in.csv}", dir.path()).unwrap()
        else {
            panic!()
        };
        let run = testkit::drain_source(s.as_mut(), 100).unwrap();
        assert_eq!(run.main.len(), 2);
        assert_eq!(run.main[0].get("n"), Some(&Value::Int(1)));
        assert_eq!(run.main[0].get("x"), Some(&Value::Float(1.5)));
        assert_eq!(run.main[0].get("ok"), Some(&Value::Bool(true)));
        assert_eq!(run.main[1].get("n"), Some(&Value::Null));
        assert_eq!(run.failures.len(), 1);
        assert!(
            run.failures[0].msg.contains("in.csv:3"),
            "{}",
            run.failures[0].msg
        );

        let Node::Sink(mut w) =
            testkit::build_yaml(&reg, "WriteToCsv", "{path: o.csv}", dir.path()).unwrap()
        else {
            panic!()
        };
        let extra =
            rill_core::record! {"name" => "z", "n" => 1, "x" => 1.0, "ok" => false, "more" => 1};
        let mut batch = run.main.clone();
        batch.push(extra);
        let res = testkit::run_sink(w.as_mut(), vec![batch]).unwrap();
        assert_eq!(res.failures.len(), 1);
        let text = std::fs::read_to_string(dir.path().join("o.csv")).unwrap();
        assert_eq!(text, "name,n,x,ok\na,1,1.5,true\nc,,2000.0,false\n");
    }
}
