#!/usr/bin/env bash
# Install (if needed) and run the default test tier. Extra arguments go to pytest,
# e.g. ./scripts/test.sh -m slow   or   ./scripts/test.sh tests/test_population_env.py
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/_install.sh"
cd "$root"
exec "$root/.venv/bin/python" -m pytest -n 2 "$@"
