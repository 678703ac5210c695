#!/usr/bin/env bash
# Simple-PyKV's GET with an imported PBKDF2 key (after its first use) beside
# the same GET with a kvs token and v1's GET, on one server, 3 rounds of 5 s
# at 64 connections. Prints the first and second request's time too.
#   bash bench/imported_keys.sh      (needs a release build, wrk, curl, python3)
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOK=kvs_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
KEY=legacy-simple-pykv-key-0123456789abcdef
DIGEST=$(python3 -c "
import hashlib,base64,os
salt=os.urandom(16); dk=hashlib.pbkdf2_hmac('sha256', b'$KEY', salt, 200000, 32)
e=lambda b: base64.urlsafe_b64encode(b).rstrip(b'=').decode()
print(f'pbkdf2_sha256\$200000\${e(salt)}\${e(dk)}')")
DATA=$(mktemp -d); trap 'rm -rf "$DATA"' EXIT
KVS_ADMIN_TOKEN=$TOK KVS_LOG_LEVEL=warn "$ROOT/target/release/kvs" serve --listen 127.0.0.1:47301 --data-dir "$DATA" >/dev/null 2>&1 &
PID=$!
for i in $(seq 50); do curl -fs -o /dev/null 127.0.0.1:47301/healthz && break; sleep 0.1; done
curl -s -o /dev/null -H "Authorization: Bearer $TOK" --json '{"id":"bench"}' 127.0.0.1:47301/v1/projects
curl -s -H "Authorization: Bearer $TOK" --json "{\"role\":\"manage\",\"imported_digest\":\"$DIGEST\"}" 127.0.0.1:47301/v1/projects/bench/tokens; echo
cd "$ROOT"
BENCH_TOKEN=$TOK BENCH_KEYS=10000 wrk -t1 -c64 -d8s -s bench/preload.lua http://127.0.0.1:47301 >/dev/null 2>&1
echo "first request with the imported key: $(curl -s -o /dev/null -w '%{http_code} %{time_total}s' -H "X-API-Key: $KEY" 127.0.0.1:47301/api/v1/projects/bench/store/bench%2Fk00001)"
echo "second: $(curl -s -o /dev/null -w '%{http_code} %{time_total}s' -H "X-API-Key: $KEY" 127.0.0.1:47301/api/v1/projects/bench/store/bench%2Fk00001)"
for round in 1 2 3; do
  v1=$(BENCH_TOKEN=$TOK BENCH_KEYS=10000 wrk -t2 -c64 -d5s -s bench/get.lua http://127.0.0.1:47301 2>&1 | grep BENCH_RESULT | grep -o 'rps=[0-9.]*')
  pk=$(BENCH_TOKEN=$TOK BENCH_KEYS=10000 wrk -t2 -c64 -d5s -s bench/pykv_get.lua http://127.0.0.1:47301 2>&1 | grep BENCH_RESULT | grep -o 'rps=[0-9.]*')
  im=$(BENCH_TOKEN=$KEY BENCH_KEYS=10000 wrk -t2 -c64 -d5s -s bench/pykv_get.lua http://127.0.0.1:47301 2>&1 | grep BENCH_RESULT | grep -o 'rps=[0-9.]*\|status_[a-z0-9]*=[0-9]*' | tr '\n' ' ')
  echo "round $round  v1 GET $v1   pykv GET (kvs token) $pk   pykv GET (imported key) $im"
done
kill $PID
