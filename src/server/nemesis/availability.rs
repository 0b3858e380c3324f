//! Availability under a nemesis, from two sources: the operations the
//! clients completed, and what the servers said while it ran. A sampler
//! asks every server's `INFO` every [`SAMPLE_EVERY`] (role, term, commit
//! index, envelopes received from each peer), so that each fault can be
//! told by the time from the cut to the first commit of a new leader and
//! from the heal until every link of the leader carries traffic again.
//! Figures are reported, never asserted: they belong in benchmarks, not
//! timed tests.

use crate::lincheck::Operation;
use crate::server::client::{info, info_field, Access};
use crate::server::load::ClientRecord;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often each server is asked.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// Samples kept per server: 20 minutes' worth at [`SAMPLE_EVERY`]; a longer
/// run keeps its first ones.
pub const SAMPLES_PER_SERVER_MAX: usize = 60_000;

/// One fault of a schedule: when it was made and healed, in microseconds
/// since the run's epoch.
pub struct Event {
    pub name: String,
    pub cut_us: u64,
    pub heal_us: u64,
    /// The servers whose links the fault cut, killed or paused.
    pub victims: Vec<u8>,
}

/// What one server said at one moment.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at_us: u64,
    pub server: u8,
    pub leader: bool,
    pub term: u64,
    pub commit: u64,
    /// Resident memory, bytes (0 where the server cannot tell).
    pub rss: u64,
    /// Live heap (`used_memory`: allocated and not freed), bytes.
    pub heap: u64,
    /// Envelopes delivered from each peer since the process started.
    pub received: Vec<(u8, u64)>,
}

/// Samples every server until `stop` is set (a server that does not answer
/// within one interval, paused or killed, is skipped that time).
pub struct Sampler {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Sample>>>,
}

impl Sampler {
    pub fn start(servers: &[SocketAddr], access: &Access, epoch: Instant) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = servers
            .iter()
            .enumerate()
            .map(|(id, &addr)| {
                let (stop, access) = (stop.clone(), access.clone());
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    let mut every = tokio::time::interval(SAMPLE_EVERY);
                    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    while !stop.load(Ordering::Relaxed) && samples.len() < SAMPLES_PER_SERVER_MAX {
                        every.tick().await;
                        let Ok(text) = info(addr, &access, SAMPLE_EVERY).await else { continue };
                        let at_us = epoch.elapsed().as_micros() as u64;
                        if let Some(sample) = parse(id as u8, at_us, &text) {
                            samples.push(sample);
                        }
                    }
                    samples
                })
            })
            .collect();
        Sampler { stop, tasks }
    }

    /// Every server's samples, in time order.
    pub async fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for task in self.tasks {
            all.extend(task.await.expect("a sampler task"));
        }
        all.sort_by_key(|s| s.at_us);
        all
    }
}

fn parse(server: u8, at_us: u64, text: &str) -> Option<Sample> {
    let number = |name| info_field(text, name)?.parse::<u64>().ok();
    let received = info_field(text, "raft_peer_received")?
        .split(',')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (id, count) = pair.split_once('=')?;
            Some((id.parse().ok()?, count.parse().ok()?))
        })
        .collect();
    Some(Sample {
        at_us,
        server,
        leader: info_field(text, "raft_role")? == "Leader",
        term: number("raft_term")?,
        commit: number("raft_commit_index")?,
        rss: number("used_memory_rss").unwrap_or(0),
        heap: number("used_memory").unwrap_or(0),
        received,
    })
}

/// The time from `event`'s cut to the first sample of a server leading in
/// a newer term than any before the cut with a commit index past any
/// before the cut: a new leader whose no-op has committed. `None` if the
/// leader of before kept leading (a fault that did not depose it).
fn new_leader_commits(samples: &[Sample], event: &Event, until_us: u64) -> Option<u64> {
    let before = samples.iter().filter(|s| s.at_us < event.cut_us);
    let (term, commit) = before.fold((0, 0), |(t, c), s| (t.max(s.term), c.max(s.commit)));
    samples
        .iter()
        .filter(|s| s.at_us >= event.cut_us && s.at_us < until_us)
        .find(|s| s.leader && s.term > term && s.commit > commit)
        .map(|s| s.at_us - event.cut_us)
}

/// How near a heal a server seen leading counts as the leader at the heal:
/// five rounds of samples either side.
const LEADER_AT_HEAL_US: u64 = 100_000;

/// The time from `event`'s heal until every link of the leader carries
/// traffic both ways: each of the leader's and its followers' counts of
/// envelopes from the other has counted up between two samples taken after
/// the heal. The leader is the one seen leading in the newest term within
/// [`LEADER_AT_HEAL_US`] of the heal, before or after it (a deposed leader
/// may not know it yet; one paused or killed at the heal is seen only
/// before). Followers do not talk to each other, so only the leader's
/// links are expected to carry anything (a leader elected later would
/// make this the time to an election, which is not what it measures). A
/// schedule may cut again soon: a link touching the `next` event's victims
/// is watched until that cut and left out if it has not counted up by
/// then; the others are watched until the next heal. `Err` says why there
/// is no figure: no leader at the heal, every link left out, or a link
/// that never counted up.
fn links_carry_traffic(
    samples: &[Sample],
    event: &Event,
    next: Option<&Event>,
    servers: u8,
) -> Result<u64, &'static str> {
    let watched = |s: &&Sample, until_us: u64| s.at_us >= event.heal_us && s.at_us < until_us;
    let next_heal = next.map_or(u64::MAX, |n| n.heal_us);
    let near_heal = |s: &&Sample| s.at_us.abs_diff(event.heal_us) <= LEADER_AT_HEAL_US;
    let at_heal = samples.iter().filter(near_heal).filter(|s| s.leader).max_by_key(|s| (s.term, s.at_us));
    let leader = at_heal.ok_or("no leader")?.server;
    let mut latest = None;
    for (from, to) in (0..servers).filter(|&f| f != leader).flat_map(|f| [(leader, f), (f, leader)]) {
        let cut_next = next.filter(|n| n.victims.contains(&from) || n.victims.contains(&to));
        let until_us = cut_next.map_or(next_heal, |n| n.cut_us);
        let at_to: Vec<&Sample> = samples.iter().filter(|s| watched(s, until_us) && s.server == to).collect();
        let count = |s: &Sample| s.received.iter().find(|(id, _)| *id == from).map(|(_, n)| *n);
        let moved = at_to.windows(2).find(|w| matches!((count(w[0]), count(w[1])), (Some(a), Some(b)) if b > a));
        match (moved, cut_next) {
            (Some(w), _) => latest = Some(latest.unwrap_or(0).max(w[1].at_us - event.heal_us)),
            (None, Some(_)) => {} // cut again before it was seen
            (None, None) => return Err("not seen"),
        }
    }
    latest.ok_or("cut again")
}

/// The report: the longest operation and the longest window without a
/// completed operation over the whole run; the most resident memory each
/// server was seen with; then, per event: that window between the
/// cut and the next cut or 2 s after the heal, whichever is sooner; how
/// long after the cut the first operation called after it completed
/// (clients served again), and how long after the heal the first
/// operation completed; how long after the cut a new leader
/// committed (`kept` if the leader was not deposed), and how long after the
/// heal every link of the leader carried traffic both ways.
pub fn report(records: &[ClientRecord], events: &[Event], samples: &[Sample], servers: u8) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let operations: Vec<&Operation> = records.iter().flat_map(|r| &r.history).collect();
    let mut done: Vec<u64> = operations.iter().filter_map(|op| op.ret).collect();
    done.sort_unstable();
    let longest_op = records.iter().flat_map(|r| r.latencies_us.iter().map(|(_, us)| *us)).max().unwrap_or_default();
    let longest_gap = done.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    let _ = writeln!(
        out,
        "{} operations completed; the longest took {:.0} ms; the longest window without one: {:.0} ms",
        done.len(),
        longest_op as f64 / 1e3,
        longest_gap as f64 / 1e3
    );
    let most = |server: u8, of: fn(&Sample) -> u64| {
        samples.iter().filter(|s| s.server == server).map(of).max().unwrap_or(0) as f64 / 1e6
    };
    let memory: Vec<String> = (0..servers)
        .map(|id| format!("{id}: {:.0} MB ({:.0} MB)", most(id, |s| s.rss), most(id, |s| s.heap)))
        .collect();
    let _ = writeln!(out, "the most resident memory (live heap) each server had: {}", memory.join(", "));
    let ms = |us: u64| format!("{:.0} ms", us as f64 / 1e3);
    let _ = writeln!(
        out,
        "{:<36} {:>12} {:>12} {:>16} {:>17} {:>16}",
        "event", "longest gap", "served again", "first after heal", "new leader commit", "links after heal"
    );
    for (i, e) in events.iter().enumerate() {
        let next_cut = events.get(i + 1).map_or(u64::MAX, |n| n.cut_us);
        let window_end = next_cut.min(e.heal_us + 2_000_000);
        let mut last = e.cut_us;
        let mut gap = 0;
        for &t in done.iter().filter(|&&t| t > e.cut_us && t <= window_end) {
            gap = gap.max(t - last);
            last = t;
        }
        let first_after = |from: u64| done.iter().find(|&&t| t > from).map_or("none".to_string(), |t| ms(t - from));
        let called_after_cut = operations.iter().filter(|op| op.call >= e.cut_us).filter_map(|op| op.ret).min();
        let served_again = called_after_cut.map_or("none".to_string(), |t| ms(t - e.cut_us));
        let commit = new_leader_commits(samples, e, next_cut).map_or("kept".to_string(), ms);
        let links = links_carry_traffic(samples, e, events.get(i + 1), servers).map_or_else(str::to_string, ms);
        let _ = writeln!(
            out,
            "{:<36} {:>12} {:>12} {:>16} {:>17} {:>16}",
            e.name,
            ms(gap),
            served_again,
            first_after(e.heal_us),
            commit,
            links
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_us: u64, server: u8, leader: bool, term: u64, commit: u64, received: &[(u8, u64)]) -> Sample {
        Sample { at_us, server, leader, term, commit, rss: 0, heap: 0, received: received.to_vec() }
    }

    #[test]
    fn a_new_leader_is_seen_once_it_commits_and_links_once_they_count_up() {
        let event = Event { name: "0 isolated".into(), cut_us: 1_000, heal_us: 5_000, victims: vec![0] };
        let samples = vec![
            sample(900, 0, true, 1, 10, &[(1, 50)]),
            sample(900, 1, false, 1, 10, &[(0, 50)]),
            // Elected, but its no-op has not committed yet.
            sample(2_000, 1, true, 2, 10, &[(0, 50)]),
            sample(3_000, 1, true, 2, 11, &[(0, 50)]),
            // After the heal: 0 hears from 1 at once, 1 from 0 later.
            sample(5_100, 0, false, 2, 11, &[(1, 60)]),
            sample(5_200, 0, false, 2, 12, &[(1, 61)]),
            sample(5_100, 1, true, 2, 11, &[(0, 50)]),
            sample(5_300, 1, true, 2, 12, &[(0, 50)]),
            sample(5_400, 1, true, 2, 12, &[(0, 51)]),
        ];
        assert_eq!(new_leader_commits(&samples, &event, u64::MAX), Some(2_000));
        assert_eq!(links_carry_traffic(&samples, &event, None, 2), Ok(400));
        // A link that never counts up is not seen.
        assert_eq!(links_carry_traffic(&samples[..8], &event, None, 2), Err("not seen"));
        // Nor one watched only until the next fault heals.
        let next = Event { name: "no fault".into(), cut_us: 5_000, heal_us: 5_350, victims: vec![] };
        assert_eq!(links_carry_traffic(&samples, &event, Some(&next), 2), Err("not seen"));
        // Links the next fault cuts at once are not watched.
        let next = Event { name: "0 isolated".into(), cut_us: 5_000, heal_us: 9_000, victims: vec![0] };
        assert_eq!(links_carry_traffic(&samples, &event, Some(&next), 2), Err("cut again"));
        // Unless they counted up before that cut.
        let next = Event { name: "0 isolated".into(), cut_us: 5_450, heal_us: 9_000, victims: vec![0] };
        assert_eq!(links_carry_traffic(&samples, &event, Some(&next), 2), Ok(400));
        // A link the next fault spares is watched until it heals.
        let next = Event { name: "bridge".into(), cut_us: 5_000, heal_us: 5_350, victims: vec![2, 3] };
        assert_eq!(links_carry_traffic(&samples, &event, Some(&next), 2), Err("not seen"));
        // A leader that kept leading is not a new one.
        let kept = Event { name: "1 isolated".into(), cut_us: 950, heal_us: 5_000, victims: vec![1] };
        let samples = vec![sample(900, 0, true, 1, 10, &[]), sample(1_000, 0, true, 1, 11, &[])];
        assert_eq!(new_leader_commits(&samples, &kept, u64::MAX), None);
    }

    /// The leader at a heal is the one leading around it, even if the next
    /// fault pauses it at once: a leader elected later would turn the
    /// figure into the time to an election.
    #[test]
    fn the_leader_at_a_heal_is_the_one_leading_around_it() {
        let ms = 1_000;
        let event = Event { name: "no fault".into(), cut_us: 1_000 * ms, heal_us: 5_000 * ms, victims: vec![] };
        let pause = Event { name: "1 paused".into(), cut_us: 5_000 * ms, heal_us: 7_000 * ms, victims: vec![1] };
        let samples = vec![
            sample(4_980 * ms, 1, true, 2, 11, &[(0, 50), (2, 50)]),
            sample(4_980 * ms, 0, false, 2, 11, &[(1, 50)]),
            sample(4_980 * ms, 2, false, 2, 11, &[(1, 50)]),
            // 1 is paused from the heal on; 0 is elected 450 ms later.
            sample(5_450 * ms, 0, true, 3, 12, &[(1, 50), (2, 7)]),
            sample(5_470 * ms, 0, true, 3, 13, &[(1, 50), (2, 8)]),
            sample(5_450 * ms, 2, false, 3, 12, &[(0, 5), (1, 50)]),
            sample(5_470 * ms, 2, false, 3, 13, &[(0, 6), (1, 50)]),
        ];
        assert_eq!(links_carry_traffic(&samples, &event, Some(&pause), 3), Err("cut again"));
        // With nobody seen leading around the heal there is no figure.
        assert_eq!(links_carry_traffic(&samples[3..], &event, Some(&pause), 3), Err("no leader"));
    }
}
