"""BatchedVecEnv: SB3 semantics over natively batched Gymnasium vector envs."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor, VecNormalize

from rapport.agents.sb3_adapter import (
    BatchedVecEnv,
    flatten_actions,
    joint_action_mask,
    unflatten_actions,
)
from rapport.envs.sanity import BestOfferEnv, ChurnEnv, FatigueEnv, SpendEnv

torch.set_num_threads(1)


def _cartpole() -> gymnasium.Env:
    # A short time limit so both truncations and terminations happen under random actions.
    return gymnasium.make("CartPole-v1", max_episode_steps=12)


@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_matches_sb3_dummy_vec_env_step_for_step(mode: AutoresetMode) -> None:
    """Same seeds, same actions: the adapter over a Gymnasium SyncVectorEnv (any autoreset
    mode) gives exactly what SB3's reference DummyVecEnv gives over the same envs."""
    n = 6
    ref = DummyVecEnv([_cartpole for _ in range(n)])
    ours = BatchedVecEnv(SyncVectorEnv([_cartpole for _ in range(n)], autoreset_mode=mode))
    ref.seed(7)
    ours.seed(7)
    np.testing.assert_array_equal(ours.reset(), ref.reset())
    rng = np.random.default_rng(0)
    seen_truncation = seen_termination = False
    for _ in range(80):
        actions = rng.integers(0, 2, n)
        obs, rew, done, infos = ours.step(actions)
        r_obs, r_rew, r_done, r_infos = ref.step(actions)
        np.testing.assert_array_equal(obs, r_obs)
        np.testing.assert_array_equal(rew, r_rew)
        np.testing.assert_array_equal(done, r_done)
        for i in np.flatnonzero(done):
            np.testing.assert_array_equal(infos[i]["terminal_observation"],
                                          r_infos[i]["terminal_observation"])
            assert infos[i]["TimeLimit.truncated"] == r_infos[i]["TimeLimit.truncated"]
            seen_truncation |= infos[i]["TimeLimit.truncated"]
            seen_termination |= not infos[i]["TimeLimit.truncated"]
    assert seen_truncation and seen_termination


def _rollout(venv: BatchedVecEnv, steps: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    venv.seed(seed)
    trace = [venv.reset()]
    for _ in range(steps):
        space, n = venv.vector_env.single_action_space, venv.num_envs
        if isinstance(space, gymnasium.spaces.Box):
            actions = rng.uniform(0, 1, (n, *space.shape)).astype(np.float32)
        elif isinstance(space, gymnasium.spaces.MultiDiscrete):
            actions = rng.integers(0, space.nvec, (n, len(space.nvec)))
        else:
            actions = rng.integers(0, space.n, n)
        obs, rew, done, infos = venv.step(actions)
        terminal = [(i, infos[i]["terminal_observation"], infos[i]["TimeLimit.truncated"])
                    for i in np.flatnonzero(done)]
        trace.append((obs, rew, done, terminal, venv.action_masks().copy()
                      if venv.has_attr("action_masks") else None))
    return trace


def _assert_same_trace(a: list, b: list) -> None:
    np.testing.assert_array_equal(a[0], b[0])
    for (o1, r1, d1, t1, m1), (o2, r2, d2, t2, m2) in zip(a[1:], b[1:], strict=True):
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(m1, m2)
        assert [i for i, _, _ in t1] == [i for i, _, _ in t2]
        for (_, x1, f1), (_, x2, f2) in zip(t1, t2, strict=True):
            np.testing.assert_array_equal(x1, x2)
            assert f1 == f2


@pytest.mark.parametrize("make", [
    lambda mode: BestOfferEnv(num_envs=16, autoreset_mode=mode),  # everyone done every step
    lambda mode: FatigueEnv(num_envs=16, horizon=4, autoreset_mode=mode),  # shared horizon
    lambda mode: ChurnEnv(num_envs=32, horizon=5, autoreset_mode=mode),  # partial dones
], ids=["best_offer", "fatigue", "churn"])
def test_next_step_env_looks_like_same_step_env(make) -> None:
    """SB3 cannot tell a NEXT_STEP env from its SAME_STEP twin: no wasted reset step, no
    zero reward, same terminal observations, same masks."""
    same = _rollout(BatchedVecEnv(make("same_step")), 25, seed=3)
    nxt = _rollout(BatchedVecEnv(make("next_step")), 25, seed=3)
    _assert_same_trace(nxt, same)
    assert sum(t[2].sum() for t in same[1:]) > 0


def test_time_outs_bootstrap_and_terminations_do_not() -> None:
    horizon = 3
    venv = BatchedVecEnv(ChurnEnv(num_envs=64, horizon=horizon, contact_churn=0.5,
                                  autoreset_mode="next_step"))
    venv.seed(0)
    obs = venv.reset()
    contact = np.tile([1, 0], (64, 1))  # email everyone: about half churn each week
    weeks = np.zeros(64, int)
    n_timeouts = n_churned = 0
    for _ in range(10):
        obs, rew, done, infos = venv.step(contact)
        weeks += 1
        for i in np.flatnonzero(done):
            timed_out = infos[i]["TimeLimit.truncated"]
            # Survivors of the last week time out; churners (who buy nothing, so pay the
            # contact cost) are terminated, even in the last week.
            assert timed_out == (rew[i] > 0)
            assert weeks[i] == horizon if timed_out else weeks[i] <= horizon
            # The terminal observation shows the week it ended; the new episode starts at 0.
            assert infos[i]["terminal_observation"][0] == pytest.approx(weeks[i] / horizon)
            assert obs[i, 0] == 0.0
            n_timeouts += timed_out
            n_churned += not timed_out
        weeks[done] = 0
    assert n_timeouts > 0 and n_churned > 0


def test_next_step_partial_done_needs_reset_mask() -> None:
    venv = BatchedVecEnv(ChurnEnv(num_envs=64, autoreset_mode="next_step"), partial_reset=False)
    venv.reset()
    with pytest.raises(RuntimeError, match="same_step"):
        for _ in range(20):
            venv.step(np.tile([1, 0], (64, 1)))


def test_rejects_string_autoreset_mode() -> None:
    env = FatigueEnv(num_envs=2)
    env.metadata = {**env.metadata, "autoreset_mode": "next_step"}
    with pytest.raises(ValueError, match="AutoresetMode"):
        BatchedVecEnv(env)


def test_infos_are_cheap_and_safe() -> None:
    venv = BatchedVecEnv(FatigueEnv(num_envs=8, horizon=2, autoreset_mode="same_step"))
    venv.reset()
    _, _, done, infos = venv.step(np.zeros(8, np.int64))
    assert not done.any() and len(infos) == 8
    assert all(info is infos[0] for info in infos)  # one shared dict for not-done rows
    with pytest.raises(TypeError, match="read-only"):
        infos[3]["x"] = 1
    _, rew, done, infos = venv.step(np.ones(8, np.int64))
    assert done.all() and len({id(i) for i in infos}) == 8
    infos[0]["mine"] = 1  # done rows own their dict
    assert "fatigue" not in infos[1]  # per-customer arrays stay in step_info
    assert venv.step_info["action_mask"].shape == (8, 2)
    ep = infos[2]["episode"]
    assert ep["l"] == 2 and ep["r"] == pytest.approx(float(rew[2]))


def test_seed_makes_rollouts_reproducible() -> None:
    def trace(seed: int) -> list:
        return _rollout(BatchedVecEnv(ChurnEnv(num_envs=16, autoreset_mode="same_step")), 10,
                        seed)
    _assert_same_trace(trace(5), trace(5))
    with pytest.raises(AssertionError):
        _assert_same_trace(trace(5), trace(6))


def test_action_masks_follow_current_observations() -> None:
    from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported

    env = BestOfferEnv(num_envs=16, autoreset_mode="next_step")
    venv = BatchedVecEnv(env)
    venv.seed(1)
    obs = venv.reset()
    for _ in range(3):
        mask = venv.action_masks()
        segment = obs.argmax(axis=1)
        expected = np.ones((16, 7), bool)
        expected[np.arange(16), env.blocked_channel[segment]] = False
        np.testing.assert_array_equal(mask, expected)
        assert is_masking_supported(venv)
        # one batched entry, which sb3-contrib reshapes to (n_envs, k)
        np.testing.assert_array_equal(get_action_masks(venv).reshape(16, 7), mask)
        np.testing.assert_array_equal(venv.env_method("action_masks", indices=[2])[0], mask[2])
        obs, *_ = venv.step(env.optimal_actions(segment))

    no_masks = BatchedVecEnv(SpendEnv(num_envs=4))
    no_masks.reset()
    assert not is_masking_supported(no_masks)


def test_flatten_helpers_round_trip() -> None:
    nvec = (6, 8, 4)
    joint = np.arange(int(np.prod(nvec)))
    per_dim = unflatten_actions(joint, nvec)
    assert per_dim.shape == (192, 3) and per_dim.dtype == np.int64
    np.testing.assert_array_equal(flatten_actions(per_dim, nvec), joint)
    np.testing.assert_array_equal(per_dim[1], [0, 0, 1])  # last dimension fastest (C order)

    rng = np.random.default_rng(0)
    mask = rng.random((5, sum(nvec))) < 0.7
    jm = joint_action_mask(mask, nvec)
    parts = np.split(mask, np.cumsum(nvec)[:-1], axis=1)
    brute = parts[0][:, per_dim[:, 0]] & parts[1][:, per_dim[:, 1]] & parts[2][:, per_dim[:, 2]]
    np.testing.assert_array_equal(jm, brute)


def test_flattened_adapter_acts_on_the_right_pairs() -> None:
    env = BestOfferEnv(num_envs=12, autoreset_mode="next_step")
    venv = BatchedVecEnv(env, flatten_actions=True)
    assert venv.action_space == gymnasium.spaces.Discrete(12)
    venv.seed(2)
    obs = venv.reset()
    segment = obs.argmax(axis=1)
    best = env.optimal_actions(segment)
    joint_mask = venv.action_masks()
    assert joint_mask.shape == (12, 12)
    assert joint_mask[np.arange(12), flatten_actions(best, env.nvec)].all()
    _, rew, _, _ = venv.step(flatten_actions(best, env.nvec))
    np.testing.assert_allclose(rew, 1.0)

    with pytest.raises(ValueError, match="MultiDiscrete"):
        BatchedVecEnv(FatigueEnv(num_envs=2), flatten_actions=True)


def test_envs_reject_invalid_actions() -> None:
    env = BestOfferEnv(num_envs=4)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros((4, 3), np.int64))
    with pytest.raises(ValueError, match=r"\[0, \[3, 4\]\)"):
        env.step(np.full((4, 2), 3))
    spend = SpendEnv(num_envs=2)
    spend.reset(seed=0)
    with pytest.raises(ValueError, match="clip"):
        spend.step(np.full((2, 1), 1.5, np.float32))


def test_runs_under_sb3_vec_wrappers_and_ppo() -> None:
    """SB3's own VecEnv wrappers (per-row episode stats, running normalisation) accept it."""
    from rapport.agents.rl import make_ppo

    venv = VecNormalize(VecMonitor(BatchedVecEnv(ChurnEnv(num_envs=32,
                                                          autoreset_mode="next_step"))))
    model = make_ppo(venv, rollout_size=256, n_minibatches=2, seed=0)
    model.learn(1024)
    assert model.num_timesteps >= 1024
    assert "rollout/ep_rew_mean" in model.metrics.latest
