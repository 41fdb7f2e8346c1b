//! Zenoh clients that are not rill: the Python `eclipse-zenoh` client (from
//! PyPI, the version of the Rust crate) taps what `WriteToZenoh` publishes
//! and feeds a `ReadFromZenoh` source, in the encodings docs/wire.md gives
//! ("Clients that are not rill"): JSON, and rill's own binary layout, which
//! `zenoh_python/client.py` writes and reads with nothing but the page.
//! Real `rill run` processes and a real Python process, on loopback.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use rill_testing::*;
use serde_json::{Value as Json, json};

/// Records as rill's JSON mapping writes them, with every kind of value:
/// ints (the ends of i64 too), floats (integral ones must stay floats),
/// strings that look like other things, bools, null, nested lists and
/// maps, bytes and tensors. Then plain ones, enough for two batches
/// (`batch_size` is 256). Every record has the same fields, in the same
/// order (`Create` pads an element to the union of the fields).
fn records() -> Vec<Json> {
    let mut rs = vec![
        json!({
            "id": 0, "int": 9223372036854775807_i64, "float": 2.0, "text": "héllo ✓ \"q\"\n\t\\",
            "flag": true, "none": null,
            "list": [1, 2.5, "x", null, false, [], {}, [[-1]]],
            "map": {"a": {"b": [null, {"c": 1.0}]}, "empty": {}},
            "bytes": {"$bytes": "AAH/"},
            "tensor": {"dtype": "f32", "shape": [2], "data": [1.5, -2.0]},
        }),
        json!({
            "id": 1, "int": -9223372036854775808_i64, "float": -0.001, "text": "",
            "flag": false, "none": null,
            "list": [],
            "map": {"dtype": "c64", "shape": [1], "data": [1]},
            "bytes": {"$bytes": ""},
            "tensor": {"dtype": "f64", "shape": [2, 2], "data": [0.1, -0.0, 1e300, 5e-324]},
        }),
        json!({
            "id": 2, "int": 0, "float": -0.0, "text": "null",
            "flag": true, "none": null,
            "list": ["1", "true", 1, true],
            "map": {},
            "bytes": {"$bytes": "////"},
            "tensor": {"dtype": "i64", "shape": [3, 1], "data": [-1, 0, 9007199254740993_i64]},
        }),
        json!({
            "id": 3, "int": -1, "float": 1.7976931348623157e308, "text": "12",
            "flag": false, "none": null,
            "list": [{"k": [1, 2]}],
            "map": {"n": null},
            "bytes": {"$bytes": "AQID"},
            "tensor": {"dtype": "u8", "shape": [2], "data": [0, 255]},
        }),
    ];
    for i in 4..300_i64 {
        rs.push(json!({
            "id": i, "int": i * i - 500, "float": i as f64 / 8.0, "text": format!("r{i}"),
            "flag": i % 3 == 0, "none": null,
            "list": [i, format!("{i}")],
            "map": {"i": i, "half": i as f64 / 2.0},
            "bytes": {"$bytes": "AQ=="},
            "tensor": {"dtype": "i64", "shape": [1], "data": [-i]},
        }));
    }
    rs
}

/// A value as text, to compare: the same text means the same values, of
/// the same types (`1` is not `1.0`), with map entries in the same order.
fn canon(v: &Json) -> String {
    serde_json::to_string(v).unwrap()
}

/// Checks `got` against `want` record by record.
fn assert_records(what: &str, got: &[Json], want: &[Json]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(canon(g), canon(w), "{what}: record {i} differs");
    }
    assert_eq!(got.len(), want.len(), "{what}: the number of records");
}

/// The Python environment with eclipse-zenoh (made once for all the tests
/// of this file): its python. No python3, or no PyPI, fails the test.
fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let setup = root().join("apps/rill/tests/zenoh_python/setup.sh");
        let made = Command::new("bash").arg(&setup).output().unwrap();
        assert!(
            made.status.success(),
            "{} failed: {}",
            setup.display(),
            String::from_utf8_lossy(&made.stderr)
        );
        String::from_utf8(made.stdout).unwrap().trim().to_owned()
    })
}

fn client() -> PathBuf {
    root().join("apps/rill/tests/zenoh_python/client.py")
}

/// `python client.py ARGS` in `dir`.
fn client_command(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(python());
    c.arg(client())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

const TAP_JSON: &str = "py/tap/json";
const TAP_RILL: &str = "py/tap/rill";

#[test]
fn python_taps_what_write_to_zenoh_publishes() {
    let want = records();
    let dir = sandbox();
    let elements: String = want
        .iter()
        .map(|r| format!("          - {}\n", canon(r)))
        .collect();
    std::fs::write(
        dir.path().join("p.yaml"),
        format!(
            "pipeline:
  name: to_python
  transforms:
    - type: Create
      name: src
      config:
        elements:
{elements}    - type: WriteToZenoh
      name: as_json
      input: src
      config: {{key: {TAP_JSON}, format: json, wait_for_subscriber: 30s}}
    - type: WriteToZenoh
      name: as_rill
      input: src
      config: {{key: {TAP_RILL}, format: rill, wait_for_subscriber: 30s}}
"
        ),
    )
    .unwrap();
    let ep = format!("tcp/127.0.0.1:{}", free_port());
    let python = python();
    let writer = spawn(dir.path(), &["run", "-q", "p.yaml", "--listen", &ep]);
    // to a file: more than a pipe holds
    let tapped = dir.path().join("tapped.jsonl");
    let count = (2 * want.len()).to_string();
    let mut tap = client_command(
        dir.path(),
        &[
            "tap",
            "--connect",
            &ep,
            "--count",
            &count,
            "--timeout",
            "60",
            TAP_JSON,
            TAP_RILL,
        ],
    );
    tap.stdout(File::create(&tapped).unwrap());
    let tap = wait(
        tap.spawn().expect(python),
        Duration::from_secs(90),
        "python tap",
    );
    let writer = writer.wait(Duration::from_secs(60), "rill run (WriteToZenoh)");
    assert!(writer.status.success(), "{}", stderr(&writer));
    assert!(
        tap.status.success(),
        "python tap: {}\nrill: {}",
        stderr(&tap),
        stderr(&writer)
    );
    let lines = read_jsonl(&tapped);
    let on = |key: &str| -> Vec<&Json> { lines.iter().filter(|l| l["key_expr"] == key).collect() };
    // JSON: one message per record
    let json_lines = on(TAP_JSON);
    assert!(json_lines.iter().all(|l| l["encoding"] == "json"));
    let got: Vec<Json> = json_lines.iter().map(|l| l["fields"].clone()).collect();
    assert_records("tapped as JSON", &got, &want);
    // rill's layout: batches numbered from 0, decoded by the Python reader
    let rill_lines = on(TAP_RILL);
    assert!(rill_lines.iter().all(|l| l["encoding"] == "rill"));
    let seqs: Vec<u64> = rill_lines
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (0..want.len() as u64).collect::<Vec<_>>(),
        "numbering"
    );
    let got: Vec<Json> = rill_lines.iter().map(|l| l["fields"].clone()).collect();
    assert_records("tapped in rill's layout", &got, &want);
    assert_eq!(lines.len(), 2 * want.len(), "nothing else came");
}

#[test]
fn python_feeds_read_from_zenoh() {
    let want = records();
    let n = want.len();
    let dir = sandbox();
    std::fs::write(
        dir.path().join("p.yaml"),
        format!(
            "pipeline:
  name: from_python
  transforms:
    - type: ReadFromZenoh
      name: json_in
      config: {{key: py/feed/json, format: json, max_records: {n}}}
    - type: WriteToJson
      name: json_out
      input: json_in
      config: {{path: from_json.jsonl}}
    - type: ReadFromZenoh
      name: rill_in
      config: {{key: py/feed/rill, format: rill, max_records: {n}}}
    - type: WriteToJson
      name: rill_out
      input: rill_in
      config: {{path: from_rill.jsonl}}
"
        ),
    )
    .unwrap();
    let ep = format!("tcp/127.0.0.1:{}", free_port());
    let python = python();
    let reader = spawn(dir.path(), &["run", "-q", "p.yaml", "--listen", &ep]);
    let mut feed = client_command(
        dir.path(),
        &[
            "feed",
            "--connect",
            &ep,
            "--timeout",
            "60",
            "--json-key",
            "py/feed/json",
            "--rill-key",
            "py/feed/rill",
        ],
    )
    .stdin(Stdio::piped())
    .spawn()
    .expect(python);
    let input: String = want.iter().map(|r| canon(r) + "\n").collect();
    feed.stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let reader = reader.wait(Duration::from_secs(60), "rill run (ReadFromZenoh)");
    // the feeder ends once the reader's subscribers are gone
    let feed = wait(feed, Duration::from_secs(30), "python feed");
    assert!(
        reader.status.success(),
        "rill: {}\npython feed: {}",
        stderr(&reader),
        stderr(&feed)
    );
    assert!(feed.status.success(), "python feed: {}", stderr(&feed));
    let got = read_jsonl(&dir.path().join("from_json.jsonl"));
    assert_records("fed as JSON", &got, &want);
    let got = read_jsonl(&dir.path().join("from_rill.jsonl"));
    assert_records("fed in rill's layout", &got, &want);
}

/// What the comparison rests on: a value's text tells the types apart and
/// keeps the order of a map's entries.
#[test]
fn the_comparison_is_strict() {
    assert_ne!(canon(&json!({"a": 1})), canon(&json!({"a": 1.0})));
    assert_ne!(
        canon(&json!({"a": 1, "b": 2})),
        canon(&json!({"b": 2, "a": 1}))
    );
    assert_ne!(canon(&json!({"a": "1"})), canon(&json!({"a": 1})));
    assert_ne!(canon(&json!({"a": null})), canon(&json!({})));
}
