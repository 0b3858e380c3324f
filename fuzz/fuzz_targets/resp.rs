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

#[path = "../../tests/common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{peak_heap, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for limits in [RespLimits::default(), raftkv::fuzzing::TIGHT_RESP_LIMITS] {
        let (requests, peak) = peak_heap(|| raftkv::fuzzing::resp_decode_all(data, limits));
        let bound = limits.decode_heap_bytes_max(data.len());
        assert!(
            peak <= bound,
            "decoding {} bytes ({requests} requests) peaked at {peak} heap bytes > {bound}",
            data.len()
        );
    }
    raftkv::fuzzing::resp_target(data);
});
