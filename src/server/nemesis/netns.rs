//! Real network partitions for real processes: each server in its own
//! network namespace, joined by veth pairs to a bridge in the test's own
//! namespace (where the clients run), and cut apart by nftables rules inside
//! the servers' namespaces that match only traffic between servers, so a
//! cut-off server stays reachable by clients.
//!
//! Needs root, `ip` and `nft`; [`Netns::create`] says why not otherwise
//! (a test skips with that message, `raftkv nemesis` exits with it). Every
//! namespace, link and rule it creates is removed when the `Netns` drops,
//! also when a test fails. Names carry the process id; namespaces left by
//! a process that no longer exists (killed before it could clean up) are
//! removed on creation. Addresses are in 10.213.0.0/16, a /24 per process.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

pub struct Netns {
    bridge: String,
    namespaces: Vec<String>,
    subnet: u8,
    /// One `Netns` per process at a time (names and subnet derive from the
    /// process id): tests of one binary that need one take turns.
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// Which way a cut drops packets, seen from the server it is applied to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// Nothing in, nothing out.
    Both,
    /// It receives, but nothing it sends arrives.
    CannotSend,
}

const PREFIX: &str = "rkv";

fn run(args: &[&str]) -> Result<(), String> {
    let output = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args[0]))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

impl Netns {
    /// Whether this process can make namespaces and cuts: root, with `ip`
    /// and `nft` installed; if not, why not.
    pub fn available() -> Result<(), String> {
        // /proc/self belongs to the process's effective user.
        let euid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").map_err(|e| e.to_string())?);
        if euid != 0 {
            return Err("needs root (network namespaces and nftables)".into());
        }
        for tool in ["ip", "nft"] {
            if Command::new(tool).arg("-V").output().is_err() {
                return Err(format!("`{tool}` is not installed (apt-get install iproute2 nftables)"));
            }
        }
        Ok(())
    }

    /// `n` namespaces on one bridge, with nftables tables ready for cuts.
    pub fn create(n: u8) -> Result<Netns, String> {
        Netns::available()?;
        static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        remove_leftovers();
        let pid = std::process::id();
        let net = Netns {
            bridge: format!("{PREFIX}b{pid}"),
            namespaces: (0..n).map(|i| format!("{PREFIX}-{pid}-{i}")).collect(),
            subnet: free_subnet(pid),
            _turn: turn,
        };
        net.build().map(|()| net)
    }

    fn build(&self) -> Result<(), String> {
        let s = self.subnet;
        run(&["ip", "link", "add", &self.bridge, "type", "bridge"])?;
        run(&["ip", "addr", "add", &format!("10.213.{s}.1/24"), "dev", &self.bridge])?;
        run(&["ip", "link", "set", &self.bridge, "up"])?;
        for (i, ns) in self.namespaces.iter().enumerate() {
            let host = format!("{}v{i}", self.bridge);
            run(&["ip", "netns", "add", ns])?;
            run(&["ip", "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", ns])?;
            run(&["ip", "link", "set", &host, "master", &self.bridge, "up"])?;
            run(&["ip", "-n", ns, "addr", "add", &format!("{}/24", self.addr(i as u8)), "dev", "eth0"])?;
            run(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
            let rules = "add table inet cut\n\
                 add chain inet cut in { type filter hook input priority 0; }\n\
                 add chain inet cut out { type filter hook output priority 0; }\n";
            nft(ns, rules)?;
        }
        Ok(())
    }

    /// Server `i`'s address.
    pub fn addr(&self, i: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 213, self.subnet, 10 + i))
    }

    /// The command prefix that runs a program in server `i`'s namespace.
    pub fn exec_prefix(&self, i: u8) -> Vec<String> {
        ["ip", "netns", "exec", &self.namespaces[usize::from(i)]].map(String::from).to_vec()
    }

    /// Cuts server `i` off from server `j`, `way` as seen from `i`.
    pub fn cut(&self, i: u8, j: u8, way: Way) -> Result<(), String> {
        let (ns, peer) = (&self.namespaces[usize::from(i)], self.addr(j));
        let mut rules = format!("add rule inet cut out ip daddr {peer} drop\n");
        if way == Way::Both {
            rules += &format!("add rule inet cut in ip saddr {peer} drop\n");
        }
        nft(ns, &rules)
    }

    /// Cuts server `i` off from every other server, `way` as seen from `i`.
    pub fn isolate(&self, i: u8, way: Way) -> Result<(), String> {
        (0..self.namespaces.len() as u8).filter(|&j| j != i).try_for_each(|j| self.cut(i, j, way))
    }

    /// Removes every cut.
    pub fn heal(&self) -> Result<(), String> {
        self.namespaces.iter().try_for_each(|ns| nft(ns, "flush chain inet cut in\nflush chain inet cut out\n"))
    }
}

/// A /24 of 10.213.0.0/16 that no interface uses yet, starting from one
/// derived from `pid` (two test processes at once, CI's and a long run's,
/// must not share one).
fn free_subnet(pid: u32) -> u8 {
    let output = Command::new("ip").args(["-o", "-4", "addr", "show"]).output();
    let used = output.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    (0..250u32).map(|i| ((pid + i) % 250) as u8).find(|s| !used.contains(&format!(" 10.213.{s}."))).unwrap_or(0)
}

fn nft(ns: &str, rules: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    child.stdin.take().unwrap().write_all(rules.as_bytes()).map_err(|e| format!("nft: {e}"))?;
    let output = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("nft in {ns} failed on {rules:?}: {}", String::from_utf8_lossy(&output.stderr).trim()))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end of a veth pair deletes both at once; a deleted
        // namespace's own links go only when the kernel gets round to it.
        // Its nftables tables go with it.
        for (i, ns) in self.namespaces.iter().enumerate() {
            let _ = run(&["ip", "link", "del", &format!("{}v{i}", self.bridge)]);
            let _ = run(&["ip", "netns", "del", ns]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge]);
    }
}

/// Removes the namespaces, bridges and veth pairs of test processes that
/// are gone.
fn remove_leftovers() {
    let gone = |pid: &str| !std::path::Path::new(&format!("/proc/{pid}")).exists();
    let listing = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    for name in listing(&["netns", "list"]).lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name.strip_prefix(&format!("{PREFIX}-")).and_then(|r| r.split('-').next()) else { continue };
        if gone(pid) {
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
    // `ip -o link` lines read "27: rkvb123v1@if2: <...>": links named
    // rkvb<pid> (bridges) and rkvb<pid>v<i> (veth ends).
    for line in listing(&["-o", "link", "show"]).lines() {
        let Some(name) = line.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n)) else { continue };
        let Some(rest) = name.strip_prefix(&format!("{PREFIX}b")) else { continue };
        let pid = rest.split('v').next().unwrap_or(rest);
        if !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()) && gone(pid) {
            let _ = run(&["ip", "link", "del", name]);
        }
    }
}
