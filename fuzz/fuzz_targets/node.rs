//! One Raft node under an adversarial network, disk and snapshot traffic; body in
//! `raftkv::fuzzing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| raftkv::fuzzing::node_target(data));
