//! The dead-letter queue of a stage: every dead letter it produces is also
//! appended, exactly once, to `<state_dir>/<pipeline>/_dlq/<stage>.jsonl`,
//! where `rill dlq list|show|replay` finds it (also while the pipeline runs,
//! and after it finished: the queue outlives the run's state).
//!
//! Each line is one JSON object: `id`, `stage`, `msg`, `attempts`, `time`
//! (ms since the epoch), `key`, `event_time` and `element` (the record's
//! fields). Lines are written at the stage's commit (fsynced, with the
//! file's length committed in the stage's store); a restarted stage cuts the
//! file back to its committed length, so a dead letter is listed once.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rill_core::Record;
use rill_core::json::{json_to_fields, value_to_json};
use serde_json::{Map, Value as Json, json};

/// The store key of the queue file's committed length.
pub const DLQ_LEN_KEY: &[u8] = b"m/dlq_len";

/// `<state_root>/<pipeline>/_dlq/<stage>.jsonl`.
pub fn dlq_path(state_root: &Path, pipeline: &str, stage_key: &str) -> PathBuf {
    state_root
        .join(pipeline)
        .join("_dlq")
        .join(format!("{stage_key}.jsonl"))
}

/// One dead letter as the queue keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Letter {
    pub id: String,
    pub stage: String,
    pub msg: String,
    pub attempts: u64,
    pub time: i64,
    pub record: Record,
}

impl Letter {
    /// The JSON line of a dead-letter record made by
    /// [`crate::stage::dead_letter`].
    pub fn line_of(dead: &Record) -> String {
        let f = &dead.fields;
        let get = |k: &str| f.get(k).map(value_to_json).unwrap_or(Json::Null);
        let o = json!({
            "id": format!("{:016x}", fastrand::u64(..)),
            "stage": get("stage"),
            "msg": get("msg"),
            "attempts": get("attempts"),
            "time": get("time"),
            "key": dead.key,
            "event_time": dead.event_time,
            "element": get("element"),
        });
        let mut s = o.to_string();
        s.push('\n');
        s
    }

    /// The letter as a line of a queue file (its id kept).
    pub fn to_line(&self) -> String {
        let o = json!({
            "id": self.id,
            "stage": self.stage,
            "msg": self.msg,
            "attempts": self.attempts,
            "time": self.time,
            "key": self.record.key,
            "event_time": self.record.event_time,
            "element": value_to_json(&rill_core::Value::Map(self.record.fields.clone())),
        });
        let mut s = o.to_string();
        s.push('\n');
        s
    }

    /// Parses one line of a queue file.
    pub fn parse(line: &str) -> Result<Letter, String> {
        let j: Json = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
        let o: &Map<String, Json> = j.as_object().ok_or("not a JSON object")?;
        let s = |k: &str| {
            o.get(k)
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let fields = json_to_fields(o.get("element").unwrap_or(&Json::Null))
            .map_err(|e| format!("`element`: {e}"))?;
        Ok(Letter {
            id: s("id"),
            stage: s("stage"),
            msg: s("msg"),
            attempts: o.get("attempts").and_then(Json::as_u64).unwrap_or(1),
            time: o.get("time").and_then(Json::as_i64).unwrap_or(0),
            record: Record {
                key: o.get("key").and_then(Json::as_str).map(Into::into),
                event_time: o.get("event_time").and_then(Json::as_i64).unwrap_or(0),
                fields,
                window: None,
            },
        })
    }
}

/// Reads a queue file (missing: empty). Lines that do not parse are
/// reported with their line number.
pub fn read(path: &Path) -> Result<Vec<Letter>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| Letter::parse(l).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1)))
        .collect()
}

/// Rewrites a queue file without the letters whose ids are in `drop`
/// (atomically: a new file renamed over the old one).
pub fn remove(path: &Path, drop: &std::collections::HashSet<String>) -> Result<usize, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut kept = String::new();
    let mut removed = 0;
    for l in text.lines() {
        let id = Letter::parse(l).map(|d| d.id).unwrap_or_default();
        if drop.contains(&id) {
            removed += 1;
        } else {
            kept.push_str(l);
            kept.push('\n');
        }
    }
    if removed > 0 {
        write_atomic(path, kept.as_bytes())?;
    }
    Ok(removed)
}

/// Replaces `path` with `bytes` so that a crash leaves the old file or the
/// new one, whole: a new file, fsynced, renamed over the old one, and the
/// directory fsynced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(d) = path.parent() {
            File::open(d)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| format!("{}: {e}", path.display()))
}

/// Appends to the queue at `path` the letters of `lines` (queue lines)
/// whose ids it does not hold yet, and fsyncs; returns how many. Running it
/// twice adds nothing the second time.
pub fn add_missing(path: &Path, lines: &str) -> Result<usize, String> {
    // an append cut short by a crash left part of a line: drop it (its
    // letter is added again below)
    if let Ok(bytes) = std::fs::read(path)
        && bytes.last().is_some_and(|b| *b != b'\n')
    {
        let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        write_atomic(path, &bytes[..keep])?;
    }
    let held: std::collections::HashSet<String> = read(path)?.into_iter().map(|l| l.id).collect();
    let mut add = String::new();
    let mut n = 0;
    for l in lines.lines().filter(|l| !l.trim().is_empty()) {
        let id = Letter::parse(l).map(|d| d.id)?;
        if !held.contains(&id) {
            add.push_str(l);
            add.push('\n');
            n += 1;
        }
    }
    if n > 0 {
        let io = |e: std::io::Error| format!("{}: {e}", path.display());
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(io)?;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        f.write_all(add.as_bytes()).map_err(io)?;
        f.sync_data().map_err(io)?;
    }
    Ok(n)
}

/// A stage's queue file while it runs.
#[derive(Debug)]
pub struct DlqFile {
    path: PathBuf,
    pending: Vec<u8>,
    committed_len: u64,
}

impl DlqFile {
    /// Opens the queue at `path`; `committed` is the length the stage's
    /// store holds (none in a new run: the file's present length).
    pub fn open(path: PathBuf, committed: Option<u64>) -> Result<DlqFile, String> {
        let on_disk = std::fs::metadata(&path).map_or(0, |m| m.len());
        let committed_len = match committed {
            None => on_disk,
            Some(len) if len > on_disk => {
                return Err(format!(
                    "the dead-letter queue {} is {on_disk} bytes but {len} were committed to it: it was cut outside rill",
                    path.display()
                ));
            }
            Some(len) => len,
        };
        let mut d = DlqFile {
            path,
            pending: Vec::new(),
            committed_len,
        };
        d.rollback()?;
        Ok(d)
    }

    /// The length of the queue as of the last commit.
    pub fn committed_len(&self) -> u64 {
        self.committed_len
    }

    pub fn push(&mut self, dead: &Record) {
        self.pending
            .extend_from_slice(Letter::line_of(dead).as_bytes());
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Appends what is pending and fsyncs; returns the length to commit.
    pub fn write(&mut self) -> Result<u64, String> {
        let io = |e: std::io::Error| format!("{}: {e}", self.path.display());
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.path)
            .map_err(io)?;
        // the letters go right after what is committed, whatever a failed
        // rollback left past it
        f.seek(SeekFrom::Start(self.committed_len)).map_err(io)?;
        f.write_all(&self.pending).map_err(io)?;
        f.set_len(self.committed_len + self.pending.len() as u64)
            .map_err(io)?;
        f.sync_data().map_err(io)?;
        Ok(self.committed_len + self.pending.len() as u64)
    }

    /// The length from [`Self::write`] is committed.
    pub fn committed(&mut self, len: u64) {
        self.committed_len = len;
        self.pending.clear();
    }

    /// Forgets what is pending and cuts the file back to its committed
    /// length.
    pub fn rollback(&mut self) -> Result<(), String> {
        self.pending.clear();
        let on_disk = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if on_disk > self.committed_len {
            OpenOptions::new()
                .write(true)
                .open(&self.path)
                .and_then(|f| f.set_len(self.committed_len))
                .map_err(|e| format!("{}: {e}", self.path.display()))?;
        }
        Ok(())
    }
}
