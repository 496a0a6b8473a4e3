"""PNG plots of a run or a comparison (matplotlib, Agg backend; figures are returned, not shown)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

BAR_KEYS = ("kpi/profit_per_customer", "kpi/lifetime_value_per_customer", "kpi/short_term_profit_per_customer",
            "kpi/contact_cost_per_customer", "kpi/discount_cost_per_customer", "kpi/churned_share")


def learning_curve(history: Sequence[dict[str, float]], key: str, *, title: str = "") -> Any:
    """``key`` against customer-weeks seen during training."""
    steps = [h["step"] for h in history if key in h]
    values = [h[key] for h in history if key in h]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, values, lw=1.2)
    if len(values) >= 10:  # a moving average makes noisy weekly values readable
        w = max(2, len(values) // 20)
        ax.plot(steps[w - 1:], np.convolve(values, np.ones(w) / w, mode="valid"), lw=2, label=f"mean of {w}")
        ax.legend()
    ax.set_xlabel("customer-weeks of training")
    ax.set_ylabel(key)
    ax.set_title(title or f"learning curve: {key}")
    fig.tight_layout()
    return fig


def kpi_bars(kpis: pd.DataFrame, keys: Sequence[str] = BAR_KEYS, *, title: str = "") -> Any:
    """One panel per KPI: a bar per policy with its confidence interval."""
    keys = [k for k in keys if k in set(kpis.key)]
    cols = min(3, len(keys))
    rows = int(np.ceil(len(keys) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    policies = list(dict.fromkeys(kpis.policy))
    for ax, key in zip(axes.ravel(), keys, strict=False):
        sub = kpis[kpis.key == key].set_index("policy").loc[policies]
        err = np.vstack([sub["mean"] - sub.ci_low, sub.ci_high - sub["mean"]])
        ax.bar(range(len(policies)), sub["mean"], yerr=err, capsize=3, color="tab:blue", alpha=0.8)
        ax.set_xticks(range(len(policies)), policies, rotation=30, ha="right", fontsize=8)
        ax.set_title(key.removeprefix("kpi/"), fontsize=9)
        ax.axhline(0, color="black", lw=0.5)
    for ax in axes.ravel()[len(keys):]:
        ax.axis("off")
    fig.suptitle(title or "KPIs per customer (bars: bootstrap CI)", fontsize=10)
    fig.tight_layout()
    return fig


def cumulative_profit(weekly: pd.DataFrame, *, title: str = "") -> Any:
    """Cumulative profit per customer over weeks, per policy (mean over populations)."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for policy, sub in weekly.groupby("policy", sort=False):
        curve = sub.groupby("week")["profit_per_customer"].mean().sort_index().cumsum()
        ax.plot(curve.index, curve.to_numpy(), label=str(policy))
    ax.set_xlabel("week")
    ax.set_ylabel("cumulative profit per customer ($)")
    ax.set_title(title or "cumulative profit over the horizon")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def leaderboard_plot(board: pd.DataFrame, metric: str, *, diff_column: str | None = None,
                     title: str = "") -> Any:
    """Horizontal bars of ``metric`` per policy with CIs, and (if given) the paired differences."""
    panels = 2 if diff_column and diff_column in board else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 0.45 * len(board) + 1.5), squeeze=False)
    y = np.arange(len(board))[::-1]
    ax = axes[0, 0]
    ax.barh(y, board[metric], xerr=[board[metric] - board[f"{metric} ci_low"],
                                    board[f"{metric} ci_high"] - board[metric]], capsize=3, color="tab:blue")
    ax.set_yticks(y, board["policy"], fontsize=8)
    ax.set_title(metric, fontsize=9)
    if panels == 2:
        ax = axes[0, 1]
        d = board[diff_column].to_numpy(float)
        ok = ~np.isnan(d)
        lo, hi = board[f"{diff_column} ci_low"].to_numpy(float), board[f"{diff_column} ci_high"].to_numpy(float)
        ax.barh(y[ok], d[ok], xerr=[(d - lo)[ok], (hi - d)[ok]], capsize=3, color="tab:orange")
        ax.axvline(0, color="black", lw=0.6)
        ax.set_yticks(y, board["policy"], fontsize=8)
        ax.set_title(diff_column, fontsize=9)
    fig.suptitle(title or "leaderboard (bootstrap CIs)", fontsize=10)
    fig.tight_layout()
    return fig


def segment_contact_rates(table: pd.DataFrame, *, title: str = "") -> Any:
    """Contact rate (share of the segment's customer-weeks with a contact) per segment, a bar per
    policy: one panel for lifecycle stages, one for value deciles (``segments.segments_table``)."""
    kinds = [k for k in ("stage", "value_decile") if k in set(table.segment_kind)]
    policies = list(dict.fromkeys(table.policy))
    fig, axes = plt.subplots(1, len(kinds), figsize=(11, 3.8), squeeze=False,
                             gridspec_kw={"width_ratios": [0.8, 1.4][: len(kinds)]})
    width = 0.8 / max(len(policies), 1)
    for ax, kind in zip(axes.ravel(), kinds, strict=False):
        sub = table[table.segment_kind == kind]
        segments = list(dict.fromkeys(sub.segment))
        x = np.arange(len(segments))
        for i, policy in enumerate(policies):
            rates = sub[sub.policy == policy].set_index("segment").reindex(segments)["contact_rate"]
            ax.bar(x + (i - (len(policies) - 1) / 2) * width, rates.fillna(0).to_numpy(), width, label=str(policy))
        ax.set_xticks(x, [s.replace("_", " ") for s in segments], rotation=30 if kind == "stage" else 0,
                      ha="right" if kind == "stage" else "center", fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("contact rate (share of weeks contacted)", fontsize=8)
        ax.set_title("by lifecycle stage (at the decision)" if kind == "stage"
                     else "by value decile at the start (D1 lowest, D10 highest)", fontsize=9)
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(title or "what each policy does, per segment", fontsize=10)
    fig.tight_layout()
    return fig


def close(fig: Any) -> None:
    plt.close(fig)
