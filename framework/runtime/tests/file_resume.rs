//! The file sources' resume against a model: a JSON Lines or CSV file with
//! good lines, blank lines, bad lines (not JSON, not UTF-8, ragged rows) and
//! CRLF endings, read in random partial polls, committed at random points
//! (the node's checkpoint and the runtime's count in one atomic write, as
//! the stage does), crashed at random points (the node is built again from
//! what was committed), and appended to while it is read. What was
//! committed must be every non-blank line of the file, each once, in order;
//! and every resume must be by position, not by reading the file again.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use rill_core::node::{Emitter, Node, Source, SourceStatus};
use rill_core::state::{KeyedState, MemStore, StateStore, WriteBatch};
use rill_core::{Record, testkit};
use rill_runtime::durable::SourcePos;
use rill_runtime::resume::Replay;

#[derive(Debug, Clone, Copy)]
enum Line {
    Good,
    Blank,
    Bad,
    NotUtf8,
    Crlf,
}

fn line() -> impl Strategy<Value = Line> {
    prop_oneof![
        6 => Just(Line::Good),
        1 => Just(Line::Blank),
        1 => Just(Line::Bad),
        1 => Just(Line::NotUtf8),
        1 => Just(Line::Crlf),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Poll(usize),
    Commit,
    Crash,
    Append(Vec<Line>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..6).prop_map(Op::Poll),
        2 => Just(Op::Commit),
        2 => Just(Op::Crash),
        1 => proptest::collection::vec(line(), 1..4).prop_map(Op::Append),
    ]
}

/// The bytes of line number `n` (1-based, the header being line 1 in CSV),
/// and whether the source makes an item of it.
fn text(csv: bool, n: u64, l: Line) -> (Vec<u8>, bool) {
    let (mut b, item) = match (csv, l) {
        (false, Line::Good) => (format!("{{\"i\": {n}}}").into_bytes(), true),
        (false, Line::Crlf) => (format!("{{\"i\": {n}}}\r").into_bytes(), true),
        (false, Line::Blank) => (b"  ".to_vec(), false),
        (false, Line::Bad) => (format!("{{\"i\": {n},").into_bytes(), true),
        (false, Line::NotUtf8) => (b"{\"i\": \"\xff\"}".to_vec(), true),
        // (a blank row in CSV is a row of one empty cell: ragged)
        (true, Line::Good) => (format!("{n},x").into_bytes(), true),
        (true, Line::Crlf) => (format!("{n},y\r").into_bytes(), true),
        (true, Line::Bad | Line::Blank) => (format!("{n},x,extra").into_bytes(), true),
        (true, Line::NotUtf8) => {
            let mut b = format!("{n},").into_bytes();
            b.extend_from_slice(b"\xff\xfe");
            (b, true)
        }
    };
    b.push(b'\n');
    (b, item)
}

struct File {
    csv: bool,
    path: std::path::PathBuf,
    lines: u64,
    /// Line numbers that make items, in order.
    items: Vec<u64>,
}

impl File {
    fn new(dir: &Path, csv: bool) -> File {
        let path = dir.join(if csv { "in.csv" } else { "in.jsonl" });
        let head: &[u8] = if csv { b"i,v\n" } else { b"" };
        std::fs::write(&path, head).unwrap();
        File {
            csv,
            path,
            lines: u64::from(csv),
            items: Vec::new(),
        }
    }

    fn append(&mut self, lines: &[Line]) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .unwrap();
        for l in lines {
            self.lines += 1;
            let (mut b, item) = text(self.csv, self.lines, *l);
            if !self.csv && self.lines == 1 {
                // a byte-order mark starts the file: not content
                b.splice(0..0, *b"\xEF\xBB\xBF");
            }
            f.write_all(&b).unwrap();
            if item {
                self.items.push(self.lines);
            }
        }
    }
}

/// The line an item came from: `i` of a record, `line` of a bad line.
fn line_of(r: &Record) -> u64 {
    r.get("i")
        .or_else(|| r.get("line"))
        .and_then(|v| v.as_i64())
        .unwrap_or_else(|| panic!("no line in {r:?}")) as u64
}

fn build(dir: &Path, csv: bool, state: &KeyedState) -> Box<dyn Source> {
    let reg = rill_nodes::registry();
    let (ty, cfg) = if csv {
        ("ReadFromCsv", "{path: in.csv}")
    } else {
        ("ReadFromJson", "{path: in.jsonl}")
    };
    match testkit::build_yaml_with_state(&reg, ty, cfg, dir, state).unwrap() {
        Node::Source(s) => s,
        other => panic!("{other:?}"),
    }
}

fn run(csv: bool, first: Vec<Line>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut file = File::new(dir.path(), csv);
    file.append(&first);
    let store: Arc<dyn StateStore> = Arc::new(MemStore::new());
    let state = KeyedState::new(store.clone());
    let mut src = build(dir.path(), csv, &state);
    let mut committed = SourcePos::default();
    let mut pos = committed;
    let mut replay = Replay::start(committed, true);
    let (mut out, mut pending): (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
    let mut ops = ops;
    let tail = 2 * (file.lines as usize + 40);
    ops.extend(std::iter::repeat_n(Op::Poll(5), tail));
    ops.push(Op::Commit);
    for op in ops {
        match op {
            Op::Poll(max) if !pos.done => {
                let mut e = Emitter::new();
                let status = src.poll(max, &mut e).unwrap();
                let (mut main, _, mut failures) = e.take();
                replay.admit(&mut pos, &mut main, &mut failures);
                let mut made: Vec<u64> = main.iter().map(line_of).collect();
                made.extend(failures.iter().map(|f| line_of(&f.record)));
                made.sort();
                pending.extend(made);
                if status == SourceStatus::Done {
                    prop_assert!(replay.finish(committed).is_ok());
                    pos.done = true;
                }
            }
            Op::Commit => {
                src.checkpoint().unwrap();
                store
                    .commit(WriteBatch {
                        ops: state.take_changes(),
                    })
                    .unwrap();
                committed = pos;
                out.append(&mut pending);
            }
            Op::Crash => {
                state.discard();
                src = build(dir.path(), csv, &state);
                let made = committed.emitted + committed.failed;
                let positioned = made == 0 || src.seek(made);
                prop_assert!(positioned, "a resume read the file again (at {made})");
                replay = Replay::start(committed, positioned);
                pos = committed;
                pending.clear();
            }
            // a bounded source that reported its end reads no more
            Op::Append(lines) if !pos.done => file.append(&lines),
            _ => {}
        }
        prop_assert_eq!(&out[..], &file.items[..out.len()]);
    }
    prop_assert!(committed.done);
    prop_assert_eq!(out, file.items);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn json_resumes_by_position(
        first in proptest::collection::vec(line(), 0..30),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        run(false, first, ops)?;
    }

    #[test]
    fn csv_resumes_by_position(
        first in proptest::collection::vec(line(), 0..30),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        run(true, first, ops)?;
    }
}
