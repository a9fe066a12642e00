#!/usr/bin/env bash
# Runs the real-data dashboard check against a coordinator started here: a fresh SQLite database in a temporary folder,
# an operator token, `confide-coordinator serve` on a free loopback port, then scripts/check-dashboards.sh with the
# workload, then the coordinator is stopped. The workload (e.g. agents + rounds) gets COORDINATOR_URL, PROMETHEUS_URL
# and CONFIDE_OPERATOR_TOKEN in its environment and must leave the coordinator running.
#
#   scripts/ops/check-dashboards-local.sh [--coordinator-bin PATH] [check-dashboards options] -- WORKLOAD...
#
# Default binary: target/release/confide-coordinator (build it with `cargo build --release -p confide-coordinator`).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=target/release/confide-coordinator
if [ "${1:-}" = --coordinator-bin ]; then bin="$2"; shift 2; fi
[ -x "$bin" ] || { echo "no coordinator binary at $bin (cargo build --release -p confide-coordinator)" >&2; exit 2; }
tmp="$(mktemp -d)"
coordinator=""
cleanup() {
  if [ -n "$coordinator" ]; then kill "$coordinator" 2>/dev/null || true; wait "$coordinator" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
db="sqlite:$tmp/coordinator.db"
"$bin" --database-url "$db" migrate >/dev/null
CONFIDE_OPERATOR_TOKEN="$("$bin" --database-url "$db" token create --name check-dashboards 2>/dev/null)"
export CONFIDE_OPERATOR_TOKEN
"$bin" --database-url "$db" serve --listen 127.0.0.1:0 >"$tmp/stdout" 2>"$tmp/coordinator.log" &
coordinator=$!
url=""
for _ in $(seq 100); do
  url="$(sed -n 's/^listening on \(http:[^ ]*\)$/\1/p' "$tmp/stdout")"
  [ -n "$url" ] && break
  kill -0 "$coordinator" 2>/dev/null || { cat "$tmp/coordinator.log" >&2; echo "the coordinator exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "the coordinator did not report its address" >&2; exit 1; }
echo "coordinator $url (log $tmp/coordinator.log)"
status=0
scripts/check-dashboards.sh "$url" "$@" || status=$?
if [ "$status" != 0 ]; then echo "--- coordinator log (last 20 lines)"; tail -n 20 "$tmp/coordinator.log"; fi
exit "$status"
