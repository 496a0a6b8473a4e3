"""Experiment tracking through one small protocol, with an MLflow and a null implementation.

API::

    with start_run(tracking_cfg, run_name="linucb-seed3", params=flat, tags={...},
                   parent_run_id=None) as tracker:          # Tracker
        tracker.log_metrics({"train/profit_per_customer": 0.4}, step=5000)   # buffered
        tracker.log_text(yaml_text, "config.yaml")
        tracker.log_figure(fig, "plots/learning_curve.png")
        tracker.log_artifact(path, "evaluation")
        tracker.log_policy_model(policy_dir, input_example=df)     # MLflow pyfunc model
    # leaving the block flushes metrics and ends the run FINISHED; an exception ends it FAILED
    # (KeyboardInterrupt: KILLED) and is re-raised; SIGTERM is turned into an exception first.

* :class:`NullTracker` records metrics in memory and writes nothing (``tracking.backend=none``).
* :class:`MLflowTracker` logs to ``resolve_tracking_uri(cfg.uri)``: the config's URI, else
  ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``. Metrics are sent with
  ``log_batch`` (≤ 1000 per call) when the buffer fills and at the end, never one call each.
* :func:`ensure_experiment` (from :mod:`rapport.experiments.tracking_store`, with
  :func:`resolve_tracking_uri`) creates the store and the experiment under an inter-process
  lock, so parallel runs on one fresh SQLite store all succeed; an unusable URI raises
  :class:`~rapport.experiments.tracking_store.TrackingStoreError` naming it. Multiruns and sweeps also
  call it once before launching.
* :class:`MultirunParentCallback` (a Hydra callback, wired in ``conf/hydra/default.yaml``)
  opens a parent run per ``-m`` multirun; each job's run is nested under it
  (:func:`multirun_parent`) and the parent gets the leaderboard of its children at the end.
* :func:`flatten_params`, :func:`git_info` give the params and tags every run carries.
"""

from __future__ import annotations

import atexit
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rapport.experiments.config import TrackingConfig
from rapport.experiments.tracking_store import (  # re-exported: the public names of this module
    TrackingStoreError,
    ensure_experiment,
    resolve_tracking_uri,
)

__all__ = ["METRICS_PER_BATCH", "MLflowTracker", "MultirunParentCallback", "NullTracker", "PARENT_FILE",
           "Tracker", "TrackingStoreError", "ensure_experiment", "finish_parent_with_leaderboard",
           "flatten_params", "git_info", "make_tracker", "multirun_parent", "resolve_tracking_uri",
           "start_run"]

PARENT_FILE = "mlflow_parent_run.json"
"""Written into a multirun's sweep dir: ``{"run_id", "tracking_uri", "experiment", "swept_keys"}``."""
MAX_PARAM_LENGTH = 6000
METRICS_PER_BATCH = 1000


@runtime_checkable
class Tracker(Protocol):
    """What the experiment code may record. Keys are namespaced (``kpi/…``, ``train/…``)."""

    run_id: str | None

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def set_tags(self, tags: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_figure(self, figure: Any, artifact_file: str) -> None: ...
    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_policy_model(self, policy_dir: str | Path, *, input_example: Any = None,
                         name: str = "policy", registered_model_name: str | None = None) -> str | None: ...
    def flush(self) -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...


class NullTracker:
    """Records nothing outside memory: ``history`` holds every metric call as (step, dict)."""

    def __init__(self) -> None:
        self.run_id: str | None = None
        self.params: dict[str, Any] = {}
        self.tags: dict[str, Any] = {}
        self.history: list[tuple[int | None, dict[str, float]]] = []
        self.status: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.params.update(params)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.tags.update(tags)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.history.append((step, {k: float(v) for k, v in metrics.items()}))

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        pass

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def log_policy_model(self, policy_dir: str | Path, *, input_example: Any = None, name: str = "policy",
                         registered_model_name: str | None = None) -> str | None:
        return None

    def flush(self) -> None:
        pass

    def end(self, status: str = "FINISHED") -> None:
        self.status = status


# --------------------------------------------------------------------------------- helpers
def flatten_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"env": {"customers": 5}}`` -> ``{"env.customers": "5"}``; lists become JSON strings."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            if value:
                out.update(flatten_params(value, name + "."))
            else:
                out[name] = "{}"
        else:
            text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
            out[name] = text[:MAX_PARAM_LENGTH]
    return out


def git_info(cwd: str | Path | None = None) -> dict[str, str]:
    """Commit of the code that runs (the checkout holding ``experiments/``, else ``cwd``) and
    whether it has uncommitted changes to tracked files."""
    cwd = str(cwd or Path(__file__).resolve().parents[1])
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    return {"git.commit": commit, "git.dirty": str(bool(dirty)).lower(), "mlflow.source.git.commit": commit}


# ------------------------------------------------------------------------------- MLflow
class MLflowTracker:
    """One MLflow run. Started by :func:`start_run`; ends with :meth:`end`."""

    def __init__(self, tracking_uri: str, experiment: str, *, run_name: str | None = None,
                 parent_run_id: str | None = None, tags: Mapping[str, Any] | None = None) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        mlflow.set_tracking_uri(tracking_uri)
        self.experiment_id = ensure_experiment(tracking_uri, experiment)
        self.client = MlflowClient(tracking_uri)
        run_tags = {k: str(v) for k, v in (tags or {}).items()}
        run = mlflow.start_run(experiment_id=self.experiment_id, run_name=run_name,
                               nested=parent_run_id is not None or mlflow.active_run() is not None,
                               parent_run_id=parent_run_id, tags=run_tags)
        self.run_id: str | None = run.info.run_id
        self._buffer: list[Any] = []
        self._ended = False

    # metrics are buffered and sent in batches
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        for k, v in metrics.items():
            self._buffer.append(Metric(k, float(v), ts, int(step or 0)))
        if len(self._buffer) >= METRICS_PER_BATCH:
            self.flush()

    def flush(self) -> None:
        while self._buffer:
            chunk, self._buffer = self._buffer[:METRICS_PER_BATCH], self._buffer[METRICS_PER_BATCH:]
            self.client.log_batch(self.run_id, metrics=chunk)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, tags=items[i:i + 100])

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file)

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        p = Path(local_path)
        if p.is_dir():
            self.client.log_artifacts(self.run_id, str(p), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(p), artifact_path)

    def log_policy_model(self, policy_dir: str | Path, *, input_example: Any = None, name: str = "policy",
                         registered_model_name: str | None = None) -> str | None:
        """Log a saved policy (``rapport.experiments.policy_store``) as an MLflow pyfunc model."""
        from rapport.experiments.policy_store import log_pyfunc_model

        return log_pyfunc_model(policy_dir, name=name, input_example=input_example,
                                registered_model_name=registered_model_name)

    def end(self, status: str = "FINISHED") -> None:
        import mlflow

        if self._ended:
            return
        self._ended = True
        try:
            self.flush()
        finally:
            active = mlflow.active_run()
            if active is not None and active.info.run_id == self.run_id:
                mlflow.end_run(status)
            else:
                self.client.set_terminated(self.run_id, status)


def make_tracker(cfg: TrackingConfig, *, run_name: str | None = None, parent_run_id: str | None = None,
                 tags: Mapping[str, Any] | None = None) -> Tracker:
    if cfg.backend == "none":
        tracker = NullTracker()
        tracker.set_tags(dict(tags or {}))
        return tracker
    return MLflowTracker(resolve_tracking_uri(cfg.uri), cfg.experiment, run_name=run_name,
                         parent_run_id=parent_run_id, tags={**cfg.tags, **(tags or {})})


class _Terminated(Exception):
    """SIGTERM arrived: unwind so the run can be marked FAILED."""


@contextmanager
def _sigterm_as_exception() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise _Terminated(f"terminated by signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def start_run(cfg: TrackingConfig, *, run_name: str | None = None, params: Mapping[str, Any] | None = None,
              tags: Mapping[str, Any] | None = None, parent_run_id: str | None = None) -> Iterator[Tracker]:
    """A tracked run that always ends with a status: FINISHED, FAILED on any exception (and on
    SIGTERM), KILLED on KeyboardInterrupt. Git commit and dirty flag are tagged."""
    tracker = make_tracker(cfg, run_name=run_name, parent_run_id=parent_run_id,
                           tags={**git_info(), **(tags or {})})
    status = "FAILED"
    try:
        with _sigterm_as_exception():
            if params:
                tracker.log_params(params)
            yield tracker
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.end(status)


# ----------------------------------------------------------------------------- multirun
def multirun_parent() -> dict[str, Any] | None:
    """The parent-run record of the current Hydra multirun job, or None outside one."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return None
        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return None
        path = Path(hc.sweep.dir) / PARENT_FILE
    except (ImportError, ValueError):
        return None
    return json.loads(path.read_text()) if path.is_file() else None


def _swept_keys(task_overrides: list[str], sweeper_params: Mapping[str, Any] | None) -> list[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = [o.get_key_element() for o in OverridesParser.create().parse_overrides(list(task_overrides))
            if o.is_sweep_override()]
    keys += [str(k) for k in (sweeper_params or {})]
    return sorted(set(keys))


def _finish_parent(tracking_uri: str, run_id: str, status: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    if client.get_run(run_id).info.status == "RUNNING":
        client.set_terminated(run_id, status)


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - hydra is a dependency
    _HydraCallback = object  # type: ignore[assignment,misc]


class MultirunParentCallback(_HydraCallback):
    """Hydra callback: a parent MLflow run around every ``-m`` multirun.

    ``on_multirun_start`` (in the launching process, before any job) creates the store, the
    experiment and a RUNNING parent run, and writes :data:`PARENT_FILE` into the sweep dir;
    jobs nest their runs under it (also in joblib worker processes). ``on_multirun_end`` logs
    the leaderboard of the children to the parent and ends it FINISHED, or FAILED when a child
    failed. If a job raises, Hydra skips ``on_multirun_end``; an exit hook then ends the parent
    FAILED so it is never left RUNNING.
    """

    def __init__(self) -> None:
        self.record: dict[str, Any] | None = None

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from mlflow.tracking import MlflowClient
        from omegaconf import OmegaConf

        tracking = TrackingConfig(**OmegaConf.to_container(config.tracking, resolve=True))
        if tracking.backend == "none":
            return
        uri = resolve_tracking_uri(tracking.uri)
        exp_id = ensure_experiment(uri, tracking.experiment)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        overrides = list(config.hydra.overrides.task)
        sweeper_params = config.hydra.sweeper.get("params")  # None for Hydra's basic sweeper
        swept = _swept_keys(overrides, OmegaConf.to_container(sweeper_params) if sweeper_params else {})
        tags = {**git_info(), "rapport.command": "multirun", "rapport.role": "parent",
                "rapport.sweep_dir": str(sweep_dir), "rapport.overrides": " ".join(overrides)[:5000],
                "rapport.swept_keys": ",".join(swept)}
        name = f"{tracking.experiment}-multirun-{time.strftime('%Y%m%d-%H%M%S')}"
        run = MlflowClient(uri).create_run(exp_id, run_name=name, tags=tags)
        self.record = {"run_id": run.info.run_id, "tracking_uri": uri, "experiment": tracking.experiment,
                       "swept_keys": swept}
        (sweep_dir / PARENT_FILE).write_text(json.dumps(self.record))
        atexit.register(_finish_parent, uri, run.info.run_id, "FAILED")

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        if self.record is None:
            return
        finish_parent_with_leaderboard(self.record["tracking_uri"], self.record["run_id"])


def finish_parent_with_leaderboard(tracking_uri: str, parent_run_id: str) -> str:
    """Log the children's leaderboard to a parent run and end it; returns the status used."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=5000)
    failed = [c for c in children if c.info.status != "FINISHED"]
    status = "FAILED" if failed else "FINISHED"
    client.set_tag(parent_run_id, "rapport.children", str(len(children)))
    if children and not failed:
        try:
            from rapport.experiments.compare import log_leaderboard_to_run

            log_leaderboard_to_run(tracking_uri, parent_run_id, [c.info.run_id for c in children])
        except Exception as err:  # the children are valid; a leaderboard problem must not fail them
            client.set_tag(parent_run_id, "rapport.leaderboard_error", f"{type(err).__name__}: {err}"[:5000])
            print(f"[rapport] leaderboard not logged to the parent run: {err}")
    client.set_terminated(parent_run_id, status)
    return status
