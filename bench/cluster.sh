#!/usr/bin/env bash
# The cluster benchmark: GET, durable PUT and transactions of 5 puts at 64
# connections against 1, 2 and 3 kvs nodes over one 3-member etcd cluster
# (members on 127.0.0.1, 127.0.0.2 and 127.0.0.3), beside the single-node
# embedded kvs and etcd's own range and put through its JSON gateway, all in
# one run, driven by wrk with the scripts of bench/run.sh (get.lua, put.lua,
# txn.lua, etcd.lua). With 2 or 3 nodes the 64 connections are spread over
# the nodes, one wrk per node, and their figures summed. Prints one table.
# See bench/README.md ("Cluster mode over etcd").
#
# Usage (from anywhere):   bash bench/cluster.sh
# Settings (environment):
#   BENCH_SECONDS  seconds per measured run           (default 5; 14 runs)
#   BENCH_WARMUP   seconds of GET load before a server's or node's first run
#                  (default 1; 0 = none)
#
# It prints figures; it asserts nothing and exits 0 unless it could not run.
# Load goes to loopback only; every process it starts is stopped on exit.

set -euo pipefail

BENCH_SECONDS=${BENCH_SECONDS:-5}
BENCH_WARMUP=${BENCH_WARMUP:-1}
CONNS=64
KEYS=10000
VALUE_BYTES=100
PROJECT=bench
MEMBERS=3
ETCD_PREFIX=kvs-bench/

for name in BENCH_SECONDS BENCH_WARMUP; do
    [[ ${!name} =~ ^[0-9]+$ ]] || { echo "bench: $name must be a whole number" >&2; exit 2; }
done
((BENCH_SECONDS >= 1 && BENCH_SECONDS <= 300)) || { echo "bench: BENCH_SECONDS must be 1..300" >&2; exit 2; }

# enter_repository (ROOT, BENCH_DIR, no KVS_* settings), log, die, start_server, …
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
enter_repository

# --- tools -------------------------------------------------------------------

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v etcdctl >/dev/null || missing+=(etcd-client)
command -v protoc >/dev/null || missing+=(protobuf-compiler libprotobuf-dev)
((${#missing[@]} == 0)) || install_debian_packages "${missing[@]}"
# Cluster mode is the cargo feature etcd (run.sh and size.sh build without
# it: the binary is relinked when one follows the other).
build_kvs --features etcd --bin kvs

# --- processes and cleanup ----------------------------------------------------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/kvs-cluster-bench.XXXXXX")
ETCD_PIDS=()
NODE_PIDS=()
EMBEDDED_PID=
LOAD_PIDS=()

cleanup() {
    local status=$? pid
    trap - EXIT INT TERM
    for pid in "${LOAD_PIDS[@]}" "${NODE_PIDS[@]}" "$EMBEDDED_PID" "${ETCD_PIDS[@]}"; do
        stop_process "$pid"
    done
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the etcd cluster -------------------------------------------------------------

# A port free on 127.0.0.1, 127.0.0.2 and 127.0.0.3.
free_member_port() {
    local port i free
    for _ in $(seq 50); do
        port=$((20000 + RANDOM % 40000))
        free=1
        for i in $(seq "$MEMBERS"); do
            if (: <"/dev/tcp/127.0.0.$i/$port") 2>/dev/null; then free=0; fi
        done
        ((free)) && { echo "$port"; return 0; }
    done
    die "found no port free on every member's address"
}

# Starts the members (the same client and peer ports on each address, data
# in $TMP/etcdN) and waits until etcdctl finds all of them healthy. Sets
# ETCD_PIDS, ETCD_URLS and ETCD_ENDPOINTS.
start_etcd_cluster() {
    local attempt client peer i cluster
    for attempt in 1 2 3; do
        client=$(free_member_port)
        peer=$(free_member_port)
        [[ $client != "$peer" ]] || continue
        cluster=
        ETCD_URLS=()
        for i in $(seq "$MEMBERS"); do
            cluster+="${cluster:+,}m$i=http://127.0.0.$i:$peer"
            ETCD_URLS+=("http://127.0.0.$i:$client")
        done
        ETCD_ENDPOINTS=$(IFS=,; echo "${ETCD_URLS[*]}")
        ETCD_PIDS=()
        for i in $(seq "$MEMBERS"); do
            rm -rf "$TMP/etcd$i"
            # --max-txn-ops: a kvs write takes an op per key and per expiry
            # it changes and a compare per key it reads (docs/API.md).
            etcd --name "m$i" --data-dir "$TMP/etcd$i" --logger zap --log-level warn \
                --listen-client-urls "${ETCD_URLS[i - 1]}" --advertise-client-urls "${ETCD_URLS[i - 1]}" \
                --listen-peer-urls "http://127.0.0.$i:$peer" \
                --initial-advertise-peer-urls "http://127.0.0.$i:$peer" \
                --initial-cluster "$cluster" --initial-cluster-state new \
                --initial-cluster-token "kvs-bench-$$-$attempt" \
                --max-txn-ops 100000 >"$TMP/etcd$i.log" 2>&1 &
            ETCD_PIDS+=($!)
        done
        for _ in $(seq 300); do
            if ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINTS" --command-timeout 2s \
                endpoint health >/dev/null 2>&1; then
                return 0
            fi
            sleep 0.1
        done
        log "the etcd cluster did not become healthy (attempt $attempt); member 1's log:"
        tail -n 20 "$TMP/etcd1.log" >&2 || true
        for i in "${ETCD_PIDS[@]}"; do stop_process "$i"; done
    done
    die "the etcd cluster did not start"
}

log "starting a $MEMBERS-member etcd cluster on 127.0.0.1..127.0.0.$MEMBERS (data in $TMP/etcdN)"
start_etcd_cluster
log "etcd cluster: $ETCD_ENDPOINTS"

# A secret of the form kvs_ + 43 base64url characters (256 random bits); every
# cluster node gets it, as docs/API.md advises.
ADMIN_TOKEN=kvs_$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')

start_embedded() {
    log "starting the embedded kvs (data in $TMP/embedded)"
    KVS_ADMIN_TOKEN=$ADMIN_TOKEN start_server "embedded kvs" "$TMP/embedded.log" /readyz \
        "$KVS_BIN" serve --listen 127.0.0.1:@PORT@ --data-dir "$TMP/embedded" --log-level warn
    EMBEDDED_PID=$STARTED_PID
    EMBEDDED_URL=http://127.0.0.1:$STARTED_PORT
}

NODE_URLS=()
start_node() { # the next cluster node, over every member
    local n=$((${#NODE_PIDS[@]} + 1))
    log "starting kvs node $n (--etcd-endpoints $ETCD_ENDPOINTS --etcd-prefix $ETCD_PREFIX)"
    KVS_ADMIN_TOKEN=$ADMIN_TOKEN start_server "kvs node $n" "$TMP/node$n.log" /readyz \
        "$KVS_BIN" serve --listen 127.0.0.1:@PORT@ --data-dir "$TMP/node$n" --log-level warn \
        --etcd-endpoints "$ETCD_ENDPOINTS" --etcd-prefix "$ETCD_PREFIX"
    NODE_PIDS+=("$STARTED_PID")
    NODE_URLS+=("http://127.0.0.1:$STARTED_PORT")
}

# --- the project and its keys ---------------------------------------------------

api() { # url method path [json]: prints the body; fails on a non-2xx answer
    admin_api "$1$3" "$2" "${4-}"
}

project_keys() { # url
    api "$1" GET "/v1/projects/$PROJECT" | grep -o '"keys":[0-9]*' | head -n1 | cut -d: -f2
}

# Runs wrk (1 thread, 64 connections) with the given script and url until
# `counter` (a command) answers KEYS or more; the script writes the keys in
# order and starts over.
preload() { # what counter wrk-arguments...
    local what=$1 counter=$2 started count=0
    shift 2
    log "preloading $KEYS keys of $VALUE_BYTES bytes into $what (wrk, 1 thread, 64 connections)"
    started=$(date +%s.%N)
    wrk -t1 -c64 -d120s --timeout 5s "$@" >"$TMP/preload.out" 2>&1 &
    LOAD_PIDS=($!)
    for _ in $(seq 1200); do
        count=$($counter || echo 0)
        ((count >= KEYS)) && break
        kill -0 "${LOAD_PIDS[0]}" 2>/dev/null || break
        sleep 0.1
    done
    stop_process "${LOAD_PIDS[0]}"
    LOAD_PIDS=()
    ((count >= KEYS)) || { cat "$TMP/preload.out" >&2; die "the preload of $what reached only $count keys"; }
    log "preloaded $what in $(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}') s"
}

# Creates the disk project on a server and writes its keys (wrk with
# preload.lua until the project counts them all). Sets PROJECT_TOKEN (a
# manage token of the project).
create_and_preload() { # what url
    local what=$1 url=$2 created token
    created=$(api "$url" POST /v1/projects "{\"id\":\"$PROJECT\",\"storage\":\"disk\"}") ||
        die "could not create the project on $what: $created"
    token=$(grep -o '"secret":"[^"]*"' <<<"$created" | head -n1 | cut -d'"' -f4)
    [[ $token == kvs_* ]] || die "no token in the answer of $what: $created"
    BENCH_TOKEN=$token preload "$what" "project_keys $url" -s "$BENCH_DIR/preload.lua" "$url"
    PROJECT_TOKEN=$token
}

export BENCH_PROJECT=$PROJECT BENCH_KEYS=$KEYS BENCH_VALUE_BYTES=$VALUE_BYTES

# --- measuring -------------------------------------------------------------------

RESULTS=$TMP/results.tsv
: >"$RESULTS"

pids_ticks() { # pids...: their CPU time summed, in clock ticks
    local pid sum=0
    for pid in "$@"; do sum=$((sum + $(proc_ticks "$pid"))); done
    echo "$sum"
}

warm_up() { # url [token]: GET load, not reported
    ((BENCH_WARMUP > 0)) || return 0
    BENCH_TOKEN=${2-} wrk -t2 -c"$CONNS" -d"${BENCH_WARMUP}s" -s "$BENCH_DIR/get.lua" "$1" \
        >/dev/null 2>&1 || true
}

# measure label nodes script url...: CONNS connections spread over the urls,
# one wrk each (2 threads when there is one url, else 1), all at once; the
# wrk script's settings come from the caller's environment (BENCH_TOKEN,
# BENCH_ETCD_OP). Appends a row to RESULTS: label, nodes, summed requests/s,
# the highest p50 and p99 of the wrks (ms), errors, kvs and etcd CPU (% of one
# core) and the machine's idle %.
measure() {
    local label=$1 nodes=$2 script=$3
    shift 3
    local urls=("$@") n=$# i conns threads outs=() k0 e0 m0 k1 e1 m1 pid
    threads=$((n == 1 ? 2 : 1))
    k0=$(pids_ticks "${NODE_PIDS[@]}" $EMBEDDED_PID)
    e0=$(pids_ticks "${ETCD_PIDS[@]}")
    m0=$(machine_ticks)
    LOAD_PIDS=()
    for i in $(seq 0 $((n - 1))); do
        conns=$((CONNS / n + (i < CONNS % n ? 1 : 0)))
        outs+=("$TMP/wrk-${label// /_}-$nodes-$i.out")
        wrk -t"$threads" -c"$conns" -d"${BENCH_SECONDS}s" --timeout 5s \
            -s "$BENCH_DIR/$script" "${urls[i]}" >"${outs[i]}" 2>&1 &
        LOAD_PIDS+=($!)
    done
    for i in $(seq 0 $((n - 1))); do
        wait "${LOAD_PIDS[i]}" || { cat "${outs[i]}" >&2; die "wrk failed ($label, $nodes, ${urls[i]})"; }
    done
    LOAD_PIDS=()
    k1=$(pids_ticks "${NODE_PIDS[@]}" $EMBEDDED_PID)
    e1=$(pids_ticks "${ETCD_PIDS[@]}")
    m1=$(machine_ticks)
    grep -h '^BENCH_RESULT ' "${outs[@]}" >"$TMP/lines" || true
    (($(wc -l <"$TMP/lines") == n)) || { cat "${outs[@]}" >&2; die "a wrk of $label gave no BENCH_RESULT"; }
    awk -v label="$label" -v nodes="$nodes" -v hz="$(getconf CLK_TCK)" -v k="$((k1 - k0))" \
        -v e="$((e1 - e0))" -v m0="$m0" -v m1="$m1" '
        {
            for (i = 2; i <= NF; i++) { split($i, p, "="); r[p[1]] = p[2] }
            rps += r["rps"]
            if (r["p50_us"] > p50) p50 = r["p50_us"]
            if (r["p99_us"] > p99) p99 = r["p99_us"]
            errors += r["err_connect"] + r["err_read"] + r["err_write"] + r["err_status"] + r["err_timeout"]
            if (r["duration_us"] / 1e6 > longest) longest = r["duration_us"] / 1e6
        }
        END {
            if (longest <= 0) longest = 1
            split(m0, a, " "); split(m1, b, " ")
            total = b[1] - a[1]; if (total <= 0) total = 1
            printf "%s\t%s\t%.0f\t%.3f\t%.3f\t%d\t%.0f\t%.0f\t%.0f\n", label, nodes, rps,
                p50 / 1000, p99 / 1000, errors, 100 * k / hz / longest, 100 * e / hz / longest,
                100 * (b[2] - a[2]) / total
        }' "$TMP/lines" >>"$RESULTS"
    tail -n1 "$RESULTS" | awk -F'\t' '{printf "[bench] %-16s %-12s %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  errors %d\n", $1, $2, $3, $4, $5, $6}' >&2
}

# The three kvs rows against the given urls (one token for all of them).
measure_kvs() { # label-prefix nodes token url...
    local prefix=$1 nodes=$2 token=$3
    shift 3
    BENCH_TOKEN=$token measure "$prefix GET" "$nodes" get.lua "$@"
    BENCH_TOKEN=$token measure "$prefix PUT" "$nodes" put.lua "$@"
    BENCH_TOKEN=$token measure "$prefix TXN" "$nodes" txn.lua "$@"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# The embedded kvs first, alone beside the idle etcd cluster; stopped after.
start_embedded
create_and_preload "the embedded kvs" "$EMBEDDED_URL"
EMBEDDED_TOKEN=$PROJECT_TOKEN
warm_up "$EMBEDDED_URL" "$EMBEDDED_TOKEN"
log "measuring: 14 runs of ${BENCH_SECONDS} s"
measure_kvs embedded "1 embedded" "$EMBEDDED_TOKEN" "$EMBEDDED_URL"
stop_process "$EMBEDDED_PID"
EMBEDDED_PID=

# etcd alone: its keys (the same names and values, outside kvs's prefix),
# then range and put through the members' JSON gateways.
etcd_keys() { # the number of keys under bench/ (a serializable count)
    curl -sS --max-time 5 -X POST "${ETCD_URLS[0]}/v3/kv/range" \
        -d '{"key":"YmVuY2gv","range_end":"YmVuY2gw","count_only":true,"serializable":true}' |
        grep -o '"count":"[0-9]*"' | grep -o '[0-9]*' || echo 0
}
BENCH_ETCD_OP=preload preload "etcd (its JSON gateway)" etcd_keys -s "$BENCH_DIR/etcd.lua" "${ETCD_URLS[0]}"
BENCH_ETCD_OP=range measure "etcd range" "3 members" etcd.lua "${ETCD_URLS[@]}"
BENCH_ETCD_OP=put measure "etcd put" "3 members" etcd.lua "${ETCD_URLS[@]}"

# The cluster: one node, then a second and a third joining (nodes are
# stateless: a node started later serves the same project at once). Each
# row runs with exactly that many nodes up.
start_node
create_and_preload "the cluster (through node 1)" "${NODE_URLS[0]}"
CLUSTER_TOKEN=$PROJECT_TOKEN
for n in 1 2 3; do
    ((n == 1)) || start_node
    warm_up "${NODE_URLS[n - 1]}" "$CLUSTER_TOKEN"
    measure_kvs cluster "$n node$( ((n > 1)) && echo s)" "$CLUSTER_TOKEN" "${NODE_URLS[@]}"
done

# Every node serves the preloaded keys: one GET of a key from each.
for url in "${NODE_URLS[@]}"; do
    sample=$(curl -sS --fail-with-body --max-time 5 -H "Authorization: Bearer $CLUSTER_TOKEN" \
        "$url/v1/projects/$PROJECT/kv/bench/k00042") || die "GET of a preloaded key from $url failed: $sample"
    ((${#sample} == VALUE_BYTES)) || die "$url answers a value of ${#sample} bytes, not $VALUE_BYTES"
done
keys_after=$(project_keys "${NODE_URLS[0]}" || echo "?")

# --- the report ------------------------------------------------------------------

kvs_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || kvs_rev="$kvs_rev+changes"
echo
echo "kvs cluster benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)  kvs $kvs_rev  $(wrk --version 2>&1 | head -n1 | awk '{print $1, $2}')  $(etcd --version | head -n1)"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), load average $LOAD_BEFORE before, $(cut -d' ' -f1-3 /proc/loadavg) after"
echo "etcd: $MEMBERS members on 127.0.0.1..127.0.0.$MEMBERS, each on its own data dir (one disk), --max-txn-ops 100000;"
echo "$KEYS keys x $VALUE_BYTES-byte values in a disk project (PUT and TXN answered once durable); random keys;"
echo "$CONNS connections per row, spread over the nodes (one wrk each, -t1; -t2 for one); ${BENCH_SECONDS} s per run"
echo
printf '%-20s %-11s %11s %9s %9s %7s %8s %9s %6s\n' \
    workload nodes "requests/s" "p50 ms" "p99 ms" errors "kvs cpu" "etcd cpu" idle
printf '%-20s %-11s %11s %9s %9s %7s %8s %9s %6s\n' \
    -------------------- ----------- ----------- --------- --------- ------- -------- --------- ------
awk -F'\t' '{
    name = $1
    sub(/ PUT$/, " PUT (sync)", name); sub(/ TXN$/, " TXN 5 puts", name); sub(/^etcd put$/, "etcd put (sync)", name)
    printf "%-20s %-11s %11.0f %9.2f %9.2f %7d %7.0f%% %8.0f%% %5.0f%%\n", name, $2, $3, $4, $5, $6, $7, $8, $9
}' "$RESULTS"
echo
echo "requests/s: summed over the nodes' wrks; p50 and p99: the highest of them. cpu: % of one core"
echo "(this machine has $(nproc)) used by the kvs processes up (the embedded one, or every cluster"
echo "node) and by the $MEMBERS etcd members; idle: % of the whole machine. A TXN is one request of 5"
echo "puts: keys/s = 5 x requests/s. etcd range is linearizable (its default); etcd put is answered"
echo "once the raft log entry is fsync'd on a majority. The wrks share the machine with everything else."
errors_total=$(awk -F'\t' '{s += $6} END {print s + 0}' "$RESULTS")
((errors_total == 0)) || echo "WARNING: $errors_total failed requests (non-2xx, timeouts or socket errors): figures are suspect"
[[ $keys_after == "$KEYS" ]] || echo "WARNING: the cluster's project holds $keys_after keys after the runs, not $KEYS"
