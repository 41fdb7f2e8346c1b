//! Pipeline specs: the Beam-YAML-shaped pipeline file, parsed, checked and
//! resolved into a graph of [`Stage`]s.
//!
//! Everything a user can get wrong is reported as a [`SpecError`] with the
//! file, line and column and what was expected; [`load`] collects every error
//! it can find rather than stopping at the first.
//!
//! Checking a file is a sequence of passes over it (see `compile` below),
//! each in its own module, as Vector's `compile()` calls its
//! `validation::check_*` in turn:
//!
//! | Module | Pass |
//! |---|---|
//! | `parse` | the file's shape: top-level keys, `options`, the transform list, names, chain inputs |
//! | `nested` | a `type: chain` among a composite's transforms, spliced in its place |
//! | `transform` | one transform entry: its keys, `config` (parsed and validated by its node type), `error_handling`, `timeout`, `restart`, `resources` |
//! | `options` | `options:` values (queues, restart policies, Zenoh) |
//! | `inputs` | `input:` entries, parsed and then resolved to a stage and output |
//! | `graph` | every named output is read; the stages in topological order, or the cycle |
//! | `resources` | the stages' budgets against a [`Machine`] |
//! | `windowing` | each stream's windowing strategy; which stages send watermarks |
//!
//! The data types are in `types` (options and per-stage settings) and
//! `machine` (what a machine offers); [`PipelineBuilder`] runs the graph
//! passes over stages made in Rust. A new check goes into the module of the
//! pass it belongs to, or into a new module called from `compile`.

mod bounded;
mod builder;
mod graph;
mod inputs;
mod machine;
mod nested;
mod options;
mod parse;
mod placement;
mod resources;
mod transform;
mod types;
mod windowing;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::node::{DynNode, NodeKind};
use crate::registry::{Registry, closest};
use crate::window::{WatermarkSpec, Windowing};
use crate::yaml::{self, Mark, YNode, YValue, YamlError, from_node};

pub use builder::PipelineBuilder;
pub use machine::{Bytes, GpuFile, Machine, MachineFile};
pub use types::*;

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
    /// `placement:`: the host that runs it, when the pipeline spans hosts.
    pub placement: Option<Placement>,
    /// `serve:` (a node that answers requests, see [`ServeSpec`]).
    pub serve: Option<ServeSpec>,
    /// `windowing:` as written on the stage: a transform's applies to its
    /// input (its records are put into windows again), a source's to its
    /// output.
    pub windowing_key: Option<Windowing>,
    /// The windowing strategy of the stage's input (a source's: of its
    /// output), resolved by the `windowing` pass.
    pub windowing: Windowing,
    /// How a source (or a stage that assigns timestamps) derives its
    /// watermark, and how long an input may be silent before it stops
    /// holding the stage's watermark back: `options.watermark`, or the
    /// stage's own `watermark:`.
    pub watermark: WatermarkSpec,
    /// The stage sends watermarks on its outputs: a stage downstream of it
    /// needs them (set by the `windowing` pass).
    pub sends_watermarks: bool,
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
    /// Where `stage` is written, `file:line:col`, for errors found after
    /// the checks (building its node); `None` for a stage made in code.
    pub fn place_of(&self, stage: &Stage) -> Option<String> {
        let file = self.file.as_ref()?;
        (stage.mark.line > 0).then(|| format!("{}:{}", file.display(), stage.mark))
    }

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
    let pipeline = compile(&mut cx, &root, default_name, registry, machine);
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

/// The passes, in order; each stops the run when it finds errors the next
/// pass would trip over.
fn compile(
    cx: &mut Cx,
    root: &YNode,
    default_name: &str,
    registry: &Registry,
    machine: &Machine,
) -> Option<Pipeline> {
    // the file's shape, each transform's config, names, chain inputs
    let mut p = parse::pipeline(cx, root, default_name, registry)?;
    cx.ok()?;
    // `input:` names resolved to a stage and one of its outputs
    inputs::resolve(cx, &mut p.stages);
    cx.ok()?;
    // every named output is read by someone
    graph::check_outputs_read(cx, &p.stages);
    // every stage has a host, where the pipeline spans hosts
    placement::check(cx, &p.stages, &p.options);
    cx.ok()?;
    // the stages' budgets fit the machine
    resources::check(cx, &p.stages, machine);
    cx.ok()?;
    // producers before consumers; a cycle is an error
    p.stages = graph::topo_sort(cx, p.stages)?;
    // each stream's windowing strategy; who sends watermarks
    windowing::resolve(cx, &mut p.stages);
    // a stage that needs its whole input is not fed an endless one
    bounded::check(cx, &p.stages);
    cx.ok()?;
    Some(p)
}

/// What the passes share: the file's name and the errors found so far.
struct Cx {
    file: Option<String>,
    errors: Vec<SpecError>,
}

impl Cx {
    /// `Some` while no error has been found (for `?` between passes).
    fn ok(&self) -> Option<()> {
        self.errors.is_empty().then_some(())
    }

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
