"""Common random numbers: a customer's noise depends only on (seed, index, episode, week, mechanism)."""

import numpy as np
import pytest

import envs


def rollout(env, actions_fn, weeks, seed=11):
    obs, _ = env.reset(seed=seed)
    traj = [obs.copy()]
    rewards = []
    for t in range(weeks):
        obs, r, *_ = env.step(actions_fn(t))
        traj.append(obs.copy())
        rewards.append(r.copy())
    return np.stack(traj), np.stack(rewards)


def policy_for(n, seed=5):
    rng = np.random.default_rng(seed)
    acts = [np.stack([rng.integers(0, k, n) for k in (6, 8, 4)], 1) for _ in range(60)]
    return lambda t: acts[t]


def test_same_seed_bit_identical():
    a = rollout(envs.PopulationEnv(num_envs=300, horizon=20), policy_for(300), 20)
    b = rollout(envs.PopulationEnv(num_envs=300, horizon=20), policy_for(300), 20)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = rollout(envs.PopulationEnv(num_envs=300, horizon=20), policy_for(300), 20, seed=12)
    assert not np.array_equal(a[1], c[1])


def test_changing_one_customers_actions_leaves_others_identical():
    base = policy_for(300)

    def changed(t):
        a = base(t).copy()
        a[42] = [4, 3, 3]  # direct mail with the deepest discount and top spend, every week
        return a

    o1, r1 = rollout(envs.PopulationEnv(num_envs=300, horizon=20), base, 20)
    o2, r2 = rollout(envs.PopulationEnv(num_envs=300, horizon=20), changed, 20)
    others = np.arange(300) != 42
    np.testing.assert_array_equal(o1[:, others], o2[:, others])
    np.testing.assert_array_equal(r1[:, others], r2[:, others])
    assert not np.array_equal(r1[:, 42], r2[:, 42]) or not np.array_equal(o1[:, 42], o2[:, 42])


@pytest.mark.parametrize("big", [100_000, pytest.param(1_000_000, marks=pytest.mark.slow)])
def test_customer_is_the_same_in_any_population_size(big):
    rng = np.random.default_rng(0)
    small_acts = [np.stack([rng.integers(0, k, 10) for k in (6, 8, 4)], 1) for _ in range(8)]

    def big_policy(t):
        a = np.zeros((big, 3), np.int64)
        a[:10] = small_acts[t]
        a[10:, 0] = 1  # other customers get e-mail: must not matter for rows 0-9
        return a

    o_small, r_small = rollout(envs.PopulationEnv(num_envs=10, horizon=8), lambda t: small_acts[t], 8)
    o_big, r_big = rollout(envs.PopulationEnv(num_envs=big, horizon=8), big_policy, 8)
    np.testing.assert_array_equal(o_small, o_big[:, :10])
    np.testing.assert_array_equal(r_small, r_big[:, :10])


def test_single_env_matches_vector_row_across_episodes():
    n, horizon = 40, 6
    pol = policy_for(n)
    vec = envs.PopulationEnv(num_envs=n, horizon=horizon)
    obs_v, _ = vec.reset(seed=21)
    singles = [envs.CustomerEnv(horizon=horizon, customer_index=i) for i in (0, 17, 39)]
    [s.reset(seed=21)[0] for s in singles]
    for t in range(2 * horizon + 1):
        a = pol(t)
        obs_v, r_v, term_v, trunc_v, _ = vec.step(a)
        for s, i in zip(singles, (0, 17, 39), strict=False):
            if t == horizon:  # NEXT_STEP reset step of the vector env ↔ reset() of the single env
                o, _ = s.reset()
                np.testing.assert_array_equal(o, obs_v[i])
                assert r_v[i] == 0
                continue
            o, r, term, trunc, _ = s.step(a[i])
            np.testing.assert_array_equal(o, obs_v[i])
            assert r == r_v[i] and term == term_v[i] and trunc == trunc_v[i]


def test_customer_offset_gives_shards_the_same_customers():
    full = rollout(envs.PopulationEnv(num_envs=100, horizon=5), policy_for(100), 5)
    pol = policy_for(100)
    shard = rollout(envs.PopulationEnv(num_envs=40, horizon=5, customer_offset=60),
                    lambda t: pol(t)[60:], 5)
    np.testing.assert_array_equal(full[0][:, 60:], shard[0])
    np.testing.assert_array_equal(full[1][:, 60:], shard[1])
