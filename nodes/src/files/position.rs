//! Where a file source is in its file, and whether the file is still the
//! one it was reading.
//!
//! At every commit of the stage a file source puts its [`FilePos`] into its
//! keyed state: the byte offset just past the last record it made, the line
//! number there, how many records (and failures) it has made, and a
//! fingerprint of the bytes it read. A restarted source seeks to that offset
//! instead of reading the file again, so resuming costs the same at line 10
//! as at line 10,000,000.
//!
//! Before it seeks it checks the file ([`FilePos::check`]), cheaply:
//! - the file must be at least `offset` bytes long (else it was truncated
//!   or replaced by a shorter one);
//! - its first [`WINDOW`] bytes (or fewer, up to the offset) must hash as
//!   they did (else it was replaced or rewritten from its start);
//! - the [`WINDOW`] bytes just before the offset must hash as they did (else
//!   it was rewritten before the point the pipeline had reached, or the
//!   offset no longer falls at the end of a line).
//!
//! Bytes after the offset are free to change: a file that grew by appends
//! resumes where it was. A change in the middle of the part already read,
//! away from both windows, is not seen: that would take reading the whole
//! prefix again, which is what this avoids. The file's identity (device and
//! inode) is not required to match: a copy of the same bytes is the same
//! input; the message names it when it differs.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use rill_core::node::NodeError;
use rill_core::state::KeyedState;
use rill_core::{Fields, Value};

/// How many bytes each fingerprint covers.
pub const WINDOW: u64 = 4096;

/// The state key of a file source's position.
const POS_KEY: &str = "file_pos";

/// A file source's committed position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilePos {
    /// Bytes read: the next record starts here.
    pub offset: u64,
    /// Lines (JSON) or the CSV line number of the next record.
    pub line: u64,
    /// Records made so far, emitted and failed.
    pub records: u64,
    /// Hash of bytes `[0, min(WINDOW, offset))`.
    pub head: u64,
    /// Hash of bytes `[offset - min(WINDOW, offset), offset)`.
    pub tail: u64,
    /// Device and inode of the file read (to name a replaced file).
    pub dev: u64,
    pub ino: u64,
}

/// FNV-1a, 64 bits: stable across versions and platforms.
fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The hash of `len` bytes of `file` from `at`, or `None` when fewer are
/// there.
fn hash_at(file: &File, at: u64, len: u64) -> std::io::Result<Option<u64>> {
    let mut buf = vec![0u8; len as usize];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], at + got as u64) {
            Ok(0) => return Ok(None),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(fnv(&buf)))
}

impl FilePos {
    /// Fills in the fingerprint of `file` at `offset` (reads at most two
    /// windows, from the page cache: they were just read). `head` is kept
    /// from `prev` once the offset is past the first window.
    pub fn at(
        file: &File,
        offset: u64,
        line: u64,
        records: u64,
        prev: &FilePos,
    ) -> std::io::Result<FilePos> {
        let head_len = offset.min(WINDOW);
        let head = if prev.offset >= WINDOW && head_len == WINDOW {
            prev.head
        } else {
            hash_at(file, 0, head_len)?.unwrap_or(0)
        };
        let tail_len = offset.min(WINDOW);
        let tail = hash_at(file, offset - tail_len, tail_len)?.unwrap_or(0);
        let meta = file.metadata()?;
        Ok(FilePos {
            offset,
            line,
            records,
            head,
            tail,
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Whether `file` (opened at `path`) still holds what was read of it;
    /// if not, says what changed.
    pub fn check(&self, file: &File, path: &Path) -> Result<(), NodeError> {
        let io = |e: std::io::Error| NodeError::io(path, e);
        let meta = file.metadata().map_err(io)?;
        let changed = |what: String| {
            let other = if (meta.dev(), meta.ino()) != (self.dev, self.ino) {
                " (it is another file than the one read: replaced)"
            } else {
                ""
            };
            NodeError::BadInput(format!(
                "{} changed since the last commit: {what}{other}; the pipeline had read {} bytes ({} lines, {} records) of it. Restore the file, or run with --reset-state to read it again from the start",
                path.display(),
                self.offset,
                self.line,
                self.records
            ))
        };
        if meta.len() < self.offset {
            return Err(changed(format!(
                "it is {} bytes long now (truncated)",
                meta.len()
            )));
        }
        let head_len = self.offset.min(WINDOW);
        if hash_at(file, 0, head_len).map_err(io)? != Some(self.head) {
            return Err(changed(format!(
                "its first {head_len} bytes are not the ones read (replaced or rewritten)"
            )));
        }
        let tail_len = self.offset.min(WINDOW);
        if hash_at(file, self.offset - tail_len, tail_len).map_err(io)? != Some(self.tail) {
            return Err(changed(format!(
                "the {tail_len} bytes before byte {} are not the ones read (rewritten)",
                self.offset
            )));
        }
        Ok(())
    }

    /// The position of a source that reads a file whole, by records
    /// (Parquet, Avro): `offset` and `line` count the file's records read,
    /// and the fingerprint covers the first and the last [`WINDOW`] bytes
    /// of the file, which such a file never changes.
    pub fn whole(file: &File, rows: u64, records: u64) -> std::io::Result<FilePos> {
        let meta = file.metadata()?;
        let len = meta.len();
        let head = hash_at(file, 0, len.min(WINDOW))?.unwrap_or(0);
        let tail = hash_at(file, len - len.min(WINDOW), len.min(WINDOW))?.unwrap_or(0);
        Ok(FilePos {
            offset: rows,
            line: rows,
            records,
            head,
            tail,
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Whether a file read whole is the one [`FilePos::whole`] saw.
    pub fn check_whole(&self, file: &File, path: &Path) -> Result<(), NodeError> {
        let now =
            FilePos::whole(file, self.offset, self.records).map_err(|e| NodeError::io(path, e))?;
        if (now.head, now.tail) != (self.head, self.tail) {
            return Err(NodeError::BadInput(format!(
                "{} changed since the last commit (the pipeline had read {} of its records): restore it, or run with --reset-state to read it again from the start",
                path.display(),
                self.offset
            )));
        }
        Ok(())
    }

    /// The position committed in `state`, if any.
    pub fn load(state: &KeyedState) -> Result<Option<FilePos>, NodeError> {
        let Some(v) = state.get_value(POS_KEY)? else {
            return Ok(None);
        };
        let bad = || NodeError::failed(format!("the committed file position is malformed: {v}"));
        let Value::Map(m) = &v else {
            return Err(bad());
        };
        let get = |k: &str| match m.get(k) {
            Some(Value::Int(i)) => Ok(*i as u64),
            _ => Err(bad()),
        };
        Ok(Some(FilePos {
            offset: get("offset")?,
            line: get("line")?,
            records: get("records")?,
            head: get("head")?,
            tail: get("tail")?,
            dev: get("dev")?,
            ino: get("ino")?,
        }))
    }

    /// Puts the position into `state` (committed with the stage).
    pub fn save(&self, state: &KeyedState) -> Result<(), NodeError> {
        let mut m = Fields::default();
        for (k, v) in [
            ("offset", self.offset),
            ("line", self.line),
            ("records", self.records),
            ("head", self.head),
            ("tail", self.tail),
            ("dev", self.dev),
            ("ino", self.ino),
        ] {
            m.insert(k.into(), Value::Int(v as i64));
        }
        state.put_value(POS_KEY, &Value::Map(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos_of(path: &Path, offset: u64) -> FilePos {
        let f = File::open(path).unwrap();
        FilePos::at(&f, offset, 3, 3, &FilePos::default()).unwrap()
    }

    fn check(path: &Path, pos: &FilePos) -> Result<(), String> {
        let f = File::open(path).unwrap();
        pos.check(&f, path).map_err(|e| e.to_string())
    }

    #[test]
    fn appends_pass_and_changes_before_the_offset_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.jsonl");
        // long enough that head and tail windows do not overlap
        let lines: String = (0..2000).map(|i| format!("{{\"i\": {i}}}\n")).collect();
        std::fs::write(&p, &lines).unwrap();
        let offset = lines.len() as u64 - 100;
        let pos = pos_of(&p, offset);
        assert_eq!(check(&p, &pos), Ok(()));

        // appended: fine
        std::fs::write(&p, format!("{lines}{{\"i\": 2000}}\n")).unwrap();
        assert_eq!(check(&p, &pos), Ok(()));
        // changed after the offset: fine
        let mut after = lines.clone().into_bytes();
        let n = after.len();
        after[n - 5] = b'9';
        std::fs::write(&p, &after).unwrap();
        assert_eq!(check(&p, &pos), Ok(()));

        // truncated
        std::fs::write(&p, &lines[..1000]).unwrap();
        let e = check(&p, &pos).unwrap_err();
        assert!(e.starts_with("bad input: "), "{e}");
        assert!(e.contains("1000 bytes long now (truncated)"), "{e}");
        assert!(e.contains("--reset-state"), "{e}");
        // rewritten at the start
        std::fs::write(&p, lines.replacen("{\"i\": 1}", "{\"i\": 7}", 1)).unwrap();
        let e = check(&p, &pos).unwrap_err();
        assert!(e.contains("first 4096 bytes"), "{e}");
        // rewritten just before the offset
        let mut before = lines.clone().into_bytes();
        before[offset as usize - 10] = b'8';
        std::fs::write(&p, &before).unwrap();
        let e = check(&p, &pos).unwrap_err();
        assert!(e.contains(&format!("before byte {offset}")), "{e}");
        // replaced by another file with other bytes
        let other = dir.path().join("other");
        std::fs::write(&other, lines.replace("\"i\"", "\"j\"")).unwrap();
        std::fs::rename(&other, &p).unwrap();
        let e = check(&p, &pos).unwrap_err();
        assert!(e.contains("replaced"), "{e}");
    }

    #[test]
    fn a_short_offset_fingerprints_what_there_is_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.csv");
        std::fs::write(&p, "a,b\n1,2\n").unwrap();
        let pos = pos_of(&p, 4);
        assert_eq!(check(&p, &pos), Ok(()));
        std::fs::write(&p, "a,c\n1,2\n").unwrap();
        assert!(check(&p, &pos).unwrap_err().contains("first 4 bytes"));
        let state = KeyedState::default();
        assert_eq!(FilePos::load(&state).unwrap(), None);
        pos.save(&state).unwrap();
        assert_eq!(FilePos::load(&state).unwrap(), Some(pos));
        assert_eq!(
            pos_of(&p, 0).check(&File::open(&p).unwrap(), &p).ok(),
            Some(())
        );
    }
}
