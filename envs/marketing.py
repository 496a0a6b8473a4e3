"""What marketing does to this week's purchase rate, and the scenario's lookup arrays.

Actions arrive as a *plan*: a (3, n) int8 array of (channel, offer, spend level) rows, made once
by :func:`as_plan` so the hot path reads contiguous bytes instead of strided int64 columns.
Population-level state (the mass-media market, :class:`rapport.envs.market.Market`) enters as the
scalars of a :class:`MarketWeek`.

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

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from rapport.envs.creative import (
    Catalogue,
    CreativeEffect,
    check_creative_column,
    creative_effect,
    scenario_catalogue,
)
from rapport.envs.scenario import Scenario
from rapport.envs.state import RESPONSE_CAP, PopulationState, effective_tastes

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
    catalogue: Catalogue | None = None  # creatives (scenario.creative.count >= 1), else None

    @property
    def nvec(self) -> tuple[int, int, int]:
        """Sizes of the plan's dimensions (channel, offer, spend level)."""
        return (self.n_channels + 1, len(self.offer_discount), len(self.spend))

    @property
    def action_nvec(self) -> tuple[int, ...]:
        """Sizes of the action's dimensions: ``nvec`` and, with a catalogue, its size."""
        return self.nvec if self.catalogue is None else (*self.nvec, self.catalogue.count)


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
        catalogue=scenario_catalogue(scenario),
    )


@dataclass(frozen=True)
class MarketWeek:
    """This week's population-level terms (from :class:`rapport.envs.market.Market`; all 0 when off)."""

    customer_lift: float = 0.0  # added to every live customer's log rate (sales + awareness)
    prospect_lift: float = 0.0  # added to every prospect's log conversion hazard (sales + awareness)
    cost_per_row: float = 0.0  # mass-media spend charged to each row, $
    attention: float = 1.0  # g(A_t): multiplies every contact's lift (rapport.envs.attention)


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
    # Dense forms, set only when contacts reach many rows (scatters into n rows cost more than
    # dense passes then): channel and offer codes (n,) int8, 0 where no contact was delivered.
    channel_code: np.ndarray | None = None
    offer_code: np.ndarray | None = None
    creative: CreativeEffect | None = None  # match and wear-out of contacted rows (catalogue on)


def dense(count: int, n: int) -> bool:
    """Whether ``count`` of ``n`` rows are enough to handle them by dense passes with masks."""
    return 4 * count > n


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


def as_creative_plan(action: np.ndarray, nvec: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate an (n, 4) integer action array whose 4th column is a creative id in
    ``0 … count−1``; return the (3, n) int8 plan of :func:`as_plan` and the (n,) int32 ids.

    One strided pass into a (4, n) int32 buffer after two whole-array reductions (which make the
    cast exact), then contiguous checks: ~3x cheaper than validating the two parts apart.
    Raises ``ValueError`` as :func:`as_plan` does, or naming ``action[:, 3]`` and its range.
    """
    a = np.asarray(action)
    if a.ndim == 2 and a.shape[1] == 4 and np.issubdtype(a.dtype, np.integer) and a.size \
            and a.min() >= 0 and a.max() <= np.iinfo(np.int32).max:
        cols = np.empty((4, a.shape[0]), np.int32)
        np.copyto(cols, a.T, casting="unsafe")  # exact: 0 <= every value < 2**31
        if all(cols[d].max() < nvec[d] for d in range(3)) and cols[3].max() < count:
            plan = np.empty((3, a.shape[0]), np.int8)
            np.copyto(plan, cols[:3], casting="unsafe")  # exact: each value < nvec[d] <= 127
            return plan, cols[3]
    plan = as_plan(a[:, :3] if a.ndim == 2 else a, nvec)  # raises for the plan's columns
    return plan, check_creative_column(a[:, 3], count)  # and for the creative's


def marketing_effect(model: CompiledScenario, s: PopulationState, plan: np.ndarray,
                     market: MarketWeek = NO_MARKET, keep_base: bool = False,
                     creative: np.ndarray | None = None) -> Marketing:
    """Effect of ``plan`` (3, n) int8 on this week's purchase rate, from the current state.

    ``keep_base``: also return the log multiplier of doing nothing (for treatment effects).
    ``creative``: (n,) int32 creative ids (``action[:, 3]``), required with a catalogue.
    """
    if model.catalogue is not None and creative is None:
        raise ValueError("this scenario has a creative catalogue (creative.count >= 1): the action "
                         "needs its 4th column action[:, 3], the creative id")
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
    # Rows whose chosen channel reaches them, by one dense pass per channel and a single
    # nonzero (not a nonzero, a gather and three boolean selections over the contacted rows).
    reach = np.zeros(n, bool)
    if chan.any():
        hit = np.empty(n, bool)
        for j in range(model.n_channels):
            np.equal(chan, np.int8(j + 1), out=hit)
            hit &= s.optin[j]
            reach |= hit
    rows = np.flatnonzero(reach)
    c = (chan[rows] - 1).astype(np.intp)
    flat = c * n + rows  # 1-D indices into the (C, n) channel arrays: much faster than 2-D pairs
    f_before = s.fatigue.reshape(-1)[flat]

    offer = plan[1][rows]
    discount = np.zeros(n, F4)
    d = model.offer_discount[offer]
    # integer indices, not boolean masks: on a random mask, numpy's boolean indexing is ~5x slower
    # than a nonzero and a gather (the same elements, in the same order)
    has_d = np.flatnonzero(d > 0)
    dr = rows[has_d]
    if dr.size:
        d = d[has_d]
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
    if md.newcomer_boost > 0:  # capped like the responsiveness itself (rapport.envs.state.RESPONSE_CAP)
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
    eff = None
    if model.catalogue is not None and rows.size:
        eff, creep = _creative_terms(model, s, rows, creative[rows], lift, log_mult, creep)
    if market.attention != 1.0:  # awareness gates attention to the message (rapport.envs.attention)
        lift *= F4(market.attention)
    log_mult[rows] += lift

    level = plan[2]
    media_mask = None
    if level.any():
        media_mask = level != 0
        media_mask &= s.optin[model.paid_media]
        mrows = np.flatnonzero(media_mask)
    else:
        mrows = np.zeros(0, np.intp)
    mlevel = level[mrows]
    if mrows.size:
        log_mult[mrows] += s.media_response[mrows] * model.hill[mlevel]
    mk = Marketing(log_mult, rows, c, flat, f_before, offer, discount, mrows, mlevel, creep, base,
                   offset, creative=eff)
    if dense(rows.size, n):  # int8 × bool: the code where reached, else 0 (exact)
        mk.channel_code = chan * reach
        mk.offer_code = plan[1] * reach
    return mk


def select(mask: np.ndarray, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """float32 ``values`` where ``mask``, else ``fill``, by bitwise and/or: exactly
    ``np.where(mask, values, fill)`` (also for inf, nan and −0.0), ~5-10x faster than it (or a
    masked assignment) on a random mask, where those branch on every element."""
    bits = mask.astype(np.uint32)
    np.negative(bits, out=bits)  # 1 -> 0xFFFFFFFF
    fill_bits = np.float32(fill).view(np.uint32)
    if fill_bits:
        rest = np.bitwise_not(bits)
        rest &= fill_bits
        bits &= values.view(np.uint32)
        bits |= rest
    else:
        bits &= values.view(np.uint32)
    return bits.view(F4)


def _creative_terms(model: CompiledScenario, s: PopulationState, rows: np.ndarray, ids: np.ndarray,
                    lift: np.ndarray, log_mult: np.ndarray, creep: np.ndarray | None
                    ) -> tuple[CreativeEffect, np.ndarray | None]:
    """Scale the contact ``lift`` (k,) of ``rows`` by the creative's match and wear-out and, with
    privacy on, its creepiness (in place, :mod:`rapport.envs.creative`); returns the effect and
    the contacts' creepiness (offer + creative)."""
    sc = model.scenario
    cm = sc.creative
    eff = creative_effect(model.catalogue, cm.match_strength, cm.wear_rate, s.creative_taste,
                          s.creative_ids, s.creative_stock, s.creative_last, s.week, rows, ids)
    mult = eff.log_mult.copy()
    if sc.privacy.enabled:
        pv = sc.privacy
        c_c = model.catalogue.creep_scale[ids] * (F4(1.0) - s.trust[rows])
        c_c *= F4(1.0 - pv.control)
        c_c /= F4(1.0) + s.T[rows] * F4(1.0 / pv.familiarity_weeks)
        mult -= c_c
        log_mult[rows] -= F4(pv.reactance) * c_c
        creep = c_c if creep is None else creep + c_c
    np.exp(mult, out=mult)
    lift *= mult
    np.minimum(lift, F4(RESPONSE_CAP), out=lift)
    return eff, creep


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
