//! `raftkv floor`: what one client's Put cannot go below on this machine,
//! measured without tracing: a loopback round trip between two threads
//! that sleep in `recv` between messages (as both ends of every hop of a
//! 1-client Put do), and one Put's log write with its `fdatasync` into a
//! fresh write-ahead log (what a follower writes before it acknowledges).
//!
//! Issue 17's bar for a 1-client Put is that write, two round trips and
//! 0.1 ms. The bar counts one write; a Put has three made at once, the
//! leader's and each follower's, and the commit waits for two. On three
//! machines they would not meet, but a local cluster's three logs share
//! one disk, whose cache flushes (what `fdatasync` waits for) do not
//! overlap much; so three logs are also written at once, each from a
//! thread of its own, and the second write to be durable, from the first
//! one's start, is what a commit waits for on this disk.
//!
//! `benches/put_breakdown.sh` cuts a traced Put into stages, but tracing
//! slows the system calls it records; it runs this too, so that the bar's
//! terms untraced and the Put's latency come from one sitting.
//!
//! A round trip's cost depends on where the two threads run: on one core,
//! a wake-up is a switch between two threads; across two, the sleeping
//! core must be woken first (an interrupt, and on a virtual machine an exit
//! to the hypervisor). Left to itself the scheduler puts a ping-pong pair
//! on one core, which the hops of a Put between four busy processes do not
//! get; so the threads are pinned, once to one core and once to two, and
//! both are reported.
//!
//! The writes and the two kinds of round trip take turns in slices of a
//! fifth of a second; between round trips the measuring end sleeps a
//! little, so that the cores go idle between them, as they do between the
//! hops of a 1-client Put.

use hdrhistogram::Histogram;
use raftkv::kv::{Command, Op};
use raftkv::raft::{Entry, HardState, LogWrite, Payload, Persist};
use raftkv::server::storage::RaftStorage;
use raftkv::server::tempdir::TempDir;
use raftkv::server::wal::WalStorage;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

/// The longest measurement allowed (ten minutes: a disk or a host that
/// drifts is better read in several runs).
pub const MAX_SECONDS: u64 = 600;
/// Bytes each way per round trip: about one AppendEntries carrying one
/// Put of a 16-byte key and a 100-byte value (and about its RESP request).
const MESSAGE_BYTES: usize = 200;
/// A Put's replicas: the leader and two followers, whose commit waits
/// for two of their writes.
const REPLICAS: usize = 3;
/// The bar's allowance beyond the write and the round trips.
const ALLOWANCE: Duration = Duration::from_micros(100);
/// Each term is measured in turn for this long, over and over until the
/// time is up, so a disk or a host that changes speed during the run moves
/// all of them.
const SLICE: Duration = Duration::from_millis(200);
/// The measuring end sleeps this long after each round trip, so that the
/// cores go idle between round trips, as they do between the hops of a
/// 1-client Put (a few hundred microseconds apart).
const GAP: Duration = Duration::from_micros(100);

pub fn run(duration: Duration) -> ExitCode {
    // A thread that panicked would leave the others of its round waiting
    // for it at their barrier: end the process instead.
    super::exit_on_panic();
    match measure(duration) {
        Ok(floor) => {
            floor.print();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Each term's times, in nanoseconds, as `raftkv bench` keeps its
/// latencies (3 significant digits, constant memory however long it runs).
type Times = Histogram<u64>;

fn times() -> Times {
    Histogram::new(3).expect("3 significant digits is valid")
}

struct Floor {
    writes: Times,
    /// Each write of three made at once into three logs.
    replica_writes: Times,
    /// From the first of three writes made at once starting to the second
    /// being durable.
    second_durable: Times,
    one_core: Times,
    two_cores: Times,
}

impl Floor {
    fn print(&self) {
        let us = |ns: u64| ns as f64 / 1e3;
        let (write, write90) = percentiles(&self.writes);
        println!(
            "  one Put's log write + fdatasync: p50 {:.0} us, p90 {:.0} us ({} writes)",
            us(write),
            us(write90),
            self.writes.len()
        );
        let (each, each90) = percentiles(&self.replica_writes);
        let (second, second90) = percentiles(&self.second_durable);
        println!(
            "  three logs written at once (a Put's three replicas on this one disk): each write p50 {:.0} us, \
             p90 {:.0} us; the second durable from the first start (what a commit waits for) p50 {:.0} us, \
             p90 {:.0} us ({} rounds)",
            us(each),
            us(each90),
            us(second),
            us(second90),
            self.second_durable.len()
        );
        for (name, samples) in [("both ends on one core", &self.one_core), ("the ends on two cores", &self.two_cores)] {
            if samples.is_empty() {
                println!("  loopback round trip, {name}: not measured (this process may use one core)");
                continue;
            }
            let (rtt, rtt90) = percentiles(samples);
            let bar = |write: u64| write + 2 * rtt + ALLOWANCE.as_nanos() as u64;
            println!(
                "  loopback round trip, {name}: p50 {:.0} us, p90 {:.0} us ({} of {MESSAGE_BYTES} bytes each way); \
                 bar (write + 2 round trips + 100 us, p50s) {:.0} us, with the second of three writes {:.0} us",
                us(rtt),
                us(rtt90),
                samples.len(),
                us(bar(write)),
                us(bar(second))
            );
        }
    }
}

/// The median and the 90th percentile.
fn percentiles(times: &Times) -> (u64, u64) {
    (times.value_at_quantile(0.5), times.value_at_quantile(0.9))
}

fn measure(duration: Duration) -> Result<Floor, String> {
    let mut log = PutLog::open()?;
    let mut replicas = (0..REPLICAS).map(|_| PutLog::open()).collect::<Result<Vec<_>, _>>()?;
    let allowed = allowed_cores()?;
    let &first = allowed.first().ok_or("this process may run on no core")?;
    let mut floor = Floor {
        writes: times(),
        replica_writes: times(),
        second_durable: times(),
        one_core: times(),
        two_cores: times(),
    };
    let end = Instant::now() + duration;
    while Instant::now() < end {
        // The writes from this thread, which is not pinned: the servers'
        // threads are not either (a pinned writer is woken on its core
        // when the disk answers, which can cost a wake-up across cores).
        let until = Instant::now() + SLICE;
        while Instant::now() < until {
            let started = Instant::now();
            log.append()?;
            let _ = floor.writes.record(started.elapsed().as_nanos() as u64);
        }
        let (each, second) = replica_writes(&mut replicas)?;
        floor.replica_writes.add(each).map_err(|e| e.to_string())?;
        floor.second_durable.add(second).map_err(|e| e.to_string())?;
        floor.one_core.add(round_trips((first, first))?).map_err(|e| e.to_string())?;
        if let [a, b, ..] = allowed[..] {
            floor.two_cores.add(round_trips((a, b))?).map_err(|e| e.to_string())?;
        }
    }
    Ok(floor)
}

/// Rounds of three writes at once for a [`SLICE`], one into each of
/// `replicas` from a thread of its own (not pinned, as in [`measure`]);
/// returns each write's time, and each round's from its first write
/// starting to its second being durable.
fn replica_writes(replicas: &mut [PutLog]) -> Result<(Times, Times), String> {
    /// One round's successful writes, and whether the rounds are over.
    struct Round {
        spans: Vec<(Instant, Instant)>,
        over: bool,
    }
    let count = replicas.len();
    let shared = Mutex::new(Round { spans: Vec::with_capacity(count), over: false });
    let lock = || shared.lock().expect("no thread panics holding it");
    let barrier = Barrier::new(count);
    let until = Instant::now() + SLICE;
    let write = |log: &mut PutLog| -> Result<(Times, Times), String> {
        let (mut each, mut second) = (times(), times());
        loop {
            let started = Instant::now();
            let result = log.append();
            let ended = Instant::now();
            if result.is_ok() {
                lock().spans.push((started, ended));
                let _ = each.record((ended - started).as_nanos() as u64);
            }
            // Every write of the round is in; one thread counts the round
            // and decides for all whether another follows (a failed write,
            // missing from the spans, ends them, so that no thread waits
            // for one that has gone).
            if barrier.wait().is_leader() {
                let mut round = lock();
                let Round { spans, over } = &mut *round;
                let all_written = spans.len() == count;
                if all_written {
                    let first = spans.iter().map(|&(start, _)| start).min().expect("every write is in");
                    spans.sort_by_key(|&(_, end)| end);
                    let _ = second.record((spans[1].1 - first).as_nanos() as u64);
                }
                spans.clear();
                *over = !all_written || Instant::now() >= until;
            }
            barrier.wait();
            if lock().over {
                return result.map(|()| (each, second));
            }
        }
    };
    let results = std::thread::scope(|scope| {
        let threads: Vec<_> = replicas.iter_mut().map(|replica| scope.spawn(|| write(replica))).collect();
        threads.into_iter().map(|t| t.join().map_err(|_| "a writing thread panicked".to_string())).collect::<Vec<_>>()
    });
    let (mut each, mut second) = (times(), times());
    for result in results {
        let (e, s) = result??;
        each.add(e).map_err(|e| e.to_string())?;
        second.add(s).map_err(|e| e.to_string())?;
    }
    Ok((each, second))
}

/// Round trips for a [`SLICE`], the measuring end on core `here` and the
/// echoing end on `there`, on two threads of their own (they pin
/// themselves); returns their times.
fn round_trips((here, there): (usize, usize)) -> Result<Times, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listening on loopback: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // The echoing end: returns when the measuring end closes.
    let echo = move || -> Result<(), String> {
        pin(there)?;
        let (mut stream, _) = listener.accept().map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut buf = [0u8; MESSAGE_BYTES];
        loop {
            match stream.read_exact(&mut buf) {
                Ok(()) => stream.write_all(&buf).map_err(|e| e.to_string())?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    let measure = move || -> Result<Times, String> {
        // Connected before anything can fail, so that the echoing end's
        // `accept` returns: whatever fails then drops the stream, which
        // ends it.
        let mut stream = TcpStream::connect(addr).map_err(|e| format!("connecting on loopback: {e}"))?;
        pin(here)?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut samples = times();
        let mut buf = [0x5au8; MESSAGE_BYTES];
        let until = Instant::now() + SLICE;
        while Instant::now() < until {
            let started = Instant::now();
            stream.write_all(&buf).and_then(|()| stream.read_exact(&mut buf)).map_err(|e| e.to_string())?;
            let _ = samples.record(started.elapsed().as_nanos() as u64);
            std::thread::sleep(GAP);
        }
        Ok(samples)
        // The stream closes here, which ends the echoing end.
    };
    let panicked = |_| "a round-trip thread panicked".to_string();
    let (measured, echoed) = std::thread::scope(|scope| {
        let echo = scope.spawn(echo);
        let measured = scope.spawn(measure).join().map_err(panicked);
        (measured, echo.join().map_err(panicked))
    });
    let samples = measured??;
    echoed??;
    Ok(samples)
}

/// The cores this process may run on, in order.
fn allowed_cores() -> Result<Vec<usize>, String> {
    // SAFETY: `cpu_set_t` is plain data and zeroed is its empty set;
    // `sched_getaffinity(0, ..)` writes at most `size_of::<cpu_set_t>()`
    // bytes into it, and `CPU_ISSET` reads inside it (below
    // `CPU_SETSIZE`).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(format!("reading this process's cores: {}", std::io::Error::last_os_error()));
        }
        Ok((0..libc::CPU_SETSIZE as usize).filter(|&core| libc::CPU_ISSET(core, &set)).collect())
    }
}

/// Pins the calling thread to `core` (one of [`allowed_cores`]).
fn pin(core: usize) -> Result<(), String> {
    // SAFETY: as in `allowed_cores`; `CPU_SET` writes inside the set
    // (`core` is below `CPU_SETSIZE`), and `sched_setaffinity(0, ..)` reads
    // it for the calling thread only.
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if result == 0 {
        Ok(())
    } else {
        Err(format!("pinning a thread to core {core}: {}", std::io::Error::last_os_error()))
    }
}

/// A fresh write-ahead log in a temporary directory of its own, appended
/// one Put at a time, as a follower writes a 1-client Put's AppendEntries.
struct PutLog {
    wal: WalStorage,
    next: u64,
    /// Declared after the log, so that it is closed before its directory
    /// goes.
    _dir: TempDir,
}

impl PutLog {
    /// A log starts with a term and a vote, as a follower's does.
    fn open() -> Result<PutLog, String> {
        let dir = TempDir::new("floor").map_err(|e| format!("creating a directory for a log: {e}"))?;
        let mut wal = WalStorage::open(dir.path()).map_err(|e| format!("opening a log: {e}"))?;
        let hard_state = Some(HardState { term: 1, voted_for: Some(0) });
        wal.write(&[&Persist { number: 0, snapshot: None, compact: None, hard_state, log: None }])
            .map_err(|e| format!("writing to a log: {e}"))?;
        Ok(PutLog { wal, next: 1, _dir: dir })
    }

    fn append(&mut self) -> Result<(), String> {
        let i = self.next;
        let op = Op::Put { key: format!("key-{:012}", i % 1000), value: "v".repeat(100) };
        let entry = Entry { term: 1, payload: Payload::Command(Command { client: 1, seq: i, op }) };
        let log = Some(LogWrite { from: i, entries: vec![entry] });
        self.wal
            .write(&[&Persist { number: i, snapshot: None, compact: None, hard_state: None, log }])
            .map_err(|e| format!("writing to a log: {e}"))?;
        self.next += 1;
        Ok(())
    }
}
