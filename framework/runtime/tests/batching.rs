//! Dynamic batching: the runtime gathers records from several messages
//! into one call, never more than `max_batch_size`, never holding a record
//! much past `max_batch_delay`, and loses none.

use std::sync::Arc;

use rill_core::spec::{self, Machine};
use rill_runtime::{RunOptions, run};

async fn run_batches(
    dir: &std::path::Path,
    gen_cfg: &str,
    batch_cfg: &str,
) -> Vec<(i64, i64, i64)> {
    run_rows(dir, gen_cfg, batch_cfg, "")
        .await
        .iter()
        .map(|v| {
            (
                v["id"].as_i64().unwrap(),
                v["batch"].as_i64().unwrap(),
                v["batch_size"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn run_rows(
    dir: &std::path::Path,
    gen_cfg: &str,
    batch_cfg: &str,
    resources: &str,
) -> Vec<serde_json::Value> {
    let mut registry = rill_nodes::registry();
    rill_nodes::testing::register_testing(&mut registry);
    let yaml = format!(
        r#"
pipeline:
  name: batching
  transforms:
    - {{type: Generate, name: gen, config: {gen_cfg}}}
    - {{type: TestBatch, name: batch, input: gen, config: {batch_cfg} {resources}}}
    - {{type: WriteToJson, name: sink, input: batch, config: {{path: out.jsonl}}}}
options:
  batch_size: 16
"#
    );
    let p = spec::parse_str(&yaml, "batching", None, &registry, &Machine::detect())
        .unwrap_or_else(|e| panic!("{e}"));
    run(Arc::new(p), RunOptions::in_dir(dir)).await.unwrap();
    std::fs::read_to_string(dir.join("out.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_gather_across_messages_up_to_the_size() {
    let dir = tempfile::tempdir().unwrap();
    // as fast as credits allow, 16 records per message: batches fill up
    let rows = run_batches(
        dir.path(),
        "{count: 2000, start_time: 0}",
        "{max_batch_size: 40, max_batch_delay: 50ms}",
    )
    .await;
    assert_eq!(rows.len(), 2000);
    let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(
        ids,
        (0..2000).collect::<Vec<_>>(),
        "lost, duplicated or reordered"
    );
    let max = rows.iter().map(|r| r.2).max().unwrap();
    assert!(
        max <= 40,
        "a batch of {max} records, above max_batch_size 40"
    );
    // messages hold 16: a batch above 16 was gathered from several
    assert!(
        max > 16,
        "no batch gathered more than one message (max {max})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_batch_leaves_after_its_delay() {
    let dir = tempfile::tempdir().unwrap();
    // 10 records over ~0.5 s; batches of up to 1000 would hold them all
    // until the end of input if the delay did not flush them
    let rows = run_batches(
        dir.path(),
        "{count: 10, rate: 20, start_time: 0}",
        "{max_batch_size: 1000, max_batch_delay: 60ms}",
    )
    .await;
    assert_eq!(rows.len(), 10);
    let batches: std::collections::BTreeSet<i64> = rows.iter().map(|r| r.1).collect();
    assert!(
        batches.len() >= 3,
        "all records waited for the end of input: {} batches, sizes {:?}",
        batches.len(),
        rows.iter().map(|r| r.2).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_with_cpu_threads_computes_on_its_own_pool() {
    let dir = tempfile::tempdir().unwrap();
    let rows = run_rows(
        dir.path(),
        "{count: 500, start_time: 0}",
        "{max_batch_size: 50, max_batch_delay: 5ms}",
        ", resources: {cpu_threads: 1}",
    )
    .await;
    assert_eq!(rows.len(), 500);
    for r in &rows {
        assert_eq!(
            r["thread"], "batch-0",
            "a call ran outside the stage's pool"
        );
    }
    // and without a budget, calls run on the runtime's threads
    let dir = tempfile::tempdir().unwrap();
    let rows = run_rows(
        dir.path(),
        "{count: 50, start_time: 0}",
        "{max_batch_size: 50, max_batch_delay: 5ms}",
        "",
    )
    .await;
    assert!(rows.iter().all(|r| r["thread"] != "batch-0"));
}
