#!/usr/bin/env bash
# One client's Puts while the leader's disk is slow: three `raftkv server`
# processes on 127.0.0.1, node 0 (made the leader) started with
# RAFTKV_FAULT=storage-slow-ms=N, which adds N ms to each of its storage
# writes while a trigger file exists (src/server/faults.rs). Each round
# runs the load with the trigger absent, then present.
#
#   benches/slow_leader_disk.sh [SECONDS] [SLOW_MS] [ROUNDS]    (5, 2, 1)
#
# What it shows (specs/performance.md): a node applies a committed entry
# before its own write of it is reported (raft::ready), so the leader's
# slow disk holds no reply once both followers hold the entry; a node that
# waited for its own write would answer no faster than its disk.
# RAFTKV_BIN=path runs another build (otherwise this one, built release).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
slow_ms=${2:-2}
rounds=${3:-1}
if [ -z "${RAFTKV_BIN:-}" ]; then
    cargo build --release --quiet --bin raftkv
fi
bin=${RAFTKV_BIN:-target/release/raftkv}

# Below Linux's ephemeral range, clear of benches/cluster.sh's ports.
peer=22479
client=22489
servers=127.0.0.1:$client,127.0.0.1:$((client + 1)),127.0.0.1:$((client + 2))
dir=$(mktemp -d /tmp/raftkv-slow-disk.XXXXXX)
pids=()
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

{
    for i in 0 1 2; do
        echo "[[nodes]]"
        echo "peer = \"127.0.0.1:$((peer + i))\""
        echo "client = \"127.0.0.1:$((client + i))\""
    done
} >"$dir/cluster.toml"
for i in 0 1 2; do
    fault=()
    [ "$i" = 0 ] && fault=(env RAFTKV_FAULT="storage-slow-ms=$slow_ms" RAFTKV_FAULT_TRIGGER="$dir/slow")
    "${fault[@]}" "$bin" server --config "$dir/cluster.toml" --id "$i" --data-dir "$dir/node-$i" \
        >"$dir/node-$i.log" 2>&1 &
    pids+=($!)
done

# Node 0 leads (an election, then a transfer if another node won): a
# bounded number of tries, each waiting at most --timeout.
for try in $(seq 20); do
    if "$bin" transfer-leader 0 --servers "$servers" --timeout 2 >/dev/null 2>&1; then break; fi
    [ "$try" = 20 ] && { echo "node 0 never became the leader"; tail -5 "$dir"/node-*.log; exit 1; }
    sleep 0.5
done

for round in $(seq "$rounds"); do
    for disk in fast slow; do
        if [ $disk = slow ]; then touch "$dir/slow"; else rm -f "$dir/slow"; fi
        echo "== round $round, leader's disk $disk$([ $disk = slow ] && echo " (+$slow_ms ms per write)")"
        "$bin" bench --servers "$servers" --mix puts --clients 1 --seconds "$seconds" \
            --keys 1000 --key-size 16 --value-size 100 | grep -E "ops/s|fsyncs"
    done
done
rm -f "$dir/slow"
