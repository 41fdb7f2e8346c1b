//! Bad pipeline files: exit 2 and a message with file, line and column.

use rill_testing::*;

/// Writes `yaml` to a file, runs `rill validate` and `rill run` on it, and
/// checks both exit 2 and print every `needle`.
fn refused(yaml: &str, needles: &[&str]) {
    let dir = sandbox();
    std::fs::write(dir.path().join("p.yaml"), yaml).unwrap();
    for cmd in ["validate", "run"] {
        let out = rill(dir.path(), &[cmd, "p.yaml"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "rill {cmd}: {err}");
        for n in needles {
            assert!(err.contains(n), "rill {cmd}: expected {n:?} in:\n{err}");
        }
    }
}

#[test]
fn malformed_yaml() {
    refused(
        "pipeline:\n  transforms: [\n    {type: Create\n",
        &["p.yaml:4:1", "invalid YAML"],
    );
    refused(
        "pipeline:\n\ttransforms: []\n",
        &["p.yaml:2:2", "invalid YAML: tabs"],
    );
}

#[test]
fn unknown_keys() {
    refused(
        "pipeline:\n  transforms:\n    - type: Create\n      nmae: x\n      config: {elements: [1]}\n",
        &[
            "p.yaml:4:7",
            "unknown key `nmae` in a transform (did you mean `name`?)",
        ],
    );
}

#[test]
fn a_config_check_points_at_the_key_it_names() {
    // a check after parsing points at the key it names, and names the stage
    refused(
        "pipeline:\n  transforms:\n    - {type: Create, name: src, config: {elements: [1]}}\n    - type: RunInference\n      name: infer\n      input: src\n      config:\n        model_handler: {type: BurnMlp, config: {path: m}}\n        batching:\n          max_batch_delay: 5ms\n          max_batch_size: 0\n",
        &[
            "p.yaml:11:11",
            "stage `infer` (`RunInference`) config: `batching.max_batch_size` must be at least 1",
        ],
    );
}

#[test]
fn missing_file_is_bad_input() {
    let dir = sandbox();
    std::fs::write(
        dir.path().join("p.yaml"),
        "pipeline:\n  transforms:\n    - {type: ReadFromJson, name: src, config: {path: nope.jsonl}}\n    - {type: WriteToJson, input: src, config: {path: o.jsonl}}\n",
    )
    .unwrap();
    let out = rill(dir.path(), &["run", "p.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // a build error points at the stage's place in the file too
    assert!(
        stderr(&out).contains(
            "p.yaml:3:7: stage `src` (ReadFromJson): bad input: there is no file `nope.jsonl`"
        ),
        "{}",
        stderr(&out)
    );
    let out = rill(dir.path(), &["run", "no-such-file.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no-such-file.yaml: cannot read the pipeline file"),
        "{}",
        stderr(&out)
    );
}

/// A model that cannot be loaded stops `rill run` before any record moves,
/// with exit 2, the stage and the file; `rill validate` (no I/O) passes.
#[test]
fn missing_or_broken_model_files() {
    let dir = sandbox();
    let yaml = |path: &str| {
        format!(
            "pipeline:\n  transforms:\n    - {{type: Create, name: src, config: {{elements: [{{features: [1, 2]}}]}}}}\n    - type: RunInference\n      name: infer\n      input: src\n      config:\n        model_handler: {{type: BurnMlp, config: {{path: {path}, layers: [2, 3]}}}}\n    - {{type: WriteToJson, input: infer, config: {{path: out.jsonl}}}}\n"
        )
    };
    std::fs::write(dir.path().join("garbage.mpk"), b"not a burn record").unwrap();
    for (path, needle) in [
        ("nope.mpk", "nope.mpk: no such model file"),
        ("garbage.mpk", "garbage.mpk"),
    ] {
        std::fs::write(dir.path().join("p.yaml"), yaml(path)).unwrap();
        let out = rill(dir.path(), &["validate", "p.yaml"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let out = rill(dir.path(), &["run", "p.yaml"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("p.yaml:4:7: stage `infer` (RunInference)"),
            "{err}"
        );
        assert!(err.contains(needle), "{err}");
        assert!(
            !dir.path().join("out.jsonl").exists()
                || std::fs::read_to_string(dir.path().join("out.jsonl"))
                    .unwrap()
                    .is_empty()
        );
    }
    // a handler type that does not exist is caught by validate, with its position
    std::fs::write(
        dir.path().join("p.yaml"),
        yaml("m.mpk").replace("BurnMlp", "BurnMLP"),
    )
    .unwrap();
    let out = rill(dir.path(), &["validate", "p.yaml"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("p.yaml:"), "{err}");
    assert!(
        err.contains("unknown model handler `BurnMLP` (did you mean `BurnMlp`?)"),
        "{err}"
    );
}
