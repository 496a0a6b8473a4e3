"""The fast samplers used to draw customers (rapport.envs.samplers) against scipy's exact functions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from rapport.envs import noise
from rapport.envs.samplers import (
    QuantileTable,
    beta_exact,
    beta_quantile,
    gamma_exact,
    gamma_quantile,
    poisson_quantile,
)
from rapport.envs.scenario import PRESETS, get_scenario


def _uniforms() -> np.ndarray:
    """Uniforms over the whole range of noise.uniform64, with both tails sampled log-uniformly."""
    rng = np.random.default_rng(7)
    return np.concatenate([rng.random(200_000), np.exp(-rng.uniform(0, 33.9, 50_000)),
                           -np.expm1(-rng.uniform(0, 33.9, 50_000)), [2.0**-49, 1 - 2.0**-49]])


def _scenario_shapes() -> list[tuple[str, tuple[float, ...]]]:
    shapes = set()
    for name in PRESETS:
        sc = get_scenario(name)
        pm, om, pv = sc.purchase, sc.omnichannel, sc.privacy
        shapes |= {("gamma", (pm.r,)), ("gamma", (pm.q,)), ("beta", (pm.a, pm.b)),
                   ("gamma", (sc.offers.category_concentration,)), ("beta", (pv.trust_a, pv.trust_b))}
        if om.enabled:  # mean 1 is an online-only business (the mechanism is off)
            shapes.add(("beta", (om.online_share_mean * om.online_share_concentration,
                                 (1 - om.online_share_mean) * om.online_share_concentration)))
    return sorted(shapes)


@pytest.mark.parametrize("kind,params", [*_scenario_shapes(), ("gamma", (0.05,)), ("gamma", (80.0,)),
                                         ("beta", (0.2, 5.0)), ("beta", (20.0, 0.3))])
def test_quantile_table_matches_scipy_over_the_whole_uniform64_range(kind, params):
    u = _uniforms()
    table = QuantileTable(kind, params)
    assert not table.exact
    q = table(u)
    if kind == "gamma":
        exact = special.gammaincinv(params[0], u)
        u_back = special.gammainc(params[0], q)
    else:
        exact = special.betaincinv(*params, u)
        u_back = special.betainc(*params, q)
        # near 1 compare 1 − Q, computed exactly by symmetry, where float64 can represent it
        hi = (u > 0.5) & (exact < 1 - 1e-9)
        one_minus = special.betaincinv(params[1], params[0], 1 - u[hi])
        assert np.max(np.abs((1 - q[hi]) / one_minus - 1)) < 1e-6
    assert np.max(np.abs(q / exact - 1)) < 1e-6  # relative error in x-space
    # error in u-space, where float64 can tell Q from 1 (beyond, both round to ~1)
    shown = (exact < 1 - 1e-12) if kind == "beta" else np.ones(u.size, bool)
    assert np.max(np.abs(u_back - u)[shown]) < 1e-7
    assert np.all(q[~shown] > 1 - 1e-11)
    assert np.all(np.diff(table(np.sort(u))) >= 0)  # still a monotone transform


def test_quantile_tables_are_cached_and_reject_bad_shapes():
    assert gamma_quantile(0.5) is gamma_quantile(0.5)
    assert beta_quantile(1.0, 2.0) is beta_quantile(1.0, 2.0)
    with pytest.raises(ValueError, match="finite shape parameter"):
        QuantileTable("gamma", (0.0,))
    with pytest.raises(ValueError, match="finite shape parameter"):
        QuantileTable("beta", (1.0, float("nan")))
    with pytest.raises(ValueError, match="kind must be"):
        QuantileTable("normal", (1.0,))


def test_quantile_table_falls_back_to_scipy_outside_its_range():
    u = np.array([1e-300, 1e-20, 0.5, 1 - 1e-16])
    q = gamma_quantile(0.7)(u)
    np.testing.assert_allclose(q, special.gammaincinv(0.7, u), rtol=1e-6)


def _keys(n: int, seed: int = 3) -> np.ndarray:
    return noise.row_keys(seed, np.arange(n), np.zeros(n))


@pytest.mark.parametrize("shape", [0.25, 1.0, 6.25, 40.0])
def test_gamma_exact_has_the_gamma_distribution(shape):
    g = gamma_exact(_keys(100_000), 0, noise.Mechanism.INIT_HISTORY_SPEND, np.full(100_000, shape))
    assert stats.kstest(g, stats.gamma(shape).cdf).pvalue > 1e-3
    assert abs(g.mean() / shape - 1) < 5 * np.sqrt(1 / (shape * 100_000))


def test_beta_exact_has_the_beta_distribution():
    n = 100_000
    b = beta_exact(_keys(n), 0, noise.Mechanism.INIT_HISTORY_LAST, np.full(n, 3.0), np.full(n, 2.0))
    assert stats.kstest(b, stats.beta(3, 2).cdf).pvalue > 1e-3


def test_gamma_exact_depends_only_on_the_rows_own_key():
    keys = _keys(1000)
    shape = np.linspace(0.3, 30, 1000)
    full = gamma_exact(keys, 0, noise.Mechanism.INIT_HISTORY_SPEND, shape)
    sub = np.arange(0, 1000, 7)
    part = gamma_exact(keys[sub], 0, noise.Mechanism.INIT_HISTORY_SPEND, shape[sub])
    np.testing.assert_array_equal(full[sub], part)
    other = gamma_exact(keys, 0, noise.Mechanism.INIT_HISTORY_SPEND, shape, block=1)
    assert not np.any(other == full)  # another stream block is an independent draw
    with pytest.raises(ValueError, match="shape > 0"):
        gamma_exact(keys, 0, 1, np.zeros(1000))


def test_poisson_quantile_is_the_poisson_inverse_cdf():
    rng = np.random.default_rng(5)
    mean = np.concatenate([rng.gamma(0.25, 4.0, 100_000) * rng.uniform(0, 150, 100_000),
                           [0.0, 1e-9, 3.0, 500.0, 3000.0]])
    u = np.concatenate([rng.random(100_000), [0.5, 0.999, 0.2, 1 - 2.0**-49, 2.0**-49]])
    k = poisson_quantile(mean, u)
    # the smallest k with P(N <= k) >= u, checked on the side of the CDF that has the precision
    upper = u > 0.5
    ok_k = np.where(upper, special.pdtrc(k, mean) <= (1 - u) * (1 + 1e-9),
                    special.pdtr(k, mean) >= u * (1 - 1e-9))
    below = np.where(upper, special.pdtrc(k - 1, mean) > (1 - u) * (1 - 1e-9),
                     special.pdtr(k - 1, mean) < u * (1 + 1e-9))
    assert np.all(ok_k) and np.all(below[k > 0])
    same = noise.poisson_inverse(mean[:100_000], u[:100_000])  # the walk from 0
    assert np.mean(same == k[:100_000]) > 0.9999
    with pytest.raises(ValueError, match="mean >= 0"):
        poisson_quantile(np.array([-1.0]), np.array([0.5]))

