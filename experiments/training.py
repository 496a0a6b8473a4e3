"""Train (or just build) the configured agent on its own training population.

``train_agent(settings, seeds, scenario, tracker)`` returns a :class:`Trained`: a policy
factory for evaluation, what to save as the run's model, and the per-iteration metrics it sent
to the tracker (batched by the tracker).

* **baseline**: nothing to learn; the policy is built per population (the oracle reads each
  population's latent truth, so it is never saved as a model).
* **bandit**: online on ``train.customers`` customers for ``train.episodes`` × ``env.horizon``
  weeks: each week the learner (inside the constraints) acts on every customer, the env steps,
  the learner updates on (observation, executed action, profit, next observation) through its
  ``update_from_step`` (so its own ``reward`` param decides the reward: profit, or with
  ``lifetime_value_shaped`` profit + d·V(s') − V(s) on the latent residual value, which this loop
  reads from ``info["residual_value"]`` and passes in; ``d`` is the evaluation's weekly discount,
  given to the learner as ``value_discount``), else ``update`` with profit. Rows whose episode ended
  (opted out of everything) are not learned from on their reset step. Metrics per week:
  ``train/profit_per_customer``, ``train/contact_share``, ``train/offer_share``,
  ``train/mean_propensity``, ``train/episode``.
* **rl**: ``model.learn(train.timesteps, else agent.timesteps)`` on a ``BatchedVecEnv`` over the training population
  (SAME_STEP autoreset, as SB3 expects), rewarded by ``agent.training_objective``
  (``rapport.agents.objective``: lifetime value at the evaluation's discount with the residual value
  paid at the horizon, unless ``agent.objective=myopic``); SB3's own logs (``train/…``, ``rollout/…``,
  ``time/…``) become the per-iteration metrics, stepped by ``time/total_timesteps``. With
  ``agent.privileged_critic`` the critic also sees latent truth (``rapport.agents.privileged``: the
  env appends privileged columns, the model is an asymmetric actor-critic); the policy returned,
  its normalisation statistics and everything saved from them take the observable features only.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rapport.agents.protocol import Policy
from rapport.experiments import builders
from rapport.experiments.builders import PolicyFactory, Seeds
from rapport.experiments.config import RunConfig
from rapport.experiments.progress import bar
from rapport.experiments.tracking import Tracker


@dataclass
class Trained:
    """The result of :func:`train_agent`."""

    policy_factory: PolicyFactory
    """``env -> Policy`` used for evaluation (constraints included)."""
    core_policy: Policy | None = None
    """Policy to save (no constraints), for baselines and bandits; None when not saveable."""
    sb3_model: Any = None
    """Trained SB3 model to save (rl family)."""
    obs_normalization: dict[str, Any] | None = None
    """rl family: the observation statistics the model was trained behind (saved with it)."""
    history: list[dict[str, float]] = field(default_factory=list)
    """Per-iteration metrics, each with a ``step`` (customer-weeks seen)."""
    learning_curve_key: str | None = None
    """The metric to plot as the learning curve."""


def _frozen_factory(core: Policy, settings: RunConfig) -> PolicyFactory:
    def build(env: Any) -> Policy:
        return builders.wrap_constraints(core, builders.schema_of(env), settings.agent_constraints, env.num_envs)
    return build


Checkpoint = Callable[[int, PolicyFactory], bool]
"""``(customer_weeks_so_far, policy_factory) -> stop?``: called during RL training with the policy
as it stands (observation statistics frozen at that moment); returning True ends training."""


def train_agent(settings: RunConfig, seeds: Seeds, scenario: Any, tracker: Tracker, *,
                progress: bool = True, checkpoint: Checkpoint | None = None,
                checkpoint_every: int = 0) -> Trained:
    """Train the configured agent (see the module doc). RL only: every ``checkpoint_every``
    customer-weeks ``checkpoint`` gets the current policy and may stop training early (e.g.
    ``scripts/bench_time_to_quality.py``: train until the policy first beats mass marketing)."""
    agent = settings.agent
    if agent is None:
        raise ValueError("no agent configured: choose one with agent=<name>")
    if agent.family == "baseline":
        return _baseline(settings, scenario)
    if agent.family == "bandit":
        return _train_bandit(settings, seeds, scenario, tracker, progress)
    return _train_rl(settings, seeds, scenario, tracker, progress, checkpoint, checkpoint_every)


def _baseline(settings: RunConfig, scenario: Any) -> Trained:
    factory = builders.policy_factory(settings.agent, settings.agent_constraints)
    core = None
    if not builders.needs_latent_truth(settings.agent):
        core = builders.build_core_policy(settings.agent, builders.make_env(settings.env, customers=1, scenario=scenario))
    return Trained(factory, core_policy=core)


def _train_bandit(settings: RunConfig, seeds: Seeds, scenario: Any, tracker: Tracker, progress: bool) -> Trained:
    agent_cfg = _with_value_discount(settings.agent, settings.evaluation.weekly_discount)
    shaped = agent_cfg.params.get("reward") == "lifetime_value_shaped"
    env = builders.make_env(settings.env, customers=settings.train.customers, scenario=scenario,
                            value_discount=settings.evaluation.weekly_discount if shaped else None)
    schema = builders.schema_of(env)
    learner = builders.build_bandit(agent_cfg, schema, seed=seeds.agent)
    acting = builders.wrap_constraints(learner, schema, settings.agent_constraints, env.num_envs)
    # the learner's own reward (profit, or profit shaped by the residual value) when it defines one
    from_step = getattr(learner, "update_from_step", None)
    value = None
    rng = np.random.default_rng(seeds.agent)
    history: list[dict[str, float]] = []
    H, n = settings.env.horizon, env.num_envs
    step = 0
    with bar(settings.train.episodes * H, desc=f"train {settings.agent.name}", unit="week",
             enabled=progress) as pbar:
        for episode in range(settings.train.episodes):
            obs, info = env.reset(seed=seeds.train_env) if episode == 0 else env.reset()
            learnable = np.ones(n, bool)
            for _ in range(H):
                actions, propensities = acting.act(obs, rng, action_mask=info["action_mask"])
                if shaped:
                    value = info["residual_value"].copy()
                next_obs, profit, terminated, truncated, info = env.step(actions)
                rows = np.flatnonzero(learnable)
                if rows.size and from_step is not None and shaped:
                    # next-step autoreset: a done row's value is still its last state's
                    from_step(obs[rows], actions[rows], profit[rows], next_obs[rows],
                              value=value[rows], next_value=info["residual_value"][rows])
                elif rows.size and from_step is not None:
                    from_step(obs[rows], actions[rows], profit[rows], next_obs[rows])
                elif rows.size:
                    learner.update(obs[rows], actions[rows], profit[rows])
                learnable = ~(terminated | truncated)
                step += n
                point = {"train/profit_per_customer": float(np.mean(profit)),
                         "train/contact_share": float(np.mean(actions[:, 0] > 0)),
                         "train/offer_share": float(np.mean(actions[:, 1] > 0)),
                         "train/mean_propensity": float(np.mean(propensities)),
                         "train/episode": float(episode)}
                tracker.log_metrics(point, step=step)
                history.append({"step": float(step), **point})
                obs = next_obs
                pbar.update(1)
    core = learner.policy(explore=settings.agent.eval_mode == "explore") if hasattr(learner, "policy") else learner
    return Trained(_frozen_factory(core, settings), core_policy=core, history=history,
                   learning_curve_key="train/profit_per_customer")


def _with_value_discount(agent: Any, weekly_discount: float) -> Any:
    """The agent config with the evaluation's weekly discount as ``value_discount`` for a
    ``lifetime_value_shaped`` bandit reward (a contradicting one was refused when the config was
    validated: :meth:`RunConfig._check_bandit_value_discount`)."""
    if agent.params.get("reward") != "lifetime_value_shaped":
        return agent
    return dataclasses.replace(agent, params={**agent.params, "value_discount": weekly_discount})


def _train_rl(settings: RunConfig, seeds: Seeds, scenario: Any, tracker: Tracker, progress: bool,
              checkpoint: Checkpoint | None = None, checkpoint_every: int = 0) -> Trained:
    from stable_baselines3.common.callbacks import BaseCallback

    from rapport.agents.rl_policy import SB3Policy
    from rapport.agents.sb3_adapter import BatchedVecEnv

    gamma = settings.learner_discount()
    env = builders.make_training_env(settings.env, settings.agent, settings.evaluation.weekly_discount,
                                     customers=settings.train.customers, scenario=scenario,
                                     constraints=settings.agent_constraints)
    venv = BatchedVecEnv(env, flatten_actions=settings.agent.flatten_actions)
    venv.seed(seeds.train_env)
    normalize = None
    if settings.agent.normalize_obs or settings.agent.normalize_reward:
        from stable_baselines3.common.vec_env import VecNormalize

        # The return's discount for reward scaling is the learner's own.
        venv = normalize = VecNormalize(venv, norm_obs=settings.agent.normalize_obs,
                                        norm_reward=settings.agent.normalize_reward, gamma=gamma)
    agent = settings.agent
    n_observable = getattr(env, "n_observable", None) if agent.privileged_critic else None
    if agent.privileged_critic:
        if n_observable is None:
            raise ValueError("agent.privileged_critic: the training env carries no privileged columns "
                             "(builders.make_training_env adds them)")
        # the actor's width is injected here, not read from agent.params (AgentConfig refuses it
        # there); a shallow copy keeps the run's config as it was given
        agent = copy.copy(agent)
        agent.params = {**agent.params, "observable_features": int(n_observable)}
    model = builders.build_sb3(agent, venv, seed=seeds.agent, gamma=gamma)
    total = settings.timesteps
    history: list[dict[str, float]] = []
    recorder = getattr(model, "metrics", None)

    class Progress(BaseCallback):
        """Advances the bar and forwards each new SB3 log dump to the tracker."""

        def __init__(self, update: Callable[[int], Any]) -> None:
            super().__init__()
            self.update, self.sent = update, 0
            self.next_check = checkpoint_every if checkpoint is not None and checkpoint_every > 0 else None

        def _on_step(self) -> bool:
            self.update(self.training_env.num_envs)
            self._forward()
            if self.next_check is not None and self.num_timesteps >= self.next_check:
                self.next_check += checkpoint_every
                return not checkpoint(self.num_timesteps, _frozen_factory(snapshot(), settings))
            return True

        def _on_training_end(self) -> None:
            self._forward()

        def _forward(self) -> None:
            if recorder is None:
                return
            for dump in recorder.history[self.sent:]:
                step = int(dump.get("time/total_timesteps", self.num_timesteps))
                tracker.log_metrics(dump, step=step)
                history.append({"step": float(step), **dump})
            self.sent = len(recorder.history)

    nvec = tuple(int(k) for k in env.single_action_space.nvec) if settings.agent.flatten_actions else None

    def snapshot() -> SB3Policy:
        return SB3Policy(model, nvec=nvec, greedy=settings.agent.eval_mode == "greedy", obs_normalization=normalize)

    with bar(total, desc=f"train {settings.agent.name}", unit="cw", enabled=progress) as pbar:
        model.learn(total_timesteps=total, callback=Progress(pbar.update))
    # The statistics stop moving here: what evaluation and every export apply is this snapshot.
    core = snapshot()
    curve = "rollout/ep_rew_mean" if any("rollout/ep_rew_mean" in h for h in history) else None
    return Trained(_frozen_factory(core, settings), sb3_model=model, history=history, learning_curve_key=curve,
                   obs_normalization=core.obs_normalization)
