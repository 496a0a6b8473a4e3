"""What a learner optimises: lifetime value in the evaluation's currency, or a named myopic contrast.

Evaluation judges a policy by ``kpi/lifetime_value_per_customer``: profit of week t discounted
by ``d ** (t + 1)`` plus, at the customer's last simulated week T, the residual value
``d ** (T + 1) * V_T`` (expected discounted profit without further marketing, from latent
truth), with ``d`` the weekly discount of ``evaluation.annual_discount_rate``. A learner with
discount ``gamma = d`` and rewards

    r_t = profit_t                      for t < T
    r_T = profit_T + V_T                (the terminal value; the episode *terminates* here)

has return ``G_0 = sum_t d**t r_t = LTV / d``: the same ranking of policies as the evaluation,
customer by customer. Bootstrapping from a learned critic at the horizon would replace the
exact ``V_T`` by an estimate (and the critic never sees the week after the horizon), so the
horizon becomes a termination with the value paid out instead.

Objectives (:data:`OBJECTIVES`):

* ``lifetime_value``: the rewards above; the learner's discount must be ``d``.
* ``lifetime_value_shaped``: the same objective with potential-based shaping on the latent
  residual value ``Phi_t`` (Ng, Harada & Russell 1999): ``r'_t = profit_t + Phi_{t+1} -
  Phi_t / d`` with ``Phi_{T+1} = V_T``. The discounted sum telescopes to ``G_0 - Phi_0 / d``,
  and ``Phi_0`` does not depend on the policy, so every policy's ranking is unchanged; but a
  contact that kills a customer (or an opt-out that ends their episode) is charged in the week
  it happens instead of as a year of missing purchases. This uses latent truth, which a
  simulator allows and production does not: it is a training signal only; the actor still sees
  observables only.
* ``myopic``: profit only, no terminal value, the learner's own discount (PPO's old default,
  0.95 a week, puts 7 % weight on a week a year ahead): this year's profit, the named contrast.

The env must put ``info["residual_value"]`` (and, with same-step autoreset,
``info["final_residual_value"]``) in every step's info, as ``Rapport/Population-v0`` does when
built with ``value_discount=d``; agents never import envs, so the wrapper only reads info keys.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper

__all__ = ["OBJECTIVES", "LifetimeValueObjective", "discount_for", "uses_terminal_value"]

OBJECTIVES = ("lifetime_value", "lifetime_value_shaped", "myopic")


def uses_terminal_value(objective: str) -> bool:
    """Whether ``objective`` needs the env's residual value (and the evaluation's discount)."""
    check_objective(objective)
    return objective != "myopic"


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    return objective


def discount_for(objective: str, weekly_discount: float, own_gamma: float | None) -> float:
    """The learner's discount: the evaluation's weekly discount for the lifetime-value objectives
    (an explicit different ``own_gamma`` is an error: it would optimise something the evaluation
    does not measure), the learner's own ``gamma`` (default 0.95) for ``myopic``."""
    if not uses_terminal_value(objective):
        return 0.95 if own_gamma is None else float(own_gamma)
    if own_gamma is not None and abs(float(own_gamma) - weekly_discount) > 1e-9:
        raise ValueError(
            f"gamma={own_gamma!r} contradicts objective={objective!r}: that objective trains with "
            f"the evaluation's weekly discount {weekly_discount:.6f} (from "
            "evaluation.annual_discount_rate); remove gamma from the agent's params, or choose "
            "objective='myopic' to train with your own discount")
    return float(weekly_discount)


class LifetimeValueObjective(VectorWrapper):
    """Rewards of a lifetime-value objective over a batched env with same-step autoreset.

    Parameters
    ----------
    env
        A ``VectorEnv`` whose info carries ``residual_value`` (see module doc) and whose
        ``metadata["autoreset_mode"]`` is ``SAME_STEP`` (done rows restart in the same step).
    discount
        The weekly discount the residual value was computed with and the learner uses.
    shaping
        Potential-based shaping on the residual value (``lifetime_value_shaped``).

    Horizon time-outs become terminations (the terminal value replaces bootstrapping); the raw
    profit stays available as ``info["profit"]``.
    """

    def __init__(self, env: VectorEnv, discount: float, *, shaping: bool = False):
        super().__init__(env)
        if env.metadata.get("autoreset_mode") != AutoresetMode.SAME_STEP:
            raise ValueError("LifetimeValueObjective needs an env with autoreset_mode='same_step' "
                             f"(done rows restart in the step), got {env.metadata.get('autoreset_mode')!r}")
        if not 0.0 < float(discount) <= 1.0:
            raise ValueError(f"discount must be in (0, 1], got {discount!r}")
        own = getattr(env, "value_discount", None)
        if own is not None and abs(float(own) - float(discount)) > 1e-12:
            raise ValueError(f"the env computes residual values at discount {own}, the objective "
                             f"uses {discount}: build the env with value_discount={discount}")
        self.discount = float(discount)
        self.shaping = bool(shaping)
        self._phi: np.ndarray | None = None

    @staticmethod
    def _value(info: dict[str, Any]) -> np.ndarray:
        if "residual_value" not in info:
            raise KeyError("info has no 'residual_value': build the env with value_discount=<the "
                           "weekly discount> (Rapport/Population-v0) so that the lifetime-value "
                           "objective can pay the terminal value")
        return np.asarray(info["residual_value"], np.float64)

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._phi = self._value(info).copy()
        return obs, info

    def step(self, actions: Any):
        if self._phi is None:
            raise RuntimeError("call reset() before step()")
        obs, profit, terminated, truncated, info = self.env.step(actions)
        value = self._value(info)
        done = np.asarray(terminated, bool) | np.asarray(truncated, bool)
        end_value = value
        if done.any() and "final_residual_value" in info:
            end_value = np.where(done, np.asarray(info["final_residual_value"], np.float64), value)
        profit = np.asarray(profit, np.float64)
        if self.shaping:
            reward = profit + end_value - self._phi / self.discount
        else:
            reward = profit + np.where(done, end_value, 0.0)
        self._phi = value.copy()  # the state the next action acts on (reset rows: the new one)
        info = dict(info)
        info["profit"] = profit
        return obs, reward.astype(np.float32), done, np.zeros_like(done), info
