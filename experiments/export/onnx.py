"""ONNX export: one self-contained ``.onnx`` file (no external data), named inputs, a dynamic
batch axis, and the :class:`~rapport.experiments.export.build.ExportSpec` JSON in its metadata.

Inputs: ``features`` (batch, F) float32, columns in ``spec.feature_names``; in exploration
modes also ``noise`` (and ``propensity_noise`` for Thompson sampling), float64.
Outputs: ``actions`` (batch, 3) int64 -- (channel, offer, spend level) -- and ``propensity``
(batch,) float64. :mod:`rapport.experiments.export.decision_runtime` runs it with onnxruntime alone.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import onnx
import torch

from rapport.experiments.export._examples import dynamic_shapes, example_inputs, input_names
from rapport.experiments.export.build import ExportSpec
from rapport.experiments.export.decision_runtime import SPEC_KEY
from rapport.experiments.export.modules import DecisionModule, exported

__all__ = ["DEFAULT_OPSET", "export_onnx"]

DEFAULT_OPSET = 18
"""Recent enough for every op used here, and supported by onnxruntime >= 1.14."""


def export_onnx(module: DecisionModule, spec: ExportSpec, path: str | Path,
                opset: int = DEFAULT_OPSET) -> Path:
    """Write ``module`` as ONNX at ``path`` and check it with ``onnx.checker``."""
    path = Path(path)
    # the dynamo exporter narrates every stage on stdout and warns about torchvision
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(
                exported(module), example_inputs(spec), str(path), dynamo=True,
                external_data=False, opset_version=opset, input_names=input_names(spec),
                output_names=["actions", "propensity"], dynamic_shapes=dynamic_shapes(spec),
                verbose=False)
    finally:
        quiet.setLevel(level)
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in {SPEC_KEY: spec.to_json(), "rapport.mode": spec.mode,
                       "rapport.policy_kind": spec.policy_kind,
                       "rapport.feature_names": ",".join(spec.feature_names)}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "rapport"
    model.doc_string = (f"Rapport policy {spec.policy_kind}, mode {spec.mode}: features -> "
                        f"(channel, offer, spend) actions and propensity ({spec.propensity})")
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
