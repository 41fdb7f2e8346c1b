//! Nodes that misbehave on purpose, for fault-tolerance tests (as dora's
//! `tests/fault-tolerance-e2e.rs` uses). They are registered only by
//! [`register_testing`], which the CLI calls when the environment variable
//! `RILL_TEST_NODES=1` is set.
//!
//! | type | what it does |
//! |------|--------------|
//! | `TestFault` | passes records on; panics (or errors) at record `at` of the stage's life, `times` times (across restarts); with `every: N`, once at each record whose `id` is N-1, 2N-1, ... |
//! | `TestSlow` | passes records on, sleeping `per_record` for each |
//! | `TestFlaky` | fails (as a record failure) each record whose `id` is a multiple of `every`, its first `times` tries; with `stall_on_retry: D`, sleeps D in its second try |
//! | `TestHang` | passes records on; at record `at` (over the stage's life in the process) sleeps `for` (default 1 h), the first `times` times |
//! | `TestSlowStart` | passes records on; building it sleeps `delay`, or panics when `panic: true` (the first `times` builds) |
//! | `TestCountPerKey` | adds `count`: how many records with this key it has seen so far (keyed state: survives restarts) |

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rill_core::node::{
    BuildContext, ConfigError, Emitter, Node, NodeConfig, NodeError, NodeKind, Transform,
};
use rill_core::registry::Registry;
use rill_core::state::KeyedState;
use rill_core::units::Dur;
use rill_core::{Record, Value};
use serde::Deserialize;

/// Registers the test-only node types.
pub fn register_testing(r: &mut Registry) {
    r.register::<TestFault>("TestFault", "test only: fails on purpose");
    r.register::<TestSlow>("TestSlow", "test only: sleeps per record");
    r.register::<TestFlaky>("TestFlaky", "test only: records fail their first tries");
    r.register::<TestHang>("TestHang", "test only: hangs at a record");
    r.register::<TestSlowStart>("TestSlowStart", "test only: slow or panicking start-up");
    r.register::<TestBatch>(
        "TestBatch",
        "test only: dynamic batching; tags records with the size of their batch",
    );
    r.register::<TestCountPerKey>(
        "TestCountPerKey",
        "test only: running count per key in the stage's keyed state",
    );
}

/// Failures so far per stage, shared by every incarnation in the process.
static FAULTS: Mutex<Option<HashMap<String, (u64, u64)>>> = Mutex::new(None);

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct TestFault {
    /// Fail when the stage sees its `at`-th record (0-based, counted over
    /// the stage's whole life in this process).
    #[serde(default)]
    pub at: u64,
    /// How many times to fail; `0` means every time.
    #[serde(default = "one")]
    pub times: u64,
    /// `panic` (default) or `error`.
    #[serde(default = "panic_mode")]
    pub mode: String,
    /// Fail once at every `every`-th record (by the records' `id` field:
    /// ids N-1, 2N-1, ...) instead of at `at`.
    #[serde(default)]
    pub every: Option<u64>,
}

fn one() -> u64 {
    1
}
fn panic_mode() -> String {
    "panic".into()
}

impl NodeConfig for TestFault {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }
    fn validate(&self) -> Result<(), ConfigError> {
        match self.mode.as_str() {
            "panic" | "error" => Ok(()),
            m => Err(ConfigError::at(
                "mode",
                format!("unknown mode `{m}`: expected panic or error"),
            )),
        }
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        Ok(Node::Transform(Box::new(FaultNode {
            cfg: self.clone(),
            stage: format!("{}/{}", ctx.pipeline, ctx.stage),
        })))
    }
}

struct FaultNode {
    cfg: TestFault,
    stage: String,
}

impl Transform for FaultNode {
    fn process(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        let n = batch.len() as u64;
        let fail = {
            let mut g = FAULTS.lock().unwrap();
            let (seen, failed) = g
                .get_or_insert_with(HashMap::new)
                .entry(self.stage.clone())
                .or_insert((0, 0));
            let hit = match self.cfg.every {
                // a record numbered (by its `id` field) N, 2N, ... that has
                // not failed the stage yet: the k-th failure is at id kN-1,
                // so a batch delivered again after the restart passes
                Some(e) if e > 0 => {
                    let next = (*failed + 1) * e - 1;
                    batch
                        .iter()
                        .any(|r| r.get("id").and_then(Value::as_i64) == Some(next as i64))
                }
                _ => *seen <= self.cfg.at && self.cfg.at < *seen + n,
            };
            let more = self.cfg.every.is_some() || self.cfg.times == 0 || *failed < self.cfg.times;
            if hit && more {
                *failed += 1;
                true
            } else {
                // records of a failed batch come again; count them once
                *seen += n;
                false
            }
        };
        if fail {
            if self.cfg.mode == "panic" {
                panic!("TestFault: deliberate panic at record {}", self.cfg.at);
            }
            return Err(NodeError::failed(format!(
                "TestFault: deliberate error at record {}",
                self.cfg.at
            )));
        }
        for r in batch {
            out.emit(r);
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct TestSlow {
    pub per_record: Dur,
}

impl NodeConfig for TestSlow {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }
    fn build(&self, _ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        Ok(Node::Transform(Box::new(SlowNode(self.per_record.0))))
    }
}

struct SlowNode(Duration);

impl Transform for SlowNode {
    fn process(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        std::thread::sleep(self.0 * batch.len() as u32);
        for r in batch {
            out.emit(r);
        }
        Ok(())
    }
}

/// Asks the runtime for dynamic batching and tags every record with the
/// number of its batch (`batch`), that batch's size (`batch_size`) and the
/// thread that ran it (`thread`).
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct TestBatch {
    pub max_batch_size: usize,
    pub max_batch_delay: Dur,
}

impl NodeConfig for TestBatch {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }
    fn batching(&self) -> Option<rill_core::node::Batching> {
        Some(rill_core::node::Batching {
            max_batch_size: self.max_batch_size,
            max_batch_delay: self.max_batch_delay.0,
        })
    }
    fn build(&self, _ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        Ok(Node::Transform(Box::new(BatchNode(0))))
    }
}

struct BatchNode(i64);

impl Transform for BatchNode {
    fn process(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        let n = batch.len() as i64;
        let thread = std::thread::current().name().unwrap_or("").to_owned();
        for r in batch {
            out.emit(
                r.with("batch", self.0)
                    .with("batch_size", n)
                    .with("thread", thread.as_str()),
            );
        }
        self.0 += 1;
        Ok(())
    }
}

/// A window-free stateful node: the running count of records per key,
/// kept in the stage's [`KeyedState`] (so it is committed with the input
/// positions and resumes exactly after a crash).
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct TestCountPerKey {
    /// The field to write the count to.
    #[serde(default = "count_field")]
    pub field: String,
}

fn count_field() -> String {
    "count".into()
}

impl NodeConfig for TestCountPerKey {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        Ok(Node::Transform(Box::new(CountNode {
            field: self.field.clone(),
            state: ctx.state.clone(),
        })))
    }
}

struct CountNode {
    field: String,
    state: KeyedState,
}

impl Transform for CountNode {
    fn process(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        for mut r in batch {
            let key = r.key.clone().unwrap_or_default();
            let n = match self.state.get(key.as_bytes())? {
                Some(b) if b.len() == 8 => u64::from_be_bytes(b.try_into().expect("8 bytes")),
                _ => 0,
            } + 1;
            self.state.put(key.as_bytes(), n.to_be_bytes().to_vec());
            r.fields
                .insert(self.field.as_str().into(), Value::Int(n as i64));
            out.emit(r);
        }
        Ok(())
    }
}

/// Tries per (stage, id) so far, shared by every incarnation in the process.
static TRIES: Mutex<Option<HashMap<(String, i64), u32>>> = Mutex::new(None);

/// Fails records (as record failures, for `error_handling`) whose `id` is
/// a multiple of `every`, the first `times` times each is seen.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct TestFlaky {
    pub every: i64,
    pub times: u32,
    /// Sleep this long in the second try of a record (a retry that hangs).
    #[serde(default)]
    pub stall_on_retry: Option<Dur>,
}

impl NodeConfig for TestFlaky {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }
    fn validate(&self) -> Result<(), ConfigError> {
        if self.every < 1 {
            return Err(ConfigError::at("every", "`every` must be at least 1"));
        }
        Ok(())
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        Ok(Node::Transform(Box::new(FlakyNode {
            cfg: self.clone(),
            stage: format!("{}/{}", ctx.pipeline, ctx.stage),
        })))
    }
}

struct FlakyNode {
    cfg: TestFlaky,
    stage: String,
}

impl Transform for FlakyNode {
    fn process(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        for r in batch {
            let id = r.get("id").and_then(Value::as_i64).unwrap_or(-1);
            if id % self.cfg.every == 0 {
                let n = {
                    let mut g = TRIES.lock().unwrap();
                    let n = g
                        .get_or_insert_with(HashMap::new)
                        .entry((self.stage.clone(), id))
                        .or_insert(0);
                    *n += 1;
                    *n
                };
                if n == 2
                    && let Some(d) = self.cfg.stall_on_retry
                {
                    std::thread::sleep(d.0);
                }
                if n <= self.cfg.times {
                    out.fail(r, format!("TestFlaky: try {n} of record {id} fails"));
                    continue;
                }
            }
            out.emit(r);
        }
        Ok(())
    }
}

/// Calls or builds so far per stage, shared by every incarnation.
static EVENTS: Mutex<Option<HashMap<String, (u64, u64)>>> = Mutex::new(None);

fn bump(stage: &str, records: u64, hits: bool) -> (u64, u64) {
    let mut g = EVENTS.lock().unwrap();
    let e = g
        .get_or_insert_with(HashMap::new)
        .entry(stage.to_owned())
        .or_insert((0, 0));
    let before = *e;
    e.0 += records;
    if hits {
        e.1 += 1;
    }
    before
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct TestHang {
    pub at: u64,
    #[serde(default = "one")]
    pub times: u64,
    #[serde(default = "an_hour", rename = "for")]
    pub hang_for: Dur,
}

fn an_hour() -> Dur {
    Dur(Duration::from_secs(3600))
}

impl NodeConfig for TestHang {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        Ok(Node::Transform(Box::new(HangNode {
            cfg: self.clone(),
            stage: format!("hang/{}/{}", ctx.pipeline, ctx.stage),
        })))
    }
}

struct HangNode {
    cfg: TestHang,
    stage: String,
}

impl Transform for HangNode {
    fn process(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        let n = batch.len() as u64;
        let (seen, hung) = {
            let g = EVENTS.lock().unwrap();
            g.as_ref()
                .and_then(|m| m.get(&self.stage).copied())
                .unwrap_or((0, 0))
        };
        let hit = seen <= self.cfg.at && self.cfg.at < seen + n && hung < self.cfg.times;
        if hit {
            bump(&self.stage, 0, true);
            std::thread::sleep(self.cfg.hang_for.0);
            return Err(NodeError::failed("TestHang: woke up"));
        }
        bump(&self.stage, n, false);
        for r in batch {
            out.emit(r);
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct TestSlowStart {
    #[serde(default)]
    pub delay: Dur,
    #[serde(default)]
    pub panic: bool,
    /// How many builds misbehave; `0` means all.
    #[serde(default)]
    pub times: u64,
}

impl NodeConfig for TestSlowStart {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let key = format!("start/{}/{}", ctx.pipeline, ctx.stage);
        let (_, builds) = bump(&key, 0, true);
        if self.times == 0 || builds < self.times {
            std::thread::sleep(self.delay.0);
            if self.panic {
                panic!("TestSlowStart: deliberate panic while building");
            }
        }
        Ok(Node::Transform(Box::new(SlowNode(Duration::ZERO))))
    }
}
