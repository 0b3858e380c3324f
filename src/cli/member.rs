//! `raftkv member list|add|promote|remove` and `raftkv transfer-leader`:
//! the operator's commands, sent to the leader (`RAFTKV.MEMBER`,
//! `RAFTKV.TRANSFER`; `specs/client.md`). `member add` is two of them: add
//! as a learner, then promote once caught up.

use raftkv::server::client::{operator, Access};
use raftkv::server::resp::ClientCommand;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// Runs `commands` in order, each within `timeout`; stops at the first
/// that fails.
pub fn run(servers: Vec<SocketAddr>, access: Access, commands: Vec<ClientCommand>, timeout: Duration) -> ExitCode {
    if servers.is_empty() {
        eprintln!("error: no servers given");
        return ExitCode::from(2);
    }
    let runtime = super::runtime();
    runtime.block_on(async move {
        for command in commands {
            match operator(&servers, &access, &command, tokio::time::Instant::now() + timeout).await {
                Ok(text) => println!("{}", text.trim_end()),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        ExitCode::SUCCESS
    })
}
