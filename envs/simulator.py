"""The engine both envs share: a population, its seed, its clock, and one week at a time.

:class:`Simulator` owns the state and calls :func:`rapport.envs.dynamics.transition` and the observation
functions; :class:`envs.PopulationEnv` (all rows) and :class:`envs.CustomerEnv` (one row) are thin
Gymnasium faces on it, so there is exactly one copy of the dynamics.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rapport.envs import observation as obs_mod
from rapport.envs.dynamics import (
    CompiledScenario,
    Outcome,
    as_plan,
    compile_scenario,
    expected_myopic_profit,
    transition,
)
from rapport.envs.market import Market
from rapport.envs.marketing import as_creative_plan
from rapport.envs.scenario import Scenario, get_scenario
from rapport.envs.state import PopulationState, allocate, draw_customers


def check_positive_int(name: str, value: Any, valid: str = ">= 1") -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an integer {valid}, got {value!r}")
    return int(value)


class Simulator:
    """A population of ``n`` customers with global indices ``customer_offset + arange(n)``, and
    the market (mass media, awareness) they live in."""

    def __init__(self, scenario: str | Scenario, n: int, horizon: int, customer_offset: int = 0):
        self.scenario = get_scenario(scenario)
        self.model: CompiledScenario = compile_scenario(self.scenario)
        self.n = check_positive_int("num_envs", n)
        self.horizon = check_positive_int("horizon", horizon)
        if self.horizon > obs_mod.MAX_HORIZON:
            raise ValueError(f"horizon must be an integer in [1, {obs_mod.MAX_HORIZON}] weeks, got {horizon}")
        if isinstance(customer_offset, bool) or not isinstance(customer_offset, int | np.integer) \
                or customer_offset < 0:
            raise ValueError(f"customer_offset must be an integer >= 0, got {customer_offset!r}")
        self.state: PopulationState = allocate(self.scenario, self.n)
        self.state.customer_id[:] = np.arange(self.n, dtype=np.int64) + int(customer_offset)
        self.seed: int | None = None
        self.alive_prob = np.ones(self.n, np.float32)
        self.nvec = np.array(self.model.nvec, dtype=np.int64)  # the plan's (channel, offer, spend)
        self.action_nvec = np.array(self.model.action_nvec, dtype=np.int64)  # + catalogue size
        self.market = Market(self.scenario)

    # ---- episodes ----------------------------------------------------------------------
    def reset(self, seed: int | None) -> None:
        """New customers in every row: episode 0 of ``seed``, or the next episode if None."""
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
                raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
            self.seed = int(seed)
            self.state.episode[:] = 0
        elif self.seed is None:
            self.seed = int(np.random.SeedSequence().entropy % (2**63))
            self.state.episode[:] = 0
        else:
            self.state.episode += 1
        self.market.reset()
        self.reset_rows(np.arange(self.n))

    def reset_rows(self, rows: np.ndarray) -> None:
        """Redraw the customers in ``rows`` (their episode counters must already be set)."""
        assert self.seed is not None
        draw_customers(self.scenario, self.state, rows, self.seed)
        if rows.size == self.n:
            self.alive_prob = obs_mod.p_alive(self.model, self.state)
            obs_mod.update_stage(self.state, self.alive_prob, None)
        else:
            sub = self.state.take(rows)
            pa = obs_mod.p_alive(self.model, sub)
            obs_mod.update_stage(sub, pa, None)
            self.alive_prob[rows] = pa
            self.state.stage[rows] = sub.stage

    # ---- one week ------------------------------------------------------------------------
    @property
    def action_width(self) -> int:
        """Columns of an action: 3, or 4 with a creative catalogue."""
        return int(self.action_nvec.size)

    def check_action(self, action: Any) -> np.ndarray:
        """Validate a (n, 3) integer action array — (n, 4) with a creative catalogue — and return
        its first three columns as a (3, n) int8 plan (:meth:`check_plan` also returns the
        creative ids)."""
        return self.check_plan(action)[0]

    def check_plan(self, action: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """Validate an action array; return its (3, n) int8 plan and, with a creative catalogue,
        the (n,) int32 creative ids of its 4th column (else None)."""
        a = np.asarray(action)
        cat = self.model.catalogue
        if cat is not None:
            if a.shape != (self.n, 4):
                missing = " (the 4th column, action[:, 3] = creative id, is missing)" \
                    if a.shape == (self.n, 3) else ""
                raise ValueError(
                    f"action must have shape ({self.n}, 4) = (customers, [channel, offer, spend level, "
                    f"creative]) with a creative catalogue of {cat.count}, got {a.shape}{missing}")
            return as_creative_plan(a, self.nvec, cat.count)
        if a.shape != (self.n, 3):
            raise ValueError(
                f"action must have shape ({self.n}, 3) = (customers, [channel, offer, spend level]), "
                f"got {a.shape}")
        return as_plan(a, self.nvec), None

    def creative_ids(self, action: Any) -> np.ndarray | None:
        """The creative ids (n,) int32 of a valid action (its 4th column), or None without a
        catalogue."""
        return self.check_plan(action)[1]

    def step(self, plan: np.ndarray, treatment_effect: bool = False,
             survival: np.ndarray | None = None, creative: np.ndarray | None = None) -> Outcome:
        """One week under a plan from :meth:`check_action` (``treatment_effect``: also compute
        each row's true myopic treatment effect; ``survival``: weight drop-out instead of
        sampling it; ``creative``: the ids from :meth:`creative_ids` — see
        :func:`rapport.envs.dynamics.transition`)."""
        out = transition(self.model, self.state, plan, self.market.step(), treatment_effect, survival,
                         creative)
        self.alive_prob = obs_mod.p_alive(self.model, self.state)
        seen = out.orders > 0 if out.orders_offline is None or self.scenario.omnichannel.observe_offline \
            else out.orders > out.orders_offline
        obs_mod.update_stage(self.state, self.alive_prob, seen)
        return out

    def observe(self, out: np.ndarray | None = None) -> np.ndarray:
        return obs_mod.observe(self.model, self.state, self.alive_prob, self.horizon, out,
                               self.market.awareness)

    def action_mask(self) -> np.ndarray:
        return obs_mod.action_mask(self.model, self.state)

    def unreachable(self) -> np.ndarray:
        """Rows no action can reach any more: opted out of every channel (episode ends)."""
        return ~self.state.optin.any(axis=0)

    def at_horizon(self) -> np.ndarray:
        return self.state.week >= self.horizon

    def expected_myopic_profit(self, action: np.ndarray) -> np.ndarray:
        """Latent-truth expected profit of ``action`` this week, per customer (oracle/regret)."""
        plan, creative = self.check_plan(action)
        return expected_myopic_profit(self.model, self.state, plan, self.market.preview(), creative)

    def info(self, out: Outcome | None, include_latent: bool = True) -> dict[str, Any]:
        """Per-customer info arrays: reward components, KPIs, the action mask, latent truth."""
        info: dict[str, Any] = {"action_mask": self.action_mask()}
        if out is not None:
            info.update(
                revenue=out.revenue, orders=out.orders, contact_cost=out.contact_cost,
                discount_cost=out.discount_cost, media_cost=out.media_cost,
                mass_media_cost=out.mass_media_cost, channel=out.channel, offer=out.offer,
                opted_out=out.opted_out, converted=out.converted)
            if out.orders_offline is not None:
                info["orders_offline"] = out.orders_offline
            if out.creative_id is not None:
                info["creative"] = {"id": out.creative_id, "match": out.creative_match,
                                    "wear": out.creative_wear}
        info["market"] = self.market.summary()
        if include_latent:
            s = self.state
            latent = {
                "alive": s.alive.copy(),
                "base_rate": s.rate,
                "p_alive_model": self.alive_prob,
            }
            if s.rate_drift.size:
                latent["rate_drift"] = s.rate_drift
            if s.trust.size:
                latent["trust"] = s.trust
            if s.online_share.size:
                latent["online_share"] = s.online_share
            if out is not None:
                latent["purchase_rate"] = out.purchase_rate
                latent["dropped_out"] = out.dropped_out
                if out.treatment_effect is not None:
                    latent["treatment_effect"] = out.treatment_effect
            info["latent"] = latent
        return info

    def set_mass_media_budget(self, budget: float | None) -> None:
        """Mass-media budget ($ per person per week) from the next step on; None: the schedule."""
        self.market.set_budget(budget)
