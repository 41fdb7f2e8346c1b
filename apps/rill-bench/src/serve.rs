//! `rill-bench serve [SECONDS]`: online serving (`serve:`) under closed-loop
//! load, against a raw Burn forward loop at the batch size the load forms,
//! measured in the same run.
//!
//! 1. A serve-only `RunInference` stage (the inference benchmark's MLP
//!    64-256-256-10, CPU, one instance, `max_batch_size: 64`) behind rill's
//!    HTTP server; 1, 16 and 64 clients, each on its own keep-alive HTTP/1.1
//!    connection, send Vertex AI `:predict` requests back to back (one
//!    instance each, then 16 instances each): requests/s, latency p50 / p99
//!    / max, and the batch sizes formed (the node's
//!    `inference_request_batch_size`).
//! 2. The raw loop: the same model's `forward` on batches of the mean size
//!    formed at 64 clients, on one thread: rows/s, and the ratio of served
//!    rows/s to it.
//! 3. The same stage fed a stream too (a source of 64-float records as fast
//!    as it goes): the stream's records/s alone, then while 32 clients (half
//!    the load) are served.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use rill_core::metrics::Metric;
use rill_core::node::{
    BuildContext, Emitter, Node, NodeConfig, NodeError, NodeKind, Sink, Source, SourceStatus,
};
use rill_core::spec::{Machine, parse_str};
use rill_core::{Record, Value};
use rill_ml::Cpu;
use rill_ml::nets::{Arch, Net, save};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WIDTH: usize = 64;

/// Records of 64 features, as fast as the stage takes them.
#[derive(Debug, Deserialize)]
struct FeatureSource {}

struct FeatureSourceNode {
    rng: fastrand::Rng,
}

impl NodeConfig for FeatureSource {
    fn kind(&self) -> NodeKind {
        NodeKind::Source
    }
    fn unbounded(&self) -> bool {
        true
    }
    fn build(&self, _: &BuildContext<'_>) -> Result<Node, NodeError> {
        Ok(Node::Source(Box::new(FeatureSourceNode {
            rng: fastrand::Rng::with_seed(7),
        })))
    }
}

impl Source for FeatureSourceNode {
    fn poll(&mut self, max: usize, out: &mut Emitter) -> Result<SourceStatus, NodeError> {
        for _ in 0..max {
            let f: Vec<Value> = (0..WIDTH)
                .map(|_| Value::Float(self.rng.f64() * 2.0 - 1.0))
                .collect();
            out.emit(Record::default().with("features", Value::List(f)));
        }
        Ok(SourceStatus::More)
    }
    fn deterministic(&self) -> bool {
        false
    }
}

static STREAMED: AtomicU64 = AtomicU64::new(0);

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
        STREAMED.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn yaml(model: &std::path::Path, state: &std::path::Path, stream: bool) -> String {
    let (source, input, sink) = if stream {
        (
            "    - {type: FeatureSource, name: stream}\n",
            "      input: stream\n",
            "    - {type: CountSink, name: sink, input: mlp}\n",
        )
    } else {
        ("", "", "")
    };
    format!(
        r#"pipeline:
  name: servebench
  transforms:
{source}    - type: RunInference
      name: mlp
{input}      resources: {{device: cpu, cpu_threads: 1}}
      serve: {{http: 127.0.0.1:0, queue: 8192, timeout: 30s, max_batch_delay: 0ms}}
      config:
        model_handler: {{type: BurnMlp, config: {{path: "{model}"}}}}
        batching: {{max_batch_size: 64, max_batch_delay: 1ms}}
{sink}options:
  delivery: best_effort
  state_dir: "{state}"
"#,
        model = model.display(),
        state = state.display(),
    )
}

/// A running pipeline with its HTTP server.
struct Served {
    run: rill_runtime::Run,
    addr: std::net::SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

async fn start(
    model: &std::path::Path,
    state: &std::path::Path,
    stream: bool,
) -> anyhow::Result<Served> {
    let mut registry = rill_nodes::registry();
    rill_ml::register_all(&mut registry);
    registry.register::<FeatureSource>("FeatureSource", "bench feature source");
    registry.register::<CountSink>("CountSink", "bench counting sink");
    let p = parse_str(
        &yaml(model, state, stream),
        "servebench",
        None,
        &registry,
        &Machine::detect(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let opts = rill_runtime::RunOptions {
        reset_state: true,
        ..Default::default()
    };
    let run = rill_runtime::Run::start(Arc::new(p), opts).await?;
    let served = run.served().map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = rill_runtime::serve::http::router(rill_runtime::serve::http::HttpConfig {
        pipeline: "servebench".into(),
        stages: run.metrics().to_vec(),
        served,
        max_body: 4 << 20,
    });
    let server = rill_runtime::serve::http::spawn(listener, router);
    Ok(Served { run, addr, server })
}

impl Served {
    async fn stop(self) -> anyhow::Result<()> {
        self.server.abort();
        self.run.stopper().stop();
        let _ = self.run.wait().await;
        Ok(())
    }

    /// (count, sum, max) of the node's batch sizes so far.
    fn batches(&self) -> (u64, u64, u64) {
        let m = self
            .run
            .metrics()
            .iter()
            .find(|m| m.stage == "mlp")
            .expect("the mlp stage");
        match m
            .node
            .snapshot()
            .iter()
            .find(|(n, _)| n == "inference_request_batch_size")
            .map(|(_, m)| m.clone())
        {
            Some(d) => match &*d {
                Metric::Distribution(d) => (d.count(), d.sum(), d.max()),
                _ => (0, 0, 0),
            },
            None => (0, 0, 0),
        }
    }
}

/// The body of a request of `rows` instances of random features.
fn body(rows: usize, rng: &mut fastrand::Rng) -> Vec<u8> {
    let inst: Vec<String> = (0..rows)
        .map(|_| {
            let f: Vec<String> = (0..WIDTH)
                .map(|_| format!("{:.6}", rng.f64() * 2.0 - 1.0))
                .collect();
            format!("[{}]", f.join(","))
        })
        .collect();
    format!("{{\"instances\":[{}]}}", inst.join(",")).into_bytes()
}

/// One client: requests back to back on one keep-alive connection until
/// `stop`; latencies (µs) of the requests that started after `measure_from`.
async fn client(
    addr: std::net::SocketAddr,
    rows: usize,
    seed: u64,
    measure_from: Instant,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(Vec<u64>, u64)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let bodies: Vec<Vec<u8>> = (0..16).map(|_| body(rows, &mut rng)).collect();
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut buf = Vec::with_capacity(64 << 10);
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let b = &bodies[i % bodies.len()];
        i += 1;
        let head = format!(
            "POST /v1/models/mlp:predict HTTP/1.1\r\nHost: bench\r\nContent-Length: {}\r\n\r\n",
            b.len()
        );
        let t = Instant::now();
        s.write_all(head.as_bytes()).await?;
        s.write_all(b).await?;
        // the response: headers, then Content-Length bytes
        buf.clear();
        let (status, need) = loop {
            let mut chunk = [0u8; 16 << 10];
            let n = s.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "the server closed the connection");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let status: u16 = head
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                break (status, end + 4 + len);
            }
        };
        while buf.len() < need {
            let mut chunk = [0u8; 16 << 10];
            let n = s.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "the server closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        }
        if status != 200 {
            errors += 1;
        }
        if t >= measure_from {
            lat.push(t.elapsed().as_micros() as u64);
        }
    }
    Ok((lat, errors))
}

struct Load {
    requests_per_s: f64,
    rows_per_s: f64,
    p50: f64,
    p99: f64,
    max: f64,
    errors: u64,
    batch_mean: f64,
    batch_max: u64,
}

/// `clients` clients of `rows` instances each for `secs` (after a warm-up).
async fn load(s: &Served, clients: usize, rows: usize, secs: f64) -> anyhow::Result<Load> {
    let stop = Arc::new(AtomicBool::new(false));
    let warm = Duration::from_millis(500);
    let from = Instant::now() + warm;
    let tasks: Vec<_> = (0..clients)
        .map(|i| tokio::spawn(client(s.addr, rows, i as u64 + 1, from, stop.clone())))
        .collect();
    tokio::time::sleep(warm).await;
    let before = s.batches();
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let after = s.batches();
    let elapsed = t.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await??;
        lat.extend(l);
        errors += e;
    }
    lat.sort_unstable();
    let q = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let calls = (after.0 - before.0).max(1);
    Ok(Load {
        requests_per_s: lat.len() as f64 / elapsed,
        rows_per_s: (lat.len() * rows) as f64 / elapsed,
        p50: q(0.5),
        p99: q(0.99),
        max: lat.last().copied().unwrap_or(0) as f64 / 1000.0,
        errors,
        batch_mean: (after.1 - before.1) as f64 / calls as f64,
        batch_max: after.2,
    })
}

/// The raw Burn loop: `forward` on batches of `batch` rows for `secs`, on
/// this thread: rows/s.
fn raw_rows_per_s(model: &std::path::Path, batch: usize, secs: f64) -> f64 {
    use burn::tensor::activation::softmax;
    use burn::tensor::{Tensor, TensorData};
    let device = Default::default();
    let files = rill_ml::nets::ModelFiles::find(model, None).expect("saved");
    let Net::Mlp(mlp) = files.load::<Cpu>(&device).expect("model loads") else {
        unreachable!()
    };
    let mut rng = fastrand::Rng::with_seed(3);
    let data: Vec<Vec<f32>> = (0..16)
        .map(|_| (0..batch * WIDTH).map(|_| rng.f32() * 2.0 - 1.0).collect())
        .collect();
    let (mut rows, mut sink) = (0usize, 0f32);
    let t = Instant::now();
    let mut i = 0;
    while t.elapsed().as_secs_f64() < secs {
        let x = Tensor::<Cpu, 2>::from_data(
            TensorData::new(data[i % 16].clone(), [batch, WIDTH]),
            &device,
        );
        let p: Vec<f32> = softmax(mlp.forward(x), 1).into_data().to_vec().unwrap();
        sink += p[0];
        rows += batch;
        i += 1;
    }
    std::hint::black_box(sink);
    rows as f64 / t.elapsed().as_secs_f64()
}

pub async fn main(args: &[String]) -> anyhow::Result<()> {
    let secs: f64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(3.0);
    let dir = tempfile::tempdir()?;
    let device = Default::default();
    <Cpu as Backend>::seed(&device, 1);
    let arch = Arch::Mlp {
        layers: vec![WIDTH, 256, 256, 10],
    };
    let model = dir.path().join("mlp256");
    save(Net::<Cpu>::init(&arch, &device), &arch, &model).map_err(anyhow::Error::msg)?;
    println!(
        "serving benchmark: MLP 64-256-256-10 on CPU (one instance, max_batch_size 64), rill's HTTP server on loopback; closed loop, each client on one keep-alive connection sending Vertex AI :predict requests back to back; {secs} s per level after 0.5 s of warm-up"
    );
    let s = start(&model, &dir.path().join("state1"), false).await?;
    let mut at64 = None;
    for rows in [1usize, 16, 64] {
        for clients in [1usize, 16, 64] {
            let l = load(&s, clients, rows, secs).await?;
            println!(
                "  {rows:>2} instance{} x {clients:>2} clients: {:>8.0} req/s {:>9.0} rows/s   latency p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms   batches: mean {:>5.1} rows, max {:>3}{}",
                if rows == 1 { " " } else { "s" },
                l.requests_per_s,
                l.rows_per_s,
                l.p50,
                l.p99,
                l.max,
                l.batch_mean,
                l.batch_max,
                if l.errors > 0 {
                    format!("   ({} errors)", l.errors)
                } else {
                    String::new()
                }
            );
            if clients == 64 {
                at64.get_or_insert(Vec::new())
                    .push((rows, l.rows_per_s, l.batch_mean));
            }
        }
    }
    s.stop().await?;
    for (rows, served, batch) in at64.unwrap_or_default() {
        let b = (batch.round() as usize).clamp(1, 64);
        let raw = tokio::task::block_in_place(|| raw_rows_per_s(&model, b, secs));
        println!(
            "  {rows:>2} instance{} x 64 clients: served {served:>9.0} rows/s; raw Burn forward at batch {b}: {raw:>9.0} rows/s; ratio {:.3}   (goal >= 0.5)",
            if rows == 1 { " " } else { "s" },
            served / raw
        );
    }
    // the stream beside the requests
    let s = start(&model, &dir.path().join("state2"), true).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = STREAMED.load(Ordering::Relaxed);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let alone = (STREAMED.load(Ordering::Relaxed) - a) as f64 / t.elapsed().as_secs_f64();
    let a = STREAMED.load(Ordering::Relaxed);
    let t = Instant::now();
    let l = load(&s, 32, 1, secs).await?;
    let with = (STREAMED.load(Ordering::Relaxed) - a) as f64 / t.elapsed().as_secs_f64();
    println!(
        "  stream alone: {alone:>9.0} rec/s; while serving 32 clients ({:.0} req/s, p50 {:.2} ms, p99 {:.2} ms): {with:>9.0} rec/s ({:.2} of alone)",
        l.requests_per_s,
        l.p50,
        l.p99,
        with / alone
    );
    s.stop().await?;
    Ok(())
}
