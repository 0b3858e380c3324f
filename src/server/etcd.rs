//! The other side of the side-by-side benchmark: the same closed-loop
//! clients ([`super::load`]) against an etcd cluster, through etcd's own
//! gRPC API, so that `benches/cluster.sh` prints raftkv's and etcd's figures
//! from one run on one machine (issue 17: ratios against figures from
//! another day had gone stale).
//!
//! Behind the `etcd` cargo feature, so the default build stays without
//! tonic and prost (and without `protoc`, which etcd-client's build needs).
//!
//! Each client has its own gRPC connection to the leader, as each raftkv
//! client has its own TCP connection: a Put is etcd's `Put`, a Get its
//! default `Range`, which is linearizable (etcd confirms it with ReadIndex,
//! as raftkv does). Only Puts and Gets: an Append would be a transaction,
//! and would measure something else.

use crate::kv::Op;
use etcd_client::{Client, ConnectOptions};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

/// One client's connection to the etcd leader.
pub struct EtcdSession {
    client: Client,
}

impl EtcdSession {
    pub async fn connect(leader: SocketAddr, attempt_timeout: Duration) -> Result<EtcdSession, String> {
        let options = ConnectOptions::new().with_connect_timeout(attempt_timeout);
        let client = Client::connect([format!("http://{leader}")], Some(options))
            .await
            .map_err(|e| format!("cannot connect to etcd at {leader}: {e}"))?;
        Ok(EtcdSession { client })
    }

    /// Runs `op` once. Returns what raftkv's clerk would: a Get's value
    /// (`""` for a missing key), `""` for a Put. An error or a passed
    /// deadline leaves the outcome unknown: the caller records the
    /// operation as pending and opens a new session.
    pub async fn run(&mut self, op: &Op, deadline: Instant) -> Result<String, String> {
        let call = async {
            match op {
                Op::Put { key, value } => {
                    self.client.put(key.as_bytes(), value.as_bytes(), None).await.map(|_| String::new())
                }
                Op::Get { key } => self.client.get(key.as_bytes(), None).await.map(|reply| {
                    reply.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()).unwrap_or_default()
                }),
                other => return Err(format!("etcd runs only Puts and Gets here, not {other:?}")),
            }
            .map_err(|e| e.to_string())
        };
        tokio::time::timeout_at(deadline, call).await.map_err(|_| "deadline passed".to_string())?
    }
}

/// Which of `endpoints` is the etcd leader: the one whose status names
/// itself as leader.
pub async fn find_leader(endpoints: &[SocketAddr], patience: Duration) -> Result<SocketAddr, String> {
    let give_up = Instant::now() + patience;
    loop {
        for &addr in endpoints {
            let status = async {
                let mut client = EtcdSession::connect(addr, Duration::from_secs(1)).await?.client;
                client.status().await.map_err(|e| e.to_string())
            };
            if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(2), status).await {
                if status.header().is_some_and(|h| h.member_id() == status.leader()) {
                    return Ok(addr);
                }
            }
        }
        if Instant::now() >= give_up {
            return Err(format!("no etcd leader among {endpoints:?} within {patience:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sum of every member's WAL fsyncs, read from its `/metrics`
/// (`etcd_disk_wal_fsync_duration_seconds_count`), or `None` if any member
/// does not answer: the etcd counterpart of raftkv's `raft_fsyncs`.
pub async fn total_fsyncs(endpoints: &[SocketAddr]) -> Option<u64> {
    const METRIC: &str = "etcd_disk_wal_fsync_duration_seconds_count";
    let mut total = 0;
    for addr in endpoints {
        let text = tokio::time::timeout(Duration::from_secs(2), http_get(*addr, "/metrics")).await.ok()??;
        let line = text.lines().find(|l| l.starts_with(METRIC))?;
        total += line.rsplit(' ').next()?.trim().parse::<f64>().ok()? as u64;
    }
    Some(total)
}

/// A plain HTTP/1.0 GET, its body read to the end (bounded: the metrics
/// page is tens of kilobytes).
async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BODY_MAX: u64 = 4 << 20;
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.ok()?;
    let mut text = String::new();
    stream.take(BODY_MAX).read_to_string(&mut text).await.ok()?;
    Some(text)
}
