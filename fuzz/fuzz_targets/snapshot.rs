//! Arbitrary bytes as a snapshot file and the key/value machine's snapshot
//! inside it, through the decoders a restart runs; body in
//! `raftkv::fuzzing::snapshot_target`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    raftkv::fuzzing::snapshot_target(data);
});
