//! `rill-bench inference`: RunInference against a raw Burn loop calling
//! `forward` on the same batches, in one run.
//!
//! The raw loop starts from the batches as f32 arrays, makes a tensor,
//! runs the MLP and softmax, and reads the result back. RunInference starts
//! from records (a list of 64 numbers each) and ends with records (label,
//! score, probabilities, model id and version): the ratio is what the node
//! costs on top of the model.

use std::time::{Duration, Instant};

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

/// A raw Burn loop: one batch as an `f32` array in, probabilities out.
struct Raw<B: Backend> {
    mlp: rill_ml::nets::Mlp<B>,
    device: B::Device,
    sink: f32,
}

impl<B: Backend> Raw<B> {
    fn new(files: &ModelFiles, device: &B::Device) -> Raw<B> {
        let Net::Mlp(mlp) = files.load::<B>(device).expect("model loads") else {
            unreachable!()
        };
        Raw {
            mlp,
            device: device.clone(),
            sink: 0.0,
        }
    }

    /// The time one batch takes (its copy is made outside the timed part,
    /// as the node's records are).
    fn batch(&mut self, b: &[f32]) -> Duration {
        let rows = b.len() / WIDTH;
        let data = b.to_vec();
        let start = Instant::now();
        let x = Tensor::<B, 2>::from_data(TensorData::new(data, [rows, WIDTH]), &self.device);
        let p: Vec<f32> = softmax(self.mlp.forward(x), 1)
            .into_data()
            .to_vec()
            .unwrap();
        self.sink += p[0];
        drop(p);
        start.elapsed()
    }
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

/// A RunInference node fed the same batches as records.
struct NodeRun {
    node: Box<dyn rill_core::node::Transform>,
    how: Features,
}

impl NodeRun {
    fn new(
        dir: &std::path::Path,
        model: &str,
        device: Device,
        batch: usize,
        how: Features,
    ) -> NodeRun {
        let cfg = format!(
            "{{model_handler: {{type: BurnMlp, config: {{path: {model}}}}}, batching: {{max_batch_size: {batch}}}}}"
        );
        let res = Resources {
            device,
            ..Default::default()
        };
        let (node, _) = testing::build(&cfg, dir, res).expect("node builds");
        NodeRun { node, how }
    }

    /// The time one batch takes (the records are made outside the timed
    /// part; the outputs are dropped inside it, as the raw loop drops its
    /// results).
    fn batch(&mut self, b: &[f32]) -> Duration {
        let records = to_records(b, self.how);
        let n = records.len();
        let start = Instant::now();
        let (out, failed) = testing::process(self.node.as_mut(), records);
        assert!(failed.is_empty() && out.len() == n);
        drop(out);
        start.elapsed()
    }
}

fn batches(records: usize, batch: usize) -> Vec<Vec<f32>> {
    let mut rng = fastrand::Rng::with_seed(1);
    (0..records / batch)
        .map(|_| (0..batch * WIDTH).map(|_| rng.f32() * 2.0 - 1.0).collect())
        .collect()
}

/// Rounds over all the batches in each comparison.
const ROUNDS: usize = 3;

/// Times `raw` and `node` on the same batches, taking turns batch by batch
/// (which goes first alternates), so that both see the same machine: on
/// shared cores a slow second hits both sides alike, where whole-run
/// alternation lets it land on one. Prints both rates over all rounds, the
/// ratio, and the ratio of each round; returns (raw, node) rates.
fn compare(
    label: &str,
    batches: &[Vec<f32>],
    raw: &mut dyn FnMut(&[f32]) -> Duration,
    node: &mut dyn FnMut(&[f32]) -> Duration,
) -> (f64, f64) {
    // warm-up: allocator pools, caches, kernels
    for b in batches.iter().take(batches.len().div_ceil(10)) {
        raw(b);
        node(b);
    }
    let (mut raw_t, mut node_t) = (Duration::ZERO, Duration::ZERO);
    let mut rows = 0;
    let mut per_round = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let (mut r, mut n) = (Duration::ZERO, Duration::ZERO);
        for (i, b) in batches.iter().enumerate() {
            if i % 2 == 0 {
                r += raw(b);
                n += node(b);
            } else {
                n += node(b);
                r += raw(b);
            }
            rows += b.len() / WIDTH;
        }
        per_round.push(r.as_secs_f64() / n.as_secs_f64());
        raw_t += r;
        node_t += n;
    }
    let (r, n) = (
        rows as f64 / raw_t.as_secs_f64(),
        rows as f64 / node_t.as_secs_f64(),
    );
    let rounds: Vec<String> = per_round.iter().map(|x| format!("{x:.3}")).collect();
    println!(
        "  {label:<34} raw Burn {r:>10.0} rec/s   RunInference {n:>10.0} rec/s   ratio {:.3}  (rounds {})",
        n / r,
        rounds.join(" ")
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
        "inference benchmark: {records} records x {ROUNDS} rounds, raw and node taking turns batch by batch (MLP classifiers; ratio goal >= 0.9)"
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
    // `small`, `list` or `large` runs that row alone (for a profiler)
    let only = args.iter().find_map(|a| match a.as_str() {
        "small" => Some(0),
        "list" => Some(1),
        "large" => Some(2),
        _ => None,
    });
    for (i, (label, model, files, b, how)) in rows.into_iter().enumerate() {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        let mut raw = Raw::<Cpu>::new(files, &device);
        let mut node = NodeRun::new(dir.path(), model, Device::Cpu, 64, how);
        let (_, n) = compare(label, b, &mut |b| raw.batch(b), &mut |b| node.batch(b));
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
        let mut raw = Raw::<rill_ml::Gpu>::new(&small, &cuda);
        let mut node = NodeRun::new(dir.path(), "mlp256", Device::Cuda(0), 256, Features::Tensor);
        let (_, gpu_node) = compare(
            "CUDA, MLP 64-256-256-10, batch 256",
            &gpu_batches,
            &mut |b| raw.batch(b),
            &mut |b| node.batch(b),
        );
        let mut raw = Raw::<Cpu>::new(&small, &device);
        let mut node = NodeRun::new(dir.path(), "mlp256", Device::Cpu, 256, Features::Tensor);
        let (_, cpu256) = compare(
            "CPU, MLP 64-256-256-10, batch 256",
            &gpu_batches,
            &mut |b| raw.batch(b),
            &mut |b| node.batch(b),
        );
        println!(
            "  GPU vs CPU (RunInference, batch 256): {:.1}x   (CPU at batch 64: {cpu_node:.0} rec/s)",
            gpu_node / cpu256
        );
    }
    let _ = cpu_node;
    Ok(())
}
