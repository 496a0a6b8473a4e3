"""Single-step (contextual-bandit) off-policy estimators, batched numpy.

Every logged round i carries the reward ``r_i``, the logging propensity ``p_i = π_b(a_i|x_i)``,
the target policy's probability of the same action ``π_i = π_e(a_i|x_i)`` and, for the
model-based estimators, the reward model's prediction at the logged action
``q̂_i = q̂(x_i, a_i)`` and its expectation under the target ``q̂^π_i = Σ_a π_e(a|x_i) q̂(x_i, a)``.
These five arrays are all the estimators need (:class:`BanditData`); :meth:`BanditData.from_dense`
builds them from dense (n, K) distributions and predictions, as the Open Bandit Pipeline takes
them.

With importance weights ``w_i = π_i / p_i`` (optionally clipped: ``min(w_i, clip)``):

=============  ==========================================================================
IPS            (1/n) Σ w_i r_i
SNIPS          Σ w_i r_i / Σ w_i
DM             (1/n) Σ q̂^π_i
DR             (1/n) Σ [q̂^π_i + w_i (r_i − q̂_i)]
SNDR           (1/n) Σ q̂^π_i + Σ w_i (r_i − q̂_i) / Σ w_i
Switch-DR(τ)   (1/n) Σ [q̂^π_i + 1{w_i ≤ τ} w_i (r_i − q̂_i)]
=============  ==========================================================================

Switch-DR is the doubly robust form of Wang et al. (2017, "Optimal and adaptive off-policy
evaluation in contextual bandits"), as the Open Bandit Pipeline implements it: the direct
method everywhere, plus the importance-weighted correction only where the weight is at most τ
(τ = ∞ gives DR, τ = 0 gives DM). Clipping (``clip``) caps the weights of IPS, SNIPS, DR and
SNDR (Switch-DR already discards large weights).

Each estimator returns :class:`RatioTerms` — the value as a sum of ratios of per-row sums —
so that the bootstrap (:mod:`rapport.agents.ope.intervals`) can resample customers without
re-deriving any formula.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


def _as_vector(name: str, values: np.ndarray, n: int) -> np.ndarray:
    arr = np.asarray(values, np.float64)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) like reward, got {arr.shape}")
    return arr


def _check_vector(name: str, values: np.ndarray | None, n: int | None, *, optional: bool = False) -> np.ndarray | None:
    if values is None:
        if optional:
            return None
        raise ValueError(f"{name} is required")
    arr = np.asarray(values, np.float64)
    if arr.ndim != 1 or (n is not None and arr.shape[0] != n):
        raise ValueError(f"{name} must have shape ({n},) like reward, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has a non-finite value at row {int(np.flatnonzero(~np.isfinite(arr))[0])}")
    return arr


@dataclass(frozen=True, eq=False)
class BanditData:
    """Validated per-round inputs of the single-step estimators (see the module docstring)."""

    reward: np.ndarray
    """(n,) observed rewards."""
    behaviour_propensity: np.ndarray
    """(n,) π_b(a_i|x_i) in (0, 1]."""
    target_propensity: np.ndarray
    """(n,) π_e(a_i|x_i) in [0, 1]."""
    q_logged: np.ndarray | None = None
    """(n,) q̂(x_i, a_i), needed by DM-based estimators (DR, SNDR, Switch-DR)."""
    q_target: np.ndarray | None = None
    """(n,) Σ_a π_e(a|x_i) q̂(x_i, a), needed by DM, DR, SNDR, Switch-DR."""
    groups: np.ndarray | None = None
    """(n,) unit of independence (customer) for the bootstrap; rows are independent if None."""

    def __post_init__(self) -> None:
        put = object.__setattr__
        r = _check_vector("reward", self.reward, None)
        n = r.shape[0]
        if n == 0:
            raise ValueError("no logged rounds (reward is empty)")
        put(self, "reward", r)
        # one pass per range check, NaN included (every comparison with NaN is False)
        p = _as_vector("behaviour_propensity", self.behaviour_propensity, n)
        if not ((p > 0) & (p <= 1)).all():
            i = int(np.flatnonzero(~((p > 0) & (p <= 1)))[0])
            raise ValueError(f"behaviour_propensity must be in (0, 1], got {float(p[i])} at row {i}")
        put(self, "behaviour_propensity", p)
        pi = _as_vector("target_propensity", self.target_propensity, n)
        if not ((pi >= 0) & (pi <= 1 + 1e-12)).all():
            i = int(np.flatnonzero(~((pi >= 0) & (pi <= 1 + 1e-12)))[0])
            raise ValueError(f"target_propensity must be in [0, 1], got {float(pi[i])} at row {i}")
        put(self, "target_propensity", pi)
        put(self, "_weight_cache", {})
        put(self, "q_logged", _check_vector("q_logged", self.q_logged, n, optional=True))
        put(self, "q_target", _check_vector("q_target", self.q_target, n, optional=True))
        if self.groups is not None:
            g = np.asarray(self.groups)
            if g.shape != (n,):
                raise ValueError(f"groups must have shape ({n},), got {g.shape}")
            put(self, "groups", g)

    @property
    def n(self) -> int:
        return int(self.reward.shape[0])

    def weights(self, clip: float | None = None) -> np.ndarray:
        """(n,) importance weights π_i / p_i, capped at ``clip`` when given (computed once per
        clip value and shared by the estimators: treat as read-only)."""
        if clip is not None and not clip > 0:
            raise ValueError(f"clip must be > 0, got {clip}")
        cache = self._weight_cache  # type: ignore[attr-defined]
        if clip not in cache:
            w = self.target_propensity / self.behaviour_propensity
            if clip is not None:
                np.minimum(w, clip, out=w)
            w.flags.writeable = False
            cache[clip] = (w, weight_diagnostics(w))
        return cache[clip][0]

    def weight_diagnostics(self, clip: float | None = None) -> dict[str, float]:
        self.weights(clip)
        return dict(self._weight_cache[clip][1])  # type: ignore[attr-defined]

    def require_model(self, estimator: str) -> tuple[np.ndarray, np.ndarray]:
        if self.q_logged is None or self.q_target is None:
            raise ValueError(f"{estimator} needs reward-model predictions: pass q_logged and q_target "
                             "(or q_hat to BanditData.from_dense)")
        return self.q_logged, self.q_target

    @classmethod
    def from_dense(cls, actions: np.ndarray, reward: np.ndarray, behaviour_propensity: np.ndarray,
                   target_dist: np.ndarray, q_hat: np.ndarray | None = None,
                   groups: np.ndarray | None = None) -> BanditData:
        """Build from joint actions (n,), a dense target distribution (n, K) and, optionally,
        reward-model predictions for every action (n, K)."""
        actions = np.asarray(actions)
        target_dist = np.asarray(target_dist, np.float64)
        n = actions.shape[0]
        if actions.ndim != 1 or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions must be (n,) joint action indices, got {actions.dtype} {actions.shape}")
        if target_dist.ndim != 2 or target_dist.shape[0] != n:
            raise ValueError(f"target_dist must be (n={n}, K), got {target_dist.shape}")
        K = target_dist.shape[1]
        if n and (actions.min() < 0 or actions.max() >= K):
            i = int(np.flatnonzero((actions < 0) | (actions >= K))[0])
            raise ValueError(f"action {actions[i]} at row {i} is outside 0..{K - 1}")
        flat = np.arange(n, dtype=np.int64) * K + actions  # one index for both gathers
        pi = np.take(target_dist.reshape(-1), flat)
        q_logged = q_target = None
        if q_hat is not None:
            q_hat = np.asarray(q_hat, np.float64)
            if q_hat.shape != target_dist.shape:
                raise ValueError(f"q_hat must have the shape of target_dist {target_dist.shape}, got {q_hat.shape}")
            q_logged = np.take(q_hat.reshape(-1), flat)
            q_target = np.einsum("nk,nk->n", target_dist, q_hat)
        return cls(reward, behaviour_propensity, pi, q_logged, q_target, groups)


@dataclass(frozen=True, eq=False)
class RatioTerms:
    """An estimate written as ``Σ_k (Σ_i num[i, k]) / (Σ_i den[i, k])``.

    ``den`` None means every row counts 1 (the plain average). Resampling units (rows or
    customers) and re-evaluating this expression is the bootstrap.
    """

    num: np.ndarray
    """(n, k) per-unit numerators."""
    den: np.ndarray | None = None
    """(n, k) per-unit denominators, or None for ones."""
    diagnostics: dict[str, float] = field(default_factory=dict)

    @property
    def value(self) -> float:
        total = self.num.sum(axis=0)
        den = np.full(total.shape, float(self.num.shape[0])) if self.den is None else self.den.sum(axis=0)
        safe = np.where(den != 0, den, 1.0)
        return float(np.sum(np.where(den != 0, total / safe, 0.0)))

    def denominators(self) -> np.ndarray:
        return np.ones_like(self.num) if self.den is None else self.den


def weight_diagnostics(w: np.ndarray) -> dict[str, float]:
    """Effective sample size (Σw)²/Σw², its share of n, max and mean weight (≈ 1 when the
    target is supported by the logger), share of rows with zero weight."""
    s1, s2 = float(w.sum()), float(np.dot(w, w))
    ess = s1 * s1 / s2 if s2 > 0 else 0.0
    return {"ess": ess, "ess_share": ess / len(w), "max_weight": float(w.max()),
            "mean_weight": s1 / len(w), "zero_weight_share": 1.0 - np.count_nonzero(w) / len(w)}


def _col(x: np.ndarray) -> np.ndarray:
    return x[:, None]


def ips(data: BanditData, *, clip: float | None = None) -> RatioTerms:
    w = data.weights(clip)
    return RatioTerms(_col(w * data.reward), diagnostics=data.weight_diagnostics(clip))


def snips(data: BanditData, *, clip: float | None = None) -> RatioTerms:
    w = data.weights(clip)
    return RatioTerms(_col(w * data.reward), _col(w), diagnostics=data.weight_diagnostics(clip))


def dm(data: BanditData) -> RatioTerms:
    _, q_target = data.require_model("DM")
    return RatioTerms(_col(q_target))


def dr(data: BanditData, *, clip: float | None = None) -> RatioTerms:
    q_logged, q_target = data.require_model("DR")
    w = data.weights(clip)
    return RatioTerms(_col(q_target + w * (data.reward - q_logged)), diagnostics=data.weight_diagnostics(clip))


def sndr(data: BanditData, *, clip: float | None = None) -> RatioTerms:
    q_logged, q_target = data.require_model("SNDR")
    w = data.weights(clip)
    num = np.stack([q_target, w * (data.reward - q_logged)], axis=1)
    den = np.stack([np.ones(data.n), w], axis=1)
    return RatioTerms(num, den, diagnostics=data.weight_diagnostics(clip))


def switch_dr(data: BanditData, *, tau: float = 100.0) -> RatioTerms:
    if not tau >= 0:
        raise ValueError(f"switch threshold tau must be >= 0, got {tau}")
    q_logged, q_target = data.require_model("Switch-DR")
    w = data.weights()
    keep = w <= tau
    diag = data.weight_diagnostics()
    diag["switched_share"] = float(1.0 - keep.mean())
    return RatioTerms(_col(q_target + np.where(keep, w * (data.reward - q_logged), 0.0)), diagnostics=diag)


BANDIT_ESTIMATORS: dict[str, Callable[..., RatioTerms]] = {
    "ips": ips, "snips": snips, "dm": dm, "dr": dr, "sndr": sndr, "switch_dr": switch_dr}
"""Single-step estimators by name."""
MODEL_BASED = frozenset({"dm", "dr", "sndr", "switch_dr"})
CLIPPABLE = frozenset({"ips", "snips", "dr", "sndr"})


def bandit_terms(data: BanditData, name: str, *, clip: float | None = None,
                 switch_tau: float = 100.0) -> RatioTerms:
    """Terms of the named estimator (``clip`` applies where it is defined)."""
    if name not in BANDIT_ESTIMATORS:
        raise KeyError(f"unknown single-step estimator {name!r}; valid: {', '.join(BANDIT_ESTIMATORS)}")
    if name == "switch_dr":
        return switch_dr(data, tau=switch_tau)
    if name == "dm":
        return dm(data)
    return BANDIT_ESTIMATORS[name](data, clip=clip)
