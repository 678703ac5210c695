# Shell helpers of bench/run.sh and bench/size.sh (sourced, not run).

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
