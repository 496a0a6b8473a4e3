"""One week of the customer population: ``transition(model, state, plan, week) -> outcome``.

The single-customer env and the population env both call :func:`transition`; there is no second
copy of the dynamics. Actions arrive as a (3, n) int8 *plan* (:func:`rapport.envs.marketing.as_plan`).
The state is updated in place (arrays are large; copying a million-row population every week
would dominate the step) and the week's outcome is returned. The noise is counter-based
(:mod:`rapport.envs.noise`), keyed by the state's per-row keys and weeks, so the design's ``noise``
argument is implicit in ``state.key``/``state.week``.

The mechanisms live in their own modules: :mod:`rapport.envs.marketing` (the log-rate effect of
contacts, offers and media, and the scenario's lookup arrays), :mod:`rapport.envs.hazards` (weekly
churn, reminders, annoyance) and :mod:`rapport.envs.drift` (drift and life events); this module runs
them in order with purchases, drop-out, spend, opt-outs and the stocks, and re-exports the
names other modules import from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rapport.envs import noise
from rapport.envs.creative import NO_CREATIVE, expose
from rapport.envs.drift import drift
from rapport.envs.hazards import annoyance, reminder, weekly_churn
from rapport.envs.marketing import (
    F4,
    NO_MARKET,
    PERSONAL,
    CompiledScenario,
    Marketing,
    MarketWeek,
    as_plan,
    compile_scenario,
    marketing_effect,
    select,
)
from rapport.envs.noise import Mechanism as M
from rapport.envs.state import PopulationState, guess_favourite, initial_optin

__all__ = [
    "NO_MARKET", "PERSONAL", "CompiledScenario", "MarketWeek", "Marketing", "Outcome", "as_plan",
    "compile_scenario", "expected_myopic_profit", "marketing_effect", "transition",
]


@dataclass
class Outcome:
    """What happened to each customer this week (dense arrays, length n)."""

    profit: np.ndarray  # float32 $ — net revenue − cost of goods − contact − media costs
    revenue: np.ndarray  # float32 $ — net revenue (after discounts; incl. subscription fees)
    orders: np.ndarray  # int32 — purchases this week (online and offline; a first purchase counts)
    discount_cost: np.ndarray  # float32 $ — list-price revenue given away by discounts
    contact_cost: np.ndarray  # float32 $ — channel costs (+ service gestures) of delivered contacts
    media_cost: np.ndarray  # float32 $ — paid-media spend on reachable customers
    mass_media_cost: np.ndarray  # float32 $ — each row's share of the mass-media budget
    channel: np.ndarray  # int8 — channel delivered this week (1 + index), 0 = none
    offer: np.ndarray  # int8 — offer delivered this week, 0 = none
    opted_out: np.ndarray  # bool — opted out of the contacted channel this week
    converted: np.ndarray  # bool — a prospect made their first purchase this week
    dropped_out: np.ndarray  # bool — latent death / cancellation this week
    purchase_rate: np.ndarray  # float32 — latent effective rate this week (analysis only)
    orders_offline: np.ndarray | None = None  # int32 — store orders (omnichannel on), else None
    treatment_effect: np.ndarray | None = None  # float32 $ — see :func:`transition`
    # creative catalogue on (rapport.envs.creative), else None:
    creative_id: np.ndarray | None = None  # int32 — creative shown, -1 where none
    creative_match: np.ndarray | None = None  # float32 — latent taste·embedding (0 where none)
    creative_wear: np.ndarray | None = None  # float32 — wear-out multiplier applied (1 where none)


def transition(model: CompiledScenario, s: PopulationState, plan: np.ndarray,
               market: MarketWeek = NO_MARKET, treatment_effect: bool = False,
               survival: np.ndarray | None = None, creative: np.ndarray | None = None) -> Outcome:
    """Advance every customer one week under ``plan`` (3, n) int8; mutates ``s`` in place.

    ``creative``: (n,) int32 creative ids shown with the contacts (``action[:, 3]``), required
    when the scenario has a catalogue (:mod:`rapport.envs.creative`), else ignored.

    ``treatment_effect``: also return, per row, this week's expected profit of the plan minus
    that of doing nothing, under latent truth (myopic: later effects through fatigue, opt-outs,
    trust, reminders and drop-out are not in it). It is exactly 0 for rows the plan does not reach.

    ``survival`` (lookahead only, :mod:`rapport.envs.lookahead`): a float64 (n,) array of survival
    weights. Given, latent drop-out is not sampled: every live customer stays alive and
    ``survival`` is multiplied by the probability of surviving this week's drop-out hazards
    (the BG/NBD coin after each purchase, sBG churn, reminders, annoyance) — a
    Rao-Blackwellised path for estimating expected values with far less variance.
    """
    sc = model.scenario
    of, pm = sc.offers, sc.purchase
    n = s.n
    mk = marketing_effect(model, s, plan, market, keep_base=treatment_effect, creative=creative)
    rows, c = mk.contacted, mk.channel

    fee_rows = np.flatnonzero(s.alive) if pm.subscription_fee > 0 else None
    # Service gestures raise satisfaction before this week's purchases (lower drop-out risk).
    gest = rows[np.flatnonzero(mk.offer == model.gesture_offer)]  # (integer indexing: see marketing)
    s.satisfaction[gest] += F4(of.gesture_satisfaction)

    prospects = np.flatnonzero(s.prospect) if s.prospect.size else None
    if prospects is not None:  # the marketing part of their log-rate drives their conversion
        prospect_log = mk.log_mult[prospects] - F4(mk.prospect_offset)
        if s.rate_drift.size:
            prospect_log -= s.rate_drift[prospects]
    rate = np.exp(mk.log_mult, out=mk.log_mult)  # log_mult is not needed after this
    rate *= s.rate
    rate *= s.alive
    alive_before = s.alive.copy() if treatment_effect else None
    prospect_log_dense = None
    if treatment_effect and prospects is not None and prospects.size:
        prospect_log_dense = np.zeros(n, F4)
        prospect_log_dense[prospects] = prospect_log
    buyers, count = _poisson_sparse(rate, noise.uniform(s.key, s.week, M.PURCHASE))

    kb, wb = s.key[buyers], s.week[buyers]
    dropped = np.zeros(n, bool)
    if pm.contractual:
        bought = count
    else:
        # BG/NBD drop-out: after each repeat purchase the customer dies with probability p
        # (memoryless, so a fresh geometric draw per week is exact).
        p = s.p_drop[buyers].astype(np.float64) * np.exp(-of.satisfaction_retention
                                                         * s.satisfaction[buyers].astype(np.float64))
        p = np.minimum(p, 1 - 1e-12)
        if survival is not None:
            survival[buyers] *= (1.0 - p) ** count
            bought = count
        else:
            with np.errstate(divide="ignore"):  # p = 0 means never: +inf
                death_at = np.ceil(np.log(noise.uniform64(kb, wb, M.DROPOUT)) / np.log1p(-p))
            death_at = np.maximum(death_at, 1)
            bought = np.minimum(count, death_at)
            dropped[buyers[death_at <= count]] = True

    d = mk.discount[buyers]
    orders_offline = None
    if sc.omnichannel.enabled:
        online = noise.binomial_inverse(bought, s.online_share[buyers],
                                        noise.uniform64(kb, wb, M.ONLINE_SPLIT))
        offline = bought - online
        value_on = np.zeros(buyers.size)
        value_off = np.zeros(buyers.size)
        on, off = online > 0, offline > 0
        value_on[on] = noise.gamma_marsaglia(kb[on], wb[on], M.SPEND, pm.p * online[on])
        value_off[off] = noise.gamma_marsaglia(kb[off], wb[off], M.SPEND_OFFLINE, pm.p * offline[off])
        list_value = (value_on + value_off) / s.spend_rate[buyers]
        orders_offline = np.zeros(n, np.int32)
        orders_offline[buyers] = offline
        if not sc.omnichannel.observe_offline:  # the firm's books show the online part only
            seen = on
            seen_rows, seen_count = buyers[on], online[on]
            seen_net = (value_on[on] / s.spend_rate[seen_rows] * (1 - d[on])).astype(F4)
    else:
        list_value = noise.gamma_marsaglia(kb, wb, M.SPEND, pm.p * bought) / s.spend_rate[buyers]
    net = (list_value * (1 - d)).astype(F4)
    cogs = (list_value * (1 - pm.gross_margin)).astype(F4)
    if orders_offline is None or sc.omnichannel.observe_offline:
        seen = slice(None)
        seen_rows, seen_count, seen_net = buyers, bought, net

    # Observable history: last purchase time within the week = max of the seen orders' uniforms.
    frac = noise.uniform(kb[seen], wb[seen], M.PURCHASE_TIME) ** (F4(1.0) / seen_count.astype(F4))
    s.t_x[seen_rows] = s.T[seen_rows] + frac
    s.x[seen_rows] += seen_count.astype(F4)
    s.spend_total[seen_rows] += seen_net
    s.ref_price[buyers] = (F4(of.ref_smoothing) * s.ref_price[buyers]
                           + F4(1 - of.ref_smoothing) * (F4(1.0) - d))
    redeemed = buyers[d > 0]

    # Opt-outs: hazard per delivered contact grows with that channel's fatigue (and creepiness).
    hazard = model.optout_base[c] * np.exp(model.optout_fatigue[c] * mk.fatigue_before)
    if mk.creep is not None:
        hazard *= np.exp(F4(sc.privacy.optout_creep) * mk.creep)
        s.trust[rows] = np.maximum(s.trust[rows] - F4(sc.privacy.trust_loss) * mk.creep, F4(0))
    hazard = np.minimum(hazard, 1)
    out = np.flatnonzero(noise.uniform(s.key[rows], s.week[rows], M.OPTOUT) < hazard)
    out_rows = rows[out]
    s.optin[c[out], out_rows] = False
    opted_out = np.zeros(n, bool)
    opted_out[out_rows] = True

    if pm.contractual:  # sBG: every live subscriber may cancel at the end of the week
        weekly_churn(model, s, dropped, survival)
    if sc.media.reminder_dropout > 0:
        reminder(model, s, rows, dropped, survival)

    # Stocks: decay, then add this week's contacts (F_{t+1} = ρ·F_t + n_t).
    s.fatigue *= model.decay
    s.fatigue.reshape(-1)[mk.flat] += F4(1.0)
    if mk.media_rows.size:
        s.fatigue[model.paid_media, mk.media_rows] += model.hill[mk.media_level]
    annoyance(model, s, dropped, survival)
    s.alive &= ~dropped

    s.contact_bits <<= np.uint8(1)
    s.contact_bits.reshape(-1)[mk.flat] |= np.uint8(1)
    s.last_contact.reshape(-1)[mk.flat] = s.week[rows]
    s.offer_bits <<= np.uint8(1)
    s.redeem_bits <<= np.uint8(1)
    offered = rows[np.flatnonzero(mk.offer)]
    s.offer_bits[offered] |= np.uint8(1)
    s.last_offer[offered] = s.week[offered]
    s.redeem_bits[redeemed] |= np.uint8(1)
    if mk.creative is not None:  # wear-out memory (before the week counter moves on)
        expose(s.creative_ids, s.creative_stock, s.creative_last, s.week, rows, mk.creative)

    s.ref_price *= F4(of.ref_recovery)
    s.ref_price += F4(1 - of.ref_recovery)
    s.pantry *= F4(of.pantry_decay)
    s.pantry[redeemed] += bought[d > 0].astype(F4)
    s.conditioning *= F4(of.conditioning_decay)
    s.conditioning[redeemed] += F4(of.conditioning_gain)
    s.satisfaction *= F4(of.satisfaction_decay)
    if s.trust.size:  # familiarity: every week with a purchase rebuilds some trust
        s.trust[buyers] += F4(sc.privacy.trust_gain) * (F4(1.0) - s.trust[buyers])
    s.T += F4(1.0)

    conv = None
    if prospects is not None:
        s.T[prospects] = 0  # tenure counts from the first purchase
        conv = _convert_prospects(model, s, prospects, prospect_log, market, mk.discount)
    if sc.drift.enabled:
        drift(model, s)
    # the firm re-guesses tastes from each purchase it sees (converted prospects: their first)
    seen_buyers = seen_rows if conv is None else np.concatenate([seen_rows, conv[0]])
    if seen_buyers.size:
        s.belief[seen_buyers] = guess_favourite(sc, s, seen_buyers, s.x[seen_buyers] + F4(1.0),
                                                s.week[seen_buyers], M.BELIEF)
    s.week += np.int16(1)

    outcome = _outcome(model, n, mk, buyers, bought, net, cogs, list_value * d, opted_out, dropped,
                       rate, market)
    if fee_rows is not None:  # subscribers live at the start of the week pay its fee
        fee = F4(pm.subscription_fee)
        outcome.revenue[fee_rows] += fee
        outcome.profit[fee_rows] += fee * F4(pm.gross_margin)
    if conv is not None:
        cv, cv_net, cv_cogs, cv_given = conv
        outcome.converted[cv] = True
        outcome.orders[cv] += 1
        outcome.revenue[cv] += cv_net
        outcome.discount_cost[cv] += cv_given
        outcome.profit[cv] += cv_net - cv_cogs
    outcome.orders_offline = orders_offline
    if model.catalogue is not None:
        outcome.creative_id = np.full(n, NO_CREATIVE, np.int32)
        outcome.creative_match = np.zeros(n, F4)
        outcome.creative_wear = np.ones(n, F4)
        if mk.creative is not None:
            outcome.creative_id[rows] = mk.creative.ids
            outcome.creative_match[rows] = mk.creative.match
            outcome.creative_wear[rows] = mk.creative.wear
    if alive_before is not None:
        outcome.treatment_effect = _treatment_effect(
            model, s, mk, rate, market, alive_before, outcome, prospect_log_dense)
    return outcome


def _convert_prospects(model: CompiledScenario, s: PopulationState, prospects: np.ndarray,
                       prospect_log: np.ndarray, market: MarketWeek, discount: np.ndarray):
    """First purchases of prospects; returns (rows, net revenue, cost of goods, discount given)."""
    sc = model.scenario
    pm = sc.purchase
    hazard = np.exp(prospect_log + F4(market.prospect_lift)) * F4(sc.prospects.conversion_rate)
    p_conv = -np.expm1(-hazard)
    cv = prospects[noise.uniform(s.key[prospects], s.week[prospects], M.PROSPECT_CONVERT) < p_conv]
    if cv.size == 0:
        return cv, np.zeros(0, F4), np.zeros(0, F4), np.zeros(0, F4)
    value = noise.gamma_marsaglia(s.key[cv], s.week[cv], M.PROSPECT_SPEND,
                                  np.full(cv.size, pm.p)) / s.spend_rate[cv]
    d = discount[cv]
    net = (value * (1 - d)).astype(F4)
    s.prospect[cv] = False
    s.alive[cv] = True
    s.x[cv] = 0
    s.t_x[cv] = 0
    s.T[cv] = 0  # the first purchase is at the end of this week
    s.spend_total[cv] = net
    paid = s.optin[model.paid_media, cv]
    s.optin[:, cv] = initial_optin(sc, s.key[cv])  # consent given with the first order
    s.optin[model.paid_media, cv] = paid
    return cv, net, (value * (1 - pm.gross_margin)).astype(F4), (value * d).astype(F4)


def _poisson_sparse(rate: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows with a Poisson(rate) count > 0 and their counts, by inverse CDF from uniforms ``u``.

    The dense part is one exp and one compare; the search beyond 0 runs only on the few rows
    that buy.
    """
    p0 = np.negative(rate)
    np.exp(p0, out=p0)
    buyers = np.flatnonzero(u > p0)
    count = noise.poisson_inverse(rate[buyers].astype(np.float64), u[buyers].astype(np.float64))
    keep = count > 0  # float32 vs float64 rounding at the boundary can leave a zero
    return buyers[keep], count[keep]


def _outcome(model: CompiledScenario, n: int, mk: Marketing, buyers: np.ndarray, bought: np.ndarray,
             net: np.ndarray, cogs: np.ndarray, given_away: np.ndarray, opted_out: np.ndarray,
             dropped: np.ndarray, rate: np.ndarray, market: MarketWeek) -> Outcome:
    rows, c = mk.contacted, mk.channel
    revenue = np.zeros(n, F4)
    revenue[buyers] = net
    orders = np.zeros(n, np.int32)
    orders[buyers] = bought
    discount_cost = np.zeros(n, F4)
    discount_cost[buyers] = given_away
    contact_cost = np.zeros(n, F4)
    contact_cost[rows] = model.cost[c]
    contact_cost[rows[np.flatnonzero(mk.offer == model.gesture_offer)]] += F4(model.scenario.offers.gesture_cost)
    media_cost = np.zeros(n, F4)
    media_cost[mk.media_rows] = model.spend[mk.media_level]
    profit = revenue - contact_cost
    profit -= media_cost
    profit[buyers] -= cogs
    if market.cost_per_row > 0:
        mass_media_cost = np.full(n, market.cost_per_row, F4)
        profit -= mass_media_cost
    else:
        mass_media_cost = np.zeros(n, F4)
    if mk.channel_code is not None:
        channel, offer = mk.channel_code, mk.offer_code
    else:
        channel = np.zeros(n, np.int8)
        channel[rows] = c + 1
        offer = np.zeros(n, np.int8)
        offer[rows] = mk.offer
    return Outcome(profit, revenue, orders, discount_cost, contact_cost, media_cost, mass_media_cost,
                   channel, offer, opted_out, np.zeros(n, bool), dropped, rate)


def _treatment_effect(model: CompiledScenario, s: PopulationState, mk: Marketing, rate: np.ndarray,
                      market: MarketWeek, alive: np.ndarray, outcome: Outcome,
                      prospect_log: np.ndarray | None) -> np.ndarray:
    """Expected profit this week of the plan minus that of doing nothing, per row (myopic).

    ``rate`` and ``alive`` are this week's expected orders and who was alive at its start;
    ``outcome`` holds the week's contact and media costs; ``prospect_log`` (dense, None without prospects)
    the marketing part of each prospect's log conversion hazard. Only rows the plan reaches can differ; contacted
    and media rows are handled as two index sets (a row in both gets the same full effect
    assigned twice), which is cheaper than forming their union; when they cover most rows, the
    arithmetic runs densely over all rows and only the reached ones are kept (elementwise, so
    the same values).
    """
    reached = mk.contacted.size + mk.media_rows.size
    if 2 * reached > s.n:  # most rows reached: dense arithmetic beats gathers (same values)
        touched = np.zeros(s.n, bool)
        touched[mk.contacted] = True
        touched[mk.media_rows] = True
        gain = _gain(model, s, mk, rate, market, alive, outcome, prospect_log, slice(None), touched)
        return select(touched, gain)
    te = np.zeros(s.n, F4)
    for idx in (mk.contacted, mk.media_rows):
        if idx.size:
            te[idx] = _gain(model, s, mk, rate, market, alive, outcome, prospect_log, idx, None)
    return te


def _gain(model: CompiledScenario, s: PopulationState, mk: Marketing, rate: np.ndarray,
          market: MarketWeek, alive: np.ndarray, outcome: Outcome, prospect_log: np.ndarray | None,
          idx: np.ndarray | slice, touched: np.ndarray | None) -> np.ndarray:
    """The treatment effect of rows ``idx`` (an index array, or ``slice(None)`` with the
    ``touched`` mask of rows that count: the others' values are meaningless)."""
    sc = model.scenario
    pm = sc.purchase
    gm = F4(pm.gross_margin)
    value = F4(pm.p) / s.spend_rate[idx]
    base_orders = np.exp(mk.base_log_mult[idx])
    base_orders *= s.rate[idx]
    base_orders *= alive[idx]
    gain = rate[idx] * (gm - mk.discount[idx])
    gain -= base_orders * gm
    gain *= value
    if prospect_log is not None:  # a prospect's first order (prospects were not alive)
        nonzero = prospect_log[idx] != 0  # zero for customers
        if touched is not None:
            nonzero &= touched
        hit = np.flatnonzero(nonzero)
        if hit.size:
            ph = hit if touched is not None else idx[hit]
            base_h = sc.prospects.conversion_rate * math.exp(market.prospect_lift)
            plan_p = np.exp(prospect_log[ph])
            plan_p *= F4(-base_h)
            np.expm1(plan_p, out=plan_p)  # −P(convert | plan)
            gain[hit] = value[hit] * (F4(math.expm1(-base_h)) * gm
                                      - plan_p * (gm - mk.discount[ph]))
    gain -= outcome.contact_cost[idx]
    gain -= outcome.media_cost[idx]
    return gain


def expected_myopic_profit(model: CompiledScenario, s: PopulationState, plan: np.ndarray,
                           market: MarketWeek = NO_MARKET,
                           creative: np.ndarray | None = None) -> np.ndarray:
    """Expected profit this week of ``plan`` (3, n) under latent truth (for oracles and regret).

    Expected orders = alive × effective rate (the drop-out truncation min(N, G) is ignored: it
    changes E[orders] by under 1 % at weekly rates); expected order value = p/ν at list price.
    A prospect's expected first order is its conversion probability × p/ν. Subscription fees
    and the mass-media charge, which no per-customer action changes, are included.
    """
    sc = model.scenario
    pm = sc.purchase
    mk = marketing_effect(model, s, plan, market, creative=creative)
    value = pm.p / s.spend_rate.astype(np.float64)
    gm = pm.gross_margin
    orders = np.exp(mk.log_mult.astype(np.float64)) * s.rate * s.alive
    if s.prospect.size:
        pr = np.flatnonzero(s.prospect)
        log_h = mk.log_mult[pr].astype(np.float64) - mk.prospect_offset + market.prospect_lift
        if s.rate_drift.size:
            log_h -= s.rate_drift[pr]
        orders[pr] = -np.expm1(-sc.prospects.conversion_rate * np.exp(log_h))
    profit = orders * value * (gm - mk.discount)
    profit += pm.subscription_fee * gm * s.alive
    cost = np.zeros(s.n)
    cost[mk.contacted] = model.cost[mk.channel]
    cost[mk.contacted[mk.offer == model.gesture_offer]] += sc.offers.gesture_cost
    cost[mk.media_rows] += model.spend[mk.media_level]
    return profit - cost - market.cost_per_row
