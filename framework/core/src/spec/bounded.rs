//! The bounded-input pass: a stage that analyses its whole input before it
//! emits ([`crate::node::NodeConfig::needs_bounded_input`]) is refused when
//! a source upstream of it may never end.

use std::collections::HashMap;

use super::{Cx, Stage};
use crate::node::NodeKind;

/// Checks stages in topological order.
pub(super) fn check(cx: &mut Cx, stages: &[Stage]) {
    // the first unbounded source upstream of each stage
    let mut unbounded: HashMap<&str, &str> = HashMap::new();
    for s in stages {
        let from = if s.kind == NodeKind::Source && s.node.unbounded() {
            Some(s.name.as_str())
        } else {
            s.inputs
                .iter()
                .find_map(|i| unbounded.get(i.stage.as_str()).copied())
        };
        if let Some(src) = from {
            unbounded.insert(&s.name, src);
            if let Some(why) = s.node.needs_bounded_input() {
                cx.err(
                    s.mark,
                    format!(
                        "`{}` {why}, but its input never ends: the source `{src}` is unbounded (give it an end, e.g. `count` or `max_records`, or read the data from a file)",
                        s.name
                    ),
                );
            }
        }
    }
}
