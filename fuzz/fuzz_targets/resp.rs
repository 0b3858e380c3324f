//! Arbitrary bytes through the client port's RESP decoder; body in
//! `raftkv::fuzzing`.
//!
//! This target also checks the decoder's heap bound: a counting global
//! allocator records the peak of live heap bytes while one buffer holding the
//! whole input is decoded (each request dropped as it comes), which must stay
//! within `RespLimits::decode_heap_bytes_max(input_len)`: the input, twice
//! the request bound, and a few hundred bytes per argument (the reasoning is
//! on that function).
#![no_main]

use raftkv::server::resp::RespLimits;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting live bytes and their peak. libFuzzer runs
/// the target on one thread; its own allocations bypass the Rust allocator.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            // Both blocks may be live during the copy: count the new one first.
            grew(new_size);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak heap bytes above the starting level during `f`.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed) - base)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for limits in [RespLimits::default(), raftkv::fuzzing::TIGHT_RESP_LIMITS] {
        let (requests, peak) = peak_during(|| raftkv::fuzzing::resp_decode_all(data, limits));
        let bound = limits.decode_heap_bytes_max(data.len());
        assert!(
            peak <= bound,
            "decoding {} bytes ({requests} requests) peaked at {peak} heap bytes > {bound}",
            data.len()
        );
    }
    raftkv::fuzzing::resp_target(data);
});
