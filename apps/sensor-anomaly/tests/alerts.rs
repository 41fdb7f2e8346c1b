//! The sensor-anomaly example end to end, in real processes: the alerts of
//! configs/sensor-anomaly.yaml on a held-out stream against the injected
//! anomalies (precision and recall floors), nothing lost to bad readings,
//! the same pipeline fed live over Zenoh, and training from scratch.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rill_testing::*;
use sensor_anomaly::{Alert, evaluate, parse_events};

/// Floors for the committed model on a held-out stream (it reaches 0.999
/// precision and 1.000 recall on the README's 20-minute stream).
const PRECISION_FLOOR: f64 = 0.95;
const RECALL_FLOOR: f64 = 0.95;

fn app(dir: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_sensor-anomaly"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("sensor-anomaly");
    assert!(
        out.status.success(),
        "sensor-anomaly {}: {}",
        args.join(" "),
        stderr(&out)
    );
    out
}

fn alerts(path: &Path) -> Vec<Alert> {
    read_jsonl(path)
        .iter()
        .map(|r| Alert {
            device: r["device"].as_str().unwrap().to_owned(),
            start: (r["window_start"].as_f64().unwrap() * 1000.0).round() as i64,
            end: (r["window_end"].as_f64().unwrap() * 1000.0).round() as i64,
        })
        .collect()
}

#[test]
fn alerts_on_a_held_out_stream_reach_the_floors() {
    let dir = sandbox();
    app(dir.path(), &["generate", "--minutes", "8", "--seed", "9"]);
    let out = rill(dir.path(), &["run", "-q", "configs/sensor-anomaly.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = alerts(&dir.path().join("out/sensor-anomaly/alerts.jsonl"));
    let events = parse_events(
        &std::fs::read_to_string(dir.path().join("out/sensor-anomaly/holdout.events.json"))
            .unwrap(),
    )
    .unwrap();
    assert!(events.len() >= 30, "{} anomalies", events.len());
    let (p, r, kinds) = evaluate(&got, &events);
    eprintln!("precision {p:.3}, recall {r:.3}, {kinds:?}");
    assert!(p >= PRECISION_FLOOR, "precision {p} ({kinds:?})");
    assert!(r >= RECALL_FLOOR, "recall {r} ({kinds:?})");
    for (kind, found, of) in kinds {
        assert!(
            of > 0 && found as f64 >= 0.9 * of as f64,
            "{kind}: {found} of {of}"
        );
    }
    // every reading whose temperature is not a number is a dead letter
    let bad = std::fs::read_to_string(dir.path().join("out/sensor-anomaly/holdout.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"ERR\""))
        .count();
    assert!(bad > 0);
    assert_eq!(
        lines(&dir.path().join("out/sensor-anomaly/dead-letters.jsonl")),
        bad
    );
}

#[test]
fn the_pipelines_threshold_is_the_models() {
    let t: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            root().join("configs/models/sensor-anomaly/model/1/threshold.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let want = format!(
        "alert: \"inference.score > {:.6}\"",
        t["threshold"].as_f64().unwrap()
    );
    for c in ["sensor-anomaly.yaml", "sensor-anomaly-live.yaml"] {
        let text = std::fs::read_to_string(root().join("configs").join(c)).unwrap();
        assert!(text.contains(&want), "{c} lacks `{want}`");
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The live pipeline fed by `sensor-anomaly feed`: alerts for the injected
/// anomalies, and the latency from an anomaly's start (event time = the
/// wall clock) to its first alert in the sink's file, as seen by polling
/// it. `SENSOR_RATE` and `SENSOR_SECONDS` set the feed (default 500
/// readings/s for 40 s); the README's numbers are from
/// `SENSOR_RATE=1000 SENSOR_SECONDS=120 cargo test --release -p sensor-anomaly --test alerts live -- --nocapture`.
#[test]
fn live_alerts_and_their_latency() {
    let rate = std::env::var("SENSOR_RATE").unwrap_or_else(|_| "500".into());
    let seconds = std::env::var("SENSOR_SECONDS").unwrap_or_else(|_| "40".into());
    // 10 readings a second per device, as in training
    let devices = (rate.parse::<f64>().unwrap() / 10.0)
        .round()
        .max(1.0)
        .to_string();
    let dir = sandbox();
    let ep = format!("tcp/127.0.0.1:{}", free_port());
    let live = spawn(
        dir.path(),
        &[
            "run",
            "-q",
            "configs/sensor-anomaly-live.yaml",
            "--listen",
            &ep,
        ],
    );
    let feed = Command::new(env!("CARGO_BIN_EXE_sensor-anomaly"))
        .args([
            "feed",
            "--connect",
            &ep,
            "--rate",
            &rate,
            "--seconds",
            &seconds,
            "--devices",
            &devices,
        ])
        .current_dir(dir.path())
        .spawn()
        .unwrap();
    let file = dir.path().join("out/sensor-anomaly/live-alerts.jsonl");
    // when each alert line appeared
    let mut seen: Vec<i64> = Vec::new();
    let limit = Instant::now() + Duration::from_secs(seconds.parse::<u64>().unwrap() + 60);
    let mut feed = Some(feed);
    let mut fed_at: Option<Instant> = None;
    let mut feed_end = 0i64;
    loop {
        let n = lines(&file);
        while seen.len() < n {
            seen.push(now_ms());
        }
        if let Some(f) = &mut feed
            && let Some(st) = f.try_wait().unwrap()
        {
            assert!(st.success(), "the feed failed");
            feed = None;
            fed_at = Some(Instant::now());
            feed_end = now_ms();
        }
        // the last windows close a few seconds after the feed ends
        if fed_at.is_some_and(|t| t.elapsed() > Duration::from_secs(3)) {
            break;
        }
        assert!(Instant::now() < limit, "the live run took too long");
        std::thread::sleep(Duration::from_millis(10));
    }
    live.signal("-TERM");
    let done = live.wait(Duration::from_secs(30), "the live pipeline");
    assert!(done.status.success(), "{}", stderr(&done));
    let got = alerts(&file);
    let events = parse_events(
        &std::fs::read_to_string(dir.path().join("out/sensor-anomaly/live.events.json")).unwrap(),
    )
    .unwrap();
    // anomalies that ended before the feed did, in time for their
    // windows to close (event time is the wall clock here)
    let closed: Vec<_> = events
        .iter()
        .filter(|e| e.end + 6_000 < feed_end)
        .cloned()
        .collect();
    assert!(!closed.is_empty(), "no anomalies in the feed");
    // precision against every anomaly fed, recall against those closed
    let (p, _, _) = evaluate(&got, &events);
    let (_, r, kinds) = evaluate(&got, &closed);
    // latency: anomaly start to the first alert overlapping it, in all
    // and by kind (a spike is seen at once; a drift when it has grown)
    let latencies = |kind: Option<&str>| -> String {
        let mut lat: Vec<i64> = closed
            .iter()
            .filter(|e| kind.is_none_or(|k| e.kind == k))
            .filter_map(|e| {
                got.iter()
                    .zip(&seen)
                    .filter(|(a, _)| a.device == e.device && a.start < e.end && a.end > e.start)
                    .map(|(_, t)| t - e.start)
                    .min()
            })
            .collect();
        if lat.is_empty() {
            return "none".into();
        }
        lat.sort_unstable();
        let pct = |q: f64| lat[((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1];
        format!("p50 {} ms, p99 {} ms", pct(0.5), pct(0.99))
    };
    eprintln!(
        "live at {rate} readings/s for {seconds} s: {} alerts, {} anomalies closed; precision {p:.3}, recall {r:.3} {kinds:?}\nalert latency: all {}; spike {}; stuck {}; drift {}",
        got.len(),
        closed.len(),
        latencies(None),
        latencies(Some("spike")),
        latencies(Some("stuck")),
        latencies(Some("drift")),
    );
    assert!(p >= 0.9, "precision {p}");
    assert!(r >= 0.9, "recall {r}");
}

#[test]
fn training_from_scratch_finds_the_anomalies() {
    // a folder of its own with copies of the configs it rewrites (the
    // repository's model stays as it is)
    let dir = tempfile::tempdir().unwrap();
    let configs = dir.path().join("configs");
    std::fs::create_dir_all(&configs).unwrap();
    for c in [
        "sensor-anomaly.yaml",
        "sensor-anomaly-live.yaml",
        "sensor-anomaly-train.yaml",
    ] {
        std::fs::copy(root().join("configs").join(c), configs.join(c)).unwrap();
    }
    let out = app(dir.path(), &["train", "--minutes", "6", "--epochs", "30"]);
    assert!(stdout(&out).contains("threshold"), "{}", stdout(&out));
    assert!(
        configs
            .join("models/sensor-anomaly/model/1/model.mpk")
            .exists()
    );
    assert!(
        configs
            .join("models/sensor-anomaly/artifacts/features/mltransform.json")
            .exists()
    );
    app(dir.path(), &["generate", "--minutes", "6", "--seed", "21"]);
    let run = rill(dir.path(), &["run", "-q", "configs/sensor-anomaly.yaml"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let got = alerts(&dir.path().join("out/sensor-anomaly/alerts.jsonl"));
    let events = parse_events(
        &std::fs::read_to_string(dir.path().join("out/sensor-anomaly/holdout.events.json"))
            .unwrap(),
    )
    .unwrap();
    let (p, r, kinds) = evaluate(&got, &events);
    eprintln!("trained from scratch: precision {p:.3}, recall {r:.3}, {kinds:?}");
    assert!(p >= 0.9 && r >= 0.9, "precision {p}, recall {r}, {kinds:?}");
}
