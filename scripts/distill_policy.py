"""Distil a policy into a shallow decision tree a marketer can read, with its fidelity and its value.

Trains ``--agent`` (plus ``--extra`` overrides) through the same code path as ``rapport-train``
(a baseline is just built), rolls the resulting policy on a collection population
(``--collect-seed``) and records its action for every active customer-week, then for
``--dagger-rounds`` rounds lets the current tree drive a fresh population while the policy labels
the states the tree leads to (without them a tree fitted to the policy's own rollout can collapse
to "never contact": it never saw customers left alone for weeks), fits a
depth-``--max-depth`` decision tree over the observable features (``rapport.experiments.distill``),
measures its fidelity (agreement with the policy) on a separate held-out population
(``--holdout-seed``), and evaluates tree and policy on the same validation populations
(``--eval-seed``, common random numbers: paired difference tree − policy with a 95 % CI).
Prints the rules in plain words and a final JSON line.

Examples::

    python scripts/distill_policy.py --agent linucb_owned
    python scripts/distill_policy.py --agent ppo --extra "train.timesteps=1000000"
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

from _bench_config import settings_for  # noqa: E402

from rapport.experiments import builders  # noqa: E402
from rapport.experiments.config import register_configs  # noqa: E402
from rapport.experiments.distill import (  # noqa: E402
    agreement,
    collect,
    distill_dagger,
    fidelity,
    history_features,
    rules,
    rules_text,
    value_retained,
)
from rapport.experiments.evaluation import EvalSettings  # noqa: E402
from rapport.experiments.tracking import NullTracker  # noqa: E402
from rapport.experiments.training import train_agent  # noqa: E402


def _finite(x: float) -> float | None:
    """A rule bound for JSON: None for an open end (-inf / inf)."""
    return float(x) if abs(x) != float("inf") else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agent", default="linucb_owned")
    ap.add_argument("--extra", default="", help="overrides, ';'-separated (none: the agent's defaults)")
    ap.add_argument("--seed", type=int, default=0, help="training seed (rapport-train's seed)")
    ap.add_argument("--max-depth", type=int, default=3)
    ap.add_argument("--min-samples-leaf", type=float, default=0.005,
                    help="rows per leaf: an integer, or a fraction of the collected customer-weeks if < 1")
    ap.add_argument("--exclude-history", action="store_true",
                    help="the tree may not use contact/offer-history columns (the policy's own footprint)")
    ap.add_argument("--dagger-rounds", type=int, default=2,
                    help="rounds in which the tree drives a fresh population (seed collect-seed + round) "
                         "and the policy labels the states it reaches (0: the policy's own rollout only)")
    ap.add_argument("--collect-customers", type=int, default=4000)
    ap.add_argument("--collect-seed", type=int, default=8100)
    ap.add_argument("--holdout-customers", type=int, default=4000)
    ap.add_argument("--holdout-seed", type=int, default=8200)
    ap.add_argument("--customers", type=int, default=5000, help="evaluation population size")
    ap.add_argument("--eval-populations", type=int, default=2)
    ap.add_argument("--eval-seed", type=int, default=7100)
    args = ap.parse_args()
    if args.collect_seed <= args.holdout_seed <= args.collect_seed + args.dagger_rounds:
        raise SystemExit("--holdout-seed must not be one of the collection seeds "
                         "(--collect-seed .. --collect-seed + --dagger-rounds)")
    register_configs()
    common = ["tracking=none", "progress=false", f"seed={args.seed}"]
    settings = settings_for(common + [f"agent={args.agent}"] + [o for o in args.extra.split(";") if o])
    scenario = builders.resolve_scenario(settings.env)
    t0 = time.perf_counter()
    trained = train_agent(settings, builders.derive_seeds(settings.seed, 1), scenario, NullTracker(),
                          progress=False)
    train_s = time.perf_counter() - t0
    factory = trained.policy_factory

    t0 = time.perf_counter()
    msl = int(args.min_samples_leaf) if args.min_samples_leaf >= 1 else float(args.min_samples_leaf)
    env = builders.make_env(settings.env, customers=1, scenario=scenario)
    excluded = history_features(env.feature_names) if args.exclude_history else ()
    tree, data = distill_dagger(factory, settings.env, args.collect_customers, args.collect_seed,
                                rounds=args.dagger_rounds, scenario=scenario, max_depth=args.max_depth,
                                min_samples_leaf=msl, exclude_features=excluded)
    held = collect(factory, settings.env, args.holdout_customers, seed=args.holdout_seed, scenario=scenario)
    tree.fidelity = fidelity(tree, held)
    # where the tree itself drives (the states it leads customers into), the policy labelling
    held_tree = collect(factory, settings.env, args.holdout_customers, seed=args.holdout_seed, scenario=scenario,
                        driver=tree)
    fidelity_tree_states = fidelity(tree, held_tree)
    agree = agreement(tree, held)
    distill_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    es = EvalSettings(scenario, args.customers, settings.env.horizon,
                      tuple(args.eval_seed + i for i in range(args.eval_populations)),
                      annual_discount_rate=settings.evaluation.annual_discount_rate)
    vr = value_retained(factory, tree, es)
    eval_s = time.perf_counter() - t0

    text = rules_text(tree, env.feature_names, env.channel_names, env.offer_names, env.spend_levels)
    print(f"{args.agent}: trained in {train_s:.1f} s; {len(data.obs):,} customer-weeks collected "
          f"(seeds {args.collect_seed}..{args.collect_seed + args.dagger_rounds}), tree depth {args.max_depth} with {tree.tree.get_n_leaves()} leaves")
    print(f"fidelity: {tree.fidelity:.3f} on {len(held.obs):,} held-out customer-weeks (seed {args.holdout_seed});"
          f" {tree.train_fidelity:.3f} on the training rows; {fidelity_tree_states:.3f} on the states the "
          f"tree itself leads the held-out customers into ({args.dagger_rounds} DAgger rounds)")
    print("held-out agreement by decision: " + ", ".join(f"{k} {v:.3f}" for k, v in agree.items()))
    print(f"value on {args.eval_populations} x {args.customers} customers (seeds from {args.eval_seed}), "
          "per customer, tree − policy [95 % paired CI]:")
    for k, v in vr.items():
        print(f"  {k:15s} policy {v['original']:8.3f}  tree {v['distilled']:8.3f}  "
              f"{v['diff']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]  retained {100 * v['retained']:.0f} %")
    print("rules:\n" + text)
    print(json.dumps({"bench": "distill", "agent": args.agent, "extra": args.extra, "seed": args.seed,
                      "max_depth": args.max_depth, "min_samples_leaf": msl,
                      "exclude_history": args.exclude_history, "leaves": int(tree.tree.get_n_leaves()),
                      "collect": {"customers": args.collect_customers, "seed": args.collect_seed,
                                  "rows": len(data.obs)},
                      "holdout": {"customers": args.holdout_customers, "seed": args.holdout_seed,
                                  "rows": len(held.obs)},
                      "dagger_rounds": args.dagger_rounds, "fidelity": tree.fidelity,
                      "fidelity_on_tree_states": fidelity_tree_states,
                      "agreement": agree, "train_fidelity": tree.train_fidelity,
                      "eval": {"customers": args.customers, "seeds": list(es.seeds)}, "value": vr,
                      "rules": [{**r, "bounds": {f: [_finite(b) for b in bd] for f, bd in r["bounds"].items()}}
                                for r in rules(tree)],
                      "seconds": {"train": train_s, "distill": distill_s, "evaluate": eval_s}}))


if __name__ == "__main__":
    main()
