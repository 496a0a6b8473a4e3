"""``Rapport/Customer-v0``: one customer, the same transition code as the population."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rapport.envs.creative import CatalogueView
from rapport.envs.observation import FEATURE_NAMES, observation_bounds
from rapport.envs.scenario import Scenario
from rapport.envs.simulator import Simulator


class CustomerEnv(CatalogueView, gym.Env):
    """A single customer of :class:`envs.PopulationEnv` (see its docstring for the full spec).

    It is a population of one row whose global index is ``customer_index``: with the same seed,
    its trajectory is bit-identical to row ``customer_index`` of a population env with
    ``customer_offset=0``. Observation ``Box(float32, (32,))``, action ``MultiDiscrete([6, 8, 4])``
    in ``retail``, reward = this customer's weekly profit; ``info`` holds scalars of the same keys
    as the population's per-customer arrays, ``action_mask`` of shape (sum(nvec),), ``market``
    and ``latent``. It is a market of one: a reset resets its market too, so with mass media on
    it matches a population row only while that row is not reset on its own.
    """

    metadata = {"render_modes": []}

    def __init__(self, scenario: str | Scenario = "retail", horizon: int = 52, customer_index: int = 0,
                 include_latent: bool = True, max_episode_steps: int | None = None,
                 render_mode: str | None = None):
        if max_episode_steps is not None:
            horizon = max_episode_steps
        self.sim = Simulator(scenario, 1, horizon, customer_offset=customer_index)
        self.include_latent = include_latent
        self.render_mode = render_mode
        low, high = observation_bounds(self.sim.model)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.MultiDiscrete(self.sim.action_nvec)
        self.feature_names = FEATURE_NAMES
        self._started = False

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.sim.reset(seed)
        self._started = True
        return self.sim.observe()[0].copy(), self._row_info(self.sim.info(None, self.include_latent))

    def step(self, action):
        if not self._started:
            raise RuntimeError("call reset() before step()")
        plan, creative = self.sim.check_plan(np.asarray(action).reshape(1, -1))
        out = self.sim.step(plan, treatment_effect=self.include_latent, creative=creative)
        terminated = bool(self.sim.unreachable()[0])
        truncated = bool(self.sim.at_horizon()[0]) and not terminated
        info = self._row_info(self.sim.info(out, self.include_latent))
        return self.sim.observe()[0].copy(), float(out.profit[0]), terminated, truncated, info

    @staticmethod
    def _row_info(info: dict[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for k, v in info.items():
            if k == "market":  # population-level scalars
                row[k] = dict(v)
            elif isinstance(v, dict):
                row[k] = {kk: vv[0].item() for kk, vv in v.items()}
            elif k == "action_mask":
                row[k] = v[0].copy()
            else:
                row[k] = v[0].item()
        return row

    def set_mass_media_budget(self, budget: float | None) -> None:
        """As :meth:`envs.PopulationEnv.set_mass_media_budget` (this customer's market)."""
        self.sim.set_mass_media_budget(budget)

    def expected_myopic_profit(self, action) -> float:
        return float(self.sim.expected_myopic_profit(np.asarray(action).reshape(1, -1))[0])
