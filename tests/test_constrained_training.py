"""Contact caps and quiet weeks hold while an RL agent learns: masks for MaskablePPO, enforced
actions for learners that ignore masks, and the same rule at evaluation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rapport.agents.constrained_training import RuleMaskedEnv
from rapport.agents.constraints import ContactRules
from rapport.agents.rl import make_maskable_ppo
from rapport.agents.sb3_adapter import BatchedVecEnv
from rapport.experiments import builders
from rapport.experiments.config import AgentConfig, ConstraintsConfig, EnvConfig

torch.set_num_threads(1)
PPO_CFG = AgentConfig(name="ppo", family="rl", target="rapport.agents.rl.make_ppo", objective="lifetime_value")


def _training_env(n: int, **rules) -> RuleMaskedEnv:
    env = builders.make_training_env(EnvConfig(customers=n, horizon=12), PPO_CFG, 0.998,
                                     constraints=ConstraintsConfig(**rules))
    assert isinstance(env, RuleMaskedEnv)
    return env


def _contacts_4w(env: RuleMaskedEnv, obs: np.ndarray) -> np.ndarray:
    cols = [env.rules.schema.feature_index(f"contacts_4w_{c}") for c in env.rules.schema.channel_names]
    return obs[:, cols].sum(axis=1)


def test_no_rules_no_wrapper() -> None:
    env = builders.make_training_env(EnvConfig(customers=8, horizon=4), PPO_CFG, 0.998,
                                     constraints=ConstraintsConfig())
    assert not isinstance(env, RuleMaskedEnv)


def test_learner_that_ignores_masks_cannot_break_the_cap() -> None:
    """E-mail everyone every week (what plain PPO might sample): the cap of 2 contacts in any
    5 weeks holds in the world, blocked contacts became "no contact, no offer", and the mask
    says so in advance."""
    env = _training_env(300, max_contacts_4w=2)
    obs, info = env.reset(seed=3)
    email = 1 + env.rules.schema.channel_names.index("email")
    C = len(env.rules.schema.channel_names)
    for _ in range(10):
        before = _contacts_4w(env, obs)
        capped = before + 1 > 2
        assert not info["action_mask"][capped, 1:C + 1].any()  # no channel for capped rows
        assert not info["action_mask"][capped, C + 2:C + 1 + env.rules.schema.nvec[1]].any()
        actions = np.tile([email, 1, 0], (env.num_envs, 1))
        obs, _, terminated, truncated, info = env.step(actions)
        live = ~(np.asarray(terminated) | np.asarray(truncated))
        assert (_contacts_4w(env, obs)[live] <= 2).all()
    assert env.stats["replaced_actions"] > 0


def test_quiet_weeks_mask_follows_weeks_since_contact() -> None:
    env = _training_env(200, quiet_weeks=3)
    obs, info = env.reset(seed=5)
    since = [env.rules.schema.feature_index(f"weeks_since_contact_{c}") for c in env.rules.schema.channel_names]
    C = len(env.rules.schema.channel_names)
    email = 1 + env.rules.schema.channel_names.index("email")
    for _ in range(6):
        quiet = obs[:, since].min(axis=1) < 3
        assert not info["action_mask"][quiet, 1:C + 1].any()
        obs, _, _, _, info = env.step(np.tile([email, 0, 0], (env.num_envs, 1)))


def test_maskable_ppo_trains_inside_the_rules() -> None:
    """MaskablePPO learns on the rule-masked env: the rules did block contacts during training,
    yet not one action had to be replaced (the learner only sampled what the mask allowed)."""
    env = _training_env(256, max_contacts_4w=1)
    model = make_maskable_ppo(BatchedVecEnv(env), rollout_size=2048, seed=0, ent_coef=0.05)
    model.learn(4096)
    assert env.rules.stats["contact_blocked_rows"] > 0
    assert env.stats["replaced_actions"] == 0


def test_rules_must_match_the_env() -> None:
    env = builders.make_env(EnvConfig(customers=4, horizon=4), autoreset_mode="same_step")
    schema = builders.schema_of(env)
    other = dataclasses.replace(schema, nvec=(schema.nvec[0], schema.nvec[1] + 1, schema.nvec[2]),
                                offer_names=(*schema.offer_names, "extra"),
                                offer_discounts=(*schema.offer_discounts, 0.0))
    with pytest.raises(ValueError, match="rules were built for actions"):
        RuleMaskedEnv(env, ContactRules(None, other, max_contacts_4w=1))  # type: ignore[arg-type]
