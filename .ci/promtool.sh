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

. .ci/serve.sh
serve
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
