"""Scale-out on Ray: sharded-evaluation throughput and a sweep through the Ray launcher.

Usage: .venv/bin/python scripts/bench_ray.py [--customers 400000] [--weeks 8] [--jobs 8]
       [--address 127.0.0.1:6379] [--skip-sweep]

Starts a local Ray cluster on 127.0.0.1 (``ray start --head``, one CPU per core, its own
RAY_TMPDIR; stopped at the end) unless ``--address`` names a running one.

1. Evaluation throughput, customer-weeks/s, of an RFM policy under a global weekly budget
   (so the cross-shard budget reduce runs every week) on ``--customers`` customers for
   ``--weeks`` weeks: in-process (the reference), 1 Ray shard and 2 Ray shards. Each figure is a
   second rollout (warm memory, warm actors); actor start-up is reported separately. Scaling
   efficiency = throughput(2 shards) / (2 × throughput(1 shard)).
2. A sweep of ``--jobs`` short ``rapport-train`` jobs (debug=fast, agents × seeds, MLflow in a
   temp SQLite store) run sequentially by Hydra's basic launcher vs through
   ``hydra/launcher=ray`` on the cluster; wall-clock of each whole command.

Prints a table and a final JSON line. Numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rapport.experiments.launchers.ray_cluster import LOOPBACK_ENV, LocalCluster, RayConfig


def bench_evaluation(address: str, customers: int, weeks: int) -> dict[str, float]:
    import rapport.envs as envs
    from rapport.agents.baselines import RFMSegmentRules
    from rapport.agents.constraints import BudgetConstraint
    from rapport.experiments.builders import schema_of
    from rapport.experiments.evaluation import EvalSettings
    from rapport.experiments.sharding import ShardPool

    settings = EvalSettings(envs.get_scenario("retail"), customers=customers, horizon=weeks, seeds=(0,),
                            blocks=200)
    schema = schema_of(envs.PopulationEnv(num_envs=2))
    policy = BudgetConstraint(RFMSegmentRules(schema, every_k_weeks=1, horizon=weeks), schema,
                              weekly_budget=0.01 * customers)
    work = customers * weeks
    out: dict[str, float] = {}
    with ShardPool(settings, 1, executor="local") as pool:
        pool.rollout(policy, 1)  # warm-up, as for the Ray pools below
        t = time.perf_counter()
        ref = pool.rollout(policy, 0)
        out["local_cw_per_s"] = work / (time.perf_counter() - t)
    for shards in (1, 2):
        t = time.perf_counter()
        with ShardPool(settings, shards, executor="ray", ray=RayConfig(address=address),
                       cpus_per_shard=1) as pool:
            pool.rollout(policy, 1)  # warm-up: actors started, code imported, pages touched
            out[f"startup_and_first_rollout_s_{shards}"] = time.perf_counter() - t
            t = time.perf_counter()
            r = pool.rollout(policy, 0)
            out[f"ray_{shards}_shard_cw_per_s"] = work / (time.perf_counter() - t)
        if not np.array_equal(r.block_sums, ref.block_sums):
            raise AssertionError(f"{shards} Ray shards disagree with the in-process evaluation")
    out["scaling_efficiency_2_shards"] = out["ray_2_shard_cw_per_s"] / (2 * out["ray_1_shard_cw_per_s"])
    return out


def bench_sweep(address: str, env: dict[str, str], jobs: int) -> dict[str, float]:
    agents = ["mass", "do_nothing"]
    seeds = ",".join(str(s) for s in range(max(1, jobs // len(agents))))
    common = ["debug=fast", "evaluation.oracle=false", "tracking.log_model=false", "tracking.log_plots=false",
              f"agent={','.join(agents)}", f"seed={seeds}", "tracking.experiment=bench-ray"]
    out: dict[str, float] = {"jobs": float(len(agents) * len(seeds.split(",")))}
    for mode, extra in (("sequential", []), ("ray", ["hydra/launcher=ray", f"hydra.launcher.ray.address={address}"])):
        with tempfile.TemporaryDirectory() as tmp:
            from mlflow.tracking import MlflowClient

            uri = f"sqlite:///{tmp}/mlflow.db"
            MlflowClient(uri).create_experiment("bench-ray")
            cmd = [str(Path(sys.executable).parent / "rapport-train"), "-m", *extra, *common]
            t = time.perf_counter()
            proc = subprocess.run(cmd, cwd=tmp, env={**env, "MLFLOW_TRACKING_URI": uri, "CI": "true"},
                                  capture_output=True, text=True)
            out[f"{mode}_s"] = time.perf_counter() - t
            if proc.returncode != 0:
                raise RuntimeError(f"{mode} sweep failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    out["speedup"] = out["sequential_s"] / out["ray_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--customers", type=int, default=400_000)
    ap.add_argument("--weeks", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--address", default=None, help="a running cluster (default: start a local one)")
    ap.add_argument("--skip-sweep", action="store_true")
    args = ap.parse_args()
    os.environ[LOOPBACK_ENV] = "0"  # before ray is imported: keep 127.0.0.1 (ray_cluster.py)
    cluster = None if args.address else LocalCluster(num_cpus=os.cpu_count() or 2).start()
    try:
        address = args.address or cluster.address
        env = cluster.env if cluster else {**os.environ}
        os.environ["RAY_TMPDIR"] = env.get("RAY_TMPDIR", os.environ.get("RAY_TMPDIR", "/tmp"))
        ev = bench_evaluation(address, args.customers, args.weeks)
        sweep = {} if args.skip_sweep else bench_sweep(address, env, args.jobs)
    finally:
        if cluster is not None:
            cluster.stop()
    cpus = os.cpu_count()
    print(f"Ray scale-out on {cpus} CPUs (shared machine: other work competes for the cores)")
    print(f"evaluation: {args.customers:,} customers x {args.weeks} weeks, RFM under a global weekly budget")
    print(f"{'executor':<22}{'customer-weeks/s':>18}{'start-up + 1st rollout (s)':>30}")
    print(f"{'in-process':<22}{ev['local_cw_per_s']:>18,.0f}{'-':>30}")
    for k in (1, 2):
        print(f"{f'Ray, {k} shard(s)':<22}{ev[f'ray_{k}_shard_cw_per_s']:>18,.0f}"
              f"{ev[f'startup_and_first_rollout_s_{k}']:>30.1f}")
    print(f"scaling efficiency (2 shards): {ev['scaling_efficiency_2_shards']:.2f}")
    if sweep:
        print(f"sweep of {sweep['jobs']:.0f} rapport-train jobs (debug=fast): sequential {sweep['sequential_s']:.1f} s, "
              f"Ray launcher {sweep['ray_s']:.1f} s, speed-up {sweep['speedup']:.2f}x")
    print(json.dumps({"bench": "ray", "cpus": cpus, "customers": args.customers, "weeks": args.weeks,
                      **{k: round(v, 3) for k, v in ev.items()},
                      **{f"sweep_{k}": round(v, 3) for k, v in sweep.items()}}))


if __name__ == "__main__":
    main()
