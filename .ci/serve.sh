# Sourced by the CI stages that need a running server: `serve` starts "$BIN"
# on a free loopback port with a fresh data dir under $work, waits until
# /readyz answers, and sets $url and $server; the server and $work go on exit.
# Variables set before the call (`KVS_ADMIN_TOKEN=… serve`) reach the server.
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

serve() {
    local port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    url=http://127.0.0.1:$port
    "$BIN" serve --listen "127.0.0.1:$port" --data-dir "$work/data" >"$work/server.log" 2>&1 &
    server=$!
    for _ in $(seq 100); do
        curl -fs "$url/readyz" >/dev/null && return 0
        sleep 0.1
    done
    echo "kvs did not become ready; its log:" >&2
    cat "$work/server.log" >&2
    return 1
}
