//! The example behind `configs/classify.yaml`: machine health from four
//! sensor readings (`normal`, `overheating`, `bearing_wear`).
//!
//! [`generate`] draws a labelled data set (no downloads); [`train`] fits an
//! MLP with Burn's autodiff and Adam; the binary saves the model as a Burn
//! record with its `model.json` and writes a held-out stream for the
//! pipeline.

use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use burn_autodiff::Autodiff;
use rill_ml::nets::Mlp;

pub type Cpu = burn_ndarray::NdArray<f32>;
type Train = Autodiff<Cpu>;

/// Class names, by model output.
pub const LABELS: [&str; 3] = ["normal", "overheating", "bearing_wear"];
/// Sensor fields, in model input order.
pub const FIELDS: [&str; 4] = ["temp", "vibration", "current", "pressure"];
/// Layer sizes of the model.
pub const LAYERS: [usize; 3] = [4, 32, 3];

/// Mean and spread of each sensor, by class.
const MEANS: [[f64; 4]; 3] = [
    [60.0, 0.20, 10.0, 3.00],
    [72.0, 0.25, 12.0, 3.10],
    [63.0, 0.55, 10.5, 2.85],
];
const SPREAD: [f64; 4] = [5.0, 0.10, 1.4, 0.22];

/// The scaling `configs/classify.yaml`'s `preprocess` applies: (x - center) / scale.
pub const CENTER: [f64; 4] = [60.0, 0.3, 10.0, 3.0];
pub const SCALE: [f64; 4] = [10.0, 0.2, 2.0, 0.3];

/// One labelled reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub values: [f64; 4],
    pub label: usize,
}

impl Sample {
    /// The model's input: the scaled readings.
    pub fn scaled(&self) -> [f32; 4] {
        std::array::from_fn(|i| ((self.values[i] - CENTER[i]) / SCALE[i]) as f32)
    }
}

fn normal(rng: &mut fastrand::Rng) -> f64 {
    // Box-Muller
    let u1 = rng.f64().max(f64::MIN_POSITIVE);
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// `n` readings with labels, from `seed`.
pub fn generate(n: usize, seed: u64) -> Vec<Sample> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|_| {
            let label = rng.usize(0..3);
            let values = std::array::from_fn(|i| MEANS[label][i] + SPREAD[i] * normal(&mut rng));
            Sample { values, label }
        })
        .collect()
}

fn batch<B: Backend>(samples: &[Sample], device: &B::Device) -> (Tensor<B, 2>, Tensor<B, 1, Int>) {
    let x: Vec<f32> = samples.iter().flat_map(|s| s.scaled()).collect();
    let y: Vec<i64> = samples.iter().map(|s| s.label as i64).collect();
    (
        Tensor::from_data(TensorData::new(x, [samples.len(), 4]), device),
        Tensor::from_data(TensorData::new(y, [samples.len()]), device),
    )
}

/// Share of `samples` the model labels right.
pub fn accuracy(model: &Mlp<Cpu>, samples: &[Sample]) -> f64 {
    let device = Default::default();
    let (x, _) = batch::<Cpu>(samples, &device);
    let pred: Vec<i64> = model.forward(x).argmax(1).into_data().to_vec().unwrap();
    let right = pred
        .iter()
        .zip(samples)
        .filter(|(p, s)| **p as usize == s.label)
        .count();
    right as f64 / samples.len() as f64
}

/// Trains an MLP with Adam on mini-batches of 64 for `epochs`.
pub fn train(samples: &[Sample], epochs: usize, seed: u64) -> Mlp<Cpu> {
    let device = Default::default();
    <Train as Backend>::seed(&device, seed);
    let mut model = Mlp::<Train>::new(&LAYERS, &device);
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut order: Vec<usize> = (0..samples.len()).collect();
    let mut rng = fastrand::Rng::with_seed(seed);
    for _ in 0..epochs {
        rng.shuffle(&mut order);
        for idx in order.chunks(64) {
            let part: Vec<Sample> = idx.iter().map(|&i| samples[i].clone()).collect();
            let (x, y) = batch::<Train>(&part, &device);
            let loss = loss_fn.forward(model.forward(x), y);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(5e-3, model, grads);
        }
    }
    model.valid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_beats_chance_by_far() {
        let data = generate(1500, 1);
        let held = generate(500, 2);
        let model = train(&data, 8, 3);
        let acc = accuracy(&model, &held);
        assert!(acc > 0.85, "held-out accuracy {acc}");
    }

    #[test]
    fn generation_is_repeatable() {
        assert_eq!(generate(50, 7), generate(50, 7));
        assert_ne!(generate(50, 7), generate(50, 8));
    }
}
