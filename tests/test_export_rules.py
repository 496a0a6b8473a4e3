"""The exported policy carries the contact rules it was trained and evaluated under: its
decisions equal the in-memory policy inside ``ContactRules``, and the card says what is inside."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rapport.agents.constraints import ContactRules
from rapport.experiments.export.build import build_decision_module
from rapport.experiments.export.exporter import export_policy
from rapport.experiments.export.modules import EligibilityRule, exported
from rapport.experiments.export.samples import quick_bandit, quick_sb3_policy, random_observations

torch.set_num_threads(1)
RULES = {"max_contacts_4w": 4, "quiet_weeks": 2, "weekly_budget_per_customer": None}


def _observations(schema, n=4000):
    obs = random_observations(schema, n, np.random.default_rng(7))
    rng = np.random.default_rng(8)
    for c in schema.channel_names:  # a mix of rows under and over the cap / in and out of quiet
        obs[:, schema.feature_index(f"contacts_4w_{c}")] = rng.integers(0, 2, n)
        obs[:, schema.feature_index(f"weeks_since_contact_{c}")] = rng.integers(0, 6, n)
    return obs


def _decide(module, obs):
    with torch.no_grad():
        actions, _ = exported(module)(torch.as_tensor(obs))
    return actions.numpy()


@pytest.fixture(scope="module")
def ppo():
    return quick_sb3_policy("ppo_vecnormalize")


def test_numpy_rule_and_tensor_layer_agree(ppo):
    _, schema, _ = ppo
    obs = _observations(schema)
    rule = EligibilityRule.from_schema(schema.feature_names, schema.channel_names, schema.nvec,
                                       max_contacts_4w=4, quiet_weeks=2)
    module, _ = build_decision_module(ppo[0], schema, constraints=RULES)
    with torch.no_grad():
        layer = torch.cat(module.eligibility(torch.as_tensor(obs)), dim=1).numpy()
    np.testing.assert_array_equal(layer, rule.mask(obs))
    # and the rules matter: some opted-in rows are blocked by them
    plain = EligibilityRule.from_schema(schema.feature_names, schema.channel_names, schema.nvec).mask(obs)
    assert (plain & ~rule.mask(obs)).any()


@pytest.mark.parametrize("kind", ["ppo", "linucb"])
def test_export_decides_as_the_constrained_policy(kind, ppo):
    if kind == "ppo":
        policy, schema, _ = ppo
        memory = policy
    else:
        learner, schema = quick_bandit("linucb")
        policy, memory = learner, learner.policy(explore=False)
    obs = _observations(schema)
    consent = EligibilityRule.from_schema(schema.feature_names, schema.channel_names, schema.nvec).mask(obs)
    rules = ContactRules(memory, schema, max_contacts_4w=4, quiet_weeks=2)
    expected, _ = rules.act(obs, np.random.default_rng(0), action_mask=consent)
    module, spec = build_decision_module(policy, schema, constraints=RULES)
    got = _decide(module, obs)
    assert (got != expected).any(axis=1).sum() <= 5  # float32 near-ties only (as in test_export_parity)
    blocked = ~rules.contact_allowed(obs).any(axis=1)
    assert blocked.any() and (got[blocked, 0] == 0).all() and (got[blocked, 1] == 0).all()
    assert spec.eligibility["contact_rules"] == {"max_contacts_4w": 4, "quiet_weeks": 2}
    # without the rules the same policy does contact some of those rows: the check can fail
    unconstrained, _ = build_decision_module(policy, schema)
    assert (_decide(unconstrained, obs)[blocked, 0] > 0).any()


def test_card_lists_only_the_rules_left_outside(ppo, tmp_path):
    policy, schema, _ = ppo
    constraints = {**RULES, "weekly_budget_per_customer": 0.05}
    result = export_policy(policy, schema, tmp_path, formats=("onnx",),
                           card_context={"constraints": constraints})
    limits = " ".join(result.card["known_limits"])
    assert "weekly_budget_per_customer" in limits and "max_contacts_4w" not in limits
    assert result.spec.eligibility["contact_rules"] == {"max_contacts_4w": 4, "quiet_weeks": 2}


def test_rules_need_their_features(ppo):
    _, schema, _ = ppo
    names = [n for n in schema.feature_names if not n.startswith("contacts_4w_")]
    with pytest.raises(ValueError, match="contacts_4w_"):
        EligibilityRule.from_schema(names, schema.channel_names, schema.nvec, max_contacts_4w=2)
