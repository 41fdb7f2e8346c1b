//! One pipeline split over two `rill run --stages` processes on loopback
//! delivers exactly what the one-process run delivers.

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use rill_testing::*;

const PIPELINE: &str = r#"
pipeline:
  name: split
  transforms:
    - type: Generate
      name: gen
      config: {count: 20000, keys: 4, start_time: 0, seed: 3}
    - type: MapToFields
      name: double
      input: gen
      config:
        language: python
        append: true
        fields: {twice: "value * 2", bucket: "id % 7"}
    - type: Filter
      name: some
      input: double
      config: {language: python, keep: "bucket != 3"}
    - type: WriteToJson
      name: sink
      input: some
      config: {path: out.jsonl}
"#;

/// `rill run -q p.yaml --stages STAGES`, listening on `ep`, or connecting
/// to it (and listening on a port of its own).
fn side(dir: &Path, stages: &str, ep: &str, listen: bool) -> Child {
    let mut args = vec!["run", "-q", "p.yaml", "--stages", stages];
    if listen {
        args.extend(["--listen", ep]);
    } else {
        args.extend(["--connect", ep, "--listen", "tcp/127.0.0.1:0"]);
    }
    command(dir, &args).spawn().unwrap()
}

#[test]
fn split_over_two_processes_equals_one_process() {
    let dir = sandbox();
    std::fs::write(dir.path().join("p.yaml"), PIPELINE).unwrap();
    let one = rill(dir.path(), &["run", "-q", "p.yaml"]);
    assert!(one.status.success(), "{}", stderr(&one));
    let single = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    std::fs::remove_file(dir.path().join("out.jsonl")).unwrap();
    assert_eq!(
        single.lines().count(),
        (0..20000).filter(|i| i % 7 != 3).count()
    );

    // the consumer side starts first and listens; the producer side connects
    let port = free_port();
    let ep = format!("tcp/127.0.0.1:{port}");
    let b = side(dir.path(), "some,sink", &ep, true);
    std::thread::sleep(Duration::from_millis(300));
    let a = side(dir.path(), "gen,double", &ep, false);
    let a = wait(a, Duration::from_secs(60), "producer process");
    let b = wait(b, Duration::from_secs(60), "consumer process");
    assert!(a.status.success(), "producer: {}", stderr(&a));
    assert!(b.status.success(), "consumer: {}", stderr(&b));
    let split = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    assert!(
        split == single,
        "the split run wrote something else than the single run"
    );
}

#[test]
fn producer_started_first_waits_for_its_consumer() {
    let dir = sandbox();
    std::fs::write(dir.path().join("p.yaml"), PIPELINE).unwrap();
    let port = free_port();
    let ep = format!("tcp/127.0.0.1:{port}");
    // the producer listens and starts long before the consumer exists: its
    // first messages reach nobody, and must be resent
    let a = side(dir.path(), "gen,double", &ep, true);
    std::thread::sleep(Duration::from_millis(1500));
    let b = side(dir.path(), "some,sink", &ep, false);
    let b = wait(b, Duration::from_secs(60), "consumer process");
    let a = wait(a, Duration::from_secs(60), "producer process");
    assert!(a.status.success(), "producer: {}", stderr(&a));
    assert!(b.status.success(), "consumer: {}", stderr(&b));
    let rows = read_jsonl(&dir.path().join("out.jsonl"));
    assert_eq!(rows.len(), (0..20000).filter(|i| i % 7 != 3).count());
    let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "order kept, no duplicates"
    );
}

#[test]
fn unknown_stage_name_is_bad_input() {
    let dir = sandbox();
    std::fs::write(dir.path().join("p.yaml"), PIPELINE).unwrap();
    let out = rill(dir.path(), &["run", "p.yaml", "--stages", "gen,dobule"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--stages names `dobule`"),
        "{}",
        stderr(&out)
    );
}
