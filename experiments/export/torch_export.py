"""The torch-native format: a ``torch.export`` ExportedProgram saved as ``.pt2``.

This is what the issue calls "TorchScript": in torch 2.13 ``torch.jit.trace``/``script`` are
deprecated and ``jit.script`` fails on SB3 policies, and ``torch.export`` is their successor.
The file holds the whole decision (eligibility + preprocessing + policy + selector) and the
:class:`~rapport.experiments.export.build.ExportSpec` JSON as an extra file. Loading needs torch only::

    program = torch.export.load("policy.pt2")
    actions, propensity = program.module()(features)      # features: (n, F) float32 tensor
"""

from __future__ import annotations

from pathlib import Path

import torch

from rapport.experiments.export._examples import dynamic_shapes, example_inputs
from rapport.experiments.export.build import ExportSpec
from rapport.experiments.export.modules import DecisionModule, exported

__all__ = ["SPEC_FILE", "export_pt2", "load_pt2"]

SPEC_FILE = "rapport_spec.json"


def export_pt2(module: DecisionModule, spec: ExportSpec, path: str | Path) -> Path:
    """Write ``module`` as a ``.pt2`` ExportedProgram with a dynamic batch axis."""
    path = Path(path)
    program = torch.export.export(exported(module), example_inputs(spec),
                                  dynamic_shapes=dynamic_shapes(spec))
    torch.export.save(program, path, extra_files={SPEC_FILE: spec.to_json()})
    return path


def load_pt2(path: str | Path) -> tuple[torch.nn.Module, ExportSpec]:
    """The callable module and its spec from a ``.pt2`` written by :func:`export_pt2`."""
    extra = {SPEC_FILE: ""}
    program = torch.export.load(Path(path), extra_files=extra)
    return program.module(), ExportSpec.from_json(extra[SPEC_FILE])
