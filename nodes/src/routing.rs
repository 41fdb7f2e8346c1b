//! Moving records between streams: `Flatten`, `Partition`, `Reshuffle`.

use rill_core::node::{
    BuildContext, ConfigError, Emitter, Node, NodeConfig, NodeError, NodeKind, Transform,
};
use rill_core::{Record, Value};
use rill_expr::spec::{Compiled, ExprSpec, check_language};
use serde::Deserialize;

/// Passes records on unchanged.
struct Pass;

impl Transform for Pass {
    fn process(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        out.reserve(batch.len());
        for r in batch {
            out.emit(r);
        }
        Ok(())
    }
}

/// `Flatten`: one stream of the records of all its inputs
/// (`input: [a, b]`). Their windowing must agree.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Flatten {}

impl NodeConfig for Flatten {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }
    fn build(&self, _ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        Ok(Node::Transform(Box::new(Pass)))
    }
}

/// `Reshuffle`: Beam's fusion break. Every rill stage is its own actor
/// and hands records to the next over Zenoh, so records pass unchanged.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Reshuffle {
    /// Beam's `num_buckets`: accepted, with no effect here.
    pub num_buckets: Option<u64>,
}

impl NodeConfig for Reshuffle {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }
    fn build(&self, _ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        Ok(Node::Transform(Box::new(Pass)))
    }
}

/// `Partition`: sends each record to the output `by` names (a field, an
/// expression or a callable giving a string). A name that is not in
/// `outputs` (or none) goes to `unknown_output` when there is one, and is
/// a failed record otherwise.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    pub by: ExprSpec,
    pub outputs: Vec<String>,
    pub unknown_output: Option<String>,
    pub language: Option<String>,
}

impl NodeConfig for Partition {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }
    fn validate(&self) -> Result<(), ConfigError> {
        check_language(&self.language)?;
        self.by.check("by")?;
        if self.outputs.is_empty() {
            return Err(ConfigError::at(
                "outputs",
                "`outputs` is empty: name the outputs records can go to",
            ));
        }
        for (i, o) in self.outputs.iter().enumerate() {
            if o.is_empty() || o.contains('.') {
                return Err(ConfigError::at_path(
                    ["outputs".to_owned(), i.to_string()],
                    format!("output name `{o}` must be non-empty and without dots"),
                ));
            }
            if self.outputs[..i].contains(o) {
                return Err(ConfigError::at_path(
                    ["outputs".to_owned(), i.to_string()],
                    format!("output `{o}` is named twice"),
                ));
            }
        }
        if let Some(u) = &self.unknown_output
            && self.outputs.contains(u)
        {
            return Err(ConfigError::at(
                "unknown_output",
                format!("`unknown_output: {u}` is also one of `outputs`"),
            ));
        }
        Ok(())
    }
    fn outputs(&self) -> Vec<String> {
        let mut v = self.outputs.clone();
        v.extend(self.unknown_output.clone());
        v
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let by = self
            .by
            .compile("by", ctx.base_dir)
            .map_err(NodeError::Failed)?;
        Ok(Node::Transform(Box::new(PartitionNode {
            by,
            outputs: self.outputs.clone(),
            unknown: self.unknown_output.clone(),
        })))
    }
}

struct PartitionNode {
    by: Compiled,
    outputs: Vec<String>,
    unknown: Option<String>,
}

impl Transform for PartitionNode {
    fn process(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        for r in batch {
            let name = match self.by.eval(&r) {
                Ok(Value::String(s)) => Some(s),
                Ok(Value::Null) => None,
                Ok(other) => {
                    out.fail(
                        r,
                        format!(
                            "by: the output name must be a string, got {} {other}",
                            other.type_name()
                        ),
                    );
                    continue;
                }
                Err(e) => {
                    out.fail(r, format!("by: {e}"));
                    continue;
                }
            };
            match (name, &self.unknown) {
                (Some(n), _) if self.outputs.iter().any(|o| *o == n) => out.emit_to(&n, r),
                (_, Some(u)) => out.emit_to(u, r),
                (Some(n), None) => out.fail(
                    r,
                    format!(
                        "by: `{n}` is not one of the outputs ({}) and there is no `unknown_output`",
                        self.outputs.join(", ")
                    ),
                ),
                (None, None) => out.fail(r, "by: gave None and there is no `unknown_output`"),
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
    fn partition_routes_by_name_with_a_catch_all() {
        let reg = crate::registry();
        let dir = std::path::Path::new(".");
        let Node::Transform(mut t) = build_yaml(
            &reg,
            "Partition",
            "{by: \"'even' if n % 2 == 0 else ('odd' if n > 0 else None)\", outputs: [even, odd], unknown_output: other, language: python}",
            dir,
        )
        .unwrap() else {
            panic!("a transform")
        };
        let rows = (-1..4).map(|n| Record::default().with("n", n)).collect();
        let run = run_transform(t.as_mut(), vec![rows]).unwrap();
        let ns = |o: &str| -> Vec<i64> {
            run.output(o)
                .iter()
                .map(|r| r.get("n").unwrap().as_i64().unwrap())
                .collect()
        };
        assert_eq!(ns("even"), [0, 2]);
        assert_eq!(ns("odd"), [1, 3]);
        assert_eq!(ns("other"), [-1]);
        assert!(run.main.is_empty());
        // without a catch-all an unknown name is a failed record
        let Node::Transform(mut t) =
            build_yaml(&reg, "Partition", "{by: kind, outputs: [a, b]}", dir).unwrap()
        else {
            panic!("a transform")
        };
        let run = run_transform(
            t.as_mut(),
            vec![vec![
                Record::default().with("kind", "a"),
                Record::default().with("kind", "c"),
                Record::default().with("kind", 3),
            ]],
        )
        .unwrap();
        assert_eq!(run.output("a").len(), 1);
        assert!(
            run.failures[0]
                .msg
                .contains("`c` is not one of the outputs")
        );
        assert!(run.failures[1].msg.contains("must be a string, got int"));
        let e = build_yaml(&reg, "Partition", "{by: k, outputs: [a, a]}", dir).unwrap_err();
        assert!(e.contains("named twice"), "{e}");
    }
}
