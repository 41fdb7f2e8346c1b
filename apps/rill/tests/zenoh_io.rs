//! Any Zenoh key in and out: `WriteToZenoh`, `ReadFromZenoh` and `rill tap`
//! across real processes on loopback.

use std::time::Duration;

use rill_testing::*;

/// `count` generated records at `rate` a second, written to Zenoh's `key`.
fn writer(count: u64, rate: u64, key: &str, format: &str) -> String {
    format!(
        "pipeline:\n  type: chain\n  transforms:\n    - type: Generate\n      config: {{count: {count}, rate: {rate}, start_time: 0}}\n    - type: WriteToZenoh\n      config: {{key: {key}, format: {format}}}\n"
    )
}

#[test]
fn tap_prints_what_write_to_zenoh_publishes() {
    let dir = sandbox();
    std::fs::write(
        dir.path().join("p.yaml"),
        writer(400, 200, "demo/readings", "json"),
    )
    .unwrap();
    let port = free_port();
    let ep = format!("tcp/127.0.0.1:{port}");
    let run = command(dir.path(), &["run", "-q", "p.yaml", "--listen", &ep])
        .spawn()
        .unwrap();
    let tap = command(
        dir.path(),
        &["tap", "demo/readings", "--connect", &ep, "--count", "5"],
    )
    .spawn()
    .unwrap();
    let tap = wait(tap, Duration::from_secs(30), "rill tap");
    let run = wait(run, Duration::from_secs(30), "rill run");
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(tap.status.success(), "{}", stderr(&tap));
    let lines: Vec<serde_json::Value> = stdout(&tap)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    let ids: Vec<i64> = lines.iter().map(|l| l["id"].as_i64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive: {ids:?}"
    );
}

#[test]
fn read_from_zenoh_takes_records_from_another_process() {
    let dir = sandbox();
    std::fs::write(
        dir.path().join("reader.yaml"),
        r#"
pipeline:
  type: chain
  transforms:
    - type: ReadFromZenoh
      config: {key: "demo/**", max_records: 20}
    - type: WriteToJson
      config: {path: got.jsonl}
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("writer.yaml"),
        writer(2000, 500, "demo/feed", "rill"),
    )
    .unwrap();
    let port = free_port();
    let ep = format!("tcp/127.0.0.1:{port}");
    let reader = command(dir.path(), &["run", "-q", "reader.yaml", "--listen", &ep])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let writer = command(dir.path(), &["run", "-q", "writer.yaml", "--connect", &ep])
        .spawn()
        .unwrap();
    let reader = wait(reader, Duration::from_secs(30), "reader");
    assert!(reader.status.success(), "{}", stderr(&reader));
    let got = read_jsonl(&dir.path().join("got.jsonl"));
    assert_eq!(got.len(), 20);
    let ids: Vec<i64> = got.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, none missing: {ids:?}"
    );
    let mut writer = writer;
    let _ = writer.kill();
    let _ = writer.wait();
}

#[test]
fn graph_prints_dot_and_mermaid() {
    let dir = sandbox();
    let dot = rill(dir.path(), &["graph", "configs/quickstart.yaml"]);
    assert!(dot.status.success());
    let d = stdout(&dot);
    assert!(d.starts_with("digraph \"quickstart\" {"), "{d}");
    assert!(d.contains("\"readings\" -> \"valid\";"), "{d}");
    assert!(
        d.contains("\"valid\" -> \"errors\" [label=\"bad\", style=dashed];"),
        "{d}"
    );
    let mm = rill(
        dir.path(),
        &["graph", "configs/quickstart.yaml", "--format", "mermaid"],
    );
    let m = stdout(&mm);
    assert!(m.starts_with("flowchart LR"), "{m}");
    assert!(m.contains(" -. bad .-> "), "{m}");
    let v = rill(dir.path(), &["validate", "configs/quickstart.yaml"]);
    assert!(v.status.success());
    assert!(
        stdout(&v).contains("pipeline `quickstart` is valid: 5 stages"),
        "{}",
        stdout(&v)
    );
}
