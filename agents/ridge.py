"""Per-arm ridge regression for the linear bandits: sufficient statistics, standardisation, fit.

:class:`DisjointRidge` keeps, per arm, the moment matrix of ``(x, 1, r)`` in float64 (the
learner's whole state); :meth:`DisjointRidge.fit` turns it into a :class:`LinearFit`, the frozen
per-arm posterior a policy scores with.

Standardisation (``standardize=True``, the default): the moments are kept for the *raw*
augmented context ``x̃ = (x, 1)`` together with the running mean / variance of the contexts. At
refit they are mapped to the current standardisation ``z̃ = T x̃`` (``A ↦ T A Tᵀ``, ``b ↦ T b``),
which is exactly ridge regression on standardised features over the whole history — raw
features (dollars, weeks, flags) work, the ridge penalty means the same for every feature, and
early data is not scaled differently from late.

``standardize=False`` is the textbook model (Li et al. 2010, disjoint LinUCB): per arm
``A_k = λI + Σ x̃ x̃ᵀ``, ``b_k = Σ r x̃``, ``θ_k = A_k⁻¹ b_k`` on the raw ``x̃ = (x, 1)`` (the
constant feature is penalised like the others); the fit then carries ``feature_mean = 0`` and
``feature_std = 1``, so every consumer of a :class:`LinearFit` (policies, export) is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rapport.agents.hyperparams import check_flag, check_real

_PREDICT_CHUNK = 1 << 22
"""float32 elements of the largest intermediate in :meth:`LinearFit.predict` (16 MB)."""


@dataclass(frozen=True)
class LinearFit:
    """Per-arm ridge posterior on standardised features: everything a frozen policy needs
    (``feature_mean = 0``, ``feature_std = 1`` when the learner does not standardise).

    Layout (what :meth:`rapport.agents.bandits.LinearArmPolicy.linear_parameters` exports), with ``d`` raw features and
    ``K`` arms::

        z̃ = ((x - feature_mean) / feature_std, 1)        # (d+1,), float64
        mean_k(x)  = z̃ · theta[k]                         # predicted reward of arm k
        width_k(x) = sqrt(z̃ᵀ a_inv[k] z̃)                 # posterior sd / σ̂ of that prediction
        LinUCB:    mean_k + α · σ̂ · width_k   (σ̂ = noise_std, or 1 without noise scaling)
        Thompson:  mean_k + v · σ̂ · width_k · ε_k,  ε_k ~ N(0, 1) independently per arm

    For speed the same quantities are computed as ``(x - feature_mean) @ W + w`` with the
    standardisation folded into ``W`` and ``a_inv`` replaced by its Cholesky factor (one matrix
    product for all arms, float32): identical up to float32 rounding.
    """

    feature_mean: np.ndarray
    """(d,) subtracted from raw features."""
    feature_std: np.ndarray
    """(d,) raw features are divided by this after centring."""
    theta: np.ndarray
    """(K, d+1) ridge coefficients per arm on z̃; the last one multiplies the constant 1."""
    cov: np.ndarray
    """(K, d+1, d+1) ``A_k⁻¹``, the inverse of the regularised Gram matrix on z̃ (posterior
    covariance / σ²)."""
    noise_std: float
    """Estimated reward noise σ̂ (pooled over arms)."""
    exact_ties_possible: bool = True
    """False when at most one arm is untrained: distinct posteriors tie with probability 0, so
    tie detection can be skipped."""

    def __post_init__(self) -> None:
        K, d1 = self.theta.shape
        d = d1 - 1
        inv_std = 1.0 / self.feature_std
        # width_k² = ‖L_kᵀ z̃‖² with A_k⁻¹ = L_k L_kᵀ: one product gives every arm's L_kᵀ z̃
        chol_t = np.linalg.cholesky(self.cov).transpose(0, 2, 1)  # (K, d+1, d+1) = L_kᵀ
        weights = np.empty((d, K + K * d1))
        weights[:, :K] = (self.theta[:, :d] * inv_std).T
        weights[:, K:] = (chol_t[:, :, :d] * inv_std).reshape(K * d1, d).T
        bias = np.concatenate([self.theta[:, d], chol_t[:, :, d].reshape(-1)])
        # the bias is the last row: scoring multiplies (x - mean, 1) by it, so no separate add
        object.__setattr__(self, "_weights", np.vstack([weights, bias]).astype(np.float32))
        object.__setattr__(self, "_mean32", self.feature_mean.astype(np.float32))

    @property
    def n_arms(self) -> int:
        return self.theta.shape[0]

    def standardize(self, obs: np.ndarray) -> np.ndarray:
        """(n, d) raw features -> (n, d+1) float64 z̃, with a trailing column of ones."""
        z = np.empty((obs.shape[0], obs.shape[1] + 1))
        z[:, :-1] = obs  # cast first: same-dtype arithmetic below is several times faster
        z[:, :-1] -= self.feature_mean
        z[:, :-1] *= 1.0 / self.feature_std
        z[:, -1] = 1.0
        return z

    def predict(self, obs: np.ndarray, with_var: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Mean reward (n, K) and squared width ``z̃ᵀ A_k⁻¹ z̃`` (n, K) (None unless ``with_var``)
        for (n, d) raw features, float32."""
        K, d1 = self.theta.shape
        centred = np.empty((obs.shape[0], d1), np.float32)
        np.subtract(obs, self._mean32, out=centred[:, :-1], dtype=np.float32)  # centre first: no cancellation
        centred[:, -1] = 1.0
        if not with_var:
            return centred @ self._weights[:, :K], None
        n = len(obs)
        mean, var = np.empty((n, K), np.float32), np.empty((n, K), np.float32)
        step = max(1, _PREDICT_CHUNK // (K * (d1 + 1)))  # rows per chunk: bounds the (rows, K·(d+2)) product
        for s in range(0, n, step):  # one pass for the usual batch sizes
            out = centred[s:s + step] @ self._weights
            roots = out[:, K:].reshape(len(out), K, d1)
            mean[s:s + step] = out[:, :K]
            np.einsum("nkd,nkd->nk", roots, roots, out=var[s:s + step])
        return mean, var

    def as_dict(self) -> dict[str, np.ndarray]:
        """The public parameters (see the class docstring), as float64 numpy arrays."""
        return {"feature_mean": self.feature_mean.copy(), "feature_std": self.feature_std.copy(),
                "theta": self.theta.copy(), "a_inv": self.cov.copy(),
                "noise_std": np.array(self.noise_std)}


class DisjointRidge:
    """Per-arm ridge regression of reward on context, sufficient statistics in float64.

    For each arm the only state is the moment matrix ``M_k = Σ v vᵀ`` of ``v = (x, 1, r)``,
    shape (d+2, d+2): it holds the Gram matrix, ``Σ x r``, ``Σ r²``, ``Σ x`` and the count, so
    an update is one matrix product per arm, and the feature mean / variance used for
    standardisation come from the summed moments (no separate pass over the data).

    Parameters
    ----------
    n_features, n_arms : int
    ridge : float
        Penalty λ on the coefficients (the prior precision, in units of σ²): on the standardised
        coefficients by default, on the raw ones with ``standardize=False``.
    standardize : bool
        True (default): fit on features standardised with the running mean / std of every
        context seen. False: fit on the raw features, the textbook model (see the module
        docstring).
    """

    def __init__(self, n_features: int, n_arms: int, ridge: float = 1.0, standardize: bool = True) -> None:
        self.ridge = check_real("ridge", ridge, minimum=0.0, exclusive=True,
                                meaning="it keeps every arm's Gram matrix invertible")
        self.standardize = check_flag("standardize", standardize,
                                      meaning="false fits on raw features, the textbook model")
        self.n_features = n_features
        self.moments = np.zeros((n_arms, n_features + 2, n_features + 2))

    @property
    def counts(self) -> np.ndarray:
        """(K,) observations per arm."""
        d = self.n_features
        return self.moments[:, d, d]

    def add(self, x: np.ndarray, arm: np.ndarray, reward: np.ndarray) -> None:
        """Fold in (n, d) contexts, (n,) arm indices and (n,) rewards, grouped by arm."""
        n, d = x.shape
        order = np.argsort(arm, kind="stable")
        v = np.empty((n, d + 2))
        v[:, :d], v[:, d], v[:, d + 1] = x[order], 1.0, reward[order]
        bounds = np.searchsorted(arm[order], np.arange(len(self.moments) + 1))
        for k in np.flatnonzero(np.diff(bounds)):  # loop over arms present, not over customers
            block = v[bounds[k]:bounds[k + 1]]
            self.moments[k] += block.T @ block

    def standardization(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std (d,) of every context seen so far; std 1 for constant/unseen features."""
        d = self.n_features
        total = self.moments.sum(axis=0)
        count = max(total[d, d], 1.0)
        mean = total[:d, d] / count
        var = np.maximum(np.diagonal(total)[:d] / count - mean**2, 0.0)
        std = np.sqrt(var)
        # relative floor: a feature constant up to rounding must not be blown up to unit scale
        return mean, np.where(std > 1e-6 * (1.0 + np.abs(mean)), std, 1.0)

    def fit(self) -> LinearFit:
        """Ridge solution under the current standardisation (or on raw features when
        ``standardize`` is False), all history included."""
        d = self.n_features
        if self.standardize:
            mean, std = self.standardization()
            T = np.eye(d + 2)  # (x, 1, r) -> (z, 1, r); the same map applied to every moment matrix
            T[:d, :d] /= std[:, None]
            T[:d, d] = -mean / std
            moments = T @ self.moments @ T.T
        else:  # the identity map, skipped; a copy since the ridge is added in place below
            mean, std = np.zeros(d), np.ones(d)
            moments = self.moments.copy()
        gram = moments[:, :d + 1, :d + 1]
        gram[:, np.arange(d + 1), np.arange(d + 1)] += self.ridge
        xy, yy = moments[:, :d + 1, d + 1], moments[:, d + 1, d + 1]
        cov = np.linalg.inv(gram)
        theta = np.matmul(cov, xy[:, :, None])[:, :, 0]
        rss = np.maximum(yy - (theta * xy).sum(axis=1) - self.ridge * (theta**2).sum(axis=1), 0.0)
        counts = self.counts
        # one pseudo-observation of variance 1 keeps σ̂ defined (and exploratory) before data
        noise_var = (1.0 + rss.sum()) / (1.0 + counts.sum())
        return LinearFit(mean, std, theta, cov, float(np.sqrt(noise_var)), int((counts == 0).sum()) > 1)

