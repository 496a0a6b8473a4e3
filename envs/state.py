"""The population as a struct of arrays, and the draw of new customers.

One row per customer. Per-channel arrays have shape (n_channels, n) so each channel is one
contiguous row. Latent truth (rate, drop-out probability, alive, responsiveness, preferences,
reference price, stocks) lives here next to the observable history (x, t_x, T, spend, contact
and offer history); only :mod:`envs.observation` decides what an agent sees.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy import special

from envs import noise
from envs.noise import Mechanism as M
from envs.scenario import Scenario

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
    stage: np.ndarray  # (n,) int8 — lifecycle stage code (envs.observation.STAGES)

    @property
    def n(self) -> int:
        return int(self.rate.shape[0])

    def nbytes(self) -> int:
        """Bytes of state held for the population."""
        return int(sum(getattr(self, f.name).nbytes for f in fields(self)))

    def copy(self) -> PopulationState:
        return PopulationState(**{f.name: getattr(self, f.name).copy() for f in fields(self)})

    def take(self, rows: np.ndarray) -> PopulationState:
        """A new state holding only ``rows`` (used for sub-populations and tests)."""
        out = {}
        for f in fields(self):
            a = getattr(self, f.name)
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
        last_offer=np.full(n, NEVER, np.int16), stage=z(n, np.int8),
    )


def draw_customers(scenario: Scenario, state: PopulationState, rows: np.ndarray, seed: int) -> None:
    """(Re)draw the customers in ``rows`` for their current ``customer_id`` and ``episode``.

    Each customer's tenure is uniform on ``scenario.initial_tenure_weeks``; their history over
    that tenure is drawn exactly from BG/NBD (N ~ Poisson(λT) purchase opportunities, death after
    repeat purchase J ~ Geometric(p), x = min(N, J), t_x = T·Beta(x, N − x + 1)) and their spend
    over x + 1 purchases from Gamma-Gamma. Only draws keyed by the row's own (seed, customer,
    episode) are used, so a row is the same customer in any population.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return
    pm = scenario.purchase
    key = noise.row_keys(seed, state.customer_id[rows], state.episode[rows])
    state.key[rows] = key
    state.week[rows] = 0

    def u64(mech: int) -> np.ndarray:
        return noise.uniform64(key, 0, mech)

    lo, hi = scenario.initial_tenure_weeks
    tenure = lo + (hi - lo) * u64(M.INIT_TENURE)
    lam = special.gammaincinv(pm.r, u64(M.INIT_RATE)) / pm.alpha
    p = special.betaincinv(pm.a, pm.b, u64(M.INIT_DROPOUT))
    nu = special.gammaincinv(pm.q, u64(M.INIT_SPEND_RATE)) / pm.gamma

    n_opp = noise.poisson_inverse(lam * tenure, u64(M.INIT_HISTORY_COUNT))
    with np.errstate(divide="ignore"):
        death_at = np.ceil(np.log(u64(M.INIT_HISTORY_DEATH)) / np.log1p(-np.minimum(p, 1 - 1e-12)))
    death_at = np.maximum(death_at, 1)
    x = np.minimum(n_opp, death_at)
    alive = death_at > n_opp
    t_x = np.zeros_like(tenure)
    has = x > 0
    t_x[has] = tenure[has] * special.betaincinv(
        x[has], n_opp[has] - x[has] + 1, u64(M.INIT_HISTORY_LAST)[has])
    spend = special.gammaincinv(pm.p * (x + 1), u64(M.INIT_HISTORY_SPEND)) / nu

    state.rate[rows] = lam
    state.p_drop[rows] = p
    state.alive[rows] = alive
    state.spend_rate[rows] = nu
    state.x[rows] = x
    state.t_x[rows] = t_x
    state.T[rows] = tenure
    state.spend_total[rows] = spend

    shares = np.array([c.optin_share for c in scenario.channels])
    for c, ch in enumerate(scenario.channels):
        z = noise.normal(key, 0, M.INIT_RESPONSE + c)
        state.response[c, rows] = np.minimum(ch.response_median * np.exp(ch.response_sigma * z),
                                             RESPONSE_CAP)
        state.optin[c, rows] = u64(M.INIT_OPTIN + c) < ch.optin_share
    # Every customer in the base is reachable somewhere at the start (they gave an address or an
    # e-mail with their first order): the unreachable get the most common channel.
    none = ~state.optin[:, rows].any(axis=0)
    if np.any(none):
        state.optin[int(np.argmax(shares)), rows[none]] = True
    media = scenario.media
    state.media_response[rows] = np.minimum(media.response_median * np.exp(
        media.response_sigma * noise.normal(key, 0, M.INIT_MEDIA_RESPONSE)), RESPONSE_CAP)

    K = scenario.offers.n_categories
    g = np.stack([special.gammaincinv(scenario.offers.category_concentration,
                                      u64(M.INIT_CATEGORY + k)) for k in range(K)])
    g = np.maximum(g, 1e-30)
    state.category_pref[:, rows] = g / g.sum(axis=0)

    state.fatigue[:, rows] = 0
    state.contact_bits[:, rows] = 0
    state.last_contact[:, rows] = NEVER
    state.ref_price[rows] = 1
    state.conditioning[rows] = 0
    state.pantry[rows] = 0
    state.satisfaction[rows] = 0
    state.offer_bits[rows] = 0
    state.redeem_bits[rows] = 0
    state.last_offer[rows] = NEVER
    state.stage[rows] = 0
