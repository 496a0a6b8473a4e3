"""Out-of-sample validation: does the simulator, calibrated on the first part of a log, track
the holdout part it never saw, within the spread a cohort of that size would show?

The calibration (:mod:`rapport.envs.calibration`) fits BG/NBD on ``(x, t_x, T)`` of the
calibration period only; nothing of the holdout period enters the fit. This module then asks a
*predictive* question of the holdout, with tolerances that come from the model itself rather
than from how far off it turned out to be:

1. Draw ``draws`` BG/NBD parameter vectors from the sampling distribution of the maximum-
   likelihood estimate (normal on the log scale, covariance = inverse observed information of
   the calibration-period likelihood), because the parameters were themselves estimated from a
   cohort of this size. ``parameter_uncertainty=False`` uses the point estimate for every draw
   (the spread is then cohort sampling alone, a narrower and stricter band).
2. For each draw simulate ``copies`` replicate cohorts through :class:`envs.PopulationEnv` with
   marketing off, each customer born on the real customer's first-purchase day
   (:func:`rapport.envs.calibration_sim.simulate_cohort`).
3. Summarise each replicate cohort by the same code as the real one and compare the real
   holdout statistics with their predictive distribution over the replicates:

   * ``holdout_repeats``: repeat transactions in the holdout period (the FHL 2005a forecast);
   * ``cumulative_repeats_end``: cumulative repeat transactions at the holdout end (the last
     point of the tracking plot; includes the calibration period, so only partly out of sample);
   * ``holdout_tracking_mape``: mean absolute percentage error of the cumulative holdout
     repeats, week by week, against the predictive mean — for the real cohort and, as the
     reference distribution, for each replicate against the mean of the other replicates;
   * ``cond_exp_bucket_k``: mean holdout repeats of the customers with k = 0, ..., 6, 7+
     calibration repeats (FHL 2005a, Figure 4).

A statistic passes when the real value lies inside the central ``1 − level`` predictive interval,
mean ± z_(1 − level/2) × SD over the replicates (normal approximation: the statistics are sums
or means over hundreds of customers, and the normal quantiles are stable where the empirical
99.7 % quantile of a few hundred replicates is not); ``level`` = 0.05 for the cohort-level
statistics, and the eight conditional expectations share 0.05 (0.05 / 8 each, Bonferroni). The
tracking MAPE is skewed, so it passes when the real MAPE is at most the replicates' empirical
95 % quantile. These levels were fixed before the data were looked at; they were not chosen to
make anything pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from rapport.envs.btyd import BGNBDFit, GammaGammaFit, bgnbd_log_likelihood
from rapport.envs.calibration import Cohort, calibrated_scenario
from rapport.envs.calibration_sim import simulate_cohort
from rapport.envs.customer_days import (
    customer_days_from_frame,
    summarise_days,
    weekly_repeat_curves,
)
from rapport.envs.fidelity import N_BUCKETS

__all__ = [
    "COHORT_LEVEL",
    "PredictiveCheck",
    "bgnbd_parameter_draws",
    "holdout_statistics",
    "holdout_validation",
]

COHORT_LEVEL = 0.05
"""Two-sided miss probability of each cohort-level check (holdout repeats, cumulative repeats at
the end, tracking MAPE); the eight conditional expectations share it (0.05 / 8 each)."""
_DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class PredictiveCheck:
    """The real value of one holdout statistic against its predictive distribution."""

    name: str
    real: float
    predicted_mean: float
    lower: float
    """Lower end of the predictive interval: mean − z_(1 − level/2)·SD (0 for the MAPE)."""
    upper: float
    """Upper end: mean + z_(1 − level/2)·SD; for the MAPE, the replicates' 1 − level quantile."""
    level: float
    """Two-sided miss probability the interval allows (one-sided for the MAPE)."""
    z: float
    """(real − predicted mean) / predictive SD."""
    share_below_real: float
    """Share of replicates strictly below the real value (0.5 = the real value is typical)."""
    relative_error: float
    """(predicted mean − real) / real."""
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {k: (float(v) if isinstance(v, float | np.floating) else v)
                for k, v in asdict(self).items()}


def bgnbd_parameter_draws(summary: pd.DataFrame, fit: BGNBDFit, draws: int,
                          rng: np.random.Generator) -> np.ndarray:
    """BG/NBD parameters drawn from the sampling distribution of the MLE, shape (draws, 4).

    Normal on the log scale around the estimate, with covariance the inverse of the observed
    information of the summed log-likelihood in log-parameters (central differences).
    """
    x, t_x, T = (summary[c].to_numpy(np.float64) for c in ("x", "t_x", "T"))
    theta = np.log(np.array(fit.params))

    def loglik(log_params: np.ndarray) -> float:
        return float(bgnbd_log_likelihood(tuple(np.exp(log_params)), x, t_x, T).sum())

    k, h = theta.size, 1e-4
    hessian = np.zeros((k, k))
    for i in range(k):
        for j in range(i, k):
            di, dj = np.eye(k)[i] * h, np.eye(k)[j] * h
            hessian[i, j] = hessian[j, i] = (
                loglik(theta + di + dj) - loglik(theta + di - dj)
                - loglik(theta - di + dj) + loglik(theta - di - dj)) / (4 * h * h)
    covariance = np.linalg.inv(-hessian)
    return np.exp(rng.multivariate_normal(theta, covariance, size=draws))


def holdout_statistics(summary: pd.DataFrame, curves: np.ndarray, cal_weeks: int,
                       groups: np.ndarray | None = None, n_groups: int = 1) -> dict[str, np.ndarray]:
    """Holdout statistics per group (replicate cohort; one group for the real cohort).

    Returns arrays with one row per group: ``holdout_repeats`` (n_groups,),
    ``cumulative_repeats_end`` (n_groups,), ``holdout_cumulative`` (n_groups, holdout weeks) —
    cumulative repeats since the calibration end, week by week — and ``cond_exp``
    (n_groups, 8; NaN for an empty bucket).
    """
    groups = np.zeros(len(summary), np.int64) if groups is None else groups
    x, x_hold = summary["x"].to_numpy(), summary["x_holdout"].to_numpy(np.float64)
    cell = groups * N_BUCKETS + np.minimum(x, N_BUCKETS - 1)
    counts = np.bincount(cell, minlength=n_groups * N_BUCKETS).reshape(n_groups, N_BUCKETS)
    sums = np.bincount(cell, weights=x_hold, minlength=n_groups * N_BUCKETS).reshape(
        n_groups, N_BUCKETS)
    with np.errstate(invalid="ignore", divide="ignore"):
        cond_exp = sums / counts
    curves = np.asarray(curves, np.float64)
    holdout_cumulative = curves[:, cal_weeks:] - curves[:, [cal_weeks - 1]]
    return {
        "holdout_repeats": np.bincount(groups, weights=x_hold, minlength=n_groups),
        "cumulative_repeats_end": curves[:, -1],
        "holdout_cumulative": holdout_cumulative,
        "cond_exp": cond_exp,
    }


def _mape(curve: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return np.mean(np.abs(reference - curve) / curve, axis=-1)


def _interval_check(name: str, real: float, replicates: np.ndarray, level: float) -> PredictiveCheck:
    replicates = replicates[np.isfinite(replicates)]
    mean, sd = float(replicates.mean()), float(replicates.std(ddof=1))
    half = float(stats.norm.ppf(1 - level / 2)) * sd
    z = (real - mean) / sd
    return PredictiveCheck(name, float(real), mean, mean - half, mean + half, level, float(z),
                           float(np.mean(replicates < real)), (mean - real) / real,
                           bool(abs(real - mean) <= half))


def holdout_validation(cohort: Cohort, bgnbd: BGNBDFit, gg: GammaGammaFit, draws: int = 100,
                       copies: int = 2, seed: int = 0,
                       parameter_uncertainty: bool = True) -> dict[str, Any]:
    """Predictive check of the real holdout against ``draws × copies`` simulated cohorts.

    Parameters
    ----------
    cohort : Cohort
        The real cohort (:func:`rapport.envs.calibration.load_cohort`).
    bgnbd, gg : BGNBDFit, GammaGammaFit
        The fits on its calibration period (:func:`rapport.envs.calibration.fit_models`).
    draws, copies : int
        Parameter draws, and replicate cohorts simulated with each.
    seed : int
        Master seed of the parameter draws and the simulations.
    parameter_uncertainty : bool
        Draw the parameters from the MLE's sampling distribution (True) or use the estimate
        for every draw (False: cohort sampling spread only).

    Returns
    -------
    dict
        ``checks`` (list of :meth:`PredictiveCheck.to_dict`), ``passed``, ``real`` and
        ``predicted`` holdout curves and conditional expectations, and the settings.
    """
    n = len(cohort.summary)
    cal_weeks = int(((cohort.calibration_end - cohort.start) / _DAY + 1) // 7)
    param_seed, *sim_seeds = np.random.SeedSequence(seed).spawn(1 + draws)
    if parameter_uncertainty:
        params = bgnbd_parameter_draws(cohort.summary, bgnbd, draws, np.random.default_rng(param_seed))
    else:
        params = np.tile(np.array(bgnbd.params), (draws, 1))
    parts: list[dict[str, np.ndarray]] = []
    for theta, sim_seed in zip(params, sim_seeds, strict=True):
        fit = replace(bgnbd, r=theta[0], alpha=theta[1], a=theta[2], b=theta[3])
        log = simulate_cohort(calibrated_scenario(fit, gg), cohort, copies,
                              int(sim_seed.generate_state(1)[0]))
        days = customer_days_from_frame(log)
        summary = summarise_days(days, cohort.calibration_end, cohort.holdout_end)
        group = summary.index.to_numpy(np.int64) // n
        curves = weekly_repeat_curves(days, cohort.start, cohort.holdout_end,
                                      groups=days.ids.to_numpy() // n, n_groups=copies)
        parts.append(holdout_statistics(summary, curves, cal_weeks, group, copies))
    sim = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    real_curve = weekly_repeat_curves(cohort.days, cohort.start, cohort.holdout_end)
    real = holdout_statistics(cohort.summary, real_curve, cal_weeks)

    checks = [
        _interval_check("holdout_repeats", real["holdout_repeats"][0], sim["holdout_repeats"],
                        COHORT_LEVEL),
        _interval_check("cumulative_repeats_end", real["cumulative_repeats_end"][0],
                        sim["cumulative_repeats_end"], COHORT_LEVEL),
    ]
    tracking = sim["holdout_cumulative"]
    mean_curve = tracking.mean(axis=0)
    real_mape = float(_mape(real["holdout_cumulative"][0], mean_curve))
    # Each replicate against the mean of the others: what a cohort drawn from the model scores.
    others = (tracking.sum(axis=0) - tracking) / (len(tracking) - 1)
    replicate_mape = _mape(tracking, others)
    limit = float(np.quantile(replicate_mape, 1 - COHORT_LEVEL))
    mape_z = (real_mape - replicate_mape.mean()) / replicate_mape.std(ddof=1)
    checks.append(PredictiveCheck(
        "holdout_tracking_mape", real_mape, float(replicate_mape.mean()), 0.0, limit,
        COHORT_LEVEL, float(mape_z), float(np.mean(replicate_mape < real_mape)),
        float(replicate_mape.mean() / real_mape - 1), real_mape <= limit))
    for k in range(N_BUCKETS):
        label = f"{k}" if k < N_BUCKETS - 1 else f"{k}plus"
        checks.append(_interval_check(f"cond_exp_bucket_{label}", real["cond_exp"][0, k],
                                      sim["cond_exp"][:, k], COHORT_LEVEL / N_BUCKETS))
    return {
        "n_customers": n,
        "replicates": int(len(tracking)),
        "draws": draws,
        "copies": copies,
        "seed": seed,
        "parameter_uncertainty": parameter_uncertainty,
        "calibration_weeks": cal_weeks,
        "checks": [c.to_dict() for c in checks],
        "passed": all(c.passed for c in checks),
        "real": {"holdout_cumulative": real["holdout_cumulative"][0].tolist(),
                 "cond_exp": real["cond_exp"][0].tolist()},
        "predicted": {"holdout_cumulative": mean_curve.tolist(),
                      "cond_exp": np.nanmean(sim["cond_exp"], axis=0).tolist()},
    }
