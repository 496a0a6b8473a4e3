"""Off-policy evaluation with thousands of creatives: IPS, SNIPS, DR against MIPS, SNMIPS, MDR.

Usage: .venv/bin/python scripts/bench_mips.py [--sizes 1000 10000] [--rounds 10000] [--replicates 50] [--seed 7]

The world is :mod:`rapport.agents.ope.synthetic_catalogue`: C creatives with five categorical
attributes (6, 5, 4, 3, 3 levels), a reward that depends on the context and three of them
(theme, imagery, tone: 72 embedding values) plus N(0, 1) noise, a softmax logger over the whole
catalogue and a sharper target policy with its own per-creative preferences. The target's
value is exact (a finite sum over the 200 context types). Per catalogue size: ``--replicates``
independent logs of ``--rounds`` rounds; every estimator's bias, standard deviation and RMSE
against the truth, IPS's and MIPS's mean largest weight and effective sample share, and the
time per replicate. MIPS marginalises over (theme, imagery, tone), the attributes the reward
depends on. Prints a table and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from rapport.agents.ope.synthetic_catalogue import ESTIMATORS, replicate, summarise


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000], help="catalogue sizes C")
    ap.add_argument("--rounds", type=int, default=10_000, help="logged rounds per replicate")
    ap.add_argument("--replicates", type=int, default=50)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    out = {}
    for C in args.sizes:
        t0 = time.perf_counter()
        truth, runs = replicate(C, args.rounds, args.replicates, args.seed)
        elapsed = time.perf_counter() - t0
        s = summarise(truth, runs)
        out[C] = {"truth": truth, "seconds_per_replicate": elapsed / args.replicates, "estimators": s}
        print(f"\nC = {C:,} creatives, n = {args.rounds:,} rounds, {args.replicates} replicates; true value "
              f"{truth:.4f}; {elapsed / args.replicates:.2f} s per replicate")
        print(f"{'estimator':<10}{'bias':>10}{'sd':>10}{'rmse':>10}{'rmse/truth':>12}")
        for name in ESTIMATORS:
            r = s[name]
            print(f"{name:<10}{r['bias']:>+10.4f}{r['sd']:>10.4f}{r['rmse']:>10.4f}{r['rmse'] / abs(truth):>12.1%}")
        for name in ("ips", "mips"):
            print(f"{name} weights: mean max {s[name]['mean_max_weight']:.1f}, "
                  f"mean effective sample share {s[name]['mean_ess_share']:.2%}")
    result = {"bench": "mips", "rounds": args.rounds, "replicates": args.replicates, "seed": args.seed,
              "results": {str(C): {"truth": v["truth"], "seconds_per_replicate": v["seconds_per_replicate"],
                                   **{f"{e}_{k}": v["estimators"][e][k] for e in ESTIMATORS
                                      for k in ("bias", "sd", "rmse")},
                                   "ips_mean_max_weight": v["estimators"]["ips"]["mean_max_weight"],
                                   "mips_mean_max_weight": v["estimators"]["mips"]["mean_max_weight"],
                                   "mips_over_ips_rmse": v["estimators"]["mips"]["rmse"] / v["estimators"]["ips"]["rmse"]}
                          for C, v in out.items()},
              "python": platform.python_version(), "numpy": np.__version__, "cores": os.cpu_count(),
              "load_avg_1m": os.getloadavg()[0]}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
