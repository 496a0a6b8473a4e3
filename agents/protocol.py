"""The one decision protocol every Rapport policy implements, and the schema agents receive.

Every policy, from "do nothing" to PPO, is called as::

    actions, propensities = policy.act(obs, rng, action_mask=mask)

* ``obs``: float32 array, shape (n_customers, n_features), columns in ``schema.feature_names``.
* ``rng``: a ``numpy.random.Generator`` owned by the caller (no global RNG anywhere).
* ``action_mask``: optional bool array, shape (n_customers, sum(schema.nvec)): the per-dimension
  masks concatenated (Gymnasium / sb3-contrib ``MultiDiscrete`` convention). ``True`` = useful.
* ``actions``: int64 array, shape (n_customers, len(schema.nvec)) — (channel, offer, spend level),
  and with a creative catalogue a 4th column, the creative id shown with the contact.
* ``propensities``: float64 array, shape (n_customers,) — the probability with which the policy
  chose that joint action (1.0 for a deterministic policy), so any policy can be a logging policy.

The all-zeros action means "do nothing".

Creative catalogue (issue 15): a schema may carry the firm's catalogue of creatives in
``extras["creative_embeddings"]`` — a finite float ``(C, D)`` array, row ``c`` the embedding of
creative ``c`` — with optional ``extras["creative_feature_names"]`` (D names). Then ``nvec``
has a 4th entry, ``C``, and ``action[:, 3]`` is the creative id (it matters only on contacted
rows, ``action[:, 0] >= 1``). Without a catalogue ``nvec`` is the three sizes, as before.
:meth:`DecisionSchema.with_creatives` adds a catalogue, :meth:`DecisionSchema.base_schema`
gives the 3-column schema that channel/offer/spend policies are built on
(:class:`rapport.agents.creative.WithCreative` composes the two).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

CREATIVE_EMBEDDINGS = "creative_embeddings"
"""``DecisionSchema.extras`` key of the creative catalogue: finite float array (C, D)."""
CREATIVE_FEATURE_NAMES = "creative_feature_names"
"""``DecisionSchema.extras`` key of the D embedding column names (optional)."""


def _check_catalogue_schema(nvec: tuple[int, ...], embeddings: Any, names: Any) -> None:
    if embeddings is None:
        raise ValueError(f"nvec {nvec} has a 4th entry (number of creatives) but the schema carries no catalogue: "
                         f"pass extras[{CREATIVE_EMBEDDINGS!r}] = the (C, D) embeddings, or 3 sizes "
                         "(channel, offer, spend) without creatives")
    if len(nvec) != 4 or any(int(n) < 1 for n in nvec):
        raise ValueError(f"nvec must be 4 positive sizes (channel, offer, spend, creatives) with "
                         f"extras[{CREATIVE_EMBEDDINGS!r}], got {nvec}")
    emb = np.asarray(embeddings)
    if emb.ndim != 2 or emb.shape[0] != int(nvec[3]) or emb.shape[1] < 1:
        raise ValueError(f"extras[{CREATIVE_EMBEDDINGS!r}] must be a (C, D) array with C = nvec[3] = {nvec[3]} "
                         f"and D >= 1, got shape {emb.shape}")
    if not np.issubdtype(emb.dtype, np.floating) or not np.isfinite(emb).all():
        raise ValueError(f"extras[{CREATIVE_EMBEDDINGS!r}] must be finite floats, got dtype {emb.dtype}"
                         + ("" if not np.issubdtype(emb.dtype, np.floating) else " with NaN/inf values"))
    if names is not None and len(tuple(names)) != emb.shape[1]:
        raise ValueError(f"extras[{CREATIVE_FEATURE_NAMES!r}] has {len(tuple(names))} names for "
                         f"{emb.shape[1]} embedding columns")


@dataclass(frozen=True)
class DecisionSchema:
    """What an agent knows about the world it acts in, injected by the composition root."""

    feature_names: tuple[str, ...]
    """Observation columns, in order."""
    nvec: tuple[int, ...]
    """Sizes of the ``MultiDiscrete`` action dimensions: (channels + 1, offers, spend levels), and
    the number of creatives as a 4th entry when ``extras`` carries the catalogue."""
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
    """Anything else a scenario wants to tell agents (documented where it is set);
    ``"creative_embeddings"`` / ``"creative_feature_names"``: the creative catalogue (module doc)."""

    def __post_init__(self) -> None:
        catalogue = self.extras.get(CREATIVE_EMBEDDINGS) if isinstance(self.extras, dict) else None
        if catalogue is not None or len(self.nvec) == 4:
            _check_catalogue_schema(self.nvec, catalogue, self.extras.get(CREATIVE_FEATURE_NAMES))
        elif len(self.nvec) != 3 or any(int(n) < 1 for n in self.nvec):
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
    def n_creatives(self) -> int:
        """Creatives in the catalogue (``nvec[3]``); 0 without a catalogue."""
        return int(self.nvec[3]) if len(self.nvec) == 4 else 0

    @property
    def creative_embeddings(self) -> np.ndarray | None:
        """The catalogue's (C, D) embeddings, or None without a catalogue."""
        return self.extras.get(CREATIVE_EMBEDDINGS) if self.n_creatives else None

    @property
    def creative_feature_names(self) -> tuple[str, ...]:
        """D names of the embedding columns (``embedding_0``... when the scenario gave none)."""
        emb = self.creative_embeddings
        if emb is None:
            return ()
        names = self.extras.get(CREATIVE_FEATURE_NAMES)
        return tuple(names) if names is not None else tuple(f"embedding_{j}" for j in range(emb.shape[1]))

    def base_schema(self) -> DecisionSchema:
        """The (channel, offer, spend) schema without the catalogue (``self`` when there is none)."""
        if not self.n_creatives:
            return self
        extras = {k: v for k, v in self.extras.items() if k not in (CREATIVE_EMBEDDINGS, CREATIVE_FEATURE_NAMES)}
        return dataclasses.replace(self, nvec=tuple(self.nvec[:3]), extras=extras)

    def with_creatives(self, embeddings: np.ndarray, feature_names: tuple[str, ...] | None = None) -> DecisionSchema:
        """This schema with a creative catalogue: ``nvec`` gains ``C = len(embeddings)``."""
        base = self.base_schema()
        extras = {**base.extras, CREATIVE_EMBEDDINGS: embeddings}
        if feature_names is not None:
            extras[CREATIVE_FEATURE_NAMES] = tuple(feature_names)
        return dataclasses.replace(base, nvec=(*base.nvec, int(np.shape(embeddings)[0])), extras=extras)

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
