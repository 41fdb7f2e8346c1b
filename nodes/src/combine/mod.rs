//! `Combine`: Beam YAML's grouped aggregation, per window.
//!
//! ```yaml
//! - type: Combine
//!   windowing: {type: fixed, size: 60s}
//!   config:
//!     group_by: device
//!     combine:
//!       readings: {value: temp, fn: count}
//!       mean_temp: {value: temp, fn: mean}
//!       max_temp: max            # shorthand: value = the output's name
//! ```
//!
//! Each (window, group) has one accumulator per output field. They live in
//! the stage's keyed state, which the runtime commits with the input
//! positions: a crash at any moment neither loses nor counts twice an
//! input. The most recently used groups are kept in memory (`state_cache`
//! of them); the rest are in the store, so a million keys do not need a
//! million accumulators in RAM.
//!
//! A window fires when the stage's watermark passes its end (the global
//! window when its input ends). With `allowed_lateness` it takes late
//! records until the watermark passes its end plus that, and fires again
//! with the updated result for each batch of them; records later than that
//! go to `late_output` (when set) and are counted. With `trigger.early` it
//! also fires before the watermark, on processing time. When a window can
//! fire more than once, each result row carries `pane_timing` (`EARLY`,
//! `ON_TIME`, `LATE`) and `pane_index`.

mod fns;

use std::collections::{BTreeMap, BTreeSet};

/// Hash maps with a fast hasher (keys are the node's own encodings).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::time::Instant;

use indexmap::IndexMap;
use rill_core::node::{
    BuildContext, ConfigError, Emitter, Node, NodeConfig, NodeError, NodeKind, Transform,
};
use rill_core::state::KeyedState;
use rill_core::window::{BEFORE_TIME, END_OF_TIME, Window, WindowFn, Windowing};
use rill_core::{Fields, Name, Record, Value, codec};
use rill_expr::spec::{Compiled, ExprSpec, check_language};
use serde::{Deserialize, Serialize};

pub use fns::{Acc, CombineFn, FnSpec, compare};

/// `group_by`: a field, a list of fields, or `[]` (one group).
pub type GroupBy = crate::mapping::Names;

/// One output of `combine`: a fn name (the value is the field of the
/// output's name), or `{value, fn}`.
#[derive(Debug, Clone)]
pub struct AggSpec {
    pub value: Option<ExprSpec>,
    pub fun: FnSpec,
}

impl<'de> Deserialize<'de> for AggSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Long {
            value: Option<ExprSpec>,
            #[serde(rename = "fn")]
            fun: FnSpec,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Short(String),
            Long(Long),
        }
        Ok(match Form::deserialize(d)? {
            Form::Short(s) => AggSpec {
                value: None,
                fun: FnSpec::Name(s),
            },
            Form::Long(l) => AggSpec {
                value: l.value,
                fun: l.fun,
            },
        })
    }
}

/// `Combine`'s config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Combine {
    #[serde(default)]
    pub group_by: GroupBy,
    pub combine: IndexMap<String, AggSpec>,
    pub language: Option<String>,
    /// Where records too late for their window go (a named output).
    pub late_output: Option<String>,
    /// Groups kept in memory (default 50,000); the rest wait in the store.
    pub state_cache: Option<usize>,
}

const DEFAULT_CACHE: usize = 50_000;

impl Combine {
    fn python(&self) -> bool {
        self.language.as_deref() == Some("python")
    }

    fn resolve(&self) -> Result<Vec<(Name, Option<ExprSpec>, CombineFn)>, ConfigError> {
        self.combine
            .iter()
            .map(|(dest, agg)| {
                let f = agg
                    .fun
                    .resolve(self.python())
                    .map_err(|m| ConfigError::at_path(["combine", dest.as_str(), "fn"], m))?;
                Ok((Name::from(dest.as_str()), agg.value.clone(), f))
            })
            .collect()
    }
}

impl NodeConfig for Combine {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }
    fn validate(&self) -> Result<(), ConfigError> {
        check_language(&self.language)?;
        if self.combine.is_empty() {
            return Err(ConfigError::at(
                "combine",
                "`combine` is empty: name at least one output, e.g. `total: {value: amount, fn: sum}`",
            ));
        }
        for (dest, agg) in &self.combine {
            if self.group_by.0.contains(dest) {
                return Err(ConfigError::at_path(
                    ["combine", dest.as_str()],
                    format!("`{dest}` is also a `group_by` field: name the output otherwise"),
                ));
            }
            if let Some(v) = &agg.value {
                v.check("value").map_err(|e| {
                    ConfigError::at_path(["combine", dest.as_str(), "value"], e.message)
                })?;
            }
        }
        let mut seen = BTreeSet::new();
        for (i, g) in self.group_by.0.iter().enumerate() {
            if !seen.insert(g) {
                return Err(ConfigError::at_path(
                    ["group_by".to_owned(), i.to_string()],
                    format!("`{g}` is named twice in `group_by`"),
                ));
            }
        }
        if self.state_cache == Some(0) {
            return Err(ConfigError::at(
                "state_cache",
                "`state_cache` must be at least 1",
            ));
        }
        if let Some(l) = &self.late_output
            && (l.is_empty() || l.contains('.'))
        {
            return Err(ConfigError::at(
                "late_output",
                "`late_output` must be a non-empty name without dots",
            ));
        }
        self.resolve().map(|_| ())
    }
    fn outputs(&self) -> Vec<String> {
        self.late_output.iter().cloned().collect()
    }
    fn uses_watermarks(&self) -> bool {
        true
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let aggs = self
            .resolve()
            .map_err(|e| NodeError::failed(e.to_string()))?
            .into_iter()
            .map(|(dest, value, f)| {
                let field = match &value {
                    None => Some(dest.clone()),
                    Some(v) => bare_field(v),
                };
                let value = match (value, &field) {
                    (Some(v), None) => Some(
                        v.compile("value", ctx.base_dir)
                            .map_err(NodeError::Failed)?,
                    ),
                    _ => None,
                };
                Ok(Agg {
                    dest,
                    value,
                    field,
                    f,
                })
            })
            .collect::<Result<Vec<_>, NodeError>>()?;
        let mut node = CombineNode {
            group_by: self
                .group_by
                .0
                .iter()
                .map(|g| Name::from(g.as_str()))
                .collect(),
            aggs,
            windowing: ctx.windowing,
            late_output: self.late_output.clone(),
            cache: self.state_cache.unwrap_or(DEFAULT_CACHE),
            state: ctx.state.clone(),
            metrics: ctx.metrics.clone(),
            watermark: BEFORE_TIME,
            hot: HashMap::default(),
            hot_len: 0,
            windows: BTreeMap::new(),
            windows_dirty: false,
            session_ends: BTreeSet::new(),
            late_due: BTreeSet::new(),
            last_early: Instant::now(),
            assigned: Vec::new(),
            late: 0,
            firing: None,
            partial: BTreeSet::new(),
            firing_keys: Vec::new(),
            gk_buf: Vec::new(),
            key_buf: Vec::new(),
            val_buf: Vec::new(),
            deltas: HashMap::default(),
            delta_seq: 0,
        };
        node.load()?;
        Ok(Node::Transform(Box::new(node)))
    }
}

struct Agg {
    dest: Name,
    value: Option<Compiled>,
    /// The value is a field, read without the evaluator (no `value`, or
    /// a `value` that is a bare field name).
    field: Option<Name>,
    f: CombineFn,
}

/// Adds one record's values to a group: to all of its outputs, or (when
/// one cannot take its value) to none.
fn add_values(aggs: &[Agg], g: &mut Group, values: &[Value], t: i64) -> Result<(), String> {
    if aggs.len() > 1 {
        for ((agg, acc), v) in aggs.iter().zip(&g.accs).zip(values) {
            agg.f.check(acc, v)?;
        }
    }
    for ((agg, acc), v) in aggs.iter().zip(g.accs.iter_mut()).zip(values) {
        agg.f.add(acc, v.clone())?;
    }
    g.max_time = g.max_time.max(t);
    g.changed = true;
    Ok(())
}

/// A `value` that is just a field name.
fn bare_field(spec: &ExprSpec) -> Option<Name> {
    let ExprSpec::Text(s) = spec else {
        return None;
    };
    let s = s.trim();
    let ident = s
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_alphanumeric() || c == '_');
    (ident && !matches!(s, "True" | "False" | "None")).then(|| Name::from(s))
}

/// One group's accumulators in one window.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Group {
    key: Vec<Value>,
    window: Window,
    accs: Vec<Acc>,
    /// Latest event time added (stamps a global window's result).
    max_time: i64,
    /// Results emitted so far.
    panes: u32,
    /// New input since the last result.
    changed: bool,
    /// Its on-time result is out (a window fired in parts, then restarted,
    /// does not fire it again).
    on_time: bool,
}

/// A group of a fixed, sliding or global window as the state holds it:
/// its key and window are in the state key, so not again in the value.
#[derive(Serialize)]
struct StoredRef<'a> {
    accs: &'a [Acc],
    max_time: i64,
    panes: u32,
    changed: bool,
    on_time: bool,
}

/// [`StoredRef`], read back.
#[derive(Deserialize)]
struct Stored {
    accs: Vec<Acc>,
    max_time: i64,
    panes: u32,
    changed: bool,
    on_time: bool,
}

impl Group {
    fn stored(&self) -> StoredRef<'_> {
        StoredRef {
            accs: &self.accs,
            max_time: self.max_time,
            panes: self.panes,
            changed: self.changed,
            on_time: self.on_time,
        }
    }

    fn encode_stored(&self) -> Result<Vec<u8>, NodeError> {
        codec::encode(&self.stored()).map_err(state_err)
    }

    /// Group `gk` of window `w` from what [`StoredRef`] wrote.
    fn from_stored(s: Stored, w: Window, gk: &[u8]) -> Result<Group, NodeError> {
        Ok(Group {
            key: postcard::from_bytes(gk).map_err(state_err)?,
            window: w,
            accs: s.accs,
            max_time: s.max_time,
            panes: s.panes,
            changed: s.changed,
            on_time: s.on_time,
        })
    }

    fn decode_stored(bytes: &[u8], w: Window, gk: &[u8]) -> Result<Group, NodeError> {
        Group::from_stored(codec::decode(bytes).map_err(state_err)?, w, gk)
    }
}

/// A cached group, and whether the store lacks its latest state.
struct Hot {
    group: Group,
    /// Changed since it was last written.
    dirty: bool,
    /// Its last written version is in a delta record, not under its own
    /// key.
    in_delta: bool,
    /// It may have a key of its own in the state.
    stored: bool,
}

impl Hot {
    fn new(group: Group) -> Hot {
        Hot {
            group,
            dirty: true,
            in_delta: false,
            stored: false,
        }
    }
}

/// Delta records a window may have before the next takes the place of
/// them all (compaction: it holds every group whose latest version is in
/// one of them, so a restart reads at most this many per window).
const MAX_DELTAS: usize = 16;

/// The layout of the node's state: 2 stores a group's accumulators
/// without its key and window ([`StoredRef`]).
const STATE_FORMAT: u8 = 2;

/// The global window, as a key.
const GLOBAL: Window = Window {
    start: BEFORE_TIME,
    end: END_OF_TIME,
};

/// Keys in the keyed state:
/// - `w` + window + group: a group of a fixed, sliding or global window;
/// - `k` + group: the sessions of a group (a list of [`Group`]s);
/// - `m/windows`: the open windows and whether each fired on time;
/// - `m/wm`: the watermark the node had;
/// - `m/format`: [`STATE_FORMAT`], with `m/windows`;
/// - `d` + window + number: a delta record (the groups of a window that
///   changed in one commit, newest last).
fn window_prefix(w: Window) -> Vec<u8> {
    let mut k = Vec::with_capacity(17 + 16);
    k.push(b'w');
    // big-endian with the sign flipped sorts as the numbers do
    k.extend_from_slice(&((w.end as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(&((w.start as u64) ^ (1 << 63)).to_be_bytes());
    k
}

/// The state key of group `gk` of window `w`.
fn state_key(w: Window, gk: &[u8]) -> Vec<u8> {
    let mut k = window_prefix(w);
    k.extend_from_slice(gk);
    k
}

/// The key of delta record `seq` of window `w`: `d` + window + number.
fn delta_key(w: Window, seq: u64) -> Vec<u8> {
    let mut k = window_prefix(w);
    k[0] = b'd';
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The window and group of a state key made by [`state_key`].
fn split_state_key(k: &[u8]) -> (Window, &[u8]) {
    let num = |b: &[u8]| (u64::from_be_bytes(b.try_into().expect("8 bytes")) ^ (1 << 63)) as i64;
    (
        Window {
            end: num(&k[1..9]),
            start: num(&k[9..17]),
        },
        &k[17..],
    )
}

fn group_bytes(key: &[Value]) -> Result<Vec<u8>, String> {
    postcard::to_stdvec(key).map_err(|e| format!("cannot encode the group key: {e}"))
}

struct CombineNode {
    group_by: Vec<Name>,
    aggs: Vec<Agg>,
    windowing: Windowing,
    late_output: Option<String>,
    cache: usize,
    state: KeyedState,
    metrics: std::sync::Arc<rill_core::metrics::NodeMetrics>,
    watermark: i64,
    /// Recently used groups (fixed, sliding, global windows), by window
    /// and encoded group key.
    hot: HashMap<Window, HashMap<Vec<u8>, Hot>>,
    /// Groups in `hot`.
    hot_len: usize,
    /// Open windows, and whether each fired on time.
    windows: BTreeMap<Window, bool>,
    windows_dirty: bool,
    /// Sessions: (end, group bytes) of every open session.
    session_ends: BTreeSet<(i64, Vec<u8>)>,
    /// State keys of groups that took late records since the last batch.
    late_due: BTreeSet<Vec<u8>>,
    last_early: Instant,
    assigned: Vec<Window>,
    /// Records too late for their window, in this incarnation.
    late: u64,
    /// A window being fired: where its next page of groups in the state
    /// starts (`None`: it fires from the cache, which holds it whole).
    firing: Option<(Window, Option<Vec<u8>>)>,
    /// Windows some of whose groups may be only in the state (the cache
    /// let them go, or the node was rebuilt): they fire from the state.
    partial: BTreeSet<Window>,
    /// The keys of the groups a firing from the cache has still to fire,
    /// last first.
    firing_keys: Vec<Vec<u8>>,
    /// The encoded group key, the key and the values of the record at
    /// hand (kept to save allocations).
    gk_buf: Vec<u8>,
    key_buf: Vec<Value>,
    val_buf: Vec<Value>,
    /// Each window's delta records (their numbers), and the last number.
    deltas: HashMap<Window, Vec<u64>>,
    delta_seq: u64,
}

/// Most groups [`CombineNode::advance`] fires (or drops) in one call: what
/// a window's firing holds in memory at once, however many keys it has.
const FIRE_CHUNK: usize = 4096;

fn state_err(e: impl std::fmt::Display) -> NodeError {
    NodeError::failed(format!("Combine state: {e}"))
}

impl CombineNode {
    fn sessions(&self) -> bool {
        self.windowing.window_fn.merges()
    }

    /// Restores the open windows and the watermark from the state.
    fn load(&mut self) -> Result<(), NodeError> {
        if let Some(b) = self.state.get(b"m/windows")? {
            let format = self.state.get(b"m/format")?;
            if format.as_deref() != Some(&[STATE_FORMAT][..]) {
                return Err(NodeError::failed(format!(
                    "Combine state: written by another version of rill (format {:?}, this one reads {STATE_FORMAT}); run again with --reset-state",
                    format.as_deref().and_then(|f| f.first())
                )));
            }
            let v: Vec<(Window, bool)> = codec::decode(&b).map_err(state_err)?;
            self.windows = v.into_iter().collect();
            // a rebuilt node's cache is empty: its windows are in the state
            self.partial = self.windows.keys().copied().collect();
        }
        if let Some(b) = self.state.get(b"m/wm")? {
            self.watermark = codec::decode(&b).map_err(state_err)?;
        }
        // the groups written in delta records since their window's last
        // compaction: in key order, so the last seen is the newest
        for (k, v) in self.state.scan(b"d")? {
            let (w, rest) = split_state_key(&k);
            let seq = u64::from_be_bytes(
                rest.try_into()
                    .map_err(|_| state_err("a malformed delta key"))?,
            );
            let groups: Vec<(Vec<u8>, Stored)> = codec::decode(&v).map_err(state_err)?;
            let m = self.hot.entry(w).or_default();
            for (gk, s) in groups {
                let group = Group::from_stored(s, w, &gk)?;
                let fresh = m
                    .insert(
                        gk,
                        Hot {
                            group,
                            dirty: false,
                            in_delta: true,
                            stored: true,
                        },
                    )
                    .is_none();
                self.hot_len += usize::from(fresh);
            }
            self.deltas.entry(w).or_default().push(seq);
            self.delta_seq = self.delta_seq.max(seq);
        }
        if self.sessions() {
            for (k, v) in self.state.scan(b"k")? {
                let groups: Vec<Group> = codec::decode(&v).map_err(state_err)?;
                for g in groups {
                    self.session_ends.insert((g.window.end, k[1..].to_vec()));
                }
            }
        }
        Ok(())
    }

    fn lateness(&self) -> i64 {
        self.windowing.allowed_lateness
    }

    /// Whether a window still takes records at the current watermark.
    fn open(&self, w: Window) -> bool {
        w.end == END_OF_TIME || w.end.saturating_add(self.lateness()) > self.watermark
    }

    /// Writes the cached groups of `w` whose latest version is not under
    /// their own key there, and drops the window's delta records.
    fn persist_window(&mut self, w: Window) -> Result<(), NodeError> {
        if let Some(m) = self.hot.get_mut(&w) {
            for (gk, h) in m.iter_mut() {
                if h.dirty || h.in_delta {
                    self.state.put(&state_key(w, gk), h.group.encode_stored()?);
                    h.dirty = false;
                    h.in_delta = false;
                    h.stored = true;
                }
            }
        }
        self.drop_deltas(w);
        Ok(())
    }

    fn drop_deltas(&mut self, w: Window) {
        for seq in self.deltas.remove(&w).unwrap_or_default() {
            self.state.delete(&delta_key(w, seq));
        }
    }

    /// A durable commit: the groups of each window that changed since the
    /// last go into one delta record (one write, however many groups); a
    /// window's delta after [`MAX_DELTAS`] others replaces them, holding
    /// every group they held (compaction, still one write). A window too
    /// large for deltas to pay writes its changed groups under their own
    /// keys at once.
    fn write_deltas(&mut self) -> Result<(), NodeError> {
        let windows: Vec<Window> = self.hot.keys().copied().collect();
        for w in windows {
            // a window with more groups than a quarter of the cache churns
            // through it: its groups go under their own keys, as deltas
            // would be compacted before they were read twice
            if self.hot.get(&w).is_some_and(|m| m.len() > self.cache / 4) {
                self.persist_window(w)?;
                continue;
            }
            let Some(m) = self.hot.get_mut(&w) else {
                continue;
            };
            // past MAX_DELTAS, one record takes the place of them all:
            // every group whose latest version is in a delta, or changed
            let merge = self.deltas.get(&w).is_some_and(|d| d.len() >= MAX_DELTAS);
            let mut changed: Vec<(&Vec<u8>, StoredRef<'_>)> = m
                .iter()
                .filter(|(_, h)| h.dirty || (merge && h.in_delta))
                .map(|(gk, h)| (gk, h.group.stored()))
                .collect();
            if changed.is_empty() {
                continue;
            }
            // in key order: a run writes the same bytes however it hashed
            changed.sort_unstable_by(|a, b| a.0.cmp(b.0));
            let bytes = codec::encode(&changed).map_err(state_err)?;
            for h in m.values_mut() {
                if h.dirty {
                    h.dirty = false;
                    h.in_delta = true;
                }
            }
            if merge {
                self.drop_deltas(w);
            }
            self.delta_seq += 1;
            self.state.put(&delta_key(w, self.delta_seq), bytes);
            self.deltas.entry(w).or_default().push(self.delta_seq);
        }
        Ok(())
    }

    /// The cache past its size: every group written under its own key,
    /// and the cache emptied.
    fn evict(&mut self) -> Result<(), NodeError> {
        let windows: Vec<Window> = self.hot.keys().copied().collect();
        for w in windows {
            self.persist_window(w)?;
        }
        self.partial.extend(self.hot.keys().copied());
        self.hot.clear();
        self.hot_len = 0;
        Ok(())
    }

    fn add_to(&self, g: &mut Group, values: &[Value], t: i64) -> Result<(), String> {
        add_values(&self.aggs, g, values, t)
    }

    /// The result row of a group.
    fn result(&self, g: &Group, timing: &str) -> Result<Record, String> {
        let mut fields = Fields::default();
        for (name, v) in self.group_by.iter().zip(&g.key) {
            fields.insert(name.clone(), v.clone());
        }
        for (agg, acc) in self.aggs.iter().zip(&g.accs) {
            let v = agg
                .f
                .extract(acc)
                .map_err(|e| format!("`{}`: {e}", agg.dest))?;
            fields.insert(agg.dest.clone(), v);
        }
        if self.windowing.has_panes() {
            fields.insert("pane_timing".into(), Value::from(timing));
            fields.insert("pane_index".into(), Value::Int(g.panes.into()));
        }
        let global = g.window == GLOBAL;
        Ok(Record {
            key: None,
            event_time: if global {
                g.max_time
            } else {
                g.window.max_timestamp()
            },
            fields,
            window: (!global).then_some(g.window),
        })
    }

    /// Emits a group's result (a failed extraction is a failed record
    /// holding the group's key).
    fn fire(&self, g: &mut Group, timing: &str, out: &mut Emitter) {
        match self.result(g, timing) {
            Ok(r) => out.emit(r),
            Err(e) => {
                let mut fields = Fields::default();
                for (name, v) in self.group_by.iter().zip(&g.key) {
                    fields.insert(name.clone(), v.clone());
                }
                out.fail(Record::new(fields).with_time(g.window.max_timestamp()), e)
            }
        }
        g.panes += 1;
        g.changed = false;
    }

    fn too_late(&mut self, r: Record, out: &mut Emitter) {
        self.metrics.count("late_records", 1);
        self.late += 1;
        match &self.late_output {
            Some(o) => out.emit_to(o, r),
            None => {
                let n = self.late;
                if n.is_power_of_two() {
                    tracing::warn!(
                        late_records = n,
                        "Combine: a record came after its window closed (event time {}, watermark {}); set `late_output` to keep such records, or raise `allowed_lateness`",
                        rill_core::window::format_time(r.event_time),
                        rill_core::window::format_time(self.watermark)
                    );
                }
            }
        }
    }

    fn add_windowed(
        &mut self,
        r: &Record,
        key: &[Value],
        values: &[Value],
        windows: &[Window],
    ) -> Result<bool, NodeError> {
        let mut gk = std::mem::take(&mut self.gk_buf);
        gk.clear();
        let gk = postcard::to_extend(key, gk)
            .map_err(|e| NodeError::failed(format!("cannot encode the group key: {e}")))?;
        let mut took = false;
        let record_err = |e: String| NodeError::Record {
            msg: e,
            record: Some(Box::new(r.clone())),
        };
        for &w in windows {
            if !self.open(w) {
                continue;
            }
            took = true;
            // one lookup for a cached group; the state, then a new group
            let m = self.hot.entry(w).or_default();
            if let Some(h) = m.get_mut(gk.as_slice()) {
                h.dirty = true;
                add_values(&self.aggs, &mut h.group, values, r.event_time).map_err(record_err)?;
            } else {
                let (mut group, stored) = match self.state.get(&state_key(w, &gk))? {
                    Some(b) => (Group::decode_stored(&b, w, &gk)?, true),
                    None => {
                        if let std::collections::btree_map::Entry::Vacant(e) = self.windows.entry(w)
                        {
                            e.insert(false);
                            self.windows_dirty = true;
                        }
                        let group = Group {
                            key: key.to_vec(),
                            window: w,
                            accs: self.aggs.iter().map(|a| a.f.zero()).collect(),
                            max_time: BEFORE_TIME,
                            panes: 0,
                            changed: false,
                            on_time: false,
                        };
                        (group, false)
                    }
                };
                let added = add_values(&self.aggs, &mut group, values, r.event_time);
                m.insert(
                    gk.clone(),
                    Hot {
                        stored,
                        ..Hot::new(group)
                    },
                );
                self.hot_len += 1;
                added.map_err(record_err)?;
            }
            // (a window that fired on time ended at or before the watermark)
            if w.end <= self.watermark && self.windows.get(&w) == Some(&true) {
                // a late pane follows
                self.late_due.insert(state_key(w, &gk));
            }
        }
        self.gk_buf = gk;
        Ok(took)
    }

    fn add_session(
        &mut self,
        r: &Record,
        key: &[Value],
        values: &[Value],
    ) -> Result<bool, NodeError> {
        let WindowFn::Sessions { gap } = self.windowing.window_fn else {
            return Ok(false);
        };
        let proto = r.window.unwrap_or(Window {
            start: r.event_time,
            end: r.event_time.saturating_add(gap),
        });
        if !self.open(proto) {
            return Ok(false);
        }
        let gk = group_bytes(key).map_err(NodeError::Failed)?;
        let mut skey = b"k".to_vec();
        skey.extend_from_slice(&gk);
        let mut groups: Vec<Group> = match self.state.get(&skey)? {
            Some(b) => codec::decode(&b).map_err(state_err)?,
            None => Vec::new(),
        };
        let mut merged = Group {
            key: key.to_vec(),
            window: proto,
            accs: self.aggs.iter().map(|a| a.f.zero()).collect(),
            max_time: BEFORE_TIME,
            panes: 0,
            changed: false,
            on_time: false,
        };
        self.add_to(&mut merged, values, r.event_time)
            .map_err(|e| NodeError::Record {
                msg: e,
                record: Some(Box::new(r.clone())),
            })?;
        // sessions that overlap the new one (strictly, as Beam merges) join it
        let mut keep = Vec::with_capacity(groups.len());
        for g in groups.drain(..) {
            if g.window.start < merged.window.end && merged.window.start < g.window.end {
                self.session_ends.remove(&(g.window.end, gk.clone()));
                merged.window = Window {
                    start: merged.window.start.min(g.window.start),
                    end: merged.window.end.max(g.window.end),
                };
                for ((agg, acc), other) in self.aggs.iter().zip(merged.accs.iter_mut()).zip(g.accs)
                {
                    agg.f.merge(acc, other).map_err(NodeError::Failed)?;
                }
                merged.max_time = merged.max_time.max(g.max_time);
                merged.panes = merged.panes.max(g.panes);
            } else {
                keep.push(g);
            }
        }
        let late = merged.window.end <= self.watermark;
        self.session_ends.insert((merged.window.end, gk.clone()));
        keep.push(merged);
        keep.sort_by_key(|g| g.window);
        self.state
            .put(&skey, codec::encode(&keep).map_err(state_err)?);
        if late {
            self.late_due.insert(skey);
        }
        Ok(true)
    }

    /// Emits late panes for the groups that took late records.
    fn fire_late(&mut self, out: &mut Emitter) -> Result<(), NodeError> {
        for skey in std::mem::take(&mut self.late_due) {
            if skey.first() == Some(&b'k') {
                let Some(b) = self.state.get(&skey)? else {
                    continue;
                };
                let mut groups: Vec<Group> = codec::decode(&b).map_err(state_err)?;
                for g in groups
                    .iter_mut()
                    .filter(|g| g.changed && g.window.end <= self.watermark)
                {
                    self.fire(g, "LATE", out);
                }
                self.state
                    .put(&skey, codec::encode(&groups).map_err(state_err)?);
            } else {
                let (w, gk) = split_state_key(&skey);
                let Some(mut hot) = self.hot.get_mut(&w).and_then(|m| m.remove(gk)) else {
                    continue;
                };
                if hot.group.changed {
                    self.fire(&mut hot.group, "LATE", out);
                    hot.dirty = true;
                }
                self.hot.entry(w).or_default().insert(gk.to_vec(), hot);
            }
        }
        Ok(())
    }

    /// Every group of window `w`: the store's, with the cache's on top.
    fn groups_of(&mut self, w: Window) -> Result<Vec<(Vec<u8>, Group)>, NodeError> {
        let prefix = window_prefix(w);
        let mut all: BTreeMap<Vec<u8>, Group> = BTreeMap::new();
        for (k, v) in self.state.scan(&prefix)? {
            let (w, gk) = split_state_key(&k);
            let g = Group::decode_stored(&v, w, gk)?;
            all.insert(k, g);
        }
        for (gk, h) in self.hot.get(&w).into_iter().flatten() {
            all.insert(state_key(w, gk), h.group.clone());
        }
        Ok(all.into_iter().collect())
    }

    /// Fires (and drops, once past their lateness) the windows the
    /// watermark closed, at most [`FIRE_CHUNK`] groups a call (the runtime
    /// calls again while [`Transform::pending`], as the outputs have room);
    /// `early`: fires the open ones that changed.
    fn advance(&mut self, out: &mut Emitter, early: bool) -> Result<(), NodeError> {
        if self.sessions() {
            return self.advance_sessions(out, early);
        }
        if early {
            return self.fire_early(out);
        }
        let mut budget = FIRE_CHUNK;
        while budget > 0 {
            let (w, from) = match self.firing.take() {
                Some(f) => f,
                None => match self.next_due() {
                    // a window the cache holds whole, closing: from there
                    Some(w) if !self.partial.contains(&w) && !self.open(w) => (w, None),
                    Some(w) => {
                        self.spill_window(w)?;
                        self.partial.insert(w);
                        (w, Some(window_prefix(w)))
                    }
                    None => break,
                },
            };
            let closed = !self.open(w);
            let fired = self.windows.get(&w).copied().unwrap_or(true);
            let Some(from) = from else {
                budget = self.fire_cached(w, fired, budget, out)?;
                continue;
            };
            let (page, next) = self.state.scan_page(&window_prefix(w), &from, budget)?;
            for (skey, bytes) in page {
                budget = budget.saturating_sub(1);
                let (_, gk) = split_state_key(&skey);
                let mut g = Group::decode_stored(&bytes, w, gk)?;
                // a group fired before a restart, mid-window, is not again
                if !fired && !g.on_time {
                    self.fire(&mut g, "ON_TIME", out);
                    g.on_time = true;
                }
                if closed {
                    self.state.delete(&skey);
                } else {
                    self.state.put(&skey, g.encode_stored()?);
                }
            }
            match next {
                Some(n) => self.firing = Some((w, Some(n))),
                None => self.fired_whole(w, closed),
            }
        }
        Ok(())
    }

    /// Window `w` fired all its groups.
    fn fired_whole(&mut self, w: Window, closed: bool) {
        if closed {
            self.windows.remove(&w);
            self.partial.remove(&w);
        } else {
            self.windows.insert(w, true);
        }
        self.windows_dirty = true;
    }

    /// Fires (and drops) up to `budget` groups of a closing window the
    /// cache holds whole; returns the budget left.
    fn fire_cached(
        &mut self,
        w: Window,
        fired: bool,
        mut budget: usize,
        out: &mut Emitter,
    ) -> Result<usize, NodeError> {
        let durable = self.state.durable();
        let mut m = self.hot.remove(&w).unwrap_or_default();
        if self.firing_keys.is_empty() {
            // in key order, as a scan of the state gives them: a run fires
            // its groups in the same order whether it restarted or not
            self.firing_keys = m.keys().cloned().collect();
            self.firing_keys.sort_unstable_by(|a, b| b.cmp(a));
        }
        while budget > 0 {
            let Some(gk) = self.firing_keys.pop() else {
                break;
            };
            budget -= 1;
            // (the groups not fired yet stay cached, so a commit in the
            // middle of the firing still writes what changed in them)
            let Some(mut h) = m.remove(&gk) else { continue };
            self.hot_len -= 1;
            if !fired && !h.group.on_time {
                self.fire(&mut h.group, "ON_TIME", out);
            }
            // a durable store may hold it from an earlier compaction
            if durable && h.stored {
                self.state.delete(&state_key(w, &gk));
            }
        }
        if self.firing_keys.is_empty() {
            self.drop_deltas(w);
            self.fired_whole(w, true);
        } else {
            self.hot.insert(w, m);
            self.firing = Some((w, None));
        }
        Ok(budget)
    }

    /// The next window the watermark closed that has to fire or go.
    fn next_due(&self) -> Option<Window> {
        self.windows
            .iter()
            .find(|(w, fired)| w.end <= self.watermark && (!**fired || !self.open(**w)))
            .map(|(w, _)| *w)
    }

    /// Puts the cached groups of `w` into the state, so a scan of the
    /// state sees the window whole.
    fn spill_window(&mut self, w: Window) -> Result<(), NodeError> {
        self.persist_window(w)?;
        if let Some(m) = self.hot.remove(&w) {
            self.hot_len -= m.len();
        }
        Ok(())
    }

    /// Early panes: every open window's groups that changed.
    fn fire_early(&mut self, out: &mut Emitter) -> Result<(), NodeError> {
        let open: Vec<Window> = self
            .windows
            .iter()
            .filter(|(w, fired)| !**fired && w.end > self.watermark)
            .map(|(w, _)| *w)
            .collect();
        for w in open {
            for (skey, mut g) in self.groups_of(w)? {
                if g.changed {
                    self.fire(&mut g, "EARLY", out);
                    let (w, gk) = split_state_key(&skey);
                    let fresh = self
                        .hot
                        .entry(w)
                        .or_default()
                        .insert(
                            gk.to_vec(),
                            Hot {
                                stored: true,
                                ..Hot::new(g)
                            },
                        )
                        .is_none();
                    self.hot_len += usize::from(fresh);
                }
            }
        }
        Ok(())
    }

    fn advance_sessions(&mut self, out: &mut Emitter, early: bool) -> Result<(), NodeError> {
        let due: Vec<(i64, Vec<u8>)> = if early {
            self.session_ends
                .iter()
                .filter(|(end, _)| *end > self.watermark)
                .cloned()
                .collect()
        } else {
            self.session_ends
                .range(..(self.watermark.saturating_add(1), Vec::new()))
                .cloned()
                .collect()
        };
        for (end, gk) in due {
            let mut skey = b"k".to_vec();
            skey.extend_from_slice(&gk);
            let Some(b) = self.state.get(&skey)? else {
                self.session_ends.remove(&(end, gk));
                continue;
            };
            let mut groups: Vec<Group> = codec::decode(&b).map_err(state_err)?;
            let mut keep = Vec::with_capacity(groups.len());
            for mut g in groups.drain(..) {
                if g.window.end != end {
                    keep.push(g);
                    continue;
                }
                if early {
                    if g.changed {
                        self.fire(&mut g, "EARLY", out);
                    }
                } else if g.panes == 0 || g.changed {
                    let timing = if g.panes == 0 { "ON_TIME" } else { "LATE" };
                    if g.panes == 0 || self.windowing.has_panes() {
                        self.fire(&mut g, timing, out);
                    }
                }
                if !early && !self.open(g.window) {
                    self.session_ends.remove(&(end, gk.clone()));
                } else {
                    keep.push(g);
                }
            }
            if keep.is_empty() {
                self.state.delete(&skey);
            } else {
                self.state
                    .put(&skey, codec::encode(&keep).map_err(state_err)?);
            }
        }
        Ok(())
    }

    fn group_key(&self, r: &Record, key: &mut Vec<Value>) -> Result<(), String> {
        key.clear();
        for g in &self.group_by {
            match r.fields.get(g) {
                Some(v) => key.push(v.clone()),
                None => return Err(format!("group_by: the record has no field `{g}`")),
            }
        }
        Ok(())
    }

    fn values(&self, r: &Record, values: &mut Vec<Value>) -> Result<(), String> {
        values.clear();
        for a in &self.aggs {
            values.push(match (&a.field, &a.value) {
                (Some(f), _) => r
                    .fields
                    .get(f)
                    .cloned()
                    .ok_or_else(|| format!("`{}`: the record has no field `{f}`", a.dest))?,
                (None, Some(c)) => c.eval(r).map_err(|e| format!("`{}` value: {e}", a.dest))?,
                (None, None) => return Err(format!("`{}`: no value", a.dest)),
            });
        }
        Ok(())
    }
}

impl Transform for CombineNode {
    fn process(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        let mut key = std::mem::take(&mut self.key_buf);
        let mut values = std::mem::take(&mut self.val_buf);
        for r in batch {
            if let Err(e) = self
                .group_key(&r, &mut key)
                .and_then(|_| self.values(&r, &mut values))
            {
                out.fail(r, e);
                continue;
            }
            let took = if self.sessions() {
                self.add_session(&r, &key, &values)
            } else {
                let mut windows = std::mem::take(&mut self.assigned);
                windows.clear();
                match r.window {
                    Some(w) => windows.push(w),
                    None if self.windowing.window_fn.is_global() => windows.push(GLOBAL),
                    None => self.windowing.window_fn.assign(r.event_time, &mut windows),
                }
                let took = self.add_windowed(&r, &key, &values, &windows);
                self.assigned = windows;
                took
            };
            match took {
                Ok(true) => {}
                Ok(false) => self.too_late(r, out),
                Err(NodeError::Record { msg, record }) => {
                    out.fail(record.map_or(r, |b| *b), msg);
                }
                Err(e) => return Err(e),
            }
        }
        self.key_buf = key;
        self.val_buf = values;
        self.fire_late(out)
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Emitter) -> Result<(), NodeError> {
        if watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        self.state
            .put(b"m/wm", codec::encode(&watermark).map_err(state_err)?);
        self.advance(out, false)
    }

    fn pending(&self) -> bool {
        !self.sessions() && (self.firing.is_some() || self.next_due().is_some())
    }

    fn resume(&mut self, out: &mut Emitter) -> Result<(), NodeError> {
        self.advance(out, false)
    }

    fn on_timer(&mut self, out: &mut Emitter) -> Result<(), NodeError> {
        let Some(every) = self.windowing.trigger.early else {
            return Ok(());
        };
        if self.last_early.elapsed() < every {
            return Ok(());
        }
        self.last_early = Instant::now();
        self.advance(out, true)
    }

    fn checkpoint(&mut self) -> Result<(), NodeError> {
        // a durable store gets every change at each commit; one in memory
        // (`best_effort`: lost with the process anyway) only what the
        // cache lets go of
        if self.state.durable() {
            self.write_deltas()?;
        }
        if self.hot_len > self.cache {
            self.evict()?;
        }
        if self.windows_dirty {
            let v: Vec<(Window, bool)> = self.windows.iter().map(|(w, f)| (*w, *f)).collect();
            self.state
                .put(b"m/windows", codec::encode(&v).map_err(state_err)?);
            self.state.put(b"m/format", vec![STATE_FORMAT]);
            self.windows_dirty = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
