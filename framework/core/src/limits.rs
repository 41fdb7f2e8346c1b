//! The limits rill puts on what comes from outside (files, the network, a
//! pipeline file), so hostile or broken input gets a clear error instead of
//! exhausting the stack or the memory.
//!
//! | limit | default | environment variable |
//! | --- | --- | --- |
//! | nesting of lists and maps in a record (wire, JSON, YAML) | 128 | `RILL_MAX_DEPTH` |
//! | nodes a pipeline file's YAML aliases may expand to | 100,000 | `RILL_YAML_MAX_ALIAS_NODES` |
//! | bytes of one message received over Zenoh | 64 MiB | `RILL_MAX_MESSAGE_BYTES` |
//! | bytes of one line of a JSON Lines file | 16 MiB | `RILL_MAX_LINE_BYTES` |
//!
//! Each is read once per process; a value that does not parse is ignored
//! (with the default kept). See `docs/when-things-fail.md#hostile-input`.

use std::cell::Cell;
use std::sync::OnceLock;

/// The limits in force in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_depth: usize,
    pub yaml_max_alias_nodes: usize,
    pub max_message_bytes: usize,
    pub max_line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_depth: 128,
            yaml_max_alias_nodes: 100_000,
            max_message_bytes: 64 << 20,
            max_line_bytes: 16 << 20,
        }
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse().ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

/// The limits of this process: the defaults, or the environment's.
pub fn get() -> Limits {
    static L: OnceLock<Limits> = OnceLock::new();
    *L.get_or_init(|| {
        let d = Limits::default();
        Limits {
            max_depth: env("RILL_MAX_DEPTH", d.max_depth),
            yaml_max_alias_nodes: env("RILL_YAML_MAX_ALIAS_NODES", d.yaml_max_alias_nodes),
            max_message_bytes: env("RILL_MAX_MESSAGE_BYTES", d.max_message_bytes),
            max_line_bytes: env("RILL_MAX_LINE_BYTES", d.max_line_bytes),
        }
    })
}

thread_local! {
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    /// The last limit a decoder on this thread ran into (some decoders,
    /// postcard's, lose the message of a custom error).
    static HIT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Takes the message of the last limit hit on this thread, if any.
pub fn take_hit() -> Option<String> {
    HIT.with(|h| h.borrow_mut().take())
}

/// Held while a list or map is being decoded: at most
/// [`Limits::max_depth`] at once on a thread.
pub struct DepthGuard(());

impl DepthGuard {
    /// Enters one more level of nesting, or says it is too deep.
    pub fn enter() -> Result<DepthGuard, String> {
        let max = get().max_depth;
        DEPTH.with(|d| {
            if d.get() >= max {
                let msg = format!(
                    "lists and maps nested deeper than {max} levels (the limit; RILL_MAX_DEPTH sets another)"
                );
                HIT.with(|h| *h.borrow_mut() = Some(msg.clone()));
                return Err(msg);
            }
            d.set(d.get() + 1);
            Ok(DepthGuard(()))
        })
    }
}

impl Drop for DepthGuard {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_counts_levels_and_lets_go() {
        let max = get().max_depth;
        let mut held = Vec::new();
        for _ in 0..max {
            held.push(DepthGuard::enter().unwrap());
        }
        let e = DepthGuard::enter().err().unwrap();
        assert!(e.contains("RILL_MAX_DEPTH"), "{e}");
        held.pop();
        assert!(DepthGuard::enter().is_ok());
    }
}
