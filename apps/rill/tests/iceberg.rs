//! Iceberg tables against pyiceberg (its SQL catalog on the same SQLite
//! file) and DuckDB's `iceberg_scan` (its iceberg and avro extensions from
//! PyPI), set up by `tests/iceberg/setup.sh` under target/pyenv-iceberg:
//! - rill writes a table in two runs, the second with a new field: both
//!   readers see every row once, the same values and types, the new column
//!   null in older rows, and rill's part numbers in the snapshots;
//! - pyiceberg writes a table in two appends, and `ReadFromIceberg` reads
//!   it whole.

#![cfg(feature = "iceberg")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use rill_testing::*;
use serde_json::{Value as J, json};

fn python() -> &'static PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        python_env(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/iceberg/setup.sh"))
    })
}

fn tables(mode: &str, dir: &Path, table: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/iceberg/tables.py");
    let ran = Command::new(python())
        .arg(&script)
        .args([mode])
        .arg(dir)
        .arg(table)
        .output()
        .expect("python");
    assert!(
        ran.status.success(),
        "tables.py {mode} failed: {}",
        String::from_utf8_lossy(&ran.stderr)
    );
}

fn row(i: i64, tag: bool) -> J {
    let mut r = json!({
        "id": i,
        "v": i as f64 / 4.0,
        "name": if i % 6 == 0 { J::Null } else { json!(format!("r{i}é")) },
        "ok": i % 3 == 0,
        "tags": [format!("t{}", i % 4)],
    });
    if tag {
        r["tag"] = json!(format!("g{i}"));
    }
    r
}

const WRITE: &str = r#"
pipeline:
  name: land
  transforms:
    - {type: ReadFromJson, name: read, config: {path: in.jsonl}}
    - type: WriteToIceberg
      name: write
      input: read
      config: {table: db.events, part_records: 1500}
"#;

#[test]
fn pyiceberg_and_duckdb_read_what_rill_writes() {
    let dir = sandbox();
    let first: Vec<J> = (0..4000).map(|i| row(i, false)).collect();
    let second: Vec<J> = (4000..5000).map(|i| row(i, true)).collect();
    for (k, rows) in [&first, &second].into_iter().enumerate() {
        let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(dir.path().join("in.jsonl"), text).unwrap();
        // the second batch: the same pipeline again, on purpose (a run
        // that finished is not run again without `--reset-state`, which
        // leaves the table and appends to it)
        std::fs::write(dir.path().join("p.yaml"), WRITE).unwrap();
        let args: &[&str] = if k == 0 {
            &["run", "p.yaml"]
        } else {
            &["run", "--reset-state", "p.yaml"]
        };
        let o = rill(dir.path(), args);
        assert!(o.status.success(), "run {k}: {}", stderr(&o));
    }
    tables("read", dir.path(), "db.events");
    let got: J =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("read.json")).unwrap())
            .unwrap();
    assert_eq!(
        got["pyiceberg_types"],
        json!({"id": "int64", "v": "double", "name": "string", "ok": "bool",
               "tags": "list<element: string>", "tag": "string"}),
        "{}",
        got["pyiceberg_types"]
    );
    assert_eq!(
        got["duckdb_types"],
        json!({"id": "BIGINT", "v": "DOUBLE", "name": "VARCHAR", "ok": "BOOLEAN",
               "tags": "VARCHAR[]", "tag": "VARCHAR"})
    );
    let want: Vec<J> = first
        .iter()
        .chain(&second)
        .map(|r| {
            let mut r = r.clone();
            r.as_object_mut().unwrap().entry("tag").or_insert(J::Null);
            r
        })
        .collect();
    for tool in ["pyiceberg", "duckdb"] {
        let rows = got[tool].as_array().unwrap();
        assert_eq!(rows.len(), want.len(), "{tool}: every row once");
        for (g, w) in rows.iter().zip(&want) {
            assert_eq!(g, w, "{tool}");
        }
    }
    assert_eq!(got["duckdb_count_by_metadata_file"], json!(5000));
    // each part a snapshot with rill's run and part number: parts 1..k
    // of each of the two runs
    let mut runs: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for s in got["snapshots"].as_array().unwrap() {
        if let (Some(run), Some(part)) = (s["rill.run"].as_str(), s["rill.part"].as_str()) {
            assert_eq!(s["rill.sink"], json!("land/write"));
            runs.entry(run.to_owned())
                .or_default()
                .push(part.parse().unwrap());
        }
    }
    assert_eq!(runs.len(), 2, "{}", got["snapshots"]);
    for parts in runs.values_mut() {
        parts.sort();
        assert_eq!(*parts, (1..=parts.len() as u64).collect::<Vec<_>>());
    }
}

#[test]
fn rill_reads_what_pyiceberg_writes() {
    let dir = sandbox();
    tables("write", dir.path(), "db.from_py");
    let o = run_yaml(
        dir.path(),
        r#"
pipeline:
  name: read-table
  transforms:
    - {type: ReadFromIceberg, name: read, config: {table: db.from_py}}
    - {type: WriteToJson, name: out, input: read, config: {path: out.jsonl}}
"#,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut got = read_jsonl(&dir.path().join("out.jsonl"));
    got.sort_by_key(|r| r["id"].as_i64());
    let want: J =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("expected.json")).unwrap())
            .unwrap();
    assert_eq!(&J::Array(got), &want);
}
