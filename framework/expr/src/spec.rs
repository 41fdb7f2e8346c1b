//! Expressions in configs: `keep`, `fields`, `callable`, in Beam YAML's forms.
//!
//! A spec is either a string (an expression over the record's fields, or a
//! field name) or a mapping with exactly one of `expression`, `callable`,
//! or `path` and `name` (a function in a Python file, as Beam YAML allows).

use std::path::{Path, PathBuf};

use rill_core::{ConfigError, Record, Value};

use crate::Program;
use serde::Deserialize;

/// Languages accepted by `language:`.
pub fn check_language(language: &Option<String>) -> Result<(), ConfigError> {
    match language.as_deref() {
        None | Some("python") | Some("generic") => Ok(()),
        Some(other) => Err(ConfigError::at(
            "language",
            format!(
                "`language: {other}` is not supported: rill evaluates `language: python` (a sandboxed subset of Python, see docs/expressions.md)"
            ),
        )),
    }
}

/// An expression as written in YAML.
#[derive(Debug, Clone)]
pub enum ExprSpec {
    Text(String),
    Full(FullSpec),
}

impl<'de> Deserialize<'de> for ExprSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ExprSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an expression string, a constant, or a mapping with `expression` or `callable`")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ExprSpec, E> {
                Ok(ExprSpec::Text(s.to_owned()))
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<ExprSpec, E> {
                Ok(ExprSpec::Text(if b { "True" } else { "False" }.to_owned()))
            }
            // a constant (`n: 10`, `ratio: 0.5`, `none: null`) is its literal
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ExprSpec, E> {
                Ok(ExprSpec::Text(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ExprSpec, E> {
                Ok(ExprSpec::Text(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ExprSpec, E> {
                Ok(ExprSpec::Text(if v.is_finite() {
                    format!("{v:?}")
                } else if v.is_nan() {
                    "float('nan')".to_owned()
                } else if v > 0.0 {
                    "float('inf')".to_owned()
                } else {
                    "float('-inf')".to_owned()
                }))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<ExprSpec, E> {
                Ok(ExprSpec::Text("None".to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<ExprSpec, A::Error> {
                FullSpec::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(ExprSpec::Full)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullSpec {
    expression: Option<String>,
    callable: Option<String>,
    /// A Python file that defines the function `name` (Beam YAML's
    /// file-based callable); relative to the working directory.
    path: Option<PathBuf>,
    name: Option<String>,
    /// Beam's JSON-schema output type; checked after evaluation.
    output_type: Option<String>,
}

/// A compiled expression.
#[derive(Debug, Clone)]
pub struct Compiled {
    program: Program,
    output_type: Option<String>,
}

/// The name the wrapper around a file's function gets (a plain name: the
/// sandbox refuses names with double underscores).
const FILE_ENTRY: &str = "rill_file_callable_entry";

impl Compiled {
    /// Names of record fields the expression reads, where they are known.
    pub fn fields_read(&self) -> Vec<String> {
        self.program.fields_read()
    }
}

impl ExprSpec {
    /// Checks the spec without reading files (for `rill validate`): compiles
    /// an inline one, checks the shape of a file-based one.
    pub fn check(&self, what: &str) -> Result<(), ConfigError> {
        match self {
            ExprSpec::Full(f) if f.path.is_some() || f.name.is_some() => {
                f.file_parts(what).map(|_| ())
            }
            _ => self.compile(what, Path::new(".")).map(|_| ()),
        }
        .map_err(|msg| ConfigError::at(what, msg))
    }

    /// Compiles the spec, reading a file-based callable relative to `base`;
    /// `what` names it in errors (e.g. "keep").
    pub fn compile(&self, what: &str, base: &Path) -> Result<Compiled, String> {
        let (program, output_type) = match self {
            ExprSpec::Text(s) => (
                Program::expression(s).map_err(|e| format!("`{what}`: {e}"))?,
                None,
            ),
            ExprSpec::Full(f) if f.path.is_some() || f.name.is_some() => {
                let (path, name) = f.file_parts(what)?;
                let path = if path.is_absolute() {
                    path.to_owned()
                } else {
                    base.join(path)
                };
                let src = std::fs::read_to_string(&path)
                    .map_err(|e| format!("`{what}`: cannot read {}: {e}", path.display()))?;
                let defines = src.lines().any(|l| {
                    l.strip_prefix("def ")
                        .or_else(|| l.strip_prefix("async def "))
                        .is_some_and(|r| {
                            r.trim_start()
                                .strip_prefix(name)
                                .is_some_and(|r| r.trim_start().starts_with('('))
                        })
                        || l.strip_prefix(name)
                            .is_some_and(|r| r.trim_start().starts_with('='))
                });
                if !defines {
                    return Err(format!(
                        "`{what}`: {} defines no top-level function `{name}`",
                        path.display()
                    ));
                }
                // the file's statements, then a function that calls `name`:
                // a callable script ends with the `def` it calls
                let script = format!("{src}\n\ndef {FILE_ENTRY}(row):\n    return {name}(row)\n");
                let p = Program::callable(&script)
                    .map_err(|e| format!("`{what}`: {}: {e}", path.display()))?;
                (p, f.output_type.clone())
            }
            ExprSpec::Full(f) => {
                let p = match (&f.expression, &f.callable) {
                    (Some(e), None) => {
                        Program::expression(e).map_err(|e| format!("`{what}` expression: {e}"))?
                    }
                    (None, Some(c)) => {
                        Program::callable(c).map_err(|e| format!("`{what}` callable: {e}"))?
                    }
                    _ => {
                        return Err(format!(
                            "`{what}` needs exactly one of `expression`, `callable`, or `path` with `name`"
                        ));
                    }
                };
                check_output_type(what, &f.output_type)?;
                (p, f.output_type.clone())
            }
        };
        Ok(Compiled {
            program,
            output_type,
        })
    }
}

fn check_output_type(what: &str, t: &Option<String>) -> Result<(), String> {
    if let Some(t) = t
        && !matches!(
            t.as_str(),
            "string" | "integer" | "number" | "boolean" | "array" | "object" | "bytes"
        )
    {
        return Err(format!(
            "`{what}`: unknown output_type `{t}`: expected string, integer, number, boolean, array, object or bytes"
        ));
    }
    Ok(())
}

impl FullSpec {
    /// `path` and `name` of a file-based callable, checked.
    fn file_parts(&self, what: &str) -> Result<(&Path, &str), String> {
        if self.expression.is_some() || self.callable.is_some() {
            return Err(format!(
                "`{what}`: give `path` and `name`, or `expression`, or `callable`: not several"
            ));
        }
        let (Some(path), Some(name)) = (&self.path, &self.name) else {
            return Err(format!(
                "`{what}`: a function from a file needs both `path` (the .py file) and `name` (the function)"
            ));
        };
        let ident = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident {
            return Err(format!(
                "`{what}`: `name: {name}` is not a Python function name"
            ));
        }
        check_output_type(what, &self.output_type)?;
        Ok((path, name))
    }
}

impl Compiled {
    /// Calls a callable with `arg` in place of a row (see
    /// [`Program::call`]).
    pub fn call(&self, arg: &Value) -> Result<Value, String> {
        self.program.call(arg).map_err(|e| e.to_string())
    }

    /// Evaluates against a record.
    pub fn eval(&self, r: &Record) -> Result<Value, String> {
        let v = self.program.eval(r).map_err(|e| e.to_string())?;
        if let Some(t) = &self.output_type {
            let ok = matches!(
                (t.as_str(), &v),
                (_, Value::Null)
                    | ("string", Value::String(_))
                    | ("integer", Value::Int(_))
                    | ("number", Value::Int(_) | Value::Float(_))
                    | ("boolean", Value::Bool(_))
                    | ("bytes", Value::Bytes(_))
                    | ("array", Value::List(_))
                    | ("object", Value::Map(_))
            );
            if !ok {
                return Err(format!(
                    "expected output_type {t}, got {} {v}",
                    v.type_name()
                ));
            }
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ExprSpec {
        let v: serde_json::Value = serde_json::from_str(yaml).unwrap();
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_function_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("f.py"),
            "import math\n\ndef helper(v):\n    return math.floor(v)\n\ndef floor_x(row):\n    return helper(row.x)\n\nhalf = lambda row: row.x / 2\n",
        )
        .unwrap();
        let r = Record::default().with("x", 2.5);
        let s = spec(r#"{"path": "f.py", "name": "floor_x"}"#);
        s.check("f").unwrap();
        let c = s.compile("f", dir.path()).unwrap();
        assert_eq!(c.eval(&r).unwrap(), Value::Int(2));
        // a name bound to a lambda is a function too
        let c = spec(r#"{"path": "f.py", "name": "half"}"#)
            .compile("f", dir.path())
            .unwrap();
        assert_eq!(c.eval(&r).unwrap(), Value::Float(1.25));
        // refusals, each saying what is wrong
        for (json, needle) in [
            (r#"{"path": "f.py"}"#, "needs both `path`"),
            (r#"{"name": "floor_x"}"#, "needs both `path`"),
            (
                r#"{"path": "f.py", "name": "floor_x", "callable": "lambda r: 1"}"#,
                "not several",
            ),
            (
                r#"{"path": "f.py", "name": "a.b"}"#,
                "not a Python function name",
            ),
        ] {
            let err = spec(json).check("f").unwrap_err();
            assert!(err.message.contains(needle), "{json}: {err}");
        }
        let err = spec(r#"{"path": "f.py", "name": "nope"}"#)
            .compile("f", dir.path())
            .unwrap_err();
        assert!(
            err.contains("defines no top-level function `nope`"),
            "{err}"
        );
        let err = spec(r#"{"path": "g.py", "name": "nope"}"#)
            .compile("f", dir.path())
            .unwrap_err();
        assert!(err.contains("cannot read") && err.contains("g.py"), "{err}");
    }
}
