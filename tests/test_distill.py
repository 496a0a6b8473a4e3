"""Distilling a policy into a shallow decision tree (experiments/distill.py)."""

from __future__ import annotations

import numpy as np
import pytest

from rapport.envs.observation import FEATURE_NAMES
from rapport.experiments import builders
from rapport.experiments.config import EnvConfig
from rapport.experiments.distill import (
    Collected,
    DistilledPolicy,
    agreement,
    collect,
    decode,
    distill,
    distill_dagger,
    encode,
    fidelity,
    history_features,
    rules_text,
    value_retained,
)
from rapport.experiments.evaluation import EvalSettings

ENV = EnvConfig(scenario="retail", customers=600, horizon=12)
F = {f: i for i, f in enumerate(FEATURE_NAMES)}


class TreeRule:
    """A depth-2 threshold rule on observable (integer-valued) features, respecting the mask.

    opted in to e-mail: e-mail with discount_10 to customers with 2 or more orders, else nothing;
    not opted in: direct mail (no offer) to active customers, else nothing."""

    def act(self, obs, rng, *, action_mask=None):
        n = obs.shape[0]
        a = np.zeros((n, 3), np.int64)
        email = obs[:, F["optin_email"]] > 0.5
        a[email & (obs[:, F["frequency"]] > 1.5)] = (1, 1, 0)
        a[~email & (obs[:, F["stage_active"]] > 0.5)] = (4, 0, 0)
        if action_mask is not None:
            ok = action_mask[np.arange(n), a[:, 0]] & action_mask[np.arange(n), 6 + a[:, 1]] \
                & action_mask[np.arange(n), 14 + a[:, 2]]
            a[~ok] = 0
        return a, np.ones(n)


@pytest.fixture(scope="module")
def fitted():
    # the first week only: later weeks carry the rule's own footprint (weeks_since_contact_direct_mail
    # <= 1.5 is "was mailed last week"), which a greedy tree prefers to the rule's true features
    train = collect(TreeRule(), ENV, customers=2000, weeks=1, seed=8101)
    held = collect(TreeRule(), ENV, customers=2000, weeks=1, seed=8102)
    d = distill(train.obs, train.actions, train.feature_names, max_depth=3, nvec=train.nvec)
    d.fidelity = fidelity(d, held)
    return train, held, d


def test_tree_policy_is_distilled_exactly(fitted):
    train, held, d = fitted
    assert len(np.unique(encode(train.actions, train.nvec))) >= 3  # the rule's branches all occur
    assert d.fidelity == 1.0
    es = EvalSettings(builders.resolve_scenario(ENV), customers=400, horizon=ENV.horizon, seeds=(7100,),
                      blocks=20)
    vr = value_retained(TreeRule(), d, es, n_boot=50)
    for k in ("profit", "lifetime_value"):
        assert vr[k]["diff"] == 0.0
        assert vr[k]["ci_low"] == 0.0 and vr[k]["ci_high"] == 0.0
        assert vr[k]["original"] == vr[k]["distilled"]


def test_rules_text_names_features_and_actions_in_words(fitted):
    train, _, d = fitted
    env = builders.make_env(ENV, customers=1)
    text = rules_text(d, env.feature_names, env.channel_names, env.offer_names, env.spend_levels)
    assert "optin_email" in text and "frequency > 1.5" in text and "not optin_email and stage_active" in text
    assert "email, offer discount_10, no media spend" in text
    assert "direct_mail, no offer, no media spend" in text
    assert "no contact" in text
    assert "% of customer-weeks" in text


def test_history_features_can_be_excluded():
    data = collect(TreeRule(), ENV, customers=500, weeks=6, seed=8103)
    hist = history_features(data.feature_names)
    assert "weeks_since_contact_direct_mail" in hist and "frequency" not in hist
    d = distill(data.obs, data.actions, data.feature_names, nvec=data.nvec, exclude_features=hist)
    env = builders.make_env(ENV, customers=1)
    text = rules_text(d, env.feature_names, env.channel_names, env.offer_names, env.spend_levels)
    assert not any(f in text for f in hist)
    with pytest.raises(ValueError, match="exclude_features"):
        distill(data.obs, data.actions, data.feature_names, exclude_features=("no_such_feature",))


class NoContact:
    def act(self, obs, rng, *, action_mask=None):
        return np.zeros((obs.shape[0], 3), np.int64), np.ones(obs.shape[0])


def test_driver_moves_the_population_and_the_policy_labels():
    data = collect(TreeRule(), ENV, customers=300, weeks=4, seed=8104, driver=NoContact())
    cols = [F[f] for f in FEATURE_NAMES if f.startswith("contacts_4w_")]
    assert (data.obs[:, cols] == 0).all()  # nobody was contacted: the driver acted
    labels, _ = TreeRule().act(data.obs, None, action_mask=data.masks)
    assert np.array_equal(data.actions, labels) and (labels > 0).any()  # the policy labelled
    tree, rows = distill_dagger(TreeRule(), ENV, 300, 8105, rounds=1, weeks=3)
    assert len(rows.obs) > 300 * 3 and tree.extra["dagger_rounds"] == 1
    a = agreement(tree, data)
    assert set(a) == {"contact", "channel", "offer", "spend", "joint"} and a["joint"] == fidelity(tree, data)


def test_mask_is_respected():
    rng = np.random.default_rng(0)
    nvec = (6, 8, 4)
    n = 3000
    obs = rng.normal(size=(n, len(FEATURE_NAMES))).astype(np.float32)
    actions = np.stack([rng.integers(0, k, n) for k in nvec], axis=1)
    d = distill(obs, actions, FEATURE_NAMES, max_depth=4, min_samples_leaf=20, nvec=nvec)
    mask = rng.random((n, sum(nvec))) < 0.5
    mask[:, [0, 6, 14]] = rng.random((n, 3)) < 0.8  # no-contact sometimes forbidden too: still returned
    a, p = d.act(obs, rng, action_mask=mask)
    offs = (0, 6, 14)
    chosen_ok = np.ones(n, bool)
    for j in range(3):
        chosen_ok &= mask[np.arange(n), offs[j] + a[:, j]]
    fallback = (a == 0).all(axis=1)
    assert (chosen_ok | fallback).all()
    assert np.all(p == 1.0)
    # where nothing of the leaf is allowed, the answer is no contact
    none = np.zeros_like(mask)
    a0, _ = d.act(obs, rng, action_mask=none)
    assert (a0 == 0).all()
    # an all-true mask changes nothing
    a1, _ = d.act(obs, rng, action_mask=np.ones_like(mask))
    assert np.array_equal(a1, d.act(obs, rng)[0])
    assert np.array_equal(decode(encode(actions, nvec), nvec), actions)


def test_bad_input_names_the_parameter():
    obs = np.zeros((10, len(FEATURE_NAMES)), np.float32)
    actions = np.zeros((10, 3), np.int64)
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="max_depth"):
            distill(obs, actions, FEATURE_NAMES, max_depth=bad)
    with pytest.raises(ValueError, match="feature_names"):
        distill(obs[:, :-1], actions, FEATURE_NAMES)
    with pytest.raises(ValueError, match="min_samples_leaf"):
        distill(obs, actions, FEATURE_NAMES, min_samples_leaf=0)
    d = distill(obs, actions, FEATURE_NAMES, nvec=(6, 8, 4))
    assert isinstance(d, DistilledPolicy)
    with pytest.raises(ValueError, match="feature_names"):
        d.act(obs[:, :-1], None)
    held = Collected(obs, actions, None, tuple(FEATURE_NAMES[:-1]), (6, 8, 4), 1, 10, 0)
    with pytest.raises(ValueError, match="feature_names"):
        fidelity(d, held)
