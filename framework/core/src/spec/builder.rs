//! Pipelines made in Rust code, checked by the same graph passes.

use std::collections::HashSet;
use std::sync::Arc;

use super::{
    Cx, Input, Options, Pipeline, Resources, Retries, SpecErrors, Stage, Timeouts, graph, inputs,
    windowing,
};
use crate::node::DynNode;
use crate::window::Windowing;
use crate::yaml::Mark;

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
            placement: None,
            serve: None,
            windowing_key: None,
            windowing: Windowing::default(),
            watermark: self.options.watermark,
            sends_watermarks: false,
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
        inputs::resolve(&mut cx, &mut stages);
        graph::check_outputs_read(&mut cx, &stages);
        let mut stages = if cx.errors.is_empty() {
            graph::topo_sort(&mut cx, stages)
        } else {
            None
        };
        if let Some(stages) = &mut stages {
            windowing::resolve(&mut cx, stages);
        }
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
