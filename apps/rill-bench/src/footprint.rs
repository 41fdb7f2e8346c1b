//! Memory: `rill-bench footprint` (the `rill` binary idle and on the
//! quickstart) and `rill-bench slow-sink` (a sink ten times slower than its
//! source, resident memory sampled once a second).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rill_core::Record;
use rill_core::node::{BuildContext, Emitter, Node, NodeConfig, NodeError, NodeKind, Sink};
use rill_core::spec::{Machine, parse_str};
use serde::Deserialize;

/// Resident memory of a process, in KiB (0 once it is gone).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The largest resident set of any child process waited for so far (KiB).
fn children_peak_kib() -> u64 {
    // SAFETY: getrusage fills the struct it is given
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u.ru_maxrss as u64
    }
}

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The `rill` binary built beside this one.
fn rill_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let rill = exe.with_file_name("rill");
    anyhow::ensure!(
        rill.is_file(),
        "{} is missing: build it with the same profile first (cargo build --release -p rill-cli)",
        rill.display()
    );
    Ok(rill)
}

fn interrupt(child: &mut Child) {
    // SAFETY: a signal to our own child
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `rill-bench footprint`: run from the repository's root (it copies the
/// quickstart from `configs/`).
pub fn main(_args: &[String]) -> anyhow::Result<()> {
    let rill = rill_binary()?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    println!(
        "footprint of {} (resident memory, MB = MiB)",
        rill.display()
    );

    // the quickstart, as the README runs it, in a copy of its files
    for f in ["configs/quickstart.yaml", "configs/data/readings.jsonl"] {
        anyhow::ensure!(
            Path::new(f).is_file(),
            "{f} not found: run rill-bench footprint from the repository's root"
        );
        std::fs::create_dir_all(dir.join(f).parent().unwrap_or(dir))?;
        std::fs::copy(f, dir.join(f))?;
    }
    let t = Instant::now();
    let status = Command::new(&rill)
        .args(["run", "configs/quickstart.yaml"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "the quickstart failed: {status}");
    println!(
        "  quickstart, peak                          {:>6.1} MB   (goal < 60; {:.0} ms)",
        mb(children_peak_kib()),
        t.elapsed().as_secs_f64() * 1000.0
    );

    // an idle 3-stage pipeline: one record a second
    let yaml = dir.join("idle.yaml");
    std::fs::write(
        &yaml,
        "pipeline:
  name: idle
  transforms:
    - {type: Generate, name: numbers, config: {rate: 1, seed: 1}}
    - {type: MapToFields, name: scale, input: numbers, config: {append: true, fields: {scaled: \"value * 100\"}}}
    - {type: WriteToJson, name: sink, input: scale, config: {path: out/idle.jsonl}}
",
    )?;
    let mut child = Command::new(&rill)
        .args(["run", "idle.yaml"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_secs(3));
    let mut samples = Vec::new();
    for _ in 0..10 {
        samples.push(rss_kib(child.id()));
        std::thread::sleep(Duration::from_secs(1));
    }
    interrupt(&mut child);
    let max = samples.iter().copied().max().unwrap_or(0);
    let s: Vec<String> = samples.iter().map(|k| format!("{:.1}", mb(*k))).collect();
    println!(
        "  idle 3 stages (Generate 1/s -> MapToFields -> WriteToJson), max of 10 s {:>5.1} MB   (goal < 50; samples {})",
        mb(max),
        s.join(" ")
    );
    Ok(())
}

/// Records the slow sink has written (in the child).
static WRITTEN: AtomicU64 = AtomicU64::new(0);

/// A sink that takes `ns_per_record` for each record.
#[derive(Debug, Deserialize)]
struct SlowSink {
    ns_per_record: u64,
}

struct SlowSinkNode {
    ns: u64,
}

impl NodeConfig for SlowSink {
    fn kind(&self) -> NodeKind {
        NodeKind::Sink
    }
    fn build(&self, _: &BuildContext<'_>) -> Result<Node, NodeError> {
        Ok(Node::Sink(Box::new(SlowSinkNode {
            ns: self.ns_per_record,
        })))
    }
}

impl Sink for SlowSinkNode {
    fn write(&mut self, batch: Vec<Record>, _: &mut Emitter) -> Result<(), NodeError> {
        std::thread::sleep(Duration::from_nanos(self.ns * batch.len() as u64));
        WRITTEN.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// The child: `BenchSource` (as fast as it is let) -> MapToFields ->
/// `SlowSink`, `exactly_once`; prints its rate and, while running, the
/// records written every second.
pub async fn child(args: &[String]) -> anyhow::Result<()> {
    let count: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let ns: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(0);
    let state = tempfile::tempdir()?;
    let yaml = format!(
        r#"
pipeline:
  name: slow
  transforms:
    - {{type: BenchSource, name: source, config: {{count: {count}}}}}
    - {{type: MapToFields, name: pass, input: source, config: {{append: true, fields: {{}}}}}}
    - {{type: SlowSink, name: sink, input: pass, config: {{ns_per_record: {ns}}}}}
options:
  delivery: exactly_once
  state_dir: {}
"#,
        state.path().display()
    );
    let mut registry = rill_nodes::registry();
    registry.register::<crate::BenchSource>("BenchSource", "bench source");
    registry.register::<SlowSink>("SlowSink", "a slow sink");
    let p = parse_str(&yaml, "slow", None, &registry, &Machine::detect())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ticker = tokio::spawn(async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            println!("written {}", WRITTEN.load(Ordering::Relaxed));
        }
    });
    let t = Instant::now();
    rill_runtime::run(Arc::new(p), Default::default()).await?;
    ticker.abort();
    let n = WRITTEN.load(Ordering::Relaxed);
    anyhow::ensure!(n == count, "the sink wrote {n} of {count}");
    println!("rate {:.0}", count as f64 / t.elapsed().as_secs_f64());
    Ok(())
}

/// Runs a child; returns its rate and its resident memory once a second
/// (KiB) with the records written by then.
fn run_child(count: u64, ns: u64) -> anyhow::Result<(f64, Vec<(u64, u64)>)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["slow-sink-child", &count.to_string(), &ns.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped");
    let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = samples.clone();
    let reader = std::thread::spawn(move || {
        let mut rate = 0.0;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(w) = line.strip_prefix("written ") {
                let w: u64 = w.parse().unwrap_or(0);
                s.lock().unwrap().push((rss_kib(pid), w));
            } else if let Some(r) = line.strip_prefix("rate ") {
                rate = r.parse().unwrap_or(0.0);
            }
        }
        rate
    });
    let status = child.wait()?;
    let rate = reader.join().unwrap_or(0.0);
    anyhow::ensure!(status.success(), "the slow-sink child failed: {status}");
    let samples = std::mem::take(&mut *samples.lock().unwrap());
    Ok((rate, samples))
}

/// `rill-bench slow-sink [RECORDS]`: 10,000,000 records by default.
pub fn slow_sink(args: &[String]) -> anyhow::Result<()> {
    let count: u64 = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    // the pipeline's rate with a sink that takes no time
    let (fast, _) = run_child(300_000, 0)?;
    let ns = (10.0 * 1e9 / fast) as u64;
    println!(
        "slow sink: {count} records, exactly_once; with a sink that takes no time the pipeline runs at {fast:.0} records/s; the slow sink takes {ns} ns a record (10x slower)"
    );
    let (rate, samples) = run_child(count, ns)?;
    println!(
        "  ran at {rate:.0} records/s ({:.1}x slower than with the fast sink), {} s",
        fast / rate,
        samples.len()
    );
    println!("  resident memory once a second (MB), with the records written by then:");
    for chunk in samples.chunks(10) {
        let row: Vec<String> = chunk
            .iter()
            .map(|(k, _)| format!("{:>5.1}", mb(*k)))
            .collect();
        println!(
            "    {}   ({} written)",
            row.join(" "),
            chunk.last().map_or(0, |c| c.1)
        );
    }
    let rss: Vec<u64> = samples.iter().map(|s| s.0).filter(|k| *k > 0).collect();
    anyhow::ensure!(!rss.is_empty(), "no memory sample was taken");
    let peak = |part: &[u64]| part.iter().copied().max().unwrap_or(0);
    let q = (rss.len() / 4).max(1);
    let (max, early, late) = (peak(&rss), peak(&rss[..q]), peak(&rss[rss.len() - q..]));
    println!(
        "  max {:.1} MB (goal < 300); max of the first quarter {:.1} MB, of the last quarter {:.1} MB: {}",
        mb(max),
        mb(early),
        mb(late),
        if late * 10 <= early * 11 {
            "flat (the last within 10% of the first)"
        } else {
            "NOT flat (the last more than 10% above the first)"
        }
    );
    Ok(())
}
