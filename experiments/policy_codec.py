"""Numpy/torch policies as data: a kind, JSON configuration, numpy arrays and torch tensors.

:func:`encode_policy` reads a policy's public attributes into an :class:`EncodedPolicy`;
:func:`decode_policy` rebuilds it by calling the constructor that its *kind* names in
:data:`KINDS`, a fixed registry: nothing read from a store is ever imported, evaluated or
unpickled. Stored kinds and what they keep:

=========================  =====================================================================
kind                       stored
=========================  =====================================================================
``do_nothing`` …           rule-based baselines (:mod:`rapport.agents.baselines`): their constructor
                           arguments as JSON (channels and offers as indices)
``linear_arm_policy``      frozen linear bandit (:class:`rapport.agents.bandits.LinearArmPolicy`): arms
                           and every array of its :class:`~rapport.agents.bandits.LinearFit` (feature
                           mean / std, theta, covariance) as arrays; the fit's scalars and the
                           exploration rule (:func:`rapport.agents.bandits.rule_to_dict`) as JSON
``neural_linear_policy``   frozen neural-linear policy: the same plus the feature network's layer
                           list (Linear / ReLU / Tanh) as JSON and its weights as tensors
``linear_bandit``,         a bandit *learner*, through its own ``state_dict()`` (arrays + JSON;
``neural_linear_thompson`` restored with ``load_state_dict``), so it can go on learning
``contact_rules``          :class:`rapport.agents.constraints.ContactRules` around any stored kind
=========================  =====================================================================

Not storable (an error says why): the oracles (they read the simulator's latent truth and are
rebuilt for each population), :class:`rapport.agents.constraints.BudgetConstraint` (store the policy
inside it; the budget is run configuration, re-applied per batch by the policy store), and any
other class. Exact types are matched: a subclass of a baseline is refused rather than stored
as its parent.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rapport.agents import baselines as B
from rapport.agents.protocol import DecisionSchema

CODEC_VERSION = 1


@dataclass
class EncodedPolicy:
    """A policy as data (see the module doc)."""

    kind: str
    config: dict[str, Any]
    """JSON-friendly configuration (plain dicts, lists, numbers, strings, booleans, None)."""
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    """Numeric numpy arrays (stored in an ``.npz`` read with ``allow_pickle=False``)."""
    tensors: dict[str, Any] = field(default_factory=dict)
    """torch tensors (stored with ``torch.save``, read with ``torch.load(weights_only=True)``)."""


def _json_float(x: float) -> float | str:
    x = float(x)
    return x if math.isfinite(x) else str(x)  # JSON has no inf/nan: "inf", "-inf", "nan"


def _float(x: float | str) -> float:
    return float(x)


def _ids(values: Any) -> list[int]:
    return [int(v) for v in values]


# --------------------------------------------------------------------------------- baselines
def _cadence(p: Any) -> dict[str, Any]:
    return {"every_k_weeks": int(p.every_k_weeks), "phase": int(p.phase), "horizon": int(p.horizon)}


def _segment(s: B.SegmentRule) -> dict[str, Any]:
    out = dataclasses.asdict(s)
    for k, v in out.items():
        if isinstance(v, float):
            out[k] = _json_float(v)
        elif isinstance(v, tuple):
            out[k] = list(v)
    return out


def _segment_from(d: Mapping[str, Any]) -> B.SegmentRule:
    kinds = {f.name: f.type for f in dataclasses.fields(B.SegmentRule)}
    unknown = sorted(set(d) - set(kinds))
    if unknown:
        raise ValueError(f"segment has unknown field(s) {unknown}; valid: {', '.join(kinds)}")
    values = {k: (_float(v) if kinds[k] in ("float", float) else tuple(v) if isinstance(v, list) else v)
              for k, v in d.items()}
    return B.SegmentRule(**values)


BASELINE_ENCODERS: dict[str, tuple[type, Callable[[Any], dict[str, Any]], Callable[[dict[str, Any]], dict[str, Any]]]] = {
    # kind: (class, policy -> JSON config, JSON config -> constructor keyword arguments)
    "do_nothing": (B.DoNothing, lambda p: {}, dict),
    "uniform_random": (B.UniformRandom, lambda p: {}, dict),
    "mass_marketing": (B.MassMarketing, lambda p: {"channel": int(p.channel), "offer": int(p.offer),
                                                   "spend_level": int(p.spend_level), **_cadence(p)}, dict),
    "rfm_segments": (B.RFMSegmentRules,
                     lambda p: {"segments": [_segment(s) for s in p.segments],
                                "every_k_weeks": int(p.every_k_weeks), "horizon": int(p.horizon)},
                     lambda c: {**c, "segments": tuple(_segment_from(s) for s in c.get("segments", ()))}),
    "drip_campaign": (B.DripCampaign,
                      lambda p: {"welcome_weeks": _ids(p.welcome), "welcome_offers": _ids(p.welcome.values()),
                                 "winback_weeks": _ids(p.winback), "winback_offers": _ids(p.winback.values()),
                                 "birthday_offer": int(p.birthday_offer), "channels": _ids(p.channels),
                                 "horizon": int(p.horizon)}, dict),
    "targeting_only": (B.TargetingOnly, lambda p: {"top_fraction": float(p.top_fraction), "channel": int(p.channel),
                                                   "rank_by": str(p.rank_by),
                                                   "offer": int(p.offer), **_cadence(p)}, dict),
    "discount_only": (B.DiscountOnly, lambda p: {"offer": int(p.offer), "channel": int(p.channel), **_cadence(p)},
                      dict),
    "recommendation_only": (B.RecommendationOnly,
                            lambda p: {"channel": int(p.channel), "offers": _ids(p.offers), **_cadence(p)}, dict),
    "channel_choice_only": (B.ChannelChoiceOnly, lambda p: {"offer": int(p.offer), **_cadence(p)}, dict),
}


# ----------------------------------------------------------------------------------- bandits
def _fit_to(fit: Any, prefix: str, enc: EncodedPolicy) -> dict[str, Any]:
    """Every field of a LinearFit: arrays into ``enc.arrays``, the rest returned as JSON."""
    scalars: dict[str, Any] = {}
    for f in dataclasses.fields(fit):
        value = getattr(fit, f.name)
        if isinstance(value, np.ndarray):
            enc.arrays[f"{prefix}{f.name}"] = value
        elif isinstance(value, bool | np.bool_):
            scalars[f.name] = bool(value)
        elif isinstance(value, int | float | np.integer | np.floating):
            scalars[f.name] = _json_float(value)
        else:
            raise TypeError(f"cannot store LinearFit.{f.name} of type {type(value).__name__}")
    return scalars


def _fit_from(scalars: Mapping[str, Any], prefix: str, arrays: Mapping[str, np.ndarray]) -> Any:
    from rapport.agents.bandits import LinearFit

    values: dict[str, Any] = {}
    for f in dataclasses.fields(LinearFit):
        key = f"{prefix}{f.name}"
        if key in arrays:
            values[f.name] = np.asarray(arrays[key], np.float64)
        elif f.name in scalars:
            v = scalars[f.name]
            values[f.name] = v if isinstance(v, bool) else _float(v)
    return LinearFit(**values)


_LAYERS = ("Linear", "ReLU", "Tanh")


def _layers_of(body: Any) -> list[dict[str, Any]]:
    import torch

    layers = []
    for module in body:
        if type(module) is torch.nn.Linear:
            layers.append({"type": "Linear", "in": module.in_features, "out": module.out_features,
                           "bias": module.bias is not None})
        elif type(module) in (torch.nn.ReLU, torch.nn.Tanh):
            layers.append({"type": type(module).__name__})
        else:
            raise TypeError(f"cannot store a feature network layer {type(module).__name__}; storable: "
                            f"{', '.join(_LAYERS)}")
    return layers


def _body_from(layers: list[Mapping[str, Any]]) -> Any:
    import torch

    modules = []
    for spec in layers:
        kind = spec.get("type")
        if kind == "Linear":
            modules.append(torch.nn.Linear(int(spec["in"]), int(spec["out"]), bias=bool(spec.get("bias", True))))
        elif kind in ("ReLU", "Tanh"):
            modules.append(getattr(torch.nn, kind)())
        else:
            raise ValueError(f"unknown feature network layer {kind!r}; valid: {', '.join(_LAYERS)}")
    return torch.nn.Sequential(*modules)


def _encode_linear_arm(p: Any, enc: EncodedPolicy) -> None:
    from rapport.agents.bandits import rule_to_dict

    enc.arrays["arms"] = np.asarray(p.arms, np.int64)
    enc.config.update(rule=rule_to_dict(p.rule), fit=_fit_to(p.fit, "fit.", enc))


def _decode_linear_arm(enc: EncodedPolicy, schema: DecisionSchema) -> Any:
    from rapport.agents.bandits import LinearArmPolicy, rule_from_dict

    return LinearArmPolicy(schema, enc.arrays["arms"].astype(np.int64), _fit_from(enc.config["fit"], "fit.", enc.arrays),
                           rule_from_dict(enc.config["rule"]))


def _encode_neural(p: Any, enc: EncodedPolicy) -> None:
    _encode_linear_arm(p, enc)
    enc.config["layers"] = _layers_of(p.features.body)
    enc.arrays["input_mean"] = np.asarray(p.features.mean)
    enc.arrays["input_std"] = np.asarray(p.features.std)
    enc.tensors.update({f"body.{k}": v.detach().cpu().clone() for k, v in p.features.body.state_dict().items()})


def _decode_neural(enc: EncodedPolicy, schema: DecisionSchema) -> Any:
    import torch

    from rapport.agents.bandits import rule_from_dict
    from rapport.agents.neural_bandit import FeatureNet, NeuralLinearPolicy

    with torch.random.fork_rng(devices=[]):  # layer construction draws initial weights
        body = _body_from(enc.config["layers"])
    body.load_state_dict({k.removeprefix("body."): v for k, v in enc.tensors.items() if k.startswith("body.")},
                         strict=True)
    features = FeatureNet(body, enc.arrays["input_mean"], enc.arrays["input_std"])
    return NeuralLinearPolicy(schema, enc.arrays["arms"].astype(np.int64), features,
                              _fit_from(enc.config["fit"], "fit.", enc.arrays), rule_from_dict(enc.config["rule"]))


def _encode_learner(p: Any, enc: EncodedPolicy) -> None:
    for k, v in p.state_dict().items():
        if isinstance(v, np.ndarray):
            enc.arrays[f"state.{k}"] = v
        else:
            enc.config.setdefault("state", {})[k] = v


def _learner_state(enc: EncodedPolicy) -> dict[str, Any]:
    state = dict(enc.config.get("state", {}))
    state.update({k.removeprefix("state."): v for k, v in enc.arrays.items() if k.startswith("state.")})
    return state


def _decode_linear_bandit(enc: EncodedPolicy, schema: DecisionSchema) -> Any:
    from rapport.agents.bandits import LinearBandit, rule_from_dict

    state = _learner_state(enc)
    kwargs = {"standardize": bool(state["standardize"])} if "standardize" in state else {}
    bandit = LinearBandit(schema, rule_from_dict(state["rule"]), arms=state["arms"], ridge=float(state["ridge"]),
                          **kwargs)
    bandit.load_state_dict(state)
    return bandit


def _decode_neural_learner(enc: EncodedPolicy, schema: DecisionSchema) -> Any:
    from rapport.agents.neural_bandit import NeuralLinearThompson

    state = _learner_state(enc)
    cfg, rule = dict(state["config"]), dict(state["rule"])
    learner = NeuralLinearThompson(
        schema, hidden=cfg["hidden"], embedding_dim=cfg["embedding_dim"], v=rule["v"],
        scale_by_noise=rule["scale_by_noise"], propensity_draws=rule["propensity_draws"], arms=state["arms"],
        ridge=cfg["ridge"], retrain_every=cfg["retrain_every"], train_steps=cfg["train_steps"],
        batch_size=cfg["batch_size"], learning_rate=cfg["learning_rate"], buffer_size=cfg["buffer_size"],
        seed=cfg["seed"], torch_threads=None)
    learner.load_state_dict(state)
    return learner


# ------------------------------------------------------------------------------- wrappers
def _encode_contact_rules(p: Any, enc: EncodedPolicy, schema: DecisionSchema) -> None:
    caps = {name: int(cap) for name, cap in zip(schema.channel_names, p.channel_caps, strict=True)
            if np.isfinite(cap)}
    inner = encode_policy(p.policy, schema)
    enc.config.update(max_contacts_4w=p.max_contacts_4w, max_channel_contacts_4w=caps,
                      quiet_weeks=int(p.quiet_weeks), inner={"kind": inner.kind, "config": inner.config})
    enc.arrays.update({f"inner.{k}": v for k, v in inner.arrays.items()})
    enc.tensors.update({f"inner.{k}": v for k, v in inner.tensors.items()})


def _decode_contact_rules(enc: EncodedPolicy, schema: DecisionSchema) -> Any:
    from rapport.agents.constraints import ContactRules

    inner_spec = enc.config["inner"]
    inner = EncodedPolicy(inner_spec["kind"], dict(inner_spec["config"]),
                          {k.removeprefix("inner."): v for k, v in enc.arrays.items() if k.startswith("inner.")},
                          {k.removeprefix("inner."): v for k, v in enc.tensors.items() if k.startswith("inner.")})
    cap = enc.config.get("max_contacts_4w")
    return ContactRules(decode_policy(inner, schema), schema, max_contacts_4w=None if cap is None else int(cap),
                        max_channel_contacts_4w=dict(enc.config.get("max_channel_contacts_4w") or {}),
                        quiet_weeks=int(enc.config.get("quiet_weeks", 0)))


# ------------------------------------------------------------------------------- registry
def _model_kinds() -> dict[str, tuple[type, Callable[..., None], Callable[[EncodedPolicy, DecisionSchema], Any]]]:
    """The non-baseline kinds: (exact class, encoder, decoder); imported on demand (torch)."""
    from rapport.agents.bandits import LinearArmPolicy, LinearBandit
    from rapport.agents.constraints import ContactRules

    kinds: dict[str, tuple[type, Callable[..., None], Callable[[EncodedPolicy, DecisionSchema], Any]]] = {
        "linear_arm_policy": (LinearArmPolicy, _encode_linear_arm, _decode_linear_arm),
        "linear_bandit": (LinearBandit, _encode_learner, _decode_linear_bandit),
        "contact_rules": (ContactRules, _encode_contact_rules, _decode_contact_rules),
    }
    from rapport.agents.neural_bandit import NeuralLinearPolicy, NeuralLinearThompson

    kinds["neural_linear_policy"] = (NeuralLinearPolicy, _encode_neural, _decode_neural)
    kinds["neural_linear_thompson"] = (NeuralLinearThompson, _encode_learner, _decode_neural_learner)
    return kinds


def storable_kinds() -> list[str]:
    return [*BASELINE_ENCODERS, "linear_arm_policy", "neural_linear_policy", "linear_bandit",
            "neural_linear_thompson", "contact_rules"]


KINDS = storable_kinds()
"""Every kind a policy store may hold (the only constructors :func:`decode_policy` calls)."""


def _learner_types() -> tuple[type, ...]:
    """The linear learner and its named variants (which only choose the exploration rule)."""
    from rapport.agents.bandits import EpsilonGreedy, LinearBandit, LinearThompson, LinUCB

    return (LinearBandit, EpsilonGreedy, LinUCB, LinearThompson)


def encode_policy(policy: Any, schema: DecisionSchema) -> EncodedPolicy:
    """The policy as data; ``TypeError`` naming the class when it is not storable."""
    name = type(policy).__name__
    for kind, (cls, to_config, _) in BASELINE_ENCODERS.items():
        if type(policy) is cls:
            enc = EncodedPolicy(kind, to_config(policy))
            again = to_config(decode_policy(enc, schema))
            if again != enc.config:  # what the constructor rebuilt must read back the same
                raise TypeError(f"cannot store {name}: it does not rebuild from its public attributes "
                                f"({enc.config} read back as {again})")
            return enc
    if name in ("Oracle", "LongTermOracle"):
        raise TypeError(f"cannot store {name}: it reads the simulator's latent truth, so it is rebuilt for "
                        "each population and never saved or served")
    if name == "BudgetConstraint":
        raise TypeError("cannot store a BudgetConstraint: store the policy inside it and pass the budget "
                        "as constraints (constraints.weekly_budget_per_customer), re-applied per batch")
    for kind, (cls, encoder, _) in _model_kinds().items():
        exact = type(policy) is cls or (kind == "linear_bandit" and type(policy) in _learner_types())
        if exact:
            enc = EncodedPolicy(kind, {})
            if kind == "contact_rules":
                encoder(policy, enc, schema)
            else:
                encoder(policy, enc)
            return enc
    raise TypeError(f"cannot store a policy of type {type(policy).__module__}.{name}; storable kinds: "
                    f"{', '.join(KINDS)} (SB3 models: save_policy(sb3_model=...))")


def decode_policy(enc: EncodedPolicy, schema: DecisionSchema) -> Any:
    """Rebuild a policy from :func:`encode_policy` output by its kind's constructor only; bad
    content raises ``ValueError`` naming the kind and what was wrong."""
    try:
        if enc.kind in BASELINE_ENCODERS:
            cls, _, to_kwargs = BASELINE_ENCODERS[enc.kind]
            return cls(schema, **to_kwargs(dict(enc.config)))
        kinds = _model_kinds()
        if enc.kind not in kinds:
            raise ValueError(f"unknown policy kind {enc.kind!r}; valid: {', '.join(KINDS)}")
        return kinds[enc.kind][2](enc, schema)
    except (KeyError, TypeError) as err:
        raise ValueError(f"policy kind {enc.kind!r}: stored configuration does not build it ({type(err).__name__}: "
                         f"{err})") from err
