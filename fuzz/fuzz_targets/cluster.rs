//! A whole simulated cluster whose schedule the fuzzer chooses; body in
//! `raftkv::fuzzing`. `RAFTKV_FUZZ_BUG=<name>` switches on an injected bug.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| raftkv::fuzzing::cluster_target(data));
