//! SIGKILL chaos: kill any rill process at any moment, start it again, and
//! the sink ends up exactly as an undisturbed run leaves it.
//!
//! Three stages: `Generate` (keyed records; the per-key sequence number is
//! `id / keys`), `TestCountPerKey` (a running count per key in keyed state,
//! so a record processed twice, or a state change lost, shows as a wrong
//! count), and `WriteToJson`. They run
//! - undisturbed, in one process (the reference);
//! - in three `rill run --stages` processes, one of which a driver SIGKILLs
//!   every 0–6 s and starts again;
//! - all in one process, SIGKILLed the same way.
//!
//! The windowed version puts a `Combine` in the middle: per-key count and
//! sum of ids in fixed 1 s windows of event time, whose accumulators live
//! in keyed state and whose firings follow the watermarks that travel
//! between the stages; every window's row must come out once, exact.
//!
//! The short versions run in CI (~30 s each). The long one:
//! `cargo test --release -p rill-hil-tests -- --ignored chaos_long`.
//! `RILL_CHAOS_SEED=N` replays a kill schedule.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rill_hil_tests::{Proc, chaos_rng, counting_pipeline, one_process, process_per_stage};

struct Plan {
    records: u64,
    rate: u64,
    keys: u64,
    /// A windowed `Combine` in place of the running count.
    windowed: bool,
    /// The least number of kills in each disturbed run.
    min_kills: u32,
    /// Kill for this long, then let the runs finish.
    chaos_for: Duration,
    /// Give up after this long.
    limit: Duration,
}

fn pipeline(p: &Plan) -> String {
    if p.windowed {
        return format!(
            r#"
pipeline:
  name: chaos
  transforms:
    - type: Generate
      name: gen
      config: {{count: {}, keys: {}, rate: {}, seed: 11, start_time: 0}}
    - type: Combine
      name: sum
      input: gen
      windowing: {{type: fixed, size: 1s}}
      config:
        group_by: key
        combine:
          n: {{value: id, fn: count}}
          ids: {{value: id, fn: sum}}
    - type: ExtractWindowingInfo
      name: info
      input: sum
      config: {{fields: {{start: window_start}}}}
    - type: WriteToJson
      name: sink
      input: info
      config: {{path: out.jsonl}}
options:
  checkpoint_interval: 50ms
"#,
            p.records, p.keys, p.rate
        );
    }
    counting_pipeline(
        "chaos",
        &format!(
            "count: {}, keys: {}, rate: {}, seed: 11",
            p.records, p.keys, p.rate
        ),
        "  checkpoint_interval: 50ms\n",
    )
}

fn scenario(dir: &Path, plan: &Plan, split: bool) -> Vec<Proc> {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("p.yaml"), pipeline(plan)).unwrap();
    if split && plan.windowed {
        process_per_stage(dir, &["gen", "sum", "info", "sink"])
    } else if split {
        process_per_stage(dir, &["gen", "count", "sink"])
    } else {
        vec![one_process(dir, "all")]
    }
}

/// Checks the sink of a windowed run: one row per (window, key), with the
/// exact count and sum of the ids `Generate` put in it.
fn check_windows(path: &Path, plan: &Plan) -> Result<(), String> {
    let mut want: BTreeMap<(i64, String), (u64, u64)> = BTreeMap::new();
    for id in 0..plan.records {
        let t = (id as f64 * 1000.0 / plan.rate as f64) as i64;
        let e = want
            .entry((t - t.rem_euclid(1000), format!("k{}", id % plan.keys)))
            .or_default();
        e.0 += 1;
        e.1 += id;
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut got: BTreeMap<(i64, String), (u64, u64)> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("{}:{}: not JSON ({e}): {line}", path.display(), i + 1))?;
        let start = (v["start"]
            .as_f64()
            .ok_or(format!("line {}: no start", i + 1))?
            * 1000.0) as i64;
        let key = v["key"].as_str().ok_or(format!("line {}: no key", i + 1))?;
        let row = (v["n"].as_u64().unwrap_or(0), v["ids"].as_u64().unwrap_or(0));
        if got.insert((start, key.to_owned()), row).is_some() {
            return Err(format!(
                "{}:{}: window {start} key {key} fired twice",
                path.display(),
                i + 1
            ));
        }
    }
    if got != want {
        let wrong: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(*v))
            .take(5)
            .map(|(k, v)| format!("{k:?}: want {v:?}, got {:?}", got.get(k)))
            .collect();
        return Err(format!(
            "{}: {} rows, {} expected; first differences: {wrong:?}",
            path.display(),
            got.len(),
            want.len()
        ));
    }
    Ok(())
}

/// Checks the sink of a run: ids 0..n in order, each once, and each count
/// is the record's per-key sequence number + 1.
fn check_sink(path: &Path, plan: &Plan) -> Result<(), String> {
    if plan.windowed {
        return check_windows(path, plan);
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut expect = 0u64;
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("{}:{}: not JSON ({e}): {line}", path.display(), i + 1))?;
        let id = v["id"].as_u64().ok_or(format!("line {}: no id", i + 1))?;
        if id != expect {
            return Err(format!(
                "{}:{}: expected id {expect}, found {id} ({})",
                path.display(),
                i + 1,
                if id < expect { "a duplicate" } else { "a gap" }
            ));
        }
        let count = v["count"]
            .as_u64()
            .ok_or(format!("line {}: no count", i + 1))?;
        if count != id / plan.keys + 1 {
            return Err(format!(
                "{}:{}: record {id} has count {count}, expected {} (keyed state lost or doubled)",
                path.display(),
                i + 1,
                id / plan.keys + 1
            ));
        }
        expect += 1;
    }
    if expect != plan.records {
        return Err(format!(
            "{}: {expect} records, expected {}",
            path.display(),
            plan.records
        ));
    }
    Ok(())
}

fn chaos(plan: Plan) {
    let (seed, mut rng) = chaos_rng();
    let tmp = tempfile::tempdir().unwrap();
    let calm = tmp.path().join("undisturbed");
    let split = tmp.path().join("split");
    let single = tmp.path().join("single");
    let mut reference = scenario(&calm, &plan, false);
    let mut groups = [
        scenario(&split, &plan, true),
        scenario(&single, &plan, false),
    ];
    reference[0].start();
    for g in &mut groups {
        for p in g.iter_mut() {
            p.start();
        }
    }
    let started = Instant::now();
    let gap = if plan.windowed { 500..3000 } else { 0..6000 };
    let mut next_kill = Instant::now() + Duration::from_millis(rng.u64(gap.clone()));
    let mut kills = Vec::new();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let mut all_done = reference.iter_mut().all(|p| !p.running());
        for g in &mut groups {
            for p in g.iter_mut() {
                if !p.running() {
                    if let Some(code) = p.exit
                        && code != 0
                    {
                        panic!(
                            "process `{}` exited with {code} (seed {seed})\n{}",
                            p.name,
                            p.logs()
                        );
                    }
                } else {
                    all_done = false;
                }
            }
        }
        if all_done {
            break;
        }
        assert!(
            started.elapsed() < plan.limit,
            "not finished after {:?} (seed {seed}); kills: {kills:?}\n{}",
            plan.limit,
            groups
                .iter()
                .flatten()
                .map(|p| p.logs())
                .collect::<Vec<_>>()
                .join("\n")
        );
        if Instant::now() >= next_kill && started.elapsed() < plan.chaos_for {
            // one victim in each disturbed run
            for g in &mut groups {
                let live: Vec<usize> = (0..g.len()).filter(|&i| g[i].running()).collect();
                if live.is_empty() {
                    continue;
                }
                let i = live[rng.usize(0..live.len())];
                kills.push(format!(
                    "{:.1}s {}",
                    started.elapsed().as_secs_f64(),
                    g[i].name
                ));
                g[i].kill();
                g[i].start();
            }
            next_kill = Instant::now() + Duration::from_millis(rng.u64(gap.clone()));
        }
    }
    eprintln!("kills: {kills:?}");
    assert_eq!(
        reference[0].exit,
        Some(0),
        "undisturbed run failed\n{}",
        reference[0].logs()
    );
    check_sink(&calm.join("out.jsonl"), &plan).unwrap();
    let want = std::fs::read(calm.join("out.jsonl")).unwrap();
    for (dir, g) in [(&split, &groups[0]), (&single, &groups[1])] {
        let path = dir.join("out.jsonl");
        if let Err(e) = check_sink(&path, &plan) {
            panic!(
                "seed {seed}, kills {kills:?}: {e}\n{}",
                g.iter().map(|p| p.logs()).collect::<Vec<_>>().join("\n")
            );
        }
        let got = std::fs::read(&path).unwrap();
        assert!(
            got == want,
            "{} differs from the undisturbed run's sink (seed {seed})",
            path.display()
        );
        let n_kills: u32 = g.iter().map(|p| p.kills).sum();
        assert!(
            n_kills >= plan.min_kills,
            "the driver killed {n_kills} times in {}, fewer than {}",
            dir.display(),
            plan.min_kills
        );
    }
    // every kill landed mid-stream: `Generate` paces its records (and a
    // restarted one resumes its pace), so its input lasts at least
    // records / rate seconds from the start
    let input_lasts = plan.records as f64 / plan.rate as f64;
    for k in &kills {
        let at: f64 = k.split('s').next().unwrap().parse().unwrap();
        assert!(
            at < input_lasts,
            "kill `{k}` came after the input's end ({input_lasts} s)"
        );
    }
}

#[test]
fn chaos_short() {
    chaos(Plan {
        records: 100_000,
        rate: 5_000,
        keys: 100,
        windowed: false,
        min_kills: 1,
        chaos_for: Duration::from_secs(20),
        limit: Duration::from_secs(120),
    });
}

#[test]
fn chaos_windowed_short() {
    chaos(Plan {
        records: 60_000,
        rate: 3_000,
        keys: 50,
        windowed: true,
        min_kills: 3,
        chaos_for: Duration::from_secs(15),
        limit: Duration::from_secs(120),
    });
}

#[test]
#[ignore = "long: run with --ignored chaos_long"]
fn chaos_long() {
    chaos(Plan {
        records: 1_000_000,
        rate: 5_000,
        keys: 1000,
        windowed: false,
        min_kills: 10,
        chaos_for: Duration::from_secs(190),
        limit: Duration::from_secs(600),
    });
}
