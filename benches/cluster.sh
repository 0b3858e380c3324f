#!/usr/bin/env bash
# The real-server benchmark of specs/performance.md: a local 3-node cluster
# (fsync on: redb Durability::Immediate), then `raftkv bench` with 1, 16 and
# 64 closed-loop clients for Puts and for linearizable Gets (16-byte keys
# among 1,000, 100-byte values), then redis-benchmark's SET if installed.
#
#   benches/cluster.sh [SECONDS_PER_RUN]      (default 10)
#
# RAFTKV_BIN=path runs another build of raftkv instead of building this one
# (to compare two versions in one sitting: run them alternately).
# RAFTKV_TLS=1 runs the cluster with `--tls` (every port, peers mutually
# authenticated) and the clients over TLS: run it beside a plain run to
# compare (benches/tls.sh does both, alternating).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
if [ -z "${RAFTKV_BIN:-}" ]; then
    cargo build --release --quiet
fi
bin=${RAFTKV_BIN:-target/release/raftkv}
# Below Linux's ephemeral range (32768 and up): there, a port a client
# connection just used can sit in TIME_WAIT and refuse the listener.
port=22379
servers=127.0.0.1:$port,127.0.0.1:$((port + 1)),127.0.0.1:$((port + 2))

tls_flag=()
[ "${RAFTKV_TLS:-0}" = 1 ] && tls_flag=(--tls)
"$bin" cluster --port $port --peer-port 23379 "${tls_flag[@]}" >/tmp/raftkv-bench-cluster.log 2>&1 &
cluster=$!
trap 'kill $cluster 2>/dev/null; wait $cluster 2>/dev/null || true' EXIT
# The launcher prints this line once a read went through.
until grep -q "A leader is elected" /tmp/raftkv-bench-cluster.log; do
    kill -0 $cluster 2>/dev/null || { cat /tmp/raftkv-bench-cluster.log; exit 1; }
    sleep 0.1
done
cacert=()
if [ "${RAFTKV_TLS:-0}" = 1 ]; then
    cacert=(--cacert "$(grep -o -- '--cacert [^ ]*' /tmp/raftkv-bench-cluster.log | head -1 | cut -d' ' -f2)")
fi

for mix in puts gets; do
    for clients in 1 16 64; do
        echo "== $mix, $clients clients"
        "$bin" bench --servers "$servers" "${cacert[@]}" --mix $mix --clients $clients --seconds "$seconds" \
            --keys 1000 --key-size 16 --value-size 100
    done
done

if command -v redis-benchmark >/dev/null && [ "${RAFTKV_TLS:-0}" != 1 ]; then
    # Not `grep -q`: it would stop reading early, redis-cli would die of
    # SIGPIPE, and pipefail would fail the pipeline.
    leader=$(for p in $port $((port + 1)) $((port + 2)); do
        if redis-cli -p $p info | grep "raft_role:Leader" >/dev/null; then echo $p; fi; done | head -1)
    for clients in 1 16 64; do
        echo "== redis-benchmark SET against the leader (port $leader), $clients clients"
        redis-benchmark -p "$leader" -c $clients -n $((clients * 2000)) -r 1000 -d 100 -t set -q | tr "\r" "\n" | tail -n 1
    done
fi
