//! Pipelines composed in Rust, with a node type defined here: the path an
//! app developer takes instead of YAML.

use std::sync::Arc;

use rill_core::node::{BuildContext, Emitter, Node, NodeConfig, NodeError, NodeKind, Transform};
use rill_core::spec::PipelineBuilder;
use rill_core::{Record, Value};
use rill_nodes::files::WriteToJson;
use rill_nodes::generate::Generate;
use rill_runtime::{RunOptions, run};

/// Adds a running total of `value` per key.
#[derive(Debug, serde::Deserialize)]
struct RunningSum;

struct RunningSumNode(std::collections::HashMap<String, f64>);

impl NodeConfig for RunningSum {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }
    fn build(&self, _: &BuildContext<'_>) -> Result<Node, NodeError> {
        Ok(Node::Transform(Box::new(
            RunningSumNode(Default::default()),
        )))
    }
}

impl Transform for RunningSumNode {
    fn process(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        for mut r in batch {
            let Some(v) = r.get("value").and_then(Value::as_f64) else {
                out.fail(r, "no numeric `value`");
                continue;
            };
            let total = self
                .0
                .entry(r.key.as_deref().unwrap_or_default().to_string())
                .or_default();
            *total += v;
            r.fields.insert("total".into(), Value::Float(*total));
            out.emit(r);
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_built_in_rust_runs() {
    let dir = tempfile::tempdir().unwrap();
    let p = PipelineBuilder::new("built")
        .stage(
            "gen",
            Generate {
                count: Some(1000),
                keys: Some(2),
                start_time: Some(0),
                ..Default::default()
            },
            &[],
        )
        .stage("sum", RunningSum, &["gen"])
        .stage("sink", WriteToJson::new("sums.jsonl"), &["sum"])
        .build()
        .unwrap();
    let report = run(Arc::new(p), RunOptions::in_dir(dir.path()))
        .await
        .unwrap();
    assert_eq!(report.stages.len(), 3);
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("sums.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1000);
    // recompute the running totals independently
    let mut totals = [0.0f64; 2];
    for r in &rows {
        let k = (r["id"].as_i64().unwrap() % 2) as usize;
        totals[k] += r["value"].as_f64().unwrap();
        assert!((r["total"].as_f64().unwrap() - totals[k]).abs() < 1e-9);
    }

    // the builder checks the graph as YAML loading does
    let err = PipelineBuilder::new("bad")
        .stage("sum", RunningSum, &["nowhere"])
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("names no transform"), "{err}");
}
