"""Time to quality: wall-clock training time until an agent first beats mass marketing on both KPIs.

Trains ``--agent`` with its defaults (plus ``--extra`` overrides) through the same code path as
``rapport-train`` and, every ``--check-every`` customer-weeks, freezes the policy as it stands
(frozen observation statistics included) and evaluates it on a *fixed validation population*
(``--eval-seed``, default 7100: the population used while developing, never the held-out 9100)
against mass marketing on common random numbers. Quality = the paired 95 % CIs of both
52-week profit and lifetime value per customer exclude 0 in the agent's favour. Training stops
at the first checkpoint that reaches quality (or at its training budget, ``agent.timesteps`` unless ``train.timesteps`` is set).

Reported: training wall-clock seconds until quality (evaluation time excluded and reported
separately), the customer-weeks, and at every checkpoint the five numbers of a result (profit,
lifetime value, churned share, opt-outs, contacts per customer) against mass marketing's. The
target is at most 15 minutes on the 2-core development machine.

Example::

    python scripts/bench_time_to_quality.py --agent maskable_ppo_capped --check-every 1000000
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import pandas as pd  # noqa: E402
from _bench_config import KEYS, settings_for  # noqa: E402

from rapport.experiments import builders  # noqa: E402
from rapport.experiments.config import register_configs  # noqa: E402
from rapport.experiments.evaluation import EvalSettings, evaluate, summarize  # noqa: E402
from rapport.experiments.tracking import NullTracker  # noqa: E402
from rapport.experiments.training import train_agent  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agent", default="maskable_ppo_capped")
    ap.add_argument("--check-every", type=int, default=1_000_000, help="customer-weeks between checks")
    ap.add_argument("--customers", type=int, default=5000, help="validation population size")
    ap.add_argument("--eval-populations", type=int, default=1)
    ap.add_argument("--eval-seed", type=int, default=7100)
    ap.add_argument("--seed", type=int, default=0, help="training seed (rapport-train's seed)")
    ap.add_argument("--extra", default="", help="overrides, ';'-separated (none: the agent's defaults)")
    args = ap.parse_args()
    register_configs()
    common = ["tracking=none", "progress=false", f"seed={args.seed}"]
    settings = settings_for(common + [f"agent={args.agent}"] + [o for o in args.extra.split(";") if o])
    scenario = builders.resolve_scenario(settings.env)
    mass_cfg = settings_for(common + ["agent=mass"])
    es = EvalSettings(scenario, args.customers, settings.env.horizon,
                      tuple(args.eval_seed + i for i in range(args.eval_populations)),
                      annual_discount_rate=settings.evaluation.annual_discount_rate)
    mass_blocks = evaluate({"mass": builders.policy_factory(mass_cfg.agent, mass_cfg.constraints)}, es,
                           roles={"mass": "baseline"}).blocks
    checks: list[dict] = []
    eval_seconds = 0.0
    start = time.perf_counter()

    def checkpoint(step: int, factory) -> bool:
        nonlocal eval_seconds
        t0 = time.perf_counter()
        blocks = evaluate({"agent": factory}, es).blocks
        s = summarize(pd.concat([mass_blocks, blocks], ignore_index=True), baseline="mass", n_boot=1000, seed=0)
        row = {"timesteps": step, "train_seconds": t0 - start - eval_seconds}
        for short, key in KEYS.items():
            d = s.diffs[(s.diffs.policy == "agent") & (s.diffs.key == key)].iloc[0]
            mean = s.kpis[(s.kpis.policy == "agent") & (s.kpis.key == key)]["mean"].iloc[0]
            base = s.kpis[(s.kpis.policy == "mass") & (s.kpis.key == key)]["mean"].iloc[0]
            row[short] = {"agent": float(mean), "mass": float(base), "diff": float(d["diff"]),
                          "ci_low": float(d.ci_low), "ci_high": float(d.ci_high)}
        row["quality"] = row["profit"]["ci_low"] > 0 and row["ltv"]["ci_low"] > 0
        eval_seconds += time.perf_counter() - t0
        checks.append(row)
        print(f"[{row['train_seconds']:6.0f} s training, {step:,} customer-weeks] "
              + "  ".join(f"{k} {v['agent']:.3f} (mass {v['mass']:.3f}; {v['diff']:+.2f} "
                          f"[{v['ci_low']:+.2f},{v['ci_high']:+.2f}])"
                          for k, v in row.items() if k in KEYS)
              + ("  QUALITY" if row["quality"] else ""), flush=True)
        return bool(row["quality"])

    print("(each line: the agent's KPI per customer, mass marketing's, and the paired difference [95 % CI])")
    train_agent(settings, builders.derive_seeds(settings.seed, 1), scenario, NullTracker(), progress=False,
                checkpoint=checkpoint, checkpoint_every=args.check_every)
    reached = next((c for c in checks if c["quality"]), None)
    print(f"\n{args.agent}: " + (f"quality after {reached['train_seconds']:.0f} s of training "
                                  f"({reached['timesteps']:,} customer-weeks)" if reached
                                  else f"no quality within {settings.timesteps:,} customer-weeks")
          + f"; the checkpoints' evaluations took another {eval_seconds:.1f} s")
    print(json.dumps({"bench": "time_to_quality", "agent": args.agent, "extra": args.extra,
                      "eval_seed": args.eval_seed, "eval_populations": args.eval_populations,
                      "customers": args.customers, "train_timesteps": settings.timesteps,
                      "reached": reached, "checks": checks}))


if __name__ == "__main__":
    main()
