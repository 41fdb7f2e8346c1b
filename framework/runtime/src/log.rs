//! The producer's output log and the consumer's input cursor: the pure
//! bookkeeping of the protocol in [`crate::protocol`], with no I/O, so it can
//! be tested against a model.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// One published message kept for resending.
#[derive(Debug, Clone)]
struct Entry<P> {
    first_seq: u64,
    /// Records in it (1 for the end marker).
    count: u64,
    payload: P,
}

/// A stage output's log of unacknowledged messages, and its consumers.
///
/// `P` is the encoded message as the transport holds it (the runtime keeps
/// Zenoh's reference-counted buffers, so a resend copies nothing).
#[derive(Debug)]
pub struct OutLog<P = Arc<[u8]>> {
    entries: VecDeque<Entry<P>>,
    next_seq: u64,
    /// consumer -> (acknowledged up to, exclusive; window in records)
    consumers: BTreeMap<String, (u64, u64)>,
    end_seq: Option<u64>,
    /// First numbers of the messages dropped since the last
    /// [`OutLog::take_trimmed`] (the durable log deletes them).
    trimmed: Vec<u64>,
}

impl<P: Clone> OutLog<P> {
    /// A log for the given consumers and their windows (queue sizes).
    pub fn new(consumers: impl IntoIterator<Item = (String, u64)>) -> OutLog<P> {
        OutLog {
            entries: VecDeque::new(),
            next_seq: 0,
            consumers: consumers
                .into_iter()
                .map(|(c, w)| (c, (0, w.max(1))))
                .collect(),
            end_seq: None,
            trimmed: Vec::new(),
        }
    }

    /// Loads a log kept durably: its messages `(first_seq, count, payload)`
    /// in order, the next number and the end marker's number. Every consumer
    /// counts as having acknowledged what precedes the first message (what
    /// was trimmed had been acknowledged by all).
    pub fn restore(
        &mut self,
        entries: impl IntoIterator<Item = (u64, u64, P)>,
        next_seq: u64,
        end_seq: Option<u64>,
    ) {
        self.entries = entries
            .into_iter()
            .map(|(first_seq, count, payload)| Entry {
                first_seq,
                count,
                payload,
            })
            .collect();
        self.next_seq = next_seq;
        self.end_seq = end_seq;
        let low = self.entries.front().map_or(next_seq, |e| e.first_seq);
        for (acked, _) in self.consumers.values_mut() {
            *acked = low;
        }
        self.trimmed.clear();
    }

    /// Drops every message numbered at or past `seq` (what was appended
    /// after the last commit, when the stage restarts from that commit).
    pub fn truncate_to(&mut self, seq: u64) {
        while self.entries.back().is_some_and(|e| e.first_seq >= seq) {
            self.entries.pop_back();
        }
        debug_assert!(
            self.entries
                .back()
                .is_none_or(|e| e.first_seq + e.count <= seq),
            "truncate_to cuts a message"
        );
        if self.end_seq.is_some_and(|e| e >= seq) {
            self.end_seq = None;
        }
        self.next_seq = seq;
        for (acked, _) in self.consumers.values_mut() {
            *acked = (*acked).min(seq);
        }
    }

    /// The messages numbered from `seq` on: `(first_seq, count, payload)`.
    pub fn entries_from(&self, seq: u64) -> impl Iterator<Item = (u64, u64, &P)> {
        self.entries
            .iter()
            .filter(move |e| e.first_seq >= seq)
            .map(|e| (e.first_seq, e.count, &e.payload))
    }

    /// The first numbers of the messages dropped since the last call.
    pub fn take_trimmed(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.trimmed)
    }

    /// The end marker's number, once appended.
    pub fn end_seq(&self) -> Option<u64> {
        self.end_seq
    }

    /// The consumers' acknowledgements.
    pub fn acks(&self) -> impl Iterator<Item = (&str, u64)> {
        self.consumers.iter().map(|(c, (a, _))| (c.as_str(), *a))
    }

    /// The number the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The first number still held (every consumer acknowledged those
    /// below it, and they were dropped), or the next number when nothing
    /// is held.
    pub fn low(&self) -> u64 {
        self.entries.front().map_or(self.next_seq, |e| e.first_seq)
    }

    /// Lowest acknowledgement over all consumers (`next_seq` with none).
    pub fn min_acked(&self) -> u64 {
        self.consumers
            .values()
            .map(|(a, _)| *a)
            .min()
            .unwrap_or(self.next_seq)
    }

    /// How many more records may be published before a consumer's window is
    /// full.
    pub fn room(&self) -> u64 {
        self.consumers
            .values()
            .map(|(acked, window)| (acked + window).saturating_sub(self.next_seq))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Records published and not yet acknowledged by every consumer.
    pub fn unacked(&self) -> u64 {
        self.next_seq - self.min_acked()
    }

    pub fn has_consumers(&self) -> bool {
        !self.consumers.is_empty()
    }

    /// Appends a message of `count` records numbered from [`Self::next_seq`].
    pub fn append(&mut self, count: u64, payload: P) {
        assert!(self.end_seq.is_none(), "append after end");
        let first_seq = self.next_seq;
        self.next_seq += count;
        if self.has_consumers() {
            self.entries.push_back(Entry {
                first_seq,
                count,
                payload,
            });
        }
    }

    /// Appends the end marker; it takes one number.
    pub fn append_end(&mut self, payload: P) {
        let seq = self.next_seq;
        self.append(1, payload);
        self.end_seq = Some(seq);
    }

    pub fn ended(&self) -> bool {
        self.end_seq.is_some()
    }

    /// Every consumer has acknowledged the end marker.
    pub fn finished(&self) -> bool {
        self.end_seq.is_some_and(|e| self.min_acked() > e)
    }

    /// Records a consumer's acknowledgement; true if it moved the low mark
    /// (and so freed room or log space). Unknown consumers are ignored:
    /// only the consumers of the pipeline spec hold the log.
    pub fn ack(&mut self, consumer: &str, next: u64) -> bool {
        let before = self.min_acked();
        if let Some((acked, _)) = self.consumers.get_mut(consumer) {
            // acks are cumulative and can arrive out of order
            *acked = (*acked).max(next.min(self.next_seq));
        }
        let after = self.min_acked();
        while let Some(e) = self.entries.front() {
            if e.first_seq + e.count <= after {
                self.trimmed.push(e.first_seq);
                self.entries.pop_front();
            } else {
                break;
            }
        }
        after > before
    }

    /// The held messages that contain numbers at or above `from`, oldest
    /// first, up to `limit` records past `from`.
    pub fn resend_from(&self, from: u64, limit: u64) -> Vec<P> {
        self.resend_between(from, u64::MAX, limit)
    }

    /// As [`Self::resend_from`], only messages that start below `upto`.
    pub fn resend_between(&self, from: u64, upto: u64, limit: u64) -> Vec<P> {
        let stop = from.saturating_add(limit).min(upto);
        self.entries
            .iter()
            .filter(|e| e.first_seq + e.count > from && e.first_seq < stop)
            .map(|e| e.payload.clone())
            .collect()
    }

    /// Whether messages were dropped since the last [`Self::take_trimmed`].
    pub fn has_trimmed(&self) -> bool {
        !self.trimmed.is_empty()
    }

    /// Messages held.
    pub fn held(&self) -> usize {
        self.entries.len()
    }
}

/// What a consumer makes of an arriving message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// New records: skip the first `skip` (already seen), take the rest.
    Fresh { skip: usize },
    /// Everything in it was seen before.
    Duplicate,
    /// It starts past what we expect: something was lost; ask from `from`.
    Gap { from: u64 },
}

/// A consumer's position in one input stream.
#[derive(Debug, Clone, Default)]
pub struct InCursor {
    pub epoch: Option<u64>,
    /// Next number expected.
    pub next: u64,
    pub ended: bool,
}

impl InCursor {
    /// Classifies a message of `count` numbers from `first_seq` from a
    /// producer of `epoch`, and advances past it when fresh. A new epoch
    /// means the producer started over; the cursor starts over with it.
    pub fn arrive(&mut self, epoch: u64, first_seq: u64, count: u64) -> Arrival {
        if self.epoch != Some(epoch) {
            self.epoch = Some(epoch);
            self.next = 0;
            self.ended = false;
        }
        let end = first_seq + count;
        if end <= self.next {
            Arrival::Duplicate
        } else if first_seq > self.next {
            Arrival::Gap { from: self.next }
        } else {
            let skip = (self.next - first_seq) as usize;
            self.next = end;
            Arrival::Fresh { skip }
        }
    }

    /// As [`Self::arrive`], for a `best_effort` input: a gap is accepted
    /// (what it skipped is lost) instead of asked for again.
    pub fn arrive_lossy(&mut self, epoch: u64, first_seq: u64, count: u64) -> Arrival {
        match self.arrive(epoch, first_seq, count) {
            Arrival::Gap { .. } => {
                self.next = first_seq + count;
                Arrival::Fresh { skip: 0 }
            }
            a => a,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p() -> Arc<[u8]> {
        Arc::from(vec![0u8])
    }

    #[test]
    fn window_and_trim() {
        let mut log = OutLog::new([("a".to_owned(), 10), ("b".to_owned(), 4)]);
        assert_eq!(log.room(), 4);
        log.append(3, p());
        log.append(1, p());
        assert_eq!(log.room(), 0);
        assert!(!log.ack("a", 4));
        assert_eq!(log.held(), 2);
        assert!(log.ack("b", 3));
        assert_eq!(log.held(), 1);
        assert_eq!(log.room(), 3);
        log.append_end(p());
        assert!(!log.finished());
        log.ack("a", 6);
        log.ack("b", 6);
        assert!(log.finished());
        assert_eq!(log.held(), 0);
    }

    #[test]
    fn cursor_dedups_and_detects_gaps() {
        let mut c = InCursor::default();
        assert_eq!(c.arrive(1, 0, 5), Arrival::Fresh { skip: 0 });
        assert_eq!(c.arrive(1, 0, 5), Arrival::Duplicate);
        assert_eq!(c.arrive(1, 8, 2), Arrival::Gap { from: 5 });
        assert_eq!(c.arrive(1, 3, 4), Arrival::Fresh { skip: 2 });
        assert_eq!(c.next, 7);
        // a restarted producer starts over
        assert_eq!(c.arrive(2, 0, 1), Arrival::Fresh { skip: 0 });
        assert_eq!(c.next, 1);
    }

    // Model: a producer sends numbered records through a lossy, reordering,
    // duplicating channel to two consumers that ack cumulatively; with
    // resends from the log on timeouts, every consumer ends with exactly
    // 0..n in order, and the log never holds more than the window allows.
    proptest! {
        #[test]
        fn lossy_channel_delivers_exactly_once(
            n in 1u64..300,
            window in 1u64..32,
            seed in any::<u64>(),
            loss in 0u32..60,
        ) {
            let mut rng = fastrand::Rng::with_seed(seed);
            let w2 = window.max(3);
            let mut log = OutLog::new([("c1".to_owned(), window), ("c2".to_owned(), w2)]);
            let mut channel: Vec<(u64, u64)> = Vec::new(); // (first, count) in flight
            let mut cursors = [InCursor::default(), InCursor::default()];
            let mut got: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
            let mut sent = 0u64;
            let mut step = 0;
            while !(got[0].len() as u64 == n && got[1].len() as u64 == n) {
                step += 1;
                prop_assert!(step < 200_000, "no progress");
                match rng.u32(0..10) {
                    // publish what the window allows, in messages of 1..8
                    0..=2 => {
                        let k = log.room().min(n - sent).min(rng.u64(1..8));
                        if k > 0 {
                            channel.push((log.next_seq(), k));
                            log.append(k, p());
                            sent += k;
                        }
                    }
                    // deliver a message (possibly lost for a consumer, possibly
                    // delivered again later)
                    3..=8 if !channel.is_empty() => {
                        let i = rng.usize(0..channel.len());
                        let (first, count) = if rng.bool() { channel.remove(i) } else { channel[i] };
                        for (c, name) in ["c1", "c2"].into_iter().enumerate() {
                            if rng.u32(0..100) < loss {
                                continue;
                            }
                            if let Arrival::Fresh { skip } = cursors[c].arrive(1, first, count) {
                                got[c].extend(first + skip as u64..first + count);
                            }
                            log.ack(name, cursors[c].next);
                        }
                    }
                    // a timeout: resend what is unacknowledged, as held
                    _ => {
                        let from = log.min_acked();
                        let mut seq = from;
                        for _ in log.resend_from(from, window) {
                            // each held message is re-sent whole; model its
                            // span from the log's own accounting
                            let k = (log.next_seq() - seq).min(8);
                            if k == 0 {
                                break;
                            }
                            channel.push((seq, k));
                            seq += k;
                        }
                        if channel.len() > 64 {
                            channel.drain(..channel.len() - 64);
                        }
                    }
                }
                prop_assert!(log.unacked() <= w2);
            }
            for g in &got {
                prop_assert_eq!(g.clone(), (0..n).collect::<Vec<_>>());
            }
            prop_assert_eq!(log.held(), 0);
        }
    }
}
