#!/usr/bin/env bash
# Runs one cargo-fuzz target for a while: fuzz/run.sh TARGET SECONDS [libFuzzer flags...]
#
# Targets: decode, resp, node, lincheck, cluster, wal, snapshot, roundtrip (see specs/fuzzing.md).
# New inputs go to fuzz/work/TARGET (not committed); the committed seeds in
# fuzz/corpus/TARGET are read too. A crash lands in fuzz/artifacts/TARGET/.
#
# The code the targets run has no unsafe code (only the counting allocators
# do: the decode and resp targets', tests/common/counting_alloc.rs, and the
# server binary's, src/server/memory.rs, which no target links), so no
# sanitizer is built in by default (AddressSanitizer made the targets 2-8x
# slower, and safe Rust has nothing for it to find that a panic would not
# show); SANITIZER=address turns it on.
set -euo pipefail
cd "$(dirname "$0")"

if [ $# -lt 2 ]; then
    echo "usage: $0 TARGET SECONDS [libFuzzer flags...]" >&2
    exit 2
fi
target=$1
seconds=$2
shift 2

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# New inputs go to the first corpus directory; the committed seeds, if the
# target has any, are only read.
mkdir -p "work/$target"
corpora=("work/$target")
if [ -d "corpus/$target" ]; then
    corpora+=("corpus/$target")
fi
# Only the resp target needs the client codec (and so redis-protocol).
features=()
if [ "$target" = resp ]; then
    features=(--features resp)
fi
exec cargo +nightly fuzz run "${features[@]}" --sanitizer "${SANITIZER:-none}" "$target" "${corpora[@]}" -- \
    -max_total_time="$seconds" "$@"
