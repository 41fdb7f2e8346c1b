//! Differential tests: the same expressions and scripts, with expected
//! results produced by CPython (see `data/README.md`).

use rill_core::{Fields, Record, Value, record};
use rill_expr::Program;

#[test]
fn expressions_match_cpython() {
    let mut failures = Vec::new();
    let cases = include_str!("data/python_exprs.tsv");
    for line in cases.lines() {
        let (src, want) = line.split_once('\t').expect("tab-separated case");
        let got = match Program::expression(&format!("repr({src})")) {
            Err(e) => format!("!COMPILE {e}"),
            Ok(p) => match p.eval(&Record::default()) {
                Ok(Value::String(s)) => s.to_string(),
                Ok(v) => format!("!NOT A STRING {v:?}"),
                Err(e) => format!("!ERR {}", e.msg),
            },
        };
        if got != want {
            failures.push(format!("{src}\n   want {want}\n   got  {got}"));
        }
    }
    no_mismatches(&failures);
    assert!(cases.lines().count() > 400);
}

#[test]
fn errors_match_cpython_kinds() {
    let mut failures = Vec::new();
    for line in include_str!("data/python_errors.tsv").lines() {
        let (src, want) = line.split_once('\t').expect("tab-separated case");
        let kind = want.split(':').next().unwrap_or("");
        let got = match Program::expression(src) {
            // Invalid constant regexes are reported when compiling.
            Err(e) if kind == "error" && e.msg.starts_with("re.error") => continue,
            Err(e) => format!("!COMPILE {e}"),
            Ok(p) => match p.eval(&Record::default()) {
                Ok(v) => format!("!OK {v:?}"),
                Err(e) => e.msg,
            },
        };
        if got.split(':').next() != Some(kind) {
            failures.push(format!("{src}\n   want {want}\n   got  {got}"));
        }
    }
    no_mismatches(&failures);
}

fn script_row() -> Record {
    let mut inner = Fields::default();
    inner.insert("z".into(), Value::Int(26));
    let mut meta = Fields::default();
    meta.insert("a".into(), Value::Int(1));
    meta.insert("b".into(), Value::from("two"));
    meta.insert("inner".into(), Value::Map(inner));
    record! {
        "xs" => Value::List(vec![5.into(), 1.into(), 4.into(), 2.into(), 8.into()]),
        "f" => 21.75,
        "name" => "Ada Lovelace",
        "text" => "the cat and the hat and THE bat",
        "meta" => Value::Map(meta)
    }
}

#[test]
fn scripts_match_cpython() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/scripts");
    let expected = std::fs::read_to_string(format!("{dir}/expected.tsv")).expect("expected.tsv");
    let row = script_row();
    let mut n = 0;
    for line in expected.lines() {
        let (file, want) = line.split_once('\t').expect("tab-separated case");
        let src = std::fs::read_to_string(format!("{dir}/{file}")).expect("script");
        let src = format!("{src}\ndef entry_(row):\n    return repr(main(row))\n");
        let p = Program::callable(&src).unwrap_or_else(|e| panic!("{file}: {e}"));
        let got = p.eval(&row).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(got, Value::String(want.into()), "{file}");
        n += 1;
    }
    assert_eq!(n, 12);
}

/// Fails with every mismatch, one after the other.
fn no_mismatches(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
