//! Parquet and Avro part sinks through crashes, and the sources that read
//! their parts back (the outside readers are in `apps/rill/tests/columnar.rs`).

use std::path::Path;
use std::sync::Arc;

use rill_core::node::{Emitter, Node, Sink};
use rill_core::state::{KeyedState, StateStore};
use rill_core::testkit::{self, DurableMemStore, commit_state};
use rill_core::{Record, Value};

fn sink(ty: &str, yaml: &str, dir: &Path, state: &KeyedState) -> Box<dyn Sink> {
    match testkit::build_yaml_with_state(&crate::registry(), ty, yaml, dir, state).unwrap() {
        Node::Sink(s) => s,
        _ => panic!("not a sink"),
    }
}

fn recs(from: i64, to: i64) -> Vec<Record> {
    (from..to)
        .map(|i| {
            rill_core::record! {
                "id" => i,
                "name" => format!("n{i}"),
                "score" => i as f64 / 3.0,
                "tags" => Value::List(vec![Value::String("a".into()), Value::Int(i).to_string().into()]),
            }
        })
        .collect()
}

fn write(s: &mut dyn Sink, batch: Vec<Record>) -> Vec<String> {
    let mut out = Emitter::new();
    s.write(batch, &mut out).unwrap();
    out.take().2.into_iter().map(|f| f.msg).collect()
}

/// The ids in the parts under `dir`, read back by rill's own source.
fn read_back(ty: &str, glob: &str, dir: &Path) -> Vec<i64> {
    let Node::Source(mut s) =
        testkit::build_yaml(&crate::registry(), ty, &format!("{{path: '{glob}'}}"), dir).unwrap()
    else {
        panic!()
    };
    let run = testkit::drain_source(s.as_mut(), 1_000_000).unwrap();
    assert!(run.failures.is_empty(), "{:?}", run.failures);
    run.main
        .iter()
        .map(|r| match r.get("id") {
            Some(Value::Int(i)) => *i,
            other => panic!("{other:?}"),
        })
        .collect()
}

fn parts(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn crash_between_rename_and_commit(ty: &str, reader: &str, ext: &str) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!("{{path: out/ev.{ext}, part_records: 10}}");
    let store: Arc<dyn StateStore> = Arc::new(DurableMemStore::default());

    let state = KeyedState::new(store.clone());
    let mut s = sink(ty, &yaml, dir.path(), &state);
    assert!(write(s.as_mut(), recs(0, 6)).is_empty());
    s.checkpoint().unwrap();
    commit_state(&store, &state);
    assert!(
        !parts(dir.path()).contains(&format!("ev-000001.{ext}")),
        "6 records stay staged: {:?}",
        parts(dir.path())
    );
    write(s.as_mut(), recs(6, 15));
    s.checkpoint().unwrap();
    commit_state(&store, &state);
    assert!(parts(dir.path()).contains(&format!("ev-000001.{ext}")));
    // part 2 is renamed into place, and the process dies before its commit
    write(s.as_mut(), recs(15, 27));
    s.checkpoint().unwrap();
    assert!(parts(dir.path()).contains(&format!("ev-000002.{ext}")));
    drop(s);
    // and a killed attempt left a part in the making
    std::fs::write(
        dir.path().join(format!("out/.ev-000003.{ext}.4.tmp")),
        b"half",
    )
    .unwrap();

    let state = KeyedState::new(store.clone());
    let mut s = sink(ty, &yaml, dir.path(), &state);
    let now = parts(dir.path());
    assert!(
        !now.contains(&format!("ev-000002.{ext}")) && !now.iter().any(|p| p.ends_with(".tmp")),
        "the uncommitted part and the temporary file are gone: {now:?}"
    );
    // the records after the last commit come again, then the rest; some
    // are staged but not committed when it dies again
    write(s.as_mut(), recs(15, 27));
    s.checkpoint().unwrap();
    commit_state(&store, &state);
    write(s.as_mut(), recs(27, 29));
    s.checkpoint().unwrap();
    commit_state(&store, &state);
    write(s.as_mut(), recs(29, 33));
    drop(s);

    let state = KeyedState::new(store.clone());
    let mut s = sink(ty, &yaml, dir.path(), &state);
    write(s.as_mut(), recs(29, 40));
    s.finish().unwrap();
    s.checkpoint().unwrap();
    commit_state(&store, &state);
    assert_eq!(
        read_back(reader, &format!("out/ev-*.{ext}"), dir.path()),
        (0..40).collect::<Vec<_>>(),
        "every record once, in order: {:?}",
        parts(dir.path())
    );
    assert!(
        !parts(dir.path()).iter().any(|p| p.ends_with(".tmp")),
        "{:?}",
        parts(dir.path())
    );
}

#[test]
fn a_parquet_sink_loses_and_doubles_nothing_through_crashes() {
    crash_between_rename_and_commit("WriteToParquet", "ReadFromParquet", "parquet");
}

#[test]
fn an_avro_sink_loses_and_doubles_nothing_through_crashes() {
    crash_between_rename_and_commit("WriteToAvro", "ReadFromAvro", "avro");
}

#[test]
fn a_type_change_fails_the_record_and_names_both_types() {
    let dir = tempfile::tempdir().unwrap();
    let state = KeyedState::default();
    let mut s = sink(
        "WriteToParquet",
        "{path: out/t.parquet}",
        dir.path(),
        &state,
    );
    // ints and floats in the first records make a float column
    let first = vec![
        rill_core::record! {"a" => 1, "b" => "x"},
        rill_core::record! {"a" => 1.5, "b" => Value::Null},
    ];
    assert!(write(s.as_mut(), first).is_empty());
    let fails = write(
        s.as_mut(),
        vec![
            rill_core::record! {"a" => "one", "b" => "y"},
            rill_core::record! {"a" => 2, "c" => 1},
            rill_core::record! {"a" => 3, "b" => "z"},
        ],
    );
    assert_eq!(fails.len(), 2, "{fails:?}");
    assert!(
        fails[0].contains("field `a` is str \"one\", but the column is float64"),
        "{}",
        fails[0]
    );
    assert!(
        fails[1].contains("field `c` is not a column of the file (columns: a, b"),
        "{}",
        fails[1]
    );
    s.finish().unwrap();
    s.checkpoint().unwrap();
    let Node::Source(mut r) = testkit::build_yaml(
        &crate::registry(),
        "ReadFromParquet",
        "{path: 'out/t-*.parquet'}",
        dir.path(),
    )
    .unwrap() else {
        panic!()
    };
    let run = testkit::drain_source(r.as_mut(), 100).unwrap();
    let a: Vec<Value> = run
        .main
        .iter()
        .map(|r| r.get("a").cloned().unwrap())
        .collect();
    assert_eq!(
        a,
        vec![Value::Float(1.0), Value::Float(1.5), Value::Float(3.0)]
    );
}

#[test]
fn a_declared_schema_is_kept_and_json_columns_come_back_as_values() {
    let dir = tempfile::tempdir().unwrap();
    let state = KeyedState::default();
    let mut s = sink(
        "WriteToParquet",
        "{path: out/d.parquet, schema: {id: int64, meta: json, v: 'list<float64>'}}",
        dir.path(),
        &state,
    );
    let mut meta = rill_core::Fields::default();
    meta.insert(
        "k".into(),
        Value::List(vec![Value::Int(1), Value::String("two".into())]),
    );
    let r = rill_core::record! {"id" => 7, "meta" => Value::Map(meta.clone()), "v" => Value::List(vec![Value::Int(1), Value::Float(2.5)])};
    assert!(write(s.as_mut(), vec![r]).is_empty());
    s.finish().unwrap();
    s.checkpoint().unwrap();
    let Node::Source(mut src) = testkit::build_yaml(
        &crate::registry(),
        "ReadFromParquet",
        "{path: 'out/d-*.parquet'}",
        dir.path(),
    )
    .unwrap() else {
        panic!()
    };
    let run = testkit::drain_source(src.as_mut(), 10).unwrap();
    assert_eq!(run.main[0].get("meta"), Some(&Value::Map(meta)));
    assert_eq!(
        run.main[0].get("v"),
        Some(&Value::List(vec![Value::Float(1.0), Value::Float(2.5)]))
    );
    let e = testkit::build_yaml(
        &crate::registry(),
        "WriteToParquet",
        "{path: o.parquet, schema: {id: integer64}}",
        dir.path(),
    )
    .err()
    .unwrap();
    assert!(e.contains("unknown column type `integer64`"), "{e}");
}

#[test]
fn a_file_that_is_not_parquet_is_a_dead_letter_and_the_next_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let state = KeyedState::default();
    let mut s = sink("WriteToParquet", "{path: in/b.parquet}", dir.path(), &state);
    write(s.as_mut(), recs(0, 5));
    s.finish().unwrap();
    s.checkpoint().unwrap();
    std::fs::write(dir.path().join("in/a.parquet"), b"PAR1 this is not parquet").unwrap();
    let Node::Source(mut src) = testkit::build_yaml(
        &crate::registry(),
        "ReadFromParquet",
        "{path: 'in/*.parquet', filename_column: file}",
        dir.path(),
    )
    .unwrap() else {
        panic!()
    };
    let run = testkit::drain_source(src.as_mut(), 100).unwrap();
    assert_eq!(run.main.len(), 5);
    assert_eq!(run.failures.len(), 1);
    assert!(
        run.failures[0]
            .msg
            .starts_with("in/a.parquet: cannot read record 1 on: "),
        "{}",
        run.failures[0].msg
    );
    assert_eq!(
        run.main[0].get("file"),
        Some(&Value::String("in/b-000001.parquet".into()))
    );
}

#[test]
fn a_part_path_names_its_format_and_row_groups_have_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for (ty, yaml, want) in [
        (
            "WriteToParquet",
            "{path: out/ev.json}",
            "the parts are .parquet files: `path` ends in .json (write `out/ev.parquet`",
        ),
        (
            "WriteToAvro",
            "{path: out/ev.parquet}",
            "the parts are .avro files",
        ),
        (
            "WriteToParquet",
            "{path: out/ev, row_group_bytes: 0}",
            "must be more than 0",
        ),
    ] {
        let e = testkit::build_yaml(&crate::registry(), ty, yaml, dir.path())
            .err()
            .unwrap();
        assert!(e.contains(want), "{yaml}: {e}");
    }
    // no extension: the format's is added
    let state = KeyedState::default();
    let mut s = sink("WriteToAvro", "{path: out/ev}", dir.path(), &state);
    write(s.as_mut(), recs(0, 2));
    s.finish().unwrap();
    s.checkpoint().unwrap();
    assert!(parts(dir.path()).contains(&"ev-000001.avro".to_owned()));
}
