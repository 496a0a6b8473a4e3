"""Business constraints, composable around any policy: contact caps, quiet periods, a budget.

``BudgetConstraint(ContactRules(policy, schema, ...), schema, weekly_budget=...)`` is itself a
policy (same ``act`` protocol), so constraints stack in any order and any policy — rules,
bandits, PPO — can be constrained.

How propensities stay correct
-----------------------------
* **Contact caps and quiet periods are masks.** :class:`ContactRules` turns its rules into an
  action mask (the offending channels switched off) and hands it to the wrapped policy, which
  chooses among the remaining actions. The final action *is* the wrapped policy's choice, so its
  propensity is exact — provided the wrapped policy respects masks (every Rapport policy does).
* **The budget is post-processing.** Whether a customer is funded depends on what the
  higher-ranked customers drew, so for a stochastic wrapped policy the probability of the final
  action has no closed form. :class:`BudgetConstraint` reports it exactly when the wrapped
  policy is deterministic (every propensity 1 → 1), and otherwise estimates it by Monte Carlo
  over ``propensity_draws`` independent re-draws of the whole batch (see its docstring).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from rapport.agents.protocol import DecisionSchema, Policy
from rapport.agents.validation import check_batch

ScoreFn = Callable[[np.ndarray], np.ndarray]


def _full_mask(batch_mask: np.ndarray | None, n: int, width: int) -> np.ndarray:
    return np.ones((n, width), bool) if batch_mask is None else batch_mask.copy()


class ContactRules:
    """Per-customer contact caps and quiet periods, applied as an action mask.

    Parameters
    ----------
    policy : Policy
        The wrapped policy (must respect ``action_mask``).
    max_contacts_4w : int, optional
        A contact this week is allowed only if the contacts delivered in the previous 4 weeks
        (the ``contacts_4w_<channel>`` features, all channels together) plus this one stay
        within the cap — a rolling "per month" cap over the 4 weeks the features can see plus
        the current one.
    max_channel_contacts_4w : mapping channel name -> int, optional
        The same cap per channel.
    quiet_weeks : int
        No contact unless every channel's ``weeks_since_contact_<channel>`` is >= this (1 means
        "last contact was last week at the earliest", i.e. no rule; 2 = skip a week; ...).

    A weekly cap of one contact is built into the action space (one channel per customer-week).
    A customer who may not be contacted also gets no offer (an offer needs a contact to carry
    it); media spend is not a contact and is left to the wrapped policy.
    ``stats["contact_blocked_rows"]`` counts customer-weeks where at least one channel was
    switched off by the rules.
    """

    def __init__(self, policy: Policy, schema: DecisionSchema, *, max_contacts_4w: int | None = None,
                 max_channel_contacts_4w: Mapping[str, int] | None = None, quiet_weeks: int = 0) -> None:
        self.policy, self.schema = policy, schema
        C = len(schema.channel_names)
        self._count_cols = [schema.feature_index(f"contacts_4w_{c}") for c in schema.channel_names]
        self._since_cols = [schema.feature_index(f"weeks_since_contact_{c}") for c in schema.channel_names]
        if max_contacts_4w is not None and max_contacts_4w < 0:
            raise ValueError(f"max_contacts_4w must be >= 0 or None, got {max_contacts_4w}")
        if quiet_weeks < 0:
            raise ValueError(f"quiet_weeks must be >= 0, got {quiet_weeks}")
        self.max_contacts_4w = max_contacts_4w
        self.channel_caps = np.full(C, np.inf)
        for name, cap in (max_channel_contacts_4w or {}).items():
            if name not in schema.channel_names:
                raise KeyError(f"unknown channel {name!r}; valid: {', '.join(schema.channel_names)}")
            if cap < 0:
                raise ValueError(f"max_channel_contacts_4w[{name!r}] must be >= 0, got {cap}")
            self.channel_caps[schema.channel_names.index(name)] = cap
        self.quiet_weeks = quiet_weeks
        self.stats: dict[str, int] = {"contact_blocked_rows": 0}

    def contact_allowed(self, obs: np.ndarray) -> np.ndarray:
        """(n, C) bool: may each channel contact each customer this week under the rules."""
        counts = obs[:, self._count_cols]
        allowed = counts + 1 <= self.channel_caps
        if self.max_contacts_4w is not None:
            allowed &= (counts.sum(axis=1) + 1 <= self.max_contacts_4w)[:, None]
        if self.quiet_weeks > 0:
            allowed &= (obs[:, self._since_cols].min(axis=1) >= self.quiet_weeks)[:, None]
        return allowed

    def restrict(self, obs: np.ndarray, action_mask: np.ndarray | None,
                 channel_ok: np.ndarray | None = None) -> np.ndarray:
        """``action_mask`` (all allowed if None) with the rules' blocked contacts switched off,
        and offers switched off where no channel is left to carry one (``channel_ok``: this
        week's :meth:`contact_allowed`, if already computed). Counts
        ``stats["contact_blocked_rows"]``."""
        C, n_off = len(self.schema.channel_names), self.schema.nvec[1]
        mask = _full_mask(action_mask, len(obs), sum(self.schema.nvec))
        if channel_ok is None:
            channel_ok = self.contact_allowed(obs)
        mask[:, 1:C + 1] &= channel_ok
        # an offer only travels with a contact: no reachable channel left -> offer "none" only
        no_contact = ~mask[:, 1:C + 1].any(axis=1)
        mask[no_contact, C + 2:C + 1 + n_off] = False
        self.stats["contact_blocked_rows"] += int((~channel_ok.all(axis=1)).sum())
        return mask

    def act(self, obs: np.ndarray, rng: np.random.Generator, *,
            action_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        batch = check_batch(obs, action_mask, self.schema)
        return self.policy.act(batch.obs, rng, action_mask=self.restrict(batch.obs, action_mask))


def default_score(obs: np.ndarray, schema: DecisionSchema) -> np.ndarray:
    """``p_alive × avg_spend``: expected value of the customer's next order, from features."""
    return obs[:, schema.feature_index("p_alive")].astype(np.float64) * obs[:, schema.feature_index("avg_spend")]


class BudgetConstraint:
    """A global weekly budget: funded in score order until it runs out; the rest do nothing.

    Cost of an action = contact cost of its channel + its media spend level + (optionally)
    ``discount_take_rate × offer_discount × avg_spend`` as the expected discount cost.
    Customers are ranked by ``score_fn(obs)`` (default :func:`default_score`; it depends on the
    observation only, so the ranking is not a function of the random draw). Walking down the
    ranking, a customer is funded while the running total of costs (theirs included) stays
    within ``weekly_budget``; from the first customer that does not fit, nobody further down is
    funded, except that actions costing nothing (do-nothing, a free channel) always go through.
    So the paid actions funded are a top-of-ranking prefix and spend never exceeds the budget.
    The budget applies per ``act`` call (one week for the batch).

    Propensities: exact (1.0) when the wrapped policy's propensities are all 1. Otherwise, with
    ``π`` the wrapped policy's propensity, ``c`` costs and ``S_i`` the cost of the customers
    ranked above ``i`` (independent of ``i``'s own draw when the wrapped policy samples rows
    independently, as all Rapport policies do):

    * funded rows keep ``a_i`` with propensity ``π(a_i) · P(S_i + c(a_i) <= B)``;
    * rows whose final action is do-nothing get ``P(final_i = do-nothing)``;

    both probabilities estimated over ``propensity_draws`` fresh draws of the batch from the
    wrapped policy plus the realised one (so estimates are > 0). Monte-Carlo error is about
    ``1/sqrt(propensity_draws + 1)``; each draw costs one wrapped ``act`` call.
    ``stats["defunded_rows"]`` counts customers whose contact was cut by the budget.
    """

    def __init__(self, policy: Policy, schema: DecisionSchema, *, weekly_budget: float,
                 score_fn: ScoreFn | None = None, discount_take_rate: float = 0.0,
                 propensity_draws: int = 32) -> None:
        if weekly_budget < 0 or not np.isfinite(weekly_budget):
            raise ValueError(f"weekly_budget must be a finite number >= 0, got {weekly_budget}")
        if len(schema.channel_costs) != len(schema.channel_names):
            raise ValueError("BudgetConstraint needs schema.channel_costs, one per channel")
        self.policy, self.schema, self.weekly_budget = policy, schema, float(weekly_budget)
        self.score_fn = score_fn if score_fn is not None else (lambda obs: default_score(obs, schema))
        self.discount_take_rate = discount_take_rate
        self.propensity_draws = propensity_draws
        self._channel_cost = np.array((0.0, *schema.channel_costs))
        self._spend = np.array(schema.spend_levels, np.float64)
        discounts = schema.offer_discounts or (0.0,) * len(schema.offer_names)
        self._discount = np.array(discounts, np.float64)
        self._avg_spend_col = schema.feature_index("avg_spend") if discount_take_rate > 0 else None
        self.stats: dict[str, int] = {"defunded_rows": 0}
        self.last_spend = 0.0

    def cost(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """(n,) $ cost of each customer's action this week."""
        contacted = actions[:, 0] > 0
        cost = self._channel_cost[actions[:, 0]] + self._spend[actions[:, 2]]
        if self._avg_spend_col is not None:
            expected_discount = self.discount_take_rate * self._discount[actions[:, 1]] * obs[:, self._avg_spend_col]
            cost = cost + np.where(contacted, expected_discount, 0.0)
        return cost

    def _funding(self, obs: np.ndarray, actions: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Funded (n,) bool and cost of customers ranked above each one (n,), for one draw."""
        cost = self.cost(obs, actions)
        running = np.cumsum(cost[order])
        funded, before = np.empty(len(cost), bool), np.empty(len(cost))
        funded[order] = running <= self.weekly_budget * (1 + 1e-12)
        funded |= cost <= 0.0
        before[order] = running - cost[order]
        return funded, before

    def act(self, obs: np.ndarray, rng: np.random.Generator, *,
            action_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        obs = check_batch(obs, action_mask, self.schema).obs
        actions, propensities = self.policy.act(obs, rng, action_mask=action_mask)
        score = np.asarray(self.score_fn(obs), np.float64)
        order = np.lexsort((np.arange(len(score)), -score))  # highest score first, ties by row
        funded, _ = self._funding(obs, actions, order)
        cut = ~funded & actions.any(axis=1)
        final = np.where(funded[:, None], actions, 0)
        self.stats["defunded_rows"] += int(cut.sum())
        self.last_spend = float(self.cost(obs, final).sum())
        if np.all(propensities == 1.0) or self.propensity_draws <= 0:
            return final, propensities
        return final, self._mc_propensities(obs, rng, action_mask, order, final, propensities)

    def _mc_propensities(self, obs, rng, action_mask, order, final, propensities) -> np.ndarray:
        own_cost = self.cost(obs, final)
        fits = np.zeros(len(obs))  # draws where the realised own cost would have been funded
        nothing = np.zeros(len(obs))  # draws where the customer ends with do-nothing
        for _ in range(self.propensity_draws):  # loop over draws, each a full batched act call
            draw, _ = self.policy.act(obs, rng, action_mask=action_mask)
            funded, before = self._funding(obs, draw, order)
            fits += (before + own_cost <= self.weekly_budget * (1 + 1e-12)) | (own_cost <= 0.0)
            nothing += ~(funded[:, None] & (draw != 0)).any(axis=1)
        total = self.propensity_draws + 1  # the realised draw counts: funded rows fit, cut rows end null
        is_null = ~final.any(axis=1)
        return np.where(is_null, (nothing + 1) / total, propensities * (fits + 1) / total)
