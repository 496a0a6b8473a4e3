"""Which creative to show with a contact: the selector protocol, the composite policy, simple selectors.

A scenario with a creative catalogue (issue 15) has a 4th action column, the creative id shown
with the contact; it matters only on rows contacted through a message channel
(``action[:, 0] >= 1``). Agents get the catalogue by injection — ``embeddings`` (C, D) float
and the observation's ``feature_names`` — never by importing envs.

A **creative selector** decides that column for a batch::

    ids, propensities = selector.choose(obs, contacted, rng)   # (n,) int64, (n,) float64
    selector.update(obs, ids, rewards, contacted)             # learn from what was shown

* ``obs`` (n, F) float32, columns in ``feature_names``; ``contacted`` (n,) bool, the rows that
  get a contact this week. Rows not contacted get id **0** with propensity **1.0** (no creative
  is shown there; 0 rather than -1 so that the action stays inside the env's ``MultiDiscrete``
  space, whose 4th dimension is ``[0, C)``), and ``update`` ignores them.
* ``propensities``: the probability the selector chose that id on that row, so that
  :class:`WithCreative` can report the joint propensity that off-policy evaluation needs.

:class:`WithCreative` composes a (channel, offer, spend) policy with a selector into one
:class:`~rapport.agents.protocol.Policy` returning (n, 4) actions, joint propensity = base
propensity × creative propensity on contacted rows (the base's alone elsewhere).

Selectors here (the embedding bandits are in :mod:`rapport.agents.creative_bandits`, the learned
two-tower scorer in :mod:`rapport.agents.two_tower`):

* :class:`RandomCreative` — uniform over the catalogue (propensity 1/C), the logging baseline.
* :class:`FixedCreative` — always creative ``creative_id`` (propensity 1).
* :class:`BestSingleCreative` — one creative for everyone, learned: per-creative mean reward with
  a UCB bonus (``alpha``; 0 = greedy) and/or ε-uniform exploration; :meth:`~BestSingleCreative.fit`
  learns it from logged data, :meth:`~BestSingleCreative.best` names it.
* :class:`TopKRotation` — a frozen scorer's ``k`` best creatives for each person, one of them
  uniformly at random each time (propensity 1/k): personalised, but rotating against wear-out.
* :class:`SegmentCreative` — the same per segment: 3 value segments from an observable column
  (default ``avg_spend``, the Gamma-Gamma monetary value; cut at terciles of the first batch
  seen, or at given ``thresholds``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rapport.agents.hyperparams import check_count, check_real
from rapport.agents.protocol import DecisionSchema, Policy
from rapport.agents.validation import check_obs

__all__ = [
    "UNCONTACTED_ID", "BestSingleCreative", "CreativeSelector", "FixedCreative", "RandomCreative",
    "SegmentCreative", "TopKRotation", "WithCreative", "check_embeddings",
]

UNCONTACTED_ID = 0
"""Creative id put on rows without a contact (propensity 1; the env ignores it there)."""


@runtime_checkable
class CreativeSelector(Protocol):
    """Chooses the creative shown with each contact (module doc)."""

    def choose(self, obs: np.ndarray, contacted: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]: ...

    def update(self, obs: np.ndarray, ids: np.ndarray, rewards: np.ndarray, contacted: np.ndarray) -> None: ...


# ------------------------------------------------------------------------------ boundary checks


def check_embeddings(embeddings: Any, name: str = "embeddings") -> np.ndarray:
    """The catalogue as a read-only float32 (C, D) array; C >= 1, D >= 1, finite, or ValueError naming ``name``."""
    emb = np.asarray(embeddings)
    if emb.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (C creatives, D dims) array, got shape {emb.shape}")
    if emb.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one creative (C >= 1), got C = {emb.shape[0]}")
    if emb.shape[1] < 1:
        raise ValueError(f"{name} must have at least one embedding dimension (D >= 1), got D = {emb.shape[1]}")
    if not (np.issubdtype(emb.dtype, np.floating) or np.issubdtype(emb.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric (float32 expected), got dtype {emb.dtype}")
    bad = ~np.isfinite(emb)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"{name} has a non-finite value ({emb[row, col]}) at creative {row}, dimension {col}")
    out = np.array(emb, np.float32)
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class Columns:
    """The observation columns a selector reads (what :func:`check_obs` needs of a schema)."""

    feature_names: tuple[str, ...]

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def index(self, name: str, argument: str) -> int:
        if name not in self.feature_names:
            raise ValueError(f"{argument}={name!r} is not an observation column; valid: {', '.join(self.feature_names)}")
        return self.feature_names.index(name)


def check_contacted(contacted: Any, n: int) -> np.ndarray:
    contacted = np.asarray(contacted)
    if contacted.dtype != np.bool_ or contacted.shape != (n,):
        raise ValueError(f"contacted must be a bool array of shape ({n},) (one flag per row), "
                         f"got dtype {contacted.dtype}, shape {contacted.shape}")
    return contacted


def check_feedback(columns: Columns, n_creatives: int, obs: Any, ids: Any, rewards: Any,
                   contacted: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated contacted rows of a feedback batch: (obs (m, F), ids (m,) int64, rewards (m,) float64)."""
    obs = check_obs(obs, columns)
    n = obs.shape[0]
    contacted = check_contacted(contacted, n)
    ids, rewards = np.asarray(ids), np.asarray(rewards, np.float64)
    if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be an integer array of shape ({n},), got dtype {ids.dtype}, shape {ids.shape}")
    if rewards.shape != (n,) or not np.isfinite(rewards).all():
        raise ValueError(f"rewards must be finite, shape ({n},), got shape {rewards.shape}"
                         + ("" if rewards.shape != (n,) else " with NaN/inf"))
    rows = np.flatnonzero(contacted)
    ids = ids[rows].astype(np.int64)
    out = (ids < 0) | (ids >= n_creatives)
    if out.any():
        raise ValueError(f"ids (action[:, 3]) must be in [0, {n_creatives}) on contacted rows, got {int(ids[out][0])} "
                         f"at row {int(rows[out][0])}")
    return obs[rows], ids, rewards[rows]


def fill_uncontacted(n: int, rows: np.ndarray, ids: np.ndarray, prop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n,) ids / propensities: the contacted ``rows`` get ``ids`` / ``prop``, the rest id 0, propensity 1."""
    all_ids = np.full(n, UNCONTACTED_ID, np.int64)
    all_prop = np.ones(n)
    all_ids[rows], all_prop[rows] = ids, prop
    return all_ids, all_prop


# ------------------------------------------------------------------------------ composite policy


class WithCreative:
    """A (channel, offer, spend) policy plus a creative selector: one Policy with (n, 4) actions.

    ``act``: the base acts (mask: the (channel, offer, spend) masks concatenated, or the full
    4-dimension mask whose creative part must allow every creative — per-creative masks are not
    supported), the selector picks a creative on the contacted rows (``action[:, 0] >= 1``),
    and the joint propensity is their product (the base's alone on uncontacted rows, whose
    creative propensity is 1). ``update`` / ``update_from_step`` pass the feedback to the base
    (its 3 columns) and to the selector, each where it learns; the selector gets the base's
    shaped reward when the base defines one (``reward`` attribute), else the profit.
    ``policy(explore)`` returns the frozen composite of both parts' policies.
    """

    def __init__(self, base: Policy, selector: CreativeSelector) -> None:
        if not hasattr(base, "act"):
            raise ValueError(f"base must be a Policy with act(obs, rng, action_mask=...), got {type(base).__name__}")
        if not isinstance(selector, CreativeSelector):
            raise ValueError(f"selector must be a CreativeSelector with choose() and update(), "
                             f"got {type(selector).__name__}")
        base_schema = getattr(base, "schema", None)
        if base_schema is not None and len(base_schema.nvec) != 3:
            raise ValueError(f"base must act on the 3-column (channel, offer, spend) schema, got nvec "
                             f"{base_schema.nvec}: build it on schema.base_schema()")
        self.base, self.selector = base, selector
        self.stats = getattr(base, "stats", {})

    @property
    def schema(self) -> DecisionSchema | None:
        base = getattr(self.base, "schema", None)
        emb = getattr(self.selector, "embeddings", None)
        return base.with_creatives(emb) if base is not None and emb is not None else base

    def _base_mask(self, action_mask: np.ndarray | None) -> np.ndarray | None:
        if action_mask is None:
            return None
        mask = np.asarray(action_mask)
        C = getattr(self.selector, "n_creatives", None)
        base = getattr(self.base, "schema", None)
        if base is None or C is None or mask.ndim != 2:
            return mask
        width = int(sum(base.nvec))
        if mask.shape[1] == width + C:
            if not mask[:, width:].all():
                raise ValueError("action_mask forbids some creatives (its last C columns): per-creative masks "
                                 "are not supported; pass the (channel, offer, spend) masks only")
            return mask[:, :width]
        return mask

    def act(self, obs: np.ndarray, rng: np.random.Generator, *,
            action_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        actions, prop = self.base.act(obs, rng, action_mask=self._base_mask(action_mask))
        contacted = np.asarray(actions[:, 0]) >= 1
        ids, creative_prop = self.selector.choose(obs, contacted, rng)
        out = np.empty((len(actions), 4), np.int64)
        out[:, :3], out[:, 3] = actions, ids
        return out, np.asarray(prop, np.float64) * creative_prop

    def _check_actions(self, actions: np.ndarray) -> np.ndarray:
        actions = np.asarray(actions)
        if actions.ndim != 2 or actions.shape[1] != 4:
            raise ValueError(f"actions must be (n, 4) (channel, offer, spend, creative), got shape {actions.shape}; "
                             "the 4th column action[:, 3] is the creative id")
        return actions

    def update(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        actions = self._check_actions(actions)
        if hasattr(self.base, "update"):
            self.base.update(obs, actions[:, :3], rewards)
        self.selector.update(obs, actions[:, 3], rewards, actions[:, 0] >= 1)

    def update_from_step(self, obs: np.ndarray, actions: np.ndarray, profit: np.ndarray, next_obs: np.ndarray, *,
                         value: np.ndarray | None = None, next_value: np.ndarray | None = None) -> None:
        actions = self._check_actions(actions)
        from_step = getattr(self.base, "update_from_step", None)
        if from_step is not None:
            from_step(obs, actions[:, :3], profit, next_obs, value=value, next_value=next_value)
        elif hasattr(self.base, "update"):
            self.base.update(obs, actions[:, :3], profit)
        shaping = getattr(self.base, "reward", None)
        rewards = profit if shaping is None or not callable(shaping) else shaping(profit, value, next_value)
        self.selector.update(obs, actions[:, 3], rewards, actions[:, 0] >= 1)

    def policy(self, explore: bool = False) -> WithCreative:
        base = self.base.policy(explore=explore) if hasattr(self.base, "policy") else self.base
        sel = self.selector.policy(explore=explore) if hasattr(self.selector, "policy") else self.selector
        return WithCreative(base, sel)


# ------------------------------------------------------------------------------ simple selectors


class _Catalogue:
    """Shared state of the selectors: catalogue, observation columns, choose/update plumbing."""

    def __init__(self, embeddings: Any, feature_names: Sequence[str]) -> None:
        self.embeddings = check_embeddings(embeddings)
        self.columns = Columns(tuple(feature_names))

    @property
    def n_creatives(self) -> int:
        return self.embeddings.shape[0]

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.columns.feature_names

    @classmethod
    def from_schema(cls, schema: DecisionSchema, **params: Any) -> Any:
        """Build on a schema that carries the catalogue (``schema.creative_embeddings``)."""
        if schema.creative_embeddings is None:
            raise ValueError(f"{cls.__name__}: the schema carries no creative catalogue (nvec {schema.nvec}); "
                             "the scenario needs creative.count >= 1")
        return cls(schema.creative_embeddings, schema.feature_names, **params)

    def choose(self, obs: np.ndarray, contacted: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Creative ids (n,) int64 and propensities (n,) float64; uncontacted rows: id 0, propensity 1."""
        obs = check_obs(obs, self.columns)
        contacted = check_contacted(contacted, obs.shape[0])
        rows = np.flatnonzero(contacted)
        ids, prop = self._choose(obs[rows], rng) if rows.size else (np.zeros(0, np.int64), np.zeros(0))
        return fill_uncontacted(obs.shape[0], rows, ids, prop)

    def update(self, obs: np.ndarray, ids: np.ndarray, rewards: np.ndarray, contacted: np.ndarray) -> None:
        """Learn from the contacted rows' (obs, creative shown, reward)."""
        obs, ids, rewards = check_feedback(self.columns, self.n_creatives, obs, ids, rewards, contacted)
        if ids.size:
            self._learn(obs, ids, rewards)

    def _choose(self, obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _learn(self, obs: np.ndarray, ids: np.ndarray, rewards: np.ndarray) -> None:
        """Nothing to learn by default."""

    def policy(self, explore: bool = False) -> Any:
        """A frozen copy (the simple selectors have no separate greedy form unless they say so)."""
        return copy.deepcopy(self)


class RandomCreative(_Catalogue):
    """Uniform over the catalogue: propensity exactly 1/C on every contacted row."""

    def _choose(self, obs, rng):
        return rng.integers(0, self.n_creatives, len(obs)).astype(np.int64), np.full(len(obs), 1.0 / self.n_creatives)


class FixedCreative(_Catalogue):
    """Always ``creative_id`` (propensity 1)."""

    def __init__(self, embeddings: Any, feature_names: Sequence[str], creative_id: int = 0) -> None:
        super().__init__(embeddings, feature_names)
        self.creative_id = check_count("creative_id", creative_id, meaning="the creative shown to everyone")
        if self.creative_id >= self.n_creatives:
            raise ValueError(f"creative_id must be in [0, {self.n_creatives}), got {self.creative_id}")

    def _choose(self, obs, rng):
        return np.full(len(obs), self.creative_id, np.int64), np.ones(len(obs))


class _TabularCreative(_Catalogue):
    """Per-(segment, creative) mean rewards with UCB / ε exploration (see :class:`SegmentCreative`)."""

    def __init__(self, embeddings: Any, feature_names: Sequence[str], n_segments: int, alpha: float,
                 epsilon: float) -> None:
        super().__init__(embeddings, feature_names)
        self.alpha = check_real("alpha", alpha, minimum=0.0, meaning="UCB width in reward sds; 0 = greedy")
        self.epsilon = check_real("epsilon", epsilon, minimum=0.0, maximum=1.0,
                                  meaning="probability of a uniformly random creative")
        self.counts = np.zeros((n_segments, self.n_creatives))
        self.sums = np.zeros((n_segments, self.n_creatives))
        self.sum_squares = 0.0
        self.greedy = False
        """Frozen greedy copy (:meth:`policy`): shrunk means only, ties to the lowest id, propensity 1."""

    def segment_of(self, obs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _scores(self, explore: bool) -> np.ndarray:
        mean = self.sums / (self.counts + 1.0)
        if not explore or self.alpha == 0.0:
            return mean
        n = self.counts.sum()
        rss = max(self.sum_squares - (self.sums**2 / np.maximum(self.counts, 1.0)).sum(), 0.0)
        sigma = np.sqrt((1.0 + rss) / (1.0 + n))
        return mean + self.alpha * sigma / np.sqrt(self.counts + 1.0)

    def _choose(self, obs, rng):
        seg = self.segment_of(obs)
        if self.greedy:
            return self.best()[seg].astype(np.int64), np.ones(len(seg))
        scores, epsilon = self._scores(True), self.epsilon
        n, C = len(seg), self.n_creatives
        ids, prop = np.empty(n, np.int64), np.empty(n)
        u = rng.random(n)
        for s in range(len(scores)):  # a loop over the segments, not over customers
            rows = np.flatnonzero(seg == s)
            if not rows.size:
                continue
            tied = np.flatnonzero(scores[s] == scores[s].max())
            ids[rows] = tied[np.minimum((u[rows] * len(tied)).astype(np.int64), len(tied) - 1)]
            prop[rows] = (1.0 - epsilon) / len(tied)
        if epsilon > 0.0:
            explore = rng.random(n) < epsilon
            ids[explore] = rng.integers(0, C, int(explore.sum()))
            best = scores[seg, ids] == scores[seg].max(axis=1)
            prop = np.where(best, prop, 0.0) + epsilon / C
        return ids, prop

    def _learn(self, obs, ids, rewards):
        flat = self.segment_of(obs) * self.n_creatives + ids
        size = self.counts.size
        self.counts += np.bincount(flat, minlength=size).reshape(self.counts.shape)
        self.sums += np.bincount(flat, weights=rewards, minlength=size).reshape(self.sums.shape)
        self.sum_squares += float(np.dot(rewards, rewards))

    def fit(self, obs: np.ndarray, ids: np.ndarray, rewards: np.ndarray) -> Any:
        """Learn from logged (obs, creative id, reward) of contacted rows; returns self."""
        self.update(obs, ids, rewards, np.ones(len(np.asarray(ids)), bool))
        return self

    def best(self) -> np.ndarray:
        """(segments,) the greedy creative of each segment (shrunk mean; ties to the lowest id)."""
        return self._scores(False).argmax(axis=1)

    def policy(self, explore: bool = False) -> Any:
        """Frozen copy; greedy (shrunk means, ties to the lowest id: propensity 1) unless ``explore``."""
        frozen = copy.deepcopy(self)
        frozen.greedy = not explore
        return frozen


class SegmentCreative(_TabularCreative):
    """The best creative per value segment, learned as per-(segment, creative) mean rewards.

    Segments: ``segment_feature`` (default ``avg_spend``, the observed mean spend per purchase —
    the monetary value of RFM) cut at ``thresholds`` (strictly ascending, ``k-1`` cuts for ``k``
    segments) or, when None, at the terciles of the first batch this selector sees (``choose`` or
    ``update``), then frozen: 3 segments, low / mid / high value.

    Score of creative c in segment s: the shrunk mean ``sum / (count + 1)`` (a prior mean of 0
    worth one pseudo-observation) plus ``alpha · σ̂ / sqrt(count + 1)`` (UCB; σ̂ the pooled reward
    sd with a one-pseudo-observation prior of 1, as in the linear bandits). A row takes the
    best-scoring creative of its segment, exact ties (untried creatives) split uniformly at random,
    and with ε-uniform exploration (``epsilon``) its propensity is
    ``(1-ε)·[tied best]/n_ties + ε/C`` (exact). :meth:`policy` (explore False) is greedy.
    """

    def __init__(self, embeddings: Any, feature_names: Sequence[str], *, segment_feature: str = "avg_spend",
                 thresholds: Sequence[float] | None = None, alpha: float = 1.0, epsilon: float = 0.0) -> None:
        cuts = None if thresholds is None else self._check_thresholds(thresholds)
        super().__init__(embeddings, feature_names, 3 if cuts is None else len(cuts) + 1, alpha, epsilon)
        self.segment_feature = segment_feature
        self.segment_column = self.columns.index(segment_feature, "segment_feature")
        self.thresholds = cuts

    @staticmethod
    def _check_thresholds(thresholds: Sequence[float]) -> np.ndarray:
        cuts = np.asarray([check_real("thresholds", t) for t in thresholds], np.float64)
        if cuts.size == 0 or np.any(np.diff(cuts) <= 0):
            raise ValueError(f"thresholds must be one or more strictly increasing cuts, got {cuts.tolist()}")
        return cuts

    def segment_of(self, obs: np.ndarray) -> np.ndarray:
        """(n,) segment index of each row (fits the terciles on first use)."""
        value = np.asarray(obs[:, self.segment_column], np.float64)
        if self.thresholds is None:
            cuts = np.quantile(value, [1 / 3, 2 / 3])
            self.thresholds = cuts if cuts[1] > cuts[0] else np.array([cuts[0], np.nextafter(cuts[0], np.inf)])
        return np.searchsorted(self.thresholds, value, side="right")


class BestSingleCreative(_TabularCreative):
    """One creative for everyone, learned: per-creative mean reward with a UCB bonus (``alpha``) and
    ε-uniform exploration (``epsilon``), as :class:`SegmentCreative` with a single segment.
    ``fit(obs, ids, rewards)`` learns it from logged data; ``best()[0]`` is the best creative so far."""

    def __init__(self, embeddings: Any, feature_names: Sequence[str], *, alpha: float = 1.0,
                 epsilon: float = 0.0) -> None:
        super().__init__(embeddings, feature_names, 1, alpha, epsilon)

    def segment_of(self, obs: np.ndarray) -> np.ndarray:
        return np.zeros(len(obs), np.int64)


class TopKRotation(_Catalogue):
    """Uniform over each row's ``k`` highest-scoring creatives under ``scorer`` (propensity 1/k).

    ``scorer`` is a frozen selector with ``expected_rewards(obs) -> (n, C)`` (e.g. a
    :class:`~rapport.agents.creative_bandits.CreativeBandit`'s ``policy()``). A greedy scorer
    sends a person the same creative every time, and it wears out. This sends one of the
    person's best ``k``, so repeats are rarer. ``k = 1`` is the greedy scorer.
    """

    def __init__(self, scorer: Any, k: int = 10, *, chunk: int = 4096) -> None:
        if not callable(getattr(scorer, "expected_rewards", None)):
            raise ValueError(f"scorer must have expected_rewards(obs) -> (n, C), got {type(scorer).__name__}")
        super().__init__(scorer.embeddings, scorer.feature_names)
        self.scorer = scorer
        self.k = check_count("k", k, minimum=1, meaning="creatives each person rotates through")
        if self.k > self.n_creatives:
            raise ValueError(f"k must be at most the catalogue size {self.n_creatives}, got {self.k}")
        self.chunk = check_count("chunk", chunk, minimum=1, meaning="rows scored at once")

    def _top(self, obs: np.ndarray) -> np.ndarray:
        scores = np.asarray(self.scorer.expected_rewards(obs))
        return np.argpartition(-scores, self.k - 1, axis=1)[:, :self.k]

    def creative_distribution(self, obs: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """(n, C) probability of every creative on each row: 1/k on the row's top k (for OPE;
        small batches, or call it chunk by chunk)."""
        obs = check_obs(obs, self.columns)
        dist = np.zeros((len(obs), self.n_creatives))
        if len(obs):
            np.put_along_axis(dist, self._top(obs), 1.0 / self.k, axis=1)
        return dist

    def _choose(self, obs, rng):
        ids = np.empty(len(obs), np.int64)
        for lo in range(0, len(obs), self.chunk):
            top = self._top(obs[lo:lo + self.chunk])
            pick = rng.integers(0, self.k, len(top))
            ids[lo:lo + len(top)] = top[np.arange(len(top)), pick]
        return ids, np.full(len(obs), 1.0 / self.k)
