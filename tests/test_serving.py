"""The registered MLflow model served by ``mlflow models serve`` on loopback: real requests,
answers equal to the in-memory policy, bad input answered with HTTP 400 naming the field.

The test starts the server on a free 127.0.0.1 port (``--env-manager local``, the venv's bin on
PATH as the server needs it) and stops it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from rapport.experiments.export.exporter import export_policy
from rapport.experiments.export.modules import EligibilityRule
from rapport.experiments.export.pyfunc import log_policy_model, register_policy_model
from rapport.experiments.export.samples import quick_bandit, random_observations

torch.set_num_threads(1)
NAME = "rapport-serving-test"
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, payload: str) -> tuple[int, str]:
    req = urllib.request.Request(url, data=payload.encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{tmp}/mlflow.db"
    bandit, schema = quick_bandit("linucb")
    result = export_policy(bandit, schema, tmp / "export", formats=["onnx"])
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("serving")
    with mlflow.start_run():
        info = log_policy_model(result.files["onnx"], result.spec, name="policy",
                                example_features=random_observations(
                                    schema, 2, np.random.default_rng(0)))
    register_policy_model(info.model_uri, NAME, "champion")
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri,
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = open(tmp / "server.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{NAME}@champion",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"mlflow models serve did not come up: "
                            f"{(tmp / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, bandit, schema
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
        mlflow.set_tracking_uri(None)


def _records(schema, n, seed=1):
    obs = random_observations(schema, n, np.random.default_rng(seed))
    recs = [{"customer_id": 100 + i, "week": 7, **dict(zip(schema.feature_names, map(float, row),
                                                           strict=True))}
            for i, row in enumerate(obs)]
    return obs, recs


def test_served_model_answers_like_the_in_memory_policy(served):
    base, bandit, schema = served
    obs, recs = _records(schema, 25)
    status, body = _post(f"{base}/invocations", json.dumps({"inputs": recs}))
    assert status == 200, body
    predictions = json.loads(body)["predictions"]
    assert len(predictions) == 25
    mask = EligibilityRule.from_schema(schema.feature_names, schema.channel_names,
                                       schema.nvec).mask(obs)
    ref, _ = bandit.policy().act(obs, np.random.default_rng(0), action_mask=mask)
    got = np.array([[p["channel"], p["offer"], p["spend_level"]] for p in predictions])
    np.testing.assert_array_equal(got, ref)
    assert [p["customer_id"] for p in predictions] == list(range(100, 125))
    assert all(p["week"] == 7 and p["propensity"] == 1.0 for p in predictions)
    status, body = _post(f"{base}/invocations", json.dumps({"inputs": recs[:1],
                                                            "params": {"seed": 3}}))
    assert status == 200 and len(json.loads(body)["predictions"]) == 1


@pytest.mark.parametrize(("change", "field"), [
    (lambda r: {k: v for k, v in r.items() if k != "frequency"}, "frequency"),
    (lambda r: {**r, "coupon_code": 1.0}, "coupon_code"),
    (lambda r: {**r, "avg_spend": "high"}, "avg_spend"),
    (lambda r: {**r, "p_alive": float("nan")}, "p_alive"),
    (lambda r: {**r, "tenure_weeks": None}, "tenure_weeks"),
])
def test_bad_input_gets_400_naming_the_field_and_nothing_is_scored(served, change, field):
    base, _, schema = served
    _, recs = _records(schema, 5)
    recs[3] = change(recs[3])  # one bad row in a batch: the whole batch is refused
    status, body = _post(f"{base}/invocations", json.dumps({"inputs": recs}))
    assert 400 <= status < 500, (status, body)
    assert field in body, body
    assert "predictions" not in body


def test_empty_batch_gets_400(served):
    base, _, _ = served
    status, body = _post(f"{base}/invocations", json.dumps({"inputs": []}))
    assert 400 <= status < 500 and "empty batch" in body, (status, body)
