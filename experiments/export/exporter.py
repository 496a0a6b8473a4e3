"""Export a policy to files (ONNX, ``.pt2``, policy card) and, from a training run, to MLflow.

Two levels::

    result = export_policy(policy, schema, "exports/ppo", formats=("onnx", "torchscript"))
    result = export_run(run_id, out_dir, formats=("onnx", "torchscript", "mlflow"),
                        register="retention-policy", alias="champion")

:func:`export_policy` needs only an in-memory policy and its schema. :func:`export_run` loads
the policy a training run logged (``runs:/<run_id>/policy``, see
:mod:`rapport.experiments.policy_store`), writes the files, reads the run's config, scenario and KPIs
into the policy card, logs the files and a pyfunc model to that same run, and registers the
model under a name with an alias.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rapport.agents.protocol import DecisionSchema
from rapport.experiments.errors import POLICY_SOURCES, UserError, model_folder
from rapport.experiments.export.build import MODES, ExportSpec, build_decision_module
from rapport.experiments.export.policy_card import build_card, write_card
from rapport.experiments.tracking_store import check_store_exists

__all__ = ["FORMATS", "ExportResult", "export_policy", "export_run", "normalise_formats"]

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript", "mlflow")
_ALIASES = {"onnx": "onnx", "torchscript": "torchscript", "pt2": "torchscript",
            "torch_export": "torchscript", "mlflow": "mlflow", "pyfunc": "mlflow"}
FILE_NAMES = {"onnx": "policy.onnx", "torchscript": "policy.pt2"}


def normalise_formats(formats: Sequence[str]) -> tuple[str, ...]:
    """Canonical format names (``pt2``/``torch_export`` -> ``torchscript``, ``pyfunc`` ->
    ``mlflow``), in :data:`FORMATS` order; unknown names raise."""
    if isinstance(formats, str):
        formats = [formats]
    bad = [f for f in formats if str(f).lower() not in _ALIASES]
    if bad:
        raise ValueError(f"unknown export format(s) {bad}; valid: {', '.join(FORMATS)} "
                         "(aliases: pt2, torch_export, pyfunc)")
    if not formats:
        raise ValueError(f"formats is empty; choose from {', '.join(FORMATS)}")
    wanted = {_ALIASES[str(f).lower()] for f in formats}
    return tuple(f for f in FORMATS if f in wanted)


@dataclass
class ExportResult:
    """What an export wrote."""

    out_dir: Path
    spec: ExportSpec
    files: dict[str, Path]
    """Format (``onnx``, ``torchscript``, ``card_json``, ``card_md``) -> file."""
    card: dict[str, Any] = field(default_factory=dict)
    model_uri: str | None = None
    """The logged MLflow model (``models:/m-...``), when ``mlflow`` was exported."""
    registered: dict[str, Any] | None = None
    """``{"name", "version", "alias"}`` when registered."""

    def summary(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "policy_kind": self.spec.policy_kind,
                "mode": self.spec.mode, "files": {k: str(v) for k, v in self.files.items()},
                "model_uri": self.model_uri, "registered": self.registered}


def export_policy(policy: Any, schema: DecisionSchema, out_dir: str | Path, *,
                  formats: Sequence[str] = ("onnx", "torchscript"), mode: str = "greedy",
                  obs_normalization: Any = None, opset: int | None = None,
                  card_context: dict[str, Any] | None = None,
                  constraints: Mapping[str, Any] | None = None) -> ExportResult:
    """Write ``policy`` in the file formats asked for, and its policy card, into ``out_dir``.

    ``mlflow`` in ``formats`` writes the ONNX file (the MLflow model's payload) but logs
    nothing: logging belongs to :func:`export_run`. ``card_context``: keyword arguments of
    :func:`~rapport.experiments.export.policy_card.build_card` (run, constraints, scenario, promotion).
    ``constraints``: the run's contact cap and quiet weeks, built into the exported decision
    (default: ``card_context["constraints"]``).
    """
    from rapport.experiments.export.onnx import DEFAULT_OPSET, export_onnx
    from rapport.experiments.export.torch_export import export_pt2

    formats = normalise_formats(formats)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if constraints is None:
        constraints = (card_context or {}).get("constraints")
    module, spec = build_decision_module(policy, schema, mode, obs_normalization=obs_normalization,
                                         constraints=constraints)
    # written into a hidden staging folder and moved into out_dir only when every file is there:
    # a failed export never leaves a policy.onnx that scores as if it were complete
    staging = Path(tempfile.mkdtemp(prefix=".export.partial-", dir=out))
    try:
        files: dict[str, Path] = {}
        if "onnx" in formats or "mlflow" in formats:
            files["onnx"] = export_onnx(module, spec, staging / FILE_NAMES["onnx"],
                                        opset=opset or DEFAULT_OPSET)
        if "torchscript" in formats:
            files["torchscript"] = export_pt2(module, spec, staging / FILE_NAMES["torchscript"])
        files["spec"] = staging / "export_spec.json"
        files["spec"].write_text(spec.to_json())
        card = build_card(spec, files={k: v.name for k, v in files.items() if k != "spec"},
                          **(card_context or {}))
        files["card_json"], files["card_md"] = write_card(card, staging)
        for path in files.values():  # the card last: its presence marks a finished export
            os.replace(path, out / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    files = {k: out / v.name for k, v in files.items() if k != "spec"}
    return ExportResult(out, spec, files, card)


# --------------------------------------------------------------------------- from a run


def _run_context(client: Any, run_id: str) -> dict[str, Any]:
    run = client.get_run(run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    return {"run_id": run_id, "experiment": experiment.name if experiment else None,
            "status": run.info.status, "params": dict(run.data.params),
            "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
            "metrics": dict(run.data.metrics)}


def _scenario_of(run: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Scenario name, version and digest: the ``scenario.*`` tags ``rapport-train`` sets, else
    the ``env.scenario`` param."""
    tags, params = run.get("tags", {}), run.get("params", {})
    found = {k: tags[f"scenario.{k}"] for k in ("name", "version", "sha") if f"scenario.{k}" in tags}
    if "name" not in found and "env.scenario" in params:
        found["name"] = params["env.scenario"]
    return found


def _example_features(schema: DecisionSchema, scenario: dict[str, Any]) -> np.ndarray:
    """A few real observations of the scenario for the MLflow input example (random valid
    features when the scenario cannot be rebuilt here)."""
    try:
        import rapport.envs as envs
        env = envs.PopulationEnv(num_envs=4, scenario=str(scenario.get("name", "retail")),
                                 include_latent=False)
        if tuple(env.feature_names) == tuple(schema.feature_names):
            return env.reset(seed=0)[0]
    except Exception as err:  # a calibrated scenario file that is not on this machine
        log.info("input example from random features (%s)", err)
    from rapport.experiments.export.samples import random_observations

    return random_observations(schema, 4, np.random.default_rng(0))


def export_run(run_id: str | None, out_dir: str | Path | None = None, *,
               formats: Sequence[str] = FORMATS, mode: str = "greedy",
               model_uri: str | None = None, register: str | None = None,
               alias: str | None = "champion", model_name: str = "policy_export",
               opset: int | None = None, tracking_uri: str | None = None,
               gate: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None
               ) -> ExportResult:
    """Export the policy a training run logged; see the module doc.

    Parameters
    ----------
    run_id
        The training run. May be None when ``model_uri`` names a model logged by a run.
    out_dir
        Where the files go (default: a temporary folder, fine when only MLflow is wanted).
    model_uri
        The logged policy (default ``runs:/<run_id>/policy``).
    register, alias
        Register the exported pyfunc model under this name and point ``alias``
        (``champion`` / ``challenger``) at the new version.
    model_name
        Name of the pyfunc model logged to the run.
    gate
        Optional promotion gate ``gate(loaded_policy, run_context) -> dict`` with at least
        ``{"promote": bool}``; when it says no, the model is registered without the alias and
        the decision goes into the card and the run.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from rapport.experiments.policy_store import load_logged_policy

    formats = normalise_formats(formats)
    if register and "mlflow" not in formats:
        raise UserError("register=NAME needs the mlflow format; add mlflow to formats")
    if model_uri is not None:
        model_folder("model_uri", model_uri)  # a path must be an MLflow model folder
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    # the training run is always read (its config, scenario and KPIs go into the card)
    check_store_exists(mlflow.get_tracking_uri(), f"run_id {run_id!r}" if run_id else f"model_uri {model_uri!r}")
    client = mlflow.MlflowClient()
    if run_id is None:
        if model_uri is None:
            raise UserError("give run_id (the training run) or model_uri (a logged policy)")
        try:
            run_id = mlflow.models.get_model_info(model_uri).run_id
        except MlflowException as err:
            raise UserError(f"model_uri {model_uri!r}: {err.message}; give {POLICY_SOURCES}") from err
        if run_id is None:
            raise UserError(f"model_uri {model_uri!r} is not linked to a training run; pass run_id too")
    model_uri = model_uri or f"runs:/{run_id}/policy"
    try:
        run = _run_context(client, run_id)
    except MlflowException as err:
        raise UserError(f"run_id {run_id!r}: no such run in the tracking store {mlflow.get_tracking_uri()} "
                        "(rapport-train prints its run id; check tracking_uri / $MLFLOW_TRACKING_URI)") from err
    if run["status"] != "FINISHED":
        log.warning("run %s is %s, not FINISHED: exporting what it logged", run_id, run["status"])
    try:
        loaded = load_logged_policy(model_uri)
    except Exception as err:
        raise UserError(f"cannot load the policy {model_uri!r}: {err}") from err
    run["model_uri"] = model_uri
    agent = loaded.meta.get("agent") or {}
    run["agent"] = {k: agent.get(k) for k in ("name", "family", "target", "eval_mode") if k in agent}
    scenario = _scenario_of(run, loaded.meta)
    promotion = gate(loaded, run) if gate is not None else None
    context = {"run": run, "constraints": loaded.meta.get("constraints"),
               "scenario": scenario, "promotion": promotion}
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="rapport-export-"))
    result = export_policy(loaded.core, loaded.schema, out, formats=formats, mode=mode,
                           obs_normalization=loaded.meta.get("obs_normalization"), opset=opset,
                           card_context=context)
    if "mlflow" in formats:
        _log_to_run(result, run, loaded.schema, scenario, model_name, register, alias, promotion)
    return result


def _log_to_run(result: ExportResult, run: dict[str, Any], schema: DecisionSchema,
                scenario: dict[str, Any], model_name: str, register: str | None,
                alias: str | None, promotion: dict[str, Any] | None) -> None:
    import mlflow

    from rapport.experiments.export.pyfunc import log_policy_model, register_policy_model

    run_id = run["run_id"]
    client = mlflow.MlflowClient()
    artifact_dir = f"export/{result.spec.mode}"
    for path in result.files.values():
        client.log_artifact(run_id, str(path), artifact_dir)
    # resume the training run to attach the model to it; put its status back afterwards so a
    # failed export never marks the training run FAILED
    mlflow.start_run(run_id=run_id)
    try:
        info = log_policy_model(result.files["onnx"], result.spec,
                                example_features=_example_features(schema, scenario),
                                name=model_name,
                                card_files=(result.files["card_json"], result.files["card_md"]))
        result.model_uri = info.model_uri
        tags = {"export.model_uri": info.model_uri, "export.mode": result.spec.mode,
                "export.policy_kind": result.spec.policy_kind}
        if promotion is not None:
            tags["export.promotion"] = json.dumps(promotion, default=str)
        mlflow.set_tags(tags)
    finally:
        mlflow.end_run(status=run["status"])
    if register:
        promote = promotion is None or bool(promotion.get("promote", False))
        version = register_policy_model(result.model_uri, register, alias if promote else None)
        for key, value in {"policy_kind": result.spec.policy_kind, "mode": result.spec.mode,
                           "source_run_id": run_id}.items():
            client.set_model_version_tag(register, version.version, key, value)
        result.registered = {"name": register, "version": int(version.version),
                             "alias": alias if promote else None}
