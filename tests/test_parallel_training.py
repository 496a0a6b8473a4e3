"""End to end on a fresh SQLite store: three ``rapport-train`` commands started together, and a
joblib multirun, all succeed and the store stays readable (slow tier: ~30 s of CPU; the fast
check of the store lock is tests/test_tracking_store.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
QUICK = ["agent=do_nothing", "debug=fast", "evaluation.oracle=false", "tracking.log_model=false",
         "tracking.log_plots=false"]


def _env(uri: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "CI": "true", "HYDRA_FULL_ERROR": "1"}


def _runs(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def test_three_train_commands_started_together_on_a_fresh_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    procs = [subprocess.Popen([str(BIN / "rapport-train"), *QUICK, f"seed={i}", "tracking.experiment=together",
                               f"hydra.run.dir={tmp_path / f'out{i}'}"], cwd=tmp_path, env=_env(uri),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    failed = [(p.returncode, err[-3000:]) for p, (_, err) in zip(procs, outs, strict=True) if p.returncode]
    assert not failed, failed
    runs = _runs(uri, "together")
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3


def test_a_joblib_multirun_on_a_fresh_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = subprocess.run([str(BIN / "rapport-train"), "-m", *QUICK[1:], "agent=do_nothing,mass",
                          "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "tracking.experiment=sweep",
                          f"hydra.sweep.dir={tmp_path / 'multirun'}"], cwd=tmp_path, env=_env(uri),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = _runs(uri, "sweep")
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3  # the parent and its two jobs
