"""Calibrate the simulator from a transaction log, then measure how well it reproduces the log.

The procedure follows ``shared/docs/customer-model.md`` §6:

1. Read a transaction log (one customer-day per transaction) and summarise each customer of the
   cohort (first purchase on or before the calibration end) as ``(x, t_x, T, x_holdout,
   monetary_value)``.
2. Fit BG/NBD and Gamma-Gamma by maximum likelihood (:mod:`envs.btyd`) and put the estimates
   into the retail preset: the *calibrated scenario*.
3. Simulate ``K`` replicate copies of the same cohort through :class:`envs.PopulationEnv` with
   marketing off. Every simulated customer starts as a fresh customer (tenure 0) and is born on
   the real first-purchase day of the customer it copies. Its purchases are turned back into a
   transaction log at day resolution and summarised by the *same* code as the real log, so real
   and simulated statistics are computed identically.
4. Compare real and simulated statistics with the §6 tolerances (Tier B: calibration period;
   Tier C: holdout, out of sample) and draw the fidelity plots.

Nothing here writes files except :func:`write_outputs`, so a caller can validate and compute
everything first and only then touch the disk.
"""

from __future__ import annotations

import io
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from envs.btyd import BGNBDFit, GammaGammaFit, fit_bgnbd, fit_gamma_gamma
from envs.population_env import PopulationEnv
from envs.scenario import Scenario, get_scenario
from envs.transactions import (
    TransactionLogError,
    load_transactions,
    summarise,
    weekly_repeat_curve,
)

__all__ = [
    "CHECK_TOLERANCES",
    "INPUT_ERRORS",
    "CalibrationError",
    "CalibrationResult",
    "Check",
    "Cohort",
    "calibrated_scenario",
    "cohort_statistics",
    "fidelity_checks",
    "fit_models",
    "load_cohort",
    "parse_day",
    "render_fidelity_png",
    "run_calibration",
    "simulate_cohort",
    "write_outputs",
]

N_BUCKETS = 8
"""Repeat-count buckets 0, 1, ..., 6 and 7+ (histograms and conditional expectations)."""
HISTOGRAM_DF = N_BUCKETS - 1 - 4
"""χ² degrees of freedom of the histogram check: 8 bins − 1 − the 4 BG/NBD parameters that were
fitted on the same data (§6: "χ² (df 3)")."""
MAX_SIMULATED_CUSTOMERS = 10_000_000
"""Replicates × customers above this would need several GB of state (~250 bytes per simulated
customer with observations): refuse with a message instead of running out of memory."""
_DAY = pd.Timedelta(days=1)


class CalibrationError(ValueError):
    """The calibration request cannot be carried out; the message says what is wrong."""


# --------------------------------------------------------------------------------------------
# Step 1: the real cohort
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cohort:
    """The customers of a transaction log that a calibration is about.

    Attributes
    ----------
    transactions : pandas.DataFrame
        Customer-days (``customer_id, date, amount``) of the cohort's customers only.
    summary : pandas.DataFrame
        :func:`envs.transactions.summarise` output, one row per customer.
    start : pandas.Timestamp
        Earliest first purchase (week 0 of the tracking plot).
    calibration_end, holdout_end : pandas.Timestamp
        Last day (inclusive) of the calibration and of the holdout period.
    source : str
        Where the log came from (for the scenario description and the report).
    """

    transactions: pd.DataFrame
    summary: pd.DataFrame
    start: pd.Timestamp
    calibration_end: pd.Timestamp
    holdout_end: pd.Timestamp
    source: str

    @property
    def weeks(self) -> int:
        """Weeks of the tracking plot, start to holdout end (the last one may be partial)."""
        return int((self.holdout_end - self.start) // pd.Timedelta(weeks=1)) + 1


def parse_day(name: str, value: str | pd.Timestamp) -> pd.Timestamp:
    """Parse an ISO 8601 date given on the command line, as a day (midnight).

    Parameters
    ----------
    name : str
        What the date is, for the error message (e.g. ``"calibration end"``).
    value : str or pandas.Timestamp
        The date.

    Raises
    ------
    CalibrationError
        If ``value`` is not an ISO 8601 date.
    """
    try:
        # ISO 8601 only, as for the log itself: guessing day-first vs month-first corrupts T.
        day = pd.to_datetime(value, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise CalibrationError(
            f"{name} {value!r} is not a date; expected ISO 8601 such as 1997-09-30"
        ) from exc
    if pd.isna(day):
        raise CalibrationError(f"{name} is missing; expected ISO 8601 such as 1997-09-30")
    return day.tz_localize(None).normalize() if day.tzinfo else day.normalize()


def load_cohort(
    path: str | Path, calibration_end: str | pd.Timestamp, holdout_end: str | pd.Timestamp
) -> Cohort:
    """Read and validate a transaction log and summarise its calibration cohort.

    Parameters
    ----------
    path : str or Path
        CSV or Parquet log with ``customer_id, date, amount`` (see
        :func:`envs.transactions.load_transactions`).
    calibration_end, holdout_end : str or pandas.Timestamp
        ISO 8601 days; both inclusive, ``holdout_end >= calibration_end``.

    Returns
    -------
    Cohort

    Raises
    ------
    CalibrationError, envs.transactions.TransactionLogError
        On bad dates or a bad log; the message names the problem.
    """
    cal_end = parse_day("calibration end", calibration_end)
    hold_end = parse_day("holdout end", holdout_end)
    if hold_end < cal_end:
        raise CalibrationError(
            f"holdout end {hold_end.date()} is before calibration end {cal_end.date()}; "
            "the holdout period follows the calibration period"
        )
    log = load_transactions(path)
    summary = summarise(log, cal_end, hold_end)
    # Customers who arrive after the calibration end are not in the cohort the model describes.
    cohort_log = log[log["customer_id"].isin(summary.index)].reset_index(drop=True)
    start = summary["first_purchase"].min()
    return Cohort(cohort_log, summary, start, cal_end, hold_end, str(path))


# --------------------------------------------------------------------------------------------
# Step 2: fits and the calibrated scenario
# --------------------------------------------------------------------------------------------


def fit_models(summary: pd.DataFrame) -> tuple[BGNBDFit, GammaGammaFit, list[str]]:
    """Fit BG/NBD on ``(x, t_x, T)`` and Gamma-Gamma on the calibration repeaters.

    Returns
    -------
    (BGNBDFit, GammaGammaFit, list of str)
        The two fits and any warnings they raised (e.g. non-convergence), for the report.

    Raises
    ------
    CalibrationError
        If a model cannot be fitted (e.g. nobody made a repeat purchase).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            bgnbd = fit_bgnbd(summary["x"], summary["t_x"], summary["T"])
        except ValueError as exc:
            raise CalibrationError(f"cannot fit BG/NBD to the calibration period: {exc}") from exc
        try:
            gg = fit_gamma_gamma(summary["x"], summary["monetary_value"])
        except ValueError as exc:
            raise CalibrationError(f"cannot fit Gamma-Gamma to the repeat spend: {exc}") from exc
    return bgnbd, gg, [str(w.message) for w in caught]


def calibrated_scenario(
    bgnbd: BGNBDFit, gg: GammaGammaFit, name: str = "calibrated", description: str = ""
) -> Scenario:
    """The retail preset with the fitted purchase and spend parameters.

    Only the BG/NBD and Gamma-Gamma parameters change; marketing response, offers, media and
    the initial tenure stay the preset's, because the log carries no marketing information
    (customer-model.md §7).

    Raises
    ------
    CalibrationError
        If the estimates are outside what the simulator accepts (e.g. ``q <= 1``: infinite mean
        spend).
    """
    retail = get_scenario("retail")
    try:
        purchase = replace(
            retail.purchase, r=bgnbd.r, alpha=bgnbd.alpha, a=bgnbd.a, b=bgnbd.b,
            p=gg.p, q=gg.q, gamma=gg.gamma,
        )
        return replace(retail, name=name, description=description, purchase=purchase)
    except ValueError as exc:
        raise CalibrationError(f"the fitted parameters cannot drive the simulator: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Step 3: simulate the cohort through the env
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _WeeklyPurchases:
    """Every (simulated customer, week) with an order, as flat arrays of equal length."""

    row: np.ndarray  # int64 — simulated customer (env row)
    week: np.ndarray  # int64 — tenure week of the purchases (0 = the week after the first purchase)
    orders: np.ndarray  # int64 — orders that week, >= 1
    revenue: np.ndarray  # float64 — their total value, $
    last_time: np.ndarray  # float64 — within-week time of the last order, in (0, 1]


def _run_env(scenario: Scenario, n: int, weeks: int, seed: int) -> tuple[np.ndarray, _WeeklyPurchases]:
    """Step ``n`` fresh customers ``weeks`` weeks with marketing off; return first-purchase
    values and every week's orders."""
    fresh = replace(scenario, initial_tenure_weeks=(0.0, 0.0))
    env = PopulationEnv(num_envs=n, scenario=fresh, horizon=weeks, include_latent=False)
    env.reset(seed=seed)
    state = env.sim.state
    # At tenure 0 nobody has repeated yet, so the whole spend so far is the first purchase.
    first_value = state.spend_total.astype(np.float64)
    no_marketing = np.zeros((n, 3), np.int64)
    parts: list[tuple[np.ndarray, ...]] = []
    for week in range(weeks):
        _, _, _, _, info = env.step(no_marketing)
        buyers = np.flatnonzero(info["orders"])
        # The step sets t_x = (tenure at the start of the week) + time of the week's last order.
        last = np.clip(state.t_x[buyers].astype(np.float64) - week, 1e-9, 1.0)
        parts.append((buyers, np.full(buyers.size, week), info["orders"][buyers],
                      info["revenue"][buyers], last))
    row, week, orders, revenue, last = (np.concatenate(p) for p in zip(*parts, strict=True))
    return first_value, _WeeklyPurchases(
        row.astype(np.int64), week.astype(np.int64), orders.astype(np.int64),
        revenue.astype(np.float64), last,
    )


def _orders_in_time(
    weekly: _WeeklyPurchases, spend_shape: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expand weekly totals into single orders: (row, tenure in weeks, value).

    The env reports each week's order count, total value and the time of the last order. Given
    those, the other orders of the week are uniform before the last one (Poisson arrivals), and
    the values split as total × Dirichlet(p, ..., p) (the orders are i.i.d. Gamma(p, ν)), so the
    expansion adds no modelling assumption. Only weeks with two or more orders are affected.
    """
    m = weekly.orders
    total = int(m.sum())
    first = np.cumsum(m) - m  # index of each week's first order in the expanded arrays
    position = np.arange(total) - np.repeat(first, m)
    is_last = position == np.repeat(m - 1, m)
    last_time = np.repeat(weekly.last_time, m)
    within = np.where(is_last, last_time, last_time * rng.random(total))
    share = rng.gamma(spend_shape, size=total)
    share /= np.repeat(np.add.reduceat(share, first), m)
    return (
        np.repeat(weekly.row, m),
        np.repeat(weekly.week, m) + within,
        np.repeat(weekly.revenue, m) * share,
    )


def simulate_cohort(
    scenario: Scenario, cohort: Cohort, replicates: int = 100, seed: int = 0
) -> pd.DataFrame:
    """Simulate ``replicates`` copies of the cohort with marketing off, as a transaction log.

    Parameters
    ----------
    scenario : Scenario
        The (calibrated) scenario; its initial tenure is replaced by 0 (a fresh cohort).
    cohort : Cohort
        The real cohort: its first-purchase days are reused by every replicate.
    replicates : int
        Number of copies K; the env holds K × n customers in one population.
    seed : int
        Master seed, split into the env's seed and the seed of the within-day/within-week draws.

    Returns
    -------
    pandas.DataFrame
        Customer-days ``customer_id`` (env row; replicate ``k`` of real customer ``i`` is row
        ``k n + i``), ``date``, ``amount``, up to the holdout end: each customer's first
        purchase on their real first day, then their simulated repeat purchases.

    Notes
    -----
    Customers are independent with marketing off and their noise is keyed by their index, so
    a customer born ``b`` days after the cohort start is simulated from week 0 and their
    history shifted by ``b`` days. The first purchase happens at a uniform time within its day;
    an order's day is ``birth day + floor(birth time + 7 × tenure)``. Orders on the same day as
    another order of the customer (the first purchase included) merge into one customer-day,
    as in the real log.
    """
    n = len(cohort.summary)
    env_seed, order_seed = np.random.SeedSequence(seed).spawn(2)
    birth_day = ((cohort.summary["first_purchase"] - cohort.start) / _DAY).to_numpy(np.int64)
    holdout_day = int((cohort.holdout_end - cohort.start) / _DAY)
    # Enough weeks that the earliest-born customer reaches the end of the holdout's last day.
    weeks = math.ceil((holdout_day - int(birth_day.min()) + 1) / 7)
    first_value, weekly = _run_env(
        scenario, replicates * n, weeks, int(env_seed.generate_state(1)[0])
    )

    rng = np.random.default_rng(order_seed)
    row, tenure, value = _orders_in_time(weekly, scenario.purchase.p, rng)
    births = np.tile(birth_day, replicates)
    birth_time = rng.random(births.size)
    day = births[row] + np.floor(birth_time[row] + 7.0 * tenure).astype(np.int64)
    keep = day <= holdout_day
    days = np.concatenate([births, day[keep]])
    return pd.DataFrame({
        "customer_id": np.concatenate([np.arange(births.size), row[keep]]),
        "date": cohort.start + pd.to_timedelta(days, unit="D"),
        "amount": np.concatenate([first_value, value[keep]]),
    })


# --------------------------------------------------------------------------------------------
# Step 4: statistics, checks, plots
# --------------------------------------------------------------------------------------------


def _bucket(x: np.ndarray) -> np.ndarray:
    return np.minimum(x, N_BUCKETS - 1).astype(np.int64)


def cohort_statistics(summary: pd.DataFrame, cumulative_repeats: np.ndarray,
                      scale: float = 1.0) -> dict[str, Any]:
    """The §6 statistics of one cohort, real or simulated.

    Parameters
    ----------
    summary : pandas.DataFrame
        :func:`envs.transactions.summarise` output.
    cumulative_repeats : numpy.ndarray, shape (weeks,)
        :func:`envs.transactions.weekly_repeat_curve` of the cohort.
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

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


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


def render_fidelity_png(report: dict[str, Any]) -> bytes:
    """Fidelity plots of a calibration report, as PNG bytes (nothing is written).

    Panels: cumulative repeat transactions real vs simulated with the calibration end marked
    (the classic tracking plot), weekly repeat transactions, the histogram of calibration
    repeat counts, and the conditional expectation of holdout purchases by calibration bucket.
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
    for a, (key, title) in zip(ax[0], (("cum", "Cumulative repeat transactions"),
                                        ("inc", "Weekly repeat transactions")), strict=True):
        rc, sc = np.array(real["cumulative_repeats"]), np.array(sim["cumulative_repeats"])
        if key == "inc":
            rc, sc = np.diff(rc, prepend=0.0), np.diff(sc, prepend=0.0)
        a.plot(weeks, rc, color="black", label="real")
        a.plot(weeks, sc, color="tab:red", linestyle="--", label=f"simulated (mean of {k})")
        a.axvline(cal_week, color="grey", linestyle=":", label="calibration end")
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


# --------------------------------------------------------------------------------------------
# The whole run
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationResult:
    """Everything a calibration run produces, in memory.

    Attributes
    ----------
    scenario : Scenario
        The calibrated scenario (retail preset + fitted parameters).
    report : dict
        JSON-ready report: fits, real and simulated statistics, checks, runtimes.
    figure_png : bytes
        The fidelity plots.
    """

    scenario: Scenario
    report: dict[str, Any]
    figure_png: bytes

    @property
    def passed(self) -> bool:
        return all(c["passed"] for c in self.report["checks"])


def _positive_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise CalibrationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def run_calibration(
    transactions: str | Path,
    calibration_end: str | pd.Timestamp,
    holdout_end: str | pd.Timestamp,
    replicates: int = 100,
    seed: int = 0,
    name: str | None = None,
) -> CalibrationResult:
    """Fit, simulate and compare (module docstring, steps 1-4) without writing anything.

    Parameters
    ----------
    transactions : str or Path
        CSV or Parquet log (``customer_id, date, amount``).
    calibration_end, holdout_end : str or pandas.Timestamp
        ISO 8601 days, both inclusive.
    replicates : int
        Simulated copies of the cohort (K); the comparison's Monte-Carlo error shrinks as 1/√K.
    seed : int
        Master seed (>= 0) of the simulation.
    name : str, optional
        Scenario name; default ``"calibrated"``.

    Returns
    -------
    CalibrationResult

    Raises
    ------
    CalibrationError, envs.transactions.TransactionLogError
        For any bad input; the message names the problem.
    """
    clock = {"start": time.perf_counter()}
    replicates = _positive_int("replicates", replicates, 1)
    seed = _positive_int("seed", seed, 0)
    cohort = load_cohort(transactions, calibration_end, holdout_end)
    n_sim = replicates * len(cohort.summary)
    if n_sim > MAX_SIMULATED_CUSTOMERS:
        raise CalibrationError(
            f"{replicates} replicates x {len(cohort.summary)} customers = {n_sim:,} simulated "
            f"customers exceeds {MAX_SIMULATED_CUSTOMERS:,}; lower --replicates"
        )
    clock["load"] = time.perf_counter()
    bgnbd, gg, fit_warnings = fit_models(cohort.summary)
    clock["fit"] = time.perf_counter()
    description = (
        f"Retail preset with BG/NBD and Gamma-Gamma parameters fitted by maximum likelihood on "
        f"{cohort.source} (cohort from {cohort.start.date()}, calibration to "
        f"{cohort.calibration_end.date()}, holdout to {cohort.holdout_end.date()})"
    )
    scenario = calibrated_scenario(bgnbd, gg, name or "calibrated", description)

    simulated_log = simulate_cohort(scenario, cohort, replicates, seed)
    clock["simulate"] = time.perf_counter()
    sim_summary = summarise(simulated_log, cohort.calibration_end, cohort.holdout_end)
    real = cohort_statistics(cohort.summary, weekly_repeat_curve(
        cohort.transactions, cohort.start, cohort.holdout_end))
    simulated = cohort_statistics(sim_summary, weekly_repeat_curve(
        simulated_log, cohort.start, cohort.holdout_end), scale=1.0 / replicates)
    checks = fidelity_checks(real, simulated)
    clock["compare"] = time.perf_counter()

    report = {
        "name": scenario.name,
        "transactions": cohort.source,
        "cohort_start": str(cohort.start.date()),
        "calibration_end": str(cohort.calibration_end.date()),
        "holdout_end": str(cohort.holdout_end.date()),
        "calibration_end_week": ((cohort.calibration_end - cohort.start) / _DAY + 1) / 7,
        "replicates": replicates,
        "seed": seed,
        "n_customers": len(cohort.summary),
        "n_simulated_customers": n_sim,
        "fit": {
            "bgnbd": {"r": bgnbd.r, "alpha": bgnbd.alpha, "a": bgnbd.a, "b": bgnbd.b,
                      "log_likelihood": bgnbd.log_likelihood, "n_customers": bgnbd.n_customers},
            "gamma_gamma": {"p": gg.p, "q": gg.q, "gamma": gg.gamma,
                            "log_likelihood": gg.log_likelihood, "n_customers": gg.n_customers},
            "warnings": fit_warnings,
        },
        "real": real,
        "simulated": simulated,
        "checks": [c.to_dict() for c in checks],
        "passed": all(c.passed for c in checks),
    }
    report = _json_ready(report)
    png = render_fidelity_png(report)
    clock["end"] = time.perf_counter()
    steps = list(clock)
    report["runtime_seconds"] = {
        later: round(clock[later] - clock[earlier], 3)
        for earlier, later in zip(steps, steps[1:], strict=False)
    } | {"total": round(clock["end"] - clock["start"], 3)}
    return CalibrationResult(scenario, report, png)


def _json_ready(value: Any) -> Any:
    """Plain Python types with NaN/inf as None, so the report is strict JSON."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer | int):
        return int(value)
    if isinstance(value, np.floating | float):
        return float(value) if math.isfinite(value) else None
    return value


def write_outputs(result: CalibrationResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``scenario.json``, ``report.json`` and ``fidelity.png`` into ``out_dir``.

    Returns
    -------
    dict of str to Path
        The three paths, keyed ``scenario``, ``report``, ``figure``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"scenario": out / "scenario.json", "report": out / "report.json",
             "figure": out / "fidelity.png"}
    result.scenario.save(paths["scenario"])
    paths["report"].write_text(json.dumps(result.report, indent=2, allow_nan=False) + "\n")
    paths["figure"].write_bytes(result.figure_png)
    return paths


# Re-exported so the CLI can catch every input error with one tuple.
INPUT_ERRORS: tuple[type[Exception], ...] = (CalibrationError, TransactionLogError)
