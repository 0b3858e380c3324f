#!/usr/bin/env bash
# How fast a server that lost its disk catches up (specs/performance.md,
# "Footprint"): a local 3-node cluster is filled with KEYS keys of
# VALUE_BYTES each (100 MB by default) through one pipelined connection;
# then a follower is killed (SIGKILL), its data directory wiped, and it is
# started again empty. It catches up by InstallSnapshot (the leader's latest
# snapshot) plus AppendEntries for the entries after it. Printed: the time
# from its start to applying the leader's commit index, and the rate.
# Then a new server joins (`raftkv member add 3`, a spare the launcher
# started outside the configuration): added as a learner, caught up by the
# same snapshot, promoted once a catch-up round is shorter than an
# election timeout. Printed: the command's time, and the learner's.
#
#   benches/catchup.sh [KEYS] [VALUE_BYTES] [-- extra `raftkv cluster` flags]
#
# RAFTKV_BIN=path runs another build instead of building this one.
set -euo pipefail
cd "$(dirname "$0")/.."
keys=${1:-3200}
value_bytes=${2:-32000}
shift $(($# < 2 ? $# : 2))
[ "${1:-}" = "--" ] && shift
if [ -z "${RAFTKV_BIN:-}" ]; then
    cargo build --release --quiet
fi
bin=${RAFTKV_BIN:-target/release/raftkv}
# Below Linux's ephemeral range (32768 and up): there, a port a client
# connection just used can sit in TIME_WAIT and refuse the listener.
port=28379
root=$(mktemp -d /tmp/raftkv-catchup.XXXXXX)
log=$root/launcher.log

"$bin" cluster --spares 1 --port $port --peer-port 29379 --data-dir "$root" "$@" >"$log" 2>&1 &
cluster=$!
cleanup() {
    kill -9 $cluster 2>/dev/null
    pkill -9 -f -- "--data-dir $root/node-" 2>/dev/null
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] && echo "kept $root" >&2 || rm -rf "$root"
}
trap cleanup EXIT
trap "exit 1" INT TERM
until grep -qs "A leader is elected" "$log"; do
    kill -0 $cluster 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.1
done

server_pid() { pgrep -f -- "--data-dir $root/node-$1( |$)" | head -1; }
info() { redis-cli -p $((port + $1)) info 2>/dev/null | tr -d '\r' | awk -F: -v f="$2" '$1 == f { print $2 }'; }
leader=""
for id in 0 1 2; do [ "$(info $id raft_role)" = Leader ] && leader=$id; done
[ -n "$leader" ] || { echo "no leader" >&2; exit 1; }
follower=$(((leader + 1) % 3))

# One connection, pipelined: each SET is answered once committed and applied.
t0=$(date +%s%N)
awk -v n="$keys" -v size="$value_bytes" 'BEGIN {
    value = "v"
    while (length(value) < size) value = value value
    value = substr(value, 1, size)
    for (i = 0; i < n; i++) {
        key = sprintf("key-%08d", i)
        printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(key), key, size, value
    }
}' | redis-cli -p $((port + leader)) --pipe >"$root/fill.out"
t1=$(date +%s%N)
grep -q "errors: 0" "$root/fill.out" || { cat "$root/fill.out" >&2; exit 1; }
mb=$(awk -v n="$keys" -v s="$value_bytes" 'BEGIN { printf "%.1f", n * s / 1e6 }')
echo "filled $keys keys x $value_bytes bytes ($mb MB) in $(( (t1 - t0) / 1000000 )) ms through node $leader"
target=$(info $leader raft_commit_index)
echo "leader: commit index $target, log from $(info $leader raft_first_index), $(info $leader raft_snapshots_taken) snapshots taken, the last $(info $leader raft_last_snapshot_bytes) bytes"

mkfifo "$root/hold"
exec 9<>"$root/hold"
kill -STOP $cluster
pid=$(server_pid $follower)
cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline")
kill -9 "$pid"
until flock -n "$root/node-$follower/lock" true; do sleep 0.01; done
rm -rf "$root/node-$follower"
t0=$(date +%s%N)
# shellcheck disable=SC2086 # the command line splits on spaces, as it was built
$cmd <"$root/hold" >>"$root/node-$follower.restart.log" 2>&1 &
tries=0
until [ "$(info $follower raft_applied_index)" -ge "$target" ] 2>/dev/null; do
    tries=$((tries + 1))
    if [ $tries -gt 4000 ]; then
        echo "node $follower did not catch up within 20 s:" >&2
        tail -20 "$root/node-$follower.restart.log" >&2
        exit 1
    fi
    sleep 0.005
done
t1=$(date +%s%N)
ms=$(( (t1 - t0) / 1000000 ))
echo "node $follower, wiped, applied index $target $ms ms after its start ($(info $follower raft_snapshots_installed) snapshot installed; its log now from $(info $follower raft_first_index)): $(awk -v mb="$mb" -v ms="$ms" 'BEGIN { printf "%.0f", mb / (ms / 1000) }') MB/s of state"

servers=127.0.0.1:$port,127.0.0.1:$((port + 1)),127.0.0.1:$((port + 2)),127.0.0.1:$((port + 3))
t0=$(date +%s%N)
"$bin" member add 3 --servers "$servers" --timeout 60 >"$root/join.out"
t1=$(date +%s%N)
ms=$(( (t1 - t0) / 1000000 ))
echo "node 3 joined (learner, caught up, promoted: $(tail -1 "$root/join.out")) in $ms ms; applied index $(info 3 raft_applied_index), $(info 3 raft_snapshots_installed) snapshot installed"
