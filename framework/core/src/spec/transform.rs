//! One transform entry: its keys, its `config` (parsed and validated by
//! the node type's registration), `error_handling`, `timeout`, `restart`
//! and `resources`.

use std::sync::Arc;

use super::inputs::parse_inputs;
use super::options::check_restart;
use super::*;
use crate::window::{WatermarkSpec, Windowing, WindowingSpec};
use crate::yaml::{YValue, YamlError};

const TRANSFORM_KEYS: &[&str] = &[
    "type",
    "name",
    "input",
    "config",
    "windowing",
    "watermark",
    "resources",
    "resource_hints",
    "placement",
    "restart",
    "timeout",
    "serve",
];

/// A transform entry before graph resolution.
pub(super) struct Raw<'a> {
    pub(super) node: &'a YNode,
    pub(super) name: Option<(String, Mark)>,
    pub(super) type_name: String,
    pub(super) type_mark: Mark,
    pub(super) inputs: Option<Vec<Input>>,
    pub(super) dyn_node: Option<Arc<dyn DynNode>>,
    pub(super) error_output: Option<String>,
    pub(super) retries: Retries,
    pub(super) error_threshold: Option<f64>,
    pub(super) timeout: Timeouts,
    pub(super) restart: RestartPolicy,
    pub(super) resources: Resources,
    pub(super) placement: Option<Placement>,
    pub(super) serve: Option<ServeSpec>,
    pub(super) windowing: Option<Windowing>,
    pub(super) watermark: Option<WatermarkSpec>,
}

pub(super) fn apply_hints(res: &mut Resources, hints: &ResourceHints) {
    if let Some(m) = hints.min_ram {
        res.memory = Some(m);
    }
    if hints.accelerator.is_some() {
        res.device = Device::Auto;
    }
    if let Some(c) = hints.cpu_count {
        res.cpu_threads = Some(c);
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn parse_transform<'a>(
    cx: &mut Cx,
    node: &'a YNode,
    registry: &Registry,
    chained: bool,
    default_queue: QueueSpec,
    default_restart: RestartPolicy,
    default_resources: Resources,
) -> Option<Raw<'a>> {
    if !cx.keys(node, "a transform", TRANSFORM_KEYS) {
        return None;
    }
    let Some(tnode) = node.get("type") else {
        cx.err(
            node.mark,
            "transform has no `type`: expected e.g. `type: MapToFields`",
        );
        return None;
    };
    let Some(type_name) = tnode.as_str().map(str::to_owned) else {
        cx.err(
            tnode.mark,
            format!("`type` must be a string, found {}", tnode.kind()),
        );
        return None;
    };
    let name = match node.get("name") {
        None => None,
        Some(n) => match &n.value {
            YValue::Str(s) if !s.trim().is_empty() => Some((s.clone(), n.mark)),
            YValue::Int(_) | YValue::Float(_) | YValue::Bool(_) => Some((n.key_text(), n.mark)),
            _ => {
                cx.err(n.mark, "`name` must be a non-empty string");
                None
            }
        },
    };

    let inputs = match node.get("input") {
        None => None,
        Some(i) => {
            if chained {
                cx.err(i.mark, "`input` is not allowed on transforms of a `type: chain` pipeline: each reads the one before (use `extra_transforms` for side branches)");
                return None;
            }
            Some(parse_inputs(cx, i, default_queue)?)
        }
    };

    // `WindowInto`'s own `windowing:` is its config (as Beam moves it)
    let window_into = type_name == "WindowInto";
    let windowing = match node.get("windowing") {
        Some(w) if !window_into => parse_windowing(cx, w),
        _ => None,
    };
    let watermark = node
        .get("watermark")
        .and_then(|w| cx.parse::<WatermarkSpec>(w));

    // `config` minus the generic `error_handling` goes to the node
    let empty = YNode::new(YValue::Map(Vec::new()), node.mark);
    let config = node.get("config").unwrap_or(&empty);
    let config = if config.is_null() { &empty } else { config };
    let mut error_output = None;
    let mut retries = Retries::default();
    let mut error_threshold = None;
    let node_config = match &config.value {
        YValue::Map(entries) => {
            let mut rest = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                if k.as_str() == Some("error_handling") {
                    if let Some(eh) = cx.parse::<ErrorHandling>(v) {
                        if eh.output.is_empty() || eh.output.contains('.') {
                            cx.err(
                                v.mark,
                                "error_handling `output` must be a non-empty name without dots",
                            );
                        }
                        if eh.retries.max > 100 {
                            cx.err(v.mark, "error_handling `retries.max` must be at most 100");
                        }
                        if let Some(t) = eh.threshold
                            && !(t > 0.0 && t <= 1.0)
                        {
                            cx.err(
                                v.mark,
                                format!("error_handling `threshold` must be in (0, 1], got {t}"),
                            );
                        }
                        error_output = Some(eh.output);
                        retries = eh.retries;
                        error_threshold = eh.threshold;
                    }
                } else {
                    rest.push((k.clone(), v.clone()));
                }
            }
            if window_into
                && let Some((k, w)) = node.entry("windowing")
                && !rest.iter().any(|(k, _)| k.as_str() == Some("windowing"))
            {
                rest.push((k.clone(), w.clone()));
            }
            YNode::new(YValue::Map(rest), config.mark)
        }
        _ => {
            cx.err(
                config.mark,
                format!("`config` must be a mapping, found {}", config.kind()),
            );
            return None;
        }
    };

    let dyn_node = match registry.parse(&type_name, &node_config) {
        Some(Ok(n)) => Some(n),
        Some(Err(e)) => {
            cx.yaml(
                YamlError {
                    msg: match &name {
                        Some((stage, _)) => {
                            format!("stage `{stage}` (`{type_name}`) config: {}", e.msg)
                        }
                        None => format!("in `{type_name}` config: {}", e.msg),
                    },
                    mark: e.mark,
                },
                config.mark,
            );
            None
        }
        None => {
            let hint = registry
                .suggest(&type_name)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            cx.err(
                tnode.mark,
                format!(
                    "unknown transform type `{type_name}`{hint}; known types: {}",
                    registry.names().collect::<Vec<_>>().join(", ")
                ),
            );
            None
        }
    };

    let mut timeout = Timeouts::default();
    if let Some(t) = node.get("timeout") {
        timeout = cx.parse(t).unwrap_or(timeout);
        if timeout.call.is_some_and(|d| d.is_zero()) || timeout.startup.is_zero() {
            cx.err(t.mark, "a `timeout` must be longer than zero");
        }
    }
    let mut restart = default_restart;
    if let Some(r) = node.get("restart") {
        restart = cx.parse(r).unwrap_or(restart);
        check_restart(cx, &restart, r.mark);
    }
    let mut resources = default_resources;
    if let Some(r) = node.get("resources") {
        resources = cx.parse(r).unwrap_or(resources);
    }
    if let Some(h) = node.get("resource_hints")
        && let Some(hints) = cx.parse::<ResourceHints>(h)
    {
        apply_hints(&mut resources, &hints);
    }
    let placement = node.get("placement").and_then(|p| cx.parse::<Placement>(p));
    let serve = node.get("serve").and_then(|s| {
        let spec = cx.parse::<ServeSpec>(s)?;
        if spec.http.is_none() && !spec.zenoh {
            cx.err(
                s.mark,
                "`serve` needs `http: HOST:PORT` (or `http: true`), `zenoh: true`, or both",
            );
        }
        if spec.queue == 0 {
            cx.err(s.mark, "`serve.queue` must be at least 1 row");
        }
        if !(spec.share > 0.0 && spec.share <= 1.0) {
            cx.err(
                s.mark,
                format!("`serve.share` must be in (0, 1], got {}", spec.share),
            );
        }
        if spec.timeout.0.is_zero() {
            cx.err(s.mark, "`serve.timeout` must be longer than zero");
        }
        if spec.max_body.0 == 0 {
            cx.err(s.mark, "`serve.max_body` must be more than 0 bytes");
        }
        if let Some(d) = &dyn_node
            && !d.serves()
        {
            cx.err(
                s.mark,
                format!(
                    "`{type_name}` does not answer requests: `serve` is for `RunInference` stages"
                ),
            );
        }
        Some(spec)
    });
    Some(Raw {
        node,
        name,
        type_name,
        type_mark: tnode.mark,
        inputs,
        dyn_node,
        error_output,
        retries,
        error_threshold,
        timeout,
        restart,
        resources,
        placement,
        serve,
        windowing,
        watermark,
    })
}

/// A `windowing:` mapping, checked; an error points at the key it is
/// about (`size: 0` at `size`).
pub(super) fn parse_windowing(cx: &mut Cx, node: &YNode) -> Option<Windowing> {
    let spec = cx.parse::<WindowingSpec>(node)?;
    match spec.check() {
        Ok(w) => Some(w),
        Err(e) => {
            let mark = crate::registry::mark_of_path(node, &e.path);
            cx.err(mark, format!("bad `windowing`: {}", e.message));
            None
        }
    }
}
