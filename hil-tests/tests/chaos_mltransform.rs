//! SIGKILL chaos for `MLTransform` writing artifacts, in a `rill run`
//! process killed and started again: while it keeps its input (the source
//! still producing, nothing out yet) and while it emits what it learned
//! (part of the rows out). Every row must come out once, with the values
//! an uninterrupted run gives, and the artifacts must be the same.
//!
//! A kill that lands after the rows are out proves nothing, so the test
//! asserts at least two kills while keeping and one while emitting, each
//! seen from the sink's file at the moment of the kill.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rill_hil_tests::{chaos_rng, lines, one_process, read_jsonl, run_yaml, stderr};

const N: u64 = 120_000;

fn pipeline() -> String {
    format!(
        r#"
pipeline:
  name: ml-chaos
  transforms:
    - {{type: Generate, name: src, config: {{count: {N}, keys: 50, rate: 40000}}}}
    - type: MLTransform
      name: prep
      input: src
      config:
        write_artifact_location: art
        transforms:
          - {{type: ScaleTo01, config: {{columns: [value]}}}}
          - {{type: ComputeAndApplyVocabulary, config: {{columns: [key]}}}}
    - {{type: WriteToJson, name: out, input: prep, config: {{path: out.jsonl}}}}
"#
    )
}

fn rows_by_id(path: &Path) -> BTreeMap<i64, serde_json::Value> {
    let mut m = BTreeMap::new();
    for r in read_jsonl(path) {
        let id = r["id"].as_i64().unwrap();
        assert!(m.insert(id, r).is_none(), "id {id} came out twice");
    }
    m
}

#[test]
fn mltransform_survives_sigkill_while_keeping_and_emitting() {
    // the reference: one run, no faults
    let reference = tempfile::tempdir().unwrap();
    let out = run_yaml(reference.path(), &pipeline());
    assert!(out.status.success(), "{}", stderr(&out));
    let want = rows_by_id(&reference.path().join("out.jsonl"));
    assert_eq!(want.len() as u64, N);

    let (seed, mut rng) = chaos_rng();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), pipeline()).unwrap();
    let file = dir.path().join("out.jsonl");
    let mut p = one_process(dir.path(), "ml");
    let (mut keeping, mut emitting) = (0, 0);
    let limit = Instant::now() + Duration::from_secs(240);
    loop {
        assert!(Instant::now() < limit, "seed {seed}: no end\n{}", p.logs());
        p.start();
        let started = Instant::now();
        if keeping < 2 {
            // while the source still produces: nothing is out yet
            let at = Duration::from_millis(rng.u64(300..1200));
            while started.elapsed() < at && p.running() {
                std::thread::sleep(Duration::from_millis(5));
            }
            if p.running() && lines(&file) == 0 {
                p.kill();
                keeping += 1;
                continue;
            }
        } else if emitting < 2 {
            // as soon as rows come out, a little later
            while p.running() && lines(&file) == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
            std::thread::sleep(Duration::from_millis(rng.u64(0..150)));
            let n = lines(&file) as u64;
            if p.running() && n > 0 && n < N {
                p.kill();
                emitting += 1;
                continue;
            }
        }
        while p.running() {
            assert!(Instant::now() < limit, "seed {seed}: no end\n{}", p.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
        break;
    }
    assert_eq!(p.exit, Some(0), "seed {seed}:\n{}", p.logs());
    eprintln!("seed {seed}: {keeping} kills while keeping, {emitting} while emitting");
    assert!(keeping >= 2, "seed {seed}: {keeping} kills while keeping");
    assert!(
        emitting >= 1,
        "seed {seed}: {emitting} kills while emitting"
    );
    let got = rows_by_id(&file);
    assert_eq!(got.len() as u64, N, "seed {seed}");
    assert!(
        got == want,
        "seed {seed}: rows differ from the run without faults"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("art/mltransform.json")).unwrap(),
        std::fs::read_to_string(reference.path().join("art/mltransform.json")).unwrap(),
        "seed {seed}: other artifacts"
    );
}
