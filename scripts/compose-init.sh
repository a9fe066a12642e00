#!/usr/bin/env bash
# One-time set-up of the compose stack, so that `docker compose up -d` then trains without further steps:
#   1. starts postgres, tls-init and the coordinator (`docker compose up -d --wait coordinator`);
#   2. creates an operator token inside the coordinator container (`confide-coordinator token create`);
#   3. copies the stack's CA to ./ca.pem and creates the study of deploy/study.toml with the `confide` CLI (its
#      [schedule] is automatic: the coordinator runs the rounds itself once the hospitals are enrolled);
#   4. creates one enrolment token per hospital and writes `.env` (mode 0600): the hospitals' tokens, a generated
#      GRAFANA_ADMIN_PASSWORD unless one is set, and the operator's connection (CONFIDE_COORDINATOR_URL,
#      CONFIDE_CA_CERT, CONFIDE_OPERATOR_TOKEN, CONFIDE_STUDY_ID) for later `confide` commands (`set -a; . ./.env`).
# Needs Docker with the compose plugin and the `confide` CLI (on PATH, $CONFIDE, or target/{release,debug}/confide:
# `cargo build --release --bin confide`). Refuses to run twice on the same .env (see the message for starting over).
#
#   scripts/compose-init.sh [--study FILE]        then: docker compose up -d
set -euo pipefail
cd "$(dirname "$0")/.."
study_file=deploy/study.toml
if [ "${1:-}" = --study ]; then study_file="$2"; shift 2; fi
# The hospitals of docker-compose.yml; each reads <LABEL>_ENROLMENT_TOKEN from .env (checked by
# scripts/ops/check_compose.py).
hospitals="hospital-a hospital-b hospital-c"
url=https://localhost:8080
env_file=.env

confide="${CONFIDE:-}"
if [ -z "$confide" ]; then
  for c in "$(command -v confide || true)" target/release/confide target/debug/confide; do
    if [ -n "$c" ] && [ -x "$c" ]; then confide="$c"; break; fi
  done
fi
[ -n "$confide" ] || { echo "no confide CLI: cargo build --release --bin confide (or set CONFIDE=PATH)" >&2; exit 2; }
docker compose version >/dev/null 2>&1 || { echo "needs Docker with the compose plugin (docker compose version)" >&2; exit 2; }
[ -f "$study_file" ] || { echo "no study file $study_file" >&2; exit 2; }
if [ -f "$env_file" ] && grep -q '^CONFIDE_STUDY_ID=' "$env_file"; then
  echo "$env_file already holds a study (CONFIDE_STUDY_ID): the stack is initialised. To start over with empty" >&2
  echo "databases: docker compose down -v, then delete the CONFIDE_* and *_ENROLMENT_TOKEN lines of $env_file" >&2
  exit 1
fi

# set_env KEY VALUE: one KEY=VALUE line in .env (other lines kept), mode 0600.
set_env() {
  touch "$env_file" && chmod 600 "$env_file"
  local rest
  rest="$(grep -v "^$1=" "$env_file" || true)"
  { [ -n "$rest" ] && printf '%s\n' "$rest"; printf '%s=%s\n' "$1" "$2"; } >"$env_file.tmp"
  chmod 600 "$env_file.tmp" && mv "$env_file.tmp" "$env_file"
}

if ! grep -q '^GRAFANA_ADMIN_PASSWORD=' "$env_file" 2>/dev/null && [ -z "${GRAFANA_ADMIN_PASSWORD:-}" ]; then
  set_env GRAFANA_ADMIN_PASSWORD "$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
  echo "GRAFANA_ADMIN_PASSWORD generated into $env_file"
fi

echo "== starting postgres, tls-init and the coordinator"
docker compose up -d --build --wait coordinator

echo "== operator token (stored hashed by the coordinator; kept in $env_file)"
token="$(docker compose exec -T coordinator confide-coordinator token create --name "compose-init-$(date +%s)")"
[ -n "$token" ] || { echo "no operator token was printed" >&2; exit 1; }
docker compose cp coordinator:/tls/ca.pem ca.pem >/dev/null
export CONFIDE_COORDINATOR_URL="$url" CONFIDE_CA_CERT="$PWD/ca.pem" CONFIDE_OPERATOR_TOKEN="$token"
set_env CONFIDE_COORDINATOR_URL "$url"
set_env CONFIDE_CA_CERT "$PWD/ca.pem"
set_env CONFIDE_OPERATOR_TOKEN "$token"

echo "== study ($study_file)"
study="$("$confide" study create --file "$study_file" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')"
set_env CONFIDE_STUDY_ID "$study"
"$confide" study show "$study"

echo "== enrolment tokens"
for h in $hospitals; do
  "$confide" token create --study "$study" --label "$h" --env-file "$env_file" >/dev/null
  echo "$h: written to $env_file"
done

echo "compose-init: done. Start the hospitals (and the dashboards) with: docker compose up -d"
echo "Follow the study with: set -a; . ./$env_file; set +a; $confide study run $study --wait  (or: $confide round list --study $study)"
