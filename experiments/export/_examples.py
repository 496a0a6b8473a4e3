"""Example inputs and dynamic-shape declarations shared by the torch.export and ONNX writers."""

from __future__ import annotations

import numpy as np
import torch

from rapport.experiments.export.build import ExportSpec

EXAMPLE_ROWS = 4
"""A batch of >= 2 rows, so the exporters keep the batch axis symbolic (1 would specialise)."""


def example_inputs(spec: ExportSpec, rows: int = EXAMPLE_ROWS) -> tuple[torch.Tensor, ...]:
    rng = np.random.default_rng(0)
    inputs = [torch.as_tensor(rng.random((rows, len(spec.feature_names)), dtype=np.float32))]
    for noise in spec.noise_inputs:
        shape = tuple(rows if s == "n" else int(s) for s in noise.shape)
        draw = rng.random(shape) if noise.distribution == "uniform" else rng.standard_normal(shape)
        inputs.append(torch.as_tensor(draw))
    return tuple(inputs)


def input_names(spec: ExportSpec) -> list[str]:
    return ["features", *(n.name for n in spec.noise_inputs)]


def dynamic_shapes(spec: ExportSpec) -> tuple[dict[int, object] | None, ...]:
    batch = torch.export.Dim("batch")
    shapes: list[dict[int, object] | None] = [{0: batch}]
    shapes += [{0: batch} if n.shape[0] == "n" else None for n in spec.noise_inputs]
    return tuple(shapes)
