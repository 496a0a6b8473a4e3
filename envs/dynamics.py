"""One week of the customer population: ``transition(model, state, plan, week) -> outcome``.

The single-customer env and the population env both call :func:`transition`; there is no second
copy of the dynamics. Actions arrive as a *plan*: a (3, n) int8 array of (channel, offer, spend
level) rows, made once by :func:`as_plan` so the hot path reads contiguous bytes instead of
strided int64 columns. The state is updated in place (arrays are large; copying a million-row
population every week would dominate the step) and the week's outcome is returned. The noise is
counter-based (:mod:`envs.noise`), keyed by the state's per-row keys and weeks, so the design's
``noise`` argument is implicit in ``state.key``/``state.week``. Population-level state (the
mass-media market, :class:`envs.market.Market`) enters as the scalars of a :class:`MarketWeek`.

Marketing enters as additive terms on the log purchase rate (customer-model.md §2.4), each
exactly zero without marketing, so with marketing off the process *is* BG/NBD + Gamma-Gamma:

    log λ_it = log λ_i + Σ_c β_ic·e^(−κ_c F_ic)·ν(T_i)·π_i·[delivered on c]  contact (§2.5-2.6)
               + promo(d) + η_G·(R − P)⁺ − η_L·(P − R)⁺ − s_i·[no discount]  price memory (§2.7)
               − ψ·pantry_i                                               post-promotion dip
               + g_rec·(K·w_ik − 1)·[recommend k]                          relevance
               + β^media_i·H(spend)                                        per-person media
               + sales_effect·(h_t − h_ref) + η_A·log(A_t/A_ref)          mass media (§2.9)
               + z_it − σ²/2                                              drift (§2.10)
               − reactance·creep_i                                        privacy (§2.11)

with ν(T) = 1 + boost·exp(−T/weeks) the newcomer boost and π_i = exp(g_k·rel − creep) the
privacy multiplier of a personalized message. Mechanisms that are off skip their code paths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import special

from envs import noise
from envs.noise import Mechanism as M
from envs.scenario import Scenario
from envs.state import (
    RESPONSE_CAP,
    PopulationState,
    effective_tastes,
    guess_favourite,
    initial_optin,
)

F4 = np.float32
PERSONAL = -2
"""``offer_category`` code of the personal recommendation: the category is the firm's belief."""


@dataclass(frozen=True)
class CompiledScenario:
    """Per-channel / per-offer / per-spend-level lookup arrays derived once from a scenario."""

    scenario: Scenario
    n_channels: int
    paid_media: int  # channel index of paid media
    cost: np.ndarray  # (C,) $ per delivered contact
    kappa: np.ndarray  # (C,) response decay per unit of fatigue
    decay: np.ndarray  # (C, 1) weekly fatigue retention 2^(-1/half-life)
    optout_base: np.ndarray  # (C,)
    optout_fatigue: np.ndarray  # (C,)
    offer_discount: np.ndarray  # (O,) discount depth per offer (0 if not a discount)
    offer_category: np.ndarray  # (O,) recommended category, -1 if none, PERSONAL = the belief
    offer_level: np.ndarray  # (O,) int8 explicitness level (scenario.EXPLICITNESS_LEVELS)
    gesture_offer: int  # offer index of the service gesture
    spend: np.ndarray  # (S,) $ per person per week
    hill: np.ndarray  # (S,) Hill saturation H(spend)
    mean_dropout: float  # population mean of p_drop: a / (a + b)

    @property
    def nvec(self) -> tuple[int, int, int]:
        return (self.n_channels + 1, len(self.offer_discount), len(self.spend))


@lru_cache(maxsize=64)
def compile_scenario(scenario: Scenario) -> CompiledScenario:
    of, md = scenario.offers, scenario.media
    K = of.n_categories
    personal = [0.0] if of.personalized_offer else []
    disc = np.array([0.0, *of.discounts, *([0.0] * K), *personal, 0.0], dtype=F4)
    cat = np.array([-1] * (1 + len(of.discounts)) + list(range(K)) + [PERSONAL] * len(personal) + [-1])
    level = np.array([0] * (1 + len(of.discounts)) + [1] * K + [2] * len(personal) + [0], np.int8)
    spend = np.asarray(md.spend_levels, dtype=F4)
    with np.errstate(divide="ignore"):
        hill = np.where(spend > 0, spend**md.hill_slope
                        / (md.half_saturation**md.hill_slope + spend**md.hill_slope), 0.0)
    ch = scenario.channels
    pm = scenario.purchase
    return CompiledScenario(
        scenario=scenario,
        n_channels=len(ch),
        paid_media=scenario.channel_names.index("paid_media"),
        cost=np.array([c.cost for c in ch], F4),
        kappa=np.array([c.fatigue_response_decay for c in ch], F4),
        decay=np.array([[2.0 ** (-1.0 / c.fatigue_half_life)] for c in ch], F4),
        optout_base=np.array([c.optout_base for c in ch], F4),
        optout_fatigue=np.array([c.optout_fatigue for c in ch], F4),
        offer_discount=disc,
        offer_category=cat,
        offer_level=level,
        gesture_offer=len(disc) - 1,
        spend=spend,
        hill=hill.astype(F4),
        mean_dropout=pm.a / (pm.a + pm.b),
    )


@dataclass(frozen=True)
class MarketWeek:
    """This week's population-level terms (from :class:`envs.market.Market`; all 0 when off)."""

    customer_lift: float = 0.0  # added to every live customer's log rate (sales + awareness)
    prospect_lift: float = 0.0  # added to every prospect's log conversion hazard (sales + awareness)
    cost_per_row: float = 0.0  # mass-media spend charged to each row, $


NO_MARKET = MarketWeek()


@dataclass
class Marketing:
    """What reached whom this week, and the log-rate multiplier it implies (no state change)."""

    log_mult: np.ndarray  # (n,) float32 — additive log-rate term from all marketing (and drift)
    contacted: np.ndarray  # (k,) rows with a delivered contact
    channel: np.ndarray  # (k,) channel index of each delivered contact
    flat: np.ndarray  # (k,) channel * n + row: flat index into (C, n) channel arrays
    fatigue_before: np.ndarray  # (k,) that channel's fatigue before the contact
    offer: np.ndarray  # (k,) offer carried by each delivered contact
    discount: np.ndarray  # (n,) float32 — discount this row can redeem this week (0 = list price)
    media_rows: np.ndarray  # (m,) rows reached by paid-media spend
    media_level: np.ndarray  # (m,) spend level index of those rows
    creep: np.ndarray | None  # (k,) creepiness of each delivered contact (privacy on), else None
    base_log_mult: np.ndarray | None  # (n,) log_mult of doing nothing (when asked for), else None
    prospect_offset: float  # what log_mult adds to every row besides marketing: drift mean, market


def as_plan(action: np.ndarray, nvec: np.ndarray) -> np.ndarray:
    """Validate an (n, 3) integer action array and return it as a (3, n) int8 plan.

    Raises ``ValueError`` naming the first customer row and dimension outside ``nvec``.
    """
    a = np.asarray(action)
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"action must have shape (customers, 3) = [channel, offer, spend level], got {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise ValueError(f"action must hold integers, got dtype {a.dtype}")
    ok = a.size == 0 or (a.min() >= 0 and a.max() < 127)  # whole-array reductions are cheap
    if ok:
        plan = np.empty((3, a.shape[0]), np.int8)
        np.copyto(plan, a.T, casting="unsafe")  # exact: every value is in [0, 127)
        ok = all(plan[d].max(initial=0) < nvec[d] for d in range(3))
        if ok:
            return plan
    row, dim = np.argwhere((a < 0) | (a >= nvec))[0]
    names = ("channel", "offer", "spend level")
    raise ValueError(
        f"action outside the space: customer row {row} has {names[dim]} {a[row, dim]}, "
        f"valid range is 0..{nvec[dim] - 1} (MultiDiscrete{list(map(int, nvec))})")


def marketing_effect(model: CompiledScenario, s: PopulationState, plan: np.ndarray,
                     market: MarketWeek = NO_MARKET, keep_base: bool = False) -> Marketing:
    """Effect of ``plan`` (3, n) int8 on this week's purchase rate, from the current state.

    ``keep_base``: also return the log multiplier of doing nothing (for treatment effects).
    """
    sc = model.scenario
    of = sc.offers
    n = s.n
    # Price memory applies to everyone who buys at list price: loss vs. a lowered reference price,
    # deal conditioning, and the pantry dip. All three are exactly 0 for a never-promoted customer.
    log_mult = s.ref_price - F4(1.0)
    log_mult *= F4(of.ref_loss)
    log_mult -= s.conditioning
    log_mult -= F4(of.pantry_effect) * s.pantry
    offset = market.customer_lift
    if s.rate_drift.size:  # z − σ²/2: E[exp] = 1, the mean rate is unchanged
        log_mult += s.rate_drift
        offset -= 0.5 * sc.drift.rate_sigma**2
    if offset != 0.0:
        log_mult += F4(offset)
    base = log_mult.copy() if keep_base else None

    chan = plan[0]
    rows = np.flatnonzero(chan)
    c = (chan[rows] - 1).astype(np.intp)
    flat = c * n + rows  # 1-D indices into the (C, n) channel arrays: much faster than 2-D pairs
    reach = s.optin.reshape(-1)[flat]
    rows, c, flat = rows[reach], c[reach], flat[reach]
    f_before = s.fatigue.reshape(-1)[flat]

    offer = plan[1][rows]
    discount = np.zeros(n, F4)
    d = model.offer_discount[offer]
    dr = rows[d > 0]
    if dr.size:
        d = d[d > 0]
        price = F4(1.0) - d
        ref = s.ref_price[dr]
        gain = np.maximum(ref - price, F4(0))
        # replaces the list-price terms: the customer pays ``price``, not list
        priced = (-F4(of.pantry_effect) * s.pantry[dr] - F4(of.promo_elasticity) * np.log(price)
                  + F4(of.ref_gain) * gain - F4(of.ref_loss) * np.maximum(price - ref, F4(0)))
        if s.rate_drift.size:
            priced += s.rate_drift[dr]
        if offset != 0.0:
            priced += F4(offset)
        log_mult[dr] = priced
        discount[dr] = d
    lift = s.response.reshape(-1)[flat] * np.exp(-model.kappa[c] * f_before)
    md = sc.media
    if md.newcomer_boost > 0:  # capped like the responsiveness itself (envs.state.RESPONSE_CAP)
        boost = np.exp(s.T[rows] * F4(-1.0 / md.newcomer_weeks))
        boost *= F4(md.newcomer_boost)
        boost += F4(1.0)
        lift *= boost
        np.minimum(lift, F4(RESPONSE_CAP), out=lift)

    cat = model.offer_category[offer]
    personalized = np.flatnonzero(cat != -1)
    creep = None
    if personalized.size:
        pr = rows[personalized]
        k = cat[personalized]
        if model.offer_level.max() > 1:  # the personal offer names the firm's belief
            k = np.where(k == PERSONAL, s.belief[pr], k)
        if sc.privacy.enabled or s.taste_drift.size:
            w = effective_tastes(sc, s, pr)
            chosen = w[k, np.arange(pr.size)]
        else:
            chosen = s.category_pref[k, pr]
        log_mult[pr] += F4(of.recommendation_effect) * (F4(of.n_categories) * chosen - F4(1.0))
        if sc.privacy.enabled:
            creep = np.zeros(rows.size, F4)
            rel = chosen / w.max(axis=0)
            c_p, mult = _creepiness(model, s, pr, offer[personalized], rel)
            creep[personalized] = c_p
            lift[personalized] *= mult
            log_mult[pr] -= F4(sc.privacy.reactance) * c_p
    log_mult[rows] += lift

    level = plan[2]
    mrows = np.flatnonzero(level)
    mrows = mrows[s.optin[model.paid_media, mrows]]
    mlevel = level[mrows]
    if mrows.size:
        log_mult[mrows] += s.media_response[mrows] * model.hill[mlevel]
    return Marketing(log_mult, rows, c, flat, f_before, offer, discount, mrows, mlevel, creep, base,
                     offset)


def _creepiness(model: CompiledScenario, s: PopulationState, rows: np.ndarray, offer: np.ndarray,
                rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Creepiness of personalized messages to ``rows`` and the multiplier of their contact lift."""
    pv = model.scenario.privacy
    lvl = model.offer_level[offer]
    c_k = np.asarray(pv.creep_by_level, F4)[lvl]
    g_k = np.asarray(pv.gain_by_level, F4)[lvl]
    creep = c_k * (F4(1.0) - s.trust[rows]) * F4(1.0 - pv.control)
    creep *= F4(1.0) + F4(pv.wrong_guess_penalty) * (F4(1.0) - rel)
    creep /= F4(1.0) + s.T[rows] * F4(1.0 / pv.familiarity_weeks)
    return creep, np.exp(g_k * rel - creep)


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


def transition(model: CompiledScenario, s: PopulationState, plan: np.ndarray,
               market: MarketWeek = NO_MARKET, treatment_effect: bool = False,
               survival: np.ndarray | None = None) -> Outcome:
    """Advance every customer one week under ``plan`` (3, n) int8; mutates ``s`` in place.

    ``treatment_effect``: also return, per row, this week's expected profit of the plan minus
    that of doing nothing, under latent truth (myopic: later effects through fatigue, opt-outs,
    trust, reminders and drop-out are not in it). It is exactly 0 for rows the plan does not reach.

    ``survival`` (lookahead only, :mod:`envs.lookahead`): a float64 (n,) array of survival
    weights. Given, latent drop-out is not sampled: every live customer stays alive and
    ``survival`` is multiplied by the probability of surviving this week's drop-out hazards
    (the BG/NBD coin after each purchase, sBG churn, reminders, annoyance) — a
    Rao-Blackwellised path for estimating expected values with far less variance.
    """
    sc = model.scenario
    of, pm = sc.offers, sc.purchase
    n = s.n
    mk = marketing_effect(model, s, plan, market, keep_base=treatment_effect)
    rows, c = mk.contacted, mk.channel

    fee_rows = np.flatnonzero(s.alive) if pm.subscription_fee > 0 else None
    # Service gestures raise satisfaction before this week's purchases (lower drop-out risk).
    gest = rows[mk.offer == model.gesture_offer]
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
    out = noise.uniform(s.key[rows], s.week[rows], M.OPTOUT) < hazard
    s.optin[c[out], rows[out]] = False
    opted_out = np.zeros(n, bool)
    opted_out[rows[out]] = True

    if pm.contractual:  # sBG: every live subscriber may cancel at the end of the week
        _weekly_churn(model, s, dropped, survival)
    if sc.media.reminder_dropout > 0:
        _reminder(model, s, rows, dropped, survival)

    # Stocks: decay, then add this week's contacts (F_{t+1} = ρ·F_t + n_t).
    s.fatigue *= model.decay
    s.fatigue.reshape(-1)[mk.flat] += F4(1.0)
    if mk.media_rows.size:
        s.fatigue[model.paid_media, mk.media_rows] += model.hill[mk.media_level]
    _annoyance(model, s, dropped, survival)
    s.alive &= ~dropped

    s.contact_bits <<= np.uint8(1)
    s.contact_bits.reshape(-1)[mk.flat] |= np.uint8(1)
    s.last_contact.reshape(-1)[mk.flat] = s.week[rows]
    s.offer_bits <<= np.uint8(1)
    s.redeem_bits <<= np.uint8(1)
    offered = rows[mk.offer > 0]
    s.offer_bits[offered] |= np.uint8(1)
    s.last_offer[offered] = s.week[offered]
    s.redeem_bits[redeemed] |= np.uint8(1)

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
        _drift(model, s)
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
    if alive_before is not None:
        outcome.treatment_effect = _treatment_effect(
            model, s, mk, rate, market, alive_before, outcome, prospect_log_dense)
    return outcome


def _drop(s: PopulationState, rows: np.ndarray, prob: np.ndarray, stream: int, dropped: np.ndarray,
          survival: np.ndarray | None) -> None:
    """Live ``rows`` drop out with probability ``prob`` (or, with ``survival``, are weighted by
    the probability that they do not)."""
    if survival is not None:
        survival[rows] *= 1.0 - prob.astype(np.float64)
    else:
        dropped[rows[noise.uniform(s.key[rows], s.week[rows], stream) < prob]] = True


def _weekly_churn(model: CompiledScenario, s: PopulationState, dropped: np.ndarray,
                  survival: np.ndarray | None = None) -> None:
    """sBG cancellation: live subscriber i cancels with probability θ_i·exp(−γ_S·satisfaction).
    Dense: most rows of a subscription base are live."""
    theta = s.satisfaction * F4(-model.scenario.offers.satisfaction_retention)
    np.exp(theta, out=theta)
    theta *= s.p_drop
    if survival is not None:
        survival *= np.where(s.alive, 1.0 - theta.astype(np.float64), 1.0)
        return
    cancel = noise.uniform(s.key, s.week, M.CHURN_WEEKLY) < theta
    cancel &= s.alive
    dropped |= cancel


def _reminder(model: CompiledScenario, s: PopulationState, rows: np.ndarray, dropped: np.ndarray,
              survival: np.ndarray | None = None) -> None:
    """A delivered contact makes a live customer reconsider: drop out with probability
    reminder_dropout × p_i / mean p (Ascarza et al. 2016)."""
    live = rows[s.alive[rows]]
    if live.size == 0:
        return
    r = model.scenario.media.reminder_dropout
    prob = np.minimum(F4(r / model.mean_dropout) * s.p_drop[live], F4(1.0))
    _drop(s, live, prob, M.REMINDER, dropped, survival)


def _annoyance(model: CompiledScenario, s: PopulationState, dropped: np.ndarray,
               survival: np.ndarray | None = None) -> None:
    """'Do not disturb': total fatigue above the tolerance drives latent drop-out."""
    md = model.scenario.media
    if md.annoyance_hazard == 0:
        return
    total = s.fatigue.sum(axis=0)
    rows = np.flatnonzero(total > md.annoyance_tolerance)
    rows = rows[s.alive[rows]]
    if rows.size:
        h = -np.expm1(-md.annoyance_hazard * (total[rows] - md.annoyance_tolerance))
        _drop(s, rows, h, M.ANNOYANCE, dropped, survival)


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


def _drift(model: CompiledScenario, s: PopulationState) -> None:
    """OU drift of the log rate and tastes, then life events (§2.10), for the rows whose turn it
    is this week: (customer id + row week) % update_weeks == 0, each moved on by the exact
    k-week transition."""
    dm = model.scenario.drift
    K = model.scenario.offers.n_categories
    k = dm.update_weeks
    if k == 1:
        due = slice(None)
        keys, week = s.key, s.week
    elif k & (k - 1) == 0:  # a power of two: the low bits of int16 arithmetic are exact
        phase = s.customer_id.astype(np.int16)
        phase += s.week
        phase &= np.int16(k - 1)
        due = np.flatnonzero(phase == 0)
    else:
        phase = s.customer_id.astype(np.int32)  # wraps for ids >= 2**31: fine, only a phase
        phase += s.week
        due = np.flatnonzero(phase % np.int32(k) == 0)
    if k > 1:
        if due.size == 0:
            return
        keys, week = s.key[due], s.week[due]
    targets = []
    if dm.rate_sigma > 0:
        targets.append((s.rate_drift, dm.rate_persistence**k, dm.rate_sigma))
    if dm.preference_sigma > 0:
        targets += [(s.taste_drift[j], dm.preference_persistence**k, dm.preference_sigma)
                    for j in range(K)]
    eps: list[np.ndarray] = []
    for j, (z, phi, sigma) in enumerate(targets):
        if j % 2 == 0:
            eps = list(noise.normal_pair(keys, week, M.DRIFT, j // 2))
        e = eps[j % 2]
        e *= F4(np.sqrt(1.0 - phi**2) * sigma)
        if k == 1:
            z *= F4(phi)
            z += e
        else:
            e += F4(phi) * z[due]
            z[due] = e
    if dm.life_event_rate > 0:
        p_event = F4(1.0 - (1.0 - dm.life_event_rate) ** k)
        hit = noise.uniform(keys, week, M.LIFE_EVENT) < p_event
        ev = np.flatnonzero(hit) if k == 1 else due[hit]
        if ev.size:
            kv, wv = s.key[ev], s.week[ev]
            conc = model.scenario.offers.category_concentration
            g = np.stack([special.gammaincinv(conc, noise.uniform64(kv, wv, M.LIFE_EVENT_PREF, j))
                          for j in range(K)])
            g = np.maximum(g, 1e-30)
            s.category_pref[:, ev] = g / g.sum(axis=0)
            if dm.rate_sigma > 0:
                s.rate_drift[ev] = dm.rate_sigma * noise.normal(kv, wv, M.LIFE_EVENT_DRIFT, 0)
            if dm.preference_sigma > 0:
                for j in range(K):
                    s.taste_drift[j, ev] = dm.preference_sigma * noise.normal(kv, wv, M.LIFE_EVENT_DRIFT, 1 + j)


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
    contact_cost[rows[mk.offer == model.gesture_offer]] += F4(model.scenario.offers.gesture_cost)
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
    assigned twice), which is cheaper than forming their union.
    """
    sc = model.scenario
    pm = sc.purchase
    gm = F4(pm.gross_margin)
    te = np.zeros(s.n, F4)
    for idx in (mk.contacted, mk.media_rows):
        if idx.size == 0:
            continue
        value = F4(pm.p) / s.spend_rate[idx]
        base_orders = np.exp(mk.base_log_mult[idx])
        base_orders *= s.rate[idx]
        base_orders *= alive[idx]
        gain = rate[idx] * (gm - mk.discount[idx])
        gain -= base_orders * gm
        gain *= value
        if prospect_log is not None:  # a prospect's first order (prospects were not alive)
            hit = np.flatnonzero(prospect_log[idx] != 0)  # zero for customers
            if hit.size:
                ph = idx[hit]
                base_h = sc.prospects.conversion_rate * math.exp(market.prospect_lift)
                plan_p = np.exp(prospect_log[ph])
                plan_p *= F4(-base_h)
                np.expm1(plan_p, out=plan_p)  # −P(convert | plan)
                gain[hit] = value[hit] * (F4(math.expm1(-base_h)) * gm
                                          - plan_p * (gm - mk.discount[ph]))
        gain -= outcome.contact_cost[idx]
        gain -= outcome.media_cost[idx]
        te[idx] = gain
    return te


def expected_myopic_profit(model: CompiledScenario, s: PopulationState, plan: np.ndarray,
                           market: MarketWeek = NO_MARKET) -> np.ndarray:
    """Expected profit this week of ``plan`` (3, n) under latent truth (for oracles and regret).

    Expected orders = alive × effective rate (the drop-out truncation min(N, G) is ignored: it
    changes E[orders] by under 1 % at weekly rates); expected order value = p/ν at list price.
    A prospect's expected first order is its conversion probability × p/ν. Subscription fees
    and the mass-media charge, which no per-customer action changes, are included.
    """
    sc = model.scenario
    pm = sc.purchase
    mk = marketing_effect(model, s, plan, market)
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
