#!/usr/bin/env bash
# Every operations check, for CI: the compose/dashboard/alert checks, the self-tests of both checkers, the OpenAPI
# document the coordinator serves (openapi-spec-validator and scripts/ops/check_openapi.py), and the
# real-data check — a real Prometheus scraping a real coordinator while `confide demo` runs rounds with three real
# agents against it, then every dashboard and alert expression evaluated through Prometheus (debug binaries, built by
# the test command before this runs).
set -euo pipefail
cd "$(dirname "$0")/../.."
passed=0
failed=0
real_data_check() {
  scripts/ops/check-dashboards-local.sh --coordinator-bin target/debug/confide-coordinator -- \
    target/debug/confide demo --participants 3 --rounds 3 --json
}
for check in scripts/check-compose.sh scripts/ops/selftest-check-compose.sh scripts/ops/selftest-check-dashboards.sh \
  scripts/ops/check-openapi.sh real_data_check; do
  echo "=== $check"
  if "$check"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "=== $check FAILED" >&2; fi
done
echo "ops: $passed passed, $failed failed"
[ "$failed" = 0 ]
