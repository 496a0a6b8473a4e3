#!/usr/bin/env bash
# Install (if needed) and run Rapport's main job on the embedded defaults.
# Extra arguments go to the job, e.g. ./scripts/demo.sh --customers 5000 --weeks 26
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/_install.sh"
cd "$root"
exec "$root/.venv/bin/python" -m experiments.quickstart "$@"
