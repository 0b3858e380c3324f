#!/usr/bin/env python3
"""Where one client's Put spends its time, from a `perf record` of the
syscall tracepoints of the three servers and the bench client, as `perf
script` prints them (benches/put_breakdown.sh records it).

With one closed-loop client the Puts are strictly sequential, so each one is
the stretch of the trace from the client's request `sendto` to the
`recvfrom` that brings its reply. Inside it, by process and thread:

  client send  -> leader reads the request          (loopback, tokio wake-up)
  leader read  -> AppendEntries leaves (first send) (node thread: step, hand to the peer task)
  leader read  -> leader fdatasync starts           (persist thread: redb's page writes first)
  leader fdatasync
  AppendEntries sent -> a follower reads it         (loopback)
  follower read -> its fdatasync starts             (node + persist threads, page writes)
  follower fdatasync
  follower fdatasync ends -> its ack leaves
  ack sent -> leader reads it
  commit point -> reply leaves                      (commit = the later of the leader's fsync
                                                     and the first ack: apply, answer, wake
                                                     the connection's task)
  reply sent -> client reads it

Prints the median and 90th percentile of each over every Put found, and
its mean over the slowest 1% of the Puts (where the tail comes from).

  put_timeline.py SCRIPT TIDS LEADER_PID CLIENT_PID
SCRIPT is `perf script`'s text; TIDS lines are "pid tid comm" (from
/proc/PID/task). The tracing slows each traced syscall a little: read the
stages beside the untraced latency the script's caller prints.
"""
import bisect
import re
import statistics
import sys

LINE = re.compile(
    r"^\s*(?P<comm>.+?)\s+(?P<tid>\d+)\s+\[\d+\]\s+(?P<ts>[\d.]+):\s+"
    r"syscalls:sys_(?P<dir>enter|exit)_(?P<call>\w+):\s*(?P<rest>.*)$"
)


def parse(path, pid_of):
    """Every completed sendto/recvfrom/fdatasync as (start, end, pid, tid, call, fd, bytes), times in ms."""
    events, entered = [], {}
    for raw in open(path, errors="replace"):
        m = LINE.match(raw)
        if not m:
            continue
        ts, tid = float(m["ts"]) * 1000, int(m["tid"])
        if tid not in pid_of:
            continue
        if m["dir"] == "enter":
            fd = re.search(r"fd: 0x([0-9a-f]+)", m["rest"])
            entered[tid] = (ts, m["call"], int(fd.group(1), 16) if fd else None)
            continue
        start = entered.pop(tid, None)
        if start is None or start[1] != m["call"]:
            continue  # the trace began inside this call
        ret = int(m["rest"].split()[0], 16)
        if ret >= 1 << 63:
            ret -= 1 << 64
        events.append((start[0], ts, pid_of[tid], tid, m["call"], start[2], ret))
    events.sort()
    return events


def main():
    trace, tids, leader, client = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    pid_of = {}
    for line in open(tids):
        fields = line.split(maxsplit=2)
        if len(fields) >= 2 and fields[0].isdigit() and fields[1].isdigit():
            pid_of[int(fields[1])] = int(fields[0])
    events = parse(trace, pid_of)
    starts = [e[0] for e in events]
    sends = [e for e in events if e[2] == client and e[4] == "sendto" and e[6] > 0]
    stages = {}

    def note(name, value):
        stages.setdefault(name, []).append(value * 1000)  # ms -> us

    puts = 0
    for request, following in zip(sends, sends[1:]):
        start, limit = request[0], following[0]
        window = events[bisect.bisect_left(starts, start) : bisect.bisect_left(starts, limit)]
        reply = next((e for e in window if e[2] == client and e[4] == "recvfrom" and e[6] > 0), None)
        leader_read = next((e for e in window if e[2] == leader and e[4] == "recvfrom" and e[6] == request[6]), None)
        if reply is None or leader_read is None:
            continue
        client_fd = leader_read[5]
        leader_sync = next((e for e in window if e[2] == leader and e[4] == "fdatasync" and e[0] >= leader_read[1]), None)
        first_append = next(
            (e for e in window if e[2] == leader and e[4] == "sendto" and e[5] != client_fd and e[0] >= leader_read[1]),
            None,
        )
        answer = next((e for e in window if e[2] == leader and e[4] == "sendto" and e[5] == client_fd), None)
        if leader_sync is None or first_append is None or answer is None:
            continue
        # Each follower's path to the leader; the first ack read is shown
        # stage by stage. The entry commits (and is applied: raft::ready)
        # once a second copy is durable: the leader's own, or the other
        # follower's ack.
        paths = []
        for pid in {e[2] for e in window if e[2] not in (leader, client)}:
            got = next((e for e in window if e[2] == pid and e[4] == "recvfrom" and e[0] >= first_append[0]), None)
            sync = next((e for e in window if e[2] == pid and e[4] == "fdatasync" and got and e[0] >= got[1]), None)
            ack = next((e for e in window if e[2] == pid and e[4] == "sendto" and sync and e[0] >= sync[1]), None)
            read = ack and next(
                (e for e in window if e[2] == leader and e[4] == "recvfrom" and e[5] != client_fd and e[0] >= ack[0]),
                None,
            )
            if got and sync and ack and read:
                paths.append((read[1], got, sync, ack, read))
        if not paths:
            continue
        paths.sort(key=lambda p: p[0])
        _, got, sync, ack, ack_read = paths[0]
        copies = sorted([leader_sync[1]] + [p[0] for p in paths])
        commit = copies[1]
        puts += 1
        note("client send -> leader reads the request", leader_read[1] - request[0])
        note("leader read -> AppendEntries sent", first_append[1] - leader_read[1])
        note("leader read -> leader fdatasync starts", leader_sync[0] - leader_read[1])
        note("leader fdatasync", leader_sync[1] - leader_sync[0])
        note("AppendEntries sent -> follower reads it", got[1] - first_append[1])
        note("follower read -> its fdatasync starts", sync[0] - got[1])
        note("follower fdatasync", sync[1] - sync[0])
        note("follower fdatasync ends -> ack sent", ack[1] - sync[1])
        note("ack sent -> leader reads it", ack_read[1] - ack[1])
        note("first ack read -> a second copy durable", max(0.0, commit - ack_read[1]))
        note("commit -> reply sent", answer[0] - commit)
        note("reply sent -> client reads it", reply[1] - answer[0])
        note("whole Put, traced", reply[1] - request[0])
    if puts == 0:
        sys.exit("no complete Put found in the trace")
    # Where the tail comes from: each stage's mean over the slowest 1% of
    # the Puts (by the whole Put; each stage list holds one value per Put,
    # in the same order).
    whole = stages["whole Put, traced"]
    tail = sorted(range(puts), key=lambda i: whole[i])[-max(1, puts // 100) :]
    print(f"{puts} Puts traced; microseconds: median, 90th percentile, mean over the slowest {len(tail)}")
    for name, values in stages.items():
        slow = statistics.mean(values[i] for i in tail)
        values = sorted(values)
        p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
        print(f"  {name:<42} {statistics.median(values):8.0f} {p90:8.0f} {slow:8.0f}")


if __name__ == "__main__":
    main()
