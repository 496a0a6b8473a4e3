"""Simulate a real cohort through the env with marketing off, as a transaction log.

Step 3 of the calibration (:mod:`rapport.envs.calibration`): ``K`` replicate copies of the cohort run
through :class:`envs.PopulationEnv`; every simulated customer starts as a fresh customer
(tenure 0) and is born on the real first-purchase day of the customer it copies. Its purchases
are turned back into a transaction log at day resolution, so that real and simulated logs are
summarised by the same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rapport.envs.population_env import PopulationEnv
from rapport.envs.scenario import Scenario

if TYPE_CHECKING:  # rapport.envs.calibration imports this module
    from rapport.envs.calibration import Cohort

__all__ = ["simulate_cohort"]

_DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class _WeeklyPurchases:
    """Every (simulated customer, week) with an order, as flat arrays of equal length."""

    row: np.ndarray  # int64 — simulated customer (env row)
    week: np.ndarray  # int64 — tenure week of the purchases (0 = the week after the first purchase)
    orders: np.ndarray  # int64 — orders that week, >= 1
    revenue: np.ndarray  # float64 — their total value, $
    last_time: np.ndarray  # float64 — within-week time of the last order, in (0, 1]


def _run_env(scenario: Scenario, n: int, weeks: int, seed: int) -> tuple[np.ndarray, _WeeklyPurchases]:
    """Step ``n`` fresh customers ``weeks`` weeks with marketing off; return first-purchase
    values and every week's orders."""
    fresh = replace(scenario, initial_tenure_weeks=(0.0, 0.0))
    env = PopulationEnv(num_envs=n, scenario=fresh, horizon=weeks, include_latent=False)
    env.reset(seed=seed)
    state = env.sim.state
    # At tenure 0 nobody has repeated yet, so the whole spend so far is the first purchase.
    first_value = state.spend_total.astype(np.float64)
    no_marketing = np.zeros((n, 3), np.int64)
    parts: list[tuple[np.ndarray, ...]] = []
    for week in range(weeks):
        _, _, _, _, info = env.step(no_marketing)
        buyers = np.flatnonzero(info["orders"])
        # The step sets t_x = (tenure at the start of the week) + time of the week's last order.
        last = np.clip(state.t_x[buyers].astype(np.float64) - week, 1e-9, 1.0)
        parts.append((buyers, np.full(buyers.size, week), info["orders"][buyers],
                      info["revenue"][buyers], last))
    row, week, orders, revenue, last = (np.concatenate(p) for p in zip(*parts, strict=True))
    return first_value, _WeeklyPurchases(
        row.astype(np.int64), week.astype(np.int64), orders.astype(np.int64),
        revenue.astype(np.float64), last,
    )


def _orders_in_time(
    weekly: _WeeklyPurchases, spend_shape: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expand weekly totals into single orders: (row, tenure in weeks, value).

    The env reports each week's order count, total value and the time of the last order. Given
    those, the other orders of the week are uniform before the last one (Poisson arrivals), and
    the values split as total × Dirichlet(p, ..., p) (the orders are i.i.d. Gamma(p, ν)), so the
    expansion adds no modelling assumption. Only weeks with two or more orders are affected.
    """
    m = weekly.orders
    total = int(m.sum())
    first = np.cumsum(m) - m  # index of each week's first order in the expanded arrays
    position = np.arange(total) - np.repeat(first, m)
    is_last = position == np.repeat(m - 1, m)
    last_time = np.repeat(weekly.last_time, m)
    within = np.where(is_last, last_time, last_time * rng.random(total))
    share = rng.gamma(spend_shape, size=total)
    share /= np.repeat(np.add.reduceat(share, first), m)
    return (
        np.repeat(weekly.row, m),
        np.repeat(weekly.week, m) + within,
        np.repeat(weekly.revenue, m) * share,
    )


def simulate_cohort(
    scenario: Scenario, cohort: Cohort, replicates: int = 100, seed: int = 0
) -> pd.DataFrame:
    """Simulate ``replicates`` copies of the cohort with marketing off, as a transaction log.

    Parameters
    ----------
    scenario : Scenario
        The (calibrated) scenario; its initial tenure is replaced by 0 (a fresh cohort).
    cohort : Cohort
        The real cohort: its first-purchase days are reused by every replicate.
    replicates : int
        Number of copies K; the env holds K × n customers in one population.
    seed : int
        Master seed, split into the env's seed and the seed of the within-day/within-week draws.

    Returns
    -------
    pandas.DataFrame
        Customer-days ``customer_id`` (env row; replicate ``k`` of real customer ``i`` is row
        ``k n + i``), ``date``, ``amount``, up to the holdout end: each customer's first
        purchase on their real first day, then their simulated repeat purchases.

    Notes
    -----
    Customers are independent with marketing off and their noise is keyed by their index, so
    a customer born ``b`` days after the cohort start is simulated from week 0 and their
    history shifted by ``b`` days. The first purchase happens at a uniform time within its day;
    an order's day is ``birth day + floor(birth time + 7 × tenure)``. Orders on the same day as
    another order of the customer (the first purchase included) merge into one customer-day,
    as in the real log.
    """
    n = len(cohort.summary)
    env_seed, order_seed = np.random.SeedSequence(seed).spawn(2)
    birth_day = ((cohort.summary["first_purchase"] - cohort.start) / _DAY).to_numpy(np.int64)
    holdout_day = int((cohort.holdout_end - cohort.start) / _DAY)
    # Enough weeks that the earliest-born customer reaches the end of the holdout's last day.
    weeks = math.ceil((holdout_day - int(birth_day.min()) + 1) / 7)
    first_value, weekly = _run_env(
        scenario, replicates * n, weeks, int(env_seed.generate_state(1)[0])
    )

    rng = np.random.default_rng(order_seed)
    row, tenure, value = _orders_in_time(weekly, scenario.purchase.p, rng)
    births = np.tile(birth_day, replicates)
    birth_time = rng.random(births.size)
    day = births[row] + np.floor(birth_time[row] + 7.0 * tenure).astype(np.int64)
    keep = day <= holdout_day
    days = np.concatenate([births, day[keep]])
    return pd.DataFrame({
        "customer_id": np.concatenate([np.arange(births.size), row[keep]]),
        "date": cohort.start + pd.to_timedelta(days, unit="D"),
        "amount": np.concatenate([first_value, value[keep]]),
    })
