//! Model handlers: how a model is loaded on a device, how a batch of
//! examples becomes tensors, and how the outputs become values again
//! (Beam's `ModelHandler`).
//!
//! A handler is written once, generic over the Burn backend, and rill runs
//! it on the CPU (`burn-ndarray`) or, when built with the `cuda` feature, on
//! an NVIDIA GPU (`burn-cuda`). Custom handlers are plain trait impls
//! registered from Rust with [`register_handler`]; YAML then names them in
//! `model_handler: {type: NAME, config: {...}}`.

use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

use burn::tensor::backend::Backend;
use rill_core::{ConfigError, Value};
use serde::de::DeserializeOwned;

use crate::device::Dev;
use crate::nets::panic_text;

/// The CPU backend.
pub type Cpu = burn_ndarray::NdArray<f32>;
/// The NVIDIA GPU backend.
#[cfg(feature = "cuda")]
pub type Gpu = burn_cuda::Cuda<f32, i32>;

/// An example the handler cannot turn into a tensor: the record at `index`
/// of the batch becomes a dead letter with `msg`, the rest of the batch runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleError {
    pub index: usize,
    pub msg: String,
}

/// Loads a model and runs it on batches, on the backend `B`.
pub trait ModelHandler<B: Backend>: Send + Sync + 'static {
    /// A loaded model. Cloning it gives another instance that shares the
    /// weights (Burn's tensors are reference counted).
    type Model: Clone + Send + 'static;
    /// A batch, as tensors on the device.
    type Input: Send;
    /// The forward pass's result.
    type Output: Send;

    /// Loads the model at `path` (a file or a version folder) onto `device`.
    fn load(&self, path: &Path, device: &B::Device) -> Result<Self::Model, String>;

    /// Bytes of weights (`model_byte_size`).
    fn byte_size(&self, _model: &Self::Model) -> u64 {
        0
    }

    /// Turns a batch of examples into tensors for `model`.
    fn to_input(
        &self,
        model: &Self::Model,
        examples: &[&Value],
        device: &B::Device,
    ) -> Result<Self::Input, ExampleError>;

    /// The forward pass.
    fn forward(&self, model: &Self::Model, input: Self::Input) -> Self::Output;

    /// One value per example, in order (the record's `inference`).
    fn to_values(&self, output: Self::Output) -> Result<Vec<Value>, String>;

    /// The length of a variable-length example, for length buckets.
    fn example_len(&self, _example: &Value) -> Option<usize> {
        None
    }
}

/// Why a batch did not run.
#[derive(Debug, Clone, PartialEq)]
pub enum InferError {
    /// One example is bad; the others may run.
    Example(ExampleError),
    /// The device ran out of memory: a smaller batch may fit.
    OutOfMemory(String),
    /// Anything else.
    Failed(String),
}

impl fmt::Display for InferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InferError::Example(e) => write!(f, "example {}: {}", e.index, e.msg),
            InferError::OutOfMemory(m) => write!(f, "out of memory: {m}"),
            InferError::Failed(m) => f.write_str(m),
        }
    }
}

pub use crate::panics::is_oom;

/// One loaded model instance, whatever its backend.
pub trait Engine: Send {
    fn infer(&mut self, examples: &[&Value]) -> Result<Vec<Value>, InferError>;
    /// Another instance of the same model (shares the weights).
    fn fork(&self) -> Box<dyn Engine>;
    fn byte_size(&self) -> u64;
}

struct Loaded<B: Backend, H: ModelHandler<B>> {
    handler: Arc<H>,
    model: H::Model,
    device: B::Device,
}

impl<B: Backend, H: ModelHandler<B>> Engine for Loaded<B, H> {
    fn infer(&mut self, examples: &[&Value]) -> Result<Vec<Value>, InferError> {
        let n = examples.len();
        let device_ooms = crate::panics::device_oom_count();
        let run = crate::panics::in_forward(|| {
            catch_unwind(AssertUnwindSafe(|| {
                let input = self
                    .handler
                    .to_input(&self.model, examples, &self.device)
                    .map_err(InferError::Example)?;
                let out = self.handler.forward(&self.model, input);
                self.handler.to_values(out).map_err(InferError::Failed)
            }))
        });
        // an allocation that failed on the backend's device thread (cubecl
        // catches and logs it there): whatever came back is not trusted
        if crate::panics::device_oom_count() != device_ooms {
            return Err(InferError::OutOfMemory(
                "a device allocation failed during the forward pass".into(),
            ));
        }
        let values = match run {
            Ok(Err(InferError::Failed(text))) if is_oom(&text) => {
                return Err(InferError::OutOfMemory(text));
            }
            Ok(r) => r?,
            Err(p) => {
                let text = panic_text(&p);
                return Err(if is_oom(&text) {
                    InferError::OutOfMemory(text)
                } else {
                    InferError::Failed(format!("the model panicked: {text}"))
                });
            }
        };
        if values.len() != n {
            return Err(InferError::Failed(format!(
                "the handler gave {} results for {n} examples",
                values.len()
            )));
        }
        Ok(values)
    }

    fn fork(&self) -> Box<dyn Engine> {
        Box::new(Loaded::<B, H> {
            handler: self.handler.clone(),
            model: self.model.clone(),
            device: self.device.clone(),
        })
    }

    fn byte_size(&self) -> u64 {
        self.handler.byte_size(&self.model)
    }
}

/// Loads models of one handler onto one device.
pub trait Loader: Send + Sync {
    fn load(&self, path: &Path) -> Result<Box<dyn Engine>, String>;
    fn example_len(&self, example: &Value) -> Option<usize>;
    /// `cpu` or `cuda:N`.
    fn device(&self) -> Dev;
}

struct BackendLoader<B: Backend, H: ModelHandler<B>> {
    handler: Arc<H>,
    device: B::Device,
    dev: Dev,
}

impl<B: Backend, H: ModelHandler<B>> Loader for BackendLoader<B, H> {
    fn load(&self, path: &Path) -> Result<Box<dyn Engine>, String> {
        let model = catch_unwind(AssertUnwindSafe(|| self.handler.load(path, &self.device)))
            .map_err(|p| format!("loading {} panicked: {}", path.display(), panic_text(&p)))??;
        Ok(Box::new(Loaded::<B, H> {
            handler: self.handler.clone(),
            model,
            device: self.device.clone(),
        }))
    }

    fn example_len(&self, example: &Value) -> Option<usize> {
        self.handler.example_len(example)
    }

    fn device(&self) -> Dev {
        self.dev
    }
}

/// A handler that runs on every backend this build of rill has.
#[cfg(not(feature = "cuda"))]
pub trait AnyBackend: ModelHandler<Cpu> {}
#[cfg(not(feature = "cuda"))]
impl<T: ModelHandler<Cpu>> AnyBackend for T {}
/// A handler that runs on every backend this build of rill has.
#[cfg(feature = "cuda")]
pub trait AnyBackend: ModelHandler<Cpu> + ModelHandler<Gpu> {}
#[cfg(feature = "cuda")]
impl<T: ModelHandler<Cpu> + ModelHandler<Gpu>> AnyBackend for T {}

/// A handler's `config` in YAML: deserialised with unknown keys refused,
/// checked without I/O, then turned into the handler.
pub trait HandlerConfig: DeserializeOwned + fmt::Debug + Send + Sync + 'static {
    type Handler: AnyBackend;

    /// Pure checks (no I/O), run by `rill validate`.
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }

    /// The model path in the config (`path:`), if it names one.
    fn path(&self) -> Option<&Path> {
        None
    }

    /// The handler, with paths resolved against `base_dir`.
    fn handler(&self, base_dir: &Path) -> Result<Self::Handler, String>;
}

/// A parsed handler config, whatever its type.
pub trait DynHandler: fmt::Debug + Send + Sync {
    fn path(&self) -> Option<PathBuf>;
    /// A loader for `dev`.
    fn loader(&self, base_dir: &Path, dev: Dev) -> Result<Arc<dyn Loader>, String>;
}

impl<C: HandlerConfig> DynHandler for C {
    fn path(&self) -> Option<PathBuf> {
        HandlerConfig::path(self).map(Path::to_owned)
    }

    fn loader(&self, base_dir: &Path, dev: Dev) -> Result<Arc<dyn Loader>, String> {
        let handler = Arc::new(self.handler(base_dir)?);
        match dev {
            Dev::Cpu => Ok(Arc::new(BackendLoader::<Cpu, C::Handler> {
                handler,
                device: Default::default(),
                dev,
            })),
            #[cfg(feature = "cuda")]
            Dev::Cuda(n) => Ok(Arc::new(BackendLoader::<Gpu, C::Handler> {
                handler,
                device: burn_cuda::CudaDevice::new(n),
                dev,
            })),
            #[cfg(not(feature = "cuda"))]
            Dev::Cuda(n) => Err(format!(
                "cuda:{n}: this build of rill has no CUDA support (build with `--features cuda`)"
            )),
        }
    }
}

pub(crate) type ParseFn = fn(serde_json::Value) -> Result<Arc<dyn DynHandler>, ConfigError>;

struct Entry {
    parse: ParseFn,
    doc: &'static str,
}

fn handlers() -> &'static RwLock<HashMap<String, Entry>> {
    static H: OnceLock<RwLock<HashMap<String, Entry>>> = OnceLock::new();
    H.get_or_init(|| {
        let mut m = HashMap::new();
        crate::builtin::register_builtins(&mut |name, parse, doc| {
            m.insert(name.to_owned(), Entry { parse, doc });
        });
        RwLock::new(m)
    })
}

fn parse_as<C: HandlerConfig>(v: serde_json::Value) -> Result<Arc<dyn DynHandler>, ConfigError> {
    let c: C = serde_json::from_value(v).map_err(|e| ConfigError::whole(e.to_string()))?;
    c.validate()?;
    Ok(Arc::new(c))
}

/// The parse function of a handler config type (for registration).
pub(crate) fn parser<C: HandlerConfig>() -> ParseFn {
    parse_as::<C>
}

/// Registers a model handler type under `name`, for
/// `model_handler: {type: name, config: ...}`. A later registration of the
/// same name replaces the earlier one.
pub fn register_handler<C: HandlerConfig>(name: &str, doc: &'static str) {
    handlers().write().unwrap().insert(
        name.to_owned(),
        Entry {
            parse: parse_as::<C>,
            doc,
        },
    );
}

/// The registered handler types and what they do.
pub fn handler_docs() -> Vec<(String, &'static str)> {
    let mut v: Vec<_> = handlers()
        .read()
        .unwrap()
        .iter()
        .map(|(k, e)| (k.clone(), e.doc))
        .collect();
    v.sort();
    v
}

/// Parses a handler config of type `name`; an error's path is within
/// `model_handler` (`type`, or `config.<key>`).
pub fn parse_handler(
    name: &str,
    config: serde_json::Value,
) -> Result<Arc<dyn DynHandler>, ConfigError> {
    let map = handlers().read().unwrap();
    let Some(e) = map.get(name) else {
        let names: Vec<&str> = map.keys().map(String::as_str).collect();
        let hint = rill_core::registry::closest(name, names.iter().copied())
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        let mut names = names;
        names.sort();
        return Err(ConfigError::at(
            "type",
            format!(
                "unknown model handler `{name}`{hint}; known: {}",
                names.join(", ")
            ),
        ));
    };
    (e.parse)(config).map_err(|e| ConfigError {
        message: format!("model_handler `{name}` config: {}", e.message),
        ..e.within("config")
    })
}

/// Paths in configs, where YAML reads a version folder's name (`path: 2`)
/// as a number: `#[serde(deserialize_with = "rill_ml::handler::path::opt")]`
/// on an `Option<PathBuf>` (with `#[serde(default)]`), `path::one` on a
/// `PathBuf`, `path::map` on an `IndexMap<String, PathBuf>`.
pub mod path {
    use std::fmt;
    use std::path::PathBuf;

    use indexmap::IndexMap;
    use serde::Deserialize;
    use serde::de::{self, Deserializer, Visitor};

    struct PathVisitor;

    impl<'de> Visitor<'de> for PathVisitor {
        type Value = PathBuf;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a path")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<PathBuf, E> {
            Ok(PathBuf::from(s))
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<PathBuf, E> {
            Ok(PathBuf::from(n.to_string()))
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<PathBuf, E> {
            Ok(PathBuf::from(n.to_string()))
        }
    }

    /// A path that may be written as a number.
    struct Lenient(PathBuf);

    impl<'de> Deserialize<'de> for Lenient {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Lenient, D::Error> {
            d.deserialize_any(PathVisitor).map(Lenient)
        }
    }

    /// A path.
    pub fn one<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Lenient::deserialize(d).map(|p| p.0)
    }

    /// An optional path (use with `#[serde(default)]`).
    pub fn opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        Option::<Lenient>::deserialize(d).map(|p| p.map(|p| p.0))
    }

    /// Names to paths.
    pub fn map<'de, D: Deserializer<'de>>(d: D) -> Result<IndexMap<String, PathBuf>, D::Error> {
        IndexMap::<String, Lenient>::deserialize(d)
            .map(|m| m.into_iter().map(|(k, p)| (k, p.0)).collect())
    }
}
