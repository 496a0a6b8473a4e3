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
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from rapport.envs.creative import CreativeModel
from rapport.envs.mechanism_params import (  # noqa: F401  (re-exported: the scenario's parts)
    CHANNELS,
    DROPOUT_PROCESSES,
    EXPLICITNESS_LEVELS,
    ChannelModel,
    DriftModel,
    MassMediaModel,
    MediaModel,
    OfferModel,
    OmnichannelModel,
    PrivacyModel,
    ProspectModel,
    PurchaseModel,
    _check_nonneg,
    _check_positive,
    _check_prob,
    default_channels,
)


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
    mass_media: MassMediaModel = field(default_factory=MassMediaModel)
    """Mass-media budget, adstock and brand awareness (population-level)."""
    prospects: ProspectModel = field(default_factory=ProspectModel)
    """People in the market who have not bought yet."""
    drift: DriftModel = field(default_factory=DriftModel)
    """Drift of rates and tastes, and life events."""
    privacy: PrivacyModel = field(default_factory=PrivacyModel)
    """Creepiness backlash of personalized messages, and trust."""
    omnichannel: OmnichannelModel = field(default_factory=OmnichannelModel)
    """Online vs store purchases and what the firm sees of them."""
    creative: CreativeModel = field(default_factory=CreativeModel)
    """Creative catalogue, taste for it and wear-out (:mod:`rapport.envs.creative`); off
    (``count = 0``) by default."""
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
        """Nested dict of every field. ``creative`` is left out while it is the default (off), so
        the dict, saved files and digests of every scenario without a catalogue stay as before."""
        data = dataclasses.asdict(self)
        if self.creative == CreativeModel():
            del data["creative"]
        return data

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
        for name, sub_cls in _SUBMODELS.items():
            if name in kw:
                kw[name] = _sub(sub_cls, kw[name], f"scenario.{name}")
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
    # JSON has no tuples: every sequence-valued field of the models is a tuple
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


_SUBMODELS: dict[str, type] = {
    "purchase": PurchaseModel, "offers": OfferModel, "media": MediaModel,
    "mass_media": MassMediaModel, "prospects": ProspectModel, "drift": DriftModel,
    "privacy": PrivacyModel, "omnichannel": OmnichannelModel, "creative": CreativeModel,
}


_PEOPLE_CHANGE = DriftModel(rate_sigma=0.4, preference_sigma=0.5, life_event_rate=0.002)
"""Drift used by every preset but retail: σ = 0.4 at φ = 0.98 is inside what CDNOW's
calibration/holdout persistence allows (§2.10), and a life event every ~10 years."""


def _retail() -> Scenario:
    return Scenario(
        name="retail",
        description="CDNOW-calibrated non-contractual retailer; with marketing off it is exactly "
                    "BG/NBD + Gamma-Gamma (the default)")


def _subscription() -> Scenario:
    # Weekly sBG with mean churn 0.54 %/week: ~1.7 % a month, 79 % first-year retention, and
    # 6 % churn in 13 weeks for subscribers in their first quarter (the control arm of Ascarza
    # et al. 2016); contacts remind subscribers of the contract (reminder_dropout).
    return Scenario(
        name="subscription",
        description="Subscription box: $10 weekly fee, observed sBG churn, add-on orders, and "
                    "retention contacts that can backfire",
        purchase=PurchaseModel(r=1.0, alpha=5.0, a=0.7, b=130.0, p=6.0, q=4.0, gamma=10.0,
                               gross_margin=0.5, dropout_process="weekly", subscription_fee=10.0),
        media=MediaModel(reminder_dropout=0.06),
        drift=_PEOPLE_CHANGE,
    )


def _fame() -> Scenario:
    # At the reference budget ($0.05 per person per week, the Hill midpoint) the local
    # elasticity of sales to the budget is ~0.1 in the short run and ~2× that in the long run
    # (Sethuraman, Tellis & Briesch 2011: 0.12 / 0.24); stopping the budget lets awareness
    # decay from 0.70 towards 0.2 with a half-life of ~23 weeks.
    return Scenario(
        name="fame",
        description="Consumer brand sold mostly in stores: strong mass-media awareness effects, "
                    "40 % prospects, offline purchases invisible to the firm",
        mass_media=MassMediaModel(enabled=True, budget_schedule=(0.05,), reference_budget=0.05,
                                  sales_effect=0.3, awareness_effect=0.6),
        prospects=ProspectModel(share=0.4, conversion_rate=0.01, awareness_elasticity=1.0),
        drift=_PEOPLE_CHANGE,
        omnichannel=OmnichannelModel(online_share_mean=0.4, observe_offline=False),
    )


ATTENTION_STRENGTH = 1.0
"""``mass_media.attention_strength`` of the challenger and incumbent presets: an assumption (an
elasticity of one of a contact's lift to awareness; see :class:`MassMediaModel`)."""


def _incumbent() -> Scenario:
    # The fame brand at its steady state ($0.05 a person a week, awareness 0.70), which is where
    # the contact lifts are calibrated (attention_reference 0.70: g = 1 there); fewer prospects
    # than the fame preset, as a famous brand has already converted much of its market (20 %,
    # an assumption).
    base = _fame()
    return replace(
        base, name="incumbent",
        description="Famous consumer brand at its steady state: awareness 0.70 at $0.05 a person a "
                    "week, 20 % prospects; awareness gates attention to personal messages",
        mass_media=replace(base.mass_media, attention_strength=ATTENTION_STRENGTH, attention_reference=0.70),
        prospects=replace(base.prospects, share=0.2))


def _challenger() -> Scenario:
    # The fame brand with a tenth of the brand budget ($0.005 a person a week, the market's
    # steady state: awareness 0.39) and 60 % prospects (the challenger condition of the
    # fame_vs_personal study). Attention is gated against the incumbent's awareness 0.70, so an
    # e-mail from the challenger lifts the rate by g = 0.39/0.70 = 0.55 of a known brand's.
    base = _fame()
    return replace(
        base, name="challenger",
        description="Little-known challenger brand: awareness 0.39 at $0.005 a person a week, 60 % "
                    "prospects; its personal messages get 55 % of a known brand's attention",
        mass_media=replace(base.mass_media, budget_schedule=(0.005,), reference_budget=0.005,
                           attention_strength=ATTENTION_STRENGTH, attention_reference=0.70),
        prospects=replace(base.prospects, share=0.6))


def _privacy_sensitive() -> Scenario:
    return Scenario(
        name="privacy_sensitive",
        description="Retailer whose customers distrust data use: explicit personalization backfires "
                    "unless the customer is familiar with the firm",
        offers=OfferModel(personalized_offer=True),
        privacy=PrivacyModel(enabled=True, trust_a=2.0, trust_b=3.0, creep_by_level=(0.0, 0.6, 3.0),
                             reactance=0.5, optout_creep=1.0),
        drift=_PEOPLE_CHANGE,
    )


PRESETS: dict[str, Any] = {
    "retail": _retail,
    "subscription": _subscription,
    "fame": _fame,
    "privacy_sensitive": _privacy_sensitive,
    "challenger": _challenger,
    "incumbent": _incumbent,
}
"""Named scenarios. Each value builds a fresh :class:`Scenario`; ``description`` says what it is for."""


def get_scenario(name_or_path: str | Path | Scenario, **overrides: Any) -> Scenario:
    """Resolve a preset name, a JSON file path, or a Scenario, then apply top-level overrides: a
    value replaces the field, a mapping for a submodel (``mass_media={"budget_schedule": [0.0]}``)
    changes only the fields it names and keeps the preset's others.

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
        base = scenario.to_dict()
        merged = {k: {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
                  for k, v in overrides.items()}  # a submodel override changes only the fields it names
        scenario = Scenario.from_dict({**base, **merged})
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
    "CHANNELS", "CreativeModel", "DROPOUT_PROCESSES", "EXPLICITNESS_LEVELS", "ChannelModel", "DriftModel",
    "MassMediaModel", "MediaModel", "OfferModel", "OmnichannelModel", "PRESETS", "PrivacyModel",
    "ProspectModel", "PurchaseModel", "Scenario", "default_channels", "get_scenario",
    "load_scenario", "replace",
]
