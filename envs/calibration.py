"""Calibrate the simulator from a transaction log, then measure how well it reproduces the log.

The procedure follows ``shared/docs/customer-model.md`` §6, one module per stage:

1. Read a transaction log chunk by chunk, clean it by documented rules (duplicates, returns,
   $0 orders: :mod:`rapport.envs.calibration_log`) and summarise each customer of the cohort (first
   purchase on or before the calibration end) as ``(x, t_x, T, x_holdout, monetary_value)``.
2. Fit BG/NBD on every cohort customer and Gamma-Gamma on the repeaters with a positive repeat
   spend (:mod:`rapport.envs.btyd`; customers whose repeat purchases were all $0 are excluded from the
   Gamma-Gamma fit only, and counted), and put the estimates into the retail preset: the
   *calibrated scenario* (this module).
3. Simulate ``K`` replicate copies of the cohort through :class:`envs.PopulationEnv` with
   marketing off (:mod:`rapport.envs.calibration_sim`); the simulated log is summarised by the same
   code as the real one.
4. Compare real and simulated statistics with the §6 tolerances, in-sample (Tier B:
   calibration period) apart from holdout (Tier C: out of sample), and draw the fidelity plots
   with the simulated tracking curve's band over the replicates (:mod:`rapport.envs.fidelity`).

Nothing here writes files except :func:`write_outputs`, which writes into a temporary folder
and renames it, so a caller validates and computes everything first and a failed run leaves no
output that looks complete.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rapport.envs.btyd import BGNBDFit, GammaGammaFit, fit_bgnbd, fit_gamma_gamma
from rapport.envs.calibration_log import CleaningReport, LogColumns, clean_log, read_log
from rapport.envs.calibration_sim import _orders_in_time, _WeeklyPurchases, simulate_cohort
from rapport.envs.customer_days import (
    CustomerDays,
    customer_days_from_frame,
    summarise_days,
    weekly_repeat_curves,
)
from rapport.envs.fidelity import (
    CHECK_TOLERANCES,
    Check,
    checks_by_period,
    cohort_statistics,
    fidelity_checks,
    render_fidelity_png,
    tracking_band,
)
from rapport.envs.scenario import Scenario, get_scenario
from rapport.envs.transactions import TransactionLogError

__all__ = [
    "CHECK_TOLERANCES",
    "INPUT_ERRORS",
    "CalibrationError",
    "CalibrationResult",
    "Check",
    "Cohort",
    "LogColumns",
    "calibrated_scenario",
    "cohort_statistics",
    "fidelity_checks",
    "fit_models",
    "gamma_gamma_eligible",
    "load_cohort",
    "parse_day",
    "render_fidelity_png",
    "run_calibration",
    "simulate_cohort",
    "write_outputs",
]

# Re-exported for callers and tests of the simulation step.
_SIMULATION_INTERNALS = (_orders_in_time, _WeeklyPurchases)

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
    days : CustomerDays
        The cohort's customer-days (cleaned, same-day rows merged), as arrays.
    summary : pandas.DataFrame
        One row per cohort customer (:func:`rapport.envs.calibration_log.summarise_days`).
    start : pandas.Timestamp
        Earliest first purchase (week 0 of the tracking plot).
    calibration_end, holdout_end : pandas.Timestamp
        Last day (inclusive) of the calibration and of the holdout period.
    source : str
        Where the log came from (for the scenario description and the report).
    cleaning : CleaningReport
        What the cleaning rules dropped or netted.
    """

    days: CustomerDays
    summary: pd.DataFrame
    start: pd.Timestamp
    calibration_end: pd.Timestamp
    holdout_end: pd.Timestamp
    source: str
    cleaning: CleaningReport

    @property
    def transactions(self) -> pd.DataFrame:
        """The cohort's customer-days as a ``customer_id, date, amount`` DataFrame."""
        return self.days.to_frame()

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
    path: str | Path,
    calibration_end: str | pd.Timestamp,
    holdout_end: str | pd.Timestamp,
    columns: LogColumns | None = None,
    keep_duplicates: bool = False,
) -> Cohort:
    """Read, validate and clean a transaction log and summarise its calibration cohort.

    Parameters
    ----------
    path : str or Path
        CSV or Parquet log (:func:`rapport.envs.calibration_log.read_log`).
    calibration_end, holdout_end : str or pandas.Timestamp
        ISO 8601 days; both inclusive, ``holdout_end >= calibration_end``.
    columns : LogColumns, optional
        Column names; default ``customer_id, date, amount`` and no order id.
    keep_duplicates : bool
        Keep exact duplicate rows instead of dropping them (cleaning rule 1).

    Returns
    -------
    Cohort

    Raises
    ------
    CalibrationError, rapport.envs.transactions.TransactionLogError
        On bad dates or a bad log; the message names the problem.
    """
    cal_end = parse_day("calibration end", calibration_end)
    hold_end = parse_day("holdout end", holdout_end)
    if hold_end < cal_end:
        raise CalibrationError(
            f"holdout end {hold_end.date()} is before calibration end {cal_end.date()}; "
            "the holdout period follows the calibration period"
        )
    days, cleaning = clean_log(read_log(path, columns), keep_duplicates=keep_duplicates)
    summary = summarise_days(days, cal_end, hold_end)
    # Customers who arrive after the calibration end are not in the cohort the model describes.
    in_cohort = np.zeros(days.ids.size, bool)
    in_cohort[days.ids.get_indexer(summary.index)] = True
    start = summary["first_purchase"].min()
    return Cohort(days.subset(in_cohort), summary, start, cal_end, hold_end, str(path),
                  cleaning)


# --------------------------------------------------------------------------------------------
# Step 2: fits and the calibrated scenario
# --------------------------------------------------------------------------------------------


def gamma_gamma_eligible(summary: pd.DataFrame) -> np.ndarray:
    """Customers the Gamma-Gamma fit uses: a repeat purchase and a positive mean repeat spend.

    A customer whose calibration repeat purchases were all $0 has ``monetary_value == 0``,
    which no Gamma spend can produce; they stay in the BG/NBD fit (they did purchase).
    """
    return (summary["x"].to_numpy() > 0) & (summary["monetary_value"].to_numpy() > 0)


def fit_models(summary: pd.DataFrame) -> tuple[BGNBDFit, GammaGammaFit, list[str]]:
    """Fit BG/NBD on ``(x, t_x, T)`` and Gamma-Gamma on the eligible repeaters.

    Returns
    -------
    (BGNBDFit, GammaGammaFit, list of str)
        The two fits and any warnings they raised (e.g. non-convergence), for the report.
        Customers excluded from Gamma-Gamma (:func:`gamma_gamma_eligible`) are not a warning
        here; :func:`run_calibration` counts them in the report's ``cleaning`` section.

    Raises
    ------
    CalibrationError
        If a model cannot be fitted (e.g. nobody made a repeat purchase).
    """
    eligible = gamma_gamma_eligible(summary)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            bgnbd = fit_bgnbd(summary["x"], summary["t_x"], summary["T"])
        except ValueError as exc:
            raise CalibrationError(f"cannot fit BG/NBD to the calibration period: {exc}") from exc
        if not eligible.any():
            raise CalibrationError(
                "cannot fit Gamma-Gamma to the repeat spend: no customer has a repeat purchase "
                "with a positive amount in the calibration period")
        try:
            gg = fit_gamma_gamma(np.where(eligible, summary["x"].to_numpy(), 0),
                                 summary["monetary_value"].to_numpy())
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
    columns: LogColumns | None = None,
    keep_duplicates: bool = False,
) -> CalibrationResult:
    """Fit, simulate and compare (module docstring, steps 1-4) without writing anything.

    Parameters
    ----------
    transactions : str or Path
        CSV or Parquet log (``customer_id, date, amount`` unless ``columns`` says otherwise).
    calibration_end, holdout_end : str or pandas.Timestamp
        ISO 8601 days, both inclusive.
    replicates : int
        Simulated copies of the cohort (K); the comparison's Monte-Carlo error shrinks as 1/√K.
    seed : int
        Master seed (>= 0) of the simulation.
    name : str, optional
        Scenario name; default ``"calibrated"``.
    columns : LogColumns, optional
        Column names of the log, including an optional order id (returns are netted against
        their order when it is given).
    keep_duplicates : bool
        Keep exact duplicate rows (default: drop them and count them in the report).

    Returns
    -------
    CalibrationResult

    Raises
    ------
    CalibrationError, rapport.envs.transactions.TransactionLogError
        For any bad input; the message names the problem.
    """
    clock = {"start": time.perf_counter()}
    replicates = _positive_int("replicates", replicates, 1)
    seed = _positive_int("seed", seed, 0)
    columns = columns or LogColumns()
    cohort = load_cohort(transactions, calibration_end, holdout_end, columns, keep_duplicates)
    n = len(cohort.summary)
    n_sim = replicates * n
    if n_sim > MAX_SIMULATED_CUSTOMERS:
        raise CalibrationError(
            f"{replicates} replicates x {n} customers = {n_sim:,} simulated customers exceeds "
            f"{MAX_SIMULATED_CUSTOMERS:,}; lower --replicates"
        )
    clock["load"] = time.perf_counter()
    bgnbd, gg, fit_warnings = fit_models(cohort.summary)
    cleaning = _cleaning_section(cohort)
    clock["fit"] = time.perf_counter()
    description = (
        f"Retail preset with BG/NBD and Gamma-Gamma parameters fitted by maximum likelihood on "
        f"{cohort.source} (cohort from {cohort.start.date()}, calibration to "
        f"{cohort.calibration_end.date()}, holdout to {cohort.holdout_end.date()})"
    )
    scenario = calibrated_scenario(bgnbd, gg, name or "calibrated", description)

    simulated_log = simulate_cohort(scenario, cohort, replicates, seed)
    clock["simulate"] = time.perf_counter()
    sim_days = customer_days_from_frame(simulated_log)
    del simulated_log
    sim_summary = summarise_days(sim_days, cohort.calibration_end, cohort.holdout_end)
    real = cohort_statistics(cohort.summary, weekly_repeat_curves(
        cohort.days, cohort.start, cohort.holdout_end)[0])
    # Simulated customer k n + i is replicate k of real customer i.
    curves = weekly_repeat_curves(sim_days, cohort.start, cohort.holdout_end,
                                  groups=sim_days.ids.to_numpy() // n, n_groups=replicates)
    simulated = cohort_statistics(sim_summary, curves.sum(axis=0), scale=1.0 / replicates)
    simulated["cumulative_repeats_band"] = tracking_band(curves)
    checks = fidelity_checks(real, simulated)
    clock["compare"] = time.perf_counter()

    calibration = (str(cohort.start.date()), str(cohort.calibration_end.date()))
    holdout = (str((cohort.calibration_end + _DAY).date()), str(cohort.holdout_end.date()))
    report = {
        "name": scenario.name,
        "transactions": cohort.source,
        "columns": {"customer_id": columns.customer_id, "date": columns.date,
                    "amount": columns.amount, "order_id": columns.order_id},
        "cohort_start": calibration[0],
        "calibration_end": calibration[1],
        "holdout_end": holdout[1],
        "calibration_end_week": ((cohort.calibration_end - cohort.start) / _DAY + 1) / 7,
        "replicates": replicates,
        "seed": seed,
        "n_customers": n,
        "n_simulated_customers": n_sim,
        "cleaning": cleaning,
        "fit": {
            "bgnbd": {"r": bgnbd.r, "alpha": bgnbd.alpha, "a": bgnbd.a, "b": bgnbd.b,
                      "log_likelihood": bgnbd.log_likelihood, "n_customers": bgnbd.n_customers},
            "gamma_gamma": {"p": gg.p, "q": gg.q, "gamma": gg.gamma,
                            "log_likelihood": gg.log_likelihood, "n_customers": gg.n_customers,
                            "excluded_customers": cleaning["gamma_gamma_excluded_customers"]},
            "warnings": fit_warnings,
        },
        "real": real,
        "simulated": simulated,
        "checks": [c.to_dict() for c in checks],
        "checks_by_period": checks_by_period(checks, calibration, holdout),
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


def _cleaning_section(cohort: Cohort) -> dict[str, Any]:
    """The cleaning counts plus the two cohort-level exclusions, with one warning line each."""
    section = cohort.cleaning.to_dict()
    summary = cohort.summary
    excluded_gg = int(((summary["x"].to_numpy() > 0) & ~gamma_gamma_eligible(summary)).sum())
    late = cohort.cleaning.customers - len(summary)
    section["customers_after_calibration_end"] = late
    section["gamma_gamma_excluded_customers"] = excluded_gg
    if late:
        section["warnings"].append(
            f"{late:,} customers left out of the cohort: first purchase after the calibration "
            f"end {cohort.calibration_end.date()}")
    if excluded_gg:
        section["warnings"].append(
            f"{excluded_gg:,} customers excluded from the Gamma-Gamma fit (kept in BG/NBD): "
            "no repeat purchase with a positive amount in the calibration period")
    return section


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

OUTPUT_FILES = {"scenario": "scenario.json", "figure": "fidelity.png", "report": "report.json"}
"""What :func:`write_outputs` writes, in this order (the report last: it marks a complete run)."""


def write_outputs(result: CalibrationResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``scenario.json``, ``fidelity.png`` and ``report.json`` into ``out_dir``.

    The files are written into a temporary folder beside ``out_dir`` first. A new ``out_dir``
    is then created by renaming that folder (atomic); into an existing one each file is moved
    with an atomic replace, the report last. A failure leaves no new ``out_dir`` and no
    half-written file.

    Returns
    -------
    dict of str to Path
        The three paths, keyed ``scenario``, ``report``, ``figure``.

    Raises
    ------
    OSError
        If the folder cannot be written.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        result.scenario.save(tmp / OUTPUT_FILES["scenario"])
        (tmp / OUTPUT_FILES["figure"]).write_bytes(result.figure_png)
        (tmp / OUTPUT_FILES["report"]).write_text(
            json.dumps(result.report, indent=2, allow_nan=False) + "\n")
        if out.exists():
            for file in OUTPUT_FILES.values():
                os.replace(tmp / file, out / file)
        else:
            os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {key: out / file for key, file in OUTPUT_FILES.items()}


# Re-exported so the CLI can catch every input error with one tuple.
INPUT_ERRORS: tuple[type[Exception], ...] = (CalibrationError, TransactionLogError)
