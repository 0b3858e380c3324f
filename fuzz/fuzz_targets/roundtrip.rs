//! Structured round trip: any in-limit `Envelope<Command>` (built with the
//! `arbitrary` derives that the crate's `arbitrary` feature turns on)
//! encodes, and decodes back to itself.
#![no_main]

use raftkv::kv::Command;
use raftkv::raft::Envelope;
use raftkv::wire::{decode, encode, EncodeError, Limits};

libfuzzer_sys::fuzz_target!(|envelope: Envelope<Command>| {
    let limits = Limits::default();
    match encode(&envelope, &limits) {
        Ok(frame) => assert_eq!(decode(&frame, &limits), Ok((envelope, frame.len()))),
        Err(EncodeError::OverLimit(_)) => {}
        Err(e) => panic!("encoding failed: {e}"),
    }
});
