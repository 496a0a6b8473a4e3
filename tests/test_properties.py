"""Hypothesis properties of the dynamics: invariants that must hold for any valid action sequence."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rapport.envs as envs
from rapport.envs.scenario import ChannelModel, OfferModel, PurchaseModel, Scenario

N = 64
actions = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 7), st.integers(0, 3)), min_size=N, max_size=N
).map(lambda rows: np.array(rows, dtype=np.int64))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), plan=st.lists(actions, min_size=1, max_size=8))
def test_invariants_hold_under_any_actions(seed, plan):
    env = envs.PopulationEnv(num_envs=N, horizon=100)
    env.reset(seed=seed)
    s = env.sim.state
    done_before = np.zeros(N, bool)
    for a in plan:
        optin_before = s.optin.copy()
        fatigue_before = s.fatigue.copy()
        spend_before = s.spend_total.copy()
        x_before = s.x.copy()
        obs, reward, term, trunc, info = env.step(a)
        assert np.all(np.isfinite(obs)) and np.all(np.isfinite(reward))
        assert np.all(s.fatigue >= 0)
        # opted out stays opted out
        # opted out stays opted out (rows reset this step after ending are new customers)
        assert not np.any((s.optin & ~optin_before)[:, ~done_before])
        # without a contact on a channel its fatigue decays strictly (or stays 0)
        contacted = np.zeros_like(s.optin)
        ch = a[:, 0]
        contacted[ch[ch > 0] - 1, np.flatnonzero(ch > 0)] = True
        contacted[4] |= a[:, 2] > 0  # paid-media spend adds paid-media fatigue
        quiet = ~contacted
        assert np.all(s.fatigue[quiet] <= fatigue_before[quiet])
        assert np.all((s.fatigue[quiet] < fatigue_before[quiet]) | (fatigue_before[quiet] < 1e-30))
        # cumulative revenue and purchase counts never decrease
        assert np.all(s.spend_total >= spend_before) and np.all(s.x >= x_before)
        # probabilities in [0, 1]
        p = obs[:, envs.FEATURE_NAMES.index("p_alive")]
        assert np.all((p >= 0) & (p <= 1))
        assert np.all(info["revenue"] >= 0) and np.all(info["discount_cost"] >= 0)
        # actions the mask forbids do nothing: no cost on a channel the customer opted out of
        mask = info["action_mask"]
        assert mask[:, 0].all() and mask[:, 6].all() and mask[:, 14].all()
        np.testing.assert_array_equal(mask[:, 1:6], s.optin.T)
        done_before = term | trunc


extreme = st.fixed_dictionaries({
    "r": st.floats(0.01, 20), "alpha": st.floats(0.05, 100), "a": st.floats(0.01, 20),
    "b": st.floats(0.01, 20), "p": st.floats(1.0, 50), "q": st.floats(1.01, 50),
    "gamma": st.floats(0.01, 1000), "gross_margin": st.floats(0, 1),
})


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=extreme, seed=st.integers(0, 1000), response=st.floats(0, 5),
       optout=st.floats(0, 1), decay=st.floats(0.01, 50))
def test_no_nan_under_extreme_but_valid_parameters(params, seed, response, optout, decay):
    base = Scenario()
    channels = tuple(
        ChannelModel(c.name, c.cost, response, 2.0, c.optin_share, decay, c.fatigue_response_decay,
                     optout, 5.0)
        for c in base.channels)
    sc = Scenario(purchase=PurchaseModel(**params), channels=channels,
                  offers=OfferModel(discounts=(0.5, 0.99)))
    env = envs.PopulationEnv(num_envs=32, scenario=sc, horizon=5)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(4):
        a = np.stack([rng.integers(0, k, 32) for k in env.single_action_space.nvec], 1)
        obs, reward, *_ = env.step(a)
        assert np.all(np.isfinite(obs)) and np.all(np.isfinite(reward))
        assert np.all(env.sim.state.fatigue >= 0)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), scenario=st.sampled_from(["subscription", "fame", "privacy_sensitive"]),
       weeks=st.integers(1, 6), budget=st.one_of(st.none(), st.floats(0, 2)))
def test_issue_3_mechanisms_keep_their_invariants(seed, scenario, weeks, budget):
    env = envs.PopulationEnv(num_envs=N, scenario=scenario, horizon=100)
    if budget is not None and env.scenario.mass_media.enabled:
        env.set_mass_media_budget(budget)
    obs, _ = env.reset(seed=seed)
    s, sc = env.sim.state, env.scenario
    rng = np.random.default_rng(seed)
    nvec = env.single_action_space.nvec
    col = {name: envs.FEATURE_NAMES.index(name) for name in ("prospect", "brand_awareness", "belief_category")}
    done_before = np.zeros(N, bool)
    for _ in range(weeks):
        prospect_before = obs[:, col["prospect"]].copy()
        a = np.stack([rng.integers(0, k, N) for k in nvec], axis=1)
        obs, reward, term, trunc, info = env.step(a)
        assert np.all(np.isfinite(obs)) and np.all(np.isfinite(reward))
        assert env.observation_space.contains(np.ascontiguousarray(obs))
        # once a customer, never a prospect again (rows reset after an early end are new people)
        kept = ~done_before
        assert not np.any(((obs[:, col["prospect"]] == 1) & (prospect_before == 0))[kept])
        assert np.all((info["converted"] == ((prospect_before == 1) & (obs[:, col["prospect"]] == 0)))[kept])
        done_before = term | trunc
        if s.trust.size:
            assert np.all((s.trust >= 0) & (s.trust <= 1))
        floor = sc.mass_media.awareness_floor
        assert np.all((obs[:, col["brand_awareness"]] >= floor - 1e-6) & (obs[:, col["brand_awareness"]] <= 1))
        assert np.all(obs[:, col["belief_category"]] <= sc.offers.n_categories - 1)
        assert np.all(info["mass_media_cost"] >= 0) and np.all(info["orders"] >= info.get("orders_offline", 0))
        assert np.all(info["latent"]["treatment_effect"][(a == 0).all(axis=1)] == 0)
