"""Off-policy estimator throughput: IPS, SNIPS, DM and DR on 10^6 logged rounds with 10 actions.

Usage: .venv/bin/python scripts/bench_ope.py [--rounds 1000000] [--actions 10] [--repeats 7]

Inputs are what the Open Bandit Pipeline's estimators take (its synthetic-data shapes): joint
actions (n,), rewards (n,), logging propensities (n,), the evaluation policy's distribution
(n, K) and a *fitted* reward model's predictions for every action (n, K). The reward model is
fitted before timing (that is "given a fitted reward model"). Timed, together: validating the
inputs and reducing them to per-round statistics (:meth:`BanditData.from_dense`), then the four
estimates. Each repeat starts from the raw arrays. Prints a table and a final JSON line with the
median of the repeats (``together_s``, target < 0.25 s) and the breakdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from rapport.agents.ope import BanditData, dm, dr, ips, snips


def synthetic(n: int, K: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Logged rounds from a softmax logger, a softmax evaluation policy and a fitted linear
    reward model (ridge on 5 context features, one weight vector per action)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    theta = rng.normal(size=(5, K)) * 0.3
    mu = 1.0 / (1.0 + np.exp(-(x @ theta)))
    logits = x @ rng.normal(size=(5, K))
    behaviour = np.exp(logits - logits.max(axis=1, keepdims=True))
    behaviour /= behaviour.sum(axis=1, keepdims=True)
    action = (np.cumsum(behaviour, axis=1) < rng.random((n, 1))).sum(axis=1)
    action = np.minimum(action, K - 1)
    reward = (rng.random(n) < mu[np.arange(n), action]).astype(np.float64)
    target = np.exp(3.0 * mu)
    target /= target.sum(axis=1, keepdims=True)
    # the fitted reward model: per-action least squares of reward on (x, 1), then predicted for all
    design = np.hstack([x, np.ones((n, 1))])
    q_hat = np.empty((n, K))
    for k in range(K):
        rows = action == k
        coef, *_ = np.linalg.lstsq(design[rows], reward[rows], rcond=None)
        q_hat[:, k] = design @ coef
    return {"action": action, "reward": reward, "pscore": behaviour[np.arange(n), action],
            "action_dist": target, "q_hat": q_hat}


def run_once(d: dict[str, np.ndarray]) -> tuple[dict[str, float], dict[str, float]]:
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    data = BanditData.from_dense(d["action"], d["reward"], d["pscore"], d["action_dist"], d["q_hat"])
    times["inputs"] = time.perf_counter() - t0
    values = {}
    for name, est in (("ips", ips), ("snips", snips), ("dm", dm), ("dr", dr)):
        t = time.perf_counter()
        values[name] = est(data).value
        times[name] = time.perf_counter() - t
    times["together"] = time.perf_counter() - t0
    return values, times


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1_000_000)
    ap.add_argument("--actions", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    d = synthetic(args.rounds, args.actions)
    run_once(d)  # warm-up: page in the arrays
    runs = [run_once(d) for _ in range(args.repeats)]
    values = runs[0][0]
    med = {k: float(np.median([r[1][k] for r in runs])) for k in runs[0][1]}
    best = float(min(r[1]["together"] for r in runs))
    print(f"{args.rounds:,} logged rounds, {args.actions} actions, median of {args.repeats} repeats "
          f"(machine shared with other sessions: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f})")
    print(f"{'stage':<10}{'median s':>12}")
    for k in ("inputs", "ips", "snips", "dm", "dr", "together"):
        print(f"{k:<10}{med[k]:>12.4f}")
    print(f"best together {best:.4f} s; estimates: " + ", ".join(f"{k}={v:.5f}" for k, v in values.items()))
    result = {"bench": "ope_estimators", "rounds": args.rounds, "actions": args.actions, "repeats": args.repeats,
              "together_s": med["together"], "best_together_s": best,
              "breakdown_s": {k: med[k] for k in ("inputs", "ips", "snips", "dm", "dr")},
              "target_s": 0.25, "meets_target": med["together"] < 0.25, "estimates": values,
              "python": platform.python_version(), "numpy": np.__version__,
              "load_avg_1m": os.getloadavg()[0]}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
