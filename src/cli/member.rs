//! `raftkv member list|add|promote|remove` and `raftkv transfer-leader`:
//! the operator's commands, sent to the leader (`RAFTKV.MEMBER`,
//! `RAFTKV.TRANSFER`; `specs/client.md`).

use raftkv::server::client::operator;
use raftkv::server::resp::ClientCommand;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

pub fn run(servers: Vec<SocketAddr>, command: ClientCommand, timeout: Duration) -> ExitCode {
    if servers.is_empty() {
        eprintln!("error: no servers given");
        return ExitCode::from(2);
    }
    let runtime = super::runtime();
    let result =
        runtime.block_on(async move { operator(&servers, &command, tokio::time::Instant::now() + timeout).await });
    match result {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
