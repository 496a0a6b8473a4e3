"""Latent drop-out hazards beyond the BG/NBD coin: sBG weekly churn, reminder backfire and
annoyance ("do not disturb"). Each either samples drop-out from the row's own counter-based draws
or, given ``survival`` weights (lookahead), multiplies them by the probability of staying.
"""

from __future__ import annotations

import numpy as np

from rapport.envs import noise
from rapport.envs.marketing import F4, CompiledScenario
from rapport.envs.noise import Mechanism as M
from rapport.envs.state import PopulationState


def drop(s: PopulationState, rows: np.ndarray, prob: np.ndarray, stream: int, dropped: np.ndarray,
          survival: np.ndarray | None) -> None:
    """Live ``rows`` drop out with probability ``prob`` (or, with ``survival``, are weighted by
    the probability that they do not)."""
    if survival is not None:
        survival[rows] *= 1.0 - prob.astype(np.float64)
    else:
        dropped[rows[np.flatnonzero(noise.uniform(s.key[rows], s.week[rows], stream) < prob)]] = True


def weekly_churn(model: CompiledScenario, s: PopulationState, dropped: np.ndarray,
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


def reminder(model: CompiledScenario, s: PopulationState, rows: np.ndarray, dropped: np.ndarray,
              survival: np.ndarray | None = None) -> None:
    """A delivered contact makes a live customer reconsider: drop out with probability
    reminder_dropout × p_i / mean p (Ascarza et al. 2016)."""
    live = rows[np.flatnonzero(s.alive[rows])]  # integer indexing: faster than a boolean mask
    if live.size == 0:
        return
    r = model.scenario.media.reminder_dropout
    prob = np.minimum(F4(r / model.mean_dropout) * s.p_drop[live], F4(1.0))
    drop(s, live, prob, M.REMINDER, dropped, survival)


def annoyance(model: CompiledScenario, s: PopulationState, dropped: np.ndarray,
               survival: np.ndarray | None = None) -> None:
    """'Do not disturb': total fatigue above the tolerance drives latent drop-out."""
    md = model.scenario.media
    if md.annoyance_hazard == 0:
        return
    total = s.fatigue.sum(axis=0)
    rows = np.flatnonzero(total > md.annoyance_tolerance)
    rows = rows[np.flatnonzero(s.alive[rows])]
    if rows.size:
        h = -np.expm1(-md.annoyance_hazard * (total[rows] - md.annoyance_tolerance))
        drop(s, rows, h, M.ANNOYANCE, dropped, survival)
