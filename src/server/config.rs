//! The cluster configuration of the real server: who the members are, where
//! they listen, and how fast their clocks tick. One file describes the whole
//! cluster, so every member reads the same one (`raftkv server --config
//! cluster.toml --id N`); `raftkv cluster` writes one for a local cluster.
//!
//! ```toml
//! tick_ms = 10            # one Raft tick of wall-clock time
//! election_ticks = 30     # election timeout: 30..60 ticks (300..600 ms)
//! heartbeat_ticks = 5     # a leader heartbeats every 50 ms
//! read_path = "ReadIndex" # or "Log"
//! lease_reads = false     # true: a leader answers Gets under its lease, with no
//!                         # round of messages (thesis §6.4.1), trusting that
//! max_clock_drift_ppm = 50000 # no clock runs more than 5% fast or slow
//! peer_silence_ms = 150   # a peer connection whose bytes go unacked this long
//!                         # is redialled (default: half the minimum election
//!                         # timeout; specs/wire.md, "Liveness")
//! followers_write_inline = true # a follower fsyncs on its node thread and
//!                         # acks at once: faster Puts, about a tenth more p99
//!                         # under mixed loads (specs/performance.md)
//! leaders_step_on_arrival = true # an idle leader steps a Put or an ack on
//!                         # the task it arrived on, not its node thread
//!
//! [snapshots]             # when each node compacts its log into a snapshot
//! every_entries = 10000   # after this many applied entries (0: not by count)
//! every_mib = 64          # or this many MiB of applied commands (0: not by size)
//! trailing_entries = 10240 # entries kept behind a snapshot for slow followers
//! trailing_mib = 64       # and at most this many MiB of commands
//!
//! requirepass = "secret"  # optional: clients must AUTH first (as in Redis)
//!
//! [tls]                   # optional: mutual TLS between peers
//! dir = "certs"           # from `raftkv certs --out certs` (relative to this file)
//! clients = true          # TLS on the client port too (default false)
//!
//! [[nodes]]               # node 0
//! peer = "127.0.0.1:7100"
//! client = "127.0.0.1:6379"
//! metrics = "127.0.0.1:9100" # optional: Prometheus's GET /metrics
//!
//! [[nodes]]               # node 1
//! peer = "127.0.0.1:7101"
//! client = "127.0.0.1:6380"
//! ```
//!
//! A node's id is its position in `nodes`, starting at 0. With
//! `initial_voters = N` (before `[snapshots]`), only nodes `0..N` found the
//! cluster; the others start outside it, and an operator adds them
//! (`raftkv member add ID`, then `promote ID`). The file is an address
//! book, and the cluster keeps a replicated one on top of it
//! ([`crate::kv::directory`]: servers added with their addresses, which
//! no file lists); the configuration itself lives in the Raft log.

use crate::kv::directory::{Addresses, Directory};
use crate::kv::{ReadPath, ServerConfig, SnapshotPolicy};
use crate::raft::types::MAX_NODES;
use crate::raft::{Config, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where one member listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAddrs {
    /// Raft traffic between servers (the wire format of `specs/wire.md`).
    pub peer: SocketAddr,
    /// Clients, in RESP (`specs/client.md`).
    pub client: SocketAddr,
    /// Prometheus scrapes (`GET /metrics`, plain HTTP); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
}

/// The whole cluster, as every member sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Wall-clock length of one Raft tick, in milliseconds.
    #[serde(default = "defaults::tick_ms")]
    pub tick_ms: u64,
    #[serde(default = "defaults::election_ticks")]
    pub election_ticks: u32,
    #[serde(default = "defaults::heartbeat_ticks")]
    pub heartbeat_ticks: u32,
    #[serde(default)]
    pub read_path: ReadPath,
    /// A leader answers ReadIndex Gets under its lease (no round of
    /// messages) while the clocks' drift bound allows: see
    /// [`crate::raft::lease`]. Every member must agree on it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lease_reads: bool,
    /// The drift bound the lease trusts: no server's clock runs more than
    /// this many parts per million fast or slow (of its ticks' length).
    #[serde(default = "defaults::max_clock_drift_ppm")]
    pub max_clock_drift_ppm: u64,
    /// The founding voters are nodes `0..initial_voters` (all of them when
    /// absent). Only read by a server whose log holds no configuration yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_voters: Option<u8>,
    /// A peer connection whose written bytes go unacknowledged this long
    /// is dropped and redialled; default: half the minimum election
    /// timeout. See [`ClusterConfig::peer_silence`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_silence_ms: Option<u64>,
    /// A follower whose persist thread is idle writes its batches on its
    /// node thread ([`crate::server::node::RuntimeConfig::followers_write_inline`]);
    /// each member reads its own.
    #[serde(default = "defaults::yes", skip_serializing_if = "defaults::is_yes")]
    pub followers_write_inline: bool,
    /// An idle leader steps what arrives on the task it arrived on
    /// ([`crate::server::node::RuntimeConfig::leaders_step_on_arrival`]);
    /// each member reads its own.
    #[serde(default = "defaults::yes", skip_serializing_if = "defaults::is_yes")]
    pub leaders_step_on_arrival: bool,
    /// Clients must `AUTH` with this password before any command but
    /// `AUTH`, `PING`, `HELLO` and `QUIT` (Redis's `requirepass`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirepass: Option<String>,
    #[serde(default)]
    pub snapshots: SnapshotSettings,
    /// TLS on the peer port (and, if asked, the client port); plain TCP
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
    /// Every server that is or may become a member; a node's id is its
    /// index here.
    pub nodes: Vec<NodeAddrs>,
}

/// When a node takes a snapshot and compacts its log; what keeps its disk
/// and memory bounded. With both thresholds 0 it never does, and the log
/// grows without bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotSettings {
    /// Take one after this many entries were applied since the last (0: not
    /// by count).
    pub every_entries: u64,
    /// Take one after this many MiB of commands were applied since the last
    /// (0: not by size).
    pub every_mib: u64,
    /// Entries kept in the log behind a snapshot, so that a follower a
    /// little behind catches up from the log instead of a whole snapshot.
    pub trailing_entries: u64,
    /// ... and at most this many MiB of commands (large values would
    /// otherwise make the window hundreds of MiB).
    pub trailing_mib: u64,
}

impl Default for SnapshotSettings {
    fn default() -> SnapshotSettings {
        let policy = SnapshotPolicy::default();
        SnapshotSettings {
            every_entries: policy.every_entries.unwrap_or(0),
            every_mib: policy.every_bytes.map_or(0, |b| b >> 20),
            trailing_entries: Config::new(0, 1, 0).snapshot_trailing_entries,
            trailing_mib: Config::new(0, 1, 0).snapshot_trailing_bytes >> 20,
        }
    }
}

impl SnapshotSettings {
    /// Bounds that keep a typo from meaning "never" or "keep everything".
    const MAX_TRAILING_ENTRIES: u64 = 10_000_000;
    const MAX_EVERY_MIB: u64 = 1 << 20;

    pub fn policy(&self) -> SnapshotPolicy {
        let nonzero = |n: u64| (n > 0).then_some(n);
        SnapshotPolicy { every_entries: nonzero(self.every_entries), every_bytes: nonzero(self.every_mib << 20) }
    }

    fn validate(&self) -> Result<(), String> {
        if self.trailing_entries > Self::MAX_TRAILING_ENTRIES {
            return Err(format!(
                "snapshots.trailing_entries = {} is above {}",
                self.trailing_entries,
                Self::MAX_TRAILING_ENTRIES
            ));
        }
        for (name, mib) in [("every_mib", self.every_mib), ("trailing_mib", self.trailing_mib)] {
            if mib > Self::MAX_EVERY_MIB {
                return Err(format!("snapshots.{name} = {mib} is above {}", Self::MAX_EVERY_MIB));
            }
        }
        Ok(())
    }
}

/// Where the certificates are, and which ports use them
/// (`super::tls`). With TLS, peers authenticate each other mutually.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// Holds `ca.pem` and `node-<id>.pem` / `node-<id>.key`, as `raftkv
    /// certs` writes them. A relative path is taken from the directory of
    /// the configuration file.
    pub dir: PathBuf,
    /// Clients must speak TLS too (`redis-cli --tls --cacert DIR/ca.pem`).
    #[serde(default)]
    pub clients: bool,
}

mod defaults {
    pub fn tick_ms() -> u64 {
        10
    }
    pub fn election_ticks() -> u32 {
        30
    }
    pub fn heartbeat_ticks() -> u32 {
        5
    }
    /// 5%: far above a quartz clock's drift (tens of ppm), so that the
    /// lease also absorbs a virtual machine's uneven time.
    pub fn max_clock_drift_ppm() -> u64 {
        50_000
    }
    pub fn yes() -> bool {
        true
    }
    pub fn is_yes(value: &bool) -> bool {
        *value
    }
}

/// Why a configuration cannot be used.
#[derive(Debug)]
pub enum ConfigError {
    Read { path: PathBuf, source: std::io::Error },
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            ConfigError::Parse { path, source } => {
                write!(f, "{} is not a valid cluster config: {source}", path.display())
            }
            ConfigError::Invalid(why) => write!(f, "invalid cluster config: {why}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ClusterConfig {
    /// A cluster of `n` members on 127.0.0.1: peers on `peer_base..`,
    /// clients on `client_base..`.
    pub fn local(n: u8, peer_base: u16, client_base: u16) -> ClusterConfig {
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        ClusterConfig {
            tick_ms: defaults::tick_ms(),
            election_ticks: defaults::election_ticks(),
            heartbeat_ticks: defaults::heartbeat_ticks(),
            read_path: ReadPath::default(),
            lease_reads: false,
            max_clock_drift_ppm: defaults::max_clock_drift_ppm(),
            initial_voters: None,
            peer_silence_ms: None,
            followers_write_inline: true,
            leaders_step_on_arrival: true,
            requirepass: None,
            snapshots: SnapshotSettings::default(),
            tls: None,
            nodes: (0..u16::from(n))
                .map(|i| NodeAddrs { peer: addr(peer_base + i), client: addr(client_base + i), metrics: None })
                .collect(),
        }
    }

    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let mut config: ClusterConfig = toml::from_str(&text)
            .map_err(|source| ConfigError::Parse { path: path.to_owned(), source: Box::new(source) })?;
        if let Some(tls) = &mut config.tls {
            if tls.dir.is_relative() {
                tls.dir = path.parent().unwrap_or(Path::new(".")).join(&tls.dir);
            }
        }
        config.validate()?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a ClusterConfig always serializes")
    }

    /// The longest `requirepass` accepted.
    pub const PASSWORD_BYTES_MAX: usize = 512;

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |why: String| Err(ConfigError::Invalid(why));
        if self.nodes.is_empty() || self.nodes.len() > MAX_NODES {
            return invalid(format!("{} nodes; a cluster has 1 to {MAX_NODES}", self.nodes.len()));
        }
        if !(1..=60_000).contains(&self.tick_ms) {
            return invalid(format!("tick_ms = {} is outside 1..=60000", self.tick_ms));
        }
        let mut seen = BTreeSet::new();
        for (id, node) in self.nodes.iter().enumerate() {
            for addr in [Some(node.peer), Some(node.client), node.metrics].into_iter().flatten() {
                if !seen.insert(addr) {
                    return invalid(format!("address {addr} (node {id}) is used twice"));
                }
            }
        }
        if let Some(n) = self.initial_voters {
            if n == 0 || usize::from(n) > self.nodes.len() {
                return invalid(format!("initial_voters = {n}; it must be 1 to the number of nodes"));
            }
        }
        if let Some(ms) = self.peer_silence_ms {
            let election_min = self.tick_ms * u64::from(self.election_ticks);
            if ms < 4 || ms >= election_min {
                return invalid(format!(
                    "peer_silence_ms = {ms}; it must be at least 4 and below the minimum election timeout ({election_min} ms), or a dead link would outlast it"
                ));
            }
        }
        if self.requirepass.as_deref().is_some_and(|p| p.is_empty() || p.len() > Self::PASSWORD_BYTES_MAX) {
            return invalid(format!(
                "requirepass must be 1 to {} bytes (leave it out for no password)",
                Self::PASSWORD_BYTES_MAX
            ));
        }
        self.snapshots.validate().map_err(ConfigError::Invalid)?;
        if self.lease_reads && self.raft_config(0, 0).lease_ticks == 0 {
            return invalid(format!(
                "lease_reads with max_clock_drift_ppm = {} and election_ticks = {} leaves a lease of no ticks: lower the drift bound or raise election_ticks",
                self.max_clock_drift_ppm, self.election_ticks
            ));
        }
        self.raft_config(0, 0).validate().map_err(ConfigError::Invalid)
    }

    /// How long a peer connection's written bytes may go unacknowledged
    /// before it is redialled: `peer_silence_ms`, or half the minimum
    /// election timeout, so that a link that died in a partition is
    /// replaced well before a follower would give up on its leader.
    pub fn peer_silence(&self) -> Duration {
        let election_min = self.tick_ms * u64::from(self.election_ticks);
        Duration::from_millis(self.peer_silence_ms.unwrap_or(election_min / 2).max(4))
    }

    /// How often a leader heartbeats.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.tick_ms * u64::from(self.heartbeat_ticks))
    }

    /// How many nodes the file lists: every id it knows.
    pub fn members(&self) -> u8 {
        self.nodes.len() as u8
    }

    /// The founding voters are `0..initial_voters()`.
    pub fn initial_voters(&self) -> u8 {
        self.initial_voters.unwrap_or(self.members())
    }

    /// The node `id`'s addresses, if the file lists it.
    pub fn node(&self, id: NodeId) -> Option<&NodeAddrs> {
        self.nodes.get(usize::from(id))
    }

    /// Where `id` listens: the addresses the replicated directory holds for
    /// it (an operator added or moved it: `RAFTKV.MEMBER ADD id peer
    /// client`), else its `[[nodes]]` entry.
    pub fn addresses(&self, id: NodeId, replicated: &Directory) -> Option<Addresses> {
        replicated.get(&id).copied().or_else(|| self.node(id).map(|n| Addresses { peer: n.peer, client: n.client }))
    }

    /// Every server whose addresses are known: the file's, with the
    /// replicated directory's on top.
    pub fn address_book(&self, replicated: &Directory) -> Directory {
        let mut book: Directory =
            (0..self.members()).filter_map(|id| Some((id, self.addresses(id, replicated)?))).collect();
        book.extend(replicated);
        book
    }

    /// The Raft settings of node `id`; `seed` drives its election jitter. A
    /// node beyond the founders starts outside the configuration.
    pub fn raft_config(&self, id: NodeId, seed: u64) -> Config {
        let mut raft = Config::founded_by(id, self.initial_voters(), seed);
        raft.election_ticks = self.election_ticks;
        raft.heartbeat_ticks = self.heartbeat_ticks;
        raft.snapshot_trailing_entries = self.snapshots.trailing_entries;
        raft.snapshot_trailing_bytes = self.snapshots.trailing_mib << 20;
        if self.lease_reads {
            raft = raft.with_lease_reads(self.max_clock_drift_ppm as f64 / 1e6);
        }
        raft
    }

    pub fn server_config(&self, id: NodeId, seed: u64) -> ServerConfig {
        let mut config = ServerConfig::new(self.raft_config(id, seed));
        config.read_path = self.read_path;
        config.snapshots = self.snapshots.policy();
        config
    }

    /// The member whose client address is `addr`.
    pub fn id_of_client_addr(&self, addr: SocketAddr) -> Option<NodeId> {
        self.nodes.iter().position(|n| n.client == addr).map(|i| i as NodeId)
    }
}

#[cfg(test)]
mod address_book_tests {
    use super::*;

    #[test]
    fn the_replicated_directory_overrides_and_extends_the_file() {
        let file = ClusterConfig::local(3, 7100, 6379);
        let moved = Addresses { peer: "127.0.0.9:7000".parse().unwrap(), client: "127.0.0.9:6000".parse().unwrap() };
        let added = Addresses { peer: "127.0.0.8:7000".parse().unwrap(), client: "127.0.0.8:6000".parse().unwrap() };
        let replicated = Directory::from([(1, moved), (5, added)]);
        assert_eq!(file.addresses(1, &replicated), Some(moved));
        assert_eq!(file.addresses(5, &replicated), Some(added));
        assert_eq!(file.addresses(0, &replicated).map(|a| a.client), Some(file.nodes[0].client));
        assert_eq!(file.addresses(4, &replicated), None);
        let book = file.address_book(&replicated);
        assert_eq!(book.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2, 5]);
        assert_eq!(book[&1], moved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_config_round_trips_through_toml() {
        let config = ClusterConfig::local(3, 7100, 6379);
        config.validate().unwrap();
        let back: ClusterConfig = toml::from_str(&config.to_toml()).unwrap();
        assert_eq!(back, config);
        assert_eq!(config.node(2).unwrap().client.port(), 6381);
    }

    #[test]
    fn defaults_fill_in_omitted_settings() {
        let text = "[[nodes]]\npeer = \"127.0.0.1:1\"\nclient = \"127.0.0.1:2\"\n";
        let config: ClusterConfig = toml::from_str(text).unwrap();
        assert_eq!((config.tick_ms, config.election_ticks, config.heartbeat_ticks), (10, 30, 5));
        assert_eq!(config.snapshots, SnapshotSettings::default());
        assert_eq!(config.server_config(0, 0).snapshots, SnapshotPolicy::default());
        assert_eq!(
            (config.peer_silence(), config.heartbeat_interval()),
            (Duration::from_millis(150), Duration::from_millis(50))
        );
        config.validate().unwrap();
    }

    #[test]
    fn peer_silence_must_stay_below_the_minimum_election_timeout() {
        let set = |ms| ClusterConfig { peer_silence_ms: Some(ms), ..ClusterConfig::local(3, 7100, 6379) };
        assert_eq!(set(100).peer_silence(), Duration::from_millis(100));
        set(100).validate().unwrap();
        for bad in [0, 3, 300, 5_000] {
            let error = set(bad).validate().unwrap_err().to_string();
            assert!(error.contains("peer_silence_ms"), "{error}");
        }
    }

    #[test]
    fn refuses_duplicate_addresses_and_bad_sizes() {
        let mut config = ClusterConfig::local(3, 7100, 6379);
        config.nodes[1].client = config.nodes[0].peer;
        assert!(config.validate().unwrap_err().to_string().contains("used twice"));
        let empty = ClusterConfig { nodes: vec![], ..ClusterConfig::local(1, 1, 2) };
        assert!(empty.validate().is_err());
        let slow_heart = ClusterConfig { heartbeat_ticks: 100, ..ClusterConfig::local(3, 7100, 6379) };
        assert!(slow_heart.validate().is_err(), "heartbeats must come faster than elections");
        let none = ClusterConfig { initial_voters: Some(0), ..ClusterConfig::local(3, 7100, 6379) };
        assert!(none.validate().unwrap_err().to_string().contains("initial_voters"));
        let too_many = ClusterConfig { initial_voters: Some(4), ..ClusterConfig::local(3, 7100, 6379) };
        assert!(too_many.validate().is_err());
        let typo = "tick_ms = 10\nnodez = []\n";
        assert!(toml::from_str::<ClusterConfig>(typo).is_err(), "unknown fields are refused");
        let huge = ClusterConfig {
            snapshots: SnapshotSettings { trailing_entries: u64::MAX, ..SnapshotSettings::default() },
            ..ClusterConfig::local(3, 7100, 6379)
        };
        assert!(huge.validate().unwrap_err().to_string().contains("trailing_entries"));
        let huge = ClusterConfig {
            snapshots: SnapshotSettings { trailing_mib: 1 << 40, ..SnapshotSettings::default() },
            ..ClusterConfig::local(3, 7100, 6379)
        };
        assert!(huge.validate().unwrap_err().to_string().contains("trailing_mib"));
    }

    #[test]
    fn nodes_beyond_the_initial_voters_start_outside_the_configuration() {
        let text = "initial_voters = 2\n[[nodes]]\npeer = \"127.0.0.1:1\"\nclient = \"127.0.0.1:2\"\n\
                    [[nodes]]\npeer = \"127.0.0.1:3\"\nclient = \"127.0.0.1:4\"\n\
                    [[nodes]]\npeer = \"127.0.0.1:5\"\nclient = \"127.0.0.1:6\"\n";
        let config: ClusterConfig = toml::from_str(text).unwrap();
        config.validate().unwrap();
        assert_eq!((config.raft_config(0, 0).members, config.raft_config(1, 0).members), (2, 2));
        assert_eq!(config.raft_config(2, 0).members, 0, "node 2 joins later");
        let back: ClusterConfig = toml::from_str(&config.to_toml()).unwrap();
        assert_eq!(back, config);
        assert!(!ClusterConfig::local(3, 1, 10).to_toml().contains("initial_voters"), "absent unless set");
    }

    #[test]
    fn followers_write_inline_and_leaders_step_on_arrival_unless_told_not_to() {
        let nodes = "[[nodes]]\npeer = \"127.0.0.1:7100\"\nclient = \"127.0.0.1:6379\"\n";
        let default: ClusterConfig = toml::from_str(nodes).unwrap();
        assert!(default.followers_write_inline && default.leaders_step_on_arrival);
        let written = toml::to_string(&default).unwrap();
        assert!(!written.contains("followers_write_inline"), "the default is not written");
        assert!(!written.contains("leaders_step_on_arrival"), "the default is not written");
        let text = format!("followers_write_inline = false\nleaders_step_on_arrival = false\n{nodes}");
        let off: ClusterConfig = toml::from_str(&text).unwrap();
        assert!(!off.followers_write_inline && !off.leaders_step_on_arrival);
        let again: ClusterConfig = toml::from_str(&toml::to_string(&off).unwrap()).unwrap();
        assert!(!again.followers_write_inline && !again.leaders_step_on_arrival, "written and read back");
    }

    #[test]
    fn lease_reads_take_their_length_from_the_drift_bound() {
        let nodes = "[[nodes]]\npeer = \"127.0.0.1:1\"\nclient = \"127.0.0.1:2\"\n";
        let off: ClusterConfig = toml::from_str(nodes).unwrap();
        assert_eq!((off.lease_reads, off.raft_config(0, 0).lease_ticks), (false, 0));
        let on: ClusterConfig = toml::from_str(&format!("lease_reads = true\n{nodes}")).unwrap();
        on.validate().unwrap();
        assert_eq!(on.raft_config(0, 0).lease_ticks, 25, "30 ticks at 5%: 29 · 0.95 / 1.05 = 26.2, less one");
        let tight: ClusterConfig =
            toml::from_str(&format!("lease_reads = true\nmax_clock_drift_ppm = 1000\n{nodes}")).unwrap();
        assert_eq!(tight.raft_config(0, 0).lease_ticks, 27);
        for drift in [900_000, 1_000_000, u64::MAX] {
            let bad = ClusterConfig { lease_reads: true, max_clock_drift_ppm: drift, ..on.clone() };
            let error = bad.validate().unwrap_err().to_string();
            assert!(error.contains("leaves a lease of no ticks"), "{drift}: {error}");
        }
    }

    #[test]
    fn snapshot_settings_parse_partially_and_zero_means_never() {
        let nodes = "[[nodes]]\npeer = \"127.0.0.1:1\"\nclient = \"127.0.0.1:2\"\n";
        let text = format!("[snapshots]\nevery_entries = 100\n{nodes}");
        let config: ClusterConfig = toml::from_str(&text).unwrap();
        let server = config.server_config(0, 0);
        assert_eq!(server.snapshots, SnapshotPolicy { every_entries: Some(100), every_bytes: Some(64 << 20) });
        assert_eq!(server.raft.snapshot_trailing_entries, SnapshotSettings::default().trailing_entries);
        assert_eq!(server.raft.snapshot_trailing_bytes, 64 << 20);

        let text =
            format!("[snapshots]\nevery_entries = 0\nevery_mib = 0\ntrailing_entries = 3\ntrailing_mib = 1\n{nodes}");
        let config: ClusterConfig = toml::from_str(&text).unwrap();
        assert_eq!(config.server_config(0, 0).snapshots, SnapshotPolicy::NEVER);
        assert_eq!(config.server_config(0, 0).raft.snapshot_trailing_entries, 3);
        assert_eq!(config.server_config(0, 0).raft.snapshot_trailing_bytes, 1 << 20);

        let typo = format!("[snapshots]\nevery_entrys = 5\n{nodes}");
        assert!(toml::from_str::<ClusterConfig>(&typo).is_err(), "unknown fields are refused");
    }

    #[test]
    fn a_relative_certificate_directory_is_taken_from_the_config_file() {
        let dir = crate::server::tempdir::TempDir::new("config-tls").unwrap();
        let nodes = "[[nodes]]\npeer = \"127.0.0.1:1\"\nclient = \"127.0.0.1:2\"\n";
        let path = dir.path().join("cluster.toml");
        std::fs::write(&path, format!("[tls]\ndir = \"certs\"\n{nodes}")).unwrap();
        let tls = ClusterConfig::load(&path).unwrap().tls.unwrap();
        assert_eq!((tls.dir, tls.clients), (dir.path().join("certs"), false));
        std::fs::write(&path, format!("[tls]\ndir = \"/etc/raftkv\"\nclients = true\n{nodes}")).unwrap();
        let tls = ClusterConfig::load(&path).unwrap().tls.unwrap();
        assert_eq!((tls.dir, tls.clients), (PathBuf::from("/etc/raftkv"), true));
        assert!(!ClusterConfig::local(3, 1, 10).to_toml().contains("tls"), "absent unless set");
    }
}
