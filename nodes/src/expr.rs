//! Expressions in configs: `keep`, `fields`, `callable`, in Beam YAML's forms.
//!
//! A spec is either a string (an expression over the record's fields, or a
//! field name) or a mapping with exactly one of `expression` or `callable`.

use rill_core::{Record, Value};
use rill_expr::Program;
use serde::Deserialize;

/// Languages accepted by `language:`.
pub fn check_language(language: &Option<String>) -> Result<(), String> {
    match language.as_deref() {
        None | Some("python") | Some("generic") => Ok(()),
        Some(other) => Err(format!(
            "`language: {other}` is not supported: rill evaluates `language: python` (a sandboxed subset of Python, see docs/expressions.md)"
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
                f.write_str("an expression string, or a mapping with `expression` or `callable`")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ExprSpec, E> {
                Ok(ExprSpec::Text(s.to_owned()))
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<ExprSpec, E> {
                Ok(ExprSpec::Text(if b { "True" } else { "False" }.to_owned()))
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
    /// Beam's JSON-schema output type; checked after evaluation.
    output_type: Option<String>,
}

/// A compiled expression.
#[derive(Debug, Clone)]
pub struct Compiled {
    program: Program,
    output_type: Option<String>,
}

impl ExprSpec {
    /// Compiles the spec; `what` names it in errors (e.g. "keep").
    pub fn compile(&self, what: &str) -> Result<Compiled, String> {
        let (program, output_type) = match self {
            ExprSpec::Text(s) => (
                Program::expression(s).map_err(|e| format!("`{what}`: {e}"))?,
                None,
            ),
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
                            "`{what}` needs exactly one of `expression` or `callable`"
                        ));
                    }
                };
                if let Some(t) = &f.output_type
                    && !matches!(
                        t.as_str(),
                        "string" | "integer" | "number" | "boolean" | "array" | "object"
                    )
                {
                    return Err(format!(
                        "`{what}`: unknown output_type `{t}`: expected string, integer, number, boolean, array or object"
                    ));
                }
                (p, f.output_type.clone())
            }
        };
        Ok(Compiled {
            program,
            output_type,
        })
    }
}

impl Compiled {
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
