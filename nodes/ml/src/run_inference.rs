//! `RunInference`: runs a model over the stream (Beam's RunInference, with
//! Triton's dynamic batching and instance groups).
//!
//! Output records keep their fields and gain `inference` (the handler's
//! value, `inference_field` renames it), `model_id` and `model_version`, as
//! Beam's `PredictionResult` names the model that produced each result.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use rill_core::metrics::NodeMetrics;
use rill_core::node::{
    Batching, BuildContext, ConfigError, Emitter, Node, NodeConfig, NodeError, NodeKind, Transform,
};
use rill_core::units::Dur;
use rill_core::{Record, Value};
use rill_expr::spec::{Compiled, ExprSpec};
use serde::Deserialize;
use tracing::{error, info, warn};

use crate::device::{self, Dev};
use crate::handler::{DynHandler, Engine, InferError, Loader, parse_handler};

/// `model_handler: {type, config}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerSpec {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default = "empty_config")]
    pub config: serde_json::Value,
}

/// `model: {dir, watch}`: Triton-style version folders `dir/<N>/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDir {
    #[serde(deserialize_with = "crate::handler::path::one")]
    pub dir: PathBuf,
    /// Load new versions as they appear, and swap them in between batches.
    #[serde(default)]
    pub watch: bool,
    /// How often the folder is looked at (default 1s).
    pub poll: Option<Dur>,
}

/// `batching: {max_batch_size, max_batch_delay, buckets}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingSpec {
    /// Most records per forward pass (default 64).
    #[serde(default = "default_batch")]
    pub max_batch_size: usize,
    /// How long the oldest record may wait for a fuller batch (default 10ms).
    pub max_batch_delay: Option<Dur>,
    /// Length buckets for variable-length examples (sequences): examples of
    /// similar length share a forward pass, so padding stays small.
    pub buckets: Option<Vec<usize>>,
}

/// `keyed: {max_models, models: {KEY: PATH}}`: a model per record key, at
/// most `max_models` loaded at once (least recently used evicted).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyedSpec {
    pub max_models: usize,
    #[serde(deserialize_with = "crate::handler::path::map")]
    pub models: IndexMap<String, PathBuf>,
    /// Take the key from this field instead of the record's key.
    pub key_field: Option<String>,
}

/// The example a record gives the model: a field, or several number fields
/// as one vector.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum InputSpec {
    Field(String),
    Fields(Vec<String>),
}

/// `RunInference`'s config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunInference {
    pub model_handler: HandlerSpec,
    pub model: Option<ModelDir>,
    /// The name outputs carry in `model_id` (default: the model's folder or
    /// file name).
    pub model_id: Option<String>,
    /// The example: a field name or a list of number fields (default
    /// `features`). Ignored when `preprocess` is given.
    pub input: Option<InputSpec>,
    /// The output field (Beam YAML's `inference_tag` is the same key).
    #[serde(default = "default_field", alias = "inference_tag")]
    pub inference_field: String,
    /// Beam YAML's extra arguments to the model's call. The Burn handlers
    /// take none, so only an empty mapping is accepted.
    #[serde(default)]
    pub inference_args: Option<serde_json::Map<String, serde_json::Value>>,
    pub batching: Option<BatchingSpec>,
    pub keyed: Option<KeyedSpec>,
    /// A callable on the record that returns the example.
    pub preprocess: Option<ExprSpec>,
    /// A callable on the output record that returns the new `inference`.
    pub postprocess: Option<ExprSpec>,
    /// The language of `preprocess` / `postprocess` (`python`).
    pub language: Option<String>,
}

fn empty_config() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

fn default_field() -> String {
    "inference".into()
}

const DEFAULT_BATCH: usize = 64;

fn default_batch() -> usize {
    DEFAULT_BATCH
}
/// The output fields naming the model behind each inference.
const MODEL_ID: rill_core::Name = rill_core::Name::const_new("model_id");
const MODEL_VERSION: rill_core::Name = rill_core::Name::const_new("model_version");
const DEFAULT_DELAY: Duration = Duration::from_millis(10);
/// Successful batches at a reduced size before the size doubles again.
const GROW_AFTER: u32 = 16;

/// What Beam YAML writes inside the model handler's config, and rill takes
/// either there or on the transform.
const HOOKS: [&str; 2] = ["preprocess", "postprocess"];

impl RunInference {
    /// The parsed handler; an error's path is within the transform's config.
    fn handler(&self) -> Result<Arc<dyn DynHandler>, ConfigError> {
        let mut config = match &self.model_handler.config {
            serde_json::Value::Null => empty_config(),
            c => c.clone(),
        };
        if let serde_json::Value::Object(m) = &mut config {
            for k in HOOKS {
                m.remove(k);
            }
        }
        parse_handler(&self.model_handler.kind, config).map_err(|e| e.within("model_handler"))
    }

    /// `preprocess` or `postprocess`: on the transform, or in the model
    /// handler's config as Beam YAML writes it.
    fn hook(&self, name: &str) -> Result<Option<ExprSpec>, ConfigError> {
        let top = if name == HOOKS[0] {
            &self.preprocess
        } else {
            &self.postprocess
        };
        match (top, self.model_handler.config.get(name)) {
            (Some(_), Some(_)) => Err(ConfigError::at(
                name,
                format!(
                    "`{name}` is given twice, on the transform and in `model_handler.config`; keep one"
                ),
            )),
            (Some(t), None) => Ok(Some(t.clone())),
            (None, Some(v)) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
                ConfigError::at_path(
                    ["model_handler", "config", name],
                    format!("`model_handler.config.{name}`: {e}"),
                )
            }),
            (None, None) => Ok(None),
        }
    }

    fn max_batch(&self) -> usize {
        self.batching
            .as_ref()
            .map_or(DEFAULT_BATCH, |b| b.max_batch_size)
    }
}

impl NodeConfig for RunInference {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let h = self.handler()?;
        if let Some(b) = &self.batching {
            if b.max_batch_size == 0 {
                return Err(ConfigError::at_path(
                    ["batching", "max_batch_size"],
                    "`batching.max_batch_size` must be at least 1",
                ));
            }
            if let Some(bk) = &b.buckets
                && (bk.is_empty() || bk.windows(2).any(|w| w[0] >= w[1]) || bk[0] == 0)
            {
                return Err(ConfigError::at_path(
                    ["batching", "buckets"],
                    format!("`batching.buckets` must be increasing lengths above 0, got {bk:?}"),
                ));
            }
        }
        if let Some(k) = &self.keyed {
            if k.max_models == 0 {
                return Err(ConfigError::at_path(
                    ["keyed", "max_models"],
                    "`keyed.max_models` must be at least 1",
                ));
            }
            if k.models.is_empty() {
                return Err(ConfigError::at_path(
                    ["keyed", "models"],
                    "`keyed.models` names no model",
                ));
            }
        }
        if self.model.is_none() && h.path().is_none() && self.keyed.is_none() {
            return Err(ConfigError::whole(
                "no model: give `model: {dir: ...}`, a `path` in the handler's config, or `keyed.models`",
            ));
        }
        if self.model.is_some() && h.path().is_some() {
            return Err(ConfigError::at(
                "model",
                "give the model once: `model.dir` or the handler's `path`, not both",
            ));
        }
        rill_expr::spec::check_language(&self.language)?;
        if let Some(m) = &self.model
            && m.poll.is_some_and(|p| p.0 < Duration::from_millis(10))
        {
            return Err(ConfigError::at_path(
                ["model", "poll"],
                "`model.poll` must be at least 10ms",
            ));
        }
        if self.inference_field.is_empty() {
            return Err(ConfigError::at(
                "inference_field",
                "`inference_field` is empty",
            ));
        }
        for name in HOOKS {
            if let Some(p) = self.hook(name)? {
                p.check(name)?;
            }
        }
        if let Some(args) = &self.inference_args
            && let Some(k) = args.keys().next()
        {
            return Err(ConfigError::at(
                "inference_args",
                format!(
                    "`inference_args`: the Burn model handlers take no extra arguments to their forward pass (got `{k}`); \
                 give settings in `model_handler.config`"
                ),
            ));
        }
        Ok(())
    }

    fn batching(&self) -> Option<Batching> {
        Some(Batching {
            max_batch_size: self.max_batch(),
            max_batch_delay: self
                .batching
                .as_ref()
                .and_then(|b| b.max_batch_delay)
                .map_or(DEFAULT_DELAY, |d| d.0),
        })
    }

    fn uses_device(&self) -> bool {
        true
    }

    fn serves(&self) -> bool {
        true
    }

    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let h = self.handler().map_err(|e| NodeError::Failed(e.message))?;
        let dev = device::resolve(ctx.resources.device).map_err(NodeError::Failed)?;
        let loader = h.loader(ctx.base_dir, dev).map_err(NodeError::Failed)?;
        let instances = ctx.resources.instances.unwrap_or(1).max(1);
        let metrics = ctx.metrics.clone();
        let load = |path: &Path, version: &str| -> Result<Serving, String> {
            let t = Instant::now();
            let first = loader.load(path)?;
            let ms = t.elapsed().as_millis() as u64;
            metrics.observe("load_model_latency_milli_secs", ms);
            metrics.set("model_byte_size", first.byte_size() as i64);
            info!(stage = %ctx.stage, model = %path.display(), version, device = %dev, instances,
                "model loaded in {ms} ms");
            Ok(Serving::new(first, instances, version))
        };
        let (default, model_id, watcher) = match (&self.model, h.path()) {
            (Some(m), _) => {
                let dir = ctx.resolve(&m.dir);
                let id = self.model_id.clone().unwrap_or_else(|| file_name(&dir));
                // the newest version that loads; broken newer ones are logged
                let mut serving = None;
                let mut refused = Vec::new();
                for (v, path) in versions(&dir).map_err(NodeError::Failed)?.into_iter().rev() {
                    match load(&path, &v.to_string()) {
                        Ok(s) => {
                            serving = Some((v, s));
                            break;
                        }
                        Err(e) => {
                            error!(stage = %ctx.stage, version = v, "model version refused: {e}");
                            refused.push(format!("version {v}: {e}"));
                        }
                    }
                }
                let Some((v, s)) = serving else {
                    return Err(NodeError::Failed(if refused.is_empty() {
                        format!(
                            "{}: no model versions (expected numbered folders such as {}/1/)",
                            dir.display(),
                            m.dir.display()
                        )
                    } else {
                        format!(
                            "{}: no version loads: {}",
                            dir.display(),
                            refused.join("; ")
                        )
                    }));
                };
                let watcher = m.watch.then(|| {
                    Watcher::start(
                        dir.clone(),
                        v,
                        m.poll.map_or(Duration::from_secs(1), |d| d.0),
                        loader.clone(),
                        instances,
                        metrics.clone(),
                        ctx.stage.to_owned(),
                    )
                });
                (Some(s), id, watcher)
            }
            (None, Some(p)) => {
                let path = ctx.resolve(&p);
                let id = self.model_id.clone().unwrap_or_else(|| model_name(&path));
                let version = path_version(&path);
                (
                    Some(load(&path, &version).map_err(NodeError::Failed)?),
                    id,
                    None,
                )
            }
            (None, None) => (None, self.model_id.clone().unwrap_or_default(), None),
        };
        if let Some(s) = &default {
            metrics.label("model_version", &s.version);
        }
        let keyed = self.keyed.as_ref().map(|k| Keyed {
            paths: k
                .models
                .iter()
                .map(|(key, p)| (key.clone(), ctx.resolve(p)))
                .collect(),
            max: k.max_models,
            key_field: k.key_field.clone(),
            loaded: VecDeque::new(),
        });
        if let Some(k) = &keyed {
            for (key, p) in &k.paths {
                if !p.exists() {
                    return Err(NodeError::Failed(format!(
                        "keyed model `{key}`: {}: no such file or folder",
                        p.display()
                    )));
                }
            }
        }
        let compile = |what| {
            self.hook(what)
                .map_err(|e| e.message)
                .and_then(|e| e.map(|e| e.compile(what, ctx.base_dir)).transpose())
                .map_err(NodeError::Failed)
        };
        let input = self
            .input
            .clone()
            .unwrap_or(InputSpec::Field("features".into()));
        let pre = compile("preprocess")?;
        if let Some(q) = ctx.requests {
            // what the protocols describe: the fields a request row carries
            let inputs = match (&pre, &input) {
                (Some(p), _) => p.fields_read(),
                (None, InputSpec::Field(f)) => vec![f.to_string()],
                (None, InputSpec::Fields(fs)) => fs.iter().map(|f| f.to_string()).collect(),
            };
            q.set_model(rill_core::serve::ServedModel {
                name: model_id.clone(),
                version: default
                    .as_ref()
                    .map(|s| s.version.clone())
                    .unwrap_or_default(),
                inputs,
                output: self.inference_field.clone(),
            });
        }
        Ok(Node::Transform(Box::new(RunInferenceNode {
            requests: ctx.requests.cloned(),
            loader,
            instances,
            default,
            model_id: model_id.into(),
            keyed,
            watcher,
            input,
            pre,
            post: compile("postprocess")?,
            // Beam YAML's place for the hook, and Beam's argument with it
            post_on_prediction: self.postprocess.is_none()
                && self.model_handler.config.get(HOOKS[1]).is_some(),
            field: self.inference_field.as_str().into(),
            max_batch: self.max_batch(),
            buckets: self.batching.as_ref().and_then(|b| b.buckets.clone()),
            cap: Arc::new(AtomicUsize::new(self.max_batch())),
            streak: Arc::new(AtomicU32::new(0)),
            metrics,
            stage: ctx.stage.to_owned(),
        })))
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// A model's name from its path: `models/iris/model.mpk` → `iris`.
fn model_name(p: &Path) -> String {
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if p.is_dir() || stem == "model" {
        let dir = if p.is_dir() {
            p
        } else {
            p.parent().unwrap_or(p)
        };
        // skip a version folder
        let dir = if path_version_of(dir).is_some() {
            dir.parent().unwrap_or(dir)
        } else {
            dir
        };
        file_name(dir)
    } else {
        stem
    }
}

fn path_version_of(dir: &Path) -> Option<u64> {
    dir.file_name()?.to_str()?.parse().ok()
}

/// The version of a model named by path: its numbered folder, else 1.
fn path_version(p: &Path) -> String {
    let dir = if p.is_dir() { Some(p) } else { p.parent() };
    dir.and_then(path_version_of).unwrap_or(1).to_string()
}

/// The numbered version folders of `dir`, oldest first.
pub fn versions(dir: &Path) -> Result<Vec<(u64, PathBuf)>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut v: Vec<(u64, PathBuf)> = rd
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u64>().ok()?, e.path())))
        .collect();
    v.sort();
    Ok(v)
}

/// The instances of one model version.
struct Serving {
    engines: Vec<Box<dyn Engine>>,
    version: String,
}

impl Serving {
    fn new(first: Box<dyn Engine>, instances: usize, version: &str) -> Serving {
        let mut engines = Vec::with_capacity(instances);
        for _ in 1..instances {
            engines.push(first.fork());
        }
        engines.push(first);
        Serving {
            engines,
            version: version.to_owned(),
        }
    }
}

struct Keyed {
    paths: IndexMap<String, PathBuf>,
    max: usize,
    key_field: Option<String>,
    /// Loaded models, most recently used first.
    loaded: VecDeque<(String, Serving)>,
}

/// Watches a model folder for new versions and loads them off the stage's
/// thread; the stage swaps them in between batches.
struct Watcher {
    rx: Receiver<(u64, Serving)>,
    stop: Arc<AtomicBool>,
}

impl Watcher {
    fn start(
        dir: PathBuf,
        current: u64,
        poll: Duration,
        loader: Arc<dyn Loader>,
        instances: usize,
        metrics: Arc<NodeMetrics>,
        stage: String,
    ) -> Watcher {
        let (tx, rx): (Sender<(u64, Serving)>, _) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{stage}-watch"))
            .spawn(move || {
                let mut newest = current;
                // a refused version is tried again only when its files change
                let mut refused: Option<(u64, Option<std::time::SystemTime>)> = None;
                while !stopped.load(Relaxed) {
                    std::thread::sleep(poll);
                    let Ok(vs) = versions(&dir) else { continue };
                    let Some((v, path)) = vs.last().cloned() else {
                        continue;
                    };
                    if v <= newest {
                        continue;
                    }
                    let stamp = newest_mtime(&path);
                    if refused == Some((v, stamp)) {
                        continue;
                    }
                    // let a copy in progress finish
                    std::thread::sleep(poll.min(Duration::from_millis(200)));
                    if newest_mtime(&path) != stamp {
                        continue;
                    }
                    let t = Instant::now();
                    match loader.load(&path) {
                        Ok(first) => {
                            let ms = t.elapsed().as_millis() as u64;
                            metrics.observe("load_model_latency_milli_secs", ms);
                            metrics.set("model_byte_size", first.byte_size() as i64);
                            info!(stage = %stage, version = v, "new model version loaded in {ms} ms; swapping it in");
                            newest = v;
                            if tx
                                .send((v, Serving::new(first, instances, &v.to_string())))
                                .is_err()
                            {
                                break;
                            }
                        }
                        Err(e) => {
                            error!(stage = %stage, version = v,
                                "model version refused, the current version keeps serving: {e}");
                            metrics.count("refused_model_versions", 1);
                            refused = Some((v, stamp));
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            warn!("cannot start the model watcher: {e}");
        }
        Watcher { rx, stop }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max()
}

struct RunInferenceNode {
    /// The stage's request queue (`serve:`): granted requests run in the
    /// same passes as the stream's records and are answered, never emitted.
    requests: Option<Arc<rill_core::serve::RequestQueue>>,
    loader: Arc<dyn Loader>,
    instances: usize,
    default: Option<Serving>,
    model_id: rill_core::Text,
    keyed: Option<Keyed>,
    watcher: Option<Watcher>,
    input: InputSpec,
    pre: Option<Compiled>,
    post: Option<Compiled>,
    /// `postprocess` sees Beam's `PredictionResult` (`example`,
    /// `inference`, `model_id`, `model_version`) instead of the output
    /// record: it was written in `model_handler.config`, as Beam YAML does.
    post_on_prediction: bool,
    field: rill_core::Name,
    max_batch: usize,
    buckets: Option<Vec<usize>>,
    /// The batch size now allowed (halved on out-of-memory, grows back).
    cap: Arc<AtomicUsize>,
    streak: Arc<AtomicU32>,
    metrics: Arc<NodeMetrics>,
    stage: String,
}

/// Which model serves a record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Which {
    Default,
    Key(rill_core::Text),
}

impl RunInferenceNode {
    fn example<'r>(&self, r: &'r Record) -> Result<Cow<'r, Value>, String> {
        if let Some(pre) = &self.pre {
            return pre
                .eval(r)
                .map(Cow::Owned)
                .map_err(|e| format!("preprocess: {e}"));
        }
        match &self.input {
            InputSpec::Field(f) => r
                .get(f)
                .map(Cow::Borrowed)
                .ok_or_else(|| format!("the record has no field `{f}` (the model's input)")),
            InputSpec::Fields(fs) => fs
                .iter()
                .map(|f| {
                    r.get(f)
                        .cloned()
                        .ok_or_else(|| format!("the record has no field `{f}` (a model input)"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|v| Cow::Owned(Value::List(v))),
        }
    }

    fn which(&self, r: &Record) -> Result<Which, String> {
        let Some(k) = &self.keyed else {
            return Ok(Which::Default);
        };
        let key = match &k.key_field {
            Some(f) => r.get(f).map(|v| match v {
                Value::String(s) => s.clone(),
                other => rill_core::json::value_to_json(other).to_string().into(),
            }),
            None => r.key.clone(),
        };
        match key {
            Some(key) if k.paths.contains_key(key.as_str()) => Ok(Which::Key(key)),
            _ if self.default.is_some() => Ok(Which::Default),
            Some(key) => Err(format!("no model for key `{key}`")),
            None => Err("the record has no key to choose its model by".into()),
        }
    }

    /// The model serving `w`, loaded (and the least recently used one
    /// evicted) if needed.
    fn serving(&mut self, w: &Which) -> Result<&mut Serving, String> {
        match w {
            Which::Default => self
                .default
                .as_mut()
                .ok_or_else(|| "no default model".to_owned()),
            Which::Key(key) => {
                let k = self.keyed.as_mut().expect("keyed");
                if let Some(i) = k.loaded.iter().position(|(n, _)| n == key) {
                    let e = k.loaded.remove(i).expect("present");
                    k.loaded.push_front(e);
                } else {
                    let path = &k.paths[key.as_str()];
                    let t = Instant::now();
                    let first = self.loader.load(path)?;
                    let ms = t.elapsed().as_millis() as u64;
                    self.metrics.observe("load_model_latency_milli_secs", ms);
                    self.metrics
                        .set("model_byte_size", first.byte_size() as i64);
                    self.metrics.count("model_loads", 1);
                    let version = path_version(path);
                    k.loaded.push_front((
                        key.to_string(),
                        Serving::new(first, self.instances, &version),
                    ));
                    while k.loaded.len() > k.max {
                        if let Some((evicted, _)) = k.loaded.pop_back() {
                            self.metrics.count("model_evictions", 1);
                            info!(stage = %self.stage, key = %evicted, "model evicted (least recently used)");
                        }
                    }
                }
                Ok(&mut k.loaded[0].1)
            }
        }
    }

    /// Splits `idx` into forward passes: by length bucket, then by the
    /// allowed batch size.
    fn chunks(&self, idx: Vec<usize>, examples: &[Option<Cow<'_, Value>>]) -> Vec<Vec<usize>> {
        let cap = self.cap.load(Relaxed).clamp(1, self.max_batch);
        let groups: Vec<Vec<usize>> = match &self.buckets {
            None => vec![idx],
            Some(b) => {
                let mut groups: Vec<Vec<usize>> = vec![Vec::new(); b.len() + 1];
                for i in idx {
                    let len = examples[i]
                        .as_ref()
                        .and_then(|e| self.loader.example_len(e))
                        .unwrap_or(0);
                    let g = b.iter().position(|&edge| len <= edge).unwrap_or(b.len());
                    groups[g].push(i);
                }
                groups
            }
        };
        groups
            .into_iter()
            .filter(|g| !g.is_empty())
            .flat_map(|g| g.chunks(cap).map(<[usize]>::to_vec).collect::<Vec<_>>())
            .collect()
    }
}

/// What every forward pass of a call shares: the batch size limits and the
/// out-of-memory back-off state, the metrics.
#[derive(Clone, Copy)]
struct Passes<'a> {
    max_batch: usize,
    cap: &'a AtomicUsize,
    streak: &'a AtomicU32,
    metrics: &'a NodeMetrics,
    stage: &'a str,
}

/// Runs one forward pass (or, on out-of-memory, halves of it) and hands
/// each result to `put` with its record's index.
fn run_chunk(
    engine: &mut dyn Engine,
    chunk: Vec<usize>,
    examples: &[Option<Cow<'_, Value>>],
    p: &Passes<'_>,
    put: &mut dyn FnMut(usize, Result<Value, String>),
) {
    let Passes {
        max_batch,
        cap,
        streak,
        metrics,
        stage,
    } = *p;
    let mut todo = VecDeque::from([chunk]);
    while let Some(part) = todo.pop_front() {
        let refs: Vec<&Value> = part
            .iter()
            .map(|&i| examples[i].as_deref().expect("only examples are run"))
            .collect();
        let t = Instant::now();
        match engine.infer(&refs) {
            Ok(values) => {
                metrics.observe(
                    "inference_batch_latency_micro_secs",
                    t.elapsed().as_micros() as u64,
                );
                metrics.observe("inference_request_batch_size", part.len() as u64);
                metrics.count("num_inferences", part.len() as u64);
                let c = cap.load(Relaxed);
                if c < max_batch && streak.fetch_add(1, Relaxed) + 1 >= GROW_AFTER {
                    streak.store(0, Relaxed);
                    let grown = (c * 2).min(max_batch);
                    cap.store(grown, Relaxed);
                    info!(stage, "batch size grows back to {grown}");
                }
                for (i, v) in part.into_iter().zip(values) {
                    put(i, Ok(v));
                }
            }
            Err(InferError::Example(e)) => {
                let mut rest = part;
                let bad = rest.remove(e.index.min(rest.len() - 1));
                put(bad, Err(e.msg));
                if !rest.is_empty() {
                    todo.push_front(rest);
                }
            }
            Err(InferError::OutOfMemory(m)) if part.len() > 1 => {
                metrics.count("failed_batches", 1);
                let half = part.len() / 2;
                cap.fetch_min(half, Relaxed);
                streak.store(0, Relaxed);
                warn!(
                    stage,
                    "out of memory on a batch of {}: retrying as two of {half} and less ({m})",
                    part.len()
                );
                let (a, b) = part.split_at(half);
                todo.push_front(b.to_vec());
                todo.push_front(a.to_vec());
            }
            Err(e) => {
                metrics.count("failed_batches", 1);
                let msg = format!("inference failed: {e}");
                for i in part {
                    put(i, Err(msg.clone()));
                }
            }
        }
    }
}

impl Transform for RunInferenceNode {
    fn process(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        // a new version loaded in the background is swapped in between batches
        if let Some(w) = &self.watcher {
            while let Ok((v, s)) = w.rx.try_recv() {
                let old = self.default.as_ref().map(|s| s.version.clone());
                info!(stage = %self.stage, from = ?old, to = v, "model version swapped in");
                self.metrics.label("model_version", &s.version);
                self.metrics.count("model_swaps", 1);
                if let Some(q) = &self.requests {
                    q.set_version(&s.version);
                }
                self.default = Some(s);
            }
        }
        // granted requests ride in the same batch, after the stream's records
        let mut batch = batch;
        let n_stream = batch.len();
        let mut requests = match &self.requests {
            Some(q) => q.take_granted(),
            None => Vec::new(),
        };
        let mut spans = Vec::with_capacity(requests.len());
        for r in &mut requests {
            let rows = r.take_rows();
            spans.push(rows.len());
            batch.extend(rows);
        }
        let n = batch.len();
        let mut results: Vec<Option<Result<Value, String>>> = vec![None; n];
        let mut groups: IndexMap<Which, Vec<usize>> = IndexMap::new();
        let examples: Vec<Option<Cow<'_, Value>>> = batch
            .iter()
            .enumerate()
            .map(
                |(i, r)| match self.example(r).and_then(|e| Ok((e, self.which(r)?))) {
                    Ok((e, w)) => {
                        match groups.last_mut() {
                            // unkeyed stages (and runs of one key) skip the hashing
                            Some((last, idx)) if *last == w => idx.push(i),
                            _ => {
                                // room for the whole batch in the first group only
                                let room = if groups.is_empty() { n } else { 0 };
                                groups
                                    .entry(w)
                                    .or_insert_with(|| Vec::with_capacity(room))
                                    .push(i)
                            }
                        }
                        Some(e)
                    }
                    Err(msg) => {
                        results[i] = Some(Err(msg));
                        None
                    }
                },
            )
            .collect();
        // (model, its version) for each group run
        let mut versions: Vec<(Which, rill_core::Text)> = Vec::new();
        for (w, idx) in groups {
            let chunks = self.chunks(idx.clone(), &examples);
            let (max_batch, stage) = (self.max_batch, self.stage.clone());
            let (cap, streak, metrics) =
                (self.cap.clone(), self.streak.clone(), self.metrics.clone());
            let serving = match self.serving(&w) {
                Ok(s) => s,
                Err(e) => {
                    let msg = format!("cannot load the model: {e}");
                    for i in idx {
                        results[i] = Some(Err(msg.clone()));
                    }
                    continue;
                }
            };
            versions.push((w, serving.version.as_str().into()));
            let passes = Passes {
                max_batch,
                cap: &cap,
                streak: &streak,
                metrics: &metrics,
                stage: &stage,
            };
            if serving.engines.len() == 1 || chunks.len() == 1 {
                let e = serving.engines[0].as_mut();
                for c in chunks {
                    run_chunk(e, c, &examples, &passes, &mut |i, r| results[i] = Some(r));
                }
            } else {
                // instances take chunks off one queue, in parallel (on the
                // stage's compute pool when it has `cpu_threads`)
                let queue = Mutex::new(VecDeque::from(chunks));
                let done = Mutex::new(Vec::with_capacity(n));
                rayon::scope(|s| {
                    for e in serving.engines.iter_mut() {
                        let (queue, done, examples, passes) = (&queue, &done, &examples, &passes);
                        s.spawn(move |_| {
                            loop {
                                let Some(c) = queue.lock().unwrap().pop_front() else {
                                    break;
                                };
                                let mut r = Vec::with_capacity(c.len());
                                run_chunk(e.as_mut(), c, examples, passes, &mut |i, v| {
                                    r.push((i, v))
                                });
                                done.lock().unwrap().extend(r);
                            }
                        });
                    }
                });
                for (i, r) in done.into_inner().unwrap() {
                    results[i] = Some(r);
                }
            }
        }
        // Beam's postprocess sees the example the model was given
        let mut kept: Vec<Option<Value>> = if self.post_on_prediction {
            examples
                .into_iter()
                .map(|e| e.map(Cow::into_owned))
                .collect()
        } else {
            drop(examples);
            Vec::new()
        };
        out.reserve(n_stream);
        let mut answers: Vec<rill_core::serve::RowResult> = Vec::with_capacity(n - n_stream);
        for (i, (r, res)) in batch.into_iter().zip(results).enumerate() {
            let done = self.finish_row(i, r, res, &mut kept, &versions);
            if i >= n_stream {
                // a request's row: answered, never emitted nor dead-lettered
                answers.push(done.map_err(|(_, msg)| msg));
                continue;
            }
            match done {
                Ok(r) => out.emit(r),
                Err((r, msg)) => out.fail(r, msg),
            }
        }
        if let Some(q) = &self.requests {
            let mut answers = answers.into_iter();
            for (req, len) in requests.into_iter().zip(spans) {
                let rows: Vec<_> = answers.by_ref().take(len).collect();
                q.served(len);
                req.answer(Ok(rows));
            }
        }
        Ok(())
    }
}

impl RunInferenceNode {
    /// Row `i` of a pass, finished: the record with the inference,
    /// `model_id` and `model_version` (after `postprocess`), or the record
    /// and why it failed. The same for the stream's records and for
    /// requests' rows.
    fn finish_row(
        &self,
        i: usize,
        mut r: Record,
        res: Option<Result<Value, String>>,
        kept: &mut [Option<Value>],
        versions: &[(Which, rill_core::Text)],
    ) -> Result<Record, (Record, String)> {
        let v = match res {
            Some(Ok(v)) => v,
            Some(Err(msg)) => return Err((r, msg)),
            None => return Err((r, format!("record {i} of the batch got no result"))),
        };
        let w = if self.keyed.is_some() {
            self.which(&r).unwrap_or(Which::Default)
        } else {
            Which::Default
        };
        let version = versions
            .iter()
            .find(|(x, _)| *x == w)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let id: rill_core::Text = match &w {
            Which::Key(k) => format!("{}/{k}", self.model_id).into(),
            Which::Default => self.model_id.clone(),
        };
        // Beam's postprocess sees the example the model was given
        let post_value = match &self.post {
            Some(post) if self.post_on_prediction => {
                let prediction = Record::default()
                    .with(
                        "example",
                        kept.get_mut(i)
                            .and_then(Option::take)
                            .unwrap_or(Value::Null),
                    )
                    .with("inference", v.clone())
                    .with("model_id", Value::String(id.clone()))
                    .with("model_version", Value::String(version.clone()));
                Some(post.eval(&prediction))
            }
            _ => None,
        };
        r.fields.reserve(3);
        r.fields.insert(self.field.clone(), v);
        r.fields.insert(MODEL_ID, Value::String(id));
        r.fields.insert(MODEL_VERSION, Value::String(version));
        match post_value.or_else(|| self.post.as_ref().map(|p| p.eval(&r))) {
            Some(Ok(v)) => {
                r.fields.insert(self.field.clone(), v);
                Ok(r)
            }
            Some(Err(e)) => Err((r, format!("postprocess: {e}"))),
            None => Ok(r),
        }
    }
}

/// The device a RunInference stage resolves to (for messages and tests).
pub fn stage_device(d: rill_core::spec::Device) -> Result<Dev, String> {
    device::resolve(d)
}
