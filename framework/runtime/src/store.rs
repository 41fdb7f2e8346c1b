//! The durable state store: sled, one database per stage under
//! `<state_dir>/<pipeline>/<stage>/`. This is the only module that calls
//! `sled::`; everything else sees [`StateStore`].
//!
//! sled is beta software with open reports of corruption after abrupt stops,
//! so opening is defensive: a store that fails to open, panics while
//! opening, lacks rill's format marker or holds undecodable entries is
//! refused with a [`StoreOpenError`] (the CLI exits 2 and names
//! `--reset-state`), never retried in a loop (only a lock held by this
//! process's own just-dropped handle is waited for, up to 2 s).

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rill_core::state::{Entries, StateStore, StoreError, StoreResult, WriteBatch};

/// The key that marks a store as rill's, with its layout version.
pub const FORMAT_KEY: &[u8] = b"m/format";
/// Version 3: an output log keeps the messages of one commit in one value
/// (see [`crate::durable`]). Every value carries a CRC-32 of itself (sled
/// does not see every bit that flips on disk; rill refuses a damaged value
/// instead of acting on it).
pub const FORMAT: &[u8] = b"rill-state-3";
/// Version 2: one value per output message. Read as it is, and marked
/// version 3 on opening (an older rill then refuses the store instead of
/// missing the messages it cannot read).
pub const FORMAT_2: &[u8] = b"rill-state-2";

/// A value as stored: the bytes, then their CRC-32 (little-endian).
fn seal(mut v: Vec<u8>) -> Vec<u8> {
    let c = crc32fast::hash(&v);
    v.extend_from_slice(&c.to_le_bytes());
    v
}

/// The bytes of a stored value, checked against their CRC-32.
fn unseal(key: &[u8], v: &[u8]) -> StoreResult<Vec<u8>> {
    let damaged = || {
        StoreError(format!(
            "the value of key {:?} is damaged (its checksum does not match): the store was corrupted on disk",
            String::from_utf8_lossy(key)
        ))
    };
    if v.len() < 4 {
        return Err(damaged());
    }
    let (bytes, crc) = v.split_at(v.len() - 4);
    if crc32fast::hash(bytes).to_le_bytes() != crc {
        return Err(damaged());
    }
    Ok(bytes.to_vec())
}

/// Why a stage's store could not be opened.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the state of stage{} `{stage}` at {} cannot be used: {reason}{}", if stage.contains("`, `") { "s" } else { "" }, dir.display(), if *reset_helps { "; to discard it and start the pipeline over, run again with --reset-state" } else { "" })]
pub struct StoreOpenError {
    pub stage: String,
    pub dir: PathBuf,
    pub reason: String,
    /// Whether discarding the state is the fix (a damaged store), or the
    /// state is fine and something else is (permissions, a running stage).
    pub reset_helps: bool,
}

/// What to say of an I/O error on a store that is likely fine.
fn io_reason(e: &std::io::Error) -> Option<String> {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => Some(format!(
            "{e}: the user running rill needs read and write access to it (the state itself is fine: fix the permissions, do not reset it)"
        )),
        std::io::ErrorKind::ReadOnlyFilesystem => Some(format!(
            "{e}: the file system is read-only (the state itself is fine)"
        )),
        _ => None,
    }
}

/// The directory of a stage's state.
pub fn stage_dir(state_dir: &Path, pipeline: &str, stage: &str) -> PathBuf {
    state_dir.join(pipeline).join(stage)
}

/// The folder, under `<state_dir>/<pipeline>/`, of the store that a
/// process running every stage of a pipeline shares among them (stage
/// names cannot start with `_`); a process running some of them (two or
/// more) shares `_shared-<16 hex digits>`, named after the set.
pub const SHARED_DIR: &str = "_shared";

/// The file in a shared store's folder that lists the stages it is for (a
/// stage key a line), so that a start finds where its stages' state is
/// without opening a store another process holds.
const MANIFEST: &str = "rill-stages";

/// The folder of the store shared by the stages `keys` of a pipeline
/// (`whole`: all of them).
pub fn shared_dir_for(pipeline_dir: &Path, keys: &[String], whole: bool) -> PathBuf {
    if whole {
        return pipeline_dir.join(SHARED_DIR);
    }
    let mut sorted = keys.to_vec();
    sorted.sort();
    // FNV-1a, 64 bits: the same name in every build
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sorted.join("\n").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    pipeline_dir.join(format!("{SHARED_DIR}-{h:016x}"))
}

/// Holds the pipeline's placement lock (a file lock on
/// `<state_dir>/<pipeline>/.placement`) until dropped: the starts of a
/// pipeline's processes look for their stages' state and move it one at a
/// time, so that none removes a store another is opening. Waits up to 60 s
/// for another start to finish moving (it holds the lock for as long as
/// that takes, never while it runs).
pub fn placement_lock(pipeline_dir: &Path) -> Result<std::fs::File, String> {
    let path = pipeline_dir.join(".placement");
    std::fs::create_dir_all(pipeline_dir)
        .and_then(|_| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
        })
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
        .and_then(|f| {
            let started = std::time::Instant::now();
            loop {
                match f.try_lock() {
                    Ok(()) => return Ok(f),
                    Err(std::fs::TryLockError::WouldBlock)
                        if started.elapsed() < std::time::Duration::from_secs(60) =>
                    {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    Err(std::fs::TryLockError::WouldBlock) => {
                        return Err(format!(
                            "another start of this pipeline has held {} for 60 s while moving its stages' state; is it stuck?",
                            path.display()
                        ));
                    }
                    Err(std::fs::TryLockError::Error(e)) => {
                        return Err(format!("cannot lock {}: {e}", path.display()));
                    }
                }
            }
        })
}

/// The shared stores' folders of a pipeline.
pub fn shared_dirs(pipeline_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(pipeline_dir) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            (n == SHARED_DIR || n.starts_with(&format!("{SHARED_DIR}-"))) && e.path().is_dir()
        })
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// The stages a shared store is for; None when it does not say (made by a
/// start that stopped before writing it: it may hold any).
pub fn shared_stages(dir: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(dir.join(MANIFEST)).ok()?;
    Some(text.lines().map(str::to_owned).collect())
}

/// A stage's store: a sled tree, either the default tree of the stage's own
/// database (`<state_dir>/<pipeline>/<stage>/`) or the stage's tree in the
/// database its process shares among its stages ([`ProcessStore`]).
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
    dir: PathBuf,
    /// The blob files of the database already synced (see
    /// [`SledStore::sync_blobs`]); shared by the trees of one database.
    blobs_synced: Arc<std::sync::Mutex<std::collections::HashSet<u64>>>,
    /// Whether the database is shared by several stages' trees.
    shared: bool,
    /// The flushes of a shared database, one at a time.
    group: Option<Arc<GroupFlush>>,
}

/// The flushes of the trees of one shared database, one at a time: a
/// flush asked for while one runs waits for the next, which covers every
/// flush asked for meanwhile. sled holds its process-wide lock (the one
/// every `apply_batch` takes to write) for as long as any flush waits for
/// the disk; flushes that overlap hold it back to back, and the stages'
/// commits wait behind them.
#[derive(Debug, Default)]
struct GroupFlush {
    state: std::sync::Mutex<GroupState>,
    ended: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct GroupState {
    /// Flushes asked for so far (each caller's ticket).
    asked: u64,
    /// Every ticket up to this one is durable.
    covered: u64,
    running: bool,
    /// The last flush failed: the tickets up to this one get its error.
    failed: Option<(u64, String)>,
}

impl GroupFlush {
    fn flush(&self, run: impl Fn() -> StoreResult<()>) -> StoreResult<()> {
        let lock = || self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut st = lock();
        st.asked += 1;
        let ticket = st.asked;
        loop {
            if st.covered >= ticket {
                return Ok(());
            }
            if let Some((upto, e)) = &st.failed
                && *upto >= ticket
            {
                return Err(StoreError(e.clone()));
            }
            if st.running {
                st = self.ended.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // every ticket asked for so far was asked after its commit
            // was written: this flush covers them all
            st.running = true;
            let target = st.asked;
            drop(st);
            let r = run();
            st = lock();
            st.running = false;
            match r {
                Ok(()) => st.covered = st.covered.max(target),
                Err(e) => st.failed = Some((target, e.0)),
            }
            self.ended.notify_all();
        }
    }
}

fn err(e: sled::Error) -> StoreError {
    StoreError(e.to_string())
}

/// Opens (or creates) the sled database in `dir` and checks its default
/// tree holds rill's format marker. `fail` names what the database holds in
/// errors.
fn open_db(
    dir: &Path,
    fail: &dyn Fn(String, bool) -> StoreOpenError,
) -> Result<sled::Db, StoreOpenError> {
    let not_damaged = |reason: String| fail(reason, false);
    let fail = |reason: String| fail(reason, true);
    if !dir.exists() {
        // a new store is made aside and moved into place once it holds
        // its format marker: a store directory without the marker was
        // damaged (sled opens a truncated database as an empty one)
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)
            .map_err(|e| not_damaged(format!("cannot create {}: {e}", parent.display())))?;
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        let fresh = parent.join(format!(".{}.new", name.unwrap_or_default()));
        let _ = std::fs::remove_dir_all(&fresh);
        {
            let db = SledStore::config(&fresh)
                .open()
                .map_err(|e| fail(format!("sled cannot create it: {e}")))?;
            db.insert(FORMAT_KEY, FORMAT)
                .and_then(|_| db.flush())
                .map_err(|e| fail(format!("cannot write it: {e}")))?;
        }
        std::fs::rename(&fresh, dir)
            .map_err(|e| fail(format!("cannot move {} into place: {e}", fresh.display())))?;
        sync_dir(parent);
    }
    let config = SledStore::config(dir);
    // sled lets go of its file lock a moment after a database is
    // dropped (its threads hold the last references): a lock held by
    // this process's own previous handle goes away within a few ms, one
    // held by another process does not
    let started = std::time::Instant::now();
    let opened = loop {
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| config.open()));
        let locked = matches!(&r, Ok(Err(sled::Error::Io(e))) if e.to_string().contains("could not acquire lock"));
        if !locked || started.elapsed() > std::time::Duration::from_secs(2) {
            break r;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(e)) => {
            return Err(match &e {
                sled::Error::Io(io) if io.to_string().contains("lock") => not_damaged(format!(
                    "another process holds it ({io}); is the stage already running?"
                )),
                sled::Error::Io(io) if io_reason(io).is_some() => {
                    not_damaged(io_reason(io).unwrap_or_default())
                }
                _ => fail(format!("sled cannot open it: {e}")),
            });
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".into());
            return Err(fail(format!("sled failed while opening it: {msg}")));
        }
    };
    check_format(&db, &fail)?;
    Ok(db)
}

/// Checks a tree's format marker (marking a version 2 tree version 3).
fn check_format(
    tree: &sled::Tree,
    fail: &dyn Fn(String) -> StoreOpenError,
) -> Result<(), StoreOpenError> {
    match tree.get(FORMAT_KEY) {
        Ok(Some(v)) if v.as_ref() == FORMAT => Ok(()),
        Ok(Some(v)) if v.as_ref() == FORMAT_2 => tree
            .insert(FORMAT_KEY, FORMAT)
            .and_then(|_| tree.flush())
            .map(|_| ())
            .map_err(|e| fail(format!("cannot mark it version 3: {e}"))),
        Ok(Some(v)) => Err(fail(format!(
            "it was written in an unknown layout ({:?})",
            String::from_utf8_lossy(&v)
        ))),
        Ok(None) => Err(fail(
            "its format marker is missing: it was truncated, damaged or written by something else"
                .into(),
        )),
        Err(e) => Err(fail(format!("cannot read it: {e}"))),
    }
}

/// Syncs a folder, so that a file created, renamed or removed in it stays
/// so after a power cut (best effort: some file systems refuse).
fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

impl SledStore {
    /// Whether the store holds a stage's state (anything but its format
    /// marker and the mark that a run finished): a run that has not
    /// finished left it (a finished run clears its stores).
    pub fn has_state(&self) -> bool {
        self.tree.iter().keys().any(|k| {
            k.is_ok_and(|k| {
                ![FORMAT_KEY, crate::FINISHED_KEY, crate::FINAL_ACKS_KEY].contains(&k.as_ref())
            })
        })
    }

    /// Whether the store holds anything but its format marker.
    fn has_data(&self) -> bool {
        self.tree
            .iter()
            .keys()
            .any(|k| k.is_ok_and(|k| k.as_ref() != FORMAT_KEY))
    }

    /// Replaces everything the store holds with what `from` holds, in one
    /// atomic write, and makes it durable: a crash leaves the store as it
    /// was or a whole copy.
    fn copy_from(&self, from: &SledStore) -> Result<(), String> {
        let mut b = sled::Batch::default();
        for k in self.tree.iter().keys() {
            b.remove(k.map_err(|e| e.to_string())?);
        }
        for kv in from.tree.iter() {
            let (k, v) = kv.map_err(|e| e.to_string())?;
            b.insert(k, v);
        }
        self.tree.apply_batch(b).map_err(|e| e.to_string())?;
        self.flush().map_err(|e| e.0)
    }

    /// Opens (or creates) the store in `dir` and checks it is rill's.
    pub fn open(dir: &Path, stage: &str) -> Result<SledStore, StoreOpenError> {
        let fail = |reason: String, reset_helps: bool| StoreOpenError {
            stage: stage.to_owned(),
            dir: dir.to_owned(),
            reason,
            reset_helps,
        };
        let db = open_db(dir, &fail)?;
        Ok(SledStore {
            tree: (*db).clone(),
            db,
            dir: dir.to_owned(),
            blobs_synced: Default::default(),
            shared: false,
            group: None,
        })
    }

    fn config(dir: &Path) -> sled::Config {
        sled::Config::new()
            .path(dir)
            .cache_capacity(32 << 20)
            .flush_every_ms(None)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Syncs the blob files written since the last call, and their folder.
    ///
    /// sled 0.34 writes a value or page too large for its log (a quarter of
    /// a segment, 128 KB here) to a file of its own under `blobs/`, and
    /// syncs only its log: the log entry pointing to a blob is durable at
    /// `flush`, the blob is not, and after a power cut (not a killed
    /// process: the page cache survives that) the store would refuse to
    /// open. rill syncs the new blobs before the log that points to them.
    fn sync_blobs(&self) -> std::io::Result<()> {
        let dir = self.dir.join("blobs");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut synced = self.blobs_synced.lock().unwrap_or_else(|e| e.into_inner());
        let mut present = std::collections::HashSet::with_capacity(synced.len());
        let mut new = false;
        for entry in entries {
            let entry = entry?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            present.insert(id);
            if synced.contains(&id) {
                continue;
            }
            // sled removes the blobs it no longer needs at any time
            match std::fs::File::open(entry.path()) {
                Ok(f) => f.sync_data()?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            new = true;
        }
        if new {
            std::fs::File::open(&dir)?.sync_all()?;
        }
        *synced = present;
        Ok(())
    }
}

impl StateStore for SledStore {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.tree
            .get(key)
            .map_err(err)?
            .map(|v| unseal(key, &v))
            .transpose()
    }

    fn scan_prefix(&self, prefix: &[u8]) -> StoreResult<Entries> {
        self.tree
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv.map_err(err)?;
                if k.as_ref() == FORMAT_KEY {
                    return Ok((k.to_vec(), v.to_vec()));
                }
                Ok((k.to_vec(), unseal(&k, &v)?))
            })
            .collect()
    }

    fn scan_from(&self, prefix: &[u8], from: &[u8], limit: usize) -> StoreResult<Entries> {
        let start = if from > prefix { from } else { prefix };
        self.tree
            .range(start..)
            .take_while(|kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
            .take(limit)
            .map(|kv| {
                let (k, v) = kv.map_err(err)?;
                Ok((k.to_vec(), unseal(&k, &v)?))
            })
            .collect()
    }

    fn commit(&self, batch: WriteBatch) -> StoreResult<()> {
        let mut b = sled::Batch::default();
        for (k, v) in batch.ops {
            match v {
                Some(v) => b.insert(k, seal(v)),
                None => b.remove(k),
            }
        }
        self.tree.apply_batch(b).map_err(err)
    }

    fn flush(&self) -> StoreResult<()> {
        let run = || {
            self.sync_blobs()
                .map_err(|e| StoreError(format!("cannot sync sled's blob files: {e}")))?;
            self.db.flush().map(|_| ()).map_err(err)
        };
        match &self.group {
            Some(g) => g.flush(run),
            None => run(),
        }
    }

    fn clear(&self) -> StoreResult<()> {
        self.tree.clear().map_err(err)?;
        self.tree.insert(FORMAT_KEY, FORMAT).map_err(err)?;
        Ok(())
    }

    fn durable(&self) -> bool {
        true
    }

    fn shared_log(&self) -> Option<usize> {
        // the trees of one database share its log (sled recovers a prefix
        // of it): the address of what they share names it
        self.shared
            .then_some(Arc::as_ptr(&self.blobs_synced) as *const () as usize)
    }
}

/// The sled database that the stages of a process running a whole pipeline
/// share, under `<state_dir>/<pipeline>/_shared/`: a tree per stage, one log,
/// so one flush makes every stage's commits durable, and a commit written
/// after another is never durable without it (sled recovers a prefix of its
/// log). See `docs/runtime-semantics.md`, "One store per process".
#[derive(Debug, Clone)]
pub struct ProcessStore {
    db: sled::Db,
    dir: PathBuf,
    blobs_synced: Arc<std::sync::Mutex<std::collections::HashSet<u64>>>,
    group: Arc<GroupFlush>,
    /// The stages it is opened for, as errors name them.
    what: String,
}

impl ProcessStore {
    /// Opens (or creates) the shared store in `dir`, for the stages
    /// `stages` (named in errors); `keys`, when given, are written as the
    /// stages it is for when it does not say yet.
    pub fn open(
        dir: &Path,
        stages: &[&str],
        keys: Option<&[String]>,
    ) -> Result<ProcessStore, StoreOpenError> {
        let what = stages.join("`, `");
        let fail = |reason: String, reset_helps: bool| StoreOpenError {
            stage: what.clone(),
            dir: dir.to_owned(),
            reason,
            reset_helps,
        };
        let db = open_db(dir, &fail)?;
        if let Some(keys) = keys
            && shared_stages(dir).is_none()
        {
            let tmp = dir.join(format!("{MANIFEST}.new"));
            std::fs::write(&tmp, keys.join("\n") + "\n")
                .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
                .and_then(|_| std::fs::rename(&tmp, dir.join(MANIFEST)))
                .map_err(|e| fail(format!("cannot write {MANIFEST}: {e}"), false))?;
            sync_dir(dir);
        }
        Ok(ProcessStore {
            db,
            dir: dir.to_owned(),
            blobs_synced: Default::default(),
            group: Default::default(),
            what,
        })
    }

    fn fail(&self, stage: &str, reason: String) -> StoreOpenError {
        StoreOpenError {
            stage: stage.to_owned(),
            dir: self.dir.clone(),
            reason,
            reset_helps: true,
        }
    }

    /// The store of stage `stage` (its tree `key`), made when new.
    pub fn stage(&self, key: &str, stage: &str) -> Result<SledStore, StoreOpenError> {
        let tree = self
            .db
            .open_tree(key)
            .map_err(|e| self.fail(stage, format!("sled cannot open its tree `{key}`: {e}")))?;
        if tree.is_empty() {
            // a new tree; one emptied by a crash before its marker was
            // durable held nothing either
            tree.insert(FORMAT_KEY, FORMAT)
                .map_err(|e| self.fail(stage, format!("cannot write it: {e}")))?;
        }
        check_format(&tree, &|r| self.fail(stage, r))?;
        Ok(SledStore {
            db: self.db.clone(),
            tree,
            dir: self.dir.clone(),
            blobs_synced: self.blobs_synced.clone(),
            shared: true,
            group: Some(self.group.clone()),
        })
    }

    /// Whether stage `key` has a tree holding anything but its marker.
    pub fn has_data(&self, key: &str) -> bool {
        self.db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == key.as_bytes())
            && self.db.open_tree(key).is_ok_and(|t| {
                t.iter()
                    .keys()
                    .any(|k| k.is_ok_and(|k| k.as_ref() != FORMAT_KEY))
            })
    }

    /// Whether no stage's tree holds anything but its marker.
    pub fn is_empty(&self) -> bool {
        self.db
            .tree_names()
            .iter()
            .filter(|n| n.as_ref() != b"__sled__default")
            .all(|n| !self.has_data(&String::from_utf8_lossy(n)))
    }

    /// Removes stage `key`'s tree, durably.
    pub fn drop_stage(&self, key: &str) -> Result<(), StoreOpenError> {
        self.db
            .drop_tree(key)
            .and_then(|_| self.db.flush())
            .map(|_| ())
            .map_err(|e| self.fail(&self.what, format!("cannot remove the tree `{key}`: {e}")))
    }
}

/// A stage's store, wherever its state is: its tree in a shared store of
/// the pipeline that holds one, else its own (made when missing). For tools
/// and tests that read a stopped pipeline's state.
pub fn open_stage(
    state_root: &Path,
    pipeline: &str,
    key: &str,
    stage: &str,
) -> Result<SledStore, StoreOpenError> {
    for dir in shared_dirs(&state_root.join(pipeline)) {
        if shared_stages(&dir).is_some_and(|k| !k.iter().any(|k| k == key)) {
            continue;
        }
        let ps = ProcessStore::open(&dir, &[stage], None)?;
        if ps.has_data(key) {
            return ps.stage(key, stage);
        }
    }
    SledStore::open(&stage_dir(state_root, pipeline, key), stage)
}

/// Where a stage's state is moved when a pipeline's stages change
/// processes: from its own store (`<state_dir>/<pipeline>/<stage>/`) into
/// the shared one of a process that runs them all, or back. The copy is one
/// atomic write made durable before the original is removed; a crash in
/// between leaves two equal copies, and the next start keeps the one its
/// layout uses and removes the other.
pub fn move_into_shared(
    shared: &ProcessStore,
    own_dir: &Path,
    key: &str,
    stage: &str,
) -> Result<(), StoreOpenError> {
    if !own_dir.exists() {
        return Ok(());
    }
    {
        let own = SledStore::open(own_dir, stage)?;
        let tree = shared.stage(key, stage)?;
        if !tree.has_data() && own.has_data() {
            tree.copy_from(&own).map_err(|e| {
                shared.fail(
                    stage,
                    format!("cannot move its state in from {}: {e}", own_dir.display()),
                )
            })?;
        }
    }
    std::fs::remove_dir_all(own_dir).map_err(|e| StoreOpenError {
        stage: stage.to_owned(),
        dir: own_dir.to_owned(),
        reason: format!(
            "its state was moved into {} but the folder cannot be removed: {e}",
            shared.dir.display()
        ),
        reset_helps: false,
    })?;
    if let Some(parent) = own_dir.parent() {
        sync_dir(parent);
    }
    Ok(())
}

/// The other way: stage `key`'s tree in shared store `from`, if any, into
/// `dest` (its own store, or its tree in another shared store), unless
/// `dest` holds its state already (see [`move_into_shared`]); then the tree
/// is dropped.
pub fn move_out_of_shared(
    from: &ProcessStore,
    dest: &SledStore,
    key: &str,
    stage: &str,
) -> Result<(), StoreOpenError> {
    if !from.has_data(key) {
        return Ok(());
    }
    if !dest.has_data() {
        let tree = from.stage(key, stage)?;
        dest.copy_from(&tree).map_err(|e| StoreOpenError {
            stage: stage.to_owned(),
            dir: dest.dir.clone(),
            reason: format!("cannot move its state out of {}: {e}", from.dir.display()),
            reset_helps: true,
        })?;
    }
    from.drop_stage(key)
}

/// A store that fails its commits after a number of them: the failing disk
/// of the fault tests. Enabled with `RILL_TEST_FAIL_COMMITS_AFTER=N` (test
/// builds and test pipelines only; see `docs/runtime-semantics.md`).
#[derive(Debug)]
pub struct FailingStore {
    inner: Arc<dyn StateStore>,
    left: AtomicU64,
}

impl FailingStore {
    pub fn new(inner: Arc<dyn StateStore>, after: u64) -> FailingStore {
        FailingStore {
            inner,
            left: AtomicU64::new(after),
        }
    }

    fn spend(&self) -> StoreResult<()> {
        let ok = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if ok {
            Ok(())
        } else {
            Err(StoreError(
                "No space left on device (os error 28) [injected by RILL_TEST_FAIL_COMMITS_AFTER]"
                    .into(),
            ))
        }
    }
}

impl StateStore for FailingStore {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn scan_prefix(&self, prefix: &[u8]) -> StoreResult<Entries> {
        self.inner.scan_prefix(prefix)
    }
    fn scan_from(&self, prefix: &[u8], from: &[u8], limit: usize) -> StoreResult<Entries> {
        self.inner.scan_from(prefix, from, limit)
    }
    fn commit(&self, batch: WriteBatch) -> StoreResult<()> {
        self.spend()?;
        self.inner.commit(batch)
    }
    fn flush(&self) -> StoreResult<()> {
        self.inner.flush()
    }
    fn clear(&self) -> StoreResult<()> {
        self.inner.clear()
    }
    fn durable(&self) -> bool {
        self.inner.durable()
    }
    fn shared_log(&self) -> Option<usize> {
        self.inner.shared_log()
    }
}

/// A slow disk under one stage, for the fault tests of flush ordering:
/// commits stay in a cache in memory (what the stage reads sees them), and
/// reach the store only at a flush, which first waits `delay`. A SIGKILL
/// loses every commit since the last flush, as a power cut loses what was
/// not synced. Enabled with `RILL_TEST_SLOW_FLUSH=STAGE:MS` (see
/// `docs/runtime-semantics.md`).
///
/// With `RILL_TEST_SLOW_FLUSH=*:MS` every stage of the process gets one, and
/// they share a [`SlowJournal`]: one log in memory that a flush of any of
/// them writes whole, in the order the commits were made. A SIGKILL then
/// loses a suffix of the process's commits, whichever stages made them: a
/// power cut under the shared store, with its flushes made slow.
#[derive(Debug)]
pub struct SlowFlushStore {
    inner: Arc<dyn StateStore>,
    delay: std::time::Duration,
    cache: std::sync::Mutex<std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
    journal: Option<Arc<SlowJournal>>,
}

/// The commits of a process's slow stores not yet flushed, in order, with
/// the store each goes to.
#[derive(Debug, Default)]
pub struct SlowJournal {
    pending: std::sync::Mutex<Vec<(Arc<dyn StateStore>, WriteBatch)>>,
}

impl SlowFlushStore {
    pub fn new(inner: Arc<dyn StateStore>, delay: std::time::Duration) -> SlowFlushStore {
        SlowFlushStore {
            inner,
            delay,
            cache: Default::default(),
            journal: None,
        }
    }

    /// One of the stores that share `journal`.
    pub fn in_journal(
        inner: Arc<dyn StateStore>,
        delay: std::time::Duration,
        journal: Arc<SlowJournal>,
    ) -> SlowFlushStore {
        SlowFlushStore {
            journal: Some(journal),
            ..SlowFlushStore::new(inner, delay)
        }
    }
}

impl StateStore for SlowFlushStore {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        let cache = self.cache.lock().unwrap();
        match cache.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.inner.get(key),
        }
    }
    fn scan_prefix(&self, prefix: &[u8]) -> StoreResult<Entries> {
        let cache = self.cache.lock().unwrap();
        let mut all: std::collections::BTreeMap<Vec<u8>, Vec<u8>> =
            self.inner.scan_prefix(prefix)?.into_iter().collect();
        for (k, v) in cache
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            match v {
                Some(v) => all.insert(k.clone(), v.clone()),
                None => all.remove(k),
            };
        }
        Ok(all.into_iter().collect())
    }
    fn commit(&self, batch: WriteBatch) -> StoreResult<()> {
        let mut cache = self.cache.lock().unwrap();
        if let Some(j) = &self.journal {
            // (the cache keeps the newest value of each key: after a flush
            // the store holds the same, so it is never cleared)
            j.pending
                .lock()
                .unwrap()
                .push((self.inner.clone(), batch.clone()));
        }
        for (k, v) in batch.ops {
            cache.insert(k, v);
        }
        Ok(())
    }
    fn flush(&self) -> StoreResult<()> {
        std::thread::sleep(self.delay);
        if let Some(j) = &self.journal {
            // every commit so far, of every stage, in the order made (the
            // lock held throughout: a flush after this one finds the
            // commits made meanwhile after these)
            let mut pending = j.pending.lock().unwrap();
            let mut flush: Vec<Arc<dyn StateStore>> = Vec::new();
            let commits = pending.len();
            for (store, batch) in pending.drain(..) {
                store.commit(batch)?;
                if !flush.iter().any(|f| Arc::ptr_eq(f, &store)) {
                    flush.push(store);
                }
            }
            tracing::debug!(target: "rill::flush_order",
                "a flush of the shared log writes {commits} commits of {} stores", flush.len());
            for store in flush {
                store.flush()?;
            }
            return self.inner.flush();
        }
        {
            // all cached commits in one atomic write: a crash keeps all
            // of them or none
            let mut cache = self.cache.lock().unwrap();
            let ops: Vec<_> = std::mem::take(&mut *cache).into_iter().collect();
            if !ops.is_empty() {
                self.inner.commit(WriteBatch { ops })?;
            }
        }
        self.inner.flush()
    }
    fn clear(&self) -> StoreResult<()> {
        self.cache.lock().unwrap().clear();
        if let Some(j) = &self.journal {
            j.pending
                .lock()
                .unwrap()
                .retain(|(s, _)| !Arc::ptr_eq(s, &self.inner));
        }
        self.inner.clear()
    }
    fn durable(&self) -> bool {
        self.inner.durable()
    }
    fn shared_log(&self) -> Option<usize> {
        self.journal
            .as_ref()
            .map(|j| Arc::as_ptr(j) as *const () as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_survive_reopen_and_foreign_data_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p/s");
        {
            let st = SledStore::open(&dir, "s").unwrap();
            let mut b = WriteBatch::default();
            b.put(b"a".to_vec(), b"1".to_vec());
            b.put(b"b".to_vec(), b"2".to_vec());
            st.commit(b).unwrap();
            st.flush().unwrap();
            // a second opener is refused while the first holds it, and
            // not told to reset the state (it is fine)
            let e = SledStore::open(&dir, "s").unwrap_err();
            assert!(e.to_string().contains("already running"), "{e}");
            assert!(!e.to_string().contains("--reset-state"), "{e}");
        }
        let st = SledStore::open(&dir, "s").unwrap();
        assert_eq!(st.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(st.scan_prefix(b"").unwrap().len(), 3, "a, b and the marker");
        st.clear().unwrap();
        assert_eq!(st.get(b"a").unwrap(), None);
        drop(st);

        // a sled database that rill did not write
        let other = tmp.path().join("other");
        {
            let db = sled::open(&other).unwrap();
            db.insert(b"x", b"y").unwrap();
            db.flush().unwrap();
        }
        let e = SledStore::open(&other, "o").unwrap_err();
        assert!(e.reason.contains("format marker"), "{e}");
    }

    #[test]
    fn a_value_past_the_log_goes_to_a_blob_file_synced_before_the_log() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p/s");
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        {
            let st = SledStore::open(&dir, "s").unwrap();
            let mut b = WriteBatch::default();
            b.put(b"o/\0g1".to_vec(), big.clone());
            st.commit(b).unwrap();
            st.flush().unwrap();
            let on_disk: std::collections::HashSet<u64> = std::fs::read_dir(dir.join("blobs"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
                .collect();
            assert!(!on_disk.is_empty(), "sled wrote no blob file");
            assert_eq!(*st.blobs_synced.lock().unwrap(), on_disk);
        }
        let st = SledStore::open(&dir, "s").unwrap();
        assert_eq!(st.get(b"o/\0g1").unwrap(), Some(big));
    }

    #[test]
    fn a_version_2_store_opens_and_is_marked_version_3() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p/s");
        {
            let st = SledStore::open(&dir, "s").unwrap();
            let mut b = WriteBatch::default();
            b.put(b"i/in".to_vec(), b"7".to_vec());
            st.commit(b).unwrap();
            st.db.insert(FORMAT_KEY, FORMAT_2).unwrap();
            st.flush().unwrap();
        }
        let st = SledStore::open(&dir, "s").unwrap();
        assert_eq!(st.get(b"i/in").unwrap(), Some(b"7".to_vec()));
        assert_eq!(st.db.get(FORMAT_KEY).unwrap().as_deref(), Some(FORMAT));
        drop(st);
        // and a layout this build does not know is refused, named
        {
            let st = SledStore::open(&dir, "s").unwrap();
            st.db
                .insert(FORMAT_KEY, b"rill-state-9".as_slice())
                .unwrap();
            st.flush().unwrap();
        }
        let e = SledStore::open(&dir, "s").unwrap_err();
        assert!(
            e.reason.contains("unknown layout (\"rill-state-9\")"),
            "{e}"
        );
    }

    #[test]
    fn a_flipped_bit_in_a_value_is_refused_not_used() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p/s");
        {
            let st = SledStore::open(&dir, "s").unwrap();
            let mut b = WriteBatch::default();
            b.put(b"s/offset".to_vec(), 634_624u64.to_be_bytes().to_vec());
            st.commit(b).unwrap();
            st.flush().unwrap();
        }
        {
            // the disk flips a bit sled does not see (sled lets go of its
            // lock a moment after the handle is dropped: wait for it)
            let t = std::time::Instant::now();
            let db = loop {
                match sled::open(&dir) {
                    Ok(db) => break db,
                    Err(e) if t.elapsed() < std::time::Duration::from_secs(5) => {
                        assert!(e.to_string().contains("lock"), "{e}");
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    Err(e) => panic!("{e}"),
                }
            };
            let mut v = db.get(b"s/offset").unwrap().unwrap().to_vec();
            v[5] ^= 0x10;
            db.insert(b"s/offset", v).unwrap();
            db.flush().unwrap();
        }
        let st = SledStore::open(&dir, "s").unwrap();
        let e = st.get(b"s/offset").unwrap_err().to_string();
        assert!(e.contains("damaged (its checksum does not match)"), "{e}");
        assert!(st.scan_prefix(b"s/").is_err());
    }

    fn put(st: &dyn StateStore, k: &str, v: &str) {
        let mut b = WriteBatch::default();
        b.put(k.as_bytes().to_vec(), v.as_bytes().to_vec());
        st.commit(b).unwrap();
    }

    #[test]
    fn the_stages_of_a_process_share_one_log_and_one_flush_covers_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p").join(SHARED_DIR);
        {
            let ps = ProcessStore::open(&dir, &["a", "b"], None).unwrap();
            let (a, b) = (ps.stage("a", "a").unwrap(), ps.stage("b", "b").unwrap());
            assert!(a.shared_log().is_some());
            assert_eq!(a.shared_log(), b.shared_log(), "one log");
            put(&a, "i/x", "1");
            put(&b, "i/y", "2");
            // one flush, of either stage, makes both durable
            b.flush().unwrap();
            assert!(a.has_state() && b.has_state());
            // a second process cannot take the stages
            let e = ProcessStore::open(&dir, &["a", "b"], None).unwrap_err();
            assert!(e.to_string().contains("already running"), "{e}");
            assert!(e.to_string().contains("stages `a`, `b`"), "{e}");
        }
        let ps = ProcessStore::open(&dir, &["a", "b"], None).unwrap();
        let (a, b) = (ps.stage("a", "a").unwrap(), ps.stage("b", "b").unwrap());
        assert_eq!(a.get(b"i/x").unwrap(), Some(b"1".to_vec()));
        assert_eq!(a.get(b"i/y").unwrap(), None, "each stage sees its own tree");
        assert_eq!(b.get(b"i/y").unwrap(), Some(b"2".to_vec()));
        a.clear().unwrap();
        assert!(!a.has_state() && b.has_state(), "a clear is one stage's");
        // a stage's own store shares its log with nobody
        let own = SledStore::open(&tmp.path().join("p/c"), "c").unwrap();
        assert_eq!(own.shared_log(), None);
    }

    #[test]
    fn flushes_asked_for_while_one_runs_share_the_next_and_a_failure_is_theirs() {
        let g = Arc::new(GroupFlush::default());
        let runs = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (g, runs) = (g.clone(), runs.clone());
                std::thread::spawn(move || {
                    g.flush(|| {
                        runs.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(200));
                        Ok(())
                    })
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        let n = runs.load(Ordering::SeqCst);
        assert!(
            (1..=4).contains(&n),
            "8 flushes asked for at once ran {n} times"
        );
        // a flush that fails fails whoever it covered; the next one runs
        let e = g.flush(|| Err(StoreError("disk gone".into()))).unwrap_err();
        assert_eq!(e.0, "disk gone");
        g.flush(|| Ok(())).unwrap();
    }

    #[test]
    fn a_shared_store_is_named_after_its_stages_and_says_which_they_are() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("p");
        let ab = vec!["a".to_owned(), "b".to_owned()];
        let ba = vec!["b".to_owned(), "a".to_owned()];
        assert_eq!(shared_dir_for(&p, &ab, true), p.join(SHARED_DIR));
        let part = shared_dir_for(&p, &ab, false);
        assert_eq!(
            part,
            shared_dir_for(&p, &ba, false),
            "the order does not count"
        );
        assert_ne!(part, shared_dir_for(&p, &["a".to_owned()], false));
        assert!(
            part.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("_shared-"),
            "{}",
            part.display()
        );
        drop(ProcessStore::open(&part, &["a", "b"], Some(&ab)).unwrap());
        assert_eq!(shared_stages(&part), Some(ab.clone()));
        // reopened for other stages, it still says what it was made for
        drop(ProcessStore::open(&part, &["c"], Some(&["c".to_owned()])).unwrap());
        assert_eq!(shared_stages(&part), Some(ab));
        std::fs::create_dir_all(p.join("a")).unwrap();
        assert_eq!(
            shared_dirs(&p),
            vec![part],
            "a stage's own folder is not one"
        );
    }

    #[test]
    fn state_moves_between_the_layouts_and_a_copy_left_by_a_crash_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let own_dir = tmp.path().join("p/s");
        let shared_dir = tmp.path().join("p").join(SHARED_DIR);
        {
            let own = SledStore::open(&own_dir, "s").unwrap();
            put(&own, "s/count", "41");
            own.flush().unwrap();
        }
        // a whole-pipeline process takes it in
        {
            let ps = ProcessStore::open(&shared_dir, &["s", "t"], None).unwrap();
            move_into_shared(&ps, &own_dir, "s", "s").unwrap();
            assert!(!own_dir.exists(), "the original is removed once copied");
            let st = ps.stage("s", "s").unwrap();
            assert_eq!(st.get(b"s/count").unwrap(), Some(b"41".to_vec()));
            put(&st, "s/count", "42");
            st.flush().unwrap();
        }
        // a process running it alone takes it out
        {
            let ps = ProcessStore::open(&shared_dir, &["s"], None).unwrap();
            let own = SledStore::open(&own_dir, "s").unwrap();
            move_out_of_shared(&ps, &own, "s", "s").unwrap();
            assert!(!ps.has_data("s"), "the tree is dropped once copied");
        }
        let own = SledStore::open(&own_dir, "s").unwrap();
        assert_eq!(own.get(b"s/count").unwrap(), Some(b"42".to_vec()));
        // a crash between the copy and the removal leaves two equal
        // copies: the layout in use keeps its own and drops the other
        let ps = ProcessStore::open(&shared_dir, &["s"], None).unwrap();
        ps.stage("s", "s").unwrap().copy_from(&own).unwrap();
        put(&own, "s/count", "43");
        move_out_of_shared(&ps, &own, "s", "s").unwrap();
        drop(own);
        assert!(!ps.has_data("s"));
        assert_eq!(
            SledStore::open(&own_dir, "s")
                .unwrap()
                .get(b"s/count")
                .unwrap(),
            Some(b"43".to_vec()),
            "the store in use was kept"
        );
    }

    #[test]
    fn a_permission_error_blames_the_permissions_not_the_state() {
        // (the tests run as root on CI, which chmod cannot lock out: the
        // error sled returns is made here)
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let e = StoreOpenError {
            stage: "s".into(),
            dir: "d".into(),
            reason: io_reason(&io).unwrap(),
            reset_helps: false,
        }
        .to_string();
        assert!(e.contains("fix the permissions, do not reset it"), "{e}");
        assert!(!e.contains("--reset-state"), "{e}");
        assert!(io_reason(&std::io::Error::other("x")).is_none());
    }
}
