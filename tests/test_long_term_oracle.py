"""The long-term oracle and the lookahead under it (rapport.envs.lookahead, rapport.agents.long_term_oracle).

* the lookahead leaves the env untouched and sees no future it should not;
* drop-out weighted instead of sampled is unbiased (same expectation as sampling it);
* with the full horizon and mass marketing as continuation, a lookahead value is the
  evaluation's lifetime value of mass marketing (same currency, same discounting);
* both oracles beat mass marketing on the quantity each maximises, paired on one population;
* regret on lifetime value is taken against the long-term oracle when it is evaluated.
"""

from __future__ import annotations

import numpy as np
import pytest

import rapport.envs as envs
from rapport.agents.baselines import MassMarketing, Oracle
from rapport.agents.long_term_oracle import LongTermOracle, default_candidates
from rapport.envs.dynamics import transition
from rapport.envs.lookahead import _rollout_sim
from rapport.experiments import builders
from rapport.experiments.evaluation import EvalSettings, evaluate, summarize

SCENARIO = envs.get_scenario("retail")


def _env(n: int, seed: int = 11) -> envs.PopulationEnv:
    env = envs.PopulationEnv(num_envs=n, scenario=SCENARIO)
    env.reset(seed=seed)
    return env


def _mass(env):
    return MassMarketing(builders.schema_of(env), channel="email", every_k_weeks=2, horizon=env.horizon)


def _as_continuation(policy):
    return lambda obs, mask: policy.act(obs, np.random.default_rng(0), action_mask=mask)[0]


def test_lookahead_leaves_the_env_and_its_future_unchanged() -> None:
    a, b = _env(300), _env(300)
    cands = default_candidates(builders.schema_of(a))
    for _ in range(3):
        a.lookahead_values(cands, _as_continuation(_mass(a)), weeks=4, samples=2)
        actions = np.tile([1, 1, 0], (300, 1))
        oa, ra, *_ = a.step(actions)
        ob, rb, *_ = b.step(actions)
        np.testing.assert_array_equal(oa, ob)
        np.testing.assert_array_equal(ra, rb)


def test_lookahead_draws_fresh_noise_not_the_populations_future() -> None:
    """The real week's purchases are keyed by state.key; a rollout copy must not reproduce them."""
    env = _env(20000)
    rollout = _rollout_sim(env.sim, 1, 0, np.zeros(env.sim.n, np.uint32))
    none = np.zeros((20000, 3), np.int64)
    imagined = rollout.step(rollout.check_action(none)).orders > 0
    _, _, _, _, info = env.step(none)
    real = info["orders"] > 0
    assert 0.005 < real.mean() and 0.5 < imagined.mean() / real.mean() < 2  # same rates ...
    overlap = (imagined & real).sum() / real.sum()
    assert overlap < 0.5  # ... different luck (the same keys would give overlap 1)


def test_weighted_survival_is_unbiased() -> None:
    env = _env(3000, seed=5)
    cands = np.array([[0, 0, 0], [1, 0, 0], [1, 3, 0]])
    cont = _as_continuation(_mass(env))
    weighted = env.lookahead_values(cands, cont, weeks=12, samples=16, seed=1).mean(axis=0)
    sampled = np.stack([env.lookahead_values(cands, cont, weeks=12, samples=8, seed=100 + k,
                                             weighted_survival=False).mean(axis=0) for k in range(4)])
    se = sampled.std(axis=0, ddof=1) / 2 + 0.05
    assert np.all(np.abs(sampled.mean(axis=0) - weighted) < 4 * se), (weighted, sampled)


def test_survival_weights_replace_sampled_drop_out() -> None:
    env = _env(5000, seed=3)
    s = env.sim.state.copy()
    alive = s.alive.copy()
    w = np.ones(s.n)
    plan = env.sim.check_action(np.tile([1, 3, 0], (s.n, 1)))
    for _ in range(6):
        transition(env.sim.model, s, plan, survival=w)
    np.testing.assert_array_equal(s.alive, alive)
    assert (w <= 1).all() and (w[~alive] == 1).all()
    assert (w[alive] < 1).mean() > 0.05  # buyers carried the BG/NBD coin


def test_full_horizon_lookahead_is_the_evaluations_lifetime_value() -> None:
    n = 3000
    env = _env(n, seed=21)
    cont = _as_continuation(_mass(env))
    q = env.lookahead_values(np.array([[1, 0, 0]]), cont, weeks=52, samples=4, seed=3)[:, 0]
    es = EvalSettings(SCENARIO, n, 52, (21,), annual_discount_rate=0.10)
    s = summarize(evaluate({"mass": _mass}, es, roles={"mass": "baseline"}), n_boot=200)
    row = s.kpis[(s.kpis.policy == "mass") & (s.kpis.key == "kpi/lifetime_value_per_customer")].iloc[0]
    # the same customers, other luck: the evaluation's CI covers the lookahead's mean
    width = row.ci_high - row.ci_low
    assert row.ci_low - 0.25 * width < q.mean() < row.ci_high + 0.25 * width, (q.mean(), row)


@pytest.fixture(scope="module")
def oracle_summary():
    es = EvalSettings(SCENARIO, 2000, 52, (7001,), annual_discount_rate=0.10)
    policies = {
        "mass": _mass,
        "oracle": lambda env: Oracle(builders.schema_of(env), env.expected_myopic_profit),
        "long_term_oracle": lambda env: LongTermOracle(builders.schema_of(env), env.lookahead_values,
                                                       horizon=env.horizon),
    }
    roles = {"mass": "baseline", "oracle": "oracle", "long_term_oracle": "long_term_oracle"}
    return summarize(evaluate(policies, es, roles=roles), baseline="mass", oracle="oracle",
                     long_term_oracle="long_term_oracle", n_boot=500)


def _diff(summary, policy: str, key: str):
    return summary.diffs[(summary.diffs.policy == policy) & (summary.diffs.key == key)].iloc[0]


def test_each_oracle_beats_mass_marketing_on_what_it_maximises(oracle_summary) -> None:
    myopic = _diff(oracle_summary, "oracle", "kpi/short_term_profit_per_customer")
    assert myopic.ci_low > 0
    long_term = _diff(oracle_summary, "long_term_oracle", "kpi/lifetime_value_per_customer")
    assert long_term.ci_low > 0
    # and the myopic one pays for it in lifetime value, which is why the ceiling must be long-term
    assert _diff(oracle_summary, "oracle", "kpi/lifetime_value_per_customer")["diff"] < long_term["diff"]


def test_lifetime_value_regret_is_against_the_long_term_oracle(oracle_summary) -> None:
    r = oracle_summary.regret.set_index(["policy", "key"])
    assert r.loc[("mass", "kpi/lifetime_value_per_customer"), "oracle"] == "long_term_oracle"
    assert r.loc[("mass", "kpi/profit_per_customer"), "oracle"] == "oracle"
    assert r.loc[("mass", "kpi/lifetime_value_per_customer"), "regret"] > 0
    assert "regret/lifetime_value_per_customer" in oracle_summary.metrics("mass")


def test_errors_name_what_was_wrong() -> None:
    env = _env(50)
    schema = builders.schema_of(env)
    with pytest.raises(ValueError, match="candidates must have shape"):
        env.lookahead_values(np.zeros((3, 2), np.int64), lambda o, m: np.zeros((len(o), 3), np.int64))
    with pytest.raises(ValueError, match="continuation returned shape"):
        env.lookahead_values(np.zeros((1, 3), np.int64), lambda o, m: np.zeros((1, 3), np.int64), weeks=2)
    with pytest.raises(ValueError, match="samples must be an integer"):
        env.lookahead_values(np.zeros((1, 3), np.int64), lambda o, m: o, samples=0)
    with pytest.raises(ValueError, match="continuation must be one of"):
        LongTermOracle(schema, env.lookahead_values, continuation="rfm")
    with pytest.raises(KeyError, match="unknown offer"):
        LongTermOracle(schema, env.lookahead_values, continuation_params={"offer": "discount_99"})


def test_long_term_oracle_is_latent_truth_and_configured() -> None:
    from rapport.experiments.config import AgentConfig

    cfg = AgentConfig(name="long_term_oracle", family="baseline", target="rapport.agents.long_term_oracle.LongTermOracle")
    assert builders.needs_latent_truth(cfg)
    env = _env(20)
    policy = builders.build_core_policy(cfg, env)
    actions, prop = policy.act(env.sim.observe(), np.random.default_rng(0), action_mask=env.sim.action_mask())
    assert actions.shape == (20, 3) and (prop == 1).all()
