//! `Create`: a bounded source of inline elements (Beam's `Create`).

use rill_core::json::json_to_value;
use rill_core::node::{
    BuildContext, ConfigError, Emitter, Node, NodeConfig, NodeError, NodeKind, Source, SourceStatus,
};
use rill_core::{Fields, Record, Value};
use serde::Deserialize;

/// `elements`: a list. A mapping becomes a record with those fields; any
/// other value `v` becomes the record `{element: v}`, as in Beam. As in Beam,
/// records are padded with nulls to the union of all elements' fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Create {
    pub elements: Vec<serde_json::Value>,
    /// Beam's `reshuffle` (a no-op here: elements are emitted in order).
    #[serde(default)]
    pub reshuffle: Option<bool>,
    /// A JSON Schema the elements must satisfy (see [`crate::schema`]);
    /// its `properties` also name fields an element may leave out (they
    /// are null) and make ints floats where it says `number`.
    pub output_schema: Option<serde_json::Value>,
}

impl Create {
    /// The elements as records; an error names the element's index.
    fn records(&self) -> Result<Vec<Record>, (usize, String)> {
        let schema =
            match &self.output_schema {
                None => None,
                Some(j) => Some(crate::schema::Schema::compile(j).map_err(|(p, m)| {
                    (usize::MAX, format!("output_schema.{}: {m}", p.join(".")))
                })?),
            };
        let mut rows = Vec::with_capacity(self.elements.len());
        for (i, e) in self.elements.iter().enumerate() {
            let v = json_to_value(e).map_err(|err| (i, format!("element {i}: {err}")))?;
            let mut fields = match v {
                Value::Map(f) => f,
                other => {
                    let mut f = Fields::default();
                    f.insert("element".into(), other);
                    f
                }
            };
            if let Some(s) = &schema {
                s.check_record(&Record::new(fields.clone()))
                    .map_err(|m| (i, format!("element {i} does not fit `output_schema`: {m}")))?;
                s.coerce(&mut fields);
            }
            rows.push(fields);
        }
        // pad to the union of field names (the schema's first), in
        // first-seen order
        let mut all: Vec<rill_core::Name> = match &self.output_schema {
            Some(serde_json::Value::Object(o)) => match o.get("properties") {
                Some(serde_json::Value::Object(p)) => p.keys().map(|k| k.as_str().into()).collect(),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        for r in &rows {
            for k in r.keys() {
                if !all.contains(k) {
                    all.push(k.clone());
                }
            }
        }
        Ok(rows
            .into_iter()
            .map(|mut f| {
                if f.len() < all.len() {
                    for k in &all {
                        if !f.contains_key(k) {
                            f.insert(k.clone(), Value::Null);
                        }
                    }
                }
                Record::new(f)
            })
            .collect())
    }
}

impl NodeConfig for Create {
    fn kind(&self) -> NodeKind {
        NodeKind::Source
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.records().map(|_| ()).map_err(|(i, msg)| match i {
            usize::MAX => ConfigError::at("output_schema", msg),
            i => ConfigError::at_path(["elements".to_owned(), i.to_string()], msg),
        })
    }

    fn build(&self, _ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let records = self.records().map_err(|(_, m)| NodeError::Failed(m))?;
        Ok(Node::Source(Box::new(CreateSource {
            records: records.into_iter(),
        })))
    }
}

struct CreateSource {
    records: std::vec::IntoIter<Record>,
}

impl Source for CreateSource {
    /// Elements are emitted in order (also with `reshuffle`), so a restarted
    /// source goes straight past those emitted before.
    fn seek(&mut self, made: u64) -> bool {
        if made > self.records.len() as u64 {
            // fewer elements than were emitted: the runtime replays and
            // reports the changed input
            return false;
        }
        if made > 0 {
            self.records.nth(made as usize - 1);
        }
        true
    }

    fn poll(&mut self, max: usize, out: &mut Emitter) -> Result<SourceStatus, NodeError> {
        for r in self.records.by_ref().take(max) {
            out.emit(r);
        }
        Ok(if self.records.len() == 0 {
            SourceStatus::Done
        } else {
            SourceStatus::More
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill_core::testkit;

    #[test]
    fn scalars_become_element_and_rows_are_padded() {
        let reg = crate::registry();
        let dir = std::env::temp_dir();
        let Node::Source(mut s) =
            testkit::build_yaml(&reg, "Create", "elements: [1, 'a', {x: 2}]", &dir).unwrap()
        else {
            panic!("not a source")
        };
        let run = testkit::drain_source(s.as_mut(), 100).unwrap();
        assert_eq!(run.main.len(), 3);
        assert_eq!(run.main[0].get("element"), Some(&Value::Int(1)));
        assert_eq!(run.main[0].get("x"), Some(&Value::Null));
        assert_eq!(run.main[2].get("x"), Some(&Value::Int(2)));
        assert_eq!(run.main[2].get("element"), Some(&Value::Null));
    }

    #[test]
    fn seek_goes_past_what_was_emitted() {
        let reg = crate::registry();
        let dir = std::env::temp_dir();
        let build = || {
            let Node::Source(s) =
                testkit::build_yaml(&reg, "Create", "elements: [0, 1, 2, 3, 4]", &dir).unwrap()
            else {
                panic!("not a source")
            };
            s
        };
        let mut s = build();
        assert!(s.seek(2));
        let run = testkit::drain_source(s.as_mut(), 100).unwrap();
        let got: Vec<_> = run.main.iter().map(|r| r.get("element").cloned()).collect();
        assert_eq!(
            got,
            vec![
                Some(Value::Int(2)),
                Some(Value::Int(3)),
                Some(Value::Int(4))
            ]
        );
        assert!(
            !build().seek(6),
            "more than there are: the runtime must replay"
        );
    }
}
