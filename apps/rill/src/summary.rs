//! Progress on a terminal, and the end-of-run summary (on stderr, so stdout
//! stays the pipeline's own output).

use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use rill_runtime::{RunReport, StageMetrics};

pub struct Progress {
    bar: ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    pub fn start(metrics: Vec<Arc<StageMetrics>>) -> Progress {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .expect("static template"),
        );
        let b = bar.clone();
        let task = tokio::spawn(async move {
            loop {
                let parts: Vec<String> = metrics
                    .iter()
                    .map(|m| {
                        let s = m.snapshot();
                        let mark = if s.finished { "✓" } else { "" };
                        format!("{}{mark} {}→{}", s.stage, s.records_in, s.records_out)
                    })
                    .collect();
                b.set_message(parts.join("  "));
                b.tick();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Progress { bar, task }
    }

    pub fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}

fn us(v: Option<u64>) -> String {
    match v {
        None => "-".into(),
        Some(u64::MAX) => ">1s".into(),
        Some(us) if us >= 1000 => format!("≤{}ms", us / 1000),
        Some(us) => format!("≤{us}µs"),
    }
}

/// Prints the per-stage table.
pub fn print(report: &RunReport, how: &str) {
    eprintln!(
        "pipeline `{}` {how} in {:.2}s",
        report.pipeline,
        report.elapsed.as_secs_f64()
    );
    eprintln!(
        "  {:<24} {:<14} {:>10} {:>10} {:>7} {:>8} {:>9} {:>9}",
        "stage", "type", "in", "out", "errors", "restarts", "p50", "p99"
    );
    for s in &report.stages {
        eprintln!(
            "  {:<24} {:<14} {:>10} {:>10} {:>7} {:>8} {:>9} {:>9}",
            s.stage,
            s.type_name,
            s.records_in,
            s.records_out,
            s.errors,
            s.restarts,
            us(s.p50_us),
            us(s.p99_us)
        );
    }
    for s in report.stages.iter().filter(|s| !s.node.is_empty()) {
        eprintln!("  {}:", s.stage);
        for (k, v) in &s.node {
            eprintln!("    {k:<36} {v}");
        }
    }
}
