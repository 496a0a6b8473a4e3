"""Awareness gates attention to personal messages (rapport.envs.attention), the challenger and
incumbent presets, and the golden trace that proves the existing presets bit-identical."""

import math

import numpy as np
import pytest

import rapport.envs as envs
from rapport.envs.attention import attention_factor
from rapport.envs.mechanism_params import MassMediaModel

F = envs.FEATURE_NAMES
EMAIL = 1 + envs.CHANNELS.index("email")

GOLDEN = {  # scripts/hash_presets.py (2,000 customers, 20 weeks) at cb8745d, before this mechanism
    "fame": "6505e720c02704b77f7491559e70240d3cf8fc0734db23274750bd865f1390da",
    "privacy_sensitive": "d4f5e9ba105f8a16151f35c935fc528724fde064d3c8f04d719ad8474af00212",
    "retail": "cd4797082d2b8119e6c7d1ef80b6c6158a49328492f89e419a7195e78a291021",
    "subscription": "f40c882f21f318cfa2ff6532bca597f070f215cf981aa32e11ee6cb7dcde4a09",
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_existing_presets_are_bit_identical_with_attention_off(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "hash_presets.py"
    spec = importlib.util.spec_from_file_location("hash_presets", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert envs.get_scenario(name).mass_media.attention_strength == 0
    assert mod.trace(name) == GOLDEN[name]


def email_lift(scenario, awareness: float, n: int = 4000, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(relative lift of the latent weekly rate, log lift) of one e-mail to every reachable live
    customer at market awareness ``awareness``: the same population (common random numbers)
    e-mailed and not."""
    rates = []
    for send in (False, True):
        env = envs.PopulationEnv(num_envs=n, scenario=scenario, horizon=4, include_latent=True)
        obs, _ = env.reset(seed=seed)
        env.sim.market.awareness = awareness  # the market as a tracking survey would find it
        reach = (obs[:, F.index("optin_email")] > 0) & (obs[:, F.index("prospect")] == 0)
        action = np.zeros((n, 3), np.int64)
        if send:
            action[reach, 0] = EMAIL
        _, _, _, _, info = env.step(action)
        rates.append(info["latent"]["purchase_rate"].astype(np.float64))
    live = reach & (rates[0] > 0)
    ratio = rates[1][live] / rates[0][live]
    return ratio - 1.0, np.log(ratio)


def test_without_the_gate_an_email_lifts_the_same_at_any_awareness():
    off = envs.get_scenario("challenger", mass_media={"attention_strength": 0.0})
    low, log_low = email_lift(off, 0.36)
    high, log_high = email_lift(off, 0.78)
    assert low.mean() > 0.05  # the e-mail does something
    np.testing.assert_allclose(log_low, log_high, rtol=1e-5, atol=1e-6)


def test_with_the_gate_an_unknown_brands_email_lifts_less():
    sc = envs.get_scenario("challenger")
    assert sc.mass_media.attention_strength == 1.0
    low, log_low = email_lift(sc, 0.36)
    high, log_high = email_lift(sc, 0.78)
    assert low.mean() < 0.7 * high.mean(), (low.mean(), high.mean())  # relative lift of the rate
    # exactly the factor g(0.36) / g(0.78) = (0.36 / 0.78)^1 on every customer's log lift
    np.testing.assert_allclose(log_low / log_high, 0.36 / 0.78, rtol=1e-4)
    print(f"relative rate lift of an e-mail: {low.mean():.3f} at awareness 0.36, {high.mean():.3f} at 0.78")


def test_with_the_gate_fewer_emailed_customers_buy_for_the_unknown_brand():
    """The behavioural version (orders, not latent rates): an A/B test in week 0 at two awareness
    levels on the same customers; the treated-minus-control order share is smaller at 0.36."""
    sc = envs.get_scenario("challenger")
    n = 40_000
    lifts = {}
    for awareness in (0.36, 0.78):
        bought = []
        for send in (False, True):
            env = envs.PopulationEnv(num_envs=n, scenario=sc, horizon=3)
            obs, _ = env.reset(seed=11)
            env.sim.market.awareness = awareness
            reach = (obs[:, F.index("optin_email")] > 0) & (obs[:, F.index("prospect")] == 0)
            action = np.zeros((n, 3), np.int64)
            action[reach, 0] = EMAIL if send else 0
            bought.append(env.step(action)[4]["orders"][reach] > 0)
        lifts[awareness] = bought[1].mean() / bought[0].mean() - 1.0
    assert lifts[0.36] < lifts[0.78] - 0.03, lifts


def test_attention_factor_and_its_validation():
    mm = MassMediaModel(enabled=True, attention_strength=2.0, attention_reference=0.5)
    assert attention_factor(mm, 0.5) == 1.0
    assert math.isclose(attention_factor(mm, 0.25), 0.25)
    assert attention_factor(MassMediaModel(), 0.01) == 1.0  # off: exactly 1 whatever the awareness
    with pytest.raises(ValueError, match=r"mass_media\.attention_strength must be a finite number >= 0"):
        MassMediaModel(enabled=True, attention_strength=-1.0)
    with pytest.raises(ValueError, match=r"mass_media\.attention_reference must be in \(0, 1\]"):
        MassMediaModel(enabled=True, attention_reference=0.0)
    with pytest.raises(ValueError, match=r"mass_media\.attention_strength > 0 needs mass_media\.enabled"):
        MassMediaModel(attention_strength=1.0)


def test_challenger_and_incumbent_are_the_fame_brand_at_two_awareness_levels():
    ch, inc, fame = (envs.get_scenario(k) for k in ("challenger", "incumbent", "fame"))
    a_ch = ch.mass_media.steady_awareness(ch.mass_media.reference_budget)
    a_inc = inc.mass_media.steady_awareness(inc.mass_media.reference_budget)
    assert a_ch < 0.4 < 0.69 < a_inc
    assert ch.prospects.share > fame.prospects.share > inc.prospects.share
    assert attention_factor(inc.mass_media, a_inc) == pytest.approx(1.0)
    assert attention_factor(ch.mass_media, a_ch) == pytest.approx(0.5515, abs=1e-3)
    for sc in (ch, inc):  # the rest is the fame brand
        assert sc.purchase == fame.purchase and sc.channels == fame.channels and sc.omnichannel == fame.omnichannel
        env = envs.PopulationEnv(num_envs=50, scenario=sc, horizon=2)
        obs, _ = env.reset(seed=0)
        assert obs[0, F.index("brand_awareness")] == pytest.approx(
            sc.mass_media.steady_awareness(sc.mass_media.reference_budget), abs=1e-6)
