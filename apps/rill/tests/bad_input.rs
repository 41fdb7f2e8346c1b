//! Bad pipeline files: exit 2 and a message with file, line and column.

mod common;

use common::*;

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
    refused(
        "pipeline:\n  transforms:\n    - type: Create\n      config:\n        elemnts: [1]\n",
        &[
            "p.yaml:5:9",
            "unknown field `elemnts`",
            "expected `elements`",
        ],
    );
    refused(
        "pipeline:\n  transforms: []\nopshuns: {}\n",
        &["p.yaml:3:1", "unknown key `opshuns`"],
    );
    refused(
        "pipeline:\n  transforms:\n    - {type: Create, config: {elements: [1]}}\noptions:\n  delivery: sometimes\n",
        &["p.yaml:5:13", "unknown variant `sometimes`", "exactly_once"],
    );
}

#[test]
fn unknown_type() {
    refused(
        "pipeline:\n  type: chain\n  transforms:\n    - type: Create\n      config: {elements: [1]}\n    - type: Fliter\n      config: {keep: 'True'}\n",
        &[
            "p.yaml:6:13",
            "unknown transform type `Fliter` (did you mean `Filter`?)",
        ],
    );
}

#[test]
fn cycle() {
    refused(
        "pipeline:\n  transforms:\n    - {type: Create, name: src, config: {elements: [1]}}\n    - {type: Filter, name: a, input: [src, b], config: {keep: 'True'}}\n    - {type: Filter, name: b, input: a, config: {keep: 'True'}}\n",
        &["p.yaml:", "cycle", "a -> b -> a"],
    );
}

#[test]
fn missing_input() {
    refused(
        "pipeline:\n  transforms:\n    - {type: Create, name: src, config: {elements: [1]}}\n    - {type: LogForTesting, input: scr}\n",
        &[
            "p.yaml:4:36",
            "input `scr` of `LogForTesting` names no transform (did you mean `src`?)",
        ],
    );
    refused(
        "pipeline:\n  transforms:\n    - {type: Create, name: src, config: {elements: [1]}}\n    - {type: LogForTesting}\n",
        &["p.yaml:4:7", "needs an `input`"],
    );
    refused(
        "pipeline:\n  transforms:\n    - {type: Create, name: src, config: {elements: [1]}}\n    - {type: LogForTesting, input: src.errors}\n",
        &["p.yaml:4:36", "`src` has no output named `errors`"],
    );
}

#[test]
fn duplicate_names_and_unread_error_outputs() {
    refused(
        "pipeline:\n  transforms:\n    - {type: Create, name: x, config: {elements: [1]}}\n    - {type: LogForTesting, name: x, input: x}\n",
        &[
            "p.yaml:4:35",
            "duplicate transform name `x` (first used at 3:28)",
        ],
    );
    refused(
        "pipeline:\n  transforms:\n    - {type: Create, name: src, config: {elements: [1]}}\n    - type: Filter\n      input: src\n      config: {keep: 'True', error_handling: {output: bad}}\n",
        &[
            "p.yaml:4:7",
            "error output `bad` of `Filter` is read by no transform",
        ],
    );
}

#[test]
fn bad_expressions_and_unsupported_fields() {
    refused(
        "pipeline:\n  transforms:\n    - {type: Create, name: src, config: {elements: [1]}}\n    - {type: Filter, input: src, config: {keep: 'element >'}}\n",
        &["p.yaml:4:43", "`keep`: line 1, column 10: SyntaxError"],
    );
    refused(
        "pipeline:\n  transforms:\n    - {type: Create, name: src, config: {elements: [1]}}\n    - {type: Filter, input: src, config: {keep: 'True'}, windowing: {type: fixed, size: 10s}}\n",
        &["p.yaml:4:58", "`windowing` is not supported yet"],
    );
    refused(
        "pipeline:\n  transforms:\n    - {type: Create, name: src, config: {elements: [1]}}\n    - {type: Filter, input: src, config: {keep: 'True'}, resources: {memory: 100TiB}}\n",
        &["p.yaml:4:7", "asks for 102400.0 GiB of memory", "short by"],
    );
    refused(
        "pipeline:\n  transforms:\n    - {type: Create, name: src, config: {elements: [1]}}\n    - {type: Filter, input: src, config: {keep: 'True'}, restart: {within: 10}}\n",
        &["p.yaml:4:76", "`10` has no unit"],
    );
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
    assert!(
        stderr(&out).contains("stage `src` (ReadFromJson): cannot open"),
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
        assert!(err.contains("stage `infer` (RunInference)"), "{err}");
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
