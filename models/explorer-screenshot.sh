#!/usr/bin/env bash
# Starts the Stateright Explorer on the raftkv model, opens it in headless
# Chromium and saves a screenshot, so a person can see that it works.
#   models/explorer-screenshot.sh [OUT.png]      (PORT=3000 by default)
# Installs Debian's chromium if it is missing (needs root, as on the dev machines).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-explorer.png}")
port=${PORT:-3000}

if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
cargo build --release -q -p raftkv-models
target/release/raftkv-models explore --addr "127.0.0.1:$port" >/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT

for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.1
done

profile=$(mktemp -d)
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --window-size=1400,1000 --virtual-time-budget=8000 \
    --screenshot="$out" "http://127.0.0.1:$port/#/steps/" 2>/dev/null
rm -rf "$profile"
echo "screenshot written to $out"
