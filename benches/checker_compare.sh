#!/usr/bin/env bash
# The checker's cost at two commits, by counts that do not move between runs:
# instructions and data references per check (valgrind's cachegrind), then
# wall time over ROUNDS alternating rounds. Wall time on this 2-core machine
# drifts by 20-25% between rounds; the counts settle what it cannot.
#
#   benches/checker_compare.sh OLD NEW [ROUNDS]     (default 6)
#
# Both histories are `benches/lincheck.rs`'s (same seeds, same shapes). Each
# commit is built in its own worktree under $WORK (default /tmp/checker-compare),
# removed at the end. Needs valgrind (`apt-get install valgrind`).
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?usage: benches/checker_compare.sh OLD NEW [ROUNDS]}
new=${2:?usage: benches/checker_compare.sh OLD NEW [ROUNDS]}
rounds=${3:-6}
work=${WORK:-/tmp/checker-compare}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }

rm -rf "$work" && mkdir -p "$work"
cleanup() {
    for c in old new; do git worktree remove --force "$work/$c" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

for c in old new; do
    git worktree add --force --detach "$work/$c" "${!c}" >/dev/null
    mkdir -p "$work/$c/examples"
    cat > "$work/$c/examples/checker_probe.rs" <<'EOF'
// Written by benches/checker_compare.sh: `checker_probe many|heavy N` checks
// one of benches/lincheck.rs's histories N times.
use raftkv::lincheck::gen::generate;
use raftkv::lincheck::{check, Budget, Verdict};
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let history = match args[1].as_str() {
        "many" => generate(1, 10_000, 16, 100, 45, 10),
        _ => generate(2, 1_000, 8, 1, 90, 0),
    };
    for _ in 0..args[2].parse::<usize>().unwrap() {
        assert_eq!(check(std::hint::black_box(&history), Budget::default()), Verdict::Ok);
    }
}
EOF
    # Each worktree has its own target directory: with a shared one, cargo
    # compares source mtimes with the last build's outputs and would hand the
    # second commit the first one's binary.
    (cd "$work/$c" && CARGO_TARGET_DIR="$work/target-$c" cargo build --release --quiet --example checker_probe)
    cp "$work/target-$c/release/examples/checker_probe" "$work/probe-$c"
done

# Per check: (counts for 3 checks - counts for none) / 3, so generating the
# history cancels out.
counts() { # probe shape n -> "instructions data_refs d1_misses"
    valgrind --tool=cachegrind --cache-sim=yes --cachegrind-out-file=/dev/null "$1" "$2" "$3" 2>&1 |
        awk '/I *refs:/ {gsub(",","",$4); i=$4} /D *refs:/ {gsub(",","",$4); d=$4}
             /D1 *misses:/ {gsub(",","",$4); m=$4} END {print i, d, m}'
}
echo "per check          instructions    data refs   D1 misses"
for shape in many heavy; do
    for c in old new; do
        read -r i0 d0 m0 < <(counts "$work/probe-$c" "$shape" 0)
        read -r i3 d3 m3 < <(counts "$work/probe-$c" "$shape" 3)
        printf '%-5s %-10s %14d %12d %11d\n' "$shape" "$c" $(((i3 - i0) / 3)) $(((d3 - d0) / 3)) $(((m3 - m0) / 3))
    done
done

# Even rounds run new first, so a machine that drifts slower (it does) does
# not always favour the same build.
echo "wall time per check, µs"
for shape in many heavy; do
    n=$([ "$shape" = many ] && echo 200 || echo 1000)
    for round in $(seq 1 "$rounds"); do
        order=$([ $((round % 2)) = 1 ] && echo "old new" || echo "new old")
        declare -A took=()
        for c in $order; do
            start=$(date +%s%N)
            "$work/probe-$c" "$shape" "$n"
            took[$c]=$(( ($(date +%s%N) - start) / n / 1000 ))
        done
        printf '%-5s round %d: old %6d  new %6d\n' "$shape" "$round" "${took[old]}" "${took[new]}"
    done
done
