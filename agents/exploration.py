"""Exploration rules of the linear bandits: how per-arm predictions become a decision.

A rule gets, for a batch of ``n`` customers and ``K`` candidate arms, the predicted mean reward
``mean`` (n, K), the squared prediction width ``var`` = ``z̃ᵀ A_k⁻¹ z̃`` (n, K) when it
``needs_var``, the :class:`rapport.agents.ridge.LinearFit` (for the noise scale σ̂), the allowed arms
(n, K) bool or None, and a generator; it returns the chosen column (n,) and its propensity (n,).

Rules are frozen dataclasses holding only their hyper-parameters, checked at construction (a NaN,
an infinite or a negative exploration rate fails naming the parameter), so they round-trip
through JSON (:func:`rule_to_dict` / :func:`rule_from_dict`).

Ties: exact ties (untrained arms share one posterior) are broken uniformly at random with one
``rng.random()`` draw per tied row, the k-th tied arm in column order for ``k = ⌊u·n_ties⌋``
(:func:`rapport.agents.validation.sample_allowed`); ties between trained arms have probability 0 and
are only looked for while two or more arms are untrained.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from rapport.agents.hyperparams import check_count, check_flag, check_real
from rapport.agents.validation import sample_allowed


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


def _set(rule: Any, name: str, value: Any) -> None:
    """Store a checked (normalised) hyper-parameter on a frozen rule."""
    object.__setattr__(rule, name, value)


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
        _set(self, "epsilon", check_real("epsilon", self.epsilon, minimum=0.0, maximum=1.0,
                                         meaning="probability of a uniformly random arm"))

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

    def __post_init__(self) -> None:
        _set(self, "alpha", check_real("alpha", self.alpha, minimum=0.0,
                                       meaning="LinUCB exploration width in posterior sds; 0 = greedy"))
        _set(self, "scale_by_noise", check_flag("scale_by_noise", self.scale_by_noise,
                                                meaning="false gives the textbook rule"))

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

    def __post_init__(self) -> None:
        _set(self, "v", check_real("v", self.v, minimum=0.0,
                                   meaning="Thompson posterior scale; 0 = greedy"))
        _set(self, "scale_by_noise", check_flag("scale_by_noise", self.scale_by_noise,
                                                meaning="false gives the textbook rule"))
        _set(self, "propensity_draws", check_count("propensity_draws", self.propensity_draws,
                                                   meaning="posterior draws per act call for propensities"))

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

