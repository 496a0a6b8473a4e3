"""Exported creative scorers (issue 15): raw observable features in, the chosen creative out, no Rapport needed.

One torch module per selector family, written as ONNX (one self-contained file) or as a
``torch.export`` program (``.pt2``):

* :class:`BilinearCreativeModule` — a :class:`rapport.agents.creative_bandits.BilinearCreativePolicy`
  (or the greedy policy of a :class:`~rapport.agents.creative_bandits.CreativeBandit`):
  ``z̃ = ((x[context_columns] - mean) / std, 1)``, ``ẽ = ((e - embedding_mean) / embedding_std, 1)``,
  score ``z̃ᵀ W ẽ``.
* :class:`TwoTowerModule` — a :class:`rapport.agents.two_tower.TwoTowerCreative`:
  ``p(x)[:k]·q(e)[:k] + q(e)[k]``.

The decision is greedy — argmax over the catalogue, ties to the lowest id, propensity 1 — which is
what a learner's ``policy()`` (explore False) does; exploring rules stay in memory.

Inputs: ``features`` (n, F) float32, columns in the metadata's ``rapport.feature_names``; with
``embeddings_input=True`` also ``embeddings`` (C, D) float32, the catalogue at serving time (C may
differ from training: a new creative is scored from its embedding). Otherwise the training
catalogue is baked in. Outputs: ``creative_id`` (n,) int64, ``score`` (n,) float32 (the
predicted reward of that creative, up to the per-person terms that do not rank creatives) and
``propensity`` (n,) float64 (1.0). :class:`CreativeOnnxScorer` runs a file with onnxruntime
alone and checks inputs (column count, dtype, NaN named by column).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["BilinearCreativeModule", "CreativeOnnxScorer", "TwoTowerModule", "creative_module",
           "export_creative_onnx", "export_creative_pt2"]

META_KEY = "rapport.creative"
"""ONNX metadata key of the JSON description (kind, feature names, catalogue shape, inputs)."""


def _f32(a: Any) -> torch.Tensor:
    return torch.as_tensor(np.array(a, np.float32))


class _Greedy(nn.Module):
    """Shared head: scores (n, C) -> (creative_id, score, propensity)."""

    def decide(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        best = torch.argmax(scores, dim=1)
        score = torch.gather(scores, 1, best[:, None])[:, 0]
        return best, score, torch.ones_like(score, dtype=torch.float64)


class BilinearCreativeModule(_Greedy):
    """Greedy bilinear scorer from :meth:`BilinearCreativePolicy.scoring_parameters`."""

    def __init__(self, params: dict[str, Any], embeddings_input: bool = False) -> None:
        super().__init__()
        self.embeddings_input = embeddings_input
        self.register_buffer("columns", torch.as_tensor(np.asarray(params["context_columns"], np.int64)))
        self.register_buffer("mean", _f32(params["feature_mean"]))
        self.register_buffer("inv_std", _f32(1.0 / np.asarray(params["feature_std"], np.float64)))
        self.register_buffer("weights", _f32(params["weights"]))  # (d+1, D+1)
        self.register_buffer("e_mean", _f32(params["embedding_mean"]))
        self.register_buffer("e_inv_std", _f32(1.0 / np.asarray(params["embedding_std"], np.float64)))
        self.register_buffer("e_t", self._e_tilde(_f32(params["embeddings"])).T.contiguous())

    def _e_tilde(self, embeddings: torch.Tensor) -> torch.Tensor:
        e = (embeddings - self.e_mean) * self.e_inv_std
        return torch.cat([e, torch.ones_like(e[:, :1])], dim=1)

    def forward(self, features: torch.Tensor, embeddings: torch.Tensor | None = None):
        z = (torch.index_select(features, 1, self.columns) - self.mean) * self.inv_std
        z = torch.cat([z, torch.ones_like(z[:, :1])], dim=1)
        u = z @ self.weights
        e_t = self._e_tilde(embeddings).T if self.embeddings_input else self.e_t
        return self.decide(u @ e_t)


class _Tower(nn.Module):
    def __init__(self, state: dict[str, torch.Tensor], n_in: int, hidden: tuple[int, ...], dim: int) -> None:
        super().__init__()
        from rapport.agents.two_tower import Tower

        self.tower = Tower(n_in, hidden, dim)
        self.tower.load_state_dict(state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tower(x)


class TwoTowerModule(_Greedy):
    """Greedy two-tower scorer from :meth:`TwoTowerCreative.scoring_parameters`."""

    def __init__(self, params: dict[str, Any], embeddings_input: bool = False) -> None:
        super().__init__()
        self.embeddings_input = embeddings_input
        emb = np.asarray(params["embeddings"], np.float32)
        hidden, dim = tuple(params["hidden"]), int(params["dim"])
        self.person = _Tower(params["person"], len(params["feature_names"]), hidden, dim)
        self.creative = _Tower(params["creative"], emb.shape[1], hidden, dim)
        with torch.no_grad():
            self.register_buffer("q_t", self.creative(_f32(emb)).T.contiguous())

    def forward(self, features: torch.Tensor, embeddings: torch.Tensor | None = None):
        p = self.person(features)
        p = torch.cat([p[:, :-1], torch.ones_like(p[:, :1])], dim=1)
        q_t = self.creative(embeddings).T if self.embeddings_input else self.q_t
        return self.decide(p @ q_t)


def creative_module(selector: Any, embeddings_input: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """The greedy export module of a creative learner or policy, and its description."""
    from rapport.agents.creative_bandits import BilinearCreativePolicy, CreativeBandit
    from rapport.agents.two_tower import TwoTowerCreative

    if isinstance(selector, CreativeBandit):
        selector = selector.policy(explore=False)
    if isinstance(selector, BilinearCreativePolicy):
        params, module, kind = selector.scoring_parameters(), BilinearCreativeModule, "bilinear"
    elif isinstance(selector, TwoTowerCreative):
        params, module, kind = selector.scoring_parameters(), TwoTowerModule, "two_tower"
    else:
        raise ValueError(f"selector must be a CreativeBandit, BilinearCreativePolicy or TwoTowerCreative, "
                         f"got {type(selector).__name__}")
    emb = np.asarray(params["embeddings"])
    meta = {"kind": kind, "feature_names": list(params["feature_names"]), "n_creatives": int(emb.shape[0]),
            "embedding_dim": int(emb.shape[1]), "embeddings_input": bool(embeddings_input),
            "decision": "greedy: argmax over creatives, ties to the lowest id, propensity 1"}
    return module(params, embeddings_input).eval(), meta


def _examples(meta: dict[str, Any]) -> tuple[tuple[torch.Tensor, ...], tuple[dict[int, Any], ...], list[str]]:
    rng = np.random.default_rng(0)
    inputs = [torch.as_tensor(rng.random((4, len(meta["feature_names"])), dtype=np.float32))]
    shapes: list[dict[int, Any]] = [{0: torch.export.Dim("batch")}]
    names = ["features"]
    if meta["embeddings_input"]:
        inputs.append(torch.as_tensor(rng.random((5, meta["embedding_dim"]), dtype=np.float32)))
        shapes.append({0: torch.export.Dim("creatives")})
        names.append("embeddings")
    return tuple(inputs), tuple(shapes), names


def export_creative_onnx(selector: Any, path: str | Path, *, embeddings_input: bool = False,
                         opset: int = 18) -> Path:
    """Write the greedy creative scorer of ``selector`` as one ONNX file (checked) at ``path``."""
    import onnx

    path = Path(path)
    module, meta = creative_module(selector, embeddings_input)
    inputs, shapes, names = _examples(meta)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(module, inputs, str(path), dynamo=True, external_data=False, opset_version=opset,
                              input_names=names, output_names=["creative_id", "score", "propensity"],
                              dynamic_shapes=shapes, verbose=False)
    finally:
        quiet.setLevel(level)
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in {META_KEY: json.dumps(meta), "rapport.feature_names": ",".join(meta["feature_names"])}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "rapport"
    model.doc_string = f"Rapport creative scorer ({meta['kind']}): features -> creative_id, score, propensity"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def export_creative_pt2(selector: Any, path: str | Path, *, embeddings_input: bool = False) -> Path:
    """Write the greedy creative scorer as a ``torch.export`` program (``.pt2``; the description as
    the extra file ``rapport_creative.json``). Load: ``torch.export.load(path).module()``."""
    path = Path(path)
    module, meta = creative_module(selector, embeddings_input)
    inputs, shapes, _ = _examples(meta)
    program = torch.export.export(module, inputs, dynamic_shapes=shapes)
    torch.export.save(program, path, extra_files={"rapport_creative.json": json.dumps(meta)})
    return path


class CreativeOnnxScorer:
    """Runs an exported creative scorer with onnxruntime only; checks what it is given."""

    def __init__(self, path: str | Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if META_KEY not in meta:
            raise ValueError(f"{path} is not a Rapport creative scorer (no {META_KEY!r} metadata)")
        self.meta = json.loads(meta[META_KEY])
        self.feature_names = tuple(self.meta["feature_names"])

    def choose(self, features: np.ndarray, embeddings: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(creative_id (n,) int64, score (n,) float32) for (n, F) raw features."""
        x = np.asarray(features)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise ValueError(f"features must be (n, {len(self.feature_names)}) with columns "
                             f"{', '.join(self.feature_names)}, got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"features must be numeric (float32), got dtype {x.dtype}")
        bad = ~np.isfinite(x)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(f"non-finite value in column {self.feature_names[col]!r} (row {row})")
        feeds = {"features": x.astype(np.float32)}
        if self.meta["embeddings_input"]:
            if embeddings is None:
                raise ValueError("this scorer takes the catalogue as an input: pass embeddings (C, D)")
            from rapport.agents.creative import check_embeddings

            emb = check_embeddings(embeddings)
            if emb.shape[1] != self.meta["embedding_dim"]:
                raise ValueError(f"embeddings must have {self.meta['embedding_dim']} columns (the dimension the "
                                 f"scorer was trained with), got {emb.shape[1]}")
            feeds["embeddings"] = np.array(emb)
        elif embeddings is not None:
            raise ValueError("this scorer has the catalogue baked in; export with embeddings_input=True to pass one")
        ids, score, _ = self.session.run(None, feeds)
        return ids.astype(np.int64), score
