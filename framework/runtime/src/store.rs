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
#[error("the state of stage `{stage}` at {} cannot be used: {reason}{}", dir.display(), if *reset_helps { "; to discard it and start the pipeline over, run again with --reset-state" } else { "" })]
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

/// A stage's sled database.
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    dir: PathBuf,
    /// The blob files already synced (see [`SledStore::sync_blobs`]).
    blobs_synced: std::sync::Mutex<std::collections::HashSet<u64>>,
}

fn err(e: sled::Error) -> StoreError {
    StoreError(e.to_string())
}

impl SledStore {
    /// Whether the store holds a stage's state (anything but its format
    /// marker and the mark that a run finished): a run that has not
    /// finished left it (a finished run clears its stores).
    pub fn has_state(&self) -> bool {
        self.db.iter().keys().any(|k| {
            k.is_ok_and(|k| {
                ![FORMAT_KEY, crate::FINISHED_KEY, crate::FINAL_ACKS_KEY].contains(&k.as_ref())
            })
        })
    }

    /// Opens (or creates) the store in `dir` and checks it is rill's.
    pub fn open(dir: &Path, stage: &str) -> Result<SledStore, StoreOpenError> {
        let fail = |reason: String| StoreOpenError {
            stage: stage.to_owned(),
            dir: dir.to_owned(),
            reason,
            reset_helps: true,
        };
        let not_damaged = |reason: String| StoreOpenError {
            reset_helps: false,
            ..fail(reason)
        };
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
                let db = Self::config(&fresh)
                    .open()
                    .map_err(|e| fail(format!("sled cannot create it: {e}")))?;
                db.insert(FORMAT_KEY, FORMAT)
                    .and_then(|_| db.flush())
                    .map_err(|e| fail(format!("cannot write it: {e}")))?;
            }
            std::fs::rename(&fresh, dir)
                .map_err(|e| fail(format!("cannot move {} into place: {e}", fresh.display())))?;
        }
        let config = Self::config(dir);
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
        match db.get(FORMAT_KEY) {
            Ok(Some(v)) if v.as_ref() == FORMAT => {}
            Ok(Some(v)) if v.as_ref() == FORMAT_2 => {
                db.insert(FORMAT_KEY, FORMAT)
                    .and_then(|_| db.flush())
                    .map_err(|e| fail(format!("cannot mark it version 3: {e}")))?;
            }
            Ok(Some(v)) => {
                return Err(fail(format!(
                    "it was written in an unknown layout ({:?})",
                    String::from_utf8_lossy(&v)
                )));
            }
            Ok(None) => {
                return Err(fail(
                    "its format marker is missing: it was truncated, damaged or written by something else"
                        .into(),
                ));
            }
            Err(e) => return Err(fail(format!("cannot read it: {e}"))),
        }
        Ok(SledStore {
            db,
            dir: dir.to_owned(),
            blobs_synced: Default::default(),
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
        self.db
            .get(key)
            .map_err(err)?
            .map(|v| unseal(key, &v))
            .transpose()
    }

    fn scan_prefix(&self, prefix: &[u8]) -> StoreResult<Entries> {
        self.db
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
        self.db
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
        self.db.apply_batch(b).map_err(err)
    }

    fn flush(&self) -> StoreResult<()> {
        self.sync_blobs()
            .map_err(|e| StoreError(format!("cannot sync sled's blob files: {e}")))?;
        self.db.flush().map(|_| ()).map_err(err)
    }

    fn clear(&self) -> StoreResult<()> {
        self.db.clear().map_err(err)?;
        self.db.insert(FORMAT_KEY, FORMAT).map_err(err)?;
        Ok(())
    }

    fn durable(&self) -> bool {
        true
    }
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
}

/// A slow disk under one stage, for the fault tests of flush ordering:
/// commits stay in a cache in memory (what the stage reads sees them), and
/// reach the store only at a flush, which first waits `delay`. A SIGKILL
/// loses every commit since the last flush, as a power cut loses what was
/// not synced. Enabled with `RILL_TEST_SLOW_FLUSH=STAGE:MS` (see
/// `docs/runtime-semantics.md`).
#[derive(Debug)]
pub struct SlowFlushStore {
    inner: Arc<dyn StateStore>,
    delay: std::time::Duration,
    cache: std::sync::Mutex<std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
}

impl SlowFlushStore {
    pub fn new(inner: Arc<dyn StateStore>, delay: std::time::Duration) -> SlowFlushStore {
        SlowFlushStore {
            inner,
            delay,
            cache: Default::default(),
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
        for (k, v) in batch.ops {
            cache.insert(k, v);
        }
        Ok(())
    }
    fn flush(&self) -> StoreResult<()> {
        std::thread::sleep(self.delay);
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
        self.inner.clear()
    }
    fn durable(&self) -> bool {
        self.inner.durable()
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
