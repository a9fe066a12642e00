#!/usr/bin/env bash
# Self-test of the dashboard checker (NOT the real-data check, which runs against a real coordinator):
# serves a realistic, evolving sample exposition with the coordinator's metric names (scripts/ops/selftest_exporter.py),
# 1. runs scripts/check-dashboards.sh against it with a workload and expects every check to pass;
# 2. runs it on copies of the dashboards and rules with deliberate faults and expects each fault to be reported;
# 3. runs it against an address where nothing listens and expects it to fail.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/ops/common.sh
ops_need_prometheus
ops_need_pyyaml
tmp="$(mktemp -d)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
python3 scripts/ops/selftest_exporter.py --port "$port" --round-seconds 1 &
exporter=$!
trap 'kill "$exporter" 2>/dev/null || true; rm -rf "$tmp"' EXIT
url="http://127.0.0.1:$port"
fails=0

echo "== 1. sample exposition, with a workload: every check must pass"
if scripts/check-dashboards.sh "$url" --scrape-interval 0.5 --json "$tmp/good.json" -- \
     python3 -c 'import os, time, urllib.request; urllib.request.urlopen(os.environ["PROMETHEUS_URL"] + "/-/ready"); urllib.request.urlopen(os.environ["COORDINATOR_URL"] + "/healthz"); time.sleep(4)' \
     >"$tmp/good.log" 2>&1; then
  echo "ok    $(tail -n1 "$tmp/good.log")"
else
  cat "$tmp/good.log" >&2; echo "FAIL  the checker failed on the sample exposition" >&2; fails=$((fails + 1))
fi

echo "== 2. deliberate faults: each must be reported"
mkdir -p "$tmp/bad/dashboards"
cp dashboards/grafana/*.json "$tmp/bad/dashboards/"
cp dashboards/prometheus/alerts.yml "$tmp/bad/alerts.yml"
python3 - "$tmp/bad" <<'PY'
import json, pathlib, sys
bad = pathlib.Path(sys.argv[1])
f = bad / "dashboards" / "confide-operations.json"
d = json.loads(f.read_text())
panels = [p for p in d["panels"] if p.get("targets")]
panels[0]["targets"][0]["expr"] = 'sum(rate(confide_http_requets_total[$__rate_interval]))'          # misspelt metric
panels[1]["targets"][0]["expr"] = 'sum by (stage (rate(confide_round_stage_duration_seconds_count[5m]))'  # syntax error
panels[2]["targets"][0]["expr"] = 'confide_round_participants{study=~"$hospital"}'                     # unknown variable
panels[3]["targets"][0]["expr"] = 'confide_rounds_total{outcome="exploded"}'                           # label value never emitted
f.write_text(json.dumps(d))
f = bad / "dashboards" / "confide-privacy.json"
d = json.loads(f.read_text())
for p in d["panels"]:
    if p.get("title") == "Accuracy vs ε spent, per round":
        p["title"] = "Accuracy"                                                                   # required panel gone
f.write_text(json.dumps(d))
r = bad / "alerts.yml"
r.write_text(r.read_text().replace("up{job=\"confide-coordinator\"} == 0", "up{job=\"confide-coordinatr\"} == 0"))
PY
if scripts/check-dashboards.sh "$url" --scrape-interval 0.5 --observe 2 --dashboards "$tmp/bad/dashboards" --rules "$tmp/bad/alerts.yml" >"$tmp/bad.log" 2>&1; then
  echo "FAIL  the checker passed dashboards with faults" >&2; fails=$((fails + 1))
fi
for expected in \
  "FAIL  [all  ] confide-operations.json: panel 2 'Coordinator' target A: no data" \
  "FAIL  [all  ] confide-operations.json: panel 3 'Requests / s' target A: rejected by Prometheus: bad_data" \
  "FAIL  [all  ] confide-operations.json: panel 4 'Server errors (5xx share)' target A: unknown template variable(s) \$hospital" \
  "FAIL  [one  ] confide-operations.json: panel 5 'Rounds in range' target A: no data for any of 2 single-value selection(s)" \
  "FAIL  [one  ] confide-operations.json: panel 3 'Requests / s' target A: study=1: rejected by Prometheus: bad_data" \
  "FAIL  [data ] alerts.yml: alert ConfideCoordinatorDown: watched quantity" \
  "FAIL  [panel] confide-privacy: panel 'Accuracy vs ε spent, per round': missing" ; do
  if grep -qF -- "$expected" "$tmp/bad.log"; then echo "ok    reported: ${expected#FAIL  }"; else
    echo "FAIL  not reported: $expected" >&2; fails=$((fails + 1)); fi
done
n_fail="$(grep -c '^FAIL' "$tmp/bad.log" || true)"
# 3 broken panel targets x 2 (all + single-value selections) + 1 unknown variable (reported once) + 1 alert + 1
# missing required panel = 9 failures; anything else is a false alarm.
if [ "$n_fail" != 9 ]; then grep '^FAIL' "$tmp/bad.log" >&2; echo "FAIL  expected 9 failures, got $n_fail" >&2; fails=$((fails + 1)); fi

echo "== 3. nothing listening: must fail"
dead="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
if timeout 120 scripts/check-dashboards.sh "http://127.0.0.1:$dead" --scrape-interval 0.5 --wait 5 >"$tmp/dead.log" 2>&1; then
  echo "FAIL  the checker passed without a coordinator" >&2; fails=$((fails + 1))
else
  echo "ok    $(tail -n1 "$tmp/dead.log")"
fi

[ "$fails" = 0 ] || { echo "selftest-check-dashboards: $fails failure(s)" >&2; exit 1; }
echo "selftest-check-dashboards: OK"
