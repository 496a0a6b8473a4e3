"""Golden trace of every scenario preset: sha256 of obs, reward and info over some weeks.

Run before and after a change that must leave today's outputs bit-identical; the digests must
match. Random valid actions (fixed generator, action mask applied), latent info included, the
mass-media budget changed mid-episode where the preset has mass media.

    python scripts/hash_presets.py [--customers 2000] [--weeks 20] [--presets retail fame]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from typing import Any

import numpy as np

import rapport.envs as envs


def _feed(h: Any, value: Any) -> None:
    if isinstance(value, dict):
        for k in sorted(value):
            h.update(k.encode())
            _feed(h, value[k])
    elif isinstance(value, np.ndarray):
        h.update(str(value.dtype).encode() + str(value.shape).encode())
        h.update(np.ascontiguousarray(value).tobytes())
    else:
        h.update(repr(value).encode())


def trace(scenario: str, customers: int = 2000, weeks: int = 20, seed: int = 7) -> str:
    """sha256 of (obs, reward, terminated, truncated, info) of every step of one episode."""
    env = envs.PopulationEnv(num_envs=customers, scenario=scenario, horizon=weeks, include_latent=True)
    rng = np.random.default_rng(seed)
    h = hashlib.sha256()
    obs, info = env.reset(seed=seed)
    _feed(h, obs)
    _feed(h, info)
    nvec = env.single_action_space.nvec
    for t in range(weeks):
        if env.sim.market.enabled and t == weeks // 2:
            env.set_mass_media_budget(0.0)  # the market leaves its steady state
        actions = rng.integers(0, nvec, size=(customers, len(nvec)))
        actions[rng.random(customers) < 0.5] = 0
        ok = info["action_mask"][np.arange(customers), actions[:, 0]] if info["action_mask"].ndim == 2 else True
        actions[~np.asarray(ok, bool)] = 0
        obs, reward, terminated, truncated, info = env.step(actions)
        for part in (obs, reward, terminated, truncated, info):
            _feed(h, part)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--weeks", type=int, default=20)
    ap.add_argument("--presets", nargs="*", default=None)
    args = ap.parse_args()
    names = args.presets or sorted(envs.PRESETS)
    out = {name: trace(name, args.customers, args.weeks) for name in names}
    for name, digest in out.items():
        print(f"{name:<20} {digest}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
