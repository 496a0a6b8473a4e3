"""Contextual bandits: they learn known optima, keep honest propensities, respect masks and arm
subsets, and persist exactly."""

import numpy as np
import pytest
import torch

from rapport.agents.bandits import (
    EpsilonGreedy,
    LinearBandit,
    LinearThompson,
    LinUCB,
    ResidualValueShaping,
)
from rapport.agents.neural_bandit import NeuralLinearThompson
from rapport.agents.protocol import DecisionSchema
from rapport.agents.validation import joint_index

torch.set_num_threads(1)


def stream_schema(d, K):
    return DecisionSchema(feature_names=tuple(f"x{i}" for i in range(d)), nvec=(1, K, 1), channel_names=(),
                          offer_names=tuple(f"arm{k}" for k in range(K)), spend_levels=(0.0,))


def linear_world(d=6, K=5, seed=0):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=(K, d))
    bias = rng.normal(size=K) * 0.3
    scale = rng.uniform(0.5, 20, d)  # raw features on very different scales, plus offsets
    offset = rng.normal(size=d) * 5

    def draw(n):
        z = rng.standard_normal((n, d))
        return (z * scale + offset).astype(np.float32), z @ theta.T + bias  # obs, expected reward (n, K)
    return draw


def run(agent, draw, batches, batch, noise=0.5, seed=1):
    rng = np.random.default_rng(seed)
    regret = []
    for _ in range(batches):
        obs, mu = draw(batch)
        actions, _ = agent.act(obs, rng)
        arm = actions[:, 1]
        reward = mu[np.arange(batch), arm] + noise * rng.standard_normal(batch)
        agent.update(obs, actions, reward)
        regret.append(float((mu.max(axis=1) - mu[np.arange(batch), arm]).mean()))
    return np.array(regret)


@pytest.mark.parametrize("make", [lambda s: EpsilonGreedy(s, epsilon=0.05), lambda s: LinUCB(s),
                                  lambda s: LinearThompson(s, propensity_draws=16)],
                         ids=["epsilon_greedy", "linucb", "thompson"])
def test_linear_bandits_learn_a_linear_world(make):
    draw = linear_world()
    agent = make(stream_schema(6, 5))
    regret = run(agent, draw, batches=30, batch=400)
    random_regret = regret[0]  # first batch: no data, uniform over arms
    assert regret[-5:].mean() < 0.1 * random_regret
    obs, mu = draw(5000)
    greedy, props = agent.policy().act(obs, None)
    assert (props == 1).all()
    assert (greedy[:, 1] == mu.argmax(axis=1)).mean() > 0.9


def test_neural_linear_learns_what_linear_cannot():
    """Arm 0 pays sign(x0·x1) (an interaction), arm 1 pays 0: no per-arm linear model can tell
    the two quadrant pairs apart, a learned representation can."""
    schema = stream_schema(4, 2)
    rng = np.random.default_rng(3)

    def draw(n):
        x = rng.standard_normal((n, 4)).astype(np.float32)
        mu = np.zeros((n, 2))
        mu[:, 0] = np.sign(x[:, 0] * x[:, 1])
        return x, mu

    neural = NeuralLinearThompson(schema, hidden=(32,), embedding_dim=16, retrain_every=1000, train_steps=150,
                                  propensity_draws=8, seed=0)
    linear = LinUCB(schema)
    run(neural, draw, batches=12, batch=500, noise=0.3)
    run(linear, draw, batches=12, batch=500, noise=0.3)
    obs, mu = draw(4000)
    best = mu.argmax(axis=1)
    neural_acc = (neural.policy().act(obs, None)[0][:, 1] == best).mean()
    linear_acc = (linear.policy().act(obs, None)[0][:, 1] == best).mean()
    assert neural.n_retrains >= 5
    assert neural_acc > 0.85, neural_acc
    assert linear_acc < 0.7, linear_acc


@pytest.mark.parametrize("make", [lambda s: EpsilonGreedy(s, epsilon=0.05), lambda s: LinUCB(s),
                                  lambda s: LinearThompson(s, propensity_draws=16),
                                  lambda s: NeuralLinearThompson(s, retrain_every=500, train_steps=50,
                                                                 propensity_draws=8)],
                         ids=["epsilon_greedy", "linucb", "thompson", "neural_linear"])
def test_bandits_reach_best_offer_optimum_and_respect_mask(make):
    from rapport.envs.sanity import BestOfferEnv

    env = BestOfferEnv(num_envs=500, reward_noise=0.1)
    schema = DecisionSchema(feature_names=tuple(f"segment_{i}" for i in range(4)), nvec=(3, 4, 1),
                            channel_names=("a", "b"), offer_names=tuple(f"o{i}" for i in range(4)),
                            spend_levels=(0.0,))
    agent = make(schema)
    obs, info = env.reset(seed=0)
    rng = np.random.default_rng(0)
    rewards = []
    for _ in range(12):
        mask = np.hstack([info["action_mask"], np.ones((env.num_envs, 1), bool)])
        actions, _ = agent.act(obs, rng, action_mask=mask)
        blocked = env.blocked_channel[env.segment]
        assert (actions[:, 0] != blocked).all()
        next_obs, reward, *_ , info = env.step(actions[:, :2])
        agent.update(obs, actions, reward)
        rewards.append(reward.mean())
        obs, _, _, _, info = env.step(actions[:, :2])  # NEXT_STEP: the reset step
    assert np.mean(rewards[-3:]) > 0.9  # optimum 1.0; random about 0.15


def test_epsilon_greedy_propensities_are_exact():
    schema = stream_schema(3, 4)
    agent = EpsilonGreedy(schema, epsilon=0.2)
    run(agent, linear_world(3, 4), batches=5, batch=300)
    obs = np.repeat(linear_world(3, 4, seed=9)(1)[0], 40000, axis=0)
    actions, props = agent.act(obs, np.random.default_rng(5))
    freq = np.bincount(actions[:, 1], minlength=4) / len(obs)
    greedy = agent.policy().act(obs[:1], None)[0][0, 1]
    expected = np.full(4, 0.2 / 4)
    expected[greedy] += 0.8
    np.testing.assert_allclose(freq, expected, atol=0.01)
    np.testing.assert_allclose(props, expected[actions[:, 1]])


def test_thompson_propensities_match_choice_frequencies():
    """The Monte-Carlo propensity of the chosen arm is unbiased: averaged over many decisions it
    matches how often that arm is chosen. (Within one ``act`` call the posterior draws used for
    propensities are shared by the rows, so one call's estimates for equal contexts are equal.)"""
    schema = stream_schema(3, 4)
    agent = LinearThompson(schema, propensity_draws=100)
    run(agent, linear_world(3, 4), batches=2, batch=60, noise=2.0)  # little data: a spread posterior
    obs = np.repeat(linear_world(3, 4, seed=9)(1)[0], 400, axis=0)
    rng = np.random.default_rng(6)
    chosen, props = zip(*(agent.act(obs, rng) for _ in range(60)), strict=True)
    arm, props = np.concatenate(chosen)[:, 1], np.concatenate(props)
    freq = np.bincount(arm, minlength=4) / len(arm)
    assert freq.max() < 0.95  # the test needs a genuinely random choice
    for k in np.flatnonzero(freq > 0.01):
        # (hits + 1) / (draws + 1) adds at most 1/101 to each estimate
        assert abs(props[arm == k].mean() - freq[k]) < 0.015, (k, props[arm == k].mean(), freq[k])


def test_untrained_ucb_ties_are_uniform_with_propensity_one_over_k():
    schema = stream_schema(2, 5)
    actions, props = LinUCB(schema).act(np.zeros((20000, 2), np.float32), np.random.default_rng(0))
    np.testing.assert_allclose(props, 0.2)
    np.testing.assert_allclose(np.bincount(actions[:, 1], minlength=5) / 20000, 0.2, atol=0.015)


def test_arm_subset_and_skipped_updates():
    schema = DecisionSchema(feature_names=("x0", "x1"), nvec=(3, 2, 2), channel_names=("a", "b"),
                            offer_names=("none", "o1"), spend_levels=(0.0, 1.0))
    arms = [[1, 0, 0], [1, 1, 0], [2, 0, 1]]
    agent = LinUCB(schema, arms=arms)
    obs = np.random.default_rng(0).standard_normal((500, 2)).astype(np.float32)
    actions, _ = agent.act(obs, np.random.default_rng(1))
    assert set(map(tuple, actions.tolist())) <= set(map(tuple, arms))
    off_menu = actions.copy()
    off_menu[:10] = [0, 0, 0]  # e.g. a constraint forced do-nothing
    agent.update(obs, off_menu, np.ones(500))
    assert agent.stats["skipped_updates"] == 10
    assert agent.model.counts.sum() == 490
    # a mask that leaves no candidate for some rows: do-nothing, counted
    mask = np.ones((500, 7), bool)
    mask[:5, 1] = False  # channel 1 out: arms (1,0,0), (1,1,0) gone
    mask[:5, 6] = False  # spend 1 out: arm (2,0,1) gone
    actions, props = agent.act(obs, np.random.default_rng(2), action_mask=mask)
    assert (actions[:5] == 0).all() and (props[:5] == 1).all()
    assert agent.stats["no_candidate_rows"] == 5 and agent.stats["all_forbidden_rows"] == 0
    mask[:5, 0] = False  # ... and do-nothing forbidden too: refuse rather than serve it
    with pytest.raises(ValueError, match="mask forbids value 0 of dimension 0"):
        agent.act(obs, np.random.default_rng(2), action_mask=mask)
    with pytest.raises(ValueError, match="duplicates"):
        LinUCB(schema, arms=[[1, 1, 0], [1, 1, 0]])


def test_all_forbidden_rows_and_bad_input():
    schema = stream_schema(3, 4)
    agent = LinUCB(schema)
    obs = np.zeros((6, 3), np.float32)
    mask = np.ones((6, 6), bool)
    mask[2, 1:5] = False  # row 2: no arm at all
    actions, props = agent.act(obs, np.random.default_rng(0), action_mask=mask)
    assert (actions[2] == 0).all() and props[2] == 1.0 and agent.stats["all_forbidden_rows"] == 1
    with pytest.raises(ValueError, match="2 columns, expected 3"):
        agent.act(obs[:, :2], np.random.default_rng(0))
    bad = obs.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN in column 'x2' \(row 1\)"):
        agent.update(bad, actions, np.zeros(6))
    with pytest.raises(ValueError, match="non-finite reward at row 4"):
        agent.update(obs, actions, np.array([0, 0, 0, 0, np.inf, 0]))
    with pytest.raises(ValueError, match=r"actions \(6, 3\) and rewards \(6,\)"):
        agent.update(obs, actions[:, :2], np.zeros(6))


def test_linear_parameters_reproduce_the_policy_as_plain_tensor_ops():
    schema = stream_schema(6, 5)
    agent = LinUCB(schema, alpha=1.5)
    draw = linear_world()
    run(agent, draw, batches=4, batch=300)
    p = agent.linear_parameters()
    assert p["theta"].shape == (5, 7) and p["a_inv"].shape == (5, 7, 7) and p["arms"].shape == (5, 3)
    assert p["rule"] == {"name": "ucb", "alpha": 1.5, "scale_by_noise": True}
    obs, _ = draw(1000)
    z = np.hstack([(obs - p["feature_mean"]) / p["feature_std"], np.ones((1000, 1))])
    mean = z @ p["theta"].T
    width = np.sqrt(np.einsum("nd,kde,ne->nk", z, p["a_inv"], z))
    ucb = mean + p["rule"]["alpha"] * p["noise_std"] * width
    np.testing.assert_allclose(agent.policy().expected_rewards(obs), mean, rtol=1e-4, atol=1e-4)
    actions, _ = agent.act(obs, np.random.default_rng(0))
    np.testing.assert_array_equal(actions, p["arms"][ucb.argmax(axis=1)])


def test_standardisation_makes_decisions_scale_free():
    schema = stream_schema(6, 5)
    draw = linear_world()
    a, b = LinUCB(schema), LinUCB(schema)
    rng = np.random.default_rng(0)
    for _ in range(4):
        obs, mu = draw(300)
        actions = np.zeros((300, 3), np.int64)
        actions[:, 1] = rng.integers(0, 5, 300)
        reward = mu[np.arange(300), actions[:, 1]]
        a.update(obs, actions, reward)
        b.update(obs * 1000 + 7, actions, reward)  # same information in other units
    obs, _ = draw(2000)
    np.testing.assert_array_equal(a.act(obs, None)[0], b.act(obs * 1000 + 7, None)[0])


@pytest.mark.parametrize("make", [lambda s: EpsilonGreedy(s, epsilon=0.1), lambda s: LinUCB(s, alpha=2.0),
                                  lambda s: LinearThompson(s, v=0.5, propensity_draws=8)],
                         ids=["epsilon_greedy", "linucb", "thompson"])
def test_linear_save_load_round_trip(tmp_path, make):
    schema = stream_schema(6, 5)
    agent = make(schema)
    draw = linear_world()
    run(agent, draw, batches=3, batch=200)
    path = agent.save(tmp_path / "bandit")
    assert path.suffix == ".npz"
    loaded = LinearBandit.load(path, schema)
    assert loaded.rule == agent.rule and loaded.stats == agent.stats and loaded.reward == agent.reward
    obs, mu = draw(500)
    np.testing.assert_array_equal(loaded.act(obs, np.random.default_rng(4))[0], agent.act(obs, np.random.default_rng(4))[0])
    # both keep learning identically
    actions, _ = agent.act(obs, np.random.default_rng(5))
    for bandit in (agent, loaded):
        bandit.update(obs, actions, mu[np.arange(500), actions[:, 1]])
    np.testing.assert_array_equal(loaded.model.moments, agent.model.moments)
    with pytest.raises(ValueError, match="trained on features"):
        LinearBandit.load(path, stream_schema(5, 5))


def test_neural_save_load_round_trip(tmp_path):
    schema = stream_schema(4, 3)
    agent = NeuralLinearThompson(schema, retrain_every=300, train_steps=10, propensity_draws=4, buffer_size=1000)
    draw = linear_world(4, 3)
    run(agent, draw, batches=4, batch=200)
    assert agent.n_retrains >= 2
    loaded = NeuralLinearThompson.load(agent.save(tmp_path / "neural"), schema)
    obs, mu = draw(300)
    a1, p1 = agent.act(obs, np.random.default_rng(8))
    a2, p2 = loaded.act(obs, np.random.default_rng(8))
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_allclose(p1, p2)
    np.testing.assert_allclose(agent.policy().expected_rewards(obs), loaded.policy().expected_rewards(obs), rtol=1e-5)


def test_residual_value_shaping_reward_and_update_from_step(tmp_path):
    names = ("recency_weeks", "frequency", "tenure_weeks", "avg_spend", "p_alive")
    schema = DecisionSchema(feature_names=names, nvec=(2, 1, 1), channel_names=("email",), offer_names=("none",),
                            spend_levels=(0.0,))
    obs = np.array([[1, 2, 20, 30, 0.9], [10, 0, 10, 20, 0.5]], np.float32)
    nxt = np.array([[0, 3, 21, 31, 0.95], [11, 0, 11, 20, 0.4]], np.float32)
    profit = np.array([5.0, -0.1])
    value, next_value = np.array([40.0, 12.0]), np.array([41.0, 0.0])  # the second customer died
    shaping = ResidualValueShaping(0.99)
    reward = shaping(profit, value, next_value)
    np.testing.assert_allclose(reward, [5.0 + 0.99 * 41.0 - 40.0, -0.1 - 12.0])
    agent = LinUCB(schema, reward="lifetime_value_shaped", value_discount=0.99)
    assert agent.reward == shaping  # YAML-friendly spelling
    agent.update_from_step(obs, np.array([[1, 0, 0], [0, 0, 0]]), profit, nxt, value=value, next_value=next_value)
    np.testing.assert_allclose(agent.model.moments[:, 6, 6].sum(), (reward**2).sum())
    with pytest.raises(ValueError, match="pass value= and next_value="):
        agent.update_from_step(obs, np.array([[1, 0, 0], [0, 0, 0]]), profit, nxt)
    agent.save(tmp_path / "shaped")
    assert LinearBandit.load(tmp_path / "shaped.npz", schema).reward == shaping  # the reward is persisted
    assert LinUCB(schema, reward="profit").reward is None
    assert LinUCB(schema, reward="lifetime_value_shaped").reward.discount == pytest.approx(1.1 ** (-1 / 52))
    with pytest.raises(ValueError, match="'profit', 'lifetime_value_shaped'"):
        EpsilonGreedy(schema, reward="revenue")
    with pytest.raises(ValueError, match="'ltv_proxy' was removed"):
        LinUCB(schema, reward="ltv_proxy")


def test_joint_arm_numbering_matches_protocol():
    schema = DecisionSchema(feature_names=("x",), nvec=(3, 2, 2), channel_names=("a", "b"),
                            offer_names=("none", "o1"), spend_levels=(0.0, 1.0))
    agent = LinUCB(schema)
    assert (joint_index(agent.arms, schema.nvec) == np.arange(12)).all()
