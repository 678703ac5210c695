#!/usr/bin/env bash
# `redocly lint` (npm @redocly/cli, the version .ci/redocly/package-lock.json
# pins, installed with `npm ci` under target/) of the OpenAPI document that
# the release binary serves, with the rules of .ci/redocly/redocly.yaml
# (recommended-strict: every warning fails; no rule is disabled).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=$(realpath "${1:-target/release/kvs}")
root=$(pwd)
target=$(realpath -m "${CARGO_TARGET_DIR:-target}")
tools=$target/redocly
if ! cmp -s .ci/redocly/package-lock.json "$tools/package-lock.json" \
    || [ ! -x "$tools/node_modules/.bin/redocly" ]; then
    mkdir -p "$tools"
    cp .ci/redocly/package.json .ci/redocly/package-lock.json "$tools/"
    (cd "$tools" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
fi

. .ci/serve.sh
serve
curl -fs "$url/v1/openapi.json" >"$work/openapi.json"
# Telemetry off: CI sends nothing anywhere.
REDOCLY_TELEMETRY=off "$tools/node_modules/.bin/redocly" lint "$work/openapi.json" \
    --config "$root/.ci/redocly/redocly.yaml" --format stylish
