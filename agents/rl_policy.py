"""A trained SB3 model as a Rapport :class:`~rapport.agents.protocol.Policy`, and save/load.

:class:`SB3Policy` answers ``act(obs, rng, *, action_mask=None) -> (actions, propensities)`` from
the model's action distribution, sampling with the caller's ``numpy`` generator (never torch's
global RNG), so a run is reproducible from its seed and the policy can log propensities for
off-policy evaluation.

Propensities
------------
* ``greedy=False`` (default): the action is *sampled* from the model's distribution and the
  propensity is its probability under that distribution (product over action dimensions for
  ``MultiDiscrete``). With ``action_mask`` the distribution is first restricted to the allowed
  actions and renormalised -- what MaskablePPO does internally -- and the propensity is under
  that masked distribution, the one actually used.
* ``greedy=True``: the most probable allowed action is taken, deterministically, so the
  propensity is 1.0 (not the model's probability of that action: a deterministic logging policy
  chose it with certainty).
* DQN has no distribution: greedy is argmax Q (propensity 1.0); sampling is epsilon-greedy over
  the allowed actions, propensity ``(1 - eps) * [greedy] + eps / n_allowed``.

Continuous-action models (SAC) are not served here: a density is not a propensity; use
``model.predict``.

Asymmetric actor-critics
------------------------
A model trained with a privileged critic (:mod:`rapport.agents.privileged`) saw ``d`` observable
columns followed by privileged (latent) ones; its actor reads the first ``d`` only. It is served
on the ``d`` observable features alone (:attr:`SB3Policy.n_features` is ``d``; a wider
observation is refused), and VecNormalize statistics of the whole training observation are cut
to their first ``d`` entries: the latent columns never reach a served policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import DQN, SAC
from stable_baselines3.common.base_class import BaseAlgorithm

from rapport.agents.privileged import actor_input_width, is_asymmetric, observable_normalization
from rapport.agents.rl import BatchedA2C, BatchedPPO, attach_recorder, maskable_ppo_class
from rapport.agents.sb3_adapter import joint_action_mask, unflatten_actions

__all__ = ["ALGORITHMS", "SB3Policy", "load_model", "normalization_stats", "normalize_observations",
           "save_model"]


def _algorithm(algo: str) -> type[BaseAlgorithm]:
    if algo == "maskable_ppo":
        return maskable_ppo_class()  # imports sb3-contrib, an optional dependency
    table: dict[str, type[BaseAlgorithm]] = {"ppo": BatchedPPO, "a2c": BatchedA2C, "dqn": DQN,
                                             "sac": SAC}
    if algo not in table:
        raise ValueError(f"unknown algo {algo!r}; expected one of {', '.join(ALGORITHMS)}")
    return table[algo]


ALGORITHMS = ("ppo", "maskable_ppo", "a2c", "dqn", "sac")
"""Names accepted by :func:`load_model`."""


def save_model(model: BaseAlgorithm, path: str | Path) -> Path:
    """Save with SB3's zip format; returns the path written (``.zip`` added if missing)."""
    path = Path(path)
    model.save(path)
    return path if path.suffix == ".zip" else path.with_suffix(path.suffix + ".zip")


def load_model(path: str | Path, algo: str, env: Any = None) -> BaseAlgorithm:
    """Load a model saved by :func:`save_model`; ``algo`` is one of :data:`ALGORITHMS`."""
    model = _algorithm(algo).load(path, env=env, device="cpu")
    model.metrics = attach_recorder(model)  # type: ignore[attr-defined]
    return model


def normalization_stats(value: Any, n_features: int | None = None) -> dict[str, Any] | None:
    """``VecNormalize`` observation statistics as a plain dict (``mean``, ``var`` float64 arrays,
    ``clip_obs``, ``epsilon`` floats), from a ``VecNormalize``, a mapping of those keys, or
    ``None`` (returned as is). A VecNormalize that does not normalise observations gives None.
    With ``n_features``, mean and var must have one entry per feature."""
    if value is None:
        return None
    if hasattr(value, "obs_rms"):  # stable_baselines3 VecNormalize
        if not getattr(value, "norm_obs", True):
            return None
        value = {"mean": value.obs_rms.mean, "var": value.obs_rms.var,
                 "clip_obs": value.clip_obs, "epsilon": value.epsilon}
    if not isinstance(value, Mapping) or not {"mean", "var"} <= set(value):
        raise TypeError("obs_normalization must be a VecNormalize or a mapping with 'mean' and "
                        f"'var' (and optionally 'clip_obs', 'epsilon'), got {type(value).__name__}")
    stats = {"mean": np.array(value["mean"], np.float64).reshape(-1),  # copies: a snapshot
             "var": np.array(value["var"], np.float64).reshape(-1),
             "clip_obs": float(value.get("clip_obs", 10.0)),
             "epsilon": float(value.get("epsilon", 1e-8))}
    width = stats["mean"].size if n_features is None else n_features
    for key in ("mean", "var"):
        if stats[key].shape != (width,) or not np.all(np.isfinite(stats[key])):
            raise ValueError(f"obs_normalization[{key!r}] must be {width} finite numbers (one "
                             f"per feature), got shape {stats[key].shape}")
    if np.any(stats["var"] < 0) or stats["clip_obs"] <= 0 or stats["epsilon"] < 0:
        raise ValueError("obs_normalization needs var >= 0, clip_obs > 0 and epsilon >= 0, got "
                         f"min var {stats['var'].min()}, clip_obs {stats['clip_obs']}, "
                         f"epsilon {stats['epsilon']}")
    return stats


def normalize_observations(obs: np.ndarray, stats: Mapping[str, Any]) -> np.ndarray:
    """What VecNormalize hands the policy: ``clip((obs - mean) / sqrt(var + epsilon), ±clip_obs)``
    computed in float64, returned as float32 (``stats`` as from :func:`normalization_stats`)."""
    z = (np.asarray(obs, np.float64) - stats["mean"]) / np.sqrt(stats["var"] + stats["epsilon"])
    return np.clip(z, -stats["clip_obs"], stats["clip_obs"]).astype(np.float32)


class SB3Policy:
    """Serve a trained discrete-action SB3 model through the Policy protocol.

    Parameters
    ----------
    model
        PPO / A2C / MaskablePPO (``Discrete`` or ``MultiDiscrete`` actions) or DQN.
    nvec
        The env's ``MultiDiscrete`` sizes when the model was trained on flattened
        ``Discrete(prod(nvec))`` actions (``BatchedVecEnv(flatten_actions=True)``): actions are
        returned per dimension and masks are per dimension, as the protocol says.
    greedy
        Take the most probable allowed action (propensity 1.0) instead of sampling.
    epsilon
        DQN only: exploration rate when sampling (default: the model's final epsilon).
    obs_normalization
        The observation statistics the model was trained behind (SB3 ``VecNormalize``): a
        ``VecNormalize`` or a mapping with ``mean``, ``var`` and optionally ``clip_obs`` (10)
        and ``epsilon`` (1e-8). Raw observations are then standardised as VecNormalize does,
        ``clip((obs - mean) / sqrt(var + epsilon), ±clip_obs)`` in float64, before the model
        sees them, so the preprocessing travels with the policy (and into its exports).
        Stored as a plain dict in :attr:`obs_normalization`; ``None``: raw features. For an
        asymmetric actor-critic, statistics of the whole training observation are cut to the
        observable columns (module doc).
    """

    def __init__(self, model: BaseAlgorithm, *, nvec: Sequence[int] | None = None,
                 greedy: bool = False, epsilon: float | None = None,
                 obs_normalization: Any = None):
        space = model.action_space
        if isinstance(space, spaces.MultiDiscrete):
            self._dims = tuple(int(k) for k in space.nvec)
            self.nvec = self._dims
        elif isinstance(space, spaces.Discrete):
            self._dims = (int(space.n),)
            self.nvec = tuple(int(k) for k in nvec) if nvec is not None else self._dims
            if int(np.prod(self.nvec)) != space.n:
                raise ValueError(f"prod(nvec)={int(np.prod(self.nvec))} must equal the model's "
                                 f"Discrete({space.n})")
        else:
            raise TypeError(f"SB3Policy serves discrete actions; the model acts in {space}. "
                            "Use model.predict for continuous actions.")
        self.model = model
        self.greedy = greedy
        self.flattened = isinstance(space, spaces.Discrete) and len(self.nvec) > 1
        self._is_dqn = hasattr(model, "q_net")
        self.epsilon = float(getattr(model, "exploration_final_eps", 0.0)
                             if epsilon is None else epsilon)
        width = int(np.prod(model.observation_space.shape))
        self.asymmetric = not self._is_dqn and is_asymmetric(model.policy)
        # the columns served: an asymmetric actor-critic's n_observable, else the whole obs
        self.n_features = actor_input_width(model.policy, model.observation_space)
        if self.n_features == width:  # statistics must be one per column of the observation
            self.obs_normalization = normalization_stats(obs_normalization, width)
        else:
            self.obs_normalization = normalization_stats(
                observable_normalization(normalization_stats(obs_normalization), self.n_features, width),
                self.n_features)

    # ---- distribution ---------------------------------------------------------------------
    def action_probabilities(self, obs: np.ndarray,
                             action_mask: np.ndarray | None = None) -> list[np.ndarray]:
        """Per-dimension action probabilities, float64 ``[(n, k_d) for k_d in dims]``.

        ``dims`` is ``nvec`` for MultiDiscrete models and ``(prod(nvec),)`` for Discrete or
        flattened ones. With ``action_mask`` (protocol layout, (n, sum(nvec))) masked actions
        get probability 0 and the rest is renormalised. DQN: probabilities of epsilon-greedy.
        """
        obs = self._check_obs(obs)
        masks = self._split_masks(action_mask, obs.shape[0])
        policy = self.model.policy
        with torch.no_grad():
            # an asymmetric actor takes the observable columns alone: SB3's obs_to_tensor would
            # insist on the training observation's width
            obs_t = torch.as_tensor(obs, device=policy.device) if self.asymmetric \
                else policy.obs_to_tensor(obs)[0]
            if self._is_dqn:
                q = policy.q_net(obs_t).cpu().numpy().astype(np.float64)
                return [self._epsilon_greedy(q, masks[0])]
            dist = policy.get_distribution(obs_t)
        parts = getattr(dist, "distributions", None) or dist.distribution
        parts = parts if isinstance(parts, (list, tuple)) else [parts]
        probs = [p.probs.cpu().numpy().astype(np.float64) for p in parts]
        for d, mask in enumerate(masks):
            if mask is not None:
                probs[d] = self._restrict(probs[d], mask)
        return probs

    def _epsilon_greedy(self, q: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        allowed = np.ones_like(q, bool) if mask is None else mask
        best = np.argmax(np.where(allowed, q, -np.inf), axis=1)
        eps = 0.0 if self.greedy else self.epsilon
        probs = allowed * (eps / allowed.sum(axis=1, keepdims=True))
        probs[np.arange(q.shape[0]), best] += 1.0 - eps
        return probs

    @staticmethod
    def _restrict(probs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        probs = probs * mask
        total = probs.sum(axis=1, keepdims=True)
        if np.any(total <= 0):
            raise ValueError("action_mask allows no action for some rows")
        return probs / total

    # ---- Policy protocol ------------------------------------------------------------------
    def act(self, obs: np.ndarray, rng: np.random.Generator, *,
            action_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Actions (n, len(nvec)) int64 and their propensities (n,) float64 (module doc)."""
        probs = self.action_probabilities(obs, action_mask)
        n = probs[0].shape[0]
        chosen = []
        propensity = np.ones(n, np.float64)
        for p in probs:
            if self.greedy:
                a = np.argmax(p, axis=1)
            else:
                cdf = np.cumsum(p, axis=1)
                cdf /= cdf[:, -1:]  # exact 1.0 at the end, so u < 1 always lands
                a = (cdf <= rng.random((n, 1))).sum(axis=1)
                propensity *= p[np.arange(n), a]
            chosen.append(a)
        actions = np.stack(chosen, axis=1).astype(np.int64)
        if self.flattened:
            actions = unflatten_actions(actions[:, 0], self.nvec)
        return actions, propensity

    # ---- checks ---------------------------------------------------------------------------
    def _check_obs(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, np.float32)
        if obs.ndim != 2 or obs.shape[1] != self.n_features:
            extra = (" (the observable features only: this model's critic was trained on "
                     "privileged latent columns too, which a served policy never takes)"
                     if self.asymmetric else "")
            raise ValueError(f"obs must be (n_customers, {self.n_features}) float32{extra}, got "
                             f"shape {obs.shape}")
        if self.obs_normalization is not None:
            obs = normalize_observations(obs, self.obs_normalization)
        return obs

    def _split_masks(self, action_mask: np.ndarray | None,
                     n: int) -> list[np.ndarray | None]:
        if action_mask is None:
            return [None] * len(self._dims)
        mask = np.asarray(action_mask, bool)
        if mask.shape != (n, sum(self.nvec)):
            raise ValueError(f"action_mask must be ({n}, sum(nvec)={sum(self.nvec)}) bool, got "
                             f"{mask.shape}")
        if self.flattened:
            return [joint_action_mask(mask, self.nvec)]
        return list(np.split(mask, np.cumsum(self._dims)[:-1], axis=1))
