//! MLTransform against Beam's own documented values, a write then a read
//! of the same artifacts, and a restart in the middle of emitting.

use std::path::Path;
use std::sync::Arc;

use super::*;
use rill_core::node::Node;
use rill_core::state::StateStore;
use rill_core::testkit::{DurableMemStore, build_yaml_with_state, commit_state};
use rill_core::{Record, Value};

fn ml(config: &str, dir: &Path, state: &KeyedState) -> Result<Box<dyn Transform>, String> {
    let reg = crate::registry();
    match build_yaml_with_state(&reg, "MLTransform", config, dir, state)? {
        Node::Transform(t) => Ok(t),
        other => panic!("a transform, got {other:?}"),
    }
}

/// Feeds `rows` in batches of `per`, ends the input, and collects what
/// comes out (main output, error output).
fn run_to_end(t: &mut dyn Transform, rows: Vec<Record>, per: usize) -> (Vec<Record>, usize) {
    let mut out = Emitter::new();
    for chunk in rows.chunks(per) {
        t.process(chunk.to_vec(), &mut out).unwrap();
    }
    assert!(out.is_empty(), "nothing comes out before the input ends");
    t.on_watermark(END_OF_TIME, &mut out).unwrap();
    while t.pending() {
        t.resume(&mut out).unwrap();
    }
    let failed = out.failures().len();
    (out.take().0, failed)
}

fn floats(rows: &[Record], col: &str) -> Vec<f64> {
    rows.iter()
        .map(|r| r.get(col).and_then(Value::as_f64).unwrap())
        .collect()
}

fn nums(xs: &[f64]) -> Vec<Record> {
    xs.iter().map(|x| Record::default().with("x", *x)).collect()
}

#[test]
fn scalers_give_beams_values() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |t: &str| {
        format!(
            "{{write_artifact_location: a, transforms: [{{type: {t}, config: {{columns: [x]}}}}]}}"
        )
    };
    let xs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    // Beam's tft tests: 1..6 -> z-scores with population variance 2.9167
    let mut t = ml(&cfg("ScaleToZScore"), dir.path(), &KeyedState::default()).unwrap();
    let (rows, _) = run_to_end(t.as_mut(), nums(&xs), 4);
    let want = [-1.46385, -0.87831, -0.29277, 0.29277, 0.87831, 1.46385];
    for (g, w) in floats(&rows, "x").iter().zip(want) {
        assert!((g - w).abs() < 1e-5, "{g} vs {w}");
    }
    let mut t = ml(&cfg("ScaleTo01"), dir.path(), &KeyedState::default()).unwrap();
    let (rows, _) = run_to_end(t.as_mut(), nums(&xs), 4);
    assert_eq!(floats(&rows, "x"), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
    // ScaleByMinMax to [-1, 1]
    let mut t = ml(
        "{write_artifact_location: a, transforms: [{type: ScaleByMinMax, config: {columns: [x], min_value: -1, max_value: 1}}]}",
        dir.path(),
        &KeyedState::default(),
    )
    .unwrap();
    let (rows, _) = run_to_end(t.as_mut(), nums(&[4.0, 1.0, 5.0, 2.0]), 4);
    assert_eq!(floats(&rows, "x"), [0.5, -1.0, 1.0, -0.5]);
    // a constant column: z-score centres (0), 0-1 takes the sigmoid
    let mut t = ml(&cfg("ScaleTo01"), dir.path(), &KeyedState::default()).unwrap();
    let (rows, _) = run_to_end(t.as_mut(), nums(&[2.0, 2.0]), 4);
    let s = 1.0 / (1.0 + (-2.0f64).exp());
    assert_eq!(floats(&rows, "x"), [s, s]);
    let mut t = ml(&cfg("ScaleToZScore"), dir.path(), &KeyedState::default()).unwrap();
    let (rows, _) = run_to_end(t.as_mut(), nums(&[2.0, 2.0]), 4);
    assert_eq!(floats(&rows, "x"), [0.0, 0.0]);
}

#[test]
fn lists_share_one_set_of_statistics() {
    // rows [1,2,3] and [4,5,6] give what the scalars 1..6 give
    let dir = tempfile::tempdir().unwrap();
    let mut t = ml(
        "{write_artifact_location: a, transforms: [{type: Bucketize, config: {columns: [x], num_buckets: 3}}]}",
        dir.path(),
        &KeyedState::default(),
    )
    .unwrap();
    let rows = vec![
        Record::default().with("x", Value::List(vec![1.into(), 2.into(), 3.into()])),
        Record::default().with("x", Value::List(vec![4.into(), 5.into(), 6.into()])),
    ];
    let (rows, _) = run_to_end(t.as_mut(), rows, 1);
    let got: Vec<String> = rows
        .iter()
        .map(|r| format!("{:?}", r.get("x").unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            format!("{:?}", Value::List(vec![0.into(), 0.into(), 1.into()])),
            format!("{:?}", Value::List(vec![1.into(), 2.into(), 2.into()])),
        ]
    );
    // Beam's boundaries for 1..6 in 3 buckets are [3, 5]
    let a = artifacts::read(&dir.path().join("a")).unwrap();
    assert_eq!(
        a.learned[0]["x"],
        Learned::Boundaries {
            boundaries: vec![3.0, 5.0]
        }
    );
}

#[test]
fn vocabulary_and_tfidf_give_beams_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = ml(
        "{write_artifact_location: a, transforms: [{type: ComputeAndApplyVocabulary, config: {columns: [x], split_string_by_delimiter: ' '}}, {type: TFIDF, config: {columns: [x]}}]}",
        dir.path(),
        &KeyedState::default(),
    )
    .unwrap();
    let rows = vec![
        Record::default().with("x", "I like pie pie pie"),
        Record::default().with("x", "yum yum pie"),
    ];
    let (rows, failed) = run_to_end(t.as_mut(), rows, 1);
    assert_eq!(failed, 0);
    // vocabulary: pie (4), yum (2), like, I (ties: falling byte order)
    let ids = |r: &Record, c: &str| -> Vec<i64> {
        match r.get(c).unwrap() {
            Value::List(l) => l.iter().map(|v| v.as_i64().unwrap()).collect(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(ids(&rows[0], "x"), [3, 2, 0, 0, 0]);
    assert_eq!(ids(&rows[1], "x"), [1, 1, 0]);
    assert_eq!(ids(&rows[0], "x_vocab_index"), [0, 2, 3]);
    assert_eq!(ids(&rows[1], "x_vocab_index"), [0, 1]);
    let w = |r: &Record| -> Vec<f64> {
        match r.get("x_tfidf_weight").unwrap() {
            Value::List(l) => l.iter().map(|v| v.as_f64().unwrap()).collect(),
            other => panic!("{other:?}"),
        }
    };
    // Beam's test values
    for (g, want) in w(&rows[0]).iter().zip([0.6, 0.28109303, 0.28109303]) {
        assert!((g - want).abs() < 1e-6, "{g} vs {want}");
    }
    for (g, want) in w(&rows[1]).iter().zip([0.33333334, 0.9369768]) {
        assert!((g - want).abs() < 1e-6, "{g} vs {want}");
    }
}

#[test]
fn written_then_read_artifacts_give_identical_values() {
    let dir = tempfile::tempdir().unwrap();
    let transforms = "[{type: ScaleToZScore, config: {columns: [a]}}, {type: Bucketize, config: {columns: [b], num_buckets: 4}}, {type: ComputeAndApplyVocabulary, config: {columns: [c], top_k: 3, num_oov_buckets: 2}}]";
    let input: Vec<Record> = (0..500)
        .map(|i| {
            Record::default()
                .with("a", (i * 37 % 101) as f64 / 7.0)
                .with("b", (i * 13 % 97) as i64)
                .with("c", format!("t{}", i % 7))
        })
        .collect();
    let mut w = ml(
        &format!("{{write_artifact_location: art, transforms: {transforms}}}"),
        dir.path(),
        &KeyedState::default(),
    )
    .unwrap();
    let (written, _) = run_to_end(w.as_mut(), input.clone(), 64);
    let mut r = ml(
        "{read_artifact_location: art}",
        dir.path(),
        &KeyedState::default(),
    )
    .unwrap();
    let mut out = Emitter::new();
    r.process(input.clone(), &mut out).unwrap();
    let read = out.take().0;
    assert_eq!(written.len(), 500);
    assert_eq!(written, read);
    // the same with the transforms given again, as they were
    assert!(
        ml(
            &format!("{{read_artifact_location: art, transforms: {transforms}}}"),
            dir.path(),
            &KeyedState::default()
        )
        .is_ok()
    );
    // other transforms: refused, naming the difference
    let e = ml(
        "{read_artifact_location: art, transforms: [{type: ScaleToZScore, config: {columns: [a]}}, {type: Bucketize, config: {columns: [b], num_buckets: 5}}, {type: ComputeAndApplyVocabulary, config: {columns: [c], top_k: 3, num_oov_buckets: 2}}]}",
        dir.path(),
        &KeyedState::default(),
    )
    .err()
    .unwrap();
    assert!(
        e.contains("transforms[1].config.num_buckets: the artifacts have 4, this pipeline 5"),
        "{e}"
    );
    // out-of-vocabulary tokens land in the two buckets after the vocabulary
    let mut out = Emitter::new();
    r.process(
        vec![
            Record::default()
                .with("a", 1.0)
                .with("b", 1)
                .with("c", "never seen"),
        ],
        &mut out,
    )
    .unwrap();
    let c = out.take().0[0].get("c").unwrap().as_i64().unwrap();
    assert!((3..5).contains(&c), "{c}");
}

#[test]
fn a_bad_row_goes_to_the_error_output_and_is_left_out_of_the_learning() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = ml(
        "{write_artifact_location: a, transforms: [{type: ScaleTo01, config: {columns: [x]}}]}",
        dir.path(),
        &KeyedState::default(),
    )
    .unwrap();
    let mut rows = nums(&[0.0, 10.0]);
    rows.push(Record::default().with("x", "ten"));
    rows.push(Record::default().with("y", 1));
    let (good, failed) = run_to_end(t.as_mut(), rows, 10);
    assert_eq!(floats(&good, "x"), [0.0, 1.0]);
    assert_eq!(failed, 2);
}

#[test]
fn a_restart_while_emitting_neither_loses_nor_repeats_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn StateStore> = Arc::new(DurableMemStore::default());
    let commit = |st: &KeyedState| commit_state(&store, st);
    let cfg =
        "{write_artifact_location: a, transforms: [{type: ScaleTo01, config: {columns: [x]}}]}";
    let n = 3 * APPLY_CHUNK + 100;
    let input = nums(&(0..n).map(|i| i as f64).collect::<Vec<_>>());
    let st = KeyedState::new(store.clone());
    let mut t = ml(cfg, dir.path(), &st).unwrap();
    let mut out = Emitter::new();
    for chunk in input.chunks(500) {
        t.process(chunk.to_vec(), &mut out).unwrap();
        commit(&st);
    }
    t.on_watermark(END_OF_TIME, &mut out).unwrap();
    let mut got = out.take().0;
    assert!(!got.is_empty() && got.len() < n, "the first part only");
    commit(&st);
    t.resume(&mut out).unwrap();
    // not committed: lost with the process, emitted again after it
    drop(out.take());
    let st = KeyedState::new(store.clone());
    let mut t = ml(cfg, dir.path(), &st).unwrap();
    assert!(t.pending(), "a rebuilt node goes on emitting");
    let mut out = Emitter::new();
    while t.pending() {
        t.resume(&mut out).unwrap();
        commit(&st);
    }
    got.extend(out.take().0);
    let mut xs = floats(&got, "x");
    xs.sort_by(f64::total_cmp);
    let want: Vec<f64> = (0..n).map(|i| i as f64 / (n - 1) as f64).collect();
    assert_eq!(xs, want);
    // nothing kept once all is out
    assert!(st.scan(b"b").unwrap().is_empty());
}

#[test]
fn watch_takes_new_artifacts_and_keeps_the_old_when_they_do_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let write = |xs: &[f64], transforms: &str| {
        let mut w = ml(
            &format!("{{write_artifact_location: art, transforms: {transforms}}}"),
            dir.path(),
            &KeyedState::default(),
        )
        .unwrap();
        run_to_end(w.as_mut(), nums(xs), 10);
    };
    let scale = "[{type: ScaleTo01, config: {columns: [x]}}]";
    write(&[0.0, 10.0], scale);
    let mut r = ml(
        &format!("{{read_artifact_location: art, transforms: {scale}, watch: true}}"),
        dir.path(),
        &KeyedState::default(),
    )
    .unwrap();
    let mut apply = |x: f64| {
        let mut out = Emitter::new();
        r.process(nums(&[x]), &mut out).unwrap();
        floats(&out.take().0, "x")[0]
    };
    assert_eq!(apply(5.0), 0.5);
    // retrained on other data: taken within a second or so
    std::thread::sleep(Duration::from_millis(20));
    write(&[0.0, 20.0], scale);
    let end = Instant::now() + Duration::from_secs(10);
    while apply(5.0) != 0.25 {
        assert!(Instant::now() < end, "the new artifacts were not taken");
        std::thread::sleep(Duration::from_millis(100));
    }
    // artifacts of other transforms: the stage keeps what it has
    std::thread::sleep(Duration::from_millis(20));
    write(
        &[0.0, 40.0],
        "[{type: ScaleToZScore, config: {columns: [x]}}]",
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(apply(5.0), 0.25);
    assert_eq!(apply(5.0), 0.25);
}

#[test]
fn apply_buckets_follows_beams_example() {
    // tf.Transform's example: boundaries [2, 5, 10]; a value on a boundary
    // goes to the bucket above it, NaN to the last
    let dir = tempfile::tempdir().unwrap();
    let mut t = ml(
        "{write_artifact_location: a, transforms: [{type: ApplyBuckets, config: {columns: [x], bucket_boundaries: [2, 5, 10]}}]}",
        dir.path(),
        &KeyedState::default(),
    )
    .unwrap();
    let xs = [4.0, f64::NAN, 1.0, f64::NEG_INFINITY, 7.5, 10.0, 2.0];
    let (rows, _) = run_to_end(t.as_mut(), nums(&xs), 10);
    let got: Vec<i64> = rows
        .iter()
        .map(|r| r.get("x").unwrap().as_i64().unwrap())
        .collect();
    assert_eq!(got, [1, 3, 0, 0, 2, 3, 1]);
}
