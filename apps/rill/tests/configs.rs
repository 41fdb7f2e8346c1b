//! Every pipeline under `configs/` is run here and its output checked.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rill_testing::*;
use serde_json::Value as J;

/// What each config must do; a config missing here fails `every_config_is_tested`.
const EXPECT: &[(&str, &str)] = &[
    ("quickstart.yaml", "checked by quickstart_output"),
    ("generate.yaml", "checked by generate_output"),
    ("csv.yaml", "checked by csv_output"),
    (
        "device-stats.yaml",
        "checked by device_stats_bounded_and_live",
    ),
    (
        "device-stats-live.yaml",
        "checked by device_stats_bounded_and_live",
    ),
    (
        "readings-feed.yaml",
        "checked by device_stats_bounded_and_live",
    ),
    ("classify.yaml", "checked by classify_accuracy"),
    (
        "podcast-previews.yaml",
        "run by apps/podcast-previews/tests/previews.rs (needs generated episodes)",
    ),
    (
        "podcast-previews-live.yaml",
        "run by apps/podcast-previews/tests/previews.rs (killed and resumed)",
    ),
    (
        "serve-classify.yaml",
        "run by serving.rs (the_readme_serving_commands)",
    ),
    ("files.yaml", "checked by files_output"),
    (
        "watch-folder.yaml",
        "checked by watched_folder_each_file_once",
    ),
    (
        "land-iceberg.yaml",
        "checked by quickstart_landed_in_iceberg",
    ),
    (
        "mltransform-train.yaml",
        "checked by mltransform_train_then_apply",
    ),
    (
        "mltransform-apply.yaml",
        "checked by mltransform_train_then_apply",
    ),
    ("beam/explode.yaml", "expected rows"),
    ("beam/filter_callable.yaml", "expected rows"),
    ("beam/map_to_fields_callable.yaml", "expected rows"),
    ("beam/map_to_fields_from_file.yaml", "expected rows"),
    (
        "beam/map_to_fields_with_resource_hints.yaml",
        "expected rows",
    ),
    ("beam/regex_matches.yaml", "expected rows"),
    ("beam/read_text_glob.yaml", "expected rows"),
    ("beam/combine_per_key.yaml", "expected rows"),
    ("beam/combine_global.yaml", "expected rows"),
    ("beam/combine_top_n.yaml", "expected rows"),
    ("beam/combine_sessions.yaml", "expected rows"),
    ("beam/window_into_fixed.yaml", "expected rows"),
    ("beam/partition_flatten.yaml", "expected rows"),
    ("beam/yaml_shapes.yaml", "expected rows"),
    (
        "beam/map_to_fields_with_deps.yaml",
        "refused: needs the `pint` package",
    ),
    (
        "beam/map_to_fields_with_java_deps.yaml",
        "refused: needs Java",
    ),
    (
        "two-boxes.yaml",
        "run by hil-tests/tests/netns.rs (over two network namespaces)",
    ),
    (
        "sensor-anomaly.yaml",
        "run by apps/sensor-anomaly/tests/alerts.rs (needs generated data)",
    ),
    (
        "sensor-anomaly-live.yaml",
        "run by apps/sensor-anomaly/tests/alerts.rs (fed by `sensor-anomaly feed`)",
    ),
    (
        "sensor-anomaly-train.yaml",
        "run by apps/sensor-anomaly/tests/alerts.rs (by `sensor-anomaly train`)",
    ),
    (
        "custom/scores.yaml",
        "run by apps/custom-rill/tests/cli.rs (needs that app's node types)",
    ),
];

#[test]
fn every_config_is_tested() {
    let mut found = Vec::new();
    for sub in ["", "beam/", "custom/"] {
        for e in std::fs::read_dir(root().join("configs").join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                found.push(format!("{sub}{}", p.file_name().unwrap().to_string_lossy()));
            }
        }
    }
    for f in &found {
        assert!(
            EXPECT.iter().any(|(n, _)| n == f),
            "configs/{f} is run by no test: add it to EXPECT"
        );
    }
    assert_eq!(
        found.len(),
        EXPECT.len(),
        "EXPECT names a config that does not exist: {found:?}"
    );
}

#[test]
fn quickstart_output() {
    let dir = sandbox();
    let out = rill(dir.path(), &["run", "configs/quickstart.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("pipeline `quickstart` finished"),
        "{}",
        stderr(&out)
    );
    let input = read_jsonl(&root().join("configs/data/readings.jsonl"));
    let rows = read_jsonl(&dir.path().join("out/quickstart/readings.jsonl"));
    // expected: readings with a numeric temperature in range, in order
    let expected: Vec<&J> = input
        .iter()
        .filter(|r| r["temp_c"].as_f64().is_some_and(|t| -50.0 < t && t < 150.0))
        .collect();
    assert_eq!(rows.len(), expected.len());
    assert_eq!(rows.len(), 394);
    for (row, inp) in rows.iter().zip(expected) {
        let t = inp["temp_c"].as_f64().unwrap();
        assert_eq!(row["ts"], inp["ts"]);
        let f = row["temp_f"].as_f64().unwrap();
        assert!((f - (t * 9.0 / 5.0 + 32.0)).abs() <= 0.051, "{row}");
        let level = if t >= 80.0 {
            "hot"
        } else if t >= 40.0 {
            "warm"
        } else {
            "ok"
        };
        assert_eq!(row["level"], level, "{row}");
    }
    // the three unreadable temperatures are dead letters with Beam's fields
    let errors = read_jsonl(&dir.path().join("out/quickstart/errors.jsonl"));
    assert_eq!(errors.len(), 3);
    for e in &errors {
        assert_eq!(e["element"]["temp_c"], "n/a");
        assert_eq!(e["stage"], "valid");
        assert_eq!(e["attempts"], 1);
        assert!(e["msg"].as_str().unwrap().contains("TypeError"), "{e}");
        assert!(e["time"].as_i64().unwrap() > 0);
    }
}

#[test]
fn generate_output() {
    let dir = sandbox();
    let out = rill(dir.path(), &["run", "-q", "configs/generate.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = read_jsonl(&dir.path().join("out/generate/big.jsonl"));
    // Generate's values are uniform in [0,1): about half pass `value >= 0.5`
    assert!((400..=600).contains(&rows.len()), "{}", rows.len());
    let mut last = -1;
    for r in &rows {
        assert!(r["value"].as_f64().unwrap() >= 0.5);
        assert_eq!(
            r["scaled"].as_f64().unwrap(),
            (r["value"].as_f64().unwrap() * 100.0).round()
        );
        let id = r["id"].as_i64().unwrap();
        assert!(id > last, "order kept");
        last = id;
    }
}

/// The same windowed pipeline over the readings file and over the same
/// readings published on Zenoh: equal rows for every window the stream
/// closed; the file's end closes the last minute too.
#[test]
fn device_stats_bounded_and_live() {
    let dir = sandbox();
    let out = rill(dir.path(), &["run", "-q", "configs/device-stats.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bounded = read_jsonl(&dir.path().join("out/device-stats/minutes.jsonl"));
    // expected from the input itself: per device and minute
    let mut want: BTreeMap<(i64, String), (u64, f64, f64)> = BTreeMap::new();
    for r in read_jsonl(&root().join("configs/data/readings.jsonl")) {
        let Some(t) = r["temp_c"].as_f64() else {
            continue;
        };
        let ts = r["ts"].as_i64().unwrap();
        let e = want
            .entry((ts - ts % 60_000, r["device"].as_str().unwrap().to_owned()))
            .or_insert((0, 0.0, f64::MIN));
        e.0 += 1;
        e.1 += t;
        e.2 = e.2.max(t);
    }
    assert_eq!(bounded.len(), want.len());
    assert_eq!(want.len(), 8, "two minutes of four devices");
    for row in &bounded {
        let minute = (row["minute"].as_f64().unwrap() * 1000.0) as i64;
        let (n, sum, max) = want[&(minute, row["device"].as_str().unwrap().to_owned())];
        assert_eq!(row["readings"].as_u64(), Some(n), "{row}");
        assert!((row["mean_temp"].as_f64().unwrap() - sum / n as f64).abs() < 1e-9);
        assert_eq!(row["max_temp"].as_f64(), Some(max), "{row}");
    }
    // the same pipeline over an unbounded Zenoh stream
    let ep = format!("tcp/127.0.0.1:{}", free_port());
    let live = spawn(
        dir.path(),
        &[
            "run",
            "-q",
            "configs/device-stats-live.yaml",
            "--listen",
            &ep,
        ],
    );
    let feed = command(
        dir.path(),
        &["run", "-q", "configs/readings-feed.yaml", "--connect", &ep],
    )
    .spawn()
    .unwrap();
    let feed = wait(feed, Duration::from_secs(60), "the feed");
    assert!(feed.status.success(), "{}", stderr(&feed));
    // the first minute closes when readings of the second pass its end;
    // the second stays open while the stream goes on
    let minutes = dir.path().join("out/device-stats-live/minutes.jsonl");
    wait_lines(&minutes, 4);
    std::thread::sleep(Duration::from_millis(500));
    live.signal("-TERM");
    let live = live.wait(Duration::from_secs(30), "the live pipeline");
    assert!(live.status.success(), "{}", stderr(&live));
    let streamed = read_jsonl(&minutes);
    assert_eq!(streamed.len(), 4, "only the closed minute: {streamed:?}");
    let first: Vec<&J> = bounded
        .iter()
        .filter(|r| r["minute"] == streamed[0]["minute"])
        .collect();
    assert_eq!(streamed.iter().collect::<Vec<_>>(), first);
}

#[test]
fn mltransform_train_then_apply() {
    let dir = sandbox();
    let out = rill(dir.path(), &["run", "-q", "configs/mltransform-train.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let train = read_jsonl(&dir.path().join("out/mltransform/train.jsonl"));
    // every valid reading, its temperature standardised over the file
    let valid = read_jsonl(&root().join("configs/data/readings.jsonl"))
        .into_iter()
        .filter(|r| r["temp_c"].is_number() && r["vibration"].is_number())
        .count();
    assert_eq!(train.len(), valid);
    let z: Vec<f64> = train
        .iter()
        .map(|r| r["temp_z"].as_f64().unwrap())
        .collect();
    let mean = z.iter().sum::<f64>() / z.len() as f64;
    let var = z.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / z.len() as f64;
    assert!(
        mean.abs() < 1e-9 && (var - 1.0).abs() < 1e-9,
        "{mean} {var}"
    );
    let mut quartiles = [0usize; 4];
    for r in &train {
        quartiles[r["vibration_quartile"].as_u64().unwrap() as usize] += 1;
        let v = r["vibration_01"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{r}");
        assert!(r["device"].as_i64().unwrap() >= 0, "{r}");
    }
    // four buckets of about a quarter each
    for q in quartiles {
        assert!(q.abs_diff(valid / 4) <= valid / 20, "{quartiles:?}");
    }
    // the second pipeline applies the artifacts: the very same values
    let out = rill(dir.path(), &["run", "-q", "configs/mltransform-apply.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let applied = read_jsonl(&dir.path().join("out/mltransform/applied.jsonl"));
    assert_eq!(applied, train);
    // other transforms than the artifacts were made with: exit 2, naming
    // the difference
    let yaml = std::fs::read_to_string(root().join("configs/mltransform-apply.yaml"))
        .unwrap()
        .replace(
            "watch: true",
            "transforms: [{type: ScaleToZScore, config: {columns: [temp_c]}}]",
        );
    std::fs::write(dir.path().join("other.yaml"), yaml).unwrap();
    // (`--reset-state`: the same pipeline, `mltransform-apply`, finished)
    let out = rill(dir.path(), &["run", "-q", "--reset-state", "other.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "transforms[0].config.columns[0]: the artifacts have \"temp_z\", this pipeline \"temp_c\""
        ),
        "{}",
        stderr(&out)
    );
}

/// The example of RunInference: the MLP apps/train-classify trained labels
/// the held-out stream at least this well (it reaches 0.907).
const CLASSIFY_FLOOR: f64 = 0.88;

#[test]
fn classify_accuracy() {
    let dir = sandbox();
    let out = rill(dir.path(), &["run", "configs/classify.yaml"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    // the summary shows the model's metrics
    for m in [
        "num_inferences",
        "inference_batch_latency_micro_secs",
        "model_version",
    ] {
        assert!(err.contains(m), "no {m} in the summary:\n{err}");
    }
    let rows = read_jsonl(&dir.path().join("out/classify/predictions.jsonl"));
    assert_eq!(rows.len(), 1000);
    assert!(read_jsonl(&dir.path().join("out/classify/errors.jsonl")).is_empty());
    let mut right = 0;
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["id"].as_i64(), Some(i as i64), "order kept");
        assert_eq!(r["model_id"], "classify");
        assert_eq!(r["model_version"], "1");
        let c = r["confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&c));
        if r["predicted"] == r["label"] {
            right += 1;
        }
    }
    let acc = right as f64 / rows.len() as f64;
    assert!(
        acc >= CLASSIFY_FLOOR,
        "accuracy {acc} below the floor {CLASSIFY_FLOOR}"
    );
}

#[test]
fn csv_output() {
    let dir = sandbox();
    let out = rill(dir.path(), &["run", "-q", "configs/csv.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(dir.path().join("out/csv/tags.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "product,price,tag");
    // 3 products with 2, 1 and 3 tags; the row with a bad price is a dead letter
    assert_eq!(lines.len(), 1 + 6, "{text}");
    assert_eq!(lines[1], "espresso,2.5,coffee");
    let errors = read_jsonl(&dir.path().join("out/csv/errors.jsonl"));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]["msg"].as_str().unwrap().contains("price"),
        "{}",
        errors[0]
    );
}

/// Python's `repr` of a JSON value, as Beam's `Row.__repr__` prints it.
fn py_repr(v: &J) -> String {
    match v {
        J::Null => "None".into(),
        J::Bool(b) => if *b { "True" } else { "False" }.into(),
        J::Number(n) => n.to_string(),
        J::String(s) => {
            let q = if s.contains('\'') && !s.contains('"') {
                '"'
            } else {
                '\''
            };
            let mut out = String::from(q);
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    c if c == q => {
                        out.push('\\');
                        out.push(c)
                    }
                    c => out.push(c),
                }
            }
            out.push(q);
            out
        }
        J::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        J::Object(m) => row_repr(m),
    }
}

fn row_repr(m: &serde_json::Map<String, J>) -> String {
    let parts: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{k}={}", py_repr(v)))
        .collect();
    format!("Row({})", parts.join(", "))
}

/// The `# Expected:` rows of a Beam example, as Beam's test reads them.
fn expected_rows(text: &str) -> Vec<String> {
    let mut rows = Vec::new();
    let mut on = false;
    for line in text.lines() {
        if line == "# Expected:" {
            on = true;
        } else if on {
            let l = line.strip_prefix("#  ").unwrap_or(line).trim();
            if !l.is_empty() && l != "#" {
                rows.push(l.to_owned());
            }
        }
    }
    rows
}

fn multiset(v: Vec<String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in v {
        *m.entry(s).or_default() += 1;
    }
    m
}

fn run_beam(name: &str) {
    let dir = sandbox();
    let file = format!("configs/beam/{name}");
    let text = std::fs::read_to_string(root().join(&file)).unwrap();
    let expected = expected_rows(&text);
    assert!(!expected.is_empty(), "{name} has no # Expected: rows");
    let out = rill(dir.path(), &["run", "-q", &file]);
    assert!(out.status.success(), "{name}: {}", stderr(&out));
    let got: Vec<String> = stdout(&out)
        .lines()
        .map(|l| match serde_json::from_str::<J>(l).unwrap() {
            J::Object(m) => row_repr(&m),
            other => panic!("not an object: {other}"),
        })
        .collect();
    assert_eq!(multiset(got), multiset(expected), "{name}");
}

#[test]
fn beam_explode() {
    run_beam("explode.yaml");
}

#[test]
fn beam_filter_callable() {
    run_beam("filter_callable.yaml");
}

#[test]
fn beam_map_to_fields_callable() {
    run_beam("map_to_fields_callable.yaml");
}

#[test]
fn beam_map_to_fields_from_file() {
    run_beam("map_to_fields_from_file.yaml");
}

#[test]
fn beam_map_to_fields_with_resource_hints() {
    run_beam("map_to_fields_with_resource_hints.yaml");
}

#[test]
fn beam_regex_matches() {
    run_beam("regex_matches.yaml");
}

#[test]
fn beam_combine_per_key() {
    run_beam("combine_per_key.yaml");
}

#[test]
fn beam_combine_global() {
    run_beam("combine_global.yaml");
}

#[test]
fn beam_combine_top_n() {
    run_beam("combine_top_n.yaml");
}

#[test]
fn beam_combine_sessions() {
    run_beam("combine_sessions.yaml");
}

#[test]
fn beam_window_into_fixed() {
    run_beam("window_into_fixed.yaml");
}

#[test]
fn beam_partition_flatten() {
    run_beam("partition_flatten.yaml");
}

#[test]
fn beam_yaml_shapes() {
    run_beam("yaml_shapes.yaml");
}

fn refused(name: &str, at: &str, needle: &str) {
    let dir = sandbox();
    let file = format!("configs/beam/{name}");
    let out = rill(dir.path(), &["run", &file]);
    assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("{file}:{at}")), "{err}");
    assert!(err.contains(needle), "{err}");
    assert!(!Path::new(&dir.path().join("out")).exists());
}

#[test]
fn beam_with_deps_is_refused_clearly() {
    refused(
        "map_to_fields_with_deps.yaml",
        "24:9",
        "`dependencies` (pint>=0.20) is not supported",
    );
}

#[test]
fn beam_with_java_is_refused_clearly() {
    refused(
        "map_to_fields_with_java_deps.yaml",
        "13:9",
        "`language: java` is not supported",
    );
}

#[test]
fn files_output() {
    let dir = sandbox();
    let out = rill(dir.path(), &["run", "-q", "configs/files.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let input = read_jsonl(&root().join("configs/data/readings.jsonl"));
    let fits: Vec<&J> = input.iter().filter(|r| !r["temp_c"].is_string()).collect();
    // each columnar sink: the readings that fit the declared schema, read
    // back by rill, with the file they came from
    for (ty, glob) in [
        ("ReadFromParquet", "out/files/readings-*.parquet"),
        ("ReadFromAvro", "out/files/readings-*.avro"),
    ] {
        let o = run_yaml(
            dir.path(),
            &format!(
                "pipeline:\n  transforms:\n    - {{type: {ty}, name: r, config: {{path: '{glob}'}}}}\n    - {{type: WriteToJson, name: w, input: r, config: {{path: back.jsonl}}}}\n"
            ),
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let back = read_jsonl(&dir.path().join("back.jsonl"));
        assert_eq!(back.len(), fits.len(), "{ty}");
        for (b, r) in back.iter().zip(&fits) {
            assert_eq!(b["ts"], r["ts"], "{ty}");
            assert_eq!(b["temp_c"].as_f64(), r["temp_c"].as_f64(), "{ty}");
            assert_eq!(b["source"], "configs/data/readings.jsonl", "{ty}");
        }
    }
    let text = std::fs::read_to_string(dir.path().join("out/files/readings.txt")).unwrap();
    assert_eq!(text.lines().count(), input.len());
    let first = &input[0];
    assert_eq!(
        text.lines().next().unwrap(),
        format!(
            "{} {} {}",
            first["device"].as_str().unwrap(),
            first["ts"],
            first["temp_c"]
        )
    );
    let errors = read_jsonl(&dir.path().join("out/files/errors.jsonl"));
    assert_eq!(errors.len(), 2 * (input.len() - fits.len()));
    assert!(errors.iter().all(|e| {
        e["msg"]
            .as_str()
            .unwrap()
            .contains("field `temp_c` is str \"n/a\", but the column is float64")
    }));
}

#[test]
fn watched_folder_each_file_once() {
    let dir = sandbox();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let drop_file = |name: &str, rows: &[(i64, f64)]| {
        // written aside, renamed in whole
        let tmp = dir.path().join(format!("{name}.tmp"));
        let mut text = String::from("qty,price\n");
        for (q, p) in rows {
            text.push_str(&format!("{q},{p}\n"));
        }
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, inbox.join(name)).unwrap();
    };
    drop_file("a.csv", &[(1, 2.5), (2, 1.0)]);
    let out = dir.path().join("out/inbox.jsonl");
    let child = spawn(dir.path(), &["run", "-q", "configs/watch-folder.yaml"]);
    wait_lines(&out, 2);
    drop_file("b.csv", &[(3, 2.0)]);
    wait_lines(&out, 3);
    child.signal("-TERM");
    let o = child.wait(Duration::from_secs(20), "rill after SIGTERM");
    assert!(o.status.success(), "{}", stderr(&o));
    // a file that lands while the pipeline is down is read after it starts
    // again; the ones it read are not read again
    drop_file("c.csv", &[(4, 0.5)]);
    let child = spawn(dir.path(), &["run", "-q", "configs/watch-folder.yaml"]);
    wait_lines(&out, 4);
    std::thread::sleep(Duration::from_millis(1500));
    child.signal("-TERM");
    let o = child.wait(Duration::from_secs(20), "rill after SIGTERM");
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = read_jsonl(&out);
    let got: Vec<(String, f64)> = rows
        .iter()
        .map(|r| {
            (
                r["file"].as_str().unwrap().to_owned(),
                r["total"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("inbox/a.csv".to_owned(), 2.5),
            ("inbox/a.csv".to_owned(), 2.0),
            ("inbox/b.csv".to_owned(), 6.0),
            ("inbox/c.csv".to_owned(), 2.0),
        ]
    );
}

#[cfg(feature = "iceberg")]
#[test]
fn quickstart_landed_in_iceberg() {
    let dir = sandbox();
    for cfg in ["configs/quickstart.yaml", "configs/land-iceberg.yaml"] {
        let out = rill(dir.path(), &["run", "-q", cfg]);
        assert!(out.status.success(), "{cfg}: {}", stderr(&out));
    }
    let readings = read_jsonl(&dir.path().join("out/quickstart/readings.jsonl"));
    // rill reads the table back whole
    let o = run_yaml(
        dir.path(),
        "pipeline:\n  transforms:\n    - {type: ReadFromIceberg, name: r, config: {table: rill.readings}}\n    - {type: WriteToJson, name: w, input: r, config: {path: back.jsonl}}\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut back = read_jsonl(&dir.path().join("back.jsonl"));
    back.sort_by_key(|r| r["ts"].as_i64());
    assert_eq!(back, readings);
    // the README's DuckDB query, with the packages the README installs
    let python = python_env(&root().join("apps/rill/tests/iceberg/setup.sh"));
    let q = std::process::Command::new(python)
        .arg("configs/iceberg/query.py")
        .arg("iceberg/warehouse/rill/readings")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    let shown = String::from_utf8_lossy(&q.stdout);
    for dev in ["dev-a", "dev-b", "dev-c", "dev-d"] {
        let n = readings.iter().filter(|r| r["device"] == dev).count();
        assert!(
            shown
                .lines()
                .any(|l| l.contains(dev) && l.contains(&format!(" {n} "))),
            "{dev}: {n} readings in\n{shown}"
        );
    }
}
