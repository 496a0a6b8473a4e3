"""Save a trained policy to a folder, load it back, and log it as an MLflow pyfunc model.

Loading a policy runs no code from the store: a policy folder holds data only, and every
class that a load builds comes from a fixed registry in Rapport, never from the folder.

Folder (format 2)::

    meta.json    format_version 2, format "data" | "sb3", schema, agent, constraints, and
                 "policy": {kind, config} (data) or "sb3": {algorithm, policy class by name,
                 constructor arguments, spaces} (sb3), greedy, flatten_actions,
                 obs_normalization (VecNormalize mean/var/clip_obs/epsilon), ...
    arrays.npz   numpy arrays (bandit fits, arms, space bounds), read with allow_pickle=False
    weights.pt   torch state dicts (SB3 policy network, neural bandit features), read with
                 torch.load(weights_only=True); only when the policy has torch weights
    model.zip    sb3 only: SB3's own checkpoint, to resume training; SB3's loader unpickles
                 parts of it, so it is read only by load_sb3_checkpoint(..., trust_pickle=True)
                 and never by load_policy

Kinds stored as data: the rule-based baselines, frozen bandit policies, bandit learners, the
neural-linear policy, ContactRules around any of them (:mod:`rapport.experiments.policy_codec`) and
SB3 PPO / A2C / DQN / MaskablePPO policies (:mod:`rapport.experiments.sb3_codec`), asymmetric
actor-critics (``agent.privileged_critic``) included: a stored policy reads observables only, so
:func:`save_policy` refuses a schema naming latent columns and an SB3 model whose actor reads more
columns than the schema's features, and stores the observable columns' normalisation. Constraints are
stored as config and re-applied at load time, sized to each batch (a weekly budget is $ per
customer of the batch).

Folders of format 1 (``policy.pkl``, a cloudpickle; or an SB3 ``model.zip`` alone) can only be
read with ``trust_pickle=True``, which runs code from the file: without it the load raises
:class:`UntrustedPolicyError`, naming the option. Load once with the option, then
:func:`save_policy` again to convert the folder.

API::

    save_policy(dir, schema=..., agent=agent_cfg, constraints=cons_cfg, core_policy=p)   # or sb3_model=m
    loaded = load_policy(dir)           # LoadedPolicy: a Policy (act) with .schema and .meta
    model = load_sb3_checkpoint(dir, trust_pickle=True)   # the SB3 model, to train further
    uri = log_pyfunc_model(dir, name="policy", input_example=df)   # inside an active MLflow run
    policy = load_logged_policy("runs:/<run_id>/policy")           # or models:/… URIs

:func:`load_logged_policy` downloads the logged model's files and reads its policy folder
(the ``MLmodel`` file is parsed as plain YAML); it does not call ``mlflow.pyfunc.load_model``,
which imports the model's code file from the store. Serving the pyfunc model with MLflow
(``mlflow models serve``, ``mlflow.pyfunc.load_model``) does run that code file, as for every
models-from-code pyfunc: serve only models from a store you trust, or use the self-contained
exports in ``experiments/export``.

The pyfunc model (``experiments/mlflow_policy_model.py``, models-from-code) takes a DataFrame
with the schema's feature columns and returns ``channel, offer, spend_level, propensity``; the
``seed`` param seeds the policy's generator. It needs Rapport installed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rapport.agents.protocol import DecisionSchema
from rapport.experiments.config import AgentConfig, ConstraintsConfig

FORMAT_VERSION = 2
FORMATS = ("data", "sb3")
META_FILE, ARRAYS_FILE, WEIGHTS_FILE, CHECKPOINT_FILE = "meta.json", "arrays.npz", "weights.pt", "model.zip"
LEGACY_PICKLE_FILE = "policy.pkl"
SB3_ALGO_NAMES = {"BatchedPPO": "ppo", "BatchedA2C": "a2c", "DQN": "dqn", "BatchedMaskablePPO": "maskable_ppo",
                  "PPO": "ppo", "A2C": "a2c", "MaskablePPO": "maskable_ppo"}
MODEL_CODE = Path(__file__).with_name("mlflow_policy_model.py")


class UntrustedPolicyError(ValueError):
    """A stored policy could only be loaded by unpickling (running code from the store); the
    message names ``trust_pickle=True``."""


class PolicyFolderError(ValueError):
    """A policy folder is missing, incomplete or holds content that is not plain data."""


def _json_default(value: Any) -> Any:
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _write_data(d: Path, arrays: dict[str, np.ndarray], tensors: dict[str, Any]) -> None:
    bad = sorted(k for k, v in arrays.items() if np.asarray(v).dtype.hasobject)
    if bad:
        raise TypeError(f"cannot store object arrays {bad} (they would need pickle)")
    if arrays:
        np.savez(d / ARRAYS_FILE, **{k: np.asarray(v) for k, v in arrays.items()})
    if tensors:
        import torch

        torch.save(dict(tensors), d / WEIGHTS_FILE)


def save_policy(directory: str | Path, *, schema: DecisionSchema, agent: AgentConfig,
                constraints: ConstraintsConfig, core_policy: Any = None, sb3_model: Any = None,
                greedy: bool = True, obs_normalization: Any = None,
                extra: dict[str, Any] | None = None, sb3_checkpoint: bool = True) -> Path:
    """Write a policy folder (see module doc); exactly one of ``core_policy`` / ``sb3_model``.

    ``obs_normalization`` (SB3 models only): the VecNormalize observation statistics the model
    was trained behind (anything :func:`rapport.agents.rl_policy.normalization_stats` takes); stored in
    ``meta.json`` and applied again by :func:`load_policy` and by exports. ``sb3_checkpoint``:
    also write SB3's own ``model.zip`` (to resume training; never read by :func:`load_policy`).
    A policy that cannot be stored as data raises ``TypeError`` naming its class."""
    if (core_policy is None) == (sb3_model is None):
        raise ValueError("save_policy needs exactly one of core_policy or sb3_model")
    from rapport.agents.privileged import check_observable_names

    check_observable_names(schema.feature_names)  # a stored policy reads observables only
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
        from rapport.agents.privileged import actor_input_width, observable_normalization
        from rapport.agents.rl_policy import normalization_stats
        from rapport.experiments.sb3_codec import StoredSB3Model, encode_sb3

        width = int(np.prod(sb3_model.observation_space.shape))
        reads = actor_input_width(sb3_model.policy, sb3_model.observation_space)
        if reads != schema.n_features:
            raise ValueError(
                f"the {type(sb3_model).__name__} actor reads {reads} observation columns, the schema has "
                f"{schema.n_features} observable features: "
                + (f"columns {schema.n_features}..{reads - 1} are privileged (latent) columns, which only "
                   "an asymmetric actor-critic's critic may read (agent.privileged_critic)"
                   if reads > schema.n_features else "the model was not trained on this schema"))
        obs_normalization = observable_normalization(normalization_stats(obs_normalization), reads, width)
        config, arrays, tensors = encode_sb3(sb3_model)
        _write_data(d, arrays, tensors)
        if sb3_checkpoint and not isinstance(sb3_model, StoredSB3Model):
            sb3_model.save(d / CHECKPOINT_FILE)
        meta.update(format="sb3", algo=algo, greedy=greedy, flatten_actions=bool(agent.flatten_actions),
                    sb3=config)
        stats = normalization_stats(obs_normalization, schema.n_features)
        if stats is not None:
            meta["obs_normalization"] = {k: v.tolist() if isinstance(v, np.ndarray) else v
                                         for k, v in stats.items()}
    else:
        if obs_normalization is not None:
            raise ValueError("obs_normalization applies to SB3 models (sb3_model=...), not to "
                             f"{type(core_policy).__name__}")
        from rapport.experiments.policy_codec import CODEC_VERSION, encode_policy

        encoded = encode_policy(core_policy, schema)
        _write_data(d, encoded.arrays, encoded.tensors)
        meta.update(format="data", policy={"kind": encoded.kind, "codec_version": CODEC_VERSION,
                                           "config": encoded.config})
    (d / META_FILE).write_text(json.dumps(meta, indent=2, default=_json_default))
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
            from rapport.experiments.builders import wrap_constraints

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


def _read_meta(d: Path) -> dict[str, Any]:
    meta_path = d / META_FILE
    if not meta_path.is_file():
        raise PolicyFolderError(f"{d} is not a saved policy: {META_FILE} missing (a policy folder holds "
                                f"{META_FILE} and {ARRAYS_FILE} / {WEIGHTS_FILE}, written by save_policy)")
    try:
        meta = json.loads(meta_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PolicyFolderError(f"{meta_path} is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("schema"), dict):
        raise PolicyFolderError(f"{meta_path} has no 'schema' object: not a policy written by save_policy")
    return meta


def _refuse_pickle(d: Path, what: str) -> UntrustedPolicyError:
    return UntrustedPolicyError(
        f"{d} holds {what}, saved by Rapport before format {FORMAT_VERSION}: loading it unpickles, which runs "
        "code from the file. Load it only if you trust everyone who could write to this store, with "
        "load_policy(path, trust_pickle=True) (or load_logged_policy(uri, trust_pickle=True)), then "
        "save_policy it again to store it as data.")


def _load_legacy(d: Path, meta: dict[str, Any], schema: DecisionSchema, trust_pickle: bool) -> Any:
    fmt = meta.get("format")
    if fmt == "pickle":
        if not trust_pickle:
            raise _refuse_pickle(d, f"a pickled policy ({LEGACY_PICKLE_FILE})")
        import cloudpickle

        return cloudpickle.loads((d / LEGACY_PICKLE_FILE).read_bytes())
    if fmt == "sb3":
        if not trust_pickle:
            raise _refuse_pickle(d, f"an SB3 model as {CHECKPOINT_FILE} only (SB3's zip loader unpickles parts of it)")
        from rapport.agents.rl_policy import SB3Policy, load_model

        model = load_model(d / CHECKPOINT_FILE, meta["algo"])
        return SB3Policy(model, nvec=schema.nvec if meta.get("flatten_actions") else None,
                         greedy=bool(meta.get("greedy", True)), obs_normalization=meta.get("obs_normalization"))
    raise PolicyFolderError(f"unknown policy format {fmt!r} in {d / META_FILE}; valid: {', '.join(FORMATS)}")


def _read_data(d: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The folder's arrays and tensors, read without unpickling anything."""
    arrays: dict[str, np.ndarray] = {}
    tensors: dict[str, Any] = {}
    if (d / ARRAYS_FILE).is_file():
        try:
            with np.load(d / ARRAYS_FILE, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (ValueError, OSError, EOFError) as err:
            raise PolicyFolderError(f"{d / ARRAYS_FILE} is not a plain numpy archive, refused ({err})") from None
    if (d / WEIGHTS_FILE).is_file():
        import pickle

        import torch

        try:
            tensors = torch.load(d / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, ValueError, OSError, EOFError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise PolicyFolderError(f"{d / WEIGHTS_FILE} holds more than tensors or is damaged, refused "
                                    f"(torch.load(weights_only=True): {first})") from None
        if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
            raise PolicyFolderError(f"{d / WEIGHTS_FILE} is not a dict of tensors, refused")
    return arrays, tensors


def load_policy(directory: str | Path, *, trust_pickle: bool = False) -> LoadedPolicy:
    """Read a folder written by :func:`save_policy` (see the module doc); runs no code from the
    folder unless ``trust_pickle=True`` is given for a format-1 (pickle) folder. Raises
    :class:`PolicyFolderError` (missing, damaged or non-data content) or
    :class:`UntrustedPolicyError` (a pickle, without ``trust_pickle``)."""
    d = Path(directory)
    meta = _read_meta(d)
    try:
        schema = _schema_from(meta)
        constraints = ConstraintsConfig(**meta.get("constraints", {}))
    except (TypeError, ValueError) as err:
        raise PolicyFolderError(f"{d / META_FILE}: schema or constraints do not build ({err})") from None
    if int(meta.get("format_version", 1)) < FORMAT_VERSION:
        return LoadedPolicy(_load_legacy(d, meta, schema, trust_pickle), schema, constraints, meta)
    fmt = meta.get("format")
    if fmt not in FORMATS:
        raise PolicyFolderError(f"unknown policy format {fmt!r} in {d / META_FILE}; valid: {', '.join(FORMATS)}")
    arrays, tensors = _read_data(d)
    try:
        if fmt == "sb3":
            from rapport.agents.rl_policy import SB3Policy
            from rapport.experiments.sb3_codec import decode_sb3

            model = decode_sb3(meta["sb3"], arrays, tensors)
            core = SB3Policy(model, nvec=schema.nvec if meta.get("flatten_actions") else None,
                             greedy=bool(meta.get("greedy", True)), obs_normalization=meta.get("obs_normalization"))
        else:
            from rapport.experiments.policy_codec import EncodedPolicy, decode_policy

            spec = meta["policy"]
            core = decode_policy(EncodedPolicy(spec["kind"], dict(spec.get("config", {})), arrays, tensors), schema)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise PolicyFolderError(f"{d}: the stored {fmt} policy does not build ({type(err).__name__}: {err})") from None
    return LoadedPolicy(core, schema, constraints, meta)


def load_sb3_checkpoint(directory: str | Path, *, trust_pickle: bool = False, env: Any = None) -> Any:
    """The full SB3 model of an sb3 policy folder (``model.zip``), e.g. to train further. SB3's
    loader unpickles parts of the zip, so this needs ``trust_pickle=True``."""
    d = Path(directory)
    meta = _read_meta(d)
    if meta.get("format") != "sb3" or not (d / CHECKPOINT_FILE).is_file():
        raise PolicyFolderError(f"{d} has no SB3 checkpoint ({CHECKPOINT_FILE}); it holds a "
                                f"{meta.get('format')!r} policy")
    if not trust_pickle:
        raise UntrustedPolicyError(f"{d / CHECKPOINT_FILE}: SB3's zip loader unpickles parts of it, which runs "
                                   "code from the file; pass trust_pickle=True only for a store you trust "
                                   "(load_policy serves the policy from data without it)")
    from rapport.agents.rl_policy import load_model

    return load_model(d / CHECKPOINT_FILE, meta["algo"], env=env)


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


def load_logged_policy(model_uri: str, *, trust_pickle: bool = False) -> LoadedPolicy:
    """The policy inside an MLflow pyfunc model logged by :func:`log_pyfunc_model`, read from the
    model's files as data (the model's code file is not imported; see the module doc)."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    quiet_mlflow()
    with tempfile.TemporaryDirectory(prefix="rapport-policy-") as tmp:
        with _model_warnings_filtered():
            root = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        if (root / META_FILE).is_file():  # the URI names a policy folder itself
            return load_policy(root, trust_pickle=trust_pickle)
        try:  # MLmodel is YAML, parsed with yaml.safe_load
            rel = Model.load(root / "MLmodel").flavors["python_function"]["artifacts"]["policy"]["path"]
        except (OSError, MlflowException, KeyError, TypeError, ValueError):
            raise PolicyFolderError(f"{model_uri} is not a Rapport policy model (its MLmodel names no "
                                    "'policy' artifact)") from None
        folder = (root / str(rel)).resolve()
        if not folder.is_relative_to(root.resolve()):
            raise PolicyFolderError(f"{model_uri}: the policy artifact path {rel!r} leaves the model folder")
        return load_policy(folder, trust_pickle=trust_pickle)
