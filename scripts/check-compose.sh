#!/usr/bin/env bash
# Validates the compose stack without a Docker engine (CI): every reference in docker-compose.yml resolves (build
# contexts, Dockerfiles and what they COPY, bind mounts, named volumes, depends_on, health checks, host ports), the
# Prometheus configuration and alert rules are valid (promtool check config / check rules) and behave as intended
# (promtool test rules), every Grafana dashboard parses, has unique panel ids and uses the provisioned datasource, and
# the dashboards' PromQL arithmetic (budget share, remaining ε, projected rounds left, ...) gives the known answers on a
# synthetic history (scripts/ops/test_dashboard_queries.py).
# Installs promtool (Debian package prometheus) and PyYAML if missing. Exit status 0 = all checks passed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ops/common.sh
ops_need_prometheus
ops_need_pyyaml

echo "== compose, Dockerfiles, provisioning, dashboards, deploy slices"
python3 scripts/ops/check_compose.py

echo "== promtool check config"
promtool check config dashboards/prometheus/prometheus.yml
echo "== promtool check rules"
promtool check rules dashboards/prometheus/alerts.yml
echo "== promtool test rules"
promtool test rules dashboards/prometheus/alerts_test.yml
echo "== dashboard query unit tests (promtool, synthetic history with known answers)"
python3 scripts/ops/test_dashboard_queries.py

# The docker client's own parser, when a compose plugin is installed (it needs no engine for `config`).
if docker compose version >/dev/null 2>&1; then
  echo "== docker compose config"
  docker compose -f docker-compose.yml config -q
elif command -v docker-compose >/dev/null 2>&1; then
  echo "== docker-compose config"
  docker-compose -f docker-compose.yml config -q
else
  echo "== docker compose not installed: skipped its parser (the checks above do not need it)"
fi
echo "check-compose: OK"
