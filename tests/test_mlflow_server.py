"""Against a real ``mlflow server`` (SQLite backend, proxied artifacts in a temp dir), started on
127.0.0.1 once for the session and stopped at the end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from rapport.experiments import compare, train
from rapport.experiments.config import register_configs

CONF = Path(__file__).resolve().parents[1] / "conf"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server",
           "--backend-store-uri", f"sqlite:///{root}/server.db", "--artifacts-destination", str(root / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed at teardown
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not ready: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the server, its workers and job consumers
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def compose_cfg(overrides):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_train_compare_and_model_through_a_tracking_server(mlflow_server, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    import rapport.envs as envs
    train.run(compose_cfg(["agent=mass", "debug=fast", "evaluation.oracle=false",
                           f"tracking.uri={mlflow_server}", "tracking.experiment=server"]))
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("server")
    (mass,) = client.search_runs([exp.experiment_id])
    assert mass.data.tags["rapport.label"] == "mass" and mass.info.status == "FINISHED"
    assert mass.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server
    assert {f.path for f in client.list_artifacts(mass.info.run_id)} >= {"config.yaml", "evaluation", "plots"}
    assert client.get_metric_history(mass.info.run_id, "kpi/profit_per_customer")

    board = compare.run(["--experiment", "server", "--tracking-uri", mlflow_server, "--all-runs",
                          "--out", str(tmp_path)])
    assert set(board.policy) == {"mass", "do_nothing"}  # the run evaluated its baseline on the same customers

    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pyfunc.load_model(f"runs:/{mass.info.run_id}/policy")
    env = envs.PopulationEnv(num_envs=5)
    obs, _ = env.reset(seed=0)
    out = model.predict(pd.DataFrame(obs, columns=list(env.feature_names)))
    assert out.shape == (5, 4) and np.all(out.propensity == 1.0)
