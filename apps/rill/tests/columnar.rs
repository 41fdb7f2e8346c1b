//! Parquet and Avro against the tools users read and write them with:
//! pyarrow, DuckDB and fastavro from PyPI (installed under target/pyenv-io
//! by `tests/columnar/setup.sh`).
//!
//! - rill writes 5,000 records as Parquet and Avro parts; `read.py` reads
//!   the parts with pyarrow, DuckDB and fastavro: the same rows, with the
//!   column types the records imply;
//! - `write.py` writes Parquet with pyarrow (narrow ints, float32,
//!   timestamps, a struct, lists, a dictionary column, nulls) and with
//!   DuckDB, and Avro with fastavro (an enum, a map, bytes, a
//!   timestamp-millis); rill reads them: the rows `write.py` expects, and
//!   a file that is not Parquet in the glob is a dead letter naming it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use rill_testing::*;
use serde_json::{Value as J, json};

fn python() -> &'static PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        python_env(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/columnar/setup.sh"))
    })
}

fn py(script: &str, dir: &Path) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/columnar")
        .join(script);
    let ran = Command::new(python())
        .arg(&path)
        .arg(dir)
        .output()
        .expect("python");
    assert!(
        ran.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&ran.stderr)
    );
}

/// The records rill writes: every column type, nulls, a field some
/// records lack, ints and floats in one column.
fn input(n: i64) -> Vec<J> {
    (0..n)
        .map(|i| {
            let mut r = json!({
                "id": i,
                "name": if i % 9 == 0 { J::Null } else { json!(format!("n{i}é\"")) },
                "score": if i % 10 == 0 { json!(i) } else { json!(i as f64 / 3.0) },
                "ok": i % 2 == 0,
                "tags": (0..(i % 3)).map(|k| format!("t{k}")).collect::<Vec<_>>(),
                "vec": [i as f64 * 0.5, 1.0],
                "meta": {"k": i, "s": "x", "l": [1, "two"]},
            });
            if i % 4 == 1 {
                r.as_object_mut().unwrap().remove("ok");
            }
            r
        })
        .collect()
}

/// What a reader should see for a record: missing fields are null, the
/// score a float, `meta` JSON text (`meta_is_text`) or a value.
fn as_read(r: &J, meta_is_text: bool) -> J {
    let mut r = r.clone();
    let o = r.as_object_mut().unwrap();
    o.entry("ok").or_insert(J::Null);
    let score = o["score"].as_f64().unwrap();
    o.insert("score".into(), json!(score));
    if meta_is_text {
        let text = serde_json::to_string(&o["meta"]).unwrap();
        o.insert("meta".into(), J::String(text));
    }
    r
}

fn same_rows(tool: &str, got: &J, want: &[J], meta_is_text: bool) {
    let got = got.as_array().unwrap_or_else(|| panic!("{tool}: no rows"));
    assert_eq!(got.len(), want.len(), "{tool}: rows");
    for (g, w) in got.iter().zip(want) {
        let mut g = g.clone();
        // JSON text written by rill: compare as values
        if meta_is_text && let Some(J::String(s)) = g.get("meta") {
            let v: J = serde_json::from_str(s).unwrap();
            g["meta"] = J::String(serde_json::to_string(&v).unwrap());
        }
        assert_eq!(&g, &as_read(w, meta_is_text), "{tool}");
    }
}

#[test]
fn parquet_and_avro_parts_are_read_by_pyarrow_duckdb_and_fastavro() {
    let dir = sandbox();
    let rows = input(5000);
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(dir.path().join("in.jsonl"), text).unwrap();
    let o = run_yaml(
        dir.path(),
        r#"
pipeline:
  name: columnar
  transforms:
    - {type: ReadFromJson, name: read, config: {path: in.jsonl}}
    - type: WriteToParquet
      name: parquet
      input: read
      config: {path: out/events.parquet, part_records: 2000, row_group_records: 700}
    - type: WriteToAvro
      name: avro
      input: read
      config: {path: out/events.avro, part_records: 2000}
"#,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    py("read.py", dir.path());
    let got: J =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("read.json")).unwrap())
            .unwrap();
    let parts = got["parquet_files"].as_u64().unwrap();
    assert!((2..=5).contains(&parts), "{parts} Parquet parts");
    assert!(got["avro_files"].as_u64().unwrap() >= 2);
    assert_eq!(
        got["pyarrow_types"],
        json!({"id": "int64", "name": "string", "score": "double", "ok": "bool",
               "tags": "list<item: string>", "vec": "list<item: double>", "meta": "string"}),
    );
    assert_eq!(
        got["duckdb_types"],
        json!({"id": "BIGINT", "name": "VARCHAR", "score": "DOUBLE", "ok": "BOOLEAN",
               "tags": "VARCHAR[]", "vec": "DOUBLE[]", "meta": "VARCHAR"}),
    );
    assert_eq!(got["fastavro_types"]["id"], json!(["null", "long"]));
    assert_eq!(got["fastavro_types"]["score"], json!(["null", "double"]));
    assert_eq!(
        got["fastavro_types"]["tags"],
        json!(["null", {"type": "array", "items": ["null", "string"]}])
    );
    same_rows("pyarrow", &got["pyarrow"], &rows, true);
    same_rows("duckdb", &got["duckdb"], &rows, true);
    same_rows("fastavro", &got["fastavro"], &rows, true);
}

#[test]
fn rill_reads_what_pyarrow_duckdb_and_fastavro_write() {
    let dir = sandbox();
    py("write.py", dir.path());
    std::fs::write(dir.path().join("in/c.parquet"), b"PAR1 not a parquet file").unwrap();
    let o = run_yaml(
        dir.path(),
        r#"
pipeline:
  name: columnar-in
  transforms:
    - type: ReadFromParquet
      name: parquet
      config:
        path: 'in/*.parquet'
        error_handling: {output: bad}
    - {type: WriteToJson, name: p, input: parquet, config: {path: out/p.jsonl}}
    - {type: WriteToJson, name: bad, input: parquet.bad, config: {path: out/bad.jsonl}}
    - {type: ReadFromAvro, name: avro, config: {path: in/r.avro}}
    - {type: WriteToJson, name: a, input: avro, config: {path: out/a.jsonl}}
"#,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let want: J =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("expected.json")).unwrap())
            .unwrap();
    let p = read_jsonl(&dir.path().join("out/p.jsonl"));
    let mut expect: Vec<J> = want["parquet"].as_array().unwrap().clone();
    expect.extend(want["duckdb"].as_array().unwrap().iter().cloned());
    assert_eq!(p.len(), expect.len());
    for (g, w) in p.iter().zip(&expect) {
        assert_eq!(g, w);
    }
    let a = read_jsonl(&dir.path().join("out/a.jsonl"));
    assert_eq!(&J::Array(a), &want["avro"]);
    let bad = read_jsonl(&dir.path().join("out/bad.jsonl"));
    assert_eq!(bad.len(), 1, "{bad:?}");
    let msg = bad[0].to_string();
    assert!(
        msg.contains("in/c.parquet: cannot read record 1 on"),
        "{msg}"
    );
}

/// A part is written when its interval passes even if no record comes
/// after it: a stream that went quiet does not keep its last records staged.
#[test]
fn a_quiet_stream_still_rolls_its_part_on_time() {
    let dir = sandbox();
    let text: String = (0..10).map(|i| format!("{{\"id\": {i}}}\n")).collect();
    std::fs::write(dir.path().join("in.jsonl"), text).unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        r#"
pipeline:
  name: quiet
  transforms:
    - {type: ReadFromJson, name: read, config: {path: in.jsonl, follow: true}}
    - type: WriteToParquet
      name: write
      input: read
      config: {path: out/ev.parquet, part_interval: 1s}
"#,
    )
    .unwrap();
    let child = spawn(dir.path(), &["run", "-q", "p.yaml"]);
    let part = dir.path().join("out/ev-000001.parquet");
    let t0 = std::time::Instant::now();
    while !part.exists() && t0.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let waited = t0.elapsed();
    child.signal("-TERM");
    let o = child.wait(std::time::Duration::from_secs(20), "rill after SIGTERM");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(part.exists(), "no part after {waited:?} of a quiet stream");
    let o = run_yaml(
        dir.path(),
        "pipeline:\n  transforms:\n    - {type: ReadFromParquet, name: r, config: {path: 'out/ev-*.parquet'}}\n    - {type: WriteToJson, name: w, input: r, config: {path: back.jsonl}}\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read_jsonl(&dir.path().join("back.jsonl")).len(), 10);
}
