"""Validations: checks of the simulator against magnitudes no parameter was set from.

Unlike ``tests/test_calibration_targets.py`` (magnitudes the marketing parameters were chosen to
hit) and the in-sample Tier-B checks of ``tests/test_calibration.py``, nothing was tuned on
what is compared here, and the tolerances come from the model's own sampling spread, fixed
before the comparison was run (:mod:`rapport.envs.holdout_validation`). Negative results are
kept as ``xfail(strict=True)`` with the measured value: they are findings, and a strict xfail
fails loudly if a change ever makes them pass.

1. **Out-of-sample tracking of the CDNOW holdout.** BG/NBD and Gamma-Gamma are fitted on weeks
   1-39 of the classic 2,357-customer CDNOW sample (``tests/data/cdnow_sample.csv``; the
   Fader-Hardie-Lee split, calibration to 1997-09-30, holdout 1997-10-01 to 1998-06-30); the
   simulator then replays the cohort to week 78 and its holdout (repeat transactions, tracking
   curve, conditional expectations by number of calibration repeats) is compared with the real
   holdout, which no fit saw (``test_the_fit_never_sees_the_holdout``).
2. **Advertising carryover (Leone 1995).** The 90 % duration interval of advertising's effect on
   sales is 6-9 months in Leone's generalization (customer-model.md §2.9, §5). No parameter of
   the ``fame`` preset was set from it: its budget effects (``sales_effect`` 0.3,
   ``awareness_effect`` 0.6) were set from Sethuraman, Tellis & Briesch's (2011) short- and
   long-run elasticities 0.12 / 0.24 (envs/scenario.py), which fix the *size* of the fast and
   slow parts of the response, and the stocks that set its *timing* are defaults taken from
   ranges, not from a duration: ``adstock_decay`` 0.5 (Robyn's TV rule of thumb 0.3-0.8),
   ``awareness_forgetting`` 0.03 (the δ_A range 0.02-0.10), ``awareness_gain`` 0.1. No test
   checked the duration before this one (nothing in the repository cited Leone).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rapport.envs.calibration import fit_models, load_cohort
from rapport.envs.holdout_validation import holdout_validation
from rapport.envs.market import Market
from rapport.envs.scenario import get_scenario

CDNOW = Path(__file__).resolve().parent / "data" / "cdnow_sample.csv"
CAL_END, HOLD_END = "1997-09-30", "1998-06-30"


@pytest.fixture(scope="module")
def cdnow():
    cohort = load_cohort(CDNOW, CAL_END, HOLD_END, keep_duplicates=True)
    bgnbd, gg, _ = fit_models(cohort.summary)
    return cohort, bgnbd, gg


def by_name(result: dict) -> dict[str, dict]:
    return {c["name"]: c for c in result["checks"]}


def test_the_fit_never_sees_the_holdout(cdnow, tmp_path):
    """Out of sample means out of sample: deleting every holdout purchase from the log leaves
    the calibration-period summary and both fits bit for bit the same."""
    cohort, bgnbd, gg = cdnow
    log = cohort.transactions
    truncated = tmp_path / "calibration_only.csv"
    log[log["date"] <= CAL_END].to_csv(truncated, index=False)
    blind = load_cohort(truncated, CAL_END, HOLD_END, keep_duplicates=True)
    assert blind.summary["x_holdout"].sum() == 0 and cohort.summary["x_holdout"].sum() == 1882
    cols = ["x", "t_x", "T", "monetary_value"]
    assert blind.summary[cols].equals(cohort.summary[cols])
    bgnbd_blind, gg_blind, _ = fit_models(blind.summary)
    assert bgnbd_blind.params == bgnbd.params and gg_blind.params == gg.params


@pytest.fixture(scope="module")
def fixed_parameter_check(cdnow):
    """Cohort sampling spread alone: 100 replicate cohorts at the point estimate (~3 s)."""
    cohort, bgnbd, gg = cdnow
    return holdout_validation(cohort, bgnbd, gg, draws=1, copies=100, seed=0,
                              parameter_uncertainty=False)


@pytest.mark.xfail(strict=True, reason=(
    "negative result: at the point estimate the simulator forecasts 1,664 holdout repeat "
    "transactions (weeks 40-78) against CDNOW's 1,882 (-11.6 %), z = +2.15 at seed 0 (+2.2 to "
    "+2.5 over seeds 0-3 with 150-200 cohorts) against cohort sampling alone (limit 1.96); the "
    "customers with 1 and 2 calibration repeats make 0.697 / 1.393 holdout repeats against "
    "0.545 / 1.009 predicted (z = +2.7 to +3.6, limit 2.73). The known BG/NBD under-forecast "
    "of CDNOW's holdout (FHL 2005a) is larger than the sampling spread of a 2,357-customer "
    "cohort."))
def test_holdout_within_the_cohort_sampling_band(fixed_parameter_check):
    checks = by_name(fixed_parameter_check)
    assert fixed_parameter_check["replicates"] == 100
    failed = {name: round(c["z"], 2) for name, c in checks.items() if not c["passed"]}
    assert failed == {}


def test_cumulative_tracking_at_week_78_within_the_cohort_sampling_band(fixed_parameter_check):
    """The end of the tracking plot (week 78: calibration + holdout repeats, so only partly out
    of sample): 4,339 real against ~4,146 simulated (-4.5 %), inside the 95 % band of cohorts."""
    end = by_name(fixed_parameter_check)["cumulative_repeats_end"]
    assert end["real"] == 4339
    assert -0.08 < end["relative_error"] < 0
    assert end["passed"], end


@pytest.fixture(scope="module")
def full_predictive_check(cdnow):
    """Cohort sampling plus the estimation error of the parameters (they were fitted on a
    cohort of this size): 100 parameter draws x 2 cohorts (~15 s)."""
    cohort, bgnbd, gg = cdnow
    return holdout_validation(cohort, bgnbd, gg, draws=100, copies=2, seed=0)


@pytest.mark.slow
def test_holdout_tracking_within_the_predictive_band(full_predictive_check):
    """With the parameter-estimation error included (the proper predictive distribution), the
    holdout total (1,882 real vs ~1,646 predicted, z ≈ +1.2 to +1.6 over seeds 0-3), the end of
    the tracking curve and the week-by-week holdout tracking MAPE (real ~12 % vs replicates'
    ~8 %; z ≈ +0.5 to +1.0) are inside their 95 % predictive bands, and so are the conditional
    expectations of buckets 0 and 3-7+."""
    checks = by_name(full_predictive_check)
    assert full_predictive_check["replicates"] == 200
    for name in ("holdout_repeats", "cumulative_repeats_end", "holdout_tracking_mape",
                 "cond_exp_bucket_0", "cond_exp_bucket_3", "cond_exp_bucket_4",
                 "cond_exp_bucket_5", "cond_exp_bucket_6", "cond_exp_bucket_7plus"):
        assert checks[name]["passed"], (name, checks[name])


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "negative result: even with parameter-estimation error, customers with 1 and 2 calibration "
    "repeats make more holdout repeats than the simulator predicts: 0.697 vs 0.541 and 1.393 "
    "vs 1.008 (z = +2.74 and +2.78 at seed 0, Bonferroni limit 2.73; z = +2.5 to +2.7 and "
    "+2.6 to +3.2 over seeds 0-3). Real light repeaters are more persistent than BG/NBD "
    "implies (customer-model.md §2.10)."))
def test_light_repeaters_holdout_within_the_predictive_band(full_predictive_check):
    checks = by_name(full_predictive_check)
    assert checks["cond_exp_bucket_1"]["passed"] and checks["cond_exp_bucket_2"]["passed"]


def carryover_90_percent_weeks(scenario_name: str = "fame", lift: str = "customer_lift",
                               pulse: float = 2.0, weeks: int = 520) -> int:
    """Weeks until 90 % of the cumulative log-rate effect of a one-week budget pulse
    (``pulse`` × the reference budget, then back to it) has been realised.

    The mass-media terms are population-level and the same for every live customer, so the
    effect of the pulse on each customer's log purchase rate in week t is the difference of the
    two markets' ``customer_lift`` (``prospect_lift`` for prospects' first purchases), computed
    by the simulator's own :class:`rapport.envs.market.Market`. In a stationary base (Leone's
    Koyck setting) sales respond in proportion; a shrinking base (drop-out, prospects used up)
    would weight later weeks less and only shorten the duration.
    """
    scenario = get_scenario(scenario_name)
    reference = scenario.mass_media.reference_budget
    base, pulsed = Market(scenario), Market(scenario)
    effect = np.zeros(weeks)
    for week in range(weeks):
        pulsed.set_budget(pulse * reference if week == 0 else reference)
        effect[week] = getattr(pulsed.step(), lift) - getattr(base.step(), lift)
    share = np.cumsum(effect) / effect.sum()
    return int(np.argmax(share >= 0.9)) + 1


def test_carryover_measurement_is_stable():
    """The duration does not hinge on the pulse size (the response is near-linear), and the
    prospects' response, with more weight on awareness, lasts a little longer."""
    weeks = {p: carryover_90_percent_weeks(pulse=p) for p in (0.0, 1.1, 2.0)}
    assert len(set(weeks.values())) == 1, weeks
    assert carryover_90_percent_weeks(lift="prospect_lift") > weeks[2.0]


@pytest.mark.xfail(strict=True, reason=(
    "negative result: in the fame preset 90 % of a budget pulse's effect is realised within 22 "
    "weeks (5.1 months) for customers and 25 weeks (5.8 months) for prospects, shorter than "
    "Leone's (1995) 6-9 months (26-39 weeks): the awareness stock refills and forgets at "
    "~0.08 a week (forgetting 0.03 + gain 0.1 x Hill 0.5), a half-life of ~8.5 weeks."))
@pytest.mark.parametrize("lift", ["customer_lift", "prospect_lift"])
def test_advertising_carryover_matches_leone(lift):
    weeks = carryover_90_percent_weeks(lift=lift)
    assert 26 <= weeks <= 39, weeks
