"""Sharded evaluation without a cluster: layout, the cross-shard budget reduce, bad input.

The Ray runs (10^5 customers in 4 shards on a real local cluster) are in tests/test_ray_cluster.py;
here the same shard code runs in-process (``executor="local"``), which is what the Ray actors run.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rapport.envs as envs
from rapport.agents.baselines import MassMarketing, RFMSegmentRules, UniformRandom
from rapport.agents.constraints import BudgetConstraint, ContactRules
from rapport.experiments.builders import schema_of
from rapport.experiments.evaluation import EvalSettings, block_sums, evaluate, rollout
from rapport.experiments.launchers.ray_cluster import RayConfig, is_loopback
from rapport.experiments.sharding import (
    ShardPool,
    block_starts,
    budget_candidates,
    budget_cutoff,
    evaluate_sharded,
    ranked_before,
    shard_bounds,
    split_budget,
)

SCHEMA = schema_of(envs.PopulationEnv(num_envs=2))


def _settings(customers=3000, horizon=5, blocks=30, seeds=(4,)):
    return EvalSettings(envs.get_scenario("retail"), customers=customers, horizon=horizon, seeds=seeds,
                        blocks=blocks)


def test_shards_are_runs_of_whole_evaluation_blocks():
    edges = block_starts(1003, 10)
    assert np.array_equal(np.diff(edges), [len(a) for a in np.array_split(np.arange(1003), 10)])
    bounds = shard_bounds(1003, 10, 3)
    assert [(b0, b1) for b0, b1, _, _ in bounds] == [(0, 4), (4, 7), (7, 10)]
    assert bounds[0][2] == 0 and bounds[-1][3] == 1003
    assert all(bounds[i][3] == bounds[i + 1][2] for i in range(2))


@pytest.mark.parametrize("shards", [0, -1, 2.5, True, 11])
def test_bad_shard_counts_are_rejected(shards):
    with pytest.raises(ValueError, match="shards"):
        shard_bounds(1000, 10, shards)


class FixedActions:
    """A deterministic policy that returns the actions it was built with (for the budget test)."""

    def __init__(self, actions):
        self.actions = actions

    def act(self, obs, rng, *, action_mask=None):
        return self.actions.copy(), np.ones(len(self.actions))


def _obs_with_scores(p_alive, avg_spend):
    obs = np.zeros((len(p_alive), SCHEMA.n_features), np.float32)
    obs[:, SCHEMA.feature_index("p_alive")] = p_alive
    obs[:, SCHEMA.feature_index("avg_spend")] = avg_spend
    return obs


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), shards=st.integers(1, 7), seed=st.integers(0, 2**31 - 1),
       budget_share=st.floats(0.0, 1.2))
def test_budget_reduce_across_shards_funds_exactly_what_one_batch_funds(n, shards, seed, budget_share):
    rng = np.random.default_rng(seed)
    # few distinct scores -> many ties, broken by customer index as in one batch
    obs = _obs_with_scores(rng.choice([0.2, 0.5, 1.0], n), rng.choice([10.0, 20.0], n))
    actions = np.stack([rng.integers(0, 6, n), np.zeros(n, np.int64), rng.integers(0, 4, n)], axis=1)
    actions[rng.random(n) < 0.3] = 0  # do-nothing rows cost nothing
    one_batch = BudgetConstraint(FixedActions(actions), SCHEMA, weekly_budget=1.0)
    budget = budget_share * float(one_batch.cost(obs, actions).sum())
    one_batch.weekly_budget = budget
    expected, _ = one_batch.act(obs, rng)

    cost, score = one_batch.cost(obs, actions), obs[:, 4].astype(np.float64) * obs[:, 3]
    customer = np.arange(n)
    parts = np.array_split(customer, min(shards, n))
    cands = [budget_candidates(score[p], customer[p], cost[p], budget) for p in parts]
    cutoff = budget_cutoff(cands, budget)
    funded = np.ones(n, bool) if cutoff is None else (cost <= 0) | ranked_before(score, customer, cutoff)
    assert np.array_equal(np.where(funded[:, None], actions, 0), expected)


def test_budget_must_be_the_outermost_wrapper():
    inner = BudgetConstraint(MassMarketing(SCHEMA), SCHEMA, weekly_budget=10.0)
    with pytest.raises(ValueError, match="outermost"):
        split_budget(ContactRules(inner, SCHEMA, max_contacts_4w=2))
    policy, budget = split_budget(BudgetConstraint(ContactRules(MassMarketing(SCHEMA), SCHEMA), SCHEMA,
                                                   weekly_budget=5.0))
    assert isinstance(policy, ContactRules) and budget.weekly_budget == 5.0


def test_local_shards_equal_single_process_rollout_with_budget_and_oracle():
    s = _settings()
    budgeted = BudgetConstraint(MassMarketing(SCHEMA, channel="email", spend_level=1, every_k_weeks=1,
                                              horizon=s.horizon), SCHEMA, weekly_budget=0.05 * s.customers)
    from rapport.agents.baselines import Oracle

    def oracle(env):
        return Oracle(schema_of(env), env.expected_myopic_profit)

    with ShardPool(s, 3, executor="local") as pool:
        for policy in (budgeted, oracle, RFMSegmentRules(SCHEMA, horizon=s.horizon)):
            ref = rollout(policy, s, 4)
            r = pool.rollout(policy, 4, return_values=True)
            assert np.array_equal(r.values, ref.values)
            assert np.array_equal(r.block_sums, block_sums(ref.values, s.n_blocks)[0])
            np.testing.assert_allclose(r.weekly_profit, ref.weekly_profit, rtol=1e-12, atol=1e-12)
        assert pool.rollout(budgeted, 4).defunded.sum() > 0  # the budget did bind


def test_one_shard_equals_rollout_even_for_a_stochastic_policy():
    s = _settings(customers=800, blocks=8)
    ref = rollout(UniformRandom(SCHEMA), s, 9)
    with ShardPool(s, 1, executor="local") as pool:
        assert np.array_equal(pool.rollout(UniformRandom(SCHEMA), 9, return_values=True).values, ref.values)


def test_evaluate_sharded_gives_evaluates_block_table():
    s = _settings(customers=1200, horizon=4, blocks=12, seeds=(1, 2))
    policies = {"rfm": RFMSegmentRules(SCHEMA, horizon=s.horizon), "mass": MassMarketing(SCHEMA, horizon=s.horizon)}
    roles = {"mass": "baseline"}
    ref = evaluate(policies, s, roles=roles)
    ev = evaluate_sharded(policies, s, shards=4, roles=roles, executor="local")
    assert ev.blocks.equals(ref.blocks)
    np.testing.assert_allclose(ev.weekly.profit_per_customer, ref.weekly.profit_per_customer, rtol=1e-12)


def test_factory_with_budget_needs_the_global_budget():
    s = _settings(customers=600, blocks=6)

    def factory(env):
        return BudgetConstraint(MassMarketing(schema_of(env)), schema_of(env), weekly_budget=0.01 * env.num_envs)

    with ShardPool(s, 2, executor="local") as pool:
        with pytest.raises(ValueError, match="budget_per_customer"):
            pool.rollout(factory, 4)
        r = pool.rollout(factory, 4, budget_per_customer=0.01, return_values=True)
    assert np.array_equal(r.values, rollout(factory, s, 4).values)  # one process: 0.01 x 600


@pytest.mark.parametrize("bad, match", [
    ({"address": "localhost"}, "no port"),
    ({"num_cpus": 0}, "num_cpus"),
    ({"adress": "auto"}, "unknown ray option"),
])
def test_ray_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        RayConfig.from_mapping(bad)


def test_loopback_detection():
    assert is_loopback(None) and is_loopback("127.0.0.1:6379") and is_loopback("ray://localhost:10001")
    assert not is_loopback("10.0.0.5:6379")
