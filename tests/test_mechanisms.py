"""The population-level and human mechanisms behave as specified (customer-model.md §2.3,
§2.8-2.12): mass media and awareness, prospects, drift and life events, privacy backlash, the
360° view, contractual churn, and the per-row treatment effect in ``info``.

Statistical checks use fixed seeds and tolerances of about 4 standard errors, or compare twin
worlds that share the same customers and noise (common random numbers).
"""

import dataclasses
import math

import numpy as np
import pytest
from scipy.special import betaln

import rapport.envs as envs
from rapport.envs.market import Market
from rapport.envs.scenario import DriftModel, OmnichannelModel

F = envs.FEATURE_NAMES


def col(obs, name):
    return obs[:, F.index(name)]


def zeros(n):
    return np.zeros((n, 3), np.int64)


# ---- mass media and awareness (§2.9) ----------------------------------------------------------

def test_market_is_steady_at_the_reference_budget_and_forgets_without_it():
    sc = envs.get_scenario("fame")
    mm = sc.mass_media
    market = Market(sc)
    a0 = market.awareness
    assert a0 == pytest.approx(mm.steady_awareness(mm.reference_budget))
    for _ in range(60):  # the schedule is the reference budget: nothing moves
        terms = market.step()
        assert terms.customer_lift == pytest.approx(0, abs=1e-12)
        assert terms.prospect_lift == pytest.approx(0, abs=1e-12)
        assert terms.cost_per_row == mm.reference_budget
    assert market.awareness == pytest.approx(a0, abs=1e-12)

    market.reset()
    market.set_budget(0.0)
    path = []
    for _ in range(104):
        terms = market.step()
        path.append(market.awareness)
        assert terms.cost_per_row == 0.0
    path = np.array(path)
    assert np.all(np.diff(path) < 0) and path[-1] > mm.awareness_floor
    # forgetting at δ per week towards the floor; the decaying adstock delays it by a few weeks
    kept = (path[-1] - mm.awareness_floor) / (a0 - mm.awareness_floor)
    delta = mm.awareness_forgetting
    assert (1 - delta) ** 104 < kept < (1 - delta) ** 94, kept
    assert terms.customer_lift < -0.5  # strong fame effect: rates fall by > 40 % after 2 years


def expected_sales(budget, weeks, n=20_000, seed=5):
    """Expected orders per week of a fame population with marketing off (latent rates: no
    Poisson noise), including prospects' expected first purchases."""
    env = envs.PopulationEnv(num_envs=n, scenario="fame", horizon=weeks + 1)
    env.set_mass_media_budget(budget)
    env.reset(seed=seed)
    out = []
    for _ in range(weeks):
        _, _, _, _, info = env.step(zeros(n))
        out.append(info["latent"]["purchase_rate"].sum() + info["converted"].sum())
    return np.array(out, np.float64)


def test_budget_elasticity_of_sales_is_in_the_published_range():
    """Local elasticity of sales to the budget at the operating point: 0.05-0.25 (§2.9;
    Sethuraman, Tellis & Briesch 2011: 0.12 short run, 0.24 long run), and the long-run effect
    larger than the immediate one because awareness keeps building. Twin worlds (same customers
    and noise) at the reference budget and 10 % above it."""
    ref = envs.get_scenario("fame").mass_media.reference_budget
    base = expected_sales(ref, 60)
    more = expected_sales(1.1 * ref, 60)
    elasticity = np.log(more / base) / np.log(1.1)
    short = elasticity[1:5].mean()
    long = elasticity[50:60].mean()
    assert 0.03 <= short <= 0.25, short
    assert 0.05 <= long <= 0.25, long
    assert long > 1.2 * short, (short, long)


def test_set_mass_media_budget_validates_and_lasts_across_resets():
    env = envs.PopulationEnv(num_envs=50, scenario="fame", horizon=5)
    for bad in (-1.0, float("nan"), float("inf"), "lots", True):
        with pytest.raises(ValueError, match="mass-media budget must be a finite number >= 0"):
            env.set_mass_media_budget(bad)
    env.set_mass_media_budget(0.2)
    _, info = env.reset(seed=0)
    assert info["market"]["budget"] == 0.2 and env.mass_media_budget == 0.2
    _, _, _, _, info = env.step(zeros(50))
    np.testing.assert_allclose(info["mass_media_cost"], 0.2)
    env.set_mass_media_budget(None)
    assert env.mass_media_budget == envs.get_scenario("fame").mass_media.budget_schedule[0]
    with pytest.raises(ValueError, match="no mass media.*'fame' preset"):
        envs.PopulationEnv(num_envs=5).set_mass_media_budget(1.0)


# ---- prospects (§2.8-2.9) ---------------------------------------------------------------------

def test_prospects_convert_at_the_configured_rate_and_become_customers():
    n = 50_000
    sc = envs.get_scenario("fame")
    env = envs.PopulationEnv(num_envs=n, scenario="fame", horizon=5)
    obs, info = env.reset(seed=3)
    prospect = col(obs, "prospect") == 1
    assert abs(prospect.mean() - sc.prospects.share) < 4 * math.sqrt(0.24 / n)
    stages = obs[:, [F.index(f"stage_{s}") for s in envs.STAGES]]
    assert (stages[prospect] == 0).all() and (stages[~prospect].sum(axis=1) == 1).all()
    assert (col(obs, "tenure_weeks")[prospect] == 0).all() and (col(obs, "frequency")[prospect] == 0).all()
    mask = info["action_mask"]
    paid = 1 + envs.CHANNELS.index("paid_media")
    assert mask[prospect, paid].all() and not mask[prospect, 1:paid].any()
    assert not info["latent"]["alive"][prospect].any()  # not customers yet: no repeat purchases

    obs, _, _, _, info = env.step(zeros(n))
    conv = info["converted"]
    assert not conv[~prospect].any()
    p = -math.expm1(-sc.prospects.conversion_rate)  # at the reference awareness, no marketing
    assert abs(conv[prospect].mean() - p) < 4 * math.sqrt(p * (1 - p) / prospect.sum())
    assert (info["orders"][conv] == 1).all() and (info["revenue"][conv] > 0).all()
    assert (col(obs, "prospect")[conv] == 0).all() and (col(obs, "stage_new")[conv] == 1).all()
    assert (col(obs, "tenure_weeks")[conv] == 0).all()
    assert col(obs, "optin_email")[conv].mean() > 0.3  # consent given with the first order
    assert info["latent"]["alive"][conv].all()


def conversions(scenario="fame", weeks=1, spend=0, budget=None, n=40_000, seed=8):
    env = envs.PopulationEnv(num_envs=n, scenario=scenario, horizon=weeks + 1)
    if budget is not None:
        env.set_mass_media_budget(budget)
    obs, _ = env.reset(seed=seed)
    prospect = col(obs, "prospect") == 1
    action = zeros(n)
    action[prospect, 2] = spend
    total = np.zeros(n, bool)
    for _ in range(weeks):
        _, _, _, _, info = env.step(action)
        total |= info["converted"]
    return total[prospect].mean()


def test_paid_media_and_awareness_drive_prospect_conversion():
    assert conversions(spend=3) > 1.3 * conversions(spend=0)  # saturated media: ×exp(0.35·0.9) median
    ref = envs.get_scenario("fame").mass_media.reference_budget
    quiet = conversions(weeks=26, budget=0.0)
    loud = conversions(weeks=26, budget=4 * ref)
    usual = conversions(weeks=26)
    assert quiet < 0.85 * usual < 0.85 * loud, (quiet, usual, loud)


# ---- people change (§2.10) --------------------------------------------------------------------

def drifting(sigma=0.5, phi=0.98, taste=0.5, events=0.0, every=4):
    return dataclasses.replace(
        envs.get_scenario("retail"), name="drifting",
        drift=DriftModel(rate_sigma=sigma, rate_persistence=phi, preference_sigma=taste,
                         life_event_rate=events, update_weeks=every))


def test_rate_drift_keeps_the_mean_rate_and_its_stationary_law():
    n, sigma, phi = 100_000, 0.5, 0.98
    env = envs.PopulationEnv(num_envs=n, scenario=drifting(sigma, phi), horizon=50)
    env.reset(seed=4)
    z0 = env.sim.state.rate_drift.astype(np.float64).copy()
    for week in range(41):
        if week in (0, 20, 40):
            z = env.sim.state.rate_drift.astype(np.float64)
            mult = np.exp(z - sigma**2 / 2)  # the −σ²/2 correction: E[mult] = 1
            assert abs(mult.mean() - 1) < 4 * mult.std() / math.sqrt(n), (week, mult.mean())
            assert abs(z.var() / sigma**2 - 1) < 4 * math.sqrt(2 / n), (week, z.var())
        if week == 40:  # every row moved on 10 times by the exact 4-week transition
            assert np.corrcoef(z0, z)[0, 1] == pytest.approx(phi**40, abs=0.015)
        env.step(zeros(n))


def test_drift_changes_individuals_not_the_purchase_process_on_average():
    """Marketing off, the effective rate of live customers keeps its mean (normalization rule),
    while individuals' favourite categories move."""
    n = 50_000
    env = envs.PopulationEnv(num_envs=n, scenario=drifting(), horizon=60)
    env.reset(seed=6)
    s = env.sim.state
    fav0 = np.argmax(envs.state.effective_tastes(env.scenario, s, np.arange(n)), axis=0)
    for _ in range(52):
        _, _, _, _, info = env.step(zeros(n))
    alive = info["latent"]["alive"] | info["latent"]["dropped_out"]
    ratio = info["latent"]["purchase_rate"][alive] / info["latent"]["base_rate"][alive]
    assert abs(ratio.mean() - 1) < 4 * ratio.std() / math.sqrt(alive.sum()), ratio.mean()
    fav = np.argmax(envs.state.effective_tastes(env.scenario, s, np.arange(n)), axis=0)
    assert 0.05 < (fav != fav0).mean() < 0.6


def test_life_events_happen_at_the_configured_rate():
    n, rate, weeks = 40_000, 0.02, 10
    env = envs.PopulationEnv(num_envs=n, scenario=drifting(sigma=0.3, taste=0.0, events=rate, every=1),
                             horizon=20)
    env.reset(seed=2)
    before = env.sim.state.category_pref.copy()
    for _ in range(weeks):
        env.step(zeros(n))
    moved = (env.sim.state.category_pref != before).any(axis=0).mean()
    p = 1 - (1 - rate) ** weeks
    assert abs(moved - p) < 4 * math.sqrt(p * (1 - p) / n), (moved, p)


# ---- privacy backlash and the firm's belief (§2.11) ---------------------------------------------

def one_email(offer_of, scenario="privacy_sensitive", n=60_000, seed=3):
    """Week-0 outcome of one e-mail to everyone with an address, carrying ``offer_of(obs, env)``."""
    env = envs.PopulationEnv(num_envs=n, scenario=scenario, horizon=5)
    obs, _ = env.reset(seed=seed)
    s = env.sim.state
    trust0 = s.trust.copy()
    action = zeros(n)
    offer = offer_of(obs, env)
    if offer is not None:
        emailable = col(obs, "optin_email") > 0
        action[emailable, 0] = 1 + envs.CHANNELS.index("email")
        action[emailable, 1] = offer[emailable]
    _, _, _, _, info = env.step(action)
    return obs, env, info["orders"].astype(np.float64), info["opted_out"], trust0 - s.trust


def test_explicit_personalization_backfires_for_unfamiliar_customers_only():
    """Wattal et al. (2012): explicit use of personal data gets a negative response from
    customers unfamiliar with the firm, less so (here: positive) from familiar ones; it raises
    opt-outs and costs trust. Twin worlds: the same customers get nothing, a generic e-mail, or
    an e-mail with a ``personal_recommendation``."""
    obs, env, base, _, _ = one_email(lambda o, e: None)
    names = env.offer_names
    _, _, generic, out_g, _ = one_email(lambda o, e: np.zeros(len(o), np.int64))
    _, _, personal, out_p, lost = one_email(
        lambda o, e: np.full(len(o), names.index("personal_recommendation")))
    emailable = col(obs, "optin_email") > 0
    tenure = col(obs, "tenure_weeks")
    new, familiar = emailable & (tenure < 26), emailable & (tenure >= 78)
    lift = {k: (v - base) for k, v in (("generic", generic), ("personal", personal))}
    assert lift["personal"][new].mean() < 0.6 * lift["generic"][new].mean()
    assert lift["personal"][familiar].mean() > 1.2 * lift["generic"][familiar].mean()
    assert out_p[new].mean() > 3 * out_g[new].mean()
    assert lost[new].mean() > 1.5 * lost[familiar].mean() > 0  # ~2.5x measured


def test_wrong_guesses_feel_creepier_than_right_ones():
    def recommend(pick):
        def offer_of(obs, env):
            w = env.sim.state.category_pref  # no taste drift at reset: these are today's tastes
            first = env.offer_names.index("recommend_category_0")
            return first + (np.argmax(w, axis=0) if pick == "right" else np.argmin(w, axis=0))
        return offer_of

    obs, _, base, _, _ = one_email(lambda o, e: None)
    _, _, right, out_r, lost_r = one_email(recommend("right"))
    _, _, wrong, out_w, lost_w = one_email(recommend("wrong"))
    emailable = col(obs, "optin_email") > 0
    assert lost_w[emailable].mean() > 1.3 * lost_r[emailable].mean() > 0
    assert (wrong - base)[emailable].mean() < 0.8 * (right - base)[emailable].mean()
    assert out_w[emailable].mean() >= out_r[emailable].mean()


def test_the_firms_belief_is_thin_for_new_customers_and_sharpens_with_orders():
    n = 60_000
    env = envs.PopulationEnv(num_envs=n, scenario="retail", horizon=5)
    obs, _ = env.reset(seed=9)
    right = col(obs, "belief_category") == np.argmax(env.sim.state.category_pref, axis=0)
    freq = col(obs, "frequency")
    K, learn = env.scenario.offers.n_categories, env.scenario.offers.belief_orders

    def accuracy(orders_seen):
        return 1 - (1 - 1 / K) * math.exp(-orders_seen / learn)

    one = freq == 0  # only the first purchase seen
    assert abs(right[one].mean() - accuracy(1)) < 4 * math.sqrt(0.25 / one.sum())
    many = freq >= 6
    assert right[many].mean() > accuracy(7) - 4 * math.sqrt(0.25 / many.sum())
    assert right[many].mean() > right[one].mean() + 0.3


# ---- the 360° view ---------------------------------------------------------------------------------

def omni(observe_offline):
    return dataclasses.replace(
        envs.get_scenario("retail"), name="omni",
        omnichannel=OmnichannelModel(online_share_mean=0.4, online_share_concentration=2.0,
                                     observe_offline=observe_offline))


def test_hidden_store_purchases_are_rewarded_but_not_observed():
    n, weeks = 30_000, 8
    rng = np.random.default_rng(0)
    plans = [np.where(rng.random((n, 1)) < 0.2, [[1, 0, 0]], 0) for _ in range(weeks)]
    runs = {}
    for seen in (True, False):
        env = envs.PopulationEnv(num_envs=n, scenario=omni(seen), horizon=weeks + 1)
        obs0, _ = env.reset(seed=12)
        rewards, offline, seen_orders = [], 0, 0
        for t in range(weeks):
            obs, r, _, _, info = env.step(plans[t])
            rewards.append(r)
            offline += int(info["orders_offline"].sum())
            seen_orders += int((info["orders"] - info["orders_offline"]).sum())
        runs[seen] = (obs0, obs, np.stack(rewards), offline, seen_orders, info)
    full, hidden = runs[True], runs[False]
    # the observation switch changes what the firm sees, not what happens
    np.testing.assert_array_equal(full[2], hidden[2])
    assert hidden[3] > 0
    x_full, x_hidden = col(full[0], "frequency"), col(hidden[0], "frequency")
    assert (x_hidden <= x_full).all()
    has = x_full > 0
    assert 0.3 < x_hidden[has].sum() / x_full[has].sum() < 0.5  # E[online share] = 0.4
    assert (col(hidden[0], "recency_weeks") >= col(full[0], "recency_weeks") - 1e-4).all()
    grew_full = (col(full[1], "frequency") - x_full).sum()
    grew_hidden = (col(hidden[1], "frequency") - x_hidden).sum()
    assert grew_full == full[3] + full[4] and grew_hidden == hidden[4]
    # the firm's P(alive) tells live from lapsed customers less well from online orders alone
    alive = full[5]["latent"]["alive"]
    np.testing.assert_array_equal(alive, hidden[5]["latent"]["alive"])
    informative = {k: np.corrcoef(col(run[1], "p_alive"), alive)[0, 1] for k, run in runs.items()}
    assert informative[False] < informative[True] - 0.05, informative


# ---- contractual churn (§2.3) ---------------------------------------------------------------------

def test_subscription_retention_of_a_fresh_cohort_is_sbg():
    """Marketing off, a cohort that just subscribed keeps S(t) = B(a, b + t) / B(a, b) of its
    members after t weeks (sBG, Fader & Hardie 2007), and the firm sees every cancellation."""
    n = 100_000
    sc = dataclasses.replace(envs.get_scenario("subscription"), initial_tenure_weeks=(0.0, 0.0))
    a, b = sc.purchase.a, sc.purchase.b
    env = envs.PopulationEnv(num_envs=n, scenario=sc, horizon=60)
    env.reset(seed=1)
    fee = sc.purchase.subscription_fee
    for week in range(1, 53):
        alive_before = env.sim.state.alive.copy()
        obs, _, _, _, info = env.step(zeros(n))
        assert (info["revenue"][alive_before] >= fee - 1e-4).all() and (info["revenue"][~alive_before] == 0).all()
        np.testing.assert_array_equal(col(obs, "p_alive") == 1, info["latent"]["alive"])
        if week in (13, 26, 52):
            survival = math.exp(betaln(a, b + week) - betaln(a, b))
            kept = info["latent"]["alive"].mean()
            assert abs(kept - survival) < 4 * math.sqrt(survival * (1 - survival) / n), (week, kept, survival)


# ---- true treatment effect (§2.12) ----------------------------------------------------------------

@pytest.mark.parametrize("scenario", ["retail", "fame", "privacy_sensitive"])
def test_treatment_effect_is_the_expected_profit_difference(scenario):
    """``info["latent"]["treatment_effect"]`` equals the expected-profit oracle's difference
    between the action and doing nothing, is 0 where the action reaches nobody, and on average
    matches the realized profit difference between twin worlds (same customers and noise)."""
    n = 40_000
    rng = np.random.default_rng(1)
    env = envs.PopulationEnv(num_envs=n, scenario=scenario, horizon=5)
    env.reset(seed=2)
    nvec = env.single_action_space.nvec
    action = np.stack([rng.integers(0, k, n) for k in nvec], axis=1)
    action[rng.random(n) < 0.5] = 0
    oracle = env.expected_myopic_profit(action) - env.expected_myopic_profit(zeros(n))
    _, reward, _, _, info = env.step(action)
    te = info["latent"]["treatment_effect"]
    np.testing.assert_allclose(te, oracle, rtol=1e-3, atol=1e-4)
    assert (te[(action == 0).all(axis=1)] == 0).all()
    twin = envs.PopulationEnv(num_envs=n, scenario=scenario, horizon=5)
    twin.reset(seed=2)
    _, reward0, _, _, _ = twin.step(zeros(n))
    diff = (reward - reward0).astype(np.float64)
    assert abs(diff.mean() - te.mean()) < 4 * diff.std() / math.sqrt(n), (diff.mean(), te.mean())
    assert (te < 0).any() and (te > 0).any()  # persuadables and rows where contacting does not pay
