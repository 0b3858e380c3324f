#!/usr/bin/env bash
# Where one client's Put spends its time (issue 17, item 1): a local 3-node
# cluster, a 1-client Put load, and a `perf record` of the sendto, recvfrom
# and fdatasync calls of the three servers and the client for a second;
# benches/put_timeline.py cuts the trace into stages per Put (loopback,
# node thread, fsyncs, the commit, the reply) and prints medians. The same
# load runs untraced first, for the latency the tracing does not inflate,
# and then `raftkv floor` measures the terms of issue 17's bar untraced
# (one Put's log write and fdatasync, alone and three at once as a Put's
# replicas make them on this one disk; a loopback round trip with both ends
# on one core and on two).
# Root, and perf (Debian's linux-perf).
#
#   benches/put_breakdown.sh [SECONDS]        (default 5, untraced run)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
command -v perf >/dev/null || { echo "needs perf (apt-get install linux-perf)"; exit 1; }
if [ -z "${RAFTKV_BIN:-}" ]; then
    cargo build --release --quiet
fi
bin=${RAFTKV_BIN:-target/release/raftkv}
port=22379
servers=127.0.0.1:$port,127.0.0.1:$((port + 1)),127.0.0.1:$((port + 2))
work=$(mktemp -d /tmp/raftkv-put-breakdown.XXXXXX)
"$bin" cluster --port $port --peer-port 23379 >"$work/cluster.log" 2>&1 &
cluster=$!
load=""
cleanup() {
    kill $cluster $load 2>/dev/null || true
    wait $cluster $load 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
until grep -q "A leader is elected" "$work/cluster.log"; do
    kill -0 $cluster 2>/dev/null || { cat "$work/cluster.log"; exit 1; }
    sleep 0.1
done
info() { redis-cli -p "$1" info 2>/dev/null | tr -d '\r' | grep "^$2:" | cut -d: -f2; }
pids=() leader=""
for p in $port $((port + 1)) $((port + 2)); do
    pid=$(info $p process_id)
    pids+=("$pid")
    [ "$(info $p raft_role)" = Leader ] && leader=$pid
done
[ -n "$leader" ] || { echo "no leader"; exit 1; }

echo "== untraced: 1 client, Puts, ${seconds} s"
"$bin" bench --servers "$servers" --mix puts --clients 1 --seconds "$seconds" | grep -E 'writes|fsyncs'

echo "== untraced, the bar's terms: one write and loopback round trips (raftkv floor)"
"$bin" floor --seconds 3

echo "== traced: 1 s of a 4 s run"
"$bin" bench --servers "$servers" --mix puts --clients 1 --seconds 4 >"$work/bench.log" 2>&1 &
load=$!
sleep 1.5 # past the client's connection set-up, into the steady state
# Which thread belongs to which process (perf script names threads only).
for p in "${pids[@]}" $load; do
    for t in /proc/$p/task/[0-9]*; do echo "$p $(basename "$t") $(cat "$t/comm")"; done
done >"$work/tids.txt" 2>/dev/null
events=""
for call in sendto recvfrom fdatasync; do events="$events${events:+,}syscalls:sys_enter_$call,syscalls:sys_exit_$call"; done
# perf record, not perf trace: the events go to a ring buffer and are
# formatted afterwards, which slows the traced calls far less.
perf record -q -e "$events" -p "$(IFS=,; echo "${pids[*]},$load")" -o "$work/perf.data" -- sleep 1 2>/dev/null
perf script -i "$work/perf.data" >"$work/trace.txt" 2>/dev/null
client=$load
wait $load || true
load=""
python3 benches/put_timeline.py "$work/trace.txt" "$work/tids.txt" "$leader" "$client"
