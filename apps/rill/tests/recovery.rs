//! Crash recovery through the real binary: graceful stop and resume,
//! SIGKILL and resume with keyed state, a corrupt store, a failing disk.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use rill_testing::*;

/// An unbounded keyed stream through a running count per key.
fn unbounded() -> String {
    counting_pipeline(
        "resume",
        "rate: 3000, keys: 7, seed: 5",
        "  checkpoint_interval: 20ms\n",
    )
}

/// Ids 0..n in order, once each, with the right running count; returns n.
fn check_exact(path: &Path, keys: u64) -> u64 {
    let mut n = 0;
    for v in read_jsonl(path) {
        let id = v["id"].as_u64().unwrap();
        assert_eq!(id, n, "{}: record {n} is id {id}", path.display());
        assert_eq!(
            v["count"].as_u64().unwrap(),
            id / keys + 1,
            "record {id}: wrong running count"
        );
        n += 1;
    }
    n
}

fn run_bg(dir: &Path, extra: &[&str]) -> Child {
    let mut args = vec!["run", "-q", "p.yaml", "--listen", "tcp/127.0.0.1:0"];
    args.extend_from_slice(extra);
    command(dir, &args).spawn().unwrap()
}

#[test]
fn stop_kill_and_resume_an_unbounded_run_exactly() {
    let dir = sandbox();
    let out = dir.path().join("out.jsonl");
    std::fs::write(dir.path().join("p.yaml"), unbounded()).unwrap();

    // 1. SIGTERM: drains, commits, exits 0 well within 10 s
    let child = run_bg(dir.path(), &[]);
    wait_lines(&out, 1000);
    let t = Instant::now();
    signal(&child, "-TERM");
    let o = wait(child, Duration::from_secs(10), "rill after SIGTERM");
    assert!(o.status.success(), "exit {:?}: {}", o.status, stderr(&o));
    assert!(t.elapsed() < Duration::from_secs(10));
    let n1 = check_exact(&out, 7);
    assert!(n1 >= 1000);

    // 2. resume, then SIGKILL at a random moment
    let mut child = run_bg(dir.path(), &[]);
    wait_lines(&out, n1 as usize + 1500);
    std::thread::sleep(Duration::from_millis(fastrand::u64(0..300)));
    child.kill().unwrap();
    child.wait().unwrap();

    // 3. resume, then two signals: the second stops at once
    let child = run_bg(dir.path(), &[]);
    wait_lines(&out, n1 as usize + 3000);
    signal(&child, "-TERM");
    signal(&child, "-TERM");
    let o = wait(child, Duration::from_secs(10), "rill after two SIGTERMs");
    assert!(
        matches!(o.status.code(), Some(0) | Some(130)),
        "exit {:?}: {}",
        o.status,
        stderr(&o)
    );

    // 4. resume once more and stop cleanly: no gap, no duplicate, the
    //    running counts continue
    let child = run_bg(dir.path(), &[]);
    let before = lines(&out);
    wait_lines(&out, before + 1000);
    signal(&child, "-INT");
    let o = wait(child, Duration::from_secs(10), "rill after Ctrl-C");
    assert!(o.status.success(), "{}", stderr(&o));
    let n = check_exact(&out, 7);
    assert!(n > n1 + 3000, "{n} records after four runs");

    // 5. --reset-state starts over
    let child = run_bg(dir.path(), &["--reset-state"]);
    // the sink starts its file over, then writes again
    let end = Instant::now() + Duration::from_secs(30);
    while lines(&out) >= n as usize {
        assert!(
            Instant::now() < end,
            "--reset-state did not start the file over"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    wait_lines(&out, 10);
    signal(&child, "-TERM");
    let o = wait(child, Duration::from_secs(10), "rill --reset-state");
    assert!(o.status.success(), "{}", stderr(&o));
    let m = check_exact(&out, 7);
    assert!(m < n, "the file was started over ({m} records)");
}

fn bounded() -> String {
    counting_pipeline(
        "bounded",
        "count: 6000, rate: 3000, keys: 5, seed: 1",
        "  checkpoint_interval: 20ms\n",
    )
}

/// The store of the stages of `bounded`: one process runs them all, so
/// they share one (`_shared`, a tree per stage).
fn shared_store_dir(dir: &Path) -> std::path::PathBuf {
    dir.join(".rill/state/bounded/_shared")
}

#[test]
fn a_corrupt_or_truncated_store_is_refused_with_exit_2() {
    for damage in ["garbage", "truncate", "foreign"] {
        let dir = sandbox();
        let out = dir.path().join("out.jsonl");
        std::fs::write(dir.path().join("p.yaml"), bounded()).unwrap();
        let mut child = run_bg(dir.path(), &[]);
        wait_lines(&out, 500);
        child.kill().unwrap();
        child.wait().unwrap();
        let s = shared_store_dir(dir.path());
        match damage {
            "garbage" => {
                // overwrite the database file with noise
                let db = s.join("db");
                let len = std::fs::metadata(&db).unwrap().len() as usize;
                let noise: Vec<u8> = (0..len.max(4096)).map(|_| fastrand::u8(..)).collect();
                std::fs::write(&db, noise).unwrap();
                std::fs::write(s.join("conf"), b"\x00\x01garbage").unwrap();
            }
            "truncate" => {
                for f in ["db", "conf"] {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(s.join(f))
                        .unwrap()
                        .set_len(3)
                        .unwrap();
                }
            }
            _ => {
                // a directory that holds something else entirely
                std::fs::remove_dir_all(&s).unwrap();
                std::fs::create_dir_all(&s).unwrap();
                std::fs::write(s.join("db"), b"not a database").unwrap();
                std::fs::write(s.join("conf"), b"not a config").unwrap();
            }
        }
        let o = rill(dir.path(), &["run", "-q", "p.yaml"]);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{damage}: {}\n{}",
            stderr(&o),
            stdout(&o)
        );
        let err = stderr(&o);
        assert!(
            err.contains("stages `gen`, `count`, `sink`")
                && err.contains("_shared")
                && err.contains("--reset-state"),
            "{damage}: {err}"
        );
        assert!(!err.contains("panicked"), "{damage}: {err}");
        // discarding the state runs the pipeline from the start
        let o = rill(dir.path(), &["run", "-q", "p.yaml", "--reset-state"]);
        assert!(o.status.success(), "{damage}: {}", stderr(&o));
        assert_eq!(check_exact(&out, 5), 6000);
    }
}

#[test]
fn a_failing_disk_stops_acknowledging_and_the_run_resumes_without_loss() {
    let dir = sandbox();
    let out = dir.path().join("out.jsonl");
    std::fs::write(dir.path().join("p.yaml"), bounded()).unwrap();
    // every store fails its commits after 30: the stages stop, restart,
    // fail again, and the run fails with a message naming the store
    let o = command(dir.path(), &["run", "-q", "p.yaml"])
        .env("RILL_TEST_FAIL_COMMITS_AFTER", "30")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("cannot commit to the state store") && err.contains("No space left"),
        "{err}"
    );
    let partial = check_exact(&out, 5);
    assert!(partial < 6000, "the run cannot have finished ({partial})");
    // space is back: the next run resumes and loses nothing
    let o = rill(dir.path(), &["run", "-q", "p.yaml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(check_exact(&out, 5), 6000);
    // a finished run leaves no state behind: the next run starts over
    // (and writes the whole file again, rather than nothing)
    let o = rill(dir.path(), &["run", "-q", "p.yaml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(check_exact(&out, 5), 6000);
}

#[test]
fn every_delivery_mode_delivers_a_bounded_run_exactly() {
    let dir = sandbox();
    let out = dir.path().join("out.jsonl");
    for (mode, extra) in [
        ("exactly_once", ""),
        ("at_least_once", ""),
        ("best_effort", ""),
        // grouped commits by count, and a best_effort input
        (
            "exactly_once",
            "  checkpoint_interval: {records: 100, time: 5ms}\n",
        ),
    ] {
        let mut yaml = bounded().replace(
            "  checkpoint_interval: 20ms\n",
            &format!("  delivery: {mode}\n{extra}"),
        );
        if !extra.is_empty() {
            yaml = yaml.replace("input: gen", "input: {stage: gen, delivery: best_effort}");
        }
        std::fs::write(dir.path().join("p.yaml"), &yaml).unwrap();
        let _ = std::fs::remove_dir_all(dir.path().join(".rill"));
        let o = rill(dir.path(), &["run", "-q", "p.yaml"]);
        assert!(o.status.success(), "{mode}: {}", stderr(&o));
        assert_eq!(check_exact(&out, 5), 6000, "{mode} {extra}");
        // best_effort writes nothing to disk
        let stored = dir.path().join(".rill/state/bounded");
        if mode == "best_effort" {
            assert!(!stored.exists(), "best_effort made {}", stored.display());
        } else {
            assert!(stored.join("_shared").is_dir(), "{mode}: no shared store");
        }
    }
    for (bad, want) in [
        (
            "  checkpoint_interval: {records: 0}\n",
            "`checkpoint_interval.records` must be at least 1",
        ),
        (
            "  checkpoint_interval: {every: 3}\n",
            "unknown field `every`",
        ),
        ("  checkpoint_interval: soon\n", "p.yaml:16"),
        ("  delivery: twice\n", "p.yaml:16"),
    ] {
        let yaml = bounded().replace("  checkpoint_interval: 20ms\n", bad);
        std::fs::write(dir.path().join("p.yaml"), &yaml).unwrap();
        let o = rill(dir.path(), &["validate", "p.yaml"]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stdout(&o));
        let all = stdout(&o) + &stderr(&o);
        assert!(all.contains(want), "{bad}: {all}");
    }
}

/// RunInference with dynamic batching under `exactly_once`: a SIGKILL in
/// the middle, a restart, and every record is inferred and written once,
/// with the result an undisturbed run gives.
#[test]
fn sigkill_during_batched_inference_resumes_exactly() {
    let yaml = r#"
pipeline:
  name: infer
  transforms:
    - {type: Generate, name: gen, config: {count: 3000, rate: 1500, keys: 3, seed: 9}}
    - type: RunInference
      name: infer
      input: gen
      config:
        model_handler: {type: BurnMlp, config: {labels: [normal, overheating, bearing_wear]}}
        model: {dir: configs/models/classify}
        preprocess: {callable: "lambda row: [row.value, row.value * 2.0, 1.0 - row.value, 0.5]"}
        batching: {max_batch_size: 32, max_batch_delay: 20ms}
    - {type: WriteToJson, name: sink, input: infer, config: {path: out.jsonl}}
options:
  checkpoint_interval: 20ms
"#;
    let results = |dir: &Path| -> Vec<(u64, String, f64)> {
        read_jsonl(&dir.join("out.jsonl"))
            .iter()
            .map(|v| {
                (
                    v["id"].as_u64().unwrap(),
                    v["inference"]["label"].as_str().unwrap().to_owned(),
                    v["inference"]["score"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let calm = sandbox();
    std::fs::write(calm.path().join("p.yaml"), yaml).unwrap();
    let out = rill(calm.path(), &["run", "-q", "p.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let want = results(calm.path());
    assert_eq!(want.len(), 3000);

    let dir = sandbox();
    std::fs::write(dir.path().join("p.yaml"), yaml).unwrap();
    let mut child = run_bg(dir.path(), &[]);
    wait_lines(&dir.path().join("out.jsonl"), 800);
    child.kill().unwrap();
    child.wait().unwrap();
    let out = rill(dir.path(), &["run", "-q", "p.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = results(dir.path());
    assert_eq!(got.len(), 3000, "lost or duplicated records");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.0, w.0, "order");
        assert_eq!(g.1, w.1, "record {}: another label", g.0);
        assert!(
            (g.2 - w.2).abs() < 1e-6,
            "record {}: {} vs {}",
            g.0,
            g.2,
            w.2
        );
    }
}

/// The source's durable count of emitted records, read from its store
/// (the process is dead).
fn durable_emitted(dir: &Path, pipeline: &str) -> u64 {
    let store =
        rill_runtime::store::open_stage(&dir.join(".rill/state"), pipeline, "gen", "gen").unwrap();
    rill_runtime::durable::Committed::load(&store)
        .unwrap()
        .source
        .emitted
}

/// Runs `unbounded()` under `RILL_TEST_SLOW_FLUSH=slow` four times,
/// SIGKILLed once `lines_first` more lines are out (and up to 300 ms more), hands
/// each killed run's stderr to `check`, then runs it to a SIGTERM and
/// checks the output is exact.
fn kill_under_slow_flushes(slow: &str, lines_first: usize, check: impl Fn(u32, &Path, &str)) {
    let dir = sandbox();
    let out = dir.path().join("out.jsonl");
    std::fs::write(dir.path().join("p.yaml"), unbounded()).unwrap();
    let run = || {
        command(
            dir.path(),
            &["run", "-q", "p.yaml", "--listen", "tcp/127.0.0.1:0"],
        )
        .env("RILL_TEST_SLOW_FLUSH", slow)
        .env("RILL_LOG", "warn,rill::flush_order=debug")
        .spawn()
        .unwrap()
    };
    for round in 0..4 {
        let before = lines(&out);
        let mut child = run();
        wait_lines(&out, before + lines_first);
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..300)));
        assert!(
            child.try_wait().unwrap().is_none(),
            "round {round}: the run stopped before the kill"
        );
        child.kill().unwrap();
        let o = child.wait_with_output().unwrap();
        check(round, dir.path(), &stderr(&o));
    }
    let child = run();
    let before = lines(&out);
    wait_lines(&out, before + 1000);
    signal(&child, "-TERM");
    let o = wait(child, Duration::from_secs(10), "rill after SIGTERM");
    assert!(o.status.success(), "exit {:?}: {}", o.status, stderr(&o));
    let n = check_exact(&out, 7);
    assert!(n as usize > before, "{n} records");
}

/// Consumers in one process get a commit's records before it is flushed;
/// what they do with them reaches their own store only once the producer's
/// flush covers them (issue 21, goal 2). Here the source's disk is slow:
/// its commits stay in memory until a flush, and each flush takes 300 ms
/// (`RILL_TEST_SLOW_FLUSH`), so a SIGKILL loses the source's last commits
/// while its consumer holds their records. Each killed run logged such a
/// wait (the fault was there when it died); every restart finds no
/// consumer durable past its producer (else it exits 2, see
/// `link_local_outputs`), and the output is exact.
#[test]
fn sigkill_while_a_producer_flushes_slowly_loses_nothing() {
    kill_under_slow_flushes("gen:300", 1500, |round, dir, err| {
        let written = lines(&dir.join("out.jsonl"));
        let durable = durable_emitted(dir, "resume");
        eprintln!("round {round}: killed with {written} lines written, {durable} emitted durably");
        assert!(
            err.contains("waits for the flush of a producer here"),
            "round {round}: no consumer waited for the source's flush: {err}"
        );
    });
}

/// The same with the shared store of a process running every stage (one
/// log, issue 21 goal 2): consumers write their commits without waiting for
/// their producers' flushes, and one flush covers every stage. Here every
/// stage's disk is slow and the commits of all of them wait, in the order
/// made, in one journal in memory that each flush writes whole
/// (`RILL_TEST_SLOW_FLUSH=*:300`): a SIGKILL loses a suffix of the process's
/// commits, as a power cut loses the end of a log. Each killed run logged
/// flushes that carried commits of several stages at once (consumers did
/// not wait), no consumer waited for a producer's flush, and the output is
/// exact.
#[test]
fn sigkill_while_one_shared_log_flushes_slowly_loses_nothing() {
    // a second of work: several flushes of 300 ms
    kill_under_slow_flushes("*:300", 3000, |round, dir, err| {
        let together = err
            .lines()
            .filter(|l| l.contains("a flush of the shared log writes"))
            .filter(|l| !l.contains(" of 1 stores"))
            .count();
        eprintln!(
            "round {round}: killed with {} lines written; {together} flushes carried several stages' commits",
            lines(&dir.join("out.jsonl"))
        );
        assert!(
            together > 0,
            "round {round}: no flush carried several stages' commits: {err}"
        );
        assert!(
            !err.contains("waits for the flush of a producer here"),
            "round {round}: a consumer waited for its producer's flush: {err}"
        );
    });
}
