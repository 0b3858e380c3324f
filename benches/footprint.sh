#!/usr/bin/env bash
# Disk and memory under steady load (specs/performance.md, "Footprint"): a
# local 3-node cluster, `raftkv bench --clients 64 --keys 1000` (Puts) for
# SECONDS, and every STEP seconds each node's data directory size, RSS and
# live heap (INFO's used_memory: allocated and not freed).
# At the end: the bench's own report, and each node's restart time (the
# time from starting the process to its first answered INFO, after a
# SIGKILL) with what it restarted from.
#
#   benches/footprint.sh [SECONDS] [STEP] [-- extra `raftkv cluster` flags]
#
#   benches/footprint.sh 60 10                                         # snapshots on (defaults)
#   benches/footprint.sh 60 10 -- --snapshot-entries 0 --snapshot-mib 0 # never compact
#
# RAFTKV_BIN=path runs another build instead of building this one.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
step=${2:-10}
shift $(($# < 2 ? $# : 2))
[ "${1:-}" = "--" ] && shift
if [ -z "${RAFTKV_BIN:-}" ]; then
    cargo build --release --quiet
fi
bin=${RAFTKV_BIN:-target/release/raftkv}
# Below Linux's ephemeral range (32768 and up): there, a port a client
# connection just used can sit in TIME_WAIT and refuse the listener.
port=26379
servers=127.0.0.1:$port,127.0.0.1:$((port + 1)),127.0.0.1:$((port + 2))
root=$(mktemp -d /tmp/raftkv-footprint.XXXXXX)
log=$root/launcher.log

"$bin" cluster --port $port --peer-port 27379 --data-dir "$root" "$@" >"$log" 2>&1 &
cluster=$!
bench=""
cleanup() {
    [ -n "$bench" ] && kill "$bench" 2>/dev/null
    kill -9 $cluster 2>/dev/null
    pkill -9 -f -- "--data-dir $root/node-" 2>/dev/null
    wait 2>/dev/null || true
    rm -rf "$root"
}
trap cleanup EXIT
trap "exit 1" INT TERM
until grep -qs "A leader is elected" "$log"; do
    kill -0 $cluster 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.1
done

# The server process of node $1 (a child of the launcher).
server_pid() { pgrep -f -- "--data-dir $root/node-$1( |$)" | head -1; }
rss_mib() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "?"; }
disk_mib() { du -sb "$root/node-$1" | awk '{ printf "%.1f", $1 / 1048576 }'; }
info() { redis-cli -p $((port + $1)) info 2>/dev/null | tr -d '\r' | awk -F: -v f="$2" '$1 == f { print $2 }'; }

"$bin" bench --servers "$servers" --mix puts --clients 64 --seconds "$seconds" --keys 1000 \
    --key-size 16 --value-size 100 >"$root/bench.out" 2>&1 &
bench=$!
printf "%6s" "t (s)"
for id in 0 1 2; do printf " | node %s disk MiB  RSS MiB  heap MiB  log entries  snapshots" $id; done
echo
start=$(date +%s)
while kill -0 $bench 2>/dev/null; do
    sleep "$step"
    printf "%6s" $(($(date +%s) - start))
    for id in 0 1 2; do
        pid=$(server_pid $id)
        first=$(info $id raft_first_index)
        last=$(info $id raft_last_index)
        entries=$(( ${last:-0} - ${first:-1} + 1 ))
        heap=$(info $id used_memory | awk '{ printf "%.1f", $1 / 1048576 }')
        printf " | %16s  %7s  %8s  %11s  %9s" "$(disk_mib $id)" "$(rss_mib "$pid")" "$heap" "$entries" \
            "$(info $id raft_snapshots_taken)"
    done
    echo
done
wait $bench || true
bench=""
cat "$root/bench.out"

# Restart time: SIGKILL each server in turn and start it again by hand
# with the launcher's command line, timed to its first answered PING (the
# client port opens after recovery). Its stdin is a FIFO this script holds
# open, so with --exit-with-parent it stops when the script does.
mkfifo "$root/hold"
exec 9<>"$root/hold"
# Stopped, the launcher does not notice its children exit (it would stop
# the cluster); the cleanup kills it.
kill -STOP $cluster
for id in 0 1 2; do
    pid=$(server_pid $id)
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline")
    applied=$(info $id raft_applied_index)
    first=$(info $id raft_first_index)
    kill -9 "$pid"
    # The stopped launcher does not reap it (it stays a zombie), so wait
    # for what matters: its lock on the storage is gone.
    until flock -n "$root/node-$id/lock" true; do sleep 0.01; done
    t0=$(date +%s%N)
    # shellcheck disable=SC2086 # the command line splits on spaces, as it was built
    $cmd <"$root/hold" >>"$root/node-$id.restart.log" 2>&1 &
    tries=0
    until redis-cli -p $((port + id)) ping >/dev/null 2>&1; do
        tries=$((tries + 1))
        if [ $tries -gt 2000 ]; then
            echo "node $id did not answer within 10 s of its restart:" >&2
            cat "$root/node-$id.restart.log" >&2
            exit 1
        fi
        sleep 0.005
    done
    t1=$(date +%s%N)
    echo "node $id restarted in $(( (t1 - t0) / 1000000 )) ms (it had applied $applied entries; its log started at $first)"
done
