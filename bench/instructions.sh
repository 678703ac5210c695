#!/usr/bin/env bash
# Instructions per request under valgrind's callgrind: kvs GET, durable PUT
# and 5-put transactions, and bare hyper's GET, each server run under
# callgrind with wrk -t1 -c4 driving it (counters zeroed after a warm-up).
# Instruction counts are repeatable whatever else the machine does, unlike
# requests/s here; they count user-space work only (not the kernel, not the
# fsync's wait), and valgrind hides SHA-NI (SHA-256 runs in software).
#
# Usage: bash bench/instructions.sh        (BENCH_SECONDS per run, default 8)
# Prints one line per workload; keeps the callgrind files in
# target/callgrind/ for `callgrind_annotate --inclusive=yes FILE`.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
enter_repository
for tool in valgrind callgrind_control wrk curl; do
    command -v "$tool" >/dev/null || die "$tool is needed (apt-get install valgrind wrk curl)"
done
SECONDS_PER_RUN=${BENCH_SECONDS:-8}
cargo build --release --bin kvs --example bare_hyper >&2
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$TARGET_DIR/callgrind
mkdir -p "$OUT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/kvs-instructions.XXXXXX")
PID=
cleanup() { stop_process "$PID"; rm -rf "$TMP"; }
trap cleanup EXIT
ADMIN=kvs_$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')

measure() { # name script url
    local name=$1 script=$2 url=$3 out requests file total
    wrk -t1 -c4 -d2s -s "$BENCH_DIR/$script" "$url" >/dev/null
    callgrind_control -z "$PID" >/dev/null 2>&1
    out=$(wrk -t1 -c4 -d"${SECONDS_PER_RUN}s" -s "$BENCH_DIR/$script" "$url")
    callgrind_control -d "$PID" >/dev/null 2>&1
    requests=$(grep -o '^ *[0-9]* requests' <<<"$out" | awk '{print $1}')
    file=$(ls -t "$TMP"/cg.* | head -n1)
    total=$(grep -h '^totals:' "$file" | awk '{print $2}')
    cp "$file" "$OUT/$name.callgrind"
    printf '%-10s %8s requests  %14s instructions  %8s per request\n' \
        "$name" "$requests" "$total" "$((total / requests))"
}

port=$(free_port)
KVS_ADMIN_TOKEN=$ADMIN valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.%p" \
    "$TARGET_DIR/release/kvs" serve --listen "127.0.0.1:$port" --data-dir "$TMP/data" \
    --log-level warn >"$TMP/kvs.log" 2>&1 &
PID=$!
wait_http "http://127.0.0.1:$port/readyz" "$PID" kvs || die "kvs did not start under valgrind"
created=$(curl -sf -H "Authorization: Bearer $ADMIN" -H 'content-type: application/json' \
    -d '{"id":"bench","storage":"disk"}' "http://127.0.0.1:$port/v1/projects")
export BENCH_PROJECT=bench BENCH_KEYS=100 BENCH_VALUE_BYTES=100
BENCH_TOKEN=$(grep -o '"secret":"[^"]*"' <<<"$created" | head -n1 | cut -d'"' -f4)
export BENCH_TOKEN
wrk -t1 -c4 -d3s -s "$BENCH_DIR/preload.lua" "http://127.0.0.1:$port" >/dev/null
measure kvs-get get.lua "http://127.0.0.1:$port"
measure kvs-put put.lua "http://127.0.0.1:$port"
measure kvs-txn txn.lua "http://127.0.0.1:$port"
stop_process "$PID"

port=$(free_port)
valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.%p" \
    "$TARGET_DIR/release/examples/bare_hyper" "127.0.0.1:$port" >/dev/null 2>&1 &
PID=$!
wait_http "http://127.0.0.1:$port/" "$PID" bare_hyper || die "bare_hyper did not start under valgrind"
measure bare-get get.lua "http://127.0.0.1:$port"
