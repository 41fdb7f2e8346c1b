//! Every built-in handler gives the same outputs on CUDA as on the CPU
//! backend, within 1e-4 relative. Needs `--features cuda` and an NVIDIA
//! GPU; skips (and says so) otherwise. `hil-tests/gpu.sh` builds this test
//! here and runs it on a GPU machine.

use std::path::Path;

use burn::tensor::backend::Backend;
use rill_core::spec::{Device, Resources};
use rill_core::{Record, Value};
use rill_ml::nets::{Arch, Net, save};
use rill_ml::{Cpu, testing};

fn gpu_or_skip() -> bool {
    if !cfg!(feature = "cuda") {
        eprintln!(
            "SKIPPED: built without the `cuda` feature (cargo test -p rill-hil-tests --features cuda)"
        );
        return false;
    }
    let gpus = rill_ml::gpus();
    if gpus.is_empty() {
        eprintln!("SKIPPED: no CUDA device found (no driver, or no GPU)");
        return false;
    }
    eprintln!("CUDA devices: {gpus:?}");
    true
}

fn model(dir: &Path, arch: Arch, seed: u64) {
    let device = Default::default();
    <Cpu as Backend>::seed(&device, seed);
    save(Net::<Cpu>::init(&arch, &device), &arch, dir).unwrap();
}

fn numbers(v: &Value, out: &mut Vec<f64>) {
    match v {
        Value::Float(f) => out.push(*f),
        Value::Int(i) => out.push(*i as f64),
        Value::List(l) => l.iter().for_each(|x| numbers(x, out)),
        Value::Map(m) => m.values().for_each(|x| numbers(x, out)),
        _ => {}
    }
}

fn run(dir: &Path, cfg: &str, device: Device, records: &[Record]) -> Vec<Vec<f64>> {
    let res = Resources {
        device,
        ..Default::default()
    };
    let (mut node, _) = testing::build(cfg, dir, res).unwrap_or_else(|e| panic!("{e}"));
    let (out, failed) = testing::process(node.as_mut(), records.to_vec());
    assert!(failed.is_empty(), "{:?}", failed.first());
    out.iter()
        .map(|r| {
            let mut v = Vec::new();
            numbers(r.get("inference").unwrap(), &mut v);
            v
        })
        .collect()
}

fn flat_rows(n: usize, width: usize) -> Vec<Record> {
    let mut rng = fastrand::Rng::with_seed(7);
    (0..n)
        .map(|_| {
            Record::default().with(
                "features",
                Value::List(
                    (0..width)
                        .map(|_| Value::Float(rng.f64() * 4.0 - 2.0))
                        .collect(),
                ),
            )
        })
        .collect()
}

fn seq_rows(n: usize, channels: usize) -> Vec<Record> {
    let mut rng = fastrand::Rng::with_seed(8);
    (0..n)
        .map(|i| {
            let len = 4 + i % 29;
            Record::default().with(
                "features",
                Value::List(
                    (0..channels)
                        .map(|_| {
                            Value::List((0..len).map(|_| Value::Float(rng.f64() - 0.5)).collect())
                        })
                        .collect(),
                ),
            )
        })
        .collect()
}

#[test]
fn every_builtin_handler_matches_the_cpu_on_cuda() {
    if !gpu_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "mlp",
            Arch::Mlp {
                layers: vec![32, 64, 64, 5],
            },
            "BurnMlp",
            "",
            flat_rows(300, 32),
        ),
        (
            "reg",
            Arch::Mlp {
                layers: vec![16, 32, 1],
            },
            "BurnMlp",
            ", task: regress",
            flat_rows(300, 16),
        ),
        (
            "ae",
            Arch::Autoencoder {
                encoder: vec![24, 12, 4],
                decoder: vec![4, 12, 24],
            },
            "BurnAutoencoder",
            "",
            flat_rows(300, 24),
        ),
        (
            "conv",
            Arch::Conv1d {
                channels: vec![2, 8, 8],
                kernel_size: 5,
                outputs: 3,
            },
            "BurnConv1d",
            "",
            seq_rows(200, 2),
        ),
    ];
    for (i, (name, arch, handler, extra, records)) in cases.into_iter().enumerate() {
        model(&dir.path().join(name), arch, i as u64 + 1);
        let cfg = format!(
            "{{model_handler: {{type: {handler}, config: {{path: {name} {extra}}}}}, batching: {{max_batch_size: 64, buckets: [8, 16, 32]}}}}"
        );
        let cpu = run(dir.path(), &cfg, Device::Cpu, &records);
        let gpu = run(dir.path(), &cfg, Device::Cuda(0), &records);
        assert_eq!(cpu.len(), gpu.len());
        let mut worst = 0f64;
        for (a, b) in cpu.iter().zip(&gpu) {
            for (x, y) in a.iter().zip(b) {
                let rel = (x - y).abs() / x.abs().max(1e-3);
                worst = worst.max(rel);
                assert!(rel <= 1e-4, "{handler} ({name}): cpu {x} vs cuda {y}");
            }
        }
        eprintln!(
            "{handler} ({name}): {} records, worst relative difference {worst:.2e}",
            cpu.len()
        );
    }
}
