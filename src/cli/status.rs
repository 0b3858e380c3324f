//! `raftkv status`: every server's view of the cluster, from its `INFO`,
//! like `etcdctl endpoint status`: id, address, role, term, leader, commit
//! and applied index, the log it holds, its snapshot, the members, and how
//! far each follower's log lags behind the leader's (from the leader's own
//! view: `raft_matched`).

use raftkv::server::client::{info, info_field, Access};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// Asks every server at once, each within `timeout`; prints one row per
/// server. Fails (exit 1) if any server did not answer, after printing
/// what the others said.
pub fn run(servers: Vec<SocketAddr>, access: Access, timeout: Duration) -> ExitCode {
    let runtime = super::runtime();
    let answers = runtime.block_on(async {
        let asks: Vec<_> = servers
            .iter()
            .map(|&addr| {
                let access = access.clone();
                tokio::spawn(async move { info(addr, &access, timeout).await.map_err(|e| e.to_string()) })
            })
            .collect();
        let mut answers = Vec::with_capacity(asks.len());
        for ask in asks {
            answers.push(ask.await.unwrap_or_else(|e| Err(e.to_string())));
        }
        answers
    });
    let all_answered = answers.iter().all(Result::is_ok);
    print!("{}", table(&servers, &answers));
    if all_answered {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

const COLUMNS: [&str; 12] =
    ["ID", "ADDRESS", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LOG", "SNAPSHOT", "VOTERS", "LEARNERS", "LAG"];

/// The table for `answers` (each server's `INFO` text, or why it gave
/// none), columns aligned.
fn table(servers: &[SocketAddr], answers: &[Result<String, String>]) -> String {
    // The leader of the newest term anyone reports tells each member's lag.
    let newest_leader = answers
        .iter()
        .flatten()
        .filter(|text| info_field(text, "raft_role") == Some("Leader"))
        .max_by_key(|text| info_field(text, "raft_term").and_then(|t| t.parse::<u64>().ok()));
    let lag_of = |id: &str| -> String {
        let Some(leader) = newest_leader else { return "?".into() };
        if info_field(leader, "raft_id") == Some(id) {
            return "leader".into();
        }
        let last = info_field(leader, "raft_last_index").and_then(|v| v.parse::<u64>().ok());
        let matched = info_field(leader, "raft_matched").unwrap_or("").split(',').find_map(|pair| {
            let (who, index) = pair.split_once('=')?;
            (who == id).then(|| index.parse::<u64>().ok()).flatten()
        });
        match (last, matched) {
            (Some(last), Some(matched)) => last.saturating_sub(matched).to_string(),
            _ => "?".into(),
        }
    };

    let mut rows: Vec<Vec<String>> = vec![COLUMNS.iter().map(|c| c.to_string()).collect()];
    for (addr, answer) in servers.iter().zip(answers) {
        let text = match answer {
            Ok(text) => text,
            Err(e) => {
                rows.push(vec!["?".into(), addr.to_string(), format!("unreachable: {e}")]);
                continue;
            }
        };
        let field = |name: &str| info_field(text, name).unwrap_or("?").to_string();
        let id = field("raft_id");
        let log = format!("{}..{}", field("raft_first_index"), field("raft_last_index"));
        rows.push(vec![
            id.clone(),
            addr.to_string(),
            field("raft_role"),
            field("raft_term"),
            field("raft_leader"),
            field("raft_commit_index"),
            field("raft_applied_index"),
            log,
            field("raft_snapshot_index"),
            field("raft_voters"),
            field("raft_learners"),
            lag_of(&id),
        ]);
    }
    let widths: Vec<usize> =
        // An unreachable server's row ends in its error, which sets no width.
        (0..COLUMNS.len())
            .map(|c| rows.iter().filter(|r| r.len() > c + 1).map(|r| r[c].len()).max().unwrap_or(0))
            .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, &w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info_text(id: u8, role: &str, term: u64, last: u64, matched: &str) -> String {
        format!(
            "# Raft\r\nraft_id:{id}\r\nraft_role:{role}\r\nraft_term:{term}\r\nraft_leader:0\r\n\
             raft_commit_index:{last}\r\nraft_last_index:{last}\r\nraft_applied_index:{last}\r\n\
             raft_first_index:1\r\nraft_snapshot_index:0\r\nraft_voters:0,1,2\r\nraft_learners:\r\n\
             raft_matched:{matched}\r\n"
        )
    }

    #[test]
    fn the_newest_leader_tells_how_far_each_follower_lags() {
        let servers: Vec<SocketAddr> = (0..4).map(|i| SocketAddr::from(([127, 0, 0, 1], 6379 + i))).collect();
        let answers = vec![
            Ok(info_text(0, "Leader", 3, 120, "1=120,2=97")),
            Ok(info_text(1, "Follower", 3, 120, "")),
            // A deposed leader of an older term does not count.
            Ok(info_text(2, "Leader", 2, 97, "0=90,1=90")),
            Err("connection refused".to_string()),
        ];
        let out = table(&servers, &answers);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("ID  ADDRESS"), "{out}");
        assert!(lines[1].ends_with("leader"), "{out}");
        assert!(lines[2].ends_with(" 0"), "{out}");
        assert!(lines[3].ends_with(" 23"), "{out}");
        assert!(lines[4].contains("unreachable: connection refused"), "{out}");
        assert!(lines[1].contains("1..120"), "{out}");
    }
}
