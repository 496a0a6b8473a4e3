"""Agent-level contact rules (agent.rules), per-agent training budgets (agent.timesteps) and the
training checkpoint hook."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from rapport.experiments import builders
from rapport.experiments.config import DEFAULT_TIMESTEPS, register_configs, to_settings
from rapport.experiments.errors import UserError
from rapport.experiments.tracking import NullTracker
from rapport.experiments.training import train_agent

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def settings(*overrides):
    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return to_settings(compose("train", overrides=list(overrides)))


def test_agent_rules_bind_the_agent_not_the_baseline():
    s = settings("agent=maskable_ppo_capped", "agent@evaluation.baseline=mass")
    assert s.agent_constraints.max_contacts_4w == 2
    assert s.constraints_for(s.evaluation.baseline) is s.constraints  # mass stays uncapped
    assert s.constraints.max_contacts_4w is None
    both = settings("agent=maskable_ppo_capped", "constraints.max_contacts_4w=3", "constraints.quiet_weeks=1",
                    "constraints.weekly_budget_per_customer=0.5")
    c = both.agent_constraints  # the stricter of run and agent rules
    assert (c.max_contacts_4w, c.quiet_weeks, c.weekly_budget_per_customer) == (2, 1, 0.5)
    assert settings("agent=maskable_ppo_capped", "constraints.max_contacts_4w=1").agent_constraints.max_contacts_4w == 1


def test_agent_rules_are_masks_while_it_learns_and_around_it_at_evaluation():
    s = settings("agent=maskable_ppo_capped", "debug=fast", "tracking=none", "progress=false")
    env = builders.make_training_env(s.env, s.agent, s.evaluation.weekly_discount, customers=16,
                                     constraints=s.agent_constraints)
    layers = []
    while env is not None:
        layers.append(type(env).__name__)
        env = getattr(env, "env", None)
    assert "RuleMaskedEnv" in layers and "PrivilegedObservation" in layers  # the cap is a mask in training
    trained = train_agent(s, builders.derive_seeds(0, 1), builders.resolve_scenario(s.env), NullTracker(),
                          progress=False)
    eval_env = builders.make_env(s.env, customers=200)
    policy = trained.policy_factory(eval_env)
    obs, info = eval_env.reset(seed=5)
    rng = np.random.default_rng(0)
    contacts = np.zeros((200, s.env.horizon), bool)
    for t in range(s.env.horizon):
        actions, _ = policy.act(obs, rng, action_mask=info["action_mask"])
        contacts[:, t] = actions[:, 0] > 0
        obs, *_, info = eval_env.step(actions)
    window = np.lib.stride_tricks.sliding_window_view(contacts, 5, axis=1).sum(axis=2)
    assert contacts.mean() > 0.2  # an untrained policy contacts often: the cap has work to do
    assert window.max() <= 3  # 2 in the 4 weeks before a decision, plus the decision's own week


def test_training_budget_precedence():
    assert settings("agent=maskable_ppo_capped").timesteps == 10_000_000  # the agent's own
    assert settings("agent=maskable_ppo_capped", "train.timesteps=5000").timesteps == 5000  # set: wins
    assert settings("agent=maskable_ppo_capped", "debug=fast").timesteps == 1024
    assert settings("agent=a2c").timesteps == DEFAULT_TIMESTEPS
    with pytest.raises(UserError, match="agent.timesteps applies to family 'rl' only"):
        settings("agent=linucb", "+agent.timesteps=100")
    with pytest.raises(UserError, match="agent.rules.max_contacts_4w"):
        settings("agent=mass", "agent.rules.max_contacts_4w=-1")


def test_checkpoint_sees_the_current_policy_and_can_stop_training():
    s = settings("agent=ppo", "debug=fast", "tracking=none", "progress=false", "train.timesteps=4096",
                 "train.rollout_size=512", "train.customers=64")
    calls = []

    def checkpoint(step, factory):
        env = builders.make_env(s.env, customers=8)
        obs, info = env.reset(seed=0)
        actions, _ = factory(env).act(obs, np.random.default_rng(0), action_mask=info["action_mask"])
        calls.append((step, actions.shape))
        return len(calls) == 2  # stop at the second check

    trained = train_agent(s, builders.derive_seeds(0, 1), builders.resolve_scenario(s.env), NullTracker(),
                          progress=False, checkpoint=checkpoint, checkpoint_every=1024)
    assert [c[0] for c in calls] == [1024, 2048] and calls[0][1] == (8, 3)
    assert trained.sb3_model.num_timesteps < 4096  # stopped early
