//! The pipeline file's data types: options and per-stage settings, as
//! serde reads them (the checks of their values are passes elsewhere).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::units::{ByteSize, Dur};
use crate::yaml::Mark;

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
pub(super) struct ResourceHints {
    pub(super) min_ram: Option<ByteSize>,
    pub(super) accelerator: Option<String>,
    pub(super) cpu_count: Option<usize>,
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

/// A stage's `placement:`: the host (a name in `options.hosts`) whose
/// process runs it (`rill run FILE --host NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    pub host: String,
}

/// One host of `options.hosts`: the Zenoh endpoints and mode of the process
/// that runs the stages placed on it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Endpoints it listens on (default: `options.zenoh.listen`).
    #[serde(default)]
    pub listen: Option<Vec<String>>,
    /// Endpoints it connects to (default: `options.zenoh.connect`).
    #[serde(default)]
    pub connect: Option<Vec<String>>,
    /// `peer`, `client` or `router` (default: `options.zenoh.mode`).
    #[serde(default)]
    pub mode: Option<String>,
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
    /// How sources derive watermarks and how long a silent input holds a
    /// stage's watermark back (a stage's own `watermark:` overrides it).
    #[serde(default)]
    pub watermark: crate::window::WatermarkSpec,
    /// Beam's `yaml_experimental_features` (`Combine`, or a list): every
    /// feature it names is built in here, so it is accepted and ignored.
    #[serde(default)]
    pub yaml_experimental_features: Option<serde_json::Value>,
    /// The boxes a pipeline spans, by name: each stage's `placement.host`
    /// names one (see [`Placement`]).
    #[serde(default)]
    pub hosts: std::collections::BTreeMap<String, HostSpec>,
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
            watermark: Default::default(),
            yaml_experimental_features: None,
            hosts: Default::default(),
        }
    }
}

/// `serve:` on a stage whose node answers requests (`RunInference`): the
/// model behind the stream also answers request/response traffic through
/// the same batcher (see `docs/serving.md`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSpec {
    /// Where the HTTP server listens (KServe v2 and Vertex AI shapes):
    /// `true` is `127.0.0.1:8000`, a number a port on 127.0.0.1, or
    /// `HOST:PORT`. Loopback unless told otherwise.
    #[serde(default)]
    pub http: Option<HttpAddr>,
    /// A Zenoh queryable `rill/<pipeline>/<stage>/predict` taking the same
    /// JSON.
    #[serde(default)]
    pub zenoh: bool,
    /// Rows that may wait at once; more are refused (HTTP 429).
    #[serde(default = "default_serve_queue")]
    pub queue: usize,
    /// The share of each batch kept for requests while stream records wait
    /// too (the rest of a batch goes to the stream; with no stream waiting,
    /// requests fill whole batches).
    #[serde(default = "default_serve_share")]
    pub share: f64,
    /// How long a request may take unless it says (`timeout_ms`).
    #[serde(default = "default_serve_timeout")]
    pub timeout: Dur,
    /// How long requests alone wait for more to fill a batch (default: the
    /// stage's `max_batch_delay`).
    #[serde(default)]
    pub max_batch_delay: Option<Dur>,
    /// The largest request body taken (HTTP 413 past it).
    #[serde(default = "default_serve_body")]
    pub max_body: ByteSize,
    /// The environment variable holding a bearer token that requests must
    /// carry (`Authorization: Bearer ...`); health and metrics stay open.
    #[serde(default)]
    pub token_env: Option<String>,
}

fn default_serve_queue() -> usize {
    1024
}
fn default_serve_share() -> f64 {
    0.5
}
fn default_serve_timeout() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_serve_body() -> ByteSize {
    ByteSize(4 << 20)
}

/// `serve.http`: `true`, a port, or `HOST:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpAddr(pub std::net::SocketAddr);

/// `serve.http: true` listens here.
pub const DEFAULT_SERVE_ADDR: &str = "127.0.0.1:8000";

impl<'de> Deserialize<'de> for HttpAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HttpAddr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`true`, a port, or HOST:PORT such as 127.0.0.1:8000")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<HttpAddr, E> {
                if v {
                    Ok(HttpAddr(DEFAULT_SERVE_ADDR.parse().expect("an address")))
                } else {
                    Err(E::custom(
                        "`http: false`: leave `http` out to serve over Zenoh only",
                    ))
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<HttpAddr, E> {
                let port =
                    u16::try_from(v).map_err(|_| E::custom(format!("port {v} is past 65535")))?;
                Ok(HttpAddr(std::net::SocketAddr::from(([127, 0, 0, 1], port))))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<HttpAddr, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!("port {v} is negative"))),
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HttpAddr, E> {
                let v = v.trim();
                if let Ok(a) = v.parse() {
                    return Ok(HttpAddr(a));
                }
                if let Some(port) = v.strip_prefix("localhost:")
                    && let Ok(p) = port.parse::<u16>()
                {
                    return Ok(HttpAddr(std::net::SocketAddr::from(([127, 0, 0, 1], p))));
                }
                Err(E::custom(format!(
                    "`{v}` is not an address: write HOST:PORT with an IP address, such as 127.0.0.1:8000 or [::1]:8000"
                )))
            }
        }
        d.deserialize_any(V)
    }
}
