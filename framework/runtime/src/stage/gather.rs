//! What to do with the queued input next, as pure functions of the queue,
//! the input's position and the time (unit-tested with an injected clock,
//! the way `RestartTracker` is): which messages an input admits, and when a
//! batch is gathered. Timers and watermarks per input belong beside these.

use std::time::Instant;

use rill_core::node::Batching;

/// Where an input is: what [`admit`] reads and moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InputState {
    /// The producer epoch the input counts in.
    pub epoch: Option<u64>,
    /// The next number not yet processed.
    pub processed: u64,
    pub ended: bool,
    /// `best_effort`: a gap is skipped, not waited for.
    pub lossy: bool,
}

/// What [`admit`] decided about a message numbered from `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// The next message to process (the position may have moved: a new
    /// epoch starts at 0, a lossy input skips a gap).
    Take {
        /// The producer started over (another epoch than the one counted).
        restarted: bool,
    },
    /// Stale (queued before a restart of the producer), or an ended input:
    /// skipped; the cursor asks again where needed.
    Skip,
}

/// Whether a message (records, or an end marker) of `epoch` numbered from
/// `first` is the next one for an input at `at`. Data and end markers are
/// admitted by the same rule.
pub(crate) fn admit(at: &mut InputState, epoch: u64, first: u64) -> Admission {
    if at.ended {
        return Admission::Skip;
    }
    let mut restarted = false;
    if at.epoch != Some(epoch) {
        restarted = at.epoch.is_some();
        at.epoch = Some(epoch);
        at.processed = 0;
    }
    if first != at.processed {
        if at.lossy && first > at.processed {
            at.processed = first;
        } else {
            return Admission::Skip;
        }
    }
    Admission::Take { restarted }
}

/// The queued input, as [`gather`] needs to see it: records and when the
/// oldest arrived, up to the first end marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Queued {
    /// Records queued before the first end marker.
    pub records: usize,
    /// When the front message arrived.
    pub oldest: Instant,
    /// Whether an end marker is queued.
    pub end: bool,
}

/// What [`gather`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gathered {
    /// Wait for more until then (the batch is not full, its oldest record
    /// has not waited `max_batch_delay`, no input ends).
    WaitUntil(Instant),
    /// Take the front messages, up to `limit` records (0: one message).
    Take { limit: usize },
}

/// Dynamic batching: whether to call the node now, or wait for more.
pub(crate) fn gather(
    batching: Option<Batching>,
    queued: Queued,
    draining: bool,
    now: Instant,
) -> Gathered {
    let Some(b) = batching else {
        return Gathered::Take { limit: 0 };
    };
    let due = queued.oldest + b.max_batch_delay;
    if !draining && !queued.end && queued.records < b.max_batch_size && now < due {
        return Gathered::WaitUntil(due);
    }
    Gathered::Take {
        limit: b.max_batch_size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(epoch: Option<u64>, processed: u64) -> InputState {
        InputState {
            epoch,
            processed,
            ended: false,
            lossy: false,
        }
    }

    #[test]
    fn admission_takes_the_next_message_only() {
        let mut s = at(Some(7), 10);
        assert_eq!(admit(&mut s, 7, 10), Admission::Take { restarted: false });
        assert_eq!(admit(&mut s, 7, 4), Admission::Skip, "stale");
        assert_eq!(admit(&mut s, 7, 12), Admission::Skip, "a gap: asked again");
        // a new epoch: the producer started over, read from 0
        assert_eq!(admit(&mut s, 8, 0), Admission::Take { restarted: true });
        assert_eq!((s.epoch, s.processed), (Some(8), 0));
        // the first epoch seen is not a restart
        let mut s = at(None, 0);
        assert_eq!(admit(&mut s, 3, 0), Admission::Take { restarted: false });
        // an ended input takes nothing, of any epoch
        let mut s = InputState {
            ended: true,
            ..at(Some(3), 5)
        };
        assert_eq!(admit(&mut s, 3, 5), Admission::Skip);
        assert_eq!(admit(&mut s, 4, 0), Admission::Skip);
        // best effort skips a gap, but not backwards
        let mut s = InputState {
            lossy: true,
            ..at(Some(1), 5)
        };
        assert_eq!(admit(&mut s, 1, 9), Admission::Take { restarted: false });
        assert_eq!(s.processed, 9);
        assert_eq!(admit(&mut s, 1, 2), Admission::Skip);
    }

    #[test]
    fn a_batch_waits_until_full_due_or_ended() {
        let t0 = Instant::now();
        let b = Some(Batching {
            max_batch_size: 10,
            max_batch_delay: Duration::from_millis(5),
        });
        let q = |records, end| Queued {
            records,
            oldest: t0,
            end,
        };
        let later = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(
            gather(b, q(3, false), false, later(1)),
            Gathered::WaitUntil(later(5))
        );
        assert_eq!(
            gather(b, q(3, false), false, later(5)),
            Gathered::Take { limit: 10 }
        );
        assert_eq!(
            gather(b, q(10, false), false, later(0)),
            Gathered::Take { limit: 10 }
        );
        assert_eq!(
            gather(b, q(3, true), false, later(0)),
            Gathered::Take { limit: 10 }
        );
        assert_eq!(
            gather(b, q(3, false), true, later(0)),
            Gathered::Take { limit: 10 }
        );
        // without batching: one message a call, at once
        assert_eq!(
            gather(None, q(1, false), false, later(0)),
            Gathered::Take { limit: 0 }
        );
    }
}
