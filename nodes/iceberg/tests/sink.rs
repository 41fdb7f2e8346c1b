//! WriteToIceberg through crashes at each point of its two phases, read
//! back by ReadFromIceberg; schema evolution; orphan files.

use std::path::Path;
use std::sync::Arc;

use rill_core::node::{Emitter, Node, Sink};
use rill_core::state::{KeyedState, StateStore};
use rill_core::testkit::{self, DurableMemStore, commit_state};
use rill_core::{Record, Value};

fn registry() -> rill_core::registry::Registry {
    let mut r = rill_nodes::registry();
    rill_iceberg::register(&mut r);
    r
}

const SINK: &str = "{table: db.events, part_records: 10}";

fn sink(dir: &Path, state: &KeyedState) -> Box<dyn Sink> {
    match testkit::build_yaml_with_state(&registry(), "WriteToIceberg", SINK, dir, state).unwrap() {
        Node::Sink(s) => s,
        _ => panic!(),
    }
}

fn recs(from: i64, to: i64) -> Vec<Record> {
    (from..to)
        .map(|i| rill_core::record! {"id" => i, "v" => i as f64 * 0.5, "s" => format!("s{i}")})
        .collect()
}

fn write(s: &mut dyn Sink, batch: Vec<Record>) {
    let mut out = Emitter::new();
    s.write(batch, &mut out).unwrap();
    assert!(out.failures().is_empty(), "{:?}", out.failures());
}

/// The rows of the table's current snapshot.
fn read(dir: &Path) -> Vec<Record> {
    let Node::Source(mut s) =
        testkit::build_yaml(&registry(), "ReadFromIceberg", "{table: db.events}", dir).unwrap()
    else {
        panic!()
    };
    let run = testkit::drain_source(s.as_mut(), 1_000_000).unwrap();
    assert!(run.failures.is_empty());
    let mut rows = run.main;
    rows.sort_by_key(|r| match r.get("id") {
        Some(Value::Int(i)) => *i,
        _ => i64::MAX,
    });
    rows
}

fn ids(rows: &[Record]) -> Vec<i64> {
    rows.iter()
        .map(|r| match r.get("id") {
            Some(Value::Int(i)) => *i,
            other => panic!("{other:?}"),
        })
        .collect()
}

fn data_files(dir: &Path) -> Vec<String> {
    let d = dir.join("iceberg/warehouse/db/events/data");
    let mut v: Vec<String> = std::fs::read_dir(d)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn every_record_once_through_crashes_in_either_phase() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn StateStore> = Arc::new(DurableMemStore::default());

    // part 1: staged, written, committed, published
    let state = KeyedState::new(store.clone());
    let mut s = sink(dir.path(), &state);
    write(s.as_mut(), recs(0, 12));
    s.checkpoint().unwrap();
    commit_state(&store, &state);
    s.committed().unwrap();
    assert_eq!(ids(&read(dir.path())), (0..12).collect::<Vec<_>>());

    // part 2: written and in the stage's commit, but the process dies
    // before the table commit
    write(s.as_mut(), recs(12, 25));
    s.checkpoint().unwrap();
    commit_state(&store, &state);
    drop(s);
    assert_eq!(read(dir.path()).len(), 12, "not in the table yet");
    let state = KeyedState::new(store.clone());
    let mut s = sink(dir.path(), &state);
    assert_eq!(
        ids(&read(dir.path())),
        (0..25).collect::<Vec<_>>(),
        "the restarted sink committed part 2"
    );

    // part 3: written, and the process dies before the stage's commit: its
    // files are orphans, and its records come again
    write(s.as_mut(), recs(25, 40));
    s.checkpoint().unwrap();
    let before = data_files(dir.path());
    drop(s);
    let state = KeyedState::new(store.clone());
    let mut s = sink(dir.path(), &state);
    let after = data_files(dir.path());
    assert!(
        after.len() < before.len(),
        "the killed attempt's data file is deleted: {before:?} -> {after:?}"
    );
    write(s.as_mut(), recs(25, 43));
    s.finish().unwrap();
    s.checkpoint().unwrap();
    commit_state(&store, &state);
    s.committed().unwrap();
    let rows = read(dir.path());
    assert_eq!(ids(&rows), (0..43).collect::<Vec<_>>(), "every record once");
    assert_eq!(rows[42].get("v"), Some(&Value::Float(21.0)));
    assert_eq!(rows[42].get("s"), Some(&Value::String("s42".into())));
    let hint = std::fs::read_to_string(
        dir.path()
            .join("iceberg/warehouse/db/events/metadata/version-hint.text"),
    )
    .unwrap();
    assert!(
        dir.path()
            .join(format!(
                "iceberg/warehouse/db/events/metadata/{hint}.metadata.json"
            ))
            .exists(),
        "version-hint.text names the current metadata: {hint}"
    );
}

#[test]
fn a_new_field_adds_a_column_and_older_rows_read_null() {
    let dir = tempfile::tempdir().unwrap();
    let state = KeyedState::default();
    let mut s = sink(dir.path(), &state);
    write(s.as_mut(), recs(0, 10));
    s.checkpoint().unwrap();
    s.committed().unwrap();
    let with_tag: Vec<Record> = (10..20)
        .map(|i| rill_core::record! {"id" => i, "v" => 1.0, "s" => "x", "tag" => format!("t{i}")})
        .collect();
    write(s.as_mut(), with_tag);
    s.finish().unwrap();
    s.checkpoint().unwrap();
    s.committed().unwrap();
    let rows = read(dir.path());
    assert_eq!(rows.len(), 20);
    assert_eq!(rows[0].get("tag"), Some(&Value::Null));
    assert_eq!(rows[19].get("tag"), Some(&Value::String("t19".into())));
    // a restarted sink takes the table's columns: an int into the string
    // column fails the record, with both types named
    let state = KeyedState::default();
    let mut s = sink(dir.path(), &state);
    let mut out = Emitter::new();
    s.write(vec![rill_core::record! {"id" => 99, "s" => 5}], &mut out)
        .unwrap();
    assert_eq!(out.failures().len(), 1);
    assert!(
        out.failures()[0]
            .msg
            .contains("field `s` is int 5, but the column is string"),
        "{}",
        out.failures()[0].msg
    );
}

#[test]
fn a_column_of_a_type_rill_does_not_write_takes_nulls_and_refuses_values() {
    let dir = tempfile::tempdir().unwrap();
    // a table another tool made, with a decimal column
    other_tool_table(dir.path(), false);
    let state = KeyedState::default();
    let mut s = sink(dir.path(), &state);
    let mut out = Emitter::new();
    s.write(
        vec![
            rill_core::record! {"id" => 1, "s" => "a"},
            rill_core::record! {"id" => 2, "price" => 2.5, "s" => "b"},
            rill_core::record! {"id" => 3, "price" => Value::Null, "s" => "c"},
        ],
        &mut out,
    )
    .unwrap();
    assert_eq!(out.failures().len(), 1);
    assert!(
        out.failures()[0]
            .msg
            .contains("field `price` is float 2.5, but the column is other<decimal(10, 2)> (a type rill does not write: only null fits)"),
        "{}",
        out.failures()[0].msg
    );
    s.finish().unwrap();
    s.checkpoint().unwrap();
    s.committed().unwrap();
    let rows = read(dir.path());
    assert_eq!(ids(&rows), vec![1, 3]);
    assert_eq!(rows[0].get("price"), Some(&Value::Null));
}

/// `db.events` made by the iceberg library as another tool would: `id`
/// long, `price` decimal(10, 2), `s` string; partitioned by `id` if asked.
fn other_tool_table(dir: &Path, partitioned: bool) {
    use iceberg::spec::{
        NestedField, PrimitiveType, Schema, Transform, Type, UnboundPartitionSpec,
    };
    use iceberg::{Catalog, CatalogBuilder, NamespaceIdent, TableCreation};
    let wh = dir.join("iceberg/warehouse");
    std::fs::create_dir_all(&wh).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cat = iceberg_catalog_sql::SqlCatalogBuilder::default()
            .with_storage_factory(Arc::new(iceberg::io::LocalFsStorageFactory))
            .load(
                "rill",
                std::collections::HashMap::from([
                    (
                        "uri".to_owned(),
                        format!("sqlite://{}/iceberg/catalog.db?mode=rwc", dir.display()),
                    ),
                    ("warehouse".to_owned(), wh.display().to_string()),
                    ("sql_bind_style".to_owned(), "QMark".to_owned()),
                ]),
            )
            .await
            .unwrap();
        let ns = NamespaceIdent::new("db".into());
        cat.create_namespace(&ns, Default::default()).await.unwrap();
        let schema = Schema::builder()
            .with_fields(vec![
                NestedField::optional(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
                NestedField::optional(
                    2,
                    "price",
                    Type::Primitive(PrimitiveType::Decimal {
                        precision: 10,
                        scale: 2,
                    }),
                )
                .into(),
                NestedField::optional(3, "s", Type::Primitive(PrimitiveType::String)).into(),
            ])
            .build()
            .unwrap();
        let t = if partitioned {
            let spec = UnboundPartitionSpec::builder()
                .add_partition_field(1, "id_bucket", Transform::Bucket(4))
                .unwrap()
                .build();
            TableCreation::builder()
                .name("events".into())
                .schema(schema)
                .partition_spec(spec)
                .build()
        } else {
            TableCreation::builder()
                .name("events".into())
                .schema(schema)
                .build()
        };
        cat.create_table(&ns, t).await.unwrap();
    });
}

#[test]
fn a_partitioned_table_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    other_tool_table(dir.path(), true);
    let e = testkit::build_yaml_with_state(
        &registry(),
        "WriteToIceberg",
        SINK,
        dir.path(),
        &KeyedState::default(),
    )
    .err()
    .unwrap();
    assert!(e.starts_with("bad input: "), "exit 2: {e}");
    assert!(
        e.contains("table db.events is partitioned (1 partition fields): WriteToIceberg writes unpartitioned tables only"),
        "{e}"
    );
}
