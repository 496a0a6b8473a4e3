"""Deep-RL learners: known optima of the sanity envs, learning within seconds, the Policy
protocol over SB3 models, save/load, and batched time-out bootstrapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

from rapport.agents.protocol import Policy
from rapport.agents.rl import (
    BatchedPPO,
    BatchedTimeoutBootstrap,
    make_a2c,
    make_dqn,
    make_maskable_ppo,
    make_ppo,
    make_sac,
    rollout_shape,
)
from rapport.agents.rl_policy import SB3Policy, load_model, save_model
from rapport.agents.sb3_adapter import BatchedVecEnv, flatten_actions, unflatten_actions
from rapport.envs.sanity import BestOfferEnv, ChurnEnv, FatigueEnv, SpendEnv

torch.set_num_threads(1)


# ---- the sanity envs' optima are what their docstrings claim -----------------------------------
def test_best_offer_optimum_by_brute_force() -> None:
    env = BestOfferEnv(num_envs=4, n_segments=4)
    segment = np.arange(4)
    joint = unflatten_actions(np.arange(12), env.nvec)
    values = np.stack([env.expected_reward(segment, np.tile(a, (4, 1))) for a in joint], axis=1)
    np.testing.assert_array_equal(joint[values.argmax(axis=1)], env.optimal_actions(segment))
    np.testing.assert_allclose(values.max(axis=1), 1.0)
    assert len({tuple(a) for a in env.optimal_actions(segment)}) == 4  # a different best each


def test_fatigue_cadence_optimum_by_brute_force() -> None:
    """Run every cadence k = 1..10 (and "never") through the env for 300 weeks from zero
    fatigue; the best average reward per week is at the analytic k* (here 3), and contacting
    every week or never are both worse."""
    ks = np.arange(1, 11)
    env = FatigueEnv(num_envs=len(ks) + 1, horizon=300, initial_fatigue_max=0.0,
                     autoreset_mode="same_step")
    env.reset(seed=0)
    total = np.zeros(env.num_envs)
    for week in range(300):
        contact = np.append(week % ks == 0, False).astype(np.int64)
        _, reward, *_ = env.step(contact)
        total += reward
    per_week = total / 300
    best_k = int(ks[np.argmax(per_week[:-1])])
    assert best_k == env.optimal_cadence() == 3
    assert per_week[best_k - 1] > max(per_week[0], per_week[-1], 0.0)
    np.testing.assert_allclose(per_week[:-1], env.cadence_reward_per_week(ks), atol=0.01)


def test_churn_never_contact_is_optimal() -> None:
    env = ChurnEnv(num_envs=20000, autoreset_mode="same_step")
    returns = {}
    for name, action in {"never": (0, 0), "email": (1, 0), "sms+discount": (2, 1)}.items():
        env.reset(seed=1)
        total, alive = np.zeros(env.num_envs), np.ones(env.num_envs, bool)
        for _ in range(env.horizon):
            _, reward, terminated, _, _ = env.step(np.tile(action, (env.num_envs, 1)))
            total += reward * alive
            alive &= ~terminated
        returns[name] = total.mean()
    assert returns["never"] == pytest.approx(env.optimal_return(), rel=0.01)
    assert returns["never"] > 2 * max(returns["email"], returns["sms+discount"])


def test_spend_optimum_on_a_grid() -> None:
    env = SpendEnv(num_envs=4)
    segment = np.arange(4)
    grid = np.linspace(0, 1, 10001)
    profits = np.stack([env.expected_profit(segment, np.full(4, x)) for x in grid], axis=1)
    np.testing.assert_allclose(grid[profits.argmax(axis=1)], env.optimal_spend(segment),
                               atol=2e-4)


# ---- learning: each family reaches the known optimum within seconds --------------------------
def _best_offer_value(policy: SB3Policy, masked: bool = False) -> float:
    env = BestOfferEnv(num_envs=2048)
    obs, info = env.reset(seed=123)
    actions, _ = policy.act(obs, np.random.default_rng(0),
                            action_mask=info["action_mask"] if masked else None)
    return float(env.expected_reward(env.segment, actions).mean())


def _churn_outcome(policy: SB3Policy, masked: bool = False) -> tuple[float, float]:
    """(mean return / optimal return, share of customer-weeks contacted) over one horizon."""
    env = ChurnEnv(num_envs=2048, autoreset_mode="same_step")
    obs, info = env.reset(seed=123)
    rng = np.random.default_rng(0)
    total, alive = np.zeros(env.num_envs), np.ones(env.num_envs, bool)
    contacts = weeks = 0
    for _ in range(env.horizon):
        actions, _ = policy.act(obs, rng, action_mask=info["action_mask"] if masked else None)
        contacts += int((actions[alive, 0] > 0).sum())
        weeks += int(alive.sum())
        obs, reward, terminated, _, info = env.step(actions)
        total += reward * alive
        alive &= ~terminated
    return float(total.mean() / env.optimal_return()), contacts / weeks


FAST = {"rollout_size": 2048, "seed": 0, "learning_rate": 3e-3}


@pytest.mark.parametrize("factory", [make_ppo, make_maskable_ppo], ids=["ppo", "maskable_ppo"])
def test_ppo_family_learns_best_offer(factory) -> None:
    model = factory(BatchedVecEnv(BestOfferEnv(num_envs=256)), **FAST)
    model.learn(16384)
    masked = factory is make_maskable_ppo
    assert _best_offer_value(SB3Policy(model, greedy=True), masked) >= 0.95


@pytest.mark.parametrize("factory", [make_ppo, make_maskable_ppo], ids=["ppo", "maskable_ppo"])
def test_ppo_family_learns_never_to_contact_churners(factory) -> None:
    model = factory(BatchedVecEnv(ChurnEnv(num_envs=256, autoreset_mode="same_step")), **FAST)
    model.learn(20480)
    value, contact_rate = _churn_outcome(SB3Policy(model, greedy=True),
                                         masked=factory is make_maskable_ppo)
    assert value >= 0.95 and contact_rate <= 0.05


def test_a2c_learns_best_offer() -> None:
    model = make_a2c(BatchedVecEnv(BestOfferEnv(num_envs=256)), rollout_size=1024, seed=0,
                     learning_rate=3e-3)
    model.learn(30720)
    assert _best_offer_value(SB3Policy(model, greedy=True)) >= 0.95


def test_dqn_learns_best_offer_on_flattened_actions() -> None:
    env = BestOfferEnv(num_envs=64)
    model = make_dqn(BatchedVecEnv(env, flatten_actions=True), seed=0,
                     samples_per_gradient_step=16, learning_starts=512,
                     target_update_interval=1000, exploration_fraction=0.2)
    model.learn(6400)
    assert _best_offer_value(SB3Policy(model, nvec=env.nvec, greedy=True)) >= 0.95


def test_sac_learns_per_person_spend() -> None:
    model = make_sac(BatchedVecEnv(SpendEnv(num_envs=32)), seed=0, learning_starts=256)
    model.learn(6016)
    env = SpendEnv(num_envs=2048)
    obs, _ = env.reset(seed=1)
    spend, _ = model.predict(obs, deterministic=True)
    best = env.expected_profit(env.segment, env.optimal_spend(env.segment)).mean()
    assert env.expected_profit(env.segment, spend[:, 0]).mean() >= 0.95 * best


# ---- the Policy protocol over SB3 models ---------------------------------------------------------
@pytest.fixture(scope="module")
def ppo_model() -> PPO:
    model = make_ppo(BatchedVecEnv(BestOfferEnv(num_envs=64)), rollout_size=256, seed=0)
    model.learn(256)  # barely trained: a spread-out distribution to sample from
    return model


def test_policy_protocol_shapes_and_masks(ppo_model: PPO) -> None:
    policy = SB3Policy(ppo_model)
    assert isinstance(policy, Policy)
    env = BestOfferEnv(num_envs=500)
    obs, info = env.reset(seed=0)
    mask = info["action_mask"]
    actions, prop = policy.act(obs, np.random.default_rng(0), action_mask=mask)
    assert actions.shape == (500, 2) and actions.dtype == np.int64
    assert prop.shape == (500,) and prop.dtype == np.float64
    assert np.all((prop > 0) & (prop <= 1))
    assert mask[np.arange(500), actions[:, 0]].all()  # never a masked channel
    probs = policy.action_probabilities(obs, mask)
    np.testing.assert_allclose(
        prop, probs[0][np.arange(500), actions[:, 0]] * probs[1][np.arange(500), actions[:, 1]])
    greedy_actions, greedy_prop = SB3Policy(ppo_model, greedy=True).act(
        obs, np.random.default_rng(0), action_mask=mask)
    np.testing.assert_array_equal(greedy_prop, 1.0)
    with pytest.raises(ValueError, match="obs must be"):
        policy.act(obs[:, :3], np.random.default_rng(0))
    with pytest.raises(ValueError, match="action_mask must be"):
        policy.act(obs, np.random.default_rng(0), action_mask=mask[:, :5])


def test_sampled_propensities_match_frequencies(ppo_model: PPO) -> None:
    policy = SB3Policy(ppo_model)
    obs = np.tile(np.eye(4, dtype=np.float32)[2], (40000, 1))
    actions, prop = policy.act(obs, np.random.default_rng(1))
    joint = flatten_actions(actions, (3, 4))
    freq = np.bincount(joint, minlength=12) / len(joint)
    expected = np.zeros(12)
    expected[joint] = prop  # every row has the same distribution
    np.testing.assert_allclose(freq, expected, atol=0.01)


def test_policy_sampling_uses_the_callers_rng(ppo_model: PPO) -> None:
    policy = SB3Policy(ppo_model)
    obs, _ = BestOfferEnv(num_envs=200).reset(seed=0)
    a1, p1 = policy.act(obs, np.random.default_rng(9))
    torch.manual_seed(123)  # torch's global RNG must not matter
    a2, p2 = policy.act(obs, np.random.default_rng(9))
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(p1, p2)


def test_dqn_policy_is_epsilon_greedy_over_allowed_joint_actions() -> None:
    env = BestOfferEnv(num_envs=32)
    model = make_dqn(BatchedVecEnv(env, flatten_actions=True), seed=0, learning_starts=64)
    model.learn(128)
    obs, info = BestOfferEnv(num_envs=300).reset(seed=0)
    policy = SB3Policy(model, nvec=env.nvec, epsilon=0.2)
    actions, prop = policy.act(obs, np.random.default_rng(0), action_mask=info["action_mask"])
    assert actions.shape == (300, 2)
    assert info["action_mask"][np.arange(300), actions[:, 0]].all()
    n_allowed = 2 * 4  # one of three channels is blocked
    assert set(np.round(prop, 6)) <= {round(0.8 + 0.2 / n_allowed, 6), round(0.2 / n_allowed, 6)}
    with pytest.raises(TypeError, match="continuous"):
        SB3Policy(make_sac(BatchedVecEnv(SpendEnv(num_envs=4)), seed=0))


def test_obs_normalization_travels_with_the_policy(ppo_model: PPO) -> None:
    from stable_baselines3.common.vec_env import VecNormalize

    venv = VecNormalize(BatchedVecEnv(BestOfferEnv(num_envs=64)), norm_obs=True, norm_reward=False,
                        clip_obs=1.5)
    venv.reset()
    for _ in range(5):  # move the running statistics away from (0, 1)
        venv.step(np.zeros((64, 2), np.int64))
    obs = np.random.default_rng(0).normal(0.5, 1.0, (300, 4)).astype(np.float32)
    raw = SB3Policy(ppo_model)
    carried = SB3Policy(ppo_model, obs_normalization=venv)
    expected = raw.action_probabilities(venv.normalize_obs(obs).astype(np.float32))
    for got, want in zip(carried.action_probabilities(obs), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert not np.allclose(expected[0], raw.action_probabilities(obs)[0])  # it does matter
    # A snapshot: later updates of the running statistics do not reach the policy.
    frozen = carried.obs_normalization["mean"].copy()
    venv.step(np.ones((64, 2), np.int64))
    np.testing.assert_array_equal(carried.obs_normalization["mean"], frozen)
    assert carried.obs_normalization["clip_obs"] == 1.5
    # A plain mapping works the same; bad statistics are refused, naming what is wrong.
    same = SB3Policy(ppo_model, obs_normalization={"mean": frozen,
                                                   "var": carried.obs_normalization["var"],
                                                   "clip_obs": 1.5})
    np.testing.assert_array_equal(same.act(obs, np.random.default_rng(3))[0],
                                  carried.act(obs, np.random.default_rng(3))[0])
    with pytest.raises(ValueError, match=r"obs_normalization\['mean'\] must be 4 finite"):
        SB3Policy(ppo_model, obs_normalization={"mean": [0.0, 0.0], "var": [1.0] * 4})
    with pytest.raises(ValueError, match="var >= 0"):
        SB3Policy(ppo_model, obs_normalization={"mean": [0.0] * 4, "var": [-1.0] * 4})
    with pytest.raises(TypeError, match="mapping with 'mean' and 'var'"):
        SB3Policy(ppo_model, obs_normalization=[0.0] * 4)


# ---- save / load -----------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", ["ppo", "maskable_ppo", "a2c", "dqn"])
def test_save_load_gives_identical_actions(algo: str, tmp_path) -> None:
    env = BestOfferEnv(num_envs=32)
    flat = algo == "dqn"
    venv = BatchedVecEnv(env, flatten_actions=flat)
    factory = {"ppo": make_ppo, "maskable_ppo": make_maskable_ppo, "a2c": make_a2c,
               "dqn": make_dqn}[algo]
    kwargs = {"learning_starts": 32} if flat else {"rollout_size": 128}
    model = factory(venv, seed=0, **kwargs)
    model.learn(256)
    path = save_model(model, tmp_path / algo)
    assert path.exists()
    loaded = load_model(path, algo)
    obs, info = BestOfferEnv(num_envs=100).reset(seed=4)
    nvec = env.nvec if flat else None
    for greedy in (True, False):
        before = SB3Policy(model, nvec=nvec, greedy=greedy).act(
            obs, np.random.default_rng(0), action_mask=info["action_mask"])
        after = SB3Policy(loaded, nvec=nvec, greedy=greedy).act(
            obs, np.random.default_rng(0), action_mask=info["action_mask"])
        np.testing.assert_array_equal(before[0], after[0])
        np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0],
                                  loaded.predict(obs, deterministic=True)[0])
    with pytest.raises(ValueError, match="unknown algo"):
        load_model(path, "trpo")


# ---- batched time-out bootstrapping ----------------------------------------------------------
def test_batched_bootstrap_gives_sb3s_rollout() -> None:
    """BatchedPPO's rollout (rewards with gamma * V(terminal obs) added on time-outs, returns,
    advantages) equals plain SB3 PPO's, which bootstraps one customer at a time."""
    buffers = {}
    for cls in (PPO, BatchedPPO):
        venv = BatchedVecEnv(FatigueEnv(num_envs=16, horizon=3, autoreset_mode="next_step"))
        model = cls("MlpPolicy", venv, n_steps=8, batch_size=64, n_epochs=1, seed=0,
                    device="cpu")
        model.learn(8 * 16)
        buf = model.rollout_buffer
        buffers[cls.__name__] = (buf.rewards.copy(), buf.returns.copy(), buf.advantages.copy())
    for ours, theirs in zip(buffers["BatchedPPO"], buffers["PPO"], strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_batched_bootstrap_adds_discounted_terminal_values_once() -> None:
    venv = BatchedVecEnv(FatigueEnv(num_envs=8, horizon=2, autoreset_mode="same_step"))
    model = BatchedPPO("MlpPolicy", venv, n_steps=4, batch_size=32, seed=0, device="cpu")
    bootstrap = BatchedTimeoutBootstrap()
    bootstrap.init_callback(model)
    venv.reset()
    venv.step(np.zeros(8, np.int64))
    _, rewards, dones, infos = venv.step(np.ones(8, np.int64))
    assert dones.all()
    raw = rewards.copy()
    terminal = np.stack([info["terminal_observation"] for info in infos])
    with torch.no_grad():
        values = model.policy.predict_values(torch.as_tensor(terminal)).numpy().ravel()
    bootstrap.update_locals({"dones": dones, "infos": infos, "rewards": rewards})
    bootstrap.on_step()
    np.testing.assert_allclose(rewards, raw + model.gamma * values, rtol=1e-6)
    assert all(not i["TimeLimit.truncated"] and i["TimeLimit.bootstrapped"] for i in infos)


def test_rollout_shape_and_defaults() -> None:
    assert rollout_shape(4096, 32768, 4) == (8, 8192)
    assert rollout_shape(100, 1000, 4) == (10, 250)
    assert rollout_shape(10000, 1000, 1) == (2, 20000)  # at least 2 steps for GAE
    model = make_ppo(BatchedVecEnv(FatigueEnv(num_envs=4096)))
    assert (model.n_steps, model.batch_size) == (8, 8192)
    assert torch.get_num_threads() == 1
    assert model.logger.dir is None  # no SB3-<timestamp> temp folder
