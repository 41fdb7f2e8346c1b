//! `rill-bench windows [RECORDS] [KEYS]`: the cost of windowed
//! aggregation, as ratios measured in the same run.
//!
//! 1. Throughput: `WindowSource -> Combine (fixed 1 s windows, per key
//!    sum, count and mean) -> CountSink` against the same three stages with
//!    `MapToFields` in place of `Combine`, in `best_effort` and
//!    `exactly_once` (goal: a ratio of at least 0.5). The source spaces its
//!    records in event time so that a window holds `max(KEYS, 100,000)`
//!    records: every key is in every window.
//! 2. Many keys: the same Combine with 1,000,000 keys, in a child process
//!    whose peak RSS (`VmHWM`) is printed (goal: under 500 MB).
//! 3. Watermark lag: at 1,000 records/s, event time = the wall clock, 100 ms
//!    windows, one group: the time from a window's end to its row at the
//!    sink, p50 and p99 (goal: p99 under 50 ms plus the out-of-orderness,
//!    which is 0 here).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rill_core::node::{
    BuildContext, Emitter, Node, NodeConfig, NodeError, NodeKind, Sink, Source, SourceStatus,
};
use rill_core::spec::{Machine, parse_str};
use rill_core::{Record, Value};
use serde::Deserialize;

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `count` records `{key, value}` over `keys` keys, `per_second` of them
/// to a second of event time; with `rate`, paced, stamped with the wall
/// clock instead.
#[derive(Debug, Deserialize)]
struct WindowSource {
    count: u64,
    keys: u64,
    per_second: u64,
    rate: Option<f64>,
}

struct WindowSourceNode {
    cfg: (u64, u64, u64, Option<f64>),
    next: u64,
    started: Option<Instant>,
}

impl NodeConfig for WindowSource {
    fn kind(&self) -> NodeKind {
        NodeKind::Source
    }
    fn build(&self, _: &BuildContext<'_>) -> Result<Node, NodeError> {
        Ok(Node::Source(Box::new(WindowSourceNode {
            cfg: (self.count, self.keys, self.per_second, self.rate),
            next: 0,
            started: None,
        })))
    }
}

impl Source for WindowSourceNode {
    fn poll(&mut self, max: usize, out: &mut Emitter) -> Result<SourceStatus, NodeError> {
        let (count, keys, per_second, rate) = self.cfg;
        let started = *self.started.get_or_insert_with(Instant::now);
        let due = match rate {
            Some(r) => ((started.elapsed().as_secs_f64() * r) as u64 + 1).min(count),
            None => count,
        };
        let n = due.saturating_sub(self.next).min(max as u64);
        out.reserve(n as usize);
        for _ in 0..n {
            let i = self.next;
            let t = match rate {
                Some(_) => wall_ms(),
                None => (i as u128 * 1000 / per_second as u128) as i64,
            };
            let mut r = Record::default().with_time(t);
            r.fields.insert("key".into(), Value::Int((i % keys) as i64));
            r.fields
                .insert("value".into(), Value::Float((i % 1000) as f64 / 1000.0));
            out.emit(r);
            self.next += 1;
        }
        if self.next >= count {
            return Ok(SourceStatus::Done);
        }
        Ok(match rate {
            Some(r) => {
                let next_at = Duration::from_secs_f64(self.next as f64 / r);
                SourceStatus::Wait(next_at.saturating_sub(started.elapsed()))
            }
            None => SourceStatus::More,
        })
    }
}

static ROWS: AtomicU64 = AtomicU64::new(0);
/// Lags (ms) from a window's end to its row at the sink.
static LAGS: Mutex<Vec<i64>> = Mutex::new(Vec::new());

/// Counts rows; a row with a window end (`end_ms`) records its lag.
#[derive(Debug, Deserialize)]
struct CountSink {}

struct CountSinkNode;

impl NodeConfig for CountSink {
    fn kind(&self) -> NodeKind {
        NodeKind::Sink
    }
    fn build(&self, _: &BuildContext<'_>) -> Result<Node, NodeError> {
        Ok(Node::Sink(Box::new(CountSinkNode)))
    }
}

impl Sink for CountSinkNode {
    fn write(&mut self, batch: Vec<Record>, _: &mut Emitter) -> Result<(), NodeError> {
        let now = wall_ms();
        let mut lags = LAGS.lock().unwrap();
        for r in &batch {
            if let Some(w) = r.window {
                lags.push(now - w.end);
            }
        }
        ROWS.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn yaml(source: &str, middle: &str, delivery: &str, state: &std::path::Path) -> String {
    format!(
        r#"
pipeline:
  name: bench-windows
  transforms:
    - {{type: WindowSource, name: source, config: {{{source}}}}}
    - {middle}
    - {{type: CountSink, name: sink, input: mid}}
options:
  delivery: {delivery}
  state_dir: {}
"#,
        state.display()
    )
}

const COMBINE: &str = "{type: Combine, name: mid, input: source, windowing: {type: fixed, size: 1s}, config: {group_by: key, combine: {total: {value: value, fn: sum}, n: {value: value, fn: count}, mean: {value: value, fn: mean}}}}";
const MAP: &str =
    "{type: MapToFields, name: mid, input: source, config: {append: true, fields: {}}}";

/// Runs one pipeline; returns (records/s, rows at the sink).
async fn run(
    source: &str,
    middle: &str,
    delivery: &str,
    records: u64,
) -> anyhow::Result<(f64, u64)> {
    let mut registry = rill_nodes::registry();
    registry.register::<WindowSource>("WindowSource", "bench source");
    registry.register::<CountSink>("CountSink", "bench sink");
    let state = std::env::temp_dir().join(format!("rill-bench-windows-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let p = parse_str(
        &yaml(source, middle, delivery, &state),
        "bench-windows",
        None,
        &registry,
        &Machine::detect(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    ROWS.store(0, Ordering::Relaxed);
    let t = Instant::now();
    rill_runtime::run(Arc::new(p), Default::default()).await?;
    let secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&state);
    Ok((records as f64 / secs, ROWS.load(Ordering::Relaxed)))
}

fn source(records: u64, keys: u64) -> String {
    format!(
        "count: {records}, keys: {keys}, per_second: {}",
        keys.max(100_000)
    )
}

/// Peak resident memory of this process, from `/proc/self/status`.
fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// `rill-bench windows-child RECORDS KEYS MODE [map]`: one Combine run (or
/// with `map`, the `MapToFields` baseline), then its rate, rows and peak
/// RSS on one line.
pub async fn child(args: &[String]) -> anyhow::Result<()> {
    let records: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let keys: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let mode = args.get(2).map_or("exactly_once", String::as_str);
    let middle = match args.get(3).map(String::as_str) {
        Some("map") => MAP,
        _ => COMBINE,
    };
    let (rate, rows) = run(&source(records, keys), middle, mode, records).await?;
    println!("{rate:.0} {rows} {:.0}", peak_rss_mb().unwrap_or(f64::NAN));
    Ok(())
}

pub async fn main(args: &[String]) -> anyhow::Result<()> {
    let records: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let keys: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    println!(
        "windowed aggregation: {records} records, {keys} keys, fixed 1 s windows of {} records",
        keys.max(100_000)
    );
    let windows = records.div_ceil(keys.max(100_000));
    for mode in ["best_effort", "exactly_once"] {
        // warm up, then best of 3, interleaved
        run(&source(records / 10, keys), MAP, mode, records / 10).await?;
        let (mut comb, mut map) = (0f64, 0f64);
        for _ in 0..3 {
            let (r, rows) = run(&source(records, keys), COMBINE, mode, records).await?;
            anyhow::ensure!(
                rows == windows * keys.min(records),
                "Combine gave {rows} rows, expected {}",
                windows * keys.min(records)
            );
            comb = comb.max(r);
            let (r, rows) = run(&source(records, keys), MAP, mode, records).await?;
            anyhow::ensure!(rows == records, "MapToFields gave {rows} rows");
            map = map.max(r);
        }
        println!("  {mode}:");
        println!("    Combine     {comb:>12.0} records/s");
        println!("    MapToFields {map:>12.0} records/s");
        println!("    ratio {:.3}   (goal >= 0.5)", comb / map);
    }

    let many = 1_000_000u64;
    let exe = std::env::current_exe()?;
    for mode in ["best_effort", "exactly_once"] {
        let out = std::process::Command::new(&exe)
            .args([
                "windows-child",
                &records.to_string(),
                &many.to_string(),
                mode,
            ])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Vec<&str> = text.split_whitespace().collect();
        println!(
            "  {many} keys, {mode}: {} records/s, {} rows, peak RSS {} MB (goal < 500 MB)",
            v.first().unwrap_or(&"?"),
            v.get(1).unwrap_or(&"?"),
            v.get(2).unwrap_or(&"?")
        );
    }

    LAGS.lock().unwrap().clear();
    let n = 10_000;
    let lag_source = format!("count: {n}, keys: 1, per_second: 1, rate: 1000");
    let lag_combine = "{type: Combine, name: mid, input: source, windowing: {type: fixed, size: 100ms}, config: {group_by: [], combine: {n: {value: value, fn: count}}}}";
    for mode in ["best_effort", "exactly_once"] {
        LAGS.lock().unwrap().clear();
        run(&lag_source, lag_combine, mode, n).await?;
        let mut lags = std::mem::take(&mut *LAGS.lock().unwrap());
        // the last window fires at the input's end, not by the watermark
        lags.pop();
        lags.sort_unstable();
        let pct = |q: f64| {
            lags.get(((lags.len() as f64 * q).ceil() as usize).clamp(1, lags.len().max(1)) - 1)
                .copied()
                .unwrap_or(0)
        };
        println!(
            "watermark lag at 1,000 records/s, 100 ms windows, {mode}: p50 {} ms, p99 {} ms, max {} ms over {} windows (goal p99 < 50 ms)",
            pct(0.5),
            pct(0.99),
            lags.last().copied().unwrap_or(0),
            lags.len()
        );
    }
    Ok(())
}
