"""Rule-based and reference policies: what a marketing team does without learning.

Every policy here is batched over customers (no Python loop over rows), respects the action mask
and returns exact propensities (1.0 for the deterministic ones). Channels and offers are named
as in the schema (``"email"``, ``"discount_10"``) and resolved to indices at construction, so a
typo fails before the first decision.

Reachability: with an ``action_mask`` the mask decides which channels reach a customer; without
one, the ``optin_<channel>`` features do when the schema has them (else every channel does).

Week: rule policies that follow the calendar read it as
``week = rint(horizon_progress * horizon)`` with ``horizon`` given at construction (the env's
episode length), so they stay stateless — the same batch always gives the same decision.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rapport.agents.protocol import DecisionSchema
from rapport.agents.validation import (
    CheckedBatch,
    GuardedPolicy,
    all_joint_actions,
    arm_mask,
    check_arms,
    sample_allowed,
)

ProfitFn = Callable[[np.ndarray], np.ndarray]


def channel_id(schema: DecisionSchema, channel: str | int) -> int:
    """Action index of a channel (1..C; 0 = no contact), from its name or index."""
    if isinstance(channel, str):
        if channel not in schema.channel_names:
            raise KeyError(f"unknown channel {channel!r}; valid: {', '.join(schema.channel_names)}")
        return schema.channel_names.index(channel) + 1
    if not 0 <= int(channel) < schema.nvec[0]:
        raise ValueError(f"channel index {channel} outside 0..{schema.nvec[0] - 1}")
    return int(channel)


def offer_id(schema: DecisionSchema, offer: str | int) -> int:
    """Action index of an offer (0 = none), from its name or index."""
    if isinstance(offer, str):
        if offer not in schema.offer_names:
            raise KeyError(f"unknown offer {offer!r}; valid: {', '.join(schema.offer_names)}")
        return schema.offer_names.index(offer)
    if not 0 <= int(offer) < schema.nvec[1]:
        raise ValueError(f"offer index {offer} outside 0..{schema.nvec[1] - 1}")
    return int(offer)


def spend_id(schema: DecisionSchema, level: int) -> int:
    if not 0 <= int(level) < schema.nvec[2]:
        raise ValueError(f"spend level {level} outside 0..{schema.nvec[2] - 1} ({schema.spend_levels})")
    return int(level)


def channel_reach(batch: CheckedBatch, schema: DecisionSchema) -> np.ndarray:
    """(n, C+1) bool: channel j reaches the customer (column 0, "no contact", always True)."""
    if batch.dim_masks is not None:
        return batch.dim_masks[0]
    reach = np.ones((batch.n, schema.nvec[0]), bool)
    for j, name in enumerate(schema.channel_names, start=1):
        if f"optin_{name}" in schema.feature_names:
            reach[:, j] = batch.obs[:, schema.feature_index(f"optin_{name}")] > 0.5
    return reach


def first_reachable(reach: np.ndarray, preferences: Sequence[int]) -> np.ndarray:
    """(n,) int64: the first channel in ``preferences`` that reaches each customer, else 0."""
    chosen = np.zeros(reach.shape[0], np.int64)
    for ch in reversed(preferences):  # later assignments win, so iterate from least preferred
        chosen[reach[:, ch]] = ch
    return chosen


def compose_message(
    batch: CheckedBatch, schema: DecisionSchema, selected: np.ndarray,
    channel: np.ndarray | int, offer: np.ndarray | int, spend: np.ndarray | int,
) -> np.ndarray:
    """Actions (n, 3) sending ``(channel, offer, spend)`` to the ``selected`` rows it can reach.

    Unreachable channels become "no contact" (and then no offer: an offer needs a contact);
    forbidden offers or spend levels fall back to 0.
    """
    n, rows = batch.n, np.arange(batch.n)
    channel = np.broadcast_to(np.asarray(channel, np.int64), (n,))
    offer = np.broadcast_to(np.asarray(offer, np.int64), (n,))
    spend = np.broadcast_to(np.asarray(spend, np.int64), (n,))
    contact = selected & (channel > 0) & channel_reach(batch, schema)[rows, channel]
    offer_ok, spend_ok = contact, selected
    if batch.dim_masks is not None:
        offer_ok = contact & batch.dim_masks[1][rows, offer]
        spend_ok = selected & batch.dim_masks[2][rows, spend]
    actions = np.zeros((n, 3), np.int64)
    actions[:, 0] = np.where(contact, channel, 0)
    actions[:, 1] = np.where(offer_ok, offer, 0)
    actions[:, 2] = np.where(spend_ok, spend, 0)
    return actions


def week_index(obs: np.ndarray, schema: DecisionSchema, horizon: int) -> np.ndarray:
    """(n,) int64 week of the episode, from ``horizon_progress`` × ``horizon``."""
    return np.rint(obs[:, schema.feature_index("horizon_progress")] * horizon).astype(np.int64)


def _deterministic(actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return actions, np.ones(actions.shape[0], np.float64)


class DoNothing(GuardedPolicy):
    """Never contact, never discount, never spend: the control group."""

    def _decide(self, batch, rng):
        return _deterministic(np.zeros((batch.n, 3), np.int64))


class UniformRandom(GuardedPolicy):
    """Each dimension uniform over its allowed values, independently.

    The joint action is then uniform over the allowed joint actions (the joint mask is the
    product of the dimension masks) and its propensity is exactly ``prod_d 1 / n_allowed_d``.
    """

    def _decide(self, batch, rng):
        n = batch.n
        actions = np.zeros((n, 3), np.int64)
        propensities = np.ones(n, np.float64)
        for d, size in enumerate(self.schema.nvec):
            if batch.dim_masks is None:
                actions[:, d] = rng.integers(0, size, n)
                propensities /= size
            else:
                actions[:, d], n_allowed = sample_allowed(batch.dim_masks[d], rng)
                propensities /= np.maximum(n_allowed, 1)
        return actions, propensities


class MassMarketing(GuardedPolicy):
    """The same message to everyone reachable, every ``every_k_weeks`` weeks.

    Contact happens in weeks where ``week % every_k_weeks == phase`` (week from
    ``horizon_progress`` × ``horizon``, see the module docstring).
    """

    def __init__(self, schema: DecisionSchema, *, channel: str | int = "email", offer: str | int = 0,
                 spend_level: int = 0, every_k_weeks: int = 4, phase: int = 0, horizon: int = 52) -> None:
        super().__init__(schema)
        if every_k_weeks < 1 or not 0 <= phase < every_k_weeks:
            raise ValueError(f"need every_k_weeks >= 1 and 0 <= phase < every_k_weeks, got {every_k_weeks}, {phase}")
        self.channel, self.offer = channel_id(schema, channel), offer_id(schema, offer)
        self.spend_level = spend_id(schema, spend_level)
        self.every_k_weeks, self.phase, self.horizon = every_k_weeks, phase, horizon

    def _decide(self, batch, rng):
        on = week_index(batch.obs, self.schema, self.horizon) % self.every_k_weeks == self.phase
        return _deterministic(compose_message(batch, self.schema, on, self.channel, self.offer, self.spend_level))


@dataclass(frozen=True)
class SegmentRule:
    """One RFM segment and what it receives. A customer matches when every bound holds."""

    name: str
    min_recency_weeks: float = 0.0
    """Weeks since the last purchase, lower bound (inclusive)."""
    max_recency_weeks: float = math.inf
    """Weeks since the last purchase, upper bound (inclusive)."""
    min_frequency: float = 0.0
    """Repeat purchases so far, lower bound."""
    min_avg_spend: float = 0.0
    """Average order value ($), lower bound."""
    channels: tuple[str, ...] = ("email",)
    """Channels in order of preference; the first reachable one is used, none = no contact."""
    offer: str = "none"
    spend_level: int = 0


DEFAULT_RFM_SEGMENTS: tuple[SegmentRule, ...] = (
    # Thresholds sized for the CDNOW-calibrated retail scenario (mean order ~ $35, most
    # customers make 0-3 repeat purchases). Best customers get recommendations, not discounts
    # (they buy anyway); discounts deepen as customers drift away. First match wins.
    SegmentRule("champions", max_recency_weeks=4, min_frequency=5, min_avg_spend=40,
                offer="recommend_category_0"),
    SegmentRule("loyal", max_recency_weeks=8, min_frequency=2, offer="recommend_category_1"),
    SegmentRule("at_risk_valuable", min_recency_weeks=8, max_recency_weeks=26, min_frequency=2,
                min_avg_spend=30, channels=("email", "sms"), offer="discount_10"),
    SegmentRule("lapsing", min_recency_weeks=13, max_recency_weeks=52, min_frequency=1,
                offer="discount_20"),
)


class RFMSegmentRules(GuardedPolicy):
    """Recency/frequency/monetary segments, each mapped to a fixed message (first match wins).

    Unmatched customers get nothing. Messages go out every ``every_k_weeks`` weeks (all segments
    on the same cadence) so a segment is not mailed every single week.
    """

    def __init__(self, schema: DecisionSchema, segments: Sequence[SegmentRule] = DEFAULT_RFM_SEGMENTS,
                 *, every_k_weeks: int = 2, horizon: int = 52) -> None:
        super().__init__(schema)
        self.segments = tuple(segments)
        self._plans = [([channel_id(schema, c) for c in s.channels], offer_id(schema, s.offer),
                        spend_id(schema, s.spend_level)) for s in self.segments]
        self._cols = [schema.feature_index(f) for f in ("recency_weeks", "frequency", "avg_spend")]
        if every_k_weeks < 1:
            raise ValueError(f"every_k_weeks must be >= 1, got {every_k_weeks}")
        self.every_k_weeks, self.horizon = every_k_weeks, horizon

    def segment_of(self, obs: np.ndarray) -> np.ndarray:
        """(n,) int64 index into ``segments`` of each customer's segment, -1 if none."""
        recency, frequency, spend = (obs[:, c] for c in self._cols)
        segment = np.full(obs.shape[0], -1, np.int64)
        for i in reversed(range(len(self.segments))):  # earlier rules overwrite later ones
            s = self.segments[i]
            hit = ((recency >= s.min_recency_weeks) & (recency <= s.max_recency_weeks)
                   & (frequency >= s.min_frequency) & (spend >= s.min_avg_spend))
            segment[hit] = i
        return segment

    def _decide(self, batch, rng):
        segment = self.segment_of(batch.obs)
        on = week_index(batch.obs, self.schema, self.horizon) % self.every_k_weeks == 0
        reach = channel_reach(batch, self.schema)
        channel, offer, spend = (np.zeros(batch.n, np.int64) for _ in range(3))
        for i, (prefs, off, sp) in enumerate(self._plans):
            rows = segment == i
            channel[rows] = first_reachable(reach[rows], prefs)
            offer[rows], spend[rows] = off, sp
        selected = on & (segment >= 0)
        return _deterministic(compose_message(batch, self.schema, selected, channel, offer, spend))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """Stable 64-bit integer hash (SplitMix64 finaliser), elementwise, wrapping arithmetic."""
    z = x.astype(np.int64).view(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class DripCampaign(GuardedPolicy):
    """Lifecycle triggers: welcome series, win-back, and a yearly "birthday" message.

    * Welcome: a ``stage_new`` customer in tenure week ``welcome_weeks[i]`` gets ``welcome_offers[i]``.
    * Win-back: when weeks since the last purchase (rounded) reach ``winback_weeks[i]`` the
      customer gets ``winback_offers[i]`` (escalating discounts); a purchase resets recency.
    * Birthday: the simulator exposes no customer id and no birth date, and the only observable
      that stays constant over a customer's life is their acquisition week
      ``week - tenure_weeks``. Each customer's birthday week-of-year is
      ``splitmix64(rint(week - tenure_weeks)) % 52``, so it is stable across weeks and batches,
      identical in an exported policy that sees the same features, and spread over the year;
      customers acquired in the same week share a birthday.

    One message per week: welcome beats win-back beats birthday. Channels are tried in
    ``channels`` order.
    """

    def __init__(self, schema: DecisionSchema, *, welcome_weeks: Sequence[int] = (0, 1, 3),
                 welcome_offers: Sequence[str] = ("none", "recommend_category_0", "discount_10"),
                 winback_weeks: Sequence[int] = (8, 16, 26),
                 winback_offers: Sequence[str] = ("discount_10", "discount_20", "discount_30"),
                 birthday_offer: str = "service_gesture", channels: Sequence[str] = ("email", "sms", "push"),
                 horizon: int = 52) -> None:
        super().__init__(schema)
        if len(welcome_weeks) != len(welcome_offers) or len(winback_weeks) != len(winback_offers):
            raise ValueError("welcome_weeks/welcome_offers and winback_weeks/winback_offers must pair up")
        self.welcome = dict(zip(welcome_weeks, (offer_id(schema, o) for o in welcome_offers), strict=True))
        self.winback = dict(zip(winback_weeks, (offer_id(schema, o) for o in winback_offers), strict=True))
        self.birthday_offer = offer_id(schema, birthday_offer)
        self.channels = [channel_id(schema, c) for c in channels]
        self.horizon = horizon
        self._cols = {f: schema.feature_index(f) for f in ("stage_new", "tenure_weeks", "recency_weeks")}

    def birthday_week(self, obs: np.ndarray) -> np.ndarray:
        """(n,) int64 week-of-year (0..51) of each customer's birthday message."""
        acquired = np.rint(week_index(obs, self.schema, self.horizon) - obs[:, self._cols["tenure_weeks"]])
        return (_splitmix64(acquired) % np.uint64(52)).astype(np.int64)

    def _decide(self, batch, rng):
        obs, n = batch.obs, batch.n
        offer = np.full(n, -1, np.int64)  # -1 = no trigger this week
        birthday = self.birthday_week(obs) == week_index(obs, self.schema, self.horizon) % 52
        offer[birthday] = self.birthday_offer
        recency = np.rint(obs[:, self._cols["recency_weeks"]])
        for week, off in self.winback.items():
            offer[recency == week] = off
        tenure = np.rint(obs[:, self._cols["tenure_weeks"]])
        new = obs[:, self._cols["stage_new"]] > 0.5
        for week, off in self.welcome.items():
            offer[new & (tenure == week)] = off
        selected = offer >= 0
        channel = first_reachable(channel_reach(batch, self.schema), self.channels)
        return _deterministic(compose_message(batch, self.schema, selected, channel, np.maximum(offer, 0), 0))


class _SingleLever(GuardedPolicy):
    """Mass marketing's message (``channel``, ``offer``, no spend, every ``every_k_weeks`` weeks
    from ``phase``), with exactly one lever handed to a rule: subclasses override one of
    :meth:`_selected`, :meth:`_channel`, :meth:`_offer`. With the same base arguments, a
    single-lever policy's actions differ from :class:`MassMarketing`'s only in its lever."""

    def __init__(self, schema: DecisionSchema, *, channel: str | int = "email", offer: str | int = 0,
                 every_k_weeks: int = 4, phase: int = 0, horizon: int = 52) -> None:
        super().__init__(schema)
        if every_k_weeks < 1 or not 0 <= phase < every_k_weeks:
            raise ValueError(f"need every_k_weeks >= 1 and 0 <= phase < every_k_weeks, got {every_k_weeks}, {phase}")
        self.channel, self.offer = channel_id(schema, channel), offer_id(schema, offer)
        self.every_k_weeks, self.phase, self.horizon = every_k_weeks, phase, horizon

    def _on(self, batch: CheckedBatch) -> np.ndarray:
        return week_index(batch.obs, self.schema, self.horizon) % self.every_k_weeks == self.phase

    def _selected(self, batch: CheckedBatch) -> np.ndarray:
        return self._on(batch)

    def _channel(self, batch: CheckedBatch) -> np.ndarray | int:
        return self.channel

    def _offer(self, batch: CheckedBatch) -> np.ndarray | int:
        return self.offer

    def _decide(self, batch, rng):
        actions = compose_message(batch, self.schema, self._selected(batch), self._channel(batch),
                                  self._offer(batch), 0)
        return _deterministic(actions)


class TargetingOnly(_SingleLever):
    """Targeting lever alone: in contact weeks, the mass message goes only to the top
    ``top_fraction`` of the batch by a score, among customers reachable on ``channel``; ties by
    row order. The batch is the population being decided for (its top fraction is relative to it).

    ``rank_by``: ``value`` (default) scores ``p_alive × avg_spend``, the expected value of the next
    order; ``risk`` scores ``1 − p_alive`` among customers who have bought and are not known to be lost
    (``p_alive`` > 0): a proactive retention campaign aimed at those most likely to lapse, as
    firms target churn-risk models."""

    RANKINGS = ("value", "risk")

    def __init__(self, schema: DecisionSchema, *, top_fraction: float = 0.2, channel: str | int = "email",
                 offer: str | int = 0, every_k_weeks: int = 4, phase: int = 0, horizon: int = 52,
                 rank_by: str = "value") -> None:
        super().__init__(schema, channel=channel, offer=offer, every_k_weeks=every_k_weeks, phase=phase,
                         horizon=horizon)
        if not 0.0 <= top_fraction <= 1.0:
            raise ValueError(f"top_fraction must be in [0, 1], got {top_fraction}")
        if rank_by not in self.RANKINGS:
            raise ValueError(f"rank_by must be one of {self.RANKINGS}, got {rank_by!r}")
        self.top_fraction, self.rank_by = top_fraction, rank_by
        self._cols = (schema.feature_index("p_alive"), schema.feature_index("avg_spend"))

    def _score(self, batch):
        p_alive = batch.obs[:, self._cols[0]].astype(np.float64)
        if self.rank_by == "risk":
            known = (batch.obs[:, self._cols[1]] > 0) & (p_alive > 0)  # bought, and not known to be lost
            return np.where(known, 1.0 - p_alive, -1.0)
        return p_alive * batch.obs[:, self._cols[1]]

    def _selected(self, batch):
        score = self._score(batch)
        reachable = channel_reach(batch, self.schema)[:, self.channel]
        score = np.where(reachable, score, -np.inf)
        n_top = min(int(math.ceil(self.top_fraction * batch.n)), int(reachable.sum()))
        selected = np.zeros(batch.n, bool)
        selected[np.argsort(-score, kind="stable")[:n_top]] = True  # stable: ties by row order
        return selected & self._on(batch)


class DiscountOnly(_SingleLever):
    """Discount lever alone: the mass message carrying the discount ``offer`` (an offer with a
    discount depth) to everyone reachable, on the mass-marketing cadence."""

    def __init__(self, schema: DecisionSchema, *, offer: str | int = "discount_10", channel: str | int = "email",
                 every_k_weeks: int = 4, phase: int = 0, horizon: int = 52) -> None:
        super().__init__(schema, channel=channel, offer=offer, every_k_weeks=every_k_weeks, phase=phase,
                         horizon=horizon)
        if schema.offer_discounts and not schema.offer_discounts[self.offer] > 0:
            discounts = [o for o, d in zip(schema.offer_names, schema.offer_discounts, strict=True) if d > 0]
            raise ValueError(f"offer {schema.offer_names[self.offer]!r} is not a discount; discounts: {discounts}")


class RecommendationOnly(_SingleLever):
    """Recommendation lever alone: the mass message carrying a product recommendation, cycling
    through ``offers`` from one contact week to the next (no preference is observable, so this
    is the honest non-personalised version)."""

    def __init__(self, schema: DecisionSchema, *, channel: str | int = "email",
                 offers: Sequence[str] | None = None, every_k_weeks: int = 4, phase: int = 0,
                 horizon: int = 52) -> None:
        super().__init__(schema, channel=channel, offer=0, every_k_weeks=every_k_weeks, phase=phase,
                         horizon=horizon)
        names = offers if offers is not None else [o for o in schema.offer_names if o.startswith("recommend")]
        if not names:
            raise ValueError("no recommendation offers: pass offers=... (names from schema.offer_names)")
        self.offers = np.array([offer_id(schema, o) for o in names], np.int64)

    def _offer(self, batch):
        contact_week = week_index(batch.obs, self.schema, self.horizon) // self.every_k_weeks
        return self.offers[contact_week % len(self.offers)]


class ChannelChoiceOnly(_SingleLever):
    """Channel lever alone: the mass message through each customer's cheapest reachable channel
    (``schema.channel_costs``; ties by channel order) instead of a fixed one."""

    def __init__(self, schema: DecisionSchema, *, offer: str | int = 0, every_k_weeks: int = 4, phase: int = 0,
                 horizon: int = 52) -> None:
        super().__init__(schema, channel=0, offer=offer, every_k_weeks=every_k_weeks, phase=phase,
                         horizon=horizon)
        if len(schema.channel_costs) != len(schema.channel_names):
            raise ValueError("ChannelChoiceOnly needs schema.channel_costs, one per channel")
        self._by_cost = [int(j) + 1 for j in np.argsort(schema.channel_costs, kind="stable")]

    def _channel(self, batch):
        return first_reachable(channel_reach(batch, self.schema), self._by_cost)


class Oracle(GuardedPolicy):
    """Per customer, the candidate action with the highest expected profit under the true model.

    ``expected_profit_fn(actions)`` takes an ``(n, 3)`` int64 action array for the current batch
    and returns ``(n,)`` expected profits; the composition root binds it to the simulator's
    latent state (agents never import envs). It is called once per candidate action, each time
    with that action for every customer. Ties go to the earlier candidate; masked-out candidates
    are never chosen; rows with no allowed candidate get do-nothing
    (``stats["no_candidate_rows"]``). A non-finite expected profit raises ``ValueError``.

    Wiring it to the simulator (in ``experiments/``, which may import both sides)::

        env = PopulationEnv(num_envs=n, scenario="retail")
        oracle = Oracle(schema, env.expected_myopic_profit)
        obs, info = env.reset(seed=s)
        actions, _ = oracle.act(obs, rng, action_mask=info["action_mask"])
        obs, reward, terminated, truncated, info = env.step(actions)

    ``PopulationEnv.expected_myopic_profit(actions)`` reads the env's *current* latent state and
    needs one action row per customer of the env, so ``obs`` must be the whole population's
    observation from the same step (not a sub-batch). It is myopic: the best action for this
    week's expected profit, ignoring fatigue, opt-outs and churn it causes later.
    """

    def __init__(self, schema: DecisionSchema, expected_profit_fn: ProfitFn,
                 candidate_actions: np.ndarray | None = None) -> None:
        super().__init__(schema)
        self.expected_profit_fn = expected_profit_fn
        arms = all_joint_actions(schema.nvec) if candidate_actions is None else candidate_actions
        self.candidates = check_arms(arms, schema.nvec)
        self.stats["no_candidate_rows"] = 0

    def _decide(self, batch, rng):
        n, K = batch.n, len(self.candidates)
        value = np.empty((n, K), np.float64)
        for k in range(K):  # loop over candidate actions, each evaluated for all customers
            profit = np.asarray(self.expected_profit_fn(np.repeat(self.candidates[k:k + 1], n, axis=0)))
            if profit.shape != (n,):
                raise ValueError(f"expected_profit_fn returned shape {profit.shape}, expected ({n},)")
            if not np.isfinite(profit).all():
                raise ValueError(f"expected_profit_fn returned a non-finite value for candidate "
                                 f"{self.candidates[k].tolist()} (row {int(np.flatnonzero(~np.isfinite(profit))[0])})")
            value[:, k] = profit
        allowed = np.ones((n, K), bool) if batch.dim_masks is None else arm_mask(batch.dim_masks, self.candidates)
        value[~allowed] = -np.inf
        best = np.argmax(value, axis=1)
        actions = self.candidates[best].copy()
        none = ~allowed.any(axis=1)
        actions[none] = 0
        self.stats["no_candidate_rows"] += int(none.sum())
        return _deterministic(actions)
