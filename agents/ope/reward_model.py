"""Reward models for the direct method, doubly robust estimators and fitted-Q evaluation.

:class:`ArmRidge` is a ridge regression with structure shared across the joint actions
``a = (channel, offer, spend)``::

    q(x, a) = z̃ᵀ (θ_base + θ_channel[a0] + θ_offer[a1] + θ_spend[a2]) + β_a + ȳ

with ``z̃ = ((x − μ)/σ, 1)`` the standardised context. Each action dimension's value gets its
own linear response to the context (a channel's effect depends on the customer's consent,
recency...), and every joint action its own intercept, which carries interactions between
dimensions (an offer does nothing without a contact). All coefficients are shrunk by one ridge
penalty (in standardised units), so a joint action seen rarely falls back to its dimensions'
effects. ``interactions=False`` keeps only ``θ_base`` and ``β_a``.

The fit never builds the (n, P) design matrix: it accumulates per-joint-action moment matrices
of ``(z̃, y)`` (one pass over the data, O(n d²)) and assembles the (P, P) normal equations from
them, P = (d + 1)(1 + Σ nvec) + K (762 for the retail scenario).

Cross-fitting (:func:`cross_fit`): rows are split into folds by customer, and each row's
prediction comes from the model fitted on the other folds, so the DM and DR estimators never
score a customer with a model that saw their outcomes.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp


@functools.cache
def _blas_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional (it comes with scikit-learn): only a speed matter
        return None
    return ThreadpoolController()


def single_threaded_blas() -> contextlib.AbstractContextManager:
    """BLAS limited to one thread for the small dense algebra of a fit. With two threads on
    cores shared with other work, OpenBLAS spin-waits: a 570x570 Cholesky took 25-200 ms
    instead of 3 ms on the development machine."""
    controller = _blas_controller()
    return controller.limit(limits=1, user_api="blas") if controller is not None else contextlib.nullcontext()


@dataclass(frozen=True)
class Standardizer:
    """Feature centring and scaling, from unlabelled contexts."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        x = np.asarray(x, np.float64)
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        return cls(mean, np.where(std > 1e-9 * (1.0 + np.abs(mean)), std, 1.0))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(n, d) -> (n, d + 1) float64 with a trailing column of ones."""
        z = np.empty((x.shape[0], x.shape[1] + 1))
        z[:, :-1] = x
        z[:, :-1] -= self.mean
        z[:, :-1] /= self.std
        z[:, -1] = 1.0
        return z


@dataclass(frozen=True)
class ArmRidgeFit:
    """A fitted :class:`ArmRidge`: per-joint-action weights on the standardised context."""

    standardizer: Standardizer
    weights: np.ndarray
    """(K, d + 1) linear weights of each joint action on z̃."""
    intercepts: np.ndarray
    """(K,) joint-action intercepts (ȳ included)."""

    def predict_at(self, x: np.ndarray, joint: np.ndarray) -> np.ndarray:
        """(n,) q̂(x_i, a_i) for one joint action per row."""
        z = self.standardizer.transform(x)
        return np.einsum("nd,nd->n", z, self.weights[joint]) + self.intercepts[joint]

    def predict_all(self, x: np.ndarray) -> np.ndarray:
        """(n, K) q̂ for every joint action."""
        return self.standardizer.transform(x) @ self.weights.T + self.intercepts

    def predict_expected(self, x: np.ndarray, dist: sp.spmatrix | np.ndarray) -> np.ndarray:
        """(n,) Σ_a π(a|x_i) q̂(x_i, a) for a (n, K) distribution (sparse or dense).

        Linear in the weights, so it is ``z̃ᵀ (π W) + π β``: O(nnz·d) for a sparse π.
        """
        z = self.standardizer.transform(x)
        mixed = dist @ self.weights
        return np.einsum("nd,nd->n", z, np.asarray(mixed)) + np.asarray(dist @ self.intercepts).ravel()


def arm_moments(z: np.ndarray, y: np.ndarray, key: np.ndarray, n_keys: int) -> np.ndarray:
    """(n_keys, D+1, D+1) moment matrices Σ v vᵀ of v = (z̃, y), grouped by ``key``."""
    n, D = z.shape
    order = np.argsort(key, kind="stable")
    v = np.empty((n, D + 1))
    v[:, :D], v[:, D] = z[order], y[order]
    bounds = np.searchsorted(key[order], np.arange(n_keys + 1))
    out = np.zeros((n_keys, D + 1, D + 1))
    for k in np.flatnonzero(np.diff(bounds)):  # loop over keys present, not over rows
        block = v[bounds[k]:bounds[k + 1]]
        out[k] = block.T @ block
    return out


class ArmRidge:
    """Ridge reward model over joint actions with shared per-dimension structure (module doc).

    Parameters
    ----------
    nvec : sizes of the action dimensions
    ridge : penalty λ on every standardised coefficient (> 0)
    interactions : per-dimension context effects (True) or only joint-action intercepts
    """

    def __init__(self, nvec: tuple[int, ...], *, ridge: float = 1.0, interactions: bool = True) -> None:
        if ridge <= 0:
            raise ValueError(f"ridge must be > 0 (it keeps the normal equations solvable), got {ridge}")
        self.nvec = tuple(int(k) for k in nvec)
        self.ridge, self.interactions = float(ridge), interactions
        K = int(np.prod(self.nvec))
        arms = np.indices(self.nvec).reshape(len(self.nvec), -1).T
        if interactions:  # block membership: base + one block per dimension value
            offsets = np.cumsum((1, *self.nvec[:-1]))
            blocks = np.concatenate([np.zeros((K, 1), np.int64), arms + offsets], axis=1)
            n_blocks = 1 + sum(self.nvec)
        else:
            blocks, n_blocks = np.zeros((K, 1), np.int64), 1
        self.membership = np.zeros((K, n_blocks))
        np.put_along_axis(self.membership, blocks, 1.0, axis=1)
        self.n_actions = K

    def fit_moments(self, moments: np.ndarray, standardizer: Standardizer) -> ArmRidgeFit:
        """Solve the ridge problem from per-joint-action moments (K, D+1, D+1) of (z̃, y)."""
        with single_threaded_blas():
            return self._solve(moments, standardizer)

    def _solve(self, moments: np.ndarray, standardizer: Standardizer) -> ArmRidgeFit:
        D = moments.shape[1] - 1
        M = self.membership
        B = M.shape[1]
        b = moments[:, :D, D]                     # Σ z̃ y per joint action
        sz = moments[:, :D, D - 1]                # Σ z̃ (z̃'s last entry is 1)
        counts = moments[:, D - 1, D - 1]
        y_mean = moments[:, D - 1, D].sum() / max(counts.sum(), 1.0)
        b = b - y_mean * sz                       # centre y: Σ z̃ (y − ȳ)
        # The joint-action intercepts form a diagonal block of the normal equations: eliminate
        # them (Schur complement), which turns each action's Σ z̃ z̃ᵀ into A_k below, and solve
        # for the (B·D) context weights only, by Cholesky (positive definite thanks to the ridge;
        # scipy's generic solve(assume_a="pos") was 20x slower here under thread contention).
        inv_diag = 1.0 / (counts + self.ridge)
        A = moments[:, :D, :D] - np.einsum("k,ki,kj->kij", inv_diag, sz, sz)
        gram = self._assemble(A)
        gram[np.diag_indices(B * D)] += self.ridge
        rhs_b = b[:, D - 1]
        rhs = (M.T @ (b - sz * (rhs_b * inv_diag)[:, None])).ravel()
        coef = scipy.linalg.cho_solve(scipy.linalg.cho_factor(gram, check_finite=False), rhs, check_finite=False)
        weights = M @ coef.reshape(B, D)          # (K, D): each action's summed blocks
        intercepts = (rhs_b - np.einsum("kd,kd->k", sz, weights)) * inv_diag
        return ArmRidgeFit(standardizer, weights, intercepts + y_mean)

    def _assemble(self, A: np.ndarray) -> np.ndarray:
        """(B·D, B·D) Σ_k φ_k-block products from per-action (K, D, D) matrices, using the block
        structure: block (p, q) sums A_k over the actions that have both blocks, i.e. a marginal
        (or a pairwise marginal) of A over the action dimensions. O(K·D²), no (B², K) product."""
        D, dims = A.shape[-1], len(self.nvec)
        A = A.reshape(*self.nvec, D, D)
        B = self.membership.shape[1]
        G = np.zeros((B, B, D, D))
        G[0, 0] = A.sum(axis=tuple(range(dims)))
        if self.interactions:
            starts = np.cumsum((1, *self.nvec[:-1]))
            rows = [starts[d] + np.arange(self.nvec[d]) for d in range(dims)]
            for d in range(dims):
                marginal = A.sum(axis=tuple(a for a in range(dims) if a != d))       # (n_d, D, D)
                G[0, rows[d]] = G[rows[d], 0] = marginal
                G[rows[d], rows[d]] = marginal                                       # one value per action
                for e in range(d + 1, dims):
                    joint = A.sum(axis=tuple(a for a in range(dims) if a not in (d, e)))  # (n_d, n_e, D, D)
                    G[np.ix_(rows[d], rows[e])] = joint
                    G[np.ix_(rows[e], rows[d])] = joint.transpose(1, 0, 2, 3)        # each A_k is symmetric
        return G.transpose(0, 2, 1, 3).reshape(B * D, B * D)

    def fit(self, x: np.ndarray, joint: np.ndarray, y: np.ndarray,
            standardizer: Standardizer | None = None) -> ArmRidgeFit:
        """Fit on contexts (n, d), joint actions (n,) and targets (n,)."""
        std = Standardizer.fit(x) if standardizer is None else standardizer
        return self.fit_moments(arm_moments(std.transform(x), np.asarray(y, np.float64),
                                            np.asarray(joint, np.int64), self.n_actions), std)


def assign_folds(groups: np.ndarray, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) fold of each row; all rows of a group (customer) share a fold, folds balanced."""
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    uniq, inverse = np.unique(groups, return_inverse=True)
    if n_folds > 1 and len(uniq) < n_folds:
        raise ValueError(f"cross-fitting needs at least n_folds={n_folds} customers, got {len(uniq)}")
    fold_of_group = np.empty(len(uniq), np.int64)
    fold_of_group[rng.permutation(len(uniq))] = np.arange(len(uniq)) % n_folds
    return fold_of_group[inverse]


@dataclass(frozen=True)
class CrossFitted:
    """Per-fold fits; row i is predicted by ``fits[folds[i]]`` (trained without fold i).

    With one fold the single fit is trained on every row (no cross-fitting).
    """

    fits: tuple[ArmRidgeFit, ...]
    folds: np.ndarray

    def predict_at(self, x: np.ndarray, joint: np.ndarray) -> np.ndarray:
        out = np.empty(x.shape[0])
        for f, fit in enumerate(self.fits):
            rows = np.flatnonzero(self.folds == f)
            out[rows] = fit.predict_at(x[rows], joint[rows])
        return out

    def predict_expected(self, x: np.ndarray, dist: sp.csr_matrix | np.ndarray) -> np.ndarray:
        out = np.empty(x.shape[0])
        for f, fit in enumerate(self.fits):
            rows = np.flatnonzero(self.folds == f)
            out[rows] = fit.predict_expected(x[rows], dist[rows])
        return out


def cross_fit(model: ArmRidge, x: np.ndarray, joint: np.ndarray, y: np.ndarray, folds: np.ndarray,
              standardizer: Standardizer | None = None) -> CrossFitted:
    """Fit one model per fold on the other folds' rows (moments computed once)."""
    n_folds = int(folds.max()) + 1
    std = Standardizer.fit(x) if standardizer is None else standardizer  # label-free, so shared
    K = model.n_actions
    moments = arm_moments(std.transform(x), np.asarray(y, np.float64),
                          folds * K + np.asarray(joint, np.int64), n_folds * K).reshape(n_folds, K, *([x.shape[1] + 2] * 2))
    if n_folds == 1:
        return CrossFitted((model.fit_moments(moments[0], std),), folds)
    total = moments.sum(axis=0)
    return CrossFitted(tuple(model.fit_moments(total - moments[f], std) for f in range(n_folds)), folds)
