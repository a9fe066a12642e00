#!/usr/bin/env bash
# Validates the OpenAPI document the coordinator serves: starts `confide-coordinator serve` on a fresh SQLite database
# and a free loopback port, fetches /openapi.json, then runs openapi-spec-validator on it and the project's own
# rules (scripts/ops/check_openapi.py: every response has a description, every schema property has one, model_spec has
# a real schema). Installs openapi-spec-validator if missing (pip, else the Debian package).
#
#   scripts/ops/check-openapi.sh [--coordinator-bin PATH]      (default: target/debug/confide-coordinator)
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=target/debug/confide-coordinator
if [ "${1:-}" = --coordinator-bin ]; then bin="$2"; shift 2; fi
[ -x "$bin" ] || { echo "no coordinator binary at $bin (cargo build -p confide-coordinator)" >&2; exit 2; }
source scripts/ops/common.sh
if ! python3 -c 'import openapi_spec_validator' >/dev/null 2>&1; then
  echo "installing openapi-spec-validator" >&2
  python3 -m pip install --quiet --disable-pip-version-check 'openapi-spec-validator>=0.7,<1' >&2 2>/dev/null \
    || ops_apt_install python3-openapi-spec-validator
fi
tmp="$(mktemp -d)"
coordinator=""
cleanup() {
  if [ -n "$coordinator" ]; then kill "$coordinator" 2>/dev/null || true; wait "$coordinator" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
db="sqlite:$tmp/coordinator.db"
# Created before the background start: the loop below may read it before the child has opened it.
: >"$tmp/stdout"
"$bin" --database-url "$db" serve --listen 127.0.0.1:0 >"$tmp/stdout" 2>"$tmp/coordinator.log" &
coordinator=$!
url=""
for _ in $(seq 100); do
  url="$(sed -n 's/^listening on \(http:[^ ]*\)$/\1/p' "$tmp/stdout" 2>/dev/null || true)"
  [ -n "$url" ] && break
  kill -0 "$coordinator" 2>/dev/null || { cat "$tmp/coordinator.log" >&2; echo "the coordinator exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "the coordinator did not report its address" >&2; exit 1; }
python3 - "$url/openapi.json" "$tmp/openapi.json" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as r, open(sys.argv[2], "wb") as f:
    f.write(r.read())
PY
[ -z "${OPENAPI_KEEP:-}" ] || cp "$tmp/openapi.json" "$OPENAPI_KEEP"
echo "== openapi-spec-validator ($url/openapi.json)"
python3 -m openapi_spec_validator "$tmp/openapi.json"
echo "== descriptions and schemas (scripts/ops/check_openapi.py)"
python3 scripts/ops/check_openapi.py "$tmp/openapi.json"
echo "check-openapi: OK"
