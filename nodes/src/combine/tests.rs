//! Combine on scripted inputs: Beam's shapes, windows, lateness, and a
//! restart from the committed state.

use super::*;
use rill_core::state::{MemStore, StateStore};
use rill_core::testkit::{DurableMemStore, build_yaml_windowed, commit_state, run_transform};
use rill_core::window::WindowingSpec;
use std::sync::Arc;

fn windowing(yaml: &str) -> Windowing {
    rill_core::yaml::parse(yaml)
        .unwrap()
        .deserialize::<WindowingSpec>()
        .unwrap()
        .check()
        .unwrap()
}

fn combine(config: &str, w: Windowing, state: &KeyedState) -> Box<dyn Transform> {
    let reg = crate::registry();
    match build_yaml_windowed(&reg, "Combine", config, std::path::Path::new("."), state, w).unwrap()
    {
        Node::Transform(t) => t,
        other => panic!("a transform, got {other:?}"),
    }
}

fn rows(run: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = run
        .iter()
        .map(rill_core::json::record_to_json_line)
        .collect();
    v.sort();
    v
}

fn produce() -> Vec<Record> {
    [
        ("🥕", 3),
        ("🥕", 2),
        ("🍆", 1),
        ("🍅", 4),
        ("🍅", 5),
        ("🍅", 3),
    ]
    .into_iter()
    .map(|(p, a)| Record::default().with("produce", p).with("amount", a))
    .collect()
}

#[test]
fn beams_shapes_group_and_aggregate() {
    let st = KeyedState::default();
    let mut c = combine(
        "{group_by: produce, language: python, combine: {total: {value: amount, fn: sum}, mean: {value: amount, fn: mean}, amount: max, top: {value: amount, fn: {type: TopCombineFn, config: {n: 2}}}}}",
        Windowing::global(),
        &st,
    );
    let run = run_transform(c.as_mut(), vec![produce()]).unwrap();
    assert_eq!(
        rows(&run.main),
        [
            r#"{"produce":"🍅","total":12,"mean":4.0,"amount":5,"top":[5,4]}"#,
            r#"{"produce":"🍆","total":1,"mean":1.0,"amount":1,"top":[1]}"#,
            r#"{"produce":"🥕","total":5,"mean":2.5,"amount":3,"top":[3,2]}"#,
        ]
    );
    // a global combine: one row
    let mut c = combine(
        "{group_by: [], combine: {n: {value: amount, fn: count}}}",
        Windowing::global(),
        &KeyedState::default(),
    );
    let run = run_transform(c.as_mut(), vec![produce()]).unwrap();
    assert_eq!(rows(&run.main), [r#"{"n":6}"#]);
    // a record one output cannot take is in none of them
    let mut c = combine(
        "{group_by: [], combine: {n: {value: amount, fn: count}, total: {value: amount, fn: sum}}}",
        Windowing::global(),
        &KeyedState::default(),
    );
    let run = run_transform(
        c.as_mut(),
        vec![vec![
            Record::default().with("amount", 2),
            Record::default().with("amount", "x"),
        ]],
    )
    .unwrap();
    assert_eq!(rows(&run.main), [r#"{"n":1,"total":2}"#]);
    assert_eq!(run.failures.len(), 1);
    // a record without the field fails alone
    let mut c = combine(
        "{group_by: produce, combine: {amount: sum}}",
        Windowing::global(),
        &KeyedState::default(),
    );
    let run = run_transform(c.as_mut(), vec![vec![Record::default().with("amount", 1)]]).unwrap();
    assert!(run.main.is_empty());
    assert!(run.failures[0].msg.contains("no field `produce`"));
}

fn at(device: &str, secs: f64, v: i64) -> Record {
    Record::default()
        .with("device", device)
        .with("v", v)
        .with_time((secs * 1000.0) as i64)
}

#[test]
fn fixed_windows_fire_when_the_watermark_passes_their_end() {
    let st = KeyedState::default();
    let mut c = combine(
        "{group_by: device, combine: {v: sum}}",
        windowing("{type: fixed, size: 10}"),
        &st,
    );
    let mut out = Emitter::new();
    c.process(
        vec![at("a", 1.0, 1), at("a", 9.0, 2), at("b", 12.0, 5)],
        &mut out,
    )
    .unwrap();
    assert!(out.is_empty(), "nothing before the watermark");
    c.on_watermark(9_999, &mut out).unwrap();
    assert!(out.is_empty(), "the window [0, 10) ends at 10 s");
    c.on_watermark(10_000, &mut out).unwrap();
    let (main, _, _) = out.take();
    assert_eq!(rows(&main), [r#"{"device":"a","v":3}"#]);
    assert_eq!(
        main[0].window,
        Some(Window {
            start: 0,
            end: 10_000
        })
    );
    assert_eq!(main[0].event_time, 9_999);
    // a record for the closed window is late: counted, not added
    c.process(vec![at("a", 5.0, 100)], &mut out).unwrap();
    assert!(out.is_empty());
    c.on_watermark(END_OF_TIME, &mut out).unwrap();
    let (main, _, _) = out.take();
    assert_eq!(rows(&main), [r#"{"device":"b","v":5}"#]);
}

#[test]
fn sliding_windows_count_a_record_in_each_of_its_windows() {
    let mut c = combine(
        "{group_by: [], combine: {n: {value: v, fn: count}}}",
        windowing("{type: sliding, size: 10, period: 5}"),
        &KeyedState::default(),
    );
    let run = run_transform(c.as_mut(), vec![vec![at("a", 7.0, 1), at("a", 12.0, 1)]]).unwrap();
    let mut got: Vec<(i64, i64, i64)> = run
        .main
        .iter()
        .map(|r| {
            let w = r.window.unwrap();
            (w.start, w.end, r.get("n").unwrap().as_i64().unwrap())
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [(0, 10_000, 1), (5_000, 15_000, 2), (10_000, 20_000, 1)]
    );
}

#[test]
fn sessions_merge_when_they_overlap() {
    // Beam's visits: alice 1, 3, 101, 109, 115; bob 7, 12, 20; gap 10 s
    let mut c = combine(
        "{group_by: user, combine: {visits: {value: user, fn: count}}}",
        windowing("{type: sessions, gap: 10s}"),
        &KeyedState::default(),
    );
    let visits = [
        ("alice", 1),
        ("alice", 3),
        ("bob", 7),
        ("bob", 12),
        ("bob", 20),
        ("alice", 101),
        ("alice", 109),
        ("alice", 115),
    ];
    let batch = visits
        .iter()
        .map(|(u, t)| Record::default().with("user", *u).with_time(t * 1000))
        .collect();
    let run = run_transform(c.as_mut(), vec![batch]).unwrap();
    let mut got: Vec<(String, String, i64)> = run
        .main
        .iter()
        .map(|r| {
            (
                r.get("user").unwrap().as_str().unwrap().to_owned(),
                crate::windows::window_string(r.window),
                r.get("visits").unwrap().as_i64().unwrap(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("alice".into(), "[1.0, 13.0)".into(), 2),
            ("alice".into(), "[101.0, 125.0)".into(), 3),
            ("bob".into(), "[7.0, 30.0)".into(), 3),
        ]
    );
}

/// (v, pane_timing, pane_index) of each result.
fn panes(main: &[Record]) -> Vec<(i64, &str, i64)> {
    main.iter()
        .map(|r| {
            (
                r.get("v").unwrap().as_i64().unwrap(),
                r.get("pane_timing").unwrap().as_str().unwrap(),
                r.get("pane_index").unwrap().as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn allowed_lateness_fires_again_and_later_records_go_to_the_late_output() {
    let mut c = combine(
        "{group_by: device, combine: {v: sum}, late_output: late}",
        windowing("{type: fixed, size: 10, allowed_lateness: 5}"),
        &KeyedState::default(),
    );
    let mut out = Emitter::new();
    c.process(vec![at("a", 1.0, 1)], &mut out).unwrap();
    c.on_watermark(10_000, &mut out).unwrap();
    c.process(vec![at("a", 2.0, 10)], &mut out).unwrap(); // late, allowed
    c.on_watermark(15_000, &mut out).unwrap(); // the window closes
    c.process(vec![at("a", 3.0, 100)], &mut out).unwrap(); // too late
    let (main, named, _) = out.take();
    let panes = panes(&main);
    assert_eq!(panes, [(1, "ON_TIME", 0), (11, "LATE", 1)]);
    assert_eq!(named.len(), 1);
    assert_eq!(named[0].0, "late");
    assert_eq!(named[0].1[0].get("v"), Some(&Value::Int(100)));
}

#[test]
fn a_restarted_combine_goes_on_from_its_committed_state() {
    let store: Arc<dyn StateStore> = Arc::new(MemStore::new());
    let commit = |st: &KeyedState| commit_state(&store, st);
    let w = windowing("{type: fixed, size: 10}");
    let config = "{group_by: device, combine: {v: sum}, state_cache: 1}";
    let st = KeyedState::new(store.clone());
    let mut c = combine(config, w, &st);
    let mut out = Emitter::new();
    c.process(
        vec![at("a", 1.0, 1), at("b", 2.0, 2), at("a", 11.0, 4)],
        &mut out,
    )
    .unwrap();
    c.checkpoint().unwrap();
    commit(&st);
    // what comes after the commit is lost with the process
    c.process(vec![at("a", 3.0, 1000)], &mut out).unwrap();
    drop(c);
    let st = KeyedState::new(store.clone());
    let mut c = combine(config, w, &st);
    c.process(vec![at("a", 3.0, 10)], &mut out).unwrap();
    c.on_watermark(END_OF_TIME, &mut out).unwrap();
    let (main, _, _) = out.take();
    let mut got: Vec<(String, i64, i64)> = main
        .iter()
        .map(|r| {
            (
                r.get("device").unwrap().as_str().unwrap().to_owned(),
                r.window.unwrap().start,
                r.get("v").unwrap().as_i64().unwrap(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("a".into(), 0, 11),
            ("a".into(), 10_000, 4),
            ("b".into(), 0, 2)
        ]
    );
}

#[test]
fn bad_configs_name_their_key() {
    let reg = crate::registry();
    let dir = std::path::Path::new(".");
    for (config, needle) in [
        ("{combine: {x: summ}}", "did you mean `sum`"),
        ("{combine: {}}", "`combine` is empty"),
        (
            "{group_by: x, combine: {x: sum}}",
            "also a `group_by` field",
        ),
        (
            "{combine: {x: {value: y, fn: {type: TopCombineFn}}}}",
            "needs `config: {n: N}`",
        ),
        ("{combine: {x: 'lambda v: v'}}", "language: python"),
    ] {
        let e = rill_core::testkit::build_yaml(&reg, "Combine", config, dir).unwrap_err();
        assert!(e.contains(needle), "{config}: {e}");
    }
}

#[test]
fn early_firings_come_on_processing_time_before_the_watermark() {
    let mut c = combine(
        "{group_by: device, combine: {v: sum}}",
        windowing("{type: fixed, size: 10, trigger: {early: 50ms}}"),
        &KeyedState::default(),
    );
    let mut out = Emitter::new();
    c.process(vec![at("a", 1.0, 1), at("a", 2.0, 2)], &mut out)
        .unwrap();
    c.on_timer(&mut out).unwrap();
    assert!(out.is_empty(), "not yet 50 ms");
    std::thread::sleep(std::time::Duration::from_millis(60));
    c.on_timer(&mut out).unwrap();
    c.process(vec![at("a", 3.0, 4)], &mut out).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(60));
    c.on_timer(&mut out).unwrap();
    // nothing new since: no pane
    std::thread::sleep(std::time::Duration::from_millis(60));
    c.on_timer(&mut out).unwrap();
    c.on_watermark(10_000, &mut out).unwrap();
    let (main, _, _) = out.take();
    let panes = panes(&main);
    assert_eq!(panes, [(3, "EARLY", 0), (7, "EARLY", 1), (7, "ON_TIME", 2)]);
}

#[test]
fn a_large_window_fires_in_parts_and_a_restart_goes_on_where_it_was() {
    let store: Arc<dyn StateStore> = Arc::new(MemStore::new());
    let commit = |st: &KeyedState| commit_state(&store, st);
    let w = windowing("{type: fixed, size: 10}");
    let config = "{group_by: device, combine: {v: sum}, state_cache: 1000}";
    let st = KeyedState::new(store.clone());
    let mut c = combine(config, w, &st);
    let mut out = Emitter::new();
    let rows: Vec<Record> = (0..10_000).map(|i| at(&format!("d{i}"), 1.0, i)).collect();
    for chunk in rows.chunks(1000) {
        c.process(chunk.to_vec(), &mut out).unwrap();
        c.checkpoint().unwrap();
    }
    commit(&st);
    c.on_watermark(10_000, &mut out).unwrap();
    assert_eq!(out.len(), 4096, "one part");
    assert!(c.pending());
    c.resume(&mut out).unwrap();
    assert_eq!(out.len(), 8192);
    // the first two parts are committed with their outputs, then a crash
    c.checkpoint().unwrap();
    commit(&st);
    let (first, _, _) = out.take();
    c.resume(&mut out).unwrap();
    drop(c);
    let st = KeyedState::new(store.clone());
    let mut c = combine(config, w, &st);
    let mut out = Emitter::new();
    assert!(c.pending(), "a restart goes on with the window");
    while c.pending() {
        c.resume(&mut out).unwrap();
    }
    let (rest, _, _) = out.take();
    assert_eq!(rest.len(), 10_000 - 8192);
    let mut devices: Vec<String> = first
        .iter()
        .chain(&rest)
        .map(|r| r.get("device").unwrap().as_str().unwrap().to_owned())
        .collect();
    devices.sort();
    devices.dedup();
    assert_eq!(devices.len(), 10_000, "each group once");
}

#[test]
fn delta_records_and_compaction_survive_restarts() {
    let store: Arc<dyn StateStore> = Arc::new(DurableMemStore::default());
    let commit = |st: &KeyedState| commit_state(&store, st);
    let w = windowing("{type: fixed, size: 10}");
    let config = "{group_by: device, combine: {v: sum, n: {value: v, fn: count}}}";
    let mut want: std::collections::BTreeMap<(i64, String), (i64, i64)> = Default::default();
    let mut out = Emitter::new();
    let mut results = Vec::new();
    // 40 commits over two windows, a restart every 7 (past the 16 deltas
    // a window may have, so compaction happens too); what follows the
    // last commit before a restart is lost and sent again
    let mut st = KeyedState::new(store.clone());
    let mut c = combine(config, w, &st);
    for round in 0..40i64 {
        let batch: Vec<Record> = (0..50)
            .map(|i| {
                at(
                    &format!("d{}", i % 7),
                    (round % 20) as f64 / 2.0,
                    round * 100 + i,
                )
            })
            .collect();
        for r in &batch {
            let t = r.event_time;
            let e = want
                .entry((
                    t - t % 10_000,
                    r.get("device").unwrap().as_str().unwrap().to_owned(),
                ))
                .or_default();
            e.0 += r.get("v").unwrap().as_i64().unwrap();
            e.1 += 1;
        }
        c.process(batch.clone(), &mut out).unwrap();
        c.checkpoint().unwrap();
        commit(&st);
        // 40 commits, yet compaction keeps the window's deltas few
        let deltas = store
            .scan_prefix(b"s/")
            .unwrap()
            .iter()
            .filter(|(k, _)| k[2] == b'd')
            .count();
        assert!(
            (1..=MAX_DELTAS).contains(&deltas),
            "{deltas} delta records after commit {round}"
        );
        if round % 7 == 6 {
            c.process(batch, &mut out).unwrap(); // uncommitted: lost
            st = KeyedState::new(store.clone());
            c = combine(config, w, &st);
        }
    }
    c.on_watermark(END_OF_TIME, &mut out).unwrap();
    while c.pending() {
        c.resume(&mut out).unwrap();
    }
    results.extend(out.take().0);
    c.checkpoint().unwrap();
    commit(&st);
    let mut got: std::collections::BTreeMap<(i64, String), (i64, i64)> = Default::default();
    for r in &results {
        let k = (
            r.window.unwrap().start,
            r.get("device").unwrap().as_str().unwrap().to_owned(),
        );
        let v = (
            r.get("v").unwrap().as_i64().unwrap(),
            r.get("n").unwrap().as_i64().unwrap(),
        );
        assert!(got.insert(k, v).is_none(), "a group fired twice");
    }
    assert_eq!(got, want);
    // nothing is left in the state but the node's bookkeeping
    let left: Vec<u8> = store
        .scan_prefix(b"s/")
        .unwrap()
        .iter()
        .map(|(k, _)| k[2])
        .filter(|c| *c == b'w' || *c == b'd')
        .collect();
    assert!(left.is_empty(), "groups or deltas left: {left:?}");
}

#[test]
fn state_of_another_format_is_refused_not_misread() {
    let store: Arc<dyn StateStore> = Arc::new(DurableMemStore::default());
    let w = windowing("{type: fixed, size: 10}");
    let config = "{group_by: device, combine: {v: sum}}";
    let st = KeyedState::new(store.clone());
    let mut c = combine(config, w, &st);
    let mut out = Emitter::new();
    c.process(vec![at("a", 1.0, 5)], &mut out).unwrap();
    c.checkpoint().unwrap();
    commit_state(&store, &st);
    // a rebuild reads it back
    let st = KeyedState::new(store.clone());
    let _ = combine(config, w, &st);
    // the same state without its format mark (as an older rill wrote it)
    st.delete(b"m/format");
    commit_state(&store, &st);
    let reg = crate::registry();
    let st = KeyedState::new(store.clone());
    let e = build_yaml_windowed(&reg, "Combine", config, std::path::Path::new("."), &st, w)
        .expect_err("refused");
    assert!(e.to_string().contains("--reset-state"), "{e}");
}
