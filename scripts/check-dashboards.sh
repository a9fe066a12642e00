#!/usr/bin/env bash
# The real-data check of the dashboards and alert rules: starts a real Prometheus (Debian package `prometheus`,
# installed if missing) scraping the coordinator at COORDINATOR_URL with the compose stack's scrape job and alert rules,
# optionally runs a workload while it scrapes, then evaluates every PromQL expression of every Grafana panel, dashboard
# variable and alert rule through Prometheus's HTTP API. Fails if any is invalid or returns no data.
#
#   scripts/check-dashboards.sh COORDINATOR_URL [options] [-- WORKLOAD COMMAND...]
#
# The workload (e.g. a script that runs rounds with real agents against COORDINATOR_URL) runs after the first
# scrapes, with COORDINATOR_URL and PROMETHEUS_URL in its environment, so rates and increases see the rounds happen.
# Options: --scrape-interval S, --min-scrapes N, --observe S (scrape for S seconds when there is no workload),
# --json FILE, --keep, --dashboards DIR, --rules FILE (see scripts/ops/check_dashboards.py --help).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  [ $# -ge 1 ] && exit 0 || exit 2
fi
source scripts/ops/common.sh
ops_need_prometheus
ops_need_pyyaml
exec python3 scripts/ops/check_dashboards.py "$@"
