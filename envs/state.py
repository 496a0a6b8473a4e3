"""The population as a struct of arrays, and the draw of new customers.

One row per customer. Per-channel arrays have shape (n_channels, n) so each channel is one
contiguous row. Latent truth (rate, drop-out probability, alive, responsiveness, preferences,
reference price, stocks) lives here next to the observable history (x, t_x, T, spend, contact
and offer history); only :mod:`rapport.envs.observation` decides what an agent sees.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from rapport.envs import creative, noise
from rapport.envs.noise import Mechanism as M
from rapport.envs.samplers import (
    beta_exact,
    beta_quantile,
    gamma_exact,
    gamma_quantile,
    poisson_quantile,
)
from rapport.envs.scenario import Scenario

NEVER = np.int16(-10000)
"""Sentinel week for "never contacted / never offered"."""
RESPONSE_CAP = 2.5
"""Cap on a contact's log-rate lift (×12 at most): the log-normal tail would otherwise give a
handful of customers million-fold responses."""


@dataclass
class PopulationState:
    """Struct of arrays over ``n`` customers (shapes in comments; C channels, K categories)."""

    customer_id: np.ndarray  # (n,) int64 — global customer index (keys the random streams)
    episode: np.ndarray  # (n,) uint32 — how many times this slot was reset
    key: np.ndarray  # (n,) uint32 — random-stream key of (seed, customer, episode)
    week: np.ndarray  # (n,) int16 — weeks since this row's episode started
    # latent purchase process (BG/NBD + Gamma-Gamma)
    rate: np.ndarray  # (n,) float32 — base weekly purchase rate λ
    p_drop: np.ndarray  # (n,) float32 — drop-out probability after a repeat purchase
    alive: np.ndarray  # (n,) bool — latent; never observed
    spend_rate: np.ndarray  # (n,) float32 — Gamma-Gamma ν (mean spend p/ν)
    # observable history (RFM)
    x: np.ndarray  # (n,) float32 — repeat purchases
    t_x: np.ndarray  # (n,) float32 — tenure at last purchase, weeks
    T: np.ndarray  # (n,) float32 — tenure, weeks since first purchase
    spend_total: np.ndarray  # (n,) float32 — net revenue over all x + 1 purchases
    # channels
    fatigue: np.ndarray  # (C, n) float32 — fatigue stock per channel, >= 0
    optin: np.ndarray  # (C, n) bool — reachable on that channel; opt-out is permanent
    response: np.ndarray  # (C, n) float32 — β: log-rate lift of a fresh contact (latent)
    contact_bits: np.ndarray  # (C, n) uint8 — delivered contacts in the last 8 weeks, bit 0 = this week
    last_contact: np.ndarray  # (C, n) int16 — row week of the last delivered contact, or NEVER
    media_response: np.ndarray  # (n,) float32 — lift of saturated paid media (latent)
    # offers and price memory (latent)
    ref_price: np.ndarray  # (n,) float32 — reference price as a fraction of list price
    conditioning: np.ndarray  # (n,) float32 — deal-conditioning stock
    pantry: np.ndarray  # (n,) float32 — stockpiled discounted purchases
    satisfaction: np.ndarray  # (n,) float32 — from service gestures
    category_pref: np.ndarray  # (K, n) float32 — hidden category preference shares, sum 1
    offer_bits: np.ndarray  # (n,) uint8 — delivered offers in the last 8 weeks
    redeem_bits: np.ndarray  # (n,) uint8 — weeks with a redeemed discount, last 8 weeks
    last_offer: np.ndarray  # (n,) int16 — row week of the last delivered offer, or NEVER
    stage: np.ndarray  # (n,) int8 — lifecycle stage code (rapport.envs.observation.STAGES, PROSPECT)
    belief: np.ndarray  # (n,) int8 — the firm's guess of the favourite category (observable)
    # Mechanisms that can be off hold arrays of length 0 when off (they cost no memory):
    prospect: np.ndarray  # (n,) bool — has not bought yet (prospects.share > 0)
    rate_drift: np.ndarray  # (n,) float32 — OU log-rate deviation z (drift.rate_sigma > 0)
    taste_drift: np.ndarray  # (K, n) float32 — OU log-taste deviations (drift.preference_sigma > 0)
    trust: np.ndarray  # (n,) float32 — privacy tolerance in [0, 1] (privacy.enabled)
    online_share: np.ndarray  # (n,) float32 — share of orders made online (omnichannel.enabled)
    # creative catalogue (creative.count >= 1; rapport.envs.creative):
    creative_taste: np.ndarray  # (A, n) int16, person-major (F order) — latent taste q = Pᵀt in fixed point
    creative_ids: np.ndarray  # (K, n) int32 — creatives in the wear-out memory, -1 = empty slot
    creative_stock: np.ndarray  # (K, n) float32 — their exposure stocks at creative_last
    creative_last: np.ndarray  # (n,) int16 — row week of the last creative exposure, or NEVER

    @property
    def n(self) -> int:
        return int(self.rate.shape[0])

    def nbytes(self) -> int:
        """Bytes of state held for the population."""
        return int(sum(getattr(self, f.name).nbytes for f in fields(self)))

    def copy(self) -> PopulationState:
        # order="K" keeps person-major (F-ordered) arrays person-major (creative_taste)
        return PopulationState(**{f.name: getattr(self, f.name).copy(order="K") for f in fields(self)})

    def take(self, rows: np.ndarray) -> PopulationState:
        """A new state holding only ``rows`` (used for sub-populations and tests)."""
        out = {}
        n = self.n
        for f in fields(self):
            a = getattr(self, f.name)
            if a.shape[-1] != n:  # a mechanism that is off
                out[f.name] = a.copy()
            elif a.ndim == 2 and a.flags.f_contiguous and not a.flags.c_contiguous:
                out[f.name] = np.asfortranarray(a.T[rows].T)  # person-major stays person-major
            else:
                out[f.name] = a[:, rows].copy() if a.ndim == 2 else a[rows].copy()
        return PopulationState(**out)


def allocate(scenario: Scenario, n: int) -> PopulationState:
    """Zeroed state for ``n`` customers (call :func:`draw_customers` to fill it)."""
    C = len(scenario.channels)
    K = scenario.offers.n_categories
    f4, z = np.float32, np.zeros
    return PopulationState(
        customer_id=z(n, np.int64), episode=z(n, np.uint32), key=z(n, np.uint32),
        week=z(n, np.int16), rate=z(n, f4), p_drop=z(n, f4), alive=z(n, bool),
        spend_rate=z(n, f4), x=z(n, f4), t_x=z(n, f4), T=z(n, f4), spend_total=z(n, f4),
        fatigue=z((C, n), f4), optin=z((C, n), bool), response=z((C, n), f4),
        contact_bits=z((C, n), np.uint8), last_contact=np.full((C, n), NEVER, np.int16),
        media_response=z(n, f4), ref_price=np.ones(n, f4), conditioning=z(n, f4),
        pantry=z(n, f4), satisfaction=z(n, f4), category_pref=z((K, n), f4),
        offer_bits=z(n, np.uint8), redeem_bits=z(n, np.uint8),
        last_offer=np.full(n, NEVER, np.int16), stage=z(n, np.int8), belief=z(n, np.int8),
        prospect=z(n if scenario.prospects.share > 0 else 0, bool),
        rate_drift=z(n if scenario.drift.rate_sigma > 0 else 0, f4),
        taste_drift=z((K, n if scenario.drift.preference_sigma > 0 else 0), f4),
        trust=z(n if scenario.privacy.enabled else 0, f4),
        online_share=z(n if scenario.omnichannel.enabled else 0, f4),
        **creative.state_arrays(scenario.creative, K, n),
    )


def effective_tastes(scenario: Scenario, s: PopulationState, rows: np.ndarray) -> np.ndarray:
    """Category preference shares (K, len(rows)) today: the base taste, tilted by taste drift."""
    w = s.category_pref[:, rows]
    if s.taste_drift.shape[1] == 0:
        return w
    w = w * np.exp(s.taste_drift[:, rows])
    w /= w.sum(axis=0)
    return w


def guess_favourite(scenario: Scenario, s: PopulationState, rows: np.ndarray, n_seen: np.ndarray,
                    week: np.ndarray | int, mechanism: int) -> np.ndarray:
    """The firm's guess (int8) of the favourite category of ``rows`` after ``n_seen`` observed
    orders: right with probability 1 − (1 − 1/K)·exp(−n_seen / belief_orders), else one of the
    other categories at random."""
    K = scenario.offers.n_categories
    top = favourite(effective_tastes(scenario, s, rows))
    if K == 1:
        return top
    keys = s.key[rows]
    right = np.asarray(n_seen, np.float32) * np.float32(-1.0 / scenario.offers.belief_orders)
    np.exp(right, out=right)
    right *= np.float32(-(1.0 - 1.0 / K))
    right += np.float32(1.0)
    wrong = noise.uniform(keys, week, mechanism, 0) >= right
    shift = np.minimum((noise.uniform(keys, week, mechanism, 1) * (K - 1)).astype(np.int8), K - 2)
    shift += np.int8(1)
    shift *= wrong  # 0 where the guess is right
    top += shift
    top[top >= K] -= np.int8(K)
    return top


def favourite(w: np.ndarray) -> np.ndarray:
    """Row-wise argmax (int8) of a (K, m) taste matrix; first index wins ties, like np.argmax.
    (K compares over contiguous rows: several times faster than a strided argmax.)"""
    top = np.zeros(w.shape[1], np.int8)
    best = w[0].copy()
    for k in range(1, w.shape[0]):
        better = w[k] > best
        top[better] = k
        np.maximum(best, w[k], out=best)
    return top


def draw_customers(scenario: Scenario, state: PopulationState, rows: np.ndarray, seed: int) -> None:
    """(Re)draw the customers in ``rows`` for their current ``customer_id`` and ``episode``.

    Each customer's tenure is uniform on ``scenario.initial_tenure_weeks``; their history over
    that tenure is drawn exactly from the purchase model and their spend over x + 1 purchases
    from Gamma-Gamma:

    * BG/NBD (``after_purchase``): N ~ Poisson(λT) purchase opportunities, death after repeat
      purchase J ~ Geometric(p), x = min(N, J), t_x = T·Beta(x, N − x + 1);
    * sBG (``weekly``): cancellation at the end of week D ~ Geometric(θ), active time
      A = min(T, D), x ~ Poisson(λA), t_x = A·U^(1/x) (the last of x uniform purchase times).

    Prospects (``prospects.share``) have no history and are reachable only through paid media.
    Only draws keyed by the row's own (seed, customer, episode) are used, so a row is the same
    customer in any population.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return
    pm = scenario.purchase
    # A contiguous block (a full reset) is written through a slice: much cheaper than a scatter.
    sel = slice(int(rows[0]), int(rows[-1]) + 1) \
        if rows[-1] - rows[0] == rows.size - 1 and np.all(np.diff(rows) == 1) else rows
    key = noise.row_keys(seed, state.customer_id[rows], state.episode[rows])
    state.key[sel] = key
    state.week[sel] = 0

    def u64(mech: int, draw: int = 0) -> np.ndarray:
        return noise.uniform64(key, 0, mech, draw)

    lo, hi = scenario.initial_tenure_weeks
    tenure = lo + (hi - lo) * u64(M.INIT_TENURE)
    lam = gamma_quantile(pm.r)(u64(M.INIT_RATE)) / pm.alpha
    p = beta_quantile(pm.a, pm.b)(u64(M.INIT_DROPOUT))
    nu = gamma_quantile(pm.q)(u64(M.INIT_SPEND_RATE)) / pm.gamma

    with np.errstate(divide="ignore"):
        death_at = np.ceil(np.log(u64(M.INIT_HISTORY_DEATH)) / np.log1p(-np.minimum(p, 1 - 1e-12)))
    death_at = np.maximum(death_at, 1)
    if pm.contractual:
        active = np.minimum(tenure, death_at)
        alive = death_at > tenure
        x = poisson_quantile(lam * active, u64(M.INIT_HISTORY_COUNT))
        t_x = np.zeros_like(tenure)
        has = x > 0
        t_x[has] = active[has] * u64(M.INIT_HISTORY_LAST)[has] ** (1.0 / x[has])
    else:
        n_opp = poisson_quantile(lam * tenure, u64(M.INIT_HISTORY_COUNT))
        x = np.minimum(n_opp, death_at)
        alive = death_at > n_opp
        t_x = _last_of(key, x, n_opp, tenure)
    spend = gamma_exact(key, 0, M.INIT_HISTORY_SPEND, pm.p * (x + 1.0)) / nu

    if scenario.omnichannel.enabled:
        om = scenario.omnichannel
        share = beta_quantile(om.online_share_mean * om.online_share_concentration,
                              (1 - om.online_share_mean) * om.online_share_concentration)(
            u64(M.INIT_ONLINE_SHARE))
        state.online_share[sel] = share
        if not om.observe_offline:
            x, t_x, spend = _online_history(key, x, t_x, share, nu, pm.p)

    state.rate[sel] = lam
    state.p_drop[sel] = p
    state.alive[sel] = alive
    state.spend_rate[sel] = nu
    state.x[sel] = x
    state.t_x[sel] = t_x
    state.T[sel] = tenure
    state.spend_total[sel] = spend

    for c, ch in enumerate(scenario.channels):
        z = noise.normal(key, 0, M.INIT_RESPONSE + c)
        state.response[c, sel] = np.minimum(ch.response_median * np.exp(ch.response_sigma * z),
                                             RESPONSE_CAP)
    state.optin[:, sel] = initial_optin(scenario, key)
    media = scenario.media
    state.media_response[sel] = np.minimum(media.response_median * np.exp(
        media.response_sigma * noise.normal(key, 0, M.INIT_MEDIA_RESPONSE)), RESPONSE_CAP)

    K = scenario.offers.n_categories
    taste = gamma_quantile(scenario.offers.category_concentration)
    g = np.stack([taste(u64(M.INIT_CATEGORY + k)) for k in range(K)])
    g = np.maximum(g, 1e-30)
    state.category_pref[:, sel] = g / g.sum(axis=0)
    cat = creative.scenario_catalogue(scenario)
    if cat is not None:  # taste from the row's own noise and its (base) category tastes
        state.creative_taste[:, sel] = creative.draw_tastes(cat, key, state.category_pref[:, sel])
        state.creative_ids[:, sel] = creative.NO_CREATIVE
        state.creative_stock[:, sel] = 0
        state.creative_last[sel] = creative.NEVER

    state.fatigue[:, sel] = 0
    state.contact_bits[:, sel] = 0
    state.last_contact[:, sel] = NEVER
    state.ref_price[sel] = 1
    state.conditioning[sel] = 0
    state.pantry[sel] = 0
    state.satisfaction[sel] = 0
    state.offer_bits[sel] = 0
    state.redeem_bits[sel] = 0
    state.last_offer[sel] = NEVER
    state.stage[sel] = 0

    dm = scenario.drift
    if dm.rate_sigma > 0:
        state.rate_drift[sel] = dm.rate_sigma * noise.normal(key, 0, M.INIT_DRIFT_RATE)
    if dm.preference_sigma > 0:
        for k in range(K):
            state.taste_drift[k, sel] = dm.preference_sigma * noise.normal(key, 0, M.INIT_DRIFT_PREF, k)
    if scenario.privacy.enabled:
        pv = scenario.privacy
        state.trust[sel] = beta_quantile(pv.trust_a, pv.trust_b)(u64(M.INIT_TRUST))

    n_seen = x + 1
    if scenario.prospects.share > 0:
        pros = u64(M.INIT_PROSPECT) < scenario.prospects.share
        state.prospect[sel] = pros
        pr = rows[pros]
        state.alive[pr] = False  # not a customer yet: no purchases until conversion
        state.x[pr] = 0
        state.t_x[pr] = 0
        state.T[pr] = 0
        state.spend_total[pr] = 0
        state.optin[:, pr] = False
        state.optin[scenario.channel_names.index("paid_media"), pr] = True
        n_seen = np.where(pros, 0, n_seen)
    state.belief[sel] = guess_favourite(scenario, state, sel, n_seen, 0, M.INIT_BELIEF)


def _last_of(key: np.ndarray, x: np.ndarray, n_opp: np.ndarray, tenure: np.ndarray) -> np.ndarray:
    """BG/NBD time of the last of x purchases: the x-th of n_opp uniform opportunity times on
    (0, tenure), tenure·Beta(x, n_opp − x + 1). Customers who bought at every opportunity
    (x = n_opp) take the inverse CDF U^(1/x) of their ``INIT_HISTORY_LAST`` uniform; the others
    (they died at purchase x) an exact Beta from stream blocks 1 and 2 of that mechanism."""
    t_x = np.zeros_like(tenure)
    has = np.flatnonzero(x > 0)
    last = has[x[has] == n_opp[has]]
    t_x[last] = tenure[last] * noise.uniform64(key[last], 0, M.INIT_HISTORY_LAST) ** (1.0 / x[last])
    died = has[x[has] < n_opp[has]]
    if died.size:
        xd = x[died].astype(np.float64)
        t_x[died] = tenure[died] * beta_exact(key[died], 0, M.INIT_HISTORY_LAST, xd,
                                              n_opp[died] - xd + 1.0)
    return t_x


def initial_optin(scenario: Scenario, key: np.ndarray) -> np.ndarray:
    """Consent per channel (C, len(key)) as given with the first order. Every customer is
    reachable somewhere (they left an address or an e-mail): the unreachable get the most common
    channel."""
    shares = np.array([c.optin_share for c in scenario.channels])
    optin = np.stack([noise.uniform64(key, 0, M.INIT_OPTIN + c) < ch.optin_share
                      for c, ch in enumerate(scenario.channels)])
    optin[int(np.argmax(shares)), ~optin.any(axis=0)] = True
    return optin


def _online_history(key: np.ndarray, x: np.ndarray, t_x: np.ndarray, share: np.ndarray,
                    nu: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The part of a drawn history the firm sees when it sees online orders only.

    Each of the x repeat purchases is online with probability ω (k ~ Binomial(x, ω)); the online
    ones are a uniformly random k-subset, so the last of them is purchase number M with
    P(M ≤ m) = C(m, k)/C(x, k); the purchases before the last (at t_x) are uniform on (0, t_x), so
    purchase M < x happened at t_x·Beta(M, x − M). The seen spend is that of the first order plus
    the k online repeats: Gamma(p·(k + 1), ν).
    """
    k = noise.binomial_inverse(x, share, noise.uniform64(key, 0, M.INIT_ONLINE_COUNT))
    last = x.astype(np.int64).copy()  # position of the last online purchase
    u = noise.uniform64(key, 0, M.INIT_ONLINE_LAST, 0)
    cdf = np.ones(x.shape)
    active = np.flatnonzero((k > 0) & (k < x))
    while active.size:  # walk down from m = x while P(M <= m - 1) still covers u
        m = last[active]
        below = cdf[active] * (m - k[active]) / m
        step = below >= u[active]
        cdf[active[step]] = below[step]
        last[active[step]] -= 1
        active = active[step]
    t_seen = np.where(k > 0, t_x, 0.0)
    early = np.flatnonzero((k > 0) & (last < x))
    if early.size:
        t_seen[early] = t_x[early] * beta_exact(key[early], 0, M.INIT_ONLINE_LAST, last[early],
                                                x[early] - last[early])
    spend = gamma_exact(key, 0, M.INIT_ONLINE_SPEND, p * (k + 1.0)) / nu
    return k.astype(np.float64), t_seen, spend


