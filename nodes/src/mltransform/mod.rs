//! `MLTransform`: Beam's data preparation with artifacts.
//!
//! With `write_artifact_location`, the stage keeps its whole (bounded)
//! input in its keyed state, and when the input ends it learns what each
//! transform needs (statistics, quantile boundaries, vocabularies, document
//! frequencies) in one pass over it (another pass only for a transform
//! that reads what an earlier one wrote), writes the artifacts, and then
//! emits the input transformed, a part at a time as the outputs have room.
//! With `read_artifact_location`, it applies artifacts written before to
//! any stream, bounded or not, and with `watch: true` takes new artifacts
//! when they are written.
//!
//! Under `exactly_once` the kept input is in the stage's durable state: a
//! SIGKILL while it is kept, learned from, or emitted neither loses nor
//! doubles a row. See docs/mltransform.md.

pub mod artifacts;
pub mod ops;
pub mod sketch;
pub mod vocab;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use tracing::{info, warn};

use rill_core::node::{
    BuildContext, ConfigError, Emitter, Node, NodeConfig, NodeError, NodeKind, Transform,
};
use rill_core::state::KeyedState;
use rill_core::window::END_OF_TIME;
use rill_core::{Name, Record, codec};

use artifacts::Artifacts;
use ops::{Analyser, Applier, Learned, Op, Scratch};

/// `transforms:` items as written: `{type, config}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOp {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub config: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MLTransform {
    /// Learn from the whole input, write the artifacts here, then apply.
    #[serde(default)]
    pub write_artifact_location: Option<PathBuf>,
    /// Apply the artifacts written here.
    #[serde(default)]
    pub read_artifact_location: Option<PathBuf>,
    /// Required when writing; when reading, optional, and if given must be
    /// what the artifacts were made with.
    #[serde(default)]
    pub transforms: Option<Vec<RawOp>>,
    /// Reading: take new artifacts when the file changes (checked at most
    /// once a second, between batches).
    #[serde(default)]
    pub watch: bool,
    /// Writing: distinct tokens a vocabulary counts in memory before its
    /// counts go to sorted files on disk (default 1,000,000).
    #[serde(default)]
    pub vocabulary_cache: Option<usize>,
}

const DEFAULT_VOCAB_CACHE: usize = 1_000_000;

/// Rows a [`Transform::resume`] call emits at most.
const APPLY_CHUNK: usize = 4096;

impl MLTransform {
    /// The transforms, parsed and checked; errors name `transforms.N...`.
    fn ops(&self) -> Result<Vec<Op>, ConfigError> {
        let mut out = Vec::new();
        for (i, raw) in self.transforms.iter().flatten().enumerate() {
            let at = |e: ConfigError| e.within(i.to_string()).within("transforms");
            let Some(kind) = &raw.kind else {
                return Err(at(ConfigError::at(
                    "type",
                    "missing: name the operation, e.g. `type: ScaleToZScore`",
                )));
            };
            if ops::EMBEDDINGS.contains(&kind.as_str()) {
                return Err(at(ConfigError::at(
                    "type",
                    format!(
                        "`{kind}` computes embeddings with a hosted or downloaded model, which rill does not fetch (nothing is downloaded at run time): run a local model with RunInference instead"
                    ),
                )));
            }
            if ops::OTHER_BEAM.contains(&kind.as_str()) {
                return Err(at(ConfigError::at(
                    "type",
                    format!(
                        "`{kind}` is Beam's but not offered by rill; rill has {}",
                        ops::NAMES.join(", ")
                    ),
                )));
            }
            if !ops::NAMES.contains(&kind.as_str()) {
                return Err(at(ConfigError::at(
                    "type",
                    format!(
                        "unknown operation `{kind}`: expected one of {}",
                        ops::NAMES.join(", ")
                    ),
                )));
            }
            let Some(config) = &raw.config else {
                return Err(at(ConfigError::at(
                    "config",
                    "missing: give the operation's config, e.g. `config: {columns: [x]}`",
                )));
            };
            let op: Op =
                serde_json::from_value(serde_json::json!({"type": kind, "config": config}))
                    .map_err(|e| at(ConfigError::at("config", e.to_string())))?;
            op.check().map_err(|e| at(e.within("config")))?;
            if let Op::Tfidf(c) = &op
                && c.vocab_size.is_none()
            {
                for col in &c.columns {
                    let vocab_before = out.iter().any(|o: &Op| {
                        matches!(o, Op::ComputeAndApplyVocabulary(v) if v.columns.contains(col))
                    });
                    if !vocab_before {
                        return Err(at(ConfigError::at_path(
                            ["config", "vocab_size"],
                            format!(
                                "needed: no ComputeAndApplyVocabulary on `{col}` comes before this TFIDF to give the vocabulary's size"
                            ),
                        )));
                    }
                }
            }
            out.push(op);
        }
        Ok(out)
    }

    fn writes(&self) -> bool {
        self.write_artifact_location.is_some()
    }
}

/// The transforms as the artifacts record them.
fn canonical(ops: &[Op]) -> serde_json::Value {
    serde_json::to_value(ops).unwrap_or_default()
}

impl NodeConfig for MLTransform {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match (&self.write_artifact_location, &self.read_artifact_location) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::at(
                    "read_artifact_location",
                    "give write_artifact_location (learn, write, apply) or read_artifact_location (apply), not both",
                ));
            }
            (None, None) => {
                return Err(ConfigError::whole(
                    "give write_artifact_location (learn from the input, write the artifacts, apply them) or read_artifact_location (apply artifacts written before)",
                ));
            }
            _ => {}
        }
        let ops = self.ops()?;
        if self.writes() {
            if ops.is_empty() {
                return Err(ConfigError::at(
                    "transforms",
                    "give at least one transform to learn and apply",
                ));
            }
            if self.watch {
                return Err(ConfigError::at(
                    "watch",
                    "only with read_artifact_location (a stage that writes artifacts has them already)",
                ));
            }
        }
        if self.vocabulary_cache == Some(0) {
            return Err(ConfigError::at("vocabulary_cache", "must be at least 1"));
        }
        Ok(())
    }

    fn uses_watermarks(&self) -> bool {
        // the end of the input (the watermark at the end of time) is when
        // it learns, then emits in parts
        self.writes()
    }

    fn needs_bounded_input(&self) -> Option<String> {
        self.writes().then(|| {
            "learns from its whole input before it writes artifacts (write_artifact_location)"
                .to_owned()
        })
    }

    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let ops = self.ops().map_err(|e| NodeError::failed(e.to_string()))?;
        let mut node = MlNode {
            ops,
            appliers: None,
            state: ctx.state.clone(),
            scratch: Scratch::default(),
            next_batch: 0,
            applying: None,
            write_dir: self
                .write_artifact_location
                .as_ref()
                .map(|p| ctx.resolve(p)),
            vocab_cache: self.vocabulary_cache.unwrap_or(DEFAULT_VOCAB_CACHE),
            watch: None,
        };
        if let Some(dir) = &self.read_artifact_location {
            let dir = ctx.resolve(dir);
            let a = artifacts::read(&dir).map_err(NodeError::BadInput)?;
            let given = (self.transforms.is_some()).then(|| canonical(&node.ops));
            node.take_artifacts(&a, given.as_ref())
                .map_err(NodeError::BadInput)?;
            if self.watch {
                node.watch = Some(Watch {
                    given,
                    modified: modified(&artifacts::path(&dir)),
                    checked: Instant::now(),
                    dir,
                });
            }
        } else {
            node.load()?;
        }
        Ok(Node::Transform(Box::new(node)))
    }
}

fn modified(p: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

struct Watch {
    dir: PathBuf,
    /// The pipeline's own transforms, when it gives them.
    given: Option<serde_json::Value>,
    modified: Option<SystemTime>,
    checked: Instant,
}

type Appliers = Vec<Vec<(Name, Applier)>>;

struct MlNode {
    ops: Vec<Op>,
    /// Per transform, per column: ready to apply (once learned or read).
    appliers: Option<Appliers>,
    state: KeyedState,
    scratch: Scratch,
    /// Writing: the number of the next batch kept.
    next_batch: u64,
    /// Writing, after learning: where the kept batches not emitted yet
    /// start (`Some(None)`: all emitted).
    applying: Option<Option<Vec<u8>>>,
    write_dir: Option<PathBuf>,
    vocab_cache: usize,
    watch: Option<Watch>,
}

/// Keys in the keyed state (writing):
/// - `b` + batch number (8 bytes, big-endian): a kept batch of input;
/// - `m/next`: the next batch number;
/// - `m/artifacts`: the artifacts, once learned (emitting has begun).
fn batch_key(n: u64) -> Vec<u8> {
    let mut k = vec![b'b'];
    k.extend_from_slice(&n.to_be_bytes());
    k
}

fn state_err(e: impl std::fmt::Display) -> NodeError {
    NodeError::failed(format!("MLTransform state: {e}"))
}

impl MlNode {
    fn load(&mut self) -> Result<(), NodeError> {
        if let Some(b) = self.state.get(b"m/next")? {
            self.next_batch = codec::decode(&b).map_err(state_err)?;
        }
        if let Some(b) = self.state.get(b"m/artifacts")? {
            let a: Artifacts = serde_json::from_slice(&b).map_err(state_err)?;
            self.take_artifacts(&a, None).map_err(state_err)?;
            self.applying = Some(Some(vec![b'b']));
        }
        Ok(())
    }

    /// Makes the appliers of artifacts `a`; with `given`, the pipeline's
    /// transforms, which must be those the artifacts were made with.
    fn take_artifacts(
        &mut self,
        a: &Artifacts,
        given: Option<&serde_json::Value>,
    ) -> Result<(), String> {
        if let Some(ours) = given
            && let Some(d) = artifacts::diff("transforms", &a.transforms, ours)
        {
            return Err(format!(
                "the artifacts were made with other transforms than this MLTransform's: {d}"
            ));
        }
        let ops: Vec<Op> = serde_json::from_value(a.transforms.clone())
            .map_err(|e| format!("the artifacts' transforms: {e}"))?;
        if a.learned.len() != ops.len() {
            return Err("the artifacts learned for another number of transforms".into());
        }
        let mut appliers = Vec::new();
        for (op, learned) in ops.iter().zip(&a.learned) {
            let mut per = Vec::new();
            for col in op.columns() {
                let l = match learned.get(col.as_str()) {
                    Some(l) => l.clone(),
                    None if !op.analyses() => Learned::Nothing {},
                    None => return Err(format!("the artifacts have nothing for `{col}`")),
                };
                per.push((col.clone(), Applier::new(op, &l)?));
            }
            appliers.push(per);
        }
        self.ops = ops;
        self.appliers = Some(appliers);
        Ok(())
    }

    /// Applies every transform to a record.
    fn apply(appliers: &Appliers, scratch: &mut Scratch, r: &mut Record) -> Result<(), String> {
        for per in appliers {
            for (col, a) in per {
                a.apply(&mut r.fields, col, scratch)?;
            }
        }
        Ok(())
    }

    /// Every kept batch, in order, to `f`.
    fn each_kept(
        &self,
        mut f: impl FnMut(Vec<Record>) -> Result<(), NodeError>,
    ) -> Result<(), NodeError> {
        let mut from = vec![b'b'];
        loop {
            let (page, next) = self.state.scan_page(b"b", &from, 16)?;
            for (_, bytes) in page {
                f(codec::decode(&bytes).map_err(state_err)?)?;
            }
            match next {
                Some(n) => from = n,
                None => return Ok(()),
            }
        }
    }

    /// Learns what every transform needs from the kept input: a pass for
    /// the transforms that read only what came in (or what transforms of
    /// earlier passes wrote), another only when one reads a column a
    /// transform of the same pass writes.
    fn learn(&mut self) -> Result<Artifacts, NodeError> {
        let spill =
            tempfile::tempdir().map_err(|e| state_err(format!("a temporary folder: {e}")))?;
        let mut learned: Vec<BTreeMap<String, Learned>> = vec![BTreeMap::new(); self.ops.len()];
        let mut appliers: Appliers = Vec::new();
        let mut rows = 0u64;
        let mut start = 0;
        while start < self.ops.len() {
            let mut end = start;
            let mut written: Vec<Name> = Vec::new();
            while end < self.ops.len()
                && self.ops[end].columns().iter().all(|c| !written.contains(c))
            {
                written.extend(self.ops[end].writes());
                end += 1;
            }
            let mut analysers: Vec<(usize, Name, Analyser)> = Vec::new();
            for i in start..end {
                let op = &self.ops[i];
                if !op.analyses() {
                    continue;
                }
                for col in op.columns() {
                    let vocab_size = match op {
                        Op::Tfidf(c) => c
                            .vocab_size
                            .or_else(|| vocab_size_of(&self.ops[..i], &learned, col)),
                        _ => None,
                    };
                    let dir = spill.path().join(format!("{i}-{}", analysers.len()));
                    analysers.push((
                        i,
                        col.clone(),
                        Analyser::new(op, vocab_size, &dir, self.vocab_cache),
                    ));
                }
            }
            if !analysers.is_empty() {
                let mut scratch = Scratch::default();
                let ops = &self.ops;
                let mut n = 0u64;
                let mut failed: Option<String> = None;
                self.each_kept(|batch| {
                    for mut r in batch {
                        n += 1;
                        // a row a transform cannot take is left out of the
                        // learning; applying sends it to the error output
                        if Self::apply(&appliers, &mut scratch, &mut r).is_err() {
                            continue;
                        }
                        for (i, col, a) in analysers.iter_mut() {
                            if let Err(ops::NotTaken::Io(e)) =
                                a.add(&ops[*i], &r.fields, col, &mut scratch)
                            {
                                failed.get_or_insert(e);
                            }
                        }
                    }
                    Ok(())
                })?;
                if let Some(e) = failed {
                    return Err(state_err(e));
                }
                rows = n;
                for (i, col, a) in analysers {
                    let l = a.finish(&self.ops[i]).map_err(state_err)?;
                    learned[i].insert(col.to_string(), l);
                }
            }
            for (op, learned) in self.ops[start..end].iter().zip(&learned[start..end]) {
                let mut per = Vec::new();
                for col in op.columns() {
                    let l = learned
                        .get(col.as_str())
                        .cloned()
                        .unwrap_or(Learned::Nothing {});
                    per.push((col.clone(), Applier::new(op, &l).map_err(state_err)?));
                }
                appliers.push(per);
            }
            start = end;
        }
        if rows == 0 {
            let mut n = 0u64;
            self.each_kept(|b| {
                n += b.len() as u64;
                Ok(())
            })?;
            rows = n;
        }
        self.appliers = Some(appliers);
        Ok(Artifacts {
            format: artifacts::FORMAT.into(),
            version: artifacts::VERSION,
            transforms: canonical(&self.ops),
            rows,
            learned,
        })
    }

    /// Reading with `watch`: new artifacts, when the file changed.
    fn check_watch(&mut self) {
        let Some(w) = &mut self.watch else { return };
        if w.checked.elapsed() < Duration::from_secs(1) {
            return;
        }
        w.checked = Instant::now();
        let now = modified(&artifacts::path(&w.dir));
        if now == w.modified {
            return;
        }
        w.modified = now;
        let (dir, given) = (w.dir.clone(), w.given.clone());
        match artifacts::read(&dir) {
            Ok(a) => match self.take_artifacts(&a, given.as_ref()) {
                Ok(()) => {
                    info!(dir = %dir.display(), rows = a.rows, "MLTransform: new artifacts applied")
                }
                Err(e) => {
                    warn!(dir = %dir.display(), "MLTransform: the new artifacts are not applied, the old ones stay: {e}")
                }
            },
            Err(e) => {
                warn!("MLTransform: the new artifacts are not applied, the old ones stay: {e}")
            }
        }
    }
}

/// Emits `r` transformed, or fails it as it came in (not half done).
fn emit_applied(appliers: &Appliers, scratch: &mut Scratch, r: Record, out: &mut Emitter) {
    let mut t = r.clone();
    match MlNode::apply(appliers, scratch, &mut t) {
        Ok(()) => out.emit(t),
        Err(e) => out.fail(r, format!("MLTransform: {e}")),
    }
}

/// TFIDF's vocabulary size from the last ComputeAndApplyVocabulary on
/// `col` before it: Beam's `get_num_buckets_for_transformed_feature`.
fn vocab_size_of(before: &[Op], learned: &[BTreeMap<String, Learned>], col: &str) -> Option<u64> {
    before
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, op)| match op {
            Op::ComputeAndApplyVocabulary(c) if c.columns.iter().any(|x| x.as_str() == col) => {
                let Some(Learned::Vocabulary { vocabulary }) = learned[i].get(col) else {
                    return None;
                };
                let v = vocabulary.len() as u64;
                Some(if c.num_oov_buckets > 0 {
                    v + c.num_oov_buckets
                } else {
                    (v.saturating_sub(1) as i64).max(c.default_value) as u64 + 1
                })
            }
            _ => None,
        })
}

impl Transform for MlNode {
    fn process(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        if self.write_dir.is_some() {
            // kept until the input ends
            if !batch.is_empty() {
                self.state.put(
                    &batch_key(self.next_batch),
                    codec::encode(&batch).map_err(state_err)?,
                );
                self.next_batch += 1;
                self.state.put(
                    b"m/next",
                    codec::encode(&self.next_batch).map_err(state_err)?,
                );
            }
            return Ok(());
        }
        self.check_watch();
        let appliers = self.appliers.as_ref().expect("read artifacts at build");
        out.reserve(batch.len());
        for r in batch {
            emit_applied(appliers, &mut self.scratch, r, out);
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Emitter) -> Result<(), NodeError> {
        if watermark < END_OF_TIME || self.applying.is_some() {
            return Ok(());
        }
        let Some(dir) = self.write_dir.clone() else {
            return Ok(());
        };
        let a = self.learn()?;
        artifacts::write(&dir, &a).map_err(|e| NodeError::io(artifacts::path(&dir), e))?;
        info!(dir = %dir.display(), rows = a.rows, "MLTransform: artifacts written");
        self.state
            .put(b"m/artifacts", serde_json::to_vec(&a).map_err(state_err)?);
        self.applying = Some(Some(vec![b'b']));
        self.resume(out)
    }

    fn pending(&self) -> bool {
        matches!(self.applying, Some(Some(_)))
    }

    fn watermark_hold(&self) -> Option<i64> {
        // writing: every kept row is still to come, whatever their times
        (self.write_dir.is_some() && self.applying != Some(None))
            .then_some(rill_core::window::BEFORE_TIME)
    }

    fn resume(&mut self, out: &mut Emitter) -> Result<(), NodeError> {
        let Some(Some(mut from)) = self.applying.take() else {
            return Ok(());
        };
        let appliers = self.appliers.as_ref().expect("learned before emitting");
        let mut emitted = 0;
        let next = loop {
            let (page, next) = self.state.scan_page(b"b", &from, 4)?;
            for (k, bytes) in page {
                let batch: Vec<Record> = codec::decode(&bytes).map_err(state_err)?;
                emitted += batch.len();
                for r in batch {
                    emit_applied(appliers, &mut self.scratch, r, out);
                }
                // emitted and forgotten in the same commit
                self.state.delete(&k);
            }
            match next {
                Some(n) if emitted < APPLY_CHUNK => from = n,
                Some(n) => break Some(n),
                None => break None,
            }
        };
        self.applying = Some(next);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
