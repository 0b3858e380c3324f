#!/usr/bin/env bash
# TLS on vs off in one sitting (issue 16): benches/cluster.sh alternately
# without and with RAFTKV_TLS=1, ROUNDS times each (default 2), so that both
# see the same machine state; prints every run's summary line per workload.
#
#   benches/tls.sh [SECONDS_PER_RUN] [ROUNDS]     (defaults 10, 2)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
rounds=${2:-2}
cargo build --release --quiet
export RAFTKV_BIN=target/release/raftkv
for round in $(seq 1 "$rounds"); do
    for tls in 0 1; do
        echo "#### round $round, TLS $([ $tls = 1 ] && echo on || echo off)"
        RAFTKV_TLS=$tls benches/cluster.sh "$seconds" 2>&1 | grep -E '^==|ops/s'
    done
done
