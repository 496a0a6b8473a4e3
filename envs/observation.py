"""What the marketer can see: observable features, lifecycle stage and the action mask.

Only observable history goes into the observation (customer-model.md §1): transactions, RFM
summaries, consent, contact and offer history, and the lifecycle stage computed from them.
Latent truth (rate, alive, drop-out propensity, responsiveness, preferences) never does.
"""

from __future__ import annotations

import numpy as np

from rapport.envs.dynamics import CompiledScenario
from rapport.envs.marketing import select
from rapport.envs.scenario import CHANNELS
from rapport.envs.state import PopulationState

F4 = np.float32
CAP_WEEKS = 52
"""Weeks-since features are capped here ("long ago")."""

STAGES: tuple[str, ...] = ("new", "active", "at_risk", "lapsed", "reactivated")
"""Lifecycle stages (customer-model.md §2.8), codes 0..4 in ``state.stage``."""
NEW, ACTIVE, AT_RISK, LAPSED, REACTIVATED = range(5)
PROSPECT = 5
"""Stage code of a prospect (not a customer yet): all ``stage_*`` features are 0 and
``prospect`` is 1 (the code is not in :data:`STAGES` so the one-hot block keeps its width)."""

FEATURE_NAMES: tuple[str, ...] = (
    "recency_weeks", "frequency", "tenure_weeks", "avg_spend", "p_alive",
    *(f"optin_{c}" for c in CHANNELS),
    *(f"weeks_since_contact_{c}" for c in CHANNELS),
    *(f"contacts_4w_{c}" for c in CHANNELS),
    "weeks_since_offer", "offers_8w", "redemptions_8w",
    *(f"stage_{s}" for s in STAGES),
    "horizon_progress",
    "prospect", "brand_awareness", "belief_category",
)
"""Observation columns, in order (the last three were appended in v1; earlier indices are stable)."""

MAX_HORIZON = 20_000
"""Longest episode in weeks (row weeks are int16 and "never" is −10000)."""


def p_alive(model: CompiledScenario, s: PopulationState) -> np.ndarray:
    """BG/NBD P(alive | x, t_x, T) at the scenario's parameters (float32, from observables).

    In a contractual scenario (sBG) cancellation is observed, so it is 1 for subscribers and 0
    after a cancellation.
    """
    pm = model.scenario.purchase
    if pm.contractual:
        return s.alive.astype(F4)
    x, t_x, T = s.x, s.t_x, s.T
    # log of a/(b+x−1)·((α+T)/(α+t_x))^(r+x), in log space so heavy buyers cannot overflow;
    # in place, because fresh temporaries of a million rows cost page faults
    term = T + F4(pm.alpha)
    tmp = t_x + F4(pm.alpha)
    term /= tmp
    np.log(term, out=term)
    np.add(x, F4(pm.r), out=tmp)
    term *= tmp
    np.add(x, F4(pm.b - 1.0), out=tmp)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(F4(pm.a), tmp, out=tmp)
        np.log(tmp, out=tmp)
    term += tmp
    np.clip(term, -80, 80, out=term)
    np.exp(term, out=term)
    term += F4(1.0)
    np.reciprocal(term, out=term)
    return select(x != 0, term, 1.0)


def update_stage(s: PopulationState, alive_prob: np.ndarray, purchased: np.ndarray | None) -> None:
    """Lifecycle stage from observables; ``purchased`` (bool, n) marks this week's buyers.

    A purchase by a lapsed customer makes them *reactivated* until their P(alive) falls back
    below the lapsed threshold.
    """
    prev = s.stage
    # ACTIVE = 1, AT_RISK = 2, LAPSED = 3: count the thresholds crossed
    stage = (alive_prob < F4(0.7)).view(np.int8) + (alive_prob < F4(0.3)).view(np.int8)
    stage += np.int8(ACTIVE)
    if purchased is not None:
        back = (purchased & (prev == LAPSED)) | ((prev == REACTIVATED) & (stage != LAPSED))
        stage[np.flatnonzero(back)] = REACTIVATED  # integer indexing: faster than a boolean mask
    stage[np.flatnonzero((s.x == 0) & (s.T < 8))] = NEW
    if s.prospect.size:
        stage[np.flatnonzero(s.prospect)] = PROSPECT
    s.stage[:] = stage


def observe(model: CompiledScenario, s: PopulationState, alive_prob: np.ndarray,
            horizon: int, out: np.ndarray | None = None, awareness: float = 0.0) -> np.ndarray:
    """Observation matrix (n, len(FEATURE_NAMES)) float32; ``awareness`` is the market's.

    Built feature-major and returned as a transposed view, so each feature is one contiguous
    write (row-major column writes would touch every cache line once per feature). ``out``, a
    (len(FEATURE_NAMES), n) float32 buffer, is filled instead of a new array when given.
    """
    C = model.n_channels
    buf = np.empty((len(FEATURE_NAMES), s.n), F4) if out is None else out
    np.subtract(s.T, s.t_x, out=buf[0])
    buf[1] = s.x
    buf[2] = s.T
    np.divide(s.spend_total, s.x + F4(1.0), out=buf[3])
    buf[4] = alive_prob
    buf[5:5 + C] = s.optin
    # int16 throughout: mixed-dtype broadcasting and table lookups were the slowest lines here
    # (week - NEVER stays below 2**15 because horizons are capped at MAX_HORIZON)
    since = s.week - s.last_contact
    np.minimum(since, np.int16(CAP_WEEKS), out=since)
    buf[5 + C:5 + 2 * C] = since
    buf[5 + 2 * C:5 + 3 * C] = np.bitwise_count(s.contact_bits & np.uint8(0x0F))
    j = 5 + 3 * C
    buf[j] = np.minimum(s.week - s.last_offer, np.int16(CAP_WEEKS))
    buf[j + 1] = np.bitwise_count(s.offer_bits)
    buf[j + 2] = np.bitwise_count(s.redeem_bits)
    j += 3
    for k in range(len(STAGES)):
        np.equal(s.stage, k, out=buf[j + k], casting="unsafe")
    j += len(STAGES)
    buf[j] = s.week
    buf[j] /= F4(horizon)
    if s.prospect.size:
        buf[j + 1] = s.prospect
    else:
        buf[j + 1] = 0
    buf[j + 2] = awareness
    buf[j + 3] = s.belief
    return buf.T


def action_mask(model: CompiledScenario, s: PopulationState) -> np.ndarray:
    """Useful actions, bool (n, sum(nvec)): per-dimension masks concatenated.

    Channel j is useful if the customer is reachable on it; an offer needs some reachable
    channel to carry it; per-person media spend needs the paid-media audience. "No contact",
    "no offer" and "no spend" are always allowed. Actions outside the mask are legal: they cost
    nothing and do nothing.
    """
    n_ch, n_off, n_sp = model.nvec
    mask = np.empty((n_ch + n_off + n_sp, s.n), bool)
    mask[0] = True
    mask[1:n_ch] = s.optin
    mask[n_ch] = True
    any_reach = s.optin.any(axis=0)
    mask[n_ch + 1:n_ch + n_off] = any_reach
    mask[n_ch + n_off] = True
    mask[n_ch + n_off + 1:] = s.optin[model.paid_media]
    return mask.T


def observation_bounds(model: CompiledScenario) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of every feature (for the Box observation space)."""
    F = len(FEATURE_NAMES)
    low = np.zeros(F, F4)
    high = np.full(F, np.inf, F4)
    C = model.n_channels
    high[4:5 + C] = 1.0
    high[5 + C:5 + 2 * C] = CAP_WEEKS
    high[5 + 2 * C:5 + 3 * C] = 4
    j = 5 + 3 * C
    high[j] = CAP_WEEKS
    high[j + 1:j + 3] = 8
    high[j + 3:] = 1.0  # stages, horizon progress, prospect, awareness
    high[-1] = model.scenario.offers.n_categories - 1
    return low, high
