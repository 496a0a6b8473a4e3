"""Simulator throughput: customer-steps/s of Rapport/Population-v0 vs Gymnasium's SyncVectorEnv.

Usage: .venv/bin/python scripts/bench_sim.py [--sizes 1000 10000 100000 1000000] [--weeks 10]
       [--presets fame privacy_sensitive subscription]

All mechanisms of the default (retail) preset are on: every week a mixed marketing plan contacts
~30 % of customers on a random channel with a random offer (discounts, recommendations,
gestures) and buys paid media for ~20 %, so fatigue, opt-outs, price memory, pantry,
conditioning, satisfaction, the newcomer boost and annoyance all run, and ``info`` carries the
latent truth including each row's treatment effect. At the largest size, a fully random policy
(5/6 of customers contacted every week), the mixed plan without the treatment effect
(``treatment_effect=False``), and each preset in ``--presets`` are also timed
(mass media, prospects, drift and life events, hidden offline purchases, privacy backlash,
weekly churn). Actions are generated before timing. Prints a table and a final JSON line.

Respawn and reset (``--targets``, issue 17): at each of ``--target-sizes`` the retail simulator is
timed with uniformly random actions and with no actions (median of ``--repeats`` runs each), next
to a 5-mechanism numpy reference (:class:`NumpyReference`: BG/NBD purchases and drop-out,
Gamma-Gamma spend, channel fatigue and opt-outs, on ``numpy.random.Generator`` draws, the
vectorisation pattern of docs/customer-model.md §1) under the same actions; the reset of the
largest population is timed too. ``--targets-only`` skips the rest.

Creative catalogue (``--creatives N``, issue 15): the ``--targets`` section also times retail
with a catalogue of N creatives (``creative.count = N``) under uniformly random actions, the
creative column included (median of ``--repeats``), next to the same run without creatives, and
reports the creative state per customer (target: >= 5 M customer-steps/s at 10^6 customers with
10^4 creatives, creative state <= 64 bytes per customer).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import gymnasium
import numpy as np

import rapport.envs as envs


def mixed_plan(n: int, rng: np.random.Generator, nvec=(6, 8, 4), contact_share: float = 0.3,
               media_share: float = 0.2) -> np.ndarray:
    a = np.zeros((n, 3), np.int64)
    contacted = rng.random(n) < contact_share
    a[contacted, 0] = rng.integers(1, nvec[0], contacted.sum())
    a[contacted, 1] = rng.integers(0, nvec[1], contacted.sum())
    media = rng.random(n) < media_share
    a[media, 2] = rng.integers(1, nvec[2], media.sum())
    return a


def uniform_plan(n: int, rng: np.random.Generator, nvec=(6, 8, 4)) -> np.ndarray:
    return np.stack([rng.integers(0, k, n) for k in nvec], axis=1)


def nothing_plan(n: int, rng: np.random.Generator, nvec=(6, 8, 4)) -> np.ndarray:
    return np.zeros((n, 3), np.int64)


class NumpyReference:
    """Five mechanisms of the retail preset in plain numpy, for a speed yardstick (not Rapport's
    model): BG/NBD purchases (Poisson counts) and drop-out (geometric), Gamma-Gamma spend, one
    fatigue stock per channel lowering a contact's lift, and a fatigue-driven opt-out hazard."""

    def __init__(self, n: int, scenario: str = "retail", seed: int = 0) -> None:
        sc = envs.get_scenario(scenario)
        pm = sc.purchase
        self.rng = rng = np.random.default_rng(seed)
        C = len(sc.channels)
        self.lam = rng.gamma(pm.r, 1 / pm.alpha, n).astype(np.float32)
        self.p = rng.beta(pm.a, pm.b, n)
        self.nu = rng.gamma(pm.q, 1 / pm.gamma, n).astype(np.float32)
        self.shape = pm.p
        self.alive = np.ones(n, bool)
        self.fatigue = np.zeros((C, n), np.float32)
        self.optin = rng.random((C, n)) < np.array([[c.optin_share] for c in sc.channels])
        self.response = np.stack([c.response_median * np.exp(c.response_sigma * rng.standard_normal(n))
                                  for c in sc.channels]).astype(np.float32)
        self.kappa = np.array([c.fatigue_response_decay for c in sc.channels], np.float32)
        self.decay = np.array([[2.0 ** (-1.0 / c.fatigue_half_life)] for c in sc.channels], np.float32)
        self.optout_base = np.array([c.optout_base for c in sc.channels], np.float32)
        self.optout_fatigue = np.array([c.optout_fatigue for c in sc.channels], np.float32)

    def step(self, action: np.ndarray) -> np.ndarray:
        rng, n = self.rng, self.lam.size
        rows = np.flatnonzero(action[:, 0])
        c = action[rows, 0] - 1
        reach = self.optin[c, rows]
        rows, c = rows[reach], c[reach]
        f = self.fatigue[c, rows]
        log_mult = np.zeros(n, np.float32)
        log_mult[rows] = self.response[c, rows] * np.exp(-self.kappa[c] * f)
        rate = np.exp(log_mult) * self.lam * self.alive
        count = rng.poisson(rate)
        buyers = np.flatnonzero(count)
        death_at = rng.geometric(self.p[buyers])
        bought = np.minimum(count[buyers], death_at)
        self.alive[buyers[death_at <= count[buyers]]] = False
        revenue = np.zeros(n, np.float32)
        revenue[buyers] = rng.gamma(self.shape * bought) / self.nu[buyers]
        hazard = np.minimum(self.optout_base[c] * np.exp(self.optout_fatigue[c] * f), 1)
        out = rng.random(rows.size) < hazard
        self.optin[c[out], rows[out]] = False
        self.fatigue *= self.decay
        self.fatigue[c, rows] += 1
        return revenue


def time_reference(n: int, weeks: int, plan) -> float:
    """customer-steps/s of :class:`NumpyReference` under ``plan``'s actions."""
    rng = np.random.default_rng(0)
    ref = NumpyReference(n)
    actions = [plan(n, rng) for _ in range(min(weeks, 4))]
    ref.step(actions[0])
    t0 = time.perf_counter()
    for t in range(weeks):
        ref.step(actions[t % len(actions)])
    return n * weeks / (time.perf_counter() - t0)


def creative_bytes_per_customer(env) -> float:
    """Bytes of creative state (taste, wear-out memory) per customer."""
    s = env.sim.state
    return sum(getattr(s, f).nbytes for f in ("creative_taste", "creative_ids", "creative_stock",
                                               "creative_last")) / env.num_envs


def time_population(n: int, weeks: int, plan, copy_obs: bool = True,
                    scenario: str | envs.Scenario = "retail",
                    treatment_effect: bool = True, creative_bytes: list | None = None
                    ) -> tuple[float, float, float]:
    """(customer-steps/s, reset seconds, state bytes per customer)."""
    rng = np.random.default_rng(0)
    env = envs.PopulationEnv(num_envs=n, scenario=scenario, horizon=weeks + 5, include_latent=True,
                             copy_obs=copy_obs, treatment_effect=treatment_effect)
    t0 = time.perf_counter()
    env.reset(seed=0)
    reset_s = time.perf_counter() - t0
    nvec = tuple(env.single_action_space.nvec)
    actions = [plan(n, rng, nvec) for _ in range(min(weeks, 4))]
    env.step(actions[0])  # warm-up
    t0 = time.perf_counter()
    for t in range(weeks):
        env.step(actions[t % len(actions)])
    dt = time.perf_counter() - t0
    if creative_bytes is not None:
        creative_bytes.append(creative_bytes_per_customer(env))
    return n * weeks / dt, reset_s, env.state_bytes_per_customer()


def time_sync_vector(n_copies: int = 256, weeks: int = 20) -> float:
    vec = gymnasium.vector.SyncVectorEnv(
        [lambda i=i: envs.CustomerEnv(customer_index=i, horizon=weeks + 5) for i in range(n_copies)])
    vec.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = [mixed_plan(n_copies, rng) for _ in range(4)]
    vec.step(actions[0])
    t0 = time.perf_counter()
    for t in range(weeks):
        vec.step(actions[t % 4])
    return n_copies * weeks / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    ap.add_argument("--weeks", type=int, default=10)
    ap.add_argument("--presets", nargs="*", default=["fame", "privacy_sensitive"],
                    help="presets with the issue-3 mechanisms on, timed at the largest size")
    ap.add_argument("--targets", action="store_true",
                    help="also time random and no actions against the numpy reference, and reset")
    ap.add_argument("--targets-only", action="store_true", help="only the --targets section")
    ap.add_argument("--target-sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=3, help="runs per --targets figure (median)")
    ap.add_argument("--creatives", type=int, default=0,
                    help="also time --targets with a catalogue of this many creatives (issue 15)")
    ap.add_argument("--creatives-only", action="store_true",
                    help="with --targets-only and --creatives: skip the reference and no-action rows")
    args = ap.parse_args()
    if args.targets_only:
        print(json.dumps(respawn_targets(args.target_sizes, args.weeks, args.repeats,
                                         args.creatives, args.creatives_only)))
        return

    rows = []

    def measure(n: int, policy: str, copy_obs: bool, scenario: str = "retail", te: bool = True) -> None:
        plan = mixed_plan if policy == "mixed" else uniform_plan
        rate, reset_s, nbytes = time_population(n, args.weeks, plan, copy_obs, scenario, te)
        rows.append({"n": n, "scenario": scenario, "policy": policy, "copy_obs": copy_obs,
                     "treatment_effect": te, "customer_steps_per_s": rate, "reset_s": reset_s,
                     "state_bytes_per_customer": nbytes})

    for n in args.sizes:
        measure(n, "mixed", True)
    n_max = max(args.sizes)
    measure(n_max, "mixed", False)
    measure(n_max, "uniform", True)
    measure(n_max, "mixed", True, te=False)
    for preset in args.presets:
        measure(n_max, "mixed", True, preset)
    sync = time_sync_vector()

    print(f"{'customers':>10} {'scenario':>18} {'policy':>8} {'copy_obs':>8} {'treat.eff':>9} "
          f"{'customer-steps/s':>17} {'reset s':>8} {'bytes/cust':>10}")
    for r in rows:
        print(f"{r['n']:>10,} {r['scenario']:>18} {r['policy']:>8} {r['copy_obs']!s:>8} "
              f"{r['treatment_effect']!s:>9} {r['customer_steps_per_s']:>17,.0f} {r['reset_s']:>8.2f} "
              f"{r['state_bytes_per_customer']:>10.0f}")
    print(f"SyncVectorEnv over 256 single-customer envs: {sync:,.0f} customer-steps/s")
    retail = [r for r in rows if r["scenario"] == "retail"]
    best = max(r["customer_steps_per_s"] for r in retail if r["n"] == n_max and r["policy"] == "mixed")
    default = next(r["customer_steps_per_s"] for r in retail
                   if r["n"] == n_max and r["copy_obs"] and r["treatment_effect"])
    result = {
        "bench": "sim",
        "rows": rows,
        "sync_vector_env_steps_per_s": sync,
        "customer_steps_per_s_at_max_n_default": default,
        "customer_steps_per_s_at_max_n_best": best,
        "speedup_vs_sync_at_max_n": default / sync,
        "state_bytes_per_customer": rows[0]["state_bytes_per_customer"],
        "presets_at_max_n": {r["scenario"]: r["customer_steps_per_s"] for r in rows
                             if r["scenario"] != "retail"},
        "max_state_bytes_per_customer": max(r["state_bytes_per_customer"] for r in rows),
        "targets": {"customer_steps_per_s_at_1e6": 1e7, "speedup_vs_sync": 100,
                    "state_bytes_per_customer": 200},
    }
    if args.targets:
        result["respawn_targets"] = respawn_targets(args.target_sizes, args.weeks, args.repeats,
                                                    args.creatives)
    print(json.dumps(result))


def creative_targets(sizes: list[int], weeks: int, repeats: int, creatives: int) -> dict:
    """Median customer-steps/s with uniformly random actions (creative column included) on
    retail with ``creatives`` creatives, and without a catalogue, run alternately."""
    med = statistics.median
    scenario = envs.get_scenario("retail", creative={"count": creatives})
    out: dict = {"creatives": creatives, "sizes": {}}
    print(f"{'customers':>10} {'creatives':>9} {'with/s':>12} {'without/s':>12} {'ratio':>6} "
          f"{'creative B':>10} {'state B':>8}")
    for n in sizes:
        with_c, without, nbytes = [], [], []
        for _ in range(repeats):
            with_c.append(time_population(n, weeks, uniform_plan, scenario=scenario,
                                          creative_bytes=nbytes))
            without.append(time_population(n, weeks, uniform_plan))
        rate, base = med(r[0] for r in with_c), med(r[0] for r in without)
        out["sizes"][str(n)] = {
            "customer_steps_per_s": rate, "without_creatives_steps_per_s": base,
            "ratio": rate / base, "creative_state_bytes_per_customer": nbytes[0],
            # best of the repeats: on a shared machine other work only ever slows a run down
            "best_customer_steps_per_s": max(r[0] for r in with_c),
            "best_without_creatives_steps_per_s": max(r[0] for r in without),
            "state_bytes_per_customer": with_c[0][2], "reset_s": med(r[1] for r in with_c),
            "all_customer_steps_per_s": [r[0] for r in with_c],
            "all_without_creatives_steps_per_s": [r[0] for r in without]}
        print(f"{n:>10,} {creatives:>9,} {rate:>12,.0f} {base:>12,.0f} {rate / base:>6.2f} "
              f"{nbytes[0]:>10.0f} {with_c[0][2]:>8.0f}")
    out["targets"] = {"customer_steps_per_s_at_1e6_with_1e4_creatives": 5e6,
                      "creative_state_bytes_per_customer": 64}
    return out


def respawn_targets(sizes: list[int], weeks: int, repeats: int, creatives: int = 0,
                    creatives_only: bool = False) -> dict:
    """Median customer-steps/s with random and no actions vs the numpy reference, and the reset
    time of the largest population (issue 17 targets: >= 0.4x with random actions, reset of 10^6
    customers <= 1 s); with ``creatives``, :func:`creative_targets` too."""
    med = statistics.median
    if creatives_only and creatives:
        return {"creative": creative_targets(sizes, weeks, repeats, creatives)}
    out: dict = {"sizes": {}, "repeats": repeats}
    print(f"{'customers':>10} {'policy':>8} {'rapport/s':>12} {'reference/s':>12} {'ratio':>6} "
          f"{'reset s':>8}")
    for n in sizes:
        fig = {}
        for name, plan in (("uniform", uniform_plan), ("nothing", nothing_plan)):
            runs = [time_population(n, weeks, plan) for _ in range(repeats)]
            ref = med(time_reference(n, weeks, plan) for _ in range(repeats))
            rate = med(r[0] for r in runs)
            fig[name] = {"customer_steps_per_s": rate, "reference_steps_per_s": ref,
                         "ratio": rate / ref, "reset_s": med(r[1] for r in runs),
                         "all_customer_steps_per_s": [r[0] for r in runs]}
            print(f"{n:>10,} {name:>8} {rate:>12,.0f} {ref:>12,.0f} {rate / ref:>6.2f} "
                  f"{fig[name]['reset_s']:>8.2f}")
        out["sizes"][str(n)] = fig
    n_max = max(sizes)
    resets = []
    for _ in range(repeats):
        env = envs.PopulationEnv(num_envs=n_max, scenario="retail", horizon=weeks + 5)
        t0 = time.perf_counter()
        env.reset(seed=0)
        resets.append(time.perf_counter() - t0)
    out["reset_s_at_max_n"] = med(resets)
    out["all_reset_s_at_max_n"] = resets
    out["targets"] = {"uniform_ratio": 0.4, "reset_s_at_1e6": 1.0}
    print(f"reset of {n_max:,} customers: {out['reset_s_at_max_n']:.2f} s (median of {repeats})")
    if creatives:
        out["creative"] = creative_targets(sizes, weeks, repeats, creatives)
    return out


if __name__ == "__main__":
    main()
