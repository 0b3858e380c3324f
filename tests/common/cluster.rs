//! Real `raftkv server` processes for the end-to-end tests (`tests/e2e.rs`,
//! `tests/faults.rs`): a cluster on free ports of 127.0.0.1 in a temporary
//! directory, signals, restarts, and waits bounded by [`PATIENCE`]. Every
//! process a `TestCluster` starts is killed when it drops, also when the
//! test fails (then the logs are printed and the directory kept).
#![allow(dead_code)] // each test file uses a different part

use raftkv::lincheck::{self, Budget, History};
use raftkv::server::client::{info, Access};
use raftkv::server::config::ClusterConfig;
use raftkv::server::load::{ClientRecord, LoadSpec, Mix, Progress, System};
use raftkv::server::tempdir::TempDir;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Generous bound on any wait: exceeding it fails the test instead of
/// hanging CI. Nothing is expected to come close.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub struct TestCluster {
    /// The tag it was started with (names its directory and failure files).
    pub name: String,
    pub config: ClusterConfig,
    pub config_path: PathBuf,
    pub root: TempDir,
    children: Vec<Option<Child>>,
    /// Extra environment for the next start of each node.
    env: Vec<Vec<(String, String)>>,
    /// A command each node runs under (e.g. `ip netns exec NS`).
    wrap: Vec<Vec<String>>,
    /// Extra `raftkv server` arguments per node (e.g. `--route`).
    args: Vec<Vec<String>>,
    /// How clients reach the nodes (TLS after [`TestCluster::enable_tls`]).
    pub access: Access,
    /// The client addresses of nodes the config file does not list
    /// ([`TestCluster::add_unlisted`]), ids from `config.nodes.len()` up.
    unlisted: Vec<SocketAddr>,
}

/// Ports below the kernel's ephemeral range (32768–60999 here, see
/// `/proc/sys/net/ipv4/ip_local_port_range`) that only these tests hand
/// out: clear of CI's smoke cluster (16379 and 17379 up) and the
/// benchmarks' fixed ports (22379 and up).
const TEST_PORTS: std::ops::Range<u16> = 10_000..16_000;

/// Free ports on 127.0.0.1 for servers to listen on. Not from the
/// ephemeral range: a port the kernel chose for `bind(0)` and that was
/// then released can be taken by any outgoing connection (the peer links
/// of a test running beside this one) before the server binds it, which
/// made a CI run fail with "Address already in use". Ports outside that
/// range are only ever taken by listeners, and every listener of these
/// tests gets its port here: a process-wide counter (starting at an offset
/// derived from the process id, so that two test binaries started together
/// are unlikely to overlap) walks the range, skipping ports someone holds.
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let _ =
        NEXT.compare_exchange(u32::MAX, std::process::id().wrapping_mul(97) % span, Ordering::SeqCst, Ordering::SeqCst);
    let mut ports = Vec::with_capacity(n);
    for _ in 0..span {
        if ports.len() == n {
            break;
        }
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % span;
        let port = TEST_PORTS.start + u16::try_from(offset).unwrap();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    assert_eq!(ports.len(), n, "no {n} free ports in {TEST_PORTS:?}");
    ports
}

/// `n` consecutive free ports (for `raftkv cluster --port P`, whose node
/// `i` listens on `P + i`); the first.
pub fn free_port_run(n: usize) -> u16 {
    for _ in 0..100 {
        let ports = free_ports(n);
        if ports.windows(2).all(|w| w[1] == w[0] + 1) {
            return ports[0];
        }
    }
    panic!("no {n} consecutive free ports in {TEST_PORTS:?}")
}

impl TestCluster {
    /// A cluster of `n` nodes, all started.
    pub fn start(tag: &str, n: u8) -> TestCluster {
        let mut cluster = TestCluster::configure(tag, n);
        cluster.start_all();
        cluster
    }

    /// A cluster of `n` nodes, none started yet (set their environment
    /// first with [`TestCluster::set_env`]).
    pub fn configure(tag: &str, n: u8) -> TestCluster {
        TestCluster::configure_with(tag, n, |_| {})
    }

    /// Like [`TestCluster::configure`], with `edit` applied to the config
    /// before it is written.
    pub fn configure_with(tag: &str, n: u8, edit: impl FnOnce(&mut ClusterConfig)) -> TestCluster {
        let ports = free_ports(2 * usize::from(n));
        let mut config = ClusterConfig::local(n, 0, 0);
        edit(&mut config);
        for (i, node) in config.nodes.iter_mut().enumerate() {
            node.peer.set_port(ports[2 * i]);
            node.client.set_port(ports[2 * i + 1]);
        }
        let root = TempDir::new(&format!("e2e-{tag}")).unwrap();
        let config_path = root.path().join("cluster.toml");
        std::fs::write(&config_path, config.to_toml()).unwrap();
        let nodes = usize::from(n);
        TestCluster {
            name: tag.to_owned(),
            config,
            config_path,
            root,
            children: (0..nodes).map(|_| None).collect(),
            env: vec![Vec::new(); nodes],
            wrap: vec![Vec::new(); nodes],
            args: vec![Vec::new(); nodes],
            access: Access::plain(),
            unlisted: Vec::new(),
        }
    }

    /// A node the config file does not list, not started: the next id,
    /// with free ports of its own. It starts with `--join` (outside the
    /// configuration), `--peer-addr`, `--client-addr` and `--join via`
    /// (a running member's client address), from which it fetches the
    /// address book. Returns its id and its (peer, client) addresses.
    pub fn add_unlisted(&mut self, via: SocketAddr) -> (u8, SocketAddr, SocketAddr) {
        let id = self.children.len() as u8;
        let ports = free_ports(2);
        let (peer, client) =
            (SocketAddr::from(([127, 0, 0, 1], ports[0])), SocketAddr::from(([127, 0, 0, 1], ports[1])));
        let via = via.to_string();
        self.children.push(None);
        self.env.push(Vec::new());
        self.wrap.push(Vec::new());
        let args = ["--peer-addr", &peer.to_string(), "--client-addr", &client.to_string(), "--join", &via];
        self.args.push(args.iter().map(|a| a.to_string()).collect());
        self.unlisted.push(client);
        (id, peer, client)
    }

    /// Turns TLS on (before the nodes start): certificates issued into
    /// `certs/` of the cluster's directory, both ports.
    pub fn enable_tls(&mut self) {
        use raftkv::server::tls;
        let dir = self.root.path().join("certs");
        tls::issue(&dir, 0..self.config.members(), &[], tls::NODE_CERT_DAYS_DEFAULT).unwrap();
        self.access = Access::tls(&dir.join(tls::CA_CERT)).unwrap();
        self.config.tls = Some(raftkv::server::config::TlsSettings { dir, clients: true });
        std::fs::write(&self.config_path, self.config.to_toml()).unwrap();
    }

    /// Moves node `id` (not started yet) to address `ip` (same ports),
    /// run under the command `wrap` (e.g. `ip netns exec NS`).
    pub fn place(&mut self, id: u8, ip: std::net::IpAddr, wrap: Vec<String>) {
        let node = &mut self.config.nodes[usize::from(id)];
        node.peer.set_ip(ip);
        node.client.set_ip(ip);
        std::fs::write(&self.config_path, self.config.to_toml()).unwrap();
        self.wrap[usize::from(id)] = wrap;
    }

    pub fn start_all(&mut self) {
        for id in 0..self.children.len() as u8 {
            self.restart(id);
        }
    }

    fn spawn(&self, id: u8) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.path().join(format!("node-{id}.log")))
            .unwrap();
        let wrap = &self.wrap[usize::from(id)];
        let mut command = match wrap.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_raftkv"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_raftkv")),
        };
        command
            .args(["server", "--id", &id.to_string(), "--config"])
            .arg(&self.config_path)
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .arg("--exit-with-parent")
            .args(&self.args[usize::from(id)])
            .env("RUST_LOG", "info")
            .envs(self.env[usize::from(id)].iter().map(|(k, v)| (k, v)))
            // Closed when this test process dies, however it dies: the
            // server then stops.
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Every node's client address, by id (the unlisted ones last).
    pub fn clients(&self) -> Vec<SocketAddr> {
        self.config.nodes.iter().map(|n| n.client).chain(self.unlisted.iter().copied()).collect()
    }

    pub fn kill9(&mut self, id: u8) {
        let mut child = self.children[usize::from(id)].take().expect("node is running");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    pub fn restart(&mut self, id: u8) {
        assert!(self.children[usize::from(id)].is_none());
        let child = self.spawn(id);
        self.children[usize::from(id)] = Some(child);
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: u8) -> PathBuf {
        self.root.path().join(format!("node-{id}"))
    }

    /// Deletes the data of stopped node `id`, as a replaced disk would.
    pub fn wipe(&self, id: u8) {
        assert!(self.children[usize::from(id)].is_none(), "wipe a stopped node");
        std::fs::remove_dir_all(self.data_dir(id)).unwrap();
    }

    pub fn signal(&self, id: u8, signal: &str) {
        let pid = self.children[usize::from(id)].as_ref().expect("node is running").id();
        let status = Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Extra `raftkv server` arguments for node `id`'s next starts.
    pub fn set_args(&mut self, id: u8, args: Vec<String>) {
        self.args[usize::from(id)] = args;
    }

    /// Sets environment variables for node `id`'s next start (and clears
    /// what was set before).
    pub fn set_env(&mut self, id: u8, vars: &[(&str, &str)]) {
        self.env[usize::from(id)] = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    }

    /// Waits (at most [`PATIENCE`]) for node `id` to exit on its own, and
    /// returns how it exited.
    pub fn wait_exit(&mut self, id: u8) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        let child = self.children[usize::from(id)].as_mut().expect("node is running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.children[usize::from(id)] = None;
                return status;
            }
            assert!(Instant::now() < deadline, "node {id} did not exit within {PATIENCE:?}");
            std::thread::sleep(Duration::from_millis(10)); // polling a child process, not synchronising
        }
    }

    /// Node `id`'s whole log.
    pub fn log_of(&self, id: u8) -> String {
        std::fs::read_to_string(self.root.path().join(format!("node-{id}.log"))).unwrap_or_default()
    }

    /// The logs of every node, for a failure message.
    pub fn logs(&self) -> String {
        (0..self.children.len())
            .map(|id| {
                let path = self.root.path().join(format!("node-{id}.log"));
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                format!("--- node {id} (last lines)\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            // A paused process dies of SIGKILL too.
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
            self.root.keep();
            eprintln!("data and logs kept in {}", self.root.path().display());
        }
    }
}

/// One `INFO` field of node `addr`, if it answers.
pub async fn info_field(addr: SocketAddr, field: &str) -> Option<String> {
    let text = info(addr, &Access::plain(), Duration::from_millis(500)).await.ok()?;
    raftkv::server::client::info_field(&text, field).map(str::to_string)
}

/// One numeric `INFO` field of node `addr`, if it answers.
pub async fn info_u64(addr: SocketAddr, field: &str) -> Option<u64> {
    info_field(addr, field).await.and_then(|v| v.parse().ok())
}

/// Waits until `cond` holds, checking every 10 ms, or panics after
/// [`PATIENCE`] with `what`.
pub async fn until<F: std::future::Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
    let deadline = Instant::now() + PATIENCE;
    let mut every = tokio::time::interval(Duration::from_millis(10));
    while !cond().await {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        every.tick().await;
    }
}

/// The node that says it leads, once one does.
pub async fn leader(cluster: &TestCluster) -> u8 {
    leader_among(&cluster.clients(), &cluster.access).await
}

/// The server (by index in `clients`) that says it leads, once one does.
pub async fn leader_among(clients: &[SocketAddr], access: &Access) -> u8 {
    let deadline = Instant::now() + PATIENCE;
    let mut every = tokio::time::interval(Duration::from_millis(10));
    loop {
        for (id, &addr) in clients.iter().enumerate() {
            let Ok(text) = info(addr, access, Duration::from_millis(500)).await else { continue };
            if raftkv::server::client::info_field(&text, "raft_role") == Some("Leader") {
                return id as u8;
            }
        }
        assert!(Instant::now() < deadline, "gave up waiting for a leader");
        every.tick().await;
    }
}

/// Under load: SIGKILLs whoever leads, lets the others complete `ops`
/// operations, restarts it, waits for `ops` more; returns its id.
pub async fn kill9_leader_and_restart(cluster: &mut TestCluster, progress: &Progress, ops: u64) -> u8 {
    let killed = leader(cluster).await;
    cluster.kill9(killed);
    after_more_ops(progress, ops).await;
    cluster.restart(killed);
    after_more_ops(progress, ops).await;
    killed
}

pub async fn after_more_ops(progress: &Progress, more: u64) {
    let target = progress.completed.load(Ordering::Relaxed) + more;
    until(&format!("{more} more operations"), || async { progress.completed.load(Ordering::Relaxed) >= target }).await;
}

/// The load of these tests: 4 clients appending to 3 keys (so that every
/// acknowledged append can be looked for in the final values), seeded.
pub fn appends_load(servers: Vec<std::net::SocketAddr>, seed: u64) -> LoadSpec {
    LoadSpec {
        servers,
        clients: 4,
        mix: Mix::Appends,
        keys: 3,
        rotate_keys_every: None,
        key_bytes: 8,
        value_bytes: 16,
        seed,
        op_timeout: Duration::from_secs(10),
        attempt_timeout: Duration::from_millis(500),
        access: Access::plain(),
        system: System::Raftkv,
    }
}

/// Reads every key back and checks the whole history: every acknowledged
/// append in the final value exactly once, and linearizable
/// (`load::read_back_and_check`). Writes the history to a file and fails
/// with its path otherwise.
pub async fn check_history(cluster: &TestCluster, records: &[ClientRecord], epoch: Instant, keys: usize) -> History {
    let mut spec = appends_load(cluster.clients(), 0);
    spec.keys = keys as u64;
    spec.access = cluster.access.clone();
    let ops = records.iter().flat_map(|r| r.history.iter().cloned()).collect();
    match raftkv::server::load::read_back_and_check(&spec, ops, epoch, PATIENCE).await {
        Ok(history) => history,
        Err(failure) => panic!("{}; {}", failure.message, save_failure(&cluster.name, &failure.history)),
    }
}

/// Writes a failing test's history and its HTML timeline where `cargo test`
/// keeps test output (`target/tmp/failures/<name>-<pid>.history.json` and
/// `.html`), and says where.
pub fn save_failure(name: &str, history: &History) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("failures");
    let path = dir.join(format!("{name}-{}.history.json", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, history.to_json())) {
        return format!("could not write the history: {e}");
    }
    let verdict = lincheck::check(history, Budget::steps(Budget::DEFAULT_MAX_STEPS));
    let html = raftkv::server::timeline::beside(&path);
    match raftkv::server::timeline::write(&html, &path.display().to_string(), history, &verdict) {
        Ok(()) => format!("history written to {}, timeline to {}", path.display(), html.display()),
        Err(e) => format!("history written to {}; could not draw it: {e}", path.display()),
    }
}

/// What the nemesis's random schedule does to the servers.
impl raftkv::server::nemesis::Processes for TestCluster {
    fn kill9(&mut self, id: u8) -> Result<(), String> {
        TestCluster::kill9(self, id);
        Ok(())
    }

    fn restart(&mut self, id: u8) -> Result<(), String> {
        TestCluster::restart(self, id);
        Ok(())
    }

    fn signal(&self, id: u8, signal: &str) -> Result<(), String> {
        TestCluster::signal(self, id, signal);
        Ok(())
    }
}
