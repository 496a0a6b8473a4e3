"""Boundary checks and action-mask arithmetic shared by every Rapport policy.

A policy is the last line of defence before a decision reaches a customer, so it validates what
it is given and says what was wrong (design.md §5):

* :func:`check_obs` — 2-D, ``schema.n_features`` columns, every value finite; the error names
  the column and row of the first bad value.
* :func:`check_mask` — bool, shape ``(n, sum(nvec))`` (per-dimension masks concatenated, the
  Gymnasium / sb3-contrib ``MultiDiscrete`` convention).

A row whose mask forbids *every* value of some dimension cannot be served correctly; policies
then take the do-nothing action ``(0, 0, 0)`` for that row with propensity 1 and count it in
``policy.stats["all_forbidden_rows"]`` rather than guess (:class:`GuardedPolicy`).

Joint actions: bandits treat the ``(channel, offer, spend)`` triple as one of
``K = prod(nvec)`` arms, numbered in C order (:func:`joint_index`); a candidate subset of arms is
an ``(K', 3)`` int array (:func:`all_joint_actions` gives every arm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rapport.agents.protocol import DecisionSchema

DO_NOTHING = (0, 0, 0)


def check_obs(obs: np.ndarray, schema: DecisionSchema) -> np.ndarray:
    """Validate an observation batch; return it as an ndarray (not copied when already one).

    Parameters
    ----------
    obs : array, shape (n, schema.n_features)
        Customer features, columns in ``schema.feature_names``.

    Raises
    ------
    ValueError
        Wrong rank, wrong width, non-numeric dtype, or a NaN/inf (the message names the column
        and the row).
    """
    obs = np.asarray(obs)
    if obs.ndim != 2:
        raise ValueError(
            f"observations must be 2-D (n_customers, {schema.n_features}), got shape {obs.shape}; "
            "wrap a single customer's features as obs[None, :]"
        )
    if obs.shape[1] != schema.n_features:
        raise ValueError(
            f"observations have {obs.shape[1]} columns, expected {schema.n_features} "
            "(schema.feature_names)"
        )
    if not (np.issubdtype(obs.dtype, np.floating) or np.issubdtype(obs.dtype, np.integer)):
        raise ValueError(f"observations must be numeric (float32 expected), got dtype {obs.dtype}")
    if np.issubdtype(obs.dtype, np.floating) and not np.isfinite(obs).all():
        row, col = np.argwhere(~np.isfinite(obs))[0]
        value = obs[row, col]
        kind = "NaN" if np.isnan(value) else ("+inf" if value > 0 else "-inf")
        raise ValueError(f"{kind} in column {schema.feature_names[col]!r} (row {row})")
    return obs


def check_mask(action_mask: np.ndarray | None, schema: DecisionSchema, n: int) -> np.ndarray | None:
    """Validate an action mask for ``n`` customers; ``None`` (everything allowed) passes through.

    Parameters
    ----------
    action_mask : bool array, shape (n, sum(schema.nvec)), or None
        Per-dimension masks concatenated; ``True`` = allowed.
    """
    if action_mask is None:
        return None
    mask = np.asarray(action_mask)
    width = int(sum(schema.nvec))
    if mask.dtype != np.bool_:
        raise ValueError(f"action_mask must be bool, got dtype {mask.dtype}; pass mask.astype(bool)")
    if mask.shape != (n, width):
        raise ValueError(
            f"action_mask has shape {mask.shape}, expected ({n}, {width}) = (n_customers, "
            f"sum(nvec={schema.nvec})), the per-dimension masks concatenated"
        )
    return mask


def split_mask(mask: np.ndarray, nvec: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Per-dimension views ``(n, nvec[d])`` of a concatenated mask."""
    edges = np.cumsum((0, *nvec))
    return tuple(mask[:, edges[d]:edges[d + 1]] for d in range(len(nvec)))


@dataclass(frozen=True)
class CheckedBatch:
    """A validated decision batch."""

    obs: np.ndarray
    """(n, n_features) the observations as given (float32 usually)."""
    dim_masks: tuple[np.ndarray, ...] | None
    """Per-dimension bool masks ``(n, nvec[d])``, or None when everything is allowed."""
    dead_rows: np.ndarray | None
    """(n,) bool, rows where some dimension has no allowed value; None when there are none."""

    @property
    def n(self) -> int:
        return self.obs.shape[0]


def check_batch(obs: np.ndarray, action_mask: np.ndarray | None, schema: DecisionSchema) -> CheckedBatch:
    """Validate observations and mask together and find the rows that cannot be served."""
    obs = check_obs(obs, schema)
    mask = check_mask(action_mask, schema, obs.shape[0])
    if mask is None:
        return CheckedBatch(obs, None, None)
    dims = split_mask(mask, schema.nvec)
    dead = np.zeros(obs.shape[0], bool)
    for m in dims:
        dead |= ~m.any(axis=1)
    return CheckedBatch(obs, dims, dead if dead.any() else None)


def check_actions_allowed(actions: np.ndarray, batch: CheckedBatch, who: str) -> None:
    """Raise if a servable row's action takes a value its mask forbids (dead rows are exempt)."""
    rows = np.arange(batch.n)
    for d, m in enumerate(batch.dim_masks or ()):
        bad = ~m[rows, actions[:, d]]
        if batch.dead_rows is not None:
            bad &= ~batch.dead_rows
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{who} chose action {actions[i].tolist()} for row {i}, but the action mask forbids "
                f"value {int(actions[i, d])} of dimension {d} ({('channel', 'offer', 'spend')[d]}); "
                "rule policies fall back to value 0 ('none') in a dimension, so the mask must allow it"
            )


class GuardedPolicy:
    """Shallow base: validation in, do-nothing for unservable rows out, ``stats`` counters.

    Subclasses implement ``_decide(batch, rng) -> (actions, propensities)``; the rows in
    ``batch.dead_rows`` are overwritten afterwards, so ``_decide`` may ignore them.
    """

    def __init__(self, schema: DecisionSchema) -> None:
        self.schema = schema
        self.stats: dict[str, int] = {"all_forbidden_rows": 0}

    def act(
        self, obs: np.ndarray, rng: np.random.Generator, *, action_mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Actions int64 (n, 3) and propensities float64 (n,) for a batch of customers.

        Raises
        ------
        ValueError
            Bad observations or mask (see :func:`check_batch`), or — a guard, not an expected
            path — a decided action that the mask forbids (a rule whose fallback value 0 is
            masked out, say): the row and the forbidden value are named rather than served.
        """
        batch = check_batch(obs, action_mask, self.schema)
        actions, propensities = self._decide(batch, rng)
        if batch.dead_rows is not None:
            actions[batch.dead_rows] = DO_NOTHING
            propensities[batch.dead_rows] = 1.0
            self.stats["all_forbidden_rows"] += int(batch.dead_rows.sum())
        if batch.dim_masks is not None:
            check_actions_allowed(actions, batch, type(self).__name__)
        return actions, propensities

    def _decide(self, batch: CheckedBatch, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


# ---------------------------------------------------------------- joint actions (bandit arms)


def all_joint_actions(nvec: tuple[int, ...]) -> np.ndarray:
    """Every joint action, shape (prod(nvec), 3) int64, row k is arm k (C order)."""
    return np.indices(nvec).reshape(len(nvec), -1).T.astype(np.int64)


def joint_index(actions: np.ndarray, nvec: tuple[int, ...]) -> np.ndarray:
    """Arm number of each joint action: (n, 3) -> (n,) int64 in ``[0, prod(nvec))``."""
    return np.ravel_multi_index(tuple(np.asarray(actions, np.int64).T), nvec)


def check_arms(arms: np.ndarray, nvec: tuple[int, ...]) -> np.ndarray:
    """Validate a candidate arm list (K, 3): in range, no duplicates."""
    arms = np.asarray(arms, dtype=np.int64)
    if arms.ndim != 2 or arms.shape[1] != len(nvec) or arms.shape[0] == 0:
        raise ValueError(f"candidate arms must be a non-empty (K, {len(nvec)}) int array, got shape {arms.shape}")
    bad = (arms < 0) | (arms >= np.asarray(nvec))
    if bad.any():
        raise ValueError(f"candidate arm {arms[bad.any(axis=1)][0].tolist()} is outside nvec={nvec}")
    if len(np.unique(joint_index(arms, nvec))) != len(arms):
        raise ValueError("candidate arms contain duplicates")
    return arms


def arm_mask(dim_masks: tuple[np.ndarray, ...], arms: np.ndarray) -> np.ndarray:
    """Which candidate arms each customer may take: (n, K) bool (product of dimension masks)."""
    allowed = dim_masks[0][:, arms[:, 0]].copy()
    for d in range(1, len(dim_masks)):
        allowed &= dim_masks[d][:, arms[:, d]]
    return allowed


def sample_allowed(allowed: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Uniform draw among the True entries of each row of an (n, K) bool matrix.

    Returns
    -------
    choice : (n,) int64
        Column drawn (0 for rows with nothing allowed; callers handle those rows).
    n_allowed : (n,) int64
        Number of allowed columns (the draw's probability is ``1 / n_allowed``).
    """
    counts = np.cumsum(allowed, axis=1)
    n_allowed = counts[:, -1]
    # the k-th allowed column (k uniform in 0..n_allowed-1) is the first where cumsum exceeds k
    k = np.floor(rng.random(allowed.shape[0]) * n_allowed)
    choice = (counts <= k[:, None]).sum(axis=1)
    return np.minimum(choice, allowed.shape[1] - 1).astype(np.int64), n_allowed.astype(np.int64)
