//! How a restarted source resumes where its last commit left it.
//!
//! A stage commits its source's progress as a [`SourcePos`]: how many
//! records the source has made so far (emitted, and failed into dead
//! letters), counted over all incarnations. A new incarnation either
//!
//! - is already past them: it restored its own position from its keyed
//!   state (a file source seeks to the committed byte offset) or moved
//!   there in [`rill_core::node::Source::seek`] (`Generate`, `Create`); or
//! - starts from its beginning and makes the same records again (a
//!   deterministic source that cannot seek): then [`Replay`] drops the
//!   first `emitted` records and `failed` failures it makes, and only what
//!   comes after them counts as progress.
//!
//! The second case is where records were once lost: the records dropped
//! were counted as progress too, so a commit during the replay moved the
//! committed position past what had really been made, and the next restart
//! skipped records that no incarnation had emitted. [`Replay::admit`] is the
//! one place that counts, and the model test below holds it to the stream.

use rill_core::Record;
use rill_core::node::Failure;

use crate::durable::SourcePos;

/// What a restarted source still has to drop before its records are new.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replay {
    main: u64,
    failed: u64,
}

/// A restarted source made fewer records than its earlier incarnations had
/// emitted: its input is not what it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayShort {
    pub main_left: u64,
    pub failed_left: u64,
    pub committed: SourcePos,
}

impl std::fmt::Display for ReplayShort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the source ended {} records and {} failures short of what it had emitted before the restart ({} records, {} failures): its input changed since then; run with --reset-state to read it again from the start",
            self.main_left, self.failed_left, self.committed.emitted, self.committed.failed
        )
    }
}

impl Replay {
    /// How an incarnation starts from `committed`: with nothing to drop
    /// when the source is already past it (`positioned`), else dropping
    /// what the earlier incarnations emitted.
    pub fn start(committed: SourcePos, positioned: bool) -> Replay {
        if positioned || committed.done {
            Replay::default()
        } else {
            Replay {
                main: committed.emitted,
                failed: committed.failed,
            }
        }
    }

    /// Whether records are still being dropped.
    pub fn pending(&self) -> bool {
        self.main > 0 || self.failed > 0
    }

    /// Takes one poll's records and failures: drops those an earlier
    /// incarnation emitted, and advances `pos` by the rest only. Returns
    /// how many new records and failures remain.
    pub fn admit(
        &mut self,
        pos: &mut SourcePos,
        main: &mut Vec<Record>,
        failures: &mut Vec<Failure>,
    ) -> (u64, u64) {
        let drop_main = self.main.min(main.len() as u64);
        let drop_failed = self.failed.min(failures.len() as u64);
        self.main -= drop_main;
        self.failed -= drop_failed;
        main.drain(..drop_main as usize);
        failures.drain(..drop_failed as usize);
        let (m, f) = (main.len() as u64, failures.len() as u64);
        pos.emitted += m;
        pos.failed += f;
        (m, f)
    }

    /// The source says it is done: fine unless records are still owed.
    pub fn finish(&self, committed: SourcePos) -> Result<(), ReplayShort> {
        if self.pending() {
            return Err(ReplayShort {
                main_left: self.main,
                failed_left: self.failed,
                committed,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The resume logic against a model: a deterministic stream of records
    //! and failures, polled in random partial batches, committed at random
    //! points and crashed at random points (everything since the last
    //! commit is lost), by a source that can seek or one that cannot. What
    //! was committed must be the stream, each item once, in order.
    use super::*;
    use proptest::prelude::*;

    /// The stream: item `i` is a record with `id = i`, or a failure.
    fn item(stream: &[bool], i: usize) -> Result<Record, Failure> {
        let r = rill_core::record! {"id" => i as i64};
        if stream[i] {
            Ok(r)
        } else {
            Err(Failure {
                record: r,
                msg: format!("bad {i}"),
                attempts: 1,
            })
        }
    }

    /// A source over the stream, from item `at`.
    struct Src<'a> {
        stream: &'a [bool],
        at: usize,
    }

    impl Src<'_> {
        fn poll(&mut self, max: usize) -> (Vec<Record>, Vec<Failure>, bool) {
            let (mut m, mut f) = (Vec::new(), Vec::new());
            while m.len() + f.len() < max && self.at < self.stream.len() {
                match item(self.stream, self.at) {
                    Ok(r) => m.push(r),
                    Err(e) => f.push(e),
                }
                self.at += 1;
            }
            (m, f, self.at == self.stream.len())
        }

        /// Where the `n`-th record and `k`-th failure end.
        fn seek(&mut self, emitted: u64, failed: u64) {
            let (mut m, mut f, mut i) = (0, 0, 0);
            while m < emitted || f < failed {
                if self.stream[i] {
                    m += 1
                } else {
                    f += 1
                }
                i += 1;
            }
            self.at = i;
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Poll(usize),
        Commit,
        Crash,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (1usize..9).prop_map(Op::Poll),
            2 => Just(Op::Commit),
            2 => Just(Op::Crash),
        ]
    }

    fn id(r: &Record) -> i64 {
        r.get("id").and_then(|v| v.as_i64()).unwrap()
    }

    proptest! {
        #[test]
        fn resume_matches_the_stream(
            stream in proptest::collection::vec(proptest::bool::weighted(0.8), 0..60),
            ops in proptest::collection::vec(op(), 1..120),
            seeks in any::<bool>(),
        ) {
            // committed: the source position and the output (what sinks see)
            let mut committed = SourcePos::default();
            let mut out: Vec<i64> = Vec::new();
            // live: since the last commit
            let mut pos = committed;
            let mut pending: Vec<i64> = Vec::new();
            let mut src = Src { stream: &stream, at: 0 };
            let mut replay = Replay::start(committed, false);
            let mut ops = ops;
            // finish the run: polls and a commit until done
            ops.extend(std::iter::repeat_n(Op::Poll(7), stream.len() + 2));
            ops.push(Op::Commit);
            for op in ops {
                match op {
                    Op::Poll(max) if !pos.done => {
                        let (mut m, mut f, done) = src.poll(max);
                        replay.admit(&mut pos, &mut m, &mut f);
                        // records and failures keep their stream order
                        let mut made: Vec<i64> = m.iter().map(id).collect();
                        made.extend(f.iter().map(|f| id(&f.record)));
                        made.sort();
                        pending.extend(made);
                        if done {
                            prop_assert!(replay.finish(committed).is_ok());
                            pos.done = true;
                        }
                    }
                    Op::Commit => {
                        committed = pos;
                        out.append(&mut pending);
                    }
                    Op::Crash => {
                        pos = committed;
                        pending.clear();
                        src = Src { stream: &stream, at: 0 };
                        if seeks {
                            src.seek(committed.emitted, committed.failed);
                        }
                        replay = Replay::start(committed, seeks);
                    }
                    _ => {}
                }
                // what is committed is a prefix of the stream
                let want: Vec<i64> = (0..out.len() as i64).collect();
                prop_assert_eq!(&out, &want);
                let ok = stream.iter().take(out.len()).filter(|b| **b).count() as u64;
                prop_assert_eq!(committed.emitted, ok);
                prop_assert_eq!(committed.failed, out.len() as u64 - ok);
            }
            prop_assert!(committed.done);
            prop_assert_eq!(out.len(), stream.len());
        }
    }

    #[test]
    fn a_short_replay_is_an_error() {
        let committed = SourcePos {
            emitted: 5,
            failed: 1,
            done: false,
        };
        let mut r = Replay::start(committed, false);
        let mut pos = committed;
        let mut m = vec![rill_core::record! {"id" => 0}; 3];
        let mut f = Vec::new();
        assert_eq!(r.admit(&mut pos, &mut m, &mut f), (0, 0));
        assert_eq!(pos, committed, "dropped records are not progress");
        let e = r.finish(committed).unwrap_err();
        assert_eq!((e.main_left, e.failed_left), (2, 1));
        assert!(e.to_string().contains("--reset-state"), "{e}");
        assert!(Replay::start(committed, true).finish(committed).is_ok());
    }
}
