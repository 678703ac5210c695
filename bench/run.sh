#!/usr/bin/env bash
# The kvs benchmark: GET and durable PUT throughput with p50/p99 at 1 and 64
# connections (100-byte values over 10,000 keys), next to a bare hyper server
# that answers a fixed body, all in one run, driven by wrk; then, at 64
# connections, transactions of 5 puts and compare-and-set PUTs (If-Match). See
# bench/README.md for what it measures and how to read it.
#
# Usage (from anywhere):   bash bench/run.sh
# Settings (environment):
#   BENCH_SECONDS  seconds per measured run               (default 10)
#   BENCH_REPEAT   rounds of all eight runs; >1 reports medians (default 1)
#   BENCH_WARMUP   seconds of warm-up load per server      (default 2; 0 = none)
#   BENCH_CPU      1 = also print each run's CPU split     (default 1)
#
# It prints figures; it asserts nothing and exits 0 unless it could not run.
# Load goes to 127.0.0.1 only; every process it starts is stopped on exit.

set -euo pipefail

BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_REPEAT=${BENCH_REPEAT:-1}
BENCH_WARMUP=${BENCH_WARMUP:-2}
BENCH_CPU=${BENCH_CPU:-1}
KEYS=10000
VALUE_BYTES=100
PROJECT=bench

for name in BENCH_SECONDS BENCH_REPEAT BENCH_WARMUP; do
    [[ ${!name} =~ ^[0-9]+$ ]] || { echo "bench: $name must be a whole number" >&2; exit 2; }
done
((BENCH_SECONDS >= 1 && BENCH_SECONDS <= 300)) || { echo "bench: BENCH_SECONDS must be 1..300" >&2; exit 2; }
((BENCH_REPEAT >= 1 && BENCH_REPEAT <= 20)) || { echo "bench: BENCH_REPEAT must be 1..20" >&2; exit 2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BENCH_DIR=$ROOT/bench

# kvs reads KVS_* settings from the environment: none of the caller's apply.
while IFS= read -r name; do unset "$name"; done < <(compgen -e | grep '^KVS_' || true)

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools -------------------------------------------------------------------

install_debian_packages() {
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        die "please install: $* (Debian: apt-get install -y $*)"
    fi
    log "installing $* from Debian's packages"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
((${#missing[@]} == 0)) || install_debian_packages "${missing[@]}"
command -v cargo >/dev/null || die "cargo is needed to build kvs"

log "building: cargo build --release --bin kvs --example bare_hyper"
cargo build --release --bin kvs --example bare_hyper >&2
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
KVS_BIN=$TARGET_DIR/release/kvs
BARE_BIN=$TARGET_DIR/release/examples/bare_hyper
[[ -x $KVS_BIN && -x $BARE_BIN ]] || die "the build left no $KVS_BIN or $BARE_BIN"

# --- processes and cleanup ----------------------------------------------------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/kvs-bench.XXXXXX")
KVS_PID=
BARE_PID=
LOAD_PID=

stop_process() { # pid: TERM, then KILL after 10 s
    local pid=$1
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    stop_process "$LOAD_PID"
    stop_process "$KVS_PID"
    stop_process "$BARE_PID"
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_is_free() { ! (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
    local port
    for _ in $(seq 50); do
        port=$((20000 + RANDOM % 40000))
        if port_is_free "$port"; then echo "$port"; return 0; fi
    done
    die "found no free port"
}

wait_http() { # url pid what: until the url answers 200, at most 30 s
    local url=$1 pid=$2 what=$3
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || return 1
        curl -fs -o /dev/null --max-time 1 "$url" && return 0
        sleep 0.1
    done
    log "$what did not answer $url within 30 s"
    return 1
}

# Starts a server on a free port (retrying if the port was taken meanwhile).
# Sets STARTED_PID and STARTED_PORT.
start_server() { # what logfile ready-path command...
    local what=$1 logfile=$2 ready=$3
    shift 3
    local attempt port pid
    for attempt in 1 2 3; do
        port=$(free_port)
        "${@//@PORT@/$port}" >"$logfile" 2>&1 &
        pid=$!
        if wait_http "http://127.0.0.1:$port$ready" "$pid" "$what"; then
            STARTED_PID=$pid
            STARTED_PORT=$port
            return 0
        fi
        stop_process "$pid"
        log "$what failed to start (attempt $attempt); its log:"
        tail -n 20 "$logfile" >&2 || true
    done
    die "$what did not start"
}

# A secret of the form kvs_ + 43 base64url characters (256 random bits).
ADMIN_TOKEN=kvs_$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')

log "starting kvs (data in $TMP/data, --log-level warn)"
KVS_ADMIN_TOKEN=$ADMIN_TOKEN start_server kvs "$TMP/kvs.log" /readyz \
    "$KVS_BIN" serve \
    --listen 127.0.0.1:@PORT@ --data-dir "$TMP/data" --log-level warn
KVS_PID=$STARTED_PID
KVS_URL=http://127.0.0.1:$STARTED_PORT

log "starting bare_hyper"
start_server bare_hyper "$TMP/bare.log" / "$BARE_BIN" 127.0.0.1:@PORT@
BARE_PID=$STARTED_PID
BARE_URL=http://127.0.0.1:$STARTED_PORT

# --- the project and its keys ---------------------------------------------------

api() { # method path [json]: prints the body; fails on a non-2xx answer
    local method=$1 path=$2 body=${3-}
    local args=(-sS --fail-with-body --max-time 10 -X "$method"
        -H "Authorization: Bearer $ADMIN_TOKEN")
    [[ -n $body ]] && args+=(-H "Content-Type: application/json" --data-binary "$body")
    curl "${args[@]}" "$KVS_URL$path"
}

log "creating the disk project '$PROJECT'"
created=$(api POST /v1/projects "{\"id\":\"$PROJECT\",\"storage\":\"disk\"}") ||
    die "could not create the project: $created"
PROJECT_TOKEN=$(grep -o '"secret":"[^"]*"' <<<"$created" | head -n1 | cut -d'"' -f4)
[[ $PROJECT_TOKEN == kvs_* ]] || die "no token in the answer: $created"
export BENCH_PROJECT=$PROJECT BENCH_TOKEN=$PROJECT_TOKEN BENCH_KEYS=$KEYS BENCH_VALUE_BYTES=$VALUE_BYTES

project_keys() {
    api GET "/v1/projects/$PROJECT" | grep -o '"keys":[0-9]*' | head -n1 | cut -d: -f2
}

log "preloading $KEYS keys of $VALUE_BYTES bytes (wrk, 1 thread, 64 connections)"
preload_started=$(date +%s.%N)
wrk -t1 -c64 -d60s --timeout 5s -s "$BENCH_DIR/preload.lua" "$KVS_URL" >"$TMP/preload.out" 2>&1 &
LOAD_PID=$!
count=0
for _ in $(seq 600); do
    count=$(project_keys || echo 0)
    ((count >= KEYS)) && break
    kill -0 "$LOAD_PID" 2>/dev/null || break
    sleep 0.1
done
stop_process "$LOAD_PID"
LOAD_PID=
((count >= KEYS)) || { cat "$TMP/preload.out" >&2; die "preload reached only $count keys"; }
log "preloaded $count keys in $(awk -v s="$preload_started" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}') s"

# One sanity check: a GET answers 200 with the 100 bytes.
sample=$(curl -sS --fail-with-body --max-time 5 -H "Authorization: Bearer $PROJECT_TOKEN" \
    "$KVS_URL/v1/projects/$PROJECT/kv/bench/k00042") || die "GET of a preloaded key failed: $sample"
((${#sample} == VALUE_BYTES)) || die "a preloaded value has ${#sample} bytes, not $VALUE_BYTES"

# --- measuring -------------------------------------------------------------------

CLK_TCK=$(getconf CLK_TCK)

proc_ticks() { # pid: utime+stime of the whole process, in clock ticks
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    stat=${stat##*) }
    awk '{print $12 + $13}' <<<"$stat"
}

thread_ticks() { # pid: "name cpu_ns runqueue_wait_ns" per thread name (summed)
    # /proc/.../schedstat: time on CPU, time runnable but waiting for a CPU
    # (both in ns), timeslices. Without it, CPU time comes from stat and the
    # wait is unknown (0).
    local task stat name sched
    for task in /proc/"$1"/task/*; do
        stat=$(cat "$task/stat" 2>/dev/null) || continue
        name=${stat#*(}
        name=${name%%)*}
        if sched=$(cat "$task/schedstat" 2>/dev/null); then
            printf '%s %s\n' "${name// /_}" "${sched% *}"
        else
            stat=${stat##*) }
            printf '%s %s 0\n' "${name// /_}" "$(awk -v hz="$CLK_TCK" '{printf "%.0f", ($12 + $13) * 1e9 / hz}' <<<"$stat")"
        fi
    done | awk '{c[$1] += $2; w[$1] += $3} END {for (n in c) printf "%s %.0f %.0f\n", n, c[n], w[n]}' | sort
}

machine_ticks() { # the "cpu" line of /proc/stat: total, idle(+iowait), steal
    awk '/^cpu / {total = 0; for (i = 2; i <= 9; i++) total += $i;
                 print total, $5 + $6, $9; exit}' /proc/stat
}

children_ticks() { # CPU time of this shell's finished children, in ticks
    # `times` must run in this shell, not in a $(...) subshell: a fork
    # starts with no children's time of its own.
    times >"$TMP/times"
    tail -n1 "$TMP/times" | awk -v hz="$CLK_TCK" '{
        s = 0
        for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); s += p[1] * 60 + p[2] }
        printf "%d\n", s * hz }'
}

RESULTS=$TMP/results.tsv
CPU_NOTES=$TMP/cpu.txt
: >"$RESULTS"
: >"$CPU_NOTES"

# The version of every key, as "index version" lines, from a full listing:
# what cas.lua starts from.
dump_versions() { # file
    local file=$1 cursor= page
    : >"$file"
    while :; do
        local args=(-sS --fail-with-body --max-time 10 -G
            -H "Authorization: Bearer $PROJECT_TOKEN"
            --data-urlencode "prefix=bench/" --data-urlencode "limit=1000")
        [[ -n $cursor ]] && args+=(--data-urlencode "cursor=$cursor")
        page=$(curl "${args[@]}" "$KVS_URL/v1/projects/$PROJECT/kv") || die "listing failed: $page"
        grep -o '{[^{}]*}' <<<"$page" | awk '
            match($0, /"key":"bench\/k[0-9]+"/) { k = substr($0, RSTART + 14, RLENGTH - 15) + 0
                if (match($0, /"version":[0-9]+/)) print k, substr($0, RSTART + 10, RLENGTH - 10) }' >>"$file"
        cursor=$(grep -o '"cursor":"[^"]*"' <<<"$page" | cut -d'"' -f4) || true
        [[ -n $cursor ]] || break
    done
    local n
    n=$(wc -l <"$file")
    ((n == KEYS)) || die "the listing gave versions of $n keys, not $KEYS"
}

# run_wrk label server_pid url script connections seconds round
run_wrk() {
    local label=$1 pid=$2 url=$3 script=$4 conns=$5 seconds=$6 round=$7
    local threads=2
    ((conns < 2)) && threads=1
    local out=$TMP/wrk-$label-c$conns-r$round.out
    local srv0 srv1 kid0 kid1 m0 m1 threads0 threads1
    # The compare-and-set client starts from the current versions (not timed).
    [[ $script == cas.lua ]] && dump_versions "$TMP/versions"
    srv0=$(proc_ticks "$pid")
    children_ticks >"$TMP/kid0"
    m0=$(machine_ticks)
    threads0=$(thread_ticks "$pid")
    if ! BENCH_WRK_THREADS=$threads BENCH_CAS_VERSIONS=$TMP/versions \
        wrk -t"$threads" -c"$conns" -d"${seconds}s" --timeout 5s -s "$BENCH_DIR/$script" "$url" >"$out" 2>&1; then
        cat "$out" >&2
        die "wrk failed for $label at $conns connections"
    fi
    children_ticks >"$TMP/kid1"
    srv1=$(proc_ticks "$pid")
    kid0=$(cat "$TMP/kid0")
    kid1=$(cat "$TMP/kid1")
    m1=$(machine_ticks)
    threads1=$(thread_ticks "$pid")
    local line
    line=$(grep '^BENCH_RESULT ' "$out") || { cat "$out" >&2; die "no BENCH_RESULT from wrk"; }
    # workload conns round rps p50_ms p99_ms errors srv_cpu% wrk_cpu% idle% steal% 412s
    # (a 412 is a lost compare-and-set, counted apart from the errors)
    awk -v label="$label" -v conns="$conns" -v round="$round" \
        -v srv="$((srv1 - srv0))" -v kid="$((kid1 - kid0))" -v hz="$CLK_TCK" \
        -v m0="$m0" -v m1="$m1" -v line="$line" 'BEGIN {
            n = split(line, kv, " ")
            for (i = 2; i <= n; i++) { split(kv[i], p, "="); r[p[1]] = p[2] }
            secs = r["duration_us"] / 1e6
            errors = r["err_connect"] + r["err_read"] + r["err_write"] + r["err_status"] + r["err_timeout"] - r["status_412"]
            split(m0, a, " "); split(m1, b, " ")
            total = b[1] - a[1]; if (total <= 0) total = 1
            printf "%s\t%d\t%d\t%.0f\t%.3f\t%.3f\t%d\t%.0f\t%.0f\t%.0f\t%.1f\t%d\n",
                label, conns, round, r["rps"], r["p50_us"] / 1000, r["p99_us"] / 1000, errors,
                100 * srv / hz / secs, 100 * kid / hz / secs,
                100 * (b[2] - a[2]) / total, 100 * (b[3] - a[3]) / total, r["status_412"]
        }' >>"$RESULTS"
    if [[ $BENCH_CPU == 1 ]]; then
        {
            printf '%-9s c%-3s round %s:' "$label" "$conns" "$round"
            join -a2 -e0 -o 0,1.2,1.3,2.2,2.3 <(echo "$threads0") <(echo "$threads1") |
                awk -v s="$seconds" '{
                    cpu = ($4 - $2) / 1e7 / s; wait = ($5 - $3) / 1e7 / s
                    if (cpu >= 0.5) printf "  %s %.0f%% (waited %.0f%%)", $1, cpu, wait }'
            echo
        } >>"$CPU_NOTES"
    fi
    tail -n1 "$RESULTS" | awk -F'\t' '{printf "[bench] %-9s c%-3s round %s: %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  errors %d%s\n", $1, $2, $3, $4, $5, $6, $7, ($1 == "kvs CAS") ? "  412s " $12 : ""}' >&2
}

if ((BENCH_WARMUP > 0)); then
    log "warming up both servers (${BENCH_WARMUP} s each, not reported)"
    wrk -t2 -c64 -d"${BENCH_WARMUP}s" -s "$BENCH_DIR/get.lua" "$KVS_URL" >/dev/null 2>&1 || true
    wrk -t2 -c64 -d"${BENCH_WARMUP}s" -s "$BENCH_DIR/get.lua" "$BARE_URL" >/dev/null 2>&1 || true
fi

runs=9
log "measuring: $BENCH_REPEAT round(s) of $runs runs, ${BENCH_SECONDS} s each (about $((BENCH_REPEAT * runs * BENCH_SECONDS)) s)"
for round in $(seq "$BENCH_REPEAT"); do
    # kvs and its peer back to back at each connection count, so they share
    # the machine's mood of the moment.
    run_wrk "kvs GET" "$KVS_PID" "$KVS_URL" get.lua 1 "$BENCH_SECONDS" "$round"
    run_wrk "bare GET" "$BARE_PID" "$BARE_URL" get.lua 1 "$BENCH_SECONDS" "$round"
    run_wrk "kvs GET" "$KVS_PID" "$KVS_URL" get.lua 64 "$BENCH_SECONDS" "$round"
    run_wrk "bare GET" "$BARE_PID" "$BARE_URL" get.lua 64 "$BENCH_SECONDS" "$round"
    run_wrk "pykv GET" "$KVS_PID" "$KVS_URL" pykv_get.lua 64 "$BENCH_SECONDS" "$round"
    run_wrk "kvs PUT" "$KVS_PID" "$KVS_URL" put.lua 1 "$BENCH_SECONDS" "$round"
    run_wrk "kvs PUT" "$KVS_PID" "$KVS_URL" put.lua 64 "$BENCH_SECONDS" "$round"
    run_wrk "kvs TXN" "$KVS_PID" "$KVS_URL" txn.lua 64 "$BENCH_SECONDS" "$round"
    run_wrk "kvs CAS" "$KVS_PID" "$KVS_URL" cas.lua 64 "$BENCH_SECONDS" "$round"
done

keys_after=$(project_keys || echo "?")

# --- the report ------------------------------------------------------------------

median() { # numbers on stdin
    sort -g | awk '{v[NR] = $1} END {
        if (NR == 0) { print 0; exit }
        if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.6f\n", m }'
}

# column of results.tsv (1-based) for a workload and connection count
column_median() {
    awk -F'\t' -v w="$1" -v c="$2" -v col="$3" '$1 == w && $2 == c {print $col}' "$RESULTS" | median
}
column_sum() {
    awk -F'\t' -v w="$1" -v c="$2" -v col="$3" '$1 == w && $2 == c {s += $col} END {print s + 0}' "$RESULTS"
}

kvs_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || kvs_rev="$kvs_rev+changes"
echo
echo "kvs benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)  kvs $kvs_rev  $(wrk --version 2>&1 | head -n1 | awk '{print $1, $2}')"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$KEYS keys x $VALUE_BYTES-byte values in a disk project (PUT = fsync'd before the answer);"
echo "random keys; ${BENCH_SECONDS} s per run; wrk -t1 at 1 connection, -t2 at 64; $BENCH_REPEAT round(s)$( ((BENCH_REPEAT > 1)) && echo ', medians shown')"
echo
printf '%-14s %5s %11s %9s %9s %7s %8s %8s %6s %6s\n' \
    workload conns "requests/s" "p50 ms" "p99 ms" errors "srv cpu" "wrk cpu" idle steal
printf '%-14s %5s %11s %9s %9s %7s %8s %8s %6s %6s\n' \
    -------------- ----- ----------- --------- --------- ------- -------- -------- ------ ------
ROWS=("kvs GET|1" "bare GET|1" "kvs GET|64" "bare GET|64" "pykv GET|64" "kvs PUT|1" "kvs PUT|64" "kvs TXN|64" "kvs CAS|64")
for row in "${ROWS[@]}"; do
    w=${row%|*}
    c=${row#*|}
    name=$w
    [[ $w == "bare GET" ]] && name="bare-hyper GET"
    [[ $w == "kvs PUT" ]] && name="kvs PUT (sync)"
    [[ $w == "kvs TXN" ]] && name="kvs TXN 5 puts"
    [[ $w == "kvs CAS" ]] && name="kvs CAS PUT"
    [[ $w == "pykv GET" ]] && name="SimplePyKV GET"
    printf '%-14s %5s %11.0f %9.2f %9.2f %7d %7.0f%% %7.0f%% %5.0f%% %5.1f%%\n' "$name" "$c" \
        "$(column_median "$w" "$c" 4)" "$(column_median "$w" "$c" 5)" "$(column_median "$w" "$c" 6)" \
        "$(column_sum "$w" "$c" 7)" "$(column_median "$w" "$c" 8)" "$(column_median "$w" "$c" 9)" \
        "$(column_median "$w" "$c" 10)" "$(column_median "$w" "$c" 11)"
done
echo
echo "cpu columns: % of one core over the run (this machine has $(nproc)); idle and steal: % of the whole machine."
txn64=$(column_median "kvs TXN" 64 4)
cas412=$(column_sum "kvs CAS" 64 12)
cas_requests=$(awk -F'\t' '$1 == "kvs CAS" && $2 == 64 {s += $4} END {print s + 0}' "$RESULTS")
awk -v t="$txn64" -v f="$cas412" -v n="$cas_requests" -v s="$BENCH_SECONDS" -v b="$VALUE_BYTES" \
    -v r="$BENCH_REPEAT" 'BEGIN {
    printf "kvs TXN 5 puts: one POST .../txn of 5 puts of %d-byte values to random keys, one durable commit;\n", b
    printf "  %.0f txn/s = %.0f keys/s\n", t, 5 * t
    total = n * s
    printf "kvs CAS PUT: PUT with If-Match of the version the client last saw (each wrk thread owns its keys);\n"
    printf "  requests/s counts every answer; %d of about %.0f answers were 412 (a lost race, %.2f%%), not counted as errors;\n",
        f, total, (total > 0 ? 100 * f / total : 0)
    printf "  successful compare-and-sets: about %.0f/s\n", (total - f) / s / r
}'
if ((BENCH_REPEAT > 1)); then
    echo "requests/s of each round:"
    for row in "${ROWS[@]}"; do
        w=${row%|*}
        c=${row#*|}
        printf '  %-9s c%-3s %s\n' "$w" "$c" \
            "$(awk -F'\t' -v w="$w" -v c="$c" '$1 == w && $2 == c {printf "%s ", $4}' "$RESULTS")"
    done
fi

kvs64=$(column_median "kvs GET" 64 4)
bare64=$(column_median "bare GET" 64 4)
p99get=$(column_median "kvs GET" 64 6)
pykv64=$(column_median "pykv GET" 64 4)
put64=$(column_median "kvs PUT" 64 4)
p99put=$(column_median "kvs PUT" 64 6)
echo
awk -v k="$kvs64" -v b="$bare64" -v p="$p99get" -v u="$put64" -v q="$p99put" -v y="$pykv64" 'BEGIN {
    ratio = (b > 0) ? 100 * k / b : 0
    printf "GET at 64 connections: kvs/bare-hyper = %.0f / %.0f = %.1f%%  (target >= 60%%: %s)\n",
        k, b, ratio, (ratio >= 60 ? "met" : "NOT met")
    printf "GET at 64 connections: p99 %.2f ms  (target <= 5 ms: %s)\n", p, (p <= 5 ? "met" : "NOT met")
    pr = (k > 0) ? 100 * y / k : 0
    printf "Simple-PyKV GET (envelope) / v1 GET at 64 connections = %.0f / %.0f = %.1f%%  (target >= 90%%: %s)\n",
        y, k, pr, (pr >= 90 ? "met" : "NOT met")
    printf "durable PUT at 64 connections: %.0f/s, p99 %.2f ms  (target >= 20000/s: %s)\n",
        u, q, (u >= 20000 ? "met" : "NOT met")
}'
errors_total=$(awk -F'\t' '{s += $7} END {print s + 0}' "$RESULTS")
((errors_total == 0)) || echo "WARNING: $errors_total failed requests (non-2xx, timeouts or socket errors): figures are suspect"
[[ $keys_after == "$KEYS" ]] || echo "WARNING: the project holds $keys_after keys after the runs, not $KEYS"

if [[ $BENCH_CPU == 1 && -s $CPU_NOTES ]]; then
    echo
    echo "CPU of the server's threads, by name, in % of one core; 'waited' = time runnable but"
    echo "waiting for a CPU (tokio-rt-worker = the HTTP workers, kvs-writer = the group-commit writer):"
    sed 's/^/  /' "$CPU_NOTES"
fi
