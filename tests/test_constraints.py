"""Contact caps, quiet periods and the weekly budget: they bind, and propensities stay honest."""

import itertools

import numpy as np
import pytest

from rapport.agents.baselines import MassMarketing, UniformRandom
from rapport.agents.constraints import BudgetConstraint, ContactRules
from rapport.agents.protocol import DecisionSchema
from rapport.agents.validation import joint_index

CHANNELS = ("email", "sms", "push")
FEATURES = ("p_alive", "avg_spend", *(f"optin_{c}" for c in CHANNELS),
            *(f"weeks_since_contact_{c}" for c in CHANNELS), *(f"contacts_4w_{c}" for c in CHANNELS),
            "horizon_progress")
SCHEMA = DecisionSchema(feature_names=FEATURES, nvec=(4, 2, 2), channel_names=CHANNELS,
                        offer_names=("none", "discount_10"), spend_levels=(0.0, 0.5),
                        channel_costs=(1.0, 2.0, 0.0), offer_discounts=(0.0, 0.1))


def make_obs(n, **columns):
    obs = np.zeros((n, len(FEATURES)), np.float32)
    for c in CHANNELS:
        obs[:, FEATURES.index(f"optin_{c}")] = 1
        obs[:, FEATURES.index(f"weeks_since_contact_{c}")] = 52
    for name, value in columns.items():
        obs[:, FEATURES.index(name)] = value
    return obs


def test_caps_block_contacts_and_offers():
    obs = make_obs(4)
    col = {c: FEATURES.index(f"contacts_4w_{c}") for c in CHANNELS}
    obs[1, col["email"]] = 2  # at the email cap
    obs[2, col["sms"]] = obs[2, col["push"]] = obs[2, col["email"]] = 1  # 3 in total: at the total cap
    rules = ContactRules(UniformRandom(SCHEMA), SCHEMA, max_contacts_4w=3, max_channel_contacts_4w={"email": 2})
    allowed = rules.contact_allowed(obs)
    assert allowed.tolist() == [[True] * 3, [False, True, True], [False] * 3, [True] * 3]
    rng = np.random.default_rng(0)
    for _ in range(200):
        actions, _ = rules.act(obs, rng)
        assert actions[1, 0] != 1
        assert actions[2, 0] == 0 and actions[2, 1] == 0  # no contact, so no offer either
    assert rules.stats["contact_blocked_rows"] == 400


def test_quiet_period():
    obs = make_obs(3)
    obs[0, FEATURES.index("weeks_since_contact_sms")] = 1
    obs[1, FEATURES.index("weeks_since_contact_push")] = 2
    rules = ContactRules(MassMarketing(SCHEMA, channel="push", every_k_weeks=1), SCHEMA, quiet_weeks=2)
    actions, props = rules.act(obs, None)
    assert actions[:, 0].tolist() == [0, 3, 3] and (props == 1).all()


def test_rules_propensities_are_the_wrapped_policys_under_the_reduced_mask():
    obs = make_obs(2000)
    obs[:1000, FEATURES.index("contacts_4w_email")] = 2
    mask = np.ones((2000, sum(SCHEMA.nvec)), bool)
    mask[::2, 2] = False  # every other customer unreachable by sms
    rules = ContactRules(UniformRandom(SCHEMA), SCHEMA, max_channel_contacts_4w={"email": 2})
    actions, props = rules.act(obs, np.random.default_rng(1), action_mask=mask)
    n_channels = 4 - (np.arange(2000) < 1000) - (np.arange(2000) % 2 == 0)
    np.testing.assert_allclose(props, 1.0 / (n_channels * 2 * 2))
    assert (actions[:1000, 0] != 1).all() and (actions[::2, 0] != 2).all()


def test_rules_reject_bad_arguments():
    with pytest.raises(KeyError, match="valid: email"):
        ContactRules(UniformRandom(SCHEMA), SCHEMA, max_channel_contacts_4w={"fax": 1})
    with pytest.raises(ValueError, match="quiet_weeks"):
        ContactRules(UniformRandom(SCHEMA), SCHEMA, quiet_weeks=-1)
    with pytest.raises(ValueError, match="weekly_budget"):
        BudgetConstraint(UniformRandom(SCHEMA), SCHEMA, weekly_budget=float("nan"))


def test_budget_funds_highest_scores_until_spent():
    n = 50
    score = np.random.default_rng(0).permutation(n).astype(np.float32)
    obs = make_obs(n, p_alive=1.0)
    obs[:, FEATURES.index("avg_spend")] = score
    obs[::5, FEATURES.index("optin_email")] = 0  # these get nothing from email mass marketing
    budget = BudgetConstraint(MassMarketing(SCHEMA, channel="email", spend_level=1), SCHEMA, weekly_budget=17.0)
    actions, props = budget.act(obs, None)
    assert (props == 1).all()
    cost = budget.cost(obs, actions)
    assert cost.sum() <= 17.0 and budget.last_spend == cost.sum()
    funded = actions.any(axis=1)
    # the funded are exactly a prefix of the ranking
    ranked_funded = funded[np.argsort(-score)]
    assert ranked_funded[: funded.sum()].all() and not ranked_funded[funded.sum():].any()
    # the next customer in line would have broken the budget
    nxt = np.argsort(-score)[funded.sum()]
    full, _ = MassMarketing(SCHEMA, channel="email", spend_level=1).act(obs, None)
    assert cost.sum() + budget.cost(obs[nxt:nxt + 1], full[nxt:nxt + 1])[0] > 17.0
    assert budget.stats["defunded_rows"] == int((full.any(axis=1) & ~funded).sum())


def test_budget_lets_free_actions_through():
    obs = make_obs(10, p_alive=1.0, avg_spend=1.0)
    budget = BudgetConstraint(MassMarketing(SCHEMA, channel="push"), SCHEMA, weekly_budget=0.0)
    actions, _ = budget.act(obs, None)
    assert (actions[:, 0] == 3).all()  # push costs nothing
    paid = BudgetConstraint(MassMarketing(SCHEMA, channel="sms"), SCHEMA, weekly_budget=0.0)
    assert (paid.act(obs, None)[0] == 0).all()


def test_budget_monte_carlo_propensities_match_exact_enumeration():
    """Three customers, uniform random over 16 joint actions each, budget $2: enumerate all
    16^3 joint draws to get the exact law of the final actions and compare."""
    obs = make_obs(3, p_alive=1.0)
    obs[:, FEATURES.index("avg_spend")] = [3.0, 2.0, 1.0]  # ranking = row order
    budget = BudgetConstraint(UniformRandom(SCHEMA), SCHEMA, weekly_budget=2.0, propensity_draws=4000)
    arms = np.indices(SCHEMA.nvec).reshape(3, -1).T
    exact = np.zeros((3, len(arms)))
    for combo in itertools.product(range(len(arms)), repeat=3):
        draw = arms[list(combo)]
        funded, _ = budget._funding(obs, draw, np.arange(3))
        final = np.where(funded[:, None], draw, 0)
        exact[np.arange(3), joint_index(final, SCHEMA.nvec)] += 1 / len(arms) ** 3
    rng = np.random.default_rng(7)
    for _ in range(8):
        actions, props = budget.act(obs, rng)
        want = exact[np.arange(3), joint_index(actions, SCHEMA.nvec)]
        assert (want > 0).all()  # the final action is possible
        np.testing.assert_allclose(props, want, rtol=0.2, atol=0.01)
