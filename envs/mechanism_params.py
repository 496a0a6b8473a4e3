"""The parameters of each mechanism of the simulator: purchases and drop-out, channels, offers,
per-person media, mass media and awareness, prospects, drift, privacy and omnichannel.

Each is a frozen dataclass whose fields carry their meaning and unit and are validated in
``__post_init__`` with an error that names the field and its valid range. :class:`Scenario`
(:mod:`rapport.envs.scenario`) puts them together; sources for the defaults are in
``shared/docs/customer-model.md`` (section numbers in comments).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CHANNELS: tuple[str, ...] = ("email", "sms", "push", "direct_mail", "paid_media")
"""Contact channels, in action order (action[:, 0] = 1 + index; 0 = no contact)."""
DROPOUT_PROCESSES: tuple[str, ...] = ("after_purchase", "weekly")
"""Valid values of :attr:`PurchaseModel.dropout_process`."""


def _check_positive(owner: str, name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{owner}.{name} must be a finite number > 0, got {value!r}")


def _check_nonneg(owner: str, name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{owner}.{name} must be a finite number >= 0, got {value!r}")


def _check_prob(owner: str, name: str, value: float, *, open_high: bool = False) -> None:
    ok = isinstance(value, int | float) and math.isfinite(value) and 0 <= value <= 1
    if ok and open_high and value == 1:
        ok = False
    if not ok:
        rng = "[0, 1)" if open_high else "[0, 1]"
        raise ValueError(f"{owner}.{name} must be a probability in {rng}, got {value!r}")


@dataclass(frozen=True)
class PurchaseModel:
    """BG/NBD purchase/drop-out process and Gamma-Gamma spend (customer-model.md §2.1-2.2).

    Defaults are the published CDNOW estimates (weekly time unit).
    """

    r: float = 0.243
    """Shape of the Gamma distribution of weekly purchase rates λ across customers."""
    alpha: float = 4.414
    """Rate (inverse scale, in weeks) of the Gamma distribution of λ; mean rate = r / alpha."""
    a: float = 0.793
    """First shape of the Beta distribution of the drop-out probability after each repeat purchase."""
    b: float = 2.426
    """Second shape of that Beta distribution; mean drop-out probability = a / (a + b)."""
    p: float = 6.25
    """Gamma-Gamma shape of a single transaction's value (within-customer CV = 1/sqrt(p))."""
    q: float = 3.74
    """Shape of the Gamma distribution of the spend rate ν across customers (must be > 1)."""
    gamma: float = 15.44
    """Rate of that Gamma distribution; mean spend per transaction = p·gamma/(q−1) dollars."""
    gross_margin: float = 0.40
    """Gross margin at list price: cost of goods = (1 − gross_margin) × list-price revenue."""
    dropout_process: str = "after_purchase"
    """``"after_purchase"``: BG/NBD, a customer may drop out right after each repeat purchase
    with probability p ~ Beta(a, b), and drop-out is latent (non-contractual). ``"weekly"``:
    shifted-beta-geometric (sBG, §2.3), a subscriber cancels each week with probability
    θ ~ Beta(a, b) whether or not they buy, and the firm sees the cancellation (contractual)."""
    subscription_fee: float = 0.0
    """List-price fee every live subscriber pays each week, dollars (contractual businesses;
    0 = none). Counted in revenue, with cost of goods at the gross margin; no order is booked."""

    def __post_init__(self) -> None:
        for name in ("r", "alpha", "a", "b", "p", "gamma"):
            _check_positive("purchase", name, getattr(self, name))
        if not (math.isfinite(self.q) and self.q > 1):
            raise ValueError(f"purchase.q must be > 1 so that mean spend is finite, got {self.q!r}")
        _check_prob("purchase", "gross_margin", self.gross_margin)
        if self.dropout_process not in DROPOUT_PROCESSES:
            raise ValueError(f"purchase.dropout_process must be one of {DROPOUT_PROCESSES}, "
                             f"got {self.dropout_process!r}")
        _check_nonneg("purchase", "subscription_fee", self.subscription_fee)

    @property
    def contractual(self) -> bool:
        """True when drop-out is a weekly, observed cancellation (sBG)."""
        return self.dropout_process == "weekly"


@dataclass(frozen=True)
class ChannelModel:
    """One contact channel: cost, reach, heterogeneous response, fatigue and opt-out (§2.5-2.6)."""

    name: str
    """Channel name; one of :data:`CHANNELS`."""
    cost: float
    """Cost per delivered contact, dollars."""
    response_median: float
    """Median over customers of β, the log-rate lift of one fresh (unfatigued) contact."""
    response_sigma: float
    """Log-scale SD of β across customers (β ~ LogNormal(log median, sigma²))."""
    optin_share: float
    """Share of customers reachable (opted in / address known) at the start."""
    fatigue_half_life: float
    """Half-life of the channel's fatigue stock, weeks."""
    fatigue_response_decay: float
    """κ: a contact's effect is multiplied by exp(−κ·fatigue) (fatigue before this contact)."""
    optout_base: float
    """Opt-out probability per delivered contact with zero fatigue."""
    optout_fatigue: float
    """η: opt-out probability is optout_base·exp(η·fatigue), capped at 1."""

    def __post_init__(self) -> None:
        owner = f"channels[{self.name!r}]"
        if self.name not in CHANNELS:
            raise ValueError(f"unknown channel {self.name!r}; valid channels: {', '.join(CHANNELS)}")
        _check_nonneg(owner, "cost", self.cost)
        _check_nonneg(owner, "response_median", self.response_median)
        _check_nonneg(owner, "response_sigma", self.response_sigma)
        _check_prob(owner, "optin_share", self.optin_share)
        _check_positive(owner, "fatigue_half_life", self.fatigue_half_life)
        _check_nonneg(owner, "fatigue_response_decay", self.fatigue_response_decay)
        _check_prob(owner, "optout_base", self.optout_base)
        _check_nonneg(owner, "optout_fatigue", self.optout_fatigue)


def default_channels() -> tuple[ChannelModel, ...]:
    """Retail defaults. Costs from §2.6; response sizes chosen so that, with the newcomer boost of
    :class:`MediaModel`, a randomized e-mail to customers who bought in the last year roughly
    doubles their two-week conversion (Hillstrom men's e-mail: ×2.2; tests/test_calibration_targets.py, a calibration target);
    direct mail responds more, at a far higher cost."""
    return (
        ChannelModel("email", 0.001, 0.60, 0.7, 0.60, 2.0, 0.30, 0.002, 0.45),
        ChannelModel("sms", 0.012, 0.40, 0.7, 0.30, 2.0, 0.35, 0.004, 0.50),
        ChannelModel("push", 0.0, 0.20, 0.8, 0.45, 1.0, 0.30, 0.003, 0.50),
        ChannelModel("direct_mail", 0.60, 0.60, 0.6, 1.00, 6.0, 0.15, 0.001, 0.30),
        ChannelModel("paid_media", 0.01, 0.15, 0.8, 0.70, 1.0, 0.20, 0.0005, 0.30),
    )


@dataclass(frozen=True)
class OfferModel:
    """Offers carried by a contact: discounts, recommendations, a service gesture (§2.7)."""

    discounts: tuple[float, ...] = (0.10, 0.20, 0.30)
    """Discount depths offered (fraction of list price); paid on every redeemed order this week."""
    promo_elasticity: float = 2.0
    """Promotional price elasticity ε: a delivered discount d adds −ε·log(1−d) to the log rate."""
    ref_gain: float = 0.8
    """η_G: log-rate gain per unit that the price paid is below the reference price."""
    ref_loss: float = 1.8
    """η_L: log-rate loss per unit that the price is above the reference price (loss aversion)."""
    ref_smoothing: float = 0.8
    """λ_R: on each purchase, reference ← λ_R·reference + (1−λ_R)·price paid."""
    ref_recovery: float = 0.85
    """Weekly pull of the reference price back to list: (1 − ref) ← ref_recovery·(1 − ref)."""
    pantry_effect: float = 0.2
    """ψ: post-promotion dip; log rate −ψ·pantry, where pantry counts discounted orders. With the
    reference-price loss, deal conditioning and BG/NBD drop-out after the extra purchases, 0.2
    puts the dip of the 4 weeks after a 20 % discount at ~15–20 % of the bump (van Heerde,
    Leeflang & Wittink 2000: 4–25 %; tests/test_calibration_targets.py, a calibration target)."""
    pantry_decay: float = 0.5
    """Weekly decay of the pantry stock (stockpiled goods are used up)."""
    conditioning_gain: float = 0.03
    """c_s: deal-conditioning stock added per redeemed discount order."""
    conditioning_decay: float = 0.97
    """ρ_s: weekly decay of the deal-conditioning stock; the stock lowers full-price purchase rates."""
    n_categories: int = 3
    """Product categories that can be recommended (hidden Dirichlet preferences per customer)."""
    category_concentration: float = 0.6
    """Dirichlet concentration of category preferences; small = strong, idiosyncratic tastes."""
    recommendation_effect: float = 0.35
    """g_rec: a recommendation of category k adds g_rec·(n_categories·w_ik − 1) to the log rate."""
    personalized_offer: bool = False
    """Add the offer ``personal_recommendation`` (before ``service_gesture``): a recommendation
    of the category the firm *believes* the customer prefers, using their personal data
    explicitly ("because you bought…"; explicitness level 2 of §2.11). Only meaningful with
    the privacy mechanism on, which prices its creepiness."""
    belief_orders: float = 2.0
    """How fast the firm learns a customer's favourite category: after n observed orders its
    guess is right with probability 1 − (1 − 1/K)·exp(−n / belief_orders) (a pure guess for a
    prospect; re-guessed at each observed purchase, so it goes stale when tastes drift)."""
    gesture_cost: float = 0.50
    """Cost of a service gesture (free shipping, a thank-you note), dollars. No revenue."""
    gesture_satisfaction: float = 1.0
    """Satisfaction added by a delivered service gesture."""
    satisfaction_decay: float = 0.9
    """Weekly decay of satisfaction."""
    satisfaction_retention: float = 0.6
    """γ_S: the drop-out probability after a purchase is multiplied by exp(−γ_S·satisfaction)."""

    def __post_init__(self) -> None:
        if len(self.discounts) < 1:
            raise ValueError("offers.discounts must list at least one discount depth, e.g. (0.1, 0.2)")
        for i, d in enumerate(self.discounts):
            _check_prob("offers", f"discounts[{i}]", d, open_high=True)
            if d == 0:
                raise ValueError(f"offers.discounts[{i}] must be > 0 (offer 'none' is the zero discount)")
        for name in ("promo_elasticity", "ref_gain", "ref_loss", "pantry_effect", "conditioning_gain",
                     "recommendation_effect", "gesture_cost", "gesture_satisfaction",
                     "satisfaction_retention"):
            _check_nonneg("offers", name, getattr(self, name))
        for name in ("ref_smoothing", "ref_recovery", "pantry_decay", "conditioning_decay",
                     "satisfaction_decay"):
            _check_prob("offers", name, getattr(self, name))
        if not (isinstance(self.n_categories, int) and 1 <= self.n_categories <= 16):
            raise ValueError(f"offers.n_categories must be an integer in [1, 16], got {self.n_categories!r}")
        _check_positive("offers", "category_concentration", self.category_concentration)
        _check_positive("offers", "belief_orders", self.belief_orders)
        if not isinstance(self.personalized_offer, bool):
            raise ValueError(f"offers.personalized_offer must be true or false, got {self.personalized_offer!r}")

    @property
    def names(self) -> tuple[str, ...]:
        """Offer names in action order (action[:, 1])."""
        disc = tuple(f"discount_{round(100 * d)}" for d in self.discounts)
        recs = tuple(f"recommend_category_{k}" for k in range(self.n_categories))
        personal = ("personal_recommendation",) if self.personalized_offer else ()
        return ("none", *disc, *recs, *personal, "service_gesture")


@dataclass(frozen=True)
class MediaModel:
    """Per-person paid-media spend (retargeting) with Hill saturation, plus what is shared by all
    channels: annoyance-driven drop-out, the newcomer boost and the "reminder" backfire."""

    spend_levels: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
    """Dollars per person per week for action[:, 2]; the first level must be 0."""
    half_saturation: float = 0.4
    """K of the Hill curve H(s) = s^S / (K^S + s^S), dollars/week."""
    hill_slope: float = 1.5
    """S of the Hill curve (> 1 gives an S-shape: small spends do little)."""
    response_median: float = 0.35
    """Median over customers of the log-rate lift at full saturation (H = 1)."""
    response_sigma: float = 0.8
    """Log-scale SD of that lift across customers."""
    annoyance_tolerance: float = 2.5
    """Total fatigue (summed over channels) a customer tolerates before contacts start to drive
    latent drop-out ("do not disturb")."""
    annoyance_hazard: float = 0.01
    """Weekly latent drop-out hazard per unit of total fatigue above the tolerance."""
    newcomer_boost: float = 3.0
    """New customers respond more to contacts (they are still learning what the brand offers):
    a contact's lift is multiplied by 1 + newcomer_boost·exp(−tenure / newcomer_weeks). This is
    what makes the relative e-mail lift larger for new than for established customers
    (Hillstrom: ×3.0 vs ×1.8; 3.0 with 26 weeks reproduces the order in retail). 0 = off."""
    newcomer_weeks: float = 26.0
    """Tenure scale of the newcomer boost, weeks."""
    reminder_dropout: float = 0.0
    """"Reminder" backfire (Ascarza, Iyengar & Schleicher 2016): a delivered contact makes a live
    customer reconsider and drop out at once with probability reminder_dropout × (their
    drop-out propensity / the population mean), capped at 1. 0 = off."""

    def __post_init__(self) -> None:
        if len(self.spend_levels) < 1 or self.spend_levels[0] != 0:
            raise ValueError(f"media.spend_levels must start with 0 (no spend), got {self.spend_levels!r}")
        for i, s in enumerate(self.spend_levels):
            _check_nonneg("media", f"spend_levels[{i}]", s)
        if list(self.spend_levels) != sorted(self.spend_levels):
            raise ValueError(f"media.spend_levels must be increasing, got {self.spend_levels!r}")
        for name in ("half_saturation", "hill_slope"):
            _check_positive("media", name, getattr(self, name))
        for name in ("response_median", "response_sigma", "annoyance_tolerance", "annoyance_hazard",
                     "newcomer_boost"):
            _check_nonneg("media", name, getattr(self, name))
        _check_positive("media", "newcomer_weeks", self.newcomer_weeks)
        _check_prob("media", "reminder_dropout", self.reminder_dropout)


@dataclass(frozen=True)
class MassMediaModel:
    """Mass media and brand fame (§2.9): a weekly budget feeds a short sales adstock and a slow
    awareness stock, both through a Hill curve. Population-level: the same for every customer,
    and driven only by the budget (never by per-person actions), so a customer's trajectory does
    not depend on who else is in the population.

    Each week t, with budget b_t ($ per person in the market): adstock S_t = b_t + θ·S_{t−1};
    h_t = H((1 − θ)·S_t) (so a constant budget b gives h = H(b)); every live customer's log
    purchase rate gets sales_effect·(h_t − h_ref) + awareness_effect·log(A_t / A_ref); then
    A_{t+1} = A_t + awareness_gain·h_t·(1 − A_t) − awareness_forgetting·(A_t − awareness_floor).
    h_ref and A_ref are the steady state at ``reference_budget``, where the episode starts, so at
    the reference budget the customer process is the calibrated one (normalization rule, §1).
    """

    enabled: bool = False
    """Run the mechanism. Off: awareness stays at A_ref and nothing is charged."""
    budget_schedule: tuple[float, ...] = (0.0,)
    """Weekly mass-media budget, dollars per person in the market, cycled from the episode's
    first week (an experiment can override it between steps: ``env.set_mass_media_budget``).
    Charged to every row's reward as ``mass_media_cost``."""
    reference_budget: float = 0.0
    """Budget at which the market starts in steady state and the customer process is the
    calibrated one, $ per person per week."""
    adstock_decay: float = 0.5
    """θ: weekly carry-over of the sales adstock (Robyn rule of thumb for TV: 0.3–0.8)."""
    half_saturation: float = 0.05
    """K of the Hill curve H(x) = x^S / (K^S + x^S), $ per person per week."""
    hill_slope: float = 1.0
    """S of the Hill curve (Meridian fixes 1 for media)."""
    sales_effect: float = 0.0
    """Log-rate lift of live customers at full short-term saturation (h = 1), relative to h_ref."""
    awareness_gain: float = 0.1
    """β_A: weekly share of the unaware who become aware at full saturation."""
    awareness_forgetting: float = 0.03
    """δ_A: weekly forgetting towards the floor (0.02–0.10: half-life 7–35 weeks)."""
    awareness_floor: float = 0.2
    """Awareness without any advertising (word of mouth, stores); > 0."""
    awareness_effect: float = 0.0
    """η_A: live customers' log rate gets η_A·log(A_t / A_ref) (0.1–0.3 typical; §2.4)."""
    attention_strength: float = 0.0
    """s: awareness gates attention to personal messages (:mod:`rapport.envs.attention`): the
    log-rate lift of every delivered contact is multiplied by g(A_t) = (A_t / attention_reference)^s,
    so an unknown brand's e-mail is read less. 0 = off (g = 1: every preset calibrated before
    this mechanism existed keeps it off and is bit-identical). The ``challenger`` and ``incumbent``
    presets use 1 (an assumption: an elasticity of one, i.e. a contact's lift proportional to
    awareness; surveys say most recipients decide to open by the sender name, Email Sender and
    Provider Coalition 2007, but give no elasticity)."""
    attention_reference: float = 0.70
    """Awareness at which the channels' contact lifts were calibrated (g = 1 there): Hillstrom's
    e-mailed customers know the brand; 0.70 is the ``fame`` preset's steady state at its reference
    budget (an assumption). In (0, 1]."""

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"mass_media.enabled must be true or false, got {self.enabled!r}")
        if len(self.budget_schedule) < 1:
            raise ValueError("mass_media.budget_schedule must list at least one weekly budget, e.g. (0.05,)")
        for i, b in enumerate(self.budget_schedule):
            _check_nonneg("mass_media", f"budget_schedule[{i}]", b)
        _check_nonneg("mass_media", "reference_budget", self.reference_budget)
        _check_prob("mass_media", "adstock_decay", self.adstock_decay, open_high=True)
        for name in ("half_saturation", "hill_slope"):
            _check_positive("mass_media", name, getattr(self, name))
        for name in ("sales_effect", "awareness_effect"):
            _check_nonneg("mass_media", name, getattr(self, name))
        for name in ("awareness_gain", "awareness_forgetting"):
            _check_prob("mass_media", name, getattr(self, name))
        _check_prob("mass_media", "awareness_floor", self.awareness_floor)
        if self.awareness_floor == 0:
            raise ValueError("mass_media.awareness_floor must be > 0 (awareness enters the rate as a log), got 0")
        _check_nonneg("mass_media", "attention_strength", self.attention_strength)
        _check_prob("mass_media", "attention_reference", self.attention_reference)
        if self.attention_reference == 0:
            raise ValueError("mass_media.attention_reference must be in (0, 1] (awareness where the contact "
                             "lifts are calibrated), got 0")
        if self.attention_strength > 0 and not self.enabled:
            raise ValueError("mass_media.attention_strength > 0 needs mass_media.enabled: true (without a "
                             "market there is no awareness to gate attention), got enabled false")
        if self.awareness_gain + self.awareness_forgetting > 1:
            raise ValueError("mass_media.awareness_gain + awareness_forgetting must be <= 1 so that "
                             f"awareness stays in [0, 1], got {self.awareness_gain} + {self.awareness_forgetting}")

    def hill(self, budget: float) -> float:
        """H(budget) in [0, 1)."""
        if budget <= 0:
            return 0.0
        x = (budget / self.half_saturation) ** self.hill_slope
        return x / (1.0 + x)

    def steady_awareness(self, budget: float) -> float:
        """Awareness that a constant weekly ``budget`` sustains."""
        gain = self.awareness_gain * self.hill(budget)
        delta = self.awareness_forgetting
        if gain + delta == 0:
            return 1.0 if self.awareness_floor >= 1 else self.awareness_floor
        return (gain + delta * self.awareness_floor) / (gain + delta)


@dataclass(frozen=True)
class ProspectModel:
    """Prospects: people in the market who have not bought yet (§2.8–2.9). They are reachable only
    through paid media (an identifiable audience, not an address or consent), and make their
    first purchase — becoming customers with the scenario's purchase process — at weekly hazard
    conversion_rate·(A_t / A_ref)^awareness_elasticity·exp(marketing lift of paid media)."""

    share: float = 0.0
    """Share of rows that start as prospects (0 = every row is an acquired customer)."""
    conversion_rate: float = 0.01
    """Weekly first-purchase hazard of a prospect at the reference awareness, without marketing."""
    awareness_elasticity: float = 1.0
    """Elasticity of that hazard to awareness (1 = proportional, a Bass-type arrival)."""

    def __post_init__(self) -> None:
        _check_prob("prospects", "share", self.share, open_high=True)
        _check_nonneg("prospects", "conversion_rate", self.conversion_rate)
        _check_nonneg("prospects", "awareness_elasticity", self.awareness_elasticity)


@dataclass(frozen=True)
class DriftModel:
    """People change (§2.10). The log purchase rate gets z_it − σ²/2 with z an Ornstein-Uhlenbeck
    (AR(1)) process, z_{t+k} = φ^k·z_t + sqrt(1 − φ^2k)·σ·ε, started in its stationary law N(0, σ²);
    the −σ²/2 keeps E[exp(z − σ²/2)] = 1, so the mean rate is unchanged. Category tastes drift
    the same way in log space around each customer's own base taste, and rare life events redraw
    a customer's tastes and rate deviation from their stationary laws (so the population mix
    stays the same while individuals change)."""

    rate_sigma: float = 0.0
    """σ: stationary SD of the log-rate deviation (CDNOW allows up to ~0.6 at φ = 0.98). 0 = off."""
    rate_persistence: float = 0.98
    """φ: weekly autocorrelation of the log-rate deviation."""
    preference_sigma: float = 0.0
    """Stationary SD of each category's log-taste deviation. 0 = off."""
    preference_persistence: float = 0.98
    """Weekly autocorrelation of the taste deviations."""
    life_event_rate: float = 0.0
    """Weekly probability of a life event (move, new job, baby). 0 = off."""
    update_weeks: int = 4
    """Each customer's drift state moves on every ``update_weeks`` weeks (staggered across
    customers, so the work per week is spread evenly) with the exact OU transition over that
    interval (φ^k), and life events are checked then with probability 1 − (1 − rate)^k. Between
    updates rates and tastes hold still; 1 = weekly updates (slower)."""

    def __post_init__(self) -> None:
        for name in ("rate_sigma", "preference_sigma"):
            _check_nonneg("drift", name, getattr(self, name))
            if getattr(self, name) > 3:
                raise ValueError(f"drift.{name} must be <= 3 (a larger log-scale SD is not a drift), "
                                 f"got {getattr(self, name)!r}")
        for name in ("rate_persistence", "preference_persistence"):
            _check_prob("drift", name, getattr(self, name), open_high=True)
        _check_prob("drift", "life_event_rate", self.life_event_rate)
        if isinstance(self.update_weeks, bool) or not isinstance(self.update_weeks, int) \
                or not 1 <= self.update_weeks <= 52:
            raise ValueError(f"drift.update_weeks must be an integer in [1, 52], got {self.update_weeks!r}")

    @property
    def enabled(self) -> bool:
        return self.rate_sigma > 0 or self.preference_sigma > 0 or self.life_event_rate > 0


EXPLICITNESS_LEVELS: tuple[str, ...] = ("generic", "product_based", "explicit_personal")
"""Message explicitness levels (§2.11): 0 no personal data (no offer, discounts, gestures),
1 segment/product-based (category recommendations), 2 explicit use of the individual's data
(``personal_recommendation``)."""


@dataclass(frozen=True)
class PrivacyModel:
    """Privacy and "creepiness" backlash (§2.11). A personalized message of explicitness level k
    to customer i has relevance rel = w_ik / max_j w_ij (1 when it names their true favourite
    category) and creepiness

        creep = creep_by_level[k]·(1 − trust_i)·(1 − control)·(1 + wrong_guess_penalty·(1 − rel))
                / (1 + tenure_i / familiarity_weeks),

    so wrong guesses feel creepier and familiarity with the firm moderates the backlash (Wattal
    et al. 2012). The contact's lift is multiplied by exp(gain_by_level[k]·rel − creep), the log
    rate loses reactance·creep, the opt-out hazard is multiplied by exp(optout_creep·creep) and
    trust falls by trust_loss·creep; each purchase week raises trust by trust_gain·(1 − trust)."""

    enabled: bool = False
    """Run the mechanism. Off: personalization has only its relevance effect (offers.recommendation_effect)."""
    trust_a: float = 5.0
    """First shape of the Beta distribution of initial trust (privacy tolerance)."""
    trust_b: float = 2.0
    """Second shape of that distribution; mean trust = trust_a / (trust_a + trust_b)."""
    creep_by_level: tuple[float, float, float] = (0.0, 0.3, 1.2)
    """c_k: creepiness scale of explicitness levels 0, 1, 2."""
    gain_by_level: tuple[float, float, float] = (0.0, 0.2, 0.7)
    """g_k: response gain of a fully relevant message at each level (Tucker 2014: explicit
    personalization roughly doubles response when people feel in control)."""
    wrong_guess_penalty: float = 1.0
    """ζ: extra creepiness of an irrelevant (wrongly guessed) personalized message."""
    control: float = 0.0
    """Perceived control over one's data, in [0, 1] (Tucker 2014); scales creepiness by 1 − control."""
    familiarity_weeks: float = 26.0
    """Tenure at which the backlash is halved, weeks."""
    optout_creep: float = 1.5
    """d: the opt-out hazard of the contact is multiplied by exp(d·creep)."""
    reactance: float = 0.3
    """Log-rate loss per unit of creepiness this week (can make a contact's net effect negative)."""
    trust_loss: float = 0.2
    """Trust lost per unit of creepiness."""
    trust_gain: float = 0.02
    """Share of the remaining distrust regained in each week with a purchase (familiarity)."""

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"privacy.enabled must be true or false, got {self.enabled!r}")
        for name in ("trust_a", "trust_b", "familiarity_weeks"):
            _check_positive("privacy", name, getattr(self, name))
        for name in ("creep_by_level", "gain_by_level"):
            values = getattr(self, name)
            if len(values) != len(EXPLICITNESS_LEVELS):
                raise ValueError(f"privacy.{name} must have one value per explicitness level "
                                 f"{EXPLICITNESS_LEVELS}, got {values!r}")
            for i, v in enumerate(values):
                _check_nonneg("privacy", f"{name}[{i}]", v)
        for name in ("wrong_guess_penalty", "optout_creep", "reactance", "trust_loss"):
            _check_nonneg("privacy", name, getattr(self, name))
        for name in ("control", "trust_gain"):
            _check_prob("privacy", name, getattr(self, name))


@dataclass(frozen=True)
class OmnichannelModel:
    """Online and offline purchases (the "360° view"). Each customer buys online a share ω_i ~
    Beta of their orders and the rest in stores. Rewards always count both; with
    ``observe_offline`` False the observation shows only online history (the first purchase,
    where the firm got to know the customer, is always seen)."""

    online_share_mean: float = 1.0
    """Population mean of ω_i. 1 = an online-only business (the mechanism is off)."""
    online_share_concentration: float = 2.0
    """Concentration of the Beta distribution of ω_i (small = customers keep to one channel)."""
    observe_offline: bool = True
    """True: the firm has a 360° view (store purchases are linked to the customer). False: the
    agent sees online purchases only."""

    def __post_init__(self) -> None:
        _check_prob("omnichannel", "online_share_mean", self.online_share_mean)
        if self.online_share_mean == 0:
            raise ValueError("omnichannel.online_share_mean must be > 0 (the firm must see some purchases)")
        _check_positive("omnichannel", "online_share_concentration", self.online_share_concentration)
        if not isinstance(self.observe_offline, bool):
            raise ValueError(f"omnichannel.observe_offline must be true or false, got {self.observe_offline!r}")

    @property
    def enabled(self) -> bool:
        return self.online_share_mean < 1
