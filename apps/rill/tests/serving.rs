//! Online serving (`serve:`): a `RunInference` stage answers requests
//! beside its stream. Real `rill run` processes, real HTTP over loopback
//! (a plain HTTP/1.1 client written here, and Triton's own Python client
//! `tritonclient[http]`), a real Zenoh query, the real classify model.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rill_testing::*;
use serde_json::{Value as Json, json};

/// The classify pipeline (holdout readings → classify → predictions) with
/// `serve:` on the classify stage; `serve_extra` adds keys to `serve`,
/// `stage_extra` to the stage.
fn pipeline(serve_extra: &str, stage_extra: &str, model_dir: &Path, data: &Path) -> String {
    format!(
        r#"pipeline:
  name: served
  transforms:
    - type: ReadFromJson
      name: readings
      config: {{path: "{data}", key: machine}}
    - type: RunInference
      name: classify
      input: readings
      resources: {{device: cpu, cpu_threads: 1}}
      serve: {{http: 127.0.0.1:0, zenoh: true{serve_extra}}}
{stage_extra}      config:
        model_handler:
          type: BurnMlp
          config: {{task: classify, labels: [normal, overheating, bearing_wear]}}
        model: {{dir: "{model}", watch: true, poll: 100ms}}
        preprocess:
          callable: |
            lambda row: [(row.temp - 60.0) / 10.0, (row.vibration - 0.3) / 0.2,
                         (row.current - 10.0) / 2.0, (row.pressure - 3.0) / 0.3]
        batching: {{max_batch_size: 64, max_batch_delay: 5ms}}
    - type: WriteToJson
      input: classify
      config: {{path: out.jsonl}}
"#,
        data = data.display(),
        model = model_dir.display(),
    )
}

fn holdout() -> std::path::PathBuf {
    root().join("configs/data/classify-holdout.jsonl")
}

/// A copy of the classify model's folder (tests add versions to it).
fn model_copy(dir: &Path) -> std::path::PathBuf {
    let m = dir.join("models/classify/1");
    std::fs::create_dir_all(&m).unwrap();
    for f in ["model.mpk", "model.json"] {
        std::fs::copy(root().join("configs/models/classify/1").join(f), m.join(f)).unwrap();
    }
    dir.join("models/classify")
}

/// A running `rill run`: its process, HTTP address and Zenoh port.
struct Server {
    child: Option<Child>,
    addr: String,
    zenoh_port: u16,
    lines: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start(dir: &Path, yaml: &str, env: &[(&str, &str)]) -> Server {
    std::fs::write(dir.join("p.yaml"), yaml).unwrap();
    let zenoh_port = free_port();
    let listen = format!("tcp/127.0.0.1:{zenoh_port}");
    let mut cmd = command(dir, &["run", "p.yaml", "--listen", &listen]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // the address is printed on stderr (port 0: the one picked)
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("rill printed no serving address");
        if let Some((_, rest)) = line.split_once(" on http://") {
            break rest.split(':').take(2).collect::<Vec<_>>().join(":");
        }
    };
    Server {
        child: Some(child),
        addr,
        zenoh_port,
        lines: rx,
    }
}

/// One HTTP/1.1 exchange: (status, headers, body).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut text = Vec::new();
    s.read_to_end(&mut text).unwrap();
    let text = String::from_utf8_lossy(&text).into_owned();
    let (h, b) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = h
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, h.to_owned(), b.to_owned())
}

fn post(addr: &str, path: &str, body: &Json) -> (u16, String, Json) {
    let (s, h, b) = http(addr, "POST", path, &[], body.to_string().as_bytes());
    (s, h, serde_json::from_str(&b).unwrap_or(Json::String(b)))
}

fn fields(r: &Json) -> Json {
    json!({"temp": r["temp"], "vibration": r["vibration"], "current": r["current"], "pressure": r["pressure"]})
}

fn zenoh_query(port: u16, key: &str, body: &Json) -> Result<Json, Json> {
    use zenoh::Wait;
    let config = zenoh::Config::from_json5(&format!(
        r#"{{ mode: "client", connect: {{ endpoints: ["tcp/127.0.0.1:{port}"] }},
             scouting: {{ multicast: {{ enabled: false }} }} }}"#
    ))
    .unwrap();
    let s = zenoh::open(config).wait().unwrap();
    let replies = s
        .get(key)
        .payload(body.to_string())
        .timeout(Duration::from_secs(10))
        .wait()
        .unwrap();
    let reply = replies.recv().expect("a reply");
    let r = match reply.result() {
        Ok(sample) => Ok(serde_json::from_slice(&sample.payload().to_bytes()).unwrap()),
        Err(e) => Err(serde_json::from_slice(&e.payload().to_bytes()).unwrap()),
    };
    let _ = s.close().wait();
    r
}

#[test]
fn requests_get_the_streams_predictions_over_every_protocol() {
    let dir = sandbox();
    let model = model_copy(dir.path());
    let srv = start(dir.path(), &pipeline("", "", &model, &holdout()), &[]);
    let addr = srv.addr.clone();
    // the stream: every holdout reading classified, then the stage serves on
    wait_lines(&dir.path().join("out.jsonl"), 1000);
    let stream = read_jsonl(&dir.path().join("out.jsonl"));
    let by_id = |id: i64| stream.iter().find(|r| r["id"] == id).unwrap().clone();
    let inputs: Vec<Json> = read_jsonl(&holdout()).into_iter().take(40).collect();

    // health and metadata
    assert_eq!(http(&addr, "GET", "/v2/health/live", &[], b"").0, 200);
    assert_eq!(http(&addr, "GET", "/v2/health/ready", &[], b"").0, 200);
    let (s, _, meta) = http(&addr, "GET", "/v2/models/classify", &[], b"");
    assert_eq!(s, 200, "{meta}");
    let meta: Json = serde_json::from_str(&meta).unwrap();
    let names: Vec<&str> = meta["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["temp", "vibration", "current", "pressure"]);

    // Vertex AI: one request of 40 instances
    let instances: Vec<Json> = inputs.iter().map(fields).collect();
    let (s, _, v) = post(
        &addr,
        "/v1/models/classify:predict",
        &json!({ "instances": instances }),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["deployedModelId"], "classify");
    assert_eq!(v["model"], "classify");
    assert_eq!(v["modelVersionId"], "1");
    for (i, r) in inputs.iter().enumerate() {
        let want = by_id(r["id"].as_i64().unwrap());
        assert_eq!(v["predictions"][i], want["inference"], "instance {i}");
    }

    // KServe v2 with JSON tensors, one request per row (concurrently, so
    // they share batches)
    let handles: Vec<_> = inputs
        .iter()
        .take(16)
        .cloned()
        .map(|r| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let t = |n: &str| json!({"name": n, "shape": [1], "datatype": "FP64", "data": [r[n]]});
                let body = json!({"id": format!("r{}", r["id"]), "inputs": [t("temp"), t("vibration"), t("current"), t("pressure")]});
                (r, post(&addr, "/v2/models/classify/infer", &body))
            })
        })
        .collect();
    for h in handles {
        let (r, (s, _, k)) = h.join().unwrap();
        assert_eq!(s, 200, "{k}");
        let want = by_id(r["id"].as_i64().unwrap());
        assert_eq!(k["id"], format!("r{}", r["id"]));
        assert_eq!(k["model_name"], "classify");
        assert_eq!(k["model_version"], "1");
        let out = |n: &str| {
            k["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["name"] == n)
                .unwrap()
                .clone()
        };
        assert_eq!(out("label")["data"][0], want["inference"]["label"]);
        assert_eq!(out("score")["data"][0], want["inference"]["score"]);
        assert_eq!(out("probabilities")["shape"], json!([1, 3]));
        assert_eq!(
            out("probabilities")["data"],
            want["inference"]["probabilities"]
        );
    }

    // Triton's own client, binary inputs (its default)
    let python = python_env(&root().join("apps/rill/tests/serving/setup.sh"));
    let mut py = Command::new(python)
        .arg(root().join("apps/rill/tests/serving/triton.py"))
        .arg(&addr)
        .arg("classify")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rows: String = inputs.iter().map(|r| format!("{}\n", fields(r))).collect();
    py.stdin.take().unwrap().write_all(rows.as_bytes()).unwrap();
    let o = py.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "tritonclient: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let got: Vec<Json> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), inputs.len() + 1);
    for (i, r) in inputs.iter().enumerate() {
        let want = by_id(r["id"].as_i64().unwrap());
        assert_eq!(got[i]["label"], want["inference"]["label"], "row {i}");
        assert_eq!(got[i]["score"], want["inference"]["score"], "row {i}");
        assert_eq!(
            got[i]["probabilities"], want["inference"]["probabilities"],
            "row {i}"
        );
        assert_eq!(got[i]["model_version"], "1");
        assert_eq!(got[i]["id"], "triton-1");
    }
    let bad = got.last().unwrap()["bad_request"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        bad.contains("input `nope` is not one of the model's inputs"),
        "{bad}"
    );

    // the Zenoh queryable takes the same JSON
    let key = "rill/served/classify/predict";
    let z = zenoh_query(
        srv.zenoh_port,
        key,
        &json!({"instances": [fields(&inputs[0])]}),
    )
    .unwrap();
    assert_eq!(
        z["predictions"][0],
        by_id(inputs[0]["id"].as_i64().unwrap())["inference"]
    );
    let e = zenoh_query(srv.zenoh_port, key, &json!({"instances": [{"temp": 1}]})).unwrap_err();
    assert_eq!(e["code"], 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("instance 0"), "{e}");

    // served rows are counted apart from the stream's records
    let (_, _, m) = http(&addr, "GET", "/metrics", &[], b"");
    let served = m
        .lines()
        .find(|l| l.starts_with("rill_serve_rows_total{"))
        .unwrap();
    // (the Zenoh request with a bad instance was answered too)
    assert!(
        served.ends_with(&format!(" {}", 40 + 16 + 40 + 1 + 1)),
        "{served}"
    );
    let stage_in = m
        .lines()
        .find(|l| {
            l.starts_with("rill_stage_records_in_total{pipeline=\"served\",stage=\"classify\"")
        })
        .unwrap();
    assert!(stage_in.ends_with(" 1000"), "{stage_in}");
    // and nothing a request sent reached the stream's sink
    assert_eq!(lines(&dir.path().join("out.jsonl")), 1000);
    let mut child = srv;
    let c = child.child.take().unwrap();
    signal(&c, "-TERM");
    let o = wait(c, Duration::from_secs(30), "rill after SIGTERM");
    assert!(o.status.success(), "exit {:?}", o.status);
}

#[test]
fn bad_requests_deadlines_full_queues_and_tokens_are_answered() {
    let dir = sandbox();
    let model = model_copy(dir.path());
    let yaml = pipeline(
        ", queue: 4, max_batch_delay: 1500ms, timeout: 5s, max_body: 2KiB, token_env: RILL_TEST_SERVE_TOKEN",
        "",
        &model,
        &holdout(),
    );
    let srv = start(dir.path(), &yaml, &[("RILL_TEST_SERVE_TOKEN", "s3cret")]);
    let addr = srv.addr.clone();
    wait_lines(&dir.path().join("out.jsonl"), 1000);
    let auth = [("Authorization", "Bearer s3cret")];
    let send = |path: &str, body: &Json, h: &[(&str, &str)]| {
        let (s, head, b) = http(&addr, "POST", path, h, body.to_string().as_bytes());
        (
            s,
            head,
            serde_json::from_str::<Json>(&b).unwrap_or(Json::String(b)),
        )
    };
    let one = json!({"instances": [{"temp": 79.3, "vibration": 0.238, "current": 14.379, "pressure": 3.37}]});

    // the token: none or a wrong one is 401; health stays open
    let (s, head, _) = send("/v1/models/classify:predict", &one, &[]);
    assert_eq!(s, 401);
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    assert_eq!(
        send(
            "/v1/models/classify:predict",
            &one,
            &[("Authorization", "Bearer s3cre")]
        )
        .0,
        401
    );
    assert_eq!(http(&addr, "GET", "/v2/health/ready", &[], b"").0, 200);

    // bad bodies are 400s naming the problem, and the stage runs on
    let (s, _, b) = http(
        &addr,
        "POST",
        "/v1/models/classify:predict",
        &auth,
        b"{\"instances\": [",
    );
    assert_eq!(s, 400);
    assert!(b.contains("not valid JSON"), "{b}");
    let (s, _, b) = send(
        "/v1/models/classify:predict",
        &json!({"instances": [{"temp": 1.0}]}),
        &auth,
    );
    assert_eq!(s, 400);
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .starts_with("instance 0: preprocess"),
        "{b}"
    );
    let (s, _, b) = send(
        "/v2/models/classify/infer",
        &json!({"inputs": [{"name": "temp", "shape": [2], "datatype": "FP32", "data": [1]}]}),
        &auth,
    );
    assert_eq!(s, 400);
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("holds 2 elements, `data` has 1"),
        "{b}"
    );
    let (s, _, b) = send("/v1/models/nope:predict", &one, &auth);
    assert_eq!(s, 404);
    assert!(
        b["error"].as_str().unwrap().contains("served: classify"),
        "{b}"
    );
    // a body past max_body: 413
    let big = json!({"instances": vec![json!({"temp": 1.0, "vibration": 1.0, "current": 1.0, "pressure": 1.0}); 60]});
    assert_eq!(send("/v1/models/classify:predict", &big, &auth).0, 413);

    // a deadline: requests alone wait 1.5 s for company, this one asks
    // for 100 ms and is answered 504 in about that time
    let t = Instant::now();
    let (s, _, b) = send("/v1/models/classify:predict?timeout_ms=100", &one, &auth);
    assert_eq!(s, 504, "{b}");
    assert!(
        b["error"].as_str().unwrap().contains("deadline of 100 ms"),
        "{b}"
    );
    assert!(
        t.elapsed() < Duration::from_millis(1200),
        "{:?}",
        t.elapsed()
    );

    // a full queue: 4 rows wait (1.5 s for company); one more is 429 at
    // once with Retry-After; more rows than the queue holds is 413
    let four = json!({"instances": vec![one["instances"][0].clone(); 4]});
    let a = {
        let (addr, four) = (addr.clone(), four.clone());
        std::thread::spawn(move || {
            let (s, _, b) = http(
                &addr,
                "POST",
                "/v1/models/classify:predict",
                &[("Authorization", "Bearer s3cret")],
                four.to_string().as_bytes(),
            );
            (s, b)
        })
    };
    // (once the four rows wait in the queue)
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, m) = http(&addr, "GET", "/metrics", &[], b"");
        if m.lines()
            .any(|l| l.starts_with("rill_serve_queue_rows{") && l.ends_with(" 4"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the four rows never waited: {m}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (s, head, b) = send("/v1/models/classify:predict", &one, &auth);
    assert_eq!(s, 429, "{b}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    assert!(
        b["error"].as_str().unwrap().contains("queue is full"),
        "{b}"
    );
    let five = json!({"instances": vec![one["instances"][0].clone(); 5]});
    assert_eq!(send("/v1/models/classify:predict", &five, &auth).0, 413);
    let (s, b) = a.join().unwrap();
    assert_eq!(s, 200, "{b}");

    // none of it failed the stage
    let (_, _, m) = http(&addr, "GET", "/metrics", &[], b"");
    let restarts = m
        .lines()
        .find(|l| l.starts_with("rill_stage_restarts_total{pipeline=\"served\",stage=\"classify\""))
        .unwrap();
    assert!(restarts.ends_with(" 0"), "{restarts}");
    assert!(
        m.lines()
            .any(|l| l.starts_with("rill_serve_queue_full_total{") && !l.ends_with(" 0")),
        "{m}"
    );
    let (s, _, b) = send("/v1/models/classify:predict", &one, &auth);
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["predictions"][0]["label"], "overheating");
    drop(srv);
}

#[test]
fn a_hot_swap_under_load_loses_no_request() {
    let dir = sandbox();
    let model = model_copy(dir.path());
    let srv = start(dir.path(), &pipeline("", "", &model, &holdout()), &[]);
    let addr = srv.addr.clone();
    wait_lines(&dir.path().join("out.jsonl"), 1000);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let one = json!({"instances": [{"temp": 79.3, "vibration": 0.238, "current": 14.379, "pressure": 3.37}]});
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (s, _, b) = post(&addr, "/v1/models/classify:predict?timeout_ms=5000", &one);
                    seen.push((s, b["modelVersionId"].as_str().unwrap_or("").to_owned(), b));
                }
                seen
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // version 2 lands (written file by file into a new folder, as a copy
    // does), then a broken version 3
    let v2 = model.join("2");
    std::fs::create_dir_all(&v2).unwrap();
    for f in ["model.json", "model.mpk"] {
        std::fs::copy(model.join("1").join(f), v2.join(f)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    loop {
        let (_, _, b) = post(
            &addr,
            "/v1/models/classify:predict",
            &json!({"instances": [{"temp": 1.0, "vibration": 1.0, "current": 1.0, "pressure": 1.0}]}),
        );
        if b["modelVersionId"] == "2" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "version 2 never answered: {b}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let v3 = model.join("3");
    std::fs::create_dir_all(&v3).unwrap();
    std::fs::copy(model.join("1/model.json"), v3.join("model.json")).unwrap();
    std::fs::write(v3.join("model.mpk"), b"not a model").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let seen = c.join().unwrap();
        total += seen.len();
        // the swap landed while this client was at work: it was answered
        // by version 1 before, and by version 2 after
        let by_1 = seen.iter().filter(|(_, v, _)| v == "1").count();
        assert!(
            by_1 > 0,
            "no request of this client was answered before the swap"
        );
        let mut was = "1".to_owned();
        for (s, v, b) in seen {
            assert_eq!(s, 200, "a request failed during the swap: {b}");
            assert!(v == "1" || v == "2", "answered by version {v}: {b}");
            assert!(v >= was, "version went back from {was} to {v}");
            was = v;
            assert_eq!(b["predictions"][0]["label"], "overheating");
        }
        assert_eq!(was, "2", "the client ended on version 2");
    }
    assert!(total > 20, "only {total} requests under load");
    let (_, _, m) = http(&addr, "GET", "/metrics", &[], b"");
    assert!(m.contains("rill_refused_model_versions_total{pipeline=\"served\",stage=\"classify\",type=\"RunInference\"} 1"), "{m}");
    let (_, _, meta) = http(&addr, "GET", "/v2/models/classify", &[], b"");
    assert!(meta.contains("\"versions\":[\"2\"]"), "{meta}");
    drop(srv);
}

#[test]
fn a_failing_stage_answers_503_instead_of_hanging() {
    let dir = sandbox();
    let model = model_copy(dir.path());
    // the stream is a followed file: a reading the model cannot take (no
    // error_handling) fails the stage, again after each restart
    let data = dir.path().join("readings.jsonl");
    std::fs::copy(holdout(), &data).unwrap();
    let yaml = pipeline(
        ", timeout: 3s",
        "      restart: {max_restarts: 3, backoff: {initial: 700ms, max: 700ms}}\n",
        &model,
        &data,
    )
    .replace("key: machine}", "key: machine, follow: true}");
    let mut srv = start(dir.path(), &yaml, &[]);
    let addr = srv.addr.clone();
    wait_lines(&dir.path().join("out.jsonl"), 1000);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let one = json!({"instances": [{"temp": 79.3, "vibration": 0.238, "current": 14.379, "pressure": 3.37}]});
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t = Instant::now();
                    let Ok(mut s) = TcpStream::connect(&addr) else { break };
                    let body = one.to_string();
                    let _ = write!(s, "POST /v1/models/classify:predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                    let mut text = String::new();
                    if s.read_to_string(&mut text).is_err() || text.is_empty() {
                        break;
                    }
                    let status: u16 = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
                    seen.push((status, t.elapsed(), text));
                    if status != 200 {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                seen
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&data)
        .unwrap();
    writeln!(f, "{{\"id\": 5000, \"machine\": \"m-x\", \"temp\": \"hot\", \"vibration\": 0.2, \"current\": 10.0, \"pressure\": 3.0}}").unwrap();
    drop(f);
    // the pipeline fails after its restarts
    let c = srv.child.take().unwrap();
    let o = wait(c, Duration::from_secs(60), "rill after the bad reading");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(!o.status.success(), "the stage was to fail");
    let mut unavailable = 0;
    let mut ok_before = 0;
    for c in clients {
        for (status, took, text) in c.join().unwrap() {
            assert!(
                took < Duration::from_secs(4),
                "a request hung for {took:?}: {text}"
            );
            match status {
                200 => ok_before += 1,
                503 => {
                    unavailable += 1;
                    assert!(
                        text.to_ascii_lowercase().contains("retry-after: 1"),
                        "{text}"
                    );
                    assert!(text.contains("classify"), "{text}");
                }
                s => panic!("unexpected status {s}: {text}"),
            }
        }
    }
    assert!(ok_before > 0, "no request was answered before the failure");
    assert!(
        unavailable > 0,
        "no request was answered 503 while the stage restarted"
    );
    let _ = srv.lines.try_recv();
}

#[test]
fn serve_mistakes_are_bad_input() {
    let dir = sandbox();
    let model = model_copy(dir.path());
    // on a node that does not answer requests
    let bad = pipeline("", "", &model, &holdout()).replace(
        "      config: {path: out.jsonl}",
        "      serve: {http: true}\n      config: {path: out.jsonl}",
    );
    std::fs::write(dir.path().join("p.yaml"), bad).unwrap();
    let o = rill(dir.path(), &["validate", "p.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("p.yaml:") && err.contains("`WriteToJson` does not answer requests"),
        "{err}"
    );
    // neither http nor zenoh; an address that is not one
    for (serve, want) in [
        ("{queue: 10}", "`serve` needs `http"),
        ("{http: 'somewhere:80'}", "is not an address"),
        ("{http: true, share: 0}", "`serve.share` must be in (0, 1]"),
    ] {
        let y = pipeline("", "", &model, &holdout()).replace(
            "serve: {http: 127.0.0.1:0, zenoh: true}",
            &format!("serve: {serve}"),
        );
        std::fs::write(dir.path().join("p.yaml"), y).unwrap();
        let o = rill(dir.path(), &["validate", "p.yaml"]);
        assert_eq!(o.status.code(), Some(2), "{serve}");
        assert!(stderr(&o).contains(want), "{serve}: {}", stderr(&o));
    }
    // a token variable that is not set, and a taken port: exit 2 before
    // any stage starts
    let y = pipeline(
        ", token_env: RILL_TEST_NOT_SET_ANYWHERE",
        "",
        &model,
        &holdout(),
    );
    std::fs::write(dir.path().join("p.yaml"), y).unwrap();
    let o = rill(dir.path(), &["run", "p.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("RILL_TEST_NOT_SET_ANYWHERE"),
        "{}",
        stderr(&o)
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let y = pipeline("", "", &model, &holdout())
        .replace("http: 127.0.0.1:0", &format!("http: 127.0.0.1:{port}"));
    std::fs::write(dir.path().join("p.yaml"), y).unwrap();
    let o = rill(dir.path(), &["run", "p.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(&format!("stage `classify`: serve.http 127.0.0.1:{port}")),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("out.jsonl").exists(), "no stage started");
}

#[test]
fn rill_serve_serves_a_model_folder() {
    let dir = sandbox();
    let model = model_copy(dir.path());
    let port = free_port();
    let http_addr = format!("127.0.0.1:{port}");
    let mut child = command(
        dir.path(),
        &[
            "serve",
            model.to_str().unwrap(),
            "--handler-config",
            "{task: classify, labels: [normal, overheating, bearing_wear]}",
            "--preprocess",
            "[(temp - 60.0) / 10.0, (vibration - 0.3) / 0.2, (current - 10.0) / 2.0, (pressure - 3.0) / 0.3]",
            "--http",
            &http_addr,
            "--device",
            "cpu",
        ],
    )
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    let t = Instant::now();
    let body = json!({"instances": [{"temp": 79.3, "vibration": 0.238, "current": 14.379, "pressure": 3.37}]});
    let v = loop {
        if TcpStream::connect(&http_addr).is_ok() {
            let (s, _, v) = post(&http_addr, "/v1/models/classify:predict", &body);
            if s == 200 {
                break v;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "rill serve never answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(v["predictions"][0]["label"], "overheating");
    assert_eq!(v["modelVersionId"], "1");
    assert!(dir.path().join(".rill/serve/classify.yaml").exists());
    signal(&child, "-TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// The README's serving section, as written: `configs/serve-classify.yaml`
/// on 127.0.0.1:8000, the two `curl` requests' answers equal to the
/// stream's prediction for the same reading.
#[test]
fn the_readme_serving_commands() {
    let dir = sandbox();
    let mut child = command(dir.path(), &["run", "configs/serve-classify.yaml"])
        .spawn()
        .unwrap();
    let addr = "127.0.0.1:8000";
    let t = Instant::now();
    let vertex = json!({"instances": [{"temp": 79.3, "vibration": 0.238, "current": 14.379, "pressure": 3.37}]});
    let v = loop {
        if TcpStream::connect(addr).is_ok() {
            let (s, _, v) = post(addr, "/v1/models/classify:predict", &vertex);
            if s == 200 {
                break v;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("rill exited {status:?} (is port 8000 taken?)");
        }
        assert!(t.elapsed() < Duration::from_secs(60), "no answer on {addr}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = dir.path().join("out/serve-classify/predictions.jsonl");
    wait_lines(&out, 1000);
    let first = read_jsonl(&out).into_iter().find(|r| r["id"] == 0).unwrap();
    assert_eq!(v["predictions"][0], first["inference"]);
    let t = |n: &str, x: f64| json!({"name": n, "shape": [1], "datatype": "FP64", "data": [x]});
    let kserve = json!({"inputs": [t("temp", 79.3), t("vibration", 0.238), t("current", 14.379), t("pressure", 3.37)]});
    let (s, _, k) = post(addr, "/v2/models/classify/infer", &kserve);
    assert_eq!(s, 200, "{k}");
    assert_eq!(k["outputs"][0]["data"][0], first["inference"]["label"]);
    assert_eq!(k["outputs"][1]["data"][0], first["inference"]["score"]);
    signal(&child, "-TERM");
    let o = wait(child, Duration::from_secs(30), "rill after SIGTERM");
    assert!(o.status.success(), "exit {:?}", o.status);
}
