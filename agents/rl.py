"""Deep-RL learners: thin Stable-Baselines3 / sb3-contrib factories with Rapport defaults.

Each ``make_*`` takes an SB3 ``VecEnv`` (normally :class:`rapport.agents.sb3_adapter.BatchedVecEnv`
over a population of thousands of customers) and returns an untrained SB3 model whose defaults
keep the learner, not Python, busy:

* one rollout is ``rollout_size`` customer-weeks gathered as ``n_steps = rollout_size / n_envs``
  batched steps, so a 4096-customer env needs only 8 Python-level steps per update;
* minibatches of thousands of samples (``rollout_size / n_minibatches``), few epochs;
* ``torch.set_num_threads(torch_threads)`` (default 1): torch's default of one thread per core
  collapses when jobs share cores (PPO fell to a few hundred steps/s on this 2-core machine);
* an in-memory logger (:class:`MetricsRecorder`) instead of SB3's default, which creates a temp
  ``SB3-<timestamp>`` folder on every ``learn()``; metrics come out as ``dict[str, float]`` with
  SB3's namespaced keys (``train/approx_kl``, ``rollout/ep_rew_mean``, ``time/fps``...).

Anything in ``**overrides`` is passed to the SB3 constructor and wins over the defaults.
The trained model becomes a :class:`rapport.agents.rl_policy.SB3Policy` for serving and evaluation.

``observable_features=d`` (PPO, MaskablePPO) trains an asymmetric actor-critic
(:mod:`rapport.agents.privileged`): the env's observations are ``d`` observable columns followed by
privileged (latent) ones, the critic reads them all and the actor only the first ``d``.

SAC acts on a continuous action (``Box``); in Rapport that is per-person paid-media spend
(``rapport.envs.sanity.SpendEnv``: $ per person per week), the continuous version of the population
env's discrete spend levels.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch
from stable_baselines3 import A2C, DQN, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter, Logger
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv

__all__ = [
    "BatchedA2C",
    "BatchedPPO",
    "BatchedTimeoutBootstrap",
    "MetricsRecorder",
    "make_a2c",
    "make_dqn",
    "make_maskable_ppo",
    "make_ppo",
    "make_sac",
    "maskable_ppo_class",
    "rollout_shape",
    "set_torch_threads",
]

DEFAULT_NET_ARCH = [64, 64]
"""Hidden layers of policy and value nets: customer features are ~30 columns, and a small net
keeps a 4096-customer step cheap in the learner."""


def set_torch_threads(n_threads: int | None) -> None:
    """Set torch's intra-op threads (process-wide); ``None`` leaves torch's default."""
    if n_threads is not None and torch.get_num_threads() != n_threads:
        torch.set_num_threads(int(n_threads))


class MetricsRecorder(KVWriter):
    """SB3 log writer that keeps each dump as a ``dict[str, float]`` in :attr:`history`.

    The composition root forwards them to its tracker; nothing is written to disk.
    """

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any],
              step: int = 0) -> None:
        self.history.append({k: float(v) for k, v in key_values.items()
                             if isinstance(v, (int, float))})

    @property
    def latest(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}

    def close(self) -> None:
        pass


def attach_recorder(model: BaseAlgorithm) -> MetricsRecorder:
    """Give ``model`` a folder-less logger writing to a new :class:`MetricsRecorder`."""
    recorder = MetricsRecorder()
    model.set_logger(Logger(folder=None, output_formats=[recorder]))
    return recorder


class BatchedTimeoutBootstrap(BaseCallback):
    """Bootstrap time-outs with one batched value pass instead of one pass per customer.

    SB3's on-policy loop adds ``gamma * V(terminal_observation)`` to the reward of every
    time-limited row *one row at a time* (a forward pass each): when a 4096-customer population
    reaches its horizon that is 4096 passes, ~8 % of PPO's wall time here. SB3 calls
    ``on_step`` after ``env.step`` and before that loop, so this callback does the same sum for
    all time-limited rows in one pass, in place on the step's ``rewards`` array, and marks those
    rows ``TimeLimit.truncated = False`` (with ``TimeLimit.bootstrapped = True``) so that SB3's
    loop skips them. The rollout is the same as SB3's (a test compares them).

    Parameters
    ----------
    inner
        The caller's callback, run first (so it sees raw rewards, as with plain SB3).
    """

    def __init__(self, inner: BaseCallback | None = None):
        super().__init__()
        self.inner = inner

    def _on_rollout_start(self) -> None:
        if self.inner is not None:
            self.inner.on_rollout_start()

    def _on_rollout_end(self) -> None:
        if self.inner is not None:
            self.inner.on_rollout_end()

    def update_child_locals(self, locals_: dict[str, Any]) -> None:
        if self.inner is not None:
            self.inner.update_locals(locals_)

    def _on_step(self) -> bool:
        keep_going = True if self.inner is None else self.inner.on_step()
        dones, infos, rewards = self.locals["dones"], self.locals["infos"], self.locals["rewards"]
        rows = [i for i in np.flatnonzero(dones)
                if infos[i].get("TimeLimit.truncated", False)
                and infos[i].get("terminal_observation") is not None]
        if rows:
            policy = self.model.policy
            terminal_obs = np.stack([infos[i]["terminal_observation"] for i in rows])
            with torch.no_grad():
                values = policy.predict_values(policy.obs_to_tensor(terminal_obs)[0])
            rewards[rows] += self.model.gamma * values.cpu().numpy().reshape(-1)
            for i in rows:
                infos[i]["TimeLimit.truncated"] = False
                infos[i]["TimeLimit.bootstrapped"] = True
        return keep_going


class _BatchedBootstrapMixin:
    """On-policy algorithm whose rollouts go through :class:`BatchedTimeoutBootstrap`."""

    def collect_rollouts(self, env: VecEnv, callback: BaseCallback, *args: Any,
                         **kwargs: Any) -> bool:
        bootstrap = BatchedTimeoutBootstrap(inner=callback)
        bootstrap.init_callback(self)  # type: ignore[arg-type]
        return super().collect_rollouts(env, bootstrap, *args, **kwargs)  # type: ignore[misc]


class BatchedPPO(_BatchedBootstrapMixin, PPO):
    """SB3 ``PPO`` with batched time-out bootstrapping; saves/loads like ``PPO``."""


class BatchedA2C(_BatchedBootstrapMixin, A2C):
    """SB3 ``A2C`` with batched time-out bootstrapping; saves/loads like ``A2C``."""


@functools.cache
def maskable_ppo_class() -> type[OnPolicyAlgorithm]:
    """sb3-contrib's ``MaskablePPO`` with batched time-out bootstrapping (imported on demand:
    sb3-contrib is an optional dependency)."""
    try:
        from sb3_contrib import MaskablePPO
    except ImportError as err:
        raise ImportError("MaskablePPO needs sb3-contrib: pip install 'sb3-contrib>=2.3,<3'") \
            from err

    class BatchedMaskablePPO(_BatchedBootstrapMixin, MaskablePPO):
        """sb3-contrib ``MaskablePPO`` with batched time-out bootstrapping."""

    return BatchedMaskablePPO


def rollout_shape(n_envs: int, rollout_size: int, n_minibatches: int) -> tuple[int, int]:
    """``(n_steps, batch_size)`` giving about ``rollout_size`` samples per update.

    ``n_steps = ceil(rollout_size / n_envs)`` (at least 2, so GAE sees a next step), and the
    batch size divides the rollout into ``n_minibatches`` equal minibatches.
    """
    if min(n_envs, rollout_size, n_minibatches) < 1:
        raise ValueError(f"n_envs, rollout_size, n_minibatches must be >= 1, got "
                         f"{n_envs}, {rollout_size}, {n_minibatches}")
    n_steps = max(2, math.ceil(rollout_size / n_envs))
    return n_steps, max(1, (n_steps * n_envs) // n_minibatches)


def _build(cls: type[BaseAlgorithm], env: VecEnv, defaults: dict[str, Any],
           overrides: dict[str, Any], torch_threads: int | None,
           asymmetric: tuple[type, int] | None = None) -> BaseAlgorithm:
    set_torch_threads(torch_threads)
    kwargs = {"policy": "MlpPolicy", "verbose": 0, "device": "cpu", "tensorboard_log": None,
              **defaults, **overrides}
    policy_kwargs = {"net_arch": DEFAULT_NET_ARCH, **kwargs.pop("policy_kwargs", {})}
    if asymmetric is not None:
        policy_class, n_observable = asymmetric
        if kwargs["policy"] != "MlpPolicy":
            raise ValueError(f"observable_features chooses the policy class "
                             f"({policy_class.__name__}); remove policy={kwargs['policy']!r}")
        kwargs["policy"] = policy_class
        policy_kwargs["n_observable"] = n_observable
    model = cls(env=env, policy_kwargs=policy_kwargs, **kwargs)
    model.metrics = attach_recorder(model)  # type: ignore[attr-defined]
    return model


def _ppo_defaults(env: VecEnv, rollout_size: int, n_minibatches: int) -> dict[str, Any]:
    n_steps, batch_size = rollout_shape(env.num_envs, rollout_size, n_minibatches)
    return {
        "n_steps": n_steps,
        "batch_size": batch_size,
        # Few epochs over large minibatches: each epoch costs a full pass over 32k samples.
        "n_epochs": 4,
        "learning_rate": 3e-4,
        "gamma": 0.99,
        "gae_lambda": 0.95,
        "clip_range": 0.2,
        "ent_coef": 0.01,  # keep trying channels/offers while values are still noisy
        "max_grad_norm": 0.5,
    }


def _asymmetric(env: VecEnv, observable_features: int | None, maskable: bool
                ) -> tuple[type, int] | None:
    """The asymmetric policy class and actor width for ``observable_features`` (None: none)."""
    if observable_features is None:
        return None
    from rapport.agents.privileged import (
        PrivilegedActorCriticPolicy,
        privileged_maskable_policy_class,
    )

    width = int(np.prod(env.observation_space.shape))
    if isinstance(observable_features, bool) or not isinstance(observable_features, int | np.integer) \
            or not 1 <= int(observable_features) < width:
        raise ValueError(f"observable_features must be an integer in 1..{width - 1}: the observable "
                         f"columns in front of the env's privileged ones (the env has {width} "
                         f"columns), got {observable_features!r}")
    cls = privileged_maskable_policy_class() if maskable else PrivilegedActorCriticPolicy
    return cls, int(observable_features)


def make_ppo(env: VecEnv, *, rollout_size: int = 32768, n_minibatches: int = 4,
             seed: int | None = None, torch_threads: int | None = 1,
             observable_features: int | None = None, **overrides: Any) -> PPO:
    """PPO with batched-population defaults (works with Discrete, MultiDiscrete and Box).

    Parameters
    ----------
    env
        SB3 VecEnv; ``env.num_envs`` customers per step.
    rollout_size
        Customer-weeks per update (``n_steps * n_envs``, rounded up).
    n_minibatches
        Minibatches per epoch; 32768 / 4 = 8192 samples per gradient step.
    seed
        Seeds torch, the action space and the env's next reset (SB3's ``seed``).
    torch_threads
        Torch intra-op threads, process-wide (``None``: leave as is).
    observable_features
        Asymmetric actor-critic (:mod:`rapport.agents.privileged`): the env's first
        ``observable_features`` columns are observable, the rest privileged; the actor reads the
        former only, the critic all. Set by the composition root from
        ``agent.privileged_critic``; ``None``: an ordinary policy.
    **overrides
        Any ``PPO`` argument.
    """
    defaults = _ppo_defaults(env, rollout_size, n_minibatches)
    return _build(BatchedPPO, env, {**defaults, "seed": seed}, overrides, torch_threads,
                  _asymmetric(env, observable_features, maskable=False))


def make_maskable_ppo(env: VecEnv, *, rollout_size: int = 32768, n_minibatches: int = 4,
                      seed: int | None = None, torch_threads: int | None = 1,
                      observable_features: int | None = None, **overrides: Any) -> Any:
    """sb3-contrib ``MaskablePPO``: PPO that never samples actions the env masks out.

    The env must expose ``action_masks()`` (``BatchedVecEnv`` does when the env puts
    ``info["action_mask"]``). Arguments as :func:`make_ppo`.
    """
    defaults = _ppo_defaults(env, rollout_size, n_minibatches)
    algo = maskable_ppo_class()
    return _build(algo, env, {**defaults, "seed": seed}, overrides, torch_threads,
                  _asymmetric(env, observable_features, maskable=True))


def make_a2c(env: VecEnv, *, rollout_size: int = 8192, seed: int | None = None,
             torch_threads: int | None = 1, **overrides: Any) -> A2C:
    """A2C: one gradient step per rollout of ``rollout_size`` customer-weeks.

    With thousands of customers per step a rollout is already a large, decorrelated batch,
    so A2C uses Adam and a larger step than SB3's single-env RMSprop default.
    """
    n_steps, _ = rollout_shape(env.num_envs, rollout_size, 1)
    defaults = {
        "n_steps": n_steps,
        "learning_rate": 1e-3,
        "gamma": 0.99,
        "gae_lambda": 0.95,
        "ent_coef": 0.01,
        "normalize_advantage": True,
        "policy_kwargs": {"optimizer_class": torch.optim.Adam},
        "seed": seed,
    }
    policy_kwargs = {**defaults.pop("policy_kwargs"), **overrides.pop("policy_kwargs", {})}
    return _build(BatchedA2C, env, defaults, {**overrides, "policy_kwargs": policy_kwargs},
                  torch_threads)


def _off_policy_gradient_steps(n_envs: int, samples_per_gradient_step: int) -> int:
    # SB3 collects n_envs transitions per step; keep a fixed replay ratio whatever n_envs is.
    return max(1, round(n_envs / samples_per_gradient_step))


def make_dqn(env: VecEnv, *, samples_per_gradient_step: int = 64, seed: int | None = None,
             torch_threads: int | None = 1, **overrides: Any) -> DQN:
    """DQN on a ``Discrete`` action space, e.g. ``BatchedVecEnv(env, flatten_actions=True)``
    (the population's (channel, offer, spend) triple becomes one of prod(nvec) joint actions).

    ``samples_per_gradient_step``: new transitions per gradient step (batch 512: each transition
    is replayed ~8 times on average).
    """
    from gymnasium import spaces

    if not isinstance(env.action_space, spaces.Discrete):
        raise ValueError(f"DQN needs Discrete actions, got {env.action_space}; wrap the env as "
                         "BatchedVecEnv(env, flatten_actions=True)")
    defaults = {
        "learning_rate": 1e-3,
        "buffer_size": 200_000,
        "learning_starts": 4 * env.num_envs,
        "batch_size": 512,
        "gamma": 0.99,
        "train_freq": 1,
        "gradient_steps": _off_policy_gradient_steps(env.num_envs, samples_per_gradient_step),
        "target_update_interval": 10_000,  # in transitions, i.e. ~n_envs-independent
        "exploration_fraction": 0.3,
        "exploration_final_eps": 0.02,
        "seed": seed,
    }
    return _build(DQN, env, defaults, overrides, torch_threads)


def make_sac(env: VecEnv, *, samples_per_gradient_step: int = 32, seed: int | None = None,
             torch_threads: int | None = 1, **overrides: Any) -> SAC:
    """SAC for continuous decisions (per-person spend, ``Box`` actions).

    ``samples_per_gradient_step``: new transitions per gradient step.
    """
    from gymnasium import spaces

    if not isinstance(env.action_space, spaces.Box):
        raise ValueError(f"SAC needs Box actions, got {env.action_space}")
    defaults = {
        "learning_rate": 1e-3,
        "buffer_size": 200_000,
        "learning_starts": 4 * env.num_envs,
        "batch_size": 256,
        "gamma": 0.99,
        "train_freq": 1,
        "gradient_steps": _off_policy_gradient_steps(env.num_envs, samples_per_gradient_step),
        # Tuned entropy weight, but starting at 0.01 rather than SB3's 1.0: rewards are $ per
        # customer-week (order 1), and a weight of 1 keeps spend near the middle of its range
        # for thousands of updates.
        "ent_coef": "auto_0.01",
        "seed": seed,
    }
    return _build(SAC, env, defaults, overrides, torch_threads)
