"""Bandit rewards: this week's profit, or profit plus a lifetime-value proxy's change.

A bandit's :meth:`update` takes rewards as given; ``update_from_step`` turns one env step into a
reward with the learner's configured ``reward`` (:func:`resolve_reward`): ``"profit"`` (None) or
:class:`LTVProxyReward`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rapport.agents.hyperparams import check_real
from rapport.agents.protocol import DecisionSchema


@dataclass(frozen=True)
class LTVProxyReward:
    """Bandit reward = this week's profit + λ · change in a lifetime-value proxy.

    The proxy is computed from observable features only::

        V(x) = p_alive · avg_spend · (r + frequency) / (α + tenure_weeks) · horizon_weeks

    i.e. P(alive) × order value × the BG/NBD posterior mean weekly purchase rate of a live
    customer × a horizon (future drop-out ignored beyond P(alive) now). ``r``, ``α`` default to
    the CDNOW estimates. Rewarding ``V(next) − V(now)`` credits actions that keep customers
    alive and buying beyond this week. λ = 0 gives plain myopic profit. Revenue units: fold the
    gross margin into λ.
    """

    schema: DecisionSchema
    lam: float = 0.0
    horizon_weeks: float = 26.0
    r: float = 0.243
    alpha: float = 4.414

    def __post_init__(self) -> None:
        checks = (("lam", 0.0, False, "weight of the lifetime-value change; 0 = profit only"),
                  ("horizon_weeks", 0.0, True, "weeks of future purchases the proxy counts"),
                  ("r", 0.0, True, "BG/NBD purchase-rate shape"),
                  ("alpha", 0.0, True, "BG/NBD purchase-rate scale, in weeks"))
        for name, low, exclusive, meaning in checks:
            value = check_real(f"LTVProxyReward.{name}", getattr(self, name), minimum=low,
                               exclusive=exclusive, meaning=meaning)
            object.__setattr__(self, name, value)

    def value(self, obs: np.ndarray) -> np.ndarray:
        """(n,) V(x) for (n, d) observations."""
        f = self.schema.feature_index
        rate = (self.r + obs[:, f("frequency")]) / (self.alpha + obs[:, f("tenure_weeks")])
        return (obs[:, f("p_alive")] * obs[:, f("avg_spend")] * rate * self.horizon_weeks).astype(np.float64)

    def __call__(self, obs: np.ndarray, profit: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        """(n,) reward from (n, d) obs, (n,) profit and (n, d) next obs."""
        profit = np.asarray(profit, np.float64)
        if self.lam == 0.0:
            return profit
        return profit + self.lam * (self.value(next_obs) - self.value(obs))


RewardSpec = str | LTVProxyReward | None
"""How a bandit turns a week's profit into its reward (see :func:`resolve_reward`)."""


def resolve_reward(schema: DecisionSchema, reward: str | LTVProxyReward | None,
                   ltv_weight: float = 1.0) -> LTVProxyReward | None:
    """``None``/``"profit"`` -> None (reward = this week's profit); ``"ltv_proxy"`` ->
    ``LTVProxyReward(schema, lam=ltv_weight)``; an :class:`LTVProxyReward` passes through.
    ``ltv_weight`` must be a finite number >= 0 whichever reward is chosen (a bad value is a bad
    config even where it is unused)."""
    ltv_weight = check_real("ltv_weight", ltv_weight, minimum=0.0,
                            meaning="λ of reward='ltv_proxy': profit + λ × Δ lifetime-value proxy")
    if reward is None or reward == "profit":
        return None
    if reward == "ltv_proxy":
        return LTVProxyReward(schema, lam=ltv_weight)
    if isinstance(reward, LTVProxyReward):
        return reward
    raise ValueError(f"reward must be 'profit', 'ltv_proxy' or an LTVProxyReward, got {reward!r}")


def reward_to_dict(reward: LTVProxyReward | None) -> dict[str, float] | None:
    """JSON-friendly form of a resolved reward (None = this week's profit)."""
    if reward is None:
        return None
    return {"lam": reward.lam, "horizon_weeks": reward.horizon_weeks, "r": reward.r, "alpha": reward.alpha}


def reward_from_dict(schema: DecisionSchema, spec: dict[str, float] | None) -> LTVProxyReward | None:
    """Inverse of :func:`reward_to_dict`."""
    return None if spec is None else LTVProxyReward(schema, **{k: float(v) for k, v in spec.items()})
