//! What simulated clients do: the MIT lab's workloads.

use crate::kv::{ClientId, Op};
use crate::rng::Rng;

/// A client's script. Every Append argument is unique (`"x <client> <n> y"`),
/// so a final read shows whether each append landed exactly once and in the
/// client's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workload {
    /// The lab without random keys: append to the client's own key half the
    /// time, read it otherwise.
    OwnKey { appended: u64 },
    /// The lab with random keys: 45% Get, 45% Append, 10% Put, keys drawn
    /// from `keys` names.
    RandomKeys { keys: u64, appended: u64 },
    /// Every kind of operation on `keys` names: 35% Get, 35% Append, 10%
    /// each of Put, Delete and PutIfAbsent.
    AllOps { keys: u64, appended: u64 },
    /// `remaining` appends to `key`, then nothing.
    Appends { key: String, remaining: u64, appended: u64 },
}

impl Workload {
    pub fn own_key() -> Workload {
        Workload::OwnKey { appended: 0 }
    }
    pub fn random_keys(keys: u64) -> Workload {
        Workload::RandomKeys { keys, appended: 0 }
    }
    pub fn all_ops(keys: u64) -> Workload {
        Workload::AllOps { keys, appended: 0 }
    }
    pub fn appends(key: &str, count: u64) -> Workload {
        Workload::Appends { key: key.to_string(), remaining: count, appended: 0 }
    }

    /// The key a client owns under [`Workload::OwnKey`].
    pub fn own_key_of(client: ClientId) -> String {
        format!("k{client}")
    }

    /// The unique argument of `client`'s `n`th append.
    pub fn append_value(client: ClientId, n: u64) -> String {
        format!("x {client} {n} y")
    }

    /// True when the script has nothing more to do.
    pub fn is_done(&self) -> bool {
        matches!(self, Workload::Appends { remaining: 0, .. })
    }

    /// The next operation, or `None` when the script is done.
    pub fn next_op(&mut self, client: ClientId, rng: &mut Rng) -> Option<Op> {
        match self {
            Workload::OwnKey { appended } => {
                let key = Workload::own_key_of(client);
                Some(if rng.chance(1, 2) {
                    *appended += 1;
                    Op::Append { key, value: Workload::append_value(client, *appended) }
                } else {
                    Op::Get { key }
                })
            }
            Workload::RandomKeys { keys, appended } => {
                let key = format!("k{}", rng.range(0, *keys));
                let roll = rng.range(0, 100);
                Some(if roll < 45 {
                    Op::Get { key }
                } else if roll < 90 {
                    *appended += 1;
                    Op::Append { key, value: Workload::append_value(client, *appended) }
                } else {
                    Op::Put { key, value: format!("p {client} {}", rng.next_u64() % 1_000_000) }
                })
            }
            Workload::AllOps { keys, appended } => {
                let key = format!("k{}", rng.range(0, *keys));
                let value = format!("p {client} {}", rng.next_u64() % 1_000_000);
                Some(match rng.range(0, 100) {
                    0..35 => Op::Get { key },
                    35..70 => {
                        *appended += 1;
                        Op::Append { key, value: Workload::append_value(client, *appended) }
                    }
                    70..80 => Op::Put { key, value },
                    80..90 => Op::Delete { key },
                    _ => Op::PutIfAbsent { key, value },
                })
            }
            Workload::Appends { key, remaining, appended } => {
                if *remaining == 0 {
                    return None;
                }
                *remaining -= 1;
                *appended += 1;
                Some(Op::Append { key: key.clone(), value: Workload::append_value(client, *appended) })
            }
        }
    }
}
