//! The `snapshot` target: bytes → the two snapshot decoders a restart runs
//! on what it finds on the disk: the storage's snapshot file
//! ([`wal::decode_snapshot_file`]) and, inside it, the key/value machine's
//! snapshot ([`kv::snapshot::decode`], which a follower also runs on what
//! a leader sent it).
//!
//! One flags byte, then the bytes. Bit 0: they are a snapshot file, whose
//! data is then decoded as the machine's snapshot; otherwise they are the
//! machine's snapshot alone. Bit 1: leave the lengths and checksums as they
//! are; otherwise recompute them (the file's, then its data's; each when
//! long enough to have them), so that mutations reach the decoders behind
//! the checks.
//!
//! Either decoder must return an error or a value, never panic; a value
//! must survive a round trip: encoded again and decoded, the same.

use crate::kv::snapshot::{self as kv_snapshot, HEADER_LEN};
use crate::wal::{self, SNAPSHOT_HEADER_BYTES};

/// The bound a follower gives the machine's decoder (far above what a
/// fuzzer's input holds, so that it is the bytes that decide).
const MAX_BODY_BYTES: u64 = 1 << 20;

/// See the module docs.
pub fn snapshot_target(data: &[u8]) {
    snapshot_decodes(data);
}

/// [`snapshot_target`], saying whether the bytes decoded to a machine
/// (through a file, with bit 0), so that the corpus test can tell that its
/// seeds reach past the checks.
pub fn snapshot_decodes(data: &[u8]) -> bool {
    let Some((&flags, bytes)) = data.split_first() else { return false };
    let (is_file, keep_checks) = (flags & 1 != 0, flags & 2 != 0);
    let mut bytes = bytes.to_vec();
    let mut machine_bytes = if is_file {
        if !keep_checks {
            fix_file(&mut bytes);
        }
        let Ok(snapshot) = wal::decode_snapshot_file(&bytes) else { return false };
        let again = wal::encode_snapshot_file(&snapshot).expect("a decoded snapshot encodes");
        let back = wal::decode_snapshot_file(&again).expect("a snapshot file written again decodes");
        assert!(back == snapshot, "a snapshot file changed on its way round");
        snapshot.data.to_vec()
    } else {
        bytes
    };
    if !keep_checks {
        fix_machine(&mut machine_bytes);
    }
    let Ok(machine) = kv_snapshot::decode(&machine_bytes, MAX_BODY_BYTES) else { return false };
    let back = kv_snapshot::decode(&kv_snapshot::encode(&machine, false), MAX_BODY_BYTES)
        .expect("a machine's snapshot written again decodes");
    assert!(
        back.data() == machine.data()
            && back.sessions() == machine.sessions()
            && back.applied_index() == machine.applied_index()
            && back.forgotten() == machine.forgotten(),
        "a machine's snapshot changed on its way round"
    );
    true
}

/// Sets a snapshot file's payload length and checksum to its payload's.
fn fix_file(bytes: &mut [u8]) {
    let header = SNAPSHOT_HEADER_BYTES as usize;
    if bytes.len() < header {
        return;
    }
    let (head, payload) = bytes.split_at_mut(header);
    head[8..16].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    head[16..20].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
}

/// Sets a machine's snapshot's body length and checksum to its body's.
fn fix_machine(bytes: &mut [u8]) {
    if bytes.len() < HEADER_LEN {
        return;
    }
    let (head, body) = bytes.split_at_mut(HEADER_LEN);
    head[5..13].copy_from_slice(&(body.len() as u64).to_le_bytes());
    head[13..17].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
}
