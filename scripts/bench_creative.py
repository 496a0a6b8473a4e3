"""Decisions per second of the batched creative bandits choosing among a large catalogue.

Setting (issue 15 target: >= 100 k decisions/s at C = 10^4, D = 16): ``--creatives`` creatives
with ``--dim``-dimensional N(0, 1) embeddings, ``--features`` context columns (29, the width of
today's observation), contexts N(0, 1). Each learner is first fitted on ``--logged`` rows of
uniformly logged feedback from a synthetic bilinear reward, so the posterior is a real one; then
``choose`` is timed on every contacted row of a batch (best of ``--repeats``; the lazy refit is
done before timing and reported separately as ``refit_ms``). Also reported: ``update`` throughput
(rows/s of feedback folded into the moments) and, for comparison, the two-tower scorer's greedy
decisions.

Rules: ``greedy`` (propensity 1), ``ucb`` (Kronecker-factored bonus, the default; propensity 1),
``ucb_exact`` (textbook width, batch 10^4 only: it is ~20-30x slower), ``epsilon`` (ε = 0.05,
exact propensities), ``thompson`` (one posterior draw per batch plus ``--draws`` for the
Monte-Carlo propensity, so it costs about (draws + 1)x greedy). ``threads`` 1 or 2 (rows split
over Python threads; BLAS single-threaded inside).

Prints a table, then one JSON line. Example::

    python scripts/bench_creative.py                      # C=10^4, D=16, batches 10^4 and 10^5
    python scripts/bench_creative.py --batches 10000 --creatives 100000
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # per-chunk products are too small to split
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from rapport.agents.creative_bandits import CreativeBandit  # noqa: E402


def fitted(embeddings, names, logged, rng, **params) -> CreativeBandit:
    n = logged
    obs = rng.standard_normal((n, len(names))).astype(np.float32)
    ids = rng.integers(0, len(embeddings), n)
    taste = obs[:, :embeddings.shape[1]] if len(names) >= embeddings.shape[1] else np.zeros((n, embeddings.shape[1]))
    rewards = (taste * embeddings[ids]).sum(axis=1) + rng.standard_normal(n)
    learner = CreativeBandit(embeddings, names, **params)
    start = time.perf_counter()
    learner.update(obs, ids, rewards, np.ones(n, bool))
    learner.update_s = time.perf_counter() - start
    return learner


def time_choose(learner, obs, rng, repeats: int) -> tuple[float, float, float]:
    contacted = np.ones(len(obs), bool)
    start = time.perf_counter()
    learner.choose(obs[:1], contacted[:1], rng)  # the lazy refit
    refit = time.perf_counter() - start
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        _, prop = learner.choose(obs, contacted, rng)
        best = min(best, time.perf_counter() - start)
    return len(obs) / best, refit, float(prop.min())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--creatives", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--features", type=int, default=29)
    ap.add_argument("--batches", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--logged", type=int, default=20_000)
    ap.add_argument("--draws", type=int, default=4, help="Thompson propensity draws")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-two-tower", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((args.creatives, args.dim)).astype(np.float32)
    names = tuple(f"x{i}" for i in range(args.features))
    rules = {"greedy": dict(rule="greedy"), "ucb": dict(rule="ucb"), "ucb_exact": dict(rule="ucb", bonus="exact"),
             "epsilon": dict(rule="greedy", epsilon=0.05),
             "thompson": dict(rule="thompson", propensity_draws=args.draws)}
    rows = []
    print(f"C={args.creatives} D={args.dim} F={args.features} cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}")
    print(f"{'rule':<10} {'threads':>7} {'batch':>8} {'decisions/s':>12} {'refit_ms':>9} {'update rows/s':>14} "
          f"{'min prop':>9}")
    for name, params in rules.items():
        for threads in args.threads:
            learner = fitted(embeddings, names, args.logged, np.random.default_rng(1), threads=threads, **params)
            for batch in args.batches:
                if name == "ucb_exact" and batch > 10_000:
                    continue
                obs = rng.standard_normal((batch, args.features)).astype(np.float32)
                rate, refit, pmin = time_choose(learner, obs, np.random.default_rng(2), args.repeats)
                row = {"rule": name, "threads": threads, "batch": batch, "decisions_per_s": round(rate),
                       "refit_ms": round(1e3 * refit, 1), "update_rows_per_s": round(args.logged / learner.update_s),
                       "min_propensity": pmin}
                rows.append(row)
                print(f"{name:<10} {threads:>7} {batch:>8} {rate:>12,.0f} {1e3 * refit:>9.1f} "
                      f"{args.logged / learner.update_s:>14,.0f} {pmin:>9.3g}")
    if not args.no_two_tower:
        import torch

        from rapport.agents.two_tower import TwoTowerCreative

        torch.set_num_threads(1)
        model = TwoTowerCreative(embeddings, names, dim=args.dim)
        for batch in args.batches:
            obs = rng.standard_normal((batch, args.features)).astype(np.float32)
            rate, _, _ = time_choose(model, obs, np.random.default_rng(2), args.repeats)
            rows.append({"rule": "two_tower_greedy", "threads": 1, "batch": batch, "decisions_per_s": round(rate)})
            print(f"{'two_tower':<10} {1:>7} {batch:>8} {rate:>12,.0f}")
    summary = {"bench": "creative", "creatives": args.creatives, "dim": args.dim, "features": args.features,
               "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(), "rows": rows,
               "target_decisions_per_s": 100_000}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
