//! The `rill` binary's allocator settings (`apps/rill/src/alloc.rs`):
//! `RILL_ALLOCATOR=system` gives the same outputs, and transparent huge
//! pages are off unless `MIMALLOC_ALLOW_THP` is set.

use std::time::{Duration, Instant};

use rill_testing::*;

/// Runs `configs/generate.yaml` (deterministic: a seeded stream) with the
/// extra environment; returns its output file.
fn generate(env: &[(&str, &str)]) -> Vec<u8> {
    let dir = sandbox();
    let out = command_of(
        &rill_bin(),
        dir.path(),
        &["run", "-q", "configs/generate.yaml"],
    )
    .envs(env.iter().copied())
    .output()
    .expect("rill runs");
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::read(dir.path().join("out/generate/big.jsonl")).expect("output written")
}

#[test]
fn the_system_allocator_gives_the_same_outputs() {
    let default = generate(&[]);
    let system = generate(&[("RILL_ALLOCATOR", "system")]);
    assert!(default.len() > 10_000, "{} bytes", default.len());
    assert!(default == system, "the outputs differ");
}

/// `THP_enabled` of a running `rill run` with the extra environment, or
/// `None` where the kernel does not report it.
fn thp_enabled(env: &[(&str, &str)]) -> Option<String> {
    let dir = sandbox();
    std::fs::write(
        dir.path().join("live.yaml"),
        "pipeline:
  transforms:
    - {type: Generate, name: gen, config: {rate: 5, seed: 1}}
    - {type: WriteToJson, input: gen, config: {path: out/live.jsonl}}
",
    )
    .expect("pipeline written");
    let mut p = Proc::new("live", dir.path(), &["run".into(), "live.yaml".into()]);
    p.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    p.start();
    let pid = p.child.as_ref().expect("started").id();
    // once it writes, it is past its start-up
    let t = Instant::now();
    while !dir.path().join("out/live.jsonl").exists() {
        assert!(p.running(), "rill stopped: see {}", dir.path().display());
        assert!(t.elapsed() < Duration::from_secs(30), "no output in 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    p.kill();
    status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(|v| v.trim().to_owned())
}

#[test]
fn huge_pages_are_off_unless_asked_for() {
    let Some(default) = thp_enabled(&[]) else {
        eprintln!("skipped: this kernel does not report THP_enabled");
        return;
    };
    assert_eq!(default, "0", "huge pages should be off");
    assert_eq!(
        thp_enabled(&[("MIMALLOC_ALLOW_THP", "1")]).as_deref(),
        Some("1"),
        "MIMALLOC_ALLOW_THP=1 keeps them"
    );
}
