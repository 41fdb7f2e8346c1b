//! Sinks of formats that cannot be appended to (Parquet, Avro): records are
//! staged, and become a part file that is visible only once whole.
//!
//! `path: out/events.parquet` makes `out/events-000001.parquet`,
//! `out/events-000002.parquet`, ... Each record the sink is given is
//! appended to a staging file (`out/.events.parquet.staging-G`, hidden),
//! which is made durable at every commit of the stage and whose committed
//! length is in the stage's state, as a JSON Lines sink's file is. At the
//! first commit after the staged records reach `part_records` or
//! `part_bytes`, or are `part_interval` old, or when the input ends, the
//! sink writes them as one part: to a hidden temporary file named with the
//! part's number and the stage's attempt, `fsync`, renamed to its name,
//! `fsync` of the folder, and the part number goes into the same commit.
//!
//! A restarted sink deletes what a killed attempt left: temporary files,
//! a part numbered past the last commit (renamed, but its commit did not
//! land: its records come again), staging files of other generations; and
//! cuts its staging file back to the committed length. Each record is thus
//! in exactly one part (`exactly_once`). A reader that lists the folder
//! between a part's rename and its commit, and the commit then fails, sees
//! that part until the restarted sink deletes it.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rill_core::node::{BuildContext, ConfigError, Emitter, NodeError, Sink};
use rill_core::state::KeyedState;
use rill_core::{Fields, Record, Value};

use super::SinkFile;
use super::columnar::Columns;

const SEQ_KEY: &str = "parts/seq";
const STAGED_KEY: &str = "parts/staged";
const STAGED_RECORDS_KEY: &str = "parts/records";
const STAGED_SINCE_KEY: &str = "parts/since";
const SCHEMA_KEY: &str = "parts/schema";

/// When a part is written.
#[derive(Debug, Clone, Copy)]
pub struct Roll {
    pub records: u64,
    pub bytes: u64,
    pub interval: Duration,
}

/// A columnar format's writer of one part.
pub(crate) trait PartWriter {
    /// Writes records (checked against the columns).
    fn write(&mut self, records: &[Record]) -> Result<(), String>;
    /// Ends the file (footer) and hands it back.
    fn finish(self: Box<Self>) -> Result<File, String>;
}

/// A columnar format.
pub(crate) trait PartFormat: Send {
    /// The file name extension (without the dot).
    fn ext(&self) -> &'static str;
    /// Starts a part in `file` with these columns.
    fn begin(&self, cols: &Columns, file: File) -> Result<Box<dyn PartWriter>, String>;
}

/// How many records a part is handed at once.
pub const CHUNK: usize = 8192;

/// Where the parts of a staged sink go: files in a folder, a table.
pub trait PartTarget: Send {
    /// At build: deletes what a killed attempt left, given the number of
    /// the last part the stage committed (`None`: a first run); returns the
    /// number to go on from.
    fn recover(&mut self, committed: Option<u64>, ctx: &BuildContext<'_>)
    -> Result<u64, NodeError>;

    /// At every checkpoint, before anything else.
    fn settle(&mut self) -> Result<(), NodeError> {
        Ok(())
    }

    /// Writes the staged records as part `seq`, in the stage's checkpoint
    /// (before its commit). What it puts into `state` is committed with it.
    fn write_part(
        &mut self,
        seq: u64,
        cols: &Columns,
        chunks: &mut StagedChunks,
        state: &KeyedState,
    ) -> Result<(), NodeError>;

    /// The stage's commit landed (a part written in its checkpoint is now
    /// the stage's: a table commits it).
    fn committed(&mut self, _state: &KeyedState) -> Result<(), NodeError> {
        Ok(())
    }

    /// Whether a record may bring a field that is not a column yet (the
    /// table's schema evolves); else it fails.
    fn evolves(&self) -> bool {
        false
    }

    /// The columns records must fit, where the target has them (a table
    /// that exists), called after [`PartTarget::recover`].
    fn columns(&self) -> Option<Columns> {
        None
    }
}

/// The staged records of a part, a chunk at a time.
pub struct StagedChunks {
    path: PathBuf,
    reader: std::io::Take<BufReader<File>>,
}

impl StagedChunks {
    /// The next at most [`CHUNK`] records; empty at the end.
    pub fn next_chunk(&mut self) -> Result<Vec<Record>, NodeError> {
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut len = [0u8; 4];
        let mut buf = Vec::new();
        while chunk.len() < CHUNK {
            match self.reader.read_exact(&mut len) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(NodeError::io(&self.path, e)),
            }
            buf.resize(u32::from_le_bytes(len) as usize, 0);
            self.reader
                .read_exact(&mut buf)
                .map_err(|e| NodeError::io(&self.path, e))?;
            let fields: Fields = rill_core::codec::decode(&buf).map_err(|e| {
                NodeError::failed(format!("{}: a staged record: {e}", self.path.display()))
            })?;
            chunk.push(Record::new(fields));
        }
        Ok(chunk)
    }
}

/// Where a sink's files go: `dir/stem-NNNNNN.ext`.
#[derive(Debug, Clone)]
struct Names {
    dir: PathBuf,
    stem: String,
    ext: String,
}

impl Names {
    fn new(path: &Path, default_ext: &str) -> Names {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (stem, ext) = match file.rsplit_once('.') {
            Some((s, e)) if !s.is_empty() && !e.is_empty() => (s.to_owned(), e.to_owned()),
            _ => (file, default_ext.to_owned()),
        };
        Names { dir, stem, ext }
    }

    fn part(&self, seq: u64) -> PathBuf {
        self.dir
            .join(format!("{}-{seq:06}.{}", self.stem, self.ext))
    }

    fn temp(&self, seq: u64, attempt: u32) -> PathBuf {
        self.dir.join(format!(
            ".{}-{seq:06}.{}.{attempt}.tmp",
            self.stem, self.ext
        ))
    }

    /// The number of a part's file name, if it is one of this sink's.
    fn part_seq(&self, name: &str) -> Option<u64> {
        let rest = name.strip_prefix(&self.stem)?.strip_prefix('-')?;
        let num = rest.strip_suffix(&self.ext)?.strip_suffix('.')?;
        (num.len() >= 6 && num.bytes().all(|b| b.is_ascii_digit()))
            .then(|| num.parse().ok())
            .flatten()
    }

    fn is_temp(&self, name: &str) -> bool {
        name.starts_with(&format!(".{}-", self.stem)) && name.ends_with(".tmp")
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The options every staged sink has.
#[derive(Debug, Clone)]
pub struct PartOpts {
    /// The folder of the staging files, and their name's stem.
    pub staging_dir: PathBuf,
    pub staging_stem: String,
    pub schema: Option<indexmap::IndexMap<String, String>>,
    pub roll: Roll,
}

impl Roll {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.records == 0 {
            return Err(ConfigError::at("part_records", "must be at least 1"));
        }
        Ok(())
    }
}

/// Checks a declared `schema`.
pub fn check_schema(
    schema: &Option<indexmap::IndexMap<String, String>>,
) -> Result<(), ConfigError> {
    if let Some(s) = schema {
        Columns::declared(s).map_err(|(k, e)| ConfigError::at_path(["schema", k.as_str()], e))?;
    }
    Ok(())
}

/// Part files in a folder: `dir/stem-NNNNNN.ext`, each written to a hidden
/// temporary file and renamed.
pub(crate) struct FileParts<F: PartFormat> {
    format: F,
    names: Names,
    attempt: u32,
    /// Parts of an earlier run to delete at the first commit (a first run).
    start_over: bool,
    state: KeyedState,
}

impl<F: PartFormat> FileParts<F> {
    /// The sink's options and target for `path`.
    pub(crate) fn new(
        ctx: &BuildContext<'_>,
        path: &Path,
        format: F,
    ) -> (FileParts<F>, PathBuf, String) {
        let names = Names::new(&ctx.resolve(path), format.ext());
        let dir = names.dir.clone();
        let stem = format!("{}.{}", names.stem, names.ext);
        (
            FileParts {
                format,
                names,
                attempt: ctx.attempt,
                start_over: false,
                state: ctx.state.clone(),
            },
            dir,
            stem,
        )
    }
}

impl<F: PartFormat> PartTarget for FileParts<F> {
    fn recover(
        &mut self,
        committed: Option<u64>,
        ctx: &BuildContext<'_>,
    ) -> Result<u64, NodeError> {
        let names = &self.names;
        let io = |p: &Path| {
            let p = p.to_owned();
            move |e: std::io::Error| NodeError::io(&p, e)
        };
        // parts already there (a replay adds after them; a first run
        // starts over at its first commit)
        let mut on_disk = Vec::new();
        for e in std::fs::read_dir(&names.dir).map_err(io(&names.dir))? {
            let e = e.map_err(io(&names.dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if names.is_temp(&name) {
                // a killed attempt's part in the making
                std::fs::remove_file(e.path()).map_err(io(&e.path()))?;
            } else if let Some(s) = names.part_seq(&name) {
                on_disk.push(s);
            }
        }
        let replay = ctx.extensions.get::<rill_core::node::ReplayRun>().is_some();
        Ok(match committed {
            Some(s) => {
                // renamed, but the commit did not land: its records come again
                for late in on_disk.iter().filter(|n| **n > s) {
                    let p = names.part(*late);
                    std::fs::remove_file(&p).map_err(io(&p))?;
                }
                s
            }
            None if replay => on_disk.iter().copied().max().unwrap_or(0),
            None => {
                self.start_over = !on_disk.is_empty();
                0
            }
        })
    }

    fn settle(&mut self) -> Result<(), NodeError> {
        if !std::mem::take(&mut self.start_over) {
            return Ok(());
        }
        let dir = &self.names.dir;
        for e in std::fs::read_dir(dir).map_err(|e| NodeError::io(dir, e))? {
            let e = e.map_err(|e| NodeError::io(dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if self.names.part_seq(&name).is_some() {
                std::fs::remove_file(e.path()).map_err(|x| NodeError::io(e.path(), x))?;
            }
        }
        Ok(())
    }

    fn write_part(
        &mut self,
        seq: u64,
        cols: &Columns,
        chunks: &mut StagedChunks,
        _state: &KeyedState,
    ) -> Result<(), NodeError> {
        let temp = self.names.temp(seq, self.attempt);
        let io = |p: &Path| {
            let p = p.to_owned();
            move |e: std::io::Error| NodeError::io(&p, e)
        };
        let out = File::create(&temp).map_err(io(&temp))?;
        rill_core::perms::shared_file(&out).map_err(io(&temp))?;
        let fail = |e: String| NodeError::failed(format!("{}: {e}", temp.display()));
        let mut w = self.format.begin(cols, out).map_err(fail)?;
        loop {
            let chunk = chunks.next_chunk()?;
            if chunk.is_empty() {
                break;
            }
            w.write(&chunk).map_err(fail)?;
        }
        let out = w.finish().map_err(fail)?;
        out.sync_all().map_err(io(&temp))?;
        drop(out);
        if self.state.retired() {
            return Err(NodeError::failed(
                "this sink was abandoned: its stage runs another incarnation",
            ));
        }
        let part = self.names.part(seq);
        std::fs::rename(&temp, &part).map_err(io(&part))?;
        sync_dir(&self.names.dir).map_err(io(&self.names.dir))?;
        tracing::debug!(part = %part.display(), "part written");
        Ok(())
    }
}

/// A sink that stages records and hands them to its [`PartTarget`] a part
/// at a time.
pub struct PartSink<T: PartTarget> {
    target: T,
    dir: PathBuf,
    stem: String,
    roll: Roll,
    state: KeyedState,
    cols: Option<Columns>,
    cols_dirty: bool,
    /// The last part written (committed or in this commit).
    seq: u64,
    staging: BufWriter<SinkFile>,
    staging_path: PathBuf,
    staged_bytes: u64,
    staged_records: u64,
    /// When the first staged record came (ms since the epoch).
    staged_since: Option<i64>,
    finished: bool,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn get_int(state: &KeyedState, key: &str) -> Result<Option<u64>, NodeError> {
    match state.get_value(key)? {
        None => Ok(None),
        Some(Value::Int(i)) if i >= 0 => Ok(Some(i as u64)),
        Some(other) => Err(NodeError::failed(format!(
            "the sink's state `{key}` is malformed: {other}"
        ))),
    }
}

fn staging_name(stem: &str, generation: u64) -> String {
    format!(".{stem}.staging-{generation}")
}

impl<T: PartTarget> PartSink<T> {
    pub fn build(
        ctx: &BuildContext<'_>,
        opts: &PartOpts,
        mut target: T,
    ) -> Result<PartSink<T>, NodeError> {
        let dir = opts.staging_dir.clone();
        let stem = opts.staging_stem.clone();
        rill_core::perms::create_shared_dirs(&dir).map_err(|e| NodeError::io(&dir, e))?;
        let io = |p: &Path| {
            let p = p.to_owned();
            move |e: std::io::Error| NodeError::io(&p, e)
        };
        let seq = target.recover(get_int(ctx.state, SEQ_KEY)?, ctx)?;
        // staging files of other generations are done with
        let prefix = format!(".{stem}.staging-");
        for e in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let e = e.map_err(io(&dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name
                .strip_prefix(&prefix)
                .and_then(|g| g.parse::<u64>().ok())
                .is_some_and(|g| g != seq)
            {
                std::fs::remove_file(e.path()).map_err(io(&e.path()))?;
            }
        }
        let staging_path = dir.join(staging_name(&stem, seq));
        let staged = get_int(ctx.state, STAGED_KEY)?.unwrap_or(0);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&staging_path)
            .map_err(io(&staging_path))?;
        let len = file.metadata().map_err(io(&staging_path))?.len();
        if len < staged {
            return Err(NodeError::BadInput(format!(
                "{} is {len} bytes but {staged} were committed to it: it was cut or removed outside rill; run with --reset-state to write again",
                staging_path.display()
            )));
        }
        // what was staged after the commit comes again
        file.set_len(staged).map_err(io(&staging_path))?;
        file.seek(SeekFrom::End(0)).map_err(io(&staging_path))?;
        rill_core::perms::shared_file(&file).map_err(io(&staging_path))?;
        let cols = match ctx.state.get_value(SCHEMA_KEY)? {
            Some(v) => Some(Columns::from_value(&v).map_err(NodeError::failed)?),
            None if target.columns().is_some() => target.columns(),
            None => match &opts.schema {
                Some(s) => Some(
                    Columns::declared(s)
                        .map_err(|(k, e)| NodeError::failed(format!("schema.{k}: {e}")))?,
                ),
                None => None,
            },
        };
        Ok(PartSink {
            target,
            dir,
            stem,
            roll: opts.roll,
            state: ctx.state.clone(),
            cols_dirty: cols.is_some(),
            cols,
            seq,
            staging: BufWriter::with_capacity(1 << 16, SinkFile::new(file, ctx.state, false)),
            staging_path,
            staged_bytes: staged,
            staged_records: get_int(ctx.state, STAGED_RECORDS_KEY)?.unwrap_or(0),
            staged_since: get_int(ctx.state, STAGED_SINCE_KEY)?.map(|t| t as i64),
            finished: false,
        })
    }

    fn due(&self) -> bool {
        self.staged_records > 0
            && (self.finished
                || self.staged_records >= self.roll.records
                || self.staged_bytes >= self.roll.bytes
                || self
                    .staged_since
                    .is_some_and(|t| now_ms() - t >= self.roll.interval.as_millis() as i64))
    }

    /// Hands the staged records to the target as the next part.
    fn write_part(&mut self) -> Result<(), NodeError> {
        let next = self.seq + 1;
        let io = |p: &Path| {
            let p = p.to_owned();
            move |e: std::io::Error| NodeError::io(&p, e)
        };
        let cols = self.cols.clone().unwrap_or_default();
        let mut chunks = StagedChunks {
            path: self.staging_path.clone(),
            reader: BufReader::with_capacity(
                1 << 16,
                File::open(&self.staging_path).map_err(io(&self.staging_path))?,
            )
            .take(self.staged_bytes),
        };
        self.target
            .write_part(next, &cols, &mut chunks, &self.state)?;
        // the next records go to a staging file of the next generation;
        // this one is deleted once this commit has landed
        let path = self.dir.join(staging_name(&self.stem, next));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        rill_core::perms::shared_file(&file).map_err(io(&path))?;
        self.staging_path = path;
        self.staging = BufWriter::with_capacity(1 << 16, SinkFile::new(file, &self.state, false));
        self.seq = next;
        self.staged_bytes = 0;
        self.staged_records = 0;
        self.staged_since = None;
        Ok(())
    }
}

impl<T: PartTarget> Sink for PartSink<T> {
    fn write(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        if self.cols.is_none() {
            self.cols = Some(Columns::infer(&batch));
            self.cols_dirty = true;
        }
        let evolves = self.target.evolves();
        let cols = self.cols.as_mut().expect("set above");
        for r in batch {
            match cols.check(&r, evolves) {
                Ok(changed) => self.cols_dirty |= changed,
                Err(msg) => {
                    out.fail(r, msg);
                    continue;
                }
            }
            let bytes = rill_core::codec::encode(&r.fields)
                .map_err(|e| NodeError::failed(format!("cannot encode a record: {e}")))?;
            self.staging
                .write_all(&(bytes.len() as u32).to_le_bytes())
                .and_then(|_| self.staging.write_all(&bytes))
                .map_err(|e| NodeError::io(&self.staging_path, e))?;
            self.staged_bytes += 4 + bytes.len() as u64;
            self.staged_records += 1;
            if self.staged_since.is_none() {
                self.staged_since = Some(now_ms());
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), NodeError> {
        self.finished = true;
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), NodeError> {
        self.target.settle()?;
        self.staging
            .flush()
            .map_err(|e| NodeError::io(&self.staging_path, e))?;
        self.staging
            .get_ref()
            .file
            .sync_data()
            .map_err(|e| NodeError::io(&self.staging_path, e))?;
        if self.due() {
            let before = self.seq;
            self.write_part()?;
            // the generation before the last is certainly committed
            if let Some(prev) = before.checked_sub(1) {
                let _ = std::fs::remove_file(self.dir.join(staging_name(&self.stem, prev)));
            }
        }
        if self.cols_dirty
            && let Some(c) = &self.cols
        {
            self.state.put_value(SCHEMA_KEY, &c.to_value())?;
            self.cols_dirty = false;
        }
        self.state
            .put_value(SEQ_KEY, &Value::Int(self.seq as i64))?;
        self.state
            .put_value(STAGED_KEY, &Value::Int(self.staged_bytes as i64))?;
        self.state
            .put_value(STAGED_RECORDS_KEY, &Value::Int(self.staged_records as i64))?;
        match self.staged_since {
            Some(t) => self.state.put_value(STAGED_SINCE_KEY, &Value::Int(t))?,
            None => self.state.delete(STAGED_SINCE_KEY.as_bytes()),
        }
        Ok(())
    }

    fn committed(&mut self) -> Result<(), NodeError> {
        self.target.committed(&self.state)
    }

    fn two_phase(&self) -> bool {
        true
    }

    fn checkpoint_due(&self) -> bool {
        !self.finished && self.due()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_parts_temps_and_staging() {
        let n = Names::new(Path::new("out/events.parquet"), "parquet");
        assert_eq!(n.part(3), PathBuf::from("out/events-000003.parquet"));
        assert_eq!(n.part_seq("events-000003.parquet"), Some(3));
        assert_eq!(n.part_seq("events-1234567.parquet"), Some(1_234_567));
        assert_eq!(n.part_seq("events-00003.parquet"), None);
        assert_eq!(n.part_seq("other-000003.parquet"), None);
        assert_eq!(n.part_seq("events-000003.avro"), None);
        assert!(n.is_temp(".events-000004.parquet.2.tmp"));
        let bare = Names::new(Path::new("events"), "avro");
        assert_eq!(bare.part(1), PathBuf::from("./events-000001.avro"));
    }
}
