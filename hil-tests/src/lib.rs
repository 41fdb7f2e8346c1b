//! # rill-hil-tests
//!
//! Hardware-in-the-loop tests: real process kills and real CUDA devices
//! (network cuts between hosts are for the multi-host work, not built yet).
//! Each test checks for what it needs first and, where it is absent, skips
//! with a message saying what was missing, so `cargo test --workspace`
//! stays green on a CPU-only CI machine.
//!
//! - `tests/chaos.rs`: SIGKILL at random moments against a pipeline split
//!   over three `rill run --stages` processes, and against a one-process
//!   run; the sink must equal an undisturbed run's, record for record. A
//!   short version (~30 s) runs in CI; the long one is
//!   `cargo test --release -p rill-hil-tests -- --ignored chaos_long`.
//! - `tests/chaos_sources.rs`: every source that claims exactly-once
//!   (`Create`, `Generate`, `ReadFromJson`, `ReadFromCsv`) under SIGKILL,
//!   in one process and with only the source's process killed, under
//!   `exactly_once` and `at_least_once`, and a glob of four files; each
//!   asserts that its kills landed while the source was mid-stream.
//! - `tests/chaos_sinks.rs`: the sinks that write parts (`WriteToParquet`,
//!   `WriteToAvro`, `WriteToIceberg`) with their process SIGKILLed while
//!   the stream runs; every id once in the output (the Iceberg table read
//!   by pyiceberg and DuckDB), no data file of a killed attempt left.
//!
//! What the tests share (the `rill` binary, loopback ports, the process
//! driver) is in `rill-testing`, with the other test suites' scaffolding.

pub use rill_testing::*;
