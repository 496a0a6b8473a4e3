"""What a policy would have done on logged contexts: its joint action distribution, and a
logging wrapper that explores so the logs support off-policy evaluation.

Joint actions are numbered in C order over ``nvec`` (as :func:`rapport.agents.validation.joint_index`).
Distributions over a log are held as ``scipy.sparse.csr_matrix`` of shape (n_rows, K): a
deterministic policy costs one entry per row, so million-row logs with K = 192 stay small.

How a policy's distribution is obtained (:func:`joint_distribution`)
---------------------------------------------------------------------
1. ``policy.action_distribution(obs, action_mask=...) -> (n, K)`` when the policy has it (the
   exact way; :class:`ExplorationMixture` has it).
2. Otherwise ``policy.act`` is called once. Rows where the propensity is 1 are point masses at
   the action taken (by the protocol, probability 1 means certainty), exactly.
3. Stochastic rows: ``policy.action_probabilities(obs, mask)`` (per-dimension probabilities,
   as :class:`rapport.agents.rl_policy.SB3Policy` gives them, whose dimensions are drawn independently)
   when present, else a Monte-Carlo estimate from ``mc_draws`` further calls to ``act``. The
   Monte-Carlo frequency is an unbiased estimate of the probability, so IPS, DM and DR stay
   unbiased (the self-normalised ones are ratio estimators anyway); it adds variance.

Batch-dependent policies (top-k targeting, budgets) decide relative to the batch they see, so
:func:`distribution_on_log` queries the policy one week at a time with that week's logged
customers as the batch, as they were when the log was written.
"""

from __future__ import annotations

import inspect

import numpy as np
import scipy.sparse as sp

from rapport.agents.protocol import DecisionSchema, Policy

DISTRIBUTION_TOLERANCE = 1e-6


def _split(mask: np.ndarray | None, nvec: tuple[int, ...]) -> list[np.ndarray] | None:
    if mask is None:
        return None
    edges = np.cumsum((0, *nvec))
    return [mask[:, edges[d]:edges[d + 1]] for d in range(len(nvec))]


def allowed_joint(mask: np.ndarray | None, nvec: tuple[int, ...], n: int) -> np.ndarray:
    """(n, K) bool: joint actions allowed by a per-dimension mask (all when ``mask`` is None)."""
    dims = _split(mask, nvec)
    if dims is None:
        return np.ones((n, int(np.prod(nvec))), bool)
    allowed = dims[0][:, :, None, None] & dims[1][:, None, :, None] & dims[2][:, None, None, :]
    return allowed.reshape(n, -1)


def product_distribution(per_dim: list[np.ndarray]) -> np.ndarray:
    """(n, prod k_d) joint distribution of independent per-dimension distributions [(n, k_d)]."""
    joint = per_dim[0]
    for p in per_dim[1:]:
        joint = (joint[:, :, None] * p[:, None, :]).reshape(joint.shape[0], -1)
    return joint


def _one_hot(joint: np.ndarray, K: int) -> sp.csr_matrix:
    n = joint.shape[0]
    return sp.csr_matrix((np.ones(n), joint, np.arange(n + 1)), shape=(n, K))


def _check_dense(dist: np.ndarray, n: int, K: int, source: str) -> np.ndarray:
    dist = np.asarray(dist, np.float64)
    if dist.shape != (n, K):
        raise ValueError(f"{source} returned shape {dist.shape}, expected ({n}, {K}) = (rows, prod(nvec))")
    if not np.isfinite(dist).all() or (dist < 0).any():
        raise ValueError(f"{source} returned negative or non-finite probabilities")
    off = np.abs(dist.sum(axis=1) - 1.0) > DISTRIBUTION_TOLERANCE
    if off.any():
        raise ValueError(f"{source}: row {int(np.flatnonzero(off)[0])} sums to "
                         f"{float(dist[np.flatnonzero(off)[0]].sum())}, not 1")
    return dist


def joint_distribution(policy: Policy, obs: np.ndarray, nvec: tuple[int, ...], rng: np.random.Generator, *,
                       action_mask: np.ndarray | None = None, mc_draws: int = 0) -> sp.csr_matrix:
    """(n, K) sparse joint action distribution of ``policy`` on one decision batch.

    Parameters
    ----------
    policy : any object with ``act`` (see the module docstring for the order of methods tried)
    obs : (n, d) observations, one decision batch
    nvec : action dimension sizes
    rng : generator for the policy's own randomness (and Monte-Carlo draws)
    action_mask : (n, sum(nvec)) bool, optional, passed to the policy
    mc_draws : Monte-Carlo draws for stochastic policies without an explicit distribution;
        0 (default) raises for them instead of estimating.
    """
    nvec = tuple(int(k) for k in nvec)
    n, K = obs.shape[0], int(np.prod(nvec))
    explicit = getattr(policy, "action_distribution", None)
    if callable(explicit):
        kwargs = {"rng": rng} if "rng" in inspect.signature(explicit).parameters else {}
        dense = _check_dense(explicit(obs, action_mask=action_mask, **kwargs), n, K,
                             f"{type(policy).__name__}.action_distribution")
        return sp.csr_matrix(dense)
    actions, prop = policy.act(obs, rng, action_mask=action_mask)
    joint = np.ravel_multi_index(tuple(np.asarray(actions, np.int64).T), nvec)
    stochastic = np.flatnonzero(np.asarray(prop) < 1.0)
    if stochastic.size == 0:
        return _one_hot(joint, K)
    sub_obs = obs[stochastic]
    sub_mask = None if action_mask is None else action_mask[stochastic]
    per_dim = getattr(policy, "action_probabilities", None)
    if callable(per_dim):
        parts = [np.asarray(p, np.float64) for p in per_dim(sub_obs, sub_mask)]
        dense = parts[0] if len(parts) == 1 else product_distribution(parts)
        dense = _check_dense(dense, stochastic.size, K, f"{type(policy).__name__}.action_probabilities")
    elif mc_draws > 0:
        counts = np.zeros((stochastic.size, K))
        rows = np.arange(stochastic.size)
        for _ in range(mc_draws):
            a, _ = policy.act(sub_obs, rng, action_mask=sub_mask)
            np.add.at(counts, (rows, np.ravel_multi_index(tuple(np.asarray(a, np.int64).T), nvec)), 1.0)
        dense = counts / mc_draws
    else:
        raise TypeError(
            f"{type(policy).__name__} is stochastic (propensity < 1 on {stochastic.size} of {n} rows) and "
            "has neither action_distribution(obs, action_mask=...) nor action_probabilities(obs, mask); "
            "pass mc_draws > 0 to estimate its distribution by Monte Carlo (unbiased, adds variance)")
    certain = np.flatnonzero(np.asarray(prop) >= 1.0)
    sub_rows, cols = np.nonzero(dense)
    rows = np.concatenate([certain, stochastic[sub_rows]])
    cols = np.concatenate([joint[certain], cols])
    data = np.concatenate([np.ones(certain.size), dense[sub_rows, cols[certain.size:]]])
    out = sp.csr_matrix((data, (rows, cols)), shape=(n, K))
    out.sort_indices()
    return out


def distribution_on_log(policy: Policy, context: np.ndarray, week: np.ndarray, nvec: tuple[int, ...],
                        rng: np.random.Generator, *, action_mask: np.ndarray | None = None,
                        mc_draws: int = 0) -> sp.csr_matrix:
    """(n, K) joint distribution of ``policy`` at every logged context, one week per batch."""
    n, K = context.shape[0], int(np.prod(nvec))
    blocks, rows = [], []
    for w in np.unique(week):
        idx = np.flatnonzero(week == w)
        mask = None if action_mask is None else action_mask[idx]
        blocks.append(joint_distribution(policy, context[idx], nvec, rng, action_mask=mask, mc_draws=mc_draws))
        rows.append(idx)
    stacked = sp.vstack(blocks, format="csr")
    inverse = np.empty(n, np.int64)
    inverse[np.concatenate(rows)] = np.arange(n)
    out = stacked[inverse]
    out.sort_indices()
    assert out.shape == (n, K)
    return out


def probability_of(dist: sp.csr_matrix, joint: np.ndarray) -> np.ndarray:
    """(n,) ``dist[i, joint[i]]`` for a sparse distribution, vectorised."""
    dist = dist.tocsr()
    dist.sort_indices()
    n, K = dist.shape
    row_of = np.repeat(np.arange(n, dtype=np.int64), np.diff(dist.indptr))
    keys = row_of * K + dist.indices
    want = np.arange(n, dtype=np.int64) * K + np.asarray(joint, np.int64)
    pos = np.minimum(np.searchsorted(keys, want), max(len(keys) - 1, 0))
    hit = keys[pos] == want if len(keys) else np.zeros(n, bool)
    return np.where(hit, dist.data[pos] if len(keys) else 0.0, 0.0)


class ExplorationMixture:
    """Any policy, mixed with uniform exploration: with probability ``epsilon`` a joint action
    drawn uniformly among the allowed ones, otherwise the wrapped policy's action.

    This is how a team keeps its logs usable for off-policy evaluation: every allowed action
    has probability at least ``epsilon / K_allowed``. The distribution is exact:
    ``(1 - ε)·π_base(a|x) + ε·[a allowed]/K_allowed`` (π_base from :func:`joint_distribution`,
    so a stochastic base needs an explicit distribution or ``mc_draws``). Allowed = the
    action mask when given, else every joint action.

    Parameters
    ----------
    base : Policy
    schema : DecisionSchema (for ``nvec``)
    epsilon : exploration probability in [0, 1]
    """

    def __init__(self, base: Policy, schema: DecisionSchema, *, epsilon: float = 0.1, mc_draws: int = 0) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.base, self.schema, self.epsilon, self.mc_draws = base, schema, float(epsilon), mc_draws
        self.nvec = tuple(int(k) for k in schema.nvec)

    def action_distribution(self, obs: np.ndarray, *, action_mask: np.ndarray | None = None,
                            rng: np.random.Generator | None = None) -> np.ndarray:
        """(n, K) dense joint distribution (``rng`` only serves a Monte-Carlo base)."""
        if rng is None:  # only a stochastic base consumes it; fixed so results are reproducible
            rng = np.random.default_rng(0)
        base = joint_distribution(self.base, obs, self.nvec, rng, action_mask=action_mask,
                                  mc_draws=self.mc_draws).toarray()
        allowed = allowed_joint(action_mask, self.nvec, obs.shape[0])
        n_allowed = allowed.sum(axis=1, keepdims=True)
        uniform = np.where(n_allowed > 0, allowed / np.maximum(n_allowed, 1), base)
        return (1.0 - self.epsilon) * base + self.epsilon * uniform

    def act(self, obs: np.ndarray, rng: np.random.Generator, *,
            action_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        n = obs.shape[0]
        base_actions, base_prop = self.base.act(obs, rng, action_mask=action_mask)
        actions = np.array(base_actions, np.int64)
        allowed = allowed_joint(action_mask, self.nvec, n)
        n_allowed = allowed.sum(axis=1)
        explore = (rng.random(n) < self.epsilon) & (n_allowed > 0)
        if explore.any():
            counts = np.cumsum(allowed[explore], axis=1)
            k = np.floor(rng.random(int(explore.sum())) * n_allowed[explore])
            pick = np.minimum((counts <= k[:, None]).sum(axis=1), allowed.shape[1] - 1)
            actions[explore] = np.stack(np.unravel_index(pick, self.nvec), axis=1)
        joint = np.ravel_multi_index(tuple(actions.T), self.nvec)
        base_joint = np.ravel_multi_index(tuple(np.asarray(base_actions, np.int64).T), self.nvec)
        base_prop = np.asarray(base_prop, np.float64)
        # probability the base policy gives the final action: its own propensity when it is the
        # base's draw, 0 when the base was certain of something else, else from its distribution
        p_base = np.where(joint == base_joint, base_prop, 0.0)
        unknown = np.flatnonzero((joint != base_joint) & (base_prop < 1.0))
        if unknown.size:
            sub_mask = None if action_mask is None else action_mask[unknown]
            dist = joint_distribution(self.base, obs[unknown], self.nvec, rng, action_mask=sub_mask,
                                      mc_draws=self.mc_draws)
            p_base[unknown] = probability_of(dist, joint[unknown])
        uniform = np.where(allowed[np.arange(n), joint], 1.0 / np.maximum(n_allowed, 1), 0.0)
        prop = (1.0 - self.epsilon) * p_base + self.epsilon * np.where(n_allowed > 0, uniform, p_base)
        return actions, prop
