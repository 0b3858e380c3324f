#!/usr/bin/env bash
# Unavailability when the leader stops (specs/performance.md, "Leader
# hand-over"): three `raftkv server` processes, `raftkv bench --mix appends`
# (8 clients) for SECONDS, and after 2 s the leader is stopped, either
# asked to (SIGTERM: it hands leadership over first) or killed (SIGKILL:
# the others wait out an election timeout). From each run's history: the
# longest window in which no operation completed, and the longest
# operation. The stopped node is restarted between runs.
#
#   benches/handover.sh [RUNS] [SECONDS]
#
# RAFTKV_BIN=path runs another build instead of building this one.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
seconds=${2:-5}
if [ -z "${RAFTKV_BIN:-}" ]; then
    cargo build --release --quiet
fi
bin=${RAFTKV_BIN:-target/release/raftkv}
# Below Linux's ephemeral range (32768 and up), clear of the other benches.
port=30379
peer=31379
servers=127.0.0.1:$port,127.0.0.1:$((port + 1)),127.0.0.1:$((port + 2))
root=$(mktemp -d /tmp/raftkv-handover.XXXXXX)
{
    for id in 0 1 2; do
        printf '[[nodes]]\npeer = "127.0.0.1:%d"\nclient = "127.0.0.1:%d"\n\n' $((peer + id)) $((port + id))
    done
} >"$root/cluster.toml"

declare -a pids
start() {
    "$bin" server --config "$root/cluster.toml" --id "$1" --data-dir "$root/node-$1" >>"$root/node-$1.log" 2>&1 &
    pids[$1]=$!
}
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$root"
}
trap cleanup EXIT
trap "exit 1" INT TERM
for id in 0 1 2; do start $id; done
"$bin" get ready --servers "$servers" --timeout 30 >/dev/null

leader() {
    for id in 0 1 2; do
        if redis-cli -p $((port + id)) info 2>/dev/null | tr -d '\r' | grep -qx "raft_role:Leader"; then
            echo "$id"
            return
        fi
    done
    echo none
}

# The longest gap between consecutive returns, and the longest call, in ms.
gaps() {
    python3 - "$1" <<'EOF'
import json, sys
ops = json.load(open(sys.argv[1]))
rets = sorted(o["return"] for o in ops if o.get("return") is not None)
gap = max((b - a for a, b in zip(rets, rets[1:])), default=0)
longest = max((o["return"] - o["call"] for o in ops if o.get("return") is not None), default=0)
print(f"{gap / 1000:.1f} {longest / 1000:.1f}")
EOF
}

printf "%-5s %-4s %-8s %22s %18s\n" run mode "stopped" "longest gap (ms)" "longest op (ms)"
for run in $(seq 1 "$runs"); do
    for mode in TERM KILL; do
        "$bin" bench --servers "$servers" --mix appends --clients 8 --keys 8 --seconds "$seconds" \
            --history-out "$root/history.json" >"$root/bench.out" 2>&1 &
        bench=$!
        sleep 2
        victim=$(leader)
        [ "$victim" = none ] && { echo "no leader"; exit 1; }
        kill -"$mode" "${pids[$victim]}"
        wait "${pids[$victim]}" 2>/dev/null || true
        wait $bench
        read -r gap longest < <(gaps "$root/history.json")
        printf "%-5s %-4s node %-3s %22s %18s\n" "$run" "$mode" "$victim" "$gap" "$longest"
        start "$victim"
        "$bin" get ready --servers "$servers" --timeout 30 >/dev/null
    done
done
grep -h "handed leadership" "$root"/node-*.log | sed 's/^.*handed/  handed/' | sort | uniq -c | head -5 || true
