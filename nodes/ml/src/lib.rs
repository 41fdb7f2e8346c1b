//! rill's machine-learning nodes: `RunInference` on Burn.
//!
//! Models run on the CPU with `burn-ndarray`, or on NVIDIA GPUs with
//! `burn-cuda` when built with the `cuda` feature. A [`ModelHandler`] says
//! how a model loads and how records become tensors and back; the built-in
//! handlers are `BurnMlp`, `BurnAutoencoder` and `BurnConv1d`, and custom
//! handlers register from Rust with [`register_handler`].
//!
//! ```no_run
//! let mut registry = rill_nodes::registry();
//! rill_ml::register_all(&mut registry);
//! ```

pub mod builtin;
pub mod device;
pub mod handler;
pub mod nets;
pub mod panics;
pub mod run_inference;
#[doc(hidden)]
pub mod testing;

#[cfg(feature = "cuda")]
pub use burn_cuda::CudaDevice;
pub use device::{Dev, detect_machine, gpus};
#[cfg(feature = "cuda")]
pub use handler::Gpu;
pub use handler::{
    Cpu, ExampleError, HandlerConfig, InferError, ModelHandler, handler_docs, register_handler,
};
pub use run_inference::RunInference;

use rill_core::registry::Registry;

/// Registers `RunInference`.
pub fn register_all(r: &mut Registry) {
    r.register::<RunInference>(
        "RunInference",
        "runs a Burn model over the stream, in dynamic batches (model_handler: BurnMlp, BurnAutoencoder, BurnConv1d or your own)",
    );
}
