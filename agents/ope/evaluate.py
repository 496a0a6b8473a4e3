"""Judge candidate policies from one log: every estimator, intervals and lower bounds, at once.

    evaluator = OffPolicyEvaluator(logged, OPESettings(reward_lower_bound=-3.0), rng)
    report = evaluator.evaluate(candidate, rng)
    report.estimates["seq/dr"].value, report.lower_bounds["seq/hcope_pdis"].value_lower_bound

Two views of the same log:

* **bandit** — every logged customer-week is a round; the estimand is the expected one-week
  reward if the candidate had acted in the weeks and states the logger visited. Rounds of one
  customer are dependent, so intervals resample customers.
* **seq** — every customer episode is a trajectory; the estimand is the expected return over
  the logged horizon if the candidate had acted every week (what deploying it would earn).

Per log (once): trajectories, customer folds and the cross-fitted reward model. Per candidate:
its action distribution at every logged context, the estimators, fitted-Q evaluation, bootstrap
intervals and the high-confidence lower bounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rapport.agents.ope.estimators import BANDIT_ESTIMATORS, MODEL_BASED, BanditData, bandit_terms
from rapport.agents.ope.fqe import fitted_q_evaluation
from rapport.agents.ope.intervals import LowerBound, bootstrap_interval, hcope_lower_bound
from rapport.agents.ope.logged import LoggedFeedback
from rapport.agents.ope.policies import distribution_on_log, probability_of
from rapport.agents.ope.reward_model import ArmRidge, assign_folds, cross_fit
from rapport.agents.ope.sequential import (
    SEQUENTIAL_ESTIMATORS,
    SequentialData,
    Trajectories,
    is_unit_values,
    sequential_terms,
)
from rapport.agents.protocol import Policy


@dataclass(frozen=True)
class OPESettings:
    """Options of an off-policy evaluation (validated on construction)."""

    bandit_estimators: tuple[str, ...] = tuple(BANDIT_ESTIMATORS)
    """Single-step estimators to run (ips, snips, dm, dr, sndr, switch_dr)."""
    sequential_estimators: tuple[str, ...] = tuple(SEQUENTIAL_ESTIMATORS)
    """Sequential estimators to run (pdis, wpdis, seq_dr, fqe)."""
    gamma: float = 1.0
    """Weekly discount of the sequential return."""
    clip: float | None = None
    """Cap on importance weights (cumulative ones for the sequential estimators); None = no cap."""
    switch_tau: float = 100.0
    """Switch-DR threshold on the importance weight."""
    n_folds: int = 2
    """Cross-fitting folds (by customer) for the reward model and FQE; 1 = fit in sample."""
    ridge: float = 1.0
    """Ridge penalty of the reward model and of every FQE regression."""
    interactions: bool = True
    """Per-action-dimension context effects in the reward model (see ArmRidge)."""
    n_boot: int = 500
    """Bootstrap replicates for the intervals (0 = no intervals)."""
    alpha: float = 0.05
    """Intervals are two-sided (1 − alpha)."""
    delta: float = 0.05
    """Lower bounds hold with probability (1 − delta)."""
    reward_lower_bound: float | None = None
    """A true lower bound on the weekly reward; None = no high-confidence bounds."""
    hcope_method: str = "bernstein"
    """'bernstein' (Thomas et al. 2015, guaranteed) or 't' (approximate)."""
    mc_draws: int = 0
    """Monte-Carlo draws for stochastic candidates without an explicit distribution."""
    horizon: int | None = None
    """Trajectory length (weeks); None = the longest logged trajectory."""

    def __post_init__(self) -> None:
        for name in self.bandit_estimators:
            if name not in BANDIT_ESTIMATORS:
                raise ValueError(f"unknown bandit estimator {name!r}; valid: {', '.join(BANDIT_ESTIMATORS)}")
        for name in self.sequential_estimators:
            if name not in SEQUENTIAL_ESTIMATORS:
                raise ValueError(f"unknown sequential estimator {name!r}; valid: {', '.join(SEQUENTIAL_ESTIMATORS)}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if self.clip is not None and self.clip <= 0:
            raise ValueError(f"clip must be > 0 or None, got {self.clip}")
        if self.n_folds < 1:
            raise ValueError(f"n_folds must be >= 1, got {self.n_folds}")
        if self.n_boot != 0 and self.n_boot < 2:
            raise ValueError(f"n_boot must be 0 (no intervals) or >= 2, got {self.n_boot}")
        for name in ("alpha", "delta"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if self.hcope_method not in ("bernstein", "t"):
            raise ValueError(f"hcope_method must be 'bernstein' or 't', got {self.hcope_method!r}")


@dataclass(frozen=True)
class Estimate:
    """One estimator's value for one policy, with its bootstrap interval."""

    value: float
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    std_error: float = float("nan")
    diagnostics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ValueLowerBound:
    """A (1 − δ) lower bound on a policy value (the shift of the rewards added back)."""

    value_lower_bound: float
    bound: LowerBound
    offset: float


@dataclass(frozen=True)
class PolicyEvaluation:
    """Every estimate of one candidate: keys ``bandit/<estimator>`` and ``seq/<estimator>``."""

    estimates: dict[str, Estimate]
    lower_bounds: dict[str, ValueLowerBound]
    n_rows: int
    n_trajectories: int

    def metrics(self, prefix: str = "ope") -> dict[str, float]:
        """Flat ``{prefix}/{view}/{estimator}/{value|ci_low|ci_high|std_error}`` metrics."""
        out: dict[str, float] = {}
        for key, est in self.estimates.items():
            for part in ("value", "ci_low", "ci_high", "std_error"):
                out[f"{prefix}/{key}/{part}"] = getattr(est, part)
            for name, v in est.diagnostics.items():
                out[f"{prefix}/{key}/{name}"] = v
        for key, lb in self.lower_bounds.items():
            out[f"{prefix}/{key}/lower_bound"] = lb.value_lower_bound
        return out


class OffPolicyEvaluator:
    """Prepared once per log; :meth:`evaluate` judges any number of candidate policies.

    Parameters
    ----------
    logged : the logging policy's feedback
    settings : :class:`OPESettings`
    rng : generator for the folds (and nothing else)
    """

    def __init__(self, logged: LoggedFeedback, settings: OPESettings, rng: np.random.Generator) -> None:
        self.logged, self.settings = logged, settings
        self.traj = Trajectories.from_keys(logged.customer_id, logged.episode, logged.week, settings.horizon)
        self.joint = logged.action
        self.model = ArmRidge(logged.nvec, ridge=settings.ridge, interactions=settings.interactions)
        self.traj_folds = assign_folds(self.traj.customer, settings.n_folds, rng)
        self.row_folds = np.empty(logged.n, np.int64)
        valid = self.traj.valid
        self.row_folds[self.traj.rows[valid]] = np.broadcast_to(self.traj_folds[:, None], valid.shape)[valid]
        needs_model = bool(MODEL_BASED.intersection(settings.bandit_estimators))
        self.reward_model = (cross_fit(self.model, logged.context, self.joint, logged.reward, self.row_folds)
                             if needs_model else None)

    def on_policy_value(self) -> dict[str, float]:
        """The logging policy's own value from its logs: per-trajectory return and weekly mean."""
        s = self.settings
        ret = self.traj.gather(self.logged.reward, 0.0) @ (s.gamma ** np.arange(self.traj.horizon))
        return {"seq": float(ret.mean()), "bandit": float(self.logged.reward.mean()),
                "seq_std_error": float(ret.std(ddof=1) / np.sqrt(len(ret))) if len(ret) > 1 else float("nan")}

    def evaluate(self, policy: Policy, rng: np.random.Generator) -> PolicyEvaluation:
        s, log = self.settings, self.logged
        dist = distribution_on_log(policy, log.context, log.week, log.nvec, rng,
                                   action_mask=log.action_mask, mc_draws=s.mc_draws)
        pi = probability_of(dist, self.joint)
        estimates: dict[str, Estimate] = {}
        bounds: dict[str, ValueLowerBound] = {}
        if s.bandit_estimators:
            q_logged = q_target = None
            if self.reward_model is not None:
                q_logged = self.reward_model.predict_at(log.context, self.joint)
                q_target = self.reward_model.predict_expected(log.context, dist)
            data = BanditData(log.reward, log.propensity, pi, q_logged, q_target, groups=log.customer_id)
            for name in s.bandit_estimators:
                terms = bandit_terms(data, name, clip=s.clip, switch_tau=s.switch_tau)
                estimates[f"bandit/{name}"] = self._with_interval(terms, rng, data.groups)
            if s.reward_lower_bound is not None:
                bounds["bandit/hcope_ips"] = self._bandit_bound(data, rng)
        if s.sequential_estimators:
            q = v = None
            if {"seq_dr", "fqe"}.intersection(s.sequential_estimators):
                fq = fitted_q_evaluation(self.traj, log.context, self.joint, log.reward, dist, self.model,
                                         self.traj_folds, gamma=s.gamma)
                q, v = fq.q_logged, fq.v_target
            seq = SequentialData.from_log(self.traj, log.reward, log.propensity, pi, q, v, s.gamma)
            for name in s.sequential_estimators:
                terms = sequential_terms(seq, name, clip=s.clip)
                estimates[f"seq/{name}"] = self._with_interval(terms, rng, seq.customer)
            if s.reward_lower_bound is not None:
                for per_decision, key in ((True, "seq/hcope_pdis"), (False, "seq/hcope_is")):
                    values, offset = is_unit_values(seq, s.reward_lower_bound, per_decision=per_decision, clip=s.clip)
                    lb = hcope_lower_bound(values, s.delta, rng, method=s.hcope_method)
                    bounds[key] = ValueLowerBound(lb.lower_bound + offset, lb, offset)
        return PolicyEvaluation(estimates, bounds, log.n, self.traj.n_trajectories)

    def _with_interval(self, terms, rng, groups) -> Estimate:
        if self.settings.n_boot == 0:
            return Estimate(terms.value, diagnostics=terms.diagnostics)
        ci = bootstrap_interval(terms, rng, n_boot=self.settings.n_boot, alpha=self.settings.alpha, groups=groups)
        return Estimate(terms.value, ci.low, ci.high, ci.std_error, terms.diagnostics)

    def _bandit_bound(self, data: BanditData, rng: np.random.Generator) -> ValueLowerBound:
        """Customers as units: X_g = Σ_rows w (r − r_min) / m, m = the most rows of a customer.

        E[X_g] = (V − r_min)·E[rows]/m <= V − r_min (V − r_min >= 0), so the bound stays valid
        for the weekly estimand, and is exact when every customer has m rows.
        """
        s = self.settings
        shifted = data.reward - s.reward_lower_bound
        if (shifted < -1e-9).any():
            i = int(np.flatnonzero(shifted < -1e-9)[0])
            raise ValueError(f"reward {float(data.reward[i])} at row {i} is below reward_lower_bound={s.reward_lower_bound}")
        _, unit = np.unique(data.groups, return_inverse=True)
        per_unit = np.bincount(unit, data.weights(s.clip) * np.maximum(shifted, 0.0))
        m = float(np.bincount(unit).max())
        lb = hcope_lower_bound(per_unit / m, s.delta, rng, method=s.hcope_method)
        return ValueLowerBound(lb.lower_bound + s.reward_lower_bound, lb, s.reward_lower_bound)
