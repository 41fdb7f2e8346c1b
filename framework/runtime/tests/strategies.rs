//! Restart strategies restart exactly the stages they should, and a
//! restarted group resumes from its commits without loss or duplicates.

use std::sync::Arc;

use rill_core::spec::{Machine, parse_str};
use rill_runtime::{RunOptions, run};

fn pipeline(name: &str, strategy: &str) -> String {
    format!(
        r#"
pipeline:
  name: {name}
  transforms:
    - {{type: Generate, name: gen, config: {{count: 3000, keys: 3, start_time: 0}}}}
    - type: TestFault
      name: flaky
      input: gen
      config: {{at: 1500, times: 1}}
      restart: {{strategy: {strategy}, max_restarts: 3, within: 60s, backoff: {{initial: 10ms}}}}
    - {{type: TestCountPerKey, name: count, input: flaky}}
    - {{type: WriteToJson, name: sink, input: count, config: {{path: out.jsonl}}}}
options:
  batch_size: 100
"#
    )
}

async fn restarts(name: &str, strategy: &str) -> Vec<(String, u64)> {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = rill_nodes::registry();
    rill_nodes::testing::register_testing(&mut reg);
    let p = parse_str(
        &pipeline(name, strategy),
        "p.yaml",
        None,
        &reg,
        &Machine::detect(),
    )
    .unwrap();
    let report = run(Arc::new(p), RunOptions::in_dir(dir.path()))
        .await
        .unwrap_or_else(|e| panic!("{strategy}: {e}"));
    // every record once, in order, with its running count
    let text = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3000, "{strategy}");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["id"].as_u64(), Some(i as u64), "{strategy}");
        assert_eq!(r["count"].as_u64(), Some(i as u64 / 3 + 1), "{strategy}");
    }
    report
        .stages
        .iter()
        .map(|s| (s.stage.clone(), s.restarts))
        .collect()
}

fn of(v: &[(String, u64)], stage: &str) -> u64 {
    v.iter().find(|(s, _)| s == stage).unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_strategy_restarts_exactly_its_stages() {
    // restarts of gen, flaky, count and sink when `flaky` fails once
    for (name, strategy, want) in [
        ("s_one", "one_for_one", [0, 1, 0, 0]),
        ("s_rest", "rest_for_one", [0, 1, 1, 1]),
        ("s_all", "one_for_all", [1, 1, 1, 1]),
    ] {
        let r = restarts(name, strategy).await;
        let got = ["gen", "flaky", "count", "sink"].map(|s| of(&r, s));
        assert_eq!(got, want, "{strategy}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_that_crashes_every_n_records_restarts_each_time_and_loses_nothing() {
    let y = pipeline("s_every", "one_for_one")
        .replace("config: {at: 1500, times: 1}", "config: {every: 500}")
        .replace("max_restarts: 3", "max_restarts: 10");
    let dir = tempfile::tempdir().unwrap();
    let mut reg = rill_nodes::registry();
    rill_nodes::testing::register_testing(&mut reg);
    let p = parse_str(&y, "p.yaml", None, &reg, &Machine::detect()).unwrap();
    let report = run(Arc::new(p), RunOptions::in_dir(dir.path()))
        .await
        .unwrap();
    let flaky = report.stages.iter().find(|s| s.stage == "flaky").unwrap();
    assert_eq!(flaky.restarts, 6, "records 500, 1000, ..., 3000");
    let text = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 3000);
}
