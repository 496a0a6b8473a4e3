"""Policies' action distributions on logged contexts, the exploration wrapper, the reward model."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import rapport.envs as envs
from rapport.agents.baselines import (
    DoNothing,
    MassMarketing,
    RFMSegmentRules,
    TargetingOnly,
    UniformRandom,
)
from rapport.agents.ope import ArmRidge, ExplorationMixture, distribution_on_log, joint_distribution
from rapport.agents.ope.policies import allowed_joint, probability_of
from rapport.agents.ope.reward_model import Standardizer, assign_folds, cross_fit
from rapport.agents.protocol import DecisionSchema


def schema_of(env) -> DecisionSchema:
    return DecisionSchema(tuple(env.feature_names), tuple(int(k) for k in env.single_action_space.nvec),
                          tuple(env.channel_names), tuple(env.offer_names), tuple(env.spend_levels),
                          tuple(env.channel_costs), tuple(env.offer_discounts))


@pytest.fixture(scope="module")
def world():
    env = envs.PopulationEnv(num_envs=300, horizon=8)
    obs, info = env.reset(seed=4)
    return schema_of(env), obs, info["action_mask"]


def test_deterministic_policy_is_a_point_mass_at_its_action(world):
    schema, obs, mask = world
    policy = RFMSegmentRules(schema, horizon=8)
    dist = joint_distribution(policy, obs, schema.nvec, np.random.default_rng(0), action_mask=mask)
    actions, _ = policy.act(obs, np.random.default_rng(0), action_mask=mask)
    joint = np.ravel_multi_index(tuple(actions.T), schema.nvec)
    assert dist.nnz == obs.shape[0]
    np.testing.assert_array_equal(probability_of(dist, joint), 1.0)


def test_exploration_mixture_propensities_are_its_distribution(world):
    schema, obs, mask = world
    for base in (RFMSegmentRules(schema, horizon=8), ExplorationMixture(DoNothing(schema), schema, epsilon=0.5)):
        mix = ExplorationMixture(base, schema, epsilon=0.3)
        dist = mix.action_distribution(obs, action_mask=mask)
        np.testing.assert_allclose(dist.sum(axis=1), 1.0, atol=1e-12)
        assert not (dist[~allowed_joint(mask, schema.nvec, obs.shape[0])] > 0).any()
        actions, prop = mix.act(obs, np.random.default_rng(1), action_mask=mask)
        joint = np.ravel_multi_index(tuple(actions.T), schema.nvec)
        np.testing.assert_allclose(prop, dist[np.arange(obs.shape[0]), joint], atol=1e-12)


def test_exploration_mixture_samples_its_distribution():
    # one customer, many draws: empirical frequencies within 5 binomial sd of the distribution
    env = envs.PopulationEnv(num_envs=1, horizon=8)
    obs, info = env.reset(seed=2)
    schema = schema_of(env)
    mix = ExplorationMixture(MassMarketing(schema, horizon=8, every_k_weeks=1), schema, epsilon=0.4)
    draws = 20_000
    many, mask = np.repeat(obs, draws, axis=0), np.repeat(info["action_mask"], draws, axis=0)
    actions, _ = mix.act(many, np.random.default_rng(3), action_mask=mask)
    freq = np.bincount(np.ravel_multi_index(tuple(actions.T), schema.nvec), minlength=schema.n_joint_actions) / draws
    p = mix.action_distribution(obs, action_mask=info["action_mask"])[0]
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / draws) + 1e-12)


def test_stochastic_policy_without_distribution_needs_monte_carlo(world):
    schema, obs, mask = world
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="pass mc_draws > 0"):
        joint_distribution(UniformRandom(schema), obs, schema.nvec, rng, action_mask=mask)
    est = joint_distribution(UniformRandom(schema), obs[:20], schema.nvec, rng, action_mask=mask[:20], mc_draws=4000)
    exact = allowed_joint(mask[:20], schema.nvec, 20)
    exact = exact / exact.sum(axis=1, keepdims=True)
    assert np.abs(est.toarray() - exact).max() < 0.02  # 4000 draws: sd <= 0.008


def test_batch_dependent_policy_is_queried_one_week_at_a_time(world):
    schema, obs, mask = world
    policy = TargetingOnly(schema, top_fraction=0.1)
    week = np.repeat([0, 1], obs.shape[0])
    stacked = np.concatenate([obs, obs])
    dist = distribution_on_log(policy, stacked, week, schema.nvec, np.random.default_rng(0))
    contacted = dist.toarray()[:, 0] == 0  # joint index 0 = do nothing
    # the top 10 % of each week's batch (30 of 300), not 10 % of the 600 pooled rows
    assert contacted[week == 0].sum() == 30 and contacted[week == 1].sum() == 30


def test_probability_of_matches_dense_lookup():
    rng = np.random.default_rng(0)
    dense = rng.random((50, 7)) * (rng.random((50, 7)) < 0.4)
    joint = rng.integers(0, 7, 50)
    np.testing.assert_array_equal(probability_of(sp.csr_matrix(dense), joint), dense[np.arange(50), joint])


# ----------------------------------------------------------------------------- reward model


def explicit_ridge(x, joint, y, nvec, ridge, interactions):
    """The same model with its design matrix written out (small problems only)."""
    n, d = x.shape
    z = Standardizer.fit(x).transform(x)
    D, K = d + 1, int(np.prod(nvec))
    arms = np.stack(np.unravel_index(joint, nvec), axis=1)
    blocks = [np.zeros(n, int)]
    if interactions:
        offset = 1
        for j, k in enumerate(nvec):
            blocks.append(offset + arms[:, j])
            offset += k
    n_blocks = 1 + (sum(nvec) if interactions else 0)
    phi = np.zeros((n, n_blocks * D + K))
    for b in blocks:
        for i in range(D):
            phi[np.arange(n), b * D + i] += z[:, i]
    phi[np.arange(n), n_blocks * D + joint] = 1.0
    coef = np.linalg.solve(phi.T @ phi + ridge * np.eye(phi.shape[1]), phi.T @ (y - y.mean()))
    return phi @ coef + y.mean()


@pytest.mark.parametrize("interactions", [True, False])
def test_arm_ridge_equals_ridge_on_the_written_out_design(interactions):
    rng = np.random.default_rng(1)
    nvec, n = (3, 2, 2), 400
    x = rng.normal(size=(n, 4)) * [1, 2, 3, 4] + [0, 1, 2, 3]
    joint = rng.integers(0, 12, n)
    y = rng.normal(size=n) + x[:, 0] * (joint % 3)
    fit = ArmRidge(nvec, ridge=0.7, interactions=interactions).fit(x, joint, y)
    expected = explicit_ridge(x, joint, y, nvec, 0.7, interactions)
    np.testing.assert_allclose(fit.predict_at(x, joint), expected, atol=1e-9)
    np.testing.assert_allclose(fit.predict_all(x)[np.arange(n), joint], expected, atol=1e-9)
    dist = rng.dirichlet(np.ones(12), n)
    np.testing.assert_allclose(fit.predict_expected(x, sp.csr_matrix(dist)), (dist * fit.predict_all(x)).sum(axis=1),
                               atol=1e-9)


def test_cross_fit_predicts_each_row_with_a_model_that_never_saw_its_customer():
    rng = np.random.default_rng(2)
    nvec, n = (2, 2, 1), 300
    customers = rng.integers(0, 60, n)
    folds = assign_folds(customers, 3, rng)
    for c in np.unique(customers):
        assert len(set(folds[customers == c])) == 1
    x, joint, y = rng.normal(size=(n, 3)), rng.integers(0, 4, n), rng.normal(size=n)
    model = ArmRidge(nvec)
    cf = cross_fit(model, x, joint, y, folds)
    std = Standardizer.fit(x)
    for f in range(3):
        alone = model.fit(x[folds != f], joint[folds != f], y[folds != f], std)
        rows = folds == f
        np.testing.assert_allclose(cf.predict_at(x, joint)[rows], alone.predict_at(x[rows], joint[rows]), atol=1e-9)
    with pytest.raises(ValueError, match="ridge must be > 0"):
        ArmRidge(nvec, ridge=0.0)
    with pytest.raises(ValueError, match="at least n_folds=5 customers"):
        assign_folds(np.array([1, 1, 2]), 5, rng)


class FactoredPolicy:
    """Per-dimension independent choices, like an SB3 MultiDiscrete policy; certain on half the rows."""

    def __init__(self, nvec):
        self.nvec = nvec

    def action_probabilities(self, obs, mask=None):
        probs = []
        for d, k in enumerate(self.nvec):
            logits = np.outer(obs[:, d], np.arange(k))
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            certain = obs[:, -1] > 0.5
            p[certain] = np.eye(k)[0]
            probs.append(p)
        return probs

    def act(self, obs, rng, *, action_mask=None):
        probs = self.action_probabilities(obs)
        actions = np.stack([(np.cumsum(p, axis=1) < rng.random((len(obs), 1))).sum(axis=1) for p in probs], axis=1)
        prop = np.prod([p[np.arange(len(obs)), actions[:, d]] for d, p in enumerate(probs)], axis=0)
        return actions, prop


def test_per_dimension_probabilities_make_the_joint_distribution():
    nvec = (3, 2, 2)
    rng = np.random.default_rng(0)
    obs = rng.random((40, 4))
    policy = FactoredPolicy(nvec)
    dist = joint_distribution(policy, obs, nvec, rng).toarray()
    p = policy.action_probabilities(obs)
    expected = (p[0][:, :, None, None] * p[1][:, None, :, None] * p[2][:, None, None, :]).reshape(40, -1)
    np.testing.assert_allclose(dist, expected, atol=1e-12)
