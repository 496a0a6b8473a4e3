"""The simulator behaves like the models it follows: BG/NBD with marketing off, and marketing
mechanisms pointing the right way (customer-model.md §2.1, §2.5, §2.7)."""

import dataclasses

import numpy as np
import pytest
from scipy.special import hyp2f1

import rapport.envs as envs

R, ALPHA, A, B = 0.243, 4.414, 0.793, 2.426


def expected_x(t):
    return (A + B - 1) / (A - 1) * (1 - (ALPHA / (ALPHA + t)) ** R * hyp2f1(R, B, A + B - 1, t / (ALPHA + t)))


def test_marketing_off_matches_bgnbd_closed_forms_at_one_million():
    """A fresh cohort, no marketing, 39 weeks: E[X(39)] and P(X(39)=0) within 4 SE."""
    fresh = dataclasses.replace(envs.get_scenario("retail"), initial_tenure_weeks=(0.0, 0.0))
    n, weeks = 1_000_000, 39
    env = envs.PopulationEnv(num_envs=n, scenario=fresh, horizon=weeks, include_latent=False)
    env.reset(seed=2024)
    zero = np.zeros((n, 3), np.int64)
    for _ in range(weeks):
        env.step(zero)
    x = env.sim.state.x.astype(np.float64)
    se = x.std() / np.sqrt(n)
    assert expected_x(weeks) == pytest.approx(1.1950, abs=0.005)  # 1.1950 at the unrounded fit
    assert abs(x.mean() - expected_x(weeks)) < 4 * se, (x.mean(), expected_x(weeks), se)
    p0 = (ALPHA / (ALPHA + weeks)) ** R
    share0 = np.mean(x == 0)
    assert abs(share0 - p0) < 4 * np.sqrt(p0 * (1 - p0) / n), (share0, p0)


def run_policy(weeks, act, n=20_000, seed=3, scenario="retail"):
    env = envs.PopulationEnv(num_envs=n, scenario=scenario, horizon=weeks)
    env.reset(seed=seed)
    totals = {"profit": 0.0, "orders": 0, "revenue": 0.0, "opt_outs": 0, "cogs": 0.0}
    first_week = None
    for t in range(weeks):
        obs, r, term, trunc, info = env.step(act(t, n))
        totals["profit"] += float(r.sum())
        totals["orders"] += int(info["orders"].sum())
        totals["revenue"] += float(info["revenue"].sum())
        totals["opt_outs"] += int(info["opted_out"].sum())
        if first_week is None:
            first_week = {k: info[k].copy() for k in ("orders", "revenue")} | {"profit": r.copy()}
    return env, totals, first_week


def email_with_offer(offer):
    def act(t, n):
        a = np.zeros((n, 3), np.int64)
        a[:, 0] = 4  # direct mail reaches everyone in the retail preset
        a[:, 1] = offer
        return a
    return act


def test_bigger_discount_raises_orders_and_lowers_margin_per_order():
    results = {}
    for offer in (0, 1, 2, 3):  # none, 10 %, 20 %, 30 %
        _, _, week = run_policy(1, email_with_offer(offer))
        orders = week["orders"].sum()
        margin_per_order = (week["profit"].sum() + 0.60 * 20_000) / orders  # add back mail cost
        results[offer] = (orders, margin_per_order)
    orders = [results[k][0] for k in range(4)]
    margins = [results[k][1] for k in range(4)]
    assert orders == sorted(orders) and orders[3] > 1.3 * orders[0], orders
    assert margins == sorted(margins, reverse=True), margins


def cadence(k, channel=1):
    def act(t, n):
        a = np.zeros((n, 3), np.int64)
        if t % k == 0:
            a[:, 0] = channel
        return a
    return act


def test_weekly_contact_raises_fatigue_and_opt_outs_vs_every_fourth_week():
    env1, tot1, _ = run_policy(24, cadence(1))
    env4, tot4, _ = run_policy(24, cadence(4))
    opted_in = env1.sim.state.optin[0] | env4.sim.state.optin[0]
    assert env1.sim.state.fatigue[0][opted_in].mean() > 2 * env4.sim.state.fatigue[0][opted_in].mean()
    assert tot1["opt_outs"] > 2 * tot4["opt_outs"]


def test_profit_vs_email_cadence_is_inverted_u():
    cadences = [1, 2, 3, 4, 8]
    profit = {k: run_policy(52, cadence(k), n=40_000)[1]["profit"] for k in cadences}
    never = run_policy(52, lambda t, n: np.zeros((n, 3), np.int64), n=40_000)[1]["profit"]
    best = max(profit, key=profit.get)
    assert best not in (1, 8), profit  # interior optimum
    assert profit[best] > profit[1] and profit[best] > profit[8] and profit[best] > never
