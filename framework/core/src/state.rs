//! Stage state: the [`StateStore`] a stage commits to, and the
//! [`KeyedState`] view a node reads and writes.
//!
//! A stage commits, in one atomic write, the input positions it has
//! consumed, the records it has produced and the changes its node made to
//! its keyed state (see `docs/runtime-semantics.md`). Nodes never write to
//! the store themselves: [`KeyedState`] keeps their changes in an overlay
//! that the runtime takes at the next commit, and discards when the stage
//! restarts, so a node's state always matches the input it has consumed.
//!
//! The runtime's durable store is sled (`rill_runtime::store`); this crate
//! holds the trait and an in-memory store for `best_effort` runs and tests.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::codec;
use crate::node::NodeError;
use crate::value::Value;

/// A failure of the state store (I/O, corruption, a full disk).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

pub type StoreResult<T> = Result<T, StoreError>;

/// Key-value pairs, as scans return them.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Uncommitted writes: `None` is a delete.
type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A set of writes applied atomically: all or none survive a crash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// `(key, Some(value))` puts, `(key, None)` deletes, applied in order.
    pub ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteBatch {
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// The store of one stage: an ordered byte-key map with atomic batches and
/// an explicit durable flush.
pub trait StateStore: Send + Sync + fmt::Debug {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>>;

    /// Every entry whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> StoreResult<Entries>;

    /// At most `limit` entries whose key starts with `prefix` and is at or
    /// after `from`, in key order (a page of a long scan).
    fn scan_from(&self, prefix: &[u8], from: &[u8], limit: usize) -> StoreResult<Entries> {
        Ok(self
            .scan_prefix(prefix)?
            .into_iter()
            .filter(|(k, _)| k.as_slice() >= from)
            .take(limit)
            .collect())
    }

    /// Applies `batch` atomically. It is durable only after [`Self::flush`].
    fn commit(&self, batch: WriteBatch) -> StoreResult<()>;

    /// Makes every commit so far durable (fsync).
    fn flush(&self) -> StoreResult<()>;

    /// Removes everything.
    fn clear(&self) -> StoreResult<()>;

    /// Whether commits survive the process.
    fn durable(&self) -> bool;

    /// The log this store shares with others, if any: stores that return
    /// the same id write their commits through one log that reaches the
    /// disk in order (a commit made after another is never durable without
    /// it), and one flush of any of them makes all of their commits so far
    /// durable. None: the store syncs on its own, or not at all.
    fn shared_log(&self) -> Option<usize> {
        None
    }
}

/// A store in memory: nothing survives the process.
#[derive(Debug, Default)]
pub struct MemStore {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }
}

impl StateStore for MemStore {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.map.lock().unwrap().get(key).cloned())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> StoreResult<Entries> {
        Ok(self
            .map
            .lock()
            .unwrap()
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn scan_from(&self, prefix: &[u8], from: &[u8], limit: usize) -> StoreResult<Entries> {
        let start = if from > prefix { from } else { prefix };
        Ok(self
            .map
            .lock()
            .unwrap()
            .range(start.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn commit(&self, batch: WriteBatch) -> StoreResult<()> {
        let mut map = self.map.lock().unwrap();
        for (k, v) in batch.ops {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
        Ok(())
    }

    fn flush(&self) -> StoreResult<()> {
        Ok(())
    }

    fn clear(&self) -> StoreResult<()> {
        self.map.lock().unwrap().clear();
        Ok(())
    }

    fn durable(&self) -> bool {
        false
    }
}

/// The key prefix under which a stage's node state lives in its store.
pub const NODE_STATE_PREFIX: &[u8] = b"s/";

/// A node's keyed state: get / put / delete / scan over byte keys (and
/// [`Value`]s under string keys), committed by the runtime together with the
/// stage's input positions and outputs.
///
/// Reads see the node's own uncommitted writes. Cloning gives another handle
/// to the same state.
#[derive(Clone)]
pub struct KeyedState {
    store: Arc<dyn StateStore>,
    overlay: Arc<Mutex<Overlay>>,
    /// Set when the stage moved on to another incarnation's state
    /// ([`KeyedState::detached`]).
    retired: Arc<std::sync::atomic::AtomicBool>,
}

impl fmt::Debug for KeyedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KeyedState({} uncommitted)",
            self.overlay.lock().unwrap().len()
        )
    }
}

impl Default for KeyedState {
    /// State in memory only (for tests and `best_effort`).
    fn default() -> Self {
        KeyedState::new(Arc::new(MemStore::new()))
    }
}

fn full_key(key: &[u8]) -> Vec<u8> {
    let mut k = NODE_STATE_PREFIX.to_vec();
    k.extend_from_slice(key);
    k
}

fn store_err(e: StoreError) -> NodeError {
    NodeError::failed(format!("state store: {e}"))
}

impl KeyedState {
    pub fn new(store: Arc<dyn StateStore>) -> KeyedState {
        KeyedState {
            store,
            overlay: Arc::default(),
            retired: Arc::default(),
        }
    }

    /// The same store with a new, empty overlay, for the next incarnation
    /// of a stage; this handle (and its clones) is retired: what an
    /// abandoned node (a call that timed out and still runs) writes to it
    /// is never committed, and [`Self::retired`] tells it to stop.
    pub fn detached(&self) -> KeyedState {
        self.retired
            .store(true, std::sync::atomic::Ordering::SeqCst);
        KeyedState::new(self.store.clone())
    }

    /// Whether the stage has moved on to another incarnation: a node that
    /// still holds this handle was abandoned and must have no effects.
    pub fn retired(&self) -> bool {
        self.retired.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, NodeError> {
        let k = full_key(key);
        if let Some(v) = self.overlay.lock().unwrap().get(&k) {
            return Ok(v.clone());
        }
        self.store.get(&k).map_err(store_err)
    }

    pub fn put(&self, key: &[u8], value: impl Into<Vec<u8>>) {
        self.overlay
            .lock()
            .unwrap()
            .insert(full_key(key), Some(value.into()));
    }

    pub fn delete(&self, key: &[u8]) {
        self.overlay.lock().unwrap().insert(full_key(key), None);
    }

    /// Entries whose key starts with `prefix` (keys without the internal
    /// prefix), in key order, uncommitted writes included.
    pub fn scan(&self, prefix: &[u8]) -> Result<Entries, NodeError> {
        let p = full_key(prefix);
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = self
            .store
            .scan_prefix(&p)
            .map_err(store_err)?
            .into_iter()
            .collect();
        for (k, v) in self
            .overlay
            .lock()
            .unwrap()
            .range(p.clone()..)
            .take_while(|(k, _)| k.starts_with(&p))
        {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        let cut = NODE_STATE_PREFIX.len();
        Ok(merged
            .into_iter()
            .map(|(k, v)| (k[cut..].to_vec(), v))
            .collect())
    }

    /// A page of [`Self::scan`]: entries under `prefix` at or after `from`
    /// (keys without the internal prefix), about `limit` of them, and
    /// where the next page starts (`None`: this was the last). A page may
    /// hold fewer than `limit` (uncommitted deletes), even none, and still
    /// have a next.
    #[allow(clippy::type_complexity)]
    pub fn scan_page(
        &self,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<(Entries, Option<Vec<u8>>), NodeError> {
        let p = full_key(prefix);
        let f = full_key(from);
        let stored = self
            .store
            .scan_from(&p, &f, limit.max(1))
            .map_err(store_err)?;
        // a full page ends at its last key; the overlay fills in up to it
        let next = (stored.len() >= limit.max(1)).then(|| {
            let mut n = stored.last().expect("a full page").0.clone();
            n.push(0);
            n
        });
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = stored.into_iter().collect();
        let start = if f > p { f } else { p.clone() };
        for (k, v) in self
            .overlay
            .lock()
            .unwrap()
            .range(start..)
            .take_while(|(k, _)| k.starts_with(&p) && next.as_ref().is_none_or(|n| *k < n))
        {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        let cut = NODE_STATE_PREFIX.len();
        Ok((
            merged
                .into_iter()
                .map(|(k, v)| (k[cut..].to_vec(), v))
                .collect(),
            next.map(|n| n[cut..].to_vec()),
        ))
    }

    /// Reads a [`Value`] stored with [`Self::put_value`].
    pub fn get_value(&self, key: &str) -> Result<Option<Value>, NodeError> {
        match self.get(key.as_bytes())? {
            None => Ok(None),
            Some(bytes) => codec::decode(&bytes).map(Some).map_err(|e| {
                NodeError::failed(format!("state key `{key}` holds an undecodable value: {e}"))
            }),
        }
    }

    pub fn put_value(&self, key: &str, value: &Value) -> Result<(), NodeError> {
        let bytes = codec::encode(value)
            .map_err(|e| NodeError::failed(format!("cannot encode state `{key}`: {e}")))?;
        self.put(key.as_bytes(), bytes);
        Ok(())
    }

    /// Whether the state outlives the process.
    pub fn durable(&self) -> bool {
        self.store.durable()
    }

    /// The uncommitted changes, as store keys, emptying the overlay (the
    /// runtime puts them into its next commit).
    pub fn take_changes(&self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        std::mem::take(&mut *self.overlay.lock().unwrap())
            .into_iter()
            .collect()
    }

    /// Forgets the uncommitted changes (the stage restarts from its last
    /// commit).
    pub fn discard(&self) {
        self.overlay.lock().unwrap().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_reads_its_writes_and_commits_atomically() {
        let store: Arc<dyn StateStore> = Arc::new(MemStore::new());
        let st = KeyedState::new(store.clone());
        st.put(b"a", b"1".to_vec());
        st.put(b"b", b"2".to_vec());
        assert_eq!(st.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.get(b"s/a").unwrap(), None, "nothing committed yet");
        let batch = WriteBatch {
            ops: st.take_changes(),
        };
        store.commit(batch).unwrap();
        st.delete(b"a");
        st.put(b"c", b"3".to_vec());
        assert_eq!(
            st.scan(b"").unwrap(),
            vec![
                (b"b".to_vec(), b"2".to_vec()),
                (b"c".to_vec(), b"3".to_vec())
            ]
        );
        st.discard();
        assert_eq!(st.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(st.get(b"c").unwrap(), None);
        // pages: the store's entries with the overlay's changes, in order
        store
            .commit(WriteBatch {
                ops: (0..5u8)
                    .map(|i| (full_key(&[b'p', i]), Some(vec![i])))
                    .collect(),
            })
            .unwrap();
        st.delete(&[b'p', 1]);
        st.put(&[b'p', 9], vec![9]);
        let (page, next) = st.scan_page(b"p", b"p", 3).unwrap();
        let keys: Vec<u8> = page.iter().map(|(k, _)| k[1]).collect();
        assert_eq!(
            keys,
            [0, 2],
            "1 is deleted; the page ends at the store's third"
        );
        let (page, next) = st.scan_page(b"p", &next.unwrap(), 3).unwrap();
        let keys: Vec<u8> = page.iter().map(|(k, _)| k[1]).collect();
        assert_eq!(keys, [3, 4, 9]);
        assert!(next.is_none());
        st.put_value("n", &Value::Int(7)).unwrap();
        assert_eq!(st.get_value("n").unwrap(), Some(Value::Int(7)));

        // an abandoned node's writes stay out of the next incarnation's
        let old = st.clone();
        let next = st.detached();
        assert!(old.retired() && st.retired() && !next.retired());
        old.put(b"late", b"x".to_vec());
        assert_eq!(next.get(b"late").unwrap(), None);
        assert!(next.take_changes().is_empty());
        assert_eq!(next.get(b"b").unwrap(), Some(b"2".to_vec()), "same store");
    }
}
