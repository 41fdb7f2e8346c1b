//! `rill-bench inference`: RunInference against a raw Burn loop calling
//! `forward` on the same batches, in one run.
//!
//! The raw loop starts from the batches as f32 arrays, makes a tensor,
//! runs the MLP and softmax, and reads the result back. RunInference starts
//! from records (a list of 64 numbers each) and ends with records (label,
//! score, probabilities, model id and version): the ratio is what the node
//! costs on top of the model.

use std::time::Instant;

use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rill_core::spec::{Device, Resources};
use rill_core::{Record, Value};
use rill_ml::nets::{Arch, ModelFiles, Net, save};
use rill_ml::{Cpu, testing};

const WIDTH: usize = 64;

/// The benchmark's MLP: `WIDTH -> hidden -> hidden -> 10`.
fn arch(hidden: usize) -> Arch {
    Arch::Mlp {
        layers: vec![WIDTH, hidden, hidden, 10],
    }
}

/// Records per second of a raw Burn loop over `batches`.
fn raw<B: Backend>(files: &ModelFiles, device: &B::Device, batches: &[Vec<f32>]) -> f64 {
    let Net::Mlp(mlp) = files.load::<B>(device).expect("model loads") else {
        unreachable!()
    };
    let mut busy = std::time::Duration::ZERO;
    let mut n = 0;
    let mut sink = 0f32;
    for b in batches {
        let rows = b.len() / WIDTH;
        let data = b.clone();
        let start = Instant::now();
        let x = Tensor::<B, 2>::from_data(TensorData::new(data, [rows, WIDTH]), device);
        let p: Vec<f32> = softmax(mlp.forward(x), 1).into_data().to_vec().unwrap();
        sink += p[0];
        n += rows;
        busy += start.elapsed();
    }
    assert!(sink.is_finite());
    n as f64 / busy.as_secs_f64()
}

/// How a record carries its 64 features.
#[derive(Clone, Copy)]
enum Features {
    /// An f32 tensor field (what a feature pipeline hands a model).
    Tensor,
    /// A list of 64 numbers (what JSON input gives).
    List,
}

fn to_records(b: &[f32], how: Features) -> Vec<Record> {
    b.chunks(WIDTH)
        .map(|row| {
            let v = match how {
                Features::Tensor => Value::Tensor(Box::new(
                    rill_core::value::Tensor::new(
                        vec![WIDTH],
                        rill_core::value::TensorData::F32(row.to_vec()),
                    )
                    .unwrap(),
                )),
                Features::List => {
                    Value::List(row.iter().map(|x| Value::Float(*x as f64)).collect())
                }
            };
            Record::default().with("features", v)
        })
        .collect()
}

/// Records per second of a RunInference node over the same batches (the
/// records are made outside the timed part; their outputs are dropped
/// inside it, as the raw loop drops its results).
fn node(
    dir: &std::path::Path,
    model: &str,
    device: Device,
    batch: usize,
    batches: &[Vec<f32>],
    how: Features,
) -> f64 {
    let cfg = format!(
        "{{model_handler: {{type: BurnMlp, config: {{path: {model}}}}}, batching: {{max_batch_size: {batch}}}}}"
    );
    let res = Resources {
        device,
        ..Default::default()
    };
    let (mut node, _) = testing::build(&cfg, dir, res).expect("node builds");
    let mut busy = std::time::Duration::ZERO;
    let mut n = 0;
    for b in batches {
        let records = to_records(b, how);
        let start = Instant::now();
        let (out, failed) = testing::process(node.as_mut(), records);
        assert!(failed.is_empty());
        n += out.len();
        drop(out);
        busy += start.elapsed();
    }
    n as f64 / busy.as_secs_f64()
}

fn batches(records: usize, batch: usize) -> Vec<Vec<f32>> {
    let mut rng = fastrand::Rng::with_seed(1);
    (0..records / batch)
        .map(|_| (0..batch * WIDTH).map(|_| rng.f32() * 2.0 - 1.0).collect())
        .collect()
}

/// Best of three alternating rounds of (raw, node).
fn compare(
    label: &str,
    raw_rate: &mut dyn FnMut() -> f64,
    node_rate: &mut dyn FnMut() -> f64,
) -> (f64, f64) {
    let (mut r, mut n) = (0f64, 0f64);
    for _ in 0..3 {
        r = r.max(raw_rate());
        n = n.max(node_rate());
    }
    println!(
        "  {label:<34} raw Burn {r:>10.0} rec/s   RunInference {n:>10.0} rec/s   ratio {:.3}",
        n / r
    );
    (r, n)
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let records: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(200_000);
    let dir = tempfile::tempdir()?;
    let device = Default::default();
    <Cpu as Backend>::seed(&device, 1);
    for hidden in [256, 1024] {
        save(
            Net::<Cpu>::init(&arch(hidden), &device),
            &arch(hidden),
            &dir.path().join(format!("mlp{hidden}")),
        )
        .map_err(anyhow::Error::msg)?;
    }
    let files = |hidden: usize| {
        ModelFiles::find(&dir.path().join(format!("mlp{hidden}")), None).expect("saved")
    };
    println!(
        "inference benchmark: {records} records, best of 3 (MLP classifiers; ratio goal >= 0.9)"
    );
    let cpu_batches = batches(records, 64);
    let big_batches = batches(records / 8, 64);
    let (small, big) = (files(256), files(1024));
    // (label, model, its files, batches, how features travel)
    let rows = [
        (
            "CPU, MLP 64-256-256-10, batch 64",
            "mlp256",
            &small,
            &cpu_batches,
            Features::Tensor,
        ),
        (
            "  same, features as a list",
            "mlp256",
            &small,
            &cpu_batches,
            Features::List,
        ),
        (
            "CPU, MLP 64-1024-1024-10, batch 64",
            "mlp1024",
            &big,
            &big_batches,
            Features::Tensor,
        ),
    ];
    let mut cpu_node = 0.0;
    for (label, model, files, b, how) in rows {
        let (_, n) = compare(label, &mut || raw::<Cpu>(files, &device, b), &mut || {
            node(dir.path(), model, Device::Cpu, 64, b, how)
        });
        if cpu_node == 0.0 {
            cpu_node = n;
        }
    }
    let gpus = rill_ml::gpus();
    if gpus.is_empty() {
        println!(
            "  CUDA: {}",
            if cfg!(feature = "cuda") {
                "no CUDA device found: skipped"
            } else {
                "not built in (cargo run --release -p rill-bench --features cuda -- inference)"
            }
        );
        return Ok(());
    }
    #[cfg(feature = "cuda")]
    {
        let gpu_batches = batches(records.max(256 * 50), 256);
        let cuda = rill_ml::CudaDevice::new(0);
        println!(
            "  CUDA device: {} ({} MiB)",
            gpus[0].name,
            gpus[0].memory >> 20
        );
        // warm up: kernels compile on first use
        raw::<rill_ml::Gpu>(&small, &cuda, &gpu_batches[..2]);
        let (_, gpu_node) = compare(
            "CUDA, MLP 64-256-256-10, batch 256",
            &mut || raw::<rill_ml::Gpu>(&small, &cuda, &gpu_batches),
            &mut || {
                node(
                    dir.path(),
                    "mlp256",
                    Device::Cuda(0),
                    256,
                    &gpu_batches,
                    Features::Tensor,
                )
            },
        );
        let (_, cpu256) = compare(
            "CPU, MLP 64-256-256-10, batch 256",
            &mut || raw::<Cpu>(&small, &device, &gpu_batches),
            &mut || {
                node(
                    dir.path(),
                    "mlp256",
                    Device::Cpu,
                    256,
                    &gpu_batches,
                    Features::Tensor,
                )
            },
        );
        println!(
            "  GPU vs CPU (RunInference, batch 256): {:.1}x   (CPU at batch 64: {cpu_node:.0} rec/s)",
            gpu_node / cpu256
        );
    }
    let _ = cpu_node;
    Ok(())
}
