//! Event time and windows: `AssignTimestamps`, `WindowInto` and
//! `ExtractWindowingInfo` (Beam YAML's names and configs).

use indexmap::IndexMap;
use rill_core::node::{
    BuildContext, ConfigError, Emitter, Node, NodeConfig, NodeError, NodeKind, Transform,
};
use rill_core::window::{Window, WindowFn, Windowing, WindowingSpec, parse_time};
use rill_core::{Record, Value};
use rill_expr::float_repr;
use rill_expr::spec::{Compiled, ExprSpec, check_language};
use serde::Deserialize;

/// `AssignTimestamps`: sets each record's event time from `timestamp` (a
/// field name, an expression or a callable): seconds since the epoch as an
/// int or a float (Beam's unit), or an ISO 8601 date-time string. Its
/// stage's watermark then follows the new event times (as a source's).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignTimestamps {
    pub timestamp: ExprSpec,
    pub language: Option<String>,
}

impl NodeConfig for AssignTimestamps {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }
    fn validate(&self) -> Result<(), ConfigError> {
        check_language(&self.language)?;
        self.timestamp.check("timestamp")
    }
    fn assigns_timestamps(&self) -> bool {
        true
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let timestamp = self
            .timestamp
            .compile("timestamp", ctx.base_dir)
            .map_err(NodeError::Failed)?;
        Ok(Node::Transform(Box::new(Stamp { timestamp })))
    }
}

struct Stamp {
    timestamp: Compiled,
}

/// A timestamp value as ms since the epoch.
pub(crate) fn to_millis(v: &Value) -> Result<i64, String> {
    let out_of_range = || format!("timestamp {v} is out of range");
    match v {
        Value::Int(s) => s.checked_mul(1000).ok_or_else(out_of_range),
        Value::Float(s) if s.is_finite() && s.abs() < 9.0e12 => Ok((s * 1000.0).round() as i64),
        Value::Float(_) => Err(out_of_range()),
        Value::String(s) => parse_time(s).ok_or_else(|| {
            format!("timestamp `{s}` is not an ISO 8601 date-time (e.g. 2024-03-01T12:00:00Z)")
        }),
        other => Err(format!(
            "a timestamp must be seconds since the epoch (int or float) or an ISO 8601 string, got {} {other}",
            other.type_name()
        )),
    }
}

impl Transform for Stamp {
    fn process(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        out.reserve(batch.len());
        for mut r in batch {
            match self.timestamp.eval(&r).and_then(|v| to_millis(&v)) {
                Ok(t) => {
                    r.event_time = t;
                    out.emit(r)
                }
                Err(e) => out.fail(r, format!("timestamp: {e}")),
            }
        }
        Ok(())
    }
}

/// `WindowInto`: puts records into the windows of `windowing` (the
/// aggregation downstream groups by them). Records pass unchanged, less
/// any window an earlier aggregation gave them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowInto {
    pub windowing: WindowingSpec,
}

impl NodeConfig for WindowInto {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }
    fn validate(&self) -> Result<(), ConfigError> {
        self.windowing
            .check()
            .map(|_| ())
            .map_err(|e| e.within("windowing"))
    }
    fn windowing(&self) -> Option<Windowing> {
        self.windowing.check().ok()
    }
    fn build(&self, _ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        Ok(Node::Transform(Box::new(Rewindow)))
    }
}

struct Rewindow;

impl Transform for Rewindow {
    fn process(&mut self, mut batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        out.reserve(batch.len());
        for mut r in batch.drain(..) {
            r.window = None;
            out.emit(r);
        }
        Ok(())
    }
}

/// What `ExtractWindowingInfo` can add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Info {
    Timestamp,
    WindowStart,
    WindowEnd,
    WindowString,
    WindowType,
}

const INFOS: &[(&str, Info)] = &[
    ("timestamp", Info::Timestamp),
    ("window_start", Info::WindowStart),
    ("window_end", Info::WindowEnd),
    ("window_string", Info::WindowString),
    ("window_type", Info::WindowType),
];

/// `fields:` of `ExtractWindowingInfo`: a list of what to add (each under
/// its own name) or a mapping of new field name to what it holds.
#[derive(Debug, Clone)]
pub struct InfoFields(IndexMap<String, String>);

impl<'de> Deserialize<'de> for InfoFields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            List(Vec<String>),
            Map(IndexMap<String, String>),
        }
        Ok(InfoFields(match Form::deserialize(d)? {
            Form::List(v) => v.into_iter().map(|f| (f.clone(), f)).collect(),
            Form::Map(m) => m,
        }))
    }
}

impl Default for InfoFields {
    fn default() -> Self {
        InfoFields(
            ["timestamp", "window_start", "window_end"]
                .into_iter()
                .map(|f| (f.to_owned(), f.to_owned()))
                .collect(),
        )
    }
}

/// `ExtractWindowingInfo`: adds a record's timestamp and window as fields
/// (seconds since the epoch as floats, and Beam's window string
/// `[7.0, 30.0)`). A record that is in several windows (sliding) comes
/// out once per window.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractWindowingInfo {
    #[serde(default)]
    pub fields: InfoFields,
}

impl ExtractWindowingInfo {
    fn infos(&self) -> Result<Vec<(String, Info)>, ConfigError> {
        self.fields
            .0
            .iter()
            .map(|(name, what)| {
                INFOS
                    .iter()
                    .find(|(n, _)| n == what)
                    .map(|(_, i)| (name.clone(), *i))
                    .ok_or_else(|| {
                        ConfigError::at(
                            "fields",
                            format!(
                                "unknown windowing info `{what}`; expected one of: {}",
                                INFOS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                            ),
                        )
                    })
            })
            .collect()
    }
}

impl NodeConfig for ExtractWindowingInfo {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }
    fn validate(&self) -> Result<(), ConfigError> {
        self.infos().map(|_| ())
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let infos = self.infos().map_err(|e| NodeError::failed(e.to_string()))?;
        Ok(Node::Transform(Box::new(InfoNode {
            infos,
            window_fn: ctx.windowing.window_fn,
            windows: Vec::new(),
        })))
    }
}

struct InfoNode {
    infos: Vec<(String, Info)>,
    window_fn: WindowFn,
    windows: Vec<Window>,
}

fn seconds(ms: i64) -> Value {
    Value::Float(ms as f64 / 1000.0)
}

/// Beam's string of a window: `[start, end)` in seconds, as Python prints
/// floats; `GlobalWindow` for the global one.
pub fn window_string(w: Option<Window>) -> String {
    match w {
        None => "GlobalWindow".to_owned(),
        Some(w) => format!(
            "[{}, {})",
            float_repr(w.start as f64 / 1000.0),
            float_repr(w.end as f64 / 1000.0)
        ),
    }
}

impl Transform for InfoNode {
    fn process(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        for r in batch {
            self.windows.clear();
            let windows: Vec<Option<Window>> = match r.window {
                Some(w) => vec![Some(w)],
                None => {
                    self.window_fn.assign(r.event_time, &mut self.windows);
                    if self.windows.is_empty() {
                        vec![None]
                    } else {
                        self.windows.iter().copied().map(Some).collect()
                    }
                }
            };
            for w in windows {
                let mut o = r.clone();
                o.window = w;
                for (name, info) in &self.infos {
                    let v = match (info, w) {
                        (Info::Timestamp, _) => seconds(r.event_time),
                        (Info::WindowStart, Some(w)) => seconds(w.start),
                        (Info::WindowEnd, Some(w)) => seconds(w.end),
                        (Info::WindowStart | Info::WindowEnd, None) => Value::Null,
                        (Info::WindowString, w) => Value::String(window_string(w).into()),
                        (Info::WindowType, Some(_)) => Value::from("IntervalWindow"),
                        (Info::WindowType, None) => Value::from("GlobalWindow"),
                    };
                    o.fields.insert(name.as_str().into(), v);
                }
                out.emit(o);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill_core::testkit::{build_yaml, build_yaml_windowed, run_transform};

    fn transform(node: Node) -> Box<dyn Transform> {
        match node {
            Node::Transform(t) => t,
            other => panic!("expected a transform, got {other:?}"),
        }
    }

    #[test]
    fn timestamps_from_seconds_floats_and_dates() {
        let reg = crate::registry();
        let dir = std::path::Path::new(".");
        let mut t = transform(build_yaml(&reg, "AssignTimestamps", "{timestamp: t}", dir).unwrap());
        let rows = vec![
            Record::default().with("t", 7),
            Record::default().with("t", 1.5),
            Record::default().with("t", "2024-03-01T00:00:00Z"),
            Record::default().with("t", "noon"),
            Record::default().with("t", true),
        ];
        let run = run_transform(t.as_mut(), vec![rows]).unwrap();
        let times: Vec<i64> = run.main.iter().map(|r| r.event_time).collect();
        assert_eq!(times, [7_000, 1_500, 1_709_251_200_000]);
        assert_eq!(run.failures.len(), 2);
        assert!(
            run.failures[0].msg.contains("ISO 8601"),
            "{}",
            run.failures[0].msg
        );
        assert!(
            run.failures[1].msg.contains("got bool"),
            "{}",
            run.failures[1].msg
        );
    }

    #[test]
    fn windowing_info_in_beams_forms() {
        let reg = crate::registry();
        let dir = std::path::Path::new(".");
        let sliding = WindowingSpec {
            kind: "sliding".into(),
            size: Some(rill_core::window::Secs(10_000)),
            period: Some(rill_core::window::Secs(5_000)),
            ..Default::default()
        }
        .check()
        .unwrap();
        let mut t = transform(
            build_yaml_windowed(
                &reg,
                "ExtractWindowingInfo",
                "{fields: [window_start, window_end, window_string, window_type]}",
                dir,
                &Default::default(),
                sliding,
            )
            .unwrap(),
        );
        let at_12s = Record::default().with("x", 1).with_time(12_000);
        let merged = Record {
            window: Some(Window {
                start: 7_000,
                end: 30_000,
            }),
            ..Record::default().with("x", 2)
        };
        let run = run_transform(t.as_mut(), vec![vec![at_12s, merged]]).unwrap();
        let strings: Vec<&str> = run
            .main
            .iter()
            .map(|r| r.get("window_string").unwrap().as_str().unwrap())
            .collect();
        // a sliding record is in two windows; an aggregate in its own
        assert_eq!(strings, ["[10.0, 20.0)", "[5.0, 15.0)", "[7.0, 30.0)"]);
        assert_eq!(run.main[2].get("window_end"), Some(&Value::Float(30.0)));
        assert_eq!(
            run.main[0].get("window_type").unwrap().as_str(),
            Some("IntervalWindow")
        );
        // the global window, and a mapping of names
        let mut t = transform(
            build_yaml(
                &reg,
                "ExtractWindowingInfo",
                "{fields: {ts: timestamp, w: window_string}}",
                dir,
            )
            .unwrap(),
        );
        let run =
            run_transform(t.as_mut(), vec![vec![Record::default().with_time(2_500)]]).unwrap();
        assert_eq!(run.main[0].get("ts"), Some(&Value::Float(2.5)));
        assert_eq!(run.main[0].get("w").unwrap().as_str(), Some("GlobalWindow"));
        let bad = build_yaml(&reg, "ExtractWindowingInfo", "{fields: [pane]}", dir).unwrap_err();
        assert!(bad.contains("unknown windowing info `pane`"), "{bad}");
    }
}
