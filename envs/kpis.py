"""Population KPIs accumulated over an episode, as namespaced ``dict[str, float]``."""

from __future__ import annotations

import numpy as np

from rapport.envs.scenario import CHANNELS

_SUMS = ("profit", "revenue", "orders", "contact_cost", "discount_cost", "media_cost")
_OPTIONAL_SUMS = ("mass_media_cost",)  # summed only in weeks where they are not all zero


class EpisodeKPIs:
    """Running totals of the week outcomes of a population (float64, so sums stay exact enough)."""

    def __init__(self, n_channels: int):
        self.n_channels = n_channels
        self.reset()

    def reset(self) -> None:
        self.weeks = 0
        self.customers = 0
        self.totals = {k: 0.0 for k in _SUMS + _OPTIONAL_SUMS}
        self.conversions = 0
        self.contacts = np.zeros(self.n_channels + 1, np.int64)
        self.offers = 0
        self.opt_outs = 0
        self.dropped_out = 0
        self.weekly_profit: list[float] = []

    def add(self, out) -> None:
        """Add one week's :class:`rapport.envs.dynamics.Outcome`."""
        self.weeks += 1
        self.customers = int(out.profit.shape[0])
        for k in _SUMS:  # float32 pairwise sums are exact enough per week; totals are float64
            self.totals[k] += float(np.sum(getattr(out, k)))
        if out.mass_media_cost.size and out.mass_media_cost[0] != 0:  # same charge for every row
            self.totals["mass_media_cost"] += float(np.sum(out.mass_media_cost))
        if out.converted.any():
            self.conversions += int(np.count_nonzero(out.converted))
        for j in range(1, self.n_channels + 1):
            self.contacts[j] += int(np.count_nonzero(out.channel == j))
        self.offers += int(np.count_nonzero(out.offer))
        self.opt_outs += int(np.count_nonzero(out.opted_out))
        self.dropped_out += int(np.count_nonzero(out.dropped_out))
        self.weekly_profit.append(float(np.sum(out.profit)))

    def summary(self) -> dict[str, float]:
        """Per-customer totals over the weeks seen so far (keys documented in the glossary)."""
        n = max(self.customers, 1)
        s = {f"kpi/{k}_per_customer": v / n for k, v in self.totals.items()}
        s["kpi/weeks"] = float(self.weeks)
        s["kpi/customers"] = float(self.customers)
        for j, name in enumerate(CHANNELS[: self.n_channels], start=1):
            s[f"kpi/contacts_{name}_per_customer"] = float(self.contacts[j]) / n
        s["kpi/offers_per_customer"] = self.offers / n
        s["kpi/opt_outs_per_customer"] = self.opt_outs / n
        s["kpi/dropped_out_share"] = self.dropped_out / n
        s["kpi/conversions_per_customer"] = self.conversions / n
        return s
