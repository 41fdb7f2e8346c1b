//! RunInference on CUDA against the CPU backend, within 1e-4 relative:
//! - every built-in handler (MLP classifier and regressor, autoencoder,
//!   1-D conv net with length buckets);
//! - three instances on one GPU serving one stage;
//! - keyed models with at most one loaded (each key's model loaded again
//!   on the GPU as the keys alternate);
//! - a hot swap: version 2 loaded on the watcher's thread, served from the
//!   stage's.
//!
//! Needs `--features cuda` and an NVIDIA GPU. Without them it says
//! `SKIPPED` and why, then runs the same checks with the CPU standing in
//! for the GPU, so that the checks themselves are known to work before a
//! GPU ever runs them. This is a plain binary (`harness = false`), so the
//! skip shows in `cargo test`'s output. `hil-tests/gpu.sh` builds it here
//! and runs it on a GPU machine.

use std::path::Path;
use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use rill_core::spec::{Device, Resources};
use rill_core::{Record, Value};
use rill_ml::nets::{Arch, Net, save};
use rill_ml::{Cpu, testing};

/// The device to compare with the CPU: `cuda:0`, or the CPU itself (with
/// the reason printed) when there is no GPU to use.
fn device_under_test() -> Device {
    if !cfg!(feature = "cuda") {
        println!(
            "SKIPPED on CUDA: built without the `cuda` feature (cargo test -p rill-hil-tests --features cuda --test cuda)"
        );
        return Device::Cpu;
    }
    let gpus = rill_ml::gpus();
    if gpus.is_empty() {
        println!("SKIPPED on CUDA: no CUDA device found (no driver, or no GPU)");
        return Device::Cpu;
    }
    println!("CUDA devices: {gpus:?}");
    Device::Cuda(0)
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

fn resources(device: Device, instances: usize) -> Resources {
    Resources {
        device,
        instances: Some(instances),
        ..Default::default()
    }
}

/// The numbers of each output's `inference`, and its `model_version`.
fn numbers_of(out: &[Record]) -> Vec<(Vec<f64>, String)> {
    out.iter()
        .map(|r| {
            let mut v = Vec::new();
            numbers(r.get("inference").unwrap(), &mut v);
            let version = r
                .get("model_version")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            (v, version)
        })
        .collect()
}

fn run(dir: &Path, cfg: &str, res: Resources, records: &[Record]) -> Vec<Vec<f64>> {
    let (mut node, _) = testing::build(cfg, dir, res).unwrap_or_else(|e| panic!("{e}"));
    let (out, failed) = testing::process(node.as_mut(), records.to_vec());
    assert!(failed.is_empty(), "{:?}", failed.first());
    numbers_of(&out).into_iter().map(|(v, _)| v).collect()
}

/// Asserts `got` equals `want` within 1e-4 relative; returns the worst
/// difference.
fn close(what: &str, want: &[Vec<f64>], got: &[Vec<f64>]) -> f64 {
    assert_eq!(want.len(), got.len(), "{what}: outputs");
    let mut worst = 0f64;
    for (a, b) in want.iter().zip(got) {
        assert_eq!(a.len(), b.len(), "{what}: numbers per output");
        for (x, y) in a.iter().zip(b) {
            let rel = (x - y).abs() / x.abs().max(1e-3);
            worst = worst.max(rel);
            assert!(rel <= 1e-4, "{what}: cpu {x} vs device {y}");
        }
    }
    worst
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

fn every_builtin_handler(dev: Device) {
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
        let cpu = run(dir.path(), &cfg, resources(Device::Cpu, 1), &records);
        let got = run(dir.path(), &cfg, resources(dev, 1), &records);
        let worst = close(&format!("{handler} ({name})"), &cpu, &got);
        println!(
            "  {handler} ({name}): {} records, worst relative difference {worst:.2e}",
            cpu.len()
        );
    }
}

fn instances(dev: Device) {
    let dir = tempfile::tempdir().unwrap();
    model(
        &dir.path().join("m"),
        Arch::Mlp {
            layers: vec![32, 64, 5],
        },
        11,
    );
    let cfg = "{model_handler: {type: BurnMlp, config: {path: m}}, batching: {max_batch_size: 16}}";
    let records = flat_rows(16 * 3 * 4, 32);
    let cpu = run(dir.path(), cfg, resources(Device::Cpu, 1), &records);
    // one call of 192 records: 12 passes, taken by 3 instances side by side
    let got = run(dir.path(), cfg, resources(dev, 3), &records);
    let worst = close("3 instances", &cpu, &got);
    println!(
        "  3 instances, passes of 16: {} records in order, worst relative difference {worst:.2e}",
        got.len()
    );
}

fn keyed(dev: Device) {
    let dir = tempfile::tempdir().unwrap();
    let arch = || Arch::Mlp {
        layers: vec![16, 32, 1],
    };
    model(&dir.path().join("a"), arch(), 21);
    model(&dir.path().join("b"), arch(), 22);
    let cfg = "{model_handler: {type: BurnMlp, config: {task: regress}},
               keyed: {max_models: 1, models: {a: a, b: b}}}";
    let records: Vec<Record> = flat_rows(120, 16)
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.with_key(if (i / 10) % 2 == 0 { "a" } else { "b" }))
        .collect();
    let cpu = run(dir.path(), cfg, resources(Device::Cpu, 1), &records);
    let (mut node, metrics) = testing::build(cfg, dir.path(), resources(dev, 1)).unwrap();
    let mut got = Vec::new();
    // in calls of 10, so each call holds one key and the models take turns
    for chunk in records.chunks(10) {
        let (out, failed) = testing::process(node.as_mut(), chunk.to_vec());
        assert!(failed.is_empty(), "{:?}", failed.first());
        got.extend(numbers_of(&out).into_iter().map(|(v, _)| v));
    }
    let worst = close("keyed", &cpu, &got);
    let loads = metrics.counter("model_loads");
    assert_eq!(loads, 12, "each call loads its key's model again");
    println!("  keyed, max_models 1: {loads} loads, worst relative difference {worst:.2e}");
}

fn hot_swap(dev: Device) {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let arch = || Arch::Mlp {
        layers: vec![16, 32, 1],
    };
    model(&models.join("1"), arch(), 31);
    let cfg = "{model_handler: {type: BurnMlp, config: {task: regress}},
               model: {dir: models, watch: true, poll: 10ms}}";
    let (mut node, _) = testing::build(cfg, dir.path(), resources(dev, 1)).unwrap();
    let records = flat_rows(50, 16);
    let (out, _) = testing::process(node.as_mut(), records.clone());
    assert!(numbers_of(&out).iter().all(|(_, v)| v == "1"));
    // version 2, written aside and renamed into place
    model(&models.join(".tmp-2"), arch(), 32);
    std::fs::rename(models.join(".tmp-2"), models.join("2")).unwrap();
    let start = Instant::now();
    let got = loop {
        let (out, failed) = testing::process(node.as_mut(), records.clone());
        assert!(failed.is_empty(), "{:?}", failed.first());
        let got = numbers_of(&out);
        if got.iter().all(|(_, v)| v == "2") {
            break got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "version 2 never served"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let cpu = run(
        &models,
        "{model_handler: {type: BurnMlp, config: {path: 2, task: regress}}}",
        resources(Device::Cpu, 1),
        &records,
    );
    let got: Vec<Vec<f64>> = got.into_iter().map(|(v, _)| v).collect();
    let worst = close("hot swap", &cpu, &got);
    println!(
        "  hot swap: version 2 served after {:?}, worst relative difference {worst:.2e}",
        start.elapsed()
    );
}

fn main() {
    let dev = device_under_test();
    let on = match dev {
        Device::Cpu => "the CPU standing in for the GPU (checks the checks)".to_owned(),
        d => format!("{d:?}"),
    };
    println!("RunInference on {on}, against the CPU backend:");
    type Check = fn(Device);
    let checks: [(&str, Check); 4] = [
        ("every built-in handler", every_builtin_handler),
        ("instances", instances),
        ("keyed models", keyed),
        ("hot swap", hot_swap),
    ];
    for (name, check) in checks {
        check(dev);
        println!("{name} ... ok");
    }
}
