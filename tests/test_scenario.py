"""Scenario configuration: presets by name, files by path, clear errors for bad values."""

import dataclasses

import pytest

import rapport.envs as envs
from rapport.envs.scenario import ChannelModel, MediaModel, OfferModel, PurchaseModel, Scenario


def test_retail_preset_is_cdnow_calibrated():
    sc = envs.get_scenario("retail")
    assert (sc.purchase.r, sc.purchase.alpha, sc.purchase.a, sc.purchase.b) == (0.243, 4.414, 0.793, 2.426)
    assert (sc.purchase.p, sc.purchase.q, sc.purchase.gamma) == (6.25, 3.74, 15.44)
    assert sc.channel_names == envs.CHANNELS


def test_scenario_round_trips_through_a_file(tmp_path):
    sc = dataclasses.replace(envs.get_scenario("retail"), name="mine",
                             purchase=PurchaseModel(r=0.5, alpha=3.0))
    path = sc.save(tmp_path / "mine.json")
    assert envs.load_scenario(path) == sc
    env = envs.PopulationEnv(num_envs=5, scenario=str(path))
    assert env.scenario.purchase.r == 0.5


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: PurchaseModel(r=-1.0), r"purchase\.r must be a finite number > 0"),
        (lambda: PurchaseModel(alpha=0.0), r"purchase\.alpha"),
        (lambda: PurchaseModel(q=0.9), r"purchase\.q must be > 1"),
        (lambda: PurchaseModel(gross_margin=1.5), r"purchase\.gross_margin must be a probability in \[0, 1\]"),
        (lambda: ChannelModel("fax", 0.1, 0.1, 0.1, 0.5, 1, 0.1, 0.01, 0.1), "unknown channel 'fax'; valid channels: email"),
        (lambda: ChannelModel("email", 0.1, 0.1, 0.1, 1.2, 1, 0.1, 0.01, 0.1), r"optin_share must be a probability"),
        (lambda: ChannelModel("email", -0.1, 0.1, 0.1, 0.5, 1, 0.1, 0.01, 0.1), r"cost must be a finite number >= 0"),
        (lambda: OfferModel(discounts=(0.2, 1.0)), r"discounts\[1\] must be a probability in \[0, 1\)"),
        (lambda: OfferModel(pantry_decay=-0.1), r"offers\.pantry_decay"),
        (lambda: MediaModel(spend_levels=(0.5, 1.0)), "must start with 0"),
        (lambda: Scenario(initial_tenure_weeks=(10.0, 5.0)), "initial_tenure_weeks"),
        (lambda: envs.get_scenario("retial"), "unknown scenario 'retial'.*valid: (challenger, )?fame, (incumbent, )?privacy_sensitive, retail, subscription"),
        (lambda: Scenario.from_dict({"purchase": {"rr": 1}}), r"unknown key\(s\) \['rr'\] in scenario.purchase"),
        (lambda: envs.PopulationEnv(num_envs=0), "num_envs must be an integer >= 1, got 0"),
        (lambda: envs.PopulationEnv(num_envs=5, horizon=0), "horizon must be an integer >= 1"),
        (lambda: envs.PopulationEnv(num_envs=5, autoreset_mode="sometimes"), "autoreset_mode must be one of"),
    ],
)
def test_bad_configuration_fails_at_construction(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_seed_is_rejected():
    env = envs.PopulationEnv(num_envs=3)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        env.reset(seed=-4)


def test_a_submodel_override_keeps_the_presets_other_fields():
    """env.overrides.mass_media.budget_schedule on the fame preset must not switch its mass media
    off (a shallow merge used to reset the whole submodel to the retail defaults)."""
    get_scenario = envs.get_scenario
    fame = get_scenario("fame")
    s = get_scenario("fame", mass_media={"budget_schedule": [0.0]})
    assert s.mass_media.budget_schedule == (0.0,)
    assert s.mass_media.enabled and s.mass_media.awareness_effect == fame.mass_media.awareness_effect
    assert s.prospects == fame.prospects
    assert get_scenario("fame", mass_media={}) == fame
