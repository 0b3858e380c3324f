//! Arbitrary bytes as write-ahead log segments through the replay a server
//! runs at every start; body in `raftkv::fuzzing::wal_target`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    raftkv::fuzzing::wal_target(data);
});
