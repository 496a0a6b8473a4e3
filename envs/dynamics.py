"""One week of the customer population: ``transition(model, state, plan) -> outcome``.

The single-customer env and the population env both call :func:`transition`; there is no second
copy of the dynamics. Actions arrive as a *plan*: a (3, n) int8 array of (channel, offer, spend
level) rows, made once by :func:`as_plan` so the hot path reads contiguous bytes instead of
strided int64 columns. The state is updated in place (arrays are large; copying a million-row
population every week would dominate the step) and the week's outcome is returned. The noise is
counter-based (:mod:`envs.noise`), keyed by the state's per-row keys and weeks, so the design's
``noise`` argument is implicit in ``state.key``/``state.week``.

Marketing enters as additive terms on the log purchase rate (customer-model.md §2.4), each
exactly zero without marketing, so with marketing off the process *is* BG/NBD + Gamma-Gamma:

    log λ_it = log λ_i + Σ_c β_ic·e^(−κ_c F_ic)·[delivered on c]           contact (§2.5-2.6)
               + promo(d) + η_G·(R − P)⁺ − η_L·(P − R)⁺ − s_i·[no discount]  price memory (§2.7)
               − ψ·pantry_i                                               post-promotion dip
               + g_rec·(K·w_ik − 1)·[recommend k]                          relevance
               + β^media_i·H(spend)                                        per-person media
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from envs import noise
from envs.noise import Mechanism as M
from envs.scenario import Scenario
from envs.state import PopulationState

F4 = np.float32


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
    offer_category: np.ndarray  # (O,) recommended category, -1 if none
    gesture_offer: int  # offer index of the service gesture
    spend: np.ndarray  # (S,) $ per person per week
    hill: np.ndarray  # (S,) Hill saturation H(spend)

    @property
    def nvec(self) -> tuple[int, int, int]:
        return (self.n_channels + 1, len(self.offer_discount), len(self.spend))


@lru_cache(maxsize=64)
def compile_scenario(scenario: Scenario) -> CompiledScenario:
    of, md = scenario.offers, scenario.media
    disc = np.array([0.0, *of.discounts, *([0.0] * of.n_categories), 0.0], dtype=F4)
    cat = np.array([-1] * (1 + len(of.discounts)) + list(range(of.n_categories)) + [-1])
    spend = np.asarray(md.spend_levels, dtype=F4)
    with np.errstate(divide="ignore"):
        hill = np.where(spend > 0, spend**md.hill_slope
                        / (md.half_saturation**md.hill_slope + spend**md.hill_slope), 0.0)
    ch = scenario.channels
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
        gesture_offer=len(disc) - 1,
        spend=spend,
        hill=hill.astype(F4),
    )


@dataclass
class Marketing:
    """What reached whom this week, and the log-rate multiplier it implies (no state change)."""

    log_mult: np.ndarray  # (n,) float32 — additive log-rate term from all marketing
    contacted: np.ndarray  # (k,) rows with a delivered contact
    channel: np.ndarray  # (k,) channel index of each delivered contact
    flat: np.ndarray  # (k,) channel * n + row: flat index into (C, n) channel arrays
    fatigue_before: np.ndarray  # (k,) that channel's fatigue before the contact
    offer: np.ndarray  # (k,) offer carried by each delivered contact
    discount: np.ndarray  # (n,) float32 — discount this row can redeem this week (0 = list price)
    media_rows: np.ndarray  # (m,) rows reached by paid-media spend
    media_level: np.ndarray  # (m,) spend level index of those rows


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


def marketing_effect(model: CompiledScenario, s: PopulationState, plan: np.ndarray) -> Marketing:
    """Effect of ``plan`` (3, n) int8 on this week's purchase rate, from the current state."""
    sc = model.scenario
    of = sc.offers
    n = s.n
    # Price memory applies to everyone who buys at list price: loss vs. a lowered reference price,
    # deal conditioning, and the pantry dip. All three are exactly 0 for a never-promoted customer.
    log_mult = s.ref_price - F4(1.0)
    log_mult *= F4(of.ref_loss)
    log_mult -= s.conditioning
    log_mult -= F4(of.pantry_effect) * s.pantry

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
        log_mult[dr] = (-F4(of.pantry_effect) * s.pantry[dr] - F4(of.promo_elasticity) * np.log(price)
                        + F4(of.ref_gain) * gain - F4(of.ref_loss) * np.maximum(price - ref, F4(0)))
        discount[dr] = d
    log_mult[rows] += s.response.reshape(-1)[flat] * np.exp(-model.kappa[c] * f_before)
    cat = model.offer_category[offer]
    rr = rows[cat >= 0]
    if rr.size:
        w = s.category_pref[cat[cat >= 0], rr]
        log_mult[rr] += F4(of.recommendation_effect) * (F4(of.n_categories) * w - F4(1.0))

    level = plan[2]
    mrows = np.flatnonzero(level)
    mrows = mrows[s.optin[model.paid_media, mrows]]
    mlevel = level[mrows]
    if mrows.size:
        log_mult[mrows] += s.media_response[mrows] * model.hill[mlevel]
    return Marketing(log_mult, rows, c, flat, f_before, offer, discount, mrows, mlevel)


@dataclass
class Outcome:
    """What happened to each customer this week (dense arrays, length n)."""

    profit: np.ndarray  # float32 $ — net revenue − cost of goods − contact − media cost
    revenue: np.ndarray  # float32 $ — net revenue (after discounts)
    orders: np.ndarray  # int32 — purchases this week
    discount_cost: np.ndarray  # float32 $ — list-price revenue given away by discounts
    contact_cost: np.ndarray  # float32 $ — channel costs (+ service gestures) of delivered contacts
    media_cost: np.ndarray  # float32 $ — paid-media spend on reachable customers
    channel: np.ndarray  # int8 — channel delivered this week (1 + index), 0 = none
    offer: np.ndarray  # int8 — offer delivered this week, 0 = none
    opted_out: np.ndarray  # bool — opted out of the contacted channel this week
    dropped_out: np.ndarray  # bool — latent death this week (analysis only)
    purchase_rate: np.ndarray  # float32 — latent effective rate this week (analysis only)


def transition(model: CompiledScenario, s: PopulationState, plan: np.ndarray) -> Outcome:
    """Advance every customer one week under ``plan`` (3, n) int8; mutates ``s`` in place."""
    sc = model.scenario
    of, pm = sc.offers, sc.purchase
    n = s.n
    mk = marketing_effect(model, s, plan)
    rows, c = mk.contacted, mk.channel

    # Service gestures raise satisfaction before this week's purchases (lower drop-out risk).
    gest = rows[mk.offer == model.gesture_offer]
    s.satisfaction[gest] += F4(of.gesture_satisfaction)

    rate = np.exp(mk.log_mult, out=mk.log_mult)  # log_mult is not needed after this
    rate *= s.rate
    rate *= s.alive
    buyers, count = _poisson_sparse(rate, noise.uniform(s.key, s.week, M.PURCHASE))

    # BG/NBD drop-out: after each repeat purchase the customer dies with probability p
    # (memoryless, so a fresh geometric draw per week is exact).
    kb, wb = s.key[buyers], s.week[buyers]
    p = s.p_drop[buyers].astype(np.float64) * np.exp(-of.satisfaction_retention
                                                     * s.satisfaction[buyers].astype(np.float64))
    p = np.minimum(p, 1 - 1e-12)
    with np.errstate(divide="ignore"):  # p = 0 means never: +inf
        death_at = np.ceil(np.log(noise.uniform64(kb, wb, M.DROPOUT)) / np.log1p(-p))
    death_at = np.maximum(death_at, 1)
    bought = np.minimum(count, death_at)
    dropped = np.zeros(n, bool)
    dropped[buyers[death_at <= count]] = True

    list_value = noise.gamma_marsaglia(kb, wb, M.SPEND, pm.p * bought) / s.spend_rate[buyers]
    d = mk.discount[buyers]
    net = (list_value * (1 - d)).astype(F4)
    cogs = (list_value * (1 - pm.gross_margin)).astype(F4)

    # Observable history: last purchase time within the week = max of `bought` uniforms.
    frac = noise.uniform(kb, wb, M.PURCHASE_TIME) ** (F4(1.0) / bought.astype(F4))
    s.t_x[buyers] = s.T[buyers] + frac
    s.x[buyers] += bought.astype(F4)
    s.spend_total[buyers] += net
    s.ref_price[buyers] = (F4(of.ref_smoothing) * s.ref_price[buyers]
                           + F4(1 - of.ref_smoothing) * (F4(1.0) - d))
    redeemed = buyers[d > 0]

    # Opt-outs: hazard per delivered contact grows with that channel's fatigue.
    hazard = np.minimum(model.optout_base[c] * np.exp(model.optout_fatigue[c] * mk.fatigue_before), 1)
    out = noise.uniform(s.key[rows], s.week[rows], M.OPTOUT) < hazard
    s.optin[c[out], rows[out]] = False
    opted_out = np.zeros(n, bool)
    opted_out[rows[out]] = True

    # Stocks: decay, then add this week's contacts (F_{t+1} = ρ·F_t + n_t).
    s.fatigue *= model.decay
    s.fatigue.reshape(-1)[mk.flat] += F4(1.0)
    if mk.media_rows.size:
        s.fatigue[model.paid_media, mk.media_rows] += model.hill[mk.media_level]
    _annoyance(model, s, dropped)
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
    s.T += F4(1.0)
    s.week += np.int16(1)

    return _outcome(model, n, mk, buyers, bought, net, cogs, list_value * d, opted_out, dropped, rate)


def _annoyance(model: CompiledScenario, s: PopulationState, dropped: np.ndarray) -> None:
    """'Do not disturb': total fatigue above the tolerance drives latent drop-out."""
    md = model.scenario.media
    if md.annoyance_hazard == 0:
        return
    total = s.fatigue.sum(axis=0)
    rows = np.flatnonzero(total > md.annoyance_tolerance)
    rows = rows[s.alive[rows]]
    if rows.size:
        h = -np.expm1(-md.annoyance_hazard * (total[rows] - md.annoyance_tolerance))
        dropped[rows[noise.uniform(s.key[rows], s.week[rows], M.ANNOYANCE) < h]] = True


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
             dropped: np.ndarray, rate: np.ndarray) -> Outcome:
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
    channel = np.zeros(n, np.int8)
    channel[rows] = c + 1
    offer = np.zeros(n, np.int8)
    offer[rows] = mk.offer
    return Outcome(profit, revenue, orders, discount_cost, contact_cost, media_cost, channel, offer,
                   opted_out, dropped, rate)


def expected_myopic_profit(model: CompiledScenario, s: PopulationState, plan: np.ndarray) -> np.ndarray:
    """Expected profit this week of ``plan`` (3, n) under latent truth (for oracles and regret).

    Expected orders = alive × effective rate (the drop-out truncation min(N, G) is ignored: it
    changes E[orders] by under 1 % at weekly rates); expected order value = p/ν at list price.
    """
    sc = model.scenario
    mk = marketing_effect(model, s, plan)
    rate = np.exp(mk.log_mult.astype(np.float64)) * s.rate * s.alive
    value = sc.purchase.p / s.spend_rate.astype(np.float64)
    profit = rate * value * ((1 - mk.discount) - (1 - sc.purchase.gross_margin))
    cost = np.zeros(s.n)
    cost[mk.contacted] = model.cost[mk.channel]
    cost[mk.contacted[mk.offer == model.gesture_offer]] += sc.offers.gesture_cost
    cost[mk.media_rows] += model.spend[mk.media_level]
    return profit - cost
