"""Every preset builds, documents itself, runs, and keeps the calibrated process at its
reference conditions (the normalization rule of customer-model.md §1)."""

import dataclasses
import math

import numpy as np
import pytest

import rapport.envs as envs
from rapport.envs.scenario import (
    DriftModel,
    MassMediaModel,
    OmnichannelModel,
    PrivacyModel,
    ProspectModel,
)

PRESETS = sorted(envs.PRESETS)


def test_the_four_presets_of_issue_3_exist():
    assert {"retail", "subscription", "fame", "privacy_sensitive"} <= set(PRESETS)
    assert {"challenger", "incumbent"} <= set(PRESETS)  # issue 15: fame as a decision


@pytest.mark.parametrize("name", PRESETS)
def test_preset_documents_itself_in_one_line_and_round_trips(name, tmp_path):
    sc = envs.get_scenario(name)
    assert sc.name == name
    assert sc.description and "\n" not in sc.description and len(sc.description) < 160
    assert envs.load_scenario(sc.save(tmp_path / f"{name}.json")) == sc
    assert envs.get_scenario(name) == sc  # a fresh, equal object each time


@pytest.mark.parametrize("name", PRESETS)
def test_preset_runs_with_any_valid_actions(name):
    n = 400
    env = envs.PopulationEnv(num_envs=n, scenario=name, horizon=8)
    obs, info = env.reset(seed=0)
    rng = np.random.default_rng(0)
    nvec = env.single_action_space.nvec
    assert len(env.offer_names) == nvec[1] and env.offer_names[-1] == "service_gesture"
    for _ in range(6):
        assert env.observation_space.contains(np.ascontiguousarray(obs))
        action = np.stack([rng.integers(0, k, n) for k in nvec], axis=1)
        obs, reward, term, trunc, info = env.step(action)
        assert np.isfinite(obs).all() and np.isfinite(reward).all()
        assert np.isfinite(info["latent"]["treatment_effect"]).all()
        assert set(info["market"]) == {"week", "budget", "adstock", "awareness"}
    summary = env.kpis.summary()
    assert all(math.isfinite(v) for v in summary.values())


def test_retail_has_every_issue_3_mechanism_off():
    sc = envs.get_scenario("retail")
    assert sc.mass_media == MassMediaModel() and not sc.mass_media.enabled
    assert sc.prospects == ProspectModel() and sc.prospects.share == 0
    assert sc.drift == DriftModel() and not sc.drift.enabled
    assert sc.privacy == PrivacyModel() and not sc.privacy.enabled
    assert sc.omnichannel == OmnichannelModel() and not sc.omnichannel.enabled
    assert sc.purchase.dropout_process == "after_purchase" and sc.purchase.subscription_fee == 0
    assert sc.media.reminder_dropout == 0 and not sc.offers.personalized_offer
    env = envs.PopulationEnv(num_envs=10, scenario=sc)
    assert env.state_bytes_per_customer() == 145  # no memory for the mechanisms that are off
    assert list(env.single_action_space.nvec) == [6, 8, 4]


def test_other_presets_turn_their_mechanisms_on():
    sub, fame, priv = (envs.get_scenario(k) for k in ("subscription", "fame", "privacy_sensitive"))
    assert sub.purchase.contractual and sub.purchase.subscription_fee > 0 and sub.media.reminder_dropout > 0
    assert fame.mass_media.enabled and fame.prospects.share > 0
    assert fame.omnichannel.enabled and not fame.omnichannel.observe_offline
    assert priv.privacy.enabled and priv.offers.personalized_offer
    assert all(sc.drift.enabled for sc in (sub, fame, priv))
    for sc in (sub, fame, priv):
        assert envs.PopulationEnv(num_envs=10, scenario=sc).state_bytes_per_customer() <= 200


@pytest.mark.parametrize("name", PRESETS)
def test_marketing_off_at_reference_conditions_keeps_the_calibrated_rate(name):
    """Normalization rule: no contacts, reference budget and awareness, drift centred by −σ²/2
    and list prices give every live customer's rate a multiplier whose mean is exactly 1."""
    n = 50_000
    env = envs.PopulationEnv(num_envs=n, scenario=name, horizon=3)
    env.reset(seed=5)
    _, _, _, _, info = env.step(np.zeros((n, 3), np.int64))
    latent = info["latent"]
    live = (latent["alive"] | latent["dropped_out"]) & ~info["converted"]
    mult = latent["purchase_rate"][live].astype(np.float64) / latent["base_rate"][live]
    if env.scenario.drift.rate_sigma == 0:
        np.testing.assert_allclose(mult, 1.0, rtol=1e-6)
    else:
        assert abs(mult.mean() - 1) < 4 * mult.std() / math.sqrt(live.sum()), mult.mean()


def test_a_preset_can_be_varied_and_validated():
    fame = envs.get_scenario("fame")
    louder = dataclasses.replace(fame, mass_media=dataclasses.replace(fame.mass_media, budget_schedule=(0.1, 0.0)))
    env = envs.PopulationEnv(num_envs=20, scenario=louder, horizon=4)
    env.reset(seed=0)
    budgets = [env.step(np.zeros((20, 3), np.int64))[4]["mass_media_cost"][0] for _ in range(3)]
    assert budgets == pytest.approx([0.1, 0.0, 0.1])
    with pytest.raises(ValueError, match=r"drift\.rate_sigma must be a finite number >= 0"):
        DriftModel(rate_sigma=-0.1)
    with pytest.raises(ValueError, match=r"prospects\.share must be a probability in \[0, 1\)"):
        ProspectModel(share=1.0)
    with pytest.raises(ValueError, match=r"privacy\.creep_by_level must have one value per explicitness level"):
        PrivacyModel(creep_by_level=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"mass_media\.awareness_floor must be > 0"):
        MassMediaModel(awareness_floor=0.0)
    with pytest.raises(ValueError, match=r"omnichannel\.online_share_mean must be > 0"):
        OmnichannelModel(online_share_mean=0.0)
    with pytest.raises(ValueError, match=r"purchase\.dropout_process must be one of \('after_purchase', 'weekly'\)"):
        envs.scenario.PurchaseModel(dropout_process="monthly")
    with pytest.raises(ValueError, match=r"drift\.update_weeks must be an integer in \[1, 52\]"):
        DriftModel(update_weeks=0)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['budget'\] in scenario\.mass_media"):
        envs.Scenario.from_dict({"mass_media": {"budget": 1}})
