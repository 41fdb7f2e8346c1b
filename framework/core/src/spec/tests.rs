//! The passes, through `parse_str`, with small node types made here: no
//! binary, no file, no built-in node.

use serde::Deserialize;

use super::*;
use crate::node::{BuildContext, ConfigError, Node, NodeConfig, NodeError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Src {
    #[serde(default)]
    count: u32,
}

impl NodeConfig for Src {
    fn kind(&self) -> NodeKind {
        NodeKind::Source
    }
    fn validate(&self) -> Result<(), ConfigError> {
        if self.count > 1000 {
            return Err(ConfigError::at("count", "`count` must be at most 1000"));
        }
        Ok(())
    }
    fn build(&self, _: &BuildContext<'_>) -> Result<Node, NodeError> {
        Err(NodeError::failed("not built in these tests"))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Nested {
    size: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Map {
    field: String,
    nested: Option<Nested>,
    #[serde(default)]
    branches: Vec<String>,
    #[serde(default)]
    one_input: bool,
}

impl NodeConfig for Map {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }
    fn validate(&self) -> Result<(), ConfigError> {
        if self.field.is_empty() {
            return Err(ConfigError::at("field", "`field` must not be empty"));
        }
        if let Some(n) = &self.nested
            && n.size == 0
        {
            return Err(ConfigError::at_path(
                ["nested", "size"],
                "the size must be at least 1",
            ));
        }
        Ok(())
    }
    fn outputs(&self) -> Vec<String> {
        self.branches.clone()
    }
    fn multiple_inputs(&self) -> bool {
        !self.one_input
    }
    fn build(&self, _: &BuildContext<'_>) -> Result<Node, NodeError> {
        Err(NodeError::failed("not built in these tests"))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Out {}

impl NodeConfig for Out {
    fn kind(&self) -> NodeKind {
        NodeKind::Sink
    }
    fn build(&self, _: &BuildContext<'_>) -> Result<Node, NodeError> {
        Err(NodeError::failed("not built in these tests"))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Model {}

impl NodeConfig for Model {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }
    fn uses_device(&self) -> bool {
        true
    }
    fn build(&self, _: &BuildContext<'_>) -> Result<Node, NodeError> {
        Err(NodeError::failed("not built in these tests"))
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register::<Src>("Src", "a source");
    r.register::<Map>("Map", "a transform");
    r.register::<Out>("Out", "a sink");
    r.register::<Model>("Model", "a transform on a device");
    r
}

fn laptop() -> Machine {
    Machine {
        cpus: 4,
        memory: 8 << 30,
        gpus: Vec::new(),
        described: Some("laptop.json".into()),
        ..Machine::default()
    }
}

fn gpu_box() -> Machine {
    Machine {
        cpus: 32,
        memory: 128 << 30,
        gpus: vec![24 << 30],
        described: Some("box.json".into()),
        ..Machine::default()
    }
}

fn parse(yaml: &str, machine: &Machine) -> Result<Pipeline, SpecErrors> {
    parse_str(yaml, "p", Some("p.yaml"), &registry(), machine)
}

/// The errors as `line:col: message` lines.
fn errors(yaml: &str, machine: &Machine) -> Vec<String> {
    match parse(yaml, machine) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => {
            e.0.iter()
                .map(|e| format!("{}: {}", e.mark.expect("every error has a place"), e.msg))
                .collect()
        }
    }
}

fn one_error(yaml: &str) -> String {
    let e = errors(yaml, &laptop());
    assert_eq!(e.len(), 1, "{e:#?}");
    e.into_iter().next().unwrap()
}

#[test]
fn a_chain_gets_its_inputs_and_a_graph_its_order() {
    let p = parse(
        "pipeline:\n  type: chain\n  transforms:\n    - type: Src\n    - type: Map\n      config: {field: x}\n    - type: Out\n",
        &laptop(),
    )
    .unwrap();
    let names: Vec<_> = p.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["Src", "Map", "Out"]);
    assert_eq!(p.stages[1].inputs[0].stage, "Src");
    assert_eq!(p.stages[2].inputs[0].stage, "Map");
    assert_eq!(p.name, "p");

    // written sink first, ordered producers first
    let p = parse(
        "pipeline:\n  transforms:\n    - {type: Out, input: m}\n    - {type: Map, name: m, input: s, config: {field: x}}\n    - {type: Src, name: s}\n",
        &laptop(),
    )
    .unwrap();
    let names: Vec<_> = p.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["s", "m", "Out"]);
}

#[test]
fn a_config_error_points_at_the_key_its_path_names() {
    // the nested key `size`, line 8 column 9
    let yaml = "pipeline:\n  transforms:\n    - type: Src\n    - type: Map\n      input: Src\n      config:\n        nested:\n          size: 0\n        field: x\n";
    assert_eq!(
        one_error(yaml),
        "8:11: in `Map` config: the size must be at least 1"
    );
    // a key of the config itself
    let yaml = "pipeline:\n  transforms:\n    - type: Src\n      config:\n        count: 5000\n";
    assert_eq!(
        one_error(yaml),
        "5:9: in `Src` config: `count` must be at most 1000"
    );
    // a path the config lacks points at the config
    let yaml = "pipeline:\n  transforms:\n    - type: Src\n    - type: Map\n      input: Src\n      config: {field: ''}\n";
    assert!(one_error(yaml).ends_with("`field` must not be empty"));
}

#[test]
fn unknown_keys_and_types_get_suggestions_at_their_place() {
    let e = one_error("pipeline:\n  transforms:\n    - type: Src\n      confg: {}\n");
    assert!(
        e.starts_with("4:7: unknown key `confg` in a transform (did you mean `config`?)"),
        "{e}"
    );
    let e = one_error("pipeline:\n  transforms:\n    - type: Srcc\n");
    assert!(
        e.starts_with("3:13: unknown transform type `Srcc` (did you mean `Src`?)"),
        "{e}"
    );
    // serde's own errors (an unknown field of the node's config) keep their place
    let e = one_error("pipeline:\n  transforms:\n    - type: Src\n      config:\n        cnt: 1\n");
    assert!(e.starts_with("5:9: "), "{e}");
    assert!(e.contains("cnt"), "{e}");
}

#[test]
fn every_error_of_a_pass_is_reported_not_only_the_first() {
    let e = errors(
        "pipeline:\n  transforms:\n    - {type: Src, config: {count: 2000}}\n    - {type: Map, input: Src, config: {field: ''}}\n    - {type: Nope}\n",
        &laptop(),
    );
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(e[0].starts_with("3:"), "{e:#?}");
    assert!(e[1].starts_with("4:"), "{e:#?}");
    assert!(e[2].starts_with("5:"), "{e:#?}");
}

#[test]
fn inputs_are_resolved_to_a_stage_and_one_of_its_outputs() {
    let base = "pipeline:\n  transforms:\n    - {type: Src, name: s}\n    - {type: Map, name: m, input: s, config: {field: x, branches: [hot]}}\n";
    let p = parse(
        &format!("{base}    - {{type: Out, name: o, input: m.hot}}\n    - {{type: Out, name: o2, input: m}}\n"),
        &laptop(),
    )
    .unwrap();
    let o = p.stage("o").unwrap();
    assert_eq!(
        (o.inputs[0].stage.as_str(), o.inputs[0].output.as_deref()),
        ("m", Some("hot"))
    );
    assert_eq!(p.consumers("m", None).len(), 1);

    let e = one_error(&format!("{base}    - {{type: Out, input: m.cold}}\n"));
    assert!(e.starts_with("5:"), "{e}");
    assert!(
        e.contains("`m` has no output named `cold` (it has: hot)"),
        "{e}"
    );
    let e = errors(&format!("{base}    - {{type: Out, input: n}}\n"), &laptop());
    assert!(
        e.iter()
            .any(|e| e.contains("names no transform (did you mean `m`?)")),
        "{e:#?}"
    );
    let e = one_error(
        "pipeline:\n  transforms:\n    - {type: Src}\n    - {type: Map, input: [Src, Src], config: {field: x, one_input: true}}\n",
    );
    assert!(e.contains("takes exactly one input"), "{e}");
    let e = one_error("pipeline:\n  transforms:\n    - {type: Src, name: s, input: s}\n");
    assert!(e.contains("is a source (Src) and takes no input"), "{e}");
}

#[test]
fn outputs_nobody_reads_are_refused() {
    let e = one_error(
        "pipeline:\n  transforms:\n    - {type: Src}\n    - type: Map\n      input: Src\n      config:\n        field: x\n        error_handling: {output: bad}\n    - {type: Out, input: Map}\n",
    );
    assert!(
        e.starts_with("4:7: error output `bad` of `Map` is read by no transform"),
        "{e}"
    );
}

#[test]
fn a_cycle_is_reported_with_its_path() {
    let e = one_error(
        "pipeline:\n  transforms:\n    - {type: Src}\n    - {type: Map, name: a, input: [Src, b], config: {field: x}}\n    - {type: Map, name: b, input: a, config: {field: x}}\n",
    );
    assert!(
        e.contains("cycle: a -> b -> a") || e.contains("cycle: b -> a -> b"),
        "{e}"
    );
    // the builder runs the same graph passes
    let err = PipelineBuilder::new("b")
        .stage("s", Src { count: 1 }, &[])
        .stage(
            "a",
            Map {
                field: "x".into(),
                nested: None,
                branches: vec![],
                one_input: false,
            },
            &["s", "c"],
        )
        .stage(
            "c",
            Map {
                field: "x".into(),
                nested: None,
                branches: vec![],
                one_input: false,
            },
            &["a"],
        )
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("form a cycle"), "{err}");
}

#[test]
fn names_must_stay_distinct_as_keys_and_folders() {
    let e = one_error(
        "pipeline:\n  transforms:\n    - {type: Src, name: s}\n    - {type: Src, name: s}\n",
    );
    assert!(e.starts_with("4:"), "{e}");
    assert!(
        e.contains("duplicate transform name `s` (first used at 3:"),
        "{e}"
    );
    let e = one_error(
        "pipeline:\n  transforms:\n    - {type: Src, name: 'a b'}\n    - {type: Src, name: 'a/b'}\n",
    );
    assert!(e.contains("map to the same Zenoh key `a_b`"), "{e}");
    let e = one_error("pipeline:\n  transforms:\n    - {type: Src, name: _dlq}\n");
    assert!(e.contains("kept for rill's own folders"), "{e}");
    // two unnamed of one type are numbered
    let p = parse(
        "pipeline:\n  transforms:\n    - {type: Src}\n    - {type: Src}\n",
        &laptop(),
    )
    .unwrap();
    let names: BTreeSet<_> = p.stages.iter().map(|s| s.name.clone()).collect();
    assert_eq!(names, BTreeSet::from(["Src_1".into(), "Src_2".into()]));
}

#[test]
fn budgets_are_checked_against_the_machine_given() {
    let yaml = "pipeline:\n  transforms:\n    - {type: Src}\n    - type: Model\n      input: Src\n      resources: {device: 'cuda:0', gpu_memory: 16GiB}\n";
    // fits the GPU box, not the laptop, wherever the check runs
    parse(yaml, &gpu_box()).unwrap();
    let e = errors(yaml, &laptop());
    assert!(
        e[0].contains("asks for device cuda:0 but the machine of laptop.json has 0 CUDA devices"),
        "{e:#?}"
    );
    // two stages share the GPU's memory
    let two = format!(
        "{yaml}    - type: Model\n      name: m2\n      input: Src\n      resources: {{device: 'cuda:0', gpu_memory: 16GiB}}\n"
    );
    let e = errors(&two, &gpu_box());
    assert!(e[0].starts_with("7:"), "{e:#?}");
    assert!(
        e[0].contains("gives 16.0 GiB to other stages (short by 8.0 GiB)"),
        "{e:#?}"
    );
    // a CPU-only node cannot take a device
    let e = one_error(
        "pipeline:\n  transforms:\n    - type: Src\n      resources: {device: 'cuda:0'}\n",
    );
    assert!(e.contains("runs on the CPU only"), "{e}");
    let e =
        one_error("pipeline:\n  transforms:\n    - type: Src\n      resources: {cpu_threads: 6}\n");
    assert!(
        e.contains("asks for 6 CPU threads but the machine of laptop.json has 4"),
        "{e}"
    );
}

#[test]
fn options_are_checked_where_they_are_written() {
    let e = errors(
        "options:\n  batch_size: 0\n  queue: {size: 0}\npipeline:\n  transforms:\n    - {type: Src}\n",
        &laptop(),
    );
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        e[0].starts_with("2:3: `batch_size` must be at least 1"),
        "{e:#?}"
    );
    assert!(
        e[1].starts_with("3:3: queue `size` must be at least 1"),
        "{e:#?}"
    );
}

/// `Src` on host `a`, `Model` (on cuda:0, 16 GiB) on host `gpu`.
const PLACED: &str = "options:\n  hosts:\n    a: {connect: ['tcp/10.0.0.2:7447']}\n    gpu: {listen: ['tcp/0.0.0.0:7447'], mode: router}\npipeline:\n  transforms:\n    - type: Src\n      placement: {host: a}\n      resources: {cpu_threads: 3}\n    - type: Model\n      input: Src\n      placement: {host: gpu}\n      resources: {device: 'cuda:0', gpu_memory: 16GiB, cpu_threads: 3}\n";

#[test]
fn placement_names_a_host_of_options_hosts() {
    // each host's budget on its own: 3 + 3 threads fit two 4-core hosts
    let p = parse(PLACED, &gpu_box()).unwrap();
    assert_eq!(p.stages[1].placement.as_ref().unwrap().host, "gpu");
    assert_eq!(p.options.hosts["gpu"].mode.as_deref(), Some("router"));
    let mut four = gpu_box();
    four.cpus = 4;
    parse(PLACED, &four).unwrap();
    // on one host they do not
    let e = errors(&PLACED.replace("{host: a}", "{host: gpu}"), &four);
    assert!(e.iter().any(|e| e.contains("add up to 6")), "{e:#?}");
    // the laptop has no GPU: host `gpu` does not fit it, host `a` does; a
    // run of host `a` checks its own stages only; host `gpu` may have its
    // own machine
    let e = errors(PLACED, &laptop());
    assert!(e[0].contains("asks for device cuda:0"), "{e:#?}");
    let mut only_a = laptop();
    only_a.only_host = Some("a".into());
    parse(PLACED, &only_a).unwrap();
    let mut per_host = laptop();
    per_host.hosts.insert("gpu".into(), gpu_box());
    parse(PLACED, &per_host).unwrap();

    // every stage names a host, and a host that exists
    let e = one_error(&PLACED.replace("      placement: {host: a}\n", ""));
    assert!(
        e.starts_with("7:7:") && e.contains("`Src` has no `placement: {host: NAME}`"),
        "{e}"
    );
    let e = errors(&PLACED.replace("{host: gpu}", "{host: gpus}"), &gpu_box());
    assert!(
        e[0].contains(
            "`Model` is placed on host `gpus`, which `options.hosts` does not name (hosts: a, gpu)"
        ),
        "{e:#?}"
    );
    let e = one_error("pipeline:\n  transforms:\n    - type: Src\n      placement: {host: a}\n");
    assert!(e.contains("there is no `options.hosts`"), "{e}");
    let e = errors(&PLACED.replace("mode: router", "mode: hub"), &gpu_box());
    assert!(
        e[0].contains("host `gpu`: unknown zenoh mode `hub`"),
        "{e:#?}"
    );
    let e = errors(&PLACED.replace("{host: a}", "{hots: a}"), &gpu_box());
    assert!(e[0].contains("hots"), "{e:#?}");
}
