"""PPO training throughput on a natively batched env, with the tuned defaults of rapport.agents.rl.

Measures customer-weeks (env steps) per second of wall time for ``PPO.learn`` and splits the wall
time into: the native ``env.step`` calls, the SB3 adapter around them (copies, infos, resets),
the PPO update (``model.train``) and the rest (rollout forward passes, SB3's per-step loops).
Prints a table, then one JSON line.

Usage::

    python scripts/bench_ppo.py                      # Rapport/Population-v0 (retail), 4096 customers
    python scripts/bench_ppo.py --env fatigue        # a sanity env (no simulator cost)
    python scripts/bench_ppo.py --masked             # sb3-contrib MaskablePPO with the env's mask
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np
import torch

from rapport.agents.rl import make_maskable_ppo, make_ppo
from rapport.agents.sb3_adapter import BatchedVecEnv

SANITY = ("fatigue", "churn", "best_offer")


def make_env(name: str, n_envs: int, mode: str) -> gymnasium.vector.VectorEnv:
    if name in SANITY:
        from rapport.envs.sanity import BestOfferEnv, ChurnEnv, FatigueEnv

        cls = {"fatigue": FatigueEnv, "churn": ChurnEnv, "best_offer": BestOfferEnv}[name]
        return cls(num_envs=n_envs, autoreset_mode=mode)
    import rapport.envs as envs  # noqa: F401  (registers Rapport/* ids)

    if "Rapport/Population-v0" not in gymnasium.registry:
        raise SystemExit("Rapport/Population-v0 is not registered by `import envs` yet")
    return gymnasium.make_vec("Rapport/Population-v0", num_envs=n_envs, autoreset_mode=mode)


class Stopwatch:
    """Accumulates the wall time spent inside a wrapped callable."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1
        return timed


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    vector_env = make_env(args.env, args.n_envs, args.mode)
    env_clock, adapter_clock, update_clock = Stopwatch(), Stopwatch(), Stopwatch()
    # Instance-level patches, bench only: count time without changing what runs.
    vector_env.step = env_clock.wrap(vector_env.step)
    venv = BatchedVecEnv(vector_env)
    venv.step_wait = adapter_clock.wrap(venv.step_wait)
    factory = make_maskable_ppo if args.masked else make_ppo
    overrides = {} if args.n_epochs is None else {"n_epochs": args.n_epochs}
    model = factory(venv, rollout_size=args.rollout_size, n_minibatches=args.n_minibatches,
                    seed=args.seed, torch_threads=args.threads, **overrides)
    model.train = update_clock.wrap(model.train)
    if args.warmup:  # one update first: torch's first passes allocate and are slow
        model.learn(model.n_steps * venv.num_envs)
        for clock in (env_clock, adapter_clock, update_clock):
            clock.seconds, clock.calls = 0.0, 0
    start_steps = model.num_timesteps
    t0 = time.perf_counter()
    model.learn(args.timesteps, reset_num_timesteps=False)
    wall = time.perf_counter() - t0
    steps = model.num_timesteps - start_steps
    adapter_only = adapter_clock.seconds - env_clock.seconds
    rest = wall - adapter_clock.seconds - update_clock.seconds
    return {
        "bench": "ppo_throughput",
        "env": args.env,
        "autoreset_mode": args.mode,
        "algo": "MaskablePPO" if args.masked else "PPO",
        "n_envs": venv.num_envs,
        "n_steps": model.n_steps,
        "batch_size": model.batch_size,
        "n_epochs": model.n_epochs,
        "torch_threads": torch.get_num_threads(),
        "env_steps": int(steps),
        "wall_s": round(wall, 3),
        "env_steps_per_s": round(steps / wall, 1),
        "env_step_share": round(env_clock.seconds / wall, 4),
        "adapter_share": round(adapter_only / wall, 4),
        "update_share": round(update_clock.seconds / wall, 4),
        "other_share": round(rest / wall, 4),
        "env_step_calls": env_clock.calls,
        "us_per_env_step_call": round(1e6 * env_clock.seconds / max(env_clock.calls, 1), 1),
        "ep_rew_mean": model.metrics.latest.get("rollout/ep_rew_mean", float("nan")),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "machine": "shared 2-core CPU (other sessions running)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="population", choices=[*SANITY, "population"])
    parser.add_argument("--n-envs", type=int, default=4096, help="customers per batched step")
    parser.add_argument("--timesteps", type=int, default=1_000_000, help="env steps to time")
    parser.add_argument("--mode", default="same_step", choices=["same_step", "next_step"])
    parser.add_argument("--rollout-size", type=int, default=32768)
    parser.add_argument("--n-minibatches", type=int, default=4)
    parser.add_argument("--n-epochs", type=int, default=None, help="default: rapport.agents.rl's")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--masked", action="store_true", help="MaskablePPO instead of PPO")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false")
    parser.add_argument("--seed", type=int, default=0)
    result = run(parser.parse_args())
    rows = [("env steps/s", f"{result['env_steps_per_s']:,.0f}"),
            ("wall (s)", f"{result['wall_s']:.2f}"),
            ("share in env.step", f"{result['env_step_share']:.1%}"),
            ("share in adapter", f"{result['adapter_share']:.1%}"),
            ("share in PPO update", f"{result['update_share']:.1%}"),
            ("share elsewhere (rollout fwd, SB3 loops)", f"{result['other_share']:.1%}"),
            ("us per env.step call", f"{result['us_per_env_step_call']:.0f}")]
    print(f"PPO throughput: {result['env']} ({result['autoreset_mode']}), "
          f"{result['n_envs']} customers, n_steps {result['n_steps']}, batch "
          f"{result['batch_size']}, epochs {result['n_epochs']}, "
          f"{result['torch_threads']} torch thread(s)")
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value:>12}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
