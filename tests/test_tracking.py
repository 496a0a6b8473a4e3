"""The tracker protocol: batched metrics, params, tags, and runs that always end with a status."""

from __future__ import annotations

import os
import signal

import pytest

from rapport.experiments.config import TrackingConfig
from rapport.experiments.tracking import (
    METRICS_PER_BATCH,
    MLflowTracker,
    NullTracker,
    Tracker,
    ensure_experiment,
    flatten_params,
    git_info,
    resolve_tracking_uri,
    start_run,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{path}/mlflow.db"
    ensure_experiment(uri, "tracking-tests")
    return uri


@pytest.fixture
def cfg(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    return TrackingConfig(experiment="tracking-tests")


def client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def test_flatten_params_namespaces_nested_config():
    flat = flatten_params({"env": {"customers": 5, "overrides": {}}, "agent": {"params": {"arms": [[0, 0, 0]]}}})
    assert flat == {"env.customers": "5", "env.overrides": "{}", "agent.params.arms": "[[0, 0, 0]]"}


def test_tracking_uri_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert resolve_tracking_uri(None) == "http://127.0.0.1:1"
    assert resolve_tracking_uri("sqlite:///x.db") == "sqlite:///x.db"  # config wins


def test_git_info_names_the_checkout_commit():
    info = git_info()
    assert len(info["git.commit"]) == 40 and info["git.dirty"] in ("true", "false")


def test_null_tracker_keeps_metrics_in_memory():
    t = NullTracker()
    assert isinstance(t, Tracker)
    t.log_metrics({"train/x": 1}, step=3)
    t.end("FINISHED")
    assert t.history == [(3, {"train/x": 1.0})] and t.status == "FINISHED"


def test_successful_run_is_finished_with_params_tags_and_batched_metrics(cfg, store, monkeypatch):
    calls = []
    original = MLflowTracker.flush

    def counting_flush(self):
        calls.append(len(self._buffer))
        original(self)

    monkeypatch.setattr(MLflowTracker, "flush", counting_flush)
    n = 2 * METRICS_PER_BATCH + 500
    with start_run(cfg, run_name="ok", params={"env.customers": 5}, tags={"rapport.label": "x"}) as t:
        assert isinstance(t, Tracker)
        for i in range(n):
            t.log_metrics({"train/profit_per_customer": float(i)}, step=i)
    run = client(store).get_run(t.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["env.customers"] == "5" and run.data.tags["rapport.label"] == "x"
    assert len(run.data.tags["git.commit"]) == 40
    history = client(store).get_metric_history(t.run_id, "train/profit_per_customer")
    assert len(history) == n and sorted(m.step for m in history) == list(range(n))
    assert len(calls) <= 4  # flushed in batches of 1000 (plus the final flush), not once per point


@pytest.mark.parametrize("exc, status", [(RuntimeError, "FAILED"), (KeyboardInterrupt, "KILLED")])
def test_crashed_run_is_never_left_running(cfg, store, exc, status):
    with pytest.raises(exc):
        with start_run(cfg, run_name="crash") as t:
            t.log_metrics({"train/x": 1.0})
            raise exc("boom")
    run = client(store).get_run(t.run_id)
    assert run.info.status == status
    assert "train/x" in run.data.metrics  # buffered metrics are still flushed


def test_sigterm_ends_the_run_failed(cfg, store):
    with pytest.raises(Exception, match="signal"):
        with start_run(cfg, run_name="sigterm") as t:
            os.kill(os.getpid(), signal.SIGTERM)
    assert client(store).get_run(t.run_id).info.status == "FAILED"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored


def test_nested_run_records_its_parent(cfg, store):
    exp = ensure_experiment(store, "tracking-tests")
    parent = client(store).create_run(exp, run_name="parent")
    with start_run(cfg, run_name="child", parent_run_id=parent.info.run_id) as t:
        pass
    assert client(store).get_run(t.run_id).data.tags["mlflow.parentRunId"] == parent.info.run_id
    client(store).set_terminated(parent.info.run_id)


def test_ensure_experiment_is_idempotent(store):
    a = ensure_experiment(store, "same-name")
    assert ensure_experiment(store, "same-name") == a


def test_artifacts_text_and_figures(cfg, store, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.csv").write_text("x\n1\n")
    fig = plt.figure()
    with start_run(cfg, run_name="artifacts") as t:
        t.log_text("seed: 1\n", "config.yaml")
        t.log_figure(fig, "plots/p.png")
        t.log_artifact(tmp_path / "d", "tables")
    plt.close(fig)
    names = {f.path for f in client(store).list_artifacts(t.run_id)}
    assert {"config.yaml", "plots", "tables"} <= names
