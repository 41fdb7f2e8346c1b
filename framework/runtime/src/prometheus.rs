//! The Prometheus `/metrics` endpoint (`rill run --metrics-addr ADDR`).
//!
//! Every stage this process runs, in Prometheus' text exposition format
//! (version 0.0.4), labelled `pipeline`, `stage` and `type`:
//! the runtime's counters and gauges, the processing-latency histogram, and
//! the node's own metrics (for RunInference, Beam's `num_inferences`,
//! `inference_batch_latency_micro_secs`, ...).
//!
//! The server is a small HTTP/1.1 responder on tokio: `GET /metrics` (and
//! `HEAD`), one request per connection, requests over 8 KiB refused.
//! Nothing else is served. Slow or idle clients cannot starve it: every
//! connection is accepted; a request must arrive within 2 s and be answered
//! within 5 s; and past [`MAX_CONNECTIONS`] at once, the oldest connection
//! still sending its request is dropped for the new one (a scraper sends
//! its request at once, so it is not the one dropped).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use rill_core::metrics::Metric;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::metrics::{LATENCY_BUCKETS_US, StageMetrics};

/// Connections held at once; a new one past this drops the oldest that
/// has not sent its request yet.
pub const MAX_CONNECTIONS: usize = 64;
const MAX_REQUEST: usize = 8 * 1024;
/// Time to send the request.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for the whole exchange.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One open connection: its task, and whether it is still reading its
/// request.
struct Open {
    id: u64,
    task: tokio::task::AbortHandle,
    reading: Arc<std::sync::atomic::AtomicBool>,
}

/// A label value, escaped as the text format wants.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A metric name from a node's own metric name: `[a-zA-Z0-9_]` only.
fn metric_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Writes metric families: each name's `# HELP` and `# TYPE` once, then
/// its samples for every stage.
struct Families {
    out: String,
}

impl Families {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, extra: &str, v: impl std::fmt::Display) {
        let sep = if extra.is_empty() { "" } else { "," };
        let _ = writeln!(self.out, "{name}{{{labels}{sep}{extra}}} {v}");
    }
}

/// Seconds from microseconds, as Prometheus wants base units.
fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// The text exposition of `stages`.
pub fn render(pipeline: &str, stages: &[Arc<StageMetrics>]) -> String {
    let mut f = Families { out: String::new() };
    let labels: Vec<String> = stages
        .iter()
        .map(|m| {
            format!(
                "pipeline=\"{}\",stage=\"{}\",type=\"{}\"",
                esc(pipeline),
                esc(&m.stage),
                esc(&m.type_name)
            )
        })
        .collect();
    type Read = fn(&StageMetrics) -> f64;
    let simple: [(&str, &str, &str, Read); 13] = [
        (
            "rill_stage_records_in_total",
            "counter",
            "records handed to the node (again after a restart)",
            |m| m.records_in.load(Relaxed) as f64,
        ),
        (
            "rill_stage_records_out_total",
            "counter",
            "records published on the main and named outputs",
            |m| m.records_out.load(Relaxed) as f64,
        ),
        (
            "rill_stage_errors_total",
            "counter",
            "records that failed (dead letters or stage failures)",
            |m| m.errors.load(Relaxed) as f64,
        ),
        (
            "rill_stage_restarts_total",
            "counter",
            "times the supervisor restarted the stage",
            |m| m.restarts.load(Relaxed) as f64,
        ),
        (
            "rill_stage_dropped_total",
            "counter",
            "records dropped by a drop_oldest queue",
            |m| m.dropped.load(Relaxed) as f64,
        ),
        (
            "rill_stage_timeouts_total",
            "counter",
            "calls or start-ups past the stage's timeout",
            |m| m.timeouts.load(Relaxed) as f64,
        ),
        (
            "rill_stage_foreign_messages_total",
            "counter",
            "messages from a producer epoch no live producer announced (dropped)",
            |m| m.foreign.load(Relaxed) as f64,
        ),
        (
            "rill_stage_watermark_seconds",
            "gauge",
            "the stage's event-time watermark, seconds since the epoch (absent before one is known)",
            |m| match m.watermark.load(Relaxed) {
                i64::MIN => f64::NAN,
                i64::MAX => f64::INFINITY,
                w => w as f64 / 1000.0,
            },
        ),
        (
            "rill_stage_commits_total",
            "counter",
            "durable commits of the stage's state and output log",
            |m| m.commits.load(Relaxed) as f64,
        ),
        (
            "rill_stage_commit_seconds_total",
            "counter",
            "time spent in commits",
            |m| secs(m.commit_us.load(Relaxed)),
        ),
        (
            "rill_stage_queue_depth",
            "gauge",
            "records received and not yet processed",
            |m| m.queue_depth.load(Relaxed).max(0) as f64,
        ),
        (
            "rill_stage_queue_high_water",
            "gauge",
            "highest queue depth seen",
            |m| m.queue_high_water.load(Relaxed).max(0) as f64,
        ),
        (
            "rill_stage_log_high_water",
            "gauge",
            "most records an output held unacknowledged at once",
            |m| m.log_high_water.load(Relaxed) as f64,
        ),
    ];
    for (name, kind, help, read) in simple {
        f.family(name, kind, help);
        for (m, l) in stages.iter().zip(&labels) {
            f.sample(name, l, "", read(m));
        }
    }
    let name = "rill_stage_processing_seconds";
    f.family(name, "histogram", "time the node took per call (per batch)");
    for (m, l) in stages.iter().zip(&labels) {
        let mut acc = 0;
        for (i, c) in m.latency.iter().enumerate() {
            acc += c.load(Relaxed);
            let le = match LATENCY_BUCKETS_US.get(i) {
                Some(b) => secs(*b).to_string(),
                None => "+Inf".to_owned(),
            };
            f.sample(&format!("{name}_bucket"), l, &format!("le=\"{le}\""), acc);
        }
        f.sample(&format!("{name}_sum"), l, "", secs(m.busy_us.load(Relaxed)));
        f.sample(&format!("{name}_count"), l, "", acc);
    }
    // the nodes' own metrics, by name, across stages
    let mut names: Vec<(String, &'static str)> = Vec::new();
    let snaps: Vec<Vec<(String, Arc<Metric>)>> = stages.iter().map(|m| m.node.snapshot()).collect();
    for (n, m) in snaps.iter().flatten() {
        let kind = match &**m {
            Metric::Counter(_) => "counter",
            Metric::Gauge(_) => "gauge",
            Metric::Distribution(_) => "summary",
            Metric::Label(_) => "info",
        };
        if !names.iter().any(|(x, k)| x == n && *k == kind) {
            names.push((n.clone(), kind));
        }
    }
    for (n, kind) in names {
        let base = format!("rill_{}", metric_name(&n));
        let help = format!("the node's `{n}`");
        match kind {
            "counter" => f.family(&format!("{base}_total"), "counter", &help),
            "gauge" => f.family(&base, "gauge", &help),
            "summary" => f.family(&base, "summary", &help),
            _ => f.family(&format!("{base}_info"), "gauge", &help),
        }
        for (snap, l) in snaps.iter().zip(&labels) {
            for (_, m) in snap.iter().filter(|(x, _)| *x == n) {
                match &**m {
                    Metric::Counter(c) if kind == "counter" => {
                        f.sample(&format!("{base}_total"), l, "", c.load(Relaxed))
                    }
                    Metric::Gauge(g) if kind == "gauge" => f.sample(&base, l, "", g.load(Relaxed)),
                    Metric::Distribution(d) if kind == "summary" => {
                        f.sample(&format!("{base}_sum"), l, "", d.sum());
                        f.sample(&format!("{base}_count"), l, "", d.count());
                    }
                    Metric::Label(v) if kind == "info" => f.sample(
                        &format!("{base}_info"),
                        l,
                        &format!("value=\"{}\"", esc(&v.lock().unwrap())),
                        1,
                    ),
                    _ => {}
                }
            }
        }
        // a distribution's extremes, as gauges of their own
        if kind == "summary" {
            for (suffix, what) in [("min", "smallest"), ("max", "largest")] {
                let g = format!("{base}_{suffix}");
                f.family(
                    &g,
                    "gauge",
                    &format!("the {what} value of the node's `{n}`"),
                );
                for (snap, l) in snaps.iter().zip(&labels) {
                    for (_, m) in snap.iter().filter(|(x, _)| *x == n) {
                        if let Metric::Distribution(d) = &**m
                            && d.count() > 0
                        {
                            let v = if suffix == "min" { d.min() } else { d.max() };
                            f.sample(&g, l, "", v);
                        }
                    }
                }
            }
        }
    }
    f.out
}

/// Serves `/metrics` on `listener` until the task is aborted.
pub fn serve(
    listener: TcpListener,
    pipeline: String,
    stages: Vec<Arc<StageMetrics>>,
) -> JoinHandle<()> {
    let shared = Arc::new((pipeline, stages));
    let open: Arc<std::sync::Mutex<std::collections::VecDeque<Open>>> = Arc::default();
    tokio::spawn(async move {
        let mut next_id = 0u64;
        loop {
            let (conn, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("metrics endpoint: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            next_id += 1;
            let id = next_id;
            let reading = Arc::new(std::sync::atomic::AtomicBool::new(true));
            let (shared2, open2, reading2) = (shared.clone(), open.clone(), reading.clone());
            let task = tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    answer(conn, &shared2.0, &shared2.1, &reading2),
                )
                .await;
                open2.lock().unwrap().retain(|o| o.id != id);
            });
            let mut held = open.lock().unwrap();
            held.push_back(Open {
                id,
                task: task.abort_handle(),
                reading,
            });
            if held.len() > MAX_CONNECTIONS
                && let Some(i) = held.iter().position(|o| o.reading.load(Relaxed))
                && let Some(old) = held.remove(i)
            {
                old.task.abort();
            }
        }
    })
}

async fn answer(
    mut conn: TcpStream,
    pipeline: &str,
    stages: &[Arc<StageMetrics>],
    reading: &std::sync::atomic::AtomicBool,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let read_by = tokio::time::Instant::now() + READ_TIMEOUT;
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > MAX_REQUEST {
            return reply(&mut conn, "431 Request Header Fields Too Large", "", false).await;
        }
        let n = match tokio::time::timeout_at(read_by, conn.read(&mut chunk)).await {
            Ok(n) => n?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    reading.store(false, Relaxed);
    let line = buf.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let body = render(pipeline, stages);
            reply(&mut conn, "200 OK", &body, method == "HEAD").await
        }
        ("GET" | "HEAD", _) => {
            reply(
                &mut conn,
                "404 Not Found",
                "rill serves /metrics only\n",
                method == "HEAD",
            )
            .await
        }
        _ => reply(&mut conn, "405 Method Not Allowed", "", false).await,
    }
}

async fn reply(conn: &mut TcpStream, status: &str, body: &str, head: bool) -> std::io::Result<()> {
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(header.as_bytes()).await?;
    if !head {
        conn.write_all(body.as_bytes()).await?;
    }
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_has_every_family_once_and_cumulative_buckets() {
        let a = Arc::new(StageMetrics::new("infer", "RunInference"));
        let b = Arc::new(StageMetrics::new("say \"hi\"", "MapToFields"));
        a.records_in.store(7, Relaxed);
        a.observe_latency(Duration::from_micros(40));
        a.observe_latency(Duration::from_micros(700));
        a.observe_latency(Duration::from_secs(3));
        a.node.count("num_inferences", 5);
        a.node.observe("inference_request_batch_size", 4);
        a.node.observe("inference_request_batch_size", 1);
        a.node.label("model_version", "2");
        let text = render("p", &[a, b]);
        let line = |prefix: &str| -> Vec<&str> {
            text.lines().filter(|l| l.starts_with(prefix)).collect()
        };
        assert_eq!(
            line("rill_stage_records_in_total{"),
            [
                "rill_stage_records_in_total{pipeline=\"p\",stage=\"infer\",type=\"RunInference\"} 7",
                "rill_stage_records_in_total{pipeline=\"p\",stage=\"say \\\"hi\\\"\",type=\"MapToFields\"} 0",
            ]
        );
        assert_eq!(line("# TYPE rill_stage_records_in_total").len(), 1);
        let l = "pipeline=\"p\",stage=\"infer\",type=\"RunInference\"";
        for (le, n) in [
            ("0.00001", 0),
            ("0.00005", 1),
            ("0.001", 2),
            ("1", 2),
            ("+Inf", 3),
        ] {
            let want = format!("rill_stage_processing_seconds_bucket{{{l},le=\"{le}\"}} {n}");
            assert!(text.contains(&want), "{want}\n{text}");
        }
        assert!(text.contains(&format!("rill_stage_processing_seconds_count{{{l}}} 3")));
        assert!(text.contains(&format!("rill_num_inferences_total{{{l}}} 5")));
        assert!(text.contains(&format!("rill_inference_request_batch_size_sum{{{l}}} 5")));
        assert!(text.contains(&format!("rill_inference_request_batch_size_count{{{l}}} 2")));
        assert!(text.contains(&format!("rill_inference_request_batch_size_max{{{l}}} 4")));
        assert!(text.contains(&format!("rill_model_version_info{{{l},value=\"2\"}} 1")));
        // every sample line: name{labels} number
        for s in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = s.rsplit_once(' ').unwrap();
            assert!(v.parse::<f64>().is_ok(), "{s}");
            assert!(s.contains("{pipeline=\""), "{s}");
        }
    }
}
