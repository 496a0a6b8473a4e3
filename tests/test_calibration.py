"""Calibration from a transaction log (customer-model.md §6) on the CDNOW sample.

One CLI run with K = 100 replicate cohorts (235,700 simulated customers) feeds most tests: Tier A
(the cohort and the maximum-likelihood fits are exact), every Tier-B and Tier-C check with its
§6 tolerance (recomputed here from the report's numbers, not read from its pass flags), the
written scenario, report and figure. Every bad-input case must exit with status 2, name the
problem and leave no output directory.

The CDNOW sample has 21 rows that repeat another row exactly (the same CD bought twice on a
day); the published fits count them as purchases, so the run keeps them (``--keep-duplicates``).
The cleaning rules themselves are tested in ``test_calibration_log.py``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import rapport.envs as envs
from rapport.envs.calibration import (
    _orders_in_time,
    _WeeklyPurchases,
    calibrated_scenario,
    fit_models,
    load_cohort,
    run_calibration,
    simulate_cohort,
)
from rapport.envs.scenario import get_scenario

ROOT = Path(__file__).resolve().parents[1]
CDNOW = ROOT / "tests" / "data" / "cdnow_sample.csv"
SCRIPT = ROOT / "scripts" / "calibrate.py"
CAL_END, HOLD_END = "1997-09-30", "1998-06-30"


def load_cli() -> ModuleType:
    """scripts/ is not a package: import the CLI module from its file."""
    spec = importlib.util.spec_from_file_location("calibrate_cli", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cli() -> ModuleType:
    return load_cli()


@pytest.fixture(scope="module")
def calibration_run(cli, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("calibration") / "cdnow"
    start = time.perf_counter()
    status = cli.main(["--transactions", str(CDNOW), "--calibration-end", CAL_END,
                       "--holdout-end", HOLD_END, "--out", str(out), "--seed", "0",
                       "--keep-duplicates"])
    return {"status": status, "out": out, "seconds": time.perf_counter() - start}


@pytest.fixture(scope="module")
def report(calibration_run) -> dict:
    return json.loads((calibration_run["out"] / "report.json").read_text())


def check(report: dict, name: str) -> dict:
    (found,) = [c for c in report["checks"] if c["name"] == name]
    return found


# --------------------------------------------------------------------------------------------
# The run and its outputs
# --------------------------------------------------------------------------------------------


def test_cli_writes_scenario_report_and_figure(calibration_run):
    out = calibration_run["out"]
    assert calibration_run["status"] == 0
    assert sorted(p.name for p in out.iterdir()) == ["fidelity.png", "report.json",
                                                     "scenario.json"]
    png = (out / "fidelity.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000


def test_full_size_run_takes_seconds(calibration_run, report):
    # K = 100 as in §6: the whole run (load, fit, 235,700 customers x 78 weeks through the env,
    # summaries, plots) took ~8 s on 2 cores; the bound only catches pathological slowdowns.
    assert report["replicates"] == 100
    assert report["n_simulated_customers"] == 235_700
    assert calibration_run["seconds"] < 45
    assert report["runtime_seconds"]["total"] <= calibration_run["seconds"]


def test_scenario_file_loads_into_the_env(calibration_run, report):
    path = calibration_run["out"] / "scenario.json"
    env = envs.PopulationEnv(num_envs=50, scenario=str(path), horizon=3, include_latent=False)
    env.reset(seed=1)
    env.step(np.zeros((50, 3), np.int64))
    scenario, retail = env.scenario, get_scenario("retail")
    fit = report["fit"]
    purchase = scenario.purchase
    assert (purchase.r, purchase.alpha, purchase.a, purchase.b) == tuple(
        fit["bgnbd"][k] for k in ("r", "alpha", "a", "b"))
    assert (purchase.p, purchase.q, purchase.gamma) == tuple(
        fit["gamma_gamma"][k] for k in ("p", "q", "gamma"))
    assert scenario.name == "calibrated"
    for needle in ("cdnow_sample.csv", CAL_END, HOLD_END):
        assert needle in scenario.description
    # Only the purchase process is calibrated; the rest is the retail preset.
    assert purchase.gross_margin == retail.purchase.gross_margin
    assert (scenario.channels, scenario.offers, scenario.media) == (
        retail.channels, retail.offers, retail.media)
    assert scenario.initial_tenure_weeks == retail.initial_tenure_weeks


def test_report_lists_every_check_with_tolerance_and_verdict(report):
    names = [c["name"] for c in report["checks"]]
    assert names == [
        "mean_x_cal", "share_x_cal_zero", "hist_x_cal_max_bin_diff", "hist_x_cal_chi2_p",
        "var_x_cal", "mean_t_x_repeaters", "mean_spend_repeaters", "median_spend_repeaters",
        "mean_x_hold", "share_x_hold_zero", "cond_exp_increasing", "cond_exp_bucket_0",
        "cond_exp_bucket_7plus", "cond_exp_weighted_mae", "cumulative_repeats_end",
        "corr_x_cal_x_hold",
    ]
    assert {c["tier"] for c in report["checks"][:8]} == {"B"}
    assert {c["tier"] for c in report["checks"][8:]} == {"C"}
    failed = [(c["name"], c["difference"], c["tolerance"]) for c in report["checks"]
              if not c["passed"]]
    assert failed == []
    assert report["passed"] is True
    assert report["fit"]["warnings"] == []
    weeks = len(report["real"]["cumulative_repeats"])
    assert weeks == len(report["simulated"]["cumulative_repeats"]) == 78
    assert report["calibration_end_week"] == pytest.approx(39.0)


def test_report_separates_in_sample_from_holdout(report):
    periods = report["checks_by_period"]
    assert list(periods) == ["in_sample", "holdout"]
    assert periods["in_sample"]["period"] == ["1997-01-01", CAL_END]
    assert periods["holdout"]["period"] == ["1997-10-01", HOLD_END]
    for period, tier in (("in_sample", "B"), ("holdout", "C")):
        mine = [c for c in report["checks"] if c["name"] in periods[period]["checks"]]
        assert {c["tier"] for c in mine} == {tier} and {c["period"] for c in mine} == {period}
        assert periods[period]["n_passed"] == sum(c["passed"] for c in mine) == len(mine)
    assert sum(len(p["checks"]) for p in periods.values()) == len(report["checks"])


def test_tracking_band_over_replicates(report):
    sim, real = report["simulated"], report["real"]
    band = sim["cumulative_repeats_band"]
    assert band["quantiles"] == [0.05, 0.95]
    mean = np.array(sim["cumulative_repeats"])
    lower, upper = np.array(band["lower"]), np.array(band["upper"])
    assert lower.shape == upper.shape == mean.shape == (78,)
    assert np.all(np.array(band["min"]) <= lower) and np.all(upper <= np.array(band["max"]))
    assert np.all(lower <= mean) and np.all(mean <= upper)
    # Each replicate is one cohort the size of the real one: the band has the width of a
    # cohort's sampling spread, not of the mean's (which is ~10x narrower with K = 100).
    assert upper[-1] - lower[-1] > 0.05 * mean[-1]
    # The real calibration-period total (week 39, in-sample) lies inside the band.
    assert lower[38] <= real["cumulative_repeats"][38] <= upper[38]
    assert report["cleaning"]["warnings"] == []
    assert report["cleaning"]["duplicate_rows_dropped"] == 0
    assert report["cleaning"]["keep_duplicates"] is True


# --------------------------------------------------------------------------------------------
# Tier A: exactness (deterministic)
# --------------------------------------------------------------------------------------------


def test_tier_a_cohort(report):
    real = report["real"]
    assert report["n_customers"] == real["n_customers"] == 2357
    assert real["repeat_transactions_cal"] == 2457
    assert real["hist_x_cal_counts"][0] == 1411
    assert real["repeat_transactions_hold"] == 1882
    assert real["cumulative_repeats_end"] == 4339
    assert real["n_repeaters"] == 946


def test_tier_a_bgnbd_fit(report):
    fit = report["fit"]["bgnbd"]
    assert fit["log_likelihood"] == pytest.approx(-9582.43, abs=0.05)
    for name, published in zip(("r", "alpha", "a", "b"), (0.2426, 4.4136, 0.7929, 2.4259),
                               strict=True):
        assert fit[name] == pytest.approx(published, rel=0.005), name


def test_tier_a_gamma_gamma_fit(report):
    fit = report["fit"]["gamma_gamma"]
    assert fit["n_customers"] == 946
    assert fit["log_likelihood"] == pytest.approx(-4055.92, abs=0.05)
    for name, published in zip(("p", "q", "gamma"), (6.25, 3.74, 15.44), strict=True):
        assert fit[name] == pytest.approx(published, rel=0.01), name


# --------------------------------------------------------------------------------------------
# Tier B: the calibration period (§6 tolerances)
# --------------------------------------------------------------------------------------------

TIER_B = [  # statistic, real value quoted in §4/§6, tolerance on |sim − real|
    ("mean_x_cal", 1.042, 0.10),
    ("share_x_cal_zero", 0.5986, 0.025),
    ("var_x_cal", 4.79, 1.5),
    ("mean_t_x_repeaters", 17.06, 1.1),
    ("mean_spend_repeaters", 35.08, 3.0),
    ("median_spend_repeaters", 27.50, 2.0),
]


@pytest.mark.parametrize(("name", "quoted", "tolerance"), TIER_B)
def test_tier_b(report, name, quoted, tolerance):
    real, sim = report["real"][name], report["simulated"][name]
    assert real == pytest.approx(quoted, abs=0.005)
    assert abs(sim - real) <= tolerance, f"{name}: real {real:.4f}, simulated {sim:.4f}"
    assert check(report, name)["passed"]


def test_tier_b_histogram(report):
    real, sim = report["real"], report["simulated"]
    counts = np.array(real["hist_x_cal_counts"])
    assert counts.tolist() == [1411, 439, 214, 100, 62, 38, 29, 64]
    shares = np.array(sim["hist_x_cal"])
    assert shares.sum() == pytest.approx(1.0)
    assert np.max(np.abs(shares - counts / counts.sum())) <= 0.015
    # χ² of the real counts against the simulated shares; df = 8 bins − 1 − 4 fitted parameters.
    expected = counts.sum() * shares
    p_value = stats.chi2.sf(np.sum((counts - expected) ** 2 / expected), 3)
    assert p_value > 0.01
    assert check(report, "hist_x_cal_chi2_p")["difference"] == pytest.approx(p_value)
    assert check(report, "hist_x_cal_max_bin_diff")["passed"]
    assert check(report, "hist_x_cal_chi2_p")["passed"]


# --------------------------------------------------------------------------------------------
# Tier C: the holdout, out of sample (tolerances include the known BG/NBD under-forecast)
# --------------------------------------------------------------------------------------------


def test_tier_c_holdout_level(report):
    real, sim = report["real"], report["simulated"]
    assert real["mean_x_hold"] == pytest.approx(0.798, abs=0.001)
    assert abs(sim["mean_x_hold"] / real["mean_x_hold"] - 1) <= 0.15
    assert real["share_x_hold_zero"] == pytest.approx(0.710, abs=0.001)
    assert abs(sim["share_x_hold_zero"] - real["share_x_hold_zero"]) <= 0.04
    assert real["cumulative_repeats_end"] == 4339
    # The simulated curve is per real cohort (divided by K), so comparable in level.
    assert abs(sim["cumulative_repeats_end"] / 4339 - 1) <= 0.08
    assert real["corr_x_cal_x_hold"] == pytest.approx(0.577, abs=0.001)
    assert abs(sim["corr_x_cal_x_hold"] - real["corr_x_cal_x_hold"]) <= 0.08
    for name in ("mean_x_hold", "share_x_hold_zero", "cumulative_repeats_end",
                 "corr_x_cal_x_hold"):
        assert check(report, name)["passed"], name


def test_tier_c_conditional_expectations(report):
    real = np.array(report["real"]["cond_exp_x_hold"])
    sim = np.array(report["simulated"]["cond_exp_x_hold"])
    quoted = [0.237, 0.697, 1.393, 1.560, 2.532, 2.947, 3.862, 6.359]
    np.testing.assert_allclose(real, quoted, atol=0.0006)
    assert np.all(np.diff(sim) > 0), sim
    assert abs(sim[0] - real[0]) <= 0.05
    assert abs(sim[-1] - real[-1]) <= 1.5
    weights = np.array(report["real"]["hist_x_cal"])
    assert np.sum(weights * np.abs(sim - real)) <= 0.20
    for name in ("cond_exp_increasing", "cond_exp_bucket_0", "cond_exp_bucket_7plus",
                 "cond_exp_weighted_mae"):
        assert check(report, name)["passed"], name


# --------------------------------------------------------------------------------------------
# The simulated cohort itself
# --------------------------------------------------------------------------------------------


def test_simulated_customers_are_born_on_the_real_first_purchase_day():
    cohort = load_cohort(CDNOW, CAL_END, HOLD_END)
    bgnbd, gg, _ = fit_models(cohort.summary)
    log = simulate_cohort(calibrated_scenario(bgnbd, gg), cohort, replicates=2, seed=5)
    n = len(cohort.summary)
    first = log.groupby("customer_id")["date"].min()
    assert first.index.tolist() == list(range(2 * n))
    real_first = cohort.summary["first_purchase"].to_numpy()
    np.testing.assert_array_equal(first.to_numpy(), np.tile(real_first, 2))
    assert log["date"].max() <= pd.Timestamp(HOLD_END)
    assert (log["amount"] > 0).all()


def test_weekly_orders_expand_to_single_orders_consistently():
    weekly = _WeeklyPurchases(
        row=np.array([0, 1, 1]), week=np.array([3, 0, 7]), orders=np.array([1, 3, 2]),
        revenue=np.array([10.0, 90.0, 40.0]), last_time=np.array([0.5, 0.9, 0.2]),
    )
    row, tenure, value = _orders_in_time(weekly, 6.25, np.random.default_rng(0))
    assert row.tolist() == [0, 1, 1, 1, 1, 1]
    week = np.floor(tenure).astype(int)
    assert week.tolist() == [3, 0, 0, 0, 7, 7]
    # Each week's last order keeps the env's time; the others fall before it.
    assert tenure[[0, 3, 5]] == pytest.approx([3.5, 0.9, 7.2])
    assert np.all(tenure[[1, 2]] < 0.9) and tenure[4] < 7.2
    # Values split the week's revenue exactly.
    assert value[0] == pytest.approx(10.0)
    assert value[1:4].sum() == pytest.approx(90.0) and value[4:].sum() == pytest.approx(40.0)
    assert np.all(value > 0)


def test_same_seed_same_report_and_name_option():
    kwargs = dict(replicates=2, seed=3, name="cdnow-small")
    first = run_calibration(CDNOW, CAL_END, HOLD_END, **kwargs)
    second = run_calibration(CDNOW, CAL_END, HOLD_END, **kwargs)
    assert first.scenario.name == "cdnow-small" == first.report["name"]
    assert first.report["simulated"] == second.report["simulated"]
    assert first.report["n_simulated_customers"] == 2 * 2357


# --------------------------------------------------------------------------------------------
# Bad input: exit status 2, a message naming the problem, nothing written
# --------------------------------------------------------------------------------------------

GOOD_LOG = "customer_id,date,amount\n1,1997-01-01,10\n1,1997-02-01,12\n2,1997-01-03,8\n"
BAD_INPUT = [  # id, log file text (None: the CDNOW sample), calibration end, holdout end, message
    ("missing-column", "customer_id,date\n1,1997-01-01\n", CAL_END, HOLD_END,
     "missing column(s) amount"),
    ("unparseable-date", GOOD_LOG + "2,1997-31-01,5\n", CAL_END, HOLD_END,
     "unparseable date '1997-31-01' in row 4"),
    ("nan-amount", GOOD_LOG + "2,1997-03-01,NaN\n", CAL_END, HOLD_END,
     "missing amount (empty, NA or NaN) in row 4"),
    ("infinite-amount", GOOD_LOG + "2,1997-03-01,inf\n", CAL_END, HOLD_END,
     "infinite amount inf in row 4"),
    ("unterminated-quote", GOOD_LOG + '"2,1997-03-01,5\n3,1997-03-02,6\n', CAL_END, HOLD_END,
     "cannot read"),
    ("empty-file", "", CAL_END, HOLD_END, "empty file"),
    ("header-only", "customer_id,date,amount\n", CAL_END, HOLD_END, "has no rows"),
    ("calibration-end-before-first-purchase", None, "1996-12-31", HOLD_END,
     "calibration_end 1996-12-31 is before the first purchase in the log (1997-01-01)"),
    ("holdout-end-before-calibration-end", None, CAL_END, "1997-06-30",
     "holdout end 1997-06-30 is before calibration end 1997-09-30"),
    ("calibration-end-not-a-date", None, "30/09/1997", HOLD_END,
     "calibration end '30/09/1997' is not a date"),
    ("no-repeat-purchases", "customer_id,date,amount\n1,1997-01-01,10\n2,1997-01-03,8\n",
     CAL_END, HOLD_END, "cannot fit BG/NBD"),
]


def make_log(tmp_path: Path, text: str | None) -> Path:
    if text is None:
        return CDNOW
    path = tmp_path / "log.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("log_text", "cal_end", "hold_end", "message"),
                         [case[1:] for case in BAD_INPUT], ids=[case[0] for case in BAD_INPUT])
def test_bad_input_exits_2_and_writes_nothing(cli, tmp_path, capsys, log_text, cal_end,
                                              hold_end, message):
    out = tmp_path / "out"
    status = cli.main(["--transactions", str(make_log(tmp_path, log_text)),
                       "--calibration-end", cal_end, "--holdout-end", hold_end,
                       "--out", str(out), "--replicates", "2"])
    err = capsys.readouterr().err
    assert status == 2
    assert message in err
    assert not out.exists()


def test_bad_replicates_exits_2(cli, tmp_path, capsys):
    out = tmp_path / "out"
    status = cli.main(["--transactions", str(CDNOW), "--calibration-end", CAL_END,
                       "--holdout-end", HOLD_END, "--out", str(out), "--replicates", "0"])
    assert status == 2
    assert "replicates must be an integer >= 1" in capsys.readouterr().err
    assert not out.exists()


def test_script_process_exits_2_on_bad_input(tmp_path):
    out = tmp_path / "out"
    log = make_log(tmp_path, GOOD_LOG + '"2,1997-03-01,5\n3,1997-03-02,6\n')
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--transactions", str(log), "--calibration-end", CAL_END,
         "--holdout-end", HOLD_END, "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "cannot read" in proc.stderr and str(log) in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()
