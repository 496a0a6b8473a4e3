"""Gymnasium contract of both registered envs: make/make_vec, checkers, pickle, spaces, errors."""

import pickle

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import rapport.envs as envs
from tests.conftest import random_actions


def test_ids_are_registered_and_build():
    vec = gymnasium.make_vec(envs.POPULATION_ID, num_envs=64, horizon=10)
    assert isinstance(vec, envs.PopulationEnv)
    assert vec.num_envs == 64
    assert vec.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    single = gymnasium.make(envs.CUSTOMER_ID, customer_index=3)
    assert isinstance(single.unwrapped, envs.CustomerEnv)
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (64, len(envs.FEATURE_NAMES)) and obs.dtype == np.float32
    assert vec.observation_space.contains(np.ascontiguousarray(obs))


def test_gymnasium_and_sb3_checkers_pass_on_single_env():
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    check_env(envs.CustomerEnv(customer_index=5), skip_render_check=True)
    sb3_check_env(envs.CustomerEnv(customer_index=5), warn=True)


@pytest.mark.parametrize("scenario", ["subscription", "fame", "privacy_sensitive"])
def test_gymnasium_checker_passes_on_every_preset(scenario):
    check_env(envs.CustomerEnv(scenario=scenario, customer_index=5), skip_render_check=True)


def test_info_carries_costs_market_and_latent_truth():
    env = envs.PopulationEnv(num_envs=50, scenario="fame", horizon=5)
    _, info = env.reset(seed=1)
    assert set(info["market"]) == {"week", "budget", "adstock", "awareness"}
    _, reward, _, _, info = env.step(np.zeros((50, 3), np.int64))
    for key in ("mass_media_cost", "converted", "orders_offline"):
        assert info[key].shape == (50,)
    for key in ("treatment_effect", "rate_drift", "online_share", "purchase_rate", "alive"):
        assert info["latent"][key].shape == (50,)
    assert (reward <= info["revenue"] - info["mass_media_cost"] + 1e-4).all()
    quiet_rows = info["orders"] == 0  # no orders, no actions: the mass-media charge is the profit
    np.testing.assert_array_equal(reward[quiet_rows], -info["mass_media_cost"][quiet_rows])
    assert (info["mass_media_cost"] == env.scenario.mass_media.reference_budget).all()
    quiet = envs.PopulationEnv(num_envs=50, horizon=5, include_latent=True, treatment_effect=False)
    quiet.reset(seed=1)
    assert "treatment_effect" not in quiet.step(np.zeros((50, 3), np.int64))[4]["latent"]


def test_pickle_round_trip_keeps_the_trajectory():
    env = envs.PopulationEnv(num_envs=200)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    env.step(random_actions(env, rng))
    clone = pickle.loads(pickle.dumps(env))
    a = random_actions(env, rng)
    o1, r1, *_ = env.step(a)
    o2, r2, *_ = clone.step(a)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(r1, r2)
    single = envs.CustomerEnv(customer_index=2)
    single.reset(seed=1)
    clone1 = pickle.loads(pickle.dumps(single))
    s1, s2 = single.step([1, 0, 0]), clone1.step([1, 0, 0])
    np.testing.assert_array_equal(s1[0], s2[0])
    assert s1[1:4] == s2[1:4]


def test_feature_names_match_observation_and_spaces():
    env = envs.PopulationEnv(num_envs=10)
    assert env.single_observation_space.shape == (len(env.feature_names),)
    assert list(env.single_action_space.nvec) == [6, 8, 4]
    assert env.offer_names[0] == "none" and env.offer_names[-1] == "service_gesture"
    assert env.spend_levels[0] == 0.0
    obs, info = env.reset(seed=0)
    assert info["action_mask"].shape == (10, 18) and info["action_mask"].dtype == bool
    assert "latent" in info and "alive" in info["latent"]


def test_latent_truth_never_in_observation():
    assert not any(name in envs.FEATURE_NAMES for name in ("alive", "rate", "p_drop", "response"))


def test_step_outputs_and_info_components(small_env):
    rng = np.random.default_rng(1)
    obs, reward, term, trunc, info = small_env.step(random_actions(small_env, rng))
    assert reward.shape == (500,) and reward.dtype == np.float32
    assert term.dtype == bool and trunc.dtype == bool
    recomputed = info["revenue"] - info["contact_cost"] - info["media_cost"]
    # profit = revenue − cogs − costs, so it never exceeds revenue minus costs
    assert np.all(reward <= recomputed + 1e-4)
    for key in ("orders", "discount_cost", "channel", "offer", "opted_out"):
        assert info[key].shape == (500,)


def test_truncation_at_horizon_and_next_step_reset():
    env = envs.PopulationEnv(num_envs=50, horizon=3)
    env.reset(seed=0)
    zero = np.zeros((50, 3), np.int64)
    for _ in range(2):
        _, _, term, trunc, _ = env.step(zero)
        assert not trunc.any()
    _, _, term, trunc, _ = env.step(zero)
    assert trunc.all() and not term.any()
    obs, reward, term, trunc, _ = env.step(zero)  # the reset step
    assert np.all(reward == 0) and not trunc.any()
    assert np.all(obs[:, envs.FEATURE_NAMES.index("horizon_progress")] == 0)


def test_same_step_autoreset_reports_final_obs():
    env = envs.PopulationEnv(num_envs=20, horizon=2, autoreset_mode="same_step")
    assert env.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    env.reset(seed=0)
    zero = np.zeros((20, 3), np.int64)
    env.step(zero)
    obs, _, _, trunc, info = env.step(zero)
    assert trunc.all() and info["_final_obs"].all()
    hp = envs.FEATURE_NAMES.index("horizon_progress")
    assert np.all(info["final_obs"][:, hp] == 1.0) and np.all(obs[:, hp] == 0.0)


def test_termination_only_when_unreachable():
    env = envs.PopulationEnv(num_envs=30, horizon=10)
    env.reset(seed=0)
    env.sim.state.optin[:, :5] = False  # rows 0-4 opted out of everything
    _, _, term, trunc, _ = env.step(np.zeros((30, 3), np.int64))
    assert term[:5].all() and not term[5:].any() and not trunc.any()
    # latent death does not end an episode
    env.sim.state.alive[10:] = False
    _, _, term, _, _ = env.step(np.zeros((30, 3), np.int64))
    assert not term[10:].any()


@pytest.mark.parametrize(
    "action, message",
    [
        (np.full((10, 3), 9), "channel 9, valid range is 0..5"),
        (np.zeros((10, 2)), "shape"),
        (np.zeros((9, 3)), "shape"),
        (np.full((10, 3), 0.5), "integers"),
        (np.full((10, 3), -1), "valid range"),
    ],
)
def test_action_outside_space_is_rejected(action, message):
    env = envs.PopulationEnv(num_envs=10)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(action)


def test_single_env_rejects_bad_action():
    env = envs.CustomerEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="offer 8, valid range is 0..7"):
        env.step([0, 8, 0])


def test_step_before_reset_is_an_error():
    with pytest.raises(RuntimeError, match="reset"):
        envs.PopulationEnv(num_envs=3).step(np.zeros((3, 3), np.int64))


def test_contact_on_opted_out_channel_costs_nothing_and_does_nothing():
    env = envs.PopulationEnv(num_envs=400, horizon=10)
    env.reset(seed=4)
    env.sim.state.optin[1] = False  # nobody reachable by SMS
    twin = envs.PopulationEnv(num_envs=400, horizon=10)
    twin.reset(seed=4)
    twin.sim.state.optin[1] = False
    sms_with_discount = np.tile([2, 3, 0], (400, 1))
    o1, r1, _, _, info = env.step(sms_with_discount)
    o2, r2, *_ = twin.step(np.zeros((400, 3), np.int64))
    assert np.all(info["contact_cost"] == 0) and np.all(info["channel"] == 0)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(o1, o2)
    assert not info["action_mask"][:, 2].any()


def test_held_observations_are_never_overwritten_and_dropped_ones_are_recycled():
    env = envs.PopulationEnv(num_envs=300, horizon=30)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=1)
    held = [obs, obs.copy()]  # the array itself and what it looked like when returned
    for _ in range(5):
        obs, *_ = env.step(np.stack([rng.integers(0, k, 300) for k in env.single_action_space.nvec], 1))
        held.append(obs)
        held.append(obs.copy())
    # every observation anyone still holds is exactly what it was when it was returned
    for arr, snapshot in zip(held[::2], held[1::2], strict=True):
        np.testing.assert_array_equal(arr, snapshot)
    assert len({id(a.base) for a in held[::2]}) == 6  # six live observations, six buffers
    del held, obs
    # nothing outside the env holds an observation now: the next steps reuse the pooled memory
    ptrs = set()
    for _ in range(4):
        o, *_ = env.step(np.zeros((300, 3), np.int64))
        ptrs.add(o.__array_interface__["data"][0])
        del o
    assert len(ptrs) == 1
