"""Stable-Baselines3 ``VecEnv`` over a natively batched Gymnasium ``VectorEnv``.

SB3 rejects ``gymnasium.vector.VectorEnv`` and its own ``DummyVecEnv`` steps customers one by one
in Python. :class:`BatchedVecEnv` hands SB3 the whole population as one batch per step, with
SB3's semantics:

* **SAME_STEP towards SB3.** When a row is done, the observation SB3 receives for it is already
  the first observation of its next episode, and the last one is in
  ``infos[i]["terminal_observation"]``.
* **Time-outs are not terminations.** ``infos[i]["TimeLimit.truncated"]`` is
  ``truncated and not terminated``, so SB3 bootstraps from the terminal observation on time-outs
  (SB3 issue #633) and not on true terminations.
* **Any autoreset mode in.** ``env.metadata["autoreset_mode"]`` decides how rows are reset:

  - ``SAME_STEP``: nothing to do; the terminal observation comes from ``info["final_obs"]``
    (a dense (n, ...) array, or Gymnasium's object array of per-row observations).
  - ``NEXT_STEP``: a native NEXT_STEP env resets done rows on the *next* ``step`` call, ignoring
    their actions and paying reward 0. The adapter issues that reset at once, inside the same
    ``step_wait``, so SB3 never acts on it and never sees its reward:

    * every row done (the common case: a horizon shared by all customers, or one-step bandit
      episodes): one extra ``env.step`` with the same (valid, ignored) actions is the reset
      step; its rewards are dropped.
    * some rows done: calling ``env.step`` would also advance the other customers, so the
      adapter resets just those rows with ``env.reset(options={"reset_mask": done})``
      (Gymnasium's partial-reset API; the env must also cancel their pending autoreset, as
      ``SyncVectorEnv`` does). Envs declare it with ``metadata["supports_reset_mask"] = True``
      (Gymnasium's Sync/AsyncVectorEnv are recognised). Without it a partial done raises
      ``RuntimeError``: use the env's ``same_step`` mode instead.
  - ``DISABLED``: the same partial reset (or a full ``reset()`` when every row is done).

* **Cheap infos.** SB3 wants one dict per env every step. Rows that are not done share one
  read-only empty dict (4096 fresh dicts would cost ~0.2 ms per step); done rows get their own
  dict. Per-customer arrays from the env (revenue, costs, latent truth...) are not copied into
  them: read the batch from :attr:`BatchedVecEnv.step_info` instead.
* **Action masks.** :meth:`BatchedVecEnv.action_masks` returns ``info["action_mask"]`` for the
  current observations, (n, sum(nvec)) bool, for sb3-contrib's ``MaskablePPO``.
* **Flattened actions** (``flatten_actions=True``): a ``MultiDiscrete(nvec)`` env is offered to
  SB3 as ``Discrete(prod(nvec))`` (C order, last dimension fastest) for DQN; masks become joint
  masks (the product of the per-dimension masks).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

__all__ = [
    "BatchedVecEnv",
    "flatten_actions",
    "joint_action_mask",
    "unflatten_actions",
]


# ---- flattened MultiDiscrete <-> Discrete ------------------------------------------------------
def flatten_actions(actions: np.ndarray, nvec: Sequence[int]) -> np.ndarray:
    """Joint index (n,) int64 of per-dimension actions (n, len(nvec)), C order."""
    return np.ravel_multi_index(tuple(np.asarray(actions).T), tuple(nvec)).astype(np.int64)


def unflatten_actions(joint: np.ndarray, nvec: Sequence[int]) -> np.ndarray:
    """Per-dimension actions (n, len(nvec)) int64 of joint indices (n,); inverse of
    :func:`flatten_actions`."""
    return np.stack(np.unravel_index(np.asarray(joint, np.int64).reshape(-1), tuple(nvec)),
                    axis=1).astype(np.int64)


def joint_action_mask(mask: np.ndarray, nvec: Sequence[int]) -> np.ndarray:
    """Joint mask (n, prod(nvec)) from per-dimension masks concatenated (n, sum(nvec)).

    A joint action is allowed when every one of its components is allowed; the column order
    matches :func:`flatten_actions`.
    """
    mask = np.asarray(mask, bool)
    n = mask.shape[0]
    joint = np.ones((n, 1), bool)
    for part in np.split(mask, np.cumsum(nvec)[:-1], axis=1):
        joint = (joint[:, :, None] & part[:, None, :]).reshape(n, -1)
    return joint


class _ReadOnlyInfo(dict):
    """The info shared by every row that is not done: an empty dict that refuses writes, so a
    caller writing into it fails loudly instead of leaking into every customer's info."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("infos of rows that are not done are one shared read-only dict; "
                        "copy it (dict(info)) before writing, or read BatchedVecEnv.step_info")

    __setitem__ = __delitem__ = update = setdefault = pop = popitem = clear = _refuse  # type: ignore[assignment]


_NOT_DONE_INFO = _ReadOnlyInfo()


class BatchedVecEnv(VecEnv):
    """SB3 ``VecEnv`` view of a natively batched ``gymnasium.vector.VectorEnv`` (see module doc).

    Parameters
    ----------
    env
        The batched env; ``env.metadata["autoreset_mode"]`` must be an ``AutoresetMode``.
        Observations must batch into one array (Box, Discrete, MultiDiscrete, MultiBinary).
    flatten_actions
        Offer a ``MultiDiscrete(nvec)`` action space as ``Discrete(prod(nvec))`` (for DQN).
    partial_reset
        Whether ``env.reset(options={"reset_mask": m})`` resets only rows ``m``. ``None``: read
        ``env.metadata["supports_reset_mask"]`` (True for Gymnasium's Sync/AsyncVectorEnv).
    episode_stats
        Add SB3's ``info["episode"] = {"r", "l", "t"}`` to done rows (so SB3 logs
        ``rollout/ep_rew_mean`` without a per-row ``VecMonitor`` loop).

    Attributes
    ----------
    vector_env
        The wrapped env.
    step_info
        The env's batched info dict of the last transition SB3 saw (arrays of length n).
    """

    def __init__(self, env: gymnasium.vector.VectorEnv, *, flatten_actions: bool = False,
                 partial_reset: bool | None = None, episode_stats: bool = True):
        mode = env.metadata.get("autoreset_mode")
        if not isinstance(mode, AutoresetMode):
            raise ValueError(
                f"env.metadata['autoreset_mode'] must be a gymnasium.vector.AutoresetMode, got "
                f"{mode!r}; declare it in the env (strings are not accepted)")
        if isinstance(env.single_observation_space, (spaces.Dict, spaces.Tuple)):
            raise NotImplementedError("BatchedVecEnv supports array observations only; "
                                      "flatten Dict/Tuple observations with a vector wrapper")
        self.vector_env = env
        self.autoreset_mode = mode
        if partial_reset is None:
            partial_reset = bool(env.metadata.get("supports_reset_mask", False)) or isinstance(
                env.unwrapped, (SyncVectorEnv, AsyncVectorEnv))
        self.partial_reset = partial_reset
        self.episode_stats = episode_stats

        action_space = env.single_action_space
        self.nvec: tuple[int, ...] | None = None
        self._action_start: np.ndarray | None = None
        if isinstance(action_space, spaces.MultiDiscrete):
            if action_space.nvec.ndim != 1:
                raise ValueError(f"only 1-D MultiDiscrete actions are supported, nvec "
                                 f"{action_space.nvec.tolist()}")
            self.nvec = tuple(int(k) for k in action_space.nvec)
            self._action_start = np.asarray(action_space.start, np.int64)
        self.flatten = flatten_actions
        if flatten_actions:
            if self.nvec is None:
                raise ValueError(f"flatten_actions needs a MultiDiscrete action space, got "
                                 f"{action_space}")
            action_space = spaces.Discrete(int(np.prod(self.nvec)))

        super().__init__(env.num_envs, env.single_observation_space, action_space)
        self.step_info: dict[str, Any] = {}
        self._mask: np.ndarray | None = None
        self._joint_mask: np.ndarray | None = None
        self._env_actions: np.ndarray | None = None
        self._ep_return = np.zeros(self.num_envs, np.float64)
        self._ep_length = np.zeros(self.num_envs, np.int64)
        self._t_start = time.time()

    # ---- core API -------------------------------------------------------------------------
    def reset(self) -> VecEnvObs:
        options = self._options[0] or None
        obs, info = self.vector_env.reset(seed=self._seeds[0], options=options)
        self._reset_seeds()  # seeds and options apply to one reset only, as in DummyVecEnv
        self._reset_options()
        self.step_info = info
        self._set_mask(info.get("action_mask"))
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        return np.array(obs)

    def step_async(self, actions: np.ndarray) -> None:
        actions = np.asarray(actions)
        if self.flatten:
            actions = unflatten_actions(actions, self.nvec) + self._action_start
        self._env_actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        obs, reward, terminated, truncated, info = self.vector_env.step(self._env_actions)
        # Copies: SB3 keeps the previous obs until the next step, and a native env may update
        # its arrays in place.
        obs = np.array(obs)
        reward = np.array(reward, dtype=np.float32)
        terminated = np.asarray(terminated, bool)
        truncated = np.asarray(truncated, bool)
        done = terminated | truncated
        self.step_info = info
        mask = info.get("action_mask")
        self._ep_return += reward
        self._ep_length += 1
        infos: list[dict[str, Any]] = [_NOT_DONE_INFO] * self.num_envs
        if done.any():
            rows = np.flatnonzero(done)
            terminal_obs = self._terminal_observations(obs, info, rows)
            obs, mask = self._reset_done_rows(obs, mask, done, rows)
            time_limit = (truncated & ~terminated)[rows].tolist()
            returns, lengths = self._ep_return[rows].tolist(), self._ep_length[rows].tolist()
            elapsed = round(time.time() - self._t_start, 6)
            for j, i in enumerate(rows.tolist()):
                row_info: dict[str, Any] = {"terminal_observation": terminal_obs[j],
                                            "TimeLimit.truncated": time_limit[j]}
                if self.episode_stats:
                    row_info["episode"] = {"r": returns[j], "l": lengths[j], "t": elapsed}
                infos[i] = row_info
            self._ep_return[rows] = 0.0
            self._ep_length[rows] = 0
        self._set_mask(mask)
        return obs, reward, done, infos

    def _terminal_observations(self, obs: np.ndarray, info: dict[str, Any],
                               rows: np.ndarray) -> np.ndarray:
        """Last observation of each done row, (len(rows), ...)."""
        if self.autoreset_mode != AutoresetMode.SAME_STEP:
            return obs[rows]  # NEXT_STEP / DISABLED: obs is still the terminal one
        if "final_obs" not in info:
            raise KeyError("a SAME_STEP env must put the last observation of done rows in "
                           "info['final_obs']")
        final = info["final_obs"]
        if final.dtype == object:  # Gymnasium's Sync/AsyncVectorEnv: one object per row
            return np.stack([np.asarray(final[i]) for i in rows])
        return np.array(final[rows])

    def _reset_done_rows(self, obs: np.ndarray, mask: np.ndarray | None, done: np.ndarray,
                         rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """First observations (and masks) of the next episode for done rows."""
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            return obs, mask
        env = self.vector_env
        if rows.size == self.num_envs and self.autoreset_mode == AutoresetMode.NEXT_STEP:
            # The env's own reset step; its actions are ignored and its zero rewards dropped.
            new_obs, _, term, trunc, info = env.step(self._env_actions)
            if np.any(term) or np.any(trunc):
                raise RuntimeError("the NEXT_STEP env did not reset its done rows on the "
                                   "following step; check metadata['autoreset_mode']")
            return np.array(new_obs), info.get("action_mask")
        if rows.size == self.num_envs:  # DISABLED, everyone done: a plain reset
            new_obs, info = env.reset()
            return np.array(new_obs), info.get("action_mask")
        if not self.partial_reset:
            raise RuntimeError(
                f"{rows.size} of {self.num_envs} rows are done, and a {self.autoreset_mode.name} "
                "env can only reset some rows through reset(options={'reset_mask': ...}), which "
                "this env does not declare (metadata['supports_reset_mask']). Create the env with "
                "autoreset_mode='same_step', or implement partial resets and pass "
                "partial_reset=True.")
        new_obs, info = env.reset(options={"reset_mask": done.copy()})
        obs[rows] = np.asarray(new_obs)[rows]
        new_mask = info.get("action_mask")
        if mask is not None and new_mask is not None:
            mask = np.array(mask)
            mask[rows] = np.asarray(new_mask)[rows]
        return obs, mask

    # ---- masks ----------------------------------------------------------------------------
    def _set_mask(self, mask: np.ndarray | None) -> None:
        self._mask = None if mask is None else np.asarray(mask, bool)
        self._joint_mask = None

    def action_masks(self) -> np.ndarray:
        """Masks of the current observations: (n, sum(nvec)) bool, or (n, prod(nvec)) joint
        masks when actions are flattened. ``True`` = allowed."""
        if self._mask is None:
            raise AttributeError("the env provides no info['action_mask'] (or reset() has not "
                                 "been called)")
        if not self.flatten:
            return self._mask
        if self._joint_mask is None:  # computed on demand: DQN never asks
            self._joint_mask = joint_action_mask(self._mask, self.nvec)
        return self._joint_mask

    # ---- attribute plumbing: the batched env is one object ---------------------------------
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The env's attribute, repeated once per index (all rows share one env object)."""
        n = len(list(self._get_indices(indices)))
        if attr_name == "action_masks":  # what sb3-contrib's is_masking_supported probes
            if self._mask is None:
                raise AttributeError("no action masks: the env sets no info['action_mask']")
            return [self.action_masks] * n
        return [getattr(self.vector_env, attr_name)] * n

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set the attribute once on the batched env (``indices`` cannot select rows)."""
        setattr(self.vector_env, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        """Call a method of the batched env once; the result is repeated once per index.

        ``"action_masks"`` is special: with ``indices=None`` it returns ``[masks]``, one
        (n, k) batch, not n rows. sb3-contrib's ``get_action_masks`` stacks this list, giving
        (1, n, k) in one copy instead of stacking n row views (~2 ms per step at n = 4096), and
        every sb3-contrib consumer reshapes masks to (n_envs, k).
        """
        if method_name == "action_masks":
            masks = self.action_masks()
            if indices is None:
                return [masks]
            return [masks[i] for i in self._get_indices(indices)]
        n = len(list(self._get_indices(indices)))
        return [getattr(self.vector_env, method_name)(*method_args, **method_kwargs)] * n

    def env_is_wrapped(self, wrapper_class: type[gymnasium.Wrapper],
                       indices: VecEnvIndices = None) -> list[bool]:
        # Rows are not separate gymnasium.Env objects, so no single-env wrapper can be around one.
        return [False] * len(list(self._get_indices(indices)))

    def close(self) -> None:
        self.vector_env.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None] * self.num_envs
