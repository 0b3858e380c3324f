//! End-to-end: `raftkv-models explore` serves the Stateright Explorer over
//! HTTP on 127.0.0.1, with the model's properties in `/.status`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Kills the server when the test ends, also on failure.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

#[test]
fn explorer_serves_the_ui_and_the_properties() {
    // An ephemeral port: the OS picks one free now; the server binds it next.
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port();
    let child = Command::new(env!("CARGO_BIN_EXE_raftkv-models"))
        .args(["explore", "--addr", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .spawn()
        .expect("start raftkv-models explore");
    let _server = Server(child);

    // The server needs a moment to bind: retry the connection, boundedly.
    let mut index = Err(std::io::Error::other("not tried"));
    for _ in 0..200 {
        index = get(port, "/");
        if index.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let index = index.expect("the Explorer answers on its port");
    assert!(index.starts_with("HTTP/1.1 200"), "{index}");
    assert!(index.to_lowercase().contains("<html"), "the UI page: {index}");

    let status = get(port, "/.status").unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    for property in ["election safety", "linearizable", "leader elected"] {
        assert!(status.contains(property), "/.status lacks {property}: {status}");
    }
}

/// The Explorer shows each server's snapshot index: on the snapshot model,
/// the states after `schedule::SNAPSHOT_INSTALL` (the leader and the
/// follower that installed its snapshot, crashed and restarted both hold
/// the snapshot up to index 2) render it, in a summary line per server
/// and as `snapshot_index`.
#[test]
fn explorer_shows_each_servers_snapshot_index() {
    use raftkv_models::schedule::{action_indices, SNAPSHOT_INSTALL};
    use raftkv_models::{model, ModelConfig};

    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port();
    // The command-line form of `ModelConfig::ci_snapshots()`.
    let args =
        "--ordered --crashes 1 --servers-crash-only --max-term 1 --max-log 2 --max-in-flight 5 --snapshot-every 2";
    let child = Command::new(env!("CARGO_BIN_EXE_raftkv-models"))
        .args(["explore", "--addr", &format!("127.0.0.1:{port}")])
        .args(args.split_whitespace())
        .stdout(Stdio::null())
        .spawn()
        .expect("start raftkv-models explore");
    let _server = Server(child);

    let indices = action_indices(&model(ModelConfig::ci_snapshots()), SNAPSHOT_INSTALL).expect("the schedule runs");
    let path: Vec<String> = indices.iter().map(|i| i.to_string()).collect();
    let url = format!("/.states/{}", path.join("/"));
    let mut states = Err(std::io::Error::other("not tried"));
    for _ in 0..200 {
        states = get(port, &url);
        if states.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let states = states.expect("the Explorer answers on its port");
    assert!(states.starts_with("HTTP/1.1 200"), "{states}");
    // Every next state shows three servers; servers 0 and 2 hold the
    // snapshot up to 2, server 1 none (it has not applied index 2 yet).
    assert!(states.contains("snapshot_index: 2"), "no server shows snapshot index 2: {states}");
    assert!(states.contains("snapshot_index: 0"), "server 1 shows no snapshot index: {states}");
    assert!(states.contains("snapshot 2, log 3..=2"), "no summary line with the snapshot: {states}");
    // Readable: a server is its vote, its log as `index/term entry` and
    // what is durable, not a dump of its configuration and bug flags;
    // actions are one short line each.
    assert!(states.contains("vote: ") && states.contains("log: [") && states.contains("durable: "), "{states}");
    for noise in ["commit_previous_term", "election_timeout", "Envelope {", "ServerConfig"] {
        assert!(!states.contains(noise), "a state or action still shows {noise:?}: {states}");
    }
    std::fs::write(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("explorer-states.json"), &states).unwrap();
}
