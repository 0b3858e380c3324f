//! What the process holds in memory, for `INFO memory`: `used_memory`, the
//! bytes allocated and not yet freed (counted by [`CountingAllocator`],
//! which the `raftkv` binary installs), and `used_memory_rss`, what the
//! kernel has mapped for it. The two answer different questions: the
//! first grows only if the server keeps more data, the second also when
//! the allocator keeps freed pages for reuse, so a bounded `used_memory`
//! under a stepping RSS points at the allocator, not at a leak.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes allocated through [`CountingAllocator`] and not yet freed.
static USED: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting the bytes it hands out. One relaxed
/// atomic add per allocation and per free: the count is a gauge, not a
/// synchronisation point.
pub struct CountingAllocator;

// SAFETY: every call is forwarded to `System` with the caller's arguments;
// the counter is only bookkeeping beside it.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            USED.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            USED.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        USED.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            USED.fetch_add(new_size, Ordering::Relaxed);
            USED.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

/// Bytes allocated and not freed; `None` where [`CountingAllocator`] is not
/// the global allocator (the library's tests), since nothing was counted.
pub fn used_bytes() -> Option<usize> {
    match USED.load(Ordering::Relaxed) {
        0 => None,
        n => Some(n),
    }
}

/// The resident set size, from `/proc/self/statm` (Linux); `None` elsewhere
/// or if it cannot be read.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
