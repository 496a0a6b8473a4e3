"""Preference and rate drift (Ornstein-Uhlenbeck) and life events (customer-model.md §2.10)."""

from __future__ import annotations

import numpy as np
from scipy import special

from rapport.envs import noise
from rapport.envs.marketing import F4, CompiledScenario
from rapport.envs.noise import Mechanism as M
from rapport.envs.state import PopulationState


def drift(model: CompiledScenario, s: PopulationState) -> None:
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
