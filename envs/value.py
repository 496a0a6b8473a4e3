"""Residual customer value from latent truth: what a customer is still worth without marketing.

One definition serves two consumers, so they cannot drift apart:

* evaluation (``rapport.experiments.evaluation``) books it at each customer's last simulated week, as
  the terminal part of ``kpi/lifetime_value_per_customer``;
* training: :class:`envs.PopulationEnv` built with ``value_discount=d`` puts it in
  ``info["residual_value"]`` every step, so a learner can be given the same terminal value at
  the horizon (and, optionally, potential-based shaping on it). It is latent truth: a training
  signal and an analysis quantity, never an observation.
"""

from __future__ import annotations

import math

import numpy as np

from rapport.envs.scenario import Scenario
from rapport.envs.state import PopulationState


def weekly_discount(annual_discount_rate: float) -> float:
    """The weekly discount factor of an annual rate: ``(1 + r) ** (-1 / 52)`` (0.99817 at 10 %)."""
    r = float(annual_discount_rate)
    if not math.isfinite(r) or r < 0:
        raise ValueError(f"annual_discount_rate must be a finite number >= 0, got {annual_discount_rate!r}")
    return (1.0 + r) ** (-1.0 / 52.0)


def check_discount(name: str, value: float) -> float:
    """``value`` as a float in (0, 1], or ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name} must be a weekly discount factor in (0, 1], got {value!r} "
                         "(e.g. rapport.envs.value.weekly_discount(0.10) = 0.99817)")
    return float(value)


def residual_value(scenario: Scenario, state: PopulationState, rows: np.ndarray | None,
                   discount: float) -> np.ndarray:
    """Expected discounted future profit of ``rows`` (all rows if None) from now on, from latent
    truth, with no further marketing, in $ as of now (not discounted to week 0).

    Each order is worth margin × E[order value] = margin × p_GG / ν; a subscription fee earns
    margin × fee for every week the customer is alive at its start.

    * Non-contractual (BG/NBD: a live customer buys at rate λ and dies with probability p after
      each purchase): the number of future purchases is geometric, so with continuous
      discounting δ (``discount = e^{-δ}``) ``E[Σ_k e^{-δ S_k}] = q / (1 − (1−p) q)``,
      ``q = λ / (λ + δ)``; the lifetime is Exp(λp), worth ``1 / (λp + δ)`` discounted weeks.
    * Contractual (weekly sBG churn θ = p): alive at the start of week t with probability
      ``(1−θ)^(t−1)``, so the weekly value (fee + λ × order value) × margin is worth
      ``d / (1 − d (1−θ))`` with ``d = discount``.

    Prospects (no purchase yet) and dead customers are worth 0 here: a conservative residual.
    """
    s, pm = state, scenario.purchase
    idx = slice(None) if rows is None else rows
    lam = s.rate[idx].astype(np.float64)
    p_drop = np.clip(s.p_drop[idx].astype(np.float64), 1e-6, 1.0)
    order_profit = pm.gross_margin * pm.p / s.spend_rate[idx].astype(np.float64)
    fee = pm.gross_margin * float(getattr(pm, "subscription_fee", 0.0))
    if getattr(pm, "dropout_process", "after_purchase") == "weekly":
        d = discount
        value = (fee + lam * order_profit) * d / (1.0 - d * (1.0 - p_drop))
    else:
        delta = max(-math.log(discount), 1e-12)
        q = lam / (lam + delta)
        value = order_profit * q / (1.0 - (1.0 - p_drop) * q) + fee / (lam * p_drop + delta)
    live = s.alive[idx].copy()
    if s.prospect.size:
        live &= ~s.prospect[idx]
    return np.where(live, value, 0.0)
