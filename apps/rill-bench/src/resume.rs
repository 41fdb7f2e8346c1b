//! `rill-bench resume [GB]`: what a restarted file source costs, deep into
//! a large file.
//!
//! Writes a JSON Lines file of about GB gigabytes (default 5; lines of about
//! 1 KiB), reads it with `ReadFromJson` up to its last 1,000 lines and
//! commits the source's position to a sled store, as a stage does. Then it
//! restarts the source three times (a new node built from the committed
//! state, as after a SIGKILL) and times each restart up to the first record
//! after the committed position.
//!
//! The baseline, measured in the same run, is reading the file up to that
//! position, which is what a restart that read the file again would cost:
//! the ratio is restart time / baseline time.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use rill_core::node::{Emitter, Node, Source, SourceStatus};
use rill_core::state::{KeyedState, StateStore, WriteBatch};
use rill_core::testkit;
use rill_runtime::store::SledStore;

const TAIL: u64 = 1000;

fn build(dir: &std::path::Path, state: &KeyedState) -> anyhow::Result<Box<dyn Source>> {
    let reg = rill_nodes::registry();
    match testkit::build_yaml_with_state(&reg, "ReadFromJson", "{path: big.jsonl}", dir, state)
        .map_err(anyhow::Error::msg)?
    {
        Node::Source(s) => Ok(s),
        _ => anyhow::bail!("ReadFromJson is not a source"),
    }
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let gb: f64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(5.0);
    let tmp = tempfile::tempdir_in(".")?;
    let dir = tmp.path();
    let path = dir.join("big.jsonl");
    let pad = "x".repeat(1000);
    let lines = ((gb * (1u64 << 30) as f64) / (pad.len() + 30) as f64) as u64 + TAIL;
    let t = Instant::now();
    {
        let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
        for i in 0..lines {
            writeln!(f, "{{\"i\": {i}, \"pad\": \"{pad}\"}}")?;
        }
        f.flush()?;
    }
    let size = std::fs::metadata(&path)?.len();
    println!(
        "wrote {lines} lines, {:.2} GB, in {:.1} s",
        size as f64 / 1e9,
        t.elapsed().as_secs_f64()
    );

    // the first run: read up to the last TAIL lines, commit as a stage does
    let store: Arc<dyn StateStore> = Arc::new(SledStore::open(&dir.join("state"), "read")?);
    let state = KeyedState::new(store.clone());
    let target = lines - TAIL;
    let t = Instant::now();
    let mut src = build(dir, &state)?;
    let mut made = 0u64;
    let mut out = Emitter::new();
    while made < target {
        let max = (target - made).min(256) as usize;
        src.poll(max, &mut out)?;
        let (main, _, failures) = out.take();
        made += (main.len() + failures.len()) as u64;
    }
    let read_s = t.elapsed().as_secs_f64();
    src.checkpoint()?;
    store.commit(WriteBatch {
        ops: state.take_changes(),
    })?;
    store.flush()?;
    drop(src);
    println!(
        "baseline: reading {target} records ({:.2} GB) took {read_s:.2} s",
        size as f64 / 1e9
    );

    // restarts: build from the committed state, seek, first record
    for round in 1..=3 {
        state.discard();
        let t = Instant::now();
        let mut src = build(dir, &state)?;
        anyhow::ensure!(src.seek(made), "the source did not resume by position");
        let status = src.poll(1, &mut out)?;
        let restart = t.elapsed();
        let (main, _, _) = out.take();
        let first = main
            .first()
            .and_then(|r| r.get("i"))
            .and_then(|v| v.as_i64());
        anyhow::ensure!(
            first == Some(target as i64) && status == SourceStatus::More,
            "the restarted source went on at {first:?}, not {target}"
        );
        println!(
            "restart {round}: {:.3} ms to the first record after {target} (ratio to re-reading: {:.6})",
            restart.as_secs_f64() * 1e3,
            restart.as_secs_f64() / read_s
        );
    }
    Ok(())
}
