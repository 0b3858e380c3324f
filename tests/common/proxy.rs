//! A userspace fault proxy for peer links: no root, no `tc netem` (this
//! kernel has none). One listener per directed link `from → to` forwards
//! to `to`'s peer port; node `from` dials it through `raftkv server
//! --route to=ADDR` ([`Proxies::route_args`]). Each link's [`Faults`] can
//! be changed at any time:
//!
//! - `cut`: nothing moves in either direction of the link's connections
//!   (frames and the acks coming back stall in the proxy's socket buffers,
//!   as on a blackholed path); a one-way partition is a cut of `from → to`
//!   only, since `to → from` is another link.
//! - `delay`: every frame is held this long (order kept).
//! - `drop_per_mille`, `duplicate_per_mille`: each frame is dropped, or
//!   sent twice, with this chance; the choice comes from the link's own
//!   random stream, forked from the seed.
//!
//! The proxy cuts the byte stream at frame boundaries (the wire's 7-byte
//! header says each frame's length), so a dropped or duplicated frame is a
//! whole envelope, as a lossy network would lose or repeat a message; it
//! only works on plain-text links. Every task stops when [`Proxies`]
//! drops.
#![allow(dead_code)]

use raftkv::rng::Rng;
use raftkv::wire;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What one directed link does to what crosses it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    pub cut: bool,
    pub delay: Duration,
    pub drop_per_mille: u64,
    pub duplicate_per_mille: u64,
}

/// The proxies of every directed link of a cluster.
pub struct Proxies {
    links: BTreeMap<(u8, u8), (SocketAddr, watch::Sender<Faults>)>,
    tasks: JoinSet<()>,
}

impl Proxies {
    /// A proxy for every ordered pair of `targets` (the nodes' peer
    /// addresses, by id), on free loopback ports; link streams forked from
    /// `seed`.
    pub async fn start(targets: &[SocketAddr], seed: u64) -> Proxies {
        let mut root = Rng::new(seed);
        let mut links = BTreeMap::new();
        let mut tasks = JoinSet::new();
        for (from, _) in targets.iter().enumerate() {
            for (to, &target) in targets.iter().enumerate().filter(|&(to, _)| to != from) {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let (faults, watching) = watch::channel(Faults::default());
                tasks.spawn(serve_link(listener, target, watching, root.fork()));
                links.insert((from as u8, to as u8), (addr, faults));
            }
        }
        Proxies { links, tasks }
    }

    /// `raftkv server` arguments that make node `from` dial every peer
    /// through its link's proxy.
    pub fn route_args(&self, from: u8) -> Vec<String> {
        let routes = self.links.iter().filter(|((f, _), _)| *f == from);
        routes.flat_map(|((_, to), (addr, _))| ["--route".to_string(), format!("{to}={addr}")]).collect()
    }

    pub fn set(&self, from: u8, to: u8, faults: Faults) {
        self.links[&(from, to)].1.send_replace(faults);
    }

    /// Applies `faults` to every link.
    pub fn set_all(&self, faults: Faults) {
        for (_, sender) in self.links.values() {
            sender.send_replace(faults);
        }
    }

    /// Cuts every link from and to `node`.
    pub fn isolate(&self, node: u8) {
        for (&(from, to), (_, sender)) in &self.links {
            if from == node || to == node {
                sender.send_modify(|f| f.cut = true);
            }
        }
    }

    /// Every link back to no faults.
    pub fn heal(&self) {
        self.set_all(Faults::default());
    }
}

async fn serve_link(listener: TcpListener, target: SocketAddr, faults: watch::Receiver<Faults>, mut rng: Rng) {
    let mut connections = JoinSet::new();
    while let Ok((inbound, _)) = listener.accept().await {
        while connections.try_join_next().is_some() {}
        let Ok(outbound) = TcpStream::connect(target).await else { continue };
        let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
        let (from_rd, from_wr) = inbound.into_split();
        let (to_rd, to_wr) = outbound.into_split();
        connections.spawn(frames(from_rd, to_wr, faults.clone(), rng.fork()));
        connections.spawn(acks(to_rd, from_wr, faults.clone()));
    }
}

/// Waits while the link is cut; false once the proxy is gone.
async fn open(faults: &mut watch::Receiver<Faults>) -> bool {
    faults.wait_for(|f| !f.cut).await.is_ok()
}

/// The sender's side: frames, each dropped, duplicated or delayed as the
/// faults say at the moment it completes.
async fn frames(mut rd: OwnedReadHalf, wr: OwnedWriteHalf, mut faults: watch::Receiver<Faults>, mut rng: Rng) {
    let (tx, rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(delayed_writer(rx, wr, faults.clone()));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    'read: loop {
        if !open(&mut faults).await {
            break;
        }
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(len) = frame_len(&buf) {
            let frame: Vec<u8> = buf.drain(..len).collect();
            let now = *faults.borrow();
            if rng.chance(now.drop_per_mille, 1000) {
                continue;
            }
            let copies = if rng.chance(now.duplicate_per_mille, 1000) { 2 } else { 1 };
            for _ in 0..copies {
                if tx.send((Instant::now() + now.delay, frame.clone())).is_err() {
                    break 'read;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// The whole frame's length if `buf` starts with a complete one; bytes
/// that are not a frame header are passed on as they are.
fn frame_len(buf: &[u8]) -> Option<usize> {
    if buf.is_empty() {
        return None;
    }
    if buf[0] != wire::MAGIC {
        return Some(buf.len());
    }
    let header = buf.get(..wire::HEADER_LEN)?;
    let payload = u32::from_le_bytes(header[3..7].try_into().unwrap()) as usize;
    if payload > wire::Limits::default().frame_bytes_max {
        return Some(buf.len()); // not a frame the node would take: pass it on
    }
    let len = wire::HEADER_LEN + payload;
    (buf.len() >= len).then_some(len)
}

async fn delayed_writer(
    mut rx: mpsc::UnboundedReceiver<(Instant, Vec<u8>)>,
    mut wr: OwnedWriteHalf,
    mut faults: watch::Receiver<Faults>,
) {
    while let Some((due, frame)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        if !open(&mut faults).await || wr.write_all(&frame).await.is_err() {
            return;
        }
    }
}

/// The receiver's side: acks back to the sender, stalled while cut.
async fn acks(mut rd: OwnedReadHalf, mut wr: OwnedWriteHalf, mut faults: watch::Receiver<Faults>) {
    let mut chunk = [0u8; 1024];
    loop {
        if !open(&mut faults).await {
            return;
        }
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !open(&mut faults).await || wr.write_all(&chunk[..n]).await.is_err() {
            return;
        }
    }
}
