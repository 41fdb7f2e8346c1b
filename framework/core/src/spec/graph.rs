//! Graph passes: every named output is read, and the stages in an order
//! where producers come first (or the cycle that prevents it).

use std::collections::HashMap;

use super::{Cx, Stage};

/// Every named output (error outputs included) must be read by someone, as
/// in Beam: otherwise its records would be lost.
pub(super) fn check_outputs_read(cx: &mut Cx, stages: &[Stage]) {
    for s in stages {
        for o in &s.outputs {
            let read = stages.iter().any(|c| {
                c.inputs
                    .iter()
                    .any(|i| i.stage == s.name && i.output.as_deref() == Some(o))
            });
            if !read {
                let what = if s.error_output.as_deref() == Some(o) {
                    "error output"
                } else {
                    "output"
                };
                cx.err(
                    s.mark,
                    format!(
                        "{what} `{o}` of `{}` is read by no transform, so its records would be lost; add a transform with `input: {}.{o}` (e.g. WriteToJson)",
                        s.name, s.name
                    ),
                );
            }
        }
    }
}

/// Orders stages so every producer comes before its consumers; reports a
/// cycle with its path.
pub(super) fn topo_sort(cx: &mut Cx, stages: Vec<Stage>) -> Option<Vec<Stage>> {
    let index: HashMap<&str, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    // 0 = unvisited, 1 = on stack, 2 = done
    let mut state = vec![0u8; stages.len()];
    let mut order = Vec::with_capacity(stages.len());
    fn visit(
        i: usize,
        stages: &[Stage],
        index: &HashMap<&str, usize>,
        state: &mut [u8],
        order: &mut Vec<usize>,
        path: &mut Vec<usize>,
    ) -> Result<(), Vec<usize>> {
        match state[i] {
            2 => return Ok(()),
            1 => {
                let start = path.iter().position(|p| *p == i).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(i);
                return Err(cycle);
            }
            _ => {}
        }
        state[i] = 1;
        path.push(i);
        for inp in &stages[i].inputs {
            if let Some(&j) = index.get(inp.stage.as_str()) {
                visit(j, stages, index, state, order, path)?;
            }
        }
        path.pop();
        state[i] = 2;
        order.push(i);
        Ok(())
    }
    for i in 0..stages.len() {
        let mut path = Vec::new();
        if let Err(cycle) = visit(i, &stages, &index, &mut state, &mut order, &mut path) {
            let names: Vec<&str> = cycle
                .iter()
                .rev()
                .map(|&c| stages[c].name.as_str())
                .collect();
            cx.err(
                stages[cycle[0]].mark,
                format!(
                    "the transforms form a cycle: {}; a pipeline must be acyclic",
                    names.join(" -> ")
                ),
            );
            return None;
        }
    }
    let mut slots: Vec<Option<Stage>> = stages.into_iter().map(Some).collect();
    Some(order.into_iter().filter_map(|i| slots[i].take()).collect())
}
