"""Save a trained policy to a folder, load it back, and log it as an MLflow pyfunc model.

A policy folder holds ``meta.json`` (schema, agent, constraints, format) and either
``policy.pkl`` (cloudpickle of a numpy-only policy: baselines, frozen bandit policies) or
``model.zip`` (a Stable-Baselines3 model, served by ``agents.rl_policy.SB3Policy``).
Constraints are stored as config and re-applied at load time, sized to each batch (a weekly
budget is $ per customer of the batch).

API::

    save_policy(dir, schema=..., agent=agent_cfg, constraints=cons_cfg, core_policy=p)   # or sb3_model=m
    loaded = load_policy(dir)           # LoadedPolicy: a Policy (act) with .schema and .meta
    uri = log_pyfunc_model(dir, name="policy", input_example=df)   # inside an active MLflow run
    policy = load_logged_policy("runs:/<run_id>/policy")           # or models:/… URIs

The pyfunc model (``experiments/mlflow_policy_model.py``, models-from-code) takes a DataFrame
with the schema's feature columns and returns ``channel, offer, spend_level, propensity``; the
``seed`` param seeds the policy's generator. It needs Rapport installed; the self-contained
exports live in ``experiments/export``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from agents.protocol import DecisionSchema
from experiments.config import AgentConfig, ConstraintsConfig

FORMAT_VERSION = 1
SB3_ALGO_NAMES = {"BatchedPPO": "ppo", "BatchedA2C": "a2c", "DQN": "dqn", "BatchedMaskablePPO": "maskable_ppo",
                  "PPO": "ppo", "A2C": "a2c", "MaskablePPO": "maskable_ppo"}
MODEL_CODE = Path(__file__).with_name("mlflow_policy_model.py")


def save_policy(directory: str | Path, *, schema: DecisionSchema, agent: AgentConfig,
                constraints: ConstraintsConfig, core_policy: Any = None, sb3_model: Any = None,
                greedy: bool = True, obs_normalization: Any = None,
                extra: dict[str, Any] | None = None) -> Path:
    """Write a policy folder (see module doc); exactly one of ``core_policy`` / ``sb3_model``.

    ``obs_normalization`` (SB3 models only): the VecNormalize observation statistics the model
    was trained behind (anything :func:`agents.rl_policy.normalization_stats` takes); stored in
    ``meta.json`` and applied again by :func:`load_policy` and by exports."""
    if (core_policy is None) == (sb3_model is None):
        raise ValueError("save_policy needs exactly one of core_policy or sb3_model")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "schema": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(schema).items()},
        "agent": dataclasses.asdict(agent), "constraints": dataclasses.asdict(constraints),
        **(extra or {}),
    }
    if sb3_model is not None:
        algo = SB3_ALGO_NAMES.get(type(sb3_model).__name__)
        if algo is None:
            raise ValueError(f"cannot save SB3 model of type {type(sb3_model).__name__}")
        from agents.rl_policy import normalization_stats

        sb3_model.save(d / "model.zip")
        meta.update(format="sb3", algo=algo, greedy=greedy, flatten_actions=bool(agent.flatten_actions))
        stats = normalization_stats(obs_normalization, schema.n_features)
        if stats is not None:
            meta["obs_normalization"] = {k: v.tolist() if isinstance(v, np.ndarray) else v
                                         for k, v in stats.items()}
    else:
        if obs_normalization is not None:
            raise ValueError("obs_normalization applies to SB3 models (sb3_model=...), not to "
                             f"{type(core_policy).__name__}")
        import cloudpickle

        (d / "policy.pkl").write_bytes(cloudpickle.dumps(core_policy))
        meta.update(format="pickle")
    (d / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    return d


class LoadedPolicy:
    """A saved policy with its constraints re-applied per batch size; implements ``act``."""

    def __init__(self, core: Any, schema: DecisionSchema, constraints: ConstraintsConfig, meta: dict[str, Any]):
        self.core, self.schema, self.constraints, self.meta = core, schema, constraints, meta
        self._wrapped: dict[int, Any] = {}

    def for_batch(self, n: int) -> Any:
        if not self.constraints.active:
            return self.core
        if n not in self._wrapped:
            from experiments.builders import wrap_constraints

            self._wrapped[n] = wrap_constraints(self.core, self.schema, self.constraints, n)
        return self._wrapped[n]

    def act(self, obs: np.ndarray, rng: np.random.Generator, *,
            action_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.for_batch(int(np.shape(obs)[0])).act(obs, rng, action_mask=action_mask)


def _schema_from(meta: dict[str, Any]) -> DecisionSchema:
    s = dict(meta["schema"])
    for k in ("feature_names", "nvec", "channel_names", "offer_names", "spend_levels", "channel_costs",
              "offer_discounts"):
        s[k] = tuple(s.get(k, ()))
    return DecisionSchema(**s)


def load_policy(directory: str | Path) -> LoadedPolicy:
    """Read a folder written by :func:`save_policy`."""
    d = Path(directory)
    meta_path = d / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{d} is not a saved policy: meta.json missing")
    meta = json.loads(meta_path.read_text())
    schema = _schema_from(meta)
    constraints = ConstraintsConfig(**meta.get("constraints", {}))
    if meta["format"] == "sb3":
        from agents.rl_policy import SB3Policy, load_model

        model = load_model(d / "model.zip", meta["algo"])
        core = SB3Policy(model, nvec=schema.nvec if meta.get("flatten_actions") else None,
                         greedy=bool(meta.get("greedy", True)),
                         obs_normalization=meta.get("obs_normalization"))
    elif meta["format"] == "pickle":
        import cloudpickle

        core = cloudpickle.loads((d / "policy.pkl").read_bytes())
    else:
        raise ValueError(f"unknown policy format {meta['format']!r} in {meta_path}")
    return LoadedPolicy(core, schema, constraints, meta)


def log_pyfunc_model(policy_dir: str | Path, *, name: str = "policy", input_example: Any = None,
                     registered_model_name: str | None = None) -> str:
    """Log ``policy_dir`` as a models-from-code pyfunc model in the active MLflow run."""
    import mlflow
    from mlflow.models import infer_signature

    quiet_mlflow()
    policy = load_policy(policy_dir)
    signature = None
    with _model_warnings_filtered():
        if input_example is not None:
            signature = infer_signature(input_example, predict_frame(policy, input_example, seed=0),
                                        params={"seed": 0})
        info = mlflow.pyfunc.log_model(
            name=name, python_model=str(MODEL_CODE), artifacts={"policy": str(policy_dir)},
            signature=signature, input_example=input_example, registered_model_name=registered_model_name,
            pip_requirements=[f"rapport-rl=={_version()}"])
    return info.model_uri


@contextlib.contextmanager
def _model_warnings_filtered() -> Iterator[None]:
    with warnings.catch_warnings():
        # actions are integers by nature; MLflow warns that integer columns cannot hold NaN
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        yield


def quiet_mlflow() -> None:
    """No MLflow download progress bars in logs (our own bars are enough)."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def predict_frame(policy: Any, frame: Any, seed: int = 0) -> Any:
    """Actions and propensities of ``policy`` for the rows of ``frame`` (a DataFrame with the
    schema's feature columns, or an (n, n_features) array), as a DataFrame."""
    import pandas as pd

    names = list(policy.schema.feature_names)
    if isinstance(frame, pd.DataFrame):
        missing = [c for c in names if c not in frame.columns]
        if missing:
            raise ValueError(f"input is missing feature column(s) {missing}; expected {names}")
        obs = frame[names].to_numpy(np.float32)
    else:
        obs = np.asarray(frame, np.float32)
    actions, propensities = policy.act(obs, np.random.default_rng(int(seed)))
    return pd.DataFrame({"channel": actions[:, 0], "offer": actions[:, 1], "spend_level": actions[:, 2],
                         "propensity": propensities})


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("rapport-rl")
    except Exception:  # not installed as a distribution (running from a checkout)
        return "0.1.0"


def load_logged_policy(model_uri: str) -> LoadedPolicy:
    """The policy inside an MLflow pyfunc model logged by :func:`log_pyfunc_model`."""
    import mlflow

    quiet_mlflow()
    with _model_warnings_filtered():
        model = mlflow.pyfunc.load_model(model_uri)
    inner = model.unwrap_python_model()
    policy = getattr(inner, "policy", None)
    if not isinstance(policy, LoadedPolicy):
        raise ValueError(f"{model_uri} is not a Rapport policy model (no LoadedPolicy inside)")
    return policy
