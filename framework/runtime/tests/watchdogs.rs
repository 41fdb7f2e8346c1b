//! Watchdogs: a stage that hangs is stopped and restarted after its
//! timeout (and the run still delivers every record once); a slow start
//! under the startup timeout is not a hang; a start-up past it, or one that
//! panics every time, fails the run with the stage named.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rill_core::spec::{Machine, parse_str};
use rill_runtime::{RunError, RunOptions, RunReport, run};

async fn go(name: &str, middle: &str) -> (Result<RunReport, RunError>, usize, Duration) {
    let y = format!(
        r#"
pipeline:
  name: {name}
  transforms:
    - {{type: Generate, name: gen, config: {{count: 2000, start_time: 0}}}}
    - {middle}
    - {{type: WriteToJson, name: sink, input: mid, config: {{path: out.jsonl}}}}
options:
  batch_size: 100
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let mut reg = rill_nodes::registry();
    rill_nodes::testing::register_testing(&mut reg);
    let p =
        parse_str(&y, "p.yaml", None, &reg, &Machine::detect()).unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    let r = run(Arc::new(p), RunOptions::in_dir(dir.path())).await;
    let elapsed = t.elapsed();
    let n = std::fs::read_to_string(dir.path().join("out.jsonl"))
        .map(|t| {
            let ids: Vec<u64> = t
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                        .as_u64()
                        .unwrap()
                })
                .collect();
            assert!(
                ids.iter().enumerate().all(|(i, id)| *id == i as u64),
                "each record once, in order"
            );
            ids.len()
        })
        .unwrap_or(0);
    (r, n, elapsed)
}

fn stage<'a>(r: &'a RunReport, name: &str) -> &'a rill_runtime::StageSnapshot {
    r.stages.iter().find(|s| s.stage == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_stage_is_restarted_after_its_timeout() {
    let (r, n, elapsed) = go(
        "wd_hang",
        "{type: TestHang, name: mid, input: gen, config: {at: 700, for: 3s}, timeout: 300ms, restart: {backoff: {initial: 10ms}}}",
    )
    .await;
    let r = r.unwrap();
    assert_eq!(n, 2000);
    let mid = stage(&r, "mid");
    assert_eq!((mid.timeouts, mid.restarts), (1, 1), "{mid:?}");
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_start_under_its_startup_timeout_is_not_a_hang() {
    let (r, n, elapsed) = go(
        "wd_slow",
        "{type: TestSlowStart, name: mid, input: gen, config: {delay: 700ms}, timeout: {call: 200ms, startup: 5s}}",
    )
    .await;
    let r = r.unwrap();
    assert_eq!(n, 2000);
    let mid = stage(&r, "mid");
    assert_eq!((mid.timeouts, mid.restarts), (0, 0));
    assert!(elapsed >= Duration::from_millis(700));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_past_its_startup_timeout_or_a_panicking_one_fails_the_run() {
    let (r, _, _) = go(
        "wd_start",
        "{type: TestSlowStart, name: mid, input: gen, config: {delay: 2s}, timeout: {startup: 200ms}}",
    )
    .await;
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains("stage `mid`") && e.contains("start-up timed out"),
        "{e}"
    );

    let (r, _, _) = go(
        "wd_panic",
        "{type: TestSlowStart, name: mid, input: gen, config: {panic: true}}",
    )
    .await;
    let e = r.unwrap_err().to_string();
    assert!(e.contains("stage `mid`") && e.contains("panicked"), "{e}");
}

/// A retry is a call like any other: a retry that hangs is stopped by the
/// stage's call timeout, the stage restarts, and every record still comes
/// out once (the record is tried again after the restart and passes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_retry_is_stopped_by_the_call_timeout() {
    let (r, n, elapsed) = go(
        "retryhang",
        "{type: TestFlaky, name: mid, input: gen, config: {every: 700, times: 1, stall_on_retry: 3s, error_handling: {output: errors, retries: {max: 2}}}, timeout: 300ms, restart: {backoff: {initial: 10ms}}}\n    - {type: WriteToJson, name: errs, input: mid.errors, config: {path: errors.jsonl}}",
    )
    .await;
    let r = r.unwrap();
    let mid = stage(&r, "mid");
    // records 0, 700 and 1400 each fail once and hang in their retry
    assert_eq!((mid.timeouts, mid.restarts), (3, 3), "{mid:?}");
    assert_eq!(
        mid.errors, 0,
        "no dead letter: each passed after the restart"
    );
    assert_eq!(n, 2000);
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
}
