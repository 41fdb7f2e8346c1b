//! # rill-hil-tests
//!
//! Hardware-in-the-loop tests: real CUDA devices, real process kills, real
//! network cuts. Each test checks for its hardware first and, where it is
//! absent, skips with a message saying what was missing, so `cargo test
//! --workspace` stays green on a CPU-only CI machine.
//!
//! The core-runtime work has no hardware-dependent tests yet: its process
//! tests (two `rill run --stages` processes on loopback, restarts of
//! panicking stages) run everywhere and live in `apps/rill/tests/`. This
//! crate receives the SIGKILL chaos test with the exactly-once work and the
//! CUDA parity tests with RunInference.
