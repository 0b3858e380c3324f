//! `raftkv bench`: closed-loop clients against a running cluster for a
//! while; reports throughput and latency percentiles, and optionally
//! records the history and checks it for linearizability.

use indicatif::{ProgressBar, ProgressStyle};
use raftkv::kv::Op;
use raftkv::lincheck::{self, Budget, History, OpKind, Operation, Verdict};
use raftkv::server::client::{info, info_field, Access};
#[cfg(feature = "etcd")]
use raftkv::server::etcd;
use raftkv::server::load::{self, LoadSpec, Mix, Progress, System};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct BenchArgs {
    pub servers: Vec<SocketAddr>,
    pub access: Access,
    pub clients: usize,
    pub duration: Duration,
    pub mix: Mix,
    pub keys: u64,
    pub key_bytes: usize,
    pub value_bytes: usize,
    pub history_out: Option<PathBuf>,
    pub check: bool,
    pub seed: u64,
    pub plot: Option<PathBuf>,
    /// The servers are etcd members, not raftkv servers.
    pub etcd: bool,
}

pub fn run(args: BenchArgs) -> ExitCode {
    let runtime = super::runtime();
    let (system, servers) = match target(&runtime, &args) {
        Ok(target) => target,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let spec = LoadSpec {
        servers,
        clients: args.clients,
        mix: args.mix,
        keys: args.keys,
        rotate_keys_every: None,
        key_bytes: args.key_bytes,
        value_bytes: args.value_bytes,
        seed: args.seed,
        op_timeout: Duration::from_secs(10),
        attempt_timeout: Duration::from_secs(1),
        access: args.access.clone(),
        system,
    };
    let fsyncs_before = runtime.block_on(total_fsyncs(&args));
    let progress = Arc::new(Progress::default());
    let epoch = Instant::now();
    let bar = ProgressBar::new(args.duration.as_secs().max(1));
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} s  {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let records = runtime.block_on(async {
        let clients = tokio::spawn(load::run(spec, progress.clone(), epoch));
        let mut every = tokio::time::interval(Duration::from_millis(250));
        while epoch.elapsed() < args.duration {
            every.tick().await;
            let done = progress.completed.load(Ordering::Relaxed);
            bar.set_position(epoch.elapsed().as_secs());
            bar.set_message(format!("{done} ops, {:.0} ops/s", done as f64 / epoch.elapsed().as_secs_f64()));
        }
        progress.stop.store(true, Ordering::Relaxed);
        clients.await.expect("the load clients do not panic")
    });
    let elapsed = epoch.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let fsyncs_after = runtime.block_on(total_fsyncs(&args));

    let mut puts = hdrhistogram::Histogram::<u64>::new(3).expect("3 significant digits is valid");
    let mut gets = puts.clone();
    let mut abandoned = 0;
    for r in &records {
        abandoned += r.abandoned;
        for (op, us) in &r.latencies_us {
            let h = if matches!(op, Op::Get { .. }) { &mut gets } else { &mut puts };
            let _ = h.record(*us);
        }
    }
    let ops = puts.len() + gets.len();
    println!(
        "{} clients, {:.1} s: {ops} operations, {:.0} ops/s, {abandoned} abandoned",
        args.clients,
        elapsed,
        ops as f64 / elapsed
    );
    for (name, h) in [("writes", &puts), ("gets", &gets)] {
        if h.is_empty() {
            continue;
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "  {name:<6} {:>8} ops {:>9.0} ops/s   p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
            h.len(),
            h.len() as f64 / elapsed,
            ms(0.5),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1000.0
        );
    }
    if let (Some(before), Some(after)) = (fsyncs_before, fsyncs_after) {
        if ops > 0 {
            let fsyncs = after.saturating_sub(before);
            println!("  fsyncs: {fsyncs} on all nodes, {:.3} per completed operation", fsyncs as f64 / ops as f64);
        }
    }

    let history = History::new(records.into_iter().flat_map(|r| r.history).collect());
    if let Some(path) = &args.plot {
        use raftkv::server::plot;
        // About fifty points, none shorter than 100 ms.
        let width_us = (args.duration.as_micros() as u64 / 50).max(100_000);
        let title = format!("raftkv bench: {} clients, {:?} mix, {} keys", args.clients, args.mix, args.keys);
        let chart = plot::svg(&title, &plot::intervals(&history.ops, (elapsed * 1e6) as u64, width_us), &[]);
        match std::fs::write(path, chart) {
            Ok(()) => println!("chart written to {}", path.display()),
            Err(e) => eprintln!("error: cannot write {}: {e}", path.display()),
        }
    }
    if let Some(path) = &args.history_out {
        if let Err(e) = std::fs::write(path, history.to_json()) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("history ({} operations) written to {}", history.ops.len(), path.display());
    }
    if args.check {
        let started = Instant::now();
        let verdict = lincheck::check(&history, Budget::steps(Budget::DEFAULT_MAX_STEPS));
        match &verdict {
            Verdict::Ok => println!("linearizable (checked in {:.1} ms)", started.elapsed().as_secs_f64() * 1e3),
            Verdict::Illegal(v) => {
                println!("NOT linearizable: key {:?}: a minimal offending set of {} calls:\n{v}", v.key, v.ops.len());
                if let Some(key) = found_before_any_write(&history) {
                    println!(
                        "note: a call on key {key:?} found a value before any call of this run wrote one: the \
                         cluster held data from before the run, and the check takes every key as missing at \
                         the start. Check a run against a fresh cluster."
                    );
                }
            }
            Verdict::Unknown { key } => println!("linearizability unknown: the search budget ran out on key {key:?}"),
        }
        if !verdict.is_ok() {
            let temp_name = format!("raftkv-bench-{}", std::process::id());
            super::draw_failure(&history, &verdict, args.history_out.as_deref(), &temp_name, None);
        }
        if verdict.is_illegal() {
            return ExitCode::FAILURE;
        }
    }
    if ops == 0 {
        eprintln!("error: no operation completed; is the cluster running?");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// A key on which a completed call saw a value (a Get reading one, a DEL
/// removing one, a SETNX refused) before any call of the history had
/// started writing it: then the store was not empty when the run began.
fn found_before_any_write(history: &History) -> Option<&str> {
    let mut first_write: HashMap<&str, u64> = HashMap::new();
    for op in &history.ops {
        // A refused SETNX wrote nothing; one that set, or never returned,
        // may have.
        let writes = match op.kind {
            OpKind::Put | OpKind::Append => true,
            OpKind::PutIfAbsent => op.output != "0",
            OpKind::Get | OpKind::Delete => false,
        };
        if writes {
            let at = first_write.entry(op.key.as_str()).or_insert(op.call);
            *at = (*at).min(op.call);
        }
    }
    let saw_a_value = |op: &Operation| match op.kind {
        OpKind::Get => !op.output.is_empty(),
        OpKind::Delete => op.output == "1",
        OpKind::PutIfAbsent => op.output == "0",
        OpKind::Put | OpKind::Append => false,
    };
    history
        .ops
        .iter()
        .filter(|op| saw_a_value(op))
        .find(|op| op.ret.is_some_and(|ret| first_write.get(op.key.as_str()).is_none_or(|&w| w > ret)))
        .map(|op| op.key.as_str())
}

/// Which system the clients load, and the addresses they are given: every
/// raftkv server (the clerks find the leader), or the etcd leader alone.
fn target(runtime: &tokio::runtime::Runtime, args: &BenchArgs) -> Result<(System, Vec<SocketAddr>), String> {
    if !args.etcd {
        return Ok((System::Raftkv, args.servers.clone()));
    }
    #[cfg(feature = "etcd")]
    {
        if !matches!(args.mix, Mix::Puts | Mix::Gets) {
            return Err("against etcd, --mix is puts or gets".into());
        }
        if args.access.is_tls() || args.access.has_password() {
            return Err("against etcd, the clients speak plain gRPC: no --tls, --cacert or --password".into());
        }
        let leader = runtime.block_on(etcd::find_leader(&args.servers, Duration::from_secs(10)))?;
        Ok((System::Etcd, vec![leader]))
    }
    #[cfg(not(feature = "etcd"))]
    {
        let _ = runtime;
        Err("this raftkv was built without etcd's client: build it with `cargo build --release --features etcd` \
             (which needs protoc: Debian's protobuf-compiler and libprotobuf-dev)"
            .into())
    }
}

/// The sum of every node's fsync counter (raftkv's `raft_fsyncs` in INFO,
/// etcd's WAL fsyncs in its metrics), if every node answers.
async fn total_fsyncs(args: &BenchArgs) -> Option<u64> {
    #[cfg(feature = "etcd")]
    if args.etcd {
        return etcd::total_fsyncs(&args.servers).await;
    }
    let mut total = 0;
    for addr in &args.servers {
        let text = info(*addr, &args.access, Duration::from_secs(2)).await.ok()?;
        total += info_field(&text, "raft_fsyncs")?.parse::<u64>().ok()?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_read_before_the_run_wrote_one_is_named() {
        let op = |kind, key: &str, value: &str, output: &str, call, ret| {
            Operation::new(0, kind, key, value, output, call, Some(ret))
        };
        // "b" is read with a value before its first write starts: leftover data.
        let leftover = History::new(vec![
            op(OpKind::Put, "a", "1", "", 0, 5),
            op(OpKind::Get, "a", "", "1", 6, 8),
            op(OpKind::Get, "b", "", "old", 1, 3),
            op(OpKind::Put, "b", "2", "", 4, 9),
        ]);
        assert_eq!(found_before_any_write(&leftover), Some("b"));
        // A read overlapping the write it sees, a DEL of nothing, a SETNX
        // that set: all explained by the run itself.
        let fresh = History::new(vec![
            op(OpKind::Put, "a", "1", "", 2, 6),
            op(OpKind::Get, "a", "", "1", 1, 4),
            op(OpKind::Delete, "c", "", "0", 0, 1),
            op(OpKind::PutIfAbsent, "d", "x", "1", 0, 1),
        ]);
        assert_eq!(found_before_any_write(&fresh), None);
        let refused = History::new(vec![op(OpKind::PutIfAbsent, "d", "x", "0", 0, 1)]);
        assert_eq!(found_before_any_write(&refused), Some("d"));
    }
}
