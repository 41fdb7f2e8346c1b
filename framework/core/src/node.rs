//! The traits a node implements, and what it gets to work with.
//!
//! A node goes through four steps, as Vector's components do:
//! 1. **config**: a serde struct read from the stage's `config` mapping
//!    (`deny_unknown_fields`, so typos are errors with positions);
//! 2. **validate**: [`NodeConfig::validate`] is pure: no I/O, no await, so
//!    `rill validate` checks a whole pipeline without opening anything;
//! 3. **build**: [`NodeConfig::build`] opens files, sockets, devices and
//!    returns a running [`Node`];
//! 4. **run**: the runtime calls [`Source::poll`], [`Transform::process`] or
//!    [`Sink::write`] with batches of records, on a thread where blocking is
//!    allowed.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::metrics::NodeMetrics;
use crate::spec::{Delivery, Resources};
use crate::state::KeyedState;
use crate::value::Record;

/// What a node does in the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// Makes records; has no inputs.
    Source,
    /// Reads records and makes records.
    Transform,
    /// Reads records and has effects; has no main output.
    Sink,
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeKind::Source => "source",
            NodeKind::Transform => "transform",
            NodeKind::Sink => "sink",
        })
    }
}

/// An error of a running node that fails the stage (the supervisor then
/// applies the stage's restart policy). A failure of one record is not a
/// `NodeError`: report it with [`Emitter::fail`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error("{0}")]
    Failed(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The node's input is not usable and no restart would change that (a
    /// file that changed since the last commit, say): the run stops at
    /// once and the CLI exits 2.
    #[error("bad input: {0}")]
    BadInput(String),
    #[error("record failed: {msg}")]
    Record {
        msg: String,
        /// The record that failed, when known.
        record: Option<Box<Record>>,
    },
}

impl NodeError {
    pub fn failed(msg: impl Into<String>) -> NodeError {
        NodeError::Failed(msg.into())
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> NodeError {
        NodeError::Io {
            path: path.into(),
            source,
        }
    }
}

/// A record the node could not process, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub record: Record,
    pub msg: String,
    /// How many times the record was tried (1 unless the stage retries).
    pub attempts: u32,
}

/// What [`Emitter::take`] returns: (main output, named outputs, failures).
pub type Emitted = (Vec<Record>, Vec<(String, Vec<Record>)>, Vec<Failure>);

/// Collects what a node makes from one call: records for its main output,
/// records for named outputs, and records that failed.
#[derive(Debug, Default)]
pub struct Emitter {
    main: Vec<Record>,
    named: Vec<(String, Vec<Record>)>,
    failures: Vec<Failure>,
}

impl Emitter {
    pub fn new() -> Emitter {
        Emitter::default()
    }

    /// Emits a record on the main output.
    pub fn emit(&mut self, r: Record) {
        self.main.push(r);
    }

    /// Makes room for `n` more records on the main output.
    pub fn reserve(&mut self, n: usize) {
        self.main.reserve(n);
    }

    /// Emits a record on a named output the node declared in
    /// [`NodeConfig::outputs`].
    pub fn emit_to(&mut self, output: &str, r: Record) {
        match self.named.iter_mut().find(|(n, _)| n == output) {
            Some((_, v)) => v.push(r),
            None => self.named.push((output.to_owned(), vec![r])),
        }
    }

    /// Reports that `record` failed. With `error_handling` it becomes a dead
    /// letter on the stage's error output and the other records flow on;
    /// without, it fails the stage.
    pub fn fail(&mut self, record: Record, msg: impl Into<String>) {
        self.failures.push(Failure {
            record,
            msg: msg.into(),
            attempts: 1,
        });
    }

    /// Records a failure as it is (with its attempt count).
    pub fn push_failure(&mut self, f: Failure) {
        self.failures.push(f);
    }

    pub fn main(&self) -> &[Record] {
        &self.main
    }

    pub fn failures(&self) -> &[Failure] {
        &self.failures
    }

    pub fn is_empty(&self) -> bool {
        self.main.is_empty()
            && self.failures.is_empty()
            && self.named.iter().all(|(_, v)| v.is_empty())
    }

    pub fn len(&self) -> usize {
        self.main.len() + self.named.iter().map(|(_, v)| v.len()).sum::<usize>()
    }

    /// Takes everything out: (main, named outputs, failures).
    pub fn take(&mut self) -> Emitted {
        (
            std::mem::take(&mut self.main),
            std::mem::take(&mut self.named),
            std::mem::take(&mut self.failures),
        )
    }
}

/// What a source says after a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceStatus {
    /// More may be ready now: poll again when there is room downstream.
    More,
    /// Nothing more for now: poll again after this long (or earlier).
    Wait(Duration),
    /// The source is exhausted (a bounded source reached its end).
    Done,
}

/// A node that makes records.
pub trait Source: Send {
    /// Emits at most `max` records into `out`.
    fn poll(&mut self, max: usize, out: &mut Emitter) -> Result<SourceStatus, NodeError>;

    /// Whether a rebuilt source emits the same records in the same order (a
    /// file, inline elements, a seeded generator). After a restart the
    /// runtime then skips what the earlier incarnation already emitted.
    /// Sources fed from outside (a Zenoh key) return `false`.
    fn deterministic(&self) -> bool {
        true
    }

    /// Moves a deterministic source past its first `made` records (what it
    /// had emitted and failed at the stage's last commit, over all its
    /// incarnations), when it can do that without producing them, and
    /// returns true. A source that restored its own position from its
    /// [`KeyedState`] at build returns true when that position is `made`
    /// records in.
    ///
    /// Returning false means the source is at its start: the runtime then
    /// polls it and drops the first `made` of what it makes (and stops the
    /// run with exit code 2 if the source ends before that: its input
    /// changed).
    fn seek(&mut self, _made: u64) -> bool {
        false
    }

    /// Called before each commit of the stage: put what the source needs to
    /// resume into its [`KeyedState`] (it is committed atomically with the
    /// stage's count of what the source made). It runs on the async worker:
    /// keep it short (a file source reads back at most 8 KiB it just read).
    fn checkpoint(&mut self) -> Result<(), NodeError> {
        Ok(())
    }
}

/// A node that turns records into records.
pub trait Transform: Send {
    /// Processes one batch. Emit outputs into `out`; report per-record
    /// failures with [`Emitter::fail`].
    fn process(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError>;

    /// All inputs have ended: emit what is still held (open windows, buffers).
    fn finish(&mut self, _out: &mut Emitter) -> Result<(), NodeError> {
        Ok(())
    }

    /// The stage's watermark moved to `watermark` (ms; [`END_OF_TIME`] when
    /// every input ended): fire what it completes. Called only for nodes
    /// that say [`NodeConfig::uses_watermarks`], after the records that
    /// came before the watermark and before those after it.
    ///
    /// [`END_OF_TIME`]: crate::window::END_OF_TIME
    fn on_watermark(&mut self, _watermark: i64, _out: &mut Emitter) -> Result<(), NodeError> {
        Ok(())
    }

    /// Whether the node has more to emit for the watermark it was given (a
    /// window too large to fire in one call): the runtime calls
    /// [`Transform::resume`] as the stage's outputs have room, and hands
    /// the node no more input until this is false.
    fn pending(&self) -> bool {
        false
    }

    /// Emits the next part of what is [`Transform::pending`].
    fn resume(&mut self, _out: &mut Emitter) -> Result<(), NodeError> {
        Ok(())
    }

    /// The earliest event time among records the node holds and will still
    /// emit (`MLTransform` keeping its input until it ends), or `None`. The
    /// stage's output watermark does not pass it, so what the node emits
    /// later is not late downstream.
    fn watermark_hold(&self) -> Option<i64> {
        None
    }

    /// Processing time passed (called about every 25 ms for nodes that
    /// say [`NodeConfig::uses_watermarks`]): early firings.
    fn on_timer(&mut self, _out: &mut Emitter) -> Result<(), NodeError> {
        Ok(())
    }

    /// Called before each commit of the stage: put what the node must keep
    /// into its [`KeyedState`] (if it does not write it there as it goes).
    /// It runs on the async worker: keep it short (no I/O).
    fn checkpoint(&mut self) -> Result<(), NodeError> {
        Ok(())
    }
}

/// A node with effects outside the pipeline (files, sockets).
pub trait Sink: Send {
    /// Writes one batch. When this returns `Ok`, the batch must be handed to
    /// the operating system (not held in a user-space buffer): the runtime
    /// acknowledges it upstream next. `out` only takes failures.
    fn write(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError>;

    /// All inputs have ended: flush and close.
    fn finish(&mut self) -> Result<(), NodeError> {
        Ok(())
    }

    /// Called before each commit of the stage: make what was written so far
    /// durable (flush, fsync) and record in the [`KeyedState`] how far it
    /// goes, so a restarted sink can cut off what was written after the
    /// commit (exactly-once effects).
    fn checkpoint(&mut self) -> Result<(), NodeError> {
        Ok(())
    }

    /// The stage's commit after the last [`Sink::checkpoint`] is durable:
    /// a sink whose effects are published in two phases (files written at
    /// the checkpoint, a table commit naming them now) takes the second.
    /// It must be idempotent: a crash between the stage's commit and this
    /// call leaves it to the next incarnation, which finds what to finish
    /// in its state. What it puts into the state goes into the next commit.
    fn committed(&mut self) -> Result<(), NodeError> {
        Ok(())
    }

    /// Whether the sink publishes in two phases ([`Sink::committed`]): its
    /// stage then commits with the flush in line, not in the background,
    /// so nothing is written between the checkpoint and the second phase.
    fn two_phase(&self) -> bool {
        false
    }

    /// Whether the sink has work due on time alone (records staged for a
    /// part whose interval passed while no new record came): the stage
    /// then commits without new input, calling [`Sink::checkpoint`].
    /// Asked at every tick of the stage (25 ms); keep it cheap.
    fn checkpoint_due(&self) -> bool {
        false
    }
}

/// A built, running node.
pub enum Node {
    Source(Box<dyn Source>),
    Transform(Box<dyn Transform>),
    Sink(Box<dyn Sink>),
}

impl Node {
    pub fn kind(&self) -> NodeKind {
        match self {
            Node::Source(_) => NodeKind::Source,
            Node::Transform(_) => NodeKind::Transform,
            Node::Sink(_) => NodeKind::Sink,
        }
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Node({})", self.kind())
    }
}

/// Process-wide things a node may need at build time (the runtime puts its
/// Zenoh session here, for example), looked up by type.
#[derive(Default, Clone)]
pub struct Extensions {
    map: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl Extensions {
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) {
        self.map.insert(TypeId::of::<T>(), Arc::new(value));
    }

    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.map
            .get(&TypeId::of::<T>())
            .and_then(|a| a.downcast_ref())
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Extensions({} entries)", self.map.len())
    }
}

/// In a run's [`Extensions`] when the run replays dead letters into a
/// pipeline that already wrote its outputs (`rill dlq replay`): sinks add
/// to what their files hold instead of starting them over.
///
/// Where a file sink's additions start (its *base*) is kept in a file of
/// the replay's, so a replay that is killed and run again cuts each file
/// back to the same base before it writes: the replayed records land once.
#[derive(Debug, Clone)]
pub struct ReplayRun {
    bases: PathBuf,
}

/// One lock for every sink of a process that records its base.
static BASES_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl ReplayRun {
    /// A replay whose sinks keep their bases in `bases` (a JSON object
    /// of path → length, made when the first sink asks).
    pub fn new(bases: impl Into<PathBuf>) -> ReplayRun {
        ReplayRun {
            bases: bases.into(),
        }
    }

    /// The length `path` had when the replay first opened it: recorded
    /// (durably) as `len_now` the first time, read back after that.
    pub fn base(&self, path: &Path, len_now: u64) -> Result<u64, NodeError> {
        let _one = BASES_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let io = |e: std::io::Error| NodeError::io(&self.bases, e);
        let mut map: serde_json::Map<String, serde_json::Value> = match std::fs::read(&self.bases) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| NodeError::failed(format!("{}: {e}", self.bases.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
            Err(e) => return Err(io(e)),
        };
        let key = path.to_string_lossy().into_owned();
        if let Some(n) = map.get(&key).and_then(|v| v.as_u64()) {
            return Ok(n);
        }
        map.insert(key, len_now.into());
        let tmp = self.bases.with_extension("tmp");
        let text = serde_json::to_vec(&map).expect("a map of numbers");
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|_| std::fs::rename(&tmp, &self.bases))
            .and_then(|_| match self.bases.parent() {
                Some(d) if !d.as_os_str().is_empty() => std::fs::File::open(d)?.sync_all(),
                _ => Ok(()),
            })
            .map_err(io)?;
        Ok(len_now)
    }
}

/// What [`NodeConfig::build`] gets.

#[derive(Debug, Clone)]
pub struct BuildContext<'a> {
    pub pipeline: &'a str,
    pub stage: &'a str,
    /// 0 on first start, then the number of restarts so far. A sink opens
    /// its file for appending after a restart instead of truncating it.
    pub attempt: u32,
    /// Directory relative paths are resolved against (the working directory
    /// of `rill run`, as in Beam).
    pub base_dir: &'a Path,
    pub extensions: &'a Extensions,
    /// The stage's keyed state, as of its last commit.
    pub state: &'a KeyedState,
    /// The stage's delivery guarantee (sinks truncate to their last commit
    /// only under `exactly_once`).
    pub delivery: Delivery,
    /// The stage's budget (`resources`).
    pub resources: Resources,
    /// The node's own metrics, shared by the stage's incarnations.
    pub metrics: &'a Arc<NodeMetrics>,
    /// The windowing strategy of the stage's input (see [`crate::window`]).
    pub windowing: crate::window::Windowing,
    /// The stage's request queue when it has `serve:` (see [`crate::serve`]).
    pub requests: Option<&'a Arc<crate::serve::RequestQueue>>,
}

impl BuildContext<'_> {
    /// Resolves a path from a config against [`BuildContext::base_dir`].
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base_dir.join(path)
        }
    }
}

/// A problem in a node's `config`, found by [`NodeConfig::validate`]: the
/// key path it is about (`["fields", "x"]` for `fields: {x: ...}`; empty
/// for the config as a whole) and what is wrong. The path turns into the
/// line and column of the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: Vec<String>,
    pub message: String,
}

impl ConfigError {
    /// An error about the key `key` (a key of the config itself).
    pub fn at(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: vec![key.into()],
            message: message.into(),
        }
    }

    /// An error about the key path `path` (`["batching", "max_batch_size"]`;
    /// a list item is its index, `"0"`).
    pub fn at_path<S: Into<String>>(
        path: impl IntoIterator<Item = S>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            path: path.into_iter().map(Into::into).collect(),
            message: message.into(),
        }
    }

    /// An error about the config as a whole.
    pub fn whole(message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: Vec::new(),
            message: message.into(),
        }
    }

    /// The same error, inside the key `key` (for a part of a config that
    /// checks itself).
    pub fn within(mut self, key: impl Into<String>) -> ConfigError {
        self.path.insert(0, key.into());
        self
    }

    /// The path as written in YAML flow style: `fields.x`.
    pub fn dotted(&self) -> String {
        self.path.join(".")
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A node type's configuration: the serde struct for the stage's `config`.
///
/// ```
/// use rill_core::node::*;
/// use rill_core::{Name, Record};
///
/// #[derive(Debug, serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Double { field: String }
///
/// // field names are `Name`s: strings kept inline up to 24 bytes
/// struct DoubleNode(Name);
/// impl Transform for DoubleNode {
///     fn process(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
///         for mut r in batch {
///             match r.fields.get(&self.0).and_then(|v| v.as_i64()) {
///                 Some(n) => { r.fields.insert(self.0.clone(), (n * 2).into()); out.emit(r) }
///                 None => out.fail(r, format!("field `{}` is not an int", self.0)),
///             }
///         }
///         Ok(())
///     }
/// }
///
/// impl NodeConfig for Double {
///     fn kind(&self) -> NodeKind { NodeKind::Transform }
///     fn validate(&self) -> Result<(), ConfigError> {
///         if self.field.is_empty() { return Err(ConfigError::at("field", "`field` must not be empty")) }
///         Ok(())
///     }
///     fn build(&self, _ctx: &BuildContext) -> Result<Node, NodeError> {
///         Ok(Node::Transform(Box::new(DoubleNode(self.field.as_str().into()))))
///     }
/// }
///
/// let mut registry = rill_core::registry::Registry::new();
/// registry.register::<Double>("Double", "doubles an int field");
/// ```
pub trait NodeConfig: DeserializeOwned + fmt::Debug + Send + Sync + 'static {
    /// Source, transform or sink.
    fn kind(&self) -> NodeKind;

    /// Checks the config without touching anything outside it. The error
    /// names the key it is about and says what is wrong and what would be
    /// right.
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Named outputs besides the main one and the error output.
    fn outputs(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether the stage can take more than one input stream.
    fn multiple_inputs(&self) -> bool {
        true
    }

    /// Dynamic batching: the runtime gathers records from several incoming
    /// messages into one call, up to `max_batch_size` records or until the
    /// oldest has waited `max_batch_delay`.
    fn batching(&self) -> Option<Batching> {
        None
    }

    /// Whether the node runs models on a device (`device`, `gpu_memory`,
    /// `instances` in `resources` have an effect).
    fn uses_device(&self) -> bool {
        false
    }

    /// Whether the node acts on event time: the runtime then gives it the
    /// stage's watermark ([`Transform::on_watermark`]) and timer ticks
    /// ([`Transform::on_timer`]), and every stage upstream sends watermarks.
    fn uses_watermarks(&self) -> bool {
        false
    }

    /// Whether the node sets its records' event times (`AssignTimestamps`):
    /// its stage then derives its output watermark from the event times it
    /// emits, as a source does, instead of passing its input's on.
    fn assigns_timestamps(&self) -> bool {
        false
    }

    /// The windowing the node gives its output (`WindowInto`); `None`
    /// keeps its input's.
    fn windowing(&self) -> Option<crate::window::Windowing> {
        None
    }

    /// A source that may never end (`Generate` without `count`, a Zenoh
    /// subscription without `max_records`).
    fn unbounded(&self) -> bool {
        false
    }

    /// Why the node needs all of its input to end (it analyses the whole
    /// input before it emits, as `MLTransform` writing artifacts does), or
    /// `None`. A pipeline that feeds it from an unbounded source is refused
    /// at validation, with this reason.
    fn needs_bounded_input(&self) -> Option<String> {
        None
    }

    /// Whether the node answers requests beside its stream (`serve:`, see
    /// [`crate::serve`]): it takes [`BuildContext::requests`] and answers
    /// what the runtime grants it in each call.
    fn serves(&self) -> bool {
        false
    }

    /// Makes the running node.
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError>;
}

/// How the runtime gathers records for a node (see [`NodeConfig::batching`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    pub max_batch_size: usize,
    pub max_batch_delay: Duration,
}

/// An object-safe view of a validated [`NodeConfig`].
pub trait DynNode: fmt::Debug + Send + Sync {
    fn kind(&self) -> NodeKind;
    fn outputs(&self) -> Vec<String>;
    fn multiple_inputs(&self) -> bool;
    fn batching(&self) -> Option<Batching>;
    fn uses_device(&self) -> bool;
    fn uses_watermarks(&self) -> bool;
    fn assigns_timestamps(&self) -> bool;
    fn windowing(&self) -> Option<crate::window::Windowing>;
    fn unbounded(&self) -> bool;
    fn needs_bounded_input(&self) -> Option<String>;
    fn serves(&self) -> bool;
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError>;
}

impl<C: NodeConfig> DynNode for C {
    fn kind(&self) -> NodeKind {
        NodeConfig::kind(self)
    }
    fn outputs(&self) -> Vec<String> {
        NodeConfig::outputs(self)
    }
    fn multiple_inputs(&self) -> bool {
        NodeConfig::multiple_inputs(self)
    }
    fn batching(&self) -> Option<Batching> {
        NodeConfig::batching(self)
    }
    fn uses_device(&self) -> bool {
        NodeConfig::uses_device(self)
    }
    fn uses_watermarks(&self) -> bool {
        NodeConfig::uses_watermarks(self)
    }
    fn assigns_timestamps(&self) -> bool {
        NodeConfig::assigns_timestamps(self)
    }
    fn windowing(&self) -> Option<crate::window::Windowing> {
        NodeConfig::windowing(self)
    }
    fn unbounded(&self) -> bool {
        NodeConfig::unbounded(self)
    }
    fn needs_bounded_input(&self) -> Option<String> {
        NodeConfig::needs_bounded_input(self)
    }
    fn serves(&self) -> bool {
        NodeConfig::serves(self)
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        NodeConfig::build(self, ctx)
    }
}
