//! SIGKILL chaos for the sinks that write parts: `WriteToParquet`,
//! `WriteToAvro` and `WriteToIceberg`.
//!
//! `Generate` (rate-limited, so the stream lasts a few seconds) feeds each
//! sink in a process of its own (`rill run --stages`), and a driver
//! SIGKILLs the sink's process every 0.3–1.2 s and starts it again. In the
//! end every id must be in the output once:
//! - Parquet and Avro: the parts, read back by `ReadFromParquet` /
//!   `ReadFromAvro` (which are checked against pyarrow and fastavro in
//!   `apps/rill/tests/columnar.rs`), in order;
//! - Iceberg: the table, read by pyiceberg and by DuckDB's `iceberg_scan`
//!   (tests/iceberg/setup.sh of apps/rill); and no data file of a killed
//!   attempt is left in the table's folder.
//!
//! A kill after the sink wrote its last part proves nothing: each case
//! asserts that at least three kills landed while fewer parts (or data
//! files) were out than at the end.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rill_hil_tests::{Proc, chaos_rng, process_per_stage, read_jsonl, run_yaml, stderr};

const N: u64 = 60_000;
const RATE: u64 = 12_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Parquet,
    Avro,
    Iceberg,
}

fn pipeline(kind: Kind) -> String {
    let sink = match kind {
        Kind::Parquet => {
            "{type: WriteToParquet, name: write, input: gen, config: {path: out/ev.parquet, part_records: 2000, row_group_records: 500}}"
        }
        Kind::Avro => {
            "{type: WriteToAvro, name: write, input: gen, config: {path: out/ev.avro, part_records: 2000}}"
        }
        Kind::Iceberg => {
            "{type: WriteToIceberg, name: write, input: gen, config: {table: db.events, part_records: 2000, triggering_frequency_seconds: 0.5}}"
        }
    };
    format!(
        r#"pipeline:
  name: sinks
  transforms:
    - {{type: Generate, name: gen, config: {{count: {N}, keys: 13, rate: {RATE}, seed: 5}}}}
    - {sink}
"#
    )
}

/// How many parts (data files) the sink has out now.
fn parts(dir: &Path, kind: Kind) -> usize {
    let (folder, ext) = match kind {
        Kind::Parquet => (dir.join("out"), ".parquet"),
        Kind::Avro => (dir.join("out"), ".avro"),
        Kind::Iceberg => (dir.join("iceberg/warehouse/db/events/data"), ".parquet"),
    };
    std::fs::read_dir(folder)
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    !n.starts_with('.') && n.ends_with(ext)
                })
                .count()
        })
        .unwrap_or(0)
}

struct Case {
    kind: Kind,
    dir: PathBuf,
    procs: Vec<Proc>,
    next_kill: Option<Instant>,
    /// Parts out at each kill.
    kills: Vec<usize>,
}

fn iceberg_python() -> PathBuf {
    rill_hil_tests::python_env(&rill_hil_tests::root().join("apps/rill/tests/iceberg/setup.sh"))
}

/// The ids the case's output holds, in the order read.
fn ids(case: &Case) -> Vec<u64> {
    let dir = &case.dir;
    match case.kind {
        Kind::Parquet | Kind::Avro => {
            let (ty, glob) = if case.kind == Kind::Parquet {
                ("ReadFromParquet", "out/ev-*.parquet")
            } else {
                ("ReadFromAvro", "out/ev-*.avro")
            };
            let o = run_yaml(
                dir,
                &format!(
                    "pipeline:\n  name: check\n  transforms:\n    - {{type: {ty}, name: r, config: {{path: '{glob}'}}}}\n    - {{type: WriteToJson, name: w, input: r, config: {{path: check.jsonl}}}}\n"
                ),
            );
            assert!(o.status.success(), "{}", stderr(&o));
            read_jsonl(&dir.join("check.jsonl"))
                .iter()
                .map(|r| r["id"].as_u64().unwrap())
                .collect()
        }
        Kind::Iceberg => unreachable!("read by pyiceberg and DuckDB"),
    }
}

#[test]
fn part_sinks_survive_sigkill() {
    let (seed, mut rng) = chaos_rng();
    let tmp = tempfile::tempdir().unwrap();
    let mut cases: Vec<Case> = [Kind::Parquet, Kind::Avro, Kind::Iceberg]
        .into_iter()
        .map(|kind| {
            let dir = tmp.path().join(format!("{kind:?}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("p.yaml"), pipeline(kind)).unwrap();
            let procs = process_per_stage(&dir, &["gen", "write"]);
            Case {
                kind,
                dir,
                procs,
                next_kill: None,
                kills: Vec::new(),
            }
        })
        .collect();
    let python = iceberg_python();
    let started = Instant::now();
    for c in &mut cases {
        for p in &mut c.procs {
            p.start();
        }
    }
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let mut all_done = true;
        for c in &mut cases {
            for p in &mut c.procs {
                if p.running() {
                    all_done = false;
                } else if let Some(code) = p.exit
                    && code != 0
                {
                    panic!(
                        "{:?}: `{}` exited with {code} (seed {seed})\n{}",
                        c.kind,
                        p.name,
                        p.logs()
                    );
                }
            }
            // the sink's process is killed while the generator still runs
            if c.kills.len() >= 5 || !c.procs[0].running() || !c.procs[1].running() {
                continue;
            }
            match c.next_kill {
                None => {
                    c.next_kill = Some(Instant::now() + Duration::from_millis(rng.u64(300..1200)));
                }
                Some(t) if Instant::now() >= t => {
                    c.kills.push(parts(&c.dir, c.kind));
                    c.procs[1].kill();
                    c.procs[1].start();
                    c.next_kill = None;
                }
                _ => {}
            }
        }
        if all_done {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "not finished in 300 s (seed {seed})"
        );
    }
    let mut failed = Vec::new();
    for c in &cases {
        let end = parts(&c.dir, c.kind);
        let mid = c.kills.iter().filter(|k| **k < end).count();
        eprintln!(
            "{:?}: parts out at each kill {:?}, {end} at the end",
            c.kind, c.kills
        );
        if mid < 3 {
            failed.push(format!(
                "{:?}: only {mid} kills landed before the last part ({:?} of {end})",
                c.kind, c.kills
            ));
        }
        if c.kind == Kind::Iceberg {
            let script = rill_hil_tests::root().join("apps/rill/tests/iceberg/tables.py");
            let ran = Command::new(&python)
                .arg(&script)
                .args(["read"])
                .arg(&c.dir)
                .arg("db.events")
                .output()
                .unwrap();
            assert!(
                ran.status.success(),
                "{}",
                String::from_utf8_lossy(&ran.stderr)
            );
            let got: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(c.dir.join("read.json")).unwrap())
                    .unwrap();
            for tool in ["pyiceberg", "duckdb"] {
                let ids: Vec<u64> = got[tool]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["id"].as_u64().unwrap())
                    .collect();
                if ids != (0..N).collect::<Vec<_>>() {
                    failed.push(format!(
                        "Iceberg read by {tool}: {} rows, {} distinct (kills at {:?}); snapshots {}",
                        ids.len(),
                        ids.iter().collect::<std::collections::BTreeSet<_>>().len(),
                        c.kills,
                        got["snapshots"]
                    ));
                }
            }
            if got["unreferenced"] != serde_json::json!([]) {
                failed.push(format!(
                    "Iceberg: data files no snapshot names are left: {}",
                    got["unreferenced"]
                ));
            }
        } else {
            let ids = ids(c);
            if ids != (0..N).collect::<Vec<_>>() {
                failed.push(format!(
                    "{:?}: {} rows read back, {} distinct, expected 0..{N} in order",
                    c.kind,
                    ids.len(),
                    ids.iter().collect::<std::collections::BTreeSet<_>>().len()
                ));
            }
        }
    }
    assert!(failed.is_empty(), "seed {seed}:\n{}", failed.join("\n"));
}
