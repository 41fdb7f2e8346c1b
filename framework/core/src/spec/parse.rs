//! The first pass: the file's shape (top-level keys, `options`, the
//! transform list), stage names, and the inputs a `chain` implies.

use std::collections::HashMap;

use super::options::check_options;
use super::transform::{Raw, apply_hints, parse_transform};
use super::{Cx, Input, Options, Pipeline, ResourceHints, Resources, Stage, key_safe};
use crate::node::NodeKind;
use crate::registry::Registry;
use crate::window::Windowing;
use crate::yaml::{Mark, YNode, YValue};

const TOP_KEYS: &[&str] = &["pipeline", "options"];
const PIPELINE_KEYS: &[&str] = &[
    "name",
    "type",
    "transforms",
    "source",
    "sink",
    "extra_transforms",
    "resource_hints",
    "resources",
    "restart",
];

/// The first pass: the pipeline as written, its stages in file order with
/// their inputs not yet resolved.
pub(super) fn pipeline(
    cx: &mut Cx,
    root: &YNode,
    default_name: &str,
    registry: &Registry,
) -> Option<Pipeline> {
    if root.is_null() {
        cx.err(
            root.mark,
            "the file is empty: expected a mapping with `pipeline:` (and optionally `options:`)",
        );
        return None;
    }
    if !cx.keys(root, "the top level", TOP_KEYS) {
        return None;
    }
    let Some(pnode) = root.get("pipeline") else {
        cx.err(
            root.mark,
            "missing `pipeline:`: expected `pipeline: {transforms: [...]}`",
        );
        return None;
    };
    let options: Options = match root.get("options") {
        Some(o) if !o.is_null() => cx.parse(o)?,
        _ => Options::default(),
    };
    check_options(cx, &options, root.get("options"));
    if !cx.keys(pnode, "`pipeline`", PIPELINE_KEYS) {
        return None;
    }

    let name = match pnode.get("name") {
        Some(n) => match n.as_str() {
            Some(s) if is_valid_pipeline_name(s) => s.to_owned(),
            _ => {
                cx.err(
                    n.mark,
                    "pipeline `name` must be letters, digits, `_` or `-`",
                );
                return None;
            }
        },
        None => name_of_stem(default_name),
    };

    let chain = match pnode.get("type") {
        None => false,
        Some(t) => match t.as_str() {
            Some("chain") => true,
            Some("composite") => false,
            _ => {
                cx.err(
                    t.mark,
                    format!(
                        "unknown pipeline type {}: expected `chain` or `composite`",
                        t.to_json()
                    ),
                );
                return None;
            }
        },
    };
    if !chain {
        for k in ["source", "sink", "extra_transforms"] {
            if let Some((kn, _)) = pnode.entry(k) {
                cx.err(kn.mark, format!("`{k}` is only allowed with `type: chain`"));
            }
        }
    }

    // pipeline-level defaults
    let mut default_restart = options.restart;
    if let Some(r) = pnode.get("restart") {
        default_restart = cx.parse(r).unwrap_or(default_restart);
    }
    let mut default_resources = Resources::default();
    if let Some(r) = pnode.get("resources") {
        default_resources = cx.parse(r).unwrap_or_default();
    }
    if let Some(h) = pnode.get("resource_hints")
        && let Some(hints) = cx.parse::<ResourceHints>(h)
    {
        apply_hints(&mut default_resources, &hints);
    }

    let Some(tnode) = pnode.get("transforms") else {
        cx.err(
            pnode.mark,
            "missing `transforms:`: expected a list of transforms",
        );
        return None;
    };
    let YValue::Seq(items) = &tnode.value else {
        cx.err(
            tnode.mark,
            format!("`transforms` must be a list, found {}", tnode.kind()),
        );
        return None;
    };

    // a composite's nested chains, spliced in
    let spliced;
    let items: &[YNode] = if !chain
        && items
            .iter()
            .any(|i| i.get("type").and_then(YNode::as_str) == Some("chain"))
    {
        spliced = super::nested::expand(cx, items);
        &spliced
    } else {
        items
    };
    if chain
        && let Some(n) = items
            .iter()
            .find(|i| i.get("type").and_then(YNode::as_str) == Some("chain"))
    {
        cx.err(
            n.mark,
            "a `type: chain` inside a chain pipeline: write its transforms in the chain itself",
        );
        return None;
    }
    // In a chain: [source] + transforms + [sink], then extra_transforms.
    let mut entries: Vec<(&YNode, bool)> = Vec::new();
    if chain && let Some(s) = pnode.get("source") {
        entries.push((s, true));
    }
    entries.extend(items.iter().map(|i| (i, true)));
    if chain && let Some(s) = pnode.get("sink") {
        entries.push((s, true));
    }
    if chain && let Some(x) = pnode.get("extra_transforms") {
        match &x.value {
            YValue::Seq(extra) => entries.extend(extra.iter().map(|i| (i, false))),
            _ => cx.err(x.mark, "`extra_transforms` must be a list"),
        }
    }
    if entries.is_empty() {
        cx.err(
            tnode.mark,
            "`transforms` is empty: a pipeline needs at least one transform",
        );
        return None;
    }

    let mut raws: Vec<Raw> = Vec::new();
    for (node, in_chain) in entries {
        if let Some(raw) = parse_transform(
            cx,
            node,
            registry,
            chain && in_chain,
            options.queue,
            default_restart,
            default_resources,
        ) {
            raws.push(raw);
        }
    }
    if !cx.errors.is_empty() {
        return None;
    }

    // names: explicit, or the type (with a number when several share it)
    let mut type_counts: HashMap<&str, usize> = HashMap::new();
    for r in raws.iter().filter(|r| r.name.is_none()) {
        *type_counts.entry(r.type_name.as_str()).or_default() += 1;
    }
    let mut seen: HashMap<String, Mark> = HashMap::new();
    let mut type_seen: HashMap<String, usize> = HashMap::new();
    let mut names = Vec::with_capacity(raws.len());
    for r in &raws {
        let (name, mark) = match &r.name {
            Some((n, m)) => (n.clone(), *m),
            None => {
                let c = type_seen.entry(r.type_name.clone()).or_default();
                *c += 1;
                if type_counts[r.type_name.as_str()] > 1 {
                    (format!("{}_{}", r.type_name, c), r.node.mark)
                } else {
                    (r.type_name.clone(), r.node.mark)
                }
            }
        };
        if let Some(first) = seen.get(&name) {
            cx.err(mark, format!("duplicate transform name `{name}` (first used at {first}); names must be unique"));
        } else {
            seen.insert(name.clone(), mark);
        }
        names.push(name);
    }
    // distinct names must stay distinct as Zenoh key chunks
    let mut keys: HashMap<String, &str> = HashMap::new();
    for (n, r) in names.iter().zip(&raws) {
        // the key-safe name is also a folder of the state directory
        if let Err(why) = check_folder_name(&key_safe(n)) {
            cx.err(
                r.node.mark,
                format!("transform name `{n}` {why}; rename it"),
            );
        }
        if let Some(other) = keys.insert(key_safe(n), n)
            && other != n
        {
            cx.err(
                r.node.mark,
                format!("transform names `{other}` and `{n}` map to the same Zenoh key `{}`; rename one", key_safe(n)),
            );
        }
    }

    // chain inputs: each chained transform reads the previous one
    let mut stages: Vec<Stage> = Vec::new();
    let mut prev: Option<String> = None;
    for (i, r) in raws.iter().enumerate() {
        let Some(dyn_node) = r.dyn_node.clone() else {
            continue;
        };
        let kind = dyn_node.kind();
        let in_chain = chain && r.inputs.is_none();
        let inputs = match &r.inputs {
            Some(v) => v.clone(),
            None if in_chain && kind != NodeKind::Source => match &prev {
                Some(p) => vec![Input {
                    stage: p.clone(),
                    output: None,
                    queue: options.queue,
                    delivery: None,
                    mark: r.node.mark,
                }],
                None => {
                    cx.err(
                        r.type_mark,
                        format!(
                            "`{}` is first in the chain but is not a source; it needs an input",
                            r.type_name
                        ),
                    );
                    vec![]
                }
            },
            None => vec![],
        };
        let mut outputs = dyn_node.outputs();
        if let Some(e) = &r.error_output {
            if outputs.contains(e) {
                cx.err(
                    r.node.mark,
                    format!("error output `{e}` has the name of one of the stage's outputs"),
                );
            }
            outputs.push(e.clone());
        }
        if in_chain {
            prev = Some(names[i].clone());
        }
        stages.push(Stage {
            name: names[i].clone(),
            type_name: r.type_name.clone(),
            kind,
            node: dyn_node,
            inputs,
            outputs,
            error_output: r.error_output.clone(),
            retries: r.retries,
            error_threshold: r.error_threshold,
            timeout: r.timeout,
            restart: r.restart,
            resources: r.resources,
            placement: r.placement.clone(),
            serve: r.serve.clone(),
            windowing_key: r.windowing,
            windowing: Windowing::default(),
            watermark: r.watermark.unwrap_or(options.watermark),
            sends_watermarks: false,
            mark: r.node.mark,
        });
    }
    Some(Pipeline {
        name,
        file: None,
        stages,
        options,
    })
}

/// Whether a (key-safe) name can be a folder of the state directory of
/// its own: not `.` or `..`, not hidden, not one of rill's own (`_dlq`;
/// every name starting with `_` is kept for rill).
fn check_folder_name(k: &str) -> Result<(), &'static str> {
    if k.is_empty() || k.chars().all(|c| c == '.') {
        return Err("is not a usable folder name (its state would land outside its folder)");
    }
    if k.starts_with('.') {
        return Err("starts with `.` (a hidden folder of the state directory)");
    }
    if k.starts_with('_') {
        return Err("starts with `_`, which is kept for rill's own folders (`_dlq`)");
    }
    Ok(())
}

/// The pipeline name a file's stem gives when the file names none:
/// key-safe, without dots (`my.pipeline.yaml` is `my_pipeline`).
fn name_of_stem(stem: &str) -> String {
    let n: String = key_safe(stem)
        .chars()
        .map(|c| if c == '.' { '_' } else { c })
        .collect();
    if n.is_empty() { "pipeline".into() } else { n }
}

fn is_valid_pipeline_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}
