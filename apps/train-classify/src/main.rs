//! `cargo run --release -p train-classify` regenerates the model and the
//! held-out stream of `configs/classify.yaml`.

use std::io::Write;
use std::path::PathBuf;

use rill_ml::nets::{Arch, Net};
use train_classify::{FIELDS, LABELS, LAYERS, accuracy, generate, train};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut out = PathBuf::from("configs");
    let mut epochs = 100;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = args.next().map(PathBuf::from).unwrap_or(out),
            "--epochs" => {
                epochs = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| fail("--epochs needs a number"))
            }
            other => fail(&format!(
                "unknown argument `{other}`; usage: train-classify [--out DIR] [--epochs N]"
            )),
        }
    }
    let data = generate(6000, 11);
    let held = generate(1000, 12);
    let model = train(&data, epochs, 13);
    println!(
        "trained {LAYERS:?} for {epochs} epochs on {} samples: train accuracy {:.4}, held-out accuracy {:.4}",
        data.len(),
        accuracy(&model, &data),
        accuracy(&model, &held)
    );
    let dir = out.join("models/classify/1");
    let arch = Arch::Mlp {
        layers: LAYERS.to_vec(),
    };
    rill_ml::nets::save(Net::Mlp(model), &arch, &dir).unwrap_or_else(|e| fail(&e));
    let stream = out.join("data/classify-holdout.jsonl");
    std::fs::create_dir_all(stream.parent().unwrap()).unwrap_or_else(|e| fail(&e.to_string()));
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(&stream).unwrap_or_else(|e| fail(&e.to_string())),
    );
    for (i, s) in held.iter().enumerate() {
        let mut row = serde_json::Map::new();
        row.insert("id".into(), i.into());
        row.insert("machine".into(), format!("m-{}", i % 8).into());
        for (k, v) in FIELDS.iter().zip(s.values) {
            row.insert((*k).into(), ((v * 1000.0).round() / 1000.0).into());
        }
        row.insert("label".into(), LABELS[s.label].into());
        writeln!(f, "{}", serde_json::Value::Object(row)).unwrap_or_else(|e| fail(&e.to_string()));
    }
    f.flush().unwrap_or_else(|e| fail(&e.to_string()));
    println!("wrote {} and {}", dir.display(), stream.display());
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2)
}
