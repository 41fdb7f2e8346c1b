//! `rill machine` describes this machine; `rill validate --machine` checks a
//! pipeline's budgets against a described one, so a GPU box's pipeline can
//! be checked on a laptop or in CI.

use rill_testing::*;

const GPU_PIPELINE: &str = r#"
pipeline:
  transforms:
    - type: Create
      name: c
      config: {elements: [{x: [1.0, 2.0]}]}
    - type: RunInference
      name: infer
      input: c
      resources: {device: cuda:0, gpu_memory: 6GiB, cpu_threads: 8}
      config:
        model_handler: {type: BurnMlp, config: {path: m.mpk}}
    - {type: LogForTesting, input: infer}
"#;

#[test]
fn a_gpu_pipeline_is_checked_against_a_described_machine() {
    let dir = sandbox();
    let d = dir.path();
    // this machine, as JSON
    let o = rill(d, &["machine"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let here: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(here["cpus"].as_u64().unwrap() >= 1);
    assert!(here["memory"].as_u64().unwrap() > 0);
    assert!(here["gpus"].is_array());
    // what it prints is what --machine reads
    std::fs::write(d.join("here.json"), stdout(&o)).unwrap();

    std::fs::write(d.join("p.yaml"), GPU_PIPELINE).unwrap();
    std::fs::write(
        d.join("box.json"),
        r#"{"cpus": 16, "memory": "128GiB", "gpus": [{"name": "H100", "memory": "80GiB"}]}"#,
    )
    .unwrap();
    let o = rill(d, &["validate", "p.yaml", "--machine", "box.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("is valid"), "{}", stdout(&o));

    // a smaller box: refused, naming the described machine
    std::fs::write(
        d.join("small.json"),
        r#"{"cpus": 4, "memory": 17179869184, "gpus": [{"memory": "4GiB"}]}"#,
    )
    .unwrap();
    let o = rill(d, &["validate", "p.yaml", "--machine", "small.json"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("`infer` asks for 8 CPU threads but the machine of small.json has 4"),
        "{err}"
    );
    assert!(err.contains("6.0 GiB of GPU memory on cuda:0"), "{err}");
    assert!(
        !err.contains("`cuda` feature"),
        "a described machine is not this build: {err}"
    );

    // this build has no `cuda` feature: against this machine, refused
    let o = rill(d, &["validate", "p.yaml", "--machine", "here.json"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("asks for device cuda:0"),
        "{}",
        stderr(&o)
    );

    // a file that is not a machine
    std::fs::write(d.join("bad.json"), r#"{"cores": 4}"#).unwrap();
    let o = rill(d, &["validate", "p.yaml", "--machine", "bad.json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("bad.json: not a machine description"),
        "{}",
        stderr(&o)
    );
}
