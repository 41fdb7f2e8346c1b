//! Stages that fail on purpose (the test-only `TestFault` node), driven by
//! YAML through the real binary.

use rill_testing::*;

fn pipeline(times: u64, mode: &str) -> String {
    format!(
        r#"
pipeline:
  name: faulty
  transforms:
    - type: Generate
      name: gen
      config: {{count: 500, start_time: 0}}
    - type: TestFault
      name: fault
      input: gen
      config: {{at: 260, times: {times}, mode: {mode}}}
      restart: {{max_restarts: 3, within: 60s, backoff: {{initial: 10ms, max: 40ms}}}}
    - type: WriteToJson
      name: sink
      input: fault
      config: {{path: out.jsonl}}
options:
  batch_size: 64
"#
    )
}

fn ids(dir: &std::path::Path) -> Vec<i64> {
    read_jsonl(&dir.join("out.jsonl"))
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

/// A chain of `transforms` (YAML list items) into `out.jsonl`.
fn chain_to_out(transforms: &str) -> String {
    format!(
        "pipeline:\n  type: chain\n  transforms:\n{}    - type: WriteToJson\n      config: {{path: out.jsonl}}\n",
        transforms.trim_start_matches('\n')
    )
}

/// The stderr of a run that failed (exit 1) because `stage` failed.
fn failed_in(out: &std::process::Output, stage: &str) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("stage `{stage}` failed")), "{err}");
    err
}

#[test]
fn a_stage_that_panics_once_is_restarted_and_the_run_completes() {
    for mode in ["panic", "error"] {
        let dir = sandbox();
        let out = run_yaml(dir.path(), &pipeline(1, mode));
        let err = stderr(&out);
        assert!(out.status.success(), "{mode}: {err}");
        assert!(
            err.contains("restarting"),
            "{mode}: the restart is logged: {err}"
        );
        // the summary counts one restart for `fault`
        let line = err
            .lines()
            .find(|l| l.trim_start().starts_with("fault "))
            .unwrap();
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[5], "1", "{mode}: restarts column in {line}");
        // every record arrived once, in order: the failed batch was replayed
        assert_eq!(ids(dir.path()), (0..500).collect::<Vec<_>>(), "{mode}");
    }
}

#[test]
fn a_stage_that_always_panics_fails_the_pipeline() {
    let dir = sandbox();
    let out = run_yaml(dir.path(), &pipeline(0, "panic"));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("pipeline `faulty` failed: stage `fault` failed after 3 restart(s)"),
        "{err}"
    );
    assert!(err.contains("deliberate panic at record 260"), "{err}");
    assert!(err.contains("restart history of `fault`"), "{err}");
    // what came before the faulty batch was delivered, nothing after it
    let got = ids(dir.path());
    assert!(
        got.len() < 260 && got.iter().enumerate().all(|(i, id)| *id == i as i64),
        "{got:?}"
    );
}

#[test]
fn a_record_that_always_fails_without_error_handling_stops_the_pipeline() {
    let dir = sandbox();
    let out = run_yaml(
        dir.path(),
        &chain_to_out(
            r#"
    - type: Create
      config: {elements: [{n: 1}, {n: 0}, {n: 2}]}
    - type: MapToFields
      name: invert
      config: {language: python, fields: {inv: "1 / n"}}
      restart: {max_restarts: 1, backoff: {initial: 10ms}}
"#,
        ),
    );
    let err = failed_in(&out, "invert");
    assert!(
        err.contains(r#"record {"n":0} failed: field `inv`: ZeroDivisionError"#),
        "{err}"
    );
}

#[test]
fn a_bad_line_without_error_handling_fails_the_run_and_loses_nothing_silently() {
    let dir = sandbox();
    let mut lines: Vec<String> = (0..10).map(|i| format!("{{\"n\": {i}}}")).collect();
    lines[6] = "{broken".into();
    std::fs::write(dir.path().join("in.jsonl"), lines.join("\n")).unwrap();
    let out = run_yaml(
        dir.path(),
        &chain_to_out(
            r#"
    - type: ReadFromJson
      name: read
      config: {path: in.jsonl}
      restart: {max_restarts: 2, backoff: {initial: 10ms}}
"#,
        ),
    );
    let err = failed_in(&out, "read");
    assert!(err.contains("in.jsonl:7: invalid JSON"), "{err}");

    // with error_handling the same file flows: 9 records out, 1 dead letter
    std::fs::write(
        dir.path().join("q.yaml"),
        r#"
pipeline:
  transforms:
    - type: ReadFromJson
      name: read
      config: {path: in.jsonl, error_handling: {output: bad}}
    - {type: WriteToJson, input: read, config: {path: out.jsonl}}
    - {type: WriteToJson, input: read.bad, config: {path: bad.jsonl}}
"#,
    )
    .unwrap();
    let out = rill(dir.path(), &["run", "q.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read_jsonl(&dir.path().join("out.jsonl")).len(), 9);
    let bad = read_jsonl(&dir.path().join("bad.jsonl"));
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0]["element"]["line"], 7);
    assert_eq!(bad[0]["element"]["text"], "{broken");
}
