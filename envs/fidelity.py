"""Fidelity of a calibrated simulator: the customer-model.md §6 statistics, checks and plots.

The checks come in two periods, kept apart in the report:

* **in-sample** (Tier B): the calibration period, the data the models were fitted on — a
  passing check says the fit reproduces what it was fitted to;
* **holdout** (Tier C): the period after the calibration end, out of sample. Its tolerances
  (customer-model.md §6) were widened to include the known BG/NBD under-forecast of CDNOW's
  holdout, so on CDNOW a pass is a regression guard, not a validation; the validation with
  tolerances from the model's own sampling spread is :mod:`rapport.envs.holdout_validation`.

The tracking plot draws the real cumulative repeat transactions per week against the mean of
the K simulated replicate cohorts with a 5-95 % band over the replicates (each replicate is a
cohort the size of the real one, so the band is the spread a real cohort of that size would
show if the simulator were the truth).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "BAND_QUANTILES",
    "CHECK_TOLERANCES",
    "HISTOGRAM_DF",
    "N_BUCKETS",
    "PERIODS",
    "Check",
    "checks_by_period",
    "cohort_statistics",
    "fidelity_checks",
    "render_fidelity_png",
    "tracking_band",
]

N_BUCKETS = 8
"""Repeat-count buckets 0, 1, ..., 6 and 7+ (histograms and conditional expectations)."""
HISTOGRAM_DF = N_BUCKETS - 1 - 4
"""χ² degrees of freedom of the histogram check: 8 bins − 1 − the 4 BG/NBD parameters that were
fitted on the same data (§6: "χ² (df 3)")."""
BAND_QUANTILES = (0.05, 0.95)
"""Quantiles over the simulation replicates drawn as the band of the tracking plot."""
PERIODS = {"B": "in_sample", "C": "holdout"}
"""Check tier -> the period it is about (Tier B: calibration period; Tier C: holdout)."""


def _bucket(x: np.ndarray) -> np.ndarray:
    return np.minimum(x, N_BUCKETS - 1).astype(np.int64)


def cohort_statistics(summary: pd.DataFrame, cumulative_repeats: np.ndarray,
                      scale: float = 1.0) -> dict[str, Any]:
    """The §6 statistics of one cohort, real or simulated.

    Parameters
    ----------
    summary : pandas.DataFrame
        :func:`rapport.envs.transactions.summarise` output.
    cumulative_repeats : numpy.ndarray, shape (weeks,)
        :func:`rapport.envs.transactions.weekly_repeat_curve` of the cohort.
    scale : float
        Factor applied to the curve (1 / replicates for a simulation, so that it is per real
        cohort).

    Returns
    -------
    dict
        JSON-ready numbers and lists; histograms and conditional expectations have 8 entries
        (0, ..., 6, 7+), conditional expectations are None for an empty bucket.
    """
    x = summary["x"].to_numpy()
    x_hold = summary["x_holdout"].to_numpy()
    repeaters = x > 0
    spend = summary["monetary_value"].to_numpy()[repeaters]
    bucket = _bucket(x)
    counts = np.bincount(bucket, minlength=N_BUCKETS)
    hold_sums = np.bincount(bucket, weights=x_hold, minlength=N_BUCKETS)
    with np.errstate(invalid="ignore", divide="ignore"):
        cond_exp = hold_sums / counts
    curve = np.asarray(cumulative_repeats, dtype=np.float64) * scale
    corr = np.corrcoef(x, x_hold)[0, 1] if x.std() > 0 and x_hold.std() > 0 else math.nan
    return {
        "n_customers": int(x.size),
        "repeat_transactions_cal": int(x.sum()),
        "mean_x_cal": float(x.mean()),
        "share_x_cal_zero": float(np.mean(x == 0)),
        "hist_x_cal_counts": counts.tolist(),
        "hist_x_cal": (counts / x.size).tolist(),
        "var_x_cal": float(x.var()),  # population variance (ddof 0), as quoted in §4
        "n_repeaters": int(repeaters.sum()),
        "mean_t_x_repeaters": _mean(summary["t_x"].to_numpy()[repeaters]),
        "mean_spend_repeaters": _mean(spend),
        "median_spend_repeaters": float(np.median(spend)) if spend.size else math.nan,
        "repeat_transactions_hold": int(x_hold.sum()),
        "mean_x_hold": float(x_hold.mean()),
        "share_x_hold_zero": float(np.mean(x_hold == 0)),
        "hist_x_hold": (np.bincount(_bucket(x_hold), minlength=N_BUCKETS) / x.size).tolist(),
        "cond_exp_x_hold": [None if math.isnan(v) else float(v) for v in cond_exp],
        "corr_x_cal_x_hold": float(corr),
        "cumulative_repeats": curve.tolist(),
        "cumulative_repeats_end": float(curve[-1]),
    }


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


@dataclass(frozen=True)
class Check:
    """One real-vs-simulated comparison with its §6 tolerance."""

    name: str
    tier: str  # "B" calibration period, "C" holdout (out of sample)
    real: Any
    simulated: Any
    difference: float  # the number the tolerance is applied to
    tolerance: str  # the rule, in words
    passed: bool

    @property
    def period(self) -> str:
        """``"in_sample"`` (Tier B, calibration period) or ``"holdout"`` (Tier C)."""
        return PERIODS[self.tier]

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"period": self.period}


def _abs_check(name: str, tier: str, tol: float) -> Callable[[dict, dict], Check]:
    def check(real: dict, sim: dict) -> Check:
        diff = sim[name] - real[name]
        return Check(name, tier, real[name], sim[name], diff, f"|sim - real| <= {tol}",
                     bool(abs(diff) <= tol))
    return check


def _rel_check(name: str, tier: str, tol: float) -> Callable[[dict, dict], Check]:
    def check(real: dict, sim: dict) -> Check:
        if real[name] == 0:
            rel = 0.0 if sim[name] == 0 else math.inf
        else:
            rel = sim[name] / real[name] - 1.0
        return Check(name, tier, real[name], sim[name], rel, f"|sim / real - 1| <= {tol:.0%}",
                     bool(abs(rel) <= tol))
    return check


def _histogram_checks(real: dict, sim: dict) -> list[Check]:
    r, s = np.array(real["hist_x_cal"]), np.array(sim["hist_x_cal"])
    max_diff = float(np.max(np.abs(s - r)))
    # Real counts against the simulated shares: with K replicates the simulation's own error
    # is ~1/K of the real sampling error, so it serves as the expected distribution.
    observed = np.array(real["hist_x_cal_counts"], dtype=np.float64)
    expected = observed.sum() * s
    if np.any((expected == 0) & (observed > 0)):
        chi2, p = math.inf, 0.0
    else:
        used = expected > 0
        chi2 = float(np.sum((observed[used] - expected[used]) ** 2 / expected[used]))
        p = float(stats.chi2.sf(chi2, HISTOGRAM_DF))
    return [
        Check("hist_x_cal_max_bin_diff", "B", r.tolist(), s.tolist(), max_diff,
              "max |sim - real| over bins 0..7+ <= 0.015", bool(max_diff <= 0.015)),
        Check("hist_x_cal_chi2_p", "B", real["hist_x_cal_counts"], s.tolist(), p,
              f"chi-square p > 0.01 (df {HISTOGRAM_DF}; chi2 = {chi2:.2f})", bool(p > 0.01)),
    ]


def _conditional_expectation_checks(real: dict, sim: dict) -> list[Check]:
    nan = math.nan
    r = np.array([nan if v is None else v for v in real["cond_exp_x_hold"]])
    s = np.array([nan if v is None else v for v in sim["cond_exp_x_hold"]])
    weight = np.array(real["hist_x_cal"])
    used = weight > 0
    # An empty simulated bucket where the real one has customers is a failure, not a skip.
    mae = float(np.sum(weight[used] * np.abs(s[used] - r[used])) / weight[used].sum())
    present = s[~np.isnan(s)]
    increasing = bool(present.size > 1 and np.all(np.diff(present) > 0))
    d0, d7 = s[0] - r[0], s[-1] - r[-1]
    lists = (real["cond_exp_x_hold"], sim["cond_exp_x_hold"])
    smallest_step = float(np.min(np.diff(present))) if present.size > 1 else nan
    return [
        Check("cond_exp_increasing", "C", *lists, smallest_step,
              "simulated E[x_hold | x_cal bucket] strictly increasing over buckets 0..7+ "
              "(difference = smallest step)", increasing),
        Check("cond_exp_bucket_0", "C", r[0], s[0], d0, "|sim - real| <= 0.05",
              bool(abs(d0) <= 0.05)),
        Check("cond_exp_bucket_7plus", "C", r[-1], s[-1], d7, "|sim - real| <= 1.5",
              bool(abs(d7) <= 1.5)),
        Check("cond_exp_weighted_mae", "C", *lists, mae,
              "mean |sim - real| weighted by the real bucket shares <= 0.20", bool(mae <= 0.20)),
    ]


CHECK_TOLERANCES: tuple[Callable[[dict, dict], Check | list[Check]], ...] = (
    _abs_check("mean_x_cal", "B", 0.10),
    _abs_check("share_x_cal_zero", "B", 0.025),
    _histogram_checks,
    _abs_check("var_x_cal", "B", 1.5),
    _abs_check("mean_t_x_repeaters", "B", 1.1),
    _abs_check("mean_spend_repeaters", "B", 3.0),
    _abs_check("median_spend_repeaters", "B", 2.0),
    _rel_check("mean_x_hold", "C", 0.15),
    _abs_check("share_x_hold_zero", "C", 0.04),
    _conditional_expectation_checks,
    _rel_check("cumulative_repeats_end", "C", 0.08),
    _abs_check("corr_x_cal_x_hold", "C", 0.08),
)
"""The Tier-B and Tier-C checks of customer-model.md §6, each with its tolerance. The absolute
tolerances are about 2-3 bootstrap SEs of the CDNOW sample (2,357 customers); for a much smaller
or larger log they are looser or tighter than that."""


def fidelity_checks(real: dict[str, Any], simulated: dict[str, Any]) -> list[Check]:
    """Apply every check of :data:`CHECK_TOLERANCES` to two :func:`cohort_statistics` dicts."""
    out: list[Check] = []
    for rule in CHECK_TOLERANCES:
        result = rule(real, simulated)
        out.extend(result if isinstance(result, list) else [result])
    return out


def checks_by_period(checks: list[Check], calibration: tuple[str, str],
                     holdout: tuple[str, str]) -> dict[str, dict[str, Any]]:
    """The checks split into the in-sample and the holdout period, for the report.

    Parameters
    ----------
    calibration, holdout : (str, str)
        First and last day (ISO) of each period.
    """
    out = {}
    for tier, period in PERIODS.items():
        mine = [c for c in checks if c.tier == tier]
        out[period] = {
            "tier": tier,
            "period": list(calibration if period == "in_sample" else holdout),
            "checks": [c.name for c in mine],
            "passed": all(c.passed for c in mine),
            "n_passed": sum(c.passed for c in mine),
        }
    return out


def tracking_band(curves: np.ndarray) -> dict[str, Any]:
    """Spread of the simulated tracking curves over the replicates.

    Parameters
    ----------
    curves : numpy.ndarray, shape (replicates, weeks)
        Cumulative repeat transactions per week of each replicate cohort.

    Returns
    -------
    dict
        ``quantiles`` (:data:`BAND_QUANTILES`), ``lower``/``upper`` (those quantiles per week)
        and ``min``/``max`` of the cumulative curve, and ``weekly_lower``/``weekly_upper`` of
        the weekly (incremental) counts.
    """
    curves = np.asarray(curves, dtype=np.float64)
    weekly = np.diff(curves, axis=1, prepend=0.0)
    lo, hi = BAND_QUANTILES
    return {
        "quantiles": list(BAND_QUANTILES),
        "lower": np.quantile(curves, lo, axis=0).tolist(),
        "upper": np.quantile(curves, hi, axis=0).tolist(),
        "min": curves.min(axis=0).tolist(),
        "max": curves.max(axis=0).tolist(),
        "weekly_lower": np.quantile(weekly, lo, axis=0).tolist(),
        "weekly_upper": np.quantile(weekly, hi, axis=0).tolist(),
    }


def render_fidelity_png(report: dict[str, Any]) -> bytes:
    """Fidelity plots of a calibration report, as PNG bytes (nothing is written).

    Panels: cumulative repeat transactions real vs simulated with the calibration end and the
    holdout marked (the classic tracking plot) and the simulated 5-95 % band over the
    replicates (:func:`tracking_band`, when the report has one), the same for weekly repeat
    transactions, the histogram of calibration repeat counts, and the conditional expectation
    of holdout purchases by calibration bucket.
    """
    # The object-oriented Agg API leaves pyplot's global backend and figure list alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    real, sim = report["real"], report["simulated"]
    fig = Figure(figsize=(12, 8.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots(2, 2)
    weeks = np.arange(1, len(real["cumulative_repeats"]) + 1)
    cal_week = report["calibration_end_week"]
    k = report["replicates"]
    band = sim.get("cumulative_repeats_band")
    for a, (key, title) in zip(ax[0], (("cum", "Cumulative repeat transactions"),
                                        ("inc", "Weekly repeat transactions")), strict=True):
        rc, sc = np.array(real["cumulative_repeats"]), np.array(sim["cumulative_repeats"])
        if key == "inc":
            rc, sc = np.diff(rc, prepend=0.0), np.diff(sc, prepend=0.0)
        if band is not None:
            lo, hi = (band["lower"], band["upper"]) if key == "cum" else (
                band["weekly_lower"], band["weekly_upper"])
            q_lo, q_hi = (round(100 * q) for q in band["quantiles"])
            a.fill_between(weeks, lo, hi, color="tab:red", alpha=0.2, linewidth=0,
                           label=f"simulated {q_lo}-{q_hi} % over {k} replicates")
        a.plot(weeks, rc, color="black", label="real")
        a.plot(weeks, sc, color="tab:red", linestyle="--", label=f"simulated (mean of {k})")
        a.axvline(cal_week, color="grey", linestyle=":", label="calibration end")
        a.axvspan(cal_week, weeks[-1], color="grey", alpha=0.06, label="holdout")
        a.set(title=title, xlabel="week since cohort start", ylabel="transactions")
        a.legend(loc="upper left" if key == "cum" else "upper right")
    buckets = np.arange(N_BUCKETS)
    labels = [str(b) for b in buckets[:-1]] + [f"{N_BUCKETS - 1}+"]
    ax[1, 0].bar(buckets - 0.2, real["hist_x_cal"], width=0.4, color="black", label="real")
    ax[1, 0].bar(buckets + 0.2, sim["hist_x_cal"], width=0.4, color="tab:red", label="simulated")
    ax[1, 0].set(title="Repeat transactions in calibration", xlabel="x", ylabel="share",
                 xticks=buckets, xticklabels=labels)
    ax[1, 0].legend()
    for stats_, style, label in ((real, dict(color="black", marker="o"), "real"),
                                 (sim, dict(color="tab:red", marker="s", linestyle="--"),
                                  "simulated")):
        ce = [np.nan if v is None else v for v in stats_["cond_exp_x_hold"]]
        ax[1, 1].plot(buckets, ce, label=label, **style)
    ax[1, 1].set(title="Holdout purchases given calibration purchases",
                 xlabel="x in calibration", ylabel="mean x in holdout",
                 xticks=buckets, xticklabels=labels)
    ax[1, 1].legend()
    passed = sum(c["passed"] for c in report["checks"])
    fig.suptitle(f"{report['name']}: {passed}/{len(report['checks'])} fidelity checks pass "
                 f"(fitted on {Path(report['transactions']).name})")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()

