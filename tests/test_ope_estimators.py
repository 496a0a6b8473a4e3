"""Off-policy estimators against textbook formulas, simulated truth, and their own error handling.

The "textbook" functions below are deliberately naive (Python loops over rounds and steps,
written from the formulas in the papers, sharing no code with ``rapport.agents.ope``), so agreement to
1e-9 means the batched implementation computes the published estimator.

Statistical tolerances: with R independent replications of an unbiased estimator whose
replication standard deviation is s, the mean error is N(0, s²/R) approximately, so
``|mean − truth| < 4 s/√R`` fails with probability ~6e-5 if the estimator is unbiased (and
the seeds are fixed, so a pass is reproducible). Coverage of a nominal 90 % interval over R
replications is Binomial(R, 0.9)/R, standard deviation ~0.021 at R = 200; we accept 0.80-0.97
(> 4 sd below; above allows for mildly conservative percentile intervals).
"""

from __future__ import annotations

import numpy as np
import pytest

from rapport.agents.ope import (
    BanditData,
    SequentialData,
    bootstrap_interval,
    dm,
    dr,
    fqe,
    hcope_lower_bound,
    ips,
    pdis,
    sequential_dr,
    sndr,
    snips,
    switch_dr,
    wpdis,
)
from rapport.agents.ope.intervals import empirical_bernstein_bound
from rapport.agents.ope.sequential import is_unit_values

# ------------------------------------------------------------------------- textbook (loops)


def tb_weights(a, pb, pi_dist, clip=None):
    w = []
    for i in range(len(a)):
        wi = pi_dist[i][a[i]] / pb[i]
        w.append(min(wi, clip) if clip is not None else wi)
    return w


def tb_ips(r, a, pb, pi_dist, clip=None):
    w = tb_weights(a, pb, pi_dist, clip)
    return sum(w[i] * r[i] for i in range(len(r))) / len(r)


def tb_snips(r, a, pb, pi_dist, clip=None):
    w = tb_weights(a, pb, pi_dist, clip)
    return sum(w[i] * r[i] for i in range(len(r))) / sum(w)


def tb_dm(pi_dist, q):
    n, K = len(q), len(q[0])
    return sum(sum(pi_dist[i][k] * q[i][k] for k in range(K)) for i in range(n)) / n


def tb_dr(r, a, pb, pi_dist, q, clip=None):
    n, K = len(r), len(q[0])
    w = tb_weights(a, pb, pi_dist, clip)
    total = 0.0
    for i in range(n):
        total += sum(pi_dist[i][k] * q[i][k] for k in range(K)) + w[i] * (r[i] - q[i][a[i]])
    return total / n


def tb_sndr(r, a, pb, pi_dist, q, clip=None):
    n = len(r)
    w = tb_weights(a, pb, pi_dist, clip)
    correction = sum(w[i] * (r[i] - q[i][a[i]]) for i in range(n)) / sum(w)
    return tb_dm(pi_dist, q) + correction


def tb_switch_dr(r, a, pb, pi_dist, q, tau):
    n, K = len(r), len(q[0])
    w = tb_weights(a, pb, pi_dist)
    total = 0.0
    for i in range(n):
        total += sum(pi_dist[i][k] * q[i][k] for k in range(K))
        if w[i] <= tau:
            total += w[i] * (r[i] - q[i][a[i]])
    return total / n


def tb_pdis(r, pb, pe, gamma, clip=None):
    N, T = len(r), len(r[0])
    total = 0.0
    for i in range(N):
        rho = 1.0
        for t in range(T):
            rho *= pe[i][t] / pb[i][t]
            total += gamma**t * (min(rho, clip) if clip else rho) * r[i][t]
    return total / N


def tb_wpdis(r, pb, pe, gamma):
    N, T = len(r), len(r[0])
    value = 0.0
    for t in range(T):
        num = den = 0.0
        for i in range(N):
            rho = 1.0
            for s in range(t + 1):
                rho *= pe[i][s] / pb[i][s]
            num += rho * r[i][t]
            den += rho
        value += gamma**t * num / den if den else 0.0
    return value


def tb_seq_dr(r, pb, pe, q, v, gamma):
    """Jiang & Li (2016), written recursively: V_DR^{T} = 0,
    V_DR^{t} = V̂(s_t) + w_t (r_t + γ V_DR^{t+1} − Q̂(s_t, a_t)); averaged over trajectories."""
    N, T = len(r), len(r[0])
    total = 0.0
    for i in range(N):
        later = 0.0
        for t in reversed(range(T)):
            w = pe[i][t] / pb[i][t]
            later = v[i][t] + w * (r[i][t] + gamma * later - q[i][t])
        total += later
    return total / N


# ---------------------------------------------------------------------------- fixtures


def bandit_problem(seed: int, n: int = 300, K: int = 10):
    rng = np.random.default_rng(seed)
    behaviour = rng.dirichlet(np.ones(K), n) * 0.9 + 0.1 / K
    a = np.array([rng.choice(K, p=p) for p in behaviour])
    pb = behaviour[np.arange(n), a]
    target = rng.dirichlet(np.full(K, 0.3), n)
    target[: n // 5] = np.eye(K)[rng.integers(0, K, n // 5)]  # some deterministic rows
    q = rng.normal(size=(n, K))
    r = q[np.arange(n), a] + rng.normal(size=n)
    return r, a, pb, target, q


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("clip", [None, 3.0])
def test_bandit_estimators_match_textbook(seed, clip):
    r, a, pb, pi, q = bandit_problem(seed)
    data = BanditData.from_dense(a, r, pb, pi, q)
    L = (r.tolist(), a.tolist(), pb.tolist(), pi.tolist())
    assert ips(data, clip=clip).value == pytest.approx(tb_ips(*L, clip), abs=1e-9)
    assert snips(data, clip=clip).value == pytest.approx(tb_snips(*L, clip), abs=1e-9)
    assert dm(data).value == pytest.approx(tb_dm(pi.tolist(), q.tolist()), abs=1e-9)
    assert dr(data, clip=clip).value == pytest.approx(tb_dr(*L, q.tolist(), clip), abs=1e-9)
    assert sndr(data, clip=clip).value == pytest.approx(tb_sndr(*L, q.tolist(), clip), abs=1e-9)
    for tau in (0.0, 2.0, np.inf):
        assert switch_dr(data, tau=tau).value == pytest.approx(tb_switch_dr(*L, q.tolist(), tau), abs=1e-9)


def test_switch_dr_limits_are_dm_and_dr():
    r, a, pb, pi, q = bandit_problem(3)
    data = BanditData.from_dense(a, r, pb, pi, q)
    assert switch_dr(data, tau=0.0).value == pytest.approx(dm(data).value, abs=1e-12)
    assert switch_dr(data, tau=np.inf).value == pytest.approx(dr(data).value, abs=1e-12)


def sequential_problem(seed: int, N: int = 40, T: int = 5):
    rng = np.random.default_rng(seed)
    pb = rng.uniform(0.2, 1.0, (N, T))
    pe = rng.uniform(0.0, 1.0, (N, T))
    r = rng.normal(size=(N, T))
    q = rng.normal(size=(N, T))
    v = rng.normal(size=(N, T))
    return r, pb, pe, q, v


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_sequential_estimators_match_textbook(gamma):
    r, pb, pe, q, v = sequential_problem(0)
    data = SequentialData(r, pb, pe, q, v, gamma=gamma)
    L = (r.tolist(), pb.tolist(), pe.tolist())
    assert pdis(data).value == pytest.approx(tb_pdis(*L, gamma), abs=1e-9)
    assert pdis(data, clip=2.0).value == pytest.approx(tb_pdis(*L, gamma, clip=2.0), abs=1e-9)
    assert wpdis(data).value == pytest.approx(tb_wpdis(*L, gamma), abs=1e-9)
    assert sequential_dr(data).value == pytest.approx(tb_seq_dr(*L, q.tolist(), v.tolist(), gamma), abs=1e-9)
    assert fqe(data).value == pytest.approx(v[:, 0].mean(), abs=1e-12)


def test_padding_leaves_sequential_estimators_unchanged():
    r, pb, pe, q, v = sequential_problem(1, N=10, T=3)

    def pad(x, fill):
        return np.concatenate([x, np.full((x.shape[0], 2), fill)], axis=1)

    short = SequentialData(r, pb, pe, q, v)
    padded = SequentialData(pad(r, 0.0), pad(pb, 1.0), pad(pe, 1.0), pad(q, 0.0), pad(v, 0.0))
    for est in (pdis, wpdis, sequential_dr, fqe):
        assert est(padded).value == pytest.approx(est(short).value, abs=1e-12)


# ----------------------------------------------------------------------- bad input tables


@pytest.mark.parametrize("field,value,match", [
    ("behaviour_propensity", 0.0, "behaviour_propensity must be in \\(0, 1\\]"),
    ("behaviour_propensity", 1.5, "behaviour_propensity must be in \\(0, 1\\]"),
    ("target_propensity", -0.1, "target_propensity must be in \\[0, 1\\]"),
    ("reward", np.nan, "reward has a non-finite value at row 2"),
])
def test_bandit_data_rejects_bad_values(field, value, match):
    kwargs = {"reward": np.ones(5), "behaviour_propensity": np.full(5, 0.5), "target_propensity": np.full(5, 0.5)}
    kwargs[field] = kwargs[field].copy()
    kwargs[field][2] = value
    with pytest.raises(ValueError, match=match):
        BanditData(**kwargs)


def test_bandit_data_rejects_shape_mismatch_and_missing_model():
    with pytest.raises(ValueError, match="behaviour_propensity must have shape \\(5,\\)"):
        BanditData(np.ones(5), np.full(4, 0.5), np.full(5, 0.5))
    data = BanditData(np.ones(5), np.full(5, 0.5), np.full(5, 0.5))
    with pytest.raises(ValueError, match="DR needs reward-model predictions"):
        dr(data)
    with pytest.raises(ValueError, match="clip must be > 0"):
        ips(data, clip=0.0)
    with pytest.raises(ValueError, match="outside 0..2"):
        BanditData.from_dense(np.array([0, 3]), np.ones(2), np.ones(2), np.full((2, 3), 1 / 3))


def test_sequential_data_rejects_bad_input():
    r, pb, pe, q, v = sequential_problem(2, N=4, T=3)
    with pytest.raises(ValueError, match="must have shape"):
        SequentialData(r, pb[:, :2], pe)
    bad = pb.copy()
    bad[0, 0] = 0.0
    with pytest.raises(ValueError, match="behaviour_propensity must be in \\(0, 1\\]"):
        SequentialData(r, bad, pe)
    with pytest.raises(ValueError, match="gamma must be in"):
        SequentialData(r, pb, pe, gamma=1.5)
    with pytest.raises(ValueError, match="needs Q̂ and V̂"):
        sequential_dr(SequentialData(r, pb, pe))


# ------------------------------------------------------------ unbiasedness and coverage


def contextual_world(rng: np.random.Generator, n: int, K: int = 5):
    """Contexts x ~ U(0,1)^2, expected reward μ(x, a) known, softmax behaviour, greedy-ish target."""
    x = rng.random((n, 2))
    mu = np.sin(3 * x[:, :1] + np.arange(K)) + x[:, 1:] * np.arange(K) / K
    logits = 1.5 * mu
    behaviour = np.exp(logits - logits.max(axis=1, keepdims=True))
    behaviour /= behaviour.sum(axis=1, keepdims=True)
    target = 0.7 * np.eye(K)[np.argmax(mu + np.cos(5 * x[:, 1:]), axis=1)] + 0.3 / K
    u = rng.random(n)[:, None]
    a = (np.cumsum(behaviour, axis=1) < u).sum(axis=1)
    r = mu[np.arange(n), a] + rng.normal(0, 0.5, n)
    return x, mu, behaviour, target, a, r


def test_bandit_estimators_unbiased_on_a_world_with_known_truth():
    # truth: E_x Σ_a π(a|x) μ(x, a), by Monte Carlo over 10^6 contexts (sd of the truth ~1e-4)
    rng = np.random.default_rng(11)
    _, mu, _, target, _, _ = contextual_world(rng, 1_000_000)
    truth = float(np.mean(np.sum(target * mu, axis=1)))
    R, n = 300, 400
    est = {name: [] for name in ("ips", "snips", "dr", "sndr")}
    for _ in range(R):
        _, mu, behaviour, target, a, r = contextual_world(rng, n)
        # a deliberately wrong reward model (right shape, off by a bias): DR must stay unbiased
        q = mu + 0.3
        data = BanditData.from_dense(a, r, behaviour[np.arange(n), a], target, q)
        for name, f in (("ips", ips), ("snips", snips), ("dr", dr), ("sndr", sndr)):
            est[name].append(f(data).value)
    for name, values in est.items():
        values = np.asarray(values)
        tol = 4 * values.std(ddof=1) / np.sqrt(R) + 1e-3  # + truth MC error and SNIPS's O(1/n) bias
        assert abs(values.mean() - truth) < tol, (name, values.mean(), truth, tol)
    # and DM with the biased model is off by the bias: the test can fail
    data = BanditData.from_dense(a, r, behaviour[np.arange(n), a], target, mu + 0.3)
    assert dm(data).value - np.mean(np.sum(target * mu, axis=1)) == pytest.approx(0.3, abs=1e-9)


def test_bootstrap_interval_covers_truth_at_about_nominal_rate():
    rng = np.random.default_rng(5)
    _, mu, _, target, _, _ = contextual_world(rng, 1_000_000)
    truth = float(np.mean(np.sum(target * mu, axis=1)))
    R, n, hits, hcope_ok = 200, 400, 0, 0
    for _ in range(R):
        _, mu, behaviour, target, a, r = contextual_world(rng, n)
        data = BanditData.from_dense(a, r, behaviour[np.arange(n), a], target)
        ci = bootstrap_interval(ips(data), rng, n_boot=300, alpha=0.10)
        hits += ci.low <= truth <= ci.high
        # rewards are >= -1 - 0.5*6 with overwhelming probability; shift by a safe -5
        w = data.weights()
        lb = hcope_lower_bound(w * (r + 5.0), 0.1, rng)
        hcope_ok += lb.lower_bound - 5.0 <= truth
    assert 0.80 <= hits / R <= 0.97, hits / R
    assert hcope_ok / R >= 0.9  # a (1 − δ) guarantee (the Bernstein bound is conservative)


def test_grouped_bootstrap_is_wider_when_rows_of_a_customer_are_correlated():
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(200), 10)
    customer_effect = rng.normal(0, 3, 200)[groups]
    r = customer_effect + rng.normal(0, 0.1, groups.size)
    data = BanditData(r, np.ones(r.size), np.ones(r.size), groups=groups)
    rows = bootstrap_interval(ips(data), rng, n_boot=400)
    customers = bootstrap_interval(ips(data), rng, n_boot=400, groups=data.groups)
    # independent rows would understate the error by ~sqrt(10)
    assert customers.std_error > 2.5 * rows.std_error


def test_hcope_bound_matches_thomas_et_al_theorem_1_and_validates_input():
    rng = np.random.default_rng(0)
    x = rng.exponential(1.0, 500)
    c, delta = 3.0, 0.05
    y = np.minimum(x, c)
    n = y.size
    expected = y.mean() - 7 * c * np.log(2 / delta) / (3 * (n - 1)) - np.sqrt(2 * np.log(2 / delta) * y.var(ddof=1) / n)
    assert empirical_bernstein_bound(y, c, delta) == pytest.approx(expected, abs=1e-12)
    assert hcope_lower_bound(x, delta, rng, clip=c).lower_bound == pytest.approx(expected, abs=1e-12)
    tuned = hcope_lower_bound(x, delta, rng)
    assert tuned.n_bound == 400 and tuned.lower_bound < x.mean()
    with pytest.raises(ValueError, match="must be >= 0"):
        hcope_lower_bound(x - 5, delta, rng)
    with pytest.raises(ValueError, match="delta must be in"):
        hcope_lower_bound(x, 1.5, rng)


def test_is_unit_values_shift_and_offset():
    r, pb, pe, q, v = sequential_problem(4, N=30, T=4)
    data = SequentialData(r, pb, pe, q, v, gamma=0.9)
    values, offset = is_unit_values(data, reward_lower_bound=-10.0)
    assert (values >= 0).all()
    rho = data.cumulative_weights()
    assert values.mean() == pytest.approx(np.mean((rho * (r + 10.0)) @ (0.9 ** np.arange(4))), abs=1e-12)
    assert offset == pytest.approx(-10.0 * np.sum(0.9 ** np.arange(4)))
    with pytest.raises(ValueError, match="below reward_lower_bound"):
        is_unit_values(data, reward_lower_bound=0.0)
