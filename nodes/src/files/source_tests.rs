//! Globs, watched folders, followed files and text, on real files.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rill_core::node::{Emitter, Node, Source, SourceStatus};
use rill_core::state::{KeyedState, StateStore};
use rill_core::testkit::{self, DurableMemStore, commit_state};
use rill_core::{Record, Value};

fn source(ty: &str, yaml: &str, dir: &Path, state: &KeyedState) -> Result<Box<dyn Source>, String> {
    match testkit::build_yaml_with_state(&crate::registry(), ty, yaml, dir, state)? {
        Node::Source(s) => Ok(s),
        _ => panic!("not a source"),
    }
}

/// Polls until `n` records came out (or `secs` passed): (records, failures).
fn poll_for(s: &mut dyn Source, n: usize, secs: u64) -> (Vec<Record>, Vec<String>) {
    let end = Instant::now() + Duration::from_secs(secs);
    let (mut got, mut failed) = (Vec::new(), Vec::new());
    let mut out = Emitter::new();
    while got.len() + failed.len() < n && Instant::now() < end {
        let st = s.poll(n - got.len() - failed.len(), &mut out).unwrap();
        let (main, _, fails) = out.take();
        got.extend(main);
        failed.extend(fails.into_iter().map(|f| f.msg));
        match st {
            SourceStatus::Done => break,
            SourceStatus::Wait(d) => std::thread::sleep(d.min(Duration::from_millis(20))),
            SourceStatus::More => {}
        }
    }
    (got, failed)
}

fn ints(rs: &[Record], field: &str) -> Vec<i64> {
    rs.iter()
        .map(|r| match r.get(field) {
            Some(Value::Int(i)) => *i,
            other => panic!("{field} = {other:?} in {r:?}"),
        })
        .collect()
}

fn jsonl(dir: &Path, name: &str, from: i64, to: i64) {
    let text: String = (from..to).map(|i| format!("{{\"i\": {i}}}\n")).collect();
    std::fs::write(dir.join(name), text).unwrap();
}

/// Makes a file look older than [`super::SETTLE`] (as a file renamed into a
/// watched folder long after it was written).
fn age(path: &Path) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(60))
        .unwrap();
}

#[test]
fn a_glob_reads_its_files_in_name_order_and_names_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    jsonl(&dir.path().join("data"), "b.jsonl", 3, 5);
    jsonl(&dir.path().join("data"), "a.jsonl", 0, 3);
    jsonl(&dir.path().join("data"), "c.txt", 100, 101);
    // hidden: not matched by `*`, as in a shell
    jsonl(&dir.path().join("data"), ".d.jsonl", 200, 201);
    let state = KeyedState::default();
    let mut s = source(
        "ReadFromJson",
        "{path: 'data/*.jsonl', filename_column: file}",
        dir.path(),
        &state,
    )
    .unwrap();
    let run = testkit::drain_source(s.as_mut(), 100).unwrap();
    assert_eq!(ints(&run.main, "i"), vec![0, 1, 2, 3, 4]);
    assert_eq!(
        run.main[0].get("file"),
        Some(&Value::String("data/a.jsonl".into()))
    );
    assert_eq!(
        run.main[4].get("file"),
        Some(&Value::String("data/b.jsonl".into()))
    );

    // `out.csv*` (Beam's shards of a write) matches the file itself too
    std::fs::write(dir.path().join("out.csv"), "x\n1\n").unwrap();
    std::fs::write(dir.path().join("out.csv-00001-of-00002"), "x\n2\n").unwrap();
    let mut s = source(
        "ReadFromCsv",
        "{path: 'out.csv*'}",
        dir.path(),
        &state_new(),
    )
    .unwrap();
    let run = testkit::drain_source(s.as_mut(), 100).unwrap();
    assert_eq!(ints(&run.main, "x"), vec![1, 2]);

    let e = source(
        "ReadFromJson",
        "{path: 'none/*.jsonl'}",
        dir.path(),
        &state_new(),
    )
    .err()
    .unwrap();
    assert!(e.contains("no file matches `none/*.jsonl`"), "{e}");
    assert!(e.starts_with("bad input: "), "exit 2: {e}");
}

fn state_new() -> KeyedState {
    KeyedState::default()
}

#[test]
fn a_glob_resumes_in_the_file_it_was_in_and_never_reads_a_finished_one_again() {
    let dir = tempfile::tempdir().unwrap();
    for (k, name) in ["a", "b", "c"].iter().enumerate() {
        let k = k as i64 * 1000;
        jsonl(dir.path(), &format!("{name}.jsonl"), k, k + 1000);
    }
    let store: Arc<dyn StateStore> = Arc::new(DurableMemStore::default());
    let yaml = "{path: '*.jsonl'}";
    let mut all = Vec::new();
    // stop and restart at several points: inside a, at a's end, inside c
    for take in [400usize, 600, 1500, 300] {
        let state = KeyedState::new(store.clone());
        let mut s = source("ReadFromJson", yaml, dir.path(), &state).unwrap();
        assert!(s.seek(all.len() as u64), "resumes where it committed");
        let (got, _) = poll_for(s.as_mut(), take, 10);
        all.extend(ints(&got, "i"));
        s.checkpoint().unwrap();
        commit_state(&store, &state);
    }
    let state = KeyedState::new(store.clone());
    let mut s = source(yaml_ty(), yaml, dir.path(), &state).unwrap();
    assert!(s.seek(all.len() as u64));
    let run = testkit::drain_source(s.as_mut(), 10_000).unwrap();
    all.extend(ints(&run.main, "i"));
    assert_eq!(
        all,
        (0..3000).collect::<Vec<_>>(),
        "each record once, in order"
    );
    s.checkpoint().unwrap();
    commit_state(&store, &state);
    // finished files are not read again
    let state = KeyedState::new(store.clone());
    let mut s = source(yaml_ty(), yaml, dir.path(), &state).unwrap();
    assert!(s.seek(3000));
    assert!(
        testkit::drain_source(s.as_mut(), 10)
            .unwrap()
            .main
            .is_empty()
    );
}

fn yaml_ty() -> &'static str {
    "ReadFromJson"
}

#[test]
fn a_watched_glob_takes_new_files_once_they_settle_and_each_once() {
    let dir = tempfile::tempdir().unwrap();
    jsonl(dir.path(), "a.jsonl", 0, 10);
    age(&dir.path().join("a.jsonl"));
    let store: Arc<dyn StateStore> = Arc::new(DurableMemStore::default());
    let yaml = "{path: '*.jsonl', watch: 100ms}";
    let state = KeyedState::new(store.clone());
    let mut s = source("ReadFromJson", yaml, dir.path(), &state).unwrap();
    let (got, _) = poll_for(s.as_mut(), 10, 10);
    assert_eq!(ints(&got, "i"), (0..10).collect::<Vec<_>>());
    let mut out = Emitter::new();
    assert!(
        matches!(s.poll(10, &mut out).unwrap(), SourceStatus::Wait(_)),
        "a watched glob waits, it does not end"
    );

    // a file still being written (changed just now) waits until it settles
    jsonl(dir.path(), "b.jsonl", 10, 15);
    let t0 = Instant::now();
    let (got, _) = poll_for(s.as_mut(), 5, 10);
    assert_eq!(ints(&got, "i"), (10..15).collect::<Vec<_>>());
    assert!(
        t0.elapsed() >= super::SETTLE - Duration::from_millis(100),
        "taken after {:?}",
        t0.elapsed()
    );
    s.checkpoint().unwrap();
    commit_state(&store, &state);

    // a restarted watcher reads only what is new, even a file that sorts first
    drop(s);
    jsonl(dir.path(), "0.jsonl", 15, 17);
    age(&dir.path().join("0.jsonl"));
    let state = KeyedState::new(store.clone());
    let mut s = source("ReadFromJson", yaml, dir.path(), &state).unwrap();
    assert!(s.seek(15));
    let (got, _) = poll_for(s.as_mut(), 3, 3);
    assert_eq!(ints(&got, "i"), vec![15, 16], "only the new file");
}

#[test]
fn a_followed_file_gives_whole_lines_as_they_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.log");
    let mut w = std::fs::File::create(&p).unwrap();
    w.write_all(b"{\"i\": 0}\n{\"i\"").unwrap();
    let state = KeyedState::default();
    let mut s = source(
        "ReadFromJson",
        "{path: app.log, follow: true}",
        dir.path(),
        &state,
    )
    .unwrap();
    let (got, _) = poll_for(s.as_mut(), 2, 1);
    assert_eq!(ints(&got, "i"), vec![0], "the half-written line waits");
    w.write_all(b": 1}\n{\"i\": 2}\n").unwrap();
    let (got, _) = poll_for(s.as_mut(), 2, 5);
    assert_eq!(ints(&got, "i"), vec![1, 2]);
}

#[test]
fn a_followed_file_survives_rotation_while_running_and_while_down() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.log");
    let mut w = std::fs::File::create(&p).unwrap();
    for i in 0..5 {
        writeln!(w, "{{\"i\": {i}}}").unwrap();
    }
    let store: Arc<dyn StateStore> = Arc::new(DurableMemStore::default());
    let yaml = "{path: app.log, follow: true}";
    let state = KeyedState::new(store.clone());
    let mut s = source("ReadFromJson", yaml, dir.path(), &state).unwrap();
    let (got, _) = poll_for(s.as_mut(), 5, 5);
    assert_eq!(ints(&got, "i"), (0..5).collect::<Vec<_>>());

    // rotated while running: the writer still adds to the old file
    // (renamed) before it opens the new one
    std::fs::rename(&p, dir.path().join("app.log.1")).unwrap();
    writeln!(w, "{{\"i\": 5}}").unwrap();
    let mut w = std::fs::File::create(&p).unwrap();
    writeln!(w, "{{\"i\": 6}}").unwrap();
    let (got, _) = poll_for(s.as_mut(), 2, 5);
    assert_eq!(ints(&got, "i"), vec![5, 6]);
    s.checkpoint().unwrap();
    commit_state(&store, &state);
    drop(s);

    // rotated while the pipeline was down, with lines it had not read
    writeln!(w, "{{\"i\": 7}}").unwrap();
    std::fs::rename(&p, dir.path().join("app.log.2")).unwrap();
    let mut w = std::fs::File::create(&p).unwrap();
    writeln!(w, "{{\"i\": 8}}").unwrap();
    let state = KeyedState::new(store.clone());
    let mut s = source("ReadFromJson", yaml, dir.path(), &state).unwrap();
    assert!(s.seek(7));
    let (got, _) = poll_for(s.as_mut(), 2, 5);
    assert_eq!(
        ints(&got, "i"),
        vec![7, 8],
        "the old file's rest, then the new"
    );
}

#[test]
fn a_followed_csv_waits_for_its_header_and_for_quoted_line_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.csv");
    let mut w = std::fs::File::create(&p).unwrap();
    let state = KeyedState::default();
    let mut s = source(
        "ReadFromCsv",
        "{path: t.csv, follow: true}",
        dir.path(),
        &state,
    )
    .unwrap();
    assert!(poll_for(s.as_mut(), 1, 1).0.is_empty());
    w.write_all(b"n,text\n1,\"two\nlines").unwrap();
    assert!(poll_for(s.as_mut(), 1, 1).0.is_empty());
    w.write_all(b"\"\n").unwrap();
    let (got, _) = poll_for(s.as_mut(), 1, 5);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].get("text"),
        Some(&Value::String("two\nlines".into()))
    );
}

#[test]
fn csv_without_a_header_takes_its_names_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.tsv"), "1\tx\n2\ty\n3\n").unwrap();
    let mut s = source(
        "ReadFromCsv",
        "{path: t.tsv, delimiter: '\\t', header: false, names: [n, s]}",
        dir.path(),
        &state_new(),
    )
    .unwrap();
    let run = testkit::drain_source(s.as_mut(), 100).unwrap();
    assert_eq!(ints(&run.main, "n"), vec![1, 2]);
    assert_eq!(run.failures.len(), 1);
    assert!(
        run.failures[0]
            .msg
            .contains("t.tsv:3: the row has 1 cells but the `names` list has 2"),
        "{}",
        run.failures[0].msg
    );
    let e = source(
        "ReadFromCsv",
        "{path: t.tsv, header: false}",
        dir.path(),
        &state_new(),
    )
    .err()
    .unwrap();
    assert!(e.contains("needs `names`"), "{e}");
}

#[test]
fn text_round_trips_and_a_record_that_is_not_one_line_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "alpha\n\n  beta  \r\nlast").unwrap();
    let mut s = source("ReadFromText", "{path: in.txt}", dir.path(), &state_new()).unwrap();
    let run = testkit::drain_source(s.as_mut(), 100).unwrap();
    let lines: Vec<&str> = run
        .main
        .iter()
        .map(|r| match r.get("line") {
            Some(Value::String(s)) => s.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(lines, ["alpha", "", "  beta  ", "last"]);

    let Node::Sink(mut w) = testkit::build_yaml(
        &crate::registry(),
        "WriteToText",
        "{path: out.txt}",
        dir.path(),
    )
    .unwrap() else {
        panic!()
    };
    let mut batch = run.main.clone();
    batch.push(rill_core::record! {"n" => 7});
    batch.push(rill_core::record! {"a" => 1, "b" => 2});
    batch.push(rill_core::record! {"line" => "one\ntwo"});
    let res = testkit::run_sink(w.as_mut(), vec![batch]).unwrap();
    assert_eq!(res.failures.len(), 2);
    assert!(
        res.failures[0].msg.contains("this one has 2 (a, b)"),
        "{}",
        res.failures[0].msg
    );
    assert!(
        res.failures[1].msg.contains("line break"),
        "{}",
        res.failures[1].msg
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        "alpha\n\n  beta  \nlast\n7\n"
    );
}

#[test]
fn options_that_do_not_fit_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, want) in [
        ("{path: '*.jsonl', follow: true}", "`follow` tails one file"),
        (
            "{path: a.jsonl, watch: 5s}",
            "`watch` looks for new files matching a glob",
        ),
        ("{path: '[a.jsonl'}", "is not a valid glob"),
    ] {
        let e = source("ReadFromJson", yaml, dir.path(), &state_new())
            .err()
            .unwrap();
        assert!(e.contains(want), "{yaml}: {e}");
    }
}
