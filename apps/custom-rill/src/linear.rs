//! `Linear`: a model handler for `RunInference`, a linear model `y = w·x +
//! bias` whose weights are a JSON list. (docs/inference.md, "Writing a
//! handler in Rust", walks through it.)

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rill_core::{ConfigError, Value};
use rill_ml::{ExampleError, HandlerConfig, ModelHandler};

/// `model_handler: {type: Linear, config: {path: models/lin/w.json, bias: 0.5}}`
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearConfig {
    path: PathBuf,
    #[serde(default)]
    bias: f32,
}

pub struct Linear {
    bias: f32,
}

impl HandlerConfig for LinearConfig {
    type Handler = Linear;

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.bias.is_finite() {
            return Err(ConfigError::at("bias", "`bias` must be a finite number"));
        }
        Ok(())
    }

    /// The model rill loads (resolved against the working directory).
    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn handler(&self, _base_dir: &Path) -> Result<Linear, String> {
        Ok(Linear { bias: self.bias })
    }
}

impl<B: Backend> ModelHandler<B> for Linear {
    type Model = Tensor<B, 2>; // weights [inputs, 1]; a clone shares them
    type Input = Tensor<B, 2>; // [batch, inputs]
    type Output = Tensor<B, 2>; // [batch, 1]

    fn load(&self, path: &Path, device: &B::Device) -> Result<Tensor<B, 2>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let w: Vec<f32> =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let n = w.len();
        Ok(Tensor::from_data(TensorData::new(w, [n, 1]), device))
    }

    fn byte_size(&self, w: &Tensor<B, 2>) -> u64 {
        w.dims()[0] as u64 * 4
    }

    fn to_input(
        &self,
        w: &Tensor<B, 2>,
        examples: &[&Value],
        device: &B::Device,
    ) -> Result<Tensor<B, 2>, ExampleError> {
        let width = w.dims()[0];
        let mut x = Vec::with_capacity(examples.len() * width);
        for (index, e) in examples.iter().enumerate() {
            let bad = |msg: String| ExampleError { index, msg };
            let Value::List(items) = e else {
                return Err(bad("expected a list of numbers".into()));
            };
            if items.len() != width {
                return Err(bad(format!(
                    "expected {width} numbers, got {}",
                    items.len()
                )));
            }
            for v in items {
                x.push(v.as_f64().ok_or_else(|| bad("not a number".into()))? as f32);
            }
        }
        Ok(Tensor::from_data(
            TensorData::new(x, [examples.len(), width]),
            device,
        ))
    }

    fn forward(&self, w: &Tensor<B, 2>, x: Tensor<B, 2>) -> Tensor<B, 2> {
        x.matmul(w.clone()).add_scalar(self.bias)
    }

    fn to_values(&self, y: Tensor<B, 2>) -> Result<Vec<Value>, String> {
        let y: Vec<f32> = y.into_data().to_vec().map_err(|e| format!("{e:?}"))?;
        Ok(y.into_iter().map(|v| Value::Float(v as f64)).collect())
    }
}
