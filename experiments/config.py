"""Typed configuration of Rapport's experiment apps (Hydra structured configs).

YAML under ``conf/`` holds the data; these dataclasses are its schema. They are registered in
Hydra's ConfigStore (:func:`register_configs`) so that composition rejects unknown keys and
wrong types with Hydra's message naming the key, and :func:`to_settings` turns a composed
``DictConfig`` into dataclass objects whose ``__post_init__`` checks ranges and names the key
that is wrong ("env.customers must be an integer >= 1, got -5"). Both happen before any work.

Layout of a composed run config (``conf/train.yaml``)::

    seed, label, progress
    env:         EnvConfig          which world, how many customers, how many weeks
    agent:       AgentConfig        what decides (class/factory + constructor params)
    constraints: ConstraintsConfig  business rules wrapped around any policy
    train:       TrainConfig        how learners learn (bandit episodes, RL timesteps)
    evaluation:  EvaluationConfig   CRN evaluation, baseline and oracle, bootstrap
    tracking:    TrackingConfig     MLflow (or nothing)
    sweep:       SweepConfig        Optuna ask/tell sweeps (experiments/sweep.py)
    guardrails:  list of rules      KPI bounds leaderboards and the export gate check
    policies:    list[str]          model URIs evaluated by rapport-evaluate
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from rapport.agents.objective import OBJECTIVES, discount_for
from rapport.experiments.errors import UserError, user_input
from rapport.experiments.guardrails import GuardrailConfig, rules_from_config
from rapport.experiments.launchers.ray_cluster import RayConfig

PRIVILEGED_CRITIC_TARGETS = ("rapport.agents.rl.make_ppo", "rapport.agents.rl.make_maskable_ppo")
"""SB3 factories that train an asymmetric actor-critic with ``agent.privileged_critic``."""

FAMILIES = ("baseline", "bandit", "rl")
DEFAULT_TIMESTEPS = 200_000
"""RL customer-weeks of training when neither ``train.timesteps`` nor ``agent.timesteps`` is set."""
"""Agent families: ``baseline`` policies act without learning, ``bandit`` learners update online
each week, ``rl`` learners are Stable-Baselines3 models trained for ``train.timesteps``."""


def _positive_int(where: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where} must be an integer >= 1, got {value!r}")


def _nonneg_int(where: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where} must be an integer >= 0, got {value!r}")


def _fraction(where: str, value: Any, *, open_ends: bool = True) -> None:
    ok = isinstance(value, int | float) and math.isfinite(value)
    ok = ok and (0 < value < 1 if open_ends else 0 <= value <= 1)
    if not ok:
        raise ValueError(f"{where} must be a number in {'(0, 1)' if open_ends else '[0, 1]'}, got {value!r}")


# Hydra finds the YAML in the installed package (conf/ ships as rapport.conf), so every app runs
# from any directory, editable checkout or wheel alike.
CONFIG_PATH = "pkg://rapport.conf"

@dataclass
class EnvConfig:
    """The simulated customer base (``envs.PopulationEnv``) policies are evaluated on."""

    scenario: str = "retail"
    """Scenario preset name (``envs.PRESETS``) or path to a scenario JSON file."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Top-level scenario fields replaced on top of the preset (``Scenario.from_dict`` keys,
    e.g. ``initial_tenure_weeks`` or a whole ``media`` block); unknown keys are errors."""
    customers: int = 20_000
    """Customers in each evaluation population (one row each)."""
    horizon: int = 52
    """Weeks per episode (evaluation and training)."""

    def __post_init__(self) -> None:
        if not isinstance(self.scenario, str) or not self.scenario:
            raise ValueError(f"env.scenario must be a preset name or a .json path, got {self.scenario!r}")
        _positive_int("env.customers", self.customers)
        _positive_int("env.horizon", self.horizon)


@dataclass
class AgentRulesConfig:
    """Contact rules that are part of *this agent's* policy (``agent.rules.*``), unlike the run's
    ``constraints.*``, which bind every policy of the run: an agent defined as "PPO that never
    contacts anyone more than twice in 5 weeks" is compared with unconstrained mass marketing.
    They are action masks while it learns, wrapped around it at evaluation and carried into its
    saved policy and every export, exactly like the run's constraints (the stricter of the two
    applies)."""

    max_contacts_4w: int | None = None
    """At most this many contacts per customer in the 4 weeks before a decision (the week of the
    decision makes the 5th), all channels together."""
    quiet_weeks: int = 0
    """No contact unless every channel's last contact is at least this many weeks ago."""

    def __post_init__(self) -> None:
        if self.max_contacts_4w is not None:
            _nonneg_int("agent.rules.max_contacts_4w", self.max_contacts_4w)
        _nonneg_int("agent.rules.quiet_weeks", self.quiet_weeks)

    @property
    def active(self) -> bool:
        return self.max_contacts_4w is not None or self.quiet_weeks > 0


@dataclass
class AgentConfig:
    """What decides: a policy class or a learner/factory, with its constructor parameters.

    ``schema`` (and, where the constructor takes them, ``horizon`` and the oracle's
    ``expected_profit_fn``, ``lookahead_fn``) are injected by :mod:`rapport.experiments.builders`; everything else comes
    from ``params``, checked against the constructor's signature before any work.
    """

    name: str = MISSING
    """Short name used in run names, leaderboards and ``agent=<name>`` (the YAML file name)."""
    family: str = MISSING
    """``baseline`` | ``bandit`` | ``rl`` (see :data:`FAMILIES`)."""
    target: str = MISSING
    """Import path of the class (baselines, bandits) or SB3 factory (``rapport.agents.rl.make_ppo``)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Constructor / factory keyword arguments."""
    eval_mode: str = "greedy"
    """Learners only: evaluate the ``greedy`` frozen policy or keep exploring (``explore``)."""
    flatten_actions: bool = False
    """RL only: offer the joint action as ``Discrete(prod(nvec))`` (needed by DQN)."""
    normalize_obs: bool = False
    """RL only: train behind SB3's ``VecNormalize`` observation standardisation; its running
    statistics are frozen into the policy (and its exports) when training ends."""
    normalize_reward: bool = False
    """RL only: scale rewards by VecNormalize's running std of the discounted return (training
    signal only; evaluation and KPIs always use profit in $)."""
    objective: str | None = None
    """RL only: what training optimises (``rapport.agents.objective``). ``lifetime_value`` (the default
    for family ``rl``): what ``kpi/lifetime_value_per_customer`` measures, the weekly discount of
    ``evaluation.annual_discount_rate`` with the residual value paid at the horizon;
    ``lifetime_value_shaped``: the same objective with potential-based shaping on the latent
    residual value (same ranking of policies, the damage a contact does charged the week it
    happens); ``myopic``: profit with the agent's own ``params.gamma`` (default 0.95) and no
    terminal value, the contrast."""
    timesteps: int | None = None
    """RL only: customer-weeks this agent trains for unless ``train.timesteps`` is set; lets an
    agent config carry the budget its results were measured with."""
    rules: AgentRulesConfig = field(default_factory=AgentRulesConfig)
    """Contact rules that are part of this agent's policy (see :class:`AgentRulesConfig`)."""
    privileged_critic: bool = False
    """RL only (PPO, MaskablePPO): asymmetric actor-critic (``rapport.agents.privileged``). While
    training, the critic also sees latent truth (alive, purchase rate, drop-out probability,
    residual value, fatigue, trust) appended to the observation; the actor -- and so every saved,
    served or exported policy -- reads the observable features only. Off until measured to help
    (``scripts/bench_long_term.py --privileged-critic``)."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("agent.name must be a non-empty string")
        if self.family not in FAMILIES:
            raise ValueError(f"agent {self.name!r}: agent.family must be one of {FAMILIES}, got {self.family!r}")
        if not isinstance(self.target, str) or "." not in self.target:
            raise ValueError(f"agent {self.name!r}: agent.target must be an import path like "
                             f"'rapport.agents.bandits.LinUCB', got {self.target!r}")
        if self.eval_mode not in ("greedy", "explore"):
            raise ValueError(f"agent {self.name!r}: agent.eval_mode must be 'greedy' or 'explore', "
                             f"got {self.eval_mode!r}")
        for flag in ("flatten_actions", "normalize_obs", "normalize_reward"):
            if getattr(self, flag) and self.family != "rl":
                raise ValueError(f"agent {self.name!r}: agent.{flag} applies to family 'rl' only")
        if self.objective is not None:
            if self.family != "rl":
                raise ValueError(f"agent {self.name!r}: agent.objective applies to family 'rl' only "
                                 "(bandits choose their reward with params.reward)")
            if self.objective not in OBJECTIVES:
                raise ValueError(f"agent {self.name!r}: agent.objective must be one of "
                                 f"{OBJECTIVES}, got {self.objective!r}")
        if self.timesteps is not None:
            if self.family != "rl":
                raise ValueError(f"agent {self.name!r}: agent.timesteps applies to family 'rl' only "
                                 "(bandits train for train.episodes)")
            _positive_int("agent.timesteps", self.timesteps)
        self._check_privileged_critic()

    def _check_privileged_critic(self) -> None:
        if not isinstance(self.privileged_critic, bool):
            raise ValueError(f"agent {self.name!r}: agent.privileged_critic must be true or false, "
                             f"got {self.privileged_critic!r}")
        if "observable_features" in self.params:
            raise ValueError(f"agent {self.name!r}: agent.params.observable_features is set by the "
                             "composition root (the observable width, with agent.privileged_critic="
                             "true); remove it from agent.params")
        if not self.privileged_critic:
            return
        if self.family != "rl" or self.target not in PRIVILEGED_CRITIC_TARGETS:
            raise ValueError(f"agent {self.name!r}: agent.privileged_critic applies to the actor-critic "
                             f"learners {', '.join(PRIVILEGED_CRITIC_TARGETS)} (agent=ppo, "
                             f"agent=maskable_ppo), got family {self.family!r}, target {self.target!r}")
        if "policy" in self.params:
            raise ValueError(f"agent {self.name!r}: agent.privileged_critic chooses the policy class "
                             f"(an asymmetric actor-critic); remove agent.params.policy="
                             f"{self.params['policy']!r}")
        kwargs = self.params.get("policy_kwargs") or {}
        clash = sorted(set(kwargs) & {"share_features_extractor", "features_extractor_class",
                                      "features_extractor_kwargs", "n_observable"})
        if clash:
            raise ValueError(f"agent {self.name!r}: agent.params.policy_kwargs {clash} cannot be "
                             "combined with agent.privileged_critic (the actor's and the critic's "
                             "features extractors are fixed: the actor reads observables only)")

    @property
    def training_objective(self) -> str | None:
        """The RL objective in force (``lifetime_value`` unless set); None for other families."""
        if self.family != "rl":
            return None
        return self.objective or "lifetime_value"


@dataclass
class ConstraintsConfig:
    """Business rules wrapped around the agent's policy (``rapport.agents.constraints``), in training
    (bandits) and evaluation. All off by default."""

    max_contacts_4w: int | None = None
    """At most this many contacts per customer over 4 weeks, all channels together."""
    quiet_weeks: int = 0
    """No contact unless every channel's last contact is at least this many weeks ago."""
    weekly_budget_per_customer: float | None = None
    """Weekly marketing budget, $ per customer in the population (contacts + media spend)."""

    def __post_init__(self) -> None:
        if self.max_contacts_4w is not None:
            _nonneg_int("constraints.max_contacts_4w", self.max_contacts_4w)
        _nonneg_int("constraints.quiet_weeks", self.quiet_weeks)
        b = self.weekly_budget_per_customer
        if b is not None and not (isinstance(b, int | float) and math.isfinite(b) and b >= 0):
            raise ValueError(f"constraints.weekly_budget_per_customer must be a number >= 0, got {b!r}")

    @property
    def active(self) -> bool:
        return (self.max_contacts_4w is not None or self.quiet_weeks > 0
                or self.weekly_budget_per_customer is not None)


@dataclass
class TrainConfig:
    """How learners learn. Training populations use their own seeds, never the evaluation's."""

    customers: int = 5_000
    """Customers in the training population (bandits and RL)."""
    episodes: int = 1
    """Bandits: episodes of ``env.horizon`` weeks, updating after every week."""
    timesteps: int | None = None
    """RL: customer-weeks of SB3 ``learn``; ``None``: the agent's own ``agent.timesteps``, else
    :data:`DEFAULT_TIMESTEPS`. Set, it wins (``debug=fast``, sweeps, experiments)."""
    rollout_size: int = 32_768
    """RL (PPO/A2C family): customer-weeks per update; agent YAMLs interpolate it."""

    def __post_init__(self) -> None:
        _positive_int("train.customers", self.customers)
        _positive_int("train.episodes", self.episodes)
        if self.timesteps is not None:
            _positive_int("train.timesteps", self.timesteps)
        _positive_int("train.rollout_size", self.rollout_size)


@dataclass
class EvaluationConfig:
    """Evaluation on common random numbers: every policy meets the same customers and luck."""

    seeds: int = 3
    """Independent evaluation populations (each ``env.customers`` customers)."""
    seed: int | None = None
    """Master seed of the evaluation populations; ``None``: derived from the run's ``seed``.
    Runs whose evaluation seeds match can be paired (``rapport-compare``)."""
    baseline: AgentConfig | None = None
    """Reference policy for paired differences (a ``baseline``-family agent config, set with
    ``agent@evaluation.baseline=<name>``); ``null`` for none."""
    oracle: bool = True
    """Also evaluate the myopic oracle (latent-truth best action each week) for regret."""
    long_term_oracle: bool = False
    """Also evaluate the long-term oracle (``rapport.agents.long_term_oracle``: rollout lookahead on the
    latent truth, the ceiling for lifetime value); ``regret/lifetime_value`` is then against it.
    Off by default: it simulates ~128 rollout rows per customer each week (about 1 s a week
    per 1,000 customers); on in ``experiment=long_term``."""
    bootstrap: int = 1000
    """Bootstrap resamples for confidence intervals."""
    confidence: float = 0.95
    """Confidence level of every interval."""
    blocks: int = 200
    """Customers of each population are summed in this many contiguous blocks; blocks are the
    bootstrap units (resampled within each population) and what runs store for pairing."""
    annual_discount_rate: float = 0.10
    """Discount rate for lifetime value: week t is worth (1 + rate)^(-t/52)."""
    short_term_weeks: int = 1
    """Weeks counted as "short term" (default: this week's profit)."""
    use_action_mask: bool = True
    """Give policies the env's action mask (opted-out channels off)."""
    distill_depth: int = 0
    """After evaluation, distil the agent into a decision tree of this depth over the observable
    features (``rapport.experiments.distill``: DAgger on populations of its own seeds) and log its
    rules in words (tag ``rapport.rules``, ``evaluation/rules.txt``, the policy card), its fidelity
    on the first evaluation population and its value paired with the agent's; 0 = off."""
    shards: int = 1
    """Split every population into this many shards of customers, each a Ray actor
    (:mod:`rapport.experiments.sharding`; Ray reached as ``ray.*`` says); 1 = in this process. Results are
    bit-identical for policies that decide each customer from that customer's observation."""

    @property
    def weekly_discount(self) -> float:
        """``(1 + annual_discount_rate) ** (-1/52)``: lifetime value's and training's discount."""
        return (1.0 + self.annual_discount_rate) ** (-1.0 / 52.0)

    def __post_init__(self) -> None:
        _positive_int("evaluation.seeds", self.seeds)
        _positive_int("evaluation.shards", self.shards)
        if self.seed is not None:
            _nonneg_int("evaluation.seed", self.seed)
        _positive_int("evaluation.bootstrap", self.bootstrap)
        _fraction("evaluation.confidence", self.confidence)
        _positive_int("evaluation.blocks", self.blocks)
        r = self.annual_discount_rate
        if not (isinstance(r, int | float) and math.isfinite(r) and 0 <= r < 10):
            raise ValueError(f"evaluation.annual_discount_rate must be a number in [0, 10), got {r!r}")
        _positive_int("evaluation.short_term_weeks", self.short_term_weeks)
        _nonneg_int("evaluation.distill_depth", self.distill_depth)
        if self.baseline is not None and self.baseline.family != "baseline":
            raise ValueError(f"evaluation.baseline must be a non-learning agent (family 'baseline'), "
                             f"got {self.baseline.name!r} of family {self.baseline.family!r}")


@dataclass
class TrackingConfig:
    """Where runs are recorded."""

    backend: str = "mlflow"
    """``mlflow`` or ``none`` (nothing recorded)."""
    uri: str | None = None
    """MLflow tracking URI. ``None``: ``$MLFLOW_TRACKING_URI`` if set, else the embedded SQLite
    store ``sqlite:///<working dir>/mlflow.db``."""
    experiment: str = "rapport"
    """MLflow experiment name (a comparison's runs share one; ``rapport-compare`` reads it)."""
    run_name: str | None = None
    """MLflow run name; ``None``: ``<label>-seed<seed>``."""
    log_model: bool = True
    """Log the trained policy as an MLflow (pyfunc) model."""
    log_plots: bool = True
    """Log PNG plots (learning curve, KPI bars with CIs, cumulative profit)."""
    tags: dict[str, str] = field(default_factory=dict)
    """Extra MLflow tags."""

    def __post_init__(self) -> None:
        if self.backend not in ("mlflow", "none"):
            raise ValueError(f"tracking.backend must be 'mlflow' or 'none', got {self.backend!r}")
        if not self.experiment:
            raise ValueError("tracking.experiment must be a non-empty name")


@dataclass
class SweepConfig:
    """Optuna ask/tell sweep over config overrides (``python -m rapport.experiments.sweep``)."""

    params: dict[str, str] = field(default_factory=dict)
    """Override key -> search space in Hydra's sweep syntax: ``interval(0.1, 2)``,
    ``tag(log, interval(1e-4, 1e-2))``, ``range(1, 9)``, ``choice(email, sms)``."""
    n_trials: int = 20
    """Trials in total."""
    n_jobs: int = 1
    """Trials run in parallel (joblib processes)."""
    direction: str = "maximize"
    """``maximize`` or ``minimize`` the objective."""
    objective: str = "kpi/lifetime_value_per_customer"
    """Metric of the agent's evaluation to optimise (a key from the metric glossary)."""
    sampler: str = "tpe"
    """``tpe`` | ``random``; seeded with the run's ``seed``."""
    storage: str | None = None
    """Optuna storage URL (``sqlite:///optuna.db``) to persist and resume the study."""

    def __post_init__(self) -> None:
        _positive_int("sweep.n_trials", self.n_trials)
        _positive_int("sweep.n_jobs", self.n_jobs)
        if self.direction not in ("maximize", "minimize"):
            raise ValueError(f"sweep.direction must be 'maximize' or 'minimize', got {self.direction!r}")
        if self.sampler not in ("tpe", "random"):
            raise ValueError(f"sweep.sampler must be 'tpe' or 'random', got {self.sampler!r}")


@dataclass
class RunConfig:
    """Root of every app's config (``conf/train.yaml``, ``conf/evaluate.yaml``)."""

    seed: int = 0
    """Master seed; env, agent, torch and evaluation seeds are spawned from it and logged."""
    label: str | None = None
    """Name of this configuration in leaderboards; ``None``: the agent name plus any
    non-seed overrides of a multirun job."""
    progress: bool = True
    """Progress bars on training and evaluation (always off when ``CI=true``)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig | None = None
    constraints: ConstraintsConfig = field(default_factory=ConstraintsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    policies: list[str] = field(default_factory=list)
    """``rapport-evaluate``: policies to evaluate, as MLflow model URIs (``runs:/<id>/policy``,
    ``models:/<name>/<version>``, ``models:/<name>@<alias>``) or bare run ids."""
    guardrails: list[Any] = field(default_factory=list)
    """Bounds the agent must respect on KPIs (``rapport.experiments.guardrails``): each names a KPI
    and a ``max``/``min`` or ``max_vs_baseline``/``min_vs_baseline``, judged on the worse end of
    the CI. rapport-train logs ``guardrail/passed``, leaderboards show a "guardrails" column, and
    the promotion gate of ``rapport-export`` refuses a run that fails one. Plain mappings here
    (``{kpi: churned_share, max_vs_baseline: 0.01}``), checked field by field as
    :class:`~rapport.experiments.guardrails.GuardrailConfig` (:attr:`guardrail_rules`) so that
    every error names ``guardrails[i]``."""
    ray: RayConfig = field(default_factory=RayConfig)
    """How to reach Ray: sharded evaluation (``evaluation.shards`` > 1) and, when the app is
    launched with ``hydra/launcher=ray``, the launcher's cluster (``ray.address=auto``)."""

    def __post_init__(self) -> None:
        _nonneg_int("seed", self.seed)
        self.guardrail_rules  # noqa: B018 - validates: errors name guardrails[i]
        if self.agent is not None and self.agent.family == "bandit":
            self._check_bandit_value_discount()
        if self.agent is not None and self.agent.family == "rl":
            try:
                self.learner_discount()
            except ValueError as err:
                raise ValueError(f"agent {self.agent.name!r}: {err}") from None

    def _check_bandit_value_discount(self) -> None:
        """A bandit's ``value_discount`` is the evaluation's weekly discount (rapport-train passes
        it); a different one would train on something the evaluation does not measure."""
        assert self.agent is not None
        own = self.agent.params.get("value_discount")
        if own is None:
            return
        d = self.evaluation.weekly_discount
        if self.agent.params.get("reward") != "lifetime_value_shaped":
            raise ValueError(f"agent {self.agent.name!r}: agent.params.value_discount only applies to "
                             "reward='lifetime_value_shaped'; remove it")
        if isinstance(own, bool) or not isinstance(own, int | float) or abs(float(own) - d) > 1e-9:
            raise ValueError(f"agent {self.agent.name!r}: agent.params.value_discount={own!r} contradicts "
                             f"reward='lifetime_value_shaped', which trains with the evaluation's weekly "
                             f"discount {d:.6f} (from evaluation.annual_discount_rate); remove value_discount "
                             "(rapport-train sets it)")

    @property
    def guardrail_rules(self) -> list[GuardrailConfig]:
        """:attr:`guardrails` as checked rules."""
        return rules_from_config(self.guardrails, has_baseline=self.evaluation.baseline is not None)

    @property
    def timesteps(self) -> int:
        """RL training budget in customer-weeks: ``train.timesteps`` when set, else the agent's
        own ``agent.timesteps``, else :data:`DEFAULT_TIMESTEPS`."""
        if self.train.timesteps is not None:
            return self.train.timesteps
        own = self.agent.timesteps if self.agent is not None else None
        return DEFAULT_TIMESTEPS if own is None else own

    def constraints_for(self, agent: AgentConfig | None) -> ConstraintsConfig:
        """The rules ``agent``'s policy obeys: the run's ``constraints`` tightened by the agent's
        own ``agent.rules`` (the lower contact cap, the longer quiet period)."""
        if agent is None or not agent.rules.active:
            return self.constraints
        run, own = self.constraints, agent.rules
        caps = [c for c in (run.max_contacts_4w, own.max_contacts_4w) if c is not None]
        return ConstraintsConfig(max_contacts_4w=min(caps) if caps else None,
                                 quiet_weeks=max(run.quiet_weeks, own.quiet_weeks),
                                 weekly_budget_per_customer=run.weekly_budget_per_customer)

    @property
    def agent_constraints(self) -> ConstraintsConfig:
        """:meth:`constraints_for` the run's own agent."""
        return self.constraints_for(self.agent)

    def learner_discount(self) -> float:
        """The RL learner's discount under ``agent.training_objective`` (see
        :func:`rapport.agents.objective.discount_for`)."""
        assert self.agent is not None
        gamma = self.agent.params.get("gamma")
        return discount_for(self.agent.training_objective or "myopic",
                            self.evaluation.weekly_discount, gamma)


def register_configs() -> None:
    """Register the schema in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="rapport_schema", node=RunConfig)


def to_settings(cfg: DictConfig | RunConfig, schema: type[RunConfig] = RunConfig) -> RunConfig:
    """Validated dataclass objects from a composed config: bad values raise
    :class:`~rapport.experiments.errors.UserError` naming the key (``schema``: the app's root config
    class, a subclass of :class:`RunConfig`)."""
    if isinstance(cfg, schema):
        return cfg
    with user_input():
        plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        plain.pop("hydra", None)
        merged = OmegaConf.merge(OmegaConf.structured(schema), plain)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]


def check_evaluation_fits(settings: RunConfig) -> None:
    """Keys of ``evaluation`` checked against the population they evaluate (the apps that
    evaluate call this: ``rapport-train``, ``rapport-evaluate``); raises naming the key and its
    valid range."""
    e, env = settings.evaluation, settings.env
    if e.blocks > env.customers:
        raise UserError(f"evaluation.blocks={e.blocks} exceeds env.customers={env.customers} (every block "
                        f"needs at least one customer); valid: 1..{env.customers}")
    if e.shards > e.blocks:
        raise UserError(f"evaluation.shards={e.shards} exceeds evaluation.blocks={e.blocks} (a shard is a "
                        f"run of whole blocks); valid: 1..{e.blocks}")
    if e.short_term_weeks > env.horizon:
        raise UserError(f"evaluation.short_term_weeks={e.short_term_weeks} exceeds env.horizon={env.horizon}; "
                        f"valid: 1..{env.horizon}")
