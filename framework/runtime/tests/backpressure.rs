//! A producer far faster than its consumer: the consumer's queue and the
//! producer's log never exceed the input's queue size, and nothing is lost.

use std::sync::Arc;

use rill_core::spec::{self, Machine};
use rill_runtime::{RunOptions, run};
use rill_testing::int_column;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_producer_slow_consumer_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = rill_nodes::registry();
    rill_nodes::testing::register_testing(&mut registry);
    // Generate has no rate: it is as fast as credits allow. TestSlow takes
    // 0.2 ms per record, so the producer is far more than 10x faster.
    let yaml = r#"
pipeline:
  name: backpressure
  transforms:
    - {type: Generate, name: gen, config: {count: 3000, keys: 3, start_time: 0}}
    - type: TestSlow
      name: slow
      input: {stage: gen, queue: {size: 200}}
      config: {per_record: 200us}
    - {type: WriteToJson, name: sink, input: slow, config: {path: out.jsonl}}
options:
  batch_size: 50
"#;
    let p = spec::parse_str(yaml, "backpressure", None, &registry, &Machine::detect()).unwrap();
    let report = run(Arc::new(p), RunOptions::in_dir(dir.path()))
        .await
        .unwrap();
    let stage = |n: &str| report.stages.iter().find(|s| s.stage == n).unwrap().clone();
    let gen_ = stage("gen");
    let slow = stage("slow");
    assert_eq!(gen_.records_out, 3000);
    assert_eq!(slow.records_in, 3000);
    // the queue limit holds on both sides of the link
    assert!(
        slow.queue_high_water <= 200,
        "consumer queue reached {}",
        slow.queue_high_water
    );
    assert!(
        gen_.log_high_water <= 200,
        "producer held {} unacknowledged",
        gen_.log_high_water
    );
    assert!(
        slow.queue_high_water > 0,
        "the consumer never queued anything: the test did not test"
    );
    // and nothing was lost or reordered
    let ids = int_column(&dir.path().join("out.jsonl"), "id");
    assert_eq!(ids, (0..3000).collect::<Vec<_>>());
}
