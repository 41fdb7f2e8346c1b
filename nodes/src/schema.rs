//! JSON Schema for records: `ValidateWithSchema`, and `Create`'s
//! `output_schema`.
//!
//! The validation keywords of JSON Schema (draft 2020-12) that rows need:
//! `type` (one or a list; `integer` also takes a whole float, `number` an
//! int), `enum`, `const`, `properties`, `required`, `additionalProperties`
//! (a bool or a schema), `items`, `minItems`, `maxItems`, `uniqueItems`,
//! `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`,
//! `multipleOf`, `minLength`, `maxLength`, `pattern`, `format` (kept as a
//! note, not checked, as the standard allows), `allOf`, `anyOf`, `oneOf`,
//! `not`, and the annotations (`title`, `description`, `default`,
//! `examples`, `$schema`, `$id`, `$comment`). A keyword outside this list
//! (`$ref`, `if`/`then`, `dependentSchemas`...) is refused when the
//! pipeline is checked, with its path, rather than silently ignored.

use indexmap::IndexMap;
use rill_core::node::{
    BuildContext, ConfigError, Emitter, Node, NodeConfig, NodeError, NodeKind, Transform,
};
use rill_core::{Record, Value};
use serde::Deserialize;
use serde_json::Value as J;

/// A compiled schema.
#[derive(Debug, Clone)]
pub struct Schema {
    types: Option<Vec<String>>,
    enumeration: Option<Vec<J>>,
    properties: IndexMap<String, Schema>,
    required: Vec<String>,
    additional: Option<Additional>,
    items: Option<Box<Schema>>,
    min_items: Option<usize>,
    max_items: Option<usize>,
    unique: bool,
    minimum: Option<(f64, bool)>,
    maximum: Option<(f64, bool)>,
    multiple_of: Option<f64>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    pattern: Option<regex::Regex>,
    all_of: Vec<Schema>,
    any_of: Vec<Schema>,
    one_of: Vec<Schema>,
    not: Option<Box<Schema>>,
    /// `false`: nothing is valid.
    never: bool,
}

#[derive(Debug, Clone)]
enum Additional {
    Allowed(bool),
    Schema(Box<Schema>),
}

const TYPES: &[&str] = &[
    "null", "boolean", "integer", "number", "string", "array", "object",
];
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
    "format",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// A problem in a schema: the key path inside it, and what is wrong.
pub type SchemaError = (Vec<String>, String);

fn at(path: &[String], key: &str, msg: impl Into<String>) -> SchemaError {
    let mut p = path.to_vec();
    p.push(key.to_owned());
    (p, msg.into())
}

impl Schema {
    pub fn compile(j: &J) -> Result<Schema, SchemaError> {
        compile(j, &[])
    }

    /// Checks a value; the error names where in it the problem is.
    pub fn check(&self, v: &Value) -> Result<(), String> {
        self.check_at(v, "")
    }

    fn check_at(&self, v: &Value, at: &str) -> Result<(), String> {
        let here = if at.is_empty() { "the row" } else { at };
        let fail = |msg: String| Err(format!("{here}: {msg}"));
        if self.never {
            return fail("no value is allowed here".into());
        }
        if let Some(types) = &self.types
            && !types.iter().any(|t| is_type(v, t))
        {
            return fail(format!(
                "expected {}, got {}",
                types.join(" or "),
                describe(v)
            ));
        }
        if let Some(e) = &self.enumeration
            && !e.iter().any(|x| equal(v, x))
        {
            let opts: Vec<String> = e.iter().map(J::to_string).collect();
            return fail(format!("{} is not one of {}", describe(v), opts.join(", ")));
        }
        if let Some(x) = v.as_f64().filter(|_| !matches!(v, Value::Bool(_))) {
            if let Some((m, excl)) = self.minimum
                && (x < m || (excl && x == m))
            {
                let op = if excl { ">" } else { ">=" };
                return fail(format!("{x} is not {op} {m}"));
            }
            if let Some((m, excl)) = self.maximum
                && (x > m || (excl && x == m))
            {
                let op = if excl { "<" } else { "<=" };
                return fail(format!("{x} is not {op} {m}"));
            }
            if let Some(d) = self.multiple_of
                && ((x / d) - (x / d).round()).abs() > 1e-9
            {
                return fail(format!("{x} is not a multiple of {d}"));
            }
        }
        if let Value::String(s) = v {
            let n = s.chars().count();
            if self.min_length.is_some_and(|m| n < m) || self.max_length.is_some_and(|m| n > m) {
                return fail(format!(
                    "a string of {n} characters is not within [{}, {}]",
                    self.min_length.unwrap_or(0),
                    self.max_length.map_or("∞".into(), |m| m.to_string())
                ));
            }
            if let Some(p) = &self.pattern
                && !p.is_match(s)
            {
                return fail(format!("{s:?} does not match `{}`", p.as_str()));
            }
        }
        if let Value::List(items) = v {
            let n = items.len();
            if self.min_items.is_some_and(|m| n < m) || self.max_items.is_some_and(|m| n > m) {
                return fail(format!(
                    "a list of {n} items is not within the allowed size"
                ));
            }
            if let Some(s) = &self.items {
                for (i, item) in items.iter().enumerate() {
                    s.check_at(item, &format!("{here}[{i}]"))?;
                }
            }
            if self.unique {
                for i in 0..n {
                    if items[..i].contains(&items[i]) {
                        return fail(format!("item {i} repeats an earlier one"));
                    }
                }
            }
        }
        if let Value::Map(fields) = v {
            self.check_fields(
                fields.iter().map(|(k, v)| (k.as_str(), v)),
                |k| fields.get(k).is_some(),
                at,
            )?;
        }
        for s in &self.all_of {
            s.check_at(v, at)?;
        }
        if !self.any_of.is_empty() && !self.any_of.iter().any(|s| s.check_at(v, at).is_ok()) {
            return fail("matches none of `anyOf`".into());
        }
        if !self.one_of.is_empty() {
            let n = self
                .one_of
                .iter()
                .filter(|s| s.check_at(v, at).is_ok())
                .count();
            if n != 1 {
                return fail(format!("matches {n} of `oneOf`, not exactly one"));
            }
        }
        if let Some(s) = &self.not
            && s.check_at(v, at).is_ok()
        {
            return fail("matches `not`".into());
        }
        Ok(())
    }

    fn check_fields<'a>(
        &self,
        fields: impl Iterator<Item = (&'a str, &'a Value)>,
        has: impl Fn(&str) -> bool,
        at: &str,
    ) -> Result<(), String> {
        let here = if at.is_empty() { "the row" } else { at };
        for r in &self.required {
            if !has(r) {
                return Err(format!("{here}: the required field `{r}` is missing"));
            }
        }
        for (k, v) in fields {
            let path = if at.is_empty() {
                k.to_owned()
            } else {
                format!("{at}.{k}")
            };
            match (self.properties.get(k), self.additional.as_ref()) {
                (Some(s), _) => s.check_at(v, &path)?,
                (None, Some(Additional::Allowed(false))) => {
                    return Err(format!("{here}: the field `{k}` is not allowed"));
                }
                (None, Some(Additional::Schema(s))) => s.check_at(v, &path)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Checks a record as an object.
    pub fn check_record(&self, r: &Record) -> Result<(), String> {
        if self.never {
            return Err("the row: no value is allowed".into());
        }
        if let Some(types) = &self.types
            && !types.iter().any(|t| t == "object")
        {
            return Err(format!(
                "the row: the schema wants {}, a row is an object",
                types.join(" or ")
            ));
        }
        self.check_fields(
            r.fields.iter().map(|(k, v)| (k.as_str(), v)),
            |k| r.fields.get(k).is_some(),
            "",
        )?;
        if self.all_of.is_empty()
            && self.any_of.is_empty()
            && self.one_of.is_empty()
            && self.not.is_none()
        {
            return Ok(());
        }
        self.check(&Value::Map(r.fields.clone()))
    }

    /// Makes ints floats where the schema says `number` only (Beam types a
    /// `Create` by its `output_schema`).
    pub fn coerce(&self, fields: &mut rill_core::Fields) {
        for (name, s) in &self.properties {
            if let Some(v) = fields.get_mut(name.as_str()) {
                s.coerce_value(v);
            }
        }
    }

    fn coerce_value(&self, v: &mut Value) {
        let only_number = self
            .types
            .as_ref()
            .is_some_and(|t| t.iter().any(|t| t == "number") && !t.iter().any(|t| t == "integer"));
        match v {
            Value::Int(i) if only_number => *v = Value::Float(*i as f64),
            Value::Map(f) => self.coerce(f),
            Value::List(items) => {
                if let Some(s) = &self.items {
                    for i in items {
                        s.coerce_value(i);
                    }
                }
            }
            _ => {}
        }
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) if s.len() <= 40 => format!("string {s:?}"),
        other => match other.type_name() {
            "str" => "a string".into(),
            "list" => "an array".into(),
            "map" => "an object".into(),
            t => t.to_owned(),
        },
    }
}

fn is_type(v: &Value, t: &str) -> bool {
    match (t, v) {
        ("null", Value::Null) | ("boolean", Value::Bool(_)) => true,
        ("integer", Value::Int(_)) => true,
        ("integer", Value::Float(f)) => f.fract() == 0.0 && f.is_finite(),
        ("number", Value::Int(_) | Value::Float(_)) => true,
        ("string", Value::String(_)) => true,
        ("array", Value::List(_)) => true,
        ("object", Value::Map(_)) => true,
        _ => false,
    }
}

fn equal(v: &Value, j: &J) -> bool {
    match (v, j) {
        (Value::Null, J::Null) => true,
        (Value::Bool(a), J::Bool(b)) => a == b,
        (Value::Int(_) | Value::Float(_), J::Number(n)) => v.as_f64() == n.as_f64(),
        (Value::String(a), J::String(b)) => a == b,
        (Value::List(a), J::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| equal(x, y))
        }
        (Value::Map(a), J::Object(b)) => {
            a.len() == b.len()
                && b.iter()
                    .all(|(k, y)| a.get(k.as_str()).is_some_and(|x| equal(x, y)))
        }
        _ => false,
    }
}

fn compile(j: &J, path: &[String]) -> Result<Schema, SchemaError> {
    let mut s = Schema {
        types: None,
        enumeration: None,
        properties: IndexMap::new(),
        required: Vec::new(),
        additional: None,
        items: None,
        min_items: None,
        max_items: None,
        unique: false,
        minimum: None,
        maximum: None,
        multiple_of: None,
        min_length: None,
        max_length: None,
        pattern: None,
        all_of: Vec::new(),
        any_of: Vec::new(),
        one_of: Vec::new(),
        not: None,
        never: false,
    };
    let obj = match j {
        J::Bool(true) => return Ok(s),
        J::Bool(false) => {
            s.never = true;
            return Ok(s);
        }
        J::Object(o) => o,
        other => {
            return Err((
                path.to_vec(),
                format!("a schema must be an object or a bool, found {other}"),
            ));
        }
    };
    let num = |k: &str, v: &J| {
        v.as_f64()
            .ok_or_else(|| at(path, k, format!("`{k}` must be a number")))
    };
    let count = |k: &str, v: &J| {
        v.as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| at(path, k, format!("`{k}` must be a non-negative integer")))
    };
    let list = |k: &str, v: &J| -> Result<Vec<Schema>, SchemaError> {
        let J::Array(a) = v else {
            return Err(at(path, k, format!("`{k}` must be a list of schemas")));
        };
        a.iter()
            .enumerate()
            .map(|(i, x)| {
                let mut p = path.to_vec();
                p.extend([k.to_owned(), i.to_string()]);
                compile(x, &p)
            })
            .collect()
    };
    let sub = |k: &str, v: &J| {
        let mut p = path.to_vec();
        p.push(k.to_owned());
        compile(v, &p)
    };
    for (k, v) in obj {
        match k.as_str() {
            "type" => {
                let ts: Vec<String> = match v {
                    J::String(t) => vec![t.clone()],
                    J::Array(a) => a
                        .iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect(),
                    _ => return Err(at(path, k, "`type` must be a string or a list of them")),
                };
                if let Some(bad) = ts.iter().find(|t| !TYPES.contains(&t.as_str())) {
                    return Err(at(
                        path,
                        k,
                        format!(
                            "unknown type `{bad}`; expected one of: {}",
                            TYPES.join(", ")
                        ),
                    ));
                }
                s.types = Some(ts);
            }
            "enum" => match v {
                J::Array(a) => s.enumeration = Some(a.clone()),
                _ => return Err(at(path, k, "`enum` must be a list")),
            },
            "const" => s.enumeration = Some(vec![v.clone()]),
            "properties" => {
                let J::Object(props) = v else {
                    return Err(at(path, k, "`properties` must be a mapping"));
                };
                for (name, ps) in props {
                    let mut p = path.to_vec();
                    p.extend([k.clone(), name.clone()]);
                    s.properties.insert(name.clone(), compile(ps, &p)?);
                }
            }
            "required" => match v {
                J::Array(a) if a.iter().all(J::is_string) => {
                    s.required = a
                        .iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                }
                _ => return Err(at(path, k, "`required` must be a list of field names")),
            },
            "additionalProperties" => {
                s.additional = Some(match v {
                    J::Bool(b) => Additional::Allowed(*b),
                    other => Additional::Schema(Box::new(sub(k, other)?)),
                })
            }
            "items" => s.items = Some(Box::new(sub(k, v)?)),
            "minItems" => s.min_items = Some(count(k, v)?),
            "maxItems" => s.max_items = Some(count(k, v)?),
            "uniqueItems" => s.unique = v.as_bool().unwrap_or(false),
            "minimum" => s.minimum = Some((num(k, v)?, false)),
            "maximum" => s.maximum = Some((num(k, v)?, false)),
            "exclusiveMinimum" => s.minimum = Some((num(k, v)?, true)),
            "exclusiveMaximum" => s.maximum = Some((num(k, v)?, true)),
            "multipleOf" => {
                let d = num(k, v)?;
                if d <= 0.0 {
                    return Err(at(path, k, "`multipleOf` must be above zero"));
                }
                s.multiple_of = Some(d);
            }
            "minLength" => s.min_length = Some(count(k, v)?),
            "maxLength" => s.max_length = Some(count(k, v)?),
            "pattern" => {
                let p = v
                    .as_str()
                    .ok_or_else(|| at(path, k, "`pattern` must be a string"))?;
                s.pattern = Some(regex::Regex::new(p).map_err(|e| {
                    at(
                        path,
                        k,
                        format!("`pattern` is not a regular expression this build reads: {e}"),
                    )
                })?);
            }
            "allOf" => s.all_of = list(k, v)?,
            "anyOf" => s.any_of = list(k, v)?,
            "oneOf" => s.one_of = list(k, v)?,
            "not" => s.not = Some(Box::new(sub(k, v)?)),
            a if ANNOTATIONS.contains(&a) => {}
            other => {
                return Err(at(
                    path,
                    other,
                    format!(
                        "the JSON Schema keyword `{other}` is not supported (see nodes/src/schema.rs for those that are)"
                    ),
                ));
            }
        }
    }
    Ok(s)
}

/// `ValidateWithSchema`: passes the rows that satisfy `schema` (a JSON
/// Schema, as YAML); the others fail with what is wrong and where, and go
/// to the error output with `error_handling`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateWithSchema {
    pub schema: J,
}

/// A schema error as a config error at `key`.
pub fn config_error(key: &str, (path, msg): SchemaError) -> ConfigError {
    let mut p = vec![key.to_owned()];
    p.extend(path);
    ConfigError::at_path(p, msg)
}

impl NodeConfig for ValidateWithSchema {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }
    fn validate(&self) -> Result<(), ConfigError> {
        Schema::compile(&self.schema)
            .map(|_| ())
            .map_err(|e| config_error("schema", e))
    }
    fn build(&self, _ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let schema = Schema::compile(&self.schema)
            .map_err(|(p, m)| NodeError::failed(format!("schema.{}: {m}", p.join("."))))?;
        Ok(Node::Transform(Box::new(Validate { schema })))
    }
}

struct Validate {
    schema: Schema,
}

impl Transform for Validate {
    fn process(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        for r in batch {
            match self.schema.check_record(&r) {
                Ok(()) => out.emit(r),
                Err(e) => out.fail(r, e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill_core::testkit::{build_yaml, run_transform};

    #[test]
    fn rows_are_checked_with_where_and_why() {
        let reg = crate::registry();
        let Node::Transform(mut t) = build_yaml(
            &reg,
            "ValidateWithSchema",
            "{schema: {type: object, required: [id, temp], additionalProperties: false, properties: {id: {type: integer, minimum: 0}, temp: {type: number, exclusiveMaximum: 150}, tags: {type: array, items: {type: string, pattern: '^[a-z]+$'}}, unit: {enum: [C, F]}}}}",
            std::path::Path::new("."),
        )
        .unwrap() else {
            panic!("a transform")
        };
        let ok = Record::default().with("id", 1).with("temp", 20.5);
        let rows = vec![
            ok.clone(),
            ok.clone()
                .with("unit", "F")
                .with("tags", Value::List(vec!["a".into()])),
            Record::default().with("id", 2),
            Record::default().with("id", -1).with("temp", 3),
            ok.clone().with("temp", 150),
            ok.clone()
                .with("tags", Value::List(vec!["ok".into(), "Bad".into()])),
            ok.clone().with("unit", "K"),
            ok.clone().with("extra", 1),
            Record::default().with("id", "7").with("temp", 1),
        ];
        let run = run_transform(t.as_mut(), vec![rows]).unwrap();
        assert_eq!(run.main.len(), 2);
        let msgs: Vec<&str> = run.failures.iter().map(|f| f.msg.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "the row: the required field `temp` is missing",
                "id: -1 is not >= 0",
                "temp: 150 is not < 150",
                "tags[1]: \"Bad\" does not match `^[a-z]+$`",
                "unit: string \"K\" is not one of \"C\", \"F\"",
                "the row: the field `extra` is not allowed",
                "id: expected integer, got string \"7\"",
            ]
        );
    }

    #[test]
    fn unsupported_keywords_are_refused_with_their_path() {
        let reg = crate::registry();
        let e = build_yaml(
            &reg,
            "ValidateWithSchema",
            "{schema: {properties: {a: {$ref: '#/defs/x'}}}}",
            std::path::Path::new("."),
        )
        .unwrap_err();
        assert!(e.contains("`$ref` is not supported"), "{e}");
        let e = build_yaml(
            &reg,
            "ValidateWithSchema",
            "{schema: {type: decimal}}",
            std::path::Path::new("."),
        )
        .unwrap_err();
        assert!(e.contains("unknown type `decimal`"), "{e}");
    }
}
