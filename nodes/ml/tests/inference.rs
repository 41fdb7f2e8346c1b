//! RunInference driven directly: keyed models and their LRU, instances in
//! parallel, out-of-memory back-off, hot swap under load, bad examples.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use rill_core::spec::Resources;
use rill_core::{Record, Value};
use rill_ml::nets::{Arch, Net, save};
use rill_ml::{Cpu, ExampleError, HandlerConfig, ModelHandler, register_handler, testing};
use serde::Deserialize;

/// Saves a regressor with fresh random weights (seeded) as version folder `dir`.
fn regressor(dir: &Path, seed: u64) {
    let device = Default::default();
    <Cpu as Backend>::seed(&device, seed);
    let arch = Arch::Mlp {
        layers: vec![3, 8, 1],
    };
    save(Net::<Cpu>::init(&arch, &device), &arch, dir).unwrap();
}

fn rows(n: usize, key: impl Fn(usize) -> String) -> Vec<Record> {
    (0..n)
        .map(|i| {
            Record::default().with_key(key(i)).with("i", i as i64).with(
                "features",
                Value::List(vec![
                    Value::Float(i as f64 * 0.1),
                    Value::Float(1.0 - i as f64 * 0.05),
                    Value::Int(i as i64 % 3),
                ]),
            )
        })
        .collect()
}

fn value(r: &Record) -> f64 {
    let Some(Value::Map(m)) = r.get("inference") else {
        panic!("no inference in {r:?}")
    };
    m["value"].as_f64().unwrap()
}

fn text<'a>(r: &'a Record, f: &str) -> &'a str {
    r.get(f).and_then(Value::as_str).unwrap()
}

#[test]
fn keyed_models_with_lru_eviction() {
    let dir = tempfile::tempdir().unwrap();
    for (k, seed) in [("a", 1), ("b", 2), ("c", 3)] {
        regressor(&dir.path().join(k).join("1"), seed);
    }
    // what each model alone says
    let mut alone = HashMap::new();
    for k in ["a", "b", "c"] {
        let cfg =
            format!("{{model_handler: {{type: BurnMlp, config: {{path: {k}/1, task: regress}}}}}}");
        let (mut node, _) = testing::build(&cfg, dir.path(), Resources::default()).unwrap();
        let (out, _) = testing::process(node.as_mut(), rows(6, |_| k.into()));
        alone.insert(k, out.iter().map(value).collect::<Vec<_>>());
    }
    assert_ne!(
        alone["a"], alone["b"],
        "the models must differ for the test to test"
    );
    let cfg = "{model_handler: {type: BurnMlp, config: {task: regress}}, model_id: m,
               keyed: {max_models: 2, models: {a: a/1, b: b/1, c: c/1}}}";
    let (mut node, metrics) = testing::build(cfg, dir.path(), Resources::default()).unwrap();
    // one record per call: a b a c b a
    let keys = ["a", "b", "a", "c", "b", "a"];
    for (i, k) in keys.iter().enumerate() {
        let mut r = rows(6, |_| (*k).into());
        let rec = r.swap_remove(i);
        let (out, failed) = testing::process(node.as_mut(), vec![rec]);
        assert!(failed.is_empty());
        assert_eq!(text(&out[0], "model_id"), format!("m/{k}"));
        assert!(
            (value(&out[0]) - alone[k][i]).abs() < 1e-6,
            "record {i} served by the wrong model"
        );
    }
    // loads: a, b, c (evicts b), b (evicts a), a (evicts c)
    assert_eq!(metrics.counter("model_loads"), 5);
    assert_eq!(metrics.counter("model_evictions"), 3);
    // a whole batch of mixed keys keeps its order
    let (out, _) = testing::process(node.as_mut(), rows(6, |i| keys[i].into()));
    let got: Vec<i64> = out
        .iter()
        .map(|r| r.get("i").unwrap().as_i64().unwrap())
        .collect();
    assert_eq!(got, (0..6).collect::<Vec<_>>());
    // a key with no model and no default model is a dead letter
    let (out, failed) = testing::process(node.as_mut(), rows(1, |_| "zzz".into()));
    assert!(out.is_empty());
    assert!(
        failed[0].msg.contains("no model for key `zzz`"),
        "{}",
        failed[0].msg
    );
}

#[test]
fn bad_examples_are_dead_letters_and_the_rest_runs() {
    let dir = tempfile::tempdir().unwrap();
    regressor(&dir.path().join("m/1"), 5);
    let cfg = "{model_handler: {type: BurnMlp, config: {path: m/1, task: regress}}}";
    let (mut node, _) = testing::build(cfg, dir.path(), Resources::default()).unwrap();
    let mut batch = rows(5, |_| "k".into());
    batch[1].fields.shift_remove("features");
    batch[3]
        .fields
        .insert("features".into(), Value::List(vec![Value::Float(1.0)]));
    let (out, failed) = testing::process(node.as_mut(), batch);
    let ids: Vec<i64> = out
        .iter()
        .map(|r| r.get("i").unwrap().as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![0, 2, 4]);
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().any(|f| f.msg.contains("no field `features`")));
    assert!(
        failed
            .iter()
            .any(|f| f.msg.contains("takes 3 values, the example has 1"))
    );
}

// ---- a custom handler, registered from Rust: injected OOMs, concurrency ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeConfig {
    tag: String,
    #[serde(default)]
    oom_times: usize,
    #[serde(default)]
    oom_above: usize,
    #[serde(default)]
    sleep_ms: u64,
}

struct Probe {
    tag: String,
    oom_left: AtomicUsize,
    oom_above: usize,
    sleep: Duration,
}

/// Batch sizes each probe saw (failed ones too), by tag.
static SIZES: Mutex<Option<HashMap<String, Vec<usize>>>> = Mutex::new(None);
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
static MOST_ACTIVE: AtomicUsize = AtomicUsize::new(0);

impl HandlerConfig for ProbeConfig {
    type Handler = Probe;
    fn path(&self) -> Option<&Path> {
        Some(Path::new("."))
    }
    fn handler(&self, _: &Path) -> Result<Probe, String> {
        Ok(Probe {
            tag: self.tag.clone(),
            oom_left: AtomicUsize::new(self.oom_times),
            oom_above: self.oom_above,
            sleep: Duration::from_millis(self.sleep_ms),
        })
    }
}

impl<B: Backend> ModelHandler<B> for Probe {
    type Model = ();
    type Input = Vec<f64>;
    type Output = Vec<f64>;
    fn load(&self, _: &Path, _: &B::Device) -> Result<(), String> {
        Ok(())
    }
    fn to_input(&self, _: &(), ex: &[&Value], _: &B::Device) -> Result<Vec<f64>, ExampleError> {
        ex.iter()
            .enumerate()
            .map(|(index, v)| {
                v.as_f64().ok_or(ExampleError {
                    index,
                    msg: "not a number".into(),
                })
            })
            .collect()
    }
    fn forward(&self, _: &(), x: Vec<f64>) -> Vec<f64> {
        SIZES
            .lock()
            .unwrap()
            .get_or_insert_default()
            .entry(self.tag.clone())
            .or_default()
            .push(x.len());
        if x.len() > self.oom_above
            && self
                .oom_left
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            panic!(
                "CUDA_ERROR_OUT_OF_MEMORY: injected for a batch of {}",
                x.len()
            );
        }
        if !self.sleep.is_zero() {
            let now = ACTIVE.fetch_add(1, SeqCst) + 1;
            MOST_ACTIVE.fetch_max(now, SeqCst);
            std::thread::sleep(self.sleep);
            ACTIVE.fetch_sub(1, SeqCst);
        }
        x.iter().map(|v| v * 2.0).collect()
    }
    fn to_values(&self, y: Vec<f64>) -> Result<Vec<Value>, String> {
        Ok(y.into_iter().map(Value::Float).collect())
    }
}

fn numbers(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record::default().with("x", i as i64))
        .collect()
}

fn sizes(tag: &str) -> Vec<usize> {
    SIZES.lock().unwrap().get_or_insert_default()[tag].clone()
}

#[test]
fn out_of_memory_halves_the_batch_then_it_grows_back() {
    register_handler::<ProbeConfig>("Probe", "test probe");
    let cfg = "{model_handler: {type: Probe, config: {tag: oom, oom_times: 3, oom_above: 8}},
               input: x, batching: {max_batch_size: 32}}";
    let (mut node, metrics) = testing::build(cfg, Path::new("."), Resources::default()).unwrap();
    let mut done = 0;
    for _ in 0..30 {
        let (out, failed) = testing::process(node.as_mut(), numbers(32));
        assert!(failed.is_empty(), "{:?}", failed.first());
        for (i, r) in out.iter().enumerate() {
            assert_eq!(r.get("inference"), Some(&Value::Float(i as f64 * 2.0)));
        }
        done += out.len();
    }
    assert_eq!(done, 30 * 32, "no record lost");
    assert_eq!(metrics.counter("failed_batches"), 3);
    let s = sizes("oom");
    // 32 fails, 16 fails, 8 + 8 run, 16 fails, 8 + 8 run, then batches of 8
    assert_eq!(&s[..7], &[32, 16, 8, 8, 16, 8, 8], "{s:?}");
    // 16 good batches later it doubles, and again: back to 32
    assert_eq!(*s.last().unwrap(), 32, "{s:?}");
    // (two good batches of 8 already counted towards the 16)
    assert!(s.iter().skip(7).take(14).all(|&n| n == 8), "{s:?}");
}

#[test]
fn instances_run_batches_in_parallel_and_keep_order() {
    register_handler::<ProbeConfig>("Probe", "test probe");
    let cfg = "{model_handler: {type: Probe, config: {tag: par, sleep_ms: 30}},
               input: x, batching: {max_batch_size: 8}}";
    let res = Resources {
        instances: Some(3),
        ..Default::default()
    };
    let (mut node, _) = testing::build(cfg, Path::new("."), res).unwrap();
    let start = Instant::now();
    let (out, _) = testing::process(node.as_mut(), numbers(64));
    let took = start.elapsed();
    let got: Vec<f64> = out
        .iter()
        .map(|r| r.get("inference").unwrap().as_f64().unwrap())
        .collect();
    assert_eq!(got, (0..64).map(|i| i as f64 * 2.0).collect::<Vec<_>>());
    assert_eq!(sizes("par").len(), 8);
    assert!(
        MOST_ACTIVE.load(SeqCst) >= 2,
        "instances never ran at the same time (8 batches of 30 ms took {took:?})"
    );
}

// ---- hot swap ----

fn publish(models: &Path, version: u64, seed: u64) {
    // written aside, then renamed into place: the watcher sees it whole
    let tmp = models.join(format!(".tmp-{version}"));
    regressor(&tmp, seed);
    std::fs::rename(&tmp, models.join(version.to_string())).unwrap();
}

#[test]
fn hot_swap_under_load_loses_nothing_and_refuses_a_broken_version() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    publish(&models, 1, 1);
    let cfg = "{model_handler: {type: BurnMlp, config: {task: regress}},
               model: {dir: models, watch: true, poll: 20ms}}";
    let (mut node, metrics) = testing::build(cfg, dir.path(), Resources::default()).unwrap();
    let writer = {
        let models = models.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            publish(&models, 2, 2);
            std::thread::sleep(Duration::from_millis(250));
            // version 3 is broken: weights of another shape
            let tmp = models.join(".tmp-3");
            regressor(&tmp, 3);
            std::fs::write(
                tmp.join("model.json"),
                r#"{"kind": "mlp", "layers": [3, 5, 1]}"#,
            )
            .unwrap();
            std::fs::rename(&tmp, models.join("3")).unwrap();
            std::thread::sleep(Duration::from_millis(400));
            publish(&models, 4, 4);
        })
    };
    let mut seen: Vec<u64> = Vec::new();
    let (mut sent, mut got) = (0, 0);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let (out, failed) = testing::process(node.as_mut(), rows(10, |_| "k".into()));
        assert!(failed.is_empty(), "{:?}", failed.first());
        sent += 10;
        got += out.len();
        for r in &out {
            let v: u64 = text(r, "model_version").parse().unwrap();
            if seen.last() != Some(&v) {
                seen.push(v);
            }
        }
        if seen.last() == Some(&4) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    writer.join().unwrap();
    assert_eq!(got, sent, "records lost during a swap");
    assert_eq!(seen.first(), Some(&1));
    assert_eq!(seen.last(), Some(&4), "version 4 never served: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "versions went back: {seen:?}"
    );
    assert!(!seen.contains(&3), "the broken version served: {seen:?}");
    assert!(metrics.counter("refused_model_versions") >= 1);
    assert!(metrics.counter("model_swaps") >= 2);
}

#[test]
fn a_model_folder_without_versions_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let cfg = "{model_handler: {type: BurnMlp, config: {}}, model: {dir: empty}}";
    let err = testing::build(cfg, dir.path(), Resources::default())
        .err()
        .unwrap();
    assert!(err.contains("no model versions"), "{err}");
}

/// Parses a `RunInference` config, which validates it (what `rill
/// validate` does for the stage).
fn validate(cfg: &str) -> Result<(), String> {
    let mut registry = rill_core::registry::Registry::new();
    rill_ml::register_all(&mut registry);
    let node = rill_core::yaml::parse(cfg).map_err(|e| e.to_string())?;
    registry
        .parse("RunInference", &node)
        .expect("registered")
        .map(drop)
        .map_err(|e| e.to_string())
}

#[test]
fn beam_yaml_run_inference_keys_are_understood() {
    let dir = tempfile::tempdir().unwrap();
    regressor(&dir.path().join("m").join("1"), 7);
    let records = || {
        (0..20)
            .map(|i| {
                Record::default()
                    .with("a", i as f64 * 0.1)
                    .with("b", 1.0 - i as f64 * 0.05)
                    .with("c", (i % 3) as i64)
            })
            .collect::<Vec<_>>()
    };
    // rill's spelling: hooks on the transform, `inference_field`
    let rill = "{model_handler: {type: BurnMlp, config: {path: m/1, task: regress}}, \
                preprocess: {callable: 'lambda row: [row.a, row.b, row.c]'}, \
                postprocess: {callable: 'lambda r: r.prediction.value * 2'}, \
                inference_field: prediction}";
    // Beam YAML's: hooks inside the handler's config, `inference_tag`,
    // an empty `inference_args`; there `postprocess` gets Beam's
    // PredictionResult (`example`, `inference`, `model_id`), not the row
    let beam = "{model_handler: {type: BurnMlp, config: {path: m/1, task: regress, \
                  preprocess: {callable: 'lambda row: [row.a, row.b, row.c]'}, \
                  postprocess: {callable: 'lambda x: x.inference.value * 2'}}}, \
                inference_tag: prediction, inference_args: {}}";
    validate(beam).unwrap();
    let run = |cfg: &str, field: &str| -> Vec<f64> {
        let (mut node, _) = testing::build(cfg, dir.path(), Resources::default()).unwrap();
        let (out, failed) = testing::process(node.as_mut(), records());
        assert!(failed.is_empty(), "{failed:?}");
        out.iter()
            .map(|r| {
                assert!(r.get("inference").is_none(), "{r:?}");
                r.get(field).and_then(Value::as_f64).unwrap()
            })
            .collect()
    };
    let (a, b) = (run(rill, "prediction"), run(beam, "prediction"));
    assert_eq!(a.len(), 20);
    assert_eq!(a, b);
    assert!(a.iter().any(|v| *v != a[0]), "the model's outputs vary");

    // Beam's file-based hook: a function in a Python file
    std::fs::write(
        dir.path().join("post.py"),
        "def twice(v):\n    return v * 2\n\ndef post(x):\n    return twice(x.inference.value)\n",
    )
    .unwrap();
    let from_file = beam.replace(
        "postprocess: {callable: 'lambda x: x.inference.value * 2'}",
        "postprocess: {path: post.py, name: post}",
    );
    assert_eq!(run(&from_file, "prediction"), a);

    // the rest of the PredictionResult: the (preprocessed) example, the model
    let fields = beam.replace(
        "lambda x: x.inference.value * 2",
        "lambda x: [x.example[2], x.model_id, x.model_version]",
    );
    let (mut node, _) = testing::build(&fields, dir.path(), Resources::default()).unwrap();
    let (out, failed) = testing::process(node.as_mut(), records());
    assert!(failed.is_empty(), "{failed:?}");
    for (i, r) in out.iter().enumerate() {
        let Some(Value::List(got)) = r.get("prediction") else {
            panic!("{r:?}")
        };
        assert_eq!(got[0], Value::Int(i as i64 % 3), "{r:?}");
        assert_eq!(Some(&got[1]), r.get("model_id"), "{r:?}");
        assert_eq!(Some(&got[2]), r.get("model_version"), "{r:?}");
    }

    // a hook given in both places, and arguments the handlers cannot take,
    // are refused by name
    let twice = beam.replace(
        "inference_args: {}",
        "preprocess: {callable: 'lambda row: [row.a]'}",
    );
    let err = validate(&twice).unwrap_err();
    assert!(err.contains("`preprocess` is given twice"), "{err}");
    // `batching` without `max_batch_size` takes the default, 64
    let mut registry = rill_core::registry::Registry::new();
    rill_ml::register_all(&mut registry);
    let delay_only = beam.replace("inference_args: {}", "batching: {max_batch_delay: 5ms}");
    let node = rill_core::yaml::parse(&delay_only).unwrap();
    let b = registry
        .parse("RunInference", &node)
        .unwrap()
        .unwrap()
        .batching()
        .unwrap();
    assert_eq!(
        (b.max_batch_size, b.max_batch_delay),
        (64, Duration::from_millis(5))
    );
    let args = beam.replace("inference_args: {}", "inference_args: {temperature: 0.5}");
    let err = validate(&args).unwrap_err();
    assert!(
        err.contains("inference_args") && err.contains("temperature"),
        "{err}"
    );
}
