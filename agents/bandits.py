"""Linear contextual bandits over joint (channel, offer, spend) arms: ε-greedy, LinUCB, linear TS.

Arms are the joint actions flattened (``K = prod(nvec)``, 192 in the retail scenario) or a
candidate subset given as a ``(K, 3)`` array. Each arm has its own ridge regression of reward on
the context (disjoint models, Li et al. 2010). Everything is batched: a batch of ``n`` contexts
is scored for all arms with one matrix product, and updates are grouped by arm.

Learner ≠ policy: a bandit (:class:`LinearBandit` and its named variants) learns from
``update(obs, actions, rewards)``; :meth:`LinearBandit.policy` returns a frozen, standalone
:class:`LinearArmPolicy` (numpy arrays only) that is greedy by default or keeps the exploration
rule, for export or for logging data under a fixed policy.

The mechanisms live in their own modules, re-exported here: the per-arm ridge model and its
standardisation in :mod:`rapport.agents.ridge` (:class:`DisjointRidge`, :class:`LinearFit`), the
exploration rules in :mod:`rapport.agents.exploration`, the rewards in :mod:`rapport.agents.bandit_rewards`.

Standardisation (``standardize=True``, the default): the ridge regression is fitted on features
standardised with the running mean / std of every context seen, over the whole history — raw
features (dollars, weeks, flags) work and the ridge penalty means the same for every feature.
``standardize=False`` fits on the raw context ``(x, 1)``: with ``scale_by_noise=False`` as well,
:class:`LinUCB` is textbook disjoint LinUCB (Li et al. 2010, Algorithm 1, ``λ = ridge``) and
:class:`LinearThompson` the disjoint form of linear Thompson sampling (Agrawal & Goyal 2013),
decision for decision (``tests/test_textbook_bandits.py``).

Reward: whatever the caller passes to ``update``; :meth:`LinearBandit.update_from_step` applies
the configured ``reward`` — this week's profit (default) or ``"lifetime_value_shaped"``
(:class:`ResidualValueShaping`: profit plus the discounted change in the customer's latent
residual value, a training signal of the simulator; see :mod:`rapport.agents.bandit_rewards`).

Persistence and export: ``state_dict()`` / ``load_state_dict()`` and ``save()`` / ``load()``
(``.npz``, no pickle) round-trip a learner; ``linear_parameters()`` gives the scoring as plain
arrays (layout in :class:`LinearFit`) for re-implementation as tensor ops.

Exploration is scaled by the estimated reward noise ``σ̂`` (pooled residual variance, with a
one-pseudo-observation prior of 1), so the same ``alpha`` / ``v`` work for rewards in dollars
and in {0, 1}; ``scale_by_noise=False`` gives the textbook rules.

Hyper-parameters are checked at construction (:mod:`rapport.agents.hyperparams`): NaN, ±inf, negative
or wrongly typed values fail with the parameter's name and valid range.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rapport.agents.bandit_rewards import (
    ResidualValueShaping,
    RewardSpec,
    resolve_reward,
    reward_from_dict,
    reward_to_dict,
)
from rapport.agents.exploration import (
    EpsilonRule,
    ExplorationRule,
    GreedyRule,
    ThompsonRule,
    UCBRule,
    rule_from_dict,
    rule_to_dict,
)
from rapport.agents.hyperparams import check_real
from rapport.agents.protocol import DecisionSchema
from rapport.agents.ridge import DisjointRidge, LinearFit
from rapport.agents.validation import (
    CheckedBatch,
    GuardedPolicy,
    all_joint_actions,
    arm_mask,
    check_arms,
    check_obs,
    joint_index,
)

__all__ = [
    "DisjointRidge", "EpsilonGreedy", "EpsilonRule", "ExplorationRule", "GreedyRule", "ResidualValueShaping",
    "LinUCB", "LinearArmPolicy", "LinearBandit", "LinearFit", "LinearThompson", "RewardSpec",
    "ThompsonRule", "UCBRule", "arm_feedback", "load_state", "resolve_reward", "reward_from_dict",
    "reward_to_dict", "rule_from_dict", "rule_to_dict", "save_state",
]


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
        Ridge penalty λ > 0 on the coefficients (standardised ones unless ``standardize`` is False).
    standardize : bool
        True (default): fit on features standardised with running statistics of every context
        seen (scale-free; see :class:`rapport.agents.ridge.DisjointRidge`). False: fit on the raw
        context ``(x, 1)``, the textbook model, e.g. to check decisions against a reference
        implementation or when features are already on comparable scales.
    refit_growth : float
        0 (default): refit after every update. ``g > 0``: "rarely switching" refits (Abbasi-Yadkori
        et al. 2011, §5) — the policy is refitted only once some arm's observation count has grown
        by a factor ``1 + g`` since the last refit (for d features the Gram determinant then
        grows by about ``(1 + g)^d``); cheaper per decision at a small cost in regret.
    reward : ``"profit"`` (default, same as None), ``"lifetime_value_shaped"`` or a
        :class:`ResidualValueShaping`: how :meth:`update_from_step` turns a week's profit into
        the bandit's reward. (:meth:`update` takes rewards as given.)
    value_discount : float, optional
        The weekly discount of ``"lifetime_value_shaped"`` (default 10 % a year; rapport-train
        passes the evaluation's).
    """

    def __init__(self, schema: DecisionSchema, rule: ExplorationRule, *,
                 arms: np.ndarray | Sequence[Sequence[int]] | None = None, ridge: float = 1.0,
                 refit_growth: float = 0.0, reward: RewardSpec = None,
                 standardize: bool = True, value_discount: float | None = None) -> None:
        refit_growth = check_real("refit_growth", refit_growth, minimum=0.0,
                                  meaning="relative growth of an arm's count that triggers a refit; 0 = every update")
        self.schema, self.rule, self.refit_growth = schema, rule, refit_growth
        self.reward = resolve_reward(schema, reward, value_discount)
        self.arms = check_arms(all_joint_actions(schema.nvec) if arms is None else arms, schema.nvec)
        self.model = DisjointRidge(schema.n_features, len(self.arms), ridge, standardize)
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
                         next_obs: np.ndarray, *, value: np.ndarray | None = None,
                         next_value: np.ndarray | None = None) -> None:
        """:meth:`update` with the configured reward (``reward``) of one env step (``value``,
        ``next_value``: the rows' residual values before and after it, for the shaped reward)."""
        rewards = profit if self.reward is None else self.reward(profit, value, next_value)
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
                "ridge": self.model.ridge, "standardize": self.model.standardize,
                "refit_growth": self.refit_growth,
                "moments": self.model.moments.copy(), "stats": dict(self.stats),
                "reward": reward_to_dict(self.reward),
                "feature_names": list(self.schema.feature_names), "nvec": list(self.schema.nvec)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (same schema; arms and rule are taken from it)."""
        _check_state_schema(state, self.schema)
        self.rule = rule_from_dict(state["rule"])
        self.refit_growth = float(state["refit_growth"])
        self.reward = reward_from_dict(self.schema, state.get("reward"))
        fresh = LinearBandit(self.schema, self.rule, arms=state["arms"], ridge=float(state["ridge"]),
                             standardize=_saved_standardize(state))
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
        bandit = LinearBandit(schema, rule_from_dict(state["rule"]), arms=state["arms"], ridge=float(state["ridge"]),
                              standardize=_saved_standardize(state))
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


def _saved_standardize(state: dict[str, Any]) -> bool:
    """The saved learner's ``standardize`` (files written before the option existed standardised)."""
    return bool(state.get("standardize", True))


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
                 standardize: bool = True, value_discount: float | None = None) -> None:
        super().__init__(schema, EpsilonRule(epsilon), arms=arms, ridge=ridge, refit_growth=refit_growth,
                         reward=reward, standardize=standardize,
                         value_discount=value_discount)


class LinUCB(LinearBandit):
    """Disjoint LinUCB (Li et al. 2010) with exploration scaled by the estimated noise.

    ``standardize=False, scale_by_noise=False`` is the textbook algorithm: per arm
    ``A = ridge·I + Σ x̃x̃ᵀ``, ``b = Σ r x̃``, score ``θᵀx̃ + alpha·sqrt(x̃ᵀA⁻¹x̃)`` with
    ``x̃ = (x, 1)`` and ``θ = A⁻¹b`` (refitted after every ``update``, i.e. per batch).
    """

    def __init__(self, schema: DecisionSchema, *, alpha: float = 1.0, scale_by_noise: bool = True,
                 arms=None, ridge: float = 1.0, refit_growth: float = 0.0, reward: RewardSpec = None,
                 standardize: bool = True, value_discount: float | None = None) -> None:
        super().__init__(schema, UCBRule(alpha, scale_by_noise), arms=arms, ridge=ridge, refit_growth=refit_growth,
                         reward=reward, standardize=standardize,
                         value_discount=value_discount)


class LinearThompson(LinearBandit):
    """Linear Thompson sampling (Agrawal & Goyal 2013) with Monte-Carlo propensities."""

    def __init__(self, schema: DecisionSchema, *, v: float = 1.0, scale_by_noise: bool = True,
                 propensity_draws: int = 64, arms=None, ridge: float = 1.0, refit_growth: float = 0.0,
                 reward: RewardSpec = None, standardize: bool = True,
                 value_discount: float | None = None) -> None:
        super().__init__(schema, ThompsonRule(v, scale_by_noise, propensity_draws), arms=arms, ridge=ridge,
                         refit_growth=refit_growth, reward=reward, standardize=standardize,
                         value_discount=value_discount)

