#!/usr/bin/env bash
# Self-test of the compose checker (not the check itself): copies the working tree to a temporary folder, confirms
# scripts/ops/check_compose.py passes there, then breaks one reference at a time and confirms the checker reports it.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/ops/common.sh
ops_need_pyyaml
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
copy() { rm -rf "$tmp/t"; mkdir "$tmp/t"; tar --exclude=./target --exclude='./target-*' --exclude=./.git -cf - . | tar -xf - -C "$tmp/t"; }

copy
python3 "$tmp/t/scripts/ops/check_compose.py" >/dev/null || { echo "selftest: the unmodified tree does not pass" >&2; exit 1; }

fails=0
# expect_problem DESCRIPTION EXPECTED-MESSAGE-FRAGMENT PYTHON-MUTATION (run in the copy's root)
expect_problem() {
  copy
  (cd "$tmp/t" && python3 -c "$3")
  if out="$(python3 "$tmp/t/scripts/ops/check_compose.py" 2>&1)"; then
    echo "FAIL  $1: checker passed" >&2; fails=$((fails + 1))
  elif grep -qF -- "$2" <<<"$out"; then
    echo "ok    $1"
  else
    echo "FAIL  $1: expected '$2' in:" >&2; echo "$out" >&2; fails=$((fails + 1))
  fi
}
edit='import pathlib,sys
def sub(path, old, new, count=1):
    p = pathlib.Path(path); s = p.read_text()
    assert old in s, (path, old)
    p.write_text(s.replace(old, new, count))
'
expect_problem "missing bind-mount source" "bind mount source ./deploy/participants/hospital-b does not exist" \
  "import shutil; shutil.rmtree('deploy/participants/hospital-b')"
expect_problem "participant without a dataset id" "no [data] dataset_id" \
  "$edit
sub('deploy/participants/hospital-a/participant.toml', 'dataset_id = ', '# dataset_id = ')"
expect_problem "privacy ledger off the volumes" "privacy ledger /tmp/ledger.sqlite is not on a named volume" \
  "$edit
sub('deploy/participants/hospital-a/participant.toml', '# ledger = \"/var/lib/confide-ledger/ledger.sqlite\"', 'ledger = \"/tmp/ledger.sqlite\"')"
expect_problem "undeclared named volume" "named volume grafana-data is not declared" \
  "$edit
sub('docker-compose.yml', '  grafana-data:\n', '')"
expect_problem "unknown depends_on target" "depends_on unknown service postgress" \
  "$edit
sub('docker-compose.yml', 'postgres:\n        condition: service_healthy', 'postgress:\n        condition: service_healthy')"
expect_problem "misspelt service key" "service prometheus: unknown key 'healtcheck'" \
  "$edit
sub('docker-compose.yml', '    healthcheck:\n      test: [\"CMD\", \"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:9090', '    healtcheck:\n      test: [\"CMD\", \"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:9090')"
expect_problem "clashing host port" "host port 8080/tcp already published" \
  "$edit
sub('docker-compose.yml', '\"127.0.0.1:9090:9090\"', '\"8080:9090\"')"
expect_problem "missing Dockerfile" "Dockerfile docker/Dockerfile.participant does not exist" \
  "import os; os.remove('docker/Dockerfile.participant')"
expect_problem "Dockerfile copies a missing file" "copies scripts/bootstrap-libtorch.sh" \
  "import os; os.remove('scripts/bootstrap-libtorch.sh')"
expect_problem "healthy-wait on a service without health check" "has no healthcheck" \
  "import yaml; d = yaml.safe_load(open('docker-compose.yml')); del d['services']['coordinator']['healthcheck']; yaml.safe_dump(d, open('docker-compose.yml', 'w'))"
expect_problem "scrape target on the wrong port" "service coordinator does not listen on 9000" \
  "$edit
sub('dashboards/prometheus/prometheus.yml', 'coordinator:9464', 'coordinator:9000')"
expect_problem "Dockerfile copies from an undefined stage" "copies from stage 'libtorchh'" \
  "$edit
sub('docker/Dockerfile.participant', 'COPY --from=libtorch /opt/confide /opt/confide\nENV', 'COPY --from=libtorchh /opt/confide /opt/confide\nENV')"
expect_problem "Grafana timeInterval differs from the scrape interval" "differs from the scrape interval" \
  "$edit
sub('dashboards/prometheus/prometheus.yml', 'scrape_interval: 15s', 'scrape_interval: 30s')"
expect_problem "duplicate panel id" "also used by" \
  "import json; f = 'dashboards/grafana/confide-privacy.json'; d = json.load(open(f)); d['panels'][2]['id'] = d['panels'][1]['id']; json.dump(d, open(f, 'w'))"
expect_problem "foreign datasource uid" "is not the provisioned datasource uid" \
  "import json; f = 'dashboards/grafana/confide-operations.json'; d = json.load(open(f)); d['panels'][3]['targets'][0]['datasource'] = {'type': 'prometheus', 'uid': 'P1809F7CD0C75ACF3'}; json.dump(d, open(f, 'w'))"
expect_problem "broken dashboard JSON" "invalid JSON" \
  "$edit
sub('dashboards/grafana/confide-privacy.json', '{', '{,')"
expect_problem "stale data slice" "stale or missing files" \
  "$edit
sub('deploy/participants/hospital-c/data.csv', '\n1', '\n0')"
expect_problem "init script misses a hospital" "reads HOSPITAL_C_ENROLMENT_TOKEN, which scripts/compose-init.sh does not write" \
  "$edit
sub('scripts/compose-init.sh', 'hospitals=\"hospital-a hospital-b hospital-c\"', 'hospitals=\"hospital-a hospital-b\"')"
expect_problem "init script talks to an unknown service" "uses compose service 'coordinatorr'" \
  "$edit
sub('scripts/compose-init.sh', 'exec -T coordinator ', 'exec -T coordinatorr ')"
expect_problem "bundled study runs by hand" "is not \"automatic\"" \
  "$edit
sub('deploy/study.toml', 'kind = \"automatic\"', 'kind = \"manual\"')"
expect_problem "bundled study's model missing" "does not exist relative to the study file" \
  "$edit
sub('deploy/study.toml', '../examples/models/breast_cancer_logreg.json', '../examples/models/nope.json')"
expect_problem "agents crash-loop without a token" "no entrypoint that waits" \
  "$edit
sub('docker-compose.yml', '[ ! -e /var/lib/confide-participant/identity.json ]', 'true')"
[ "$fails" = 0 ] || { echo "selftest-check-compose: $fails failure(s)" >&2; exit 1; }
echo "selftest-check-compose: OK"
