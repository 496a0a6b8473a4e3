"""Sequential off-policy estimators over customers' weekly trajectories.

The estimand is a customer's expected discounted return over the logged horizon,
``V(π) = E[Σ_t γ^t r_t]`` with actions from π, one trajectory per (customer, episode).

Trajectories are padded to a common length T (the horizon): after a customer's episode ends
(terminated, e.g. opted out of every channel) the padding is an absorbing state with reward 0,
target and logging probabilities 1 (weight 1) and model values 0. Padding never changes
PDIS, WPDIS, DR or FQE, and it makes shifted rewards (for the lower bound) well defined.

With per-decision weights ``w_t = π_e(a_t|s_t)/π_b(a_t|s_t)``, cumulative ``ρ_t = Π_{t'≤t} w_t'``
(``ρ_{−1} = 1``), optionally capped at ``clip``:

=======  ====================================================================================
PDIS     (1/N) Σ_i Σ_t γ^t ρ_{i,t} r_{i,t}                  (Precup, Sutton & Singh 2000)
WPDIS    Σ_t γ^t Σ_i ρ_{i,t} r_{i,t} / Σ_i ρ_{i,t}
DR       (1/N) Σ_i Σ_t γ^t [ρ_{i,t} (r_{i,t} − Q̂_t(s,a)) + ρ_{i,t−1} V̂_t(s)]  (Jiang & Li 2016)
FQE      (1/N) Σ_i V̂_0(s_{i,0})                  (Le, Voloshin & Yue 2019; :mod:`rapport.agents.ope.fqe`)
=======  ====================================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rapport.agents.ope.estimators import RatioTerms, weight_diagnostics


@dataclass(frozen=True, eq=False)
class Trajectories:
    """Row indices of a log arranged as (trajectory, step), padded with -1."""

    rows: np.ndarray
    """(N, T) int64 log row of trajectory i's step t, -1 after the episode ended."""
    customer: np.ndarray
    """(N,) customer id of each trajectory (the unit of independence)."""

    @classmethod
    def from_keys(cls, customer_id: np.ndarray, episode: np.ndarray, week: np.ndarray,
                  horizon: int | None = None) -> Trajectories:
        """Group rows by (customer, episode); steps are weeks counted from the first logged one.

        Raises if a trajectory skips a week (a missing decision breaks the importance weights)
        or is longer than ``horizon``.
        """
        customer_id, episode, week = (np.asarray(a, np.int64) for a in (customer_id, episode, week))
        order = np.lexsort((week, episode, customer_id))
        c, e, w = customer_id[order], episode[order], week[order]
        new = np.ones(len(order), bool)
        new[1:] = (c[1:] != c[:-1]) | (e[1:] != e[:-1])
        traj = np.cumsum(new) - 1
        starts = np.flatnonzero(new)
        step = np.arange(len(order)) - starts[traj]
        first_week = w[starts][traj]
        gap = (w - first_week) != step
        if gap.any():
            i = int(np.flatnonzero(gap)[0])
            raise ValueError(f"trajectory of customer {c[i]} (episode {e[i]}) skips a week before week {w[i]}: "
                             "sequential estimators need every weekly decision of an episode")
        T = int(step.max()) + 1
        if horizon is not None:
            if T > horizon:
                raise ValueError(f"a trajectory has {T} steps, more than horizon={horizon}")
            T = int(horizon)
        rows = np.full((len(starts), T), -1, np.int64)
        rows[traj, step] = order
        return cls(rows, c[starts])

    @property
    def valid(self) -> np.ndarray:
        return self.rows >= 0

    @property
    def n_trajectories(self) -> int:
        return int(self.rows.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.rows.shape[1])

    def gather(self, values: np.ndarray, fill: float) -> np.ndarray:
        """(N, T) ``values[rows]`` with ``fill`` at padding."""
        values = np.asarray(values)
        out = np.full(self.rows.shape, fill, dtype=np.result_type(values.dtype, type(fill)))
        valid = self.valid
        out[valid] = values[self.rows[valid]]
        return out


@dataclass(frozen=True, eq=False)
class SequentialData:
    """Per-step inputs of the sequential estimators, (N, T) arrays padded as the module says."""

    reward: np.ndarray
    behaviour_propensity: np.ndarray
    target_propensity: np.ndarray
    q_logged: np.ndarray | None = None
    """Q̂_t(s_t, a_t) at the logged action (0 at padding)."""
    v_target: np.ndarray | None = None
    """V̂_t(s_t) = Σ_a π_e(a|s_t) Q̂_t(s_t, a) (0 at padding)."""
    customer: np.ndarray | None = None
    gamma: float = 1.0

    def __post_init__(self) -> None:
        shape = np.shape(self.reward)
        if len(shape) != 2 or shape[0] == 0 or shape[1] == 0:
            raise ValueError(f"reward must be a non-empty (N, T) array, got shape {shape}")
        for name in ("behaviour_propensity", "target_propensity", "q_logged", "v_target"):
            arr = getattr(self, name)
            if arr is None:
                continue
            arr = np.asarray(arr, np.float64)
            if arr.shape != shape:
                raise ValueError(f"{name} must have shape {shape} like reward, got {arr.shape}")
            if not np.isfinite(arr).all():
                raise ValueError(f"{name} has non-finite values")
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "reward", np.asarray(self.reward, np.float64))
        if not np.isfinite(self.reward).all():
            raise ValueError("reward has non-finite values")
        b = self.behaviour_propensity
        if (b <= 0).any() or (b > 1).any():
            raise ValueError("behaviour_propensity must be in (0, 1] at every step (1 at padding)")
        if (self.target_propensity < 0).any() or (self.target_propensity > 1 + 1e-12).any():
            raise ValueError("target_propensity must be in [0, 1]")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")

    @classmethod
    def from_log(cls, traj: Trajectories, reward: np.ndarray, behaviour_propensity: np.ndarray,
                 target_propensity: np.ndarray, q_logged: np.ndarray | None = None,
                 v_target: np.ndarray | None = None, gamma: float = 1.0) -> SequentialData:
        """Arrange per-row log arrays (n,) into padded trajectories."""
        def opt(a):
            return None if a is None else traj.gather(a, 0.0)
        return cls(traj.gather(reward, 0.0), traj.gather(behaviour_propensity, 1.0),
                   traj.gather(target_propensity, 1.0), opt(q_logged), opt(v_target), traj.customer, gamma)

    @property
    def discounts(self) -> np.ndarray:
        return self.gamma ** np.arange(self.reward.shape[1])

    def cumulative_weights(self, clip: float | None = None) -> np.ndarray:
        """(N, T) ρ_{i,t} = Π_{t' ≤ t} w_{i,t'}, capped at ``clip``."""
        rho = np.cumprod(self.target_propensity / self.behaviour_propensity, axis=1)
        if clip is not None:
            if clip <= 0:
                raise ValueError(f"clip must be > 0, got {clip}")
            np.minimum(rho, clip, out=rho)
        return rho

    def require_model(self, estimator: str) -> tuple[np.ndarray, np.ndarray]:
        if self.q_logged is None or self.v_target is None:
            raise ValueError(f"{estimator} needs Q̂ and V̂ (q_logged, v_target), e.g. from fitted-Q evaluation")
        return self.q_logged, self.v_target


def _diag(rho: np.ndarray) -> dict[str, float]:
    d = weight_diagnostics(rho[:, -1])
    return {f"final_{k}": v for k, v in d.items()}


def pdis(data: SequentialData, *, clip: float | None = None) -> RatioTerms:
    rho = data.cumulative_weights(clip)
    return RatioTerms((rho * data.reward) @ data.discounts[:, None], diagnostics=_diag(rho))


def wpdis(data: SequentialData, *, clip: float | None = None) -> RatioTerms:
    rho = data.cumulative_weights(clip)
    return RatioTerms(rho * data.reward * data.discounts, rho, diagnostics=_diag(rho))


def sequential_dr(data: SequentialData, *, clip: float | None = None) -> RatioTerms:
    q, v = data.require_model("sequential DR")
    rho = data.cumulative_weights(clip)
    rho_prev = np.concatenate([np.ones((rho.shape[0], 1)), rho[:, :-1]], axis=1)
    per_step = rho * (data.reward - q) + rho_prev * v
    return RatioTerms(per_step @ data.discounts[:, None], diagnostics=_diag(rho))


def fqe(data: SequentialData) -> RatioTerms:
    _, v = data.require_model("FQE")
    return RatioTerms(v[:, :1].copy())


SEQUENTIAL_ESTIMATORS: dict[str, Callable[..., RatioTerms]] = {
    "pdis": pdis, "wpdis": wpdis, "seq_dr": sequential_dr, "fqe": fqe}
"""Sequential estimators by name."""


def sequential_terms(data: SequentialData, name: str, *, clip: float | None = None) -> RatioTerms:
    if name not in SEQUENTIAL_ESTIMATORS:
        raise KeyError(f"unknown sequential estimator {name!r}; valid: {', '.join(SEQUENTIAL_ESTIMATORS)}")
    return fqe(data) if name == "fqe" else SEQUENTIAL_ESTIMATORS[name](data, clip=clip)


def is_unit_values(data: SequentialData, reward_lower_bound: float, *, per_decision: bool = True,
                   clip: float | None = None) -> tuple[np.ndarray, float]:
    """Nonnegative per-trajectory values for the high-confidence bound, and the offset to add back.

    With rewards shifted by ``reward_lower_bound`` (every step, padding included):
    per-decision ``X_i = Σ_t γ^t ρ_{i,t} (r_{i,t} − r_min)``, or per-trajectory (Thomas et al.
    2015) ``X_i = ρ_{i,T−1} Σ_t γ^t (r_{i,t} − r_min)``. Either way
    ``E[X_i] = V(π_e) − r_min Σ_t γ^t`` (when π_b covers π_e and no clipping), so
    ``V(π_e) >= bound(X) + offset`` with ``offset = r_min Σ_t γ^t``. Clipping only lowers E[X_i].
    """
    shifted = data.reward - reward_lower_bound
    if (shifted < -1e-9).any():
        i, t = np.argwhere(shifted < -1e-9)[0]
        raise ValueError(f"reward {float(data.reward[i, t])} (trajectory {i}, step {t}) is below "
                         f"reward_lower_bound={reward_lower_bound}; the bound needs a true lower bound")
    shifted = np.maximum(shifted, 0.0)
    disc = data.discounts
    if per_decision:
        values = (data.cumulative_weights(clip) * shifted) @ disc
    else:
        values = data.cumulative_weights(clip)[:, -1] * (shifted @ disc)
    return values, float(reward_lower_bound * disc.sum())
