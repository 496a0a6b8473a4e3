"""Creative selection agents (issue 15), on a synthetic bilinear reward: no envs import.

The synthetic world: person i has a latent taste ``t_i = x_i P + b`` (D,), creative c an embedding
``e_c``; the mean reward of showing c to i is ``t_i · e_c`` — the bilinear model the embedding
bandits assume, so they should approach the per-person best while a single creative cannot.
"""

from __future__ import annotations

import numpy as np
import pytest

from rapport.agents.creative import (
    BestSingleCreative,
    FixedCreative,
    RandomCreative,
    SegmentCreative,
    WithCreative,
    check_embeddings,
)
from rapport.agents.creative_bandits import (
    CreativeBandit,
    CreativeEpsilonGreedy,
    CreativeLinUCB,
    CreativeThompson,
    nearest_kronecker,
)
from rapport.agents.protocol import DecisionSchema

F, D, C = 5, 6, 200
NAMES = ("recency_weeks", "frequency", "avg_spend", "x3", "x4")


class World:
    def __init__(self, seed: int = 0, creatives: int = C) -> None:
        rng = np.random.default_rng(seed)
        self.embeddings = rng.standard_normal((creatives, D)).astype(np.float32)
        self.P = rng.standard_normal((F, D)) * 0.6
        self.b = rng.standard_normal(D) * 0.3

    def contexts(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return (rng.standard_normal((n, F)) * 2.0 + 3.0).astype(np.float32)

    def mean_reward(self, obs: np.ndarray) -> np.ndarray:
        return (obs.astype(np.float64) @ self.P + self.b) @ self.embeddings.T.astype(np.float64)


def regret(world: World, selector, rounds: int, n: int = 600, seed: int = 1, last: int = 3) -> float:
    """Mean per-contact regret over the last ``last`` rounds of online learning."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(rounds):
        obs = world.contexts(rng, n)
        contacted = rng.random(n) < 0.7
        ids, prop = selector.choose(obs, contacted, rng)
        assert ids.dtype == np.int64 and prop.dtype == np.float64
        assert np.all(ids[~contacted] == 0) and np.all(prop[~contacted] == 1.0)
        mu = world.mean_reward(obs)
        rewards = mu[np.arange(n), ids] + rng.standard_normal(n)
        out.append((mu.max(axis=1) - mu[np.arange(n), ids])[contacted].mean())
        selector.update(obs, ids, rewards, contacted)
    return float(np.mean(out[-last:]))


def test_embedding_bandits_beat_random_and_the_best_single_creative():
    world = World()
    best_single = int(world.mean_reward(world.contexts(np.random.default_rng(9), 20_000)).mean(axis=0).argmax())
    E = world.embeddings
    results = {name: regret(world, sel, rounds=10) for name, sel in {
        "random": RandomCreative(E, NAMES), "best_single_oracle": FixedCreative(E, NAMES, best_single),
        "best_single_learned": BestSingleCreative(E, NAMES),
        "linucb": CreativeLinUCB(E, NAMES), "thompson": CreativeThompson(E, NAMES, propensity_draws=4),
        "epsilon": CreativeEpsilonGreedy(E, NAMES, epsilon=0.05)}.items()}
    for bandit in ("linucb", "thompson", "epsilon"):
        assert results[bandit] < 0.5 * results["best_single_oracle"], results
        assert results[bandit] < 0.1 * results["random"], results
    assert results["best_single_oracle"] < results["random"], results


def test_with_creative_joint_propensity_is_the_product_and_learning_reaches_both_parts():
    class HalfContact:
        """Contacts through channel 1 with probability 1/2 (a known propensity); records updates."""

        def __init__(self):
            self.seen = []

        def act(self, obs, rng, *, action_mask=None):
            n = len(obs)
            actions = np.zeros((n, 3), np.int64)
            actions[:, 0] = rng.random(n) < 0.5
            return actions, np.full(n, 0.5)

        def update(self, obs, actions, rewards):
            self.seen.append(actions.shape)

    E = World().embeddings[:4]
    base, selector = HalfContact(), BestSingleCreative(E, NAMES)
    policy = WithCreative(base, RandomCreative(E, NAMES))
    obs = World().contexts(np.random.default_rng(0), 500)
    actions, prop = policy.act(obs, np.random.default_rng(3))
    contacted = actions[:, 0] >= 1
    assert actions.shape == (500, 4) and contacted.any() and (~contacted).any()
    np.testing.assert_array_equal(prop[contacted], 0.5 * 0.25)
    np.testing.assert_array_equal(prop[~contacted], 0.5)
    assert np.all(actions[~contacted, 3] == 0)

    learner = WithCreative(base, selector)
    actions, _ = learner.act(obs, np.random.default_rng(4))
    learner.update(obs, actions, np.ones(500))
    assert base.seen == [(500, 3)]
    assert selector.counts.sum() == (actions[:, 0] >= 1).sum()
    with pytest.raises(ValueError, match=r"action\[:, 3\]"):
        learner.update(obs, actions[:, :3], np.ones(500))


def test_propensities_sum_to_one_and_match_the_chosen_creative():
    world = World()
    rng = np.random.default_rng(0)
    obs = world.contexts(rng, 300)
    ids = rng.integers(0, C, 300)
    rewards = world.mean_reward(obs)[np.arange(300), ids]
    contacted = np.ones(40, bool)
    for learner in (CreativeEpsilonGreedy(world.embeddings, NAMES, epsilon=0.2),
                    CreativeLinUCB(world.embeddings, NAMES, epsilon=0.1),
                    CreativeThompson(world.embeddings, NAMES, propensity_draws=8, epsilon=0.1)):
        policy = learner.fit(obs, ids, rewards).policy(explore=True)
        dist = policy.creative_distribution(obs[:40], np.random.default_rng(1))
        np.testing.assert_allclose(dist.sum(axis=1), 1.0, rtol=1e-12)
        chosen, prop = policy.choose(obs[:40], contacted, np.random.default_rng(2))
        assert np.all((prop > 0) & (prop <= 1))
        if policy.rule != "thompson":  # exact: the choice's propensity is its probability
            np.testing.assert_allclose(prop, dist[np.arange(40), chosen], rtol=1e-12)
    greedy = learner.policy(explore=False)
    assert np.all(greedy.choose(obs[:40], contacted, rng)[1] == 1.0)
    assert np.all(RandomCreative(world.embeddings, NAMES).choose(obs[:40], contacted, rng)[1] == 1.0 / C)
    assert np.all(SegmentCreative(world.embeddings, NAMES, epsilon=1.0).choose(obs[:40], contacted, rng)[1]
                  == pytest.approx(1.0 / C))


def test_thompson_propensity_estimates_the_choice_frequency():
    world = World(creatives=5)
    rng = np.random.default_rng(0)
    obs = world.contexts(rng, 60)
    ids = rng.integers(0, 5, 60)
    learner = CreativeThompson(world.embeddings, NAMES, propensity_draws=200)
    learner.fit(obs, ids, world.mean_reward(obs)[np.arange(60), ids] + rng.standard_normal(60) * 3)
    row = obs[:1]
    picks = np.array([learner.choose(row[:1], np.ones(1, bool), np.random.default_rng(s))[0][0] for s in range(200)])
    dist = learner.policy(explore=True).creative_distribution(obs[:1], np.random.default_rng(7))[0]
    np.testing.assert_allclose(np.bincount(picks, minlength=5) / 200, dist, atol=0.1)


def test_exact_ucb_is_the_textbook_rule_and_the_kronecker_bonus_is_exact_before_data():
    world = World(creatives=30)
    rng = np.random.default_rng(0)
    obs = world.contexts(rng, 200)
    ids = rng.integers(0, 30, 200)
    rewards = world.mean_reward(obs)[np.arange(200), ids] + rng.standard_normal(200)
    E = world.embeddings
    fresh_kron = CreativeLinUCB(E, NAMES).policy(explore=True)
    fresh_exact = CreativeLinUCB(E, NAMES, bonus="exact").policy(explore=True)
    every = np.ones(200, bool)
    np.testing.assert_array_equal(fresh_kron.choose(obs, every, rng)[0], fresh_exact.choose(obs, every, rng)[0])

    learner = CreativeLinUCB(E, NAMES, bonus="exact", alpha=2.0, standardize=False, scale_by_noise=False,
                             ridge=0.5).fit(obs, ids, rewards)
    x1 = np.hstack([obs, np.ones((200, 1))]).astype(np.float64)
    e1 = np.hstack([E, np.ones((30, 1))]).astype(np.float64)
    phi = (x1[:, :, None] * e1[ids][:, None, :]).reshape(200, -1)
    A = 0.5 * np.eye(phi.shape[1]) + phi.T @ phi
    theta = np.linalg.solve(A, phi.T @ rewards)
    np.testing.assert_allclose(learner.policy().fit.theta, theta, rtol=1e-6, atol=1e-8)
    phi_all = (x1[:20, None, :, None] * e1[None, :, None, :]).reshape(20, 30, -1)
    ucb = phi_all @ theta + 2.0 * np.sqrt(np.einsum("ncp,pq,ncq->nc", phi_all, np.linalg.inv(A), phi_all))
    np.testing.assert_array_equal(learner.choose(obs[:20], every[:20], rng)[0], ucb.argmax(axis=1))

    a, b = rng.standard_normal((4, 4)), rng.standard_normal((3, 3))
    cov_z, cov_e = nearest_kronecker(np.kron(a @ a.T, b @ b.T), 4, 3)
    np.testing.assert_allclose(np.kron(cov_z, cov_e), np.kron(a @ a.T, b @ b.T), atol=1e-9)


def test_standardised_fit_is_ridge_on_standardised_features():
    world = World(creatives=20)
    rng = np.random.default_rng(3)
    obs = world.contexts(rng, 300)
    ids = rng.integers(0, 20, 300)
    rewards = world.mean_reward(obs)[np.arange(300), ids]
    learner = CreativeBandit(world.embeddings, NAMES, rule="greedy", ridge=2.0)
    learner.update(obs[:100], ids[:100], rewards[:100], np.ones(100, bool))
    learner.update(obs[100:], ids[100:], rewards[100:], np.ones(200, bool))
    z = (obs - obs.mean(axis=0, dtype=np.float64)) / obs.std(axis=0, dtype=np.float64)
    E = world.embeddings.astype(np.float64)
    e = (E - E.mean(axis=0)) / E.std(axis=0)
    z1, e1 = np.hstack([z, np.ones((300, 1))]), np.hstack([e, np.ones((20, 1))])
    phi = (z1[:, :, None] * e1[ids][:, None, :]).reshape(300, -1)
    theta = np.linalg.solve(2.0 * np.eye(phi.shape[1]) + phi.T @ phi, phi.T @ rewards)
    np.testing.assert_allclose(learner.policy().fit.theta, theta, rtol=1e-6, atol=1e-8)


def test_segment_selector_learns_the_best_creative_of_each_value_segment():
    E = World().embeddings[:3]
    rng = np.random.default_rng(0)
    obs = World().contexts(rng, 3000)
    obs[:, 2] = rng.choice([10.0, 50.0, 200.0], 3000)  # avg_spend: three value groups
    segment = np.searchsorted([30.0, 100.0], obs[:, 2])
    ids = rng.integers(0, 3, 3000)
    rewards = (ids == (2 - segment)).astype(float) + 0.1 * rng.standard_normal(3000)
    selector = SegmentCreative(E, NAMES, thresholds=(30.0, 100.0)).fit(obs, ids, rewards)
    np.testing.assert_array_equal(selector.best(), [2, 1, 0])
    chosen, prop = selector.policy().choose(obs, np.ones(3000, bool), rng)
    np.testing.assert_array_equal(chosen, 2 - segment)
    assert np.all(prop == 1.0)
    terciles = SegmentCreative(E, NAMES)
    terciles.fit(obs, ids, rewards)
    assert len(terciles.thresholds) == 2 and terciles.counts.shape == (3, 3)


def test_two_tower_learns_from_logged_data_and_softmax_propensities_are_exact():
    torch = pytest.importorskip("torch")
    from rapport.agents.two_tower import TwoTowerCreative

    world = World(creatives=50)
    rng = np.random.default_rng(0)
    obs = world.contexts(rng, 4000)
    ids = rng.integers(0, 50, 4000)
    rewards = world.mean_reward(obs)[np.arange(4000), ids] + rng.standard_normal(4000)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared cores: torch's threads only spin-wait on batches this small
    try:
        model = TwoTowerCreative(world.embeddings, NAMES, hidden=(32,), dim=8, batch_size=500, seed=1,
                                 learning_rate=1e-2)
        model.fit(obs, ids, rewards, epochs=8)
    finally:
        torch.set_num_threads(threads)
    test = world.contexts(np.random.default_rng(5), 1000)
    every = np.ones(1000, bool)
    mu = world.mean_reward(test)
    chosen, prop = model.policy().choose(test, every, rng)
    assert np.all(prop == 1.0)
    random_regret = (mu.max(axis=1) - mu.mean(axis=1)).mean()
    assert (mu.max(axis=1) - mu[np.arange(1000), chosen]).mean() < 0.2 * random_regret

    soft = model.policy(explore=True)
    soft.temperature = 1.0
    dist = soft.creative_distribution(test[:30])
    np.testing.assert_allclose(dist.sum(axis=1), 1.0, rtol=1e-9)
    chosen, prop = soft.choose(test[:30], every[:30], np.random.default_rng(2))
    np.testing.assert_allclose(prop, dist[np.arange(30), chosen], rtol=1e-4)


def test_bad_inputs_fail_naming_the_argument():
    E = World().embeddings
    obs = World().contexts(np.random.default_rng(0), 10)
    with pytest.raises(ValueError, match="embeddings.*C >= 1"):
        RandomCreative(np.zeros((0, 4), np.float32), NAMES)
    with pytest.raises(ValueError, match="embeddings has a non-finite value.*creative 3"):
        E2 = E.copy()
        E2[3, 1] = np.nan
        CreativeLinUCB(E2, NAMES)
    with pytest.raises(ValueError, match=r"ids \(action\[:, 3\]\) must be in \[0, 200\)"):
        CreativeLinUCB(E, NAMES).update(obs, np.full(10, 200), np.ones(10), np.ones(10, bool))
    with pytest.raises(ValueError, match="contacted must be a bool"):
        RandomCreative(E, NAMES).choose(obs, np.ones(10), np.random.default_rng(0))
    with pytest.raises(ValueError, match="context_features='nope'"):
        CreativeLinUCB(E, NAMES, context_features=["nope"])
    with pytest.raises(ValueError, match="segment_feature='nope'"):
        SegmentCreative(E, NAMES, segment_feature="nope")
    with pytest.raises(ValueError, match="rule must be one of"):
        CreativeBandit(E, NAMES, rule="softmax")
    with pytest.raises(ValueError, match="creative_id must be in"):
        FixedCreative(E, NAMES, 200)
    with pytest.raises(ValueError, match="propensity_draws"):
        CreativeThompson(E, NAMES, propensity_draws=0)
    with pytest.raises(ValueError, match="observations have 4 columns"):
        CreativeLinUCB(E, NAMES).choose(obs[:, :4], np.ones(10, bool), np.random.default_rng(0))
    assert check_embeddings(E.astype(np.float64)).dtype == np.float32


def test_schema_carries_the_catalogue_and_keeps_three_column_checks():
    base = DecisionSchema(NAMES, (2, 2, 1), ("email",), ("none", "discount"), (0.0,))
    E = World().embeddings
    full = base.with_creatives(E, tuple(f"e{j}" for j in range(D)))
    assert full.nvec == (2, 2, 1, C) and full.n_creatives == C and base.n_creatives == 0
    assert full.creative_feature_names[0] == "e0" and full.base_schema() == base
    assert CreativeLinUCB.from_schema(full).n_creatives == C
    with pytest.raises(ValueError, match="no creative catalogue"):
        CreativeLinUCB.from_schema(base)
    with pytest.raises(ValueError, match="4th entry.*creative_embeddings"):
        DecisionSchema(NAMES, (2, 2, 1, 5), ("email",), ("none", "discount"), (0.0,))
    with pytest.raises(ValueError, match=r"creative_embeddings.*C = nvec\[3\] = 5"):
        DecisionSchema(NAMES, (2, 2, 1, 5), ("email",), ("none", "discount"), (0.0,),
                       extras={"creative_embeddings": E})
    with pytest.raises(ValueError, match="nvec must be 3 positive sizes"):
        DecisionSchema(NAMES, (2, 2), ("email",), ("none", "discount"), (0.0,))
    with pytest.raises(ValueError, match="creative_embeddings.*NaN"):
        base.with_creatives(np.full((3, 2), np.nan, np.float32))


def test_exported_scorers_match_the_in_memory_selectors(tmp_path):
    pytest.importorskip("onnxruntime")
    from rapport.experiments.export.creative import CreativeOnnxScorer, export_creative_onnx

    world = World(creatives=120)
    rng = np.random.default_rng(0)
    obs = world.contexts(rng, 2000)
    ids = rng.integers(0, 120, 2000)
    rewards = world.mean_reward(obs)[np.arange(2000), ids] + rng.standard_normal(2000)
    learner = CreativeLinUCB(world.embeddings, NAMES, context_features=NAMES[:4]).fit(obs, ids, rewards)
    scorer = CreativeOnnxScorer(export_creative_onnx(learner, tmp_path / "c.onnx", embeddings_input=True))
    got, score = scorer.choose(obs, world.embeddings)
    expected, _ = learner.policy().choose(obs, np.ones(2000, bool), rng)
    np.testing.assert_array_equal(got, expected)
    means = learner.policy().expected_rewards(obs)
    np.testing.assert_allclose(score, means[np.arange(2000), expected] - 0.0, rtol=1e-3, atol=1e-3 * np.abs(means).max())
    with pytest.raises(ValueError, match="embeddings must have 6 columns"):
        scorer.choose(obs, world.embeddings[:, :5])
    bad = obs.copy()
    bad[4, 2] = np.nan
    with pytest.raises(ValueError, match="column 'avg_spend'"):
        scorer.choose(bad, world.embeddings)
