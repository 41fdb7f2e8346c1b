//! `sensor-anomaly`: the data, the training and the scoring of the
//! sensor-anomaly example (README, "The sensor-anomaly example").
//!
//!     sensor-anomaly generate [--out FILE] [--devices N] [--hz H] [--minutes M] [--seed S] [--normal]
//!     sensor-anomaly train [--minutes M] [--epochs N]
//!     sensor-anomaly evaluate [--alerts FILE] [--events FILE]
//!     sensor-anomaly feed --connect ENDPOINT [--rate R] [--seconds S] [--devices N] [--events FILE]
//!
//! Run from the repository's root: the paths are those of
//! configs/sensor-anomaly*.yaml.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rill_ml::nets::{Arch, Net};
use sensor_anomaly::*;

const MODEL: &str = "configs/models/sensor-anomaly/model/1";
const CONFIGS: [&str; 2] = [
    "configs/sensor-anomaly.yaml",
    "configs/sensor-anomaly-live.yaml",
];

/// `--name value` options and `--flag`s.
struct Args(Vec<String>);

impl Args {
    fn value(&self, name: &str) -> Option<&str> {
        let i = self.0.iter().position(|a| a == name)?;
        self.0.get(i + 1).map(String::as_str)
    }
    fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.value(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("{name} needs a number, got `{v}`")),
        }
    }
    fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }
}

fn events_path(out: &Path) -> PathBuf {
    out.with_extension("events.json")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn generate(a: &Args) -> Result<(), String> {
    let out = PathBuf::from(
        a.value("--out")
            .unwrap_or("out/sensor-anomaly/holdout.jsonl"),
    );
    let normal = a.flag("--normal");
    let cfg = Config {
        devices: a.num("--devices", 8)?,
        hz: a.num("--hz", 10.0)?,
        start_ms: 1_767_225_600_000,
        seed: a.num("--seed", 2)?,
        anomalies: !normal,
        bad_every: if normal { 0 } else { 997 },
    };
    let minutes: f64 = a.num("--minutes", 20.0)?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut g = Generator::new(cfg);
    let mut w =
        BufWriter::new(std::fs::File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?);
    let n = g
        .write(minutes * 60.0, &mut w)
        .and_then(|n| w.flush().map(|_| n))
        .map_err(|e| format!("{}: {e}", out.display()))?;
    let ev = events_path(&out);
    std::fs::write(&ev, events_json(&g.events)).map_err(|e| format!("{}: {e}", ev.display()))?;
    println!(
        "wrote {n} readings to {} and {} anomalies to {}",
        out.display(),
        g.events.len(),
        ev.display()
    );
    Ok(())
}

fn read_features(path: &Path) -> Result<Vec<[f32; 12]>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .map(|l| {
            let row: serde_json::Value =
                serde_json::from_str(l).map_err(|e| format!("{}: {e}", path.display()))?;
            features(&row)
                .ok_or_else(|| format!("{}: a row without the features: {l}", path.display()))
        })
        .collect()
}

/// Runs `rill ARGS` in this process.
fn rill(args: &[&str]) -> Result<(), String> {
    let code = rill_cli::Cli::new().main_from(std::iter::once("rill").chain(args.iter().copied()));
    if code == ExitCode::SUCCESS {
        Ok(())
    } else {
        Err(format!("`rill {}` failed", args.join(" ")))
    }
}

fn train_cmd(a: &Args) -> Result<(), String> {
    let minutes: f64 = a.num("--minutes", 30.0)?;
    let epochs: usize = a.num("--epochs", 60)?;
    let started = Instant::now();
    // normal readings only: the model learns what normal looks like
    let data = "out/sensor-anomaly/train.jsonl";
    generate(&Args(
        [
            "--out",
            data,
            "--normal",
            "--seed",
            "1",
            "--minutes",
            &minutes.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    ))?;
    // the same preparation as serving: MLTransform artifacts and features
    let _ = std::fs::remove_dir_all("out/sensor-anomaly/features.jsonl");
    rill(&[
        "run",
        "-q",
        "--reset-state",
        "configs/sensor-anomaly-train.yaml",
    ])?;
    let rows = read_features(Path::new("out/sensor-anomaly/features.jsonl"))?;
    let model = train(&rows, epochs, 3);
    let s = scores(&model, &rows);
    let t = threshold(&s, 0.999, 1.5);
    println!(
        "trained {ENCODER:?} -> {DECODER:?} for {epochs} epochs on {} windows in {:.1} s; threshold {t:.6} (1.5 x the 99.9th percentile of the training scores)",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    let arch = Arch::Autoencoder {
        encoder: ENCODER.to_vec(),
        decoder: DECODER.to_vec(),
    };
    rill_ml::nets::save(Net::Autoencoder(model), &arch, Path::new(MODEL))?;
    std::fs::write(
        Path::new(MODEL).join("threshold.json"),
        serde_json::json!({"threshold": t}).to_string() + "\n",
    )
    .map_err(|e| e.to_string())?;
    for c in CONFIGS {
        set_threshold(Path::new(c), t)?;
    }
    println!(
        "wrote {MODEL} and the threshold into {}",
        CONFIGS.join(" and ")
    );
    Ok(())
}

/// Rewrites the `alert:` line of a pipeline with threshold `t`.
fn set_threshold(config: &Path, t: f64) -> Result<(), String> {
    let text = std::fs::read_to_string(config).map_err(|e| format!("{}: {e}", config.display()))?;
    let mut done = false;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if let Some(i) = l.find("alert: \"inference.score > ") {
                done = true;
                format!("{}alert: \"inference.score > {t:.6}\"", &l[..i])
            } else {
                l.to_owned()
            }
        })
        .collect();
    if !done {
        return Err(format!("{}: no `alert:` line to set", config.display()));
    }
    std::fs::write(config, out.join("\n") + "\n").map_err(|e| format!("{}: {e}", config.display()))
}

fn read_alerts(path: &Path) -> Result<Vec<Alert>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).map_err(|e| e.to_string())?;
            let secs = |k: &str| r[k].as_f64().map(|s| (s * 1000.0).round() as i64);
            Ok(Alert {
                device: r["device"]
                    .as_str()
                    .ok_or("an alert without a device")?
                    .to_owned(),
                start: secs("window_start").ok_or("an alert without window_start")?,
                end: secs("window_end").ok_or("an alert without window_end")?,
            })
        })
        .collect()
}

fn evaluate_cmd(a: &Args) -> Result<(), String> {
    let alerts = PathBuf::from(
        a.value("--alerts")
            .unwrap_or("out/sensor-anomaly/alerts.jsonl"),
    );
    let events = PathBuf::from(
        a.value("--events")
            .unwrap_or("out/sensor-anomaly/holdout.events.json"),
    );
    let alerts = read_alerts(&alerts)?;
    let text =
        std::fs::read_to_string(&events).map_err(|e| format!("{}: {e}", events.display()))?;
    let events = parse_events(&text)?;
    let (p, r, kinds) = evaluate(&alerts, &events);
    println!(
        "{} alerts, {} anomalies: precision {p:.3}, recall {r:.3}",
        alerts.len(),
        events.len()
    );
    for (kind, found, of) in kinds {
        println!("  {kind}: {found} of {of} found");
    }
    Ok(())
}

/// Publishes live readings (event time = now) on `demo/sensors` at `rate`
/// readings a second.
fn feed(a: &Args) -> Result<(), String> {
    let connect = a
        .value("--connect")
        .ok_or("--connect ENDPOINT is needed (e.g. tcp/127.0.0.1:7451)")?;
    let rate: f64 = a.num("--rate", 1000.0)?;
    let seconds: f64 = a.num("--seconds", 60.0)?;
    let devices: usize = a.num("--devices", 100)?;
    let key = a.value("--key").unwrap_or("demo/sensors").to_owned();
    let events = PathBuf::from(
        a.value("--events")
            .unwrap_or("out/sensor-anomaly/live.events.json"),
    );
    let hz = rate / devices as f64;
    let start = now_ms();
    let mut g = Generator::new(Config {
        devices,
        hz,
        start_ms: start,
        seed: a.num("--seed", 4)?,
        anomalies: true,
        bad_every: 997,
    });
    let opts = rill_core::spec::ZenohOptions {
        mode: "peer".into(),
        listen: Vec::new(),
        connect: vec![connect.to_owned()],
        ..Default::default()
    };
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let sent = rt.block_on(async {
        let session = rill_runtime::transport::open(&opts).await?;
        let publisher = session
            .declare_publisher(key.clone())
            .congestion_control(zenoh::qos::CongestionControl::Block)
            .await
            .map_err(|e| e.to_string())?;
        // a moment for the subscriber to be matched
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut sent = 0u64;
        while (g.next_ts() - start) as f64 / 1000.0 < seconds {
            let due = g.next_ts();
            let wait = due - now_ms();
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            }
            for r in g.step() {
                publisher.put(r.json()).await.map_err(|e| e.to_string())?;
                sent += 1;
            }
        }
        session.close().await.map_err(|e| e.to_string())?;
        Ok::<u64, String>(sent)
    })?;
    if let Some(dir) = events.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    std::fs::write(&events, events_json(&g.events))
        .map_err(|e| format!("{}: {e}", events.display()))?;
    println!(
        "published {sent} readings on `{key}` in {seconds} s; {} anomalies written to {}",
        g.events.len(),
        events.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first().cloned() else {
        eprintln!("usage: sensor-anomaly generate|train|evaluate|feed [OPTIONS]");
        return ExitCode::from(2);
    };
    let a = Args(args[1..].to_vec());
    let r = match cmd.as_str() {
        "generate" => generate(&a),
        "train" => train_cmd(&a),
        "evaluate" => evaluate_cmd(&a),
        "feed" => feed(&a),
        other => Err(format!(
            "unknown command `{other}`: generate, train, evaluate or feed"
        )),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
