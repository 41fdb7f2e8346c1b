//! `input:` entries: parsed per transform, then resolved against the
//! whole pipeline (`stage.output` names, sinks, sources, own outputs).

use std::collections::HashMap;

use serde::Deserialize;

use super::options::check_queue;
use super::{Cx, Delivery, Input, QueueSpec, Stage};
use crate::node::NodeKind;
use crate::registry::closest;
use crate::yaml::{YNode, YValue};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputMap {
    stage: String,
    output: Option<String>,
    queue: Option<QueueSpec>,
    delivery: Option<Delivery>,
}

pub(super) fn parse_inputs(
    cx: &mut Cx,
    node: &YNode,
    default_queue: QueueSpec,
) -> Option<Vec<Input>> {
    let one = |cx: &mut Cx, n: &YNode| -> Option<Input> {
        match &n.value {
            YValue::Str(s) => Some(Input {
                stage: s.clone(),
                output: None, // split into stage.output during resolution
                queue: default_queue,
                delivery: None,
                mark: n.mark,
            }),
            YValue::Map(_) => {
                let m: InputMap = cx.parse(n)?;
                if let Some(q) = &m.queue {
                    check_queue(cx, q, n.mark);
                }
                Some(Input {
                    stage: m.stage,
                    output: Some(m.output.unwrap_or_default()),
                    queue: m.queue.unwrap_or(default_queue),
                    delivery: m.delivery,
                    mark: n.mark,
                })
            }
            _ => {
                cx.err(
                    n.mark,
                    format!(
                        "an input must be a stage name, `stage.output`, or {{stage, output, queue}}; found {}",
                        n.kind()
                    ),
                );
                None
            }
        }
    };
    match &node.value {
        YValue::Seq(items) => {
            if items.is_empty() {
                cx.err(node.mark, "`input` is an empty list");
                return None;
            }
            let v: Vec<Input> = items.iter().filter_map(|i| one(cx, i)).collect();
            (v.len() == items.len()).then_some(v)
        }
        // Beam's named inputs (`{left: a, right: b}`; `{}` is none): rill
        // reads them as one stream, as it reads a list
        YValue::Map(entries) if entries.iter().all(|(k, _)| k.as_str() != Some("stage")) => {
            let mut v = Vec::new();
            for (_, inp) in entries {
                match &inp.value {
                    YValue::Seq(items) => {
                        for i in items {
                            v.push(one(cx, i)?);
                        }
                    }
                    _ => v.push(one(cx, inp)?),
                }
            }
            Some(v)
        }
        _ => one(cx, node).map(|i| vec![i]),
    }
}

/// Resolves `stage.output` strings and checks every input names a stage and
/// an output it has.
pub(super) fn resolve(cx: &mut Cx, stages: &mut [Stage]) {
    let info: HashMap<String, (NodeKind, Vec<String>)> = stages
        .iter()
        .map(|s| (s.name.clone(), (s.kind, s.outputs.clone())))
        .collect();
    let names: Vec<String> = stages.iter().map(|s| s.name.clone()).collect();
    let types: HashMap<String, usize> = stages.iter().fold(HashMap::new(), |mut m, s| {
        *m.entry(s.type_name.clone()).or_default() += 1;
        m
    });
    let mut errors = Vec::new();
    for s in stages.iter_mut() {
        if s.kind == NodeKind::Source && !s.inputs.is_empty() {
            errors.push((
                s.inputs[0].mark,
                format!(
                    "`{}` is a source ({}) and takes no input",
                    s.name, s.type_name
                ),
            ));
            continue;
        }
        if s.kind != NodeKind::Source && s.inputs.is_empty() && s.serve.is_none() {
            errors.push((
                s.mark,
                format!(
                    "`{}` ({}) needs an `input`: the name of the transform it reads",
                    s.name, s.type_name
                ),
            ));
            continue;
        }
        for inp in &mut s.inputs {
            // "stage" / "stage.output" (from a string) or {stage, output} (map)
            let explicit = inp.output.take();
            let (stage, output) = match explicit {
                Some(o) => (inp.stage.clone(), (!o.is_empty()).then_some(o)),
                None if info.contains_key(&inp.stage) => (inp.stage.clone(), None),
                None => match inp.stage.rsplit_once('.') {
                    Some((st, o)) if info.contains_key(st) => (st.to_owned(), Some(o.to_owned())),
                    _ => (inp.stage.clone(), None),
                },
            };
            let Some((kind, outs)) = info.get(&stage) else {
                let hint = if types.get(&stage).is_some_and(|n| *n > 1) {
                    format!(" (there are several `{stage}` transforms: give each a `name`)")
                } else {
                    closest(&stage, names.iter().map(String::as_str))
                        .map(|c| format!(" (did you mean `{c}`?)"))
                        .unwrap_or_default()
                };
                errors.push((
                    inp.mark,
                    format!(
                        "input `{inp}` of `{}` names no transform{hint}; transforms are: {}",
                        s.name,
                        names.join(", ")
                    ),
                ));
                continue;
            };
            if stage == s.name {
                errors.push((inp.mark, format!("`{}` reads its own output", s.name)));
                continue;
            }
            match &output {
                None if *kind == NodeKind::Sink => {
                    errors.push((
                        inp.mark,
                        format!("`{stage}` is a sink and has no main output to read"),
                    ));
                    continue;
                }
                Some(o) if !outs.contains(o) => {
                    let avail = if outs.is_empty() {
                        "it has none".to_owned()
                    } else {
                        format!("it has: {}", outs.join(", "))
                    };
                    errors.push((
                        inp.mark,
                        format!("`{stage}` has no output named `{o}` ({avail})"),
                    ));
                    continue;
                }
                _ => {}
            }
            inp.stage = stage;
            inp.output = output;
        }
        if s.inputs.len() > 1 && !s.node.multiple_inputs() {
            errors.push((
                s.mark,
                format!("`{}` ({}) takes exactly one input", s.name, s.type_name),
            ));
        }
    }
    for (m, e) in errors {
        cx.err(m, e);
    }
}
