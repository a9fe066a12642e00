#!/usr/bin/env bash
# The README's main command. Until the federation demo exists, it runs the most complete thing that runs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo run --release --locked --bin confide -- --help
