"""Batched contextual bandits with action features: choose among C creatives by their embeddings.

Model (bilinear ridge). A person's context ``x`` (the observation, or the ``context_features``
subset) and a creative's embedding ``e`` enter through the outer product::

    reward ≈ z̃ᵀ W ẽ,   z̃ = (standardised x, 1),   ẽ = (standardised e, 1)

i.e. ``xᵀ W_xe e`` (personal taste for embedding directions) ``+ b_eᵀ e`` (creatives that are
better for everyone) ``+ w_xᵀ x + w_0`` (who is worth contacting at all; it does not change the
ranking of creatives but keeps the fit honest). It is ridge regression on
``φ = vec(z̃ ⊗ ẽ)`` of dimension ``p = (d+1)(D+1)`` with posterior ``N(θ, σ̂² A⁻¹)``,
``A = λI + Σ φφᵀ``, one model shared by all creatives — a creative never shown is scored from its
embedding, which is what makes C = 10^4 or 10^5 learnable.

Standardisation follows :mod:`rapport.agents.ridge`: ``standardize=True`` (default) keeps the
moments of the *raw* ``(x, 1) ⊗ ẽ`` and maps them at refit to the running context mean / std of
every context learned from (so the ridge penalty means the same for every feature); embeddings
are standardised once with the catalogue's column mean / std (the firm knows its whole
catalogue). ``standardize=False`` fits on raw ``(x, 1) ⊗ (e, 1)`` — the textbook model.

Decisions, batched: ``U = Z̃ W`` (n, D+1), scores ``U Ẽᵀ`` in float32 row chunks that stay in
cache (``CHUNK_ELEMENTS``), argmax per row; ties go to the lowest id (deterministic). BLAS runs
single-threaded inside a chunk (OpenBLAS spin-waits on a shared machine); ``threads > 1`` splits
the rows over Python threads instead (numpy releases the GIL). Rules and their propensities:

* ``greedy`` — argmax of the mean; propensity 1.
* ``ucb`` — mean + α·σ̂·width. The exact width ``sqrt(φᵀA⁻¹φ)`` costs (D+1)² per (row, creative),
  ~17x a mean score at D = 16. ``bonus="kronecker"`` (default) replaces ``A⁻¹`` by its nearest
  Kronecker product ``Σ_z ⊗ Σ_e`` (Van Loan & Pitsianis 1993: the leading singular pair of the
  rearranged matrix, factors made positive semi-definite), for which the width factorises,
  ``sqrt(z̃ᵀΣ_z z̃)·sqrt(ẽᵀΣ_e ẽ)``: one more column in the score product, so UCB runs at greedy
  speed. It is exact when ``A⁻¹`` is a Kronecker product — before any data (``A = λI``), and
  approximately when contexts and shown creatives are independent (e.g. under uniform logging,
  ``Σφφᵀ ≈ n·E[z̃z̃ᵀ] ⊗ E[ẽẽᵀ]``); otherwise it is an approximation of the LinUCB bonus, not its
  confidence bound. ``bonus="exact"`` computes ``ẽᵀ Σ_i ẽ`` with the per-row (D+1)² covariance
  ``Σ_i`` (textbook LinUCB on φ; ~20-30x slower, see ``scripts/bench_creative.py``).
  Deterministic: propensity 1.
* ``thompson`` — one posterior draw ``W̃ ~ N(θ, v²σ̂²A⁻¹)`` per ``choose`` call, shared by the
  batch's rows, argmax of ``z̃ᵀ W̃ ẽ``. The chosen creative's probability (the row's marginal
  over posterior draws) has no closed form; it is estimated from ``propensity_draws`` further
  draws plus the realised one, ``(hits + 1) / (M + 1)`` as in
  :class:`rapport.agents.exploration.ThompsonRule` (never 0; standard error <= 0.5/sqrt(M+1)).
  Each draw is a full scoring, so a call costs about (M + 1)x a greedy one. Sharing one draw
  across rows leaves each row's propensity unchanged; it correlates the rows' decisions.
* any rule with ``epsilon`` > 0: with probability ε a uniform creative; propensity
  ``(1-ε)·P_rule(id) + ε/C`` (exact for greedy/ucb; with Thompson the estimate above in P_rule).

Learner ≠ policy: :meth:`CreativeBandit.policy` returns a frozen :class:`BilinearCreativePolicy`
(numpy arrays only), greedy unless ``explore``; :meth:`BilinearCreativePolicy.scoring_parameters`
gives the arrays an export needs.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from rapport.agents.creative import _Catalogue
from rapport.agents.hyperparams import check_count, check_flag, check_real

__all__ = ["BilinearCreativePolicy", "BilinearFit", "BilinearRidge", "CreativeBandit", "CreativeEpsilonGreedy",
           "CreativeLinUCB", "CreativeThompson", "RULES", "nearest_kronecker", "run_row_chunks",
           "single_threaded_blas"]

RULES = ("greedy", "ucb", "thompson")
BONUSES = ("kronecker", "exact")
CHUNK_ELEMENTS = 1 << 20
"""float32 (row, creative) scores per chunk (4 MB: a chunk's scores stay in cache)."""
_UPDATE_ROWS = 4096


@functools.cache
def _blas_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional: only a speed matter
        return None
    return ThreadpoolController()


def single_threaded_blas() -> contextlib.AbstractContextManager:
    """BLAS limited to one thread: with two threads on cores shared with other work OpenBLAS
    spin-waits, and a chunk's (rows, D+1) x (D+1, C) product is too small to split anyway."""
    controller = _blas_controller()
    return controller.limit(limits=1, user_api="blas") if controller is not None else contextlib.nullcontext()


def run_row_chunks(n: int, rows: int, threads: int, work: Any) -> None:
    """``work(lo, hi)`` over rows ``[0, n)``: at once, or split into ``threads`` contiguous parts run
    on Python threads (numpy releases the GIL in matmul / argmax) when there is enough work."""
    if threads == 1 or n < 2 * rows:
        work(0, n)
        return
    bounds = np.linspace(0, n, threads + 1).astype(int)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, bounds[:-1], bounds[1:]))


# ------------------------------------------------------------------------------ the model


@dataclass(frozen=True)
class BilinearFit:
    """Posterior of the bilinear model, in standardised coordinates (module doc).

    ``z̃ = ((x - feature_mean) / feature_std, 1)`` (d+1,), ``ẽ = ((e - embedding_mean) /
    embedding_std, 1)`` (D+1,), score ``z̃ᵀ W ẽ`` with ``W = theta.reshape(d+1, D+1)``.
    """

    feature_mean: np.ndarray
    """(d,) context mean subtracted (0 without standardisation)."""
    feature_std: np.ndarray
    """(d,) context scale (1 without standardisation)."""
    theta: np.ndarray
    """(p,) = ((d+1)·(D+1),) ridge coefficients, row-major over (context, embedding)."""
    cov: np.ndarray
    """(p, p) ``A⁻¹`` (posterior covariance / σ²)."""
    noise_std: float
    """σ̂, pooled residual sd with a one-pseudo-observation prior of 1."""

    @property
    def weights(self) -> np.ndarray:
        """(d+1, D+1) ``W``."""
        d1 = len(self.feature_mean) + 1
        return self.theta.reshape(d1, -1)


class BilinearRidge:
    """Sufficient statistics of the bilinear ridge regression (float64): moments of ``(φ_raw, r)``
    with ``φ_raw = (x, 1) ⊗ ẽ``, plus the context sums for standardisation."""

    def __init__(self, n_context: int, creative_dim: int, ridge: float = 1.0, standardize: bool = True) -> None:
        self.ridge = check_real("ridge", ridge, minimum=0.0, exclusive=True,
                                meaning="it keeps the Gram matrix invertible")
        self.standardize = check_flag("standardize", standardize,
                                      meaning="false fits on raw features, the textbook model")
        self.d, self.D1 = n_context, creative_dim
        p = (n_context + 1) * creative_dim
        self.moments = np.zeros((p + 1, p + 1))
        self.x_sum, self.x_sq, self.count = np.zeros(n_context), np.zeros(n_context), 0.0

    @property
    def n_params(self) -> int:
        return (self.d + 1) * self.D1

    def add(self, x: np.ndarray, e_tilde: np.ndarray, reward: np.ndarray) -> None:
        """Fold in (m, d) contexts, the (m, D+1) ẽ of the creatives shown and (m,) rewards."""
        p = self.n_params
        x64 = np.asarray(x, np.float64)
        self.x_sum += x64.sum(axis=0)
        self.x_sq += (x64**2).sum(axis=0)
        self.count += len(x64)
        v = np.empty((min(len(x64), _UPDATE_ROWS), p + 1))
        with single_threaded_blas():
            self._add_chunks(x64, e_tilde, reward, v)

    def _add_chunks(self, x64: np.ndarray, e_tilde: np.ndarray, reward: np.ndarray, v: np.ndarray) -> None:
        d, D1, p = self.d, self.D1, self.n_params
        for s in range(0, len(x64), _UPDATE_ROWS):
            xs, es = x64[s:s + _UPDATE_ROWS], e_tilde[s:s + _UPDATE_ROWS]
            m = len(xs)
            phi = v[:m, :p].reshape(m, d + 1, D1)
            np.multiply(xs[:, :, None], es[:, None, :], out=phi[:, :d, :])
            phi[:, d, :] = es
            v[:m, p] = reward[s:s + m]
            self.moments += v[:m].T @ v[:m]

    def standardization(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std (d,) of every context learned from; std 1 for constant/unseen features."""
        count = max(self.count, 1.0)
        mean = self.x_sum / count
        std = np.sqrt(np.maximum(self.x_sq / count - mean**2, 0.0))
        return mean, np.where(std > 1e-6 * (1.0 + np.abs(mean)), std, 1.0)

    def fit(self) -> BilinearFit:
        with single_threaded_blas():  # small dense algebra: threads only spin-wait on shared cores
            return self._fit()

    def _fit(self) -> BilinearFit:
        d, D1, p = self.d, self.D1, self.n_params
        if self.standardize:
            mean, std = self.standardization()
            T = np.eye(d + 1)  # (x, 1) -> (z, 1); on φ it acts as T ⊗ I
            T[:d, :d] /= std[:, None]
            T[:d, d] = -mean / std
            full = np.eye(p + 1)
            full[:p, :p] = np.kron(T, np.eye(D1))
            moments = full @ self.moments @ full.T
        else:
            mean, std = np.zeros(d), np.ones(d)
            moments = self.moments.copy()
        gram = moments[:p, :p]
        gram[np.arange(p), np.arange(p)] += self.ridge
        xy, yy = moments[:p, p], moments[p, p]
        cov = np.linalg.inv(gram)
        cov = 0.5 * (cov + cov.T)
        theta = cov @ xy
        rss = max(yy - theta @ xy - self.ridge * theta @ theta, 0.0)
        noise_var = (1.0 + rss) / (1.0 + self.count)
        return BilinearFit(mean, std, theta, cov, float(np.sqrt(noise_var)))


def nearest_kronecker(cov: np.ndarray, d1: int, D1: int) -> tuple[np.ndarray, np.ndarray]:
    """``(Σ_z (d1, d1), Σ_e (D1, D1))`` minimising ``‖cov − Σ_z ⊗ Σ_e‖_F`` (Van Loan & Pitsianis
    1993: rank-1 SVD of the rearranged matrix), each made positive semi-definite (eigenvalues
    clipped at 0) with the scale on Σ_z."""
    rearranged = cov.reshape(d1, D1, d1, D1).transpose(0, 2, 1, 3).reshape(d1 * d1, D1 * D1)
    u, s, vt = np.linalg.svd(rearranged, full_matrices=False)
    cov_z, cov_e = (s[0] * u[:, 0]).reshape(d1, d1), vt[0].reshape(D1, D1)
    if np.trace(cov_e) < 0:  # the singular pair's sign is arbitrary
        cov_z, cov_e = -cov_z, -cov_e

    def psd(m: np.ndarray) -> np.ndarray:
        w, q = np.linalg.eigh(0.5 * (m + m.T))
        return (q * np.maximum(w, 0.0)) @ q.T

    return psd(cov_z), psd(cov_e)


# ------------------------------------------------------------------------------ the policy


def _check_rule(rule: str, bonus: str) -> None:
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    if bonus not in BONUSES:
        raise ValueError(f"bonus must be one of {', '.join(BONUSES)}, got {bonus!r}")


class BilinearCreativePolicy(_Catalogue):
    """Frozen bilinear scorer + rule (module doc); a :class:`~rapport.agents.creative.CreativeSelector`
    whose ``update`` is refused (learn with :class:`CreativeBandit`)."""

    def __init__(self, embeddings: np.ndarray, feature_names: Sequence[str], context_columns: np.ndarray,
                 embedding_mean: np.ndarray, embedding_std: np.ndarray, fit: BilinearFit, *, rule: str = "greedy",
                 alpha: float = 1.0, bonus: str = "kronecker", v: float = 1.0, propensity_draws: int = 16,
                 epsilon: float = 0.0, scale_by_noise: bool = True, threads: int = 1) -> None:
        super().__init__(embeddings, feature_names)
        _check_rule(rule, bonus)
        self.rule, self.bonus = rule, bonus
        self.alpha = check_real("alpha", alpha, minimum=0.0, meaning="UCB width in posterior sds; 0 = greedy")
        self.v = check_real("v", v, minimum=0.0, meaning="Thompson posterior scale; 0 = greedy")
        self.propensity_draws = check_count("propensity_draws", propensity_draws, minimum=1,
                                            meaning="posterior draws per choose call for Thompson propensities")
        self.epsilon = check_real("epsilon", epsilon, minimum=0.0, maximum=1.0,
                                  meaning="probability of a uniformly random creative")
        self.scale_by_noise = check_flag("scale_by_noise", scale_by_noise, meaning="false gives the textbook rule")
        self.threads = check_count("threads", threads, minimum=1, meaning="Python threads that split the rows")
        self.context_columns = np.asarray(context_columns, np.int64)
        self.embedding_mean, self.embedding_std = embedding_mean, embedding_std
        self.fit = fit
        e_tilde = np.ones((self.n_creatives, self.embeddings.shape[1] + 1), np.float32)
        e_tilde[:, :-1] = (self.embeddings - embedding_mean) / embedding_std
        self.e_tilde = e_tilde
        self._kron = rule == "ucb" and bonus == "kronecker" and self.alpha > 0
        with single_threaded_blas():
            self._prepare(fit, e_tilde, len(context_columns) + 1)

    def _prepare(self, fit: BilinearFit, e_tilde: np.ndarray, d1: int) -> None:
        """The score operands of the catalogue under this fit and rule."""
        rule, bonus = self.rule, self.bonus
        if self._kron:  # the bonus as one more column: score = [u, a_i] · [ẽ_c, h_c]
            self._cov_z, cov_e = nearest_kronecker(fit.cov, d1, e_tilde.shape[1])
            h = np.sqrt(np.maximum(np.einsum("ca,ab,cb->c", e_tilde, cov_e, e_tilde), 0.0))
            self._e_t = np.ascontiguousarray(np.vstack([e_tilde.T, h[None, :]]).astype(np.float32))
        else:
            self._e_t = np.ascontiguousarray(e_tilde.T)  # (D+1, C): the scoring operand
        if rule == "ucb" and bonus == "exact":
            pairs = (e_tilde[:, :, None] * e_tilde[:, None, :]).reshape(len(e_tilde), -1)
            self._e_pairs_t = np.ascontiguousarray(pairs.T)  # ((D+1)², C)
        self._chol = np.linalg.cholesky(fit.cov + 1e-12 * np.eye(len(fit.cov))) if rule == "thompson" else None

    # ---- public
    def z_tilde(self, obs: np.ndarray) -> np.ndarray:
        """(n, d+1) float32 standardised contexts with a trailing 1."""
        x = np.asarray(obs)[:, self.context_columns]
        z = np.ones((len(x), len(self.context_columns) + 1), np.float32)
        z[:, :-1] = (x - self.fit.feature_mean) / self.fit.feature_std
        return z

    def expected_rewards(self, obs: np.ndarray) -> np.ndarray:
        """(n, C) posterior-mean reward of every creative (float32; fine for small batches)."""
        from rapport.agents.validation import check_obs

        z = self.z_tilde(check_obs(obs, self.columns))
        return (z @ self.fit.weights.astype(np.float32)) @ self._e_t[:self.e_tilde.shape[1]]

    def creative_distribution(self, obs: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """(n, C) probability of every creative on each row (float64; small batches): exact for
        greedy / ucb (one-hot argmax, mixed with ε/C); for Thompson the empirical distribution
        of ``propensity_draws + 1`` posterior draws (``rng`` needed), mixed likewise. Rows sum to 1."""
        from rapport.agents.validation import check_obs

        obs = check_obs(obs, self.columns)
        n, C = len(obs), self.n_creatives
        z = self.z_tilde(obs)
        sigma = self.fit.noise_std if self.scale_by_noise else 1.0
        if self.rule == "thompson" and self.v > 0:
            if rng is None:
                raise ValueError("creative_distribution of a Thompson policy needs rng (posterior draws)")
            draws = [self._draw(sigma, rng) for _ in range(1 + self.propensity_draws)]
        else:
            draws = [self.fit.weights]
        us, extra = self._operands(z, draws, sigma)
        best = self._argmax(us, extra, self.alpha * sigma)
        dist = np.zeros((n, C))
        np.add.at(dist, (np.repeat(np.arange(n), best.shape[1]), best.reshape(-1)), 1.0 / best.shape[1])
        return (1.0 - self.epsilon) * dist + self.epsilon / C

    def _draw(self, sigma: float, rng: np.random.Generator) -> np.ndarray:
        W = self.fit.weights
        return W + self.v * sigma * (self._chol @ rng.standard_normal(W.size)).reshape(W.shape)

    def scoring_parameters(self) -> dict[str, Any]:
        """Everything an export needs for the greedy decision ``argmax_c z̃ᵀ W ẽ_c`` (module doc)."""
        return {"feature_names": self.feature_names, "context_columns": self.context_columns.copy(),
                "feature_mean": self.fit.feature_mean.copy(), "feature_std": self.fit.feature_std.copy(),
                "weights": self.fit.weights.copy(), "embeddings": np.array(self.embeddings),
                "embedding_mean": self.embedding_mean.copy(), "embedding_std": self.embedding_std.copy()}

    # ---- decisions
    def _choose(self, obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        n, C = len(obs), self.n_creatives
        z = self.z_tilde(obs)
        sigma = self.fit.noise_std if self.scale_by_noise else 1.0
        W = self.fit.weights
        if self.rule == "thompson" and self.v > 0:
            draws = [self._draw(sigma, rng) for _ in range(1 + self.propensity_draws)]
        else:
            draws = [W]
        us, extra = self._operands(z, draws, sigma)
        best = self._argmax(us, extra, self.alpha * sigma)  # (n, draws): each draw's argmax
        ids = best[:, 0]
        M = len(us) - 1
        prop = np.ones(n) if M == 0 else ((best[:, 1:] == ids[:, None]).sum(axis=1) + 1.0) / (M + 1)
        if self.epsilon > 0:
            explore = rng.random(n) < self.epsilon
            chosen = np.where(explore, rng.integers(0, C, n), ids)
            if M == 0:
                rule_prop = (chosen == ids).astype(np.float64)
            else:  # an explored id other than the realised argmax: its share of the further draws
                rule_prop = np.where(chosen == ids, prop, (best[:, 1:] == chosen[:, None]).sum(axis=1) / M)
            ids, prop = chosen, (1.0 - self.epsilon) * rule_prop + self.epsilon / C
        return ids.astype(np.int64), prop

    def _operands(self, z: np.ndarray, draws: list[np.ndarray],
                  sigma: float) -> tuple[list[np.ndarray], np.ndarray | None]:
        """Row operands of the score products (one per posterior draw) and the exact bonus's inputs."""
        us = [z @ w.astype(np.float32) for w in draws]  # (n, D+1) each
        if self._kron:
            a = np.sqrt(np.maximum(np.einsum("nj,jk,nk->n", z, self._cov_z.astype(np.float32), z), 0.0))
            us = [np.hstack([us[0], (self.alpha * sigma * a)[:, None]]).astype(np.float32)]
        extra = self._exact_bonus_inputs(z) if self.rule == "ucb" and self.bonus == "exact" and self.alpha > 0 else None
        return us, extra

    def _exact_bonus_inputs(self, z: np.ndarray) -> np.ndarray:
        d1, D1 = z.shape[1], self.e_tilde.shape[1]
        cov = self.fit.cov.reshape(d1, D1, d1, D1)
        out = np.empty((len(z), D1 * D1), np.float32)
        step = max(1, (1 << 22) // (D1 * D1 * d1))
        flat = cov.transpose(0, 1, 3, 2).reshape(d1, D1 * D1 * d1)
        for s in range(0, len(z), step):  # Σ_i[a, b] = Σ_jk z_j z_k cov[j, a, k, b]
            zs = z[s:s + step].astype(np.float64)
            y = (zs @ flat).reshape(len(zs), D1 * D1, d1)
            out[s:s + step] = np.einsum("nqk,nk->nq", y, zs)
        return out

    def _argmax(self, us: list[np.ndarray], extra: np.ndarray | None, scale: float) -> np.ndarray:
        """(n, len(us)) row argmax of ``u Ẽᵀ`` for each ``u`` in ``us`` (the first plus ``extra``'s
        UCB bonus when given); ties to the lowest id."""
        n, C = len(us[0]), self.n_creatives
        out = np.empty((n, len(us)), np.int64)
        rows = max(1, CHUNK_ELEMENTS // (C * len(us)))

        def work(lo: int, hi: int) -> None:
            buf = np.empty((rows * len(us), C), np.float32)
            bonus_buf = np.empty((rows, C), np.float32) if extra is not None else None
            with single_threaded_blas():
                for s in range(lo, hi, rows):
                    e = min(hi, s + rows)
                    m = e - s
                    for k, u in enumerate(us):
                        np.matmul(u[s:e], self._e_t, out=buf[k * m:(k + 1) * m])
                    scores = buf[:m * len(us)]
                    if extra is not None:
                        b = bonus_buf[:m]
                        np.matmul(extra[s:e], self._e_pairs_t, out=b)
                        np.maximum(b, 0.0, out=b)
                        np.sqrt(b, out=b)
                        b *= scale
                        scores[:m] += b
                    out[s:e] = scores.argmax(axis=1).reshape(len(us), m).T

        run_row_chunks(n, rows, self.threads, work)
        return out

    def update(self, obs, ids, rewards, contacted) -> None:
        raise TypeError("BilinearCreativePolicy is a frozen policy; learn with CreativeBandit.update")


# ------------------------------------------------------------------------------ the learner


class CreativeBandit(_Catalogue):
    """Learner: bilinear ridge over (context, creative embedding) + a rule (module doc).

    Parameters
    ----------
    embeddings : (C, D) float array — the catalogue (injected; row c is creative c).
    feature_names : the observation's columns, in order.
    rule : ``"greedy"``, ``"ucb"`` or ``"thompson"``.
    alpha : UCB width in posterior sds (``rule="ucb"``).
    bonus : ``"kronecker"`` (default, fast, approximate) or ``"exact"`` UCB width.
    v : Thompson posterior scale; propensity_draws : Thompson draws for the propensity estimate.
    epsilon : probability of a uniformly random creative (any rule).
    ridge : λ > 0; standardize : running context standardisation (True) or the raw model (False).
    scale_by_noise : exploration in units of σ̂ (True) or the textbook rule (False).
    context_features : observation columns the model reads (default all); p = (d+1)(D+1) and an
        update costs O(p²) per row, so a subset keeps big catalogues with many features cheap.
    threads : Python threads that split a batch's rows (1 = single-threaded).
    """

    def __init__(self, embeddings: Any, feature_names: Sequence[str], *, rule: str = "ucb", alpha: float = 1.0,
                 bonus: str = "kronecker", v: float = 1.0, propensity_draws: int = 16, epsilon: float = 0.0,
                 ridge: float = 1.0, standardize: bool = True, scale_by_noise: bool = True,
                 context_features: Sequence[str] | None = None, threads: int = 1) -> None:
        super().__init__(embeddings, feature_names)
        _check_rule(rule, bonus)
        names = self.feature_names if context_features is None else tuple(context_features)
        self.context_columns = np.array([self.columns.index(f, "context_features") for f in names], np.int64)
        self.standardize = check_flag("standardize", standardize,
                                      meaning="false fits on raw features, the textbook model")
        if self.standardize:
            mean, std = self.embeddings.mean(axis=0, dtype=np.float64), self.embeddings.std(axis=0, dtype=np.float64)
            std = np.where(std > 1e-6 * (1.0 + np.abs(mean)), std, 1.0)
        else:
            mean, std = np.zeros(self.embeddings.shape[1]), np.ones(self.embeddings.shape[1])
        self.embedding_mean, self.embedding_std = mean, std
        self.model = BilinearRidge(len(self.context_columns), self.embeddings.shape[1] + 1, ridge, self.standardize)
        self.rule_params = {"rule": rule, "alpha": alpha, "bonus": bonus, "v": v, "propensity_draws": propensity_draws,
                            "epsilon": epsilon, "scale_by_noise": scale_by_noise, "threads": threads}
        self._current: BilinearCreativePolicy | None = self.policy(explore=True)  # checks the rule's parameters
        self._e_tilde = self._current.e_tilde.astype(np.float64)

    def _current_policy(self) -> BilinearCreativePolicy:
        if self._current is None:  # refit lazily: once per update, however many choose calls
            self._current = self.policy(explore=True)
        return self._current

    def _choose(self, obs, rng):
        return self._current_policy()._choose(obs, rng)

    def _learn(self, obs, ids, rewards):
        self.model.add(obs[:, self.context_columns], self._e_tilde[ids], rewards)
        self._current = None

    def fit(self, obs: np.ndarray, ids: np.ndarray, rewards: np.ndarray) -> CreativeBandit:
        """Learn from logged (obs, creative id, reward) of contacted rows; returns self."""
        self.update(obs, ids, rewards, np.ones(len(np.asarray(ids)), bool))
        return self

    def policy(self, explore: bool = False) -> BilinearCreativePolicy:
        """Frozen policy at the current fit: the exploring rule, or greedy (propensity 1)."""
        params = dict(self.rule_params)
        if not explore:
            params.update(rule="greedy", epsilon=0.0)
        return BilinearCreativePolicy(self.embeddings, self.feature_names, self.context_columns, self.embedding_mean,
                                      self.embedding_std, self.model.fit(), **params)


class CreativeLinUCB(CreativeBandit):
    """:class:`CreativeBandit` with ``rule="ucb"`` (``bonus`` kronecker by default)."""

    def __init__(self, embeddings: Any, feature_names: Sequence[str], *, alpha: float = 1.0, bonus: str = "kronecker",
                 **params: Any) -> None:
        super().__init__(embeddings, feature_names, rule="ucb", alpha=alpha, bonus=bonus, **params)


class CreativeThompson(CreativeBandit):
    """:class:`CreativeBandit` with ``rule="thompson"`` (one posterior draw per batch)."""

    def __init__(self, embeddings: Any, feature_names: Sequence[str], *, v: float = 1.0, propensity_draws: int = 16,
                 **params: Any) -> None:
        super().__init__(embeddings, feature_names, rule="thompson", v=v, propensity_draws=propensity_draws, **params)


class CreativeEpsilonGreedy(CreativeBandit):
    """:class:`CreativeBandit` with ``rule="greedy"`` and ε-uniform exploration (exact propensities)."""

    def __init__(self, embeddings: Any, feature_names: Sequence[str], *, epsilon: float = 0.1, **params: Any) -> None:
        super().__init__(embeddings, feature_names, rule="greedy", epsilon=epsilon, **params)

