"""Bandit rewards: this week's profit, or profit shaped by the customer's residual value.

A bandit's :meth:`update` takes rewards as given; ``update_from_step`` turns one env step into a
reward with the learner's configured ``reward`` (:func:`resolve_reward`):

* ``"profit"`` (None): this week's profit — myopic: a contact that pays this week and costs
  the customer later looks good.
* ``"lifetime_value_shaped"`` (:class:`ResidualValueShaping`): profit plus potential-based
  shaping on the customer's residual value, the same potential as the RL agents'
  ``objective=lifetime_value_shaped`` (``rapport.agents.objective``).

What was tried and removed (measured with ``scripts/bench_bandit_reward.py`` on the validation
populations 7100-7101, LinUCB on the owned channels, 3 training seeds × 3 contact rules): an
observable proxy (P(alive) × spend × BG/NBD rate × 26 weeks, "ltv_proxy") and a value learned by
LSTD(0) on the observable features both lost to the plain profit reward on lifetime value in
most cells — a value learned under a policy that over-contacts says being reachable is worth
*less*, so its one-step improvement cannot see fatigue's cost. The latent residual value won in
all nine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rapport.agents.hyperparams import check_real
from rapport.agents.protocol import DecisionSchema

REWARDS = ("profit", "lifetime_value_shaped")

DEFAULT_VALUE_DISCOUNT = 1.1 ** (-1.0 / 52.0)
"""The weekly discount of 10 % a year (``evaluation.annual_discount_rate``'s default);
``rapport-train`` gives a learner the run's own discount as ``value_discount``."""


@dataclass(frozen=True)
class ResidualValueShaping:
    """Bandit reward = profit + d · V(s') − V(s), with V the customer's residual value.

    ``V`` is the expected discounted future profit without further marketing, from latent
    truth (``rapport.envs.value.residual_value``: the terminal value of the evaluation's
    ``kpi/lifetime_value_per_customer``), and ``d`` the evaluation's weekly discount. By Ng,
    Harada & Russell (1999) the shaping term leaves the optimal policy of the customer's
    decision problem unchanged; what it changes is *when* a decision is credited: a contact
    that kills a customer, or makes them less likely to buy for the rest of their life, is
    charged in the week it is made instead of as purchases that never happen. A bandit
    maximising it week by week maximises this week's profit plus the change in what the
    customer is worth.

    It is a training signal that only a simulator has (the firm never sees latent truth): the
    policy still decides from observables, and every export sees only those. The training loop
    passes the values (``update_from_step(..., value=, next_value=)``), read from
    ``info["residual_value"]`` of an env built with ``value_discount=d``; agents never import envs.
    """

    discount: float = DEFAULT_VALUE_DISCOUNT

    kind = "lifetime_value_shaped"

    def __post_init__(self) -> None:
        d = check_real("value_discount", self.discount, minimum=0.0, exclusive=True, maximum=1.0,
                       meaning="the evaluation's weekly discount d (0.998 at 10 % a year)")
        object.__setattr__(self, "discount", d)

    def __call__(self, profit: np.ndarray, value: np.ndarray | None, next_value: np.ndarray | None) -> np.ndarray:
        """(n,) shaped reward from (n,) profit, the residual value before the step and after it."""
        if value is None or next_value is None:
            raise ValueError(
                "reward='lifetime_value_shaped' shapes with the customer's latent residual value: "
                "pass value= and next_value= to update_from_step (info['residual_value'] before and "
                "after the step, from an env built with value_discount=<the weekly discount>), as "
                "rapport-train does; or use reward='profit'")
        profit = np.asarray(profit, np.float64)
        value, next_value = np.asarray(value, np.float64), np.asarray(next_value, np.float64)
        if not value.shape == next_value.shape == profit.shape:
            raise ValueError(f"profit, value and next_value must have one entry per row, got shapes "
                             f"{profit.shape}, {value.shape}, {next_value.shape}")
        return profit + self.discount * next_value - value


Reward = ResidualValueShaping
RewardSpec = str | ResidualValueShaping | None
"""How a bandit turns a week's profit into its reward (see :func:`resolve_reward`)."""


def needs_value(reward: Reward | None) -> bool:
    """Whether ``update_from_step`` needs the residual values (``value=``, ``next_value=``)."""
    return isinstance(reward, ResidualValueShaping)


def resolve_reward(schema: DecisionSchema, reward: RewardSpec, value_discount: float | None = None) -> Reward | None:
    """``None``/``"profit"`` -> None (reward = this week's profit); ``"lifetime_value_shaped"`` ->
    :class:`ResidualValueShaping` at ``value_discount`` (default 10 % a year); a reward object
    passes through. ``value_discount`` is checked whichever reward is chosen."""
    del schema  # the rewards read no features; kept so every learner resolves its reward alike
    if value_discount is not None:
        check_real("value_discount", value_discount, minimum=0.0, exclusive=True, maximum=1.0,
                   meaning="the evaluation's weekly discount d (0.998 at 10 % a year)")
    if reward is None or reward == "profit":
        return None
    if reward == "lifetime_value_shaped":
        return ResidualValueShaping(DEFAULT_VALUE_DISCOUNT if value_discount is None else value_discount)
    if isinstance(reward, ResidualValueShaping):
        return reward
    removed = " ('ltv_proxy' was removed: it lost lifetime value to 'profit')" if reward == "ltv_proxy" else ""
    raise ValueError(f"reward must be one of {', '.join(repr(r) for r in REWARDS)}, got {reward!r}{removed}")


def reward_to_dict(reward: Reward | None) -> dict[str, Any] | None:
    """JSON-friendly form of a resolved reward (None = this week's profit)."""
    return None if reward is None else {"kind": reward.kind, "discount": reward.discount}


def reward_from_dict(schema: DecisionSchema, spec: dict[str, Any] | None) -> Reward | None:
    """Inverse of :func:`reward_to_dict`."""
    if spec is None:
        return None
    if spec.get("kind") != ResidualValueShaping.kind:
        raise ValueError(f"saved bandit reward {spec!r} is not one this version knows ({REWARDS}); "
                         "'ltv_proxy' was removed: retrain with reward='profit' or 'lifetime_value_shaped'")
    return ResidualValueShaping(float(spec["discount"]))
