"""Small natively batched sanity environments with a known optimum.

They exist so that learning tests can say "this agent family learns" against a known answer
(the idea of SB3's ``identity_env.py``), and so that the SB3 adapter and the benchmarks have a
cheap world that is not the simulator. Each is a ``gymnasium.vector.VectorEnv`` over
``num_envs`` customers, pure numpy, one row per customer:

======================  ======================  ========================  =====================
env                     action                  optimum                   episode
======================  ======================  ========================  =====================
:class:`BestOfferEnv`   MultiDiscrete (ch, off) the segment's best pair   1 week (terminated)
:class:`FatigueEnv`     Discrete(2) contact?    contact every k* weeks    ``horizon`` (truncated)
:class:`ChurnEnv`       MultiDiscrete (ch, off) never contact             until churn or horizon
:class:`RetentionEnv`   Discrete(2) promote?    by objective: myopic      ``horizon`` (truncated)
                                                always, long-term never
:class:`SpendEnv`       Box [0, 1] $ per week   ``sqrt(a k) - k``         1 week (terminated)
======================  ======================  ========================  =====================

Common contract (shared with ``Rapport/Population-v0``):

* ``metadata["autoreset_mode"]`` is an :class:`~gymnasium.vector.AutoresetMode`; both
  ``NEXT_STEP`` (the step after a row is done resets it, reward 0, its action ignored) and
  ``SAME_STEP`` (done rows reset at once, last observation in ``info["final_obs"]``, a dense
  (num_envs, obs_dim) array, rows marked by ``info["_final_obs"]``) are implemented.
* Partial resets: ``reset(options={"reset_mask": mask})`` resets only the rows in ``mask`` (and
  cancels their pending NEXT_STEP autoreset), like Gymnasium's ``SyncVectorEnv``; declared by
  ``metadata["supports_reset_mask"] = True``.
* Randomness comes from one ``numpy.random.Generator`` created by ``reset(seed=...)``; a reset
  without a seed continues the same stream (never reseeds).
* ``info["action_mask"]``: bool (num_envs, sum(nvec)) per-dimension masks concatenated (or
  (num_envs, n) for ``Discrete``), for the observation returned alongside it.
* Actions outside the action space raise ``ValueError``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

_MODES = {"next_step": AutoresetMode.NEXT_STEP, "same_step": AutoresetMode.SAME_STEP}


def _as_mode(mode: str | AutoresetMode) -> AutoresetMode:
    resolved = _MODES.get(mode, mode) if isinstance(mode, str) else mode
    if resolved not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
        raise ValueError(f"autoreset_mode must be 'next_step' or 'same_step', got {mode!r}")
    return resolved


class SanityVectorEnv(VectorEnv):
    """Shared batched machinery: spaces, seeding, horizon, both autoreset modes, partial resets.

    Subclasses set the single spaces and implement four array functions over all rows:
    ``_reset_rows(rows)``, ``_transition(actions) -> (reward, terminated)``, ``_observe()`` and
    ``_action_mask()``. A transition may touch rows that are about to be reset (NEXT_STEP reset
    rows); ``_reset_rows`` must therefore overwrite every state field of the rows it resets.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": [],
                "supports_reset_mask": True}

    def __init__(self, num_envs: int, horizon: int, autoreset_mode: str | AutoresetMode,
                 single_observation_space: spaces.Space, single_action_space: spaces.Space,
                 render_mode: str | None = None):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1 week, got {horizon}")
        self.num_envs = int(num_envs)
        self.horizon = int(horizon)
        self.autoreset_mode = _as_mode(autoreset_mode)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.render_mode = render_mode
        self.single_observation_space = single_observation_space
        self.single_action_space = single_action_space
        self.observation_space = batch_space(single_observation_space, self.num_envs)
        self.action_space = batch_space(single_action_space, self.num_envs)
        self._rng: np.random.Generator | None = None
        self._week = np.zeros(self.num_envs, np.int32)  # weeks elapsed in the current episode
        self._pending_reset = np.zeros(self.num_envs, bool)  # NEXT_STEP: reset on next step
        self._started = False

    # ---- subclass hooks -------------------------------------------------------------------
    def _reset_rows(self, rows: np.ndarray) -> None:
        raise NotImplementedError

    def _transition(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _observe(self) -> np.ndarray:
        raise NotImplementedError

    def _residual_value(self) -> np.ndarray | None:
        """Optional: each row's latent value from now on (``info["residual_value"]``)."""
        return None

    def _action_mask(self) -> np.ndarray | None:
        return None

    # ---- Gymnasium API --------------------------------------------------------------------
    @property
    def rng(self) -> np.random.Generator:
        if self._rng is None:
            self._rng = np.random.default_rng()
        return self._rng

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._np_random = self.rng  # so VectorEnv.np_random is the stream we use
        mask = (options or {}).get("reset_mask")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ValueError(f"options['reset_mask'] must be a bool array of shape "
                                 f"({self.num_envs},), got {mask.dtype} {mask.shape}")
            if not self._started:
                raise RuntimeError("a partial reset needs a full reset() first")
            rows = np.flatnonzero(mask)
        else:
            rows = np.arange(self.num_envs)
        self._reset_rows(rows)
        self._week[rows] = 0
        self._pending_reset[rows] = False
        self._started = True
        return self._observe(), self._info()

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                          dict[str, Any]]:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = self._check_actions(actions)
        restart = np.flatnonzero(self._pending_reset)
        reward, terminated = self._transition(actions)
        self._week += 1
        truncated = (self._week >= self.horizon) & ~terminated
        if restart.size:  # NEXT_STEP reset step for rows done last step: action ignored
            self._reset_rows(restart)
            self._week[restart] = 0
            reward[restart] = 0.0
            terminated[restart] = truncated[restart] = False
        done = terminated | truncated
        obs = self._observe()
        info: dict[str, Any] = {}
        end_value = self._residual_value()
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            self._pending_reset = done
        elif done.any():
            info["final_obs"] = obs
            info["_final_obs"] = done
            if end_value is not None:
                info["final_residual_value"] = np.where(done, end_value, 0.0)
            rows = np.flatnonzero(done)
            self._reset_rows(rows)
            self._week[rows] = 0
            obs = self._observe()
        info.update(self._info())
        return obs, reward, terminated, truncated, info

    def _info(self) -> dict[str, Any]:
        mask, value = self._action_mask(), self._residual_value()
        info = {} if mask is None else {"action_mask": mask}
        if value is not None:
            info["residual_value"] = value
        return info

    def _check_actions(self, actions: Any) -> np.ndarray:
        space = self.single_action_space
        if isinstance(space, spaces.Box):
            actions = np.asarray(actions, dtype=np.float32).reshape(self.num_envs, *space.shape)
            if not (np.all(actions >= space.low) and np.all(actions <= space.high)):
                raise ValueError(f"actions must lie in [{space.low}, {space.high}]; clip them "
                                 f"(got min {actions.min()}, max {actions.max()})")
            return actions
        actions = np.asarray(actions)
        if not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions must be integers, got dtype {actions.dtype}")
        high = np.asarray(space.nvec if isinstance(space, spaces.MultiDiscrete) else space.n)
        expected = (self.num_envs, *np.shape(high))
        if actions.shape != expected:
            raise ValueError(f"actions must have shape {expected}, got {actions.shape}")
        if np.any(actions < 0) or np.any(actions >= high):
            raise ValueError(f"actions must be in [0, {high.tolist()}) per dimension")
        return actions


class BestOfferEnv(SanityVectorEnv):
    """One-week contextual bandit: each segment has a different best (channel, offer).

    * Observation: one-hot segment, float32 (n_segments,); segments drawn uniformly per episode.
    * Action: ``MultiDiscrete(nvec)`` = (channel, offer).
    * Reward: ``0.6 * [channel is the segment's best] + 0.4 * [offer is the segment's best]``
      (+ Gaussian noise of sd ``reward_noise``), except on the segment's *blocked* channel
      (the customer opted out), which pays -1. Optimum: 1.0 per customer-week.
    * Mask: ``info["action_mask"]`` (n, sum(nvec)) marks the blocked channel False.
    * Episode: one decision, then *terminated* (a bandit round has no future).
    """

    def __init__(self, num_envs: int = 256, n_segments: int = 4, nvec: tuple[int, int] = (3, 4),
                 reward_noise: float = 0.0, autoreset_mode: str | AutoresetMode = "next_step",
                 render_mode: str | None = None):
        if len(nvec) != 2 or nvec[0] < 2 or nvec[1] < 1:
            raise ValueError(f"nvec must be (channels >= 2, offers >= 1), got {nvec}")
        super().__init__(num_envs, 1, autoreset_mode,
                         spaces.Box(0.0, 1.0, (n_segments,), np.float32),
                         spaces.MultiDiscrete(list(nvec)), render_mode)
        self.n_segments = n_segments
        self.nvec = tuple(int(n) for n in nvec)
        self.reward_noise = float(reward_noise)
        seg = np.arange(n_segments)
        self.best_channel = seg % nvec[0]
        self.best_offer = (seg + 1) % nvec[1]
        self.blocked_channel = (self.best_channel + 1) % nvec[0]
        self.segment = np.zeros(num_envs, np.int64)

    def expected_reward(self, segment: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Noise-free reward, (n,), of ``actions`` (n, 2) for customers in ``segment`` (n,)."""
        channel, offer = actions[:, 0], actions[:, 1]
        value = (0.6 * (channel == self.best_channel[segment])
                 + 0.4 * (offer == self.best_offer[segment]))
        return np.where(channel == self.blocked_channel[segment], -1.0, value).astype(np.float32)

    def optimal_actions(self, segment: np.ndarray) -> np.ndarray:
        """Best (channel, offer), (n, 2) int64, for customers in ``segment``."""
        return np.stack([self.best_channel[segment], self.best_offer[segment]], axis=1)

    def _reset_rows(self, rows: np.ndarray) -> None:
        self.segment[rows] = self.rng.integers(0, self.n_segments, rows.size)

    def _transition(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        reward = self.expected_reward(self.segment, actions)
        if self.reward_noise > 0:
            reward += self.rng.normal(0.0, self.reward_noise, self.num_envs).astype(np.float32)
        return reward, np.ones(self.num_envs, bool)

    def _observe(self) -> np.ndarray:
        obs = np.zeros((self.num_envs, self.n_segments), np.float32)
        obs[np.arange(self.num_envs), self.segment] = 1.0
        return obs

    def _action_mask(self) -> np.ndarray:
        n_ch = self.nvec[0]
        mask = np.ones((self.num_envs, n_ch + self.nvec[1]), bool)
        mask[np.arange(self.num_envs), self.blocked_channel[self.segment]] = False
        return mask


class FatigueEnv(SanityVectorEnv):
    """Contact fatigue only: the best policy contacts every k* weeks.

    * State: fatigue stock ``f`` per customer; ``f' = decay * f + contact``.
    * Action: ``Discrete(2)``, 1 = contact this week.
    * Reward: a contact earns ``value * exp(-sensitivity * f) - cost`` (fatigue before the contact);
      no contact earns 0.
    * Observation (float32, 3): ``f``, weeks since the last contact / 10 (capped at 1),
      week / horizon.
    * Optimum: with cadence k the fatigue just before each contact settles at
      ``d^(k-1) / (1 - d^k)`` (d = decay), so the average reward per week is
      :meth:`cadence_reward_per_week`; the defaults give k* = 3, 8 % ahead of k = 4.
    * Starting state: ``f ~ U(0, initial_fatigue_max)``. Episode: *truncated* at ``horizon``.
    """

    def __init__(self, num_envs: int = 256, horizon: int = 52, value: float = 1.0,
                 sensitivity: float = 1.0, decay: float = 0.5, cost: float = 0.2,
                 initial_fatigue_max: float = 1.0,
                 autoreset_mode: str | AutoresetMode = "next_step", render_mode: str | None = None):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        super().__init__(num_envs, horizon, autoreset_mode,
                         spaces.Box(0.0, np.inf, (3,), np.float32), spaces.Discrete(2),
                         render_mode)
        self.value, self.sensitivity, self.decay, self.cost = value, sensitivity, decay, cost
        self.initial_fatigue_max = initial_fatigue_max
        self.fatigue = np.zeros(num_envs, np.float32)
        self.weeks_since_contact = np.zeros(num_envs, np.int32)

    def cadence_reward_per_week(self, k: int | np.ndarray) -> np.ndarray:
        """Steady-state average reward per week of contacting every ``k`` weeks (k >= 1)."""
        k = np.asarray(k, np.float64)
        # After a contact f = d f + 1, then k - 1 quiet weeks: f <- d^k f + d^(k-1).
        fatigue_before = self.decay ** (k - 1) / (1.0 - self.decay ** k)
        return (self.value * np.exp(-self.sensitivity * fatigue_before) - self.cost) / k

    def optimal_cadence(self, max_k: int = 52) -> int:
        """The k in 1..max_k with the best steady-state reward per week."""
        ks = np.arange(1, max_k + 1)
        return int(ks[np.argmax(self.cadence_reward_per_week(ks))])

    def _reset_rows(self, rows: np.ndarray) -> None:
        self.fatigue[rows] = self.rng.uniform(0.0, self.initial_fatigue_max, rows.size)
        self.weeks_since_contact[rows] = 10

    def _transition(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        contact = actions.astype(bool)
        reward = np.where(contact, self.value * np.exp(-self.sensitivity * self.fatigue)
                          - self.cost, 0.0).astype(np.float32)
        self.fatigue *= self.decay
        self.fatigue += contact
        self.weeks_since_contact = np.where(contact, 0, self.weeks_since_contact + 1)
        return reward, np.zeros(self.num_envs, bool)

    def _observe(self) -> np.ndarray:
        return np.stack([self.fatigue,
                         np.minimum(self.weeks_since_contact, 10) / 10.0,
                         self._week / self.horizon], axis=1).astype(np.float32)

    def _action_mask(self) -> np.ndarray:
        return np.ones((self.num_envs, 2), bool)


class ChurnEnv(SanityVectorEnv):
    """Churn-prone customers: any contact raises churn, so "never contact" is optimal.

    * Action: ``MultiDiscrete([3, 2])`` = (channel: 0 none, 1 email, 2 sms; offer: 0 none,
      1 discount). The offer only matters with a contact.
    * Each week a customer first churns with probability ``base_churn`` (+ ``contact_churn`` if
      contacted); a churned customer unsubscribes (observable, unreachable: *terminated*) and
      buys nothing. Survivors pay ``base_value`` plus the contact's uplift minus its cost.
    * Contacting is tempting (survivors pay more) but dominated in expectation every week:
      ``(1 - h - contact_churn) * (1 + uplift) - cost < (1 - h) * 1`` with the defaults, and
      it also shortens the customer's life. Optimal return: ``sum_t (1 - base_churn)^(t+1)``.
    * Observation (float32, 3): week / horizon, contacted last week, sms opt-in.
    * Mask: sms (channel 2) is masked for customers without sms opt-in (half of them).
    * Episode: until churn (*terminated*) or ``horizon`` weeks (*truncated*).
    """

    UPLIFT = np.array([0.0, 0.5, 0.7], np.float32)  # revenue uplift by channel, if surviving
    CHANNEL_COST = np.array([0.0, 0.05, 0.1], np.float32)
    OFFER_UPLIFT, OFFER_COST = 0.3, 0.2

    def __init__(self, num_envs: int = 256, horizon: int = 12, base_value: float = 1.0,
                 base_churn: float = 0.02, contact_churn: float = 0.4,
                 autoreset_mode: str | AutoresetMode = "next_step", render_mode: str | None = None):
        super().__init__(num_envs, horizon, autoreset_mode,
                         spaces.Box(0.0, 1.0, (3,), np.float32), spaces.MultiDiscrete([3, 2]),
                         render_mode)
        self.base_value, self.base_churn, self.contact_churn = base_value, base_churn, contact_churn
        self.contacted = np.zeros(num_envs, bool)
        self.optin_sms = np.zeros(num_envs, bool)

    def optimal_return(self) -> float:
        """Expected undiscounted episode return of "never contact"."""
        survive = (1.0 - self.base_churn) ** np.arange(1, self.horizon + 1)
        return float(self.base_value * survive.sum())

    def _reset_rows(self, rows: np.ndarray) -> None:
        self.contacted[rows] = False
        self.optin_sms[rows] = self.rng.random(rows.size) < 0.5

    def _transition(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        channel, offer = actions[:, 0], actions[:, 1]
        contact = channel > 0
        with_offer = contact & (offer == 1)
        hazard = self.base_churn + self.contact_churn * contact
        churned = self.rng.random(self.num_envs) < hazard
        gross = self.base_value + self.UPLIFT[channel] + self.OFFER_UPLIFT * with_offer
        cost = self.CHANNEL_COST[channel] + self.OFFER_COST * with_offer
        reward = np.where(churned, 0.0, gross) - cost
        self.contacted = contact
        return reward.astype(np.float32), churned

    def _observe(self) -> np.ndarray:
        return np.stack([self._week / self.horizon, self.contacted, self.optin_sms],
                        axis=1).astype(np.float32)

    def _action_mask(self) -> np.ndarray:
        mask = np.ones((self.num_envs, 5), bool)
        mask[:, 2] = self.optin_sms
        return mask


class RetentionEnv(SanityVectorEnv):
    """A promotion that pays now and may lose the customer: myopia provably loses here.

    * Each live customer pays ``base_value`` a week. Action ``Discrete(2)``: 1 = promote, which
      adds ``bonus`` to this week's payment and then loses the customer (latent death, not an
      episode end: a marketer cannot see it) with probability ``kill``.
    * ``info["residual_value"]`` (latent, as ``Rapport/Population-v0`` with ``value_discount``):
      a live customer's value from next week on, ``base_value * d / (1 - d)``; 0 when dead.
    * Optimum by objective (:meth:`optimal_promotion`, a dynamic programme over weeks): promote
      in week t iff ``bonus > kill * W_{t+1}``, the value the customer still carries. With the
      defaults (H = 4, bonus 2, kill 0.25, d = 0.95):

      - profit within the horizon (no terminal value, any discount ≤ 1): ``W_{t+1}`` is at most
        6.94 (the remaining weeks' payments and bonuses), ``0.25 * 6.94 < 2``: *always promote*;
      - lifetime value (discount d, residual value paid at the horizon): ``W_{t+1}`` is the
        perpetuity ``d/(1-d) = 19``, ``0.25 * 19 > 2``: *never promote*.

      :meth:`lifetime_value` gives a promotion schedule's exact expected lifetime value.
    * Observation (float32, 1): week / horizon. Episode: *truncated* at ``horizon``.
    """

    def __init__(self, num_envs: int = 256, horizon: int = 4, base_value: float = 1.0,
                 bonus: float = 2.0, kill: float = 0.25, discount: float = 0.95,
                 autoreset_mode: str | AutoresetMode = "next_step", render_mode: str | None = None):
        if not 0.0 < discount < 1.0:
            raise ValueError(f"discount must be in (0, 1), got {discount}")
        if not 0.0 <= kill <= 1.0:
            raise ValueError(f"kill must be in [0, 1], got {kill}")
        super().__init__(num_envs, horizon, autoreset_mode,
                         spaces.Box(0.0, 1.0, (1,), np.float32), spaces.Discrete(2), render_mode)
        self.base_value, self.bonus, self.kill = base_value, bonus, kill
        self.value_discount = float(discount)
        self.alive = np.ones(num_envs, bool)

    def perpetuity(self) -> float:
        """A live customer's value from next week on."""
        d = self.value_discount
        return self.base_value * d / (1.0 - d)

    def optimal_promotion(self, long_term: bool, gamma: float = 1.0) -> np.ndarray:
        """Bool (horizon,): the optimal promote decision per week, for the lifetime-value objective
        (``long_term``: the env's discount, residual value at the horizon) or for profit within
        the horizon discounted by ``gamma`` (no terminal value)."""
        g = self.value_discount if long_term else gamma
        # w: a live customer's value at the start of week t + 1 (past the horizon: b / (1 - d))
        w = self.base_value / (1.0 - self.value_discount) if long_term else 0.0
        promote = np.zeros(self.horizon, bool)
        for t in reversed(range(self.horizon)):
            promote[t] = self.bonus > self.kill * g * w
            w = self.base_value + self.bonus * promote[t] + g * (1.0 - self.kill * promote[t]) * w
        return promote

    def lifetime_value(self, promote_weeks: set[int]) -> float:
        """Exact expected ``sum_t d^(t+1) r_t + d^H * residual`` of promoting in ``promote_weeks``."""
        d, alive, total = self.value_discount, 1.0, 0.0
        for t in range(self.horizon):
            promote = t in promote_weeks
            total += d ** (t + 1) * alive * (self.base_value + self.bonus * promote)
            alive *= 1.0 - self.kill * promote
        return total + d ** self.horizon * alive * self.perpetuity()

    def _reset_rows(self, rows: np.ndarray) -> None:
        self.alive[rows] = True

    def _transition(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        promote = actions.astype(bool)
        reward = np.where(self.alive, self.base_value + self.bonus * promote, 0.0)
        self.alive &= ~(promote & (self.rng.random(self.num_envs) < self.kill))
        return reward.astype(np.float32), np.zeros(self.num_envs, bool)

    def _residual_value(self) -> np.ndarray:
        return np.where(self.alive, self.perpetuity(), 0.0)

    def _observe(self) -> np.ndarray:
        return (self._week / self.horizon).astype(np.float32)[:, None]

    def _action_mask(self) -> np.ndarray:
        return np.ones((self.num_envs, 2), bool)


class SpendEnv(SanityVectorEnv):
    """Continuous per-person paid-media spend, one week: the variant for SAC.

    The population env offers a few discrete spend levels; this env makes the same decision
    continuous so that continuous-action learners have a known answer.

    * Action: ``Box(0, 1, (1,))`` = paid-media spend in $ per person this week.
    * Reward: ``a_s * x / (x + half_saturation) - x`` (a Hill response with exponent 1, minus the
      spend), ``a_s`` the segment's response ceiling, + Gaussian noise of sd ``reward_noise``.
    * Optimum: ``x* = clip(sqrt(a_s * k) - k, 0, 1)`` with k the half-saturation spend.
    * Observation: one-hot segment (4). Episode: one decision, then *terminated*.
    """

    def __init__(self, num_envs: int = 256,
                 ceilings: tuple[float, ...] = (0.25, 0.6, 1.25, 2.5),
                 half_saturation: float = 0.2, reward_noise: float = 0.0,
                 autoreset_mode: str | AutoresetMode = "next_step", render_mode: str | None = None):
        n_seg = len(ceilings)
        super().__init__(num_envs, 1, autoreset_mode,
                         spaces.Box(0.0, 1.0, (n_seg,), np.float32),
                         spaces.Box(0.0, 1.0, (1,), np.float32), render_mode)
        self.ceilings = np.asarray(ceilings, np.float64)
        self.half_saturation = float(half_saturation)
        self.reward_noise = float(reward_noise)
        self.segment = np.zeros(num_envs, np.int64)

    def expected_profit(self, segment: np.ndarray, spend: np.ndarray) -> np.ndarray:
        """Noise-free profit, (n,), of spending ``spend`` (n,) $ on customers in ``segment``."""
        a, k = self.ceilings[segment], self.half_saturation
        return a * spend / (spend + k) - spend

    def optimal_spend(self, segment: np.ndarray) -> np.ndarray:
        """Profit-maximising spend, (n,), for customers in ``segment``."""
        k = self.half_saturation
        return np.clip(np.sqrt(self.ceilings[segment] * k) - k, 0.0, 1.0)

    def _reset_rows(self, rows: np.ndarray) -> None:
        self.segment[rows] = self.rng.integers(0, len(self.ceilings), rows.size)

    def _transition(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        reward = self.expected_profit(self.segment, actions[:, 0].astype(np.float64))
        if self.reward_noise > 0:
            reward = reward + self.rng.normal(0.0, self.reward_noise, self.num_envs)
        return reward.astype(np.float32), np.ones(self.num_envs, bool)

    def _observe(self) -> np.ndarray:
        obs = np.zeros((self.num_envs, len(self.ceilings)), np.float32)
        obs[np.arange(self.num_envs), self.segment] = 1.0
        return obs
