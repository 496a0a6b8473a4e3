"""MIPS: exact marginal weights against brute force, errors by name, and the large-action check
(MIPS beats IPS at C = 1,000 and 10,000 on a synthetic catalogue whose truth is exact)."""

from __future__ import annotations

import numpy as np
import pytest

from rapport.agents.ope import BanditData, ips, snips
from rapport.agents.ope.mips import (
    embedding_codes,
    marginal_bandit_data,
    marginal_weights,
    mips_estimate,
    mips_terms,
)
from rapport.agents.ope.synthetic_catalogue import make_catalogue_bandit, replicate, summarise


def small_problem(n=40, C=30, seed=0):
    rng = np.random.default_rng(seed)
    attrs = {"theme": rng.integers(0, 3, C), "tone": rng.integers(0, 2, C), "noise": rng.integers(0, 4, C)}
    pi = rng.dirichlet(np.ones(C), n)
    pi0 = rng.dirichlet(np.ones(C), n)
    a = np.array([rng.choice(C, p=p) for p in pi0])
    return attrs, pi, pi0, a, rng


def test_marginal_weights_match_brute_force_and_do_not_depend_on_chunks():
    attrs, pi, pi0, a, _ = small_problem()
    cols = ("theme", "tone")
    key = np.stack([attrs[c] for c in cols], axis=1)
    same = (key[None, :, :] == key[a][:, None, :]).all(axis=2)  # (n, C): creatives sharing a_i's tuple
    expected_t, expected_b = (pi * same).sum(1), (pi0 * same).sum(1)
    mw = marginal_weights(a, pi, pi0, attrs, cols, behaviour_propensity=pi0[np.arange(len(a)), a],
                          keep_target_by_code=True)
    np.testing.assert_allclose(mw.target_marginal, expected_t, rtol=1e-12)
    np.testing.assert_allclose(mw.behaviour_marginal, expected_b, rtol=1e-12)
    np.testing.assert_allclose(mw.target_by_code.sum(1), 1.0, rtol=1e-12)
    # chunks of 7 cells (one row) and a callable source give the same numbers
    small = marginal_weights(a, lambda s, e: pi[s:e], lambda s, e: pi0[s:e], attrs, cols, chunk_cells=7)
    np.testing.assert_allclose(small.weights, mw.weights, rtol=1e-12)
    # float32 distributions (the memory-saving form) agree to float32 precision
    f32 = marginal_weights(a, pi.astype(np.float32), pi0.astype(np.float32), attrs, cols)
    np.testing.assert_allclose(f32.weights, mw.weights, rtol=1e-4)


def test_one_creative_per_embedding_is_ips_and_one_embedding_is_the_mean_reward():
    attrs, pi, pi0, a, rng = small_problem()
    r = rng.normal(size=len(a))
    attrs["id"] = np.arange(pi.shape[1])
    unique = marginal_weights(a, pi, pi0, attrs, ("id",))
    vanilla = BanditData(r, pi0[np.arange(len(a)), a], pi[np.arange(len(a)), a])
    np.testing.assert_allclose(unique.weights, vanilla.weights(), rtol=1e-12)
    data = marginal_bandit_data(r, unique)
    assert mips_terms(data, "mips").value == pytest.approx(ips(vanilla).value, rel=1e-12)
    assert mips_terms(data, "snmips").value == pytest.approx(snips(vanilla).value, rel=1e-12)
    attrs["const"] = np.zeros(pi.shape[1], np.int64)
    one = marginal_weights(a, pi, pi0, attrs, ["const"])
    np.testing.assert_allclose(one.weights, 1.0)
    assert mips_terms(marginal_bandit_data(r, one)).value == pytest.approx(r.mean())


def test_mips_estimate_has_a_bootstrap_interval():
    attrs, pi, pi0, a, rng = small_problem(n=200)
    r = rng.normal(1.0, 1.0, len(a))
    data = marginal_bandit_data(r, marginal_weights(a, pi, pi0, attrs, ("theme",)), groups=np.arange(len(a)) // 4)
    est = mips_estimate(data, "snmips", rng=np.random.default_rng(1), n_boot=200, alpha=0.1)
    assert est.ci_low < est.value < est.ci_high and est.std_error > 0
    assert est.diagnostics["ess"] > 0
    with pytest.raises(ValueError, match="rng is required"):
        mips_estimate(data, "mips")
    with pytest.raises(KeyError, match="valid: mips, snmips, mdr"):
        mips_terms(data, "ips")


@pytest.mark.parametrize("change, match", [
    (lambda k: k.update(columns=("mood",)), r"columns \['mood'\] are not attributes.*available: theme, tone, noise"),
    (lambda k: k.update(columns=()), "columns is empty"),
    (lambda k: k.update(attributes={**k["attributes"], "theme": np.zeros(29, np.int64)}, columns=("tone", "theme")),
     r"attributes\['theme'\] has 29 rows, attributes\['tone'\] 30"),
    (lambda k: k.update(attributes={c: v[:29] for c, v in k["attributes"].items()}),
     "attributes have 29 rows but the policies' distributions have 30 columns"),
    (lambda k: k.update(attributes={**k["attributes"], "theme": np.zeros(30)}), "must hold integer levels"),
    (lambda k: k.update(target=k["target"] * 1.01), "target row 0 sums to"),
    (lambda k: k.update(behaviour=k["behaviour"][:, :29]), "target has 30 creatives .* behaviour has 29"),
    (lambda k: k.update(behaviour=-k["behaviour"]), "behaviour must be finite and >= 0; row 0"),
    (lambda k: k.update(target=lambda s, e: np.ones((e - s + 1, 30)) / 30), r"target rows 0:1 have shape \(2, 30\)"),
    (lambda k: k.update(actions=np.full(40, 30)), r"actions\[0\] = 30 is not a creative id; valid ids are 0..29"),
    (lambda k: k.update(behaviour_propensity=np.full(40, 0.5)), "behaviour disagrees with behaviour_propensity at row 0"),
    (lambda k: k.update(chunk_cells=0), "chunk_cells must be >= 1"),
])
def test_bad_input_is_rejected_by_name(change, match):
    attrs, pi, pi0, a, _ = small_problem()
    kwargs = dict(actions=a, target=pi, behaviour=pi0, attributes=attrs, columns=("theme",))
    change(kwargs)
    with pytest.raises(ValueError, match=match):
        marginal_weights(**kwargs)


def test_embedding_codes_group_equal_tuples_only():
    attrs = {"a": np.array([0, 1, 0, 1, 0]), "b": np.array([2, 2, 2, 0, 1])}
    codes, k = embedding_codes(attrs, ("a", "b"))
    assert k == 4 and codes[0] == codes[2] and len({codes[1], codes[3], codes[4], codes[0]}) == 4
    assert embedding_codes(attrs, "a")[1] == 2


# ---- the large-action check ------------------------------------------------------------------
# 50 replicate logs of n = 1,500 rounds per catalogue size, fixed seeds; the truth is exact.
REPLICATES, N = 50, 1500


@pytest.mark.parametrize("n_actions", [1000, 10_000])
def test_mips_beats_ips_on_a_large_catalogue(n_actions):
    truth, runs = replicate(n_actions, N, REPLICATES, seed=7)
    s = summarise(truth, runs)
    # IPS's weights grow with the catalogue (max weight in the hundreds), MIPS's stay bounded
    assert s["ips"]["mean_max_weight"] > 10 * s["mips"]["mean_max_weight"]
    assert s["mips"]["rmse"] < 0.5 * s["ips"]["rmse"]
    assert s["mips"]["rmse"] < s["dr"]["rmse"] and s["snmips"]["rmse"] < s["snips"]["rmse"]
    # and MIPS is unbiased here (no direct effect holds by construction): the mean error is
    # within 3 standard errors of 0 and under 5 % of the true value
    for name in ("mips", "snmips", "mdr"):
        assert abs(s[name]["bias"]) < 3 * s[name]["bias_se"], (name, s[name])
        assert abs(s[name]["bias"]) < 0.05 * abs(truth), (name, s[name], truth)


def test_mips_over_the_wrong_attributes_is_biased_and_the_check_sees_it():
    """Marginalising over attributes the reward does not depend on breaks no-direct-effect: the
    same bias check that MIPS passes above fails, so it is not vacuous."""
    truth, runs = replicate(1000, N, 10, seed=7, columns=("category", "explicitness"))
    s = summarise(truth, runs)["mips"]
    assert abs(s["bias"]) > 5 * s["bias_se"] and abs(s["bias"]) > 0.05 * abs(truth)


def test_synthetic_world_is_a_valid_bandit():
    w = make_catalogue_bandit(500, 3)
    np.testing.assert_allclose(w.behaviour.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(w.target.sum(1), 1.0, atol=1e-5)
    log = w.sample(20_000, np.random.default_rng(0))
    # sampled creatives follow π0: the logged propensities average E_π0[π0(a|x)] = Σ π0²
    assert log.propensity.mean() == pytest.approx(float((w.behaviour.astype(float) ** 2).sum(1).mean()), rel=0.05)
    # the reward's mean is the logger's exact value
    assert log.reward.mean() == pytest.approx(w.value(w.behaviour), abs=4 / np.sqrt(20_000))


def test_weights_from_a_log_with_creatives_use_the_shown_rows_and_its_catalogue():
    from rapport.agents.ope.mips import marginal_weights_from_log
    from tests.test_ope_catalogue import C, creative_log
    from tests.test_ope_logged import make_log

    log = creative_log()
    rows, mw = marginal_weights_from_log(log, np.full((9, C), 1 / C), np.full((9, C), 1 / C), ("theme", "tone"))
    np.testing.assert_array_equal(rows, np.flatnonzero(log.creative >= 0))
    assert len(rows) == 9 and mw.columns == ("theme", "tone")
    np.testing.assert_allclose(mw.weights, 1.0)
    with pytest.raises(ValueError, match="the log has no creatives"):
        marginal_weights_from_log(make_log(), np.ones((1, 1)), np.ones((1, 1)), ("theme",))
    with pytest.raises(ValueError, match=r"columns \['mood'\] are not attributes"):
        marginal_weights_from_log(log, np.full((9, C), 1 / C), np.full((9, C), 1 / C), ("mood",))
