//! Dead letters: every record is accounted for (records in = records out +
//! dead letters), dead letters carry the stage, the error and the attempt
//! count, retries rescue records that fail only at first, and a stage past
//! its error threshold fails the run.

use std::sync::Arc;

use rill_core::spec::{Machine, parse_str};
use rill_runtime::{RunError, RunOptions, run};

fn yaml(name: &str, transform: &str, error_handling: &str) -> String {
    format!(
        r#"
pipeline:
  name: {name}
  transforms:
    - {{type: Generate, name: gen, config: {{count: 1000, keys: 4, start_time: 0}}}}
    - type: {transform}
      name: work
      input: gen
      config:
        error_handling: {error_handling}
    - {{type: WriteToJson, name: good, input: work, config: {{path: good.jsonl}}}}
    - {{type: WriteToJson, name: bad, input: work.errors, config: {{path: bad.jsonl}}}}
"#
    )
}

async fn go(
    y: &str,
) -> (
    Result<(), RunError>,
    Vec<serde_json::Value>,
    Vec<serde_json::Value>,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = rill_nodes::registry();
    rill_nodes::testing::register_testing(&mut reg);
    let p =
        parse_str(y, "p.yaml", None, &reg, &Machine::detect()).unwrap_or_else(|e| panic!("{e}"));
    let r = run(Arc::new(p), RunOptions::in_dir(dir.path()))
        .await
        .map(|_| ());
    let read = |f: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.path().join(f))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    (r, read("good.jsonl"), read("bad.jsonl"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_is_accounted_for() {
    // 1 record in 10 divides by zero, every time: retried twice, then a
    // dead letter with 3 attempts
    let mapping = "MapToFields\n      config:\n        language: python\n        append: true\n        fields: {inv: \"100 // (id % 10)\"}\n        error_handling: {output: errors, retries: {max: 2, backoff: 1ms}}\n";
    let y = yaml("dl_math", "X", "{}").replace(
        "type: X\n      name: work\n      input: gen\n      config:\n        error_handling: {}\n",
        &format!("type: {mapping}      name: work\n      input: gen\n"),
    );
    let (r, good, bad) = go(&y).await;
    r.unwrap();
    assert_eq!(
        good.len() + bad.len(),
        1000,
        "records in = out + dead letters"
    );
    assert_eq!(bad.len(), 100);
    for d in &bad {
        assert_eq!(d["stage"], "work");
        assert_eq!(d["attempts"], 3);
        assert!(
            d["msg"].as_str().unwrap().contains("ZeroDivisionError"),
            "{d}"
        );
        assert_eq!(d["element"]["id"].as_i64().unwrap() % 10, 0);
    }

    // records that fail their first two tries: two retries rescue them all
    let y = yaml(
        "dl_rescued",
        "TestFlaky",
        "{output: errors, retries: {max: 2}}",
    )
    .replace(
        "config:\n        error_handling",
        "config:\n        every: 7\n        times: 2\n        error_handling",
    );
    let (r, good, bad) = go(&y).await;
    r.unwrap();
    assert_eq!((good.len(), bad.len()), (1000, 0));
    let mut ids: Vec<i64> = good.iter().map(|g| g["id"].as_i64().unwrap()).collect();
    // records that were not retried keep their order; a rescued record
    // comes after the rest of its message
    let steady: Vec<i64> = ids.iter().copied().filter(|i| i % 7 != 0).collect();
    assert!(steady.windows(2).all(|w| w[0] < w[1]), "order is kept");
    ids.sort_unstable();
    assert_eq!(ids, (0..1000).collect::<Vec<_>>(), "each record once");

    // one retry is not enough: dead letters with 2 attempts
    let y = yaml(
        "dl_short",
        "TestFlaky",
        "{output: errors, retries: {max: 1}}",
    )
    .replace(
        "config:\n        error_handling",
        "config:\n        every: 50\n        times: 2\n        error_handling",
    );
    let (r, good, bad) = go(&y).await;
    r.unwrap();
    assert_eq!((good.len(), bad.len()), (980, 20));
    assert!(
        bad.iter()
            .all(|d| d["attempts"] == 2 && d["stage"] == "work")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_past_its_error_threshold_fails_the_run() {
    let flaky = |name: &str, threshold: &str| {
        yaml(
            name,
            "TestFlaky",
            &format!("{{output: errors, threshold: {threshold}}}"),
        )
        .replace(
            "config:\n        error_handling",
            "config:\n        every: 10\n        times: 1\n        error_handling",
        )
    };
    // 10% fail: a 20% threshold lets the run finish
    let (r, good, bad) = go(&flaky("th_ok", "0.2")).await;
    r.unwrap();
    assert_eq!((good.len(), bad.len()), (900, 100));
    // a 5% threshold fails it at once, without restarts, naming the stage
    let (r, _, _) = go(&flaky("th_fail", "0.05")).await;
    match r {
        Err(RunError::StageFailed {
            stage,
            error,
            restarts,
            ..
        }) => {
            assert_eq!(stage, "work");
            assert_eq!(restarts, 0);
            assert!(error.contains("error threshold exceeded"), "{error}");
        }
        other => panic!("expected a failed run, got {other:?}"),
    }
}
