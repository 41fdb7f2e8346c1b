//! A stage reads only the head of a data message in Zenoh's callback and
//! decodes the records on its own thread. A message whose head is sound but
//! whose records do not decode is a producer bug: the stage fails (and is
//! restarted) instead of skipping it, and once its restarts are spent the run
//! fails naming the stage, the input and the sequence number.
//!
//! A well-formed batch from an epoch no live producer announces (a forged
//! one) is dropped and counted: it resets nothing, and the real producer's
//! records flow.

use std::sync::Arc;
use std::time::Duration;

use rill_core::spec::{Machine, ZenohOptions, parse_str};
use rill_core::wire::{DataMsg, ProducerId, encode_data};
use rill_runtime::{RunError, RunOptions, run, transport};
use rill_testing::{free_port, int_column};

/// A data message from `gen` that says it holds two records, followed by
/// bytes that are not records.
fn corrupt_batch() -> Vec<u8> {
    let mut bytes = encode_data(&DataMsg::Batch {
        producer: ProducerId::main("gen", 7),
        first_seq: 0,
        records: vec![],
    })
    .unwrap();
    // the last byte is the records' count (0): say 2, then garbage
    assert_eq!(bytes.pop(), Some(0));
    bytes.extend_from_slice(&[2, 0xff, 0xff, 0xff, 0xff]);
    bytes
}

/// The sink of `yaml` alone in this process (the test plays the part of
/// `gen`), and a session of the test's connected to it.
async fn sink_alone(
    yaml: &str,
    dir: &std::path::Path,
) -> (rill_core::spec::Pipeline, RunOptions, zenoh::Session) {
    let p = parse_str(
        yaml,
        "p.yaml",
        None,
        &rill_nodes::registry(),
        &Machine::detect(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let endpoint = format!("tcp/127.0.0.1:{}", free_port());
    let opts = RunOptions {
        stages: Some(vec!["sink".into()]),
        listen: Some(vec![endpoint.clone()]),
        connect: Some(vec![]),
        base_dir: Some(dir.to_owned()),
        ..Default::default()
    };
    let session = transport::open(&ZenohOptions {
        listen: vec![],
        connect: vec![endpoint],
        ..Default::default()
    })
    .await
    .unwrap();
    (p, opts, session)
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
    let (p, opts, session) = sink_alone(yaml, dir.path()).await;
    let running = tokio::spawn(run(Arc::new(p), opts));
    // a producer announces its epoch with its liveliness token
    let _token = session
        .liveliness()
        .declare_token("rill/corrupt/gen/alive/0000000000000007/test")
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

fn batch(epoch: u64, first_seq: u64, ids: std::ops::Range<i64>) -> Vec<u8> {
    encode_data(&DataMsg::Batch {
        producer: ProducerId::main("gen", epoch),
        first_seq,
        records: ids.map(|i| rill_core::record! {"id" => i}).collect(),
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_from_an_unannounced_epoch_is_dropped_and_counted() {
    let yaml = r#"
pipeline:
  name: forged
  transforms:
    - {type: Generate, name: gen, config: {count: 10}}
    - {type: WriteToJson, name: sink, input: gen, config: {path: out.jsonl}}
"#;
    let dir = tempfile::tempdir().unwrap();
    let (p, opts, session) = sink_alone(yaml, dir.path()).await;
    let run = rill_runtime::Run::start(Arc::new(p), opts).await.unwrap();
    let metrics = run.metrics()[0].clone();
    let publisher = session
        .declare_publisher("rill/forged/gen/out")
        .await
        .unwrap();
    // the real producer (epoch 7) announces itself; the forger (epoch 99)
    // cannot make the sink take its batch, or reset its position
    let _token = session
        .liveliness()
        .declare_token("rill/forged/gen/alive/0000000000000007/real")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while metrics.foreign.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the forged batch was not seen"
        );
        publisher.put(batch(99, 0, 1000..1003)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publisher.put(batch(7, 0, 0..5)).await.unwrap();
    publisher.put(batch(99, 5, 1005..1010)).await.unwrap();
    publisher.put(batch(7, 5, 5..10)).await.unwrap();
    let end = encode_data(&DataMsg::End {
        producer: ProducerId::main("gen", 7),
        seq: 10,
    })
    .unwrap();
    // the producer confirms the sink's acknowledgement of its end, as a
    // real one does once it holds it
    let _ended = session
        .liveliness()
        .declare_token("rill/forged/gen/ended/sink")
        .await
        .unwrap();
    let waited = run.wait();
    tokio::pin!(waited);
    let report = loop {
        publisher.put(end.clone()).await.unwrap();
        tokio::select! {
            r = &mut waited => break r,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    };
    report.unwrap();
    let ids = int_column(&dir.path().join("out.jsonl"), "id");
    assert_eq!(
        ids,
        (0..10).collect::<Vec<_>>(),
        "only the real records, once, in order"
    );
    assert!(metrics.foreign.load(std::sync::atomic::Ordering::Relaxed) >= 2);
}
