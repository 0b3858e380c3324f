#!/usr/bin/env bash
# The real-server benchmark of specs/performance.md: a local 3-node cluster
# (fsync on: redb Durability::Immediate), then `raftkv bench` with 1, 16 and
# 64 closed-loop clients for Puts and for linearizable Gets (16-byte keys
# among 1,000, 100-byte values), then redis-benchmark's SET if installed.
#
# With `etcd` on the PATH (Debian's etcd-server), the same load runs against
# a local 3-member etcd (fsync on, its defaults) in the same sitting: each
# workload on raftkv, then at once on etcd, through etcd's gRPC API to its
# leader (`raftkv bench --etcd`, built with `--features etcd`, which needs
# protoc: Debian's protobuf-compiler and libprotobuf-dev). A table of both
# and their ratio closes the run. RAFTKV_ETCD=0 skips etcd.
#
# RAFTKV_CHECK=1 records every run's history and checks it for
# linearizability (`bench --check`), etcd's too; the run fails on a
# violation.
#
#   benches/cluster.sh [SECONDS_PER_RUN]      (default 10)
#
# RAFTKV_ROUNDS=N runs the whole set N times against the same clusters
# (default 1). With etcd beside it, the table then gives each round's
# ratio and their median: this machine's figures move by 20% and more
# between runs, so read ratios, taken seconds apart, over several rounds.
#
# RAFTKV_BIN=path runs another build of raftkv instead of building this one
# (to compare two versions in one sitting: run them alternately).
# RAFTKV_LEASE=1 runs the cluster with `--lease-reads` (Gets answered under
# the leader lease, no round of messages; specs/protocol.md, "Lease reads").
# RAFTKV_TLS=1 runs the cluster with `--tls` (every port, peers mutually
# authenticated) and the clients over TLS: run it beside a plain run to
# compare (benches/tls.sh does both, alternating).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
with_etcd=0
if [ "${RAFTKV_ETCD:-1}" = 1 ] && [ "${RAFTKV_TLS:-0}" != 1 ]; then
    if ! command -v etcd >/dev/null; then
        echo "(no etcd on the PATH: raftkv alone; apt-get install etcd-server for the side-by-side run)"
    elif ! command -v protoc >/dev/null || [ ! -e /usr/include/google/protobuf/descriptor.proto ]; then
        echo "(etcd found, but no protoc to build the etcd client: apt-get install protobuf-compiler libprotobuf-dev)"
    else
        with_etcd=1
    fi
fi
if [ -z "${RAFTKV_BIN:-}" ]; then
    features=()
    [ $with_etcd = 1 ] && features=(--features etcd)
    cargo build --release --quiet "${features[@]}"
fi
bin=${RAFTKV_BIN:-target/release/raftkv}
# Below Linux's ephemeral range (32768 and up): there, a port a client
# connection just used can sit in TIME_WAIT and refuse the listener.
port=22379
servers=127.0.0.1:$port,127.0.0.1:$((port + 1)),127.0.0.1:$((port + 2))

cluster_flags=()
[ "${RAFTKV_TLS:-0}" = 1 ] && cluster_flags=(--tls)
[ "${RAFTKV_LEASE:-0}" = 1 ] && cluster_flags+=(--lease-reads) && echo "(raftkv with lease reads)"
"$bin" cluster --port $port --peer-port 23379 "${cluster_flags[@]}" >/tmp/raftkv-bench-cluster.log 2>&1 &
cluster=$!
etcd_pids=()
etcd_dir=""
results=$(mktemp)
cleanup() {
    kill $cluster "${etcd_pids[@]}" 2>/dev/null || true
    wait $cluster "${etcd_pids[@]}" 2>/dev/null || true
    [ -n "$etcd_dir" ] && rm -rf "$etcd_dir"
    rm -f "$results" "$results.run"
}
trap cleanup EXIT
# The launcher prints this line once a read went through.
until grep -q "A leader is elected" /tmp/raftkv-bench-cluster.log; do
    kill -0 $cluster 2>/dev/null || { cat /tmp/raftkv-bench-cluster.log; exit 1; }
    sleep 0.1
done
cacert=()
if [ "${RAFTKV_TLS:-0}" = 1 ]; then
    cacert=(--cacert "$(grep -o -- '--cacert [^ ]*' /tmp/raftkv-bench-cluster.log | head -1 | cut -d' ' -f2)")
fi

etcd_servers=""
if [ $with_etcd = 1 ]; then
    # Three members on loopback, each with its own data directory on the
    # same disk as raftkv's (both clusters' directories are under /tmp).
    etcd_dir=$(mktemp -d /tmp/raftkv-bench-etcd.XXXXXX)
    members=""
    for i in 0 1 2; do
        members="$members${members:+,}e$i=http://127.0.0.1:$((25379 + i))"
        etcd_servers="$etcd_servers${etcd_servers:+,}127.0.0.1:$((24379 + i))"
    done
    for i in 0 1 2; do
        etcd --name e$i --data-dir "$etcd_dir/e$i" --logger zap --log-outputs "$etcd_dir/e$i.log" \
            --listen-client-urls http://127.0.0.1:$((24379 + i)) --advertise-client-urls http://127.0.0.1:$((24379 + i)) \
            --listen-peer-urls http://127.0.0.1:$((25379 + i)) --initial-advertise-peer-urls http://127.0.0.1:$((25379 + i)) \
            --initial-cluster "$members" --initial-cluster-state new --initial-cluster-token raftkv-bench \
            >/dev/null 2>&1 &
        etcd_pids+=($!)
    done
    echo "etcd $(etcd --version | head -1 | cut -d' ' -f3): 3 members, client ports 24379-24381"
fi

# One workload on one system; its summary lines go to $results too.
run() {
    local system=$1 mix=$2 clients=$3 status=0
    echo "== $system, $mix, $clients clients"
    local target=(--servers "$servers" "${cacert[@]}")
    [ "$system" = etcd ] && target=(--servers "$etcd_servers" --etcd)
    local check=()
    [ "${RAFTKV_CHECK:-0}" = 1 ] && check=(--check)
    "$bin" bench "${target[@]}" "${check[@]}" --mix "$mix" --clients "$clients" --seconds "$seconds" \
        --keys 1000 --key-size 16 --value-size 100 >"$results.run" 2>&1 || status=$?
    cat "$results.run"
    awk -v key="$system $mix $clients" -v round="$round" \
        '/^  (writes|gets) / { print key, round, $4, $10 } /fsyncs:/ { print key, round, "fsyncs", $6 }' \
        "$results.run" >>"$results"
    return $status
}

mixes="puts gets"
# A run's history starts from an empty store as far as the checker knows:
# Gets after Puts would read values written outside their history. So when
# checking, the Gets run first, while every key is still missing.
[ "${RAFTKV_CHECK:-0}" = 1 ] && mixes="gets puts"
rounds=${RAFTKV_ROUNDS:-1}
for round in $(seq "$rounds"); do
    [ "$rounds" -gt 1 ] && echo "==== round $round of $rounds"
    for mix in $mixes; do
        for clients in 1 16 64; do
            run raftkv $mix $clients
            if [ $with_etcd = 1 ]; then run etcd $mix $clients; fi
        done
    done
done

if [ $with_etcd = 1 ]; then
    echo
    echo "== side by side (this run): ops/s, p99 ms, fsyncs per operation; ratio = raftkv / etcd"
    [ "$rounds" -gt 1 ] && echo "   (figures of the last round; then each round's ratio and their median)"
    printf "%-5s %7s  %22s  %22s  %6s  %9s  %15s\n" mix clients "raftkv ops/s (p99)" "etcd ops/s (p99)" ratio "p99 ratio" \
        "fsyncs/op r, e"
    awk -v rounds="$rounds" '
        # The median of the n values a[1..n] (sorted here, in place).
        function median(a, n,    i, j, t) {
            for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        $5 == "fsyncs" { fsyncs[$1 " " $2 " " $3 " " $4] = $6; next }
        { ops[$1 " " $2 " " $3 " " $4] = $5; p99[$1 " " $2 " " $3 " " $4] = $6 }
        END {
            split("puts gets", mixes, " "); split("1 16 64", counts, " ")
            for (m = 1; m <= 2; m++) for (c = 1; c <= 3; c++) {
                n = 0; list = ""; delete ratios; delete p99s
                for (k = 1; k <= rounds; k++) {
                    r = "raftkv " mixes[m] " " counts[c] " " k; e = "etcd " mixes[m] " " counts[c] " " k
                    if (!(r in ops) || !(e in ops) || ops[e] == 0 || p99[e] == 0) continue
                    n++; ratios[n] = ops[r] / ops[e]; p99s[n] = p99[r] / p99[e]
                    list = list sprintf("%s%.2f", n > 1 ? ", " : "", ratios[n]); last_r = r; last_e = e
                }
                if (n == 0) continue
                printf "%-5s %7s  %13.0f (%5.2f ms)  %13.0f (%5.2f ms)  %5.2fx  %8.2fx  %6s, %6s", mixes[m], counts[c],
                    ops[last_r], p99[last_r], ops[last_e], p99[last_e], ratios[n], p99s[n], fsyncs[last_r], fsyncs[last_e]
                if (rounds > 1) printf "   rounds: %s; median %.2fx, p99 ratio median %.2fx", list, median(ratios, n), median(p99s, n)
                printf "\n"
            }
        }' "$results"
fi

if command -v redis-benchmark >/dev/null && [ "${RAFTKV_TLS:-0}" != 1 ]; then
    # Not `grep -q`: it would stop reading early, redis-cli would die of
    # SIGPIPE, and pipefail would fail the pipeline.
    leader=$(for p in $port $((port + 1)) $((port + 2)); do
        if redis-cli -p $p info | grep "raft_role:Leader" >/dev/null; then echo $p; fi; done | head -1)
    for clients in 1 16 64; do
        echo "== redis-benchmark SET against the leader (port $leader), $clients clients"
        redis-benchmark -p "$leader" -c $clients -n $((clients * 2000)) -r 1000 -d 100 -t set -q | tr "\r" "\n" |
            awk '/requests per second/ { last = $0 } END { print last }'
    done
fi
