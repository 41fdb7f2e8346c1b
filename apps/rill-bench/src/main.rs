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
//! 2. Latency: the same pipeline at a fixed 1,000 records/s; each record is
//!    stamped when the source emits it and measured when the sink gets it.
//!
//! `cargo run --release -p rill-bench [-- RECORDS [BATCH]]`

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
struct BenchSource {
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

fn pipeline_yaml(count: u64, rate: Option<f64>) -> String {
    let batch = batch();
    let rate = rate.map_or(String::new(), |r| format!(", rate: {r}"));
    format!(
        r#"
pipeline:
  name: bench
  transforms:
    - {{type: BenchSource, name: source, config: {{count: {count}{rate}}}}}
    - {{type: MapToFields, name: pass, input: source, config: {{append: true, fields: {{}}}}}}
    - {{type: BenchSink, name: sink, input: pass}}
options:
  batch_size: {batch}
"#
    )
}

async fn run_rill(count: u64, rate: Option<f64>) -> anyhow::Result<(f64, Vec<u64>)> {
    let mut registry = rill_nodes::registry();
    registry.register::<BenchSource>("BenchSource", "bench source");
    registry.register::<BenchSink>("BenchSink", "bench sink");
    let p = parse_str(
        &pipeline_yaml(count, rate),
        "bench",
        None,
        &registry,
        &Machine::detect(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    LATENCIES.lock().unwrap().clear();
    SUNK.store(0, Ordering::Relaxed);
    let t = Instant::now();
    let report = rill_runtime::run(Arc::new(p), Default::default()).await?;
    let secs = t.elapsed().as_secs_f64();
    let sunk = SUNK.load(Ordering::Relaxed);
    anyhow::ensure!(sunk == count, "the sink got {sunk} of {count} records");
    let _ = report;
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

fn pct(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let count: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    epoch();
    println!(
        "rill benchmark: {count} records of {{key, id, value, t_us}}, batches of {}",
        batch()
    );
    // warm up both paths once
    run_raw(count / 10, batch(), false).await?;
    run_rill(count / 10, None).await?;

    run_raw(count / 10, batch(), true).await?;

    let mut raw = Vec::new();
    let mut relay = Vec::new();
    let mut rill = Vec::new();
    for _ in 0..3 {
        raw.push(run_raw(count, batch(), false).await?);
        relay.push(run_raw(count, batch(), true).await?);
        rill.push(run_rill(count, None).await?.0);
    }
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let (r, rr, p) = (best(&raw), best(&relay), best(&rill));
    println!("throughput (best of 3, interleaved):");
    println!("  raw zenoh pub/sub, 1 hop                {r:>12.0} records/s");
    println!("  raw zenoh, same 3 stages hand-written   {rr:>12.0} records/s");
    println!("  rill 3 stages (2 hops, acks, logs)      {p:>12.0} records/s");
    println!(
        "  ratio rill / raw zenoh pub/sub          {:>12.3}   (goal >= 0.5)",
        p / r
    );
    println!("  ratio rill / raw zenoh 3 stages         {:>12.3}", p / rr);

    let n = 5_000;
    let (_, mut lat) = run_rill(n, Some(1000.0)).await?;
    lat.sort_unstable();
    println!("latency at 1,000 records/s, {n} records, source emit -> sink:");
    println!(
        "  p50 {} us   p99 {} us   max {} us   (goal p99 < 1000 us)",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(0)
    );
    Ok(())
}
