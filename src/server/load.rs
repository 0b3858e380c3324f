//! Closed-loop clients against a real cluster: each client runs one
//! operation at a time through a [`RemoteClerk`], records it in a history
//! (for the linearizability checker) and its latency (for the benchmark).
//! `raftkv bench` and the end-to-end tests both drive clusters with it.

use super::client::RemoteClerk;
use crate::kv::{ClientId, Op};
use crate::lincheck::Operation;
use crate::rng::Rng;
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::sync::Arc;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Which operations the clients run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// Only `Put`s of random values.
    Puts,
    /// Only `Get`s.
    Gets,
    /// Half Appends, half Gets. No Puts: a Put would erase earlier
    /// appends, and then a final read could no longer show that every
    /// acknowledged append landed exactly once.
    Appends,
}

#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub servers: Vec<SocketAddr>,
    pub clients: usize,
    pub mix: Mix,
    /// Keys are `key-<i>` for `i` below this, zero-padded to `key_bytes`.
    pub keys: u64,
    pub key_bytes: usize,
    pub value_bytes: usize,
    /// Seeds the choice of keys and operations.
    pub seed: u64,
    /// How long one operation may take before the client gives up on it
    /// (recorded as pending: it may still take effect).
    pub op_timeout: Duration,
    /// How long one attempt at one server may take before the clerk tries
    /// the next.
    pub attempt_timeout: Duration,
}

/// What one client recorded.
#[derive(Debug, Default)]
pub struct ClientRecord {
    pub history: Vec<Operation>,
    /// Latency of each completed operation, in microseconds, by kind.
    pub latencies_us: Vec<(Op, u64)>,
    /// Operations given up on (their outcome is unknown).
    pub abandoned: u64,
}

/// Shared between the clients and whoever watches them.
#[derive(Debug, Default)]
pub struct Progress {
    /// Operations completed so far, all clients.
    pub completed: AtomicU64,
    /// Set to make every client stop after its current operation.
    pub stop: AtomicBool,
}

/// Runs `spec.clients` clients until `progress.stop` is set; returns each
/// client's record. Times in the history are microseconds since `epoch`.
pub async fn run(spec: LoadSpec, progress: Arc<Progress>, epoch: Instant) -> Vec<ClientRecord> {
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..spec.clients {
        let (spec, progress) = (spec.clone(), progress.clone());
        tasks.spawn(async move { (c, client(c, spec, progress, epoch).await) });
    }
    let mut records: Vec<(usize, ClientRecord)> = Vec::with_capacity(spec.clients);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(r) => records.push(r),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    records.sort_by_key(|(c, _)| *c);
    records.into_iter().map(|(_, r)| r).collect()
}

async fn client(index: usize, spec: LoadSpec, progress: Arc<Progress>, epoch: Instant) -> ClientRecord {
    let mut rng = Rng::new(spec.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let servers = spec.servers.len() as u8;
    let new_clerk = |rng: &mut Rng| {
        // Ids below 2^63 are for clerks; random so that runs never collide.
        let id: ClientId = rng.next_u64() >> 1;
        RemoteClerk::new(id, spec.servers.clone(), (rng.next_u64() % u64::from(servers)) as u8, spec.attempt_timeout)
    };
    let mut clerk = new_clerk(&mut rng);
    let mut record = ClientRecord::default();
    let mut n = 0u64;
    // One history client per clerk session: an abandoned operation may
    // still take effect after the next session's operations.
    let mut history_id = (index as u64) << 32;
    while !progress.stop.load(Ordering::Relaxed) {
        n += 1;
        let key =
            format!("key-{:0width$}", rng.next_u64() % spec.keys.max(1), width = spec.key_bytes.saturating_sub(4));
        let op = match (spec.mix, rng.next_u64() % 100) {
            (Mix::Puts, _) => Op::Put { key, value: value(index, n, spec.value_bytes) },
            (Mix::Gets, _) | (Mix::Appends, 50..) => Op::Get { key },
            // A unique, delimited argument, so the checker can tell every
            // append apart: "x <client> <n> y".
            (Mix::Appends, _) => Op::Append { key, value: format!("x {index} {n} y") },
        };
        let call = Instant::now();
        let call_us = micros(epoch, call);
        let result = clerk.run(op.clone(), tokio::time::Instant::from_std(call + spec.op_timeout)).await;
        match result {
            Ok(output) => {
                let ret_us = micros(epoch, Instant::now()).max(call_us);
                record.latencies_us.push((op.clone(), ret_us - call_us));
                record.history.push(operation(history_id, &op, &output, call_us, Some(ret_us)));
                progress.completed.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                // Unknown outcome: it may take effect at any later time.
                record.history.push(operation(history_id, &op, "", call_us, None));
                record.abandoned += 1;
                // The clerk still has the operation outstanding; a fresh
                // session goes on (the old one's retries are over).
                clerk = new_clerk(&mut rng);
                history_id += 1;
            }
        }
    }
    record
}

fn value(client: usize, n: u64, bytes: usize) -> String {
    let mut v = format!("v{client}.{n}.");
    while v.len() < bytes {
        v.push('.');
    }
    v
}

fn micros(epoch: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(epoch).as_micros() as u64
}

fn operation(client: u64, op: &Op, output: &str, call: u64, ret: Option<u64>) -> Operation {
    match op {
        Op::Put { key, value } => Operation::put(client, key, value, call, ret),
        Op::Append { key, value } => Operation::append(client, key, value, call, ret),
        Op::Get { key } => Operation::get(client, key, output, call, ret),
    }
}
