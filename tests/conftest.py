"""Shared fixtures: small populations keep the default tier fast."""

import numpy as np
import pytest

import rapport.envs as envs


@pytest.fixture
def small_env():
    env = envs.PopulationEnv(num_envs=500)
    env.reset(seed=7)
    return env


def random_actions(env, rng: np.random.Generator, contact_share: float = 0.5) -> np.ndarray:
    """Random valid actions with a given share of customers contacted."""
    n = env.num_envs
    nvec = env.single_action_space.nvec
    a = np.stack([rng.integers(0, k, n) for k in nvec], axis=1)
    a[rng.random(n) > contact_share, 0] = 0
    return a
