//! `Scale`: multiplies numeric fields by a factor. A record whose field is
//! missing or not a number fails alone (to the error output, when the stage
//! has `error_handling`); the others go on.

use rill_core::node::{
    BuildContext, ConfigError, Emitter, Node, NodeConfig, NodeError, NodeKind, Transform,
};
use rill_core::{Name, Record, Value};

/// `config: {fields: [x, y], factor: 2.5}`
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scale {
    pub fields: Vec<String>,
    pub factor: f64,
}

impl NodeConfig for Scale {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.fields.is_empty() {
            return Err(ConfigError::at(
                "fields",
                "`fields` names no field to scale",
            ));
        }
        if !self.factor.is_finite() {
            return Err(ConfigError::at(
                "factor",
                "`factor` must be a finite number",
            ));
        }
        Ok(())
    }

    fn build(&self, _ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        Ok(Node::Transform(Box::new(ScaleNode {
            fields: self.fields.iter().map(|f| Name::from(f.as_str())).collect(),
            factor: self.factor,
        })))
    }
}

struct ScaleNode {
    fields: Vec<Name>,
    factor: f64,
}

impl Transform for ScaleNode {
    fn process(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        'records: for mut r in batch {
            for f in &self.fields {
                let scaled = match r.fields.get(f) {
                    Some(Value::Int(n)) => *n as f64 * self.factor,
                    Some(Value::Float(x)) => x * self.factor,
                    other => {
                        let what = other.map_or("missing", |v| v.type_name());
                        out.fail(r, format!("field `{f}` is {what}, not a number"));
                        continue 'records;
                    }
                };
                r.fields.insert(f.clone(), Value::Float(scaled));
            }
            out.emit(r);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill_core::{record, testkit};

    #[test]
    fn scales_numbers_and_fails_the_rest_alone() {
        let cfg = Scale {
            fields: vec!["x".into()],
            factor: 2.0,
        };
        let mut registry = rill_core::registry::Registry::new();
        registry.register::<Scale>("Scale", "");
        let node = testkit::build_yaml(
            &registry,
            "Scale",
            "{fields: [x], factor: 2.0}",
            std::path::Path::new("."),
        )
        .unwrap();
        let Node::Transform(mut node) = node else {
            panic!("a transform")
        };
        let run = testkit::run_transform(
            node.as_mut(),
            vec![vec![
                record! {"x" => 3},
                record! {"x" => "three"},
                record! {"x" => 1.5},
            ]],
        )
        .unwrap();
        let xs: Vec<_> = run.main.iter().map(|r| r.get("x").cloned()).collect();
        assert_eq!(xs, [Some(Value::Float(6.0)), Some(Value::Float(3.0))]);
        assert_eq!(run.failures.len(), 1);
        assert!(run.failures[0].msg.contains("field `x` is str"));
        assert!(cfg.validate().is_ok());
        let bad = Scale {
            fields: vec![],
            factor: 1.0,
        };
        assert_eq!(bad.validate().unwrap_err().path, ["fields"]);
    }
}
