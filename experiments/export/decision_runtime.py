"""Run an exported Rapport policy with onnxruntime alone: validation, noise, batching.

This file imports only numpy, onnxruntime and (for data frames) pandas -- never torch or
Rapport -- so it can be copied next to a ``policy.onnx`` and used where Rapport is not
installed; the MLflow model ships it as code. ::

    runner = DecisionRunner("policy.onnx")
    actions, propensity = runner.decide(features)            # (n, F) float32, columns in
                                                             # runner.feature_names
    decisions = runner.decide_frame(customers_df, seed=0)    # DataFrame in, DataFrame out

The policy's description (feature order, action meanings, mode, exploration inputs) is the JSON
stored under ``rapport.spec`` in the ONNX metadata.

Bad input raises :class:`InvalidDecisionInput` naming the column (and row) at fault; a batch is
scored whole or not at all -- a bad row is never silently dropped.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

__all__ = ["ID_COLUMNS", "DecisionRunner", "InvalidDecisionInput", "validate_features"]

ID_COLUMNS = ("customer_id", "episode", "week")
"""Optional pass-through columns accepted beside the features."""
SPEC_KEY = "rapport.spec"


class InvalidDecisionInput(ValueError):
    """Input the policy cannot score; ``column`` names the offending column when there is one."""

    def __init__(self, message: str, column: str | None = None):
        super().__init__(message)
        self.column = column


def _kind(dtype: Any) -> str:
    """numpy kind character of a (numpy or pandas) dtype; "O" for strings and categories."""
    if getattr(dtype, "name", "") in ("string", "str", "category"):
        return "O"
    try:
        return np.dtype(dtype).kind
    except TypeError:  # pandas extension dtypes (nullable ints, ...)
        return str(getattr(dtype, "kind", "O"))


def validate_features(frame: Any, feature_names: tuple[str, ...] | list[str],
                      id_columns: tuple[str, ...] = ID_COLUMNS) -> np.ndarray:
    """Check a pandas DataFrame of customers and return its features (n, F) float32.

    Rules: at least one row; every feature column present; no column other than the features
    and ``id_columns``; features numeric (bool, int or float); no NaN or infinity.
    """
    columns = [str(c) for c in frame.columns]
    if len(frame) == 0:
        raise InvalidDecisionInput(
            f"empty batch: no customer rows to score (expected columns: "
            f"{', '.join(feature_names)})")
    missing = [f for f in feature_names if f not in columns]
    if missing:
        raise InvalidDecisionInput(
            f"missing feature column(s): {', '.join(missing)}; the policy needs all of "
            f"{', '.join(feature_names)}", column=missing[0])
    allowed = set(feature_names) | set(id_columns)
    extra = [c for c in columns if c not in allowed]
    if extra:
        raise InvalidDecisionInput(
            f"unexpected column(s): {', '.join(extra)}; accepted columns are the features "
            f"{', '.join(feature_names)} and optionally {', '.join(id_columns)}", column=extra[0])
    for col in id_columns:
        if col in columns and _kind(frame[col].dtype) not in "iu":
            raise InvalidDecisionInput(
                f"column {col!r} must hold integers, got dtype {frame[col].dtype}", column=col)
    for col in feature_names:
        if _kind(frame[col].dtype) not in "biuf":
            raise InvalidDecisionInput(
                f"column {col!r} must be numeric (float, int or bool), got dtype "
                f"{frame[col].dtype}", column=col)
    features = np.empty((len(frame), len(feature_names)), np.float32)
    for j, col in enumerate(feature_names):
        features[:, j] = frame[col].to_numpy(dtype=np.float64, na_value=np.nan)
    _check_finite(features, feature_names, frame.index)
    return features


def _check_finite(features: np.ndarray, feature_names: Any, index: Any = None) -> None:
    if np.isfinite(features).all():
        return
    row, col = np.argwhere(~np.isfinite(features))[0]
    value = features[row, col]
    kind = "NaN" if np.isnan(value) else ("+inf" if value > 0 else "-inf")
    label = row if index is None else index[row]
    n_bad = int((~np.isfinite(features)).any(axis=1).sum())
    raise InvalidDecisionInput(
        f"{kind} in column {feature_names[col]!r} (row {label}; {n_bad} row(s) affected); every "
        "feature must be a finite number -- the batch was not scored", column=feature_names[col])


class DecisionRunner:
    """An exported policy loaded in onnxruntime.

    Parameters
    ----------
    path
        The ``.onnx`` file written by Rapport's exporter.
    threads
        Parallel workers for a batch (``None``: ``$RAPPORT_ORT_THREADS``, else 1). The batch is
        split into ``threads`` row blocks run concurrently on one session, each with one
        onnxruntime thread: on a shared machine this beat onnxruntime's own intra-op threads
        (whose spinning workers stall when a core is busy elsewhere) by 1.3-2x.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is None:
            threads = int(os.environ.get("RAPPORT_ORT_THREADS", 1))
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = threads
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._pool = None
        self.path = str(path)
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if SPEC_KEY not in meta:
            raise ValueError(f"{path} has no {SPEC_KEY!r} metadata: not a Rapport export")
        self.spec: dict[str, Any] = json.loads(meta[SPEC_KEY])
        self.feature_names: tuple[str, ...] = tuple(self.spec["feature_names"])
        self.noise_inputs: list[dict[str, Any]] = list(self.spec.get("noise_inputs", ()))
        self.max_batch_rows = int(self.spec.get("max_batch_rows", 1 << 17))

    @property
    def mode(self) -> str:
        return str(self.spec["mode"])

    def draw_noise(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The exploration inputs for ``n`` rows, drawn in the order the in-memory policy draws
        them (uniform columns one after another; normal arrays in C order)."""
        out = {}
        for spec in self.noise_inputs:
            shape = tuple(n if s == "n" else int(s) for s in spec["shape"])
            if spec["distribution"] == "uniform":
                cols = [rng.random(shape[0]) for _ in range(shape[1])]
                out[spec["name"]] = np.stack(cols, axis=1)
            else:
                out[spec["name"]] = rng.standard_normal(shape)
        return out

    def decide(self, features: np.ndarray, rng: np.random.Generator | None = None,
               noise: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Actions (n, 3) int64 and propensities (n,) float64 for (n, F) features.

        Exploration modes need ``rng`` (or ready ``noise`` arrays); greedy mode ignores both.
        """
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != len(self.feature_names):
            raise InvalidDecisionInput(
                f"features must be (n_customers, {len(self.feature_names)}) with columns "
                f"{', '.join(self.feature_names)}; got shape {features.shape}")
        n = features.shape[0]
        if n == 0:
            raise InvalidDecisionInput("empty batch: no customer rows to score")
        _check_finite(features, self.feature_names)
        if self.noise_inputs and noise is None:
            if rng is None:
                raise ValueError(f"mode {self.mode!r} explores: pass rng (or noise)")
            noise = self.draw_noise(n, rng)
        noise = noise or {}
        actions = np.empty((n, 3), np.int64)
        propensity = np.empty(n, np.float64)
        step = min(self.max_batch_rows, -(-n // self.threads))

        def run(start: int) -> None:
            stop = min(n, start + step)
            feeds = {"features": features[start:stop]}
            for spec in self.noise_inputs:
                arr = noise[spec["name"]]
                feeds[spec["name"]] = arr[start:stop] if spec["shape"][0] == "n" else arr
            actions[start:stop], propensity[start:stop] = self.session.run(None, feeds)

        starts = range(0, n, step)
        if self.threads > 1 and len(starts) > 1:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="rapport-ort")
            list(self._pool.map(run, starts))  # onnxruntime releases the GIL while it runs
        else:
            for start in starts:
                run(start)
        return actions, propensity

    def decide_frame(self, frame: Any, seed: int | None = None) -> Any:
        """Score a DataFrame of customers (features + optional ``customer_id``/``week``).

        Returns a DataFrame with the id columns that were given, then ``channel``, ``offer``,
        ``spend_level`` (action indices, the logged-feedback column names) and ``propensity``,
        row for row.
        """
        import pandas as pd

        features = validate_features(frame, self.feature_names)
        rng = np.random.default_rng(seed) if self.noise_inputs else None
        actions, propensity = self.decide(features, rng)
        out = {c: frame[c].to_numpy() for c in ID_COLUMNS if c in frame.columns}
        out.update(channel=actions[:, 0], offer=actions[:, 1], spend_level=actions[:, 2],
                   propensity=propensity)
        return pd.DataFrame(out, index=frame.index)
