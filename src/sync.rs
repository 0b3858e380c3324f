//! The one door through which threaded code reaches synchronisation
//! primitives: `std` in normal builds, [`loom`](https://docs.rs/loom) under
//! `--cfg loom`.
//!
//! Loom can only explore interleavings of operations it sees; a `Mutex` or
//! `Condvar` taken straight from `std` is invisible to it and silently
//! shrinks the model to something that proves nothing. So code that must be
//! model-checked (today [`crate::server::handoff`]) imports from here and
//! nowhere else. The two sets of re-exports have the same API surface for
//! everything used (`lock`, `wait`, `notify_*`, `spawn`, `join`).
//!
//! Loom has no `sync_channel`, no `recv_timeout` and no `Barrier`, and allows
//! at most 5 threads per model; keep threaded code to what is re-exported
//! here.

#[cfg(loom)]
pub use loom::sync::{atomic, Arc, Condvar, Mutex, MutexGuard};
#[cfg(loom)]
pub use loom::thread;

#[cfg(not(loom))]
pub use std::sync::{atomic, Arc, Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub use std::thread;
