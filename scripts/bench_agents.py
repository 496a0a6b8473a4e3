"""Throughput and regret of the bandits on a synthetic linear-logistic stream.

Stream: contexts x ~ N(0, I_d), K arms with θ_k ~ N(0, (scale²/d) I), reward of arm k is
Bernoulli(sigmoid(x·θ_k)); the oracle arm is argmax_k x·θ_k. Each bandit sees the same contexts
and the same uniforms (common random numbers) in batches: ``act`` on the batch, then ``update``
with the rewards of the chosen arms. Reported: decisions+updates per second (agent time only,
stream generation excluded) and cumulative expected regret vs the oracle arm.

The reference is textbook disjoint LinUCB (Li et al. 2010, Algorithm 1) run row by row with
Sherman-Morrison updates and the same α, on the first ``--ref-rows`` rows, twice: learning after
every row (more information than any batched learner gets) and deciding each batch with the model
frozen at the batch start (the same feedback as the batched bandits). Regret is compared on
``--seeds`` streams (paired: same contexts and reward draws).

Prints a table, then one JSON line. Example::

    python scripts/bench_agents.py            # d=16, K=10, n=100000, batch 1000
    python scripts/bench_agents.py --n 20000 --no-neural
"""

from __future__ import annotations

import os

# Small per-batch matrix products are slower with BLAS threads than without; measure one core
# unless the caller says otherwise (must be set before numpy loads BLAS).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from rapport.agents.bandits import EpsilonGreedy, LinearThompson, LinUCB  # noqa: E402
from rapport.agents.baselines import UniformRandom  # noqa: E402
from rapport.agents.protocol import DecisionSchema  # noqa: E402


def make_stream(d: int, K: int, n: int, scale: float, seed: int):
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, scale / np.sqrt(d), (K, d))
    x = rng.standard_normal((n, d)).astype(np.float32)
    p = 1.0 / (1.0 + np.exp(-(x.astype(np.float64) @ theta.T)))  # (n, K) success probabilities
    u = rng.random((n, K))  # common random numbers: arm k's reward at row i is u[i, k] < p[i, k]
    return x, p, u


def schema_for(d: int, K: int) -> DecisionSchema:
    return DecisionSchema(feature_names=tuple(f"x{i}" for i in range(d)), nvec=(1, K, 1), channel_names=(),
                          offer_names=tuple(f"arm{k}" for k in range(K)), spend_levels=(0.0,))


def run_agent(agent, x, p, u, batch: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    n = len(x)
    regret, agent_s, prop_min = 0.0, 0.0, 1.0
    best = p.max(axis=1)
    row_regret = np.zeros(n)
    for s in range(0, n, batch):
        e = min(n, s + batch)
        t0 = time.perf_counter()
        actions, props = agent.act(x[s:e], rng)
        agent_s += time.perf_counter() - t0
        arm = actions[:, 1]
        rows = np.arange(s, e)
        reward = (u[rows, arm] < p[rows, arm]).astype(np.float64)
        t0 = time.perf_counter()
        if hasattr(agent, "update"):
            agent.update(x[s:e], actions, reward)
        agent_s += time.perf_counter() - t0
        row_regret[s:e] = best[rows] - p[rows, arm]
        prop_min = min(prop_min, float(props.min()))
    regret = float(row_regret.sum())
    return {"rows": n, "decisions_per_s": n / agent_s, "seconds": agent_s, "cum_regret": regret,
            "regret_per_decision": regret / n, "min_propensity": prop_min, "row_regret": row_regret}


def reference_linucb(x, p, u, alpha: float, seed: int, feedback_every: int = 1) -> dict:
    """Textbook disjoint LinUCB, one row at a time (features + a constant 1, A = I, b = 0).

    ``feedback_every=1`` learns after every row; ``feedback_every=batch`` decides with the model
    frozen at the start of each batch, i.e. the same information as the batched bandits.
    """
    rng = np.random.default_rng(seed)
    n, d = x.shape
    K = p.shape[1]
    xa = np.hstack([x.astype(np.float64), np.ones((n, 1))])
    a_inv = np.repeat(np.eye(d + 1)[None], K, axis=0)
    b = np.zeros((K, d + 1))
    theta = np.zeros((K, d + 1))
    regret, best = 0.0, p.max(axis=1)
    t0 = time.perf_counter()
    frozen_inv, frozen_theta = a_inv.copy(), theta.copy()
    for i in range(n):
        if i % feedback_every == 0:
            frozen_inv[:], frozen_theta[:] = a_inv, theta
        xi = xa[i]
        fx = frozen_inv @ xi  # (K, d+1)
        ucb = frozen_theta @ xi + alpha * np.sqrt(fx @ xi)
        top = np.flatnonzero(ucb == ucb.max())
        k = int(top[0] if len(top) == 1 else rng.choice(top))
        r = float(u[i, k] < p[i, k])
        ax = a_inv[k] @ xi
        a_inv[k] -= np.outer(ax, ax) / (1.0 + xi @ ax)  # Sherman-Morrison
        b[k] += r * xi
        theta[k] = a_inv[k] @ b[k]
        regret += best[i] - p[i, k]
    secs = time.perf_counter() - t0
    return {"rows": n, "decisions_per_s": n / secs, "seconds": secs, "cum_regret": regret,
            "regret_per_decision": regret / n, "min_propensity": 1.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d", type=int, default=16)
    ap.add_argument("--arms", type=int, default=10)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--scale", type=float, default=2.0, help="sd of the logits x·θ_k")
    ap.add_argument("--alpha", type=float, default=1.0, help="LinUCB α (ours and the reference)")
    ap.add_argument("--ref-rows", type=int, default=None, help="rows for the row-by-row reference (default n)")
    ap.add_argument("--seeds", type=int, default=3, help="streams for the regret comparison (throughput: first)")
    ap.add_argument("--no-neural", action="store_true", help="skip the neural-linear bandit")
    ap.add_argument("--neural-rows", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    schema = schema_for(args.d, args.arms)
    ref_rows = min(args.ref_rows or args.n, args.n)
    ref_name, ref_batched_name = f"ref_rowwise_linucb ({ref_rows} rows)", f"ref_rowwise_batch_feedback ({ref_rows} rows)"
    results: dict[str, dict] = {}
    paired: dict[str, list[float]] = {"ours": [], "ref": [], "ref_batched": []}
    for i in range(args.seeds):
        seed = args.seed + 100 * i
        x, p, u = make_stream(args.d, args.arms, args.n, args.scale, seed)
        agents = {
            "uniform_random": UniformRandom(schema),
            "linucb_textbook_alpha": LinUCB(schema, alpha=args.alpha, scale_by_noise=False),
            "linucb_textbook_alpha_rarely_switching": LinUCB(schema, alpha=args.alpha, scale_by_noise=False,
                                                             refit_growth=0.05),
            "linucb_default": LinUCB(schema),
            "epsilon_greedy_0.05": EpsilonGreedy(schema, epsilon=0.05),
            "linear_thompson": LinearThompson(schema),
        }
        if i > 0:  # later streams: only what the regret comparison needs
            agents = {"linucb_textbook_alpha": agents["linucb_textbook_alpha"]}
        seed_results = {name: run_agent(agent, x, p, u, args.batch, seed + 1) for name, agent in agents.items()}
        if not args.no_neural and i == 0:
            from rapport.agents.neural_bandit import NeuralLinearThompson

            m = min(args.neural_rows, args.n)
            neural = NeuralLinearThompson(schema, seed=seed + 2)
            seed_results[f"neural_linear_ts (first {m} rows)"] = run_agent(neural, x[:m], p[:m], u[:m], args.batch,
                                                                           seed + 1)
        seed_results[ref_name] = reference_linucb(x[:ref_rows], p[:ref_rows], u[:ref_rows], args.alpha, seed + 1)
        seed_results[ref_batched_name] = reference_linucb(x[:ref_rows], p[:ref_rows], u[:ref_rows], args.alpha,
                                                          seed + 1, feedback_every=args.batch)
        ours = seed_results["linucb_textbook_alpha"]
        paired["ours"].append(float(ours["row_regret"][:ref_rows].sum()))  # same rows as the reference
        paired["ref"].append(seed_results[ref_name]["cum_regret"])
        paired["ref_batched"].append(seed_results[ref_batched_name]["cum_regret"])
        for r in seed_results.values():
            r.pop("row_regret", None)
        if i == 0:
            results = seed_results

    print(f"stream: d={args.d}, K={args.arms}, n={args.n}, batches of {args.batch}; throughput on stream 0, "
          "agent time only (shared machine: expect run-to-run noise)")
    print(f"{'agent':<44} {'rows':>8} {'decisions/s':>13} {'cum regret':>11} {'regret/dec':>11} {'min prop':>9}")
    for name, r in results.items():
        print(f"{name:<44} {r['rows']:>8} {r['decisions_per_s']:>13,.0f} {r['cum_regret']:>11.1f} "
              f"{r['regret_per_decision']:>11.4f} {r['min_propensity']:>9.3f}")
    mean = {k: float(np.mean(v)) for k, v in paired.items()}
    diff_same = np.array(paired["ours"]) - np.array(paired["ref_batched"])
    diff_row = np.array(paired["ours"]) - np.array(paired["ref"])

    def se(d: np.ndarray) -> float:
        return float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")

    print(f"cumulative regret on the first {ref_rows} rows, mean over {args.seeds} streams: batched LinUCB "
          f"{mean['ours']:.1f}; reference with the same batch feedback {mean['ref_batched']:.1f} "
          f"(difference {diff_same.mean():+.1f} ± {se(diff_same):.1f} se); reference learning after every row "
          f"{mean['ref']:.1f} (difference {diff_row.mean():+.1f} ± {se(diff_row):.1f} se)")
    ours = results["linucb_textbook_alpha"]
    summary = {
        "bench": "agents", "d": args.d, "arms": args.arms, "n": args.n, "batch": args.batch, "seeds": args.seeds,
        "results": results,
        "linucb_decisions_per_s": ours["decisions_per_s"],
        "reference_decisions_per_s": results[ref_name]["decisions_per_s"],
        "linucb_cum_regret_mean": mean["ours"],
        "reference_same_feedback_cum_regret_mean": mean["ref_batched"],
        "reference_rowwise_cum_regret_mean": mean["ref"],
        "regret_diff_vs_same_feedback": float(diff_same.mean()),
        "regret_diff_vs_same_feedback_se": se(diff_same),
        "regret_diff_vs_rowwise": float(diff_row.mean()),
        "target_throughput_met": bool(ours["decisions_per_s"] >= 1.5e6),
        # "no worse" = not worse by more than two standard errors of the paired difference
        "regret_not_worse_than_same_feedback": bool(diff_same.mean() <= 2 * max(se(diff_same), 0.0)
                                                    if args.seeds > 1 else diff_same.mean() <= 0),
        "regret_not_worse_than_rowwise": bool(diff_row.mean() <= 0),
        "machine": "shared 2-core CPU (other sessions running)",
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
