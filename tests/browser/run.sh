#!/usr/bin/env bash
# The web view's browser test: starts target/release/kvs on a free port with
# a fresh data dir, then drives the page in headless Chromium (Debian's
# package) with web_view.mjs. Screenshots go to target/browser/ (or
# $SCREENSHOT_DIR). Installs what a fresh machine lacks: chromium (apt, as
# root) and playwright-core (npm ci, from package-lock.json).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
bin="$target/release/kvs"
export SCREENSHOT_DIR="${SCREENSHOT_DIR:-$target/browser}"

if ! command -v chromium >/dev/null 2>&1; then
    echo "installing chromium"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
export CHROMIUM="$(command -v chromium)"
test -x "$bin" || (cd "$root" && cargo build --release --bin kvs)
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

data="$(mktemp -d)"
log="$data/server.log"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export KVS_URL="http://127.0.0.1:$port"
export KVS_ADMIN_TOKEN="kvs_$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
KVS_ADMIN_TOKEN="$KVS_ADMIN_TOKEN" "$bin" serve --listen "127.0.0.1:$port" --data-dir "$data/data" >"$log" 2>&1 &
server=$!
stop() {
    kill -TERM "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
    rm -rf "$data"
}
trap stop EXIT

for _ in $(seq 100); do
    curl -fsS "$KVS_URL/readyz" >/dev/null 2>&1 && break
    kill -0 "$server" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.1
done
curl -fsS "$KVS_URL/readyz" >/dev/null || { echo "the server did not get ready"; cat "$log"; exit 1; }

cd "$here"
if ! node web_view.mjs; then
    echo "== server log"
    cat "$log"
    exit 1
fi
echo "screenshots in $SCREENSHOT_DIR"
