//! The networks behind the built-in handlers, their architecture files
//! (`model.json`) and their weight files (Burn `.mpk` records, or
//! `.safetensors` saved from PyTorch).
//!
//! Layer names follow PyTorch's, so a `torch.nn.Module` with the same
//! attribute names saves a `state_dict` that loads as is: an MLP is
//! `layers.0.weight`, `layers.0.bias`, ...; an autoencoder `encoder.layers.N.*`
//! and `decoder.layers.N.*`; a 1-D conv net `convs.N.*` and `head.*`.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig1d};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn_store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use serde::{Deserialize, Serialize};

/// A network's architecture, as written in `model.json` beside its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Arch {
    /// Fully connected layers `[in, hidden..., out]`, ReLU between them.
    Mlp { layers: Vec<usize> },
    /// `encoder` then `decoder`, each an MLP; ReLU between them too.
    Autoencoder {
        encoder: Vec<usize>,
        decoder: Vec<usize>,
    },
    /// 1-D convolutions over `[channels, length]` (`channels[0]` in,
    /// "same" padding, ReLU), a mean over the valid length, then a linear
    /// head to `outputs`.
    Conv1d {
        channels: Vec<usize>,
        kernel_size: usize,
        outputs: usize,
    },
}

impl Arch {
    /// Checks the sizes make a network.
    pub fn validate(&self) -> Result<(), String> {
        let sizes_ok = |v: &[usize], what: &str| {
            if v.len() < 2 || v.contains(&0) {
                Err(format!(
                    "`{what}` needs at least two sizes, none of them 0: got {v:?}"
                ))
            } else {
                Ok(())
            }
        };
        match self {
            Arch::Mlp { layers } => sizes_ok(layers, "layers"),
            Arch::Autoencoder { encoder, decoder } => {
                sizes_ok(encoder, "encoder")?;
                sizes_ok(decoder, "decoder")?;
                if encoder.last() != decoder.first() {
                    return Err(format!(
                        "the encoder ends with {} values but the decoder starts with {}",
                        encoder[encoder.len() - 1],
                        decoder[0]
                    ));
                }
                if encoder.first() != decoder.last() {
                    return Err(format!(
                        "an autoencoder reconstructs its input: the encoder takes {} values but the decoder gives {}",
                        encoder[0],
                        decoder[decoder.len() - 1]
                    ));
                }
                Ok(())
            }
            Arch::Conv1d {
                channels,
                kernel_size,
                outputs,
            } => {
                sizes_ok(channels, "channels")?;
                if *kernel_size == 0 || kernel_size % 2 == 0 {
                    return Err(format!(
                        "`kernel_size` must be odd (\"same\" padding), got {kernel_size}"
                    ));
                }
                if *outputs == 0 {
                    return Err("`outputs` must be at least 1".into());
                }
                Ok(())
            }
        }
    }

    /// Number of values the network reads per example (per position, for
    /// conv nets: the input channels).
    pub fn input_width(&self) -> usize {
        match self {
            Arch::Mlp { layers } => layers[0],
            Arch::Autoencoder { encoder, .. } => encoder[0],
            Arch::Conv1d { channels, .. } => channels[0],
        }
    }

    /// Number of values the network gives per example.
    pub fn output_width(&self) -> usize {
        match self {
            Arch::Mlp { layers } => layers[layers.len() - 1],
            Arch::Autoencoder { decoder, .. } => decoder[decoder.len() - 1],
            Arch::Conv1d { outputs, .. } => *outputs,
        }
    }

    /// Reads `model.json`.
    pub fn read(path: &Path) -> Result<Arch, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let arch: Arch = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a model architecture: {e}", path.display()))?;
        arch.validate()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(arch)
    }
}

/// Fully connected layers with ReLU between them.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub layers: Vec<Linear<B>>,
}

impl<B: Backend> Mlp<B> {
    pub fn new(sizes: &[usize], device: &B::Device) -> Mlp<B> {
        Mlp {
            layers: sizes
                .windows(2)
                .map(|w| LinearConfig::new(w[0], w[1]).init(device))
                .collect(),
        }
    }

    pub fn forward(&self, mut x: Tensor<B, 2>) -> Tensor<B, 2> {
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            x = l.forward(x);
            if i < last {
                x = relu(x);
            }
        }
        x
    }

    fn check(&self, sizes: &[usize]) -> Result<(), String> {
        for (i, (l, w)) in self.layers.iter().zip(sizes.windows(2)).enumerate() {
            let got = l.weight.dims();
            if got != [w[0], w[1]] {
                return Err(format!(
                    "layer {i} has weights {}x{} but the architecture says {}x{}",
                    got[1], got[0], w[1], w[0]
                ));
            }
        }
        Ok(())
    }
}

/// An encoder and a decoder; the score of an example is its mean squared
/// reconstruction error.
#[derive(Module, Debug)]
pub struct Autoencoder<B: Backend> {
    pub encoder: Mlp<B>,
    pub decoder: Mlp<B>,
}

impl<B: Backend> Autoencoder<B> {
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.decoder.forward(relu(self.encoder.forward(x)))
    }
}

/// 1-D convolutions, a masked mean over the valid length, a linear head.
#[derive(Module, Debug)]
pub struct Conv1dNet<B: Backend> {
    pub convs: Vec<Conv1d<B>>,
    pub head: Linear<B>,
}

impl<B: Backend> Conv1dNet<B> {
    pub fn new(channels: &[usize], kernel: usize, outputs: usize, device: &B::Device) -> Self {
        Conv1dNet {
            convs: channels
                .windows(2)
                .map(|w| {
                    Conv1dConfig::new(w[0], w[1], kernel)
                        .with_padding(PaddingConfig1d::Explicit(kernel / 2, kernel / 2))
                        .init(device)
                })
                .collect(),
            head: LinearConfig::new(channels[channels.len() - 1], outputs).init(device),
        }
    }

    /// `x`: `[batch, channels, length]`, zero past each example's length;
    /// `mask`: `[batch, 1, length]`, 1 where the example has a value. Masking
    /// after every layer makes the result independent of the padding.
    pub fn forward(&self, mut x: Tensor<B, 3>, mask: Tensor<B, 3>) -> Tensor<B, 2> {
        for c in &self.convs {
            x = relu(c.forward(x)) * mask.clone();
        }
        let lens = mask.sum_dim(2); // [batch, 1, 1]
        let pooled = x.sum_dim(2) / lens; // [batch, channels, 1]
        let [b, ch, _] = pooled.dims();
        self.head.forward(pooled.reshape([b, ch]))
    }
}

/// A loaded network. (Burn's `Module` derive needs the variants inline;
/// a model is built once per load, so the size does not matter.)
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Net<B: Backend> {
    Mlp(Mlp<B>),
    Autoencoder(Autoencoder<B>),
    Conv1d(Conv1dNet<B>),
}

impl<B: Backend> Net<B> {
    /// A network of this architecture with fresh (random) weights.
    pub fn init(arch: &Arch, device: &B::Device) -> Net<B> {
        match arch {
            Arch::Mlp { layers } => Net::Mlp(Mlp::new(layers, device)),
            Arch::Autoencoder { encoder, decoder } => Net::Autoencoder(Autoencoder {
                encoder: Mlp::new(encoder, device),
                decoder: Mlp::new(decoder, device),
            }),
            Arch::Conv1d {
                channels,
                kernel_size,
                outputs,
            } => Net::Conv1d(Conv1dNet::new(channels, *kernel_size, *outputs, device)),
        }
    }

    fn check(&self, arch: &Arch) -> Result<(), String> {
        match (self, arch) {
            (Net::Mlp(m), Arch::Mlp { layers }) => m.check(layers),
            (Net::Autoencoder(a), Arch::Autoencoder { encoder, decoder }) => {
                a.encoder.check(encoder)?;
                a.decoder.check(decoder)
            }
            (
                Net::Conv1d(c),
                Arch::Conv1d {
                    channels, outputs, ..
                },
            ) => {
                for (i, (conv, w)) in c.convs.iter().zip(channels.windows(2)).enumerate() {
                    let d = conv.weight.dims();
                    if d[0] != w[1] || d[1] != w[0] {
                        return Err(format!(
                            "conv {i} maps {} to {} channels but the architecture says {} to {}",
                            d[1], d[0], w[0], w[1]
                        ));
                    }
                }
                let h = c.head.weight.dims();
                if h != [channels[channels.len() - 1], *outputs] {
                    return Err(format!(
                        "the head has weights {}x{} but the architecture says {}x{}",
                        h[1],
                        h[0],
                        outputs,
                        channels[channels.len() - 1]
                    ));
                }
                Ok(())
            }
            _ => Err("the weights are for another kind of network".into()),
        }
    }
}

/// The files of one model: its architecture and its weights.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFiles {
    pub weights: PathBuf,
    pub arch: Arch,
}

/// Weight file names looked for in a model folder, in this order.
pub const WEIGHT_FILES: [&str; 2] = ["model.mpk", "model.safetensors"];

impl ModelFiles {
    /// Finds the weights (`path` itself, or `model.mpk` / `model.safetensors`
    /// in the folder `path`) and the architecture (`model.json` beside them,
    /// else `fallback` from the stage's config).
    pub fn find(path: &Path, fallback: Option<&Arch>) -> Result<ModelFiles, String> {
        let weights = if path.is_dir() {
            WEIGHT_FILES
                .iter()
                .map(|f| path.join(f))
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    format!(
                        "{}: no model.mpk or model.safetensors in this folder",
                        path.display()
                    )
                })?
        } else if path.is_file() {
            path.to_owned()
        } else {
            return Err(format!("{}: no such model file", path.display()));
        };
        let json = weights.with_file_name("model.json");
        let arch = if json.is_file() {
            Arch::read(&json)?
        } else {
            fallback.cloned().ok_or_else(|| {
                format!(
                    "{}: no model.json beside the weights and no architecture in the config (e.g. `layers: [4, 16, 3]`)",
                    weights.display()
                )
            })?
        };
        Ok(ModelFiles { weights, arch })
    }

    /// Loads the network onto `device`.
    pub fn load<B: Backend>(&self, device: &B::Device) -> Result<Net<B>, String> {
        let net = Net::<B>::init(&self.arch, device);
        let ext = self
            .weights
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("");
        let where_ = self.weights.display();
        let net = match ext {
            "mpk" => {
                let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
                // catch_unwind: a record of another shape panics inside Burn
                let path = self.weights.clone();
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    net.load_file(path, &recorder, device)
                }))
                .map_err(|p| format!("{where_}: {}", panic_text(&p)))?
                .map_err(|e| {
                    format!("{where_}: not a Burn record of this model (NamedMpkFileRecorder, full precision): {e}")
                })?
            }
            "safetensors" => {
                let mut net = net;
                let mut store = SafetensorsStore::from_file(&self.weights)
                    .with_from_adapter(PyTorchToBurnAdapter)
                    .skip_enum_variants(true)
                    .allow_partial(false);
                let r = net
                    .load_from(&mut store)
                    .map_err(|e| format!("{where_}: {e}"))?;
                if !r.errors.is_empty() || !r.missing.is_empty() {
                    let mut why: Vec<String> = r.errors.iter().map(|e| format!("{e}")).collect();
                    why.extend(r.missing.iter().map(|(p, _)| format!("missing `{p}`")));
                    return Err(format!("{where_}: {}", why.join("; ")));
                }
                net
            }
            other => {
                return Err(format!(
                    "{where_}: unknown weight format `.{other}`: expected .mpk (Burn) or .safetensors"
                ));
            }
        };
        net.check(&self.arch)
            .map_err(|e| format!("{where_}: {e}"))?;
        Ok(net)
    }
}

/// Saves `net` as a Burn record (`.mpk`) and its architecture as
/// `model.json` in `dir`.
pub fn save<B: Backend>(net: Net<B>, arch: &Arch, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let json = serde_json::to_string_pretty(arch).expect("an architecture serialises");
    std::fs::write(dir.join("model.json"), json + "\n")
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
    net.save_file(dir.join("model"), &recorder)
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// The text of a caught panic.
pub fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panicked".into())
}
