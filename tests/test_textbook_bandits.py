"""Textbook mode: with ``standardize=False, scale_by_noise=False`` the batched bandits make the
same decisions as plain numpy implementations of the published algorithms, round for round.

References, written from the papers and sharing no code with ``agents``:

* disjoint LinUCB, Li, Chu, Langford & Schapire (2010), Algorithm 1: per arm ``A = λI + Σ xxᵀ``,
  ``b = Σ r x``, ``θ = A⁻¹b``, ``p = θᵀx + α sqrt(xᵀA⁻¹x)``, play ``argmax p``;
* disjoint linear Thompson sampling (Agrawal & Goyal 2013, one posterior per arm): the score of
  arm k is drawn from ``N(θᵀx, v² xᵀA⁻¹x)``, which is the law of ``xᵀθ̃`` for
  ``θ̃ ~ N(θ, v²A⁻¹)``; the reference draws the score with one standard normal per arm.

The context vector is the customer's features plus a constant 1 (as in Li et al.'s Yahoo!
features). Ties (only untrained arms share a posterior): uniform among the tied arms, ``k =
⌊u · n_tied⌋``-th in arm order, one ``u = rng.random()`` per tied round, from a generator seeded
like the bandit's. Thompson draws ``rng.standard_normal((n, K))`` per batch of ``n`` rounds.

Update schedule: Algorithm 1 updates after every round. The LinUCB stream is run that way (batch
size 1, 10⁴ rounds); a second LinUCB stream and the Thompson stream use batches of 20 rounds, where
the bandit refits once per batch and the reference holds ``A``, ``b`` fixed within a batch and
folds the batch in afterwards — the same information the batched implementation has.
"""

import numpy as np
import pytest

from rapport.agents.bandits import LinearThompson, LinUCB
from rapport.agents.protocol import DecisionSchema

D, K = 4, 8
"""Customer features and arms of the test stream."""


def offer_schema() -> DecisionSchema:
    return DecisionSchema(feature_names=tuple(f"x{i}" for i in range(D)), nvec=(1, K, 1), channel_names=(),
                          offer_names=tuple(f"offer{k}" for k in range(K)), spend_levels=(0.0,))


def click_stream(rounds: int, seed: int = 0):
    """Contexts (rounds, D) float32 on mixed scales and offsets, and a click (0/1) per round and
    arm from a logistic model: rewards in {0, 1}, as in Li et al.'s news-article experiment."""
    rng = np.random.default_rng(seed)
    obs = (rng.standard_normal((rounds, D)) * [1.0, 0.5, 2.0, 1.0] + [0.0, 1.0, -0.5, 0.3]).astype(np.float32)
    theta = rng.normal(size=(K, D)) * 0.7
    bias = rng.normal(size=K) * 0.5 - 1.0
    p_click = 1.0 / (1.0 + np.exp(-(obs @ theta.T + bias)))
    clicks = (rng.random((rounds, K)) < p_click).astype(np.float64)
    return obs, clicks


class TextbookDisjointLinear:
    """Per-arm ridge statistics ``A_k = λI + Σ xxᵀ``, ``b_k = Σ r x`` on ``x = (features, 1)``."""

    def __init__(self, n_features: int, n_arms: int, lam: float) -> None:
        d = n_features + 1
        self.A = np.stack([lam * np.eye(d) for _ in range(n_arms)])
        self.b = np.zeros((n_arms, d))

    @staticmethod
    def context(obs: np.ndarray) -> np.ndarray:
        return np.hstack([obs.astype(np.float64), np.ones((len(obs), 1))])

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """θ_k = A_k⁻¹ b_k (K, d) and A_k⁻¹ (K, d, d)."""
        a_inv = np.stack([np.linalg.inv(a) for a in self.A])
        return np.einsum("kij,kj->ki", a_inv, self.b), a_inv

    def update(self, x: np.ndarray, arms: np.ndarray, rewards: np.ndarray) -> None:
        for xt, k, r in zip(x, arms, rewards, strict=True):
            self.A[k] += np.outer(xt, xt)
            self.b[k] += r * xt


def textbook_linucb(obs, clicks, *, alpha, lam, batch, seed):
    """Li et al. (2010) Algorithm 1 on the stream; returns the arms played and, per round, the gap
    between the best and second-best score (how far the decision is from a tie)."""
    model, rng = TextbookDisjointLinear(D, K, lam), np.random.default_rng(seed)
    played, gaps = [], []
    for s in range(0, len(obs), batch):
        x = model.context(obs[s:s + batch])
        theta, a_inv = model.posterior()
        arms = []
        for xt in x:
            p = theta @ xt + alpha * np.sqrt(np.einsum("i,kij,j->k", xt, a_inv, xt))
            tied = np.flatnonzero(p == p.max())
            arms.append(tied[int(rng.random() * len(tied))] if len(tied) > 1 else tied[0])
            top2 = np.sort(p)[-2:]
            gaps.append(np.inf if len(tied) > 1 else top2[1] - top2[0])
        arms = np.array(arms)
        model.update(x, arms, clicks[np.arange(s, s + len(x)), arms])
        played.append(arms)
    return np.concatenate(played), np.array(gaps)


def textbook_thompson(obs, clicks, *, v, lam, batch, seed):
    """Disjoint linear Thompson sampling on the stream (score drawn per arm, see module docstring)."""
    model, rng = TextbookDisjointLinear(D, K, lam), np.random.default_rng(seed)
    played = []
    for s in range(0, len(obs), batch):
        x = model.context(obs[s:s + batch])
        theta, a_inv = model.posterior()
        normals = rng.standard_normal((len(x), K))
        arms = np.array([np.argmax(theta @ xt + v * np.sqrt(np.einsum("i,kij,j->k", xt, a_inv, xt)) * eps)
                         for xt, eps in zip(x, normals, strict=True)])
        model.update(x, arms, clicks[np.arange(s, s + len(x)), arms])
        played.append(arms)
    return np.concatenate(played)


def run_bandit(agent, obs, clicks, *, batch, seed):
    """The Rapport bandit on the same stream and schedule: act on a batch, learn its clicks."""
    rng = np.random.default_rng(seed)
    played = []
    for s in range(0, len(obs), batch):
        actions, _ = agent.act(obs[s:s + batch], rng)
        arms = actions[:, 1]
        agent.update(obs[s:s + batch], actions, clicks[np.arange(s, s + len(arms)), arms])
        played.append(arms)
    return np.concatenate(played)


@pytest.mark.parametrize(("rounds", "batch", "alpha", "ridge"), [(10_000, 1, 1.0, 1.0), (20_000, 20, 0.5, 2.0)],
                         ids=["per_round_updates", "batches_of_20"])
def test_linucb_without_standardisation_is_li_et_al_decision_for_decision(rounds, batch, alpha, ridge):
    obs, clicks = click_stream(rounds)
    agent = LinUCB(offer_schema(), alpha=alpha, ridge=ridge, scale_by_noise=False, standardize=False)
    ours = run_bandit(agent, obs, clicks, batch=batch, seed=11)
    reference, gaps = textbook_linucb(obs, clicks, alpha=alpha, lam=ridge, batch=batch, seed=11)
    first_diff = np.flatnonzero(ours != reference)
    assert first_diff.size == 0, (f"round {first_diff[0]} differs: ours {ours[first_diff[0]]}, "
                                  f"reference {reference[first_diff[0]]} (score gap {gaps[first_diff[0]]:.3g})")
    assert len(np.unique(reference)) == K  # every arm is played: the comparison covers all of them
    assert np.isinf(gaps).sum() >= K - 1  # the random tie-break between untrained arms was exercised
    # the learner's statistics are the reference's A and b
    model = agent.model
    reference_model = TextbookDisjointLinear(D, K, ridge)
    reference_model.update(reference_model.context(obs), reference, clicks[np.arange(rounds), reference])
    np.testing.assert_allclose(model.moments[:, :D + 1, :D + 1] + ridge * np.eye(D + 1), reference_model.A,
                               rtol=1e-12)
    np.testing.assert_allclose(model.moments[:, :D + 1, D + 1], reference_model.b, rtol=1e-12, atol=1e-9)


def test_linear_thompson_without_standardisation_is_textbook_decision_for_decision():
    obs, clicks = click_stream(10_000, seed=3)
    agent = LinearThompson(offer_schema(), v=0.3, scale_by_noise=False, propensity_draws=0, standardize=False)
    ours = run_bandit(agent, obs, clicks, batch=20, seed=5)
    reference = textbook_thompson(obs, clicks, v=0.3, lam=1.0, batch=20, seed=5)
    np.testing.assert_array_equal(ours, reference)
    assert len(np.unique(reference)) == K


def test_standardisation_is_what_departs_from_the_textbook():
    """The default (standardised) learner does not follow the reference on this stream, whose
    features have offsets and unequal scales: the equivalence above is the switch's doing."""
    obs, clicks = click_stream(2_000)
    agent = LinUCB(offer_schema(), scale_by_noise=False)
    ours = run_bandit(agent, obs, clicks, batch=20, seed=11)
    reference, _ = textbook_linucb(obs, clicks, alpha=1.0, lam=1.0, batch=20, seed=11)
    assert (ours != reference).mean() > 0.05


def test_textbook_mode_persists_and_exports_raw_coefficients(tmp_path):
    schema = offer_schema()
    obs, clicks = click_stream(1_000)
    agent = LinUCB(schema, scale_by_noise=False, standardize=False)
    run_bandit(agent, obs, clicks, batch=50, seed=1)
    params = agent.linear_parameters()
    np.testing.assert_array_equal(params["feature_mean"], np.zeros(D))
    np.testing.assert_array_equal(params["feature_std"], np.ones(D))
    loaded = LinUCB.load(agent.save(tmp_path / "textbook"), schema)
    assert loaded.model.standardize is False and loaded.state_dict()["standardize"] is False
    np.testing.assert_array_equal(loaded.act(obs, np.random.default_rng(2))[0], agent.act(obs, np.random.default_rng(2))[0])
