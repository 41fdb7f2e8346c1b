//! `rill run --metrics-addr`: a Prometheus scrape of a running pipeline
//! (a real process, a real model, real HTTP over loopback).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rill_testing::*;

const PIPELINE: &str = "pipeline:
  name: scrape
  transforms:
    - type: Generate
      name: numbers
      config: {rate: 400, keys: 2, seed: 1}
    - type: RunInference
      name: classify
      input: numbers
      config:
        model_handler: {type: BurnMlp, config: {task: classify}}
        model: {dir: configs/models/classify}
        preprocess: '[value, value, value, value]'
        batching: {max_batch_size: 16, max_batch_delay: 5ms}
    - type: WriteToJson
      name: sink
      input: classify
      config: {path: out.jsonl}
";

/// `rill run p.yaml` on loopback, serving metrics on `metrics_addr`.
fn run_args(metrics_addr: &str) -> [&str; 6] {
    [
        "run",
        "p.yaml",
        "--listen",
        "tcp/127.0.0.1:0",
        "--metrics-addr",
        metrics_addr,
    ]
}

/// `GET path` over HTTP/1.1: (status line, body).
fn get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // (hyper keeps a connection open unless told to close it)
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The value of the sample that starts with `prefix`.
fn sample(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

/// `NAME TYPE SAMPLES` per family, as prometheus_client's parser reads
/// `text` (it raises on malformed input).
fn prometheus_parse(text: &str) -> Vec<String> {
    let setup = root().join("apps/rill/tests/prom/setup.sh");
    let py = Command::new("bash").arg(setup).output().unwrap();
    assert!(
        py.status.success(),
        "installing prometheus_client failed: {}",
        String::from_utf8_lossy(&py.stderr)
    );
    let python = String::from_utf8(py.stdout).unwrap().trim().to_owned();
    let mut child = Command::new(python)
        .arg(root().join("apps/rill/tests/prom/families.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the scrape: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_running_pipeline_can_be_scraped() {
    let dir = sandbox();
    std::fs::write(dir.path().join("p.yaml"), PIPELINE).unwrap();
    let mut child = command(dir.path(), &run_args("127.0.0.1:0"))
        .spawn()
        .unwrap();
    // the address is printed on stderr (port 0: the one picked)
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("rill printed no metrics address");
        if let Some(rest) = line.strip_prefix("metrics: http://") {
            break rest.trim_end_matches("/metrics").to_owned();
        }
    };
    let stage = "{pipeline=\"scrape\",stage=\"classify\",type=\"RunInference\"}";
    let start = Instant::now();
    let body = loop {
        let (status, body) = get(&addr, "/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK");
        if sample(&body, &format!("rill_num_inferences_total{stage}")).unwrap_or(0.0) >= 100.0 {
            break body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no inferences counted:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // the runtime's counters and the model's, per stage
    let records_in = sample(&body, &format!("rill_stage_records_in_total{stage}")).unwrap();
    assert!(records_in >= 100.0, "{body}");
    let version = "rill_model_version_info{pipeline=\"scrape\",stage=\"classify\",type=\"RunInference\",value=\"1\"} 1";
    assert!(body.contains(version), "{body}");
    for family in [
        "# TYPE rill_stage_processing_seconds histogram",
        "# TYPE rill_inference_batch_latency_micro_secs histogram",
        "# TYPE rill_model_byte_size gauge",
        "# TYPE rill_num_inferences_total counter",
    ] {
        assert_eq!(
            body.lines().filter(|l| *l == family).count(),
            1,
            "{family}\n{body}"
        );
    }
    let batch = sample(
        &body,
        &format!("rill_inference_request_batch_size_max{stage}"),
    )
    .unwrap();
    assert!((1.0..=16.0).contains(&batch), "{body}");
    let sink_in = sample(
        &body,
        "rill_stage_records_in_total{pipeline=\"scrape\",stage=\"sink\"",
    )
    .unwrap();
    assert!(sink_in >= 0.0);
    // Prometheus' own parser (prometheus_client, from PyPI) takes it
    let families = prometheus_parse(&body);
    for want in [
        "rill_stage_processing_seconds histogram",
        "rill_stage_records_in counter",
        "rill_num_inferences counter",
        "rill_inference_batch_latency_micro_secs histogram",
        "rill_model_byte_size gauge",
    ] {
        assert!(
            families.iter().any(|f| f.starts_with(&format!("{want} "))),
            "{want} not parsed: {families:?}"
        );
    }
    // later scrapes see the counters grow
    std::thread::sleep(Duration::from_millis(300));
    let (_, later) = get(&addr, "/metrics");
    assert!(
        sample(&later, &format!("rill_stage_records_in_total{stage}")).unwrap() > records_in,
        "{later}"
    );
    // OpenMetrics on request
    let mut s = TcpStream::connect(&addr).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: application/openmetrics-text;version=1.0.0\r\nConnection: close\r\n\r\n").unwrap();
    let mut om = String::new();
    s.read_to_string(&mut om).unwrap();
    assert!(om.contains("application/openmetrics-text"), "{om}");
    assert!(om.trim_end().ends_with("# EOF"), "{om}");
    // nothing else is served
    assert_eq!(get(&addr, "/").0, "HTTP/1.1 404 Not Found");
    // 200 idle connections that never send a request do not starve it
    let idle: Vec<std::net::TcpStream> = (0..200)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    let t = Instant::now();
    let (status, _) = get(&addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    // (before, 16 idle connections held every slot for 5 s each)
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "a scrape behind idle clients took {:?}",
        t.elapsed()
    );
    drop(idle);
    signal(&child, "-TERM");
    let o = wait(child, Duration::from_secs(20), "rill after SIGTERM");
    assert!(o.status.success(), "exit {:?}", o.status);
}

#[test]
fn a_taken_metrics_port_is_bad_input() {
    let dir = sandbox();
    std::fs::write(dir.path().join("p.yaml"), PIPELINE).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = rill(dir.path(), &run_args(&addr));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("--metrics-addr {addr}")), "{err}");
    assert!(
        !dir.path().join(".rill").exists(),
        "no stage started: {err}"
    );
}
