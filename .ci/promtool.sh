#!/usr/bin/env bash
# `promtool check metrics` on the release binary's /metrics: at start (the
# counters of rare events at 0), after traffic (per-route families, a watch,
# a 401) and after a project is deleted. promtool is in Debian's
# `prometheus` package, installed here if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=$(realpath "${1:-target/release/kvs}")
if ! command -v promtool >/dev/null; then
    apt-get update -qq && apt-get install -y -qq prometheus >/dev/null
fi

work=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
"$BIN" serve --listen "127.0.0.1:$port" --data-dir "$work/data" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do
    curl -fs "$url/readyz" >/dev/null && break
    sleep 0.1
done
admin=$(cat "$work/data/admin-token")
auth=(-H "Authorization: Bearer $admin")

check() {
    echo "promtool check metrics ($1)"
    curl -fs "${auth[@]}" "$url/metrics" >"$work/metrics.txt"
    promtool check metrics <"$work/metrics.txt"
}

check "at start"
curl -fs "${auth[@]}" --json '{"id": "p"}' "$url/v1/projects" >/dev/null
curl -fs "${auth[@]}" -X PUT -H 'Content-Type: text/plain' --data-binary v "$url/v1/projects/p/kv/k" >/dev/null
curl -s -H "Authorization: Bearer kvs_unknown" "$url/v1/projects/p/kv/k" >/dev/null
curl -s "${auth[@]}" --max-time 1 "$url/v1/projects/p/watch" >/dev/null || true
check "after traffic"
curl -fs "${auth[@]}" -X DELETE "$url/v1/projects/p"
if curl -fs "${auth[@]}" "$url/metrics" | grep -q 'project="p"'; then
    echo "the deleted project's series are still in /metrics" >&2
    exit 1
fi
check "after a project is deleted"
