"""The demo job on the embedded defaults: a few marketing policies, one world, paired seeds.

Runs do-nothing, mass e-mail every two weeks, weekly e-mail (over-contacting), a blanket 20 %
discount by e-mail every four weeks, and a uniform-random policy on the same simulated customers
(common random numbers: the same seed gives every policy the same customers and the same luck)
and prints their 52-week KPIs per customer.

    python -m experiments.quickstart --customers 20000 --weeks 52 --seed 0
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np

import envs

Plan = Callable[[int, np.ndarray, np.random.Generator], np.ndarray]


def do_nothing(t: int, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.zeros((obs.shape[0], 3), np.int64)


def email_every(k: int, offer: int = 0) -> Plan:
    def plan(t: int, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        a = np.zeros((obs.shape[0], 3), np.int64)
        if t % k == 0:
            a[:, 0] = 1 + envs.CHANNELS.index("email")
            a[:, 1] = offer
        return a
    return plan


def uniform_random(t: int, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.stack([rng.integers(0, k, obs.shape[0]) for k in (6, 8, 4)], axis=1)


POLICIES: dict[str, Plan] = {
    "do_nothing": do_nothing,
    "email_every_2w": email_every(2),
    "email_weekly": email_every(1),
    "discount20_every_4w": email_every(4, offer=2),
    "uniform_random": uniform_random,
}


def evaluate(plan: Plan, customers: int, weeks: int, seed: int,
             scenario: str = "retail") -> dict[str, float]:
    """Run one policy for ``weeks`` on ``customers`` and return its per-customer KPIs."""
    env = envs.PopulationEnv(num_envs=customers, scenario=scenario, horizon=weeks)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for t in range(weeks):
        obs, *_ = env.step(plan(t, obs, rng))
    kpis = env.kpis.summary()
    kpis["kpi/alive_share_latent"] = float(env.sim.state.alive.mean())
    return kpis


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    ap = argparse.ArgumentParser(description="Compare baseline marketing policies in one world.")
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--weeks", type=int, default=52)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenario", default="retail")
    args = ap.parse_args(argv)
    results = {name: evaluate(plan, args.customers, args.weeks, args.seed, args.scenario)
               for name, plan in POLICIES.items()}
    cols = [("profit", "kpi/profit_per_customer"), ("revenue", "kpi/revenue_per_customer"),
            ("orders", "kpi/orders_per_customer"), ("contact $", "kpi/contact_cost_per_customer"),
            ("discount $", "kpi/discount_cost_per_customer"), ("opt-outs", "kpi/opt_outs_per_customer"),
            ("alive", "kpi/alive_share_latent")]
    print(f"{args.customers:,} customers x {args.weeks} weeks, scenario {args.scenario!r}, "
          f"seed {args.seed} (same customers for every policy); per customer:")
    print(f"{'policy':<22}" + "".join(f"{c:>12}" for c, _ in cols))
    for name, k in results.items():
        print(f"{name:<22}" + "".join(f"{k[key]:>12.3f}" for _, key in cols))
    return results


if __name__ == "__main__":
    main()
