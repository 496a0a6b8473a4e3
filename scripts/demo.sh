#!/usr/bin/env bash
# Install (if needed), run the demo comparison on the embedded defaults and print its leaderboard:
# six policies on the same simulated customers (conf/experiment/demo.yaml), tracked in the
# embedded MLflow store (sqlite:///mlflow.db here; browse with `mlflow ui --backend-store-uri
# sqlite:///mlflow.db`). Extra arguments are Hydra overrides for the runs, e.g.
#   ./scripts/demo.sh env.customers=20000 evaluation.seeds=5
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/_install.sh"
cd "$root"
"$root/.venv/bin/rapport-train" -m experiment=demo "$@"
exec "$root/.venv/bin/rapport-compare" --experiment demo
