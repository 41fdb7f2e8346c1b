//! Pipeline specs: the Beam-YAML-shaped pipeline file, parsed, checked and
//! resolved into a graph of [`Stage`]s.
//!
//! Everything a user can get wrong is reported as a [`SpecError`] with the
//! file, line and column and what was expected; [`load`] collects every error
//! it can find rather than stopping at the first.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::node::{DynNode, NodeKind};
use crate::registry::{Registry, closest};
use crate::units::{ByteSize, Dur};
use crate::yaml::{self, Mark, YNode, YValue, YamlError, from_node};

/// A problem in a pipeline file, with where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecError {
    pub file: Option<String>,
    pub mark: Option<Mark>,
    pub msg: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.mark) {
            (Some(file), Some(m)) => write!(f, "{file}:{m}: {}", self.msg),
            (Some(file), None) => write!(f, "{file}: {}", self.msg),
            (None, Some(m)) => write!(f, "{m}: {}", self.msg),
            (None, None) => f.write_str(&self.msg),
        }
    }
}

/// Every problem found in a pipeline file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl SpecErrors {
    fn single(file: Option<&str>, mark: Option<Mark>, msg: impl Into<String>) -> SpecErrors {
        SpecErrors(vec![SpecError {
            file: file.map(str::to_owned),
            mark,
            msg: msg.into(),
        }])
    }
}

/// Delivery guarantee between stages (see `docs/runtime-semantics.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    #[default]
    ExactlyOnce,
    AtLeastOnce,
    BestEffort,
}

/// What an input queue does when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// The producer waits (credit-based backpressure across processes).
    #[default]
    Block,
    /// The oldest queued records are dropped and counted.
    DropOldest,
}

/// An input queue: its size in records and its policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSpec {
    #[serde(default = "default_queue_size")]
    pub size: usize,
    #[serde(default)]
    pub when_full: WhenFull,
}

fn default_queue_size() -> usize {
    DEFAULT_QUEUE_SIZE
}

/// Records an input may hold unacknowledged by default.
pub const DEFAULT_QUEUE_SIZE: usize = 4096;

impl Default for QueueSpec {
    fn default() -> Self {
        QueueSpec {
            size: DEFAULT_QUEUE_SIZE,
            when_full: WhenFull::Block,
        }
    }
}

/// One input of a stage: the producing stage and which of its outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub stage: String,
    /// `None` for the main output, else a named output (error outputs too).
    pub output: Option<String>,
    pub queue: QueueSpec,
    /// Overrides `options.delivery` for this input (only `best_effort` is
    /// meaningful: the consumer takes what arrives, asks for no replay and
    /// skips gaps).
    pub delivery: Option<Delivery>,
    pub mark: Mark,
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.output {
            Some(o) => write!(f, "{}.{}", self.stage, o),
            None => f.write_str(&self.stage),
        }
    }
}

/// Restart strategy of a supervised stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Restart only the failed stage.
    #[default]
    OneForOne,
    /// Restart the failed stage and every stage downstream of it.
    RestForOne,
    /// Restart every stage.
    OneForAll,
}

/// Exponential backoff between restarts.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    #[serde(default = "d100ms")]
    pub initial: Dur,
    #[serde(default = "d10s")]
    pub max: Dur,
    #[serde(default = "two")]
    pub multiplier: f64,
    /// Random extra delay, as a fraction of the delay (0.0..=1.0).
    #[serde(default)]
    pub jitter: f64,
}

fn d100ms() -> Dur {
    Dur(Duration::from_millis(100))
}
fn d10s() -> Dur {
    Dur(Duration::from_secs(10))
}
fn d60s() -> Dur {
    Dur(Duration::from_secs(60))
}
fn two() -> f64 {
    2.0
}
fn three() -> u32 {
    3
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: d100ms(),
            max: d10s(),
            multiplier: 2.0,
            jitter: 0.0,
        }
    }
}

impl Backoff {
    /// The delay before restart number `n` (1-based), without jitter.
    pub fn delay(&self, n: u32) -> Duration {
        let f = self
            .multiplier
            .max(1.0)
            .powi(n.saturating_sub(1).min(64) as i32);
        let d = self.initial.0.as_secs_f64() * f;
        Duration::from_secs_f64(d.min(self.max.0.as_secs_f64()))
    }
}

/// A stage's restart policy (OTP-style restart intensity).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    #[serde(default)]
    pub strategy: Strategy,
    /// At most this many restarts...
    #[serde(default = "three")]
    pub max_restarts: u32,
    /// ...within this window; one more fails the pipeline.
    #[serde(default = "d60s")]
    pub within: Dur,
    #[serde(default)]
    pub backoff: Backoff,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            strategy: Strategy::OneForOne,
            max_restarts: 3,
            within: d60s(),
            backoff: Backoff::default(),
        }
    }
}

/// Where a stage runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(u32),
    /// A GPU if one is present and rill was built with `cuda`, else the CPU.
    Auto,
}

impl<'de> Deserialize<'de> for Device {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "cpu" => Ok(Device::Cpu),
            "auto" => Ok(Device::Auto),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(Device::Cuda(n)),
                _ => Err(serde::de::Error::custom(format!(
                    "unknown device `{other}`: expected `cpu`, `cuda:N` or `auto`"
                ))),
            },
        }
    }
}

/// A stage's budget (DESIGN.md `resources`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default)]
    pub device: Device,
    pub cpu_threads: Option<usize>,
    pub memory: Option<ByteSize>,
    pub gpu_memory: Option<ByteSize>,
    pub instances: Option<usize>,
}

/// Beam's `resource_hints`, mapped onto [`Resources`].
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResourceHints {
    min_ram: Option<ByteSize>,
    accelerator: Option<String>,
    cpu_count: Option<usize>,
}

/// `error_handling` inside a stage's `config`, as in Beam YAML.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorHandling {
    /// Name of the output that receives dead letters (`stage.NAME`).
    pub output: String,
    /// Tries a failed record again before it becomes a dead letter.
    #[serde(default)]
    pub retries: Retries,
    /// Fails the pipeline when more than this share of the stage's records
    /// fail (Beam's `threshold`), once 100 records have come in, and at the
    /// end of the input.
    #[serde(default, alias = "error_threshold")]
    pub threshold: Option<f64>,
}

/// A stage's watchdog: `timeout: 2s` limits each call of its node (one
/// batch, one poll); `timeout: {call: 2s, startup: 5m}` also limits how long
/// building the node may take (a model load). A stage past a limit is
/// stopped and restarted by its policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub call: Option<Duration>,
    pub startup: Duration,
}

/// How long building a node may take unless `timeout.startup` says.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(300);

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            call: None,
            startup: DEFAULT_STARTUP_TIMEOUT,
        }
    }
}

impl<'de> Deserialize<'de> for Timeouts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Timeouts;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as `2s`, or {call: DURATION, startup: DURATION}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Timeouts {
                    call: Some(crate::units::parse_duration(v).map_err(E::custom)?),
                    ..Timeouts::default()
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Timeouts::default();
                while let Some(k) = m.next_key::<String>()? {
                    match k.as_str() {
                        "call" => out.call = Some(m.next_value::<Dur>()?.0),
                        "startup" => out.startup = m.next_value::<Dur>()?.0,
                        other => {
                            return Err(serde::de::Error::unknown_field(
                                other,
                                &["call", "startup"],
                            ));
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }
}

/// `retries: {max: N, backoff: DURATION}`: a failed record is tried up to
/// `max` more times, `backoff` apart, before it becomes a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    #[serde(default)]
    pub max: u32,
    #[serde(default)]
    pub backoff: Dur,
}

/// Zenoh settings of a process.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZenohOptions {
    /// `peer` (default) or `client`.
    #[serde(default = "peer")]
    pub mode: String,
    /// Endpoints to listen on, e.g. `tcp/127.0.0.1:7447`.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Endpoints to connect to.
    #[serde(default)]
    pub connect: Vec<String>,
    /// Mutual TLS for `tls/` endpoints.
    #[serde(default)]
    pub tls: Option<TlsOptions>,
    /// Zenoh's access control, written as Zenoh's own configuration
    /// writes it (`enabled`, `default_permission`, `rules`, `subjects`,
    /// `policies`), passed to Zenoh as it is.
    #[serde(default)]
    pub access_control: Option<serde_json::Value>,
}

/// Mutual TLS: the process presents `certificate` (and proves it holds
/// `private_key`) on every link it opens or accepts, and takes only peers
/// whose certificate `root_ca` signed. Paths are relative to the working
/// directory of `rill run`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    pub root_ca: PathBuf,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

fn peer() -> String {
    "peer".into()
}
fn default_listen() -> Vec<String> {
    vec!["tcp/127.0.0.1:0".into()]
}

impl Default for ZenohOptions {
    fn default() -> Self {
        ZenohOptions {
            mode: peer(),
            listen: default_listen(),
            connect: Vec::new(),
            tls: None,
            access_control: None,
        }
    }
}

/// The pipeline's `options`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    #[serde(default)]
    pub delivery: Delivery,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default)]
    pub zenoh: ZenohOptions,
    /// Most records per message between stages.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Default input queue for every input that sets none.
    #[serde(default)]
    pub queue: QueueSpec,
    /// Default restart policy for every stage that sets none.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Beam's `streaming` option. rill runs bounded and unbounded sources
    /// with the same engine, so it changes nothing; it is accepted so Beam
    /// pipelines run unchanged.
    #[serde(default)]
    pub streaming: Option<bool>,
    /// How often a stage commits (positions, state and outputs in one
    /// durable write): after this many records or this much time, whichever
    /// comes first, and whenever its input runs dry.
    #[serde(default)]
    pub checkpoint_interval: CheckpointInterval,
}

/// `options.checkpoint_interval`: `{records: N, time: T}`, or just a
/// duration (`100ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointInterval {
    pub records: u64,
    pub time: Duration,
}

impl Default for CheckpointInterval {
    fn default() -> Self {
        CheckpointInterval {
            records: 16_384,
            time: Duration::from_millis(100),
        }
    }
}

impl<'de> Deserialize<'de> for CheckpointInterval {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = CheckpointInterval;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as `100ms`, or {records: N, time: DURATION}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                let time = crate::units::parse_duration(v).map_err(E::custom)?;
                Ok(CheckpointInterval {
                    time,
                    ..CheckpointInterval::default()
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = CheckpointInterval::default();
                while let Some(k) = m.next_key::<String>()? {
                    match k.as_str() {
                        "records" => out.records = m.next_value()?,
                        "time" => out.time = m.next_value::<Dur>()?.0,
                        other => {
                            return Err(serde::de::Error::unknown_field(
                                other,
                                &["records", "time"],
                            ));
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(".rill/state")
}
fn default_batch() -> usize {
    256
}

impl Default for Options {
    fn default() -> Self {
        Options {
            delivery: Delivery::default(),
            state_dir: default_state_dir(),
            zenoh: ZenohOptions::default(),
            batch_size: default_batch(),
            queue: QueueSpec::default(),
            restart: RestartPolicy::default(),
            streaming: None,
            checkpoint_interval: CheckpointInterval::default(),
        }
    }
}

/// One resolved stage of a pipeline.
#[derive(Debug, Clone)]
pub struct Stage {
    /// The stage's name (explicit, or derived from its type).
    pub name: String,
    /// The YAML `type`.
    pub type_name: String,
    pub kind: NodeKind,
    pub node: Arc<dyn DynNode>,
    pub inputs: Vec<Input>,
    /// Named outputs (the error output included).
    pub outputs: Vec<String>,
    pub error_output: Option<String>,
    /// Retries of a failed record before it is dead-lettered.
    pub retries: Retries,
    /// Share of failed records past which the pipeline fails.
    pub error_threshold: Option<f64>,
    /// Watchdog limits.
    pub timeout: Timeouts,
    pub restart: RestartPolicy,
    pub resources: Resources,
    pub mark: Mark,
}

impl Stage {
    /// The stage name as it appears in Zenoh keys: characters other than
    /// letters, digits, `_`, `-` and `.` become `_`.
    pub fn key_name(&self) -> String {
        key_safe(&self.name)
    }
}

/// Makes a name safe for one Zenoh key chunk.
pub fn key_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A checked pipeline: stages in topological order.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub file: Option<PathBuf>,
    pub stages: Vec<Stage>,
    pub options: Options,
}

impl Pipeline {
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// (stage, input index) pairs that read `output` of `producer`.
    pub fn consumers(&self, producer: &str, output: Option<&str>) -> Vec<(&Stage, usize)> {
        let mut v = Vec::new();
        for s in &self.stages {
            for (i, inp) in s.inputs.iter().enumerate() {
                if inp.stage == producer && inp.output.as_deref() == output {
                    v.push((s, i));
                }
            }
        }
        v
    }

    /// Names of the stages downstream of `name` (not including it).
    pub fn downstream(&self, name: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo = vec![name.to_owned()];
        while let Some(n) = todo.pop() {
            for s in &self.stages {
                if s.inputs.iter().any(|i| i.stage == n) && out.insert(s.name.clone()) {
                    todo.push(s.name.clone());
                }
            }
        }
        out
    }
}

/// What the machine offers, for checking stage budgets.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub cpus: usize,
    pub memory: u64,
    /// Memory of each CUDA device rill can use (empty without `cuda`).
    pub gpus: Vec<u64>,
    /// The file the machine was described in (`rill validate --machine`);
    /// `None` for this machine.
    pub described: Option<String>,
}

/// A machine as `rill machine` prints it and `--machine` reads it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineFile {
    /// CPU cores.
    pub cpus: usize,
    /// Memory, in bytes or as a size (`128GiB`).
    pub memory: Bytes,
    /// The CUDA devices, `cuda:0` first.
    #[serde(default)]
    pub gpus: Vec<GpuFile>,
}

/// One CUDA device of a [`MachineFile`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuFile {
    #[serde(default)]
    pub name: Option<String>,
    /// Memory, in bytes or as a size (`80GiB`).
    pub memory: Bytes,
}

/// Bytes as a number, or a size (`80GiB`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bytes {
    Count(u64),
    Size(String),
}

impl Bytes {
    fn get(&self) -> Result<u64, String> {
        match self {
            Bytes::Count(n) => Ok(*n),
            Bytes::Size(s) => crate::units::parse_size(s),
        }
    }
}

impl Machine {
    /// How messages name the machine.
    fn what(&self) -> String {
        match &self.described {
            None => "this machine".into(),
            Some(f) => format!("the machine of {f}"),
        }
    }

    /// Reads a machine described as JSON (what `rill machine` prints).
    pub fn from_json(text: &str, file: &str) -> Result<Machine, String> {
        let m: MachineFile = serde_json::from_str(text)
            .map_err(|e| format!("{file}: not a machine description: {e}"))?;
        if m.cpus == 0 {
            return Err(format!("{file}: `cpus` must be at least 1"));
        }
        let at = |what: &str, e: String| format!("{file}: `{what}`: {e}");
        Ok(Machine {
            cpus: m.cpus,
            memory: m.memory.get().map_err(|e| at("memory", e))?,
            gpus: m
                .gpus
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    g.memory
                        .get()
                        .map_err(|e| at(&format!("gpus[{i}].memory"), e))
                })
                .collect::<Result<_, _>>()?,
            described: Some(file.to_owned()),
        })
    }

    /// Reads the CPU count and total memory of this machine.
    pub fn detect() -> Machine {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map_or(u64::MAX, |kb| kb * 1024);
        Machine {
            cpus,
            memory,
            gpus: Vec::new(),
            described: None,
        }
    }
}

/// Loads, parses and checks a pipeline file.
pub fn load(path: &Path, registry: &Registry, machine: &Machine) -> Result<Pipeline, SpecErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        SpecErrors::single(
            Some(&file),
            None,
            format!("cannot read the pipeline file: {e}"),
        )
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pipeline".into());
    let mut p = parse_str(&text, &stem, Some(&file), registry, machine)?;
    p.file = Some(path.to_owned());
    Ok(p)
}

/// Parses and checks pipeline YAML text. `default_name` names the pipeline
/// when the YAML does not; `file` is used in error messages.
pub fn parse_str(
    text: &str,
    default_name: &str,
    file: Option<&str>,
    registry: &Registry,
    machine: &Machine,
) -> Result<Pipeline, SpecErrors> {
    let mut cx = Cx {
        file: file.map(str::to_owned),
        errors: Vec::new(),
    };
    let root = yaml::parse(text).map_err(|e| SpecErrors::single(file, e.mark, e.msg))?;
    let pipeline = parse_root(&mut cx, &root, default_name, registry, machine);
    match pipeline {
        Some(p) if cx.errors.is_empty() => Ok(p),
        _ => {
            if cx.errors.is_empty() {
                cx.errors.push(SpecError {
                    file: cx.file.clone(),
                    mark: None,
                    msg: "invalid pipeline".into(),
                });
            }
            Err(SpecErrors(cx.errors))
        }
    }
}

struct Cx {
    file: Option<String>,
    errors: Vec<SpecError>,
}

impl Cx {
    fn err(&mut self, mark: Mark, msg: impl Into<String>) {
        self.errors.push(SpecError {
            file: self.file.clone(),
            mark: Some(mark),
            msg: msg.into(),
        });
    }

    fn yaml(&mut self, e: YamlError, fallback: Mark) {
        self.errors.push(SpecError {
            file: self.file.clone(),
            mark: Some(e.mark.unwrap_or(fallback)),
            msg: e.msg,
        });
    }

    /// Checks that a mapping has only `allowed` keys.
    fn keys(&mut self, node: &YNode, what: &str, allowed: &[&str]) -> bool {
        let YValue::Map(entries) = &node.value else {
            self.err(
                node.mark,
                format!("{what} must be a mapping, found {}", node.kind()),
            );
            return false;
        };
        let mut ok = true;
        for (k, _) in entries {
            let key = k.key_text();
            if !allowed.contains(&key.as_str()) {
                let hint = closest(&key, allowed.iter().copied())
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                self.err(
                    k.mark,
                    format!(
                        "unknown key `{key}` in {what}{hint}; expected one of: {}",
                        allowed.join(", ")
                    ),
                );
                ok = false;
            }
        }
        ok
    }

    fn parse<T: serde::de::DeserializeOwned>(&mut self, node: &YNode) -> Option<T> {
        match from_node(node) {
            Ok(v) => Some(v),
            Err(e) => {
                self.yaml(e, node.mark);
                None
            }
        }
    }
}

const TOP_KEYS: &[&str] = &["pipeline", "options"];
const PIPELINE_KEYS: &[&str] = &[
    "name",
    "type",
    "transforms",
    "source",
    "sink",
    "extra_transforms",
    "resource_hints",
    "resources",
    "restart",
];
const TRANSFORM_KEYS: &[&str] = &[
    "type",
    "name",
    "input",
    "config",
    "windowing",
    "resources",
    "resource_hints",
    "restart",
    "timeout",
];

/// A transform entry before graph resolution.
struct Raw<'a> {
    node: &'a YNode,
    name: Option<(String, Mark)>,
    type_name: String,
    type_mark: Mark,
    inputs: Option<Vec<Input>>,
    dyn_node: Option<Arc<dyn DynNode>>,
    error_output: Option<String>,
    retries: Retries,
    error_threshold: Option<f64>,
    timeout: Timeouts,
    restart: RestartPolicy,
    resources: Resources,
}

fn parse_root(
    cx: &mut Cx,
    root: &YNode,
    default_name: &str,
    registry: &Registry,
    machine: &Machine,
) -> Option<Pipeline> {
    if root.is_null() {
        cx.err(
            root.mark,
            "the file is empty: expected a mapping with `pipeline:` (and optionally `options:`)",
        );
        return None;
    }
    if !cx.keys(root, "the top level", TOP_KEYS) {
        return None;
    }
    let Some(pnode) = root.get("pipeline") else {
        cx.err(
            root.mark,
            "missing `pipeline:`: expected `pipeline: {transforms: [...]}`",
        );
        return None;
    };
    let options: Options = match root.get("options") {
        Some(o) if !o.is_null() => cx.parse(o)?,
        _ => Options::default(),
    };
    check_options(cx, &options, root.get("options"));
    if !cx.keys(pnode, "`pipeline`", PIPELINE_KEYS) {
        return None;
    }

    let name = match pnode.get("name") {
        Some(n) => match n.as_str() {
            Some(s) if is_valid_pipeline_name(s) => s.to_owned(),
            _ => {
                cx.err(
                    n.mark,
                    "pipeline `name` must be letters, digits, `_` or `-`",
                );
                return None;
            }
        },
        None => name_of_stem(default_name),
    };

    let chain = match pnode.get("type") {
        None => false,
        Some(t) => match t.as_str() {
            Some("chain") => true,
            Some("composite") => false,
            _ => {
                cx.err(
                    t.mark,
                    format!(
                        "unknown pipeline type {}: expected `chain` or `composite`",
                        t.to_json()
                    ),
                );
                return None;
            }
        },
    };
    if !chain {
        for k in ["source", "sink", "extra_transforms"] {
            if let Some((kn, _)) = pnode.entry(k) {
                cx.err(kn.mark, format!("`{k}` is only allowed with `type: chain`"));
            }
        }
    }

    // pipeline-level defaults
    let mut default_restart = options.restart;
    if let Some(r) = pnode.get("restart") {
        default_restart = cx.parse(r).unwrap_or(default_restart);
    }
    let mut default_resources = Resources::default();
    if let Some(r) = pnode.get("resources") {
        default_resources = cx.parse(r).unwrap_or_default();
    }
    if let Some(h) = pnode.get("resource_hints")
        && let Some(hints) = cx.parse::<ResourceHints>(h)
    {
        apply_hints(&mut default_resources, &hints);
    }

    let Some(tnode) = pnode.get("transforms") else {
        cx.err(
            pnode.mark,
            "missing `transforms:`: expected a list of transforms",
        );
        return None;
    };
    let YValue::Seq(items) = &tnode.value else {
        cx.err(
            tnode.mark,
            format!("`transforms` must be a list, found {}", tnode.kind()),
        );
        return None;
    };

    // In a chain: [source] + transforms + [sink], then extra_transforms.
    let mut entries: Vec<(&YNode, bool)> = Vec::new();
    if chain && let Some(s) = pnode.get("source") {
        entries.push((s, true));
    }
    entries.extend(items.iter().map(|i| (i, true)));
    if chain && let Some(s) = pnode.get("sink") {
        entries.push((s, true));
    }
    if chain && let Some(x) = pnode.get("extra_transforms") {
        match &x.value {
            YValue::Seq(extra) => entries.extend(extra.iter().map(|i| (i, false))),
            _ => cx.err(x.mark, "`extra_transforms` must be a list"),
        }
    }
    if entries.is_empty() {
        cx.err(
            tnode.mark,
            "`transforms` is empty: a pipeline needs at least one transform",
        );
        return None;
    }

    let mut raws: Vec<Raw> = Vec::new();
    for (node, in_chain) in entries {
        if let Some(raw) = parse_transform(
            cx,
            node,
            registry,
            chain && in_chain,
            options.queue,
            default_restart,
            default_resources,
        ) {
            raws.push(raw);
        }
    }
    if !cx.errors.is_empty() {
        return None;
    }

    // names: explicit, or the type (with a number when several share it)
    let mut type_counts: HashMap<&str, usize> = HashMap::new();
    for r in raws.iter().filter(|r| r.name.is_none()) {
        *type_counts.entry(r.type_name.as_str()).or_default() += 1;
    }
    let mut seen: HashMap<String, Mark> = HashMap::new();
    let mut type_seen: HashMap<String, usize> = HashMap::new();
    let mut names = Vec::with_capacity(raws.len());
    for r in &raws {
        let (name, mark) = match &r.name {
            Some((n, m)) => (n.clone(), *m),
            None => {
                let c = type_seen.entry(r.type_name.clone()).or_default();
                *c += 1;
                if type_counts[r.type_name.as_str()] > 1 {
                    (format!("{}_{}", r.type_name, c), r.node.mark)
                } else {
                    (r.type_name.clone(), r.node.mark)
                }
            }
        };
        if let Some(first) = seen.get(&name) {
            cx.err(mark, format!("duplicate transform name `{name}` (first used at {first}); names must be unique"));
        } else {
            seen.insert(name.clone(), mark);
        }
        names.push(name);
    }
    // distinct names must stay distinct as Zenoh key chunks
    let mut keys: HashMap<String, &str> = HashMap::new();
    for (n, r) in names.iter().zip(&raws) {
        // the key-safe name is also a folder of the state directory
        if let Err(why) = check_folder_name(&key_safe(n)) {
            cx.err(
                r.node.mark,
                format!("transform name `{n}` {why}; rename it"),
            );
        }
        if let Some(other) = keys.insert(key_safe(n), n)
            && other != n
        {
            cx.err(
                r.node.mark,
                format!("transform names `{other}` and `{n}` map to the same Zenoh key `{}`; rename one", key_safe(n)),
            );
        }
    }

    // chain inputs: each chained transform reads the previous one
    let mut stages: Vec<Stage> = Vec::new();
    let mut prev: Option<String> = None;
    for (i, r) in raws.iter().enumerate() {
        let Some(dyn_node) = r.dyn_node.clone() else {
            continue;
        };
        let kind = dyn_node.kind();
        let in_chain = chain && r.inputs.is_none();
        let inputs = match &r.inputs {
            Some(v) => v.clone(),
            None if in_chain && kind != NodeKind::Source => match &prev {
                Some(p) => vec![Input {
                    stage: p.clone(),
                    output: None,
                    queue: options.queue,
                    delivery: None,
                    mark: r.node.mark,
                }],
                None => {
                    cx.err(
                        r.type_mark,
                        format!(
                            "`{}` is first in the chain but is not a source; it needs an input",
                            r.type_name
                        ),
                    );
                    vec![]
                }
            },
            None => vec![],
        };
        let mut outputs = dyn_node.outputs();
        if let Some(e) = &r.error_output {
            if outputs.contains(e) {
                cx.err(
                    r.node.mark,
                    format!("error output `{e}` has the name of one of the stage's outputs"),
                );
            }
            outputs.push(e.clone());
        }
        if in_chain {
            prev = Some(names[i].clone());
        }
        stages.push(Stage {
            name: names[i].clone(),
            type_name: r.type_name.clone(),
            kind,
            node: dyn_node,
            inputs,
            outputs,
            error_output: r.error_output.clone(),
            retries: r.retries,
            error_threshold: r.error_threshold,
            timeout: r.timeout,
            restart: r.restart,
            resources: r.resources,
            mark: r.node.mark,
        });
    }
    if !cx.errors.is_empty() {
        return None;
    }

    resolve_inputs(cx, &mut stages);
    if !cx.errors.is_empty() {
        return None;
    }
    check_graph(cx, &stages);
    check_resources(cx, &stages, machine);
    if !cx.errors.is_empty() {
        return None;
    }
    let stages = topo_sort(cx, stages)?;
    Some(Pipeline {
        name,
        file: None,
        stages,
        options,
    })
}

/// Whether a (key-safe) name can be a folder of the state directory of
/// its own: not `.` or `..`, not hidden, not one of rill's own (`_dlq`;
/// every name starting with `_` is kept for rill).
fn check_folder_name(k: &str) -> Result<(), &'static str> {
    if k.is_empty() || k.chars().all(|c| c == '.') {
        return Err("is not a usable folder name (its state would land outside its folder)");
    }
    if k.starts_with('.') {
        return Err("starts with `.` (a hidden folder of the state directory)");
    }
    if k.starts_with('_') {
        return Err("starts with `_`, which is kept for rill's own folders (`_dlq`)");
    }
    Ok(())
}

/// The pipeline name a file's stem gives when the file names none:
/// key-safe, without dots (`my.pipeline.yaml` is `my_pipeline`).
fn name_of_stem(stem: &str) -> String {
    let n: String = key_safe(stem)
        .chars()
        .map(|c| if c == '.' { '_' } else { c })
        .collect();
    if n.is_empty() { "pipeline".into() } else { n }
}

fn is_valid_pipeline_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}

fn check_options(cx: &mut Cx, o: &Options, node: Option<&YNode>) {
    let mark = node.map_or(Mark::default(), |n| n.mark);
    let at = |k: &str| node.and_then(|n| n.entry(k)).map_or(mark, |(k, _)| k.mark);
    if o.batch_size == 0 {
        cx.err(at("batch_size"), "`batch_size` must be at least 1");
    }
    check_queue(cx, &o.queue, at("queue"));
    if o.checkpoint_interval.records == 0 {
        cx.err(
            at("checkpoint_interval"),
            "`checkpoint_interval.records` must be at least 1",
        );
    }
    if !matches!(o.zenoh.mode.as_str(), "peer" | "client") {
        cx.err(
            at("zenoh"),
            format!(
                "unknown zenoh mode `{}`: expected `peer` or `client`",
                o.zenoh.mode
            ),
        );
    }
    let tls_endpoint = o
        .zenoh
        .listen
        .iter()
        .chain(&o.zenoh.connect)
        .find(|e| e.starts_with("tls/"));
    if let Some(e) = tls_endpoint
        && o.zenoh.tls.is_none()
    {
        cx.err(
            at("zenoh"),
            format!("the endpoint `{e}` is TLS: it needs `zenoh.tls: {{root_ca, certificate, private_key}}`"),
        );
    }
    if let Some(acl) = &o.zenoh.access_control
        && !acl.is_object()
    {
        cx.err(
            at("zenoh"),
            "`zenoh.access_control` must be a mapping, as Zenoh's configuration writes it",
        );
    }
    check_restart(cx, &o.restart, at("restart"));
}

fn check_queue(cx: &mut Cx, q: &QueueSpec, mark: Mark) {
    if q.size == 0 {
        cx.err(mark, "queue `size` must be at least 1");
    }
    if q.when_full == WhenFull::DropOldest {
        cx.err(
            mark,
            "`when_full: drop_oldest` is not supported yet by this version of rill; use `block`",
        );
    }
}

fn check_restart(cx: &mut Cx, r: &RestartPolicy, mark: Mark) {
    if r.backoff.multiplier.is_nan() || r.backoff.multiplier < 1.0 {
        cx.err(mark, "backoff `multiplier` must be at least 1.0");
    }
    if !(0.0..=1.0).contains(&r.backoff.jitter) {
        cx.err(mark, "backoff `jitter` must be between 0.0 and 1.0");
    }
    if r.backoff.initial > r.backoff.max {
        cx.err(mark, "backoff `initial` must not exceed `max`");
    }
}

fn apply_hints(res: &mut Resources, hints: &ResourceHints) {
    if let Some(m) = hints.min_ram {
        res.memory = Some(m);
    }
    if hints.accelerator.is_some() {
        res.device = Device::Auto;
    }
    if let Some(c) = hints.cpu_count {
        res.cpu_threads = Some(c);
    }
}

#[allow(clippy::too_many_arguments)]
fn parse_transform<'a>(
    cx: &mut Cx,
    node: &'a YNode,
    registry: &Registry,
    chained: bool,
    default_queue: QueueSpec,
    default_restart: RestartPolicy,
    default_resources: Resources,
) -> Option<Raw<'a>> {
    if !cx.keys(node, "a transform", TRANSFORM_KEYS) {
        return None;
    }
    let Some(tnode) = node.get("type") else {
        cx.err(
            node.mark,
            "transform has no `type`: expected e.g. `type: MapToFields`",
        );
        return None;
    };
    let Some(type_name) = tnode.as_str().map(str::to_owned) else {
        cx.err(
            tnode.mark,
            format!("`type` must be a string, found {}", tnode.kind()),
        );
        return None;
    };
    let name = match node.get("name") {
        None => None,
        Some(n) => match &n.value {
            YValue::Str(s) if !s.trim().is_empty() => Some((s.clone(), n.mark)),
            YValue::Int(_) | YValue::Float(_) | YValue::Bool(_) => Some((n.key_text(), n.mark)),
            _ => {
                cx.err(n.mark, "`name` must be a non-empty string");
                None
            }
        },
    };

    let inputs = match node.get("input") {
        None => None,
        Some(i) => {
            if chained {
                cx.err(i.mark, "`input` is not allowed on transforms of a `type: chain` pipeline: each reads the one before (use `extra_transforms` for side branches)");
                return None;
            }
            Some(parse_inputs(cx, i, default_queue)?)
        }
    };

    for k in ["windowing"] {
        if let Some((kn, _)) = node.entry(k) {
            cx.err(
                kn.mark,
                format!("`{k}` is not supported yet by this version of rill; remove it"),
            );
        }
    }

    // `config` minus the generic `error_handling` goes to the node
    let empty = YNode::new(YValue::Map(Vec::new()), node.mark);
    let config = node.get("config").unwrap_or(&empty);
    let config = if config.is_null() { &empty } else { config };
    let mut error_output = None;
    let mut retries = Retries::default();
    let mut error_threshold = None;
    let node_config = match &config.value {
        YValue::Map(entries) => {
            let mut rest = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                if k.as_str() == Some("error_handling") {
                    if let Some(eh) = cx.parse::<ErrorHandling>(v) {
                        if eh.output.is_empty() || eh.output.contains('.') {
                            cx.err(
                                v.mark,
                                "error_handling `output` must be a non-empty name without dots",
                            );
                        }
                        if eh.retries.max > 100 {
                            cx.err(v.mark, "error_handling `retries.max` must be at most 100");
                        }
                        if let Some(t) = eh.threshold
                            && !(t > 0.0 && t <= 1.0)
                        {
                            cx.err(
                                v.mark,
                                format!("error_handling `threshold` must be in (0, 1], got {t}"),
                            );
                        }
                        error_output = Some(eh.output);
                        retries = eh.retries;
                        error_threshold = eh.threshold;
                    }
                } else {
                    rest.push((k.clone(), v.clone()));
                }
            }
            YNode::new(YValue::Map(rest), config.mark)
        }
        _ => {
            cx.err(
                config.mark,
                format!("`config` must be a mapping, found {}", config.kind()),
            );
            return None;
        }
    };

    let dyn_node = match registry.parse(&type_name, &node_config) {
        Some(Ok(n)) => Some(n),
        Some(Err(e)) => {
            cx.yaml(
                YamlError {
                    msg: match &name {
                        Some((stage, _)) => {
                            format!("stage `{stage}` (`{type_name}`) config: {}", e.msg)
                        }
                        None => format!("in `{type_name}` config: {}", e.msg),
                    },
                    mark: e.mark,
                },
                config.mark,
            );
            None
        }
        None => {
            let hint = registry
                .suggest(&type_name)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            cx.err(
                tnode.mark,
                format!(
                    "unknown transform type `{type_name}`{hint}; known types: {}",
                    registry.names().collect::<Vec<_>>().join(", ")
                ),
            );
            None
        }
    };

    let mut timeout = Timeouts::default();
    if let Some(t) = node.get("timeout") {
        timeout = cx.parse(t).unwrap_or(timeout);
        if timeout.call.is_some_and(|d| d.is_zero()) || timeout.startup.is_zero() {
            cx.err(t.mark, "a `timeout` must be longer than zero");
        }
    }
    let mut restart = default_restart;
    if let Some(r) = node.get("restart") {
        restart = cx.parse(r).unwrap_or(restart);
        check_restart(cx, &restart, r.mark);
    }
    let mut resources = default_resources;
    if let Some(r) = node.get("resources") {
        resources = cx.parse(r).unwrap_or(resources);
    }
    if let Some(h) = node.get("resource_hints")
        && let Some(hints) = cx.parse::<ResourceHints>(h)
    {
        apply_hints(&mut resources, &hints);
    }
    Some(Raw {
        node,
        name,
        type_name,
        type_mark: tnode.mark,
        inputs,
        dyn_node,
        error_output,
        retries,
        error_threshold,
        timeout,
        restart,
        resources,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputMap {
    stage: String,
    output: Option<String>,
    queue: Option<QueueSpec>,
    delivery: Option<Delivery>,
}

fn parse_inputs(cx: &mut Cx, node: &YNode, default_queue: QueueSpec) -> Option<Vec<Input>> {
    let one = |cx: &mut Cx, n: &YNode| -> Option<Input> {
        match &n.value {
            YValue::Str(s) => Some(Input {
                stage: s.clone(),
                output: None, // split into stage.output during resolution
                queue: default_queue,
                delivery: None,
                mark: n.mark,
            }),
            YValue::Map(_) => {
                let m: InputMap = cx.parse(n)?;
                if let Some(q) = &m.queue {
                    check_queue(cx, q, n.mark);
                }
                Some(Input {
                    stage: m.stage,
                    output: Some(m.output.unwrap_or_default()),
                    queue: m.queue.unwrap_or(default_queue),
                    delivery: m.delivery,
                    mark: n.mark,
                })
            }
            _ => {
                cx.err(
                    n.mark,
                    format!(
                        "an input must be a stage name, `stage.output`, or {{stage, output, queue}}; found {}",
                        n.kind()
                    ),
                );
                None
            }
        }
    };
    match &node.value {
        YValue::Seq(items) => {
            if items.is_empty() {
                cx.err(node.mark, "`input` is an empty list");
                return None;
            }
            let v: Vec<Input> = items.iter().filter_map(|i| one(cx, i)).collect();
            (v.len() == items.len()).then_some(v)
        }
        _ => one(cx, node).map(|i| vec![i]),
    }
}

/// Resolves `stage.output` strings and checks every input names a stage and
/// an output it has.
fn resolve_inputs(cx: &mut Cx, stages: &mut [Stage]) {
    let info: HashMap<String, (NodeKind, Vec<String>)> = stages
        .iter()
        .map(|s| (s.name.clone(), (s.kind, s.outputs.clone())))
        .collect();
    let names: Vec<String> = stages.iter().map(|s| s.name.clone()).collect();
    let types: HashMap<String, usize> = stages.iter().fold(HashMap::new(), |mut m, s| {
        *m.entry(s.type_name.clone()).or_default() += 1;
        m
    });
    let mut errors = Vec::new();
    for s in stages.iter_mut() {
        if s.kind == NodeKind::Source && !s.inputs.is_empty() {
            errors.push((
                s.inputs[0].mark,
                format!(
                    "`{}` is a source ({}) and takes no input",
                    s.name, s.type_name
                ),
            ));
            continue;
        }
        if s.kind != NodeKind::Source && s.inputs.is_empty() {
            errors.push((
                s.mark,
                format!(
                    "`{}` ({}) needs an `input`: the name of the transform it reads",
                    s.name, s.type_name
                ),
            ));
            continue;
        }
        for inp in &mut s.inputs {
            // "stage" / "stage.output" (from a string) or {stage, output} (map)
            let explicit = inp.output.take();
            let (stage, output) = match explicit {
                Some(o) => (inp.stage.clone(), (!o.is_empty()).then_some(o)),
                None if info.contains_key(&inp.stage) => (inp.stage.clone(), None),
                None => match inp.stage.rsplit_once('.') {
                    Some((st, o)) if info.contains_key(st) => (st.to_owned(), Some(o.to_owned())),
                    _ => (inp.stage.clone(), None),
                },
            };
            let Some((kind, outs)) = info.get(&stage) else {
                let hint = if types.get(&stage).is_some_and(|n| *n > 1) {
                    format!(" (there are several `{stage}` transforms: give each a `name`)")
                } else {
                    closest(&stage, names.iter().map(String::as_str))
                        .map(|c| format!(" (did you mean `{c}`?)"))
                        .unwrap_or_default()
                };
                errors.push((
                    inp.mark,
                    format!(
                        "input `{inp}` of `{}` names no transform{hint}; transforms are: {}",
                        s.name,
                        names.join(", ")
                    ),
                ));
                continue;
            };
            if stage == s.name {
                errors.push((inp.mark, format!("`{}` reads its own output", s.name)));
                continue;
            }
            match &output {
                None if *kind == NodeKind::Sink => {
                    errors.push((
                        inp.mark,
                        format!("`{stage}` is a sink and has no main output to read"),
                    ));
                    continue;
                }
                Some(o) if !outs.contains(o) => {
                    let avail = if outs.is_empty() {
                        "it has none".to_owned()
                    } else {
                        format!("it has: {}", outs.join(", "))
                    };
                    errors.push((
                        inp.mark,
                        format!("`{stage}` has no output named `{o}` ({avail})"),
                    ));
                    continue;
                }
                _ => {}
            }
            inp.stage = stage;
            inp.output = output;
        }
        if s.inputs.len() > 1 && !s.node.multiple_inputs() {
            errors.push((
                s.mark,
                format!("`{}` ({}) takes exactly one input", s.name, s.type_name),
            ));
        }
    }
    for (m, e) in errors {
        cx.err(m, e);
    }
}

/// Every named output (error outputs included) must be read by someone, as
/// in Beam: otherwise its records would be lost.
fn check_graph(cx: &mut Cx, stages: &[Stage]) {
    for s in stages {
        for o in &s.outputs {
            let read = stages.iter().any(|c| {
                c.inputs
                    .iter()
                    .any(|i| i.stage == s.name && i.output.as_deref() == Some(o))
            });
            if !read {
                let what = if s.error_output.as_deref() == Some(o) {
                    "error output"
                } else {
                    "output"
                };
                cx.err(
                    s.mark,
                    format!(
                        "{what} `{o}` of `{}` is read by no transform, so its records would be lost; add a transform with `input: {}.{o}` (e.g. WriteToJson)",
                        s.name, s.name
                    ),
                );
            }
        }
    }
}

fn check_resources(cx: &mut Cx, stages: &[Stage], machine: &Machine) {
    let mut threads = 0usize;
    let mut gpu_mem: HashMap<usize, u64> = HashMap::new();
    for s in stages {
        let r = &s.resources;
        if let Some(m) = r.memory
            && m.0 > machine.memory
        {
            cx.err(
                s.mark,
                format!(
                    "`{}` asks for {} of memory but {} has {} (short by {})",
                    s.name,
                    m,
                    machine.what(),
                    ByteSize(machine.memory),
                    ByteSize(m.0 - machine.memory)
                ),
            );
        }
        if let Some(t) = r.cpu_threads {
            threads += t;
            if t == 0 {
                cx.err(
                    s.mark,
                    format!("`{}`: `cpu_threads` must be at least 1", s.name),
                );
            } else if t > machine.cpus {
                cx.err(
                    s.mark,
                    format!(
                        "`{}` asks for {t} CPU threads but {} has {} (short by {})",
                        s.name,
                        machine.what(),
                        machine.cpus,
                        t - machine.cpus
                    ),
                );
            } else if threads > machine.cpus {
                cx.err(
                    s.mark,
                    format!(
                        "the stages' `cpu_threads` add up to {threads} with `{}`, but {} has {} CPU cores (short by {})",
                        s.name,
                        machine.what(),
                        machine.cpus,
                        threads - machine.cpus
                    ),
                );
            }
        }
        if !s.node.uses_device() {
            let what = if matches!(r.device, Device::Cuda(_)) {
                Some("device")
            } else if r.gpu_memory.is_some() {
                Some("gpu_memory")
            } else if r.instances.is_some_and(|n| n != 1) {
                Some("instances")
            } else {
                None
            };
            if let Some(what) = what {
                cx.err(
                    s.mark,
                    format!(
                        "`{}` ({}) runs on the CPU only: `resources.{what}` applies to stages that run models (RunInference)",
                        s.name, s.type_name
                    ),
                );
            }
            continue;
        }
        if r.instances == Some(0) {
            cx.err(
                s.mark,
                format!("`{}`: `instances` must be at least 1", s.name),
            );
        }
        let gpu = match r.device {
            Device::Cuda(n) => {
                let n = n as usize;
                if n >= machine.gpus.len() {
                    cx.err(
                        s.mark,
                        format!(
                            "`{}` asks for device cuda:{n} but {} has {} CUDA device{}{}",
                            s.name,
                            machine.what(),
                            machine.gpus.len(),
                            if machine.gpus.len() == 1 { "" } else { "s" },
                            if machine.gpus.is_empty() && machine.described.is_none() {
                                " (or this build of rill has no `cuda` feature); use `device: auto` to fall back to the CPU"
                            } else {
                                ""
                            }
                        ),
                    );
                    continue;
                }
                Some(n)
            }
            Device::Auto => (!machine.gpus.is_empty()).then_some(0),
            Device::Cpu => None,
        };
        if let Some(m) = r.gpu_memory {
            match gpu {
                None if r.device == Device::Cpu => cx.err(
                    s.mark,
                    format!(
                        "`{}` sets `gpu_memory` but runs on the CPU (`device: cpu`)",
                        s.name
                    ),
                ),
                None => {} // auto on a machine without a GPU: runs on the CPU
                Some(g) => {
                    let total = gpu_mem.entry(g).or_default();
                    *total += m.0;
                    let have = machine.gpus[g];
                    if *total > have {
                        cx.err(
                            s.mark,
                            format!(
                                "`{}` asks for {} of GPU memory on cuda:{g}, which has {}{} (short by {})",
                                s.name,
                                m,
                                ByteSize(have),
                                if *total > m.0 {
                                    format!(
                                        " and gives {} to other stages",
                                        ByteSize(*total - m.0)
                                    )
                                } else {
                                    String::new()
                                },
                                ByteSize(*total - have)
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// Orders stages so every producer comes before its consumers; reports a
/// cycle with its path.
fn topo_sort(cx: &mut Cx, stages: Vec<Stage>) -> Option<Vec<Stage>> {
    let index: HashMap<&str, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    // 0 = unvisited, 1 = on stack, 2 = done
    let mut state = vec![0u8; stages.len()];
    let mut order = Vec::with_capacity(stages.len());
    fn visit(
        i: usize,
        stages: &[Stage],
        index: &HashMap<&str, usize>,
        state: &mut [u8],
        order: &mut Vec<usize>,
        path: &mut Vec<usize>,
    ) -> Result<(), Vec<usize>> {
        match state[i] {
            2 => return Ok(()),
            1 => {
                let start = path.iter().position(|p| *p == i).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(i);
                return Err(cycle);
            }
            _ => {}
        }
        state[i] = 1;
        path.push(i);
        for inp in &stages[i].inputs {
            if let Some(&j) = index.get(inp.stage.as_str()) {
                visit(j, stages, index, state, order, path)?;
            }
        }
        path.pop();
        state[i] = 2;
        order.push(i);
        Ok(())
    }
    for i in 0..stages.len() {
        let mut path = Vec::new();
        if let Err(cycle) = visit(i, &stages, &index, &mut state, &mut order, &mut path) {
            let names: Vec<&str> = cycle
                .iter()
                .rev()
                .map(|&c| stages[c].name.as_str())
                .collect();
            cx.err(
                stages[cycle[0]].mark,
                format!(
                    "the transforms form a cycle: {}; a pipeline must be acyclic",
                    names.join(" -> ")
                ),
            );
            return None;
        }
    }
    let mut slots: Vec<Option<Stage>> = stages.into_iter().map(Some).collect();
    Some(order.into_iter().filter_map(|i| slots[i].take()).collect())
}

/// Builds pipelines in Rust code instead of YAML.
///
/// ```ignore
/// let p = PipelineBuilder::new("demo")
///     .stage("numbers", Generate { count: Some(10), ..Default::default() }, &[])
///     .stage("out", WriteToJson::new("out/n.jsonl"), &["numbers"])
///     .build()?;
/// ```
#[derive(Debug, Default)]
pub struct PipelineBuilder {
    name: String,
    stages: Vec<Stage>,
    options: Options,
}

impl PipelineBuilder {
    pub fn new(name: &str) -> PipelineBuilder {
        PipelineBuilder {
            name: name.to_owned(),
            ..Default::default()
        }
    }

    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// Adds a stage built from a config value; `inputs` are `stage` or
    /// `stage.output` names.
    pub fn stage<C: crate::node::NodeConfig>(self, name: &str, config: C, inputs: &[&str]) -> Self {
        self.stage_dyn(name, std::any::type_name::<C>(), Arc::new(config), inputs)
    }

    /// Adds a stage from an already type-erased node.
    pub fn stage_dyn(
        mut self,
        name: &str,
        type_name: &str,
        node: Arc<dyn DynNode>,
        inputs: &[&str],
    ) -> Self {
        let inputs = inputs
            .iter()
            .map(|i| Input {
                stage: (*i).to_owned(),
                output: None,
                queue: self.options.queue,
                delivery: None,
                mark: Mark::default(),
            })
            .collect();
        self.stages.push(Stage {
            name: name.to_owned(),
            type_name: type_name
                .rsplit("::")
                .next()
                .unwrap_or(type_name)
                .to_owned(),
            kind: node.kind(),
            outputs: node.outputs(),
            node,
            inputs,
            error_output: None,
            retries: Retries::default(),
            error_threshold: None,
            timeout: Timeouts::default(),
            restart: self.options.restart,
            resources: Resources::default(),
            mark: Mark::default(),
        });
        self
    }

    /// Gives the last added stage an error output.
    pub fn error_output(mut self, output: &str) -> Self {
        if let Some(s) = self.stages.last_mut() {
            s.outputs.push(output.to_owned());
            s.error_output = Some(output.to_owned());
        }
        self
    }

    /// Checks the graph as [`load`] does.
    pub fn build(self) -> Result<Pipeline, SpecErrors> {
        let mut cx = Cx {
            file: None,
            errors: Vec::new(),
        };
        let mut stages = self.stages;
        let mut seen = HashSet::new();
        for s in &stages {
            if !seen.insert(s.name.clone()) {
                cx.err(s.mark, format!("duplicate transform name `{}`", s.name));
            }
        }
        resolve_inputs(&mut cx, &mut stages);
        check_graph(&mut cx, &stages);
        let stages = if cx.errors.is_empty() {
            topo_sort(&mut cx, stages)
        } else {
            None
        };
        match stages {
            Some(stages) if cx.errors.is_empty() => Ok(Pipeline {
                name: self.name,
                file: None,
                stages,
                options: self.options,
            }),
            _ => Err(SpecErrors(cx.errors)),
        }
    }
}
