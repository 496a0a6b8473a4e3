"""Scenario parameters of the customer-population simulator, validated, with named presets.

A scenario is a frozen tree of dataclasses. Every field has a docstring that says what it means
in the marketing domain and its unit; every field is validated in ``__post_init__`` with an error
that names the field and its valid range. Presets live in code (:data:`PRESETS`) and are
selected by name; a scenario can also be saved to / loaded from a JSON file by path (this is how
a calibration run hands its fitted parameters to the env).

Sources for the defaults are in ``shared/docs/customer-model.md`` (section numbers in comments).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

CHANNELS: tuple[str, ...] = ("email", "sms", "push", "direct_mail", "paid_media")
"""Contact channels, in action order (action[:, 0] = 1 + index; 0 = no contact)."""


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

    def __post_init__(self) -> None:
        for name in ("r", "alpha", "a", "b", "p", "gamma"):
            _check_positive("purchase", name, getattr(self, name))
        if not (math.isfinite(self.q) and self.q > 1):
            raise ValueError(f"purchase.q must be > 1 so that mean spend is finite, got {self.q!r}")
        _check_prob("purchase", "gross_margin", self.gross_margin)


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
    """Retail defaults. Costs from §2.6; response sizes chosen so a fresh email lifts the week's
    purchase rate by about +60 % for the median customer (Hillstrom men's e-mail: +119 % over two
    weeks on a much lower base) and direct mail more, at a far higher cost."""
    return (
        ChannelModel("email", 0.001, 0.45, 0.7, 0.60, 2.0, 0.30, 0.002, 0.45),
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
    pantry_effect: float = 0.5
    """ψ: post-promotion dip; log rate −ψ·pantry, where pantry counts discounted orders."""
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

    @property
    def names(self) -> tuple[str, ...]:
        """Offer names in action order (action[:, 1])."""
        disc = tuple(f"discount_{round(100 * d)}" for d in self.discounts)
        recs = tuple(f"recommend_category_{k}" for k in range(self.n_categories))
        return ("none", *disc, *recs, "service_gesture")


@dataclass(frozen=True)
class MediaModel:
    """Per-person paid-media spend (retargeting) with Hill saturation, plus marketing fatigue and
    annoyance-driven drop-out that is shared by all channels."""

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

    def __post_init__(self) -> None:
        if len(self.spend_levels) < 1 or self.spend_levels[0] != 0:
            raise ValueError(f"media.spend_levels must start with 0 (no spend), got {self.spend_levels!r}")
        for i, s in enumerate(self.spend_levels):
            _check_nonneg("media", f"spend_levels[{i}]", s)
        if list(self.spend_levels) != sorted(self.spend_levels):
            raise ValueError(f"media.spend_levels must be increasing, got {self.spend_levels!r}")
        for name in ("half_saturation", "hill_slope"):
            _check_positive("media", name, getattr(self, name))
        for name in ("response_median", "response_sigma", "annoyance_tolerance", "annoyance_hazard"):
            _check_nonneg("media", name, getattr(self, name))


@dataclass(frozen=True)
class Scenario:
    """Everything that defines a simulated customer base. Frozen; build variants with ``replace``."""

    name: str = "retail"
    """Scenario name (a preset name, or a label for a calibrated/custom scenario)."""
    version: str = "1"
    """Scenario version; logged with every run so results can be traced to the world they ran in."""
    description: str = ""
    """One line on what this scenario is for."""
    purchase: PurchaseModel = field(default_factory=PurchaseModel)
    """Purchase, drop-out and spend process."""
    channels: tuple[ChannelModel, ...] = field(default_factory=default_channels)
    """One entry per channel of :data:`CHANNELS`, in that order."""
    offers: OfferModel = field(default_factory=OfferModel)
    """Offers and price response."""
    media: MediaModel = field(default_factory=MediaModel)
    """Per-person paid-media spend, and annoyance."""
    initial_tenure_weeks: tuple[float, float] = (0.0, 104.0)
    """At reset, each customer's tenure (weeks since first purchase) is uniform on this range and
    their history over it is drawn exactly from the purchase model; (0, 0) = a fresh cohort that
    has just made its first purchase."""

    def __post_init__(self) -> None:
        names = tuple(c.name for c in self.channels)
        if names != CHANNELS:
            raise ValueError(f"scenario.channels must be given in the order {CHANNELS}, got {names}")
        lo, hi = self.initial_tenure_weeks
        _check_nonneg("scenario", "initial_tenure_weeks[0]", lo)
        _check_nonneg("scenario", "initial_tenure_weeks[1]", hi)
        if hi < lo or hi > 520:
            raise ValueError(
                f"scenario.initial_tenure_weeks must satisfy 0 <= low <= high <= 520, got {(lo, hi)}")

    # ---- derived views -------------------------------------------------------------------
    @property
    def channel_names(self) -> tuple[str, ...]:
        return CHANNELS

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> Path:
        """Write the scenario as JSON; :func:`load_scenario` reads it back."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scenario:
        """Build a scenario from a (possibly partial) nested dict; unknown keys are errors."""
        _reject_unknown(cls, data, "scenario")
        kw: dict[str, Any] = dict(data)
        if "purchase" in kw:
            kw["purchase"] = _sub(PurchaseModel, kw["purchase"], "scenario.purchase")
        if "offers" in kw:
            offers = dict(kw["offers"])
            if "discounts" in offers:
                offers["discounts"] = tuple(offers["discounts"])
            kw["offers"] = _sub(OfferModel, offers, "scenario.offers")
        if "media" in kw:
            media = dict(kw["media"])
            if "spend_levels" in media:
                media["spend_levels"] = tuple(media["spend_levels"])
            kw["media"] = _sub(MediaModel, media, "scenario.media")
        if "channels" in kw:
            kw["channels"] = tuple(
                _sub(ChannelModel, c, f"scenario.channels[{i}]") for i, c in enumerate(kw["channels"]))
        if "initial_tenure_weeks" in kw:
            kw["initial_tenure_weeks"] = tuple(kw["initial_tenure_weeks"])
        return cls(**kw)


def _reject_unknown(cls: type, data: dict[str, Any], where: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__}")
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - valid)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; valid keys: {sorted(valid)}")


def _sub(cls: type, data: Any, where: str) -> Any:
    if isinstance(data, cls):
        return data
    _reject_unknown(cls, data, where)
    return cls(**data)


def _retail() -> Scenario:
    return Scenario(
        name="retail", description="CDNOW-calibrated non-contractual retailer (the default)")


PRESETS: dict[str, Any] = {"retail": _retail}
"""Named scenarios. Each value builds a fresh :class:`Scenario`."""


def get_scenario(name_or_path: str | Path | Scenario, **overrides: Any) -> Scenario:
    """Resolve a preset name, a JSON file path, or a Scenario, then apply top-level overrides.

    Raises
    ------
    ValueError
        For an unknown preset (the message lists the valid names) or an unreadable file.
    """
    if isinstance(name_or_path, Scenario):
        scenario = name_or_path
    elif isinstance(name_or_path, str) and name_or_path in PRESETS:
        scenario = PRESETS[name_or_path]()
    else:
        path = Path(name_or_path)
        if path.suffix.lower() != ".json" or not path.is_file():
            raise ValueError(
                f"unknown scenario {str(name_or_path)!r}: not a preset (valid: "
                f"{', '.join(sorted(PRESETS))}) and not an existing .json scenario file")
        scenario = load_scenario(path)
    if overrides:
        scenario = Scenario.from_dict({**scenario.to_dict(), **overrides})
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario JSON file written by :meth:`Scenario.save` (or by hand)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read scenario file {path}: {exc}") from exc
    return Scenario.from_dict(data)


__all__ = [
    "CHANNELS", "ChannelModel", "MediaModel", "OfferModel", "PRESETS", "PurchaseModel", "Scenario",
    "default_channels", "get_scenario", "load_scenario", "replace",
]
