//! Out of memory on the backend's device thread.
//!
//! On CUDA, cubecl allocates on its own device thread; a failed allocation
//! panics there, cubecl catches and logs it, and the forward pass that
//! asked for the memory returns as if nothing happened. This handler does
//! the same: on a batch too large it panics on another thread with
//! cubecl's own text, catches it there, and returns wrong numbers. The node
//! must treat that pass as out of memory: split, retry, lose nothing, and
//! emit no wrong number.
//!
//! (Its own test binary: the count of device-thread panics is process-wide,
//! and would reach the other tests' forward passes.)

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use burn::tensor::backend::Backend;
use rill_core::spec::Resources;
use rill_core::{Record, Value};
use rill_ml::{ExampleError, HandlerConfig, ModelHandler, register_handler, testing};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceThreadConfig {
    fail_above: usize,
    fail_times: usize,
}

struct DeviceThread {
    fail_above: usize,
    fail_left: AtomicUsize,
}

static SIZES: Mutex<Vec<usize>> = Mutex::new(Vec::new());

impl HandlerConfig for DeviceThreadConfig {
    type Handler = DeviceThread;
    fn path(&self) -> Option<&Path> {
        Some(Path::new("."))
    }
    fn handler(&self, _: &Path) -> Result<DeviceThread, String> {
        Ok(DeviceThread {
            fail_above: self.fail_above,
            fail_left: AtomicUsize::new(self.fail_times),
        })
    }
}

impl<B: Backend> ModelHandler<B> for DeviceThread {
    type Model = ();
    type Input = Vec<f64>;
    type Output = Vec<f64>;
    fn load(&self, _: &Path, _: &B::Device) -> Result<(), String> {
        Ok(())
    }
    fn to_input(&self, _: &(), ex: &[&Value], _: &B::Device) -> Result<Vec<f64>, ExampleError> {
        Ok(ex.iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect())
    }
    fn forward(&self, _: &(), x: Vec<f64>) -> Vec<f64> {
        SIZES.lock().unwrap().push(x.len());
        if x.len() > self.fail_above
            && self
                .fail_left
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            let size = x.len() << 20;
            std::thread::spawn(move || {
                // cubecl's device thread: the panic is caught and logged there
                let _ = std::panic::catch_unwind(|| {
                    panic!(
                        "called `Result::unwrap()` on an `Err` value: BufferTooBig {{ size: {size} }}"
                    )
                });
            })
            .join()
            .unwrap();
            // and the pass carries on with memory it never got
            return vec![-1.0; x.len()];
        }
        x.iter().map(|v| v * 2.0).collect()
    }
    fn to_values(&self, y: Vec<f64>) -> Result<Vec<Value>, String> {
        Ok(y.into_iter().map(Value::Float).collect())
    }
}

#[test]
fn an_allocation_failed_on_the_device_thread_splits_the_batch() {
    register_handler::<DeviceThreadConfig>("DeviceThread", "test: OOM on another thread");
    let cfg = "{model_handler: {type: DeviceThread, config: {fail_above: 8, fail_times: 2}},
               input: x, batching: {max_batch_size: 32}}";
    let (mut node, metrics) = testing::build(cfg, Path::new("."), Resources::default()).unwrap();
    let mut done = 0;
    for _ in 0..3 {
        let batch: Vec<Record> = (0..32)
            .map(|i| Record::default().with("x", i as i64))
            .collect();
        let (out, failed) = testing::process(node.as_mut(), batch);
        assert!(failed.is_empty(), "{:?}", failed.first());
        for (i, r) in out.iter().enumerate() {
            assert_eq!(
                r.get("inference"),
                Some(&Value::Float(i as f64 * 2.0)),
                "a result of the failed pass got out"
            );
        }
        done += out.len();
    }
    assert_eq!(done, 3 * 32, "no record lost");
    assert_eq!(metrics.counter("failed_batches"), 2);
    let s = SIZES.lock().unwrap().clone();
    // 32 fails, 16 fails, 8 + 8 run, the other 16 runs; later batches go
    // in 8s (growing back takes 16 good passes)
    assert_eq!(&s[..5], &[32, 16, 8, 8, 16], "{s:?}");
    assert!(s[5..].iter().all(|&n| n == 8), "{s:?}");
}
