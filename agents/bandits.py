"""Linear contextual bandits over joint (channel, offer, spend) arms: ε-greedy, LinUCB, linear TS.

Arms are the joint actions flattened (``K = prod(nvec)``, 192 in the retail scenario) or a
candidate subset given as a ``(K, 3)`` array. Each arm has its own ridge regression of reward on
the standardised context (disjoint models, Li et al. 2010). Everything is batched: a batch of
``n`` contexts is scored for all arms with one matrix product, and updates are grouped by arm.

Learner ≠ policy: a bandit (:class:`LinearBandit` and its named variants) learns from
``update(obs, actions, rewards)``; :meth:`LinearBandit.policy` returns a frozen, standalone
:class:`LinearArmPolicy` (numpy arrays only) that is greedy by default or keeps the exploration
rule, for export or for logging data under a fixed policy.

Standardisation: the sufficient statistics ``A_k = Σ x̃ x̃ᵀ``, ``b_k = Σ x̃ r`` are kept for the
*raw* augmented context ``x̃ = (x, 1)`` in float64, together with the running mean/variance of
the contexts. At refit they are mapped to the current standardisation ``z̃ = T x̃`` (``A ↦ T A Tᵀ``,
``b ↦ T b``), which is exactly ridge regression on standardised features over the whole history —
raw features (dollars, weeks, flags) work and early data is not scaled differently from late.

Reward: whatever the caller passes to ``update``; :meth:`LinearBandit.update_from_step` applies
the configured ``reward`` — this week's profit (default) or :class:`LTVProxyReward` (profit plus
λ × the change in an observable lifetime-value proxy).

Persistence and export: ``state_dict()`` / ``load_state_dict()`` and ``save()`` / ``load()``
(``.npz``, no pickle) round-trip a learner; ``linear_parameters()`` gives the scoring as plain
arrays (layout in :class:`LinearFit`) for re-implementation as tensor ops.

Exploration is scaled by the estimated reward noise ``σ̂`` (pooled residual variance, with a
one-pseudo-observation prior of 1), so the same ``alpha`` / ``v`` work for rewards in dollars
and in {0, 1}; ``scale_by_noise=False`` gives the textbook rules.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.protocol import DecisionSchema
from agents.validation import (
    CheckedBatch,
    GuardedPolicy,
    all_joint_actions,
    arm_mask,
    check_arms,
    check_obs,
    joint_index,
    sample_allowed,
)

# --------------------------------------------------------------------------- linear model

_PREDICT_CHUNK = 1 << 22
"""float32 elements of the largest intermediate in :meth:`LinearFit.predict` (16 MB)."""


@dataclass(frozen=True)
class LinearFit:
    """Per-arm ridge posterior on standardised features: everything a frozen policy needs.

    Layout (what :meth:`LinearArmPolicy.linear_parameters` exports), with ``d`` raw features and
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
        Penalty λ on the standardised coefficients (the prior precision, in units of σ²).
    """

    def __init__(self, n_features: int, n_arms: int, ridge: float = 1.0) -> None:
        if ridge <= 0:
            raise ValueError(f"ridge must be > 0 (it keeps every arm's Gram matrix invertible), got {ridge}")
        self.ridge = ridge
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
        """Ridge solution under the current standardisation, all history included."""
        d = self.n_features
        mean, std = self.standardization()
        T = np.eye(d + 2)  # (x, 1, r) -> (z, 1, r); the same map applied to every moment matrix
        T[:d, :d] /= std[:, None]
        T[:d, d] = -mean / std
        moments = T @ self.moments @ T.T
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


# ---------------------------------------------------------------------- exploration rules


def _argmax_ties(scores: np.ndarray, rng: np.random.Generator | None, ties_possible: bool = True):
    """Row argmax; exact ties broken uniformly at random (or to the first arm when ``rng`` is
    None or ``ties_possible`` is False).

    Returns the index (n,), the row maximum (n,) and the number of arms it was drawn from (n,).
    """
    idx = scores.argmax(axis=1)
    best = scores[np.arange(len(idx)), idx]
    n_ties = np.ones(len(idx), np.int64)
    if rng is not None and ties_possible:
        ties = scores == best[:, None]
        n_ties = ties.sum(axis=1)
        if (n_ties > 1).any():
            rows = np.flatnonzero(n_ties > 1)
            idx[rows] = sample_allowed(ties[rows], rng)[0]
        else:
            n_ties[:] = 1
    return idx, best, n_ties


def _masked(scores: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    return scores if allowed is None else np.where(allowed, scores, -np.inf)


@dataclass(frozen=True)
class GreedyRule:
    """Highest predicted reward; ties to the first arm, so the policy is deterministic."""

    needs_var = False

    def choose(self, mean, var, fit, allowed, rng):
        idx, _, _ = _argmax_ties(_masked(mean, allowed), None)
        return idx, np.ones(len(idx))


@dataclass(frozen=True)
class EpsilonRule:
    """Greedy with probability 1-ε, uniform over allowed arms with probability ε.

    Exact propensity: ``(1-ε)·[a greedy]/n_ties + ε/K_allowed`` (ties among greedy arms split
    uniformly).
    """

    epsilon: float = 0.1
    needs_var = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")

    def choose(self, mean, var, fit, allowed, rng):
        scores = _masked(mean, allowed)
        n, K = scores.shape
        greedy, best, n_ties = _argmax_ties(scores, rng, fit.exact_ties_possible)
        if allowed is None:
            uniform, k_allowed = rng.integers(0, K, n), np.full(n, K)
        else:
            uniform, k_allowed = sample_allowed(allowed, rng)
        explore = rng.random(n) < self.epsilon
        idx = np.where(explore, uniform, greedy)
        is_greedy = scores[np.arange(n), idx] == best
        prop = (1 - self.epsilon) * is_greedy / n_ties + self.epsilon / np.maximum(k_allowed, 1)
        return idx, prop


@dataclass(frozen=True)
class UCBRule:
    """LinUCB: mean + α·σ̂·sqrt(z̃ᵀ A⁻¹ z̃) (σ̂ = 1 when ``scale_by_noise`` is False).

    Deterministic except for exact ties (untrained arms), split uniformly: propensity 1/n_ties.
    """

    alpha: float = 1.0
    scale_by_noise: bool = True
    needs_var = True

    def choose(self, mean, var, fit, allowed, rng):
        scale = self.alpha * (fit.noise_std if self.scale_by_noise else 1.0)
        ucb = np.sqrt(var, out=var)
        ucb *= scale
        ucb += mean
        idx, _, n_ties = _argmax_ties(_masked(ucb, allowed), rng, fit.exact_ties_possible)
        return idx, 1.0 / n_ties


@dataclass(frozen=True)
class ThompsonRule:
    """Linear Thompson sampling with a Gaussian posterior per arm.

    Sampling θ̃_k ~ N(θ_k, v²σ̂² A_k⁻¹) and scoring z̃ᵀθ̃_k is the same as drawing the score
    directly from N(z̃ᵀθ_k, v²σ̂² z̃ᵀA_k⁻¹z̃), independently per arm (disjoint models), which
    is what is done. The probability of the chosen arm has no closed form; it is estimated
    from ``propensity_draws`` further posterior draws plus the realised one,
    ``(hits + 1) / (draws + 1)`` (never 0; standard error ≤ 0.5/sqrt(draws + 1)).
    """

    v: float = 1.0
    scale_by_noise: bool = True
    propensity_draws: int = 64
    needs_var = True

    def choose(self, mean, var, fit, allowed, rng):
        sd = self.v * (fit.noise_std if self.scale_by_noise else 1.0) * np.sqrt(var)
        n, K = mean.shape
        idx = _masked(mean + sd * rng.standard_normal((n, K)), allowed).argmax(axis=1)
        M = self.propensity_draws
        hits = np.zeros(n)
        if M > 0:
            z = rng.standard_normal((M, K))  # shared across rows: each row's estimate is unbiased
            chunk = max(1, (1 << 21) // (M * K))
            for s in range(0, n, chunk):  # chunks of rows bound memory at ~16 MB
                e = min(n, s + chunk)
                draws = mean[s:e, None, :] + sd[s:e, None, :] * z
                if allowed is not None:
                    draws = np.where(allowed[s:e, None, :], draws, -np.inf)
                hits[s:e] = (draws.argmax(axis=2) == idx[s:e, None]).sum(axis=1)
        return idx, (hits + 1.0) / (M + 1.0)


ExplorationRule = GreedyRule | EpsilonRule | UCBRule | ThompsonRule


# ----------------------------------------------------------------------- policy and learner

_RULES: dict[str, type] = {"greedy": GreedyRule, "epsilon": EpsilonRule, "ucb": UCBRule, "thompson": ThompsonRule}


def rule_to_dict(rule: ExplorationRule) -> dict[str, Any]:
    """``{"name": ..., **parameters}`` of an exploration rule (JSON-friendly)."""
    name = next(k for k, cls in _RULES.items() if isinstance(rule, cls))
    return {"name": name, **dataclasses.asdict(rule)}


def rule_from_dict(spec: dict[str, Any]) -> ExplorationRule:
    """Inverse of :func:`rule_to_dict`."""
    spec = dict(spec)
    name = spec.pop("name")
    if name not in _RULES:
        raise ValueError(f"unknown exploration rule {name!r}; valid: {', '.join(_RULES)}")
    return _RULES[name](**spec)


def _choose(fit: LinearFit, rule: ExplorationRule, feats: np.ndarray, arms: np.ndarray, batch: CheckedBatch,
            rng: np.random.Generator, stats: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Score ``feats`` for every arm, apply ``rule`` among the allowed arms, do-nothing where no
    candidate arm is allowed (counted in ``stats["no_candidate_rows"]``)."""
    mean, var = fit.predict(feats, rule.needs_var)
    allowed = None if batch.dim_masks is None else arm_mask(batch.dim_masks, arms)
    idx, prop = rule.choose(mean, var, fit, allowed, rng)
    actions = arms[idx]
    prop = np.asarray(prop, np.float64)
    if allowed is not None:
        none = ~allowed.any(axis=1)
        if none.any():
            actions[none], prop[none] = 0, 1.0
            stats["no_candidate_rows"] += int(none.sum())
    return actions, prop


class LinearArmPolicy(GuardedPolicy):
    """Frozen per-arm linear policy: standardise, score every candidate arm, apply ``rule``.

    Holds only numpy arrays (``arms``, ``fit``) and a rule, so it can be pickled, saved
    (:meth:`state_dict`) or exported (:meth:`linear_parameters`) on its own. Rows where no
    candidate arm is allowed get do-nothing (``stats["no_candidate_rows"]``).
    """

    def __init__(self, schema: DecisionSchema, arms: np.ndarray, fit: LinearFit, rule: ExplorationRule) -> None:
        super().__init__(schema)
        self.arms, self.fit, self.rule = arms, fit, rule
        self.stats["no_candidate_rows"] = 0

    def expected_rewards(self, obs: np.ndarray) -> np.ndarray:
        """(n, K) predicted reward of every candidate arm (float32)."""
        return self.fit.predict(check_obs(obs, self.schema), False)[0]

    def linear_parameters(self) -> dict[str, Any]:
        """Everything needed to re-implement this policy as tensor ops (layout in
        :class:`LinearFit`): ``feature_mean`` (d,), ``feature_std`` (d,), ``theta`` (K, d+1),
        ``a_inv`` (K, d+1, d+1), ``noise_std`` (), ``arms`` (K, 3) joint actions of the K
        columns, ``feature_names`` and the ``rule`` (name and parameters; ``greedy`` = argmax of
        the mean, ties to the first arm)."""
        return {**self.fit.as_dict(), "arms": self.arms.copy(), "feature_names": self.schema.feature_names,
                "rule": rule_to_dict(self.rule)}

    def _decide(self, batch: CheckedBatch, rng: np.random.Generator):
        return _choose(self.fit, self.rule, batch.obs, self.arms, batch, rng, self.stats)


class LinearBandit:
    """Learner: disjoint ridge models per candidate arm + an exploration rule.

    ``act`` follows the current exploring policy; ``update`` folds in logged feedback (actions
    outside the candidate set, e.g. do-nothing forced by a constraint, are skipped and counted
    in ``stats["skipped_updates"]``); ``policy()`` exports a frozen copy.

    Parameters
    ----------
    schema : DecisionSchema
    rule : exploration rule (:class:`EpsilonRule`, :class:`UCBRule`, :class:`ThompsonRule`, ...)
    arms : (K, 3) int array, optional
        Candidate joint actions; default all ``prod(nvec)``.
    ridge : float
        Ridge penalty on standardised coefficients.
    refit_growth : float
        0 (default): refit after every update. ``g > 0``: "rarely switching" refits (Abbasi-Yadkori
        et al. 2011, §5) — the policy is refitted only once some arm's observation count has grown
        by a factor ``1 + g`` since the last refit (for d features the Gram determinant then
        grows by about ``(1 + g)^d``); cheaper per decision at a small cost in regret.
    reward : ``"profit"`` (default, same as None), ``"ltv_proxy"`` or an :class:`LTVProxyReward`
        How :meth:`update_from_step` turns a week's profit into the bandit's reward.
        (:meth:`update` takes rewards as given.)
    ltv_weight : float
        λ of ``reward="ltv_proxy"``: reward = profit + λ · ΔV (see :class:`LTVProxyReward`).
    """

    def __init__(self, schema: DecisionSchema, rule: ExplorationRule, *,
                 arms: np.ndarray | Sequence[Sequence[int]] | None = None, ridge: float = 1.0,
                 refit_growth: float = 0.0, reward: RewardSpec = None, ltv_weight: float = 1.0) -> None:
        if refit_growth < 0:
            raise ValueError(f"refit_growth must be >= 0, got {refit_growth}")
        self.schema, self.rule, self.refit_growth = schema, rule, refit_growth
        self.reward = resolve_reward(schema, reward, ltv_weight)
        self.arms = check_arms(all_joint_actions(schema.nvec) if arms is None else arms, schema.nvec)
        self.model = DisjointRidge(schema.n_features, len(self.arms), ridge)
        self._arm_of = np.full(schema.n_joint_actions, -1, np.int64)
        self._arm_of[joint_index(self.arms, schema.nvec)] = np.arange(len(self.arms))
        self.stats: dict[str, int] = {"all_forbidden_rows": 0, "no_candidate_rows": 0, "skipped_updates": 0}
        self._current: LinearArmPolicy | None = None
        self._counts_at_fit = np.zeros(len(self.arms))

    def act(self, obs: np.ndarray, rng: np.random.Generator, *,
            action_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if self._current is None:  # refit lazily: once per update, however many act calls
            self._current = LinearArmPolicy(self.schema, self.arms, self.model.fit(), self.rule)
            self._current.stats = self.stats  # one set of counters for the learner's lifetime
            self._counts_at_fit = self.model.counts.copy()
        return self._current.act(obs, rng, action_mask=action_mask)

    def update(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        """Learn from (n, d) contexts, (n, 3) actions taken and (n,) rewards observed."""
        obs, arm, rewards = arm_feedback(self.schema, self._arm_of, self.stats, obs, actions, rewards)
        self.model.add(obs, arm, rewards)
        if np.any(self.model.counts > (1.0 + self.refit_growth) * self._counts_at_fit):
            self._current = None

    def update_from_step(self, obs: np.ndarray, actions: np.ndarray, profit: np.ndarray,
                         next_obs: np.ndarray) -> None:
        """:meth:`update` with the configured reward (``reward``) of one env step."""
        rewards = profit if self.reward is None else self.reward(obs, profit, next_obs)
        self.update(obs, actions, rewards)

    def policy(self, explore: bool = False) -> LinearArmPolicy:
        """A frozen standalone policy: greedy (deterministic) by default, or with this learner's
        exploration rule (for logging data under a fixed policy)."""
        return LinearArmPolicy(self.schema, self.arms.copy(), self.model.fit(), self.rule if explore else GreedyRule())

    def linear_parameters(self) -> dict[str, Any]:
        """The current fit's parameters (see :meth:`LinearArmPolicy.linear_parameters`), with
        this learner's exploration rule."""
        return LinearArmPolicy(self.schema, self.arms, self.model.fit(), self.rule).linear_parameters()

    # ---- persistence -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume learning: numpy arrays and JSON-friendly scalars.

        ``moments`` (K, d+2, d+2) are the sufficient statistics of :class:`DisjointRidge`.
        """
        return {"kind": "linear_bandit", "rule": rule_to_dict(self.rule), "arms": self.arms.copy(),
                "ridge": self.model.ridge, "refit_growth": self.refit_growth,
                "moments": self.model.moments.copy(), "stats": dict(self.stats),
                "reward": reward_to_dict(self.reward),
                "feature_names": list(self.schema.feature_names), "nvec": list(self.schema.nvec)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (same schema; arms and rule are taken from it)."""
        _check_state_schema(state, self.schema)
        self.rule = rule_from_dict(state["rule"])
        self.refit_growth = float(state["refit_growth"])
        self.reward = reward_from_dict(self.schema, state.get("reward"))
        fresh = LinearBandit(self.schema, self.rule, arms=state["arms"], ridge=float(state["ridge"]))
        moments = np.asarray(state["moments"], np.float64)
        if moments.shape != fresh.model.moments.shape:
            raise ValueError(f"moments have shape {moments.shape}, expected {fresh.model.moments.shape}")
        self.arms, self.model, self._arm_of = fresh.arms, fresh.model, fresh._arm_of
        self.model.moments[:] = moments
        self.stats = {**self.stats, **{k: int(v) for k, v in state["stats"].items()}}
        self._current, self._counts_at_fit = None, np.zeros(len(self.arms))

    def save(self, path: str | Path) -> Path:
        """Write :meth:`state_dict` to an ``.npz`` file (no pickle); returns the path."""
        return save_state(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | Path, schema: DecisionSchema) -> LinearBandit:
        """A bandit restored from :meth:`save` (exploration rule, arms and ridge from the file)."""
        state = load_state(path)
        bandit = LinearBandit(schema, rule_from_dict(state["rule"]), arms=state["arms"], ridge=float(state["ridge"]))
        bandit.load_state_dict(state)
        return bandit


def arm_feedback(schema: DecisionSchema, arm_of: np.ndarray, stats: dict[str, Any], obs: np.ndarray,
                 actions: np.ndarray, rewards: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated feedback as (contexts, arm index, rewards); rows whose action is not one of the
    bandit's arms (``arm_of`` = −1) are dropped and counted in ``stats["skipped_updates"]``."""
    obs = check_obs(obs, schema)
    actions, rewards = _check_feedback(obs, actions, rewards)
    arm = arm_of[joint_index(actions, schema.nvec)]
    keep = arm >= 0
    if not keep.all():
        stats["skipped_updates"] += int((~keep).sum())
        obs, arm, rewards = obs[keep], arm[keep], rewards[keep]
    return obs, arm, rewards


def _check_feedback(obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    actions = np.asarray(actions)
    rewards = np.asarray(rewards, np.float64)
    n = obs.shape[0]
    if actions.shape != (n, 3) or rewards.shape != (n,):
        raise ValueError(f"update needs actions ({n}, 3) and rewards ({n},), got {actions.shape}, {rewards.shape}")
    if not np.isfinite(rewards).all():
        raise ValueError(f"non-finite reward at row {int(np.flatnonzero(~np.isfinite(rewards))[0])}")
    return actions, rewards


def _check_state_schema(state: dict[str, Any], schema: DecisionSchema) -> None:
    if tuple(state["feature_names"]) != schema.feature_names or tuple(state["nvec"]) != schema.nvec:
        raise ValueError(f"saved bandit was trained on features {tuple(state['feature_names'])} and "
                         f"nvec {tuple(state['nvec'])}; this schema has {schema.feature_names}, {schema.nvec}")


def save_state(state: dict[str, Any], path: str | Path) -> Path:
    """Save a state dict: arrays as ``.npz`` members, everything else as one JSON member."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz")
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    meta = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    np.savez(path, __meta__=np.array(json.dumps(meta)), **arrays)
    return path


def load_state(path: str | Path) -> dict[str, Any]:
    """Inverse of :func:`save_state`."""
    with np.load(path, allow_pickle=False) as data:
        state = {k: data[k] for k in data.files if k != "__meta__"}
        state.update(json.loads(str(data["__meta__"])))
    return state


class EpsilonGreedy(LinearBandit):
    """ε-greedy over per-arm ridge regressions (exact propensities)."""

    def __init__(self, schema: DecisionSchema, *, epsilon: float = 0.1, arms=None, ridge: float = 1.0,
                 refit_growth: float = 0.0, reward: RewardSpec = None,
                 ltv_weight: float = 1.0) -> None:
        super().__init__(schema, EpsilonRule(epsilon), arms=arms, ridge=ridge, refit_growth=refit_growth,
                         reward=reward, ltv_weight=ltv_weight)


class LinUCB(LinearBandit):
    """Disjoint LinUCB (Li et al. 2010) with exploration scaled by the estimated noise."""

    def __init__(self, schema: DecisionSchema, *, alpha: float = 1.0, scale_by_noise: bool = True,
                 arms=None, ridge: float = 1.0, refit_growth: float = 0.0, reward: RewardSpec = None,
                 ltv_weight: float = 1.0) -> None:
        super().__init__(schema, UCBRule(alpha, scale_by_noise), arms=arms, ridge=ridge, refit_growth=refit_growth,
                         reward=reward, ltv_weight=ltv_weight)


class LinearThompson(LinearBandit):
    """Linear Thompson sampling (Agrawal & Goyal 2013) with Monte-Carlo propensities."""

    def __init__(self, schema: DecisionSchema, *, v: float = 1.0, scale_by_noise: bool = True,
                 propensity_draws: int = 64, arms=None, ridge: float = 1.0, refit_growth: float = 0.0,
                 reward: RewardSpec = None,
                 ltv_weight: float = 1.0) -> None:
        super().__init__(schema, ThompsonRule(v, scale_by_noise, propensity_draws), arms=arms, ridge=ridge,
                         refit_growth=refit_growth, reward=reward, ltv_weight=ltv_weight)


# ----------------------------------------------------------------------------- rewards


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
    ``LTVProxyReward(schema, lam=ltv_weight)``; an :class:`LTVProxyReward` passes through."""
    if reward is None or reward == "profit":
        return None
    if reward == "ltv_proxy":
        return LTVProxyReward(schema, lam=float(ltv_weight))
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
