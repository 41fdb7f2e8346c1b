//! The files a source reads: one path, a glob, a glob watched for new
//! files, or one file followed as it grows; and what the source commits to
//! resume exactly where it was.
//!
//! State (the source's keyed state, committed with the stage):
//! - `file_pos`: the [`FilePos`] in the file being read, whose `records`
//!   counts every record the source made, over all its files;
//! - `file_cur`: that file's name (absent in state written before globs:
//!   then it is the configured path);
//! - `done/NAME`: each file read to its end (globs), so a restarted or
//!   watching source never reads it again.
//!
//! A glob's files are read one after another in the order of their names;
//! a watched glob takes each new file once it has not changed for
//! [`SETTLE`] (write files elsewhere and rename them in to have them taken
//! at once, whole).

use std::collections::{HashSet, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rill_core::node::{BuildContext, ConfigError, Emitter, NodeError, SourceStatus};
use rill_core::state::KeyedState;
use rill_core::{Name, Value};

use super::Rows;
use super::growing::Growing;
use super::position::FilePos;
use super::readers::{FileReader, Stamp};

/// How long a new file of a watched glob must stay unchanged before it is
/// read.
pub const SETTLE: Duration = Duration::from_secs(1);

/// How often a followed file is looked at for new rows when it has none.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

const CUR_KEY: &str = "file_cur";
const DONE_PREFIX: &str = "done/";

/// The options every file source has.
#[derive(Debug, Clone, Default)]
pub(crate) struct FileOpts {
    /// The path or glob as configured.
    pub(crate) path: PathBuf,
    pub(crate) key: Option<String>,
    pub(crate) event_time: Option<String>,
    pub(crate) filename_column: Option<String>,
    /// Tail the file as it grows (survives rotation).
    pub(crate) follow: bool,
    /// Look for new files matching the glob this often.
    pub(crate) watch: Option<Duration>,
}

/// Whether a path has glob characters.
pub(crate) fn is_glob(p: &Path) -> bool {
    p.to_string_lossy().contains(['*', '?', '['])
}

impl FileOpts {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        super::check_path(&self.path)?;
        let text = self.path.to_string_lossy();
        if is_glob(&self.path) {
            glob::Pattern::new(&text).map_err(|e| {
                ConfigError::at("path", format!("`{text}` is not a valid glob: {e}"))
            })?;
            if self.follow {
                return Err(ConfigError::at(
                    "follow",
                    "`follow` tails one file; a glob is read file after file (use `watch` to pick up new files)",
                ));
            }
        } else if self.watch.is_some() {
            return Err(ConfigError::at(
                "watch",
                "`watch` looks for new files matching a glob; `path` is one file (use `follow` to tail it)",
            ));
        }
        if let Some(w) = self.watch
            && w.is_zero()
        {
            return Err(ConfigError::at("watch", "`watch` must be longer than 0s"));
        }
        if let Some(c) = &self.filename_column
            && c.is_empty()
        {
            return Err(ConfigError::at("filename_column", "must not be empty"));
        }
        Ok(())
    }

    /// Whether the source may never end.
    pub(crate) fn unbounded(&self) -> bool {
        self.follow || self.watch.is_some()
    }
}

/// Opens a reader of one file (the format's part): `(path, name, input)`.
pub(crate) type Opener =
    Box<dyn Fn(&Path, &str, Growing, Stamp) -> Result<Box<dyn FileReader>, NodeError> + Send>;

/// The file being read.
struct Current {
    path: PathBuf,
    name: String,
    reader: Box<dyn FileReader>,
    /// (device, inode) of the file open (following: to see rotation).
    id: (u64, u64),
    /// Following: the file was rotated away and is read to its end.
    closed: bool,
}

/// A file source: the files, the reader of the current one, the count.
pub(crate) struct FileSource {
    opts: FileOpts,
    /// The configured path, resolved against the working directory.
    pattern: PathBuf,
    base: PathBuf,
    rows: Rows,
    open: Opener,
    state: KeyedState,
    cur: Option<Current>,
    /// Files still to read, in order.
    queue: VecDeque<PathBuf>,
    /// Files read to their end (names), committed or not.
    done: HashSet<String>,
    /// Files read to their end since the last checkpoint: (name, records).
    newly_done: Vec<(String, u64)>,
    /// Committed `done/` keys are to be cleared (the source started over).
    clear_done: bool,
    records: u64,
    /// The position restored at build.
    restored: Option<FilePos>,
    /// The position last put into the state, and the file it was in.
    saved: FilePos,
    saved_cur: Option<String>,
    /// Watching: when to list the glob again.
    next_scan: Instant,
    /// Watching: files seen but not settled yet.
    unsettled: HashSet<PathBuf>,
    broken: Option<String>,
}

fn io_at(path: &Path) -> impl Fn(std::io::Error) -> NodeError + '_ {
    move |e| NodeError::failed(format!("{}: {e}", path.display()))
}

impl FileSource {
    pub(crate) fn build(
        ctx: &BuildContext<'_>,
        opts: &FileOpts,
        rows: Rows,
        open: Opener,
    ) -> Result<FileSource, NodeError> {
        let pattern = ctx.resolve(&opts.path);
        let base = ctx.resolve(Path::new(""));
        let restored = FilePos::load(ctx.state)?;
        let cur_name = match ctx.state.get_value(CUR_KEY)? {
            Some(Value::String(s)) => Some(s.to_string()),
            Some(Value::Null) => None,
            None => restored.map(|_| opts.path.display().to_string()),
            Some(other) => {
                return Err(NodeError::failed(format!(
                    "the committed file name is malformed: {other}"
                )));
            }
        };
        let mut done = HashSet::new();
        for (k, _) in ctx.state.scan(DONE_PREFIX.as_bytes())? {
            done.insert(String::from_utf8_lossy(&k[DONE_PREFIX.len()..]).into_owned());
        }
        let mut src = FileSource {
            opts: opts.clone(),
            pattern,
            base,
            rows,
            open,
            state: ctx.state.clone(),
            cur: None,
            queue: VecDeque::new(),
            done,
            newly_done: Vec::new(),
            clear_done: false,
            records: restored.map_or(0, |p| p.records),
            restored,
            saved: restored.unwrap_or_default(),
            saved_cur: cur_name.clone(),
            next_scan: Instant::now(),
            unsettled: HashSet::new(),
            broken: None,
        };
        if !is_glob(&opts.path) && !opts.follow && !src.pattern.exists() && restored.is_none() {
            return Err(NodeError::BadInput(format!(
                "there is no file `{}` (looked for {})",
                opts.path.display(),
                src.pattern.display()
            )));
        }
        src.list(true)?;
        match (cur_name, restored) {
            (Some(name), Some(pos)) => src.resume(&name, &pos)?,
            _ => src.next_file()?,
        }
        if !src.opts.unbounded() && src.cur.is_none() && src.queue.is_empty() && src.done.is_empty()
        {
            return Err(NodeError::BadInput(format!(
                "no file matches `{}`",
                src.opts.path.display()
            )));
        }
        Ok(src)
    }

    /// The name a file goes by in messages, records and state.
    fn name_of(&self, path: &Path) -> String {
        path.strip_prefix(&self.base)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// Lists the files still to read (all of them at build; new settled
    /// ones when watching).
    fn list(&mut self, first: bool) -> Result<(), NodeError> {
        if !is_glob(&self.opts.path) {
            if first {
                self.queue.push_back(self.pattern.clone());
            }
            return Ok(());
        }
        let text = self.pattern.to_string_lossy().into_owned();
        // as in a shell, `*` does not match a leading `.`: hidden files (a
        // part sink's staging and temporary files) are not read
        let options = glob::MatchOptions {
            require_literal_leading_dot: true,
            ..glob::MatchOptions::new()
        };
        let paths = glob::glob_with(&text, options).map_err(|e| {
            NodeError::failed(format!(
                "`{}` is not a valid glob: {e}",
                self.opts.path.display()
            ))
        })?;
        let mut found = Vec::new();
        for p in paths {
            let p = p.map_err(|e| {
                NodeError::failed(format!("cannot list {}: {}", e.path().display(), e.error()))
            })?;
            if !p.is_file() {
                continue;
            }
            let name = self.name_of(&p);
            if self.done.contains(&name)
                || self.queue.contains(&p)
                || self.cur.as_ref().is_some_and(|c| c.path == p)
            {
                continue;
            }
            if self.opts.watch.is_some() {
                // taken once it has stopped changing
                let fresh = std::fs::metadata(&p)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_none_or(|age| age < SETTLE);
                if fresh {
                    self.unsettled.insert(p);
                    continue;
                }
                self.unsettled.remove(&p);
            }
            found.push(p);
        }
        found.sort();
        self.queue.extend(found);
        Ok(())
    }

    fn stamp(&self, name: &str) -> Stamp {
        Stamp {
            stamping: super::Stamping {
                key: self.opts.key.clone(),
                event_time: self.opts.event_time.clone(),
            },
            filename: self
                .opts
                .filename_column
                .as_ref()
                .map(|c| (Name::from(c.as_str()), Value::String(name.into()))),
        }
    }

    /// Opens `path` at its start (or at `from`, checked).
    fn open_file(&self, path: &Path, from: Option<&FilePos>) -> Result<Current, NodeError> {
        let name = self.name_of(path);
        let file = std::fs::File::open(path)
            .map_err(|e| NodeError::failed(format!("cannot open {}: {e}", path.display())))?;
        let meta = file.metadata().map_err(io_at(path))?;
        let input = if self.opts.follow {
            Growing::following(file, self.rows, from.map_or(0, |p| p.offset))
                .map_err(io_at(path))?
        } else {
            Growing::whole(file)
        };
        let stamp = self.stamp(&name);
        let mut reader = (self.open)(path, &name, input, stamp)?;
        if let Some(p) = from {
            reader.check(p, path)?;
            reader.goto(p)?;
        }
        Ok(Current {
            path: path.to_owned(),
            name,
            reader,
            id: (meta.dev(), meta.ino()),
            closed: false,
        })
    }

    /// Goes back into the file a commit was in.
    fn resume(&mut self, name: &str, pos: &FilePos) -> Result<(), NodeError> {
        let path = self.base.join(name);
        self.queue.retain(|p| *p != path);
        if self.opts.follow
            && let Ok(meta) = std::fs::metadata(&path)
            && (meta.dev(), meta.ino()) != (pos.dev, pos.ino)
        {
            // rotated while the pipeline was down: finish the old file
            // where it went, then read the new one from its start
            if let Some(old) = find_by_id(&path, (pos.dev, pos.ino)) {
                let mut cur = self.open_file(&old, Some(pos))?;
                cur.reader.input().close_out();
                cur.reader.grown()?;
                cur.closed = true;
                cur.path = path.clone();
                cur.name = name.to_owned();
                self.cur = Some(cur);
                return Ok(());
            }
        }
        if self.opts.follow && !path.exists() {
            return Err(NodeError::BadInput(format!(
                "{name} was being followed and is gone ({} records were read); restore it, or run with --reset-state to start over",
                pos.records
            )));
        }
        if self.done.contains(name) {
            return self.next_file();
        }
        self.cur = Some(self.open_file(&path, Some(pos))?);
        Ok(())
    }

    /// Moves to the next file in the queue, if any.
    fn next_file(&mut self) -> Result<(), NodeError> {
        self.cur = None;
        if let Some(p) = self.queue.pop_front() {
            if self.opts.follow && !p.exists() {
                // waiting for the file to appear
                self.queue.push_front(p);
                return Ok(());
            }
            self.cur = Some(self.open_file(&p, None)?);
        }
        Ok(())
    }

    /// Following, at the end of what the file holds: takes in new rows,
    /// or sees it rotated or truncated. Returns whether there is more to
    /// read now.
    fn follow_on(&mut self) -> Result<bool, NodeError> {
        let Some(cur) = self.cur.as_mut() else {
            // the file is not there yet
            self.next_file()?;
            return Ok(self.cur.is_some());
        };
        if cur.closed {
            // a rotated file read to its very end: on to the new one
            let path = cur.path.clone();
            tracing::info!(file = %cur.name, "the followed file was rotated: reading the new one");
            self.cur = None;
            self.queue.push_front(path);
            self.next_file()?;
            return Ok(self.cur.is_some());
        }
        let input = cur.reader.input();
        if input.grow().map_err(io_at(&cur.path))? {
            cur.reader.grown()?;
            return Ok(true);
        }
        if input.truncated().map_err(io_at(&cur.path))? {
            tracing::warn!(
                file = %cur.name,
                "the followed file was truncated (copy-and-truncate rotation?): reading it again from its start"
            );
            let path = cur.path.clone();
            self.cur = Some(self.open_file(&path, None)?);
            return Ok(true);
        }
        let now = std::fs::metadata(&cur.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if now != Some(cur.id) {
            // rotated (or removed): read the old file to its very end
            // (what was written before the rotation), then the new one
            cur.reader.input().close_out();
            cur.reader.grown()?;
            cur.closed = true;
            return Ok(true);
        }
        Ok(false)
    }

    /// The current file is read to its end.
    fn finish_file(&mut self) -> Result<(), NodeError> {
        let cur = self.cur.take().expect("a current file");
        self.done.insert(cur.name.clone());
        self.newly_done.push((cur.name, self.records));
        self.next_file()
    }

    pub(crate) fn seek(&mut self, made: u64) -> bool {
        let at = match self.restored {
            Some(p) => p.records == made,
            // nothing committed: at the start
            None => made == 0 && self.records == 0,
        };
        if at {
            return true;
        }
        // not where the runtime wants it: start over and let it replay
        self.restored = None;
        self.records = 0;
        self.done.clear();
        self.newly_done.clear();
        self.clear_done = true;
        self.saved = FilePos::default();
        self.saved_cur = None;
        self.queue.clear();
        self.cur = None;
        if let Err(e) = self.list(true).and_then(|_| self.next_file()) {
            self.broken = Some(e.to_string());
        }
        false
    }

    pub(crate) fn poll(
        &mut self,
        max: usize,
        out: &mut Emitter,
    ) -> Result<SourceStatus, NodeError> {
        if let Some(e) = &self.broken {
            return Err(NodeError::failed(e.clone()));
        }
        let mut made = 0;
        while made < max {
            let Some(cur) = self.cur.as_mut() else {
                if self.opts.follow {
                    if self.follow_on()? {
                        continue;
                    }
                    return Ok(SourceStatus::Wait(FOLLOW_POLL));
                }
                let Some(every) = self.opts.watch else {
                    // the poll that finds the end says so, with what it made:
                    // what is appended after it is not read
                    return Ok(SourceStatus::Done);
                };
                let now = Instant::now();
                if now < self.next_scan {
                    return Ok(if made > 0 {
                        SourceStatus::More
                    } else {
                        SourceStatus::Wait(self.next_scan - now)
                    });
                }
                self.list(false)?;
                // unsettled files are looked at again soon
                let again = if self.unsettled.is_empty() {
                    every
                } else {
                    every.min(SETTLE / 4)
                };
                self.next_scan = now + again;
                self.next_file()?;
                if self.cur.is_none() {
                    return Ok(if made > 0 {
                        SourceStatus::More
                    } else {
                        SourceStatus::Wait(again)
                    });
                }
                continue;
            };
            let step = cur.reader.read(max - made, out)?;
            made += step.made;
            self.records += step.made as u64;
            if !step.end {
                continue;
            }
            if self.opts.follow {
                if self.follow_on()? {
                    continue;
                }
                return Ok(if made > 0 {
                    SourceStatus::More
                } else {
                    SourceStatus::Wait(FOLLOW_POLL)
                });
            }
            self.finish_file()?;
        }
        Ok(SourceStatus::More)
    }

    pub(crate) fn checkpoint(&mut self) -> Result<(), NodeError> {
        if self.clear_done {
            for (k, _) in self.state.scan(DONE_PREFIX.as_bytes())? {
                self.state.delete(&k);
            }
            self.clear_done = false;
        }
        for (name, records) in self.newly_done.drain(..) {
            self.state
                .put_value(&format!("{DONE_PREFIX}{name}"), &Value::Int(records as i64))?;
        }
        let cur_name = self.cur.as_ref().map(|c| c.name.clone());
        let pos = match self.cur.as_mut() {
            Some(c) => {
                let prev = if self.saved_cur == cur_name {
                    self.saved
                } else {
                    FilePos::default()
                };
                c.reader.position(self.records, &prev)?
            }
            None => FilePos {
                records: self.records,
                ..FilePos::default()
            },
        };
        if pos == self.saved && cur_name == self.saved_cur {
            return Ok(());
        }
        pos.save(&self.state)?;
        match &cur_name {
            Some(n) => self
                .state
                .put_value(CUR_KEY, &Value::String(n.as_str().into()))?,
            None => self.state.put_value(CUR_KEY, &Value::Null)?,
        }
        self.saved = pos;
        self.saved_cur = cur_name;
        Ok(())
    }
}

/// A file in `path`'s folder with the given (device, inode): where a
/// rotated file went.
fn find_by_id(path: &Path, id: (u64, u64)) -> Option<PathBuf> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let m = e.metadata().ok()?;
        ((m.dev(), m.ino()) == id).then(|| e.path())
    })
}
