//! A `type: chain` among a composite pipeline's transforms (Beam YAML
//! allows one wherever a transform goes): its transforms are spliced in
//! its place, each reading the one before (the first reads the chain's
//! `input`), and the chain's name stands for its last transform.
//!
//! ```yaml
//! - type: chain
//!   name: clean
//!   input: raw
//!   transforms:
//!     - {type: Filter, config: {keep: "x > 0"}}
//!     - {type: MapToFields, config: {fields: {y: "x * 2"}}}
//! - {type: WriteToJson, input: clean, config: {path: out.jsonl}}
//! ```
//!
//! Unnamed transforms inside are named `<chain>_<n>`; the last takes the
//! chain's own name unless it has one, and then `input: <chain>` is
//! rewritten to it.

use std::collections::HashMap;

use super::Cx;
use crate::yaml::{YNode, YValue};

const CHAIN_KEYS: &[&str] = &["type", "name", "input", "transforms"];

fn set(node: &mut YNode, k: &str, v: YNode) {
    let mark = node.mark;
    if let YValue::Map(entries) = &mut node.value {
        match entries
            .iter_mut()
            .find(|(kn, _)| matches!(&kn.value, YValue::Str(s) if s == k))
        {
            Some((_, old)) => *old = v,
            None => entries.push((YNode::new(YValue::Str(k.to_owned()), mark), v)),
        }
    }
}

fn is_chain(n: &YNode) -> bool {
    n.get("type").and_then(YNode::as_str) == Some("chain")
}

/// The transforms with every nested chain spliced in, and the names that
/// stand for another (chain → its last transform).
pub(super) fn expand(cx: &mut Cx, items: &[YNode]) -> Vec<YNode> {
    let mut out = Vec::with_capacity(items.len());
    let mut aliases: HashMap<String, String> = HashMap::new();
    let mut n_chain = 0;
    for item in items {
        if !is_chain(item) {
            out.push(item.clone());
            continue;
        }
        n_chain += 1;
        splice(cx, item, n_chain, &mut out, &mut aliases);
    }
    if !aliases.is_empty() {
        for item in &mut out {
            if let YValue::Map(entries) = &mut item.value {
                for (k, v) in entries.iter_mut() {
                    if k.as_str() == Some("input") {
                        rename_inputs(v, &aliases);
                    }
                }
            }
        }
    }
    out
}

fn splice(
    cx: &mut Cx,
    chain: &YNode,
    n: usize,
    out: &mut Vec<YNode>,
    aliases: &mut HashMap<String, String>,
) {
    if !cx.keys(chain, "a nested `type: chain`", CHAIN_KEYS) {
        return;
    }
    let cname = chain
        .get("name")
        .and_then(YNode::as_str)
        .map_or_else(|| format!("chain_{n}"), str::to_owned);
    let Some(YValue::Seq(inner)) = chain.get("transforms").map(|t| &t.value) else {
        cx.err(
            chain.mark,
            format!("the nested chain `{cname}` needs `transforms:`, a list"),
        );
        return;
    };
    if inner.is_empty() {
        cx.err(
            chain.mark,
            format!("the nested chain `{cname}` has no transforms"),
        );
        return;
    }
    let mut prev: Option<YNode> = chain.get("input").cloned();
    for (j, t) in inner.iter().enumerate() {
        if is_chain(t) {
            cx.err(
                t.mark,
                "a chain inside a nested chain is not supported: write its transforms in the outer chain",
            );
            return;
        }
        let mut t = t.clone();
        let last = j + 1 == inner.len();
        let name = match t.get("name").and_then(YNode::as_str) {
            Some(own) => {
                if last && own != cname {
                    aliases.insert(cname.clone(), own.to_owned());
                }
                own.to_owned()
            }
            None => {
                let name = if last {
                    cname.clone()
                } else {
                    format!("{cname}_{}", j + 1)
                };
                let mark = t.mark;
                set(&mut t, "name", YNode::new(YValue::Str(name.clone()), mark));
                name
            }
        };
        if t.get("input").is_none()
            && let Some(p) = &prev
        {
            set(&mut t, "input", p.clone());
        }
        prev = Some(YNode::new(YValue::Str(name), t.mark));
        out.push(t);
    }
}

fn rename_inputs(v: &mut YNode, aliases: &HashMap<String, String>) {
    match &mut v.value {
        YValue::Str(s) => {
            let (stage, rest) = match s.split_once('.') {
                Some((a, b)) => (a.to_owned(), Some(b.to_owned())),
                None => (s.clone(), None),
            };
            if let Some(to) = aliases.get(&stage) {
                *s = match rest {
                    Some(r) => format!("{to}.{r}"),
                    None => to.clone(),
                };
            }
        }
        YValue::Seq(items) => items.iter_mut().for_each(|i| rename_inputs(i, aliases)),
        YValue::Map(entries) => {
            // named inputs; `{stage: ...}` names its stage under `stage`
            for (k, val) in entries.iter_mut() {
                if k.as_str() != Some("output") {
                    rename_inputs(val, aliases);
                }
            }
        }
        _ => {}
    }
}
