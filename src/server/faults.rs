//! Faults injected on purpose, so that tests can show a server ends loudly
//! and loses nothing acknowledged (`tests/faults.rs`). Never used unless the
//! environment asks:
//!
//! - `RAFTKV_FAULT`: what to inject — `storage-eio` or `storage-enospc` (every
//!   storage write fails with that error), or `panic-node`, `panic-persist`,
//!   `panic-peer`, `panic-client` (a panic in the node thread, the persist
//!   thread, a peer connection's task, a client connection's task), or
//!   `storage-slow-ms=N` (every storage write takes N ms longer: a slow
//!   disk, for `benches/slow_leader_disk.sh`);
//! - `RAFTKV_FAULT_TRIGGER`: a file; the fault fires only while it exists,
//!   so a test can let a server run, then pull the trigger.
//!
//! `raftkv server` reads both at start ([`FaultPlan::from_env`]) and
//! installs the plan; the hooks are a storage wrapper ([`FaultyStorage`])
//! and [`panic_point`] calls at the four sites.

use super::storage::{Durable, RaftStorage, StorageError};
use crate::kv::Command;
use crate::raft::{Persist, Snapshot};
use std::path::PathBuf;
use std::sync::OnceLock;

/// Where a planned panic happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// The node thread (when it hands a message to the peer transport).
    Node,
    /// The persist thread (when it writes a batch).
    Persist,
    /// A peer connection's task (when it delivers a message to the node).
    Peer,
    /// A client connection's task (when it handles a command).
    Client,
}

/// What a plan injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Every storage write fails with this OS error (`EIO`, `ENOSPC`).
    StorageError(i32),
    /// A panic at this site.
    Panic(Site),
    /// Every storage write waits this many milliseconds first.
    SlowStorage(u64),
}

/// The slowest disk `storage-slow-ms` makes (a bound, so that a typo cannot
/// make a server that never writes).
const SLOW_STORAGE_MS_MAX: u64 = 10_000;

/// A fault and the file that arms it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultPlan {
    pub fault: Fault,
    pub trigger: PathBuf,
}

const EIO: i32 = 5;
const ENOSPC: i32 = 28;

static PLAN: OnceLock<FaultPlan> = OnceLock::new();

impl FaultPlan {
    /// The plan the environment asks for, if any.
    pub fn from_env() -> Result<Option<FaultPlan>, String> {
        let Some(fault) = std::env::var_os("RAFTKV_FAULT") else { return Ok(None) };
        let fault = fault.to_string_lossy();
        let trigger = std::env::var_os("RAFTKV_FAULT_TRIGGER")
            .ok_or_else(|| "RAFTKV_FAULT is set but RAFTKV_FAULT_TRIGGER (the file that arms it) is not".to_string())?;
        FaultPlan::parse(&fault, PathBuf::from(trigger)).map(Some)
    }

    pub fn parse(fault: &str, trigger: PathBuf) -> Result<FaultPlan, String> {
        let fault = match fault {
            "storage-eio" => Fault::StorageError(EIO),
            "storage-enospc" => Fault::StorageError(ENOSPC),
            "panic-node" => Fault::Panic(Site::Node),
            "panic-persist" => Fault::Panic(Site::Persist),
            "panic-peer" => Fault::Panic(Site::Peer),
            "panic-client" => Fault::Panic(Site::Client),
            other => match other.strip_prefix("storage-slow-ms=").map(str::parse::<u64>) {
                Some(Ok(ms)) if ms <= SLOW_STORAGE_MS_MAX => Fault::SlowStorage(ms),
                Some(_) => {
                    return Err(format!(
                        "RAFTKV_FAULT {other:?}: storage-slow-ms takes a whole number of milliseconds \
                         up to {SLOW_STORAGE_MS_MAX}"
                    ))
                }
                None => {
                    return Err(format!(
                        "unknown RAFTKV_FAULT {other:?}: expected storage-eio, storage-enospc, panic-node, \
                         panic-persist, panic-peer, panic-client or storage-slow-ms=N"
                    ))
                }
            },
        };
        Ok(FaultPlan { fault, trigger })
    }

    /// Makes this the process's plan (the first one installed stays).
    pub fn install(self) {
        tracing::warn!("fault injection armed by {}: {:?}", self.trigger.display(), self.fault);
        let _ = PLAN.set(self);
    }

    fn armed(&self, fault: Fault) -> bool {
        self.fault == fault && self.trigger.exists()
    }
}

/// Panics here if the installed plan says so and its trigger is pulled.
pub fn panic_point(site: Site) {
    if PLAN.get().is_some_and(|p| p.armed(Fault::Panic(site))) {
        panic!("injected fault: a panic at the {site:?} site (RAFTKV_FAULT)");
    }
}

/// True if a plan is installed (the server then wraps its storage).
pub fn installed() -> bool {
    PLAN.get().is_some()
}

/// A storage that fails (or panics) when the installed plan says so, and
/// otherwise passes everything to the real one.
pub struct FaultyStorage<S> {
    inner: S,
    path: PathBuf,
}

impl<S: RaftStorage> FaultyStorage<S> {
    pub fn new(inner: S, path: PathBuf) -> FaultyStorage<S> {
        FaultyStorage { inner, path }
    }
}

impl<S: RaftStorage> RaftStorage for FaultyStorage<S> {
    fn load(&self) -> Result<Durable, StorageError> {
        self.inner.load()
    }

    fn write(&mut self, batch: &[&Persist<Command>]) -> Result<(), StorageError> {
        self.fail_point("writing a batch (injected fault)")?;
        self.inner.write(batch)
    }

    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.fail_point("saving a snapshot (injected fault)")?;
        self.inner.save_snapshot(snapshot)
    }
}

impl<S> FaultyStorage<S> {
    /// Panics or fails here if the installed plan says so.
    fn fail_point(&self, op: &'static str) -> Result<(), StorageError> {
        panic_point(Site::Persist);
        match PLAN.get().filter(|p| p.armed(p.fault)).map(|p| p.fault) {
            Some(Fault::SlowStorage(ms)) => std::thread::sleep(std::time::Duration::from_millis(ms)),
            Some(Fault::StorageError(errno)) => {
                let source = std::io::Error::from_raw_os_error(errno);
                return Err(StorageError::Io { path: self.path.clone(), op, source });
            }
            Some(Fault::Panic(_)) | None => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse_and_unknown_ones_are_refused_by_name() {
        let t = PathBuf::from("/nonexistent/trigger");
        assert_eq!(FaultPlan::parse("storage-enospc", t.clone()).unwrap().fault, Fault::StorageError(ENOSPC));
        assert_eq!(FaultPlan::parse("panic-peer", t.clone()).unwrap().fault, Fault::Panic(Site::Peer));
        assert_eq!(FaultPlan::parse("storage-slow-ms=5", t.clone()).unwrap().fault, Fault::SlowStorage(5));
        for bad in ["storage-slow-ms=", "storage-slow-ms=-1", "storage-slow-ms=10001"] {
            let err = FaultPlan::parse(bad, t.clone()).unwrap_err();
            assert!(err.contains("storage-slow-ms takes"), "{bad}: {err}");
        }
        let err = FaultPlan::parse("panic-everything", t).unwrap_err();
        assert!(err.contains("panic-everything") && err.contains("panic-client"), "{err}");
        let plan = FaultPlan::parse("panic-node", PathBuf::from("/nonexistent/trigger")).unwrap();
        assert!(!plan.armed(Fault::Panic(Site::Node)), "no trigger file: not armed");
    }
}
