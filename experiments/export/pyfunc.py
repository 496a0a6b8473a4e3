"""The MLflow model of an exported policy: a pyfunc over the ONNX decision, with a signature,
an input example, the policy card, and registration under a name with an alias.

The model is logged "from code" (:mod:`rapport.experiments.export.pyfunc_model` with
:mod:`rapport.experiments.export.decision_runtime` as a code path), so
``mlflow.pyfunc.load_model("models:/NAME@champion")`` and ``mlflow models serve`` need neither
torch nor Rapport. ``predict(df)`` (or a list of customer records) returns one decision per
customer -- ``channel``, ``offer``, ``spend_level`` and ``propensity`` -- see
:mod:`~rapport.experiments.export.pyfunc_model`. The signature comes from that module's type hints, so
MLflow itself rejects a missing, extra, non-numeric or NaN feature, naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pydantic

from rapport.experiments.export.build import ExportSpec

__all__ = ["ALIASES", "example_records", "log_policy_model", "register_policy_model",
           "save_policy_model"]

ALIASES = ("champion", "challenger")
_HERE = Path(__file__).resolve().parent


def example_records(spec: ExportSpec, features: np.ndarray, rows: int = 2) -> list[dict[str, Any]]:
    """An input example: ``rows`` customers of ``features`` (n, F), with ids."""
    return [{"customer_id": i, **{name: float(v) for name, v in zip(spec.feature_names, row, strict=True)}}
            for i, row in enumerate(np.asarray(features[:rows], np.float64))]


def _model_kwargs(onnx_path: str | Path, spec: ExportSpec, example_features: np.ndarray,
                  card_files: tuple[str | Path, ...]) -> dict[str, Any]:
    artifacts = {"onnx": str(onnx_path)}
    for path in card_files:
        artifacts[Path(path).name.replace(".", "_")] = str(path)
    return dict(
        python_model=str(_HERE / "pyfunc_model.py"),
        model_config={"feature_names": list(spec.feature_names)},
        code_paths=[str(_HERE / "decision_runtime.py")],
        artifacts=artifacts,
        # the signature is inferred from the type hints of pyfunc_model.RapportPolicyModel
        # (inputs: Customer records, outputs: Decision records) and the params of the example
        input_example=(example_records(spec, example_features), {"seed": -1}),
        pip_requirements=[f"mlflow=={mlflow.__version__}", f"pydantic=={pydantic.__version__}",
                          "onnxruntime", "numpy"],
        metadata={"rapport_spec": spec.to_json()},
    )


def log_policy_model(onnx_path: str | Path, spec: ExportSpec, *, example_features: np.ndarray,
                     name: str = "policy", card_files: tuple[str | Path, ...] = (),
                     registered_model_name: str | None = None) -> Any:
    """Log the pyfunc model to the active MLflow run; returns MLflow's ``ModelInfo``.

    ``example_features`` (n, F): a few real observations for the input example.
    ``card_files`` (the policy card's markdown and JSON) are stored beside the ONNX file in the
    model's artifacts; ``registered_model_name`` also registers a new version.
    """
    return mlflow.pyfunc.log_model(name=name, registered_model_name=registered_model_name,
                                   **_model_kwargs(onnx_path, spec, example_features, card_files))


def save_policy_model(path: str | Path, onnx_path: str | Path, spec: ExportSpec, *,
                      example_features: np.ndarray,
                      card_files: tuple[str | Path, ...] = ()) -> Path:
    """The same MLflow model written to a local folder (no tracking store involved)."""
    mlflow.pyfunc.save_model(str(path), **_model_kwargs(onnx_path, spec, example_features,
                                                         card_files))
    return Path(path)


def register_policy_model(model_uri: str, name: str, alias: str | None = None) -> Any:
    """Register ``model_uri`` as a new version of ``name`` and point ``alias`` at it."""
    if alias is not None and alias not in ALIASES:
        raise ValueError(f"alias must be one of {', '.join(ALIASES)}, got {alias!r}")
    version = mlflow.register_model(model_uri, name)
    if alias is not None:
        mlflow.MlflowClient().set_registered_model_alias(name, alias, version.version)
    return version
