#!/usr/bin/env bash
# The README's test command: formatting, lints and every test of the workspace (SQLite and Postgres).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# Compose file, dashboards, alert rules and the self-tests of their checkers (installs Prometheus if missing).
scripts/ops/ci.sh
