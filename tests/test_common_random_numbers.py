"""Common random numbers: a customer's noise depends only on (seed, index, episode, week, mechanism).

Every preset is checked, including those with population-level mechanisms: the mass-media market
(awareness, adstock) depends only on the budget schedule, never on per-person actions, so it does
not break any of these properties (envs/market.py).
"""

import numpy as np
import pytest

import rapport.envs as envs

PRESETS = sorted(envs.PRESETS)


def rollout(env, actions_fn, weeks, seed=11):
    obs, _ = env.reset(seed=seed)
    traj = [obs.copy()]
    rewards = []
    for t in range(weeks):
        obs, r, *_ = env.step(actions_fn(t))
        traj.append(obs.copy())
        rewards.append(r.copy())
    return np.stack(traj), np.stack(rewards)


def policy_for(n, seed=5, nvec=(6, 8, 4)):
    rng = np.random.default_rng(seed)
    acts = [np.stack([rng.integers(0, k, n) for k in nvec], 1) for _ in range(60)]
    return lambda t: acts[t]


def nvec_of(scenario):
    return tuple(envs.PopulationEnv(num_envs=1, scenario=scenario).single_action_space.nvec)


@pytest.mark.parametrize("scenario", PRESETS)
def test_same_seed_bit_identical(scenario):
    pol = policy_for(300, nvec=nvec_of(scenario))
    a = rollout(envs.PopulationEnv(num_envs=300, horizon=20, scenario=scenario), pol, 20)
    b = rollout(envs.PopulationEnv(num_envs=300, horizon=20, scenario=scenario), pol, 20)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = rollout(envs.PopulationEnv(num_envs=300, horizon=20, scenario=scenario), pol, 20, seed=12)
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("scenario", PRESETS)
def test_changing_one_customers_actions_leaves_others_identical(scenario):
    base = policy_for(300, nvec=nvec_of(scenario))

    def changed(t):
        a = base(t).copy()
        a[42] = [4, 3, 3]  # direct mail with the deepest discount and top spend, every week
        return a

    o1, r1 = rollout(envs.PopulationEnv(num_envs=300, horizon=20, scenario=scenario), base, 20)
    o2, r2 = rollout(envs.PopulationEnv(num_envs=300, horizon=20, scenario=scenario), changed, 20)
    others = np.arange(300) != 42
    np.testing.assert_array_equal(o1[:, others], o2[:, others])
    np.testing.assert_array_equal(r1[:, others], r2[:, others])
    assert not np.array_equal(r1[:, 42], r2[:, 42]) or not np.array_equal(o1[:, 42], o2[:, 42])


def test_mass_media_budget_is_the_documented_population_level_channel():
    """The budget (not anyone's per-person actions) moves everyone: the same customers and
    noise, a different market."""
    pol = policy_for(300, nvec=nvec_of("fame"))
    o1, r1 = rollout(envs.PopulationEnv(num_envs=300, horizon=20, scenario="fame"), pol, 20)
    env = envs.PopulationEnv(num_envs=300, horizon=20, scenario="fame")
    env.set_mass_media_budget(0.0)
    o2, r2 = rollout(env, pol, 20)
    aware = envs.FEATURE_NAMES.index("brand_awareness")
    np.testing.assert_array_equal(o1[0], o2[0])  # the same customers at reset
    assert o2[-1, 0, aware] < o1[-1, 0, aware]
    assert not np.array_equal(r1, r2)


@pytest.mark.parametrize("big", [100_000, pytest.param(1_000_000, marks=pytest.mark.slow)])
@pytest.mark.parametrize("scenario", ["retail", "fame"])
def test_customer_is_the_same_in_any_population_size(big, scenario):
    rng = np.random.default_rng(0)
    nvec = nvec_of(scenario)
    small_acts = [np.stack([rng.integers(0, k, 10) for k in nvec], 1) for _ in range(8)]

    def big_policy(t):
        a = np.zeros((big, 3), np.int64)
        a[:10] = small_acts[t]
        a[10:, 0] = 1  # other customers get e-mail: must not matter for rows 0-9
        a[10:, 2] = 1  # and paid media
        return a

    o_small, r_small = rollout(envs.PopulationEnv(num_envs=10, horizon=8, scenario=scenario),
                               lambda t: small_acts[t], 8)
    o_big, r_big = rollout(envs.PopulationEnv(num_envs=big, horizon=8, scenario=scenario), big_policy, 8)
    np.testing.assert_array_equal(o_small, o_big[:, :10])
    np.testing.assert_array_equal(r_small, r_big[:, :10])


@pytest.mark.parametrize("scenario", PRESETS)
def test_single_env_matches_vector_row_across_episodes(scenario):
    n, horizon = 40, 6
    pol = policy_for(n, nvec=nvec_of(scenario))
    vec = envs.PopulationEnv(num_envs=n, horizon=horizon, scenario=scenario)
    obs_v, _ = vec.reset(seed=21)
    singles = [envs.CustomerEnv(horizon=horizon, customer_index=i, scenario=scenario) for i in (0, 17, 39)]
    [s.reset(seed=21)[0] for s in singles]
    for t in range(2 * horizon + 1):
        a = pol(t)
        obs_v, r_v, term_v, trunc_v, info_v = vec.step(a)
        for s, i in zip(singles, (0, 17, 39), strict=False):
            if t == horizon:  # NEXT_STEP reset step of the vector env ↔ reset() of the single env
                o, _ = s.reset()
                np.testing.assert_array_equal(o, obs_v[i])
                assert r_v[i] == 0
                continue
            o, r, term, trunc, info = s.step(a[i])
            np.testing.assert_array_equal(o, obs_v[i])
            assert r == r_v[i] and term == term_v[i] and trunc == trunc_v[i]
            assert info["latent"]["treatment_effect"] == info_v["latent"]["treatment_effect"][i]
            assert info["market"] == info_v["market"]


def test_customer_offset_gives_shards_the_same_customers():
    full = rollout(envs.PopulationEnv(num_envs=100, horizon=5), policy_for(100), 5)
    pol = policy_for(100)
    shard = rollout(envs.PopulationEnv(num_envs=40, horizon=5, customer_offset=60),
                    lambda t: pol(t)[60:], 5)
    np.testing.assert_array_equal(full[0][:, 60:], shard[0])
    np.testing.assert_array_equal(full[1][:, 60:], shard[1])
