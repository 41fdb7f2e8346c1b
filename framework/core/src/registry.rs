//! Maps YAML `type` names to node factories.
//!
//! Built-in nodes register themselves through `rill_nodes::register_all`; an
//! application registers its own types the same way before loading a
//! pipeline:
//!
//! ```ignore
//! let mut registry = Registry::new();
//! rill_nodes::register_all(&mut registry);
//! registry.register::<MyNodeConfig>("MyNode", "what it does");
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::node::{DynNode, NodeConfig};
use crate::yaml::{YNode, YamlError, from_node};

type ParseFn = Box<dyn Fn(&YNode) -> Result<Arc<dyn DynNode>, YamlError> + Send + Sync>;

struct Entry {
    parse: ParseFn,
    doc: &'static str,
}

/// Node types by YAML name.
#[derive(Default)]
pub struct Registry {
    entries: BTreeMap<String, Entry>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers `C` under `name` (replacing an earlier registration).
    pub fn register<C: NodeConfig>(&mut self, name: &str, doc: &'static str) {
        let parse: ParseFn = Box::new(|node: &YNode| {
            let cfg: C = from_node(node)?;
            cfg.validate()
                .map_err(|msg| YamlError::at(mark_of_named_key(node, &msg), msg))?;
            Ok(Arc::new(cfg) as Arc<dyn DynNode>)
        });
        self.entries.insert(name.to_owned(), Entry { parse, doc });
    }

    /// Parses and validates a stage's `config` for the type `name`; `None` if
    /// no such type is registered.
    pub fn parse(&self, name: &str, config: &YNode) -> Option<Result<Arc<dyn DynNode>, YamlError>> {
        self.entries.get(name).map(|e| (e.parse)(config))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Registered type names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// (name, one-line description) for every type, sorted.
    pub fn docs(&self) -> impl Iterator<Item = (&str, &'static str)> {
        self.entries.iter().map(|(k, e)| (k.as_str(), e.doc))
    }

    /// The registered name closest to `name`, for "did you mean" hints.
    pub fn suggest(&self, name: &str) -> Option<&str> {
        self.names()
            .map(|n| (edit_distance(&n.to_lowercase(), &name.to_lowercase()), n))
            .filter(|(d, n)| *d <= 2.max(n.len() / 3))
            .min()
            .map(|(_, n)| n)
    }
}

/// Where a validation message points: the first key path it names in
/// backticks (`` `batching.max_batch_size` ``, or `` `language: java` ``)
/// that the config has, else the config itself.
fn mark_of_named_key(config: &YNode, msg: &str) -> crate::yaml::Mark {
    for (i, quoted) in msg.split('`').enumerate() {
        // the odd pieces are inside backticks; `key: value` names `key`
        if i % 2 == 0 {
            continue;
        }
        let quoted = quoted.split_once(": ").map_or(quoted, |(k, _)| k);
        if quoted.is_empty() || quoted.contains(char::is_whitespace) {
            continue;
        }
        let mut node = config;
        let mut mark = None;
        for seg in quoted.split('.') {
            match node.entry(seg) {
                Some((k, v)) => {
                    mark = Some(k.mark);
                    node = v;
                }
                None => {
                    mark = None;
                    break;
                }
            }
        }
        if let Some(m) = mark {
            return m;
        }
    }
    config.mark
}

/// Levenshtein distance, for suggestions.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The known name closest to `name` among `candidates`.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(c, name), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| c)
}
