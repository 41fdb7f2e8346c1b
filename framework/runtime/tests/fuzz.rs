//! Fuzzing the three parsers that take outside bytes: the wire decoder
//! (what any Zenoh peer can publish), the JSON record reader (a line of a
//! file, or a Zenoh payload) and the pipeline YAML loader. Each starts from
//! valid inputs and mutates them (flipped, inserted, deleted and duplicated
//! bytes, spliced pieces, deep nesting), and asserts that the parser
//! returns, an error or a value, without a panic, and that what it accepts
//! it can encode again.
//!
//! CI runs a bounded number of cases (`RILL_FUZZ_CASES`, default 3,000 per
//! parser); by hand: `RILL_FUZZ_CASES=200000 cargo test --release -p
//! rill-runtime --test fuzz -- --nocapture`.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rill_core::codec;
use rill_core::wire::{self, DataHead, DataMsg, ProducerId};
use rill_core::{Record, Value};

fn cases() -> u32 {
    std::env::var("RILL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Duplicate(usize, usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    proptest::collection::vec(
        prop_oneof![
            3 => (any::<usize>(), 1u8..=255).prop_map(|(i, b)| Edit::Flip(i, b)),
            2 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
                .prop_map(|(i, v)| Edit::Insert(i, v)),
            2 => (any::<usize>(), 1usize..16).prop_map(|(i, n)| Edit::Delete(i, n)),
            1 => (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Duplicate(i, n)),
        ],
        0..6,
    )
}

fn apply(mut b: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = b.len().max(1);
        match e {
            Edit::Flip(i, x) if !b.is_empty() => b[i % len] ^= x,
            Edit::Insert(i, v) => {
                let at = i % (b.len() + 1);
                b.splice(at..at, v.iter().copied());
            }
            Edit::Delete(i, n) if !b.is_empty() => {
                let at = i % len;
                let end = (at + n).min(b.len());
                b.drain(at..end);
            }
            Edit::Duplicate(i, n) if !b.is_empty() => {
                let at = i % len;
                let end = (at + n).min(b.len());
                let piece = b[at..end].to_vec();
                b.splice(end..end, piece);
            }
            _ => {}
        }
    }
    b
}

fn record(i: i64) -> Record {
    let mut nested = Value::Int(i);
    for _ in 0..(i % 5) {
        nested = Value::List(vec![nested, Value::String("x".into())]);
    }
    rill_core::record! {"id" => i, "name" => "a", "x" => 1.5, "ok" => true, "n" => nested}
        .with_key(format!("k{i}"))
}

fn seeds_wire() -> Vec<Vec<u8>> {
    let producer = ProducerId {
        stage: "gen".into(),
        output: Some("errors".into()),
        epoch: 42,
    };
    vec![
        wire::encode_data(&DataMsg::Batch {
            producer: producer.clone(),
            first_seq: 7,
            records: (0..4).map(record).collect(),
        })
        .unwrap(),
        wire::encode_data(&DataMsg::End {
            producer: producer.clone(),
            seq: 9,
        })
        .unwrap(),
        wire::encode_data(&DataMsg::Gone {
            producer,
            consumer: "sink".into(),
            from: 0,
            low: 100,
        })
        .unwrap(),
    ]
}

#[test]
fn fuzz_the_wire_decoder() {
    let seeds = seeds_wire();
    let ok = std::cell::Cell::new(0u64);
    runner()
        .run(&(0..seeds.len(), edits()), |(s, e)| {
            let bytes = apply(seeds[s].clone(), &e);
            if let Ok(DataHead::Batch {
                records_at, count, ..
            }) = wire::decode_data_head(&bytes)
                && let Ok(rs) = wire::decode_records(&bytes, records_at)
            {
                ok.set(ok.get() + 1);
                prop_assert_eq!(rs.len() as u64, count);
                // what decodes encodes again
                codec::encode(&rs).unwrap();
            }
            let _ = wire::decode_data(&bytes);
            let _ = codec::decode::<Vec<Record>>(&bytes);
            Ok(())
        })
        .unwrap();
    eprintln!("wire: {} cases, {} decoded to records", cases(), ok.get());
}

#[test]
fn fuzz_the_json_record_reader() {
    let seeds: Vec<Vec<u8>> = [
        r#"{"a": 1, "b": [1, 2.5, "x", null, true], "c": {"d": {"e": []}}}"#,
        r#"{"t": {"dtype": "f32", "shape": [2, 2], "data": [1, 2, 3, 4]}, "b": {"$bytes": "AAE="}}"#,
        r#"{"s": "\u00e9\n\"q\"", "n": -9223372036854775808, "f": 1e308}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let ok = std::cell::Cell::new(0u64);
    runner()
        .run(&(0..seeds.len(), edits()), |(s, e)| {
            let bytes = apply(seeds[s].clone(), &e);
            if let Ok(f) = rill_core::json::parse_json_bytes(&bytes) {
                ok.set(ok.get() + 1);
                // what is read writes back as a line that reads the same
                let line = rill_core::json::record_to_json_line(&Record::new(f.clone()));
                prop_assert_eq!(rill_core::json::parse_json_line(&line).unwrap(), f);
            }
            Ok(())
        })
        .unwrap();
    eprintln!("json: {} cases, {} read as records", cases(), ok.get());
    // nesting past the limit is an error, not a stack overflow
    let deep = format!("{{\"a\": {}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(rill_core::json::parse_json_line(&deep).is_err());
}

#[test]
fn fuzz_the_pipeline_loader() {
    let seeds: Vec<Vec<u8>> = [
        "pipeline:\n  name: p\n  transforms:\n    - type: Create\n      name: c\n      config: {elements: [1, {a: 2}]}\n    - type: MapToFields\n      input: c\n      config: {language: python, fields: {x: \"a + 1\"}, error_handling: {output: e}}\n    - {type: WriteToJson, input: MapToFields.e, config: {path: e.jsonl}}\n    - {type: LogForTesting, input: MapToFields}\noptions: {delivery: at_least_once}\n",
        "pipeline:\n  type: chain\n  transforms:\n    - {type: Generate, config: {count: 5, rate: 10}}\n    - {type: Filter, config: {language: python, keep: \"id > 2\"}}\n    - {type: WriteToCsv, config: {path: o.csv}}\nbase: &b {x: [1, 2, 3]}\nother: *b\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let registry = rill_nodes::registry();
    let machine = rill_core::spec::Machine::detect();
    let ok = std::cell::Cell::new(0u64);
    runner()
        .run(&(0..seeds.len(), edits()), |(s, e)| {
            let bytes = apply(seeds[s].clone(), &e);
            let text = String::from_utf8_lossy(&bytes);
            match rill_core::spec::parse_str(&text, "p", None, &registry, &machine) {
                Ok(_) => ok.set(ok.get() + 1),
                // every error says where
                Err(e) => prop_assert!(
                    e.to_string().contains(':'),
                    "an error without a position: {e}"
                ),
            }
            Ok(())
        })
        .unwrap();
    eprintln!("yaml: {} cases, {} loaded", cases(), ok.get());
}
