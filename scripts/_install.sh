#!/usr/bin/env bash
# Shared set-up for demo.sh and test.sh: create .venv if missing and install Rapport into it.
# torch==2.13.0 goes in first: on this machine it resolves to a local CPU wheel, while an
# unpinned torch (asked for by stable-baselines3) would pull several GB of CUDA packages.
# A stamp file keyed on pyproject.toml makes re-runs on an existing .venv fast.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "[rapport] creating .venv with $($PYTHON --version 2>&1)"
    "$PYTHON" -m venv .venv
fi
VPY="$root/.venv/bin/python"
stamp=".venv/.rapport-install-stamp"
want="$(cat pyproject.toml scripts/_install.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
echo "[rapport] installing dependencies into .venv (first run takes a few minutes)"
"$VPY" -m pip install --quiet --upgrade pip
"$VPY" -m pip install --quiet "torch==2.13.0"
"$VPY" -m pip install --quiet -e ".[dev]"
echo "$want" > "$stamp"
