//! The `decode` target: arbitrary bytes through the wire decoder, checked
//! against the encoder and against postcard's own decoder.
//!
//! The heap bound ([`Limits::decode_heap_bytes_max`]) is asserted by the
//! fuzz target itself, which installs a counting global allocator; a test
//! binary shares its allocator with every other test, so it is not done
//! here.

use crate::kv::Command;
use crate::raft::{Envelope, Membership, NodeSet};
use crate::wire::{self, DecodeError, Frames, Limits, Malformed, HEADER_LEN};

/// Small bounds, so that short inputs reach every limit.
pub const TIGHT_LIMITS: Limits = Limits {
    frame_bytes_max: 512,
    entries_per_append_max: 4,
    key_bytes_max: 8,
    value_bytes_max: 16,
    snapshot_chunk_bytes_max: 32,
};

/// Decodes `data` with the default and with [`TIGHT_LIMITS`] and checks
/// every outcome (see `check_decode`).
pub fn decode_target(data: &[u8]) {
    check_decode(data, &Limits::default());
    check_decode(data, &TIGHT_LIMITS);
}

/// Checks one decode of `data` under `limits`:
/// - success: the frame is canonical (re-encoding gives the same bytes),
///   decodes again to the same message, postcard reads the same message
///   from the payload, and prefixes of the frame are `Incomplete`;
/// - a refused payload is one postcard rejects, or one it reads only in a
///   non-canonical or over-limit form;
/// - [`Frames`] agrees with `decode` on the first frame.
pub fn check_decode(data: &[u8], limits: &Limits) {
    let result = wire::decode(data, limits);
    match &result {
        Ok((envelope, used)) => check_decoded(data, limits, envelope, *used),
        Err(DecodeError::Incomplete { needed }) => assert!(*needed > 0, "Incomplete needs at least one byte"),
        Err(error @ (DecodeError::Malformed { .. } | DecodeError::OverLimit(_))) => {
            check_refusal(data, limits, error);
        }
        Err(_) => {}
    }
    let mut frames = Frames::new(data, limits);
    let first = frames.next();
    match (&result, first) {
        (Ok((envelope, _)), Some(Ok(framed))) => assert_eq!(&framed, envelope),
        (Err(DecodeError::Incomplete { .. }), None) => {}
        (Err(error), Some(Err(framed))) => assert_eq!(&framed, error),
        (result, first) => panic!("Frames disagrees with decode: {first:?} vs {result:?}"),
    }
    frames.for_each(drop);
}

fn check_decoded(data: &[u8], limits: &Limits, envelope: &Envelope<Command>, used: usize) {
    assert!(HEADER_LEN < used && used <= data.len(), "consumed {used} of {} bytes", data.len());
    let frame = &data[..used];
    let again = match wire::encode(envelope, limits) {
        Ok(bytes) => bytes,
        Err(e) => panic!("a decoded message must be encodable under the same limits: {e}"),
    };
    assert_eq!(again, frame, "the encoding is canonical: re-encoding must give the same frame");
    assert_eq!(wire::decode(&again, limits), Ok((envelope.clone(), used)));
    let postcard = postcard::from_bytes::<Envelope<Command>>(&frame[HEADER_LEN..]);
    assert_eq!(postcard.as_ref().ok(), Some(envelope), "postcard reads the payload differently");
    for cut in [0, 1, 2, HEADER_LEN - 1, HEADER_LEN, used / 2, used - 1] {
        // Before the header is complete only the rest of the header is known.
        let needed = if cut < HEADER_LEN { HEADER_LEN - cut } else { used - cut };
        if cut < used {
            assert_eq!(wire::decode(&frame[..cut], limits), Err(DecodeError::Incomplete { needed }));
        }
    }
}

/// A payload refused as malformed or over a limit must not be something
/// postcard reads, re-encodes to the very same bytes, and that fits the
/// limits: that would be a valid frame the decoder wrongly refused.
fn check_refusal(data: &[u8], limits: &Limits, error: &DecodeError) {
    if let DecodeError::Malformed { reason: Malformed::BadMembership { voters, learners }, .. } = error {
        // A check of meaning, not of syntax: postcard reads such a
        // configuration, and it must be one no correct peer sends.
        let m = Membership { voters: NodeSet::from_bits(*voters), learners: NodeSet::from_bits(*learners) };
        assert!(!m.can_lead_a_cluster(), "refused a well-formed configuration {m:?}");
        return;
    }
    let Some(len_bytes) = data.get(3..HEADER_LEN) else { return };
    let Ok(len_bytes) = <[u8; 4]>::try_from(len_bytes) else { return };
    let payload_len = u32::from_le_bytes(len_bytes) as usize;
    let Some(payload) = data.get(HEADER_LEN..HEADER_LEN.saturating_add(payload_len)) else { return };
    let Ok(read) = postcard::from_bytes::<Envelope<Command>>(payload) else { return };
    if let Ok(frame) = wire::encode(&read, limits) {
        assert_ne!(
            &frame[HEADER_LEN..],
            payload,
            "refused ({error}) a canonical in-limit payload postcard reads as {read:?}"
        );
    }
}
