//! MLTransform's artifacts: one versioned JSON file, `mltransform.json`, in
//! the artifact folder, holding the transforms' config and what each
//! learned. Written to a temporary file, flushed to disk and renamed over
//! the old one, so a reader sees the old artifacts or the new, whole.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ops::Learned;

pub const FILE: &str = "mltransform.json";
pub const FORMAT: &str = "rill-mltransform";
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifacts {
    pub format: String,
    pub version: u32,
    /// The transforms, defaults filled in, as `[{type, config}]`.
    pub transforms: serde_json::Value,
    /// Rows analysed.
    pub rows: u64,
    /// Per transform, per column: what it learned.
    pub learned: Vec<BTreeMap<String, Learned>>,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Writes `a` to `dir/mltransform.json` atomically.
pub fn write(dir: &Path, a: &Artifacts) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{FILE}.tmp-{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        serde_json::to_writer_pretty(&mut f, a)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path(dir))?;
    // the rename itself is durable once the folder is
    std::fs::File::open(dir)?.sync_all()
}

/// Reads the artifacts in `dir`; the error says what is wrong with them.
pub fn read(dir: &Path) -> Result<Artifacts, String> {
    let p = path(dir);
    let text = std::fs::read_to_string(&p).map_err(|e| {
        format!(
            "{}: {e} (write them first with a pipeline whose MLTransform has `write_artifact_location`)",
            p.display()
        )
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", p.display()))?;
    if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(format!(
            "{}: not rill MLTransform artifacts (no `format: {FORMAT}`)",
            p.display()
        ));
    }
    let version = v.get("version").and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(VERSION)) {
        return Err(format!(
            "{}: artifacts of format version {version:?}; this rill reads version {VERSION}",
            p.display()
        ));
    }
    serde_json::from_value(v).map_err(|e| format!("{}: {e}", p.display()))
}

/// The first place where `ours` and `theirs` differ, as a path and both
/// values; `None` when equal.
pub fn diff(path: &str, theirs: &serde_json::Value, ours: &serde_json::Value) -> Option<String> {
    use serde_json::Value as J;
    match (theirs, ours) {
        (J::Object(a), J::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let (x, y) = (a.get(k).unwrap_or(&J::Null), b.get(k).unwrap_or(&J::Null));
                if let Some(d) = diff(&format!("{path}.{k}"), x, y) {
                    return Some(d);
                }
            }
            None
        }
        (J::Array(a), J::Array(b)) => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| diff(&format!("{path}[{i}]"), x, y))
            .or_else(|| {
                (a.len() != b.len()).then(|| {
                    format!(
                        "{path}: the artifacts have {} items, this pipeline {}",
                        a.len(),
                        b.len()
                    )
                })
            }),
        (a, b) if a == b => None,
        (a, b) => Some(format!("{path}: the artifacts have {a}, this pipeline {b}")),
    }
}
