//! `rill validate` refuses budgets the machine cannot meet, naming the
//! stage and the shortfall. The machine inventory is given by hand here, so
//! GPU cases are checked without a GPU.

use rill_core::spec::{Machine, parse_str};

const GIB: u64 = 1 << 30;

fn machine(gpus: Vec<u64>) -> Machine {
    Machine {
        cpus: 2,
        memory: 16 * GIB,
        gpus,
        described: None,
        ..Machine::default()
    }
}

fn check(resources: &[&str], m: &Machine) -> Result<(), String> {
    let mut registry = rill_nodes::registry();
    rill_ml::register_all(&mut registry);
    let mut yaml = String::from(
        "pipeline:\n  name: b\n  transforms:\n    - {type: Create, name: src, config: {elements: [1]}}\n",
    );
    for (i, r) in resources.iter().enumerate() {
        yaml.push_str(&format!(
            "    - type: RunInference\n      name: infer{i}\n      input: src\n      resources: {r}\n      config:\n        model_handler: {{type: BurnMlp, config: {{path: m.mpk, layers: [1, 2]}}}}\n"
        ));
    }
    yaml.push_str("    - {type: Filter, name: f, input: src, config: {keep: 'True'}}\n");
    parse_str(&yaml, "b", Some("b.yaml"), &registry, m)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn refused(resources: &[&str], m: &Machine, needles: &[&str]) {
    let err = check(resources, m).expect_err("should be refused");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in:\n{err}");
    }
}

#[test]
fn budgets_that_fit_pass() {
    let m = machine(vec![8 * GIB]);
    check(&["{device: cpu, cpu_threads: 1, instances: 2}"], &m).unwrap();
    check(
        &["{device: cuda:0, gpu_memory: 6GiB}", "{cpu_threads: 2}"],
        &m,
    )
    .unwrap();
    check(&["{device: auto, gpu_memory: 2GiB}"], &machine(vec![])).unwrap();
}

#[test]
fn cpu_threads_beyond_the_cores() {
    refused(
        &["{cpu_threads: 4}"],
        &machine(vec![]),
        &[
            "b.yaml:5:",
            "`infer0` asks for 4 CPU threads but this machine has 2 (short by 2)",
        ],
    );
    refused(
        &["{cpu_threads: 2}", "{cpu_threads: 1}"],
        &machine(vec![]),
        &[
            "the stages' `cpu_threads` add up to 3 with `infer1`, but this machine has 2 CPU cores (short by 1)",
        ],
    );
    refused(
        &["{cpu_threads: 0}"],
        &machine(vec![]),
        &["`cpu_threads` must be at least 1"],
    );
}

#[test]
fn missing_or_small_gpus() {
    refused(
        &["{device: cuda:1}"],
        &machine(vec![8 * GIB]),
        &["`infer0` asks for device cuda:1 but this machine has 1 CUDA device"],
    );
    refused(
        &["{device: cuda:0}"],
        &machine(vec![]),
        &["has 0 CUDA devices (or this build of rill has no `cuda` feature)"],
    );
    refused(
        &[
            "{device: cuda:0, gpu_memory: 6GiB}",
            "{device: cuda:0, gpu_memory: 4GiB}",
        ],
        &machine(vec![8 * GIB]),
        &[
            "`infer1` asks for 4.0 GiB of GPU memory on cuda:0, which has 8.0 GiB and gives 6.0 GiB to other stages (short by 2.0 GiB)",
        ],
    );
    refused(
        &["{device: cpu, gpu_memory: 1GiB}"],
        &machine(vec![8 * GIB]),
        &["`infer0` sets `gpu_memory` but runs on the CPU"],
    );
    refused(
        &["{instances: 0}"],
        &machine(vec![]),
        &["`instances` must be at least 1"],
    );
}

#[test]
fn model_resources_on_a_stage_without_a_model() {
    let mut registry = rill_nodes::registry();
    rill_ml::register_all(&mut registry);
    let yaml = "pipeline:\n  transforms:\n    - {type: Create, name: src, config: {elements: [1]}}\n    - {type: Filter, name: f, input: src, resources: {instances: 2}, config: {keep: 'True'}}\n";
    let err = parse_str(yaml, "b", Some("b.yaml"), &registry, &machine(vec![]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`f` (Filter) runs on the CPU only: `resources.instances` applies to stages that run models"),
        "{err}"
    );
}
