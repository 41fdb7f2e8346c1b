//! The Prometheus exposition of a pipeline's metrics (`/metrics` on
//! `rill run --metrics-addr ADDR`, and on every `serve.http` address).
//!
//! Every stage this process runs, labelled `pipeline`, `stage` and `type`:
//! the runtime's counters and gauges, the processing-latency histogram, the
//! node's own metrics (for RunInference, Beam's `num_inferences`,
//! `inference_batch_latency_micro_secs`, ...), and for stages that serve,
//! their request queues. The text is written by the `prometheus-client`
//! crate: Prometheus' text format 0.0.4 by default, OpenMetrics when the
//! scraper asks for it (`Accept: application/openmetrics-text`). The HTTP
//! server is [`crate::serve::http`].

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use rill_core::metrics::{DISTRIBUTION_BOUNDS, Metric};

use crate::metrics::{LATENCY_BUCKETS_US, StageMetrics};

/// The content type of the 0.0.4 text format.
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// The content type of OpenMetrics text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A metric name from a node's own metric name: `[a-zA-Z0-9_]` only.
fn metric_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Seconds from microseconds, as Prometheus wants base units.
fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// The stages of one process, read at each scrape.
#[derive(Debug)]
pub struct StagesCollector {
    pub pipeline: String,
    pub stages: Vec<Arc<StageMetrics>>,
}

type Labels = [(&'static str, String); 3];

enum Read {
    Counter(fn(&StageMetrics) -> u64),
    Seconds(fn(&StageMetrics) -> f64),
    Gauge(fn(&StageMetrics) -> i64),
    GaugeF(fn(&StageMetrics) -> f64),
}

impl StagesCollector {
    fn labels(&self, m: &StageMetrics) -> Labels {
        [
            ("pipeline", self.pipeline.clone()),
            ("stage", m.stage.clone()),
            ("type", m.type_name.clone()),
        ]
    }

    fn simple(&self, enc: &mut DescriptorEncoder, name: &str, help: &str, read: Read) -> Fmt {
        let kind = match read {
            Read::Counter(_) | Read::Seconds(_) => MetricType::Counter,
            Read::Gauge(_) | Read::GaugeF(_) => MetricType::Gauge,
        };
        let mut me = enc.encode_descriptor(name, help, None, kind)?;
        for m in &self.stages {
            let l = self.labels(m);
            let mut f = me.encode_family(&l)?;
            match read {
                Read::Counter(r) => f.encode_counter::<NoLabelSet, _, u64>(&r(m), None)?,
                Read::Seconds(r) => f.encode_counter::<NoLabelSet, _, f64>(&r(m), None)?,
                Read::Gauge(r) => f.encode_gauge(&r(m))?,
                Read::GaugeF(r) => f.encode_gauge(&r(m))?,
            }
        }
        Ok(())
    }
}

type Fmt = Result<(), std::fmt::Error>;

impl Collector for StagesCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Fmt {
        use Read::{Counter, Gauge, GaugeF, Seconds};
        let simple: [(&str, &str, Read); 14] = [
            (
                "rill_stage_records_in",
                "records handed to the node (again after a restart)",
                Counter(|m| m.records_in.load(Relaxed)),
            ),
            (
                "rill_stage_records_out",
                "records published on the main and named outputs",
                Counter(|m| m.records_out.load(Relaxed)),
            ),
            (
                "rill_stage_errors",
                "records that failed (dead letters or stage failures)",
                Counter(|m| m.errors.load(Relaxed)),
            ),
            (
                "rill_stage_restarts",
                "times the supervisor restarted the stage",
                Counter(|m| m.restarts.load(Relaxed)),
            ),
            (
                "rill_stage_dropped",
                "records dropped by a drop_oldest queue",
                Counter(|m| m.dropped.load(Relaxed)),
            ),
            (
                "rill_stage_timeouts",
                "calls or start-ups past the stage's timeout",
                Counter(|m| m.timeouts.load(Relaxed)),
            ),
            (
                "rill_stage_foreign_messages",
                "messages from a producer epoch no live producer announced (dropped)",
                Counter(|m| m.foreign.load(Relaxed)),
            ),
            (
                "rill_stage_watermark_seconds",
                "the stage's event-time watermark, seconds since the epoch (NaN before one is known)",
                GaugeF(|m| match m.watermark.load(Relaxed) {
                    i64::MIN => f64::NAN,
                    i64::MAX => f64::INFINITY,
                    w => w as f64 / 1000.0,
                }),
            ),
            (
                "rill_stage_commits",
                "durable commits of the stage's state and output log",
                Counter(|m| m.commits.load(Relaxed)),
            ),
            (
                "rill_stage_commit_seconds",
                "time spent in commits",
                Seconds(|m| secs(m.commit_us.load(Relaxed))),
            ),
            (
                "rill_stage_queue_depth",
                "records received and not yet processed",
                Gauge(|m| m.queue_depth.load(Relaxed).max(0)),
            ),
            (
                "rill_stage_queue_high_water",
                "highest queue depth seen",
                Gauge(|m| m.queue_high_water.load(Relaxed).max(0)),
            ),
            (
                "rill_stage_log_high_water",
                "most records an output held unacknowledged at once",
                Gauge(|m| m.log_high_water.load(Relaxed) as i64),
            ),
            (
                "rill_peer_unreachable_seconds",
                "how long a consumer of the stage's outputs with records to acknowledge has been unreachable (0: none is)",
                GaugeF(|m| m.unreachable_ms.load(Relaxed) as f64 / 1000.0),
            ),
        ];
        for (name, help, read) in simple {
            self.simple(&mut enc, name, help, read)?;
        }
        {
            let mut me = enc.encode_descriptor(
                "rill_stage_processing_seconds",
                "time the node took per call (per batch)",
                None,
                MetricType::Histogram,
            )?;
            for m in &self.stages {
                let l = self.labels(m);
                let buckets: Vec<(f64, u64)> = m
                    .latency
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let le = LATENCY_BUCKETS_US
                            .get(i)
                            .map_or(f64::INFINITY, |b| secs(*b));
                        (le, c.load(Relaxed))
                    })
                    .collect();
                let count = buckets.iter().map(|(_, c)| c).sum();
                me.encode_family(&l)?.encode_histogram::<NoLabelSet>(
                    secs(m.busy_us.load(Relaxed)),
                    count,
                    &buckets,
                    None,
                )?;
            }
        }
        self.node_metrics(&mut enc)?;
        self.serving(&mut enc)
    }
}

impl StagesCollector {
    /// The nodes' own metrics, by name, across stages.
    fn node_metrics(&self, enc: &mut DescriptorEncoder) -> Fmt {
        let snaps: Vec<Vec<(String, Arc<Metric>)>> =
            self.stages.iter().map(|m| m.node.snapshot()).collect();
        let mut names: Vec<(String, MetricType)> = Vec::new();
        for (n, m) in snaps.iter().flatten() {
            let kind = match &**m {
                Metric::Counter(_) => MetricType::Counter,
                Metric::Gauge(_) => MetricType::Gauge,
                Metric::Distribution(_) => MetricType::Histogram,
                Metric::Label(_) => MetricType::Info,
            };
            if !names.iter().any(|(x, k)| x == n && *k == kind) {
                names.push((n.clone(), kind));
            }
        }
        for (n, kind) in names {
            let base = format!("rill_{}", metric_name(&n));
            let help = format!("the node's `{n}`");
            {
                let mut me = enc.encode_descriptor(&base, &help, None, kind)?;
                for (snap, st) in snaps.iter().zip(&self.stages) {
                    let l = self.labels(st);
                    for (_, m) in snap.iter().filter(|(x, _)| *x == n) {
                        encode_node_metric(&mut me, &l, m, kind)?;
                    }
                }
            }
            // a distribution's extremes, as gauges of their own
            if kind == MetricType::Histogram {
                for (suffix, what) in [("min", "smallest"), ("max", "largest")] {
                    let g = format!("{base}_{suffix}");
                    let help = format!("the {what} value of the node's `{n}`");
                    let mut me = enc.encode_descriptor(&g, &help, None, MetricType::Gauge)?;
                    for (snap, st) in snaps.iter().zip(&self.stages) {
                        let l = self.labels(st);
                        for (_, m) in snap.iter().filter(|(x, _)| *x == n) {
                            if let Metric::Distribution(d) = &**m
                                && d.count() > 0
                            {
                                let v = if suffix == "min" { d.min() } else { d.max() };
                                me.encode_family(&l)?.encode_gauge(&v)?;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The request queues of stages that serve.
    fn serving(&self, enc: &mut DescriptorEncoder) -> Fmt {
        let served: Vec<_> = self
            .stages
            .iter()
            .filter_map(|m| m.requests.get().map(|q| (m, q)))
            .collect();
        if served.is_empty() {
            return Ok(());
        }
        type Q = rill_core::serve::RequestQueue;
        type Family = (&'static str, &'static str, MetricType, fn(&Q) -> u64);
        let families: [Family; 5] = [
            (
                "rill_serve_requests",
                "requests answered by the stage's node",
                MetricType::Counter,
                |q| q.served_requests.load(Relaxed),
            ),
            (
                "rill_serve_rows",
                "request rows (instances) answered by the stage's node",
                MetricType::Counter,
                |q| q.served_rows.load(Relaxed),
            ),
            (
                "rill_serve_expired",
                "requests whose deadline passed while they waited",
                MetricType::Counter,
                |q| q.expired.load(Relaxed),
            ),
            (
                "rill_serve_queue_full",
                "requests refused because the request queue was full (HTTP 429)",
                MetricType::Counter,
                |q| q.refused_full.load(Relaxed),
            ),
            (
                "rill_serve_queue_rows",
                "request rows waiting for the node",
                MetricType::Gauge,
                |q| q.waiting_rows.load(Relaxed) as u64,
            ),
        ];
        for (name, help, kind, read) in families {
            let mut me = enc.encode_descriptor(name, help, None, kind)?;
            for (m, q) in &served {
                let l = self.labels(m);
                let mut f = me.encode_family(&l)?;
                if kind == MetricType::Counter {
                    f.encode_counter::<NoLabelSet, _, u64>(&read(q), None)?;
                } else {
                    f.encode_gauge(&read(q))?;
                }
            }
        }
        Ok(())
    }
}

fn encode_node_metric(me: &mut MetricEncoder, l: &Labels, m: &Metric, kind: MetricType) -> Fmt {
    match m {
        Metric::Counter(c) if kind == MetricType::Counter => me
            .encode_family(l)?
            .encode_counter::<NoLabelSet, _, u64>(&c.load(Relaxed), None),
        Metric::Gauge(g) if kind == MetricType::Gauge => {
            me.encode_family(l)?.encode_gauge(&g.load(Relaxed))
        }
        Metric::Distribution(d) if kind == MetricType::Histogram => {
            // powers of two up to the first at or above the largest value
            // seen (the rest are empty), then +Inf
            let counts = d.buckets();
            let top = DISTRIBUTION_BOUNDS
                .iter()
                .position(|b| *b >= d.max())
                .unwrap_or(DISTRIBUTION_BOUNDS.len());
            let mut buckets: Vec<(f64, u64)> = (0..top.min(DISTRIBUTION_BOUNDS.len() - 1) + 1)
                .map(|i| (DISTRIBUTION_BOUNDS[i] as f64, counts[i]))
                .collect();
            let rest: u64 = counts[buckets.len()..].iter().sum();
            buckets.push((f64::INFINITY, rest));
            me.encode_family(l)?.encode_histogram::<NoLabelSet>(
                d.sum() as f64,
                d.count(),
                &buckets,
                None,
            )
        }
        Metric::Label(v) if kind == MetricType::Info => {
            let v = v.lock().unwrap().clone();
            me.encode_family(l)?.encode_info(&[("value", v)])
        }
        _ => Ok(()),
    }
}

/// A registry holding `stages` (read at each scrape).
pub fn registry(pipeline: &str, stages: &[Arc<StageMetrics>]) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(StagesCollector {
        pipeline: pipeline.to_owned(),
        stages: stages.to_vec(),
    }));
    r
}

/// The text exposition (format 0.0.4) of `stages`.
pub fn render(pipeline: &str, stages: &[Arc<StageMetrics>]) -> String {
    render_registry(&registry(pipeline, stages), false)
}

/// `registry` as text: OpenMetrics, or Prometheus' 0.0.4 format.
pub fn render_registry(registry: &Registry, openmetrics: bool) -> String {
    let mut out = String::new();
    let r = if openmetrics {
        prometheus_client::encoding::text::encode(&mut out, registry)
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, registry)
    };
    // writing to a String fails only on a metric's own formatting error
    if let Err(e) = r {
        tracing::warn!("metrics exposition failed: {e}");
    }
    out
}

/// Serves `/metrics` alone on `listener` until the task is aborted.
pub fn serve(
    listener: tokio::net::TcpListener,
    pipeline: String,
    stages: Vec<Arc<StageMetrics>>,
) -> tokio::task::JoinHandle<()> {
    let app = crate::serve::http::router(crate::serve::http::HttpConfig {
        pipeline,
        stages,
        served: Vec::new(),
        max_body: 1 << 20,
    });
    crate::serve::http::spawn(listener, app)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
            ("1e-05", 0),
            ("5e-05", 1),
            ("0.001", 2),
            ("1", 2),
            ("+Inf", 3),
        ] {
            let want = format!("rill_stage_processing_seconds_bucket{{{l},le=\"{le}\"}} {n}");
            assert!(text.contains(&want), "{want}\n{text}");
        }
        assert!(text.contains(&format!("rill_stage_processing_seconds_count{{{l}}} 3")));
        assert!(text.contains(&format!("rill_num_inferences_total{{{l}}} 5")));
        assert!(text.contains(&format!("rill_inference_request_batch_size_sum{{{l}}} 5.0")));
        // a distribution is a histogram of power-of-two buckets up to its max
        assert!(text.contains("# TYPE rill_inference_request_batch_size histogram"));
        for (le, n) in [("1", 1), ("2", 1), ("4", 2), ("+Inf", 2)] {
            let want = format!("rill_inference_request_batch_size_bucket{{{l},le=\"{le}\"}} {n}");
            assert!(text.contains(&want), "{want}\n{text}");
        }
        assert!(
            !text.contains("le=\"8\""),
            "no buckets past the largest value"
        );
        assert!(text.contains(&format!("rill_inference_request_batch_size_count{{{l}}} 2")));
        assert!(text.contains(&format!("rill_inference_request_batch_size_max{{{l}}} 4")));
        assert!(text.contains(&format!("rill_model_version_info{{{l},value=\"2\"}} 1")));
        // every sample line: name{labels} number
        for s in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = s.rsplit_once(' ').unwrap();
            assert!(v.parse::<f64>().is_ok(), "{s}");
            assert!(s.contains("{pipeline=\""), "{s}");
        }
        // OpenMetrics on request
        let a = Arc::new(StageMetrics::new("infer", "RunInference"));
        let om = render_registry(&registry("p", &[a]), true);
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(om.contains("# TYPE rill_stage_records_in counter"), "{om}");
    }
}
