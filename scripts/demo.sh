#!/usr/bin/env bash
# The README's main command. Until the federated demo (`confide demo`) exists, it runs the most complete thing
# that runs end to end on one machine:
#   1. a private training run of one hospital on the bundled breast-cancer data at ε ≤ 1 (δ = 1e-5), with the
#      non-private baseline beside it;
#   2. one whole secure-aggregation round among 20 simulated hospitals (10 % dropout), checked against the plain sum;
#   3. the privacy calculator for the planned setting.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release --locked -p confide -p confide-participant --bins
bin=target/release
common=(--data data/breast_cancer_wisconsin.csv --label malignant --model examples/models/breast_cancer_logreg.json
        --epochs 30 --sampling-rate 0.2 --clip 1 --delta 1e-5 --learning-rate 0.2 --seed 0)
echo "== 1. DP-SGD on breast-cancer data, target ε = 1 (δ = 1e-5)"
"$bin/confide-participant" train "${common[@]}" --target-epsilon 1
echo "== 1b. the same model without privacy (baseline, no guarantee)"
"$bin/confide-participant" train "${common[@]}" --non-private --json
echo
echo "== 2. one secure-aggregation round: 20 hospitals, 100,000 parameters, 10 % dropout"
"$bin/confide" bench secagg --participants 20 --params 100000 --dropout 0.1 --json
echo
echo "== 3. noise needed for ε = 1 over 150 steps at q = 0.2 (PLD accountant)"
"$bin/confide" privacy plan --target-epsilon 1 --delta 1e-5 --sampling-rate 0.2 --steps 150
