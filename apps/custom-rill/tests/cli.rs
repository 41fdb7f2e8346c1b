//! The application's binary is the whole `rill` command line plus its own
//! node type and model handler: `types` lists them, `validate` checks their
//! configs with file:line:col, `run` runs the example pipeline, and the
//! dead letters of its own node can be listed.

use rill_testing::*;

fn app() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_custom-rill"))
}

#[test]
fn types_lists_the_apps_own_node_and_handler() {
    let dir = sandbox();
    let out = run_of(&app(), dir.path(), &["types"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("Scale") && text.contains("multiplies numeric fields"),
        "{text}"
    );
    assert!(text.contains("Linear"), "{text}");
    // and the built-ins are all still there
    assert!(
        text.contains("RunInference") && text.contains("ReadFromJson"),
        "{text}"
    );
    // plain `rill` does not know them
    let out = rill(dir.path(), &["validate", "configs/custom/scores.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown transform type `Scale`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_example_pipeline_runs_with_the_apps_node_and_handler() {
    let dir = sandbox();
    let out = run_of(
        &app(),
        dir.path(),
        &["validate", "configs/custom/scores.yaml"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_of(&app(), dir.path(), &["run", "configs/custom/scores.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("pipeline `custom-scores` finished"),
        "{}",
        stderr(&out)
    );
    let rows = read_jsonl(&dir.path().join("out/custom/scores.jsonl"));
    let scores: Vec<(String, f64)> = rows
        .iter()
        .map(|r| {
            (
                r["device"].as_str().unwrap().to_owned(),
                r["inference"].as_f64().unwrap(),
            )
        })
        .collect();
    // Scale: [10, 20, 30] * 0.1 = [1, 2, 3]; Linear: 0.5*1 - 1*2 + 2*3 + 0.5 = 5
    // and [0, 0, 1] gives 2 + 0.5 = 2.5
    assert_eq!(scores.len(), 2, "{rows:?}");
    assert_eq!(scores[0].0, "a");
    assert!((scores[0].1 - 5.0).abs() < 1e-5, "{scores:?}");
    assert_eq!(scores[1].0, "b");
    assert!((scores[1].1 - 2.5).abs() < 1e-5, "{scores:?}");
    // the reading that is not a number failed in Scale alone
    let bad = read_jsonl(&dir.path().join("out/custom/bad.jsonl"));
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0]["stage"], "units");
    assert!(
        bad[0]["msg"]
            .as_str()
            .unwrap()
            .contains("field `f0` is str"),
        "{}",
        bad[0]
    );
    // `graph` works on the app's pipeline too
    let out = run_of(&app(), dir.path(), &["graph", "configs/custom/scores.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("units"), "{}", stdout(&out));
}

#[test]
fn the_apps_config_checks_point_at_the_key() {
    let dir = sandbox();
    std::fs::write(
        dir.path().join("p.yaml"),
        "pipeline:\n  transforms:\n    - {type: Create, config: {elements: [{x: 1}]}}\n    - type: Scale\n      input: Create\n      config:\n        fields: [x]\n        factor: .nan\n    - {type: LogForTesting, input: Scale}\n",
    )
    .unwrap();
    let out = run_of(&app(), dir.path(), &["validate", "p.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("p.yaml:8:9: in `Scale` config: `factor` must be a finite number"),
        "{}",
        stderr(&out)
    );
}
