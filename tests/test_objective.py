"""The long-term objective: training rewards in the evaluation's currency (rapport.agents.objective).

* the discounted training return of the lifetime-value objective is the evaluation's
  ``lifetime_value`` customer by customer (and the shaped one differs by a policy-free constant);
* on a world whose optimum is known (``RetentionEnv``), PPO with the myopic objective learns to
  promote and loses lifetime value, PPO with the lifetime-value objective learns not to;
* configuration errors name the key.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rapport.envs as envs
from rapport.agents.objective import LifetimeValueObjective, discount_for
from rapport.agents.rl import make_ppo
from rapport.agents.rl_policy import SB3Policy
from rapport.agents.sb3_adapter import BatchedVecEnv
from rapport.envs.sanity import ChurnEnv, RetentionEnv
from rapport.envs.value import weekly_discount
from rapport.experiments.evaluation import KPI_COLUMNS, EvalSettings, rollout

torch.set_num_threads(1)
D = weekly_discount(0.10)


class EmailEveryone:
    """A deterministic policy that touches every mechanism: e-mail + 10 % discount each week."""

    def act(self, obs, rng, action_mask=None):
        a = np.zeros((obs.shape[0], 3), np.int64)
        a[:, 0], a[:, 1] = 1, 1
        return a, np.ones(obs.shape[0])


def _discounted_first_episode(env, policy, horizon: int, discount: float) -> np.ndarray:
    """sum_t discount^t r_t per row over each row's first episode."""
    obs, _ = env.reset(seed=5)
    total = np.zeros(env.num_envs)
    live = np.ones(env.num_envs, bool)
    for t in range(horizon):
        actions, _ = policy.act(obs, None)
        obs, reward, terminated, truncated, _ = env.step(actions)
        total += np.where(live, discount ** t * reward.astype(np.float64), 0.0)
        live &= ~(terminated | truncated)
    return total


@pytest.fixture(scope="module")
def ledger_ltv() -> np.ndarray:
    settings = EvalSettings(envs.get_scenario("retail"), customers=3000, horizon=20, seeds=(5,))
    out = rollout(EmailEveryone(), settings, 5)
    return out.values[:, KPI_COLUMNS.index("lifetime_value")]


def _training_env(shaping: bool) -> LifetimeValueObjective:
    env = envs.PopulationEnv(num_envs=3000, scenario="retail", horizon=20, autoreset_mode="same_step",
                             include_latent=False, value_discount=D)
    return LifetimeValueObjective(env, D, shaping=shaping)


def test_lifetime_value_return_is_the_evaluations_lifetime_value(ledger_ltv) -> None:
    """d * G_0 == kpi lifetime value for every customer, opt-outs (early ends) included."""
    env = _training_env(shaping=False)
    returns = _discounted_first_episode(env, EmailEveryone(), 20, D)
    np.testing.assert_allclose(D * returns, ledger_ltv, rtol=2e-5, atol=1e-4)
    assert ledger_ltv.std() > 1.0  # customers differ: the comparison is not trivially true


def test_shaped_return_differs_from_lifetime_value_by_the_initial_potential(ledger_ltv) -> None:
    env = _training_env(shaping=True)
    _, info = env.reset(seed=5)
    phi0 = np.asarray(info["residual_value"]).copy()
    returns = _discounted_first_episode(env, EmailEveryone(), 20, D)
    np.testing.assert_allclose(returns, ledger_ltv / D - phi0 / D, rtol=1e-4, atol=1e-3)


def test_horizon_becomes_a_termination_and_raw_profit_stays_in_info() -> None:
    env = _training_env(shaping=False)
    env.reset(seed=1)
    a = np.zeros((env.num_envs, 3), np.int64)
    for _ in range(19):
        _, _, terminated, truncated, info = env.step(a)
    _, reward, terminated, truncated, info = env.step(a)
    assert terminated.all() and not truncated.any()  # no bootstrapping past the terminal value
    assert (reward >= info["profit"] - 1e-5).all() and (reward - info["profit"]).mean() > 10


# ---- a world where myopia provably loses -----------------------------------------------------
def test_retention_env_optimum_by_enumeration() -> None:
    env = RetentionEnv()
    schedules = [{t for t in range(env.horizon) if mask >> t & 1} for mask in range(2 ** env.horizon)]
    ltv = [env.lifetime_value(s) for s in schedules]
    best = schedules[int(np.argmax(ltv))]
    assert best == set(np.flatnonzero(env.optimal_promotion(long_term=True)))
    assert env.optimal_promotion(long_term=True).sum() == 0
    assert env.optimal_promotion(long_term=False).all()
    # simulated lifetime value matches the exact one
    sim = RetentionEnv(num_envs=40000, autoreset_mode="same_step")
    wrapped = LifetimeValueObjective(sim, sim.value_discount)

    class Always:
        def act(self, obs, rng):
            return np.ones(obs.shape[0], np.int64), None

    g = _discounted_first_episode(wrapped, Always(), env.horizon, sim.value_discount)
    assert sim.value_discount * g.mean() == pytest.approx(env.lifetime_value(set(range(4))), rel=0.02)


def _learned_schedule(long_term: bool, seed: int = 0) -> np.ndarray:
    env = RetentionEnv(num_envs=512, autoreset_mode="same_step")
    venv = BatchedVecEnv(LifetimeValueObjective(env, env.value_discount) if long_term else env)
    model = make_ppo(venv, rollout_size=4096, n_minibatches=4, seed=seed, learning_rate=3e-3,
                     gamma=env.value_discount if long_term else 0.95, ent_coef=0.0, n_epochs=8)
    model.learn(60_000)
    policy = SB3Policy(model, greedy=True)
    weeks = (np.arange(env.horizon, dtype=np.float32) / env.horizon)[:, None]
    actions, _ = policy.act(weeks, np.random.default_rng(0))
    return np.asarray(actions).reshape(-1).astype(bool)


def test_myopic_ppo_promotes_and_loses_lifetime_value_long_term_ppo_does_not() -> None:
    env = RetentionEnv()
    myopic, long_term = _learned_schedule(False), _learned_schedule(True)
    assert myopic[-1] and myopic.sum() >= 3, myopic  # the myopic optimum promotes (every week)
    assert not long_term.any(), long_term            # the long-term optimum never does
    ltv = {name: env.lifetime_value(set(np.flatnonzero(s)))
           for name, s in {"myopic": myopic, "long": long_term}.items()}
    assert ltv["long"] > ltv["myopic"] + 3.0


# ---- errors --------------------------------------------------------------------------------
def test_discount_for_rejects_a_contradicting_gamma() -> None:
    assert discount_for("lifetime_value", D, None) == D
    assert discount_for("myopic", D, None) == 0.95
    assert discount_for("myopic", D, 0.9) == 0.9
    with pytest.raises(ValueError, match="gamma=0.95 contradicts objective='lifetime_value'"):
        discount_for("lifetime_value", D, 0.95)
    with pytest.raises(ValueError, match="objective must be one of"):
        discount_for("lifetime", D, None)


def test_wrapper_errors_name_what_is_missing() -> None:
    with pytest.raises(ValueError, match="same_step"):
        LifetimeValueObjective(RetentionEnv(num_envs=4), 0.95)
    with pytest.raises(ValueError, match="value_discount"):
        LifetimeValueObjective(RetentionEnv(num_envs=4, autoreset_mode="same_step"), 0.9)
    wrapped = LifetimeValueObjective(ChurnEnv(num_envs=4, autoreset_mode="same_step"), 0.95)
    with pytest.raises(KeyError, match="residual_value"):
        wrapped.reset(seed=0)
    with pytest.raises(ValueError, match="value_discount must be a weekly discount"):
        envs.PopulationEnv(num_envs=4, value_discount=1.5)
