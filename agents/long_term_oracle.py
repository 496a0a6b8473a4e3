"""The long-term oracle: a ceiling for lifetime value, by rollout policy improvement.

The myopic :class:`rapport.agents.baselines.Oracle` picks this week's most profitable action and so
spends customers (fatigue, opt-outs, churn it causes come later). This one maximises what
``kpi/lifetime_value_per_customer`` measures. Method: *rollout* (Bertsekas & Tsitsiklis 1996,
"Neuro-Dynamic Programming", §6.1; Bertsekas 2019, "Reinforcement Learning and Optimal
Control", ch. 2): each week, for each customer, each candidate action is scored by the expected
lifetime value of taking it now and following a fixed *base policy* afterwards (mass marketing
by default), estimated by simulating the latent truth forward on fresh common random numbers
(``lookahead_fn``, bound to :meth:`envs.PopulationEnv.lookahead_values` by the composition
root); the best-scoring candidate is taken. With exact scores the rollout policy is never worse
than its base policy in expected value (the policy-improvement theorem), so with mass marketing
as the base it is a ceiling that mass marketing cannot beat; the truncation (``weeks``, then
the no-marketing residual value) and the Monte-Carlo noise (``samples``) make it approximate,
which is why the evaluation measures it rather than assumes it.

Why rollout and not a per-customer dynamic programme: the customer state (RFM history,
fatigue per channel, price memory, trust, drift) is continuous and high-dimensional, and the
simulator is the model — lookahead on it needs no approximation of the dynamics.

It reads latent truth: never saved, exported or served (like the myopic oracle, it is rebuilt
for each evaluation population). Cost per week: ``customers × candidates × samples`` simulated
rows for ``weeks`` weeks (about 2 s a week for 5,000 retail customers with the defaults).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from rapport.agents.baselines import DoNothing, MassMarketing, _deterministic, channel_id, offer_id
from rapport.agents.protocol import DecisionSchema
from rapport.agents.validation import GuardedPolicy, arm_mask, check_arms

LookaheadFn = Callable[..., np.ndarray]
"""``lookahead_fn(candidates (K, 3), continuation, *, weeks, samples, annual_discount_rate, seed)
-> (n, K)`` expected lifetime values (see :func:`rapport.envs.lookahead.lookahead_values`)."""

CONTINUATIONS = ("mass", "do_nothing")


def default_candidates(schema: DecisionSchema, email: str | int = "email") -> np.ndarray:
    """One lever at a time: do nothing; each channel with no offer; every offer by e-mail; each
    paid-media spend level alone. (K = 1 + channels + offers − 1 + spend levels − 1.)"""
    e = channel_id(schema, email)
    rows = [(0, 0, 0)]
    rows += [(c, 0, 0) for c in range(1, schema.nvec[0])]
    rows += [(e, o, 0) for o in range(1, schema.nvec[1])]
    rows += [(0, 0, m) for m in range(1, schema.nvec[2])]
    return np.array(rows, dtype=np.int64)


class LongTermOracle(GuardedPolicy):
    """Per customer and week, the candidate with the highest rollout estimate of lifetime value.

    Parameters: ``lookahead_fn`` (injected), ``horizon`` (injected; the base policy's
    calendar), ``candidate_actions`` (``(K, 3)``; default :func:`default_candidates`),
    ``continuation`` (the base policy: ``"mass"`` — ``continuation_params`` as in
    ``conf/agent/mass.yaml`` — or ``"do_nothing"``), ``weeks`` (lookahead depth),
    ``samples`` (Monte-Carlo rollouts per candidate), ``annual_discount_rate`` (the
    evaluation's), ``seed`` (keys the rollouts' random numbers; never the evaluation's).

    Masked-out candidates are never chosen; rows with no allowed candidate get do-nothing;
    ties go to the earlier candidate (do-nothing first). A non-finite score raises ``ValueError``.
    ``stats["chosen"]`` counts how often each candidate was taken.
    """

    def __init__(self, schema: DecisionSchema, lookahead_fn: LookaheadFn, *, horizon: int = 52,
                 candidate_actions: Sequence[Sequence[int]] | np.ndarray | None = None,
                 continuation: str = "mass", continuation_params: dict | None = None,
                 weeks: int = 8, samples: int = 8, annual_discount_rate: float = 0.10,
                 seed: int = 0) -> None:
        super().__init__(schema)
        if continuation not in CONTINUATIONS:
            raise ValueError(f"continuation must be one of {CONTINUATIONS}, got {continuation!r}")
        for name, v in (("weeks", weeks), ("samples", samples)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        params = {"channel": "email", "offer": "none", "every_k_weeks": 2, "phase": 0}
        params.update(continuation_params or {})
        if continuation == "mass":
            offer_id(schema, params["offer"])  # fail now on a typo, naming the valid offers
            self.base = MassMarketing(schema, horizon=horizon, **params)
        else:
            self.base = DoNothing(schema)
        arms = default_candidates(schema) if candidate_actions is None else candidate_actions
        self.candidates = check_arms(arms, schema.nvec)
        self.lookahead_fn = lookahead_fn
        self.weeks, self.samples, self.seed = weeks, samples, int(seed)
        self.annual_discount_rate = float(annual_discount_rate)
        self.stats["no_candidate_rows"] = 0
        self.stats["chosen"] = np.zeros(len(self.candidates), np.int64)

    def _continue(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        actions, _ = self.base.act(obs, np.random.default_rng(0), action_mask=mask)
        return actions

    def _decide(self, batch, rng):
        n, K = batch.n, len(self.candidates)
        value = np.asarray(self.lookahead_fn(
            self.candidates, self._continue, weeks=self.weeks, samples=self.samples,
            annual_discount_rate=self.annual_discount_rate, seed=self.seed))
        if value.shape != (n, K):
            raise ValueError(f"lookahead_fn returned shape {value.shape}, expected ({n}, {K})")
        if not np.isfinite(value).all():
            raise ValueError("lookahead_fn returned a non-finite value")
        allowed = np.ones((n, K), bool) if batch.dim_masks is None else arm_mask(batch.dim_masks, self.candidates)
        value = np.where(allowed, value, -np.inf)
        best = np.argmax(value, axis=1)
        actions = self.candidates[best].copy()
        none = ~allowed.any(axis=1)
        actions[none] = 0
        self.stats["no_candidate_rows"] += int(none.sum())
        self.stats["chosen"] += np.bincount(best[~none], minlength=K)
        return _deterministic(actions)
