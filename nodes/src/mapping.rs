//! Element-wise transforms: `Filter`, `MapToFields`, `Explode`.

use indexmap::IndexMap;
use rill_core::node::{
    BuildContext, ConfigError, Emitter, Node, NodeConfig, NodeError, NodeKind, Transform,
};
use rill_core::{Fields, Record, Value};
use serde::Deserialize;

use rill_expr::spec::{Compiled, ExprSpec, check_language};

/// `Filter`: keeps the records for which `keep` is true (Python truthiness).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub keep: ExprSpec,
    pub language: Option<String>,
}

impl NodeConfig for Filter {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }
    fn validate(&self) -> Result<(), ConfigError> {
        check_language(&self.language)?;
        self.keep.check("keep")
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let keep = self
            .keep
            .compile("keep", ctx.base_dir)
            .map_err(NodeError::Failed)?;
        Ok(Node::Transform(Box::new(FilterNode { keep })))
    }
}

struct FilterNode {
    keep: Compiled,
}

impl Transform for FilterNode {
    fn process(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        for r in batch {
            match self.keep.eval(&r) {
                Ok(v) => {
                    if rill_expr::truthy(&v) {
                        out.emit(r)
                    }
                }
                Err(e) => out.fail(r, format!("keep: {e}")),
            }
        }
        Ok(())
    }
}

/// `MapToFields`: computes fields from expressions.
///
/// Without `append` the output has exactly the `fields`, in order; with
/// `append: true` it keeps the input's fields (less those in `drop`) and adds
/// the new ones after them. As in Beam, redefining an input field that is
/// not dropped is an error for that record.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapToFields {
    pub fields: IndexMap<String, ExprSpec>,
    #[serde(default)]
    pub append: bool,
    #[serde(default)]
    pub drop: Drop,
    pub language: Option<String>,
    /// Beam's extra packages for the UDF environment: refused (see validate).
    pub dependencies: Option<Vec<String>>,
}

/// Field names written as one name or a list of them (`drop`, and
/// `Combine`'s `group_by`).
#[derive(Debug, Default, Clone)]
pub struct Names(pub Vec<String>);

/// `drop`: a field name or a list of them.
pub type Drop = Names;

impl<'de> Deserialize<'de> for Names {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => Names(vec![s]),
            OneOrMany::Many(v) => Names(v),
        })
    }
}

impl MapToFields {
    fn compile(&self, base: &std::path::Path) -> Result<Vec<(String, Compiled)>, String> {
        self.fields
            .iter()
            .map(|(name, spec)| {
                spec.compile(&format!("fields.{name}"), base)
                    .map(|c| (name.clone(), c))
            })
            .collect()
    }
}

impl NodeConfig for MapToFields {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }
    fn validate(&self) -> Result<(), ConfigError> {
        check_language(&self.language)?;
        if let Some(deps) = &self.dependencies {
            return Err(ConfigError::at(
                "dependencies",
                format!(
                    "`dependencies` ({}) is not supported: rill runs Python expressions in an embedded sandbox that cannot install packages; use `import re` / `import math` or write a node in Rust",
                    deps.join(", ")
                ),
            ));
        }
        if !self.append && !self.drop.0.is_empty() {
            return Err(ConfigError::at(
                "drop",
                "`drop` needs `append: true` (without append, only `fields` are kept anyway)",
            ));
        }
        if self.fields.is_empty() && !self.append {
            return Err(ConfigError::at(
                "fields",
                "`fields` is empty: the output would have no fields",
            ));
        }
        for (name, spec) in &self.fields {
            spec.check(&format!("fields.{name}"))
                .map_err(|e| ConfigError::at_path(["fields", name.as_str()], e.message))?;
        }
        Ok(())
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        Ok(Node::Transform(Box::new(MapNode {
            fields: self.compile(ctx.base_dir).map_err(NodeError::Failed)?,
            append: self.append,
            drop: self.drop.0.clone(),
        })))
    }
}

struct MapNode {
    fields: Vec<(String, Compiled)>,
    append: bool,
    drop: Vec<String>,
}

impl MapNode {
    /// The output fields for `r`; the input is consumed so that appended
    /// fields move instead of being copied.
    fn map(&self, r: &mut Record) -> Result<Fields, String> {
        let mut values = Vec::with_capacity(self.fields.len());
        for (name, expr) in &self.fields {
            values.push(expr.eval(r).map_err(|e| format!("field `{name}`: {e}"))?);
        }
        let mut out = if self.append {
            for d in &self.drop {
                if !r.fields.contains_key(d.as_str()) {
                    return Err(format!("cannot drop `{d}`: the record has no such field"));
                }
            }
            for (name, _) in &self.fields {
                if r.fields.contains_key(name.as_str()) && !self.drop.contains(name) {
                    return Err(format!(
                        "field `{name}` already exists in the input; add it to `drop` to replace it"
                    ));
                }
            }
            let mut kept = std::mem::take(&mut r.fields);
            if !self.drop.is_empty() {
                kept.retain(|k, _| !self.drop.iter().any(|d| d == k));
            }
            kept
        } else {
            Fields::with_capacity(self.fields.len())
        };
        for ((name, _), v) in self.fields.iter().zip(values) {
            out.insert(name.as_str().into(), v);
        }
        Ok(out)
    }
}

impl Transform for MapNode {
    fn process(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        for mut r in batch {
            match self.map(&mut r) {
                Ok(fields) => out.emit(Record {
                    key: r.key,
                    event_time: r.event_time,
                    fields,
                    window: r.window,
                }),
                Err(e) => out.fail(r, e),
            }
        }
        Ok(())
    }
}

/// `Explode`: one output record per element of the list `fields`; other
/// fields are copied. With several fields, `cross_product: true` makes every
/// combination and `false` zips them (shorter lists padded with null), as in
/// Beam.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Explode {
    pub fields: Drop,
    pub cross_product: Option<bool>,
}

impl NodeConfig for Explode {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }
    fn validate(&self) -> Result<(), ConfigError> {
        if self.fields.0.is_empty() {
            return Err(ConfigError::at(
                "fields",
                "`fields` is empty: name the list field(s) to explode",
            ));
        }
        if self.fields.0.len() > 1 && self.cross_product.is_none() {
            return Err(ConfigError::at(
                "cross_product",
                "`cross_product` is required when exploding more than one field (true: every combination; false: zip)",
            ));
        }
        Ok(())
    }
    fn build(&self, _ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        Ok(Node::Transform(Box::new(ExplodeNode {
            fields: self.fields.0.clone(),
            cross: self.cross_product.unwrap_or(true),
        })))
    }
}

struct ExplodeNode {
    fields: Vec<String>,
    cross: bool,
}

impl ExplodeNode {
    fn explode(&self, r: &Record, out: &mut Vec<Record>) -> Result<(), String> {
        let mut lists: Vec<&Vec<Value>> = Vec::with_capacity(self.fields.len());
        for f in &self.fields {
            match r.fields.get(f.as_str()) {
                Some(Value::List(l)) => lists.push(l),
                Some(other) => {
                    return Err(format!(
                        "cannot explode `{f}`: it is {} {other}, not a list",
                        other.type_name()
                    ));
                }
                None => {
                    return Err(format!(
                        "cannot explode `{f}`: the record has no such field"
                    ));
                }
            }
        }
        let emit = |choice: &[Value], out: &mut Vec<Record>| {
            let mut n = r.clone();
            for (f, v) in self.fields.iter().zip(choice) {
                n.fields.insert(f.as_str().into(), v.clone());
            }
            out.push(n);
        };
        if self.cross || lists.len() == 1 {
            let total: usize = lists.iter().map(|l| l.len()).product();
            if total > 1_000_000 {
                return Err(format!(
                    "exploding would make {total} records (limit 1000000)"
                ));
            }
            let mut idx = vec![0usize; lists.len()];
            if total == 0 {
                return Ok(());
            }
            loop {
                let choice: Vec<Value> =
                    idx.iter().zip(&lists).map(|(i, l)| l[*i].clone()).collect();
                emit(&choice, out);
                // odometer, last field fastest (first field is the outer loop)
                let mut k = lists.len();
                loop {
                    if k == 0 {
                        return Ok(());
                    }
                    k -= 1;
                    idx[k] += 1;
                    if idx[k] < lists[k].len() {
                        break;
                    }
                    idx[k] = 0;
                }
            }
        } else {
            let n = lists.iter().map(|l| l.len()).max().unwrap_or(0);
            for i in 0..n {
                let choice: Vec<Value> = lists
                    .iter()
                    .map(|l| l.get(i).cloned().unwrap_or(Value::Null))
                    .collect();
                emit(&choice, out);
            }
            Ok(())
        }
    }
}

impl Transform for ExplodeNode {
    fn process(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        let mut made = Vec::new();
        for r in batch {
            made.clear();
            match self.explode(&r, &mut made) {
                Ok(()) => made.drain(..).for_each(|m| out.emit(m)),
                Err(e) => out.fail(r, e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill_core::{record, testkit};

    fn transform(type_name: &str, yaml: &str) -> Box<dyn Transform> {
        match testkit::build_yaml(
            &crate::registry(),
            type_name,
            yaml,
            std::path::Path::new("."),
        )
        .unwrap()
        {
            Node::Transform(t) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn explode_cross_and_zip() {
        let r = record! {"a" => vec![Value::Int(1), Value::Int(2)], "b" => vec![Value::from("x"), Value::from("y"), Value::from("z")], "c" => 0};
        let mut t = transform("Explode", "{fields: [a, b], cross_product: true}");
        let run = testkit::run_transform(t.as_mut(), vec![vec![r.clone()]]).unwrap();
        assert_eq!(run.main.len(), 6);
        assert_eq!(run.main[1].get("b"), Some(&Value::from("y")));
        assert_eq!(run.main[3].get("a"), Some(&Value::Int(2)));
        let mut t = transform("Explode", "{fields: [a, b], cross_product: false}");
        let run = testkit::run_transform(t.as_mut(), vec![vec![r]]).unwrap();
        assert_eq!(run.main.len(), 3);
        assert_eq!(run.main[2].get("a"), Some(&Value::Null));
        // a non-list fails that record only
        let mut t = transform("Explode", "{fields: c}");
        let run = testkit::run_transform(t.as_mut(), vec![vec![record! {"c" => 1}]]).unwrap();
        assert_eq!(run.failures.len(), 1);
    }

    #[test]
    fn map_to_fields_append_drop() {
        let mut t = transform(
            "MapToFields",
            "{language: python, append: true, drop: [b], fields: {c: 'a * 2', d: {callable: 'lambda row: row.b.upper()'}}}",
        );
        let run = testkit::run_transform(
            t.as_mut(),
            vec![vec![record! {"a" => 2, "b" => "x"}, record! {"a" => 1}]],
        )
        .unwrap();
        assert_eq!(run.main.len(), 1);
        let keys: Vec<_> = run.main[0].fields.keys().cloned().collect();
        assert_eq!(keys, ["a", "c", "d"]);
        assert_eq!(run.main[0].get("d"), Some(&Value::from("X")));
        assert_eq!(
            run.failures.len(),
            1,
            "a record without `b` is a failure, not a crash"
        );
    }

    #[test]
    fn filter_and_bad_configs() {
        let mut t = transform("Filter", "{keep: 'n > 1'}");
        let run = testkit::run_transform(
            t.as_mut(),
            vec![vec![record! {"n" => 1}, record! {"n" => 2}]],
        )
        .unwrap();
        assert_eq!(run.main.len(), 1);
        let reg = crate::registry();
        let bad = |ty: &str, y: &str| {
            testkit::build_yaml(&reg, ty, y, std::path::Path::new(".")).unwrap_err()
        };
        assert!(bad("Filter", "{keep: 'n >'}").contains("keep"));
        assert!(bad("Filter", "{keep: x, language: javascript}").contains("not supported"));
        assert!(
            bad("MapToFields", "{fields: {a: b}, dependencies: [roman]}").contains("dependencies")
        );
        assert!(bad("Explode", "{fields: [a, b]}").contains("cross_product"));
    }
}
