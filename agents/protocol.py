"""The one decision protocol every Rapport policy implements, and the schema agents receive.

Every policy, from "do nothing" to PPO, is called as::

    actions, propensities = policy.act(obs, rng, action_mask=mask)

* ``obs``: float32 array, shape (n_customers, n_features), columns in ``schema.feature_names``.
* ``rng``: a ``numpy.random.Generator`` owned by the caller (no global RNG anywhere).
* ``action_mask``: optional bool array, shape (n_customers, sum(schema.nvec)): the per-dimension
  masks concatenated (Gymnasium / sb3-contrib ``MultiDiscrete`` convention). ``True`` = useful.
* ``actions``: int64 array, shape (n_customers, len(schema.nvec)) — (channel, offer, spend level).
* ``propensities``: float64 array, shape (n_customers,) — the probability with which the policy
  chose that joint action (1.0 for a deterministic policy), so any policy can be a logging policy.

The all-zeros action means "do nothing".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class DecisionSchema:
    """What an agent knows about the world it acts in, injected by the composition root."""

    feature_names: tuple[str, ...]
    """Observation columns, in order."""
    nvec: tuple[int, ...]
    """Sizes of the ``MultiDiscrete`` action dimensions: (channels + 1, offers, spend levels)."""
    channel_names: tuple[str, ...]
    """Contact channels for action[:, 0] = 1..len(channel_names); 0 is "no contact"."""
    offer_names: tuple[str, ...]
    """Offers for action[:, 1]; index 0 is "none"."""
    spend_levels: tuple[float, ...]
    """Per-person paid-media spend ($/week) for action[:, 2]; index 0 is no spend."""
    channel_costs: tuple[float, ...] = ()
    """Cost per contact of each channel (same order as ``channel_names``), for budgets."""
    offer_discounts: tuple[float, ...] = ()
    """Discount depth of each offer (0 for non-discount offers), same order as ``offer_names``."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Anything else a scenario wants to tell agents (documented where it is set)."""

    def __post_init__(self) -> None:
        if len(self.nvec) != 3 or any(int(n) < 1 for n in self.nvec):
            raise ValueError(f"nvec must be 3 positive sizes (channel, offer, spend), got {self.nvec}")
        if self.nvec[0] != len(self.channel_names) + 1:
            raise ValueError(
                f"nvec[0]={self.nvec[0]} must equal len(channel_names)+1={len(self.channel_names) + 1}"
            )
        if self.nvec[1] != len(self.offer_names):
            raise ValueError(f"nvec[1]={self.nvec[1]} must equal len(offer_names)={len(self.offer_names)}")
        if self.nvec[2] != len(self.spend_levels):
            raise ValueError(f"nvec[2]={self.nvec[2]} must equal len(spend_levels)={len(self.spend_levels)}")

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def n_joint_actions(self) -> int:
        return int(np.prod(self.nvec))

    def feature_index(self, name: str) -> int:
        """Column of a feature, with an error that lists the valid names."""
        try:
            return self.feature_names.index(name)
        except ValueError:
            raise KeyError(f"unknown feature {name!r}; valid: {', '.join(self.feature_names)}") from None


@runtime_checkable
class Policy(Protocol):
    """Anything that maps a batch of observations to actions and their propensities."""

    def act(
        self,
        obs: np.ndarray,
        rng: np.random.Generator,
        *,
        action_mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]: ...
