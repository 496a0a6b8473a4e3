"""Contact caps and quiet periods while an RL agent learns, not only when it is evaluated.

Bandits learn inside :class:`rapport.agents.constraints.ContactRules` already (the rules wrap the
learner as it acts). An SB3 learner acts inside SB3's own loop, so for it the rules go into the
training env instead: :class:`RuleMaskedEnv` wraps the batched ``VectorEnv`` and

* ANDs the rules into every ``info["action_mask"]`` it returns (reset and step, done rows'
  fresh observations included), so ``MaskablePPO`` never samples a blocked contact and learns
  the value of what it may actually do;
* enforces the rules on the actions it is given: a learner that ignores masks (plain PPO, A2C)
  has a blocked contact replaced by "no contact, no offer" before the env sees it (media spend
  is not a contact and stays). The world therefore never sees a contact the rules forbid; such
  a learner just learns that a blocked contact does nothing. ``stats["replaced_actions"]``
  counts them (0 under ``MaskablePPO``).

Evaluation applies the same :class:`~rapport.agents.constraints.ContactRules` to the trained policy
(``rapport.experiments.builders.wrap_constraints``), so training and evaluation share one rule. The
rules read observable features only (``contacts_4w_<channel>``, ``weeks_since_contact_<channel>``)
and the env must be the raw population (``MultiDiscrete`` (channel, offer, spend) actions),
below any SB3 adapter.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import VectorEnv, VectorWrapper

from rapport.agents.constraints import ContactRules

__all__ = ["RuleMaskedEnv"]


class RuleMaskedEnv(VectorWrapper):
    """A batched env whose action masks and executed actions obey contact ``rules``.

    Parameters
    ----------
    env
        The population ``VectorEnv`` (its info carries ``action_mask``; if not, all actions
        are taken as allowed before the rules).
    rules
        A :class:`~rapport.agents.constraints.ContactRules` (its wrapped policy is not used; ``None``
        is fine).
    """

    def __init__(self, env: VectorEnv, rules: ContactRules):
        super().__init__(env)
        nvec = getattr(env.single_action_space, "nvec", None)
        if nvec is None or len(nvec) != 3:
            raise ValueError("RuleMaskedEnv needs (channel, offer, spend) MultiDiscrete actions, got "
                             f"{env.single_action_space}; wrap the population env, not an SB3 adapter")
        if tuple(int(k) for k in nvec) != tuple(rules.schema.nvec):
            raise ValueError(f"rules were built for actions {tuple(rules.schema.nvec)}, the env has "
                             f"{tuple(int(k) for k in nvec)}")
        self.rules = rules
        self._allowed: np.ndarray | None = None  # (n, C) contacts the rules allow this week
        self.stats: dict[str, int] = {"replaced_actions": 0}

    def _masked(self, obs: Any, info: dict[str, Any]) -> dict[str, Any]:
        obs = np.asarray(obs)
        self._allowed = self.rules.contact_allowed(obs)
        info = dict(info)
        info["action_mask"] = self.rules.restrict(obs, info.get("action_mask"), self._allowed)
        return info

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, self._masked(obs, info)

    def step(self, actions: Any):
        if self._allowed is None:
            raise RuntimeError("call reset() before step()")
        actions = np.array(actions, dtype=np.int64, copy=True).reshape(self.num_envs, 3)
        channel = actions[:, 0]
        contacted = channel > 0
        rows = np.flatnonzero(contacted)
        blocked = np.zeros(self.num_envs, bool)
        blocked[rows] = ~self._allowed[rows, channel[rows] - 1]
        if blocked.any():
            actions[blocked, 0] = 0
            actions[blocked, 1] = 0
            self.stats["replaced_actions"] += int(blocked.sum())
        obs, reward, terminated, truncated, info = self.env.step(actions)
        return obs, reward, terminated, truncated, self._masked(obs, info)
