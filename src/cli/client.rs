//! `raftkv put|append|get|del|setnx`: one operation through the project's
//! clerk, which follows leader redirects and retries with the same
//! `(client, seq)`.

use raftkv::kv::Op;
use raftkv::server::client::{random_client_id, Access, RemoteClerk};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

pub fn run(servers: Vec<SocketAddr>, access: Access, op: Op, timeout: Duration) -> ExitCode {
    if servers.is_empty() {
        eprintln!("error: no servers given");
        return ExitCode::from(2);
    }
    // Put and Append print OK; the others print the state machine's reply
    // (a value, or 1/0).
    let prints_reply = !matches!(op, Op::Put { .. } | Op::Append { .. });
    let runtime = super::runtime();
    let result = runtime.block_on(async move {
        let mut clerk = RemoteClerk::new(random_client_id(), servers, 0, Duration::from_secs(1)).with_access(access);
        clerk.run(op, tokio::time::Instant::now() + timeout).await
    });
    match result {
        Ok(value) => {
            println!("{}", if prints_reply { value } else { "OK".to_string() });
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
