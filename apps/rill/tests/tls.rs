//! An authenticated transport: two `rill run` processes over mutual TLS
//! (on QUIC links) with Zenoh's access control on `rill/<pipeline>/**`, and
//! four forgers (run from this test process, on their own Zenoh sessions):
//! - one with no certificate, and one whose certificate another CA signed:
//!   the TLS handshake refuses them, nothing they send arrives;
//! - one whose certificate the pipeline's CA signed for another name: it
//!   connects, and the access control drops what it publishes on the
//!   pipeline's keys;
//! - one with the pipeline's own credentials that forges a batch under an
//!   epoch no live producer announced: the sink drops and counts it
//!   (`rill_stage_foreign_messages_total`).
//!
//! The first three forge under the producer's real epoch (read off its
//! liveliness token, as a sniffer would), at the numbers the sink expects
//! next: had a batch of theirs arrived, the sink would have taken it.
//!
//! The sink must hold every real record once and nothing else. Certificates
//! are made with the `openssl` command for the test. The processes are
//! killed when the test fails, so a failure leaves nothing running.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use rill_core::spec::{TlsOptions, ZenohOptions};
use rill_core::wire::{DataMsg, ProducerId, encode_data};
use rill_testing::*;

fn openssl(dir: &Path, args: &[&str]) {
    let o = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `openssl req` for a new P-256 key `<name>.key` and `out` (a request,
/// or with `-x509` among `extra` a self-signed certificate) for `/CN=name`.
fn new_key(dir: &Path, name: &str, out: &str, extra: &[&str]) {
    let (key, subj) = (format!("{name}.key"), format!("/CN={name}"));
    let mut args = vec![
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
    ];
    args.extend(["-nodes", "-keyout", &key, "-out", out, "-subj", &subj]);
    args.extend(extra);
    openssl(dir, &args);
}

/// A CA (`<ca>.pem`, `<ca>.key`).
fn ca(dir: &Path, ca: &str) {
    new_key(dir, ca, &format!("{ca}.pem"), &["-x509", "-days", "2"]);
}

/// A certificate for `name` (its common name), signed by `ca`, valid for
/// 127.0.0.1: `<name>.pem`, `<name>.key`.
fn cert(dir: &Path, ca: &str, name: &str) {
    std::fs::write(
        dir.join(format!("{name}.ext")),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    new_key(dir, name, &format!("{name}.csr"), &[]);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

const PIPELINE: &str = r#"
pipeline:
  name: secure
  transforms:
    - {type: Generate, name: gen, config: {count: 20000, rate: 5000, start_time: 0}}
    - {type: WriteToJson, name: sink, input: gen, config: {path: out.jsonl}}
options:
  zenoh:
    tls: {root_ca: ca.pem, certificate: node.pem, private_key: node.key}
    access_control:
      enabled: true
      default_permission: deny
      rules:
        - id: rill
          messages: [put, delete, declare_subscriber, query, reply, declare_queryable,
                     liveliness_token, declare_liveliness_subscriber, liveliness_query]
          flows: [egress, ingress]
          permission: allow
          key_exprs: ["rill/secure/**"]
      subjects:
        - {id: nodes, cert_common_names: [node]}
      policies:
        - {rules: [rill], subjects: [nodes]}
"#;

/// The metrics page, or `None` while the endpoint is not up yet.
fn scrape(addr: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn forged(epoch: u64, first_seq: u64) -> Vec<u8> {
    encode_data(&DataMsg::Batch {
        producer: ProducerId::main("gen", epoch),
        first_seq,
        records: (0..10)
            .map(|i| rill_core::record! {"id" => 1_000_000 + i, "forged" => true})
            .collect(),
    })
    .unwrap()
}

/// A forger's session: connects to `endpoints` with `tls` (or none).
async fn forger(endpoints: &[&str], tls: Option<TlsOptions>) -> zenoh::Session {
    rill_runtime::transport::open(&ZenohOptions {
        listen: vec![],
        connect: endpoints.iter().map(|e| e.to_string()).collect(),
        tls,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// A forger that trusts the pipeline's CA but has no certificate of its
/// own to show.
async fn without_certificate(endpoint: &str, ca: &Path) -> zenoh::Session {
    let config = format!(
        r#"{{ mode: "peer", connect: {{ endpoints: ["{endpoint}"] }},
  scouting: {{ multicast: {{ enabled: false }} }},
  transport: {{ link: {{ tls: {{ root_ca_certificate: "{}" }} }} }} }}"#,
        ca.display()
    );
    zenoh::open(zenoh::Config::from_json5(&config).unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_and_access_control_keep_forgers_out() {
    let dir = sandbox();
    let d = dir.path();
    ca(d, "ca");
    ca(d, "rogue");
    cert(d, "ca", "node");
    cert(d, "ca", "mallory");
    cert(d, "rogue", "eve");
    std::fs::write(d.join("p.yaml"), PIPELINE).unwrap();
    let (pa, pb, pm) = (free_port(), free_port(), free_port());
    let metrics = format!("127.0.0.1:{pm}");
    // QUIC: Zenoh's TLS-over-TCP links share one rustls stream between a
    // reading and a writing task, which crashes under load (see
    // docs/when-things-fail.md); QUIC links carry the same mutual TLS
    let (ea, eb) = (
        format!("quic/127.0.0.1:{pa}"),
        format!("quic/127.0.0.1:{pb}"),
    );
    let sink = spawn(
        d,
        &[
            "run",
            "-q",
            "p.yaml",
            "--stages",
            "sink",
            "--listen",
            &eb,
            "--metrics-addr",
            &metrics,
        ],
    );
    let producer = spawn(
        d,
        &[
            "run",
            "-q",
            "p.yaml",
            "--stages",
            "gen",
            "--listen",
            &ea,
            "--connect",
            &eb,
        ],
    );
    // the two processes find each other over TLS before any forger comes
    // (on a loaded machine that can take a while: it is not what this
    // test measures)
    let t = Instant::now();
    while lines(&d.join("out.jsonl")) == 0 {
        if t.elapsed() > Duration::from_secs(60) {
            let (p, s) = (producer.kill_and_output(), sink.kill_and_output());
            panic!(
                "no record reached the sink in 60 s\nproducer:\n{}\nsink:\n{}",
                stderr(&p),
                stderr(&s)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let tls = |name: &str, ca: &str| {
        Some(TlsOptions {
            root_ca: d.join(format!("{ca}.pem")),
            certificate: d.join(format!("{name}.pem")),
            private_key: d.join(format!("{name}.key")),
        })
    };
    let sessions = [
        (
            "no certificate",
            without_certificate(&eb, &d.join("ca.pem")).await,
        ),
        ("another CA", forger(&[&eb], tls("eve", "rogue")).await),
        ("another name", forger(&[&eb], tls("mallory", "ca")).await),
        (
            "the pipeline's own",
            forger(&[&eb], tls("node", "ca")).await,
        ),
    ];
    // with the pipeline's credentials, the producer's epoch can be read off
    // its token by a session linked to the producer (peers do not route
    // for each other)
    let sniffer = forger(&[&ea], tls("node", "ca")).await;
    let mut publishers = Vec::new();
    for (who, s) in &sessions {
        publishers.push((
            *who,
            s.declare_publisher("rill/secure/gen/out").await.unwrap(),
        ));
    }
    // the forgers forge with that epoch (as a sniffer on the wire would): only
    // the transport keeps their batches out
    let t = Instant::now();
    let epoch = loop {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no producer token seen"
        );
        let replies = sniffer
            .liveliness()
            .get("rill/secure/gen/alive/**")
            .await
            .unwrap();
        let mut found = None;
        while let Ok(r) = replies.recv_async().await {
            if let Ok(sample) = r.result() {
                let key = sample.key_expr().as_str().to_owned();
                found = key
                    .split('/')
                    .nth(4)
                    .and_then(|h| u64::from_str_radix(h, 16).ok());
            }
        }
        if let Some(e) = found {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // forge while the pipeline runs: from seq 0 (a reset) and mid-stream
    let t = Instant::now();
    let foreign = "rill_stage_foreign_messages_total{pipeline=\"secure\",stage=\"sink\"";
    let mut counted = 0.0;
    while lines(&d.join("out.jsonl")) < 19_000 {
        if t.elapsed() > Duration::from_secs(60) {
            let (p, s) = (producer.kill_and_output(), sink.kill_and_output());
            panic!(
                "the pipeline stalled at {} rows (producer {:?}, sink {:?})\nproducer:\n{}\nsink:\n{}",
                lines(&d.join("out.jsonl")),
                p.status,
                s.status,
                stderr(&p),
                stderr(&s)
            );
        }
        let next = lines(&d.join("out.jsonl")) as u64;
        for (who, p) in &publishers {
            if *who == "the pipeline's own" {
                // past the transport: caught by the epoch rule
                p.put(forged(0xBAD, 0)).await.unwrap();
                p.put(forged(0xBAD, next)).await.unwrap();
            } else {
                for ahead in [0, 256, 1024] {
                    p.put(forged(epoch, next + ahead)).await.unwrap();
                }
            }
        }
        if let Some(v) = scrape(&metrics)
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(foreign))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
        {
            counted = v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let g = producer.wait(Duration::from_secs(60), "the producer");
    assert!(g.status.success(), "{}", stderr(&g));
    let s = sink.wait(Duration::from_secs(60), "the sink");
    assert!(s.status.success(), "{}", stderr(&s));
    let ids: Vec<i64> = read_jsonl(&d.join("out.jsonl"))
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    let forged_in = ids.iter().filter(|i| **i >= 1_000_000).count();
    assert_eq!(forged_in, 0, "{forged_in} forged records reached the sink");
    assert!(
        ids == (0..20_000).collect::<Vec<_>>(),
        "not every real record once, in order ({} rows)",
        ids.len()
    );
    // the credentialed forger's batches reached the sink, and were counted
    // and dropped
    assert!(counted >= 1.0, "no forged batch was counted");
    drop(publishers);
    // teardown, after every assertion: a loaded machine once made Zenoh's
    // close of a forger's session time out (CI, fresh clone); that says
    // nothing of what this test checks, so it is reported, not a failure
    for (_, s) in sessions {
        if let Err(e) = s.close().await {
            eprintln!("closing a session: {e}");
        }
    }
    if let Err(e) = sniffer.close().await {
        eprintln!("closing the sniffer: {e}");
    }
}
