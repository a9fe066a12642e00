#!/usr/bin/env bash
# The README's test command: formatting, lints and every test of the workspace (SQLite and Postgres).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# Compose file, dashboards, alert rules, the self-tests of their checkers (installs Prometheus if missing), and the
# real-data check with the debug binaries `cargo test` just built.
scripts/ops/ci.sh
