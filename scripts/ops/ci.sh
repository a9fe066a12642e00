#!/usr/bin/env bash
# Every operations check that runs without a Docker engine or a coordinator, for CI:
# the compose/dashboard/alert checks and the self-tests of both checkers. (The real-data check,
# scripts/check-dashboards.sh, needs a coordinator that runs rounds with real agents.)
set -euo pipefail
cd "$(dirname "$0")/../.."
passed=0
failed=0
for check in scripts/check-compose.sh scripts/ops/selftest-check-compose.sh scripts/ops/selftest-check-dashboards.sh; do
  echo "=== $check"
  if "$check"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "=== $check FAILED" >&2; fi
done
echo "ops: $passed passed, $failed failed"
[ "$failed" = 0 ]
