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
use crate::yaml::{YNode, YValue, YamlError, from_node};

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
                .map_err(|e| YamlError::at(mark_of_path(node, &e.path), e.message))?;
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

/// Where a validation error points: the deepest key of its path that the
/// config has (its key's mark; a list item's own mark), else the config.
pub(crate) fn mark_of_path(config: &YNode, path: &[String]) -> crate::yaml::Mark {
    let mut node = config;
    let mut mark = config.mark;
    for seg in path {
        let next = match &node.value {
            YValue::Seq(items) => seg
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get(i))
                .map(|v| (v.mark, v)),
            _ => node.entry(seg).map(|(k, v)| (k.mark, v)),
        };
        match next {
            Some((m, v)) => {
                mark = m;
                node = v;
            }
            None => break,
        }
    }
    mark
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
