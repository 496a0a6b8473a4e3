"""BG/NBD and Gamma-Gamma: CDNOW reproduction (customer-model.md §4, §6 step 2), closed forms,
simulation checks, parameter recovery and input validation."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from rapport.envs.btyd import (
    BGNBDFit,
    _bgnbd_objective,
    _gg_objective,
    bgnbd_conditional_expected,
    bgnbd_expected_purchases,
    bgnbd_log_likelihood,
    bgnbd_p_alive,
    bgnbd_prob_no_purchase,
    fit_bgnbd,
    fit_gamma_gamma,
    gamma_gamma_expected_spend,
)
from rapport.envs.transactions import load_transactions, summarise

CDNOW = Path(__file__).parent / "data" / "cdnow_sample.csv"
# Fader, Hardie & Lee (2005a) / lifetimes 0.11.3 MLE on the CDNOW sample.
CDNOW_BGNBD = (0.2426, 4.4136, 0.7929, 2.4259)
CDNOW_BGNBD_LL = -9582.43
# Fader & Hardie (2013) Gamma-Gamma note.
CDNOW_GG = (6.25, 3.74, 15.44)
CDNOW_GG_LL = -4055.92


@pytest.fixture(scope="module")
def cdnow():
    summary = summarise(load_transactions(CDNOW), "1997-09-30", "1998-06-30")
    return summary["x"].to_numpy(), summary["t_x"].to_numpy(), summary["T"].to_numpy(), summary


@pytest.fixture(scope="module")
def cdnow_bgnbd(cdnow) -> BGNBDFit:
    x, t_x, T, _ = cdnow
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a convergence warning on CDNOW is a failure
        return fit_bgnbd(x, t_x, T)


def simulate_bgnbd(rng: np.random.Generator, params, T: np.ndarray):
    """Draw (x, t_x) for customers observed for T each, using the whole-history sampler (§2.1)."""
    r, alpha, a, b = params
    lam = rng.gamma(r, 1.0 / alpha, T.size)
    p = rng.beta(a, b, T.size)
    n_events = rng.poisson(lam * T)
    x = np.minimum(n_events, rng.geometric(p))
    t_x = np.zeros(T.size)
    buy = x > 0
    # Given N Poisson arrivals on (0, T], the x-th one sits at T * Beta(x, N - x + 1).
    t_x[buy] = T[buy] * rng.beta(x[buy], n_events[buy] - x[buy] + 1)
    return x, t_x


# --------------------------------------------------------------------------------------------
# Tier A: CDNOW
# --------------------------------------------------------------------------------------------


def test_cdnow_bgnbd_fit_reproduces_published_estimates(cdnow_bgnbd):
    assert cdnow_bgnbd.n_customers == 2357
    assert cdnow_bgnbd.log_likelihood == pytest.approx(CDNOW_BGNBD_LL, abs=0.05)
    np.testing.assert_allclose(cdnow_bgnbd.params, CDNOW_BGNBD, rtol=0.005)


def test_cdnow_gamma_gamma_fit_reproduces_published_estimates(cdnow):
    summary = cdnow[3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_gamma_gamma(summary["x"], summary["monetary_value"])
    assert fit.n_customers == 946
    assert fit.log_likelihood == pytest.approx(CDNOW_GG_LL, abs=0.05)
    np.testing.assert_allclose(fit.params, CDNOW_GG, rtol=0.01)


def test_cdnow_holdout_forecast_and_p_alive_match_reference(cdnow, cdnow_bgnbd):
    # §4: sum of conditional E[Y(39)] = 1,653 and mean P(alive) = 0.813 at the MLE.
    x, t_x, T, _ = cdnow
    forecast = bgnbd_conditional_expected(cdnow_bgnbd, 39.0, x, t_x, T)
    assert forecast.sum() == pytest.approx(1653, abs=1.0)
    assert bgnbd_p_alive(cdnow_bgnbd, x, t_x, T).mean() == pytest.approx(0.813, abs=0.001)


# --------------------------------------------------------------------------------------------
# Closed forms and likelihood
# --------------------------------------------------------------------------------------------


def test_closed_forms_at_cdnow_parameters():
    assert bgnbd_expected_purchases(CDNOW_BGNBD, 39.0) == pytest.approx(1.1950, abs=5e-5)
    assert bgnbd_prob_no_purchase(CDNOW_BGNBD, 39.0) == pytest.approx(0.5743, abs=5e-5)
    np.testing.assert_array_equal(bgnbd_expected_purchases(CDNOW_BGNBD, [0.0]), [0.0])


def test_p_alive_is_one_without_repeat_purchases():
    p = bgnbd_p_alive(CDNOW_BGNBD, [0, 0, 0], [0.0, 0.0, 0.0], [1.0, 30.0, 1000.0])
    np.testing.assert_array_equal(p, 1.0)


def test_p_alive_falls_with_silence_and_stays_finite():
    t_x = np.array([30.0, 20.0, 5.0, 0.001])
    p = bgnbd_p_alive(CDNOW_BGNBD, 40, t_x, 30.0)
    assert np.all(np.diff(p) < 0)
    assert p[0] < 1.0 and p[-1] >= 0.0 and np.all(np.isfinite(p))


def test_conditional_expected_without_history_is_unconditional():
    t = np.array([1.0, 10.0, 39.0, 100.0])
    cond = bgnbd_conditional_expected(CDNOW_BGNBD, t, 0, 0.0, 0.0)
    np.testing.assert_allclose(cond, bgnbd_expected_purchases(CDNOW_BGNBD, t), rtol=1e-12)
    assert bgnbd_conditional_expected(CDNOW_BGNBD, 0.0, 3, 10.0, 20.0)[0] == 0.0


def _textbook_loglik(params, x, t_x, T) -> float:
    """FHL (2005a) eq. 6 evaluated literally with math.gamma; slow and only for moderate x."""
    r, alpha, a, b = params
    beta = lambda u, v: math.gamma(u) * math.gamma(v) / math.gamma(u + v)  # noqa: E731
    common = math.gamma(r + x) * alpha**r / math.gamma(r)
    lik = beta(a, b + x) / beta(a, b) * common / (alpha + T) ** (r + x)
    if x > 0:
        lik += beta(a + 1, b + x - 1) / beta(a, b) * common / (alpha + t_x) ** (r + x)
    return math.log(lik)


@pytest.mark.parametrize("params", [CDNOW_BGNBD, (1.7, 0.6, 3.2, 0.4)])
def test_log_likelihood_matches_textbook_formula(params):
    x = np.array([0, 1, 2, 7, 15, 29])
    t_x = np.array([0.0, 1.71, 30.43, 12.0, 37.5, 38.0])
    T = np.array([38.86, 38.86, 38.86, 27.0, 38.0, 38.0])
    fast = bgnbd_log_likelihood(params, x, t_x, T)
    slow = [_textbook_loglik(params, *row) for row in zip(x, t_x, T, strict=True)]
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    ("objective", "point", "data"),
    [
        (
            _bgnbd_objective,
            CDNOW_BGNBD,
            ([0, 1, 4, 20], [0.0, 3.0, 20.0, 35.0], [30.0, 33.0, 38.0, 38.0]),
        ),
        (_gg_objective, CDNOW_GG, ([1, 2, 5, 20], [10.0, 35.5, 80.0, 22.0])),
    ],
)
def test_analytic_gradient_matches_finite_differences(objective, point, data):
    arrays = [np.asarray(d, dtype=float) for d in data]
    log_point = np.log(point)
    steps = 1e-6 * np.eye(log_point.size)
    numeric = [
        (objective(log_point + h, *arrays)[0] - objective(log_point - h, *arrays)[0]) / 2e-6
        for h in steps
    ]
    np.testing.assert_allclose(objective(log_point, *arrays)[1], numeric, rtol=1e-5, atol=1e-7)


def test_expected_purchases_matches_simulation():
    # 200k customers; X(t) = min(N, J) with N ~ Poisson(lambda t) and J ~ Geometric(p).
    rng = np.random.default_rng(20250101)
    t, n = 39.0, 200_000
    x, _ = simulate_bgnbd(rng, CDNOW_BGNBD, np.full(n, t))
    se_mean = x.std(ddof=1) / math.sqrt(n)
    assert abs(x.mean() - bgnbd_expected_purchases(CDNOW_BGNBD, t)) < 4 * se_mean
    p0 = float(bgnbd_prob_no_purchase(CDNOW_BGNBD, t))
    assert abs(np.mean(x == 0) - p0) < 4 * math.sqrt(p0 * (1 - p0) / n)


def test_parameter_recovery_on_simulated_customers():
    rng = np.random.default_rng(7)
    # Observation windows of 0.5-1.5 years: long enough to separate drop-out from low rates.
    T = rng.uniform(26.0, 78.0, 50_000)
    x, t_x = simulate_bgnbd(rng, CDNOW_BGNBD, T)
    fit = fit_bgnbd(x, t_x, T)
    rel = np.array(fit.params) / np.array(CDNOW_BGNBD) - 1.0
    assert np.all(np.abs(rel[:2]) < 0.05), rel
    assert np.all(np.abs(rel[2:]) < 0.15), rel


def test_gamma_gamma_expected_spend_shrinks_towards_population_mean():
    p, q, g = CDNOW_GG
    population = p * g / (q - 1.0)
    spend = gamma_gamma_expected_spend(CDNOW_GG, [0, 1, 10_000], [0.0, 100.0, 100.0])
    assert spend[0] == pytest.approx(population)
    assert population < spend[1] < 100.0
    assert spend[2] == pytest.approx(100.0, rel=1e-3)


# --------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------

GOOD = ([0, 1, 2], [0.0, 1.0, 2.0], [3.0, 3.0, 3.0])


@pytest.mark.parametrize(
    ("x", "t_x", "T", "match"),
    [
        ([0, 1], [0.0, 1.0, 2.0], [3.0, 3.0, 3.0], "equal length"),
        ([0, np.nan, 2], GOOD[1], GOOD[2], "x must be finite"),
        (GOOD[0], [0.0, np.inf, 2.0], GOOD[2], "t_x must be finite"),
        ([0, -1, 2], GOOD[1], GOOD[2], r"x must be >= 0"),
        (GOOD[0], [0.0, -0.5, 2.0], GOOD[2], r"0 <= t_x <= T"),
        (GOOD[0], [0.0, 4.0, 2.0], GOOD[2], r"0 <= t_x <= T"),
        ([[0, 1]], [[0.0, 1.0]], [[3.0, 3.0]], "1-D"),
        (["a", "b", "c"], GOOD[1], GOOD[2], "x must be numeric"),
    ],
)
@pytest.mark.parametrize("function", [bgnbd_log_likelihood, bgnbd_p_alive])
def test_bad_customer_arrays_are_rejected(function, x, t_x, T, match):
    with pytest.raises(ValueError, match=match):
        function(CDNOW_BGNBD, x, t_x, T)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ((0.24, 0.0, 0.79, 2.4), "alpha must be finite and > 0"),
        ((-1.0, 4.4, 0.79, 2.4), "r must be finite and > 0"),
        ((0.24, 4.4, np.nan, 2.4), "a must be finite and > 0"),
        ((0.24, 4.4, 0.79), "4 entries"),
        ("abcd", "sequence of numbers"),
    ],
)
def test_bad_bgnbd_params_are_rejected(params, match):
    with pytest.raises(ValueError, match=match):
        bgnbd_log_likelihood(params, *GOOD)


def test_bad_closed_form_inputs_are_rejected():
    with pytest.raises(ValueError, match="t must be >= 0"):
        bgnbd_expected_purchases(CDNOW_BGNBD, -1.0)
    with pytest.raises(ValueError, match="t must be >= 0"):
        bgnbd_prob_no_purchase(CDNOW_BGNBD, [1.0, -2.0])
    with pytest.raises(ValueError, match="a must differ from 1"):
        bgnbd_expected_purchases((0.2, 4.0, 1.0, 2.0), 10.0)
    with pytest.raises(ValueError, match="equal length"):
        bgnbd_conditional_expected(CDNOW_BGNBD, [1.0, 2.0], *GOOD)
    with pytest.raises(ValueError, match="q must be > 1"):
        gamma_gamma_expected_spend((6.0, 0.9, 15.0), [0, 2], [0.0, 30.0])
    with pytest.raises(ValueError, match="mean_spend must be >= 0"):
        gamma_gamma_expected_spend(CDNOW_GG, [1], [-3.0])


def test_bad_fit_inputs_are_rejected():
    with pytest.raises(ValueError, match="at least one customer"):
        fit_bgnbd([], [], [])
    with pytest.raises(ValueError, match="x must be > 0 for at least one customer"):
        fit_bgnbd([0, 0], [0.0, 0.0], [5.0, 9.0])
    with pytest.raises(ValueError, match="monetary_value must be > 0 where frequency > 0"):
        fit_gamma_gamma([0, 2, 1], [0.0, 0.0, 5.0])
    with pytest.raises(ValueError, match="frequency must be > 0 for at least one"):
        fit_gamma_gamma([0, 0], [0.0, 0.0])
    with pytest.raises(ValueError, match="frequency must be >= 0"):
        fit_gamma_gamma([1, -1], [3.0, 4.0])
    with pytest.raises(ValueError, match="equal length"):
        fit_gamma_gamma([1, 2], [3.0])
