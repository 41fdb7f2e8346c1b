//! File sources and sinks: JSON Lines, CSV and text.
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

pub mod columnar;
mod columnar_io;
#[cfg(test)]
mod columnar_tests;
mod growing;
pub mod parts;
mod position;
mod readers;
mod set;
#[cfg(test)]
mod source_tests;
mod sources;
mod wav;

pub use columnar_io::{ReadFromAvro, ReadFromParquet, WriteToAvro, WriteToParquet};
pub use position::FilePos;
pub use readers::infer_cell;
pub use set::SETTLE;
pub use sources::{ReadFromCsv, ReadFromJson, ReadFromText};
pub use wav::{ReadFromWav, WriteToWav};

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::PathBuf;

use rill_core::json::{value_to_json, write_record_json};
use rill_core::node::{
    BuildContext, ConfigError, Emitter, Node, NodeConfig, NodeError, NodeKind, Sink,
};
use rill_core::spec::Delivery;
use rill_core::state::KeyedState;
use rill_core::{Fields, Record, Value};
use serde::Deserialize;

/// Where a source takes record keys and event times from.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stamping {
    pub(crate) key: Option<String>,
    pub(crate) event_time: Option<String>,
}

impl Stamping {
    /// Sets key and event time from the named fields.
    pub(crate) fn apply(&self, r: &mut Record) -> Result<(), String> {
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

/// A CSV node's `path` and `delimiter`.
pub(crate) fn check_csv(p: &std::path::Path, delimiter: &str) -> Result<(), ConfigError> {
    check_path(p)?;
    delimiter_byte(delimiter)
        .map(|_| ())
        .map_err(|m| ConfigError::at("delimiter", m))
}

pub(crate) fn check_path(p: &std::path::Path) -> Result<(), ConfigError> {
    if p.as_os_str().is_empty() {
        return Err(ConfigError::at("path", "`path` must not be empty"));
    }
    Ok(())
}

pub(crate) fn comma() -> String {
    ",".into()
}

pub(crate) fn delimiter_byte(d: &str) -> Result<u8, String> {
    match d.as_bytes() {
        [b] if b.is_ascii() => Ok(*b),
        _ if d == "\\t" => Ok(b'\t'),
        _ => Err(format!(
            "`delimiter` must be one ASCII character, got {d:?}"
        )),
    }
}

/// A record describing an unreadable line, for the dead-letter output.
pub(crate) fn bad_line(file: &str, line: u64, text: &str) -> Record {
    let mut f = Fields::default();
    f.insert("file".into(), Value::String(file.into()));
    f.insert("line".into(), Value::Int(line as i64));
    f.insert("text".into(), Value::String(text.into()));
    Record::new(f)
}

// ---------------------------------------------------------------------------

/// The state key of a file sink's committed length.
const OFFSET_KEY: &str = "offset";

/// How a sink's rows end (to find where the last whole row ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rows {
    /// One per line; a line never holds a raw `\n`.
    Lines,
    /// CSV: a `\n` inside quotes is part of a cell.
    Csv,
}

/// How many bytes of `tail` are whole rows (up to and with the last row
/// terminator outside quotes).
fn whole_rows(tail: &[u8], rows: Rows) -> usize {
    let mut quoted = false;
    let mut end = 0;
    for (i, b) in tail.iter().enumerate() {
        match b {
            b'"' if rows == Rows::Csv => quoted = !quoted,
            b'\n' if !quoted => end = i + 1,
            _ => {}
        }
    }
    end
}

/// Opens a sink's file: `(path, file, fresh)`, where a fresh file (a first
/// run) is to be started over at the first write or commit.
fn open_for_write(
    ctx: &BuildContext<'_>,
    path: &std::path::Path,
    rows: Rows,
) -> Result<(PathBuf, File, bool), NodeError> {
    let path = ctx.resolve(path);
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        rill_core::perms::create_shared_dirs(dir).map_err(|e| NodeError::io(dir, e))?;
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
        None => match ctx.extensions.get::<rill_core::node::ReplayRun>() {
            // a replay of dead letters adds to what the pipeline wrote:
            // from the length the file had when the replay first opened it
            Some(replay) => {
                let now = std::fs::metadata(&path).map_or(0, |m| m.len());
                Some(replay.base(&path, now)?)
            }
            None => None,
        },
    };
    let file = match committed {
        // a first run starts the file over, once it writes or commits: a
        // stage whose state was lost learns that from its producer first
        // (exit 2), and the file it had written is still there
        None => OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(cannot)?,
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
                return Err(NodeError::BadInput(format!(
                    "{} is {on_disk} bytes but {len} were committed to it: it was cut or replaced outside rill; run with --reset-state to write it again",
                    path.display()
                )));
            }
            let keep = if ctx.delivery == Delivery::ExactlyOnce {
                len
            } else {
                // at least once keeps what was written after the commit,
                // but not a row a crash cut in half
                let mut tail = Vec::new();
                f.seek(SeekFrom::Start(len))
                    .and_then(|_| std::io::Read::read_to_end(&mut f, &mut tail))
                    .map_err(|e| NodeError::io(&path, e))?;
                len + whole_rows(&tail, rows) as u64
            };
            if keep < on_disk {
                f.set_len(keep).map_err(|e| NodeError::io(&path, e))?;
            }
            f.seek(SeekFrom::End(0))
                .map_err(|e| NodeError::io(&path, e))?;
            f
        }
    };
    rill_core::perms::shared_file(&file).map_err(|e| NodeError::io(&path, e))?;
    Ok((path, file, committed.is_none()))
}

/// A sink's file. It stops writing once its stage has moved on to another
/// incarnation: a node abandoned by a call that timed out still runs, and
/// its buffer, flushed when it is dropped, must not land in the file the
/// next incarnation has cut back and writes.
struct SinkFile {
    file: File,
    state: KeyedState,
    /// A first run's file, to be started over before anything is written.
    start_over: std::cell::Cell<bool>,
}

impl SinkFile {
    fn new(file: File, state: &KeyedState, start_over: bool) -> SinkFile {
        SinkFile {
            file,
            state: state.clone(),
            start_over: std::cell::Cell::new(start_over),
        }
    }

    /// Starts a first run's file over (once).
    fn settle(&self) -> std::io::Result<()> {
        if self.start_over.replace(false) {
            self.file.set_len(0)?;
            (&self.file).seek(SeekFrom::Start(0))?;
        }
        Ok(())
    }
}

impl Write for SinkFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.state.retired() {
            return Err(std::io::Error::other(
                "this sink was abandoned: its stage runs another incarnation",
            ));
        }
        self.settle()?;
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
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
    fn validate(&self) -> Result<(), ConfigError> {
        check_path(&self.path)
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let (path, file, fresh) = open_for_write(ctx, &self.path, Rows::Lines)?;
        Ok(Node::Sink(Box::new(JsonSink {
            path,
            out: BufWriter::with_capacity(1 << 16, SinkFile::new(file, ctx.state, fresh)),
            state: ctx.state.clone(),
            line: Vec::new(),
        })))
    }
}

struct JsonSink {
    path: PathBuf,
    out: BufWriter<SinkFile>,
    state: KeyedState,
    /// One line at a time, its buffer kept between records.
    line: Vec<u8>,
}

impl Sink for JsonSink {
    fn write(&mut self, batch: Vec<Record>, _out: &mut Emitter) -> Result<(), NodeError> {
        for r in &batch {
            self.line.clear();
            write_record_json(&mut self.line, r);
            self.line.push(b'\n');
            self.out
                .write_all(&self.line)
                .map_err(|e| NodeError::io(&self.path, e))?;
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), NodeError> {
        self.out
            .get_ref()
            .settle()
            .and_then(|_| self.out.flush())
            .map_err(|e| NodeError::io(&self.path, e))?;
        checkpoint_file(&self.state, &self.path, &self.out.get_ref().file)
    }
}

/// `WriteToText`: each record's one field as a line (Beam's
/// `WriteToText`). A string is written as it is; another value as its
/// JSON text. A record with more or fewer fields, or whose text holds a
/// line break (it would read back as two records), fails.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteToText {
    pub path: PathBuf,
}

impl NodeConfig for WriteToText {
    fn kind(&self) -> NodeKind {
        NodeKind::Sink
    }
    fn validate(&self) -> Result<(), ConfigError> {
        check_path(&self.path)
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let (path, file, fresh) = open_for_write(ctx, &self.path, Rows::Lines)?;
        Ok(Node::Sink(Box::new(TextSink {
            path,
            out: BufWriter::with_capacity(1 << 16, SinkFile::new(file, ctx.state, fresh)),
            state: ctx.state.clone(),
        })))
    }
}

struct TextSink {
    path: PathBuf,
    out: BufWriter<SinkFile>,
    state: KeyedState,
}

impl Sink for TextSink {
    fn write(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        for r in batch {
            let text = match r.fields.len() {
                1 => match r.fields.values().next().expect("one field") {
                    Value::String(s) => s.to_string(),
                    Value::Null => String::new(),
                    other => value_to_json(other).to_string(),
                },
                n => {
                    let names: Vec<&str> = r.fields.keys().map(|k| k.as_str()).collect();
                    let msg = format!(
                        "WriteToText writes records of one field, this one has {n} ({}); select the one to write with MapToFields",
                        names.join(", ")
                    );
                    out.fail(r, msg);
                    continue;
                }
            };
            if text.contains(['\n', '\r']) {
                out.fail(
                    r,
                    "the text holds a line break: it would read back as more than one line",
                );
                continue;
            }
            self.out
                .write_all(text.as_bytes())
                .and_then(|_| self.out.write_all(b"\n"))
                .map_err(|e| NodeError::io(&self.path, e))?;
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), NodeError> {
        self.out
            .get_ref()
            .settle()
            .and_then(|_| self.out.flush())
            .map_err(|e| NodeError::io(&self.path, e))?;
        checkpoint_file(&self.state, &self.path, &self.out.get_ref().file)
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
    fn validate(&self) -> Result<(), ConfigError> {
        check_csv(&self.path, &self.delimiter)
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let (path, file, fresh) = open_for_write(ctx, &self.path, Rows::Csv)?;
        let has_content = !fresh && file.metadata().map(|m| m.len() > 0).unwrap_or(false);
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
            .from_writer(BufWriter::new(SinkFile::new(file, ctx.state, fresh)));
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
    writer: csv::Writer<BufWriter<SinkFile>>,
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
            .and_then(|_| self.writer.get_ref().get_ref().settle())
            .map_err(|e| NodeError::io(&self.path, e))?;
        checkpoint_file(
            &self.state,
            &self.path,
            &self.writer.get_ref().get_ref().file,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill_core::testkit;

    #[test]
    fn a_repeated_csv_column_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("in.csv"), "a,a,b\n1,2,3\n").unwrap();
        let e = testkit::build_yaml(
            &crate::registry(),
            "ReadFromCsv",
            "{path: in.csv}",
            dir.path(),
        )
        .unwrap_err();
        assert!(
            e.contains("in.csv:1: the CSV header names column `a` twice (columns 1 and 2)"),
            "{e}"
        );
        assert!(e.starts_with("bad input: "), "exit 2: {e}");
    }

    #[test]
    fn a_line_that_is_not_utf8_is_a_dead_letter() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("in.jsonl"),
            b"{\"a\": 1}\n{\"a\": \"\xff\"}\n{\"a\": 3}\n",
        )
        .unwrap();
        let Node::Source(mut s) = testkit::build_yaml(
            &crate::registry(),
            "ReadFromJson",
            "{path: in.jsonl}",
            dir.path(),
        )
        .unwrap() else {
            panic!()
        };
        let run = testkit::drain_source(s.as_mut(), 100).unwrap();
        assert_eq!(run.main.len(), 2, "the other lines flow on");
        assert_eq!(run.failures.len(), 1);
        assert_eq!(run.failures[0].msg, "in.jsonl:2:8: the line is not UTF-8");
        assert_eq!(run.failures[0].record.get("line"), Some(&Value::Int(2)));
    }

    #[test]
    fn an_abandoned_sink_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.jsonl");
        let state = KeyedState::default();
        let mut w = BufWriter::new(SinkFile::new(File::create(&path).unwrap(), &state, false));
        w.write_all(b"late\n").unwrap();
        let _next = state.detached();
        drop(w); // flushes into a retired sink file
        assert_eq!(std::fs::read(&path).unwrap(), b"");
    }

    #[test]
    fn a_torn_row_is_not_whole() {
        assert_eq!(whole_rows(b"", Rows::Lines), 0);
        assert_eq!(whole_rows(b"{\"a\":1}\n{\"a\":", Rows::Lines), 8);
        assert_eq!(whole_rows(b"a,b\n1,2\n", Rows::Csv), 8);
        // a newline in a quoted cell does not end the row
        assert_eq!(whole_rows(b"a,b\n1,\"x\ny", Rows::Csv), 4);
        assert_eq!(whole_rows(b"1,\"x\ny\"\n2,", Rows::Csv), 8);
    }

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
