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
/// With `--reset-state`: the one-process run before it finished the same
/// pipeline in the same folder.
fn side(dir: &Path, stages: &str, ep: &str, listen: bool) -> Child {
    let mut args = vec!["run", "-q", "p.yaml", "--reset-state", "--stages", stages];
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

/// A finished run is not destroyed by running it again (issue 23, finding
/// 2): the same command says the pipeline already finished, exits 0 and
/// leaves the output as it was, in one process and for either side of a
/// split run (where the rerun sink once waited forever for a producer that
/// had finished, its output cut to 0 rows); `--reset-state` runs it again.
#[test]
fn a_rerun_of_a_finished_run_keeps_its_output() {
    let dir = sandbox();
    let d = dir.path();
    std::fs::write(d.join("p.yaml"), PIPELINE).unwrap();
    let out = d.join("out.jsonl");
    let o = rill(d, &["run", "-q", "p.yaml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let first = std::fs::read_to_string(&out).unwrap();
    let n = (0..20000).filter(|i| i % 7 != 3).count();
    assert_eq!(first.lines().count(), n);
    let modified = std::fs::metadata(&out).unwrap().modified().unwrap();

    let again = rill(d, &["run", "p.yaml"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("pipeline `split` already finished at ")
            && stderr(&again).contains("--reset-state"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), first);
    assert_eq!(
        std::fs::metadata(&out).unwrap().modified().unwrap(),
        modified,
        "the output was written again"
    );

    // the same over two processes, each side run again on its own
    let port = free_port();
    let ep = format!("tcp/127.0.0.1:{port}");
    let run_side = |stages: &str, listen: bool, reset: bool| {
        let mut args = vec!["run", "-q", "p.yaml", "--stages", stages];
        if reset {
            args.push("--reset-state");
        }
        if listen {
            args.extend(["--listen", ep.as_str()]);
        } else {
            args.extend(["--connect", ep.as_str(), "--listen", "tcp/127.0.0.1:0"]);
        }
        command(d, &args).spawn().unwrap()
    };
    let b = run_side("some,sink", true, true);
    std::thread::sleep(Duration::from_millis(300));
    let a = run_side("gen,double", false, true);
    let a = wait(a, Duration::from_secs(60), "producer process");
    let b = wait(b, Duration::from_secs(60), "consumer process");
    assert!(a.status.success(), "producer: {}", stderr(&a));
    assert!(b.status.success(), "consumer: {}", stderr(&b));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), first);
    for (stages, listen) in [("some,sink", true), ("gen,double", false)] {
        let o = wait(
            run_side(stages, listen, false),
            Duration::from_secs(30),
            "a finished side run again",
        );
        assert!(o.status.success(), "{stages}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("already finished"),
            "{stages}: {}",
            stderr(&o)
        );
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            first,
            "{stages} run again changed the output"
        );
    }
    // on purpose: the whole run again
    let o = rill(d, &["run", "-q", "--reset-state", "p.yaml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), first);
}
