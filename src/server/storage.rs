//! Durable Raft state of the real server: the hard state (term, vote) and the
//! log, on disk.
//!
//! # The trait and its contract
//!
//! [`RaftStorage`] is what a runtime needs from a disk: [`load`](RaftStorage::load) everything
//! at start ([`Durable`], handed to
//! [`RaftNode::restart`](crate::raft::RaftNode::restart)), and [`write`](RaftStorage::write) the
//! numbered [`Persist`] batches the node hands out. `write` returns `Ok`
//! only once everything it was given is durable, so the runtime may then
//! report the last batch's number to the node (step 4 of the persistence
//! contract in [`raft::ready`](crate::raft::ready)'s module docs). It takes
//! several batches at once so that a runtime can group-commit: all the
//! batches queued during one fsync go into the next transaction, with one
//! fsync.
//!
//! The simulator keeps its own in-memory model of the same contract,
//! [`MemStorage`](crate::sim::MemStorage), whose power cut loses whatever
//! was not written. Two real ones implement it: [`WalStorage`], an
//! append-only segmented log (`server::wal`, every new data directory's),
//! and [`RedbStorage`] below, kept for data directories written before the
//! log existed; [`open_dir`] picks by what the directory holds.
//!
//! # redb's on-disk layout
//!
//! [`RedbStorage`] keeps one [`redb`] database, `raft.redb`, in a directory
//! of its own. redb is pure Rust, checksums its pages and commits with a
//! two-phase protocol, so a crash at any instant leaves either the old or the
//! new committed state; with [`Durability::Immediate`] a commit returns only
//! after the fsync. Three tables:
//!
//! - `meta` (`&str` → bytes): `"format"` = [`FORMAT_VERSION`] as one byte;
//!   `"hard_state"` = the postcard encoding of the [`HardState`] (absent
//!   means the default: term 0, no vote); `"base"` = the postcard encoding
//!   of the [`SnapshotMeta`] of the last compacted entry (absent means
//!   nothing was compacted: the log starts at 1);
//! - `log` (`u64` → bytes): one row per entry after the base (and, for a
//!   few writes after a compaction, compacted rows at or below it, which
//!   are never read), keyed by its index, valued by the postcard encoding
//!   of the `Entry<Command>` (the
//!   same bytes the peer wire format uses for an entry, see
//!   `specs/wire.md`);
//! - `snapshot` (`&str` → bytes): `"meta"` = the postcard [`SnapshotMeta`],
//!   `"membership"` = the postcard [`Membership`] as of its last entry
//!   (absent in stores written before it was kept: read as empty, which the
//!   node takes for its initial configuration) and `"data"` = the
//!   snapshot's bytes (the framed, checksummed encoding of
//!   [`kv::snapshot`](crate::kv::snapshot)), always written together.
//!
//! A [`LogWrite`] `{ from, entries }` deletes every row at or after `from`
//! and inserts `entries` at `from, from + 1, …`. A compaction to `m`
//! records `m` as the base at once; its rows are deleted
//! `TRIM_ROWS_PER_WRITE` (1,000) per write transaction from then on. The
//! snapshot is replaced only by a newer one, either one the runtime took
//! ([`save_snapshot`](RaftStorage::save_snapshot)) or one installed from the
//! leader (a [`Persist`]'s `snapshot`). The stored snapshot always covers the
//! base: `load` refuses a base past it.
//!
//! # Untrusted bytes
//!
//! What comes back from disk is treated as untrusted input: a row that does
//! not decode, has trailing bytes, or breaks the log's shape (indexes
//! contiguous after the base, terms never decreasing, no entry newer than
//! the hard state's term) is reported as [`StorageError::Corrupt`] (or
//! [`StorageError::CorruptHardState`], [`StorageError::CorruptSnapshot`])
//! naming the file and the index; nothing here panics on bad bytes. A
//! single entry decodes with postcard, whose only allocations are the
//! command's two strings, each checked against the remaining bytes of the
//! row first. The snapshot's bytes are returned as stored; the server
//! decodes (and checksums) them when it restarts its state machine.

use super::wal::WalStorage;
use crate::kv::Command;
use crate::raft::{DurableState, Entry, HardState, LogIndex, LogWrite, Membership, Persist, Snapshot, SnapshotMeta};
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::fmt;
use std::path::{Path, PathBuf};

/// Durable storage for one Raft node's hard state and log.
///
/// The contract is the persistence contract of
/// [`raft::ready`](crate::raft::ready) (read it there): batches are made
/// durable in order, and a batch is reported only once it is durable.
/// Implementations promise:
///
/// - [`write`](RaftStorage::write) applies the batch's `Persist`s *in
///   order*, exactly as [`MemStorage::write`](crate::sim::MemStorage::write)
///   applies one: a `hard_state` replaces the stored one; a [`LogWrite`]
///   drops every entry at or after `from` and appends its entries. The
///   whole batch is atomic (after a crash either all of it or none of it is
///   there) and durable when `write` returns `Ok` (one fsync for the batch).
///   After an `Err`, nothing of the batch may be reported; the runtime
///   stops the node (the on-disk state is the one before the batch or after
///   it, and a restart will tell which).
/// - [`load`](RaftStorage::load) returns exactly the state of the last
///   successful `write` (or of whatever batch was durable when the process
///   died), or an error; never a state that was not written.
pub trait RaftStorage {
    /// Everything durable: what the node restarts from.
    fn load(&self) -> Result<Durable, StorageError>;

    /// Makes `batch` durable, in order, in one atomic commit. See the trait
    /// docs.
    fn write(&mut self, batch: &[&Persist<Command>]) -> Result<(), StorageError>;

    /// Makes a snapshot the runtime took durable (it replaces an older one;
    /// one not newer than the stored one is ignored). Atomic: after a crash
    /// either the old snapshot or the new one is there, whole.
    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError>;
}

impl<S: RaftStorage + ?Sized> RaftStorage for Box<S> {
    fn load(&self) -> Result<Durable, StorageError> {
        (**self).load()
    }
    fn write(&mut self, batch: &[&Persist<Command>]) -> Result<(), StorageError> {
        (**self).write(batch)
    }
    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        (**self).save_snapshot(snapshot)
    }
}

/// Opens a server's data directory with the storage it holds, and names
/// it: [`RedbStorage`] where a `raft.redb` is (written by a raftkv before
/// the write-ahead log), [`WalStorage`] otherwise, so that a new directory
/// gets the faster one and an old one keeps working.
pub fn open_dir(dir: &Path) -> Result<(Box<dyn RaftStorage + Send>, &'static str), StorageError> {
    if dir.join(DB_FILE).exists() {
        Ok((Box::new(RedbStorage::open(dir)?), "redb"))
    } else {
        Ok((Box::new(WalStorage::open(dir)?), "wal"))
    }
}

/// A node's durable state: what
/// [`RaftNode::restart`](crate::raft::RaftNode::restart) takes.
pub type Durable = DurableState<Command>;

/// Why storage failed. Every variant names the database file.
#[derive(Debug)]
pub enum StorageError {
    /// A filesystem operation outside the database failed (creating or
    /// syncing its directory).
    Io { path: PathBuf, op: &'static str, source: std::io::Error },
    /// The database itself failed: it could not be opened (already open by
    /// another process or handle, unreadable, its own checksums failed), or a
    /// transaction or commit failed.
    Database { path: PathBuf, op: &'static str, source: Box<redb::Error> },
    /// The log entry at `index` is stored but unusable.
    Corrupt { path: PathBuf, index: LogIndex, reason: String },
    /// The stored hard state is unusable.
    CorruptHardState { path: PathBuf, reason: String },
    /// The stored snapshot, or the record of where the log starts, is
    /// unusable (or the two disagree).
    CorruptSnapshot { path: PathBuf, reason: String },
    /// The database was written by an incompatible version of raftkv.
    UnknownFormat { path: PathBuf, found: Vec<u8> },
    /// A [`LogWrite`] would leave a hole in the log: it starts after the
    /// entry following the last stored one. The Raft core never asks for
    /// this; nothing of the batch was written.
    Gap { path: PathBuf, from: LogIndex, last_index: LogIndex },
    /// A write-ahead log segment ([`super::wal::WalStorage`])
    /// is damaged or missing at `offset` (0: the file as a whole).
    CorruptWal { path: PathBuf, offset: u64, reason: String },
    /// Another handle, in this process or another, has the storage open.
    Locked { path: PathBuf },
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Io { path, op, source } => {
                write!(f, "raft storage {}: {op} failed: {source}", path.display())
            }
            StorageError::Database { path, op, source } => {
                write!(f, "raft storage {}: {op} failed: {source}", path.display())
            }
            StorageError::Corrupt { path, index, reason } => {
                write!(f, "raft storage {}: log entry {index} is corrupt: {reason}", path.display())
            }
            StorageError::CorruptHardState { path, reason } => {
                write!(f, "raft storage {}: hard state is corrupt: {reason}", path.display())
            }
            StorageError::CorruptSnapshot { path, reason } => {
                write!(f, "raft storage {}: snapshot is corrupt: {reason}", path.display())
            }
            StorageError::UnknownFormat { path, found } => write!(
                f,
                "raft storage {}: unknown format version {found:?} (this build reads [{FORMAT_VERSION}])",
                path.display()
            ),
            StorageError::Gap { path, from, last_index } => write!(
                f,
                "raft storage {}: refused a log write at index {from} after last index {last_index} (it would leave a gap)",
                path.display()
            ),
            StorageError::CorruptWal { path, offset, reason } => {
                write!(f, "raft storage {}: corrupt at byte {offset}: {reason}", path.display())
            }
            StorageError::Locked { path } => {
                write!(f, "raft storage {}: already open (another server on the same data directory?)", path.display())
            }
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::Io { source, .. } => Some(source),
            StorageError::Database { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

/// The on-disk format this build writes and reads (stored under `meta`).
pub const FORMAT_VERSION: u8 = 1;
/// The database file's name inside the storage directory.
pub const DB_FILE: &str = "raft.redb";

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
/// redb's page cache (its default is 1 GiB, which the process's memory
/// then grows into). The log is written once and read back only by lagging
/// followers and restarts, so a small cache costs little.
const CACHE_BYTES: usize = 16 << 20;
/// Compacted rows deleted per write transaction. A compaction moves the
/// log's base at once (rows at or below it are never read again) and the
/// rows go a slice per write: all 10,000 of a compaction in one transaction
/// took about 22 ms, which the batches behind it waited for.
const TRIM_ROWS_PER_WRITE: u64 = 1_000;
const KEY_FORMAT: &str = "format";
const KEY_HARD_STATE: &str = "hard_state";
const KEY_BASE: &str = "base";
const KEY_SNAPSHOT_META: &str = "meta";
const KEY_SNAPSHOT_DATA: &str = "data";
const KEY_SNAPSHOT_MEMBERSHIP: &str = "membership";

/// [`RaftStorage`] on a [`redb`] database; see the module docs for the
/// layout.
pub struct RedbStorage {
    db: Database,
    path: PathBuf,
    /// The last stored index (the base's when the log is empty), to refuse
    /// gaps without a read.
    last_index: LogIndex,
    /// The last compacted entry: the log starts after it.
    base: SnapshotMeta,
    /// Every row up to here is deleted; rows from here to `base` are
    /// compacted but still stored, to be deleted by the next writes.
    trimmed_to: LogIndex,
    /// The index the stored snapshot covers (0: none).
    snapshot_index: LogIndex,
}

impl fmt::Debug for RedbStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStorage").field("path", &self.path).field("last_index", &self.last_index).finish()
    }
}

impl RedbStorage {
    /// Opens the storage in directory `dir` (created if missing; a missing
    /// or empty directory starts empty), recovering from an interrupted
    /// commit if the last process died mid-write. Fails if another handle
    /// has it open.
    pub fn open(dir: impl AsRef<Path>) -> Result<RedbStorage, StorageError> {
        let dir = dir.as_ref();
        let path = dir.join(DB_FILE);
        let io = |op, source| StorageError::Io { path: path.clone(), op, source };
        std::fs::create_dir_all(dir).map_err(|e| io("creating its directory", e))?;
        let existed = path.exists();
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| db_err(&path, "opening the database", e))?;
        if !existed {
            // Make the new file's directory entry durable too.
            sync_dir(dir).map_err(|e| io("syncing its directory", e))?;
        }
        let mut storage =
            RedbStorage { db, path, last_index: 0, base: SnapshotMeta::default(), trimmed_to: 0, snapshot_index: 0 };
        storage.init()?;
        Ok(storage)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The index of the last stored entry (0 when the log is empty).
    pub fn last_index(&self) -> LogIndex {
        self.last_index
    }

    /// Creates the tables and format marker on a new database, checks the
    /// format of an old one, and reads the last index.
    fn init(&mut self) -> Result<(), StorageError> {
        let txn = self.begin_write()?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.db_err("opening the meta table", e))?;
            let found =
                meta.get(KEY_FORMAT).map_err(|e| self.db_err("reading the format", e))?.map(|v| v.value().to_vec());
            match found {
                None => {
                    meta.insert(KEY_FORMAT, &[FORMAT_VERSION][..]).map_err(|e| self.db_err("writing the format", e))?;
                }
                Some(v) if v == [FORMAT_VERSION] => {}
                Some(found) => return Err(StorageError::UnknownFormat { path: self.path.clone(), found }),
            }
            self.base = match meta.get(KEY_BASE).map_err(|e| self.db_err("reading the log's base", e))? {
                None => SnapshotMeta::default(),
                Some(v) => decode_exact(v.value())
                    .map_err(|reason| self.corrupt_snapshot(format!("the log's base {reason}")))?,
            };
            let log = txn.open_table(LOG).map_err(|e| self.db_err("opening the log table", e))?;
            let row = |r: Option<(redb::AccessGuard<u64>, _)>| r.map(|(k, _)| k.value());
            let last_row = row(log.last().map_err(|e| self.db_err("reading the last index", e))?);
            self.last_index = last_row.unwrap_or(0).max(self.base.index);
            let first_row = row(log.first().map_err(|e| self.db_err("reading the first index", e))?);
            self.trimmed_to = first_row.map_or(self.base.index, |first| (first - 1).min(self.base.index));
            let snapshots = txn.open_table(SNAPSHOT).map_err(|e| self.db_err("opening the snapshot table", e))?;
            self.snapshot_index =
                match snapshots.get(KEY_SNAPSHOT_META).map_err(|e| self.db_err("reading the snapshot", e))? {
                    None => 0,
                    Some(v) => {
                        decode_exact::<SnapshotMeta>(v.value())
                            .map_err(|reason| self.corrupt_snapshot(format!("its meta {reason}")))?
                            .index
                    }
                };
        }
        txn.commit().map_err(|e| self.db_err("committing", e))
    }

    /// Writes `snapshot` into the open transaction (replacing the stored one).
    fn put_snapshot(&self, txn: &redb::WriteTransaction, snapshot: &Snapshot) -> Result<(), StorageError> {
        let mut table = txn.open_table(SNAPSHOT).map_err(|e| self.db_err("opening the snapshot table", e))?;
        let meta = postcard::to_allocvec(&snapshot.meta)
            .map_err(|e| self.corrupt_snapshot(format!("its meta does not encode: {e}")))?;
        table.insert(KEY_SNAPSHOT_META, meta.as_slice()).map_err(|e| self.db_err("writing the snapshot", e))?;
        table.insert(KEY_SNAPSHOT_DATA, &*snapshot.data).map_err(|e| self.db_err("writing the snapshot", e))?;
        let membership = postcard::to_allocvec(&snapshot.membership)
            .map_err(|e| self.corrupt_snapshot(format!("its configuration does not encode: {e}")))?;
        table
            .insert(KEY_SNAPSHOT_MEMBERSHIP, membership.as_slice())
            .map_err(|e| self.db_err("writing the snapshot", e))?;
        Ok(())
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction, StorageError> {
        let mut txn = self.db.begin_write().map_err(|e| self.db_err("beginning a write", e))?;
        txn.set_durability(Durability::Immediate);
        Ok(txn)
    }

    fn db_err(&self, op: &'static str, e: impl Into<redb::Error>) -> StorageError {
        db_err(&self.path, op, e)
    }

    fn corrupt(&self, index: LogIndex, reason: impl Into<String>) -> StorageError {
        StorageError::Corrupt { path: self.path.clone(), index, reason: reason.into() }
    }

    fn corrupt_snapshot(&self, reason: impl Into<String>) -> StorageError {
        StorageError::CorruptSnapshot { path: self.path.clone(), reason: reason.into() }
    }
}

fn db_err(path: &Path, op: &'static str, e: impl Into<redb::Error>) -> StorageError {
    StorageError::Database { path: path.to_path_buf(), op, source: Box::new(e.into()) }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Decodes one stored value completely (no trailing bytes).
fn decode_exact<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(format!("{} trailing bytes after the value", rest.len())),
        Err(e) => Err(format!("does not decode: {e}")),
    }
}

impl RaftStorage for RedbStorage {
    fn load(&self) -> Result<Durable, StorageError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err("beginning a read", e))?;
        let meta = txn.open_table(META).map_err(|e| self.db_err("opening the meta table", e))?;
        let hard = match meta.get(KEY_HARD_STATE).map_err(|e| self.db_err("reading the hard state", e))? {
            None => HardState::default(),
            Some(v) => decode_exact::<HardState>(v.value())
                .map_err(|reason| StorageError::CorruptHardState { path: self.path.clone(), reason })?,
        };
        let base = match meta.get(KEY_BASE).map_err(|e| self.db_err("reading the log's base", e))? {
            None => SnapshotMeta::default(),
            Some(v) => {
                decode_exact(v.value()).map_err(|reason| self.corrupt_snapshot(format!("the log's base {reason}")))?
            }
        };
        let snapshot = self.load_snapshot(&txn)?;
        if snapshot.as_ref().map_or(0, |s| s.meta.index) < base.index {
            let reason = format!("the log starts after index {}, past what the snapshot covers", base.index);
            return Err(self.corrupt_snapshot(reason));
        }
        let table = txn.open_table(LOG).map_err(|e| self.db_err("opening the log table", e))?;
        let len = table.len().map_err(|e| self.db_err("counting the log", e))?;
        // Only a hint: every row is checked as it is read.
        let mut log: Vec<Entry<Command>> = Vec::with_capacity(len.min(1 << 20) as usize);
        // Rows at or below the base are compacted, waiting to be deleted.
        for row in table.range(base.index + 1..).map_err(|e| self.db_err("reading the log", e))? {
            let (key, value) = row.map_err(|e| self.db_err("reading the log", e))?;
            let index = key.value();
            let expected = base.index + log.len() as u64 + 1;
            if index != expected {
                return Err(self.corrupt(expected, format!("missing (the next stored index is {index})")));
            }
            let entry: Entry<Command> = decode_exact(value.value()).map_err(|reason| self.corrupt(index, reason))?;
            let prev_term = log.last().map_or(base.term, |p| p.term);
            if entry.term < prev_term {
                return Err(self.corrupt(
                    index,
                    format!("term {} is lower than the previous entry's term {}", entry.term, prev_term),
                ));
            }
            if entry.term > hard.term {
                return Err(self.corrupt(
                    index,
                    format!("term {} is higher than the stored current term {}", entry.term, hard.term),
                ));
            }
            log.push(entry);
        }
        Ok(Durable { hard, snapshot, base, log })
    }

    fn write(&mut self, batch: &[&Persist<Command>]) -> Result<(), StorageError> {
        let empty = |p: &&&Persist<Command>| {
            p.hard_state.is_none() && p.log.is_none() && p.snapshot.is_none() && p.compact.is_none()
        };
        if batch.iter().all(|p| empty(&p)) {
            return Ok(());
        }
        let txn = self.begin_write()?;
        let (mut last_index, mut base, mut snapshot_index) = (self.last_index, self.base, self.snapshot_index);
        let mut trimmed_to = self.trimmed_to;
        {
            let mut hard = None;
            let mut log = txn.open_table(LOG).map_err(|e| self.db_err("opening the log table", e))?;
            let mut buf = Vec::new();
            for p in batch {
                // The contract's order: snapshot, compaction, log, hard state.
                if let Some(s) = &p.snapshot {
                    if s.meta.index > snapshot_index {
                        self.put_snapshot(&txn, s)?;
                        snapshot_index = s.meta.index;
                    }
                }
                if let Some(to) = p.compact {
                    if to.index > base.index {
                        // The rows go later, a slice per write (below).
                        base = to;
                        last_index = last_index.max(to.index);
                    }
                }
                if let Some(h) = p.hard_state {
                    hard = Some(h);
                }
                if let Some(LogWrite { from, entries }) = &p.log {
                    let from = (*from).max(base.index + 1);
                    if from > last_index + 1 {
                        // Dropping `txn` aborts the whole batch.
                        return Err(StorageError::Gap { path: self.path.clone(), from, last_index });
                    }
                    while last_index >= from {
                        log.remove(last_index).map_err(|e| self.db_err("truncating the log", e))?;
                        last_index -= 1;
                    }
                    for entry in entries {
                        buf.clear();
                        buf = postcard::to_extend(entry, buf).map_err(|e| {
                            // Encoding to a Vec fails only on a serde error,
                            // which these derived types do not produce.
                            self.corrupt(last_index + 1, format!("does not encode: {e}"))
                        })?;
                        last_index += 1;
                        log.insert(last_index, buf.as_slice()).map_err(|e| self.db_err("appending to the log", e))?;
                    }
                }
            }
            // Row by row: redb 2.4's `retain_in` over 10,000 rows took
            // 250–950 ms and grew the file to 193 MiB; removes keep it at
            // 6.5 MiB (specs/performance.md).
            if trimmed_to < base.index {
                // From the first stored row: an install may compact far past
                // the rows that exist.
                let first = log.first().map_err(|e| self.db_err("reading the first index", e))?.map(|(k, _)| k.value());
                trimmed_to = match first {
                    Some(first) if first <= base.index => first - 1,
                    _ => base.index,
                };
                let trim_end = base.index.min(trimmed_to + TRIM_ROWS_PER_WRITE);
                for i in trimmed_to + 1..=trim_end {
                    log.remove(i).map_err(|e| self.db_err("compacting the log", e))?;
                }
                trimmed_to = trim_end;
            }
            let mut meta = txn.open_table(META).map_err(|e| self.db_err("opening the meta table", e))?;
            if let Some(h) = hard {
                let bytes = postcard::to_allocvec(&h).map_err(|e| StorageError::CorruptHardState {
                    path: self.path.clone(),
                    reason: format!("does not encode: {e}"),
                })?;
                meta.insert(KEY_HARD_STATE, bytes.as_slice()).map_err(|e| self.db_err("writing the hard state", e))?;
            }
            if base != self.base {
                let bytes = postcard::to_allocvec(&base)
                    .map_err(|e| self.corrupt_snapshot(format!("the log's base does not encode: {e}")))?;
                meta.insert(KEY_BASE, bytes.as_slice()).map_err(|e| self.db_err("writing the log's base", e))?;
            }
        }
        txn.commit().map_err(|e| self.db_err("committing", e))?;
        (self.last_index, self.base, self.snapshot_index, self.trimmed_to) =
            (last_index, base, snapshot_index, trimmed_to);
        Ok(())
    }

    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        if snapshot.meta.index <= self.snapshot_index {
            return Ok(());
        }
        let txn = self.begin_write()?;
        self.put_snapshot(&txn, snapshot)?;
        txn.commit().map_err(|e| self.db_err("committing", e))?;
        self.snapshot_index = snapshot.meta.index;
        Ok(())
    }
}

impl RedbStorage {
    /// The stored snapshot, if any; its meta and its bytes go together.
    fn load_snapshot(&self, txn: &redb::ReadTransaction) -> Result<Option<Snapshot>, StorageError> {
        let table = match txn.open_table(SNAPSHOT) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.db_err("opening the snapshot table", e)),
        };
        let meta = table.get(KEY_SNAPSHOT_META).map_err(|e| self.db_err("reading the snapshot", e))?;
        let data = table.get(KEY_SNAPSHOT_DATA).map_err(|e| self.db_err("reading the snapshot", e))?;
        let membership = table.get(KEY_SNAPSHOT_MEMBERSHIP).map_err(|e| self.db_err("reading the snapshot", e))?;
        match (meta, data) {
            (None, None) => Ok(None),
            (Some(meta), Some(data)) => {
                let meta: SnapshotMeta =
                    decode_exact(meta.value()).map_err(|reason| self.corrupt_snapshot(format!("its meta {reason}")))?;
                // Absent in a store written before snapshots held the
                // configuration: empty, which the node reads as its
                // initial configuration.
                let membership: Membership = match membership {
                    Some(m) => decode_exact(m.value())
                        .map_err(|reason| self.corrupt_snapshot(format!("its configuration {reason}")))?,
                    None => Membership::default(),
                };
                if !membership.is_well_formed() {
                    return Err(self.corrupt_snapshot(format!("its configuration {membership:?} names a voter twice")));
                }
                Ok(Some(Snapshot { meta, membership, data: data.value().into() }))
            }
            _ => Err(self.corrupt_snapshot("its meta is stored without its bytes, or the other way round")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Op;
    use crate::raft::Payload;
    use crate::server::tempdir::TempDir;

    fn entry(term: u64, i: u64) -> Entry<Command> {
        Entry {
            term,
            payload: Payload::Command(Command {
                client: 1,
                seq: i,
                op: Op::Put { key: format!("k{i}"), value: "v".into() },
            }),
        }
    }

    fn append(term: u64, from: u64, n: u64) -> Persist<Command> {
        Persist {
            number: from,
            snapshot: None,
            compact: None,
            hard_state: Some(HardState { term, voted_for: Some(0) }),
            log: Some(LogWrite { from, entries: (from..from + n).map(|i| entry(term, i)).collect() }),
        }
    }

    /// Overwrites raw rows behind the storage's back, then reopens.
    fn tamper(dir: &Path, f: impl FnOnce(&redb::WriteTransaction)) -> Result<Durable, StorageError> {
        let db = Database::create(dir.join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        f(&txn);
        txn.commit().unwrap();
        drop(db);
        RedbStorage::open(dir)?.load()
    }

    fn stored(tag: &str, persists: &[Persist<Command>]) -> TempDir {
        let dir = TempDir::new(&format!("storage-unit-{tag}")).unwrap();
        let mut s = RedbStorage::open(dir.path()).unwrap();
        s.write(&persists.iter().collect::<Vec<_>>()).unwrap();
        dir
    }

    #[test]
    fn garbage_value_is_corrupt_with_its_index() {
        let dir = stored("garbage", &[append(1, 1, 5)]);
        let r = tamper(dir.path(), |txn| {
            txn.open_table(LOG)
                .unwrap()
                .insert(3, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..])
                .unwrap();
        });
        match r {
            Err(StorageError::Corrupt { index: 3, ref reason, .. }) => assert!(reason.contains("decode"), "{reason}"),
            other => panic!("expected Corrupt at 3, got {other:?}"),
        }
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains(DB_FILE) && msg.contains("entry 3"), "{msg}");
    }

    #[test]
    fn truncated_and_padded_values_are_corrupt() {
        let dir = stored("short", &[append(1, 1, 3)]);
        let r = tamper(dir.path(), |txn| {
            let mut t = txn.open_table(LOG).unwrap();
            let v = t.get(2).unwrap().unwrap().value().to_vec();
            t.insert(2, &v[..v.len() - 1]).unwrap();
        });
        assert!(matches!(r, Err(StorageError::Corrupt { index: 2, .. })), "{r:?}");

        let dir = stored("long", &[append(1, 1, 3)]);
        let r = tamper(dir.path(), |txn| {
            let mut t = txn.open_table(LOG).unwrap();
            let mut v = t.get(1).unwrap().unwrap().value().to_vec();
            v.push(0);
            t.insert(1, v.as_slice()).unwrap();
        });
        match r {
            Err(StorageError::Corrupt { index: 1, ref reason, .. }) => assert!(reason.contains("trailing"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn huge_declared_string_length_is_corrupt_not_an_allocation() {
        let dir = stored("huge", &[append(1, 1, 1)]);
        let r = tamper(dir.path(), |txn| {
            // term 1, Command, client 1, seq 1, Put, key of length ~2^63.
            let v = [1u8, 1, 1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
            txn.open_table(LOG).unwrap().insert(1, &v[..]).unwrap();
        });
        assert!(matches!(r, Err(StorageError::Corrupt { index: 1, .. })), "{r:?}");
    }

    #[test]
    fn shape_errors_are_corrupt() {
        // A hole.
        let dir = stored("hole", &[append(1, 1, 4)]);
        let r = tamper(dir.path(), |txn| {
            txn.open_table(LOG).unwrap().remove(2).unwrap();
        });
        match r {
            Err(StorageError::Corrupt { index: 2, ref reason, .. }) => assert!(reason.contains("missing"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // Not starting at 1.
        let dir = stored("start", &[append(1, 1, 2)]);
        let r = tamper(dir.path(), |txn| {
            txn.open_table(LOG).unwrap().remove(1).unwrap();
        });
        assert!(matches!(r, Err(StorageError::Corrupt { index: 1, .. })), "{r:?}");
        // A decreasing term.
        let dir = stored("term", &[append(2, 1, 3)]);
        let r = tamper(dir.path(), |txn| {
            let bytes = postcard::to_allocvec(&entry(1, 3)).unwrap();
            txn.open_table(LOG).unwrap().insert(3, bytes.as_slice()).unwrap();
        });
        assert!(matches!(r, Err(StorageError::Corrupt { index: 3, .. })), "{r:?}");
        // An entry newer than the current term.
        let dir = stored("future", &[append(2, 1, 3)]);
        let r = tamper(dir.path(), |txn| {
            let bytes = postcard::to_allocvec(&entry(3, 3)).unwrap();
            txn.open_table(LOG).unwrap().insert(3, bytes.as_slice()).unwrap();
        });
        assert!(matches!(r, Err(StorageError::Corrupt { index: 3, .. })), "{r:?}");
    }

    #[test]
    fn corrupt_hard_state_and_unknown_format() {
        let dir = stored("hard", &[append(1, 1, 1)]);
        let r = tamper(dir.path(), |txn| {
            txn.open_table(META).unwrap().insert(KEY_HARD_STATE, &[0xff][..]).unwrap();
        });
        assert!(matches!(r, Err(StorageError::CorruptHardState { .. })), "{r:?}");

        let dir = stored("format", &[]);
        let r = tamper(dir.path(), |txn| {
            txn.open_table(META).unwrap().insert(KEY_FORMAT, &[99][..]).unwrap();
        });
        assert!(matches!(r, Err(StorageError::UnknownFormat { .. })), "{r:?}");
    }

    /// A log compacted to 3 under a snapshot covering 3.
    fn compacted(tag: &str) -> TempDir {
        let dir = stored(tag, &[append(1, 1, 5)]);
        let mut s = RedbStorage::open(dir.path()).unwrap();
        let meta = SnapshotMeta { index: 3, term: 1 };
        s.save_snapshot(&Snapshot { meta, membership: Membership::initial(3), data: vec![1, 2, 3].into() }).unwrap();
        s.write(&[&Persist { number: 0, snapshot: None, compact: Some(meta), hard_state: None, log: None }]).unwrap();
        let d = s.load().unwrap();
        assert_eq!((d.base, d.log.len()), (meta, 2));
        dir
    }

    #[test]
    fn corrupt_snapshots_and_bases_are_refused() {
        type Tamper = fn(&redb::WriteTransaction);
        let cases: [(&str, Tamper); 4] = [
            ("meta-garbage", |txn| {
                txn.open_table(SNAPSHOT).unwrap().insert(KEY_SNAPSHOT_META, &[0xff; 12][..]).unwrap();
            }),
            ("data-missing", |txn| {
                txn.open_table(SNAPSHOT).unwrap().remove(KEY_SNAPSHOT_DATA).unwrap();
            }),
            ("base-garbage", |txn| {
                txn.open_table(META).unwrap().insert(KEY_BASE, &[0xff][..]).unwrap();
            }),
            ("base-past-snapshot", |txn| {
                let base = postcard::to_allocvec(&SnapshotMeta { index: 4, term: 1 }).unwrap();
                txn.open_table(META).unwrap().insert(KEY_BASE, base.as_slice()).unwrap();
                txn.open_table(LOG).unwrap().remove(4).unwrap();
            }),
        ];
        for (tag, f) in cases {
            let dir = compacted(tag);
            let r = tamper(dir.path(), f);
            assert!(matches!(r, Err(StorageError::CorruptSnapshot { .. })), "{tag}: {r:?}");
            assert!(r.unwrap_err().to_string().contains("snapshot is corrupt"), "{tag}");
        }
        // The first row after the base missing: the hole is named.
        let dir = compacted("first-row");
        let r = tamper(dir.path(), |txn| {
            txn.open_table(LOG).unwrap().remove(4).unwrap();
        });
        assert!(matches!(r, Err(StorageError::Corrupt { index: 4, .. })), "{r:?}");
    }

    /// Rows physically stored in the log table.
    fn rows(s: &RedbStorage) -> u64 {
        s.db.begin_read().unwrap().open_table(LOG).unwrap().len().unwrap()
    }

    #[test]
    fn compacted_rows_go_a_slice_per_write_and_a_reopen_picks_up_the_rest() {
        let dir = stored("trim", &[append(1, 1, 2_600)]);
        let mut s = RedbStorage::open(dir.path()).unwrap();
        let meta = SnapshotMeta { index: 2_500, term: 1 };
        s.save_snapshot(&Snapshot { meta, membership: Membership::initial(3), data: vec![1].into() }).unwrap();
        let compact = Persist { number: 0, snapshot: None, compact: Some(meta), hard_state: None, log: None };
        s.write(&[&compact]).unwrap();
        assert_eq!(rows(&s), 2_600 - TRIM_ROWS_PER_WRITE, "one slice went with the compaction");
        let expected = s.load().unwrap();
        assert_eq!((expected.base, expected.log.len()), (meta, 100), "the rest is compacted already");
        s.write(&[&append(1, 2_601, 1)]).unwrap();
        assert_eq!(rows(&s), 2_601 - 2 * TRIM_ROWS_PER_WRITE);
        drop(s);
        let mut s = RedbStorage::open(dir.path()).unwrap();
        assert_eq!(s.load().unwrap().log.len(), 101);
        for i in 0..3 {
            s.write(&[&append(1, 2_602 + i, 1)]).unwrap();
        }
        assert_eq!(rows(&s), 104, "only the log after the base is left");
        // An install far past every stored row trims what exists, at once.
        let far = SnapshotMeta { index: 1_000_000, term: 1 };
        let install = Persist {
            number: 0,
            snapshot: Some(Snapshot { meta: far, membership: Membership::initial(3), data: vec![2].into() }),
            compact: Some(far),
            hard_state: None,
            log: None,
        };
        s.write(&[&install]).unwrap();
        assert_eq!(rows(&s), 0);
        assert_eq!(s.load().unwrap().base, far);
    }

    #[test]
    fn an_older_snapshot_does_not_replace_a_newer_one() {
        let dir = compacted("older");
        let mut s = RedbStorage::open(dir.path()).unwrap();
        s.save_snapshot(&Snapshot {
            meta: SnapshotMeta { index: 2, term: 1 },
            membership: Membership::initial(3),
            data: vec![9].into(),
        })
        .unwrap();
        let old = Snapshot {
            meta: SnapshotMeta { index: 1, term: 1 },
            membership: Membership::initial(3),
            data: vec![8].into(),
        };
        s.write(&[&Persist { number: 0, snapshot: Some(old), compact: None, hard_state: None, log: None }]).unwrap();
        let kept = s.load().unwrap().snapshot.unwrap();
        assert_eq!((kept.meta.index, &*kept.data), (3, &[1u8, 2, 3][..]));
    }

    #[test]
    fn a_gap_is_refused_and_nothing_of_the_batch_is_written() {
        let dir = TempDir::new("storage-gap").unwrap();
        let mut s = RedbStorage::open(dir.path()).unwrap();
        s.write(&[&append(1, 1, 2)]).unwrap();
        let before = s.load().unwrap();
        let r = s.write(&[&append(2, 3, 1), &append(2, 6, 1)]);
        assert!(matches!(r, Err(StorageError::Gap { from: 6, last_index: 3, .. })), "{r:?}");
        assert_eq!(s.load().unwrap(), before);
        assert_eq!(s.last_index(), 2);
        // Still usable afterwards.
        s.write(&[&append(2, 3, 1)]).unwrap();
        assert_eq!(s.load().unwrap().log.len(), 3);
    }

    #[test]
    fn a_second_handle_is_refused_with_the_path() {
        let dir = TempDir::new("storage-twice").unwrap();
        let _s = RedbStorage::open(dir.path()).unwrap();
        let e = RedbStorage::open(dir.path()).unwrap_err();
        assert!(matches!(e, StorageError::Database { .. }), "{e:?}");
        assert!(e.to_string().contains(&dir.path().join(DB_FILE).display().to_string()), "{e}");
    }
}
