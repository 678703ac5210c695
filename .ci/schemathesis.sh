#!/usr/bin/env bash
# Property-based tests of the API against its own OpenAPI document: starts
# the release binary on a free port with a fresh data dir, creates a project,
# and runs schemathesis against /v1/openapi.json. Any 5xx, or any answer that
# contradicts the document (status, content type, body schema), fails.
# Watch streams and blocking reads are left out (see schemathesis_hooks.py).
# Requests carry the admin token only: schemathesis would otherwise fill the
# API-key schemes with values of its own, and two credentials get 401.
set -euo pipefail
cd "$(dirname "$0")/.."

root=$(pwd)
BIN=$(realpath "${1:-target/release/kvs}")
SCHEMATHESIS_VERSION=4.32.5
target=$(realpath -m "${CARGO_TARGET_DIR:-target}")
VENV=$target/schemathesis-venv
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

. .ci/serve.sh
admin=kvs_$(python3 -c 'import base64, secrets; print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("="))')
KVS_ADMIN_TOKEN=$admin serve

# The project that the hooks point at.
python3 - "$url" "$admin" <<'PY'
import json, sys, urllib.request
url, admin = sys.argv[1], sys.argv[2]
request = urllib.request.Request(
    url + "/v1/projects",
    data=json.dumps({"id": "demo"}).encode(),
    headers={"Authorization": "Bearer " + admin, "Content-Type": "application/json"},
)
urllib.request.urlopen(request, timeout=5)
PY

status=0
# Run from the scratch dir: schemathesis keeps a cache in its working dir.
(cd "$work" && PYTHONPATH="$root/.ci" SCHEMATHESIS_HOOKS=schemathesis_hooks "$VENV/bin/schemathesis" run \
    "$url/v1/openapi.json" \
    --header "Authorization: Bearer $admin" \
    --generation-with-security-parameters false \
    --exclude-path '/v1/projects/{project}/watch' \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing \
    --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-20}" \
    --request-timeout 10 \
    --seed "${SCHEMATHESIS_SEED:-1}" \
    --suppress-health-check all \
    --warnings off \
    --output-sanitize false \
    --report har --report-har-path "$target/schemathesis.har" \
    --no-color) || status=$?
if [ "$status" -ne 0 ]; then
    echo "== kvs log"
    tail -n 50 "$work/server.log"
fi
exit "$status"
