//! Panics rill's model code must see, or must not print.
//!
//! On CUDA, cubecl allocates device memory on its own device thread: an
//! allocation that fails there (`CUDA_ERROR_OUT_OF_MEMORY`, reported as
//! `can't allocate buffer of size: N`) panics on that thread, where cubecl
//! catches it and only logs it. The forward pass that asked for the memory
//! never sees the panic. So rill installs a panic hook (once, chained to
//! the one before it) that counts out-of-memory panics on threads that are
//! not themselves running a forward pass; a forward pass during which the
//! count moved is treated as out of memory (split in half and retried)
//! whatever it returned. Panics on a thread that runs a forward pass are
//! caught there and classified by their text, so they are not counted.
//!
//! The hook also lets a thread probe for the CUDA driver without the probe's
//! panic being printed ([`quietly`]), where swapping the process-wide hook
//! would silence other threads' panics too.

use std::cell::Cell;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static INSTALL: Once = Once::new();
static DEVICE_OOM: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static IN_FORWARD: Cell<bool> = const { Cell::new(false) };
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// True when an error or panic text reports an allocation failure on a
/// device: cubecl's `BufferTooBig` ("can't allocate buffer of size") and
/// its launch error ("An out-of-memory error happened during launch"),
/// CUDA's `CUDA_ERROR_OUT_OF_MEMORY`, an allocator's "out of memory".
pub fn is_oom(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "out of memory",
        "out-of-memory",
        "outofmemory",
        "out_of_memory",
        "buffertoobig",
        "can't allocate buffer",
        "memory allocation",
    ]
    .iter()
    .any(|p| t.contains(p))
}

fn payload_text(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| p.downcast_ref::<&str>().copied())
        .unwrap_or("")
}

/// Installs the hook (idempotent).
pub fn install() {
    INSTALL.call_once(|| {
        let before = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_FORWARD.with(Cell::get) && is_oom(payload_text(info.payload())) {
                DEVICE_OOM.fetch_add(1, Relaxed);
            }
            if !QUIET.with(Cell::get) {
                before(info);
            }
        }));
    });
}

/// How many out-of-memory panics have happened outside forward passes.
pub fn device_oom_count() -> u64 {
    DEVICE_OOM.load(Relaxed)
}

/// Runs `f` as a forward pass: its own panics are not counted as a device
/// thread's.
pub fn in_forward<T>(f: impl FnOnce() -> T) -> T {
    install();
    let was = IN_FORWARD.with(|c| c.replace(true));
    let _reset = Reset(&IN_FORWARD, was);
    f()
}

/// Runs `f` with this thread's panics not printed.
pub fn quietly<T>(f: impl FnOnce() -> T) -> T {
    install();
    let was = QUIET.with(|c| c.replace(true));
    let _reset = Reset(&QUIET, was);
    f()
}

/// Puts a thread-local flag back, on unwinding too.
struct Reset(&'static std::thread::LocalKey<Cell<bool>>, bool);

impl Drop for Reset {
    fn drop(&mut self) {
        let v = self.1;
        self.0.with(|c| c.set(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubecl_and_cuda_texts_are_out_of_memory() {
        for t in [
            "called `Result::unwrap()` on an `Err` value: BufferTooBig { size: 4294967296, backtrace: .. }",
            "can't allocate buffer of size: 4294967296",
            "An out-of-memory error happened during launch\nCaused by:\n  cuLaunchKernel",
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")",
            "memory allocation of 8589934592 bytes failed",
        ] {
            assert!(is_oom(t), "{t}");
        }
        for t in [
            "index out of bounds: the len is 3 but the index is 7",
            "Shape mismatch",
        ] {
            assert!(!is_oom(t), "{t}");
        }
    }

    #[test]
    fn only_panics_outside_forward_passes_are_counted() {
        let before = device_oom_count();
        // a forward pass's own panic: caught by its caller, not counted
        let r = in_forward(|| {
            quietly(|| std::panic::catch_unwind(|| panic!("out of memory: batch of 64")))
        });
        assert!(r.is_err());
        assert_eq!(device_oom_count(), before);
        assert!(
            !IN_FORWARD.with(Cell::get),
            "the flag is put back after a panic"
        );
        // another thread's (a device thread's): counted
        std::thread::spawn(|| {
            quietly(|| std::panic::catch_unwind(|| panic!("can't allocate buffer of size: 9")))
        })
        .join()
        .unwrap()
        .unwrap_err();
        assert_eq!(device_oom_count(), before + 1);
        // any other panic: not counted
        std::thread::spawn(|| quietly(|| std::panic::catch_unwind(|| panic!("index 7"))))
            .join()
            .unwrap()
            .unwrap_err();
        assert_eq!(device_oom_count(), before + 1);
    }
}
