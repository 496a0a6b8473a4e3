"""A trained Stable-Baselines3 policy network as data, and back, without SB3's pickle-based loader.

SB3's ``.zip`` format base64-cloudpickles several entries (spaces, ``policy_class``,
``lr_schedule``) and ``BaseAlgorithm.load`` unpickles them, so loading a model zip runs code
from the file. What serving and evaluation need is much less: the policy network (class,
constructor arguments, weights), the spaces and DQN's final epsilon. Here they are stored as

* JSON (:func:`encode_sb3` ``config``): the algorithm and policy class *by name* from fixed
  registries (never an importable path read from the store), constructor arguments with
  classes named (activation, optimizer, features extractor) and the spaces;
* numpy arrays (``arrays``): a ``Box`` observation space's bounds;
* torch tensors (``tensors``): the policy's ``state_dict``, written with ``torch.save`` and read
  with ``torch.load(weights_only=True)`` by the caller.

:func:`decode_sb3` rebuilds a :class:`StoredSB3Model`, which :class:`rapport.agents.rl_policy.SB3Policy`
serves exactly like the trained model (same network, same weights); it cannot ``learn``. The
learning rate schedule is not stored (serving never steps the optimizer).

Asymmetric actor-critics (``rapport.agents.privileged``, ``agent.privileged_critic``) are stored
the same way: their policy class by name, ``n_observable`` among the constructor arguments, and
the training observation space (observable plus privileged columns) that the critic was built on;
the served policy still takes the ``n_observable`` observable columns only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

SB3_CODEC_VERSION = 1

ALGORITHMS = {"BatchedPPO": "PPO", "PPO": "PPO", "BatchedA2C": "A2C", "A2C": "A2C", "DQN": "DQN",
              "BatchedMaskablePPO": "MaskablePPO", "MaskablePPO": "MaskablePPO"}
"""SB3 algorithm class name -> the name a stored model is served under."""


def _policy_classes() -> dict[str, Callable[[], type]]:
    def actor_critic() -> type:
        from stable_baselines3.common.policies import ActorCriticPolicy
        return ActorCriticPolicy

    def dqn() -> type:
        from stable_baselines3.dqn.policies import DQNPolicy
        return DQNPolicy

    def maskable() -> type:
        from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
        return MaskableActorCriticPolicy

    def privileged() -> type:
        from rapport.agents.privileged import PrivilegedActorCriticPolicy
        return PrivilegedActorCriticPolicy

    def privileged_maskable() -> type:
        from rapport.agents.privileged import privileged_maskable_policy_class
        return privileged_maskable_policy_class()

    return {"ActorCriticPolicy": actor_critic, "DQNPolicy": dqn, "MaskableActorCriticPolicy": maskable,
            "PrivilegedActorCriticPolicy": privileged,
            "PrivilegedMaskableActorCriticPolicy": privileged_maskable}


def _named_classes() -> dict[str, dict[str, type]]:
    """Classes a policy's constructor may take, by argument name, each stored by its name."""
    import torch
    from stable_baselines3.common.torch_layers import FlattenExtractor

    activations = {c.__name__: c for c in (torch.nn.Tanh, torch.nn.ReLU, torch.nn.ELU, torch.nn.LeakyReLU,
                                           torch.nn.GELU, torch.nn.SiLU, torch.nn.Sigmoid, torch.nn.Softplus,
                                           torch.nn.Identity)}
    optimizers = {c.__name__: c for c in (torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop,
                                          torch.optim.SGD)}
    return {"activation_fn": activations, "optimizer_class": optimizers,
            "features_extractor_class": {"FlattenExtractor": FlattenExtractor}}


class StoredSB3Model:
    """What :class:`rapport.agents.rl_policy.SB3Policy` reads from an SB3 algorithm, rebuilt from data:
    ``policy`` (the trained torch policy, eval mode), ``observation_space``, ``action_space``
    and, for DQN, ``exploration_final_eps`` and ``q_net``. The class is named after the
    algorithm (``PPO``, ``A2C``, ``DQN``, ``MaskablePPO``) for policy cards and messages."""

    def __init__(self, policy: Any, observation_space: Any, action_space: Any,
                 exploration_final_eps: float | None = None) -> None:
        self.policy, self.observation_space, self.action_space = policy, observation_space, action_space
        if exploration_final_eps is not None:
            self.exploration_final_eps = float(exploration_final_eps)

    def learn(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"a stored {type(self).__name__} serves decisions only; to train further load "
                        "the SB3 checkpoint (rapport.experiments.policy_store.load_sb3_checkpoint)")


@functools.cache
def _served_class(name: str) -> type[StoredSB3Model]:
    attrs: dict[str, Any] = {"__doc__": StoredSB3Model.__doc__, "__module__": __name__}
    if name == "DQN":
        attrs["q_net"] = property(lambda self: self.policy.q_net)
    return type(name, (StoredSB3Model,), attrs)


# ------------------------------------------------------------------------------------ spaces
def encode_space(space: Any, key: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        arrays[f"{key}.low"], arrays[f"{key}.high"] = np.asarray(space.low), np.asarray(space.high)
        return {"type": "box", "shape": [int(s) for s in space.shape], "dtype": np.dtype(space.dtype).name}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "multi_discrete", "nvec": np.asarray(space.nvec).tolist(),
                "start": np.asarray(space.start).tolist(), "dtype": np.dtype(space.dtype).name}
    if isinstance(space, spaces.Discrete):
        return {"type": "discrete", "n": int(space.n), "start": int(space.start),
                "dtype": np.dtype(space.dtype).name}
    raise TypeError(f"cannot store an SB3 model acting in {space}: storable spaces are Box, Discrete "
                    "and MultiDiscrete")


_DTYPES = {"float32", "float64", "int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64"}


def decode_space(spec: Mapping[str, Any], key: str, arrays: Mapping[str, np.ndarray]) -> Any:
    from gymnasium import spaces

    dtype = spec.get("dtype", "float32")
    if dtype not in _DTYPES:
        raise ValueError(f"{key}: dtype {dtype!r} is not one of {sorted(_DTYPES)}")
    kind = spec.get("type")
    if kind == "box":
        low, high = arrays[f"{key}.low"], arrays[f"{key}.high"]
        return spaces.Box(low=low, high=high, shape=tuple(int(s) for s in spec["shape"]), dtype=dtype)
    if kind == "multi_discrete":
        return spaces.MultiDiscrete(np.asarray(spec["nvec"], np.int64), dtype=dtype,
                                    start=np.asarray(spec.get("start", np.zeros(len(spec["nvec"]))), np.int64))
    if kind == "discrete":
        return spaces.Discrete(int(spec["n"]), start=int(spec.get("start", 0)), dtype=dtype)
    raise ValueError(f"{key}: unknown space type {kind!r}; valid: box, discrete, multi_discrete")


# ------------------------------------------------------------------------------------- model
def _is_data(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(_is_data(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_data(v) for k, v in value.items())
    return False


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def encode_sb3(model: Any) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """``(config, arrays, tensors)`` of a trained SB3 model (or a :class:`StoredSB3Model`); raises
    ``TypeError``/``ValueError`` naming what is not storable as data."""
    algo_name = type(model).__name__
    served = ALGORITHMS.get(algo_name)
    if served is None:
        raise TypeError(f"cannot store an SB3 model of type {algo_name}; storable: {', '.join(sorted(ALGORITHMS))}")
    policy = model.policy
    policy_class = type(policy).__name__
    if policy_class not in _policy_classes():
        raise TypeError(f"cannot store SB3 policy class {policy_class}; storable: {', '.join(_policy_classes())}")
    named = _named_classes()
    arrays: dict[str, np.ndarray] = {}
    kwargs: dict[str, Any] = {}
    classes: dict[str, str] = {}
    for key, value in policy._get_constructor_parameters().items():
        if key in ("observation_space", "action_space", "lr_schedule"):
            continue
        if key in named:
            if value is None:
                kwargs[key] = None
                continue
            name = getattr(value, "__name__", None)
            if named[key].get(name) is not value:
                raise TypeError(f"cannot store SB3 policy argument {key}={value!r}; storable: "
                                f"{', '.join(named[key])}")
            classes[key] = name
            continue
        if not _is_data(value):
            raise TypeError(f"cannot store SB3 policy argument {key}={value!r}: not plain data")
        kwargs[key] = _plain(value)
    config = {
        "codec_version": SB3_CODEC_VERSION, "algorithm": served, "policy_class": policy_class,
        "policy_kwargs": kwargs, "policy_classes": classes,
        "observation_space": encode_space(model.observation_space, "observation_space", arrays),
        "action_space": encode_space(model.action_space, "action_space", arrays),
    }
    eps = getattr(model, "exploration_final_eps", None)
    if served == "DQN":
        config["exploration_final_eps"] = float(eps if eps is not None else 0.0)
    tensors = {k: v.detach().cpu().clone() for k, v in policy.state_dict().items()}
    return config, arrays, tensors


def decode_sb3(config: Mapping[str, Any], arrays: Mapping[str, np.ndarray], tensors: Mapping[str, Any]) -> StoredSB3Model:
    """Rebuild the served model from :func:`encode_sb3` output (only registered classes)."""
    import torch

    if int(config.get("codec_version", 0)) != SB3_CODEC_VERSION:
        raise ValueError(f"SB3 codec version {config.get('codec_version')!r} is not {SB3_CODEC_VERSION}")
    served = config.get("algorithm")
    if served not in set(ALGORITHMS.values()):
        raise ValueError(f"unknown SB3 algorithm {served!r}; valid: {', '.join(sorted(set(ALGORITHMS.values())))}")
    factory = _policy_classes().get(config.get("policy_class"))
    if factory is None:
        raise ValueError(f"unknown SB3 policy class {config.get('policy_class')!r}; valid: "
                         f"{', '.join(_policy_classes())}")
    named = _named_classes()
    kwargs = dict(config.get("policy_kwargs", {}))
    for key, name in dict(config.get("policy_classes", {})).items():
        if key not in named or name not in named[key]:
            raise ValueError(f"SB3 policy argument {key}={name!r} is not a known class; valid: "
                             f"{', '.join(named.get(key, {})) or 'none'}")
        kwargs[key] = named[key][name]
    obs_space = decode_space(config["observation_space"], "observation_space", arrays)
    action_space = decode_space(config["action_space"], "action_space", arrays)
    with torch.random.fork_rng(devices=[]):  # building initialises weights: leave torch's stream alone
        policy = factory()(observation_space=obs_space, action_space=action_space,
                           lr_schedule=lambda _: 0.0, **kwargs)
    policy.load_state_dict(dict(tensors), strict=True)
    policy.set_training_mode(False)
    return _served_class(served)(policy, obs_space, action_space, config.get("exploration_final_eps"))
