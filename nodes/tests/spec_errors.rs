//! Bad pipeline files, checked by the spec passes with the built-in node
//! types: each error says file, line and column. (`apps/rill/tests/
//! bad_input.rs` checks that the CLI turns such errors into exit 2, for
//! `validate` and `run` alike.)

use rill_core::spec::{Machine, parse_str};

/// Checks `yaml` is refused with every `needle` in the errors.
fn refused(yaml: &str, needles: &[&str]) {
    let err = match parse_str(
        yaml,
        "p",
        Some("p.yaml"),
        &rill_nodes::registry(),
        &Machine::detect(),
    ) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => e.to_string(),
    };
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in:\n{err}");
    }
}

#[test]
fn unknown_keys_of_configs_and_options() {
    refused(
        "pipeline:\n  transforms:\n    - type: Create\n      config:\n        elemnts: [1]\n",
        &[
            "p.yaml:5:9",
            "unknown field `elemnts`",
            "expected one of `elements`",
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
        "pipeline:\n  transforms:\n    - {type: Create, name: src, config: {elements: [1]}}\n    - {type: Filter, input: src, config: {keep: 'True'}, windowing: {type: fixed, size: 0}}\n",
        &[
            "p.yaml:4:83",
            "bad `windowing`: `size` must be longer than zero",
        ],
    );
    refused(
        "pipeline:\n  transforms:\n    - {type: Create, name: src, config: {elements: [1]}}\n    - {type: Filter, input: src, config: {keep: 'True'}, resources: {memory: 100TiB}}\n",
        &["p.yaml:4:7", "asks for 102400.0 GiB of memory", "short by"],
    );
    refused(
        "pipeline:\n  transforms:\n    - {type: Create, name: src, config: {elements: [1]}}\n    - {type: Filter, input: src, config: {keep: 'True'}, restart: {within: 10}}\n",
        &["p.yaml:4:76", "`10` has no unit"],
    );
}

#[test]
fn bad_windowing_is_refused_where_it_is_written() {
    let pipeline = |windowing: &str, combine: &str| {
        format!(
            "pipeline:\n  transforms:\n    - {{type: Create, name: src, config: {{elements: [1]}}}}\n    - type: Combine\n      input: src\n      windowing: {windowing}\n      config:\n        combine: {combine}\n"
        )
    };
    refused(
        &pipeline("{type: fixed, size: 0}", "{element: sum}"),
        &["p.yaml:6:32", "`size` must be longer than zero"],
    );
    refused(
        &pipeline("{type: sliding, size: 10, period: 20}", "{element: sum}"),
        &[
            "p.yaml:6:44",
            "`period` (20s) must not be longer than its `size` (10s)",
        ],
    );
    refused(
        &pipeline("{type: fixed, size: 10, gap: 5}", "{element: sum}"),
        &["p.yaml:6:42", "`gap` does not apply to a `fixed` window"],
    );
    refused(
        &pipeline("{type: fixed, size: 10}", "{element: summ}"),
        &[
            "p.yaml:8:19",
            "unknown combine fn `summ` (did you mean `sum`?)",
        ],
    );
    refused(
        &pipeline("{type: hourly}", "{element: sum}"),
        &["p.yaml:6:19", "unknown window type `hourly`"],
    );
    // WindowInto takes its `windowing:` beside `config`, as in Beam
    refused(
        "pipeline:\n  transforms:\n    - {type: Create, name: src, config: {elements: [1]}}\n    - {type: WindowInto, input: src, windowing: {type: sessions}}\n",
        &["p.yaml:4", "a `sessions` window needs `gap`"],
    );
}

#[test]
fn mltransform_is_refused_where_it_is_written() {
    let pipeline = |source: &str, ml: &str| {
        format!(
            "pipeline:\n  transforms:\n    - {{type: {source}, name: src}}\n    - type: MLTransform\n      input: src\n      config:\n{ml}"
        )
    };
    let write = "        write_artifact_location: art\n        transforms:\n          - {type: ScaleTo01, config: {columns: [value]}}\n";
    // learning needs the whole input: an endless source is refused
    refused(
        &pipeline("Generate, config: {rate: 10}", write),
        &[
            "p.yaml:4:7",
            "learns from its whole input",
            "the source `src` is unbounded",
        ],
    );
    // embeddings need a model rill does not download
    refused(
        &pipeline(
            "Generate, config: {count: 10}",
            "        write_artifact_location: art\n        transforms:\n          - {type: SentenceTransformerEmbeddings, config: {columns: [text]}}\n",
        ),
        &[
            "p.yaml:9:14",
            "`SentenceTransformerEmbeddings` computes embeddings with a hosted or downloaded model",
        ],
    );
    // an operation's own config, checked where it is written
    refused(
        &pipeline(
            "Generate, config: {count: 10}",
            "        write_artifact_location: art\n        transforms:\n          - {type: Bucketize, config: {columns: [value], num_buckets: 0}}\n",
        ),
        &["p.yaml:9", "num_buckets", "must be at least 1"],
    );
    refused(
        &pipeline(
            "Generate, config: {count: 10}",
            "        read_artifact_location: art\n        write_artifact_location: art\n",
        ),
        &["p.yaml:7:9", "not both"],
    );
}
