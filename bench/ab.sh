#!/usr/bin/env bash
# Interleaved A/B of two kvs binaries: durable PUT and GET at 64 connections,
# each on its own fresh data directory, run after run, so that the machine's
# noise falls on both alike.
#
#   bash bench/ab.sh OLD_BIN NEW_BIN [ROUNDS] [SECONDS]
#
# Prints one line per binary per round; compare the medians. Needs wrk and curl.
# Example: build the older commit in a git worktree with its own
# CARGO_TARGET_DIR, then `bash bench/ab.sh /tmp/old/release/kvs target/release/kvs`.
set -euo pipefail
OLD=${1:?usage: ab.sh OLD_BIN NEW_BIN [ROUNDS] [SECONDS]}
NEW=${2:?usage: ab.sh OLD_BIN NEW_BIN [ROUNDS] [SECONDS]}
ROUNDS=${3:-3}
SECONDS_PER_RUN=${4:-5}
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/kvs-ab.XXXXXX")
TOKEN=kvs_$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=' | head -c 43)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

start() { # name bin port
    KVS_ADMIN_TOKEN=$TOKEN KVS_LOG_LEVEL=warn "$2" serve --listen "127.0.0.1:$3" \
        --data-dir "$TMP/$1" >"$TMP/$1.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do curl -fs -o /dev/null "127.0.0.1:$3/healthz" && break; sleep 0.1; done
    curl -fs -o /dev/null -H "Authorization: Bearer $TOKEN" --json '{"id":"bench"}' \
        "127.0.0.1:$3/v1/projects"
}

port() { echo $((20000 + RANDOM % 40000)); }
OLD_PORT=$(port)
NEW_PORT=$(port)
start old "$OLD" "$OLD_PORT"
start new "$NEW" "$NEW_PORT"
export BENCH_TOKEN=$TOKEN BENCH_KEYS=10000
for p in "$OLD_PORT" "$NEW_PORT"; do
    wrk -t1 -c64 -d8s -s "$BENCH_DIR/preload.lua" "http://127.0.0.1:$p" >/dev/null 2>&1
done
field() { grep -o "$1=[0-9.]*" | cut -d= -f2; }
for round in $(seq "$ROUNDS"); do
    for name in old new; do
        p=$([[ $name == old ]] && echo "$OLD_PORT" || echo "$NEW_PORT")
        put=$(wrk -t2 -c64 -d"${SECONDS_PER_RUN}s" --timeout 5s -s "$BENCH_DIR/put.lua" \
            "http://127.0.0.1:$p" 2>&1 | grep BENCH_RESULT)
        get=$(wrk -t2 -c64 -d"${SECONDS_PER_RUN}s" --timeout 5s -s "$BENCH_DIR/get.lua" \
            "http://127.0.0.1:$p" 2>&1 | grep BENCH_RESULT)
        printf 'round %s %s  PUT %8.0f/s p99 %5s us   GET %8.0f/s p99 %5s us\n' "$round" "$name" \
            "$(field rps <<<"$put")" "$(field p99_us <<<"$put")" \
            "$(field rps <<<"$get")" "$(field p99_us <<<"$get")"
    done
done
