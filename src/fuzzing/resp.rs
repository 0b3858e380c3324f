//! The `resp` target: arbitrary bytes through the server's RESP decoder
//! ([`ServerCodec`]), as one connection's input arriving in arbitrary
//! pieces.
//!
//! Input layout: the first byte's low two bits give a number `k` of cuts,
//! the next `k` bytes place them (byte `b` cuts at `b × (len + 1) / 256` of
//! the rest), and the rest is what the client sent. A seed starting with a
//! zero byte is a plain stream.
//!
//! The heap bound ([`RespLimits::decode_heap_bytes_max`]) is asserted by the
//! fuzz target itself, around [`resp_decode_all`], with a counting global
//! allocator.

use crate::server::resp::{encode_request, ClientCommand, CommandError, Reply, RespError, RespLimits, ServerCodec};
use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

/// Small bounds, so that short inputs reach every limit.
pub const TIGHT_RESP_LIMITS: RespLimits =
    RespLimits { request_bytes_max: 64, args_max: 4, key_bytes_max: 8, value_bytes_max: 16 };

/// Checks the decoding of `data` (see the module docs for its layout) under
/// the default limits and under [`TIGHT_RESP_LIMITS`]:
/// - no panic; the buffer never holds more than `request_bytes_max` when the
///   decoder asks for more bytes;
/// - the same requests, and the same ending (the same number of bytes left
///   waiting, or the same kind of fatal error), whether the bytes arrive at
///   once, in the pieces the input chose, or (for short inputs) a byte at a
///   time;
/// - every decoded command re-encodes ([`encode_request`]) to a request that
///   decodes to itself, and whose every prefix decodes to "need more bytes";
/// - every refusal's `-ERR` reply is one line.
pub fn resp_target(data: &[u8]) {
    let Some((&head, rest)) = data.split_first() else { return };
    let k = usize::from(head & 3).min(rest.len());
    let (cut_bytes, input) = rest.split_at(k);
    let cuts: Vec<usize> = cut_bytes.iter().map(|&b| usize::from(b) * (input.len() + 1) / 256).collect();
    for limits in [RespLimits::default(), TIGHT_RESP_LIMITS] {
        let whole = decode_in_pieces(input, &[], limits);
        assert_eq!(decode_in_pieces(input, &cuts, limits), whole, "the chosen pieces change the outcome");
        if input.len() <= 512 {
            let every: Vec<usize> = (1..input.len()).collect();
            assert_eq!(decode_in_pieces(input, &every, limits), whole, "a byte at a time changes the outcome");
        }
        for request in &whole.requests {
            match request {
                Ok(cmd) => check_round_trip(cmd, limits),
                Err(refusal) => check_one_line(Reply::from(refusal.clone())),
            }
        }
    }
}

/// Decodes all of `data` as one buffer, dropping each request as it comes
/// (what the fuzz target measures the heap of). Returns how many requests
/// there were.
pub fn resp_decode_all(data: &[u8], limits: RespLimits) -> usize {
    let mut codec = ServerCodec::new(limits);
    let mut buf = BytesMut::from(data);
    let mut count = 0;
    while let Ok(Some(request)) = codec.decode(&mut buf) {
        drop(request);
        count += 1;
    }
    count
}

/// How decoding a stream went.
#[derive(Debug, PartialEq)]
struct Outcome {
    requests: Vec<Result<ClientCommand, CommandError>>,
    ending: Ending,
}

#[derive(Debug, PartialEq)]
enum Ending {
    /// The decoder waits for more bytes, holding these many.
    Waiting(usize),
    /// The connection would be closed, for this kind of reason.
    Fatal(&'static str),
}

/// Feeds `data` to a fresh codec in pieces ending at `cuts` (any order, any
/// values up to `data.len()`), decoding everything after each piece.
fn decode_in_pieces(data: &[u8], cuts: &[usize], limits: RespLimits) -> Outcome {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(data.len())).collect();
    cuts.push(data.len());
    cuts.sort_unstable();
    let mut codec = ServerCodec::new(limits);
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    let mut from = 0;
    for cut in cuts {
        buf.extend_from_slice(&data[from..cut]);
        from = cut;
        loop {
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Some(request)) => {
                    assert!(buf.len() < before, "a request consumed no bytes");
                    requests.push(request);
                }
                Ok(None) => {
                    assert!(
                        buf.len() <= limits.request_bytes_max,
                        "{} bytes buffered without a request, over the bound {}",
                        buf.len(),
                        limits.request_bytes_max
                    );
                    break;
                }
                Err(error) => {
                    let kind = match &error {
                        RespError::TooLarge { bytes, max } => {
                            assert!(*bytes > *max as u64, "{error}");
                            "too large"
                        }
                        RespError::Protocol(_) => "protocol",
                        RespError::Io(_) => panic!("no I/O here: {error}"),
                    };
                    check_one_line(error.reply().expect("a decoding error has last words"));
                    // The message is not compared: it may count the bytes
                    // buffered so far.
                    return Outcome { requests, ending: Ending::Fatal(kind) };
                }
            }
        }
    }
    Outcome { requests, ending: Ending::Waiting(buf.len()) }
}

/// `cmd` re-encodes to a request that decodes to `cmd`, using all its bytes,
/// and whose every proper prefix needs more bytes.
fn check_round_trip(cmd: &ClientCommand, limits: RespLimits) {
    // The array form may be longer than the inline request it came from.
    let limits = RespLimits { request_bytes_max: usize::MAX / 4, ..limits };
    let mut encoded = BytesMut::new();
    encode_request(cmd, &mut encoded);
    let full = encoded.len();
    let mut buf = encoded.clone();
    match ServerCodec::new(limits).decode(&mut buf) {
        Ok(Some(Ok(again))) => assert_eq!(&again, cmd, "re-encoded as {:?}", String::from_utf8_lossy(&encoded)),
        other => panic!("{cmd:?} re-encoded as {:?} decodes to {other:?}", String::from_utf8_lossy(&encoded)),
    }
    assert!(buf.is_empty(), "the re-encoded request left {} bytes", buf.len());
    for cut in [0, 1, full / 3, full / 2, full - 2, full - 1] {
        let mut prefix = BytesMut::from(&encoded[..cut.min(full - 1)]);
        let got = ServerCodec::new(limits).decode(&mut prefix);
        assert!(matches!(got, Ok(None)), "a {cut}-byte prefix of {cmd:?} decodes to {got:?}");
    }
}

/// `reply` encodes to a single line: nothing in it can end it early.
fn check_one_line(reply: Reply) {
    let mut out = BytesMut::new();
    ServerCodec::default().encode(reply, &mut out).expect("an error reply encodes");
    let lines = out.windows(2).filter(|w| w == b"\r\n").count();
    assert_eq!(lines, 1, "{:?}", String::from_utf8_lossy(&out));
    assert!(!out[..out.len() - 2].contains(&b'\n') && !out[..out.len() - 2].contains(&b'\r'));
}
