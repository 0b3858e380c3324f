//! Arbitrary bytes through the wire decoder; body in `raftkv::fuzzing`.
//!
//! This target also checks the decoder's heap bound: a counting global
//! allocator records the peak of live heap bytes during one `wire::decode`
//! call, which must stay within `Limits::decode_heap_bytes_max(input_len)`
//! (the input length plus one `Entry<Command>` per two input bytes, capped
//! by the entry limit; the reasoning is on that function).
#![no_main]

use raftkv::wire::{self, Limits};

#[path = "../../tests/common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{peak_heap, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for limits in [Limits::default(), raftkv::fuzzing::TIGHT_LIMITS] {
        let (result, peak) = peak_heap(|| wire::decode(data, &limits));
        let bound = limits.decode_heap_bytes_max(data.len());
        assert!(peak <= bound, "decode of {} bytes peaked at {peak} heap bytes > {bound}: {result:?}", data.len());
        drop(result);
    }
    raftkv::fuzzing::decode_target(data);
});
