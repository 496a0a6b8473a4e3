"""The tracking store: parallel runs on one fresh SQLite store all succeed, and an unusable
tracking URI is a clear error that names it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from rapport.experiments.config import TrackingConfig
from rapport.experiments.tracking import start_run
from rapport.experiments.tracking_store import (
    TrackingStoreError,
    check_tracking_uri,
    ensure_experiment,
    local_store,
    store_lock,
)

N_WORKERS = 2
"""Two runs started together on a fresh store both failed before the store lock; each worker
costs ~3 s of CPU (imports, opening the store), so the default tier runs two (the slow tier
runs three full ``rapport-train`` commands and a joblib multirun, test_parallel_training.py)."""

# Each worker imports everything first, then waits for the "go" file so that all of them
# touch the fresh store at the same moment (the race is in MLflow's first-use migration).
WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from rapport.experiments.config import TrackingConfig
    from rapport.experiments.tracking import start_run
    import mlflow  # noqa: F401  (imported before the start signal: only the store is raced)

    uri, go, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    deadline = time.monotonic() + 60
    while not go.exists():
        if time.monotonic() > deadline:
            sys.exit("no start signal")
        time.sleep(0.005)
    with start_run(TrackingConfig(uri=uri, experiment="parallel"), run_name=name,
                   params={"worker": name}) as t:
        t.log_metrics({"kpi/x": 1.0}, step=1)
    print(t.run_id)
""")


@pytest.fixture
def store_dir(tmp_path):
    """A scratch folder in memory (tmpfs) where there is one: creating a store is dominated by
    SQLite's fsyncs on disk (~5 s here, ~1.5 s on tmpfs); the race is the same."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="rapport-store-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_parallel_runs_on_one_fresh_sqlite_store_all_succeed(tmp_path, store_dir):
    uri = f"sqlite:///{store_dir / 'fresh' / 'mlflow.db'}"  # neither the file nor its folder exist
    go = tmp_path / "go"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, uri, str(go), f"w{i}"], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(N_WORKERS)]
    time.sleep(0.2)
    go.touch()
    results = [p.communicate(timeout=120) for p in procs]
    failed = [(p.returncode, err[-2000:]) for p, (_, err) in zip(procs, results, strict=True) if p.returncode]
    assert not failed, f"parallel runs on a fresh store failed: {failed}"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("parallel").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * N_WORKERS
    assert sorted(r.data.params["worker"] for r in runs) == [f"w{i}" for i in range(N_WORKERS)]
    assert {r.info.run_id for r in runs} == {out.strip() for out, _ in results}
    assert (store_dir / "fresh" / "mlflow.db.lock").is_file()  # the lock lives next to the store


def test_the_store_lock_excludes_other_processes(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    probe = ("import sys; from rapport.experiments.tracking_store import store_lock\n"
             "try:\n    with store_lock(sys.argv[1], timeout=0.3): pass\n"
             "except TimeoutError as e:\n    print(e); sys.exit(3)\n")
    with store_lock(uri):
        held = subprocess.run([sys.executable, "-c", probe, uri], capture_output=True, text=True, timeout=60)
    assert held.returncode == 3 and uri in held.stdout and "mlflow.db.lock" in held.stdout
    free = subprocess.run([sys.executable, "-c", probe, uri], capture_output=True, text=True, timeout=60)
    assert free.returncode == 0, free.stderr


@pytest.mark.parametrize("uri, kind, path", [
    ("sqlite:////abs/dir/mlflow.db", "sqlite", "/abs/dir/mlflow.db"),
    ("sqlite:///rel/mlflow.db", "sqlite", "rel/mlflow.db"),
    ("sqlite:///:memory:", None, None),
    ("sqlite://", None, None),
    ("file:///abs/mlruns", "file", "/abs/mlruns"),
    ("./mlruns", "file", "mlruns"),
    ("http://127.0.0.1:5000", None, None),
    ("postgresql://user@host/db", None, None),
])
def test_local_stores_are_recognised(uri, kind, path):
    got = local_store(uri)
    assert (got is None) if kind is None else (got[0] == kind and got[1] == Path(path))


def _blocked(tmp_path: Path) -> Path:
    """A folder path that cannot be created, even by root: its parent is a regular file."""
    (tmp_path / "a_file").write_text("not a folder")
    return tmp_path / "a_file" / "sub"


@pytest.mark.parametrize("scheme", ["sqlite", "file"])
def test_an_uncreatable_store_folder_is_a_clear_error(tmp_path, scheme):
    blocked = _blocked(tmp_path)
    uri = f"sqlite:///{blocked / 'mlflow.db'}" if scheme == "sqlite" else f"file://{blocked / 'mlruns'}"
    with pytest.raises(TrackingStoreError) as info:
        check_tracking_uri(uri)
    text = str(info.value)
    assert repr(uri) in text and "cannot create the folder" in text
    assert "Valid: sqlite:///" in text and "MLFLOW_TRACKING_URI" in text
    assert isinstance(info.value, ValueError)


def test_a_folder_where_the_database_should_be_is_refused(tmp_path):
    (tmp_path / "store.db").mkdir()
    with pytest.raises(TrackingStoreError, match="is a folder, not an SQLite database file"):
        check_tracking_uri(f"sqlite:///{tmp_path / 'store.db'}")


def test_runs_and_experiments_report_the_unusable_uri(tmp_path, monkeypatch):
    uri = f"sqlite:///{_blocked(tmp_path) / 'mlflow.db'}"
    with pytest.raises(TrackingStoreError, match="tracking URI .*a_file/sub/mlflow.db.*cannot create"):
        ensure_experiment(uri, "x")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the URI may come from the environment
    with pytest.raises(TrackingStoreError, match="a_file/sub/mlflow.db"):
        with start_run(TrackingConfig(experiment="x")):
            pass


def test_an_empty_uri_is_refused():
    with pytest.raises(TrackingStoreError, match="is empty"):
        check_tracking_uri("  ")


def test_rapport_train_reports_an_unusable_uri_in_one_line(tmp_path, capsys):
    from rapport.experiments.train import main

    uri = f"sqlite:///{_blocked(tmp_path) / 'mlflow.db'}"
    with pytest.raises(SystemExit) as info:
        main(["agent=do_nothing", "debug=fast", f"tracking.uri={uri}", f"hydra.run.dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1, err
    assert f"tracking URI {uri!r}" in err[0] and "Valid: sqlite:///" in err[0] and "Traceback" not in err[0]
