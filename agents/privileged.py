"""Asymmetric actor-critic: a critic that sees latent truth while training, an actor that never does.

With a weekly discount near 0.998 the effect of one contact drowns in a year of noisy purchases,
and a critic that has to infer from observable history whether a customer is still alive, how
often they buy and how tired they are of being contacted learns slowly. A simulator knows these
things. This module lets the *critic* read them during training while the *actor* -- and so every
policy that is served or exported -- reads the observable features only:

* :class:`PrivilegedObservation` wraps the training ``VectorEnv`` and appends the
  :func:`privileged_feature_names` columns (latent truth, read from ``info`` keys only: agents
  never import envs) to every observation, after the ``d`` observable columns;
* :class:`PrivilegedActorCriticPolicy` (PPO, A2C) and :func:`privileged_maskable_policy_class`
  (sb3-contrib ``MaskablePPO``) are SB3 policies whose actor -- features extractor, policy net and
  action head -- is built on the first ``n_observable`` columns (:class:`ObservableFeatures`
  slices them off before anything else), while the critic reads all ``d + k`` columns. The slice
  is structural: perturbing a privileged column cannot change an action probability
  (``tests/test_privileged_critic.py``).

Serving (:class:`rapport.agents.rl_policy.SB3Policy`) and every export take the ``d`` observable
columns only, with the first ``d`` of the VecNormalize statistics (VecNormalize standardises every
column on its own, so those are exactly what the actor saw while training);
:func:`actor_input_width` says how many columns a trained actor reads, and the exports refuse a
model whose actor reads more than the schema's observable features.

Privileged columns (``k = 6 + n_channels``, in this order)
----------------------------------------------------------
==============================  ====================================================================
``latent_alive``                1 if the customer is (latently) alive, else 0
``latent_log_rate``             log of the base weekly purchase rate λ (floored at 1e-8)
``latent_rate_drift``           the drifting log-rate deviation z (0 without ``scenario.drift``)
``latent_log_p_drop``           log of the drop-out probability after a repeat purchase (weekly
                                churn in a contractual scenario; floored at 1e-6)
``latent_log1p_residual_value`` log(1 + residual value): expected discounted future profit without
                                further marketing, $ (``info["residual_value"]``)
``latent_trust``                privacy trust in [0, 1] (1 without ``scenario.privacy``)
``latent_log1p_fatigue_<ch>``   log(1 + fatigue stock) of each channel, in channel order
==============================  ====================================================================

They come from ``info["latent"]["state"]`` and ``info["residual_value"]`` (the env must be built
with latent info and a value discount: ``Rapport/Population-v0`` with ``include_latent=True`` and
``value_discount=d``), which describe the state the returned observation describes. With
same-step autoreset the observation of a reset row is its new episode's first observation, so its
privileged columns are the new customer's; the ended episode's last observation
(``info["final_obs"]``) is widened with ``info["latent"]["final_state"]`` and
``info["final_residual_value"]``, the state it describes (SB3 bootstraps time-outs from it).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import VectorEnv, VectorWrapper
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    FlattenExtractor,
    MlpExtractor,
)
from torch import nn

__all__ = [
    "PRIVILEGED_PREFIX",
    "AsymmetricMlpExtractor",
    "ObservableFeatures",
    "PrivilegedActorCriticPolicy",
    "PrivilegedObservation",
    "actor_input_width",
    "check_observable_names",
    "is_asymmetric",
    "observable_normalization",
    "privileged_feature_names",
    "privileged_maskable_policy_class",
]

PRIVILEGED_PREFIX = "latent_"
"""Every privileged column's name starts with this; no observable feature's may."""

LATENT_NAMES = frozenset({
    "alive", "rate", "base_rate", "p_drop", "purchase_rate", "dropped_out", "treatment_effect",
    "residual_value", "trust", "rate_drift", "online_share", "fatigue", "p_alive_model",
    "response", "media_response", "ref_price", "conditioning", "pantry", "satisfaction",
    "category_pref", "spend_rate"})
"""Names of the env's latent truth (``info["latent"]`` keys and ``PopulationState`` fields):
a feature of that name in a schema is latent truth, not an observable."""

_RATE_FLOOR = 1e-8  # heterogeneous rates reach 1e-7 and below
_P_FLOOR = 1e-6
_STATE_KEYS = ("alive", "rate", "p_drop", "fatigue")


def privileged_feature_names(channel_names: Sequence[str]) -> tuple[str, ...]:
    """The ``k = 6 + len(channel_names)`` privileged column names, in column order (module doc)."""
    return (f"{PRIVILEGED_PREFIX}alive", f"{PRIVILEGED_PREFIX}log_rate",
            f"{PRIVILEGED_PREFIX}rate_drift", f"{PRIVILEGED_PREFIX}log_p_drop",
            f"{PRIVILEGED_PREFIX}log1p_residual_value", f"{PRIVILEGED_PREFIX}trust",
            *(f"{PRIVILEGED_PREFIX}log1p_fatigue_{c}" for c in channel_names))


def check_observable_names(feature_names: Sequence[str]) -> None:
    """Raise ``ValueError`` naming every feature that is latent truth rather than an observable
    (a privileged column name, or the name of a latent variable)."""
    bad = [f for f in feature_names
           if str(f).startswith(PRIVILEGED_PREFIX) or str(f) in LATENT_NAMES]
    if bad:
        raise ValueError(
            f"feature(s) {', '.join(bad)} are latent truth (privileged columns start with "
            f"{PRIVILEGED_PREFIX!r}; latent variables: {', '.join(sorted(LATENT_NAMES))}), not "
            "observables: a served or exported policy may read observable features only. Use the "
            "env's own feature_names as the schema, and agent.privileged_critic to let only the "
            "critic see latent truth while training.")


# ------------------------------------------------------------------------------ the env side
def _privileged_columns(state: Mapping[str, Any], residual_value: Any, n: int,
                        n_channels: int, where: str) -> np.ndarray:
    missing = [k for k in _STATE_KEYS if k not in state]
    if missing:
        raise KeyError(f"{where} has no {missing}: the privileged critic needs the env's latent "
                       "state (Rapport/Population-v0 with include_latent=True)")
    fatigue = np.asarray(state["fatigue"], np.float64)
    if fatigue.shape != (n, n_channels):
        raise ValueError(f"{where}['fatigue'] must be (num_envs, n_channels)=({n}, {n_channels}), "
                         f"got {fatigue.shape}: channel_names do not match the env")
    cols = np.empty((n, 6 + n_channels), np.float64)
    cols[:, 0] = np.asarray(state["alive"], bool)
    cols[:, 1] = np.log(np.maximum(np.asarray(state["rate"], np.float64), _RATE_FLOOR))
    cols[:, 2] = np.asarray(state["rate_drift"], np.float64) if "rate_drift" in state else 0.0
    cols[:, 3] = np.log(np.maximum(np.asarray(state["p_drop"], np.float64), _P_FLOOR))
    cols[:, 4] = np.log1p(np.maximum(np.asarray(residual_value, np.float64), 0.0))
    cols[:, 5] = np.asarray(state["trust"], np.float64) if "trust" in state else 1.0
    cols[:, 6:] = np.log1p(np.maximum(fatigue, 0.0))
    return cols.astype(np.float32)


class PrivilegedObservation(VectorWrapper):
    """A batched training env whose observations gain the privileged (latent) columns.

    Observation ``(n, d + k)``: the env's ``d`` observable columns unchanged, then the ``k``
    columns of :func:`privileged_feature_names` (module doc), float32. Only ``info`` keys are
    read. Use it for training only, outermost (after reward and mask wrappers, which must see the
    observable columns only), and give the learner an asymmetric policy with
    ``n_observable = d`` (:attr:`n_observable`).

    Parameters
    ----------
    env
        A ``VectorEnv`` with Box observations whose info carries ``latent["state"]`` and
        ``residual_value`` (and, on same-step autoreset, ``latent["final_state"]`` and
        ``final_residual_value`` with ``final_obs``).
    channel_names
        The env's channels, in action order (from the injected ``DecisionSchema``).
    """

    def __init__(self, env: VectorEnv, channel_names: Sequence[str]):
        super().__init__(env)
        space = env.single_observation_space
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"PrivilegedObservation needs flat Box observations, got {space}")
        if not channel_names:
            raise ValueError("channel_names must name the env's channels (fatigue columns)")
        self.channel_names = tuple(str(c) for c in channel_names)
        self.privileged_names = privileged_feature_names(self.channel_names)
        self.n_observable = int(space.shape[0])
        self.n_privileged = len(self.privileged_names)
        k = self.n_privileged
        low = np.concatenate([np.asarray(space.low, np.float32), np.full(k, -np.inf, np.float32)])
        high = np.concatenate([np.asarray(space.high, np.float32), np.full(k, np.inf, np.float32)])
        self.single_observation_space = spaces.Box(low, high, dtype=np.float32)
        self.observation_space = spaces.Box(np.tile(low, (self.num_envs, 1)),
                                            np.tile(high, (self.num_envs, 1)), dtype=np.float32)

    def _columns(self, info: Mapping[str, Any], final: bool = False) -> np.ndarray:
        latent = info.get("latent")
        state_key, value_key = ("final_state", "final_residual_value") if final else \
            ("state", "residual_value")
        if not isinstance(latent, Mapping) or state_key not in latent:
            raise KeyError(f"info['latent'][{state_key!r}] missing: build the env with latent info "
                           "(Rapport/Population-v0 include_latent=True) for a privileged critic")
        if value_key not in info:
            raise KeyError(f"info[{value_key!r}] missing: build the env with value_discount=<the "
                           "weekly discount> (Rapport/Population-v0) for a privileged critic")
        return _privileged_columns(latent[state_key], info[value_key], self.num_envs,
                                   len(self.channel_names), f"info['latent'][{state_key!r}]")

    def _widen(self, obs: Any, cols: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, np.float32)
        if obs.shape != (self.num_envs, self.n_observable):
            raise ValueError(f"observation must be ({self.num_envs}, {self.n_observable}), got "
                             f"{obs.shape}")
        return np.concatenate([obs, cols], axis=1)

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        return self._widen(obs, self._columns(info)), info

    def step(self, actions: Any):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        obs = self._widen(obs, self._columns(info))
        if "final_obs" in info:
            final = info["final_obs"]
            if np.asarray(final).dtype.kind == "O":
                raise TypeError("PrivilegedObservation needs a dense info['final_obs'] array")
            info = dict(info)
            info["final_obs"] = self._widen(final, self._columns(info, final=True))
        return obs, reward, terminated, truncated, info


# ------------------------------------------------------------------------------ the policy side
class ObservableFeatures(BaseFeaturesExtractor):
    """The actor's features: the first ``n_observable`` columns of the (flattened) observation.

    Everything after them -- the privileged columns -- is dropped before the actor's first layer,
    so an observation of the observable columns only (width ``n_observable``) gives the same
    features: that is how serving and exports call the actor.
    """

    def __init__(self, observation_space: spaces.Box, n_observable: int):
        super().__init__(observation_space, features_dim=int(n_observable))
        self.n_observable = int(n_observable)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return torch.flatten(observations, start_dim=1)[:, :self.n_observable]


class AsymmetricMlpExtractor(nn.Module):
    """SB3's ``MlpExtractor`` with different input widths: the policy net reads the actor's
    ``actor_dim`` features, the value net the critic's ``critic_dim`` (same ``net_arch``, same
    parameter names ``policy_net.*`` / ``value_net.*``)."""

    def __init__(self, actor_dim: int, critic_dim: int, net_arch: Any,
                 activation_fn: type[nn.Module], device: Any = "auto"):
        super().__init__()
        actor = MlpExtractor(actor_dim, net_arch=net_arch, activation_fn=activation_fn, device=device)
        critic = MlpExtractor(critic_dim, net_arch=net_arch, activation_fn=activation_fn, device=device)
        self.policy_net, self.value_net = actor.policy_net, critic.value_net
        self.latent_dim_pi, self.latent_dim_vf = actor.latent_dim_pi, critic.latent_dim_vf
        self.actor_dim, self.critic_dim = int(actor_dim), int(critic_dim)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(features[:, :self.actor_dim]), self.forward_critic(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return self.policy_net(features)

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self.value_net(features)


class _Asymmetric:
    """Mixin over an SB3 actor-critic policy class: actor on the first ``n_observable`` columns
    (:class:`ObservableFeatures`), critic on all of them (``FlattenExtractor``). The features
    extractors are fixed (never shared); ``features_extractor_class`` must be left alone."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space,
                 lr_schedule: Any, *args: Any, n_observable: int, **kwargs: Any):
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
            raise ValueError(f"an asymmetric actor-critic needs flat Box observations, got "
                             f"{observation_space}")
        width = int(observation_space.shape[0])
        if isinstance(n_observable, bool) or not isinstance(n_observable, int | np.integer) \
                or not 1 <= int(n_observable) < width:
            raise ValueError(f"n_observable must be an integer in 1..{width - 1} (the observable "
                             f"columns before the privileged ones of a {width}-column "
                             f"observation), got {n_observable!r}")
        extractor = kwargs.pop("features_extractor_class", None)
        if extractor not in (None, FlattenExtractor, ObservableFeatures):
            raise ValueError(f"an asymmetric actor-critic builds its own features extractors; "
                             f"features_extractor_class={getattr(extractor, '__name__', extractor)} "
                             "is not supported")
        extractor_kwargs = dict(kwargs.pop("features_extractor_kwargs", None) or {})
        extractor_kwargs.pop("n_observable", None)
        if extractor_kwargs:
            raise ValueError(f"features_extractor_kwargs {sorted(extractor_kwargs)} are not "
                             "supported by an asymmetric actor-critic")
        if kwargs.pop("share_features_extractor", False):
            raise ValueError("share_features_extractor=True would let the actor's features see "
                             "the privileged columns; an asymmetric actor-critic never shares")
        self._n_observable = int(n_observable)
        super().__init__(observation_space, action_space, lr_schedule, *args,  # type: ignore[call-arg]
                         features_extractor_class=ObservableFeatures,
                         features_extractor_kwargs={"n_observable": int(n_observable)},
                         share_features_extractor=False, **kwargs)

    @property
    def n_observable(self) -> int:
        """Leading observation columns the actor reads (the observable features)."""
        return self._n_observable

    def _build(self, lr_schedule: Any) -> None:
        # the critic's extractor reads every column; replaced before the optimizer is made
        self.vf_features_extractor = FlattenExtractor(self.observation_space)
        super()._build(lr_schedule)  # type: ignore[misc]

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = AsymmetricMlpExtractor(
            self.n_observable, self.vf_features_extractor.features_dim, self.net_arch,
            self.activation_fn, device=self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()  # type: ignore[misc]
        data.pop("features_extractor_class", None)
        data.pop("features_extractor_kwargs", None)
        data["n_observable"] = self.n_observable
        return data


class PrivilegedActorCriticPolicy(_Asymmetric, ActorCriticPolicy):
    """SB3 ``ActorCriticPolicy`` (PPO, A2C) with an asymmetric actor-critic (module doc):
    ``policy_kwargs={"n_observable": d}``."""


@functools.cache
def privileged_maskable_policy_class() -> type:
    """sb3-contrib's ``MaskableActorCriticPolicy`` with an asymmetric actor-critic (imported on
    demand: sb3-contrib is optional)."""
    from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy

    class PrivilegedMaskableActorCriticPolicy(_Asymmetric, MaskableActorCriticPolicy):
        """sb3-contrib ``MaskableActorCriticPolicy`` with an asymmetric actor-critic:
        ``policy_kwargs={"n_observable": d}``."""

    PrivilegedMaskableActorCriticPolicy.__module__ = __name__
    PrivilegedMaskableActorCriticPolicy.__qualname__ = "PrivilegedMaskableActorCriticPolicy"
    return PrivilegedMaskableActorCriticPolicy


def __getattr__(name: str) -> Any:  # the maskable class by name, e.g. for SB3's checkpoint loader
    if name == "PrivilegedMaskableActorCriticPolicy":
        return privileged_maskable_policy_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_asymmetric(policy: nn.Module) -> bool:
    """Whether ``policy`` is an asymmetric actor-critic whose actor is structurally limited to
    its first ``n_observable`` columns (its own extractor class and MLP, never shared)."""
    return (isinstance(policy, _Asymmetric)
            and not policy.share_features_extractor  # type: ignore[attr-defined]
            and type(policy.pi_features_extractor) is ObservableFeatures  # type: ignore[attr-defined]
            and policy.pi_features_extractor.n_observable == policy.n_observable  # type: ignore[attr-defined]
            and isinstance(policy.mlp_extractor, AsymmetricMlpExtractor)  # type: ignore[attr-defined]
            and policy.mlp_extractor.actor_dim == policy.n_observable)  # type: ignore[attr-defined]


def actor_input_width(policy: nn.Module, observation_space: spaces.Space) -> int:
    """How many leading observation columns the actor of SB3 ``policy`` reads: ``n_observable``
    for an asymmetric actor-critic, else the whole observation."""
    if is_asymmetric(policy):
        return int(policy.n_observable)  # type: ignore[attr-defined]
    return int(np.prod(observation_space.shape))


def observable_normalization(stats: Mapping[str, Any] | None, n_observable: int,
                             width: int) -> Mapping[str, Any] | None:
    """VecNormalize statistics for the actor's ``n_observable`` columns: statistics of the whole
    ``width``-column training observation are cut to their first ``n_observable`` entries
    (VecNormalize standardises each column on its own, so these are exactly what the actor saw);
    statistics that are already ``n_observable`` wide, or None, are returned as they are."""
    if stats is None or n_observable == width:
        return stats
    mean = np.asarray(stats["mean"]).reshape(-1)
    if mean.size == n_observable:
        return stats
    if mean.size != width:
        raise ValueError(f"obs_normalization has {mean.size} entries; the model reads {width} "
                         f"columns ({n_observable} observable)")
    return {**dict(stats), "mean": mean[:n_observable],
            "var": np.asarray(stats["var"]).reshape(-1)[:n_observable]}
