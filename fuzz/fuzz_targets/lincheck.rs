//! The linearizability checker against its brute-force reference; body in
//! `raftkv::fuzzing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| raftkv::fuzzing::lincheck_target(data));
