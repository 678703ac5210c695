# Shell helpers of bench/run.sh, bench/size.sh and bench/cluster.sh (sourced, not run).

# Every script's start: ROOT (the repository) and BENCH_DIR, the working
# directory at ROOT, and none of the caller's KVS_* settings (kvs reads them
# from the environment).
enter_repository() {
    BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    ROOT=$(dirname "$BENCH_DIR")
    cd "$ROOT"
    local name
    while IFS= read -r name; do unset "$name"; done < <(compgen -e | grep '^KVS_' || true)
}

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

install_debian_packages() {
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        die "please install: $* (Debian: apt-get install -y $*)"
    fi
    log "installing $* from Debian's packages"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

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

# Builds with `cargo build --release ARGS...` and sets KVS_BIN.
build_kvs() { # cargo build arguments...
    command -v cargo >/dev/null || die "cargo is needed to build kvs"
    log "building: cargo build --release $*"
    cargo build --release "$@" >&2
    KVS_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/kvs
    [[ -x $KVS_BIN ]] || die "the build left no $KVS_BIN"
}

# A request with the admin token (ADMIN_TOKEN): prints the body; fails on a
# non-2xx answer.
admin_api() { # url method [json]
    local url=$1 method=$2 body=${3-}
    local args=(-sS --fail-with-body --max-time 30 -X "$method"
        -H "Authorization: Bearer $ADMIN_TOKEN")
    [[ -n $body ]] && args+=(-H "Content-Type: application/json" --data-binary "$body")
    curl "${args[@]}" "$url"
}

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

proc_ticks() { # pid: utime+stime of the whole process, in clock ticks
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    stat=${stat##*) }
    awk '{print $12 + $13}' <<<"$stat"
}

machine_ticks() { # the "cpu" line of /proc/stat: total, idle(+iowait), steal
    awk '/^cpu / {total = 0; for (i = 2; i <= 9; i++) total += $i;
                 print total, $5 + $6, $9; exit}' /proc/stat
}
