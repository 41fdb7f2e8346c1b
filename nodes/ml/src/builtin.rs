//! The built-in handlers: `BurnMlp` (classifier or regressor),
//! `BurnAutoencoder` (reconstruction-error score) and `BurnConv1d` (1-D
//! convolutions over a sequence tensor).

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rill_core::value::TensorData as RData;
use rill_core::{ConfigError, Fields, Name, Value};
use serde::Deserialize;

use crate::handler::{ExampleError, HandlerConfig, ModelHandler, parser};
use crate::nets::{Arch, ModelFiles, Net};

/// What the network's output means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Softmax over the outputs: `{label, probabilities, score}`.
    #[default]
    Classify,
    /// The outputs as they are: `{value}` (one output) or `{values}`.
    Regress,
}

/// `BurnMlp`'s config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// Weights (`.mpk` or `.safetensors`) or a folder holding them.
    #[serde(default, deserialize_with = "crate::handler::path::opt")]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub task: Task,
    /// Class names, by output index (default: the index).
    pub labels: Option<Vec<String>>,
    /// Layer sizes when there is no `model.json` beside the weights.
    pub layers: Option<Vec<usize>>,
}

/// `BurnAutoencoder`'s config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoencoderConfig {
    #[serde(default, deserialize_with = "crate::handler::path::opt")]
    pub path: Option<PathBuf>,
    pub encoder: Option<Vec<usize>>,
    pub decoder: Option<Vec<usize>>,
}

/// `BurnConv1d`'s config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv1dConfig {
    #[serde(default, deserialize_with = "crate::handler::path::opt")]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub task: Task,
    pub labels: Option<Vec<String>>,
    pub channels: Option<Vec<usize>>,
    pub kernel_size: Option<usize>,
    pub outputs: Option<usize>,
}

/// The handler behind all three: a [`Net`] of some [`Arch`].
#[derive(Debug, Clone)]
pub struct NetHandler {
    kind: &'static str,
    fallback: Option<Arch>,
    task: Task,
    labels: Option<Vec<String>>,
}

/// A loaded network and its architecture.
#[derive(Debug, Clone)]
pub struct NetModel<B: Backend> {
    pub net: Net<B>,
    pub arch: Arch,
}

/// A batch on the device.
pub enum NetInput<B: Backend> {
    Flat(Tensor<B, 2>),
    Seq { x: Tensor<B, 3>, mask: Tensor<B, 3> },
}

fn check_labels(labels: &Option<Vec<String>>, task: Task) -> Result<(), ConfigError> {
    if labels.is_some() && task == Task::Regress {
        return Err(ConfigError::at(
            "labels",
            "`labels` only applies to `task: classify`",
        ));
    }
    if labels.as_ref().is_some_and(|l| l.is_empty()) {
        return Err(ConfigError::at("labels", "`labels` is empty"));
    }
    Ok(())
}

impl HandlerConfig for MlpConfig {
    type Handler = NetHandler;

    fn validate(&self) -> Result<(), ConfigError> {
        check_labels(&self.labels, self.task)?;
        if let Some(l) = &self.layers {
            Arch::Mlp { layers: l.clone() }
                .validate()
                .map_err(|m| ConfigError::at("layers", m))?;
            if let Some(names) = &self.labels
                && names.len() != l[l.len() - 1]
            {
                return Err(ConfigError::at(
                    "labels",
                    format!("{} labels for {} outputs", names.len(), l[l.len() - 1]),
                ));
            }
        }
        Ok(())
    }

    fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn handler(&self, _: &Path) -> Result<NetHandler, String> {
        Ok(NetHandler {
            kind: "mlp",
            fallback: self.layers.clone().map(|layers| Arch::Mlp { layers }),
            task: self.task,
            labels: self.labels.clone(),
        })
    }
}

impl HandlerConfig for AutoencoderConfig {
    type Handler = NetHandler;

    fn validate(&self) -> Result<(), ConfigError> {
        match (&self.encoder, &self.decoder) {
            (Some(e), Some(d)) => Arch::Autoencoder {
                encoder: e.clone(),
                decoder: d.clone(),
            }
            .validate()
            .map_err(|m| ConfigError::at("encoder", m)),
            (None, None) => Ok(()),
            (Some(_), None) => Err(ConfigError::at(
                "encoder",
                "give both `encoder` and `decoder`, or neither (model.json)",
            )),
            (None, Some(_)) => Err(ConfigError::at(
                "decoder",
                "give both `encoder` and `decoder`, or neither (model.json)",
            )),
        }
    }

    fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn handler(&self, _: &Path) -> Result<NetHandler, String> {
        Ok(NetHandler {
            kind: "autoencoder",
            fallback: match (&self.encoder, &self.decoder) {
                (Some(e), Some(d)) => Some(Arch::Autoencoder {
                    encoder: e.clone(),
                    decoder: d.clone(),
                }),
                _ => None,
            },
            task: Task::Regress,
            labels: None,
        })
    }
}

impl Conv1dConfig {
    fn arch(&self) -> Option<Arch> {
        Some(Arch::Conv1d {
            channels: self.channels.clone()?,
            kernel_size: self.kernel_size.unwrap_or(3),
            outputs: self.outputs?,
        })
    }
}

impl HandlerConfig for Conv1dConfig {
    type Handler = NetHandler;

    fn validate(&self) -> Result<(), ConfigError> {
        check_labels(&self.labels, self.task)?;
        match self.arch() {
            Some(a) => a.validate().map_err(ConfigError::whole),
            None if self.channels.is_some()
                || self.outputs.is_some()
                || self.kernel_size.is_some() =>
            {
                Err(ConfigError::whole(
                    "give `channels` and `outputs` (and optionally `kernel_size`), or none of them (model.json)",
                ))
            }
            None => Ok(()),
        }
    }

    fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn handler(&self, _: &Path) -> Result<NetHandler, String> {
        Ok(NetHandler {
            kind: "conv1d",
            fallback: self.arch(),
            task: self.task,
            labels: self.labels.clone(),
        })
    }
}

/// Registers the built-in handlers.
pub(crate) fn register_builtins(add: &mut dyn FnMut(&str, crate::handler::ParseFn, &'static str)) {
    add(
        "BurnMlp",
        parser::<MlpConfig>(),
        "a multilayer perceptron: classifier (label, probabilities) or regressor",
    );
    add(
        "BurnAutoencoder",
        parser::<AutoencoderConfig>(),
        "an autoencoder: reconstruction-error score per record",
    );
    add(
        "BurnConv1d",
        parser::<Conv1dConfig>(),
        "a 1-D convolutional network over a sequence tensor [channels, length]",
    );
}

// the names of the handlers' outputs
const LABEL: Name = Name::const_new("label");
const SCORE: Name = Name::const_new("score");
const PROBABILITIES: Name = Name::const_new("probabilities");
const VALUE: Name = Name::const_new("value");
const VALUES: Name = Name::const_new("values");

/// Appends the numbers of a flat example to `out`; returns how many.
fn flat_into(v: &Value, out: &mut Vec<f32>) -> Result<usize, String> {
    let start = out.len();
    match v {
        Value::Tensor(t) => match t.data() {
            RData::F32(d) => out.extend_from_slice(d),
            RData::F64(d) => out.extend(d.iter().map(|x| *x as f32)),
            RData::I64(d) => out.extend(d.iter().map(|x| *x as f32)),
            RData::U8(d) => out.extend(d.iter().map(|x| *x as f32)),
        },
        Value::List(items) => {
            for x in items {
                out.push(match x {
                    Value::Int(i) => *i as f32,
                    Value::Float(f) => *f as f32,
                    other => {
                        out.truncate(start);
                        return Err(format!("expected numbers, found a {}", other.type_name()));
                    }
                });
            }
        }
        Value::Int(i) => out.push(*i as f32),
        Value::Float(f) => out.push(*f as f32),
        other => {
            return Err(format!(
                "expected a list of numbers or a tensor, found a {}",
                other.type_name()
            ));
        }
    }
    Ok(out.len() - start)
}

/// The numbers of a flat example.
fn flat(v: &Value) -> Result<Vec<f32>, String> {
    let mut out = Vec::new();
    flat_into(v, &mut out)?;
    Ok(out)
}

/// A sequence example as `(channels, length, values channel-major)`.
fn sequence(v: &Value, channels: usize) -> Result<(usize, Vec<f32>), String> {
    match v {
        Value::Tensor(t) => match t.shape() {
            [l] if channels == 1 => flat(v).map(|x| (*l, x)),
            [c, l] if *c == channels => flat(v).map(|x| (*l, x)),
            s => Err(format!(
                "expected a tensor of shape [{channels}, length]{}, found shape {s:?}",
                if channels == 1 { " or [length]" } else { "" }
            )),
        },
        Value::List(items) if items.iter().all(|x| matches!(x, Value::List(_))) => {
            if items.len() != channels {
                return Err(format!(
                    "expected {channels} channel lists, found {}",
                    items.len()
                ));
            }
            let rows: Vec<Vec<f32>> = items.iter().map(flat).collect::<Result<_, _>>()?;
            let l = rows.first().map_or(0, Vec::len);
            if rows.iter().any(|r| r.len() != l) {
                return Err("channel lists of different lengths".into());
            }
            Ok((l, rows.concat()))
        }
        Value::List(_) if channels == 1 => {
            let v = flat(v)?;
            Ok((v.len(), v))
        }
        other => Err(format!(
            "expected a sequence (a tensor [channels, length] or a list of numbers), found a {}",
            other.type_name()
        )),
    }
}

impl<B: Backend> ModelHandler<B> for NetHandler {
    type Model = NetModel<B>;
    type Input = NetInput<B>;
    type Output = Tensor<B, 2>;

    fn load(&self, path: &Path, device: &B::Device) -> Result<NetModel<B>, String> {
        let files = ModelFiles::find(path, self.fallback.as_ref())?;
        let ok = matches!(
            (self.kind, &files.arch),
            ("mlp", Arch::Mlp { .. })
                | ("autoencoder", Arch::Autoencoder { .. })
                | ("conv1d", Arch::Conv1d { .. })
        );
        if !ok {
            return Err(format!(
                "{}: this model is not a {} (its architecture: {:?})",
                files.weights.display(),
                self.kind,
                files.arch
            ));
        }
        if let Some(l) = &self.labels
            && l.len() != files.arch.output_width()
        {
            return Err(format!(
                "{}: {} labels for a model with {} outputs",
                files.weights.display(),
                l.len(),
                files.arch.output_width()
            ));
        }
        Ok(NetModel {
            net: files.load(device)?,
            arch: files.arch,
        })
    }

    fn byte_size(&self, model: &NetModel<B>) -> u64 {
        model.net.num_params() as u64 * 4
    }

    fn to_input(
        &self,
        model: &NetModel<B>,
        examples: &[&Value],
        device: &B::Device,
    ) -> Result<NetInput<B>, ExampleError> {
        let n = examples.len();
        match &model.arch {
            Arch::Conv1d { channels, .. } => {
                let c = channels[0];
                let mut seqs = Vec::with_capacity(n);
                for (index, e) in examples.iter().enumerate() {
                    let (l, v) = sequence(e, c).map_err(|msg| ExampleError { index, msg })?;
                    if l == 0 {
                        return Err(ExampleError {
                            index,
                            msg: "an empty sequence".into(),
                        });
                    }
                    seqs.push((l, v));
                }
                let len = seqs.iter().map(|s| s.0).max().unwrap_or(1);
                let mut x = vec![0f32; n * c * len];
                let mut mask = vec![0f32; n * len];
                for (i, (l, v)) in seqs.iter().enumerate() {
                    for ch in 0..c {
                        let dst = (i * c + ch) * len;
                        x[dst..dst + l].copy_from_slice(&v[ch * l..(ch + 1) * l]);
                    }
                    mask[i * len..i * len + l].fill(1.0);
                }
                Ok(NetInput::Seq {
                    x: Tensor::from_data(TensorData::new(x, [n, c, len]), device),
                    mask: Tensor::from_data(TensorData::new(mask, [n, 1, len]), device),
                })
            }
            arch => {
                let w = arch.input_width();
                let mut x = Vec::with_capacity(n * w);
                for (index, e) in examples.iter().enumerate() {
                    let got = flat_into(e, &mut x).map_err(|msg| ExampleError { index, msg })?;
                    if got != w {
                        return Err(ExampleError {
                            index,
                            msg: format!("the model takes {w} values, the example has {got}"),
                        });
                    }
                }
                Ok(NetInput::Flat(Tensor::from_data(
                    TensorData::new(x, [n, w]),
                    device,
                )))
            }
        }
    }

    fn forward(&self, model: &NetModel<B>, input: NetInput<B>) -> Tensor<B, 2> {
        let out = match (&model.net, input) {
            (Net::Mlp(m), NetInput::Flat(x)) => m.forward(x),
            (Net::Autoencoder(a), NetInput::Flat(x)) => {
                let r = a.forward(x.clone());
                // mean squared reconstruction error per example
                return (r - x).powi_scalar(2).mean_dim(1);
            }
            (Net::Conv1d(c), NetInput::Seq { x, mask }) => c.forward(x, mask),
            _ => unreachable!("to_input builds the input the network takes"),
        };
        match self.task {
            Task::Classify => softmax(out, 1),
            Task::Regress => out,
        }
    }

    fn to_values(&self, out: Tensor<B, 2>) -> Result<Vec<Value>, String> {
        let [n, w] = out.dims();
        // a failed launch or allocation comes back here, as an error (an
        // out-of-memory one is split in half and retried)
        let data: Vec<f32> = out
            .try_into_data()
            .map_err(|e| format!("running the model: {e}"))?
            .to_vec()
            .map_err(|e| format!("reading the model's output: {e:?}"))?;
        let mut values = Vec::with_capacity(n);
        for row in data.chunks(w.max(1)).take(n) {
            let mut m = Fields::with_capacity(3);
            if self.kind == "autoencoder" {
                m.insert(SCORE, Value::Float(row[0] as f64));
            } else if self.task == Task::Classify {
                let (best, p) =
                    row.iter().enumerate().fold(
                        (0, f32::MIN),
                        |a, (i, p)| if *p > a.1 { (i, *p) } else { a },
                    );
                let label = match &self.labels {
                    Some(l) => Value::String(l[best].as_str().into()),
                    None => Value::Int(best as i64),
                };
                m.insert(LABEL, label);
                m.insert(SCORE, Value::Float(p as f64));
                m.insert(
                    PROBABILITIES,
                    Value::List(row.iter().map(|p| Value::Float(*p as f64)).collect()),
                );
            } else if w == 1 {
                m.insert(VALUE, Value::Float(row[0] as f64));
            } else {
                m.insert(
                    VALUES,
                    Value::List(row.iter().map(|p| Value::Float(*p as f64)).collect()),
                );
            }
            values.push(Value::Map(m));
        }
        Ok(values)
    }

    fn example_len(&self, example: &Value) -> Option<usize> {
        if self.kind != "conv1d" {
            return None;
        }
        match example {
            Value::Tensor(t) => t.shape().last().copied(),
            Value::List(items) => match items.first() {
                Some(Value::List(inner)) => Some(inner.len()),
                _ => Some(items.len()),
            },
            _ => None,
        }
    }
}
