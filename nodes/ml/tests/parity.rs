//! Weights made elsewhere give the predictions of the framework that made
//! them: `tests/parity/make_weights.py` (numpy + safetensors from PyPI,
//! installed by `tests/parity/setup.sh`) writes PyTorch-layout weights and
//! the outputs numpy computes; RunInference must match them within 1e-4.

use std::path::{Path, PathBuf};

use rill_core::{Record, Value, json};
use rill_ml::testing;

fn python_weights() -> (tempfile::TempDir, PathBuf) {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity");
    let dir = rill_testing::python_outputs(&here.join("setup.sh"), &here.join("make_weights.py"));
    let p = dir.path().to_owned();
    (dir, p)
}

fn expected(dir: &Path) -> (Vec<serde_json::Value>, Vec<Vec<f64>>) {
    let e: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let inputs = e["inputs"].as_array().unwrap().clone();
    let outs = e["expected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    (inputs, outs)
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-4 * want.abs().max(1e-2)
}

/// Runs the model in `dir` over its inputs and compares the `pick`ed
/// numbers with numpy's.
fn check(dir: &Path, handler: &str, extra: &str, pick: fn(&Value) -> Vec<f64>) {
    let (inputs, want) = expected(dir);
    let cfg = format!(
        "{{model_handler: {{type: {handler}, config: {{path: {}/model.safetensors {extra}}}}}, input: x, batching: {{max_batch_size: 7, buckets: [6, 10]}}}}",
        dir.display()
    );
    let (mut node, metrics) =
        testing::build(&cfg, dir, Default::default()).unwrap_or_else(|e| panic!("{e}"));
    let records: Vec<Record> = inputs
        .iter()
        .enumerate()
        .map(|(i, x)| {
            Record::default()
                .with("i", i as i64)
                .with("x", json::json_to_value(x).unwrap())
        })
        .collect();
    let (out, failed) = testing::process(node.as_mut(), records);
    assert!(failed.is_empty(), "{:?}", failed.first());
    assert_eq!(out.len(), want.len());
    for (i, (r, w)) in out.iter().zip(&want).enumerate() {
        assert_eq!(r.get("i"), Some(&Value::Int(i as i64)), "order kept");
        let got = pick(r.get("inference").unwrap());
        assert_eq!(got.len(), w.len(), "{handler} example {i}");
        for (g, e) in got.iter().zip(w) {
            assert!(
                close(*g, *e),
                "{handler} example {i}: got {got:?}, numpy {w:?}"
            );
        }
    }
    assert_eq!(metrics.counter("num_inferences"), want.len() as u64);
}

fn field(v: &Value, name: &str) -> Vec<f64> {
    let Value::Map(m) = v else { panic!("{v:?}") };
    match &m[name] {
        Value::List(l) => l.iter().map(|x| x.as_f64().unwrap()).collect(),
        x => vec![x.as_f64().unwrap()],
    }
}

#[test]
fn pytorch_layout_safetensors_match_numpy() {
    let (_keep, dir) = python_weights();
    check(&dir.join("mlp"), "BurnMlp", "", |v| {
        field(v, "probabilities")
    });
    check(&dir.join("regress"), "BurnMlp", ", task: regress", |v| {
        field(v, "value")
    });
    check(&dir.join("autoencoder"), "BurnAutoencoder", "", |v| {
        field(v, "score")
    });
    // sequences of 3 to 13 steps, padded within each bucket
    check(&dir.join("conv1d"), "BurnConv1d", "", |v| {
        field(v, "probabilities")
    });
}
