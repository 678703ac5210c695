#!/usr/bin/env bash
# The kvs benchmark: GET and durable PUT throughput with p50/p99 at 1 and 64
# connections (100-byte values over 10,000 keys), next to a bare hyper server
# that answers a fixed body, all in one run, driven by wrk; then, at 64
# connections, transactions of 5 puts and compare-and-set PUTs (If-Match).
# In the same run, its peers: Redis (redis-benchmark: GET, SET without
# persistence, SET with appendfsync always, at 50 and 64 connections) and etcd
# (one member; range and put through its JSON gateway, wrk at 64 connections).
# After the table, each goal of issue 16 as a ratio with its verdict. See
# bench/README.md for what it measures and how to read it.
#
# Usage (from anywhere):   bash bench/run.sh
# Settings (environment):
#   BENCH_SECONDS  seconds per measured run               (default 10)
#   BENCH_REPEAT   rounds of all the runs; >1 reports medians (default 1)
#   BENCH_WARMUP   seconds of warm-up load per server      (default 2; 0 = none)
#   BENCH_CPU      1 = also print each run's CPU split     (default 1)
#   BENCH_PEERS    1 = also run Redis and etcd             (default 1; 0 = kvs
#                  and bare hyper only, and no verdicts that need a peer)
#
# It prints figures; it asserts nothing and exits 0 unless it could not run.
# Load goes to 127.0.0.1 only; every process it starts is stopped on exit.

set -euo pipefail

BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_REPEAT=${BENCH_REPEAT:-1}
BENCH_WARMUP=${BENCH_WARMUP:-2}
BENCH_CPU=${BENCH_CPU:-1}
BENCH_PEERS=${BENCH_PEERS:-1}
KEYS=10000
VALUE_BYTES=100
PROJECT=bench

for name in BENCH_SECONDS BENCH_REPEAT BENCH_WARMUP BENCH_PEERS; do
    [[ ${!name} =~ ^[0-9]+$ ]] || { echo "bench: $name must be a whole number" >&2; exit 2; }
done
((BENCH_SECONDS >= 1 && BENCH_SECONDS <= 300)) || { echo "bench: BENCH_SECONDS must be 1..300" >&2; exit 2; }
((BENCH_REPEAT >= 1 && BENCH_REPEAT <= 20)) || { echo "bench: BENCH_REPEAT must be 1..20" >&2; exit 2; }
((BENCH_PEERS <= 1)) || { echo "bench: BENCH_PEERS must be 0 or 1" >&2; exit 2; }

# enter_repository (ROOT, BENCH_DIR, no KVS_* settings), log, die, start_server, …
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
enter_repository

# --- tools -------------------------------------------------------------------

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
if ((BENCH_PEERS)); then
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v redis-benchmark >/dev/null && command -v redis-cli >/dev/null || missing+=(redis-tools)
    command -v etcd >/dev/null || missing+=(etcd-server)
fi
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
REDIS_PID=
REDIS_AOF_PID=
ETCD_PID=

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    stop_process "$LOAD_PID"
    stop_process "$KVS_PID"
    stop_process "$BARE_PID"
    stop_process "$REDIS_PID"
    stop_process "$REDIS_AOF_PID"
    stop_process "$ETCD_PID"
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

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

# Starts a redis-server on a free port with its own directory; extra
# arguments are its settings. Sets STARTED_PID and STARTED_PORT.
start_redis() { # what dir settings...
    local what=$1 dir=$2
    shift 2
    mkdir -p "$dir"
    local attempt port pid
    for attempt in 1 2 3; do
        port=$(free_port)
        redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --daemonize no \
            --logfile "$dir/redis.log" "$@" >/dev/null 2>&1 &
        pid=$!
        for _ in $(seq 300); do
            kill -0 "$pid" 2>/dev/null || break
            if [[ $(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]]; then
                STARTED_PID=$pid
                STARTED_PORT=$port
                return 0
            fi
            sleep 0.1
        done
        stop_process "$pid"
        log "$what failed to start (attempt $attempt); its log:"
        tail -n 20 "$dir/redis.log" >&2 || true
    done
    die "$what did not start"
}

if ((BENCH_PEERS)); then
    # Two Redis servers, both idle unless measured: one keeps nothing on disk
    # (GET and SET rows), the other appends every write to its AOF and fsyncs
    # it before answering (the durable SET rows), as Debian's redis-server
    # would with these settings (no RDB snapshots in either).
    log "starting redis-server (no persistence) and redis-server (--appendonly yes --appendfsync always)"
    start_redis redis "$TMP/redis" --save '' --appendonly no
    REDIS_PID=$STARTED_PID
    REDIS_PORT=$STARTED_PORT
    start_redis "redis (aof)" "$TMP/redis-aof" --save '' --appendonly yes --appendfsync always
    REDIS_AOF_PID=$STARTED_PID
    REDIS_AOF_PORT=$STARTED_PORT

    log "starting etcd (one member, data in $TMP/etcd)"
    peer_port=$(free_port)
    start_server etcd "$TMP/etcd.log" /health \
        etcd --name bench --data-dir "$TMP/etcd" --logger zap --log-level warn \
        --listen-client-urls http://127.0.0.1:@PORT@ --advertise-client-urls http://127.0.0.1:@PORT@ \
        --listen-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-cluster "bench=http://127.0.0.1:$peer_port"
    ETCD_PID=$STARTED_PID
    ETCD_URL=http://127.0.0.1:$STARTED_PORT
fi

# --- the project and its keys ---------------------------------------------------

api() { # method path [json]: prints the body; fails on a non-2xx answer
    admin_api "$KVS_URL$2" "$1" "${3-}"
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

if ((BENCH_PEERS)); then
    # Redis: the keys that redis-benchmark -r 10000 draws (key:000000000000 ..
    # key:000000009999), each with a 100-byte value, sent with redis-cli --pipe.
    log "preloading Redis with the $KEYS keys redis-benchmark -r $KEYS uses"
    awk -v n="$KEYS" -v b="$VALUE_BYTES" 'BEGIN {
        v = ""; for (i = 0; i < b; i++) v = v "x"
        for (i = 0; i < n; i++) {
            k = sprintf("key:%012d", i)
            printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, b, v
        }
    }' | redis-cli -h 127.0.0.1 -p "$REDIS_PORT" --pipe >"$TMP/redis-preload.out" 2>&1 ||
        { cat "$TMP/redis-preload.out" >&2; die "preloading Redis failed"; }
    redis_keys=$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" dbsize)
    ((redis_keys == KEYS)) || die "Redis holds $redis_keys keys after the preload, not $KEYS"

    etcd_keys() { # the number of keys under bench/ (a serializable count)
        curl -sS --max-time 5 -X POST "$ETCD_URL/v3/kv/range" \
            -d '{"key":"YmVuY2gv","range_end":"YmVuY2gw","count_only":true,"serializable":true}' |
            grep -o '"count":"[0-9]*"' | grep -o '[0-9]*' || echo 0
    }
    log "preloading etcd with $KEYS keys (wrk, 1 thread, 64 connections, JSON gateway)"
    BENCH_ETCD_OP=preload wrk -t1 -c64 -d60s --timeout 5s -s "$BENCH_DIR/etcd.lua" "$ETCD_URL" \
        >"$TMP/etcd-preload.out" 2>&1 &
    LOAD_PID=$!
    count=0
    for _ in $(seq 600); do
        count=$(etcd_keys)
        ((count >= KEYS)) && break
        kill -0 "$LOAD_PID" 2>/dev/null || break
        sleep 0.1
    done
    stop_process "$LOAD_PID"
    LOAD_PID=
    ((count >= KEYS)) || { cat "$TMP/etcd-preload.out" >&2; die "the etcd preload reached only $count keys"; }
fi

# --- measuring -------------------------------------------------------------------

CLK_TCK=$(getconf CLK_TCK)

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

# run_load label server_pid connections round out command...: runs the command
# (a load generator whose output, in the file out, holds a BENCH_RESULT line)
# and appends its row to results.tsv, with the CPU of the server, of the load
# generator and of the machine over the run.
run_load() {
    local label=$1 pid=$2 conns=$3 round=$4 out=$5
    shift 5
    local srv0 srv1 kid0 kid1 m0 m1 threads0 threads1
    srv0=$(proc_ticks "$pid")
    children_ticks >"$TMP/kid0"
    m0=$(machine_ticks)
    threads0=$(thread_ticks "$pid")
    if ! "$@" >"$out" 2>&1; then
        cat "$out" >&2
        die "the load of $label at $conns connections failed"
    fi
    children_ticks >"$TMP/kid1"
    srv1=$(proc_ticks "$pid")
    kid0=$(cat "$TMP/kid0")
    kid1=$(cat "$TMP/kid1")
    m1=$(machine_ticks)
    threads1=$(thread_ticks "$pid")
    local line
    line=$(grep '^BENCH_RESULT ' "$out") || { cat "$out" >&2; die "no BENCH_RESULT from the load of $label"; }
    # workload conns round rps p50_ms p99_ms errors srv_cpu% load_cpu% idle% steal% 412s
    # (a 412 is a lost compare-and-set, counted apart from the errors)
    awk -v label="$label" -v conns="$conns" -v round="$round" \
        -v srv="$((srv1 - srv0))" -v kid="$((kid1 - kid0))" -v hz="$CLK_TCK" \
        -v m0="$m0" -v m1="$m1" -v line="$line" 'BEGIN {
            n = split(line, kv, " ")
            for (i = 2; i <= n; i++) { split(kv[i], p, "="); r[p[1]] = p[2] }
            secs = r["duration_us"] / 1e6
            if (secs <= 0) secs = 1
            errors = r["err_connect"] + r["err_read"] + r["err_write"] + r["err_status"] + r["err_timeout"] - r["status_412"]
            split(m0, a, " "); split(m1, b, " ")
            total = b[1] - a[1]; if (total <= 0) total = 1
            printf "%s\t%d\t%d\t%.0f\t%.3f\t%.3f\t%d\t%.0f\t%.0f\t%.0f\t%.1f\t%d\n",
                label, conns, round, r["rps"], r["p50_us"] / 1000, r["p99_us"] / 1000, errors,
                100 * srv / hz / secs, 100 * kid / hz / secs,
                100 * (b[2] - a[2]) / total, 100 * (b[3] - a[3]) / total, r["status_412"]
        }' >>"$RESULTS"
    if [[ $BENCH_CPU == 1 && $label == kvs* ]]; then
        local seconds
        seconds=$(awk -v l="$line" 'BEGIN {
            match(l, /duration_us=[0-9]+/); print substr(l, RSTART + 12, RLENGTH - 12) / 1e6 }')
        {
            printf '%-9s c%-3s round %s:' "$label" "$conns" "$round"
            join -a2 -e0 -o 0,1.2,1.3,2.2,2.3 <(echo "$threads0") <(echo "$threads1") |
                awk -v s="$seconds" '{
                    cpu = ($4 - $2) / 1e7 / s; wait = ($5 - $3) / 1e7 / s
                    if (cpu >= 0.5) printf "  %s %.0f%% (waited %.0f%%)", $1, cpu, wait }'
            echo
        } >>"$CPU_NOTES"
    fi
    tail -n1 "$RESULTS" | awk -F'\t' '{printf "[bench] %-16s c%-3s round %s: %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  errors %d%s\n", $1, $2, $3, $4, $5, $6, $7, ($1 == "kvs CAS") ? "  412s " $12 : ""}' >&2
}

# run_wrk label server_pid url script connections seconds round
run_wrk() {
    local label=$1 pid=$2 url=$3 script=$4 conns=$5 seconds=$6 round=$7
    local threads=2
    ((conns < 2)) && threads=1
    # The compare-and-set client starts from the current versions (not timed).
    [[ $script == cas.lua ]] && dump_versions "$TMP/versions"
    run_load "$label" "$pid" "$conns" "$round" "$TMP/wrk-${label// /_}-c$conns-r$round.out" \
        env BENCH_WRK_THREADS="$threads" BENCH_CAS_VERSIONS="$TMP/versions" \
        wrk -t"$threads" -c"$conns" -d"${seconds}s" --timeout 5s -s "$BENCH_DIR/$script" "$url"
}

# redis-benchmark takes a number of requests, not a duration: each row's
# count is its last measured requests/s x BENCH_SECONDS (a short first run in
# the warm-up calibrates it), so a run takes about BENCH_SECONDS; `timeout`
# bounds it anyway.
declare -A REDIS_N=()

# redis_bench port test connections requests: one redis-benchmark run (100-byte
# values, keys drawn out of 10,000, one client thread), printed as a
# BENCH_RESULT line from its --csv line. redis-benchmark gives p50 and p99
# but no error count: a reply error makes it print "Error" and counts as one.
redis_bench() {
    local port=$1 test=$2 conns=$3 n=$4 csv
    csv=$(timeout $((3 * BENCH_SECONDS + 30)) redis-benchmark -h 127.0.0.1 -p "$port" \
        -c "$conns" -n "$n" -d "$VALUE_BYTES" -r "$KEYS" -t "$test" --csv 2>&1) || {
        echo "$csv"
        return 1
    }
    awk -v n="$n" '
        /[Ee]rror/ { errors++ }
        /^"(GET|SET)"/ { gsub(/"/, ""); split($0, f, ","); rps = f[2]; p50 = f[5]; p99 = f[7]; mean = f[3]; max = f[8] }
        END {
            if (rps <= 0) exit 1
            printf "BENCH_RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=0 p99_us=%d mean_us=%.1f max_us=%d err_connect=0 err_read=0 err_write=0 err_status=%d err_timeout=0\n",
                n, n / rps * 1e6, rps, p50 * 1000, p99 * 1000, mean * 1000, max * 1000, errors
        }' <<<"$csv" || { echo "$csv"; return 1; }
}

# run_redis label server_pid port test connections round
run_redis() {
    local label=$1 pid=$2 port=$3 test=$4 conns=$5 round=$6
    local out=$TMP/redis-${label// /_}-c$conns-r$round.out
    run_load "$label" "$pid" "$conns" "$round" "$out" \
        redis_bench "$port" "$test" "$conns" "${REDIS_N[$label|$conns]}"
    REDIS_N[$label|$conns]=$(tail -n1 "$RESULTS" | awk -F'\t' -v s="$BENCH_SECONDS" '{
        n = int($4 * s); if (n < 1000) n = 1000; print n }')
}

calibrate_redis() { # label port test connections: sets REDIS_N from a short run
    local label=$1 port=$2 test=$3 conns=$4 first=20000
    [[ $test == set && $port == "$REDIS_AOF_PORT" ]] && first=5000
    redis_bench "$port" "$test" "$conns" "$first" >"$TMP/calibrate.out" 2>&1 ||
        { cat "$TMP/calibrate.out" >&2; die "redis-benchmark failed ($label at $conns connections)"; }
    REDIS_N[$label|$conns]=$(awk -v s="$BENCH_SECONDS" '{
        match($0, /rps=[0-9.]+/); n = int(substr($0, RSTART + 4, RLENGTH - 4) * s)
        if (n < 1000) n = 1000; print n }' "$TMP/calibrate.out")
}

if ((BENCH_WARMUP > 0)); then
    log "warming up the servers (${BENCH_WARMUP} s each, not reported)"
    wrk -t2 -c64 -d"${BENCH_WARMUP}s" -s "$BENCH_DIR/get.lua" "$KVS_URL" >/dev/null 2>&1 || true
    wrk -t2 -c64 -d"${BENCH_WARMUP}s" -s "$BENCH_DIR/get.lua" "$BARE_URL" >/dev/null 2>&1 || true
    if ((BENCH_PEERS)); then
        BENCH_ETCD_OP=range wrk -t2 -c64 -d"${BENCH_WARMUP}s" -s "$BENCH_DIR/etcd.lua" "$ETCD_URL" \
            >/dev/null 2>&1 || true
    fi
fi
if ((BENCH_PEERS)); then
    log "calibrating redis-benchmark's request counts (short runs, not reported)"
    for c in 50 64; do
        calibrate_redis "Redis GET" "$REDIS_PORT" get "$c"
        calibrate_redis "Redis SET" "$REDIS_PORT" set "$c"
        calibrate_redis "Redis SET always" "$REDIS_AOF_PORT" set "$c"
    done
fi

runs=$((BENCH_PEERS ? 17 : 9))
log "measuring: $BENCH_REPEAT round(s) of $runs runs, ${BENCH_SECONDS} s each (about $((BENCH_REPEAT * runs * BENCH_SECONDS)) s)"
for round in $(seq "$BENCH_REPEAT"); do
    # kvs and its peers back to back at each connection count, so they share
    # the machine's mood of the moment.
    run_wrk "kvs GET" "$KVS_PID" "$KVS_URL" get.lua 1 "$BENCH_SECONDS" "$round"
    run_wrk "bare GET" "$BARE_PID" "$BARE_URL" get.lua 1 "$BENCH_SECONDS" "$round"
    run_wrk "kvs GET" "$KVS_PID" "$KVS_URL" get.lua 64 "$BENCH_SECONDS" "$round"
    run_wrk "bare GET" "$BARE_PID" "$BARE_URL" get.lua 64 "$BENCH_SECONDS" "$round"
    if ((BENCH_PEERS)); then
        run_redis "Redis GET" "$REDIS_PID" "$REDIS_PORT" get 50 "$round"
        run_redis "Redis GET" "$REDIS_PID" "$REDIS_PORT" get 64 "$round"
        BENCH_ETCD_OP=range run_wrk "etcd range" "$ETCD_PID" "$ETCD_URL" etcd.lua 64 "$BENCH_SECONDS" "$round"
    fi
    run_wrk "pykv GET" "$KVS_PID" "$KVS_URL" pykv_get.lua 64 "$BENCH_SECONDS" "$round"
    run_wrk "kvs PUT" "$KVS_PID" "$KVS_URL" put.lua 1 "$BENCH_SECONDS" "$round"
    run_wrk "kvs PUT" "$KVS_PID" "$KVS_URL" put.lua 64 "$BENCH_SECONDS" "$round"
    if ((BENCH_PEERS)); then
        run_redis "Redis SET always" "$REDIS_AOF_PID" "$REDIS_AOF_PORT" set 50 "$round"
        run_redis "Redis SET always" "$REDIS_AOF_PID" "$REDIS_AOF_PORT" set 64 "$round"
        BENCH_ETCD_OP=put run_wrk "etcd put" "$ETCD_PID" "$ETCD_URL" etcd.lua 64 "$BENCH_SECONDS" "$round"
        run_redis "Redis SET" "$REDIS_PID" "$REDIS_PORT" set 50 "$round"
        run_redis "Redis SET" "$REDIS_PID" "$REDIS_PORT" set 64 "$round"
    fi
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
if ((BENCH_PEERS)); then
    echo "peers: $(redis-server --version | awk '{print $1, $2, $3}') with $(redis-benchmark --version 2>/dev/null | awk '{print $1, $2}' || echo redis-benchmark) (1 client thread, -d $VALUE_BYTES -r $KEYS);"
    echo "  $(etcd --version | head -n1) (one member, JSON gateway, wrk -t2); all on 127.0.0.1"
fi
echo
printf '%-18s %5s %11s %9s %9s %7s %8s %8s %6s %6s\n' \
    workload conns "requests/s" "p50 ms" "p99 ms" errors "srv cpu" "cli cpu" idle steal
printf '%-18s %5s %11s %9s %9s %7s %8s %8s %6s %6s\n' \
    ------------------ ----- ----------- --------- --------- ------- -------- -------- ------ ------
ROWS=("kvs GET|1" "bare GET|1" "kvs GET|64" "bare GET|64")
((BENCH_PEERS)) && ROWS+=("Redis GET|50" "Redis GET|64" "etcd range|64")
ROWS+=("pykv GET|64" "kvs PUT|1" "kvs PUT|64")
((BENCH_PEERS)) && ROWS+=("Redis SET always|50" "Redis SET always|64" "etcd put|64" "Redis SET|50" "Redis SET|64")
ROWS+=("kvs TXN|64" "kvs CAS|64")
for row in "${ROWS[@]}"; do
    w=${row%|*}
    c=${row#*|}
    name=$w
    [[ $w == "bare GET" ]] && name="bare-hyper GET"
    [[ $w == "kvs PUT" ]] && name="kvs PUT (sync)"
    [[ $w == "kvs TXN" ]] && name="kvs TXN 5 puts"
    [[ $w == "kvs CAS" ]] && name="kvs CAS PUT"
    [[ $w == "pykv GET" ]] && name="SimplePyKV GET"
    [[ $w == "Redis SET" ]] && name="Redis SET (none)"
    [[ $w == "Redis SET always" ]] && name="Redis SET (fsync)"
    [[ $w == "etcd put" ]] && name="etcd put (sync)"
    printf '%-18s %5s %11.0f %9.2f %9.2f %7d %7.0f%% %7.0f%% %5.0f%% %5.1f%%\n' "$name" "$c" \
        "$(column_median "$w" "$c" 4)" "$(column_median "$w" "$c" 5)" "$(column_median "$w" "$c" 6)" \
        "$(column_sum "$w" "$c" 7)" "$(column_median "$w" "$c" 8)" "$(column_median "$w" "$c" 9)" \
        "$(column_median "$w" "$c" 10)" "$(column_median "$w" "$c" 11)"
done
echo
echo "cpu columns: % of one core over the run (this machine has $(nproc)); srv = the server, cli = the load"
echo "generator (wrk or redis-benchmark); idle and steal: % of the whole machine."
if ((BENCH_PEERS)); then
    echo "Redis SET (none): no persistence; Redis SET (fsync): --appendonly yes --appendfsync always, the"
    echo "  AOF fsync'd before the answers; etcd put: answered after its raft log is fsync'd; etcd range:"
    echo "  a linearizable read (etcd's default)."
fi
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
        printf '  %-16s c%-3s %s\n' "$w" "$c" \
            "$(awk -F'\t' -v w="$w" -v c="$c" '$1 == w && $2 == c {printf "%s ", $4}' "$RESULTS")"
    done
fi

kvs64=$(column_median "kvs GET" 64 4)
bare64=$(column_median "bare GET" 64 4)
p99get=$(column_median "kvs GET" 64 6)
p99bare=$(column_median "bare GET" 64 6)
pykv64=$(column_median "pykv GET" 64 4)
put64=$(column_median "kvs PUT" 64 4)
p99put=$(column_median "kvs PUT" 64 6)
redis_get50=$(column_median "Redis GET" 50 4)
redis_get64=$(column_median "Redis GET" 64 4)
redis_aof50=$(column_median "Redis SET always" 50 4)
redis_aof64=$(column_median "Redis SET always" 64 4)
echo
echo "The goals of issue 16 (ratios of the medians above; met when the ratio reaches the goal):"
awk -v k="$kvs64" -v b="$bare64" -v p="$p99put" -v hb="$p99bare" -v u="$put64" -v t="$txn64" \
    -v rg="$redis_get50" -v rg64="$redis_get64" -v ra="$redis_aof50" -v ra64="$redis_aof64" \
    -v peers="$BENCH_PEERS" 'BEGIN {
    verdict = "%-54s %11s = %6.3f  (goal %s %s: %s)\n"
    if (peers) {
        r = (ra > 0) ? u / ra : 0
        printf verdict, "durable PUT@64 / Redis SET appendfsync always@50", sprintf("%.0f/%.0f", u, ra), r, ">=", "1", (r >= 1 ? "met" : "NOT met")
        r = (ra64 > 0) ? u / ra64 : 0
        printf verdict, "  (like for like: / Redis SET always@64)", sprintf("%.0f/%.0f", u, ra64), r, ">=", "1", (r >= 1 ? "met" : "NOT met")
    }
    r = (hb > 0) ? p / hb : 0
    printf verdict, "durable PUT@64 p99 / bare hyper GET@64 p99 (ms)", sprintf("%.2f/%.2f", p, hb), r, "<=", "1.5", (r <= 1.5 ? "met" : "NOT met")
    r = (b > 0) ? k / b : 0
    printf verdict, "GET@64 / bare hyper GET@64", sprintf("%.0f/%.0f", k, b), r, ">=", "0.8", (r >= 0.8 ? "met" : "NOT met")
    if (peers) {
        r = (rg > 0) ? k / rg : 0
        printf verdict, "GET@64 / Redis GET@50", sprintf("%.0f/%.0f", k, rg), r, ">=", "1", (r >= 1 ? "met" : "NOT met")
        r = (rg64 > 0) ? k / rg64 : 0
        printf verdict, "  (like for like: / Redis GET@64)", sprintf("%.0f/%.0f", k, rg64), r, ">=", "1", (r >= 1 ? "met" : "NOT met")
    }
    r = (u > 0) ? 5 * t / u : 0
    printf verdict, "5-put TXN keys/s @64 / durable PUT/s @64", sprintf("%.0f/%.0f", 5 * t, u), r, ">=", "3", (r >= 3 ? "met" : "NOT met")
}'
echo "(flat with size, space, memory and restart: bash bench/size.sh)"

# CPU per request of the server and of its client, from the medians of the
# cpu columns: with both on the same cores, requests/s is about the cores
# divided by their sum, so the client's share bounds what a ratio can reach.
echo
echo "CPU per request in µs (server + client; medians of the cpu columns over requests/s):"
per_request() { # workload conns -> "server client" in µs
    awk -v r="$(column_median "$1" "$2" 4)" -v s="$(column_median "$1" "$2" 8)" \
        -v c="$(column_median "$1" "$2" 9)" 'BEGIN {
        if (r > 0) printf "%.1f %.1f", s * 1e4 / r, c * 1e4 / r; else printf "0 0"
    }'
}
CPU_ROWS=("kvs GET|64" "bare GET|64" "kvs PUT|64" "kvs TXN|64")
((BENCH_PEERS)) && CPU_ROWS+=("Redis GET|50" "Redis SET always|50")
for row in "${CPU_ROWS[@]}"; do
    read -r srv cli <<<"$(per_request "${row%|*}" "${row#*|}")"
    printf '  %-18s c%-3s %7s + %7s\n' "${row%|*}" "${row#*|}" "$srv" "$cli"
    if [[ $row == "kvs GET|64" ]]; then kvs_srv=$srv kvs_cli=$cli; fi
done
awk -v b="$bare64" -v srv="$kvs_srv" -v cli="$kvs_cli" -v cores="$(nproc)" 'BEGIN {
    if (b > 0) printf "  GET@64 at 0.8 of bare hyper leaves kvs %.1f µs per GET on %d shared cores, beside wrk at %.1f; it took %.1f\n",
        cores * 1e6 / (0.8 * b) - cli, cores, cli, srv
}'
echo
echo "Earlier targets:"
awk -v k="$kvs64" -v b="$bare64" -v p="$p99get" -v u="$put64" -v q="$p99put" -v y="$pykv64" 'BEGIN {
    ratio = (b > 0) ? 100 * k / b : 0
    printf "  GET at 64 connections: kvs/bare-hyper = %.0f / %.0f = %.1f%%  (target >= 60%%: %s)\n",
        k, b, ratio, (ratio >= 60 ? "met" : "NOT met")
    printf "  GET at 64 connections: p99 %.2f ms  (target <= 5 ms: %s)\n", p, (p <= 5 ? "met" : "NOT met")
    pr = (k > 0) ? 100 * y / k : 0
    printf "  Simple-PyKV GET (envelope) / v1 GET at 64 connections = %.0f / %.0f = %.1f%%  (target >= 90%%: %s)\n",
        y, k, pr, (pr >= 90 ? "met" : "NOT met")
    printf "  durable PUT at 64 connections: %.0f/s, p99 %.2f ms  (target >= 20000/s: %s)\n",
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
