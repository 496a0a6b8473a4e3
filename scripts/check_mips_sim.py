"""OPE check on the simulator (issue 15): MIPS vs IPS for a creative policy, against on-policy truth.

The world is ``rapport-creative``'s: retail with a catalogue of C creatives, and an e-mail to every
reachable person in week 1. The **logger** sends a uniformly random creative. The **target** is the
personalised bandit (trained as ``rapport-creative`` trains it, on seed 7100), rotating through each
person's 10 best creatives (``TopKRotation``). The estimand is the mean week-1 profit per contacted
person.

* **Truth:** the target run on-policy on ``truth_customers`` people of populations no log uses.
  The week-1 cohort is fresh, so no wear applies.
* **Logs:** ``logs`` populations of ``customers`` people, each logged once.
* **Estimators:** IPS / SNIPS with the creative's vanilla weight, and MIPS / SNMIPS with exact
  marginal weights over all five attributes (theme, category, imagery, tone, explicitness). In the
  simulator the creative reaches the reward only through those, so the no-direct-effect
  assumption holds.

Run: ``.venv/bin/python scripts/check_mips_sim.py [--creatives 1000 10000] [--logs 30]`` (~4 min here: 32 s at C = 1,000, 197 s at C = 10,000).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from rapport import envs
from rapport.agents.creative import RandomCreative, TopKRotation, WithCreative
from rapport.agents.ope import BanditData, ips, marginal_weights, snips
from rapport.experiments import builders
from rapport.experiments.creative import CreativeStudy, _mass, train_selector

COLUMNS = ("theme", "category", "imagery", "tone", "explicitness")


def week_one(scenario, selector_of, customers: int, seed: int, rng: np.random.Generator):
    """One week-1 e-mail wave: (obs of contacted rows, creative ids, profit) and the env's attributes."""
    env = envs.PopulationEnv(num_envs=customers, scenario=scenario, horizon=2)
    schema = builders.schema_of(env)
    policy = WithCreative(_mass(schema, CreativeStudy(), every_k_weeks=1), selector_of(schema))
    obs, info = env.reset(seed=seed)
    actions, _ = policy.act(obs, rng, action_mask=info["action_mask"])
    _, profit, _, _, _ = env.step(actions)
    rows = np.flatnonzero(actions[:, 0] >= 1)
    return obs[rows], actions[rows, 3], profit[rows], env.creative_attributes


def check(C: int, logs: int, customers: int, truth_customers: int) -> dict[str, float]:
    study = CreativeStudy(creatives=C)
    scenario = study.world()
    personal, _ = train_selector("personalised", study, scenario)
    target = TopKRotation(personal, k=10)
    rng = np.random.default_rng([C, 3])
    truth_parts = [week_one(scenario, lambda s: target, truth_customers, 50_000 + i, rng)[2] for i in range(2)]
    truth = float(np.concatenate(truth_parts).mean())
    est: dict[str, list[float]] = {"ips": [], "snips": [], "mips": [], "snmips": []}
    ess: dict[str, list[float]] = {"ips": [], "mips": []}
    for i in range(logs):
        obs, ids, reward, attributes = week_one(scenario, RandomCreative.from_schema, customers, 60_000 + i, rng)
        behaviour = np.full(len(ids), 1.0 / C)
        def target_rows(lo: int, hi: int, obs=obs) -> np.ndarray:
            return target.creative_distribution(obs[lo:hi])
        def uniform_rows(lo: int, hi: int) -> np.ndarray:
            return np.full((hi - lo, C), 1.0 / C)
        vanilla = target.creative_distribution(obs)[np.arange(len(ids)), ids] if C <= 2000 else \
            np.concatenate([target_rows(lo, lo + 2000)[np.arange(min(2000, len(ids) - lo)), ids[lo:lo + 2000]]
                            for lo in range(0, len(ids), 2000)])
        mw = marginal_weights(ids, target_rows, uniform_rows, attributes, COLUMNS)
        plain = BanditData(reward, behaviour, vanilla)
        marginal = BanditData(reward, mw.behaviour_marginal, mw.target_marginal)
        est["ips"].append(ips(plain).value)
        est["snips"].append(snips(plain).value)
        est["mips"].append(ips(marginal).value)
        est["snmips"].append(snips(marginal).value)
        for name, w in (("ips", vanilla / behaviour), ("mips", mw.target_marginal / mw.behaviour_marginal)):
            ess[name].append(float(w.sum() ** 2 / (w ** 2).sum() / len(w)))
    out = {"C": C, "truth": truth, "codes": int(mw.n_codes)}
    for name, values in est.items():
        v = np.asarray(values)
        out[f"{name}_rmse"] = float(np.sqrt(np.mean((v - truth) ** 2)))
        out[f"{name}_bias"] = float(v.mean() - truth)
    out.update({f"{k}_ess_share": float(np.mean(v)) for k, v in ess.items()})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--creatives", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--logs", type=int, default=30)
    p.add_argument("--customers", type=int, default=10000)
    p.add_argument("--truth-customers", type=int, default=100000)
    a = p.parse_args()
    for C in a.creatives:
        t0 = time.perf_counter()
        r = check(C, a.logs, a.customers, a.truth_customers)
        print(f"C={C:>6}  truth {r['truth']:.4f}  attribute tuples {r['codes']}  ({time.perf_counter() - t0:.0f} s)")
        for name in ("ips", "snips", "mips", "snmips"):
            print(f"   {name:<7} RMSE {r[name + '_rmse']:.4f}  bias {r[name + '_bias']:+.4f}")
        print(f"   effective sample share: IPS {r['ips_ess_share']:.2%}, MIPS {r['mips_ess_share']:.2%}")


if __name__ == "__main__":
    main()
