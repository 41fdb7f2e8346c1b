//! rill's benchmark, printed as ratios against a baseline measured in the
//! same run (these machines are shared and noisy: compare the ratios, not
//! the absolute numbers).
//!
//! 1. Throughput: raw Zenoh pub/sub (one publisher, one subscriber in one
//!    session, the same records in the same batches, encoded and decoded)
//!    vs a 3-stage rill pipeline `BenchSource -> MapToFields -> BenchSink`
//!    (pass-through) over Zenoh with acknowledgements and credits; and, as
//!    a second baseline, the same 3 stages hand-written on raw Zenoh (decode,
//!    re-encode and publish in the middle; no acks, logs or supervision).
//!    The rill pipeline runs in each delivery mode: `exactly_once` (durable
//!    logs and commits in sled, output published after each commit),
//!    `at_least_once` (the same commits, output published at once) and
//!    `best_effort` (no store).
//! 2. Latency: the same pipeline at a fixed 1,000 records/s; each record is
//!    stamped when the source emits it and measured when the sink gets it.
//! 3. Recovery: an unbounded `Generate -> MapToFields -> WriteToJson` run in
//!    a child process is SIGKILLed and started again, five times; printed is
//!    the time from the new process's start to the first record it adds to
//!    the sink file.
//!
//! 4. Resume: `rill-bench resume [GB]` restarts a `ReadFromJson` source
//!    GB gigabytes (default 5) into a file, against reading the file up to
//!    there (see `resume.rs`).
//!
//! 5. Windows: `rill-bench windows [RECORDS] [KEYS]`: a keyed windowed
//!    `Combine` against `MapToFields` in the same pipeline, a million keys
//!    with the peak RSS, and the watermark lag (see `windows.rs`).
//!
//! 6. Serving: `rill-bench serve [SECONDS]`: a `RunInference` stage with
//!    `serve:` under closed-loop HTTP load (1, 16, 64 clients) against a raw
//!    Burn forward loop, and a stream beside the requests (see `serve.rs`).
//!
//! `cargo run --release -p rill-bench [-- RECORDS [BATCH]]`; one delivery
//! mode alone (for a profiler): `rill-bench pipeline MODE [RECORDS]`, with
//! `RILL_BENCH_STAGES=1` to print each stage's commits (count, records per
//! commit, µs per commit).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rill_core::node::{
    BuildContext, Emitter, Node, NodeConfig, NodeError, NodeKind, Sink, Source, SourceStatus,
};
use rill_core::spec::{Machine, parse_str};
use rill_core::{Record, Value, codec};
use serde::Deserialize;
use zenoh::Wait;

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

fn record(i: u64) -> Record {
    Record::default()
        .with_key(format!("k{}", i % 8))
        .with_time(i as i64)
        .with("id", i as i64)
        .with("value", (i % 1000) as f64 / 1000.0)
        // the rill source overwrites this with the emit time; the raw
        // baselines carry the same field so the payloads are the same
        .with("t_us", 0i64)
}

/// A source that stamps each record with the time it was emitted.
#[derive(Debug, Deserialize)]
pub(crate) struct BenchSource {
    count: u64,
    rate: Option<f64>,
}

struct BenchSourceNode {
    count: u64,
    rate: Option<f64>,
    next: u64,
    started: Option<Instant>,
}

impl NodeConfig for BenchSource {
    fn kind(&self) -> NodeKind {
        NodeKind::Source
    }
    fn build(&self, _: &BuildContext<'_>) -> Result<Node, NodeError> {
        Ok(Node::Source(Box::new(BenchSourceNode {
            count: self.count,
            rate: self.rate,
            next: 0,
            started: None,
        })))
    }
}

impl Source for BenchSourceNode {
    fn poll(&mut self, max: usize, out: &mut Emitter) -> Result<SourceStatus, NodeError> {
        let started = *self.started.get_or_insert_with(Instant::now);
        let due = match self.rate {
            Some(r) => ((started.elapsed().as_secs_f64() * r) as u64 + 1).min(self.count),
            None => self.count,
        };
        let n = due.saturating_sub(self.next).min(max as u64);
        for _ in 0..n {
            let mut r = record(self.next);
            r.fields.insert("t_us".into(), Value::Int(now_us() as i64));
            out.emit(r);
            self.next += 1;
        }
        if self.next >= self.count {
            return Ok(SourceStatus::Done);
        }
        Ok(match self.rate {
            Some(r) => {
                let next_at = Duration::from_secs_f64(self.next as f64 / r);
                SourceStatus::Wait(next_at.saturating_sub(started.elapsed()))
            }
            None => SourceStatus::More,
        })
    }
}

/// Latencies (µs) seen by the sink.
static LATENCIES: Mutex<Vec<u64>> = Mutex::new(Vec::new());
static SUNK: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Deserialize)]
struct BenchSink {}

struct BenchSinkNode;

impl NodeConfig for BenchSink {
    fn kind(&self) -> NodeKind {
        NodeKind::Sink
    }
    fn build(&self, _: &BuildContext<'_>) -> Result<Node, NodeError> {
        Ok(Node::Sink(Box::new(BenchSinkNode)))
    }
}

impl Sink for BenchSinkNode {
    fn write(&mut self, batch: Vec<Record>, _: &mut Emitter) -> Result<(), NodeError> {
        let now = now_us();
        let mut l = LATENCIES.lock().unwrap();
        for r in &batch {
            if let Some(Value::Int(t)) = r.get("t_us") {
                l.push(now.saturating_sub(*t as u64));
            }
        }
        SUNK.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Records per message, for rill (`options.batch_size`) and the baselines
/// alike: the second argument, or rill's default (256).
fn batch() -> usize {
    std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256)
}

/// The benchmark's pipeline with `passes` `MapToFields` stages between the
/// source and the sink.
fn chain_yaml(count: u64, rate: Option<f64>, delivery: &str, passes: usize) -> String {
    let batch = if passes == 1 { batch() } else { 256 };
    let mut middle = String::new();
    let mut input = "source".to_owned();
    for i in 0..passes {
        let name = if i == 0 {
            "pass".to_owned()
        } else {
            format!("pass{i}")
        };
        middle.push_str(&format!(
            "    - {{type: MapToFields, name: {name}, input: {input}, config: {{append: true, fields: {{}}}}}}\n"
        ));
        input = name;
    }
    let rate = rate.map_or(String::new(), |r| format!(", rate: {r}"));
    let state = std::env::temp_dir().join(format!("rill-bench-{}", std::process::id()));
    format!(
        r#"
pipeline:
  name: bench
  transforms:
    - {{type: BenchSource, name: source, config: {{count: {count}{rate}}}}}
{middle}    - {{type: BenchSink, name: sink, input: {input}}}
options:
  batch_size: {batch}
  delivery: {delivery}
  state_dir: {}
"#,
        state.display()
    )
}

async fn run_rill(
    count: u64,
    rate: Option<f64>,
    delivery: &str,
) -> anyhow::Result<(f64, Vec<u64>)> {
    run_chain(count, rate, delivery, 1).await
}

async fn run_chain(
    count: u64,
    rate: Option<f64>,
    delivery: &str,
    passes: usize,
) -> anyhow::Result<(f64, Vec<u64>)> {
    let mut registry = rill_nodes::registry();
    registry.register::<BenchSource>("BenchSource", "bench source");
    registry.register::<BenchSink>("BenchSink", "bench sink");
    let p = parse_str(
        &chain_yaml(count, rate, delivery, passes),
        "bench",
        None,
        &registry,
        &Machine::detect(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    LATENCIES.lock().unwrap().clear();
    SUNK.store(0, Ordering::Relaxed);
    // each run starts from nothing (a finished run's state would refuse
    // to run the pipeline again)
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("rill-bench-{}", std::process::id())),
    );
    let t = Instant::now();
    let report = rill_runtime::run(Arc::new(p), Default::default()).await?;
    let secs = t.elapsed().as_secs_f64();
    let sunk = SUNK.load(Ordering::Relaxed);
    anyhow::ensure!(sunk == count, "the sink got {sunk} of {count} records");
    if std::env::var_os("RILL_BENCH_STAGES").is_some() {
        // where a durable run spends its time: commits, their size and cost
        for s in &report.stages {
            println!(
                "  {:<8} commits {:>6}  records/commit {:>7.0}  µs/commit {:>6.0}  queue high water {}",
                s.stage,
                s.commits,
                s.records_in.max(s.records_out) as f64 / s.commits.max(1) as f64,
                s.commit_us as f64 / s.commits.max(1) as f64,
                s.queue_high_water
            );
        }
    }
    Ok((
        count as f64 / secs,
        std::mem::take(&mut *LATENCIES.lock().unwrap()),
    ))
}

/// Raw Zenoh: the same records in the same batches, encoded and decoded.
///
/// With `relay: false` one publisher feeds one subscriber (1 hop). With
/// `relay: true` it is the same 3-stage pass-through as the rill pipeline,
/// written directly on Zenoh: source -> relay (decode, re-encode, publish) ->
/// sink (decode, count), with no acks, logs or supervision: what rill's
/// guarantees are measured against.
async fn run_raw(count: u64, batch: usize, relay: bool) -> anyhow::Result<f64> {
    let err = |e: zenoh::Error| anyhow::anyhow!("{e}");
    let session = rill_runtime::transport::open(&Default::default())
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let got = Arc::new(AtomicU64::new(0));
    let g = got.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx = Mutex::new(Some(tx));
    let _sink = session
        .declare_subscriber("bench/raw/out")
        .callback(move |s| {
            let recs: Vec<Record> = codec::decode(&s.payload().to_bytes()).unwrap_or_default();
            if g.fetch_add(recs.len() as u64, Ordering::Relaxed) + recs.len() as u64 >= count
                && let Some(tx) = tx.lock().unwrap().take()
            {
                let _ = tx.send(());
            }
        })
        .await
        .map_err(err)?;
    let declare = |key: &'static str| {
        session
            .declare_publisher(key)
            .congestion_control(zenoh::qos::CongestionControl::Block)
    };
    let _relay = if relay {
        let out = declare("bench/raw/out").await.map_err(err)?;
        let sub = session
            .declare_subscriber("bench/raw/in")
            .callback(move |s| {
                let recs: Vec<Record> = codec::decode(&s.payload().to_bytes()).unwrap_or_default();
                if let Ok(bytes) = codec::encode(&recs) {
                    let _ = out.put(bytes).wait();
                }
            })
            .await
            .map_err(err)?;
        Some(sub)
    } else {
        None
    };
    let publisher = declare(if relay {
        "bench/raw/in"
    } else {
        "bench/raw/out"
    })
    .await
    .map_err(err)?;
    let t = Instant::now();
    let mut i = 0;
    while i < count {
        let n = (count - i).min(batch as u64);
        let recs: Vec<Record> = (i..i + n).map(record).collect();
        publisher.put(codec::encode(&recs)?).wait().map_err(err)?;
        i += n;
    }
    tokio::time::timeout(Duration::from_secs(60), rx).await??;
    let secs = t.elapsed().as_secs_f64();
    drop(publisher);
    let _ = session.close().await;
    Ok(count as f64 / secs)
}

/// `rill-bench latency`: issue 21's goal 2 along chains of 1, 3 and 6
/// stages between the source and the sink, each stage in its own store
/// (`RILL_STATE_LAYOUT=per-stage`) against the process's shared store,
/// taking turns; each measurement is a child process.
fn latency_by_layout() -> anyhow::Result<()> {
    println!(
        "latency at 1,000 records/s, 5000 records, source emit -> sink, exactly_once (goal p99 < 1500 us):"
    );
    let me = std::env::current_exe()?;
    for passes in [1usize, 3, 6] {
        for layout in ["per-stage", "shared"] {
            let o = std::process::Command::new(&me)
                .args(["latency-child", &passes.to_string()])
                .env("RILL_STATE_LAYOUT", layout)
                .stderr(std::process::Stdio::inherit())
                .output()?;
            anyhow::ensure!(o.status.success(), "latency-child failed: {:?}", o.status);
            let out = String::from_utf8_lossy(&o.stdout);
            let v: Vec<&str> = out.split_whitespace().collect();
            anyhow::ensure!(v.len() == 3, "latency-child said {out:?}");
            println!(
                "  {} stages, {layout:<9}  p50 {:>6} us   p99 {:>6} us   max {:>6} us",
                passes + 2,
                v[0],
                v[1],
                v[2]
            );
        }
    }
    Ok(())
}

fn pct(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// The child process of the recovery measurement: runs an unbounded
/// pipeline writing to `DIR/out.jsonl` until killed.
async fn child(dir: &str) -> anyhow::Result<()> {
    let yaml = r#"
pipeline:
  name: recover
  transforms:
    - {type: Generate, name: gen, config: {rate: 20000, keys: 16, seed: 2}}
    - {type: MapToFields, name: pass, input: gen, config: {append: true, fields: {twice: "value * 2"}, language: python}}
    - {type: WriteToJson, name: sink, input: pass, config: {path: out.jsonl}}
"#;
    let p = parse_str(
        yaml,
        "recover",
        None,
        &rill_nodes::registry(),
        &Machine::detect(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let opts = rill_runtime::RunOptions {
        base_dir: Some(dir.into()),
        ..Default::default()
    };
    rill_runtime::run(Arc::new(p), opts).await?;
    Ok(())
}

fn file_len(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

/// SIGKILL -> restart -> first new output, five times; returns the delays.
fn recovery() -> anyhow::Result<Vec<Duration>> {
    let dir = std::env::temp_dir().join(format!("rill-bench-recover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("out.jsonl");
    let exe = std::env::current_exe()?;
    let spawn = || {
        std::process::Command::new(&exe)
            .args(["--child", &dir.to_string_lossy()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
    };
    let wait_growth = |from: u64, limit: Duration| -> anyhow::Result<Duration> {
        let t = Instant::now();
        while file_len(&out) <= from {
            anyhow::ensure!(t.elapsed() < limit, "no output within {limit:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(t.elapsed())
    };
    let mut c = spawn()?;
    wait_growth(0, Duration::from_secs(20))?;
    let mut delays = Vec::new();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(300 + fastrand::u64(0..700)));
        c.kill()?;
        c.wait()?;
        let at_kill = file_len(&out);
        c = spawn()?;
        delays.push(wait_growth(at_kill, Duration::from_secs(20))?);
    }
    c.kill()?;
    c.wait()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(delays)
}

mod e2e;
mod footprint;
mod inference;
mod resume;
mod serve;
mod windows;

// The allocator of the `rill` binary, so the figures are what it does:
// `rill_cli` sets it (its `mimalloc` feature), huge pages off as in `rill`.
use rill_cli::alloc::no_huge_pages;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    no_huge_pages();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        return child(&args[2]).await;
    }
    if args.get(1).map(String::as_str) == Some("inference") {
        return tokio::task::block_in_place(|| inference::main(&args[2..]));
    }
    if args.get(1).map(String::as_str) == Some("footprint") {
        return tokio::task::block_in_place(|| footprint::main(&args[2..]));
    }
    if args.get(1).map(String::as_str) == Some("slow-sink") {
        return tokio::task::block_in_place(|| footprint::slow_sink(&args[2..]));
    }
    if args.get(1).map(String::as_str) == Some("slow-sink-child") {
        return footprint::child(&args[2..]).await;
    }
    if args.get(1).map(String::as_str) == Some("e2e") {
        return e2e::main(&args[2..]).await;
    }
    if args.get(1).map(String::as_str) == Some("serve") {
        return serve::main(&args[2..]).await;
    }
    if args.get(1).map(String::as_str) == Some("windows") {
        return windows::main(&args[2..]).await;
    }
    if args.get(1).map(String::as_str) == Some("windows-child") {
        return windows::child(&args[2..]).await;
    }
    if args.get(1).map(String::as_str) == Some("resume") {
        return tokio::task::block_in_place(|| resume::main(&args[2..]));
    }
    if args.get(1).map(String::as_str) == Some("latency") {
        return latency_by_layout();
    }
    if args.get(1).map(String::as_str) == Some("latency-child") {
        // one layout (from the environment), one chain length
        let passes: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1);
        epoch();
        run_chain(1_000, Some(1000.0), "exactly_once", passes).await?;
        let (_, mut lat) = run_chain(5_000, Some(1000.0), "exactly_once", passes).await?;
        lat.sort_unstable();
        println!(
            "{} {} {}",
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            lat.last().copied().unwrap_or(0)
        );
        return Ok(());
    }
    if args.get(1).map(String::as_str) == Some("pipeline") {
        // one delivery mode alone, e.g. under a profiler:
        // `rill-bench pipeline best_effort [RECORDS]`
        let mode = args.get(2).map_or("best_effort", String::as_str);
        let count = args
            .get(3)
            .and_then(|a| a.parse().ok())
            .unwrap_or(1_000_000);
        epoch();
        for _ in 0..3 {
            let (rate, _) = run_rill(count, None, mode).await?;
            println!("rill 3 stages, {mode}: {rate:.0} records/s");
        }
        return Ok(());
    }
    let count: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    epoch();
    println!(
        "rill benchmark: {count} records of {{key, id, value, t_us}}, batches of {}",
        batch()
    );
    const MODES: [&str; 3] = ["exactly_once", "at_least_once", "best_effort"];
    // warm up every path once
    run_raw(count / 10, batch(), false).await?;
    run_raw(count / 10, batch(), true).await?;
    for m in MODES {
        run_rill(count / 10, None, m).await?;
    }

    let mut raw = Vec::new();
    let mut relay = Vec::new();
    let mut rill: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    for _ in 0..3 {
        raw.push(run_raw(count, batch(), false).await?);
        relay.push(run_raw(count, batch(), true).await?);
        for (i, m) in MODES.iter().enumerate() {
            rill[i].push(run_rill(count, None, m).await?.0);
        }
    }
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let (r, rr) = (best(&raw), best(&relay));
    println!("throughput (best of 3, interleaved):");
    println!("  raw zenoh pub/sub, 1 hop                  {r:>12.0} records/s");
    println!("  raw zenoh, same 3 stages hand-written     {rr:>12.0} records/s");
    for (i, m) in MODES.iter().enumerate() {
        let p = best(&rill[i]);
        let goal = match *m {
            "exactly_once" => "   (goal >= 0.35)",
            "best_effort" => "   (goal without durability >= 0.5)",
            _ => "",
        };
        println!("  rill 3 stages, {m:<14}             {p:>12.0} records/s");
        println!("    ratio to raw zenoh pub/sub {:>26.3}{goal}", p / r);
        println!("    ratio to raw zenoh 3 stages {:>25.3}", p / rr);
    }

    let n = 5_000;
    for m in ["exactly_once", "best_effort"] {
        let (_, mut lat) = run_rill(n, Some(1000.0), m).await?;
        lat.sort_unstable();
        println!("latency at 1,000 records/s, {n} records, source emit -> sink, {m}:");
        println!(
            "  p50 {} us   p99 {} us   max {} us   (goal p99 < 1500 us)",
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            lat.last().copied().unwrap_or(0)
        );
    }

    let delays = tokio::task::spawn_blocking(recovery).await??;
    let ms: Vec<String> = delays
        .iter()
        .map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0))
        .collect();
    let worst = delays.iter().max().copied().unwrap_or_default();
    println!(
        "recovery: SIGKILL, restart -> first new sink output: {} ms (worst {:.0} ms; goal < 2000 ms)",
        ms.join(", "),
        worst.as_secs_f64() * 1000.0
    );
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("rill-bench-{}", std::process::id())),
    );
    Ok(())
}
