"""Population-level state: the mass-media budget, sales adstock and brand awareness (§2.9).

One :class:`Market` per simulator. It depends only on the budget (the scenario's schedule or
an experiment's override), never on per-person actions, so every customer meets the same market
whatever the rest of the population does: a customer's trajectory is the same in a population
of 10 or 10^6 rows. Each :meth:`Market.step` returns the week's :class:`~rapport.envs.dynamics.MarketWeek`
terms and moves the stocks on.
"""

from __future__ import annotations

import math

from rapport.envs.attention import attention_factor
from rapport.envs.dynamics import NO_MARKET, MarketWeek
from rapport.envs.scenario import Scenario


class Market:
    """Mass-media budget, adstock and awareness of one simulated market."""

    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        mm = scenario.mass_media
        self.h_ref = mm.hill(mm.reference_budget)
        self.awareness_ref = mm.steady_awareness(mm.reference_budget)
        self.budget_override: float | None = None
        self.reset()

    @property
    def enabled(self) -> bool:
        return self.scenario.mass_media.enabled

    def reset(self) -> None:
        """Start of an episode: the market is in steady state at the reference budget."""
        mm = self.scenario.mass_media
        self.week = 0
        self.adstock = mm.reference_budget / (1.0 - mm.adstock_decay)  # S carried into week 0
        self.awareness = self.awareness_ref

    def set_budget(self, budget: float | None) -> None:
        """Use ``budget`` ($ per person per week) from the next step on; None: the schedule."""
        if not self.enabled:
            raise ValueError("this scenario has no mass media (scenario.mass_media.enabled is false); "
                             "use a scenario with it on, e.g. the 'fame' preset")
        if budget is not None:
            ok = isinstance(budget, int | float) and not isinstance(budget, bool) \
                and math.isfinite(budget) and budget >= 0
            if not ok:
                raise ValueError(f"mass-media budget must be a finite number >= 0 ($ per person per "
                                 f"week) or None for the scenario's schedule, got {budget!r}")
            budget = float(budget)
        self.budget_override = budget

    def budget(self) -> float:
        """This week's budget, $ per person."""
        if self.budget_override is not None:
            return self.budget_override
        schedule = self.scenario.mass_media.budget_schedule
        return float(schedule[self.week % len(schedule)])

    def _terms(self) -> tuple[MarketWeek, float, float]:
        mm = self.scenario.mass_media
        budget = self.budget()
        adstock = budget + mm.adstock_decay * self.adstock
        h = mm.hill((1.0 - mm.adstock_decay) * adstock)
        log_aware = math.log(self.awareness / self.awareness_ref)
        sales = mm.sales_effect * (h - self.h_ref)
        terms = MarketWeek(
            customer_lift=sales + mm.awareness_effect * log_aware,
            prospect_lift=sales + self.scenario.prospects.awareness_elasticity * log_aware,
            cost_per_row=budget,
            attention=attention_factor(mm, self.awareness),
        )
        return terms, adstock, h

    def preview(self) -> MarketWeek:
        """The terms the next :meth:`step` will use (for expected-profit oracles)."""
        return self._terms()[0] if self.enabled else NO_MARKET

    def step(self) -> MarketWeek:
        """This week's terms; then the stocks move on one week."""
        if not self.enabled:
            self.week += 1
            return NO_MARKET
        mm = self.scenario.mass_media
        terms, adstock, h = self._terms()
        self.adstock = adstock
        a = self.awareness
        a += mm.awareness_gain * h * (1.0 - a) - mm.awareness_forgetting * (a - mm.awareness_floor)
        self.awareness = min(max(a, mm.awareness_floor), 1.0)
        self.week += 1
        self.last_budget = terms.cost_per_row
        self.last_hill = h
        return terms

    def summary(self) -> dict[str, float]:
        """Scalars for ``info["market"]``: week, this coming week's budget, adstock, awareness."""
        return {"week": float(self.week), "budget": self.budget() if self.enabled else 0.0,
                "adstock": float(self.adstock), "awareness": float(self.awareness)}
