//! Helpers for tests that drive a `RunInference` node directly (no
//! pipeline): here, in `hil-tests` (CUDA parity) and in the benchmark.

use std::path::Path;
use std::sync::Arc;

use rill_core::metrics::NodeMetrics;
use rill_core::node::{Emitter, Failure, Node, Transform};
use rill_core::spec::Resources;
use rill_core::{Record, yaml};

/// Builds a `RunInference` node from its `config` in YAML.
pub fn build(
    config_yaml: &str,
    base_dir: &Path,
    resources: Resources,
) -> Result<(Box<dyn Transform>, Arc<NodeMetrics>), String> {
    let mut registry = rill_core::registry::Registry::new();
    crate::register_all(&mut registry);
    let node = yaml::parse(config_yaml).map_err(|e| e.to_string())?;
    let cfg = registry
        .parse("RunInference", &node)
        .expect("registered")
        .map_err(|e| e.to_string())?;
    let metrics = Arc::new(NodeMetrics::default());
    let state = Default::default();
    let built =
        rill_core::testkit::with_context("infer", base_dir, &state, resources, &metrics, |ctx| {
            cfg.build(ctx)
        });
    match built.map_err(|e| e.to_string())? {
        Node::Transform(t) => Ok((t, metrics)),
        _ => Err("RunInference is a transform".into()),
    }
}

/// Runs one batch through the node: (outputs, dead letters).
pub fn process(node: &mut dyn Transform, batch: Vec<Record>) -> (Vec<Record>, Vec<Failure>) {
    let mut out = Emitter::new();
    node.process(batch, &mut out).expect("process");
    let (main, _, failures) = out.take();
    (main, failures)
}
