"""From an in-memory Rapport policy to an exportable :class:`~rapport.experiments.export.modules.DecisionModule`
and the :class:`ExportSpec` that travels with every artifact.

Supported policies
------------------
* :class:`rapport.agents.rl_policy.SB3Policy` over PPO / A2C / MaskablePPO (MultiDiscrete or flattened
  Discrete actions) and DQN, with optional VecNormalize observation statistics.
* :class:`rapport.agents.bandits.LinearArmPolicy` (and a :class:`rapport.agents.bandits.LinearBandit` learner,
  frozen with ``policy(explore=...)``) with any of its exploration rules.

Observables only
----------------
An exported graph takes the schema's observable features and nothing else. A schema naming latent
truth (``latent_*`` privileged columns, ``alive``, ``p_drop``...) is refused, and so is an SB3
model whose actor reads more columns than the schema's features (a model trained on observations
widened with privileged columns whose actor is not the asymmetric one of
:mod:`rapport.agents.privileged`). An asymmetric actor-critic (``agent.privileged_critic``) exports
its actor alone: ``d`` feature inputs, the first ``d`` VecNormalize statistics.

Modes and what the propensity means
-----------------------------------
``greedy``
    Deterministic: the most probable allowed action (SB3 policy-gradient models), the allowed
    action with the highest Q-value (DQN), the allowed arm with the highest predicted reward
    (bandits); ties go to the first action in C order. Propensity 1.0: a deterministic logging
    policy chose that action with certainty.
``explore``
    The policy's own exploration, driven by the ``noise`` input(s):

    * SB3 policy-gradient: a draw from the masked action distribution (one uniform per action
      dimension in ``noise``); propensity = its probability under that distribution.
    * DQN: ε-greedy over allowed joint actions (ε from the SB3Policy); propensity
      ``(1-ε)·[greedy] + ε/n_allowed``.
    * ε-greedy bandit: ``noise[:, 0]`` picks the uniform arm, ``noise[:, 1] < ε`` explores;
      propensity ``(1-ε)·[greedy] + ε/n_allowed`` (greedy ties go to the first arm).
    * LinUCB: deterministic optimism, propensity 1.0.
    * Thompson: ``noise`` (n, K) standard normal draws the posterior scores; propensity is the
      Monte-Carlo estimate ``(hits + 1)/(M + 1)`` from ``propensity_noise`` (M, K).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rapport.agents.bandits import LinearArmPolicy, LinearBandit
from rapport.agents.privileged import (
    actor_input_width,
    check_observable_names,
    observable_normalization,
)
from rapport.agents.protocol import DecisionSchema
from rapport.agents.rl_policy import SB3Policy, normalization_stats, normalize_observations
from rapport.experiments.export.modules import (
    DecisionModule,
    EligibilityLayer,
    EligibilityRule,
    LinearArmScorer,
    LinearArmSelector,
    SB3Scorer,
    SB3Selector,
)

__all__ = ["MODES", "ExportSpec", "NoiseInput", "ObsNormalization", "build_decision_module"]

MODES = ("greedy", "explore")
SPEC_VERSION = 1


@dataclass(frozen=True)
class ObsNormalization:
    """SB3 ``VecNormalize`` observation statistics: ``clip((obs - mean)/sqrt(var + eps), ±clip)``."""

    mean: np.ndarray
    var: np.ndarray
    clip_obs: float = 10.0
    epsilon: float = 1e-8

    @classmethod
    def coerce(cls, value: Any) -> ObsNormalization | None:
        """Accept None, an ObsNormalization, a VecNormalize, or a mapping of the fields."""
        if value is None or isinstance(value, ObsNormalization):
            return value
        stats = normalization_stats(value)
        return None if stats is None else cls(**stats)

    def apply(self, obs: np.ndarray) -> np.ndarray:
        """What VecNormalize hands the policy (float32)."""
        return normalize_observations(obs, asdict(self))


@dataclass(frozen=True)
class NoiseInput:
    """An exploration input of the exported graph."""

    name: str
    shape: tuple[str | int, ...]
    """``"n"`` is the batch size."""
    distribution: str
    """``uniform`` on [0, 1) or ``standard_normal``; float64."""
    meaning: str


@dataclass(frozen=True)
class ExportSpec:
    """Everything a consumer of an exported policy needs besides the graph (stored as JSON in
    the ONNX metadata, beside the .pt2 file and in the MLflow model)."""

    policy_kind: str
    """E.g. ``sb3:PPO``, ``sb3:DQN``, ``bandit:LinUCB``."""
    mode: str
    """``greedy`` or ``explore``."""
    rule: str
    """Decision rule actually applied (``greedy``, ``sample``, ``epsilon``, ``ucb``, ``thompson``)."""
    propensity: str
    """What the propensity output means in this mode."""
    feature_names: tuple[str, ...]
    nvec: tuple[int, int, int]
    channel_names: tuple[str, ...]
    offer_names: tuple[str, ...]
    spend_levels: tuple[float, ...]
    noise_inputs: tuple[NoiseInput, ...] = ()
    preprocessing: str = ""
    eligibility: dict[str, Any] = field(default_factory=dict)
    max_batch_rows: int = 1 << 17
    """Rows per call that keep the graph's intermediate tensors in a few hundred MB."""
    spec_version: int = SPEC_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> ExportSpec:
        raw = json.loads(text)
        raw["noise_inputs"] = tuple(NoiseInput(**{**n, "shape": tuple(n["shape"])})
                                    for n in raw.get("noise_inputs", ()))
        for key in ("feature_names", "nvec", "channel_names", "offer_names", "spend_levels"):
            raw[key] = tuple(raw[key])
        return cls(**raw)


def contact_rules_of(constraints: Mapping[str, Any] | None) -> dict[str, Any]:
    """The per-customer contact rules (``max_contacts_4w``, ``quiet_weeks``) of a run's
    constraints (a mapping, as saved with the policy); the budget is not per customer and is
    left out. ``{}`` when there are none."""
    c = dict(constraints or {})
    rules: dict[str, Any] = {}
    if c.get("max_contacts_4w") is not None:
        rules["max_contacts_4w"] = int(c["max_contacts_4w"])
    if int(c.get("quiet_weeks") or 0) > 0:
        rules["quiet_weeks"] = int(c["quiet_weeks"])
    return rules


def _eligibility(schema: DecisionSchema, constraints: Mapping[str, Any] | None = None
                 ) -> tuple[EligibilityLayer, dict[str, Any]]:
    rules = contact_rules_of(constraints)
    rule = EligibilityRule.from_schema(schema.feature_names, schema.channel_names, schema.nvec,
                                       **rules)
    text = ("channel j allowed iff optin_<channel j> > 0.5; offers 1.. need any opt-in; "
            "spend levels 1.. need the paid_media opt-in; index 0 of every dimension is "
            "always allowed")
    if "max_contacts_4w" in rules:
        text += (f"; contact cap: a channel only if the sum over all channels of contacts_4w_<channel> + 1 <= "
                 f"{rules['max_contacts_4w']}")
    if "quiet_weeks" in rules:
        text += (f"; quiet period: a channel only if every weeks_since_contact_<channel> >= "
                 f"{rules['quiet_weeks']}")
    if rules:
        text += " (offers then need a channel the rules allow)"
    described = {
        "rule": text,
        "optin_features": [schema.feature_names[c] for c in rule.optin_columns],
        "spend_gate": None if rule.spend_channel is None
        else f"optin_{schema.channel_names[rule.spend_channel]}",
        "contact_rules": rules,
    }
    return EligibilityLayer(rule), described


def build_decision_module(policy: Any, schema: DecisionSchema, mode: str = "greedy", *,
                          obs_normalization: Any = None,
                          constraints: Mapping[str, Any] | None = None
                          ) -> tuple[DecisionModule, ExportSpec]:
    """The exportable module for ``policy`` and its spec (see the module doc for the modes).

    Parameters
    ----------
    policy
        An :class:`SB3Policy`, a :class:`LinearArmPolicy` or a :class:`LinearBandit`.
    schema
        The decision schema the policy was trained with (feature order, nvec, names).
    mode
        ``greedy`` or ``explore``.
    obs_normalization
        SB3 only: VecNormalize statistics the model was trained behind (a ``VecNormalize``,
        an :class:`ObsNormalization` or a dict). Defaults to the policy's own
        ``obs_normalization`` attribute when it has one.
    constraints
        The run's business constraints (``ConstraintsConfig`` fields as a mapping): its
        contact cap and quiet weeks go into the eligibility layer, so the exported policy
        enforces the rules it was trained and evaluated under. A weekly budget ranks the whole
        batch and cannot be decided row by row: it stays outside (the card says so).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    check_observable_names(schema.feature_names)
    eligibility, elig_doc = _eligibility(schema, constraints)
    common = dict(feature_names=tuple(schema.feature_names), nvec=tuple(schema.nvec),
                  channel_names=tuple(schema.channel_names),
                  offer_names=tuple(schema.offer_names),
                  spend_levels=tuple(float(s) for s in schema.spend_levels),
                  eligibility=elig_doc)
    if isinstance(policy, LinearBandit):
        policy = policy.policy(explore=True)  # keeps the rule; ``mode`` decides whether it is used
    if isinstance(policy, SB3Policy):
        return _build_sb3(policy, schema, mode, eligibility, common, obs_normalization)
    if isinstance(policy, LinearArmPolicy):
        if obs_normalization is not None:
            raise ValueError("obs_normalization applies to SB3 policies; a bandit standardises "
                             "its features itself")
        return _build_linear(policy, schema, mode, eligibility, common)
    raise TypeError(f"cannot export {type(policy).__name__}: exportable policies are SB3Policy, "
                    "LinearArmPolicy and LinearBandit (rule-based baselines need no export)")


def _frozen_copy(net: Any) -> Any:
    """A fresh copy of an SB3 policy network on the CPU, rebuilt from its constructor arguments
    and weights as SB3's own save/load does (a deepcopy trips over tensors a training step
    left behind in the live object)."""
    clone = type(net)(**net._get_constructor_parameters())
    clone.load_state_dict(net.state_dict())
    return clone.cpu().eval()


def _build_sb3(policy: SB3Policy, schema: DecisionSchema, mode: str,
               eligibility: EligibilityLayer, common: dict[str, Any],
               obs_normalization: Any) -> tuple[DecisionModule, ExportSpec]:
    if tuple(policy.nvec) != tuple(schema.nvec):
        raise ValueError(f"the SB3 policy acts in nvec={policy.nvec}, the schema says "
                         f"{schema.nvec}")
    reads = actor_input_width(policy.model.policy, policy.model.observation_space)
    if reads > schema.n_features:
        raise ValueError(
            f"the SB3 model's actor reads {reads} observation columns but the schema has "
            f"{schema.n_features} observable features ({', '.join(schema.feature_names[:3])}, ...): "
            f"columns {schema.n_features}..{reads - 1} are not observable (privileged latent columns "
            "of a training observation). Only an asymmetric actor-critic whose actor reads the "
            "observable columns alone can be exported: train it with agent.privileged_critic=true "
            "(rapport.agents.privileged), not a plain policy on the widened observation")
    if policy.n_features != schema.n_features or reads != schema.n_features:
        raise ValueError(f"the SB3 model takes {policy.n_features} features, the schema has "
                         f"{schema.n_features}")
    norm = ObsNormalization.coerce(obs_normalization if obs_normalization is not None
                                   else getattr(policy, "obs_normalization", None))
    if norm is not None and norm.mean.size != schema.n_features:
        width = int(np.prod(policy.model.observation_space.shape))
        cut = observable_normalization(asdict(norm), reads, width)
        norm = ObsNormalization.coerce(cut)
    is_dqn = policy._is_dqn
    sample = mode == "explore"
    scorer = SB3Scorer(_frozen_copy(policy.model.policy), is_dqn,
                       None if norm is None else norm.mean, None if norm is None else norm.var,
                       10.0 if norm is None else norm.clip_obs,
                       1e-8 if norm is None else norm.epsilon)
    selector = SB3Selector(policy._dims, tuple(schema.nvec), is_dqn, sample, policy.epsilon)
    algo = type(policy.model).__name__.removeprefix("Batched")
    if not sample:
        rule, prop = "greedy", ("1.0: deterministic choice of the most probable allowed action"
                                if not is_dqn else "1.0: deterministic argmax-Q allowed action")
        noise: tuple[NoiseInput, ...] = ()
    elif is_dqn:
        rule = "epsilon"
        prop = (f"(1-eps)*[greedy] + eps/n_allowed with eps={policy.epsilon}: exact probability "
                "of the chosen joint action")
        noise = (NoiseInput("noise", ("n", 1), "uniform",
                            "inverse-CDF draw from the epsilon-greedy joint distribution"),)
    else:
        rule = "sample"
        prop = ("exact probability of the sampled action under the model's distribution "
                "restricted to allowed actions (product over action dimensions)")
        noise = (NoiseInput("noise", ("n", len(policy._dims)), "uniform",
                            "one uniform per action dimension for inverse-CDF sampling, in "
                            "dimension order"),)
    pre = ("VecNormalize observation statistics: clip((x - mean)/sqrt(var + eps), +-clip)"
           if norm is not None else "none (the model was trained on raw features)")
    if policy.asymmetric:
        pre += ("; asymmetric actor-critic: its critic saw privileged latent columns while "
                "training, the actor and this graph read the observable features only")
    module = DecisionModule(eligibility, scorer, selector, "sb3", len(noise))
    spec = ExportSpec(policy_kind=f"sb3:{algo}", mode=mode, rule=rule, propensity=prop,
                      noise_inputs=noise, preprocessing=pre, **common)
    return module, spec


def _build_linear(policy: LinearArmPolicy, schema: DecisionSchema, mode: str,
                  eligibility: EligibilityLayer, common: dict[str, Any]
                  ) -> tuple[DecisionModule, ExportSpec]:
    params = policy.linear_parameters()  # the bandit's documented export layout
    if tuple(params["feature_names"]) != tuple(schema.feature_names):
        raise ValueError(f"the bandit was fitted on features {tuple(params['feature_names'])}, "
                         f"the schema has {schema.feature_names}")
    arms = np.asarray(params["arms"], np.int64)
    K = len(arms)
    rule = dict(params["rule"]) if mode == "explore" else {"name": "greedy"}
    name, noise_std = rule["name"], float(params["noise_std"])
    noise: tuple[NoiseInput, ...] = ()
    cov, epsilon, scale = None, 0.0, 0.0
    if name == "greedy":
        prop = "1.0: deterministic argmax of predicted reward (ties: first arm)"
    elif name == "epsilon":
        epsilon = float(rule["epsilon"])
        prop = (f"(1-eps)*[greedy arm] + eps/n_allowed with eps={epsilon}: exact "
                "probability of the chosen arm")
        noise = (NoiseInput("noise", ("n", 2), "uniform",
                            "column 0 picks the uniform arm, column 1 < eps decides to explore"),)
    elif name == "ucb":
        cov = params["a_inv"]
        scale = float(rule["alpha"]) * (noise_std if rule.get("scale_by_noise", True) else 1.0)
        prop = "1.0: LinUCB is deterministic (ties: first arm)"
    elif name == "thompson":
        cov = params["a_inv"]
        scale = float(rule["v"]) * (noise_std if rule.get("scale_by_noise", True) else 1.0)
        draws = int(rule.get("propensity_draws", 0))
        prop = (f"Monte-Carlo estimate (hits+1)/(M+1) of the probability that the chosen arm "
                f"wins a posterior draw, M={draws} draws from propensity_noise")
        noise = (NoiseInput("noise", ("n", K), "standard_normal",
                            "one posterior draw of every arm's score"),)
        if draws > 0:
            noise += (NoiseInput("propensity_noise", (draws, K), "standard_normal",
                                 "draws shared by every row for the propensity estimate"),)
    else:
        raise TypeError(f"cannot export bandit rule {name!r}; exportable: greedy, epsilon, ucb, "
                        "thompson")
    scorer = LinearArmScorer(params["feature_mean"], params["feature_std"], params["theta"], cov,
                             arms, tuple(schema.nvec))
    selector = LinearArmSelector(arms, name, epsilon=epsilon, scale=scale)
    module = DecisionModule(eligibility, scorer, selector, "linear", len(noise))
    # keep one call's intermediate tensors to a few hundred MB: Thompson's propensity holds
    # (rows, M, K) float64, the variance (rows, (d+1)(d+2)/2)
    max_rows = 1 << 17
    if len(noise) == 2:
        max_rows = max(256, (1 << 25) // (8 * int(noise[1].shape[0]) * K))
    elif cov is not None:
        max_rows = 1 << 15
    spec = ExportSpec(
        policy_kind=f"bandit:{params['rule']['name']}", mode=mode, rule=name, propensity=prop,
        noise_inputs=noise,
        preprocessing="standardise each feature (x - mean)/std with the bandit's running "
                      "statistics (folded into the float32 scoring weights, as the in-memory "
                      "bandit does); exploration widths in float64",
        max_batch_rows=max_rows, **common)
    return module, spec
