#!/usr/bin/env bash
# The README's main command: the local federation demo. Bootstraps libtorch, builds the three binaries (release), then
# runs `confide demo` — a coordinator on an embedded SQLite file, N hospital agents over real HTTPS (mTLS, with
# certificates made at start), R rounds of DP-SGD with secure aggregation on the bundled breast-cancer data, and the
# non-private baseline beside the result.
# Arguments go to `confide demo` (see `target/release/confide demo --help`), e.g. `scripts/demo.sh --dataset digits`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release --locked -p confide -p confide-coordinator -p confide-participant --bins
exec target/release/confide demo "$@"
