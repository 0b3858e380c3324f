//! Stateright models of raftkv's pure Raft node, KV state machine and clerk.
//!
//! Not written yet: this crate only reserves its place in the workspace so the
//! layout matches `ARCHITECTURE.md`. The models arrive with their own issue.
