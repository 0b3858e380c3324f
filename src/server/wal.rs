//! [`WalStorage`]: the Raft log as an append-only, segmented write-ahead
//! log of preallocated files, and the snapshot in a file of its own.
//!
//! # Why not redb
//!
//! One redb commit of one small entry costs 2.1× a 4 KiB write + `fdatasync`
//! into a preallocated file on the same disk (`cargo bench --bench
//! storage`), and the follower's write is the largest stage of a Put
//! (`specs/performance.md`). A Raft log is written only at its end, read
//! back whole only at a restart, and dropped only from its front: it needs
//! no B-tree. This is etcd's WAL layout (segments, a checksummed record per
//! write, a checkpoint at the head of each segment), implementing the same
//! [`RaftStorage`] contract as [`RedbStorage`](super::storage::RedbStorage)
//! and checked by the same tests against the same model.
//!
//! # Layout
//!
//! A directory holding `lock` (an advisory lock: one handle at a time),
//! `snapshot` (see below) and `wal/`, the segments
//! `wal/<seq as 16 hex digits>.wal`, numbered from 1 without holes. A
//! segment is created whole before it is named: written with zeros to
//! [`WalOptions::segment_bytes`] (so that a write into it allocates no block
//! and its `fdatasync` flushes no metadata), given its checkpoint (below),
//! synced, renamed from `.tmp`, and its directory synced. A thread of its
//! own (`wal-spare`) zero-fills the next one while the current one fills,
//! so a roll costs a checkpoint and a rename. A segment starts with a
//! header (`RKVWAL01` and its number, 8 bytes little-endian), then holds
//! records, then zeros.
//!
//! A record is one [`RaftStorage::write`] (a whole batch, so it is atomic):
//! `len: u32 LE`, `crc: u32 LE` (CRC-32 of the `len` bytes and the
//! payload) and the payload, the postcard encoding of a list of changes
//! (`Op`: a checkpoint, a compaction, a log write, a hard state). A
//! record's `len` is never 0, so a zero frame marks the end. Every
//! segment's first record is a checkpoint (`Op::Checkpoint`) of the hard
//! state and the log's base as of its creation, which is what lets old
//! segments go.
//!
//! # Replay, and what a crash can leave
//!
//! The bytes (header, frame, changes) and the replay are
//! [`crate::wal`], pure so that the `wal` fuzz target runs the same code on
//! bytes in memory; this module does the files around them. Opening replays
//! every segment in order, applying each record as
//! [`DurableState::write`](crate::raft::DurableState::write) applies a
//! batch (checked: bytes from the disk are untrusted). One record is
//! written and `fdatasync`ed at a time, always at the end, so a power cut
//! can damage at most the last record of the last segment, and only while
//! its write was not yet reported. A frame there
//! that does not check out is that torn write when nothing nonzero follows
//! its declared end (or its length runs past the file): it is dropped and
//! zeroed when the storage opens for writing. Anywhere else, a damaged
//! frame, a record that does not decode, a missing segment or a checkpoint
//! that disagrees with the replay is [`StorageError::CorruptWal`], naming the
//! file and the offset; nothing is guessed.
//!
//! # Compaction
//!
//! A compaction is a record like any other. After it, every segment but
//! the last whose entries all lie at or below the new base is deleted, from
//! the front, one at a time with a sync of the directory after each (so a
//! crash never brings back an older segment without the ones after it).
//! The first remaining segment's checkpoint may then be older
//! than the entries its records continue: replay starts the log where the
//! first of them lands and requires a later compaction record to cover the
//! hole (else: corrupt). That is the only hole a replay accepts.
//!
//! # The snapshot file
//!
//! `snapshot`: `RKVSNP01`, the payload's length (`u64` LE), its CRC-32
//! (`u32` LE), then the payload, the postcard encoding of `(meta,
//! membership, data)`. It is replaced atomically (written to
//! `snapshot.tmp`, synced, renamed, the directory synced), before the
//! record of the batch that received it is written, so the stored snapshot
//! always covers the log's base. A power cut between the two leaves the
//! received snapshot kept without the rest of its batch; the node's restart
//! then does what installing it does (keeps the entries after it that agree
//! with it, Raft Figure 13), and [`WalStorage::load`] raises the term to
//! the snapshot's if the hard state is behind it (with no vote), so no entry
//! of an older term can follow it.

use super::storage::{Durable, RaftStorage, StorageError};
use crate::kv::Command;
use crate::raft::{HardState, LogIndex, LogWrite, Persist, Snapshot, SnapshotMeta};
use crate::wal::{
    self, decode_snapshot_file, encode_snapshot_file, frame, segment_header, OpRef, ReadAt, Replay, ReplayError,
    Segment, HEADER_BYTES,
};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The segments' directory inside the storage directory.
pub const WAL_DIR: &str = "wal";
/// The snapshot's file inside the storage directory.
pub const SNAPSHOT_FILE: &str = "snapshot";
const LOCK_FILE: &str = "lock";
/// Zeros written per call while preparing a segment.
const ZERO_CHUNK: usize = 1 << 20;

/// Sizes of a [`WalStorage`].
#[derive(Clone, Copy, Debug)]
pub struct WalOptions {
    /// A new segment's preallocated size; a write that does not fit in the
    /// current segment goes to a new one (a single record larger than this
    /// gets a segment of its own, grown past it). 2 MiB: the log a server
    /// keeps between snapshots (10,000 entries plus 10,240 trailing, about
    /// 3 MB of 100-byte Puts) spans two or three, so with the spare a data
    /// directory stays under 16 MiB (issue 14's bound), and rolling one
    /// costs a rename and a directory sync about once a second at full
    /// load. (etcd's are 64 MB, for logs it keeps far longer.)
    pub segment_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions { segment_bytes: 2 << 20 }
    }
}

/// [`RaftStorage`] on an append-only segmented log; see the module docs.
pub struct WalStorage {
    dir: PathBuf,
    options: WalOptions,
    /// Held (locked) while the storage is open.
    _lock: File,
    /// The last segment, open for writing at `end`.
    file: File,
    end: u64,
    /// Where the last segment's checkpoint ends (its records start).
    checkpoint_end: u64,
    segments: Vec<Segment>,
    hard: HardState,
    base: SnapshotMeta,
    last_index: LogIndex,
    snapshot_index: LogIndex,
    /// The record being written, reused.
    buf: Vec<u8>,
    /// The next segment, being zero-filled by a thread of its own so that
    /// a roll does not stall the writes behind it (2 MiB of zeros and
    /// their fsync take milliseconds on a quiet disk, far more on a busy
    /// one).
    spare: Option<std::thread::JoinHandle<Result<(), StorageError>>>,
    /// What the open replayed, handed to the first [`RaftStorage::load`]
    /// if nothing was written since, so that a restart reads its files
    /// once, not twice. It is still what the files hold: the open read
    /// it from them, and what the open writes there (a torn tail zeroed,
    /// a raised term recorded, a new store's first segment) replays to
    /// the same state (`the_first_load_is_what_a_replay_finds` checks
    /// it). Any write or snapshot drops it; later loads replay.
    opened: Mutex<Option<Durable>>,
}

impl std::fmt::Debug for WalStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalStorage")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("last_index", &self.last_index)
            .finish()
    }
}

/// What a replay found.
struct Replayed {
    durable: Durable,
    segments: Vec<Segment>,
    /// Where the next record goes in the last segment, and whether a torn
    /// record or stray bytes lie after it (to be zeroed).
    end: u64,
    checkpoint_end: u64,
    dirty_tail: bool,
    /// The hard state's term was raised to the snapshot's, which the
    /// segments do not say yet.
    raised: bool,
}

impl WalStorage {
    /// Opens (or creates) the storage in `dir` with the default sizes.
    pub fn open(dir: impl AsRef<Path>) -> Result<WalStorage, StorageError> {
        WalStorage::open_with(dir, WalOptions::default())
    }

    /// Opens (or creates) the storage in `dir`: replays it, zeroes a torn
    /// last record, and creates the first segment of a new store. Fails if
    /// another handle (in this process or another) has it open.
    pub fn open_with(dir: impl AsRef<Path>, options: WalOptions) -> Result<WalStorage, StorageError> {
        let dir = dir.as_ref().to_path_buf();
        let wal = dir.join(WAL_DIR);
        std::fs::create_dir_all(&wal).map_err(|e| io(&wal, "creating its directory", e))?;
        sync_dir(&dir).map_err(|e| io(&dir, "syncing its directory", e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io(&lock_path, "opening the lock file", e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(StorageError::Locked { path: dir }),
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path, "locking", e)),
        }
        // Segments being prepared when the last process died.
        for name in list(&wal)? {
            if name.ends_with(".tmp") {
                let path = wal.join(&name);
                std::fs::remove_file(&path).map_err(|e| io(&path, "removing an unfinished segment", e))?;
            }
        }
        let replayed = replay(&dir)?;
        let durable = replayed.durable;
        let (hard, base) = (durable.hard, durable.base);
        let last_seq = replayed.segments.last().map(|s| s.seq);
        let (file, end, checkpoint_end, segments) = match last_seq {
            Some(seq) => {
                let path = segment_path(&dir, seq);
                let file =
                    OpenOptions::new().write(true).open(&path).map_err(|e| io(&path, "opening for writing", e))?;
                (file, replayed.end, replayed.checkpoint_end, replayed.segments)
            }
            None => {
                zero_filled(&dir, 1, &options)?;
                let (file, end) = name_segment(&dir, 1, hard, base)?;
                (file, end, end, vec![Segment { seq: 1, max_index: 0 }])
            }
        };
        let mut storage = WalStorage {
            file,
            _lock: lock,
            end,
            checkpoint_end,
            segments,
            hard,
            base,
            last_index: base.index + durable.log.len() as u64,
            snapshot_index: durable.snapshot.as_ref().map_or(0, |s| s.meta.index),
            buf: Vec::new(),
            spare: None,
            opened: Mutex::new(Some(durable)),
            dir,
            options,
        };
        if replayed.dirty_tail {
            storage.zero_tail()?;
        }
        if replayed.raised {
            // Recorded, so that the next segment's checkpoint agrees with
            // what a replay of the segments finds.
            let mut record = Vec::new();
            frame(&mut record, &[OpRef::Hard(storage.hard)]);
            storage.append(&record)?;
        }
        storage.prepare_spare(last_seq.unwrap_or(1) + 1)?;
        Ok(storage)
    }

    /// The storage directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The index of the last stored entry (0 when the log is empty).
    pub fn last_index(&self) -> LogIndex {
        self.last_index
    }

    /// How many segment files the log occupies.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn segment_path(&self, seq: u64) -> PathBuf {
        segment_path(&self.dir, seq)
    }

    /// Writes `bytes` (whole frames) at the end of the current segment and
    /// syncs them.
    fn append(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        let path = || self.segment_path(self.segments.last().map_or(0, |s| s.seq));
        self.file.write_all_at(bytes, self.end).map_err(|e| io(&path(), "appending", e))?;
        self.file.sync_data().map_err(|e| io(&path(), "syncing", e))?;
        self.end += bytes.len() as u64;
        Ok(())
    }

    /// Zeroes everything after the last good record of the last segment
    /// (a torn record, or stray bytes), so that later records are never
    /// followed by old bytes.
    fn zero_tail(&mut self) -> Result<(), StorageError> {
        let path = self.segment_path(self.segments.last().map_or(0, |s| s.seq));
        let len = self.file.metadata().map_err(|e| io(&path, "reading its size", e))?.len();
        tracing::warn!(
            segment = %path.display(),
            offset = self.end,
            "dropping a torn record (a write cut by a crash, never reported durable) and zeroing after it"
        );
        write_zeros(&self.file, self.end, len).map_err(|e| io(&path, "zeroing a torn record", e))?;
        self.file.sync_data().map_err(|e| io(&path, "syncing", e))
    }

    /// Deletes the segments, from the front, that hold no entry after the
    /// base (never the last one).
    fn drop_compacted_segments(&mut self) -> Result<(), StorageError> {
        while self.segments.len() > 1 && self.segments[0].max_index <= self.base.index {
            let path = self.segment_path(self.segments[0].seq);
            std::fs::remove_file(&path).map_err(|e| io(&path, "deleting a compacted segment", e))?;
            // Durably, one at a time: a crash must never bring back an
            // older segment without the ones between it and the rest.
            let wal = self.dir.join(WAL_DIR);
            sync_dir(&wal).map_err(|e| io(&wal, "syncing its directory", e))?;
            self.segments.remove(0);
        }
        Ok(())
    }

    /// Starts zero-filling segment `seq` on a thread of its own.
    fn prepare_spare(&mut self, seq: u64) -> Result<(), StorageError> {
        let (dir, options) = (self.dir.clone(), self.options);
        let spare = std::thread::Builder::new()
            .name("wal-spare".into())
            .spawn(move || zero_filled(&dir, seq, &options))
            .map_err(|e| io(&self.dir, "starting the thread that prepares segments", e))?;
        self.spare = Some(spare);
        Ok(())
    }

    /// Moves on to the next segment: the spare, once it is ready.
    fn roll(&mut self) -> Result<(), StorageError> {
        let seq = self.segments.last().map_or(0, |s| s.seq) + 1;
        match self.spare.take().map(|spare| spare.join()) {
            Some(Ok(prepared)) => prepared?,
            // A panic in the thread (a bug): say so as the writer's own.
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => zero_filled(&self.dir, seq, &self.options)?,
        }
        (self.file, self.end) = name_segment(&self.dir, seq, self.hard, self.base)?;
        self.checkpoint_end = self.end;
        self.segments.push(Segment { seq, max_index: 0 });
        self.prepare_spare(seq + 1)
    }

    fn write_snapshot_file(&self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let path = self.dir.join(SNAPSHOT_FILE);
        let tmp = path.with_extension("tmp");
        let bytes = encode_snapshot_file(snapshot).map_err(|e| StorageError::CorruptSnapshot {
            path: path.clone(),
            reason: format!("does not encode: {e}"),
        })?;
        {
            let mut f = File::create(&tmp).map_err(|e| io(&tmp, "creating", e))?;
            f.write_all(&bytes).map_err(|e| io(&tmp, "writing", e))?;
            f.sync_all().map_err(|e| io(&tmp, "syncing", e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, "replacing the snapshot", e))?;
        sync_dir(&self.dir).map_err(|e| io(&self.dir, "syncing its directory", e))
    }
}

impl Drop for WalStorage {
    /// Waits for the spare segment, so that no thread writes into the
    /// directory once the storage is closed (a reopen deletes the spare).
    fn drop(&mut self) {
        if let Some(spare) = self.spare.take() {
            let _ = spare.join();
        }
    }
}

impl RaftStorage for WalStorage {
    /// Replays the directory from scratch (the writer's own state is not
    /// trusted for it), but for the first load after the open, which
    /// returns what the open replayed (see `opened`).
    fn load(&self) -> Result<Durable, StorageError> {
        if let Some(durable) = self.opened.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Ok(durable);
        }
        replay(&self.dir).map(|r| r.durable)
    }

    fn write(&mut self, batch: &[&Persist<Command>]) -> Result<(), StorageError> {
        *self.opened.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
        // First, what the batch does, checked before anything is written.
        let (mut base, mut last_index, mut hard) = (self.base, self.last_index, self.hard);
        let mut ops = Vec::new();
        let mut snapshot: Option<&Snapshot> = None;
        let mut max_index = 0;
        for p in batch {
            if let Some(s) = &p.snapshot {
                if s.meta.index > snapshot.map_or(self.snapshot_index, |s| s.meta.index) {
                    snapshot = Some(s);
                }
            }
            if let Some(to) = p.compact {
                if to.index > base.index {
                    base = to;
                    last_index = last_index.max(to.index);
                    ops.push(OpRef::Compact(to));
                }
            }
            if let Some(LogWrite { from, entries }) = &p.log {
                // Entries at or below the base are compacted already.
                let skip = (base.index + 1).saturating_sub(*from).min(entries.len() as u64);
                let from = (*from).max(base.index + 1);
                if from > last_index + 1 {
                    return Err(StorageError::Gap { path: self.dir.clone(), from, last_index });
                }
                let entries = &entries[skip as usize..];
                last_index = from - 1 + entries.len() as u64;
                if !entries.is_empty() {
                    max_index = max_index.max(last_index);
                }
                ops.push(OpRef::Log { from, entries });
            }
            if let Some(h) = p.hard_state {
                hard = h;
                ops.push(OpRef::Hard(h));
            }
        }
        if let Some(s) = snapshot {
            // Before the record that compacts to it: the snapshot always
            // covers the base.
            self.write_snapshot_file(s)?;
            self.snapshot_index = s.meta.index;
        }
        if ops.is_empty() {
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        frame(&mut buf, &ops);
        drop(ops);
        // A record larger than a whole segment goes into a fresh one, which
        // grows past its preallocated size.
        let fits = self.end + buf.len() as u64 <= self.options.segment_bytes;
        let written = if fits || self.end == self.checkpoint_end {
            self.append(&buf)
        } else {
            self.roll().and_then(|()| self.append(&buf))
        };
        self.buf = buf;
        written?;
        let advanced = base.index > self.base.index;
        (self.base, self.last_index, self.hard) = (base, last_index, hard);
        if let Some(last) = self.segments.last_mut() {
            last.max_index = last.max_index.max(max_index);
        }
        if advanced {
            self.drop_compacted_segments()?;
        }
        Ok(())
    }

    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        *self.opened.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
        if snapshot.meta.index <= self.snapshot_index {
            return Ok(());
        }
        self.write_snapshot_file(snapshot)?;
        self.snapshot_index = snapshot.meta.index;
        Ok(())
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(WAL_DIR).join(format!("{seq:016x}.wal"))
}

/// Writes `wal/<seq>.tmp`: segment `seq`'s header, then zeros to the
/// segment size, synced.
fn zero_filled(dir: &Path, seq: u64, options: &WalOptions) -> Result<(), StorageError> {
    let tmp = segment_path(dir, seq).with_extension("tmp");
    let tmp = tmp.as_path();
    let err = |op| move |e| io(tmp, op, e);
    let f = File::create(tmp).map_err(err("creating a segment"))?;
    f.write_all_at(&segment_header(seq), 0).map_err(err("writing a segment header"))?;
    write_zeros(&f, HEADER_BYTES, options.segment_bytes).map_err(err("preallocating a segment"))?;
    f.sync_all().map_err(err("syncing a new segment"))
}

/// Writes zeros over `file`'s bytes `from..to`, a chunk at a time.
fn write_zeros(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; ZERO_CHUNK];
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZERO_CHUNK as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Writes the checkpoint of `(hard, base)` into the prepared
/// `wal/<seq>.tmp`, syncs it, and only then gives the file its segment name
/// (durably): a named segment always holds its checkpoint. Returns it open
/// for writing, and where its records start.
fn name_segment(dir: &Path, seq: u64, hard: HardState, base: SnapshotMeta) -> Result<(File, u64), StorageError> {
    let path = segment_path(dir, seq);
    let tmp = path.with_extension("tmp");
    let file = OpenOptions::new().write(true).open(&tmp).map_err(|e| io(&tmp, "opening a prepared segment", e))?;
    let mut checkpoint = Vec::new();
    frame(&mut checkpoint, &[OpRef::Checkpoint { hard, base }]);
    file.write_all_at(&checkpoint, HEADER_BYTES).map_err(|e| io(&tmp, "writing a checkpoint", e))?;
    file.sync_data().map_err(|e| io(&tmp, "syncing", e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, "naming a new segment", e))?;
    let wal = dir.join(WAL_DIR);
    sync_dir(&wal).map_err(|e| io(&wal, "syncing its directory", e))?;
    Ok((file, HEADER_BYTES + checkpoint.len() as u64))
}

fn io(path: &Path, op: &'static str, source: std::io::Error) -> StorageError {
    StorageError::Io { path: path.to_path_buf(), op, source }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The names in `dir`.
fn list(dir: &Path) -> Result<Vec<String>, StorageError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, "listing", e))? {
        let entry = entry.map_err(|e| io(dir, "listing", e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// The segments' numbers, in order ([`Replay`] checks that none is
/// missing).
fn segment_numbers(wal: &Path) -> Result<Vec<u64>, StorageError> {
    let mut seqs = Vec::new();
    for name in list(wal)? {
        let Some(stem) = name.strip_suffix(".wal") else { continue };
        match u64::from_str_radix(stem, 16) {
            Ok(seq) if stem.len() == 16 => seqs.push(seq),
            _ => {
                let reason = "a file named like a segment but not numbered like one".to_string();
                return Err(StorageError::CorruptWal { path: wal.join(name), offset: 0, reason });
            }
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Reads the directory: the snapshot file and every segment.
fn replay(dir: &Path) -> Result<Replayed, StorageError> {
    let snapshot = read_snapshot(dir)?;
    let wal = dir.join(WAL_DIR);
    let seqs = segment_numbers(&wal)?;
    let mut replay = Replay::default();
    for (k, &seq) in seqs.iter().enumerate() {
        let path = segment_path(dir, seq);
        let file = SegmentFile(File::open(&path).map_err(|e| io(&path, "opening", e))?);
        replay.segment(seq, &file, k + 1 == seqs.len()).map_err(|e| replay_error(&wal, e))?;
    }
    let wal::Replayed { mut hard, base, log, segments, end, checkpoint_end, dirty_tail } =
        replay.finish().map_err(|e| replay_error(&wal, e))?;
    if snapshot.as_ref().map_or(0, |s| s.meta.index) < base.index {
        let reason = format!("the log starts after index {}, past what the snapshot covers", base.index);
        return Err(StorageError::CorruptSnapshot { path: dir.join(SNAPSHOT_FILE), reason });
    }
    let mut raised = false;
    if let Some(s) = &snapshot {
        // A received snapshot kept without the rest of its batch (see the
        // module docs): at least its term.
        if hard.term < s.meta.term {
            hard = HardState { term: s.meta.term, voted_for: None };
            raised = true;
        }
    }
    let durable = Durable { hard, snapshot, base, log };
    Ok(Replayed { durable, segments, end, checkpoint_end, dirty_tail, raised })
}

/// A segment file, read by the replay.
struct SegmentFile(File);

impl ReadAt for SegmentFile {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(&self.0, buf, at)
    }
}

/// A replay's error, with the file it is about.
fn replay_error(wal: &Path, e: ReplayError) -> StorageError {
    match e {
        ReplayError::Io(source) => io(wal, "reading a segment", source),
        ReplayError::Corrupt { seq: Some(seq), offset, reason } => {
            StorageError::CorruptWal { path: wal.join(format!("{seq:016x}.wal")), offset, reason }
        }
        ReplayError::Corrupt { seq: None, offset, reason } => {
            StorageError::CorruptWal { path: wal.to_path_buf(), offset, reason }
        }
        ReplayError::Entry { index, reason } => StorageError::Corrupt { path: wal.to_path_buf(), index, reason },
    }
}

/// The snapshot file, if there is one.
fn read_snapshot(dir: &Path) -> Result<Option<Snapshot>, StorageError> {
    let path = dir.join(SNAPSHOT_FILE);
    // No bound but the file's own size: a snapshot this node took of its
    // own state machine may be larger than any it would accept from a
    // leader, and must still load.
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path, "reading", e)),
    };
    let snapshot = decode_snapshot_file(&bytes).map_err(|reason| StorageError::CorruptSnapshot { path, reason })?;
    Ok(Some(snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Op as KvOp;
    use crate::raft::Membership;
    use crate::raft::{Entry, Payload};
    use crate::server::tempdir::TempDir;

    fn entry(term: u64, i: u64) -> Entry<Command> {
        let op = KvOp::Put { key: format!("k{i}"), value: format!("v{i}") };
        Entry { term, payload: Payload::Command(Command { client: 1, seq: i, op }) }
    }

    fn append(term: u64, from: u64, n: u64, hard: Option<HardState>) -> Persist<Command> {
        let entries = (from..from + n).map(|i| entry(term, i)).collect();
        Persist { number: 0, snapshot: None, compact: None, log: Some(LogWrite { from, entries }), hard_state: hard }
    }

    fn hard(term: u64) -> Option<HardState> {
        Some(HardState { term, voted_for: Some(1) })
    }

    fn small() -> WalOptions {
        WalOptions { segment_bytes: 512 }
    }

    fn last_segment(dir: &Path) -> PathBuf {
        let wal = dir.join(WAL_DIR);
        let seq = *segment_numbers(&wal).unwrap().last().unwrap();
        wal.join(format!("{seq:016x}.wal"))
    }

    /// A store with small segments holding entries `1..=n` of term 1, one
    /// write each (the first with the hard state).
    fn one_entry_writes(dir: &Path, n: u64) -> WalStorage {
        let mut s = WalStorage::open_with(dir, small()).unwrap();
        for i in 1..=n {
            s.write(&[&append(1, i, 1, if i == 1 { hard(1) } else { None })]).unwrap();
        }
        s
    }

    /// Writes three one-entry records and returns the offsets at which
    /// each record ends.
    fn three_records(dir: &Path) -> Vec<u64> {
        let mut s = WalStorage::open_with(dir, small()).unwrap();
        let mut ends = vec![s.end];
        for i in 1..=3 {
            s.write(&[&append(1, i, 1, if i == 1 { hard(1) } else { None })]).unwrap();
            ends.push(s.end);
        }
        ends
    }

    #[test]
    fn a_record_cut_anywhere_is_dropped_whole_and_zeroed() {
        let dir = TempDir::new("wal-torn").unwrap();
        let ends = three_records(dir.path());
        let path = last_segment(dir.path());
        let pristine = std::fs::read(&path).unwrap();
        // Every cut inside the last record: as if the power failed with only
        // its first bytes on disk.
        for cut in ends[2]..ends[3] {
            let mut bytes = pristine.clone();
            bytes[cut as usize..ends[3] as usize].fill(0);
            std::fs::write(&path, &bytes).unwrap();
            let s = WalStorage::open_with(dir.path(), small()).unwrap();
            let d = s.load().unwrap();
            assert_eq!(d.log, vec![entry(1, 1), entry(1, 2)], "cut at {cut}");
            assert_eq!(s.end, ends[2], "cut at {cut}");
            drop(s);
            let after = std::fs::read(&path).unwrap();
            assert!(after[ends[2] as usize..].iter().all(|&b| b == 0), "cut at {cut}: the torn bytes stay");
        }
    }

    #[test]
    fn damage_before_the_last_record_is_corrupt_with_the_offset() {
        let dir = TempDir::new("wal-damage").unwrap();
        let ends = three_records(dir.path());
        let path = last_segment(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[ends[1] as usize + 10] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let e = WalStorage::open(dir.path()).unwrap_err();
        match &e {
            StorageError::CorruptWal { path: p, offset, .. } => {
                assert_eq!((p, *offset), (&path, ends[1]), "{e}");
            }
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains("checksum"), "{e}");
        // Stray bytes after the last record (a torn write whose first bytes
        // never reached the disk) are zeroed as the storage opens.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[ends[1] as usize + 10] ^= 0x40;
        bytes[ends[3] as usize + 100] = 7;
        std::fs::write(&path, &bytes).unwrap();
        let s = WalStorage::open(dir.path()).unwrap();
        assert_eq!(s.load().unwrap().log.len(), 3);
        drop(s);
        assert!(std::fs::read(&path).unwrap()[ends[3] as usize..].iter().all(|&b| b == 0));
    }

    #[test]
    fn segments_roll_and_compacted_ones_go() {
        let dir = TempDir::new("wal-roll").unwrap();
        let mut s = one_entry_writes(dir.path(), 200);
        let rolled = s.segment_count();
        assert!(rolled > 3, "{rolled} segments");
        let meta = SnapshotMeta { index: 150, term: 1 };
        s.save_snapshot(&Snapshot { meta, membership: Membership::default(), data: vec![1, 2, 3].into() }).unwrap();
        s.write(&[&Persist { number: 0, snapshot: None, compact: Some(meta), log: None, hard_state: None }]).unwrap();
        assert!(s.segment_count() < rolled / 2, "{} of {rolled} segments left", s.segment_count());
        // Appending on, across more segments, then reopening: the first
        // remaining segment starts mid-log and the compaction covers it.
        for i in 201..=260 {
            s.write(&[&append(1, i, 1, None)]).unwrap();
        }
        let expected = s.load().unwrap();
        assert_eq!(expected.base, meta);
        assert_eq!(expected.log, (151..=260).map(|i| entry(1, i)).collect::<Vec<_>>());
        drop(s);
        let s = WalStorage::open_with(dir.path(), small()).unwrap();
        assert_eq!(s.load().unwrap(), expected);
        assert_eq!(s.last_index(), 260);
    }

    #[test]
    fn a_missing_segment_or_a_stranger_is_corrupt() {
        let dir = TempDir::new("wal-missing").unwrap();
        let s = one_entry_writes(dir.path(), 100);
        assert!(s.segment_count() >= 3);
        drop(s);
        let wal = dir.path().join(WAL_DIR);
        std::fs::remove_file(wal.join(format!("{:016x}.wal", 2))).unwrap();
        let e = WalStorage::open_with(dir.path(), small()).unwrap_err();
        assert!(e.to_string().contains("segment 0000000000000002 is missing"), "{e}");
        std::fs::write(wal.join("zz.wal"), b"x").unwrap();
        let e = WalStorage::open_with(dir.path(), small()).unwrap_err();
        assert!(e.to_string().contains("zz.wal"), "{e}");
    }

    #[test]
    fn a_deleted_first_segment_without_a_compaction_is_a_hole() {
        let dir = TempDir::new("wal-hole").unwrap();
        let s = one_entry_writes(dir.path(), 100);
        drop(s);
        std::fs::remove_file(dir.path().join(WAL_DIR).join(format!("{:016x}.wal", 1))).unwrap();
        let e = WalStorage::open_with(dir.path(), small()).unwrap_err();
        assert!(e.to_string().contains("no compaction record covers it"), "{e}");
    }

    #[test]
    fn a_damaged_snapshot_file_is_refused() {
        let dir = TempDir::new("wal-snapshot").unwrap();
        let mut s = WalStorage::open(dir.path()).unwrap();
        let meta = SnapshotMeta { index: 0, term: 0 };
        // Index 0 is not newer than nothing: nothing written.
        s.save_snapshot(&Snapshot { meta, membership: Membership::default(), data: vec![9].into() }).unwrap();
        assert!(!dir.path().join(SNAPSHOT_FILE).exists());
        let meta = SnapshotMeta { index: 5, term: 2 };
        s.save_snapshot(&Snapshot { meta, membership: Membership::default(), data: vec![9; 100].into() }).unwrap();
        let d = s.load().unwrap();
        assert_eq!(d.snapshot.as_ref().map(|s| (s.meta, s.data.len())), Some((meta, 100)));
        // A snapshot newer than the hard state's term raises it.
        assert_eq!(d.hard, HardState { term: 2, voted_for: None });
        let path = dir.path().join(SNAPSHOT_FILE);
        let pristine = std::fs::read(&path).unwrap();
        for (what, bytes) in [
            ("checksum", {
                let mut b = pristine.clone();
                *b.last_mut().unwrap() ^= 1;
                b
            }),
            ("follow its header", pristine[..pristine.len() - 1].to_vec()),
            ("not a snapshot file", {
                let mut b = pristine.clone();
                b[0] = b'X';
                b
            }),
            ("shorter than its header", pristine[..5].to_vec()),
        ] {
            std::fs::write(&path, &bytes).unwrap();
            let e = s.load().unwrap_err();
            assert!(matches!(e, StorageError::CorruptSnapshot { .. }) && e.to_string().contains(what), "{what}: {e}");
        }
    }

    /// Damage anywhere (flipped bytes, a cut file, a deleted or added
    /// file) gives an error or a state, never a panic, and never a log
    /// that is not a prefix-respecting copy of what was written: every
    /// entry recovered at an index is the one written there.
    #[test]
    fn random_damage_is_an_error_or_a_prefix_never_a_panic() {
        let seed = 11;
        let mut rng = crate::rng::Rng::new(seed);
        let dir = TempDir::new("wal-damage-random").unwrap();
        {
            let mut s = WalStorage::open_with(dir.path(), small()).unwrap();
            for i in 1..=120 {
                s.write(&[&append(1 + i / 40, i, 1, if i % 40 == 0 || i == 1 { hard(1 + i / 40) } else { None })])
                    .unwrap();
                if i % 50 == 0 {
                    let meta = SnapshotMeta { index: i - 10, term: 1 + (i - 10) / 40 };
                    let snapshot = Snapshot { meta, membership: Membership::default(), data: vec![7; 30].into() };
                    s.save_snapshot(&snapshot).unwrap();
                    s.write(&[&Persist {
                        number: 0,
                        snapshot: None,
                        compact: Some(meta),
                        log: None,
                        hard_state: None,
                    }])
                    .unwrap();
                }
            }
        }
        let wal = dir.path().join(WAL_DIR);
        let files: Vec<PathBuf> = {
            let mut f: Vec<_> = list(&wal).unwrap().into_iter().map(|n| wal.join(n)).collect();
            f.push(dir.path().join(SNAPSHOT_FILE));
            f.sort();
            f
        };
        let pristine: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
        let (mut errors, mut states) = (0, 0);
        for round in 0..300 {
            for (f, bytes) in files.iter().zip(&pristine) {
                std::fs::write(f, bytes).unwrap();
            }
            let k = rng.range(0, files.len() as u64) as usize;
            let mut bytes = pristine[k].clone();
            match rng.range(0, 4) {
                0 | 1 => {
                    for _ in 0..rng.range(1, 4) {
                        let at = rng.range(0, bytes.len() as u64) as usize;
                        bytes[at] ^= 1 << rng.range(0, 8);
                    }
                }
                2 => bytes.truncate(rng.range(0, bytes.len() as u64) as usize),
                _ => {
                    let at = rng.range(0, bytes.len() as u64) as usize;
                    let n = rng.range(1, 64) as usize;
                    for b in bytes.iter_mut().skip(at).take(n) {
                        *b = rng.range(0, 256) as u8;
                    }
                }
            }
            std::fs::write(&files[k], &bytes).unwrap();
            match WalStorage::open_with(dir.path(), small()).and_then(|s| s.load()) {
                Err(_) => errors += 1,
                Ok(d) => {
                    states += 1;
                    for (n, e) in d.log.iter().enumerate() {
                        let i = d.base.index + 1 + n as u64;
                        let written = entry(1 + i / 40, i);
                        assert_eq!(*e, written, "seed {seed}, round {round}: entry {i} after damaging {:?}", files[k]);
                    }
                }
            }
            // Opening may have zeroed a torn tail or removed a `.tmp`.
            for f in list(&wal).unwrap() {
                if !files.contains(&wal.join(&f)) {
                    std::fs::remove_file(wal.join(f)).unwrap();
                }
            }
        }
        // Both outcomes occur: the damage is not all in ignored bytes.
        assert!(errors > 50 && states > 20, "seed {seed}: {errors} errors, {states} states");
    }

    /// Entries 1..=5 of term 1, then a snapshot of term 4 at index 9
    /// written without its record: the snapshot's half of an install
    /// batch, as a crash between its file and its record leaves it.
    fn kept_snapshot_of_term_4(dir: &Path) {
        let mut s = WalStorage::open_with(dir, small()).unwrap();
        s.write(&[&append(1, 1, 5, hard(1))]).unwrap();
        let meta = SnapshotMeta { index: 9, term: 4 };
        s.write_snapshot_file(&Snapshot { meta, membership: Membership::default(), data: vec![1].into() }).unwrap();
    }

    /// A received snapshot kept without the rest of its batch (a crash
    /// between its file and its record) raises the term; the raise is
    /// recorded, so later segments' checkpoints agree with a replay.
    #[test]
    fn a_term_raised_by_a_kept_snapshot_survives_rolls_and_reopens() {
        let dir = TempDir::new("wal-raised").unwrap();
        kept_snapshot_of_term_4(dir.path());
        let mut s = WalStorage::open_with(dir.path(), small()).unwrap();
        assert_eq!(s.load().unwrap().hard, HardState { term: 4, voted_for: None });
        for i in 6..=60 {
            s.write(&[&append(4, i, 1, None)]).unwrap();
        }
        assert!(s.segment_count() > 2);
        drop(s);
        let d = WalStorage::open_with(dir.path(), small()).unwrap().load().unwrap();
        assert_eq!((d.hard.term, d.log.len()), (4, 60));
    }

    /// The first load after an open returns what the open replayed
    /// (`WalStorage::opened`): it must be what a replay of the files finds
    /// once the open is done, whatever the open wrote there (a new store's
    /// first segment, a torn tail zeroed, a raised term recorded), and a
    /// write must drop it.
    #[test]
    fn the_first_load_is_what_a_replay_finds() {
        let fresh = |dir: &Path| {
            let s = WalStorage::open_with(dir, small()).unwrap();
            (s.load().unwrap(), replay(dir).unwrap().durable)
        };
        // A new store.
        let dir = TempDir::new("wal-first-new").unwrap();
        let (loaded, replayed) = fresh(dir.path());
        assert_eq!(loaded, replayed);
        // A torn last record, zeroed by the open.
        let dir = TempDir::new("wal-first-torn").unwrap();
        let ends = three_records(dir.path());
        let path = last_segment(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[(ends[2] + 3) as usize..ends[3] as usize].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        let (loaded, replayed) = fresh(dir.path());
        assert_eq!((loaded.log.len(), &loaded), (2, &replayed));
        // A term raised by a kept snapshot, recorded by the open.
        let dir = TempDir::new("wal-first-raised").unwrap();
        kept_snapshot_of_term_4(dir.path());
        let (loaded, replayed) = fresh(dir.path());
        assert_eq!((loaded.hard.term, &loaded), (4, &replayed));
        // A write drops what the open replayed: the next load sees it.
        let mut s = WalStorage::open_with(dir.path(), small()).unwrap();
        s.write(&[&append(4, 6, 1, None)]).unwrap();
        assert_eq!(s.load().unwrap().log.len(), 6);
    }

    #[test]
    fn a_second_handle_is_refused() {
        let dir = TempDir::new("wal-lock").unwrap();
        let s = WalStorage::open(dir.path()).unwrap();
        let e = WalStorage::open(dir.path()).unwrap_err();
        assert!(matches!(e, StorageError::Locked { .. }), "{e}");
        drop(s);
        WalStorage::open(dir.path()).unwrap();
    }
}
