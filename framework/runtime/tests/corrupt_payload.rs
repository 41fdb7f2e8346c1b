//! A stage reads only the head of a data message in Zenoh's callback and
//! decodes the records on its own thread. A message whose head is sound but
//! whose records do not decode is a producer bug: the stage fails (and is
//! restarted) instead of skipping it, and once its restarts are spent the run
//! fails naming the stage, the input and the sequence number.

use std::sync::Arc;
use std::time::Duration;

use rill_core::spec::{Machine, ZenohOptions, parse_str};
use rill_core::wire::{DataMsg, ProducerId, encode_data};
use rill_runtime::{RunError, RunOptions, run, transport};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A data message from `gen` that says it holds two records, followed by
/// bytes that are not records.
fn corrupt_batch() -> Vec<u8> {
    let mut bytes = encode_data(&DataMsg::Batch {
        producer: ProducerId {
            stage: "gen".into(),
            output: None,
            epoch: 7,
        },
        first_seq: 0,
        records: vec![],
    })
    .unwrap();
    // the last byte is the records' count (0): say 2, then garbage
    assert_eq!(bytes.pop(), Some(0));
    bytes.extend_from_slice(&[2, 0xff, 0xff, 0xff, 0xff]);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_do_not_decode_fail_the_stage_by_name() {
    let yaml = r#"
pipeline:
  name: corrupt
  transforms:
    - {type: Generate, name: gen, config: {count: 10}}
    - {type: WriteToJson, name: sink, input: gen, config: {path: out.jsonl},
       restart: {max_restarts: 2, within: 60s, backoff: {initial: 10ms}}}
options:
  delivery: best_effort
"#;
    let dir = tempfile::tempdir().unwrap();
    let p = parse_str(
        yaml,
        "corrupt.yaml",
        None,
        &rill_nodes::registry(),
        &Machine::detect(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let endpoint = format!("tcp/127.0.0.1:{}", free_port());
    // only the sink runs here; the test plays the part of `gen`
    let opts = RunOptions {
        stages: Some(vec!["sink".into()]),
        listen: Some(vec![endpoint.clone()]),
        connect: Some(vec![]),
        base_dir: Some(dir.path().to_owned()),
        ..Default::default()
    };
    let running = tokio::spawn(run(Arc::new(p), opts));
    let session = transport::open(&ZenohOptions {
        listen: vec![],
        connect: vec![endpoint],
        ..Default::default()
    })
    .await
    .unwrap();
    let publisher = session
        .declare_publisher("rill/corrupt/gen/out")
        .await
        .unwrap();
    let payload = corrupt_batch();
    // every incarnation of the sink gets the bad message again, until its
    // restarts are spent
    let result = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            publisher.put(payload.clone()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            if running.is_finished() {
                return running.await.unwrap();
            }
        }
    })
    .await
    .expect("the run fails within 30 s");
    match result {
        Err(e @ RunError::StageFailed { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("stage `sink`"), "{msg}");
            assert!(msg.contains("input `gen`"), "{msg}");
            assert!(msg.contains("cannot be decoded"), "{msg}");
        }
        other => panic!("expected the sink to fail, got {other:?}"),
    }
    // nothing was written from the bad message
    let out = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap_or_default();
    assert_eq!(out, "");
}
