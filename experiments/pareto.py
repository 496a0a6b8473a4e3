"""Pareto-efficient policies over the trade-offs Rapport reports, and their scatter panels.

A policy is *efficient* when no other policy is at least as good on every objective and strictly
better on one. The default objectives (:data:`OBJECTIVES`): profit ↑, lifetime value ↑, contacts
per customer ↓, churned share ↓, opt-outs per customer ↓. The front is taken on **point
estimates**: it describes the trade-offs the evaluation measured (the plot draws every CI, so a
dominance inside the noise is visible as overlapping bars); pass/fail decisions with
uncertainty are the guardrails' job (:mod:`rapport.experiments.guardrails`). Identical policies
(ties on every objective) do not dominate each other, so both stay on the front; a policy with a
missing (NaN) objective is never on the front and dominates nothing.

Input: a frame with one row per policy and a column per objective key holding its mean, with
``"<key> ci_low"`` / ``"<key> ci_high"`` for error bars (the leaderboard of
:mod:`rapport.experiments.compare` has this shape; :func:`wide` makes it from a ``Summary``).

API: :func:`pareto_front` (pure), :func:`wide`, :func:`pareto_plot`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

LTV = "kpi/lifetime_value_per_customer"
OBJECTIVES: dict[str, str] = {"kpi/profit_per_customer": "max", LTV: "max", "kpi/contacts_per_customer": "min",
                              "kpi/churned_share": "min", "kpi/opt_outs_per_customer": "min"}
"""Objective key -> ``max`` (more is better) or ``min`` (less is better)."""
PANELS: tuple[tuple[str, str], ...] = (("kpi/profit_per_customer", LTV), ("kpi/contacts_per_customer", LTV),
                                       ("kpi/churned_share", LTV), ("kpi/opt_outs_per_customer", LTV))
"""(x, y) of each panel of :func:`pareto_plot`: lifetime value against each other objective."""


def pareto_front(frame: pd.DataFrame, objectives: Mapping[str, str] = OBJECTIVES) -> pd.Series:
    """Boolean Series (``frame``'s index): True for the rows no other row dominates on
    ``objectives`` (column -> ``max`` | ``min``)."""
    bad = {k: d for k, d in objectives.items() if d not in ("max", "min")}
    if bad:
        raise ValueError(f"objective directions must be 'max' or 'min', got {bad}")
    missing = [k for k in objectives if k not in frame.columns]
    if missing:
        raise ValueError(f"objective column(s) {missing} not in the frame; columns: {list(frame.columns)}")
    if not objectives:
        raise ValueError("pareto_front needs at least one objective")
    sign = np.array([1.0 if d == "max" else -1.0 for d in objectives.values()])
    v = frame[list(objectives)].to_numpy(np.float64) * sign  # larger is better in every column
    valid = ~np.isnan(v).any(axis=1)
    efficient = valid.copy()
    for i in np.flatnonzero(valid):
        others = v[valid]
        dominated = (others >= v[i]).all(axis=1) & (others > v[i]).any(axis=1)
        efficient[i] = not dominated.any()
    return pd.Series(efficient, index=frame.index, name="pareto")


def wide(summary: Any, keys: Sequence[str] = tuple(OBJECTIVES)) -> pd.DataFrame:
    """One row per policy of a :class:`~rapport.experiments.evaluation.Summary`: ``policy``,
    ``role`` and, per key, its mean and ``"<key> ci_low"`` / ``"<key> ci_high"``."""
    k = summary.kpis.set_index(["policy", "key"])
    rows = []
    for p in dict.fromkeys(summary.kpis.policy):
        row: dict[str, Any] = {"policy": p, "role": summary.roles.get(p, "policy")}
        for key in keys:
            row[key] = k.loc[(p, key), "mean"]
            row[f"{key} ci_low"], row[f"{key} ci_high"] = k.loc[(p, key), "ci_low"], k.loc[(p, key), "ci_high"]
        rows.append(row)
    return pd.DataFrame(rows)


def _err(frame: pd.DataFrame, key: str) -> np.ndarray | None:
    if f"{key} ci_low" not in frame or f"{key} ci_high" not in frame:
        return None
    mean = frame[key].to_numpy(float)
    return np.vstack([mean - frame[f"{key} ci_low"].to_numpy(float), frame[f"{key} ci_high"].to_numpy(float) - mean])


def _label(key: str, objectives: Mapping[str, str]) -> str:
    better = {"max": " (more is better)", "min": " (less is better)"}.get(objectives.get(key, ""), "")
    return key.removeprefix("kpi/") + better


def pareto_plot(frame: pd.DataFrame, objectives: Mapping[str, str] = OBJECTIVES,
                panels: Sequence[tuple[str, str]] = PANELS, *, title: str = "") -> Any:
    """Pairwise panels (default: lifetime value against profit, contacts, churn and opt-outs),
    each policy with its CI error bars; the efficient policies (:func:`pareto_front` over
    ``objectives``) filled in red, the others hollow and grey; every point is named."""
    from rapport.experiments.plots import plt  # pyplot on the Agg backend

    panels = [(x, y) for x, y in panels if x in frame and y in frame]
    if not panels:
        raise ValueError(f"none of the panels' columns are in the frame; columns: {list(frame.columns)}")
    front = pareto_front(frame, objectives).to_numpy()
    cols = min(2, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.0 * rows), squeeze=False)
    names = frame["policy"].astype(str).to_numpy() if "policy" in frame else frame.index.astype(str).to_numpy()
    for ax, (x, y) in zip(axes.ravel(), panels, strict=False):
        xs, ys = frame[x].to_numpy(float), frame[y].to_numpy(float)
        xerr, yerr = _err(frame, x), _err(frame, y)
        for on, style in ((False, dict(color="0.6", mfc="white", zorder=2)),
                          (True, dict(color="tab:red", mfc="tab:red", zorder=3))):
            sel = front == on
            if not sel.any():
                continue
            ax.errorbar(xs[sel], ys[sel], xerr=None if xerr is None else xerr[:, sel],
                        yerr=None if yerr is None else yerr[:, sel], fmt="o", capsize=3, lw=1,
                        label="Pareto-efficient" if on else "dominated", **style)
        spots: dict[tuple[float, float, bool], list[str]] = {}  # coinciding policies share one label
        for i in np.flatnonzero(~np.isnan(xs) & ~np.isnan(ys)):
            spots.setdefault((xs[i], ys[i], bool(front[i])), []).append(names[i])
        for (px, py, on), who in spots.items():
            ax.annotate(", ".join(who), (px, py), textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color="black" if on else "0.5")
        ax.set_xlabel(_label(x, objectives), fontsize=8)
        ax.set_ylabel(_label(y, objectives), fontsize=8)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title or f"Pareto front over {', '.join(k.removeprefix('kpi/') for k in objectives)} "
                 "(point estimates; bars: bootstrap CI)", fontsize=9)
    fig.tight_layout()
    return fig
