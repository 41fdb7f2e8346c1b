//! The windowing pass: each stream's windowing strategy (as Beam's
//! belongs to a PCollection), and which stages send watermarks.
//!
//! A stage's input strategy is its own `windowing:` (a transform's puts
//! its input into windows again), else what its inputs carry, which must
//! agree (as Beam requires of a Flatten). Its output carries what its node
//! sets (`WindowInto`), else its input's; a source's output carries its
//! `windowing:`, else the global window.
//!
//! Watermarks cost a message per commit, so only the stages upstream of
//! one that acts on event time ([`crate::node::NodeConfig::uses_watermarks`])
//! send them.

use std::collections::HashMap;

use super::{Cx, Stage};
use crate::node::NodeKind;
use crate::window::{WindowFn, Windowing};

/// How a strategy reads in an error.
fn describe(w: &Windowing) -> String {
    use crate::window::Secs;
    match w.window_fn {
        WindowFn::Global => "global".to_owned(),
        WindowFn::Fixed { size, .. } => format!("fixed {}", Secs(size)),
        WindowFn::Sliding { size, period, .. } => {
            format!("sliding {} every {}", Secs(size), Secs(period))
        }
        WindowFn::Sessions { gap } => format!("sessions with gap {}", Secs(gap)),
    }
}

/// Sets [`Stage::windowing`] and [`Stage::sends_watermarks`] on stages in
/// topological order.
pub(super) fn resolve(cx: &mut Cx, stages: &mut [Stage]) {
    let mut out: HashMap<String, Windowing> = HashMap::new();
    for s in stages.iter_mut() {
        let mut inherited: Option<(Windowing, &str)> = None;
        for inp in &s.inputs {
            let Some(w) = out.get(&inp.stage) else {
                continue;
            };
            match inherited {
                None => inherited = Some((*w, inp.stage.as_str())),
                Some((first, from))
                    if first.window_fn != w.window_fn && s.windowing_key.is_none() =>
                {
                    cx.err(
                        s.mark,
                        format!(
                            "the inputs of `{}` are windowed differently (`{from}`: {}, `{}`: {}): put them into the same windows (a `windowing:` on `{}`, or WindowInto before it)",
                            s.name,
                            describe(&first),
                            inp.stage,
                            describe(w),
                            s.name
                        ),
                    );
                    break;
                }
                Some(_) => {}
            }
        }
        s.windowing = match (s.windowing_key, inherited) {
            (Some(w), _) => w,
            (None, Some((w, _))) => w,
            (None, None) => Windowing::global(),
        };
        let produced = s.node.windowing().unwrap_or(s.windowing);
        out.insert(s.name.clone(), produced);
    }
    // who needs watermarks: a stage that acts on event time, and every
    // stage upstream of one (reverse topological order)
    let mut needs: HashMap<String, bool> = HashMap::new();
    for i in (0..stages.len()).rev() {
        let name = stages[i].name.clone();
        let downstream = stages[i + 1..].iter().any(|c| {
            c.inputs.iter().any(|inp| inp.stage == name)
                && (needs.get(&c.name).copied().unwrap_or(false))
        });
        let own = stages[i].kind == NodeKind::Transform && stages[i].node.uses_watermarks();
        stages[i].sends_watermarks = downstream;
        needs.insert(name, own || downstream);
    }
}
