"""The bandit training loop gives a ``lifetime_value_shaped`` learner the residual values it shapes with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from rapport.agents.bandits import LinearBandit
from rapport.envs.value import residual_value
from rapport.experiments import builders
from rapport.experiments.config import register_configs, to_settings
from rapport.experiments.errors import UserError
from rapport.experiments.tracking import NullTracker
from rapport.experiments.training import train_agent

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def settings(*overrides):
    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return to_settings(compose("train", overrides=["agent=linucb_owned", "debug=fast", "tracking=none",
                                                        "progress=false", "train.customers=64", *overrides]))


def test_shaped_bandit_learns_profit_plus_the_discounted_change_in_residual_value(monkeypatch):
    s = settings("agent.params.reward=lifetime_value_shaped")
    seen = []
    original_update = LinearBandit.update

    def spy_update(self, obs, actions, rewards):
        seen.append((np.asarray(actions).copy(), np.asarray(rewards, np.float64).copy()))
        return original_update(self, obs, actions, rewards)

    monkeypatch.setattr(LinearBandit, "update", spy_update)
    scenario = builders.resolve_scenario(s.env)
    seeds = builders.derive_seeds(0, 1)
    train_agent(s, seeds, scenario, NullTracker(), progress=False)
    assert len(seen) == s.env.horizon
    # replay the first week on the same population with the learner's actions: the reward it
    # learned from is profit + d·V(s') − V(s), V from latent truth (envs.value.residual_value)
    d = s.evaluation.weekly_discount
    env = builders.make_env(s.env, customers=s.train.customers, scenario=scenario, value_discount=d)
    env.reset(seed=seeds.train_env)
    v0 = residual_value(scenario, env.sim.state, None, d)
    actions, rewards = seen[0]
    _, profit, _, _, info = env.step(actions)
    v1 = residual_value(scenario, env.sim.state, None, d)
    np.testing.assert_allclose(rewards, profit + d * v1 - v0, rtol=1e-6, atol=1e-6)
    assert np.abs(rewards - profit).max() > 0.01  # the shaping term is there


def test_a_value_discount_that_contradicts_the_evaluation_is_refused_as_bad_input():
    with pytest.raises(UserError, match=r"value_discount=0.9 contradicts reward='lifetime_value_shaped'"):
        settings("agent.params.reward=lifetime_value_shaped", "+agent.params.value_discount=0.9")
    with pytest.raises(UserError, match=r"value_discount only applies to reward='lifetime_value_shaped'"):
        settings("agent.params.reward=profit", "+agent.params.value_discount=0.9")
    s = settings("agent.params.reward=lifetime_value_shaped")  # the evaluation's own: fine
    assert s.agent.params.get("value_discount") is None
