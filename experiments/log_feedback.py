"""``rapport-log``: run any policy in any scenario and write its logged feedback as Parquet.

    rapport-log agent=rfm env.customers=20000 env.horizon=26 log.epsilon=0.2 log.output=rfm.parquet
    rapport-log agent=linucb debug=fast tracking=none      # a bandit: trained first, then logged

The log is what off-policy evaluation consumes (:class:`rapport.agents.ope.LoggedFeedback`): one row per
customer-week of each customer's first episode (a customer who opts out of every channel stops
being logged, as their episode ends), with the context, the action, its propensity and the
week's profit. Learners are trained first, exactly as ``rapport-train`` trains them (their own
training population and seeds), and the frozen policy is logged (``agent.eval_mode=explore``
keeps its exploration and logs its propensities). ``log.epsilon`` > 0 wraps the policy in :class:`rapport.agents.ope.ExplorationMixture`
(uniform exploration over the allowed actions) so that its logs can evaluate other policies.

Importable: :func:`collect_feedback` (any env and policy objects) and :func:`run` (a config).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from rapport.agents.ope import ExplorationMixture, LoggedFeedback, joint_distribution
from rapport.agents.protocol import Policy
from rapport.experiments.builders import (
    check_agent,
    derive_seeds,
    make_env,
    resolve_scenario,
    schema_of,
)
from rapport.experiments.config import CONFIG_PATH, RunConfig, to_settings
from rapport.experiments.errors import (
    check_writable,
    marks_failed_output,
    run_hydra_app,
    staged_file,
    user_input,
)
from rapport.experiments.progress import progress_enabled


def collect_feedback(env: Any, policy: Policy, *, seed: int, rng: np.random.Generator, weeks: int | None = None,
                     use_action_mask: bool = True, store_action_mask: bool = True,
                     store_action_dist: bool = False, metadata: dict[str, Any] | None = None) -> LoggedFeedback:
    """Run ``policy`` on ``env`` (a ``PopulationEnv``) from ``reset(seed)`` and log every decision.

    Parameters
    ----------
    env : population env; ``weeks`` (default its horizon) must not exceed its horizon
    policy : the logging policy; its propensities are logged
    seed : population seed (same seed, same customers and noise)
    rng : the policy's generator
    use_action_mask : give the policy the env's action mask (and log it if ``store_action_mask``)
    store_action_dist : also log the policy's full joint distribution (exact for deterministic
        policies and policies with ``action_distribution``)
    """
    weeks = env.horizon if weeks is None else int(weeks)
    if not 1 <= weeks <= env.horizon:
        raise ValueError(f"weeks must be in 1..{env.horizon} (the env's horizon), got {weeks}")
    nvec = tuple(int(k) for k in env.single_action_space.nvec)
    obs, info = env.reset(seed=seed)
    active = np.ones(env.num_envs, bool)
    customer_ids = np.array(env.sim.state.customer_id, np.int64)  # global ids (shards keep theirs)
    parts: list[LoggedFeedback] = []
    for t in range(weeks):
        mask = info["action_mask"] if use_action_mask else None
        actions, prop = policy.act(obs, rng, action_mask=mask)
        dist = None
        if store_action_dist:
            try:
                dist = joint_distribution(policy, obs, nvec, rng, action_mask=mask).toarray()
            except TypeError as err:
                raise ValueError(f"log.store_action_dist needs the policy's exact distribution: {err}. "
                                 "Set log.store_action_dist=false (propensities are still logged)") from err
        next_obs, reward, terminated, _, info = env.step(actions)
        rows = np.flatnonzero(active)
        if rows.size:
            parts.append(LoggedFeedback(
                tuple(env.feature_names), nvec, customer_ids[rows], np.full(rows.size, t), obs[rows],
                np.asarray(actions)[rows], np.asarray(prop)[rows], np.asarray(reward, np.float64)[rows],
                action_dist=None if dist is None else dist[rows],
                action_mask=None if (mask is None or not store_action_mask) else mask[rows]))
        active &= ~np.asarray(terminated, bool)
        obs = next_obs
    logged = LoggedFeedback.concat(parts)
    meta = {"seed": int(seed), "weeks": weeks, "customers": int(env.num_envs), **(metadata or {})}
    return LoggedFeedback(logged.feature_names, logged.nvec, logged.customer_id, logged.week, logged.context,
                          logged.actions, logged.propensity, logged.reward, episode=logged.episode,
                          action_dist=logged.action_dist, action_mask=logged.action_mask, metadata=meta)


# ---------------------------------------------------------------------------------- config
@dataclass
class LogSettings:
    """What ``rapport-log`` logs and where."""

    output: str = "feedback.parquet"
    """Parquet file written (relative to the working directory)."""
    weeks: int | None = None
    """Weeks logged; ``None``: ``env.horizon``."""
    population_seed: int | None = None
    """Seed of the logged population (same seed, same customers and noise); ``None``: the run's
    first evaluation seed, spawned from ``seed``."""
    epsilon: float = 0.0
    """Uniform exploration mixed into the policy (``rapport.agents.ope.ExplorationMixture``)."""
    use_action_mask: bool = True
    """Give the policy the env's action mask (opted-out channels off), and log it."""
    store_action_dist: bool = False
    """Also store the logging policy's full joint action distribution (K columns per row)."""

    def __post_init__(self) -> None:
        if not self.output:
            raise ValueError("log.output must be a file path")
        if self.weeks is not None and (isinstance(self.weeks, bool) or self.weeks < 1):
            raise ValueError(f"log.weeks must be an integer >= 1 or null, got {self.weeks!r}")
        if self.population_seed is not None and (isinstance(self.population_seed, bool) or self.population_seed < 0):
            raise ValueError(f"log.population_seed must be an integer >= 0 or null, got {self.population_seed!r}")
        if not (isinstance(self.epsilon, int | float) and math.isfinite(self.epsilon) and 0 <= self.epsilon <= 1):
            raise ValueError(f"log.epsilon must be a number in [0, 1], got {self.epsilon!r}")


@dataclass
class LogRunConfig(RunConfig):
    """Root config of ``rapport-log`` (``conf/log.yaml``): the shared run config (env, agent,
    constraints, train, tracking; learners are trained as ``rapport-train`` trains them) plus
    ``log``."""

    log: LogSettings = field(default_factory=LogSettings)


def to_log_config(cfg: DictConfig | LogRunConfig) -> LogRunConfig:
    """Validated config objects from a composed config (errors name the key)."""
    settings = to_settings(cfg, LogRunConfig)
    with user_input():
        if settings.agent is None:
            raise ValueError("agent is not set: choose the logging policy with agent=<name> (files in conf/agent/)")
        if settings.log.weeks is not None and settings.log.weeks > settings.env.horizon:
            raise ValueError(f"log.weeks={settings.log.weeks} exceeds env.horizon={settings.env.horizon}; "
                             f"valid: 1..{settings.env.horizon} or null")
        check_writable("log.output", settings.log.output)
    return settings  # type: ignore[return-value]


def logging_policy_factory(settings: RunConfig, scenario: Any, seeds: Any, tracker: Any, *, epsilon: float = 0.0,
                           progress: bool = False) -> Callable[[Any], Policy]:
    """``env -> Policy`` for the configured agent (trained first if it learns), with exploration."""
    from rapport.experiments.training import train_agent

    factory = train_agent(settings, seeds, scenario, tracker, progress=progress).policy_factory
    if epsilon <= 0:
        return factory

    def build(env: Any) -> Policy:
        return ExplorationMixture(factory(env), schema_of(env), epsilon=epsilon)

    return build


def run(cfg: DictConfig | LogRunConfig) -> dict[str, Any]:
    """Log one policy's feedback to Parquet (and MLflow); returns the path, metrics and the log."""
    from rapport.experiments.tracking import flatten_params, start_run

    settings = to_log_config(cfg)
    with user_input():
        scenario = resolve_scenario(settings.env)
        check_agent(settings.agent, settings.env)
    seeds = derive_seeds(settings.seed, 1, settings.evaluation.seed)
    population_seed = settings.log.population_seed
    population_seed = seeds.evaluation[0] if population_seed is None else population_seed
    progress = progress_enabled(settings.progress)
    params = {**flatten_params(OmegaConf.to_container(OmegaConf.structured(settings))), **seeds.as_params(),
              "log.population_seed_used": population_seed}
    tags = {"rapport.command": "log", "rapport.agent": settings.agent.name, "rapport.family": settings.agent.family}
    # the Parquet file appears only when the run succeeded: a failed run leaves no log that looks complete
    with start_run(settings.tracking, run_name=settings.tracking.run_name or f"log-{settings.agent.name}-seed{settings.seed}",
                   params=params, tags=tags) as tracker, staged_file(settings.log.output) as staged:
        factory = logging_policy_factory(settings, scenario, seeds, tracker, epsilon=settings.log.epsilon,
                                         progress=progress)
        env = make_env(settings.env, scenario=scenario)
        meta = {"policy": settings.agent.name, "family": settings.agent.family, "scenario": scenario.name,
                "scenario_version": scenario.version, "epsilon": settings.log.epsilon}
        logged = collect_feedback(env, factory(env), seed=population_seed, rng=np.random.default_rng(seeds.policy),
                                  weeks=settings.log.weeks, use_action_mask=settings.log.use_action_mask,
                                  store_action_mask=settings.log.use_action_mask,
                                  store_action_dist=settings.log.store_action_dist, metadata=meta)
        logged.write_parquet(staged)
        path = Path(settings.log.output)
        metrics = {"log/rows": float(logged.n), "log/customers": float(np.unique(logged.customer_id).size),
                   "log/reward_mean": float(logged.reward.mean()),
                   "log/min_propensity": float(logged.propensity.min()),
                   "log/contact_share": float(np.mean(logged.actions[:, 0] > 0))}
        tracker.log_metrics(metrics)
        tracker.log_artifact(staged, "feedback")
    print(f"[rapport] wrote {logged.n:,} decisions of {metrics['log/customers']:.0f} customers "
          f"({settings.agent.name}, epsilon {settings.log.epsilon}) to {path}")
    return {"path": str(path), "metrics": metrics, "logged": logged, "population_seed": population_seed}


def register_log_config() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="rapport_log_schema", node=LogRunConfig)


def main(argv: list[str] | None = None) -> None:
    """Console script ``rapport-log`` (Hydra app over ``conf/log.yaml``); ``argv``: the
    overrides (default: the command line). Failures print one line and exit non-zero."""
    import hydra

    register_log_config()
    config_path = CONFIG_PATH

    @hydra.main(version_base="1.3", config_path=config_path, config_name="log")
    def _app(cfg: DictConfig) -> None:
        with marks_failed_output():
            run(cfg)

    run_hydra_app(_app, argv, prog="rapport-log")


if __name__ == "__main__":
    main()
