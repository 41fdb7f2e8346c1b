//! Runs a node on scripted inputs: no Zenoh, no actors, no GPU.
//!
//! ```
//! use rill_core::testkit;
//! use rill_core::node::*;
//! use rill_core::{record, Record};
//!
//! struct Upper;
//! impl Transform for Upper {
//!     fn process(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
//!         for mut r in batch {
//!             if let Some(rill_core::Value::String(s)) = r.fields.get_mut("name") {
//!                 *s = s.to_uppercase();
//!             }
//!             out.emit(r);
//!         }
//!         Ok(())
//!     }
//! }
//! let run = testkit::run_transform(&mut Upper, vec![vec![record! {"name" => "ada"}]]).unwrap();
//! assert_eq!(run.main[0].get("name").unwrap().as_str(), Some("ADA"));
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::NodeMetrics;
use crate::node::{
    BuildContext, Emitter, Extensions, Failure, Node, NodeError, Sink, Source, SourceStatus,
    Transform,
};
use crate::registry::Registry;
use crate::value::Record;
use crate::yaml::{self, YamlError};

/// Everything a node emitted during a test run.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TestRun {
    pub main: Vec<Record>,
    pub named: Vec<(String, Vec<Record>)>,
    pub failures: Vec<Failure>,
}

impl TestRun {
    fn absorb(&mut self, out: &mut Emitter) {
        let (main, named, failures) = out.take();
        self.main.extend(main);
        for (n, v) in named {
            match self.named.iter_mut().find(|(m, _)| *m == n) {
                Some((_, w)) => w.extend(v),
                None => self.named.push((n, v)),
            }
        }
        self.failures.extend(failures);
    }

    /// Records emitted on the named output `name`.
    pub fn output(&self, name: &str) -> &[Record] {
        self.named
            .iter()
            .find(|(n, _)| n == name)
            .map_or(&[], |(_, v)| v.as_slice())
    }
}

/// Feeds `batches` to a transform one by one, then signals the end.
pub fn run_transform(
    node: &mut dyn Transform,
    batches: Vec<Vec<Record>>,
) -> Result<TestRun, NodeError> {
    let mut run = TestRun::default();
    let mut out = Emitter::new();
    for b in batches {
        node.process(b, &mut out)?;
        run.absorb(&mut out);
    }
    // every input ended: the watermark goes to the end of time, as the
    // runtime moves it (nodes that do not use watermarks ignore it)
    node.on_watermark(crate::window::END_OF_TIME, &mut out)?;
    run.absorb(&mut out);
    while node.pending() {
        node.resume(&mut out)?;
        run.absorb(&mut out);
    }
    node.finish(&mut out)?;
    run.absorb(&mut out);
    node.checkpoint()?;
    Ok(run)
}

/// Writes `batches` to a sink, then finishes it and checkpoints it (as the
/// runtime's final commit does).
pub fn run_sink(node: &mut dyn Sink, batches: Vec<Vec<Record>>) -> Result<TestRun, NodeError> {
    let mut run = TestRun::default();
    let mut out = Emitter::new();
    for b in batches {
        node.write(b, &mut out)?;
        run.absorb(&mut out);
    }
    node.finish()?;
    node.checkpoint()?;
    Ok(run)
}

/// Polls a source until it is done, sleeping as it asks, or until `limit`
/// records have come out.
pub fn drain_source(node: &mut dyn Source, limit: usize) -> Result<TestRun, NodeError> {
    let mut run = TestRun::default();
    let mut out = Emitter::new();
    loop {
        let status = node.poll(256, &mut out)?;
        run.absorb(&mut out);
        if run.main.len() >= limit {
            return Ok(run);
        }
        match status {
            SourceStatus::Done => return Ok(run),
            SourceStatus::More => {}
            SourceStatus::Wait(d) => std::thread::sleep(d.min(Duration::from_millis(50))),
        }
    }
}

/// Parses `config_yaml` as the config of the registered type `type_name`,
/// validates it and builds the node, with paths resolved against `base_dir`.
pub fn build_yaml(
    registry: &Registry,
    type_name: &str,
    config_yaml: &str,
    base_dir: &Path,
) -> Result<Node, String> {
    let state = crate::state::KeyedState::default();
    build_yaml_with_state(registry, type_name, config_yaml, base_dir, &state)
}

/// As [`build_yaml`], with the stage's keyed state as of its last commit
/// (to build a node the way a restarted stage does).
pub fn build_yaml_with_state(
    registry: &Registry,
    type_name: &str,
    config_yaml: &str,
    base_dir: &Path,
    state: &crate::state::KeyedState,
) -> Result<Node, String> {
    build_yaml_windowed(
        registry,
        type_name,
        config_yaml,
        base_dir,
        state,
        Default::default(),
    )
}

/// As [`build_yaml_with_state`], for a stage whose input is windowed by
/// `windowing`.
pub fn build_yaml_windowed(
    registry: &Registry,
    type_name: &str,
    config_yaml: &str,
    base_dir: &Path,
    state: &crate::state::KeyedState,
    windowing: crate::window::Windowing,
) -> Result<Node, String> {
    let node = yaml::parse(config_yaml).map_err(|e: YamlError| e.to_string())?;
    let cfg = registry
        .parse(type_name, &node)
        .ok_or_else(|| format!("unknown type `{type_name}`"))?
        .map_err(|e| e.to_string())?;
    let metrics = Arc::new(NodeMetrics::default());
    with_context(
        type_name,
        base_dir,
        state,
        Default::default(),
        &metrics,
        |ctx| {
            let ctx = BuildContext {
                windowing,
                ..ctx.clone()
            };
            cfg.build(&ctx).map_err(|e| e.to_string())
        },
    )
}

/// Calls `f` with the context a node of stage `stage` is built with on its
/// first start in a test: pipeline `test`, no extensions, `exactly_once`,
/// its keyed state, resources and metrics as given.
pub fn with_context<R>(
    stage: &str,
    base_dir: &Path,
    state: &crate::state::KeyedState,
    resources: crate::spec::Resources,
    metrics: &Arc<NodeMetrics>,
    f: impl FnOnce(&BuildContext<'_>) -> R,
) -> R {
    let ext = Extensions::default();
    let ctx = BuildContext {
        pipeline: "test",
        stage,
        attempt: 0,
        base_dir,
        extensions: &ext,
        state,
        delivery: crate::spec::Delivery::ExactlyOnce,
        resources,
        metrics,
        windowing: Default::default(),
        requests: None,
    };
    f(&ctx)
}

/// A store in memory that says it is durable, as sled is: a node then
/// takes the paths it takes under `exactly_once` (Combine's delta records,
/// say), and a test can rebuild it from what was committed, as a restart
/// does.
#[derive(Debug, Default)]
pub struct DurableMemStore(crate::state::MemStore);

impl crate::state::StateStore for DurableMemStore {
    fn get(&self, key: &[u8]) -> crate::state::StoreResult<Option<Vec<u8>>> {
        self.0.get(key)
    }
    fn scan_prefix(&self, prefix: &[u8]) -> crate::state::StoreResult<crate::state::Entries> {
        self.0.scan_prefix(prefix)
    }
    fn scan_from(
        &self,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> crate::state::StoreResult<crate::state::Entries> {
        self.0.scan_from(prefix, from, limit)
    }
    fn commit(&self, batch: crate::state::WriteBatch) -> crate::state::StoreResult<()> {
        self.0.commit(batch)
    }
    fn flush(&self) -> crate::state::StoreResult<()> {
        Ok(())
    }
    fn clear(&self) -> crate::state::StoreResult<()> {
        self.0.clear()
    }
    fn durable(&self) -> bool {
        true
    }
}

/// Commits what `state` changed since the last call to `store`, as the
/// runtime does at a stage's commit.
pub fn commit_state(store: &Arc<dyn crate::state::StateStore>, state: &crate::state::KeyedState) {
    store
        .commit(crate::state::WriteBatch {
            ops: state.take_changes(),
        })
        .expect("a commit to a store in memory")
}
