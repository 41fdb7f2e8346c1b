//! What a stage keeps in its [`StateStore`], and how its commits are built.
//!
//! Layout of a stage's store (all in one keyspace, so one atomic batch
//! covers a whole commit):
//!
//! | key | value |
//! | --- | --- |
//! | `m/format` | `rill-state-2` (every other value ends with its CRC-32) |
//! | `m/epoch` | the stage's producer epoch (u64 BE), drawn when the store is created |
//! | `m/source` | a source's `(emitted, failed, done)` |
//! | `m/finished` | present once the node has finished (all inputs ended) |
//! | `m/dlq_len` | the committed length of the stage's dead-letter queue (u64 BE) |
//! | `i/<input>` | an input's committed `(epoch, next, ended)` |
//! | `o/<output>\0n` | an output log's `(next_seq, end_seq)` |
//! | `o/<output>\0g<first_seq BE>` | the messages one commit appended: for each, its record count (u64 BE), its length (u32 BE), the encoded message |
//! | `o/<output>\0e<first_seq BE>` | one held message, as format 2 wrote them (read, trimmed, never written now): record count (u64 BE) + the encoded message |
//! | `s/<key>` | the node's keyed state |
//!
//! A commit writes its new messages as one value, not one per message:
//! sled's cost follows the keys a batch touches (tree pages rewritten and
//! deltas logged per key, a process-wide lock held meanwhile), and a
//! commit of a thousand records used to touch a dozen keys to write and a
//! dozen to delete. A group is deleted once every consumer acknowledged
//! all of it; a group acknowledged in part is kept whole (its first
//! messages are sent again after a restart, and dropped by consumers as
//! duplicates).

use std::collections::VecDeque;

use rill_core::state::{StateStore, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::log::OutLog;

pub const EPOCH_KEY: &[u8] = b"m/epoch";
pub const SOURCE_KEY: &[u8] = b"m/source";
pub const FINISHED_KEY: &[u8] = b"m/finished";
/// A stage's event-time clock (input watermarks, what it sent).
pub const CLOCK_KEY: &[u8] = b"m/clock";

/// Loads the stage's epoch, or draws one for a new store.
pub fn load_epoch(store: &dyn StateStore) -> Result<u64, String> {
    match store.get(EPOCH_KEY).map_err(|e| e.to_string())? {
        Some(b) => Ok(u64::from_be_bytes(
            b.as_slice()
                .try_into()
                .map_err(|_| "the stage epoch is malformed".to_owned())?,
        )),
        None => {
            let epoch = fastrand::u64(..);
            let mut batch = WriteBatch::default();
            batch.put(EPOCH_KEY.to_vec(), epoch.to_be_bytes().to_vec());
            store.commit(batch).map_err(|e| e.to_string())?;
            store.flush().map_err(|e| e.to_string())?;
            Ok(epoch)
        }
    }
}

/// What a stage committed, as its store holds it (a new store holds
/// nothing, and gets its epoch drawn and committed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub epoch: u64,
    pub source: SourcePos,
    /// The node finished (all inputs ended, `finish` ran).
    pub finished: bool,
    /// The committed length of the stage's dead-letter queue, if any.
    pub dlq_len: Option<u64>,
}

impl Committed {
    /// Reads a stage's committed state; an undecodable entry is an error
    /// that names it.
    pub fn load(store: &dyn StateStore) -> Result<Committed, String> {
        let epoch = load_epoch(store)?;
        let source = match store.get(SOURCE_KEY).map_err(|e| e.to_string())? {
            Some(b) => decode("the source position", &b)?,
            None => SourcePos::default(),
        };
        let finished = store
            .get(FINISHED_KEY)
            .map_err(|e| e.to_string())?
            .is_some();
        let dlq_len = store
            .get(crate::dlq::DLQ_LEN_KEY)
            .map_err(|e| e.to_string())?
            .map(|b| {
                b.as_slice()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .map_err(|_| "the dead-letter queue length is malformed".to_owned())
            })
            .transpose()?;
        Ok(Committed {
            epoch,
            source,
            finished,
            dlq_len,
        })
    }

    /// The committed position of input `label` (the start when none).
    pub fn input(store: &dyn StateStore, label: &str) -> Result<InputPos, String> {
        match store.get(&input_key(label)).map_err(|e| e.to_string())? {
            Some(b) => decode(&format!("the position of input `{label}`"), &b),
            None => Ok(InputPos::default()),
        }
    }

    /// Commits (and flushes) the length a new run adopts its dead-letter
    /// queue at, before it appends.
    pub fn adopt_dlq_len(store: &dyn StateStore, len: u64) -> Result<(), String> {
        let mut batch = WriteBatch::default();
        batch.put(crate::dlq::DLQ_LEN_KEY.to_vec(), len.to_be_bytes().to_vec());
        store
            .commit(batch)
            .and_then(|_| store.flush())
            .map_err(|e| e.to_string())
    }
}

pub fn input_key(label: &str) -> Vec<u8> {
    let mut k = b"i/".to_vec();
    k.extend_from_slice(label.as_bytes());
    k
}

fn out_prefix(name: Option<&str>) -> Vec<u8> {
    let mut k = b"o/".to_vec();
    k.extend_from_slice(name.unwrap_or("").as_bytes());
    k.push(0);
    k
}

/// An input's committed position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputPos {
    pub epoch: Option<u64>,
    pub next: u64,
    pub ended: bool,
}

/// A source's committed progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePos {
    pub emitted: u64,
    pub failed: u64,
    pub done: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct OutMeta {
    next_seq: u64,
    end_seq: Option<u64>,
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).expect("plain structs encode")
}

pub fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("{what} is undecodable ({e})"))
}

/// One stage output: its [`OutLog`] and what of it is committed.
#[derive(Debug)]
pub struct OutputLog<P> {
    pub log: OutLog<P>,
    prefix: Vec<u8>,
    committed_seq: u64,
    committed_end: Option<u64>,
    /// The values holding messages in the store, in order: key tag (`g` a
    /// group, `e` a message of format 2), first number, number past the
    /// last record.
    stored: VecDeque<(u8, u64, u64)>,
    /// What the batch being committed does to `stored`: values it deletes
    /// from the front, the group it adds.
    staged: (usize, Option<(u8, u64, u64)>),
}

/// The tag of a key holding the messages of one commit.
const GROUP: u8 = b'g';
/// The tag of a key holding one message (format 2).
const SINGLE: u8 = b'e';

/// Splits a group value into its messages `(count, payload)`.
fn split_group(v: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    let mut out = Vec::new();
    let mut rest = v;
    while !rest.is_empty() {
        if rest.len() < 12 {
            return None;
        }
        let count = u64::from_be_bytes(rest[..8].try_into().ok()?);
        let len = u32::from_be_bytes(rest[8..12].try_into().ok()?) as usize;
        let body = rest.get(12..12 + len)?;
        out.push((count, body));
        rest = &rest[12 + len..];
    }
    Some(out)
}

impl<P: Clone> OutputLog<P> {
    /// Loads output `name`'s log from the store (empty in a new store),
    /// checking that its messages are contiguous.
    pub fn load(
        store: &dyn StateStore,
        name: Option<&str>,
        consumers: Vec<(String, u64)>,
        decode_payload: impl Fn(&[u8]) -> P,
    ) -> Result<OutputLog<P>, String> {
        let prefix = out_prefix(name);
        let label = name.unwrap_or("main");
        let mut log = OutLog::new(consumers);
        let mut meta_key = prefix.clone();
        meta_key.push(b'n');
        let meta: OutMeta = match store.get(&meta_key).map_err(|e| e.to_string())? {
            Some(b) => decode(&format!("the log header of output `{label}`"), &b)?,
            None => OutMeta::default(),
        };
        let mut entries = Vec::new();
        let mut stored = VecDeque::new();
        // format 2's single messages, then groups: both in number order
        for tag in [SINGLE, GROUP] {
            let mut key_prefix = prefix.clone();
            key_prefix.push(tag);
            for (k, v) in store.scan_prefix(&key_prefix).map_err(|e| e.to_string())? {
                let seq_bytes: [u8; 8] = k[key_prefix.len()..]
                    .try_into()
                    .map_err(|_| format!("output `{label}` has a malformed log key"))?;
                let first = u64::from_be_bytes(seq_bytes);
                let truncated = || format!("output `{label}`: message {first} is truncated");
                let messages = if tag == SINGLE {
                    if v.len() < 8 {
                        return Err(truncated());
                    }
                    vec![(
                        u64::from_be_bytes(v[..8].try_into().expect("8 bytes")),
                        &v[8..],
                    )]
                } else {
                    split_group(&v)
                        .filter(|m| !m.is_empty())
                        .ok_or_else(truncated)?
                };
                let mut seq = first;
                for (count, body) in messages {
                    entries.push((seq, count, decode_payload(body)));
                    seq += count;
                }
                stored.push_back((tag, first, seq));
            }
        }
        let mut expect: Option<u64> = None;
        for &(first, count, _) in &entries {
            if expect.is_some_and(|e| e != first) {
                return Err(format!(
                    "output `{label}`: the log skips from {} to {first}",
                    expect.unwrap_or(0)
                ));
            }
            expect = Some(first + count);
        }
        if let Some(e) = expect
            && e != meta.next_seq
        {
            return Err(format!(
                "output `{label}`: the log ends at {e} but its header says {}",
                meta.next_seq
            ));
        }
        log.restore(entries, meta.next_seq, meta.end_seq);
        Ok(OutputLog {
            log,
            prefix,
            committed_seq: meta.next_seq,
            committed_end: meta.end_seq,
            stored,
            staged: (0, None),
        })
    }

    /// A log for a stage with no store behind it.
    pub fn fresh(name: Option<&str>, consumers: Vec<(String, u64)>) -> OutputLog<P> {
        OutputLog {
            log: OutLog::new(consumers),
            prefix: out_prefix(name),
            committed_seq: 0,
            committed_end: None,
            stored: VecDeque::new(),
            staged: (0, None),
        }
    }

    /// Whether anything changed since the last commit.
    pub fn dirty(&self) -> bool {
        self.log.next_seq() != self.committed_seq || self.log.end_seq() != self.committed_end
    }

    /// The messages appended since the last commit.
    pub fn uncommitted(&self) -> impl Iterator<Item = &P> {
        self.log.entries_from(self.committed_seq).map(|(_, _, p)| p)
    }

    pub fn committed_seq(&self) -> u64 {
        self.committed_seq
    }

    /// Adds to `batch` what changed since the last commit: the new
    /// messages (one value), deletes of values every consumer acknowledged,
    /// the header.
    pub fn stage_commit(&mut self, batch: &mut WriteBatch, bytes: impl Fn(&P, &mut Vec<u8>)) {
        self.log.take_trimmed();
        // the first number the log still holds: what precedes it was
        // acknowledged by every consumer
        let low = self
            .log
            .entries_from(0)
            .next()
            .map_or(self.log.next_seq(), |(first, _, _)| first);
        self.staged = (0, None);
        for &(tag, first, end) in &self.stored {
            if end > low {
                break;
            }
            batch.delete(self.key(tag, first));
            self.staged.0 += 1;
        }
        if !self.dirty() {
            return;
        }
        let mut group = Vec::new();
        let mut span = None;
        for (first, count, p) in self.log.entries_from(self.committed_seq) {
            group.extend_from_slice(&count.to_be_bytes());
            let at = group.len();
            group.extend_from_slice(&[0; 4]);
            // the body straight into the group: no copy of it on the way
            bytes(p, &mut group);
            let len = (group.len() - at - 4) as u32;
            group[at..at + 4].copy_from_slice(&len.to_be_bytes());
            let start = span.map_or(first, |(s, _)| s);
            span = Some((start, first + count));
        }
        if let Some((first, end)) = span {
            batch.put(self.key(GROUP, first), group);
            self.staged.1 = Some((GROUP, first, end));
        }
        let mut meta_key = self.prefix.clone();
        meta_key.push(b'n');
        batch.put(
            meta_key,
            encode(&OutMeta {
                next_seq: self.log.next_seq(),
                end_seq: self.log.end_seq(),
            }),
        );
    }

    /// The batch from [`Self::stage_commit`] is durable.
    pub fn committed(&mut self) {
        let (deleted, added) = std::mem::take(&mut self.staged);
        self.stored.drain(..deleted);
        self.stored.extend(added);
        self.committed_seq = self.log.next_seq();
        self.committed_end = self.log.end_seq();
    }

    /// Forgets what was appended since the last commit.
    pub fn rollback(&mut self) {
        self.staged = (0, None);
        self.log.truncate_to(self.committed_seq);
        if self.committed_end.is_some() && self.log.end_seq().is_none() {
            // cannot happen: the end is the last thing appended
            debug_assert!(false, "rollback lost a committed end");
        }
    }

    fn key(&self, tag: u8, first: u64) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.push(tag);
        k.extend_from_slice(&first.to_be_bytes());
        k
    }
}

#[cfg(test)]
mod tests {
    //! Model-based test of the durable log: random appends, acks, commits,
    //! rollbacks and crashes (reloads from what was committed) against a
    //! model of what must survive.
    use super::*;
    use proptest::prelude::*;
    use rill_core::state::MemStore;

    #[derive(Debug, Clone)]
    enum Op {
        Append(u64),
        Ack(usize, u64),
        Commit,
        Rollback,
        Crash,
        End,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u64..6).prop_map(Op::Append),
            3 => (0usize..2, 0u64..40).prop_map(|(c, n)| Op::Ack(c, n)),
            2 => Just(Op::Commit),
            1 => Just(Op::Rollback),
            1 => Just(Op::Crash),
            1 => Just(Op::End),
        ]
    }

    fn payload(first: u64, count: u64) -> Vec<u8> {
        let mut v = first.to_be_bytes().to_vec();
        v.extend_from_slice(&count.to_be_bytes());
        v
    }

    #[test]
    fn a_format_2_log_is_read_and_its_messages_deleted_once_acknowledged() {
        // format 2 kept one value per message: `e` keys, count + message
        let store = MemStore::new();
        let mut batch = WriteBatch::default();
        for (first, count) in [(0u64, 3u64), (3, 2)] {
            let mut k = b"o/x\0e".to_vec();
            k.extend_from_slice(&first.to_be_bytes());
            let mut v = count.to_be_bytes().to_vec();
            v.extend_from_slice(&payload(first, count));
            batch.put(k, v);
        }
        batch.put(
            b"o/x\0n".to_vec(),
            encode(&OutMeta {
                next_seq: 5,
                end_seq: None,
            }),
        );
        store.commit(batch).unwrap();
        let consumers = vec![("a".to_owned(), 100)];
        let mut out =
            OutputLog::load(&store, Some("x"), consumers.clone(), |b: &[u8]| b.to_vec()).unwrap();
        let held: Vec<_> = out.log.entries_from(0).map(|(f, c, _)| (f, c)).collect();
        assert_eq!(held, [(0, 3), (3, 2)]);
        // new messages go into one group after them
        out.log.append(4, payload(5, 4));
        out.log.append(1, payload(9, 1));
        out.log.ack("a", 3);
        let mut batch = WriteBatch::default();
        out.stage_commit(&mut batch, |p, o| o.extend_from_slice(p));
        store.commit(batch).unwrap();
        out.committed();
        let keys: Vec<Vec<u8>> = store
            .scan_prefix(b"o/x\0")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let key = |tag: u8, n: u64| [b"o/x\0".as_slice(), &[tag], &n.to_be_bytes()].concat();
        assert_eq!(keys, [key(b'e', 3), key(b'g', 5), b"o/x\0n".to_vec()]);
        // a reload reads both kinds, in order
        let mut out = OutputLog::load(&store, Some("x"), consumers, |b: &[u8]| b.to_vec()).unwrap();
        let held: Vec<_> = out
            .log
            .entries_from(0)
            .map(|(f, c, p)| (f, c, p.clone()))
            .collect();
        assert_eq!(
            held,
            [
                (3, 2, payload(3, 2)),
                (5, 4, payload(5, 4)),
                (9, 1, payload(9, 1))
            ]
        );
        // a group acknowledged in part stays whole; wholly, it goes
        out.log.ack("a", 9);
        let mut batch = WriteBatch::default();
        out.stage_commit(&mut batch, |p, o| o.extend_from_slice(p));
        store.commit(batch).unwrap();
        out.committed();
        assert!(store.get(&key(b'e', 3)).unwrap().is_none());
        assert!(store.get(&key(b'g', 5)).unwrap().is_some());
        out.log.ack("a", 10);
        let mut batch = WriteBatch::default();
        out.stage_commit(&mut batch, |p, o| o.extend_from_slice(p));
        store.commit(batch).unwrap();
        out.committed();
        assert!(store.get(&key(b'g', 5)).unwrap().is_none());
    }

    proptest! {
        #[test]
        fn durable_log_matches_model(ops in proptest::collection::vec(op(), 1..80)) {
            let store = MemStore::new();
            let consumers = || vec![("a".to_owned(), 1000), ("b".to_owned(), 1000)];
            let load = |store: &MemStore| {
                OutputLog::load(store, Some("x"), consumers(), |b: &[u8]| b.to_vec()).unwrap()
            };
            let mut out = load(&store);
            // model: committed next number and end; what each consumer has
            // acknowledged (acks are facts: they survive crashes in the
            // consumer, which acks only what it committed)
            let mut m_next = 0u64;
            let mut m_end: Option<u64> = None;
            let mut live_next = 0u64;
            let mut live_end: Option<u64> = None;
            let mut acked = [0u64; 2];
            for op in ops {
                let just_committed = matches!(op, Op::Commit);
                match op {
                    Op::Append(k) if live_end.is_none() => {
                        let first = out.log.next_seq();
                        out.log.append(k, payload(first, k));
                        live_next += k;
                    }
                    Op::End if live_end.is_none() => {
                        let first = out.log.next_seq();
                        out.log.append_end(payload(first, 1));
                        live_end = Some(first);
                        live_next += 1;
                    }
                    Op::Ack(c, n) => {
                        // a consumer acknowledges only what was committed
                        let n = n.min(m_next);
                        acked[c] = acked[c].max(n);
                        out.log.ack(["a", "b"][c], acked[c]);
                    }
                    Op::Commit => {
                        let mut batch = WriteBatch::default();
                        out.stage_commit(&mut batch, |p, o| o.extend_from_slice(p));
                        store.commit(batch).unwrap();
                        out.committed();
                        m_next = live_next;
                        m_end = live_end;
                    }
                    Op::Rollback => {
                        out.rollback();
                        live_next = m_next;
                        live_end = m_end;
                        for (c, name) in ["a", "b"].into_iter().enumerate() {
                            out.log.ack(name, acked[c]);
                        }
                    }
                    Op::Crash => {
                        out = load(&store);
                        live_next = m_next;
                        live_end = m_end;
                        for (c, name) in ["a", "b"].into_iter().enumerate() {
                            out.log.ack(name, acked[c]);
                        }
                    }
                    _ => {}
                }
                // the live log continues the committed one
                prop_assert_eq!(out.log.next_seq(), live_next);
                prop_assert_eq!(out.log.end_seq(), live_end);
                let low = acked[0].min(acked[1]);
                // everything not acknowledged by all is held, contiguous,
                // and each message is the one appended with that number
                let held: Vec<(u64, u64, Vec<u8>)> =
                    out.log.entries_from(0).map(|(f, c, p)| (f, c, p.clone())).collect();
                match held.first() {
                    Some(h) => prop_assert!(h.0 <= low, "an unacknowledged message was trimmed"),
                    None => prop_assert!(low >= live_next, "the log lost messages"),
                }
                let mut expect = held.first().map_or(live_next, |h| h.0);
                for (f, c, p) in &held {
                    prop_assert_eq!(*f, expect);
                    prop_assert_eq!(p, &payload(*f, *c));
                    expect = f + c;
                }
                prop_assert_eq!(expect, live_next);
                // resending from any unacknowledged number finds it
                let from = low.min(live_next);
                if from < live_next {
                    prop_assert!(!out.log.resend_from(from, u64::MAX).is_empty());
                }
                // the store holds only committed messages not yet trimmed at
                // the last commit, and nothing past the committed end
                // (one value per commit, each message numbered on from
                // the value's key; values wholly acknowledged are deleted)
                let stored = store.scan_prefix(b"o/x\0g").unwrap();
                for (k, v) in &stored {
                    let mut seq = u64::from_be_bytes(k[5..].try_into().unwrap());
                    let messages = split_group(v).unwrap();
                    prop_assert!(!messages.is_empty());
                    for (count, body) in messages {
                        prop_assert_eq!(body, &payload(seq, count)[..]);
                        seq += count;
                    }
                    prop_assert!(seq <= m_next);
                }
                if just_committed {
                    // a commit deletes every value wholly acknowledged
                    for (k, v) in &stored {
                        let first = u64::from_be_bytes(k[5..].try_into().unwrap());
                        let end = first + split_group(v).unwrap().iter().map(|m| m.0).sum::<u64>();
                        prop_assert!(end > low, "value {first}..{end} is held past the low mark {low}");
                    }
                }
            }
        }
    }
}
