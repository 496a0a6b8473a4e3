"""Which bandit reward wins lifetime value? Paired comparison of a bandit's rewards.

Trains one bandit (``--agent``, default ``linucb_owned``) with each reward of ``--rewards``
(``profit``: this week's profit; ``lifetime_value_shaped``: profit + d·V(s') − V(s) with V
the latent residual value, see ``rapport.agents.bandit_rewards.ResidualValueShaping``) on ``--train-seeds``
independent training populations, through the same code path as ``rapport-train``, under each
rule set of ``--settings`` (';'-separated overrides, ``|`` between settings; every policy of a
setting, mass marketing included, obeys its rules). Every policy is evaluated on the same
populations (``--eval-seed`` + 0..k-1, common random numbers). Prints, per reward, the five
numbers of a result (profit, lifetime value, churned share, opt-outs, contacts per customer)
with paired 95 % CIs against the *profit reward of the same training seed* and against mass
marketing, and a JSON line with everything.

Seeds: 7100 is the validation population used while developing; 9100 is held out.

Example::

    python scripts/bench_bandit_reward.py --settings "|constraints.max_contacts_4w=2" --eval-seed 7100
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

from _bench_config import KEYS, settings_for  # noqa: E402

from rapport.experiments import builders  # noqa: E402
from rapport.experiments.config import register_configs  # noqa: E402
from rapport.experiments.evaluation import EvalSettings, evaluate, summarize  # noqa: E402
from rapport.experiments.tracking import NullTracker  # noqa: E402
from rapport.experiments.training import train_agent  # noqa: E402


def diff(s, policy: str, key: str) -> list[float]:
    d = s.diffs[(s.diffs.policy == policy) & (s.diffs.key == key)].iloc[0]
    return [float(d["diff"]), float(d.ci_low), float(d.ci_high)]


def run_setting(args, extra: list[str]) -> dict:
    common = [f"agent={args.agent}", f"train.customers={args.train_customers}", f"env.customers={args.customers}",
              f"train.episodes={args.episodes}", "tracking=none", "progress=false", *extra]
    policies, roles = {}, {}
    for k in range(args.train_seeds):
        for reward in args.rewards.split(","):
            settings = settings_for(common + [f"seed={k}", f"agent.params.reward={reward}"])
            scenario = builders.resolve_scenario(settings.env)
            trained = train_agent(settings, builders.derive_seeds(settings.seed, 1), scenario, NullTracker(),
                                  progress=False)
            policies[f"{reward}_s{k}"] = trained.policy_factory
    base = settings_for(common)
    policies["mass"] = builders.policy_factory(settings_for(common + ["agent=mass"]).agent, base.constraints)
    roles["mass"] = "baseline"
    scenario = builders.resolve_scenario(base.env)
    es = EvalSettings(scenario, args.customers, base.env.horizon,
                      tuple(args.eval_seed + i for i in range(args.eval_populations)),
                      annual_discount_rate=base.evaluation.annual_discount_rate)
    ev = evaluate(policies, es, roles=roles)
    vs_mass = summarize(ev, baseline="mass", n_boot=1000, seed=0)
    out: dict = {}
    for name in policies:
        means = vs_mass.kpis[vs_mass.kpis.policy == name].set_index("key")["mean"]
        row = {short: float(means[key]) for short, key in KEYS.items()}
        if name != "mass":
            row["vs_mass"] = {short: diff(vs_mass, name, key) for short, key in KEYS.items()}
            reward, k = name.rsplit("_s", 1)
            ref = f"profit_s{k}"
            if reward != "profit" and ref in policies:
                s = summarize(ev, baseline=ref, n_boot=1000, seed=0, policies=[ref, name])
                row["vs_profit_reward"] = {short: diff(s, name, key) for short, key in KEYS.items()}
        out[name] = row
    return out


def fmt(d: list[float]) -> str:
    return f"{d[0]:+6.2f}[{d[1]:+.2f},{d[2]:+.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agent", default="linucb_owned")
    ap.add_argument("--rewards", default="profit,lifetime_value_shaped")
    ap.add_argument("--settings", default="", help="'|'-separated rule sets, each ';'-separated overrides "
                                                   "('' = no rules)")
    ap.add_argument("--train-seeds", type=int, default=3)
    ap.add_argument("--episodes", type=int, default=1)
    ap.add_argument("--train-customers", type=int, default=4096)
    ap.add_argument("--customers", type=int, default=5000, help="per evaluation population")
    ap.add_argument("--eval-populations", type=int, default=2)
    ap.add_argument("--eval-seed", type=int, default=7100)
    args = ap.parse_args()
    register_configs()
    results = {}
    for setting in args.settings.split("|"):
        start = time.perf_counter()
        extra = [o for o in setting.split(";") if o]
        res = run_setting(args, extra)
        results[setting or "no rules"] = res
        print(f"\n== {setting or 'no rules'} ({time.perf_counter() - start:.0f} s; {args.eval_populations} "
              f"evaluation population(s) from seed {args.eval_seed}); paired 95% CIs")
        print(f"{'policy':<26}{'profit':>8}{'LTV':>8}{'churn':>7}{'optout':>7}{'contacts':>9}"
              f"{'Δprofit vs profit-reward':>28}{'ΔLTV vs profit-reward':>26}{'ΔLTV vs mass':>24}")
        for name, row in res.items():
            line = (f"{name:<26}{row['profit']:8.2f}{row['ltv']:8.2f}{row['churned']:7.3f}"
                    f"{row['opt_outs']:7.3f}{row['contacts']:9.1f}")
            if "vs_profit_reward" in row:
                line += f"{fmt(row['vs_profit_reward']['profit']):>28}{fmt(row['vs_profit_reward']['ltv']):>26}"
            else:
                line += " " * 54
            if "vs_mass" in row:
                line += f"{fmt(row['vs_mass']['ltv']):>24}"
            print(line)
    print(json.dumps({"bench": "bandit_reward", "agent": args.agent, "eval_seed": args.eval_seed,
                      "eval_populations": args.eval_populations, "train_seeds": args.train_seeds,
                      "results": results}))


if __name__ == "__main__":
    main()
