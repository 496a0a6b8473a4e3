"""Calibration targets for the marketing mechanisms: small randomized experiments inside the
simulator that land where the field experiments did (customer-model.md §2.6-2.12, §5, §7).

These are **calibration targets, not validations.** Each magnitude below is the one the
parameters it exercises were chosen from: they were set (in ``envs/mechanism_params.py`` and
``envs/scenario.py``, in the same commit as these tests) so that the check lands, and the
tolerances were set around the values then measured. A pass therefore says that the mechanism is
wired and still produces the magnitude it was tuned to — a regression guard — and says nothing
about whether the simulator is right about anything it was not tuned on. The checks nothing was
tuned on are in ``tests/test_validation.py``.

| check | magnitude (source) | parameters set from it |
|---|---|---|
| Hillstrom e-mail lift | ×2.19 two-week conversion; ×3.0 new vs ×1.8 established (Hillstrom) | e-mail ``response_median`` 0.45 → 0.60, ``media.newcomer_boost`` 3.0 and ``newcomer_weeks`` 26 |
| discount bump and dip | +50-100 % (promotional elasticity −2.5 to −4, Bijmolt et al. 2005); dip 4-25 % of the bump (van Heerde et al. 2000) | ``offers.promo_elasticity`` 2.0 (with the reference-price gain), ``offers.pantry_effect`` 0.5 → 0.2 |
| retention backfire | 3-month churn 6 % control vs 10 % contacted (Ascarza, Iyengar & Schleicher 2016) | ``subscription`` preset's sBG ``a``, ``b`` (6 % control) and ``media.reminder_dropout`` 0.06 (the backfire) |
| targeting share of the media lift | −65 % lift without targeting (Goldfarb & Tucker 2011) | listed as a calibration target in customer-model.md §2.11; no parameter docstring names it, but the per-person media response (``media.response_sigma``, Hill curve) and this test's design and tolerance were fixed together with the measured 0.67-0.75 |

Each test fixes its seeds, so it is deterministic; the tolerances are set so that the test would
still pass for other seeds (their spread was measured over several seeds, noted at each test) and
so that a mechanism that is missing or off by a factor fails.
"""

import numpy as np

import rapport.envs as envs

F = envs.FEATURE_NAMES


def col(obs, name):
    return obs[:, F.index(name)]


def test_calibration_target_hillstrom_email_lift():
    """Hillstrom (MineThatData, 64,000 customers who bought in the last 12 months): one e-mail
    took two-week conversion from 0.57 % to 1.25 % (×2.19), ×3.0 for customers acquired in the
    last year and ×1.8 for established ones.

    Same design in ``retail``: customers with an e-mail address who bought in the last 52 weeks,
    half of them (at random) get one e-mail in week 0, conversion = any order in weeks 0-1.
    CDNOW's customers buy ~9× more often than Hillstrom's (control conversion ~5 % here), so the
    portable quantity is the relative lift. Tolerance on the overall ratio: Hillstrom's own 95 %
    interval is ×1.75-2.73 (SE of the log ratio ≈ 0.11); we allow ×1.6-2.9 for the different
    base population. Over seeds 1-6 at this size the overall ratio was 2.15-2.22, new 2.32-2.55,
    established 1.56-1.75 (SE of each ≈ 0.06-0.1).
    """
    overall, control, ratio_new, ratio_est = email_ab(seed=1)
    assert 1.6 < overall < 2.9, overall
    assert 0.01 < control < 0.15, control  # a repeat-buying base, not a lapsed one
    # relative lift larger for new than for established customers (Hillstrom: 3.0 vs 1.8);
    # the gap here (0.57-0.94 over seeds 1-6) is ≥ 4 SE, so a margin of 0.3 keeps it robust
    assert ratio_new > ratio_est + 0.3, (ratio_new, ratio_est)
    assert ratio_est > 1.2, ratio_est


def email_ab(seed: int, n: int = 100_000) -> tuple[float, float, float, float]:
    """(overall conversion ratio, control conversion, ratio for new, ratio for established)."""
    env = envs.PopulationEnv(num_envs=n, scenario="retail", horizon=5, include_latent=False)
    obs, _ = env.reset(seed=seed)
    eligible = (col(obs, "recency_weeks") <= 52) & (col(obs, "optin_email") > 0)
    new = col(obs, "tenure_weeks") < 52
    treated = np.random.default_rng(100 + seed).random(n) < 0.5
    converted = np.zeros(n, bool)
    for week in range(2):
        action = np.zeros((n, 3), np.int64)
        if week == 0:
            action[eligible & treated, 0] = 1 + envs.CHANNELS.index("email")
        _, _, _, _, info = env.step(action)
        converted |= info["orders"] > 0

    def ratio(group):
        control = converted[group & ~treated].mean()
        return converted[group & treated].mean() / control, control

    overall, control = ratio(eligible)
    return overall, control, ratio(eligible & new)[0], ratio(eligible & ~new)[0]


def test_calibration_target_discount_bump_and_post_promotion_dip():
    """A 20 % temporary price cut raises that week's unit sales by +50 % to +100 % (promotional
    elasticity −2.5 to −4; −3.63 gives +73 %, Bijmolt et al. 2005 / van Heerde & Neslin), and
    the following weeks dip by 4-25 % of the bump (van Heerde, Leeflang & Wittink 2000).

    Everyone gets the same direct mail in week 0; a random half also gets 20 % off, so the
    contrast is the price cut alone. The dip is measured over the 4 weeks after the promotion
    (the k = 2-4 weeks of §2.7). Over seeds 1-6: bump +71 to +90 %, dip 9-19 % of the bump
    (SE of the dip share ≈ 0.04 at this size).
    """
    bump, dip = discount_bump_and_dip(seed=1)
    assert 0.50 <= bump <= 1.00, bump
    assert 0.04 <= dip <= 0.25, dip


def discount_bump_and_dip(seed: int, n: int = 100_000) -> tuple[float, float]:
    """(relative bump in the promotion week, dip over the next 4 weeks as a share of the bump)."""
    env = envs.PopulationEnv(num_envs=n, scenario="retail", horizon=8, include_latent=False)
    env.reset(seed=seed)
    treated = np.random.default_rng(100 + seed).random(n) < 0.5
    discount_20 = env.offer_names.index("discount_20")
    orders = []
    for week in range(5):
        action = np.zeros((n, 3), np.int64)
        if week == 0:
            action[:, 0] = 1 + envs.CHANNELS.index("direct_mail")  # reaches everyone in retail
            action[treated, 1] = discount_20
        _, _, _, _, info = env.step(action)
        orders.append(info["orders"].astype(np.float64))
    orders = np.stack(orders)
    control, promo = orders[:, ~treated].mean(axis=1), orders[:, treated].mean(axis=1)
    bump = promo[0] - control[0]
    return bump / control[0], (control[1:5] - promo[1:5]).sum() / bump


def test_calibration_target_retention_contact_raises_churn_of_the_highest_risk():
    """Ascarza, Iyengar & Schleicher (2016): a proactive retention campaign raised 3-month churn
    from 6 % (control) to 10 % (treated).

    ``subscription`` is built for it: churn is sBG (newer subscribers are the riskiest, because
    the churn-prone have not yet left) and a contact reminds subscribers of their contract
    (``media.reminder_dropout``). Target: subscribers in their first 13 weeks; a random half
    get one e-mail in week 0; churn = cancelled by week 13. Over seeds 1-6 control churn was
    5.8-6.7 % and treated 9.2-9.9 % (about 3,600 subscribers per arm: SE ≈ 0.4-0.5 pt per arm).
    """
    size, control, contacted = retention_campaign(seed=1)
    assert size > 5_000
    assert 0.04 <= control <= 0.08, control
    assert 0.08 <= contacted <= 0.13, contacted
    assert contacted - control >= 0.02, (control, contacted)  # ≥ 3.5 SE of the difference


def retention_campaign(seed: int, n: int = 60_000) -> tuple[int, float, float]:
    """(target size, 13-week churn in control, in the contacted arm)."""
    env = envs.PopulationEnv(num_envs=n, scenario="subscription", horizon=20, include_latent=False)
    obs, _ = env.reset(seed=seed)
    target = (col(obs, "p_alive") > 0.5) & (col(obs, "tenure_weeks") < 13)
    treated = np.random.default_rng(100 + seed).random(n) < 0.5
    for week in range(13):
        action = np.zeros((n, 3), np.int64)
        if week == 0:
            action[target & treated, 0] = 1 + envs.CHANNELS.index("email")
        obs, *_ = env.step(action)
    churned = col(obs, "p_alive") < 0.5  # cancellations are observed in a contractual business
    return int(target.sum()), churned[target & ~treated].mean(), churned[target & treated].mean()


def test_calibration_target_targeting_off_removes_most_of_the_media_lift():
    """Goldfarb & Tucker (2011): when EU rules restricted targeting, the lift of display ads fell
    by about 65 %.

    In ``retail`` the firm buys $0.50/week of per-person paid media for 20 % of its
    paid-media audience, either targeted (the 20 % with the highest expected purchase rate from
    observables, P(alive)·(x + 1)/(T + 4)) or untargeted (a random 20 %). The lift per exposed
    customer is each person's orders with the ad minus without it: the simulator runs both
    worlds with common random numbers (same customers, same noise), so the ratio of two small
    lifts is measured without the sampling noise that would need ~10^6 customers in an A/B
    (a plain A/B of 10^5 gave 0.61-0.79 over three seeds). Over seeds 1-6 the removed share was
    0.67-0.75; tolerance 0.45-0.85 around the published 0.65.
    """
    lift = targeting_lifts(seed=1)
    assert lift["targeted"] > 0 and lift["untargeted"] > 0, lift
    removed = 1 - lift["untargeted"] / lift["targeted"]
    assert 0.45 <= removed <= 0.85, (removed, lift)


def targeting_lifts(seed: int, n: int = 50_000) -> dict[str, float]:
    """Orders lift per exposed customer, targeted and untargeted."""
    spend = 2  # $0.50 per person per week
    worlds = {}
    for arm in ("none", "targeted", "untargeted"):
        env = envs.PopulationEnv(num_envs=n, scenario="retail", horizon=5, include_latent=False)
        obs, _ = env.reset(seed=seed)
        reach = col(obs, "optin_paid_media") > 0
        score = col(obs, "p_alive") * (col(obs, "frequency") + 1) / (col(obs, "tenure_weeks") + 4)
        audience = {
            "none": np.zeros(n, bool),
            "targeted": reach & (score >= np.quantile(score[reach], 0.8)),
            "untargeted": reach & (np.random.default_rng(seed + 7).random(n) < 0.2),
        }[arm]
        action = np.zeros((n, 3), np.int64)
        action[audience, 2] = spend
        _, _, _, _, info = env.step(action)
        worlds[arm] = (audience, info["orders"].astype(np.float64))
    _, base = worlds["none"]
    return {arm: (orders - base)[aud].mean() for arm, (aud, orders) in worlds.items() if arm != "none"}
