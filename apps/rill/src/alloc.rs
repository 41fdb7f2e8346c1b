//! rill's global allocator: mimalloc for the small blocks records are made
//! of, the system allocator for large ones.
//!
//! Records are many small allocations made on one thread and freed on
//! another, which glibc's allocator handles poorly (`rill-bench` measured
//! the 3-stage `best_effort` pipeline 1.35 times faster with mimalloc). But
//! the large blocks a process holds at rest (sled's page tables and I/O
//! buffers, a few MB per stage, mostly zeros) cost more resident memory in
//! mimalloc's arenas, where a zeroed block is touched, than from glibc,
//! which maps them fresh from the kernel and leaves untouched pages out of
//! the resident set. An idle 3-stage pipeline holds 69 MB with mimalloc
//! alone and 41 MB with glibc alone (`rill-bench footprint`).
//! Blocks of [`LARGE`] bytes and more go to the system allocator, which
//! maps each from the kernel and unmaps it when freed (see
//! [`fixed_mmap_threshold`]); the rest to mimalloc.
//!
//! `RILL_ALLOCATOR=system` in the environment sends every block to the
//! system allocator: slower on records
//! (see `docs/performance.md`). It is read once, at the process's first
//! allocation, so a block is always freed by the allocator that made it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use mimalloc::MiMalloc;

/// The size from which a block comes from the system allocator.
pub const LARGE: usize = 256 << 10;

/// mimalloc below [`LARGE`] bytes, the system allocator from there on.
pub struct Allocator;

/// The threshold in force; `usize::MAX` until the first allocation.
static THRESHOLD: AtomicUsize = AtomicUsize::new(usize::MAX);

fn threshold() -> usize {
    let t = THRESHOLD.load(Relaxed);
    if t != usize::MAX {
        return t;
    }
    // getenv does not allocate; the environment does not change the answer
    // between two threads that get here first together
    // SAFETY: a NUL-terminated name; the value is read before returning
    let system = unsafe {
        let v = libc::getenv(c"RILL_ALLOCATOR".as_ptr());
        !v.is_null() && std::ffi::CStr::from_ptr(v).to_bytes() == b"system"
    };
    let t = if system { 0 } else { LARGE };
    fixed_mmap_threshold();
    THRESHOLD.store(t, Relaxed);
    t
}

/// Makes glibc map every block of [`LARGE`] bytes or more from the kernel
/// and unmap it when freed, unless the environment sets glibc's own
/// threshold (`MALLOC_MMAP_THRESHOLD_`, or `mmap_threshold` in
/// `GLIBC_TUNABLES`).
///
/// glibc starts with such a threshold (128 KB) but raises it each time a
/// mapped block is freed, up to 32 MB; from then on the large blocks a
/// pipeline makes and frees all the time (sled's buffers for the values
/// and pages it writes to files of their own, a commit's output log) come
/// from its arenas, where blocks of changing sizes leave holes the arenas
/// keep. Under a long backlog the process grew from 47 to 126 MB over
/// 4,000,000 records, most of it in glibc's arenas (`/proc/<pid>/smaps`);
/// with the threshold fixed it peaked at 53.8 to 62.9 MB over 10,000,000
/// in three runs (`rill-bench slow-sink`). Mapping each block costs its
/// page faults: `rill-bench e2e` ran about 8 % slower.
fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: getenv and strstr read NUL-terminated strings and do not
    // allocate; mallopt sets a number in glibc's allocator
    unsafe {
        let own = libc::getenv(c"MALLOC_MMAP_THRESHOLD_".as_ptr());
        let tunables = libc::getenv(c"GLIBC_TUNABLES".as_ptr());
        let tuned =
            !tunables.is_null() && !libc::strstr(tunables, c"mmap_threshold".as_ptr()).is_null();
        if own.is_null() && !tuned {
            libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE as libc::c_int);
        }
    }
}

fn large(size: usize) -> bool {
    size >= threshold()
}

// SAFETY: each block is freed and resized by the allocator that made it:
// the layout passed back names its size, which names the allocator; a
// resize that crosses `LARGE` moves the block between the two.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on
        unsafe {
            if large(layout.size()) {
                System.alloc(layout)
            } else {
                MiMalloc.alloc(layout)
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on
        unsafe {
            if large(layout.size()) {
                System.alloc_zeroed(layout)
            } else {
                MiMalloc.alloc_zeroed(layout)
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from the allocator its size names
        unsafe {
            if large(layout.size()) {
                System.dealloc(ptr, layout)
            } else {
                MiMalloc.dealloc(ptr, layout)
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract; a block that changes allocator is
        // copied (the smaller of the two sizes) and freed by its own
        unsafe {
            match (large(layout.size()), large(new_size)) {
                (false, false) => MiMalloc.realloc(ptr, layout, new_size),
                (true, true) => System.realloc(ptr, layout, new_size),
                (_, to_large) => {
                    let new = Layout::from_size_align_unchecked(new_size, layout.align());
                    let fresh = if to_large {
                        System.alloc(new)
                    } else {
                        MiMalloc.alloc(new)
                    };
                    if !fresh.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, fresh, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    fresh
                }
            }
        }
    }
}

/// Turns transparent huge pages off for this process (and the processes
/// it starts), unless `MIMALLOC_ALLOW_THP` is set.
///
/// mimalloc asks the kernel for huge pages for its arenas, and on a kernel
/// that grants them (`madvise`, the usual setting) one touched byte makes
/// 2 MB resident: an idle 3-stage pipeline held 70 MB with them and 38 MB
/// without (`rill-bench footprint`), at the same speed. Called first
/// thing in [`crate::Cli::main`], before the process has touched much.
pub fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: prctl with an integer option and no pointers
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn blocks_keep_their_bytes_when_they_change_allocator() {
        // the test binary runs on `Allocator` too (the crate's global one)
        let mut v: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        v.reserve(super::LARGE * 2);
        assert!(v.capacity() >= super::LARGE);
        assert!(v.iter().enumerate().all(|(i, b)| *b == i as u8));
        v.truncate(10);
        v.shrink_to_fit();
        assert_eq!(v, (0..10u8).collect::<Vec<_>>());
        let z = vec![0u64; super::LARGE];
        assert!(z.iter().all(|x| *x == 0));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn large_blocks_are_mapped_after_a_larger_one_was_freed() {
        // glibc's own threshold would rise to 4 MB once a mapped 4 MB block
        // is freed, and the next 1 MB block would come from an arena (it
        // does without `fixed_mmap_threshold`)
        let big = vec![1u8; 4 << 20];
        drop(std::hint::black_box(big));
        let block = std::hint::black_box(vec![2u8; 1 << 20]);
        // glibc keeps a block's size in the word before it, with bit 2
        // set for a block mapped on its own (and not from an arena)
        // SAFETY: malloc's header word of a live block, read only
        let header = unsafe { *block.as_ptr().cast::<usize>().sub(1) };
        assert_eq!(block[1000], 2);
        assert!(
            header & 2 != 0,
            "the 1 MB block came from an arena (header {header:#x})"
        );
    }
}
