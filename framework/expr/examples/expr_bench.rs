//! Per-record cost of evaluating compiled programs.
//!
//! ```text
//! cargo run --release -p rill-expr --example expr_bench [evaluations] [case]
//! ```

use std::hint::black_box;
use std::time::Instant;

use rill_core::{Record, record};
use rill_expr::{Program, truthy};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let only = std::env::args().nth(2);
    let records: Vec<Record> = (0..1024)
        .map(|i| {
            record! {
                "id" => i as i64,
                "temp" => (i % 40) as f64 + 0.5,
                "device" => if i % 3 == 0 { "a-17" } else { "b-4" },
                "site" => "north",
            }
        })
        .collect();
    let cases: &[(&str, &str, bool)] = &[
        ("expression", "temp > 20 and device.startswith('a')", false),
        ("bare field", "device", false),
        (
            "lambda",
            "lambda row: row.temp > 20 and row.device.startswith('a')",
            true,
        ),
        ("arith", "temp * 1.8 + 32 > 80", false),
        ("regex", r"re.match(r'a-\d+', device) is not None", false),
        ("f-string", "f'{device}:{temp:.1f}'", false),
        (
            "def",
            "def f(row):\n    if row.temp > 20:\n        return row.device.upper()\n    return None\n",
            true,
        ),
    ];
    println!(
        "{n} evaluations per case ({} distinct records)",
        records.len()
    );
    // Calibration: what reading one string field and cloning it costs here.
    let start = Instant::now();
    let mut total = 0usize;
    for i in 0..n {
        let v = black_box(&records[i & 1023])
            .get(black_box("device"))
            .cloned();
        total += v.is_some() as usize;
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    println!(
        "{:<11} {ns:>8.1} ns/record  (fields.get(\"device\").clone(), for scale; {total})",
        "baseline"
    );
    for (name, src, callable) in cases {
        if only.as_deref().is_some_and(|o| o != *name) {
            continue;
        }
        let p = if *callable {
            Program::callable(src)
        } else {
            Program::expression(src)
        }
        .expect("compiles");
        for r in records.iter().take(100) {
            black_box(p.eval(r).expect("evaluates"));
        }
        let mut kept = 0usize;
        let start = Instant::now();
        for i in 0..n {
            let v = p.eval(black_box(&records[i & 1023])).expect("evaluates");
            kept += truthy(&v) as usize;
        }
        let ns = start.elapsed().as_nanos() as f64 / n as f64;
        println!(
            "{name:<11} {ns:>8.1} ns/record  (truthy: {kept})  {}",
            src.lines().next().unwrap_or("")
        );
    }
}
