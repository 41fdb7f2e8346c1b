//! Event time over unbounded inputs, end to end in a `rill run` process:
//! an idle input stops holding the watermark back after `idle_timeout`,
//! and `trigger.early` gives panes before the watermark closes a window.

use std::time::{Duration, Instant};

use rill_testing::*;

/// Generated records (unbounded, 500 a second, event time 2 ms apart from
/// 0) and a Zenoh key nobody writes to, flattened into a per-100 ms count.
fn idle_pipeline(idle_timeout: &str, quiet_key: &str) -> String {
    format!(
        r#"
pipeline:
  name: idle-input
  transforms:
    - {{type: Generate, name: ticks, config: {{rate: 500, start_time: 0}}}}
    - {{type: ReadFromZenoh, name: quiet, config: {{key: "{quiet_key}", format: json}}}}
    - {{type: Flatten, name: both, input: [ticks, quiet]}}
    - type: Combine
      name: per-window
      input: both
      windowing: {{type: fixed, size: 100ms}}
      config: {{group_by: [], combine: {{n: {{value: id, fn: count}}}}}}
    - {{type: WriteToJson, name: out, input: per-window, config: {{path: out.jsonl}}}}
options:
  watermark: {{idle_timeout: {idle_timeout}}}
  zenoh: {{mode: peer, listen: ["tcp/127.0.0.1:{}"]}}
"#,
        free_port()
    )
}

#[test]
fn an_idle_input_stops_holding_the_watermark_back() {
    // with a 1 s idle timeout, windows fire while the quiet input says
    // nothing at all
    let dir = tempfile::tempdir().unwrap();
    let key = format!("rill-test/quiet/{}", std::process::id());
    std::fs::write(dir.path().join("p.yaml"), idle_pipeline("1s", &key)).unwrap();
    let started = Instant::now();
    let run = spawn(dir.path(), &["run", "-q", "p.yaml"]);
    let out = dir.path().join("out.jsonl");
    wait_lines(&out, 3);
    let took = started.elapsed();
    run.signal("-TERM");
    let done = run.wait(Duration::from_secs(30), "the pipeline");
    assert!(done.status.success(), "{}", stderr(&done));
    let rows = read_jsonl(&out);
    assert!(rows.len() >= 3, "{rows:?}");
    // every closed window holds its 50 records, none missing or doubled
    for r in &rows {
        assert_eq!(r["n"].as_i64(), Some(50), "{r}");
    }

    // the control: the same pipeline with the quiet input never idle
    // enough gives nothing, however long the other one took and more
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), idle_pipeline("1h", &key)).unwrap();
    let run = spawn(dir.path(), &["run", "-q", "p.yaml"]);
    std::thread::sleep((took * 2).max(Duration::from_secs(3)));
    run.signal("-TERM");
    let done = run.wait(Duration::from_secs(30), "the control pipeline");
    assert!(done.status.success(), "{}", stderr(&done));
    assert_eq!(lines(&dir.path().join("out.jsonl")), 0);
}

#[test]
fn early_panes_come_before_the_window_closes() {
    // one window of an hour: without `early`, nothing would come out for
    // an hour; with it, a growing count every 300 ms of processing time
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        r#"
pipeline:
  name: early-panes
  transforms:
    - {type: Generate, name: ticks, config: {rate: 200, start_time: 0}}
    - type: Combine
      name: running
      input: ticks
      windowing: {type: fixed, size: 1h, trigger: {early: 300ms}}
      config: {group_by: [], combine: {n: {value: id, fn: count}}}
    - {type: WriteToJson, name: out, input: running, config: {path: out.jsonl}}
"#,
    )
    .unwrap();
    let run = spawn(dir.path(), &["run", "-q", "p.yaml"]);
    let out = dir.path().join("out.jsonl");
    wait_lines(&out, 3);
    run.signal("-TERM");
    let done = run.wait(Duration::from_secs(30), "the pipeline");
    assert!(done.status.success(), "{}", stderr(&done));
    let rows = read_jsonl(&out);
    assert!(rows.len() >= 3, "{rows:?}");
    let mut last = 0;
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["pane_timing"], "EARLY", "{r}");
        assert_eq!(r["pane_index"].as_u64(), Some(i as u64), "{r}");
        // panes accumulate: each counts every record so far
        let n = r["n"].as_i64().unwrap();
        assert!(n > last, "pane {i} counts {n} after {last}");
        last = n;
    }
}

#[test]
fn a_window_fired_in_parts_is_whole_downstream() {
    // 10,000 groups fire in parts of 4,096; the second Combine counts the
    // first one's rows in the same window: every part must reach it on
    // time (the watermark goes after the last part, not after the first)
    let dir = tempfile::tempdir().unwrap();
    let out = run_yaml(
        dir.path(),
        r#"
pipeline:
  name: parts
  transforms:
    - {type: Generate, name: src, config: {count: 20000, keys: 10000, start_time: 0}}
    - type: Combine
      name: per-key
      input: src
      windowing: {type: fixed, size: 1h}
      config: {group_by: key, combine: {n: {value: id, fn: count}}}
    - type: Combine
      name: keys
      input: per-key
      config: {group_by: [], combine: {groups: {value: n, fn: count}, records: {value: n, fn: sum}}}
    - {type: WriteToJson, name: out, input: keys, config: {path: out.jsonl}}
"#,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = read_jsonl(&dir.path().join("out.jsonl"));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["groups"].as_i64(), Some(10_000), "{rows:?}");
    assert_eq!(rows[0]["records"].as_i64(), Some(20_000), "{rows:?}");
}
