//! MLTransform against scikit-learn on the same data: `tests/sklearn/
//! reference.py` (numpy + scikit-learn from PyPI, installed by
//! `tests/sklearn/setup.sh`) writes 3,000 rows and what StandardScaler,
//! MinMaxScaler, KBinsDiscretizer(quantile), CountVectorizer and
//! TfidfTransformer give for them; MLTransform must agree, within 1e-9
//! where the definitions are the same, and where Beam's differ (see
//! docs/mltransform.md), by Beam's definition applied to scikit-learn's
//! numbers.

use std::collections::HashMap;
use std::path::Path;

use rill_core::node::{Emitter, Node};
use rill_core::testkit::build_yaml;
use rill_core::window::END_OF_TIME;
use rill_core::{Record, Value, json};
use serde_json::Value as J;

fn reference() -> (tempfile::TempDir, Vec<Record>, J) {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sklearn");
    let dir = rill_testing::python_outputs(&here.join("setup.sh"), &here.join("reference.py"));
    let input = std::fs::read_to_string(dir.path().join("input.jsonl")).unwrap();
    let rows = input
        .lines()
        .map(|l| Record {
            fields: json::parse_json_line(l).unwrap(),
            ..Default::default()
        })
        .collect();
    let expected =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("expected.json")).unwrap())
            .unwrap();
    (dir, rows, expected)
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-9 * want.abs().max(1.0)
}

fn list(v: &Value) -> &[Value] {
    match v {
        Value::List(l) => l,
        other => panic!("a list, got {other:?}"),
    }
}

#[test]
fn mltransform_agrees_with_scikit_learn() {
    let (dir, input, want) = reference();
    let registry = rill_nodes::registry();
    let config = "
write_artifact_location: artifacts
transforms:
  - {type: ScaleToZScore, config: {columns: [a1]}}
  - {type: ScaleTo01, config: {columns: [a2]}}
  - {type: ScaleByMinMax, config: {columns: [a3], min_value: -1, max_value: 1}}
  - {type: Bucketize, config: {columns: [b], num_buckets: 5}}
  - {type: ComputeAndApplyVocabulary, config: {columns: [text], split_string_by_delimiter: ' '}}
  - {type: TFIDF, config: {columns: [text]}}
";
    let Node::Transform(mut t) = build_yaml(&registry, "MLTransform", config, dir.path()).unwrap()
    else {
        panic!("a transform")
    };
    let n = input.len();
    let mut out = Emitter::new();
    for chunk in input.chunks(256) {
        t.process(chunk.to_vec(), &mut out).unwrap();
    }
    t.on_watermark(END_OF_TIME, &mut out).unwrap();
    while t.pending() {
        t.resume(&mut out).unwrap();
    }
    assert!(out.failures().is_empty());
    let got = out.take().0;
    assert_eq!(got.len(), n);

    // the scalers: the same definitions (population variance)
    for (col, key) in [("a1", "zscore"), ("a2", "minmax01"), ("a3", "minmax_pm1")] {
        for (i, r) in got.iter().enumerate() {
            let g = r.get(col).unwrap().as_f64().unwrap();
            let w = want[key][i].as_f64().unwrap();
            assert!(close(g, w), "{col} row {i}: {g} vs scikit-learn's {w}");
        }
    }

    // quantile buckets: Beam's boundary k is the value of rank k*N/B (from
    // a sketch of rank error 0.01 * N); scikit-learn interpolates at the
    // same quantile. A row may differ only within that error of a boundary.
    let mut b: Vec<f64> = input
        .iter()
        .map(|r| r.get("b").unwrap().as_f64().unwrap())
        .collect();
    b.sort_by(f64::total_cmp);
    let slack = (0.01 * n as f64) as i64 + 2;
    let mut differ = 0;
    for (i, r) in got.iter().enumerate() {
        let g = r.get("b").unwrap().as_i64().unwrap();
        let w = want["buckets"][i].as_i64().unwrap();
        if g != w {
            differ += 1;
            assert_eq!((g - w).abs(), 1, "row {i}: bucket {g} vs {w}");
            let x = input[i].get("b").unwrap().as_f64().unwrap();
            let rank = b.partition_point(|v| *v < x) as i64;
            let edge = (g.max(w) * n as i64) / 5;
            assert!(
                (rank - edge).abs() <= slack,
                "row {i} (rank {rank}) is {} ranks from boundary rank {edge}",
                (rank - edge).abs()
            );
        }
    }
    assert!(differ <= n / 50, "{differ} rows in other buckets");

    // the vocabulary: by scikit-learn's total counts, falling, ties in
    // falling byte order (scikit-learn's own order is alphabetical)
    let counts: HashMap<String, i64> = want["token_counts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_i64().unwrap()))
        .collect();
    let art: J = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("artifacts/mltransform.json")).unwrap(),
    )
    .unwrap();
    let vocab: Vec<String> = art["learned"][4]["text"]["vocabulary"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(vocab.len(), counts.len());
    for pair in vocab.windows(2) {
        let (x, y) = (counts[&pair[0]], counts[&pair[1]]);
        assert!(
            x > y || (x == y && pair[0].as_bytes() > pair[1].as_bytes()),
            "{pair:?}: {x}, {y}"
        );
    }
    // each row's ids name its tokens
    for (i, r) in got.iter().enumerate() {
        let ids: Vec<&str> = list(r.get("text").unwrap())
            .iter()
            .map(|v| vocab[v.as_i64().unwrap() as usize].as_str())
            .collect();
        let words: Vec<&str> = input[i]
            .get("text")
            .unwrap()
            .as_str()
            .unwrap()
            .split(' ')
            .collect();
        assert_eq!(ids, words, "row {i}");
    }

    // TF-IDF: scikit-learn's smooth idf is Beam's; Beam's tf is the count
    // over the row's length and scikit-learn's the count, unnormalised
    // here (norm=None): Beam's weight = scikit-learn's / row length
    for (i, r) in got.iter().enumerate() {
        let len = input[i]
            .get("text")
            .unwrap()
            .as_str()
            .unwrap()
            .split(' ')
            .count() as f64;
        let index = list(r.get("text_vocab_index").unwrap());
        let weight = list(r.get("text_tfidf_weight").unwrap());
        let sk = want["tfidf_raw"][i].as_object().unwrap();
        assert_eq!(index.len(), sk.len(), "row {i}: distinct terms");
        for (id, w) in index.iter().zip(weight) {
            let token = &vocab[id.as_i64().unwrap() as usize];
            let g = w.as_f64().unwrap();
            let s = sk[token].as_f64().unwrap() / len;
            assert!(close(g, s), "row {i} `{token}`: {g} vs scikit-learn's {s}");
        }
    }
}
