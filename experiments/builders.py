"""Build worlds, agents and policies from configuration: the only place that instantiates.

API (all inputs are the dataclasses of :mod:`rapport.experiments.config` or plain values)::

    seeds = derive_seeds(master_seed, n_eval=3)             # Seeds: spawned, logged streams
    scenario = resolve_scenario(env_cfg)                     # envs.Scenario (errors name the key)
    env = make_env(env_cfg, customers=..., autoreset_mode=...)  # envs.PopulationEnv
    schema = schema_of(env)                                  # rapport.agents.protocol.DecisionSchema
    check_agent(agent_cfg, env_cfg)                          # fail early: target, params, values
    factory = policy_factory(agent_cfg, constraints_cfg)     # env -> Policy (baseline family)
    policy = build_core_policy(agent_cfg, env)               # baseline family, no constraints
    learner = build_bandit(agent_cfg, schema, seed=...)      # bandit learner (has act/update)
    model = build_sb3(agent_cfg, venv, seed=...)             # SB3 model (rl family)
    policy = wrap_constraints(policy, schema, constraints_cfg, customers)

A *policy factory* takes the env a policy will act in and returns the policy: the oracle needs
the env's latent truth (``env.expected_myopic_profit``, ``env.lookahead_values``), calendar rules
need its horizon, and constraints need its population size. Injected constructor arguments:
``schema`` always, ``horizon``, ``expected_profit_fn`` and ``lookahead_fn`` when the constructor
takes them and ``params`` does not set them.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import rapport.envs as envs
from rapport.agents.protocol import (
    CREATIVE_EMBEDDINGS,
    CREATIVE_FEATURE_NAMES,
    DecisionSchema,
    Policy,
)
from rapport.experiments.config import AgentConfig, ConstraintsConfig, EnvConfig

PolicyFactory = Callable[[Any], Policy]
"""``env -> Policy`` (the env is an ``envs.PopulationEnv``)."""

INJECTED = ("schema", "horizon", "expected_profit_fn", "lookahead_fn")
LATENT_TRUTH = ("expected_profit_fn", "lookahead_fn")
"""Injected arguments that read the env's latent truth (the oracles)."""
"""Constructor arguments supplied by the composition root, never by ``params`` (a learner's
``seed`` is also injected, from the run's agent seed, unless ``params`` sets it)."""

SB3_ALGORITHM_OF = {
    "rapport.agents.rl.make_ppo": "rapport.agents.rl.BatchedPPO",
    "rapport.agents.rl.make_a2c": "rapport.agents.rl.BatchedA2C",
    "rapport.agents.rl.make_dqn": "stable_baselines3.DQN",
    "rapport.agents.rl.make_maskable_ppo": "sb3_contrib.MaskablePPO",
}
"""SB3 factories and the algorithm class their ``**overrides`` go to (for checking params)."""


# ---------------------------------------------------------------------------------- seeds
@dataclass(frozen=True)
class Seeds:
    """Every seed of a run, spawned from one master seed with ``SeedSequence.spawn``."""

    master: int
    train_env: int
    """Training population (bandits, RL); never equal to an evaluation population's seed."""
    agent: int
    """The learner's own randomness (bandit exploration, SB3's ``seed``)."""
    policy: int
    """Generators handed to ``policy.act`` during evaluation (one per policy and population)."""
    evaluation: tuple[int, ...]
    """Evaluation populations (common random numbers: same seed, same customers and luck)."""

    def as_params(self) -> dict[str, Any]:
        return {"seeds.master": self.master, "seeds.train_env": self.train_env,
                "seeds.agent": self.agent, "seeds.policy": self.policy,
                "seeds.evaluation": ",".join(str(s) for s in self.evaluation)}


def _int_seed(ss: np.random.SeedSequence) -> int:
    return int(ss.generate_state(1, np.uint32)[0] & 0x7FFFFFFF)


def derive_seeds(master: int, n_eval: int, eval_master: int | None = None) -> Seeds:
    """Spawn the run's seeds. Evaluation seeds come from ``eval_master`` when given (so runs
    with different training seeds can share evaluation populations), else from ``master``."""
    train_env, agent, policy, evaluation = np.random.SeedSequence(master).spawn(4)
    if eval_master is not None:
        evaluation = np.random.SeedSequence([eval_master, 0x5EED])
    eval_seeds = tuple(int(s) & 0x7FFFFFFF for s in evaluation.generate_state(n_eval, np.uint32))
    return Seeds(master, _int_seed(train_env), _int_seed(agent), _int_seed(policy), eval_seeds)


# ------------------------------------------------------------------------------------ world
def resolve_scenario(env_cfg: EnvConfig) -> envs.Scenario:
    """The scenario of ``env_cfg`` with its overrides; raises ValueError naming a bad key."""
    try:
        return envs.get_scenario(env_cfg.scenario, **dict(env_cfg.overrides))
    except (ValueError, TypeError) as err:
        raise ValueError(f"env.scenario / env.overrides: {err}") from err


def make_env(env_cfg: EnvConfig, *, customers: int | None = None, scenario: envs.Scenario | None = None,
             autoreset_mode: str = "next_step", include_latent: bool = True,
             value_discount: float | None = None) -> envs.PopulationEnv:
    """A population env of ``customers`` (default ``env_cfg.customers``) for ``env_cfg.horizon``
    (``value_discount``: also the latent residual value in every info, for training objectives)."""
    return envs.PopulationEnv(
        num_envs=customers or env_cfg.customers, scenario=scenario or resolve_scenario(env_cfg),
        horizon=env_cfg.horizon, autoreset_mode=autoreset_mode, include_latent=include_latent,
        value_discount=value_discount)


def make_training_env(env_cfg: EnvConfig, agent_cfg: AgentConfig, discount: float, *,
                      customers: int | None = None, scenario: envs.Scenario | None = None,
                      constraints: ConstraintsConfig | None = None) -> Any:
    """The population an RL agent trains on, rewarded by its ``agent.training_objective``
    (``rapport.agents.objective``): same-step autoreset, no latent info, and for the lifetime-value
    objectives the residual value at ``discount`` paid at the horizon (or shaped). Contact caps
    and quiet weeks in ``constraints`` become action masks (and are enforced) while it learns
    (``rapport.agents.constrained_training``); the weekly budget is not a mask and applies at evaluation.

    With ``agent.privileged_critic`` the env also carries latent truth (and the residual value at
    ``discount``), and :class:`rapport.agents.privileged.PrivilegedObservation`, outermost (the
    objective and the contact rules see observables only), appends the privileged columns to every
    observation; its ``n_observable`` is the actor's width."""
    from rapport.agents.objective import LifetimeValueObjective, uses_terminal_value

    objective = agent_cfg.training_objective or "myopic"
    long_term = uses_terminal_value(objective)
    privileged = bool(agent_cfg.privileged_critic)
    env = envs.PopulationEnv(
        num_envs=customers or env_cfg.customers, scenario=scenario or resolve_scenario(env_cfg),
        horizon=env_cfg.horizon, autoreset_mode="same_step", include_latent=privileged,
        treatment_effect=False, value_discount=discount if long_term or privileged else None)
    schema = schema_of(env)
    if long_term:
        env = LifetimeValueObjective(env, discount, shaping=objective == "lifetime_value_shaped")
    rules = None if constraints is None else contact_rules(None, schema, constraints)
    if rules is not None:
        from rapport.agents.constrained_training import RuleMaskedEnv

        env = RuleMaskedEnv(env, rules)
    if privileged:
        from rapport.agents.privileged import PrivilegedObservation

        env = PrivilegedObservation(env, schema.channel_names)
    return env


def schema_of(env: Any) -> DecisionSchema:
    """What agents may know about the world (injected; agents never import envs)."""
    return DecisionSchema(
        feature_names=tuple(env.feature_names),
        nvec=tuple(int(k) for k in env.single_action_space.nvec),
        channel_names=tuple(env.channel_names), offer_names=tuple(env.offer_names),
        spend_levels=tuple(float(s) for s in env.spend_levels),
        channel_costs=tuple(float(c) for c in env.channel_costs),
        offer_discounts=tuple(float(d) for d in env.offer_discounts),
        extras=_schema_extras(env))


def _schema_extras(env: Any) -> dict[str, Any]:
    """The horizon, and with a creative catalogue its embeddings and their feature names."""
    extras: dict[str, Any] = {"horizon": int(env.horizon)}
    embeddings = getattr(env, "creative_embeddings", None)
    if embeddings is not None and len(embeddings):  # (0, 0) without a catalogue
        extras[CREATIVE_EMBEDDINGS] = embeddings
        extras[CREATIVE_FEATURE_NAMES] = tuple(env.creative_feature_names)
    return extras


# ----------------------------------------------------------------------------------- agents
def resolve_target(path: str) -> Any:
    """Import ``package.module.Name`` (attributes may nest); errors say what was not found."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name and module_name.startswith(err.name):
                continue
            raise
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            raise ValueError(f"agent.target {path!r}: module {module_name!r} has no "
                             f"{'.'.join(parts[cut:])!r}") from None
        return obj
    raise ValueError(f"agent.target {path!r}: no importable module in that path")


def _signature_params(fn: Any) -> tuple[dict[str, inspect.Parameter], bool]:
    sig = inspect.signature(fn)
    named = {k: p for k, p in sig.parameters.items()
             if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and k != "self"}
    has_var_kw = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    return named, has_var_kw


def valid_params(agent_cfg: AgentConfig) -> set[str] | None:
    """Keys ``agent.params`` may hold (``None``: the target takes any keyword)."""
    target = resolve_target(agent_cfg.target)
    named, var_kw = _signature_params(target)
    keys = set(named) - set(INJECTED) - {"env", "policy"}
    if var_kw:
        algo_path = SB3_ALGORITHM_OF.get(agent_cfg.target)
        if algo_path is None:
            return None
        algo = resolve_target(algo_path)
        keys |= set(_signature_params(algo.__init__)[0]) - {"env", "policy_kwargs"} | {"policy_kwargs"}
    return keys


def check_agent(agent_cfg: AgentConfig, env_cfg: EnvConfig) -> None:
    """Fail before any work: the target imports, ``params`` names real constructor arguments,
    and the agent can be built on a two-customer population (catches bad values)."""
    keys = valid_params(agent_cfg)
    if keys is not None:
        unknown = sorted(set(agent_cfg.params) - keys)
        if unknown:
            raise ValueError(
                f"agent {agent_cfg.name!r}: unknown parameter(s) {unknown} in agent.params for "
                f"{agent_cfg.target}; valid: {', '.join(sorted(keys))}")
    injected = sorted(set(agent_cfg.params) & set(INJECTED))
    if injected:
        raise ValueError(f"agent {agent_cfg.name!r}: agent.params must not set {injected} "
                         "(injected from the env)")
    env = make_env(env_cfg, customers=2, autoreset_mode="same_step" if agent_cfg.family == "rl" else "next_step")
    try:
        if agent_cfg.family == "rl":
            from rapport.agents.sb3_adapter import BatchedVecEnv

            build_sb3(agent_cfg, BatchedVecEnv(env, flatten_actions=agent_cfg.flatten_actions), seed=0)
        elif agent_cfg.family == "bandit":
            build_bandit(agent_cfg, schema_of(env))
        else:
            policy_factory(agent_cfg, ConstraintsConfig())(env)
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"agent {agent_cfg.name!r} ({agent_cfg.target}) cannot be built from "
                         f"agent.params={dict(agent_cfg.params)}: {err}") from err


def expand_arms(spec: Any, schema: DecisionSchema) -> np.ndarray:
    """Candidate joint actions from config: a list of ``[channel, offer, spend]`` triples, or a
    mapping ``{channel: [...], offer: [...], spend: [...]}`` of allowed values per dimension
    (names as in the schema, ``none`` for no contact / no offer, or indices; a missing key allows
    every value) expanded to their product. Arms with an offer but no contact are dropped (an
    offer needs a contact to travel)."""
    if not isinstance(spec, dict):
        return np.asarray(spec, dtype=np.int64)
    unknown = sorted(set(spec) - {"channel", "offer", "spend"})
    if unknown:
        raise ValueError(f"agent.params.arms: unknown key(s) {unknown}; valid: channel, offer, spend")
    names = (("none", *schema.channel_names), tuple(schema.offer_names), None)
    allowed = []
    for d, key in enumerate(("channel", "offer", "spend")):
        values = spec.get(key)
        if values is None:
            allowed.append(list(range(schema.nvec[d])))
            continue
        idx = []
        for v in values:
            if isinstance(v, str):
                if names[d] is None or v not in names[d]:
                    raise ValueError(f"agent.params.arms.{key}: unknown value {v!r}; valid: "
                                     f"{', '.join(names[d]) if names[d] else f'0..{schema.nvec[d] - 1}'}")
                idx.append(names[d].index(v))
            elif 0 <= int(v) < schema.nvec[d]:
                idx.append(int(v))
            else:
                raise ValueError(f"agent.params.arms.{key}: index {v} outside 0..{schema.nvec[d] - 1}")
        allowed.append(sorted(set(idx)))
    arms = np.array([(c, o, m) for c in allowed[0] for o in allowed[1] for m in allowed[2]
                     if c > 0 or o == 0], dtype=np.int64)
    if len(arms) == 0:
        raise ValueError("agent.params.arms allows no action")
    return arms


def _call_with_injection(target: Any, params: dict[str, Any], schema: DecisionSchema, env: Any | None,
                         seed: int | None = None) -> Any:
    named, _ = _signature_params(target)
    kwargs = dict(params)
    if isinstance(kwargs.get("arms"), dict | list):
        kwargs["arms"] = expand_arms(kwargs["arms"], schema)
    if "seed" in named and seed is not None:
        kwargs.setdefault("seed", seed)
    if "horizon" in named and env is not None:
        kwargs["horizon"] = int(env.horizon)
    if "expected_profit_fn" in named:
        if env is None:
            raise ValueError("this agent needs the env's latent truth (expected_profit_fn)")
        kwargs["expected_profit_fn"] = env.expected_myopic_profit
    if "lookahead_fn" in named:
        if env is None:
            raise ValueError("this agent needs the env's latent truth (lookahead_fn)")
        kwargs["lookahead_fn"] = env.lookahead_values
    return target(schema, **kwargs)


def needs_latent_truth(agent_cfg: AgentConfig) -> bool:
    """Whether the agent reads the env's latent truth (the oracles): such a policy is rebuilt
    for every population and cannot be saved or served."""
    named = _signature_params(resolve_target(agent_cfg.target))[0]
    return any(name in named for name in LATENT_TRUTH)


def build_core_policy(agent_cfg: AgentConfig, env: Any) -> Policy:
    """A non-learning agent's policy for ``env``, without constraints."""
    if agent_cfg.family != "baseline":
        raise ValueError(f"agent {agent_cfg.name!r} is a {agent_cfg.family} learner: train it first")
    return _call_with_injection(resolve_target(agent_cfg.target), dict(agent_cfg.params), schema_of(env), env)


def policy_factory(agent_cfg: AgentConfig, constraints: ConstraintsConfig) -> PolicyFactory:
    """``env -> Policy`` for a non-learning agent, wrapped in the constraints."""
    if agent_cfg.family != "baseline":
        raise ValueError(f"agent {agent_cfg.name!r} is a {agent_cfg.family} learner: train it first")

    def build(env: Any) -> Policy:
        return wrap_constraints(build_core_policy(agent_cfg, env), schema_of(env), constraints, env.num_envs)

    return build


def build_bandit(agent_cfg: AgentConfig, schema: DecisionSchema, *, seed: int | None = None) -> Any:
    """A bandit learner (``act`` + ``update`` + ``policy(explore)``); ``seed`` goes to a
    constructor that takes one (e.g. the neural bandit's network initialisation)."""
    learner = _call_with_injection(resolve_target(agent_cfg.target), dict(agent_cfg.params), schema, None, seed)
    for method in ("act", "update"):
        if not callable(getattr(learner, method, None)):
            raise ValueError(f"agent {agent_cfg.name!r}: family 'bandit' needs {method}(); "
                             f"{agent_cfg.target} has none")
    return learner


def build_sb3(agent_cfg: AgentConfig, venv: Any, *, seed: int, gamma: float | None = None) -> Any:
    """An untrained SB3 model from a factory in ``rapport.agents.rl`` (``seed`` is the agent seed;
    ``gamma``: the objective's discount, see :meth:`RunConfig.learner_discount`)."""
    factory = resolve_target(agent_cfg.target)
    params = dict(agent_cfg.params)
    params.setdefault("seed", seed)
    if gamma is not None:
        params["gamma"] = gamma
    return factory(venv, **params)


def contact_rules(policy: Policy | None, schema: DecisionSchema, constraints: ConstraintsConfig) -> Any:
    """The run's per-customer contact rules (cap, quiet weeks) around ``policy`` as an
    ``rapport.agents.constraints.ContactRules``, or None when it has none; one rule for training masks
    and evaluation."""
    if constraints.max_contacts_4w is None and constraints.quiet_weeks <= 0:
        return None
    from rapport.agents.constraints import ContactRules

    return ContactRules(policy, schema, max_contacts_4w=constraints.max_contacts_4w,  # type: ignore[arg-type]
                        quiet_weeks=constraints.quiet_weeks)


def wrap_constraints(policy: Policy, schema: DecisionSchema, constraints: ConstraintsConfig,
                     customers: int) -> Policy:
    """``policy`` inside contact caps / quiet weeks (a mask) and a weekly budget (post-processing)."""
    from rapport.agents.constraints import BudgetConstraint

    policy = contact_rules(policy, schema, constraints) or policy
    if constraints.weekly_budget_per_customer is not None:
        policy = BudgetConstraint(policy, schema,
                                  weekly_budget=constraints.weekly_budget_per_customer * customers)
    return policy


MYOPIC_ORACLE = "oracle"
LONG_TERM_ORACLE = "long_term_oracle"


def reference_oracles(evaluation: Any, constraints: ConstraintsConfig) -> dict[str, tuple[PolicyFactory, str, str]]:
    """``{name: (factory, role, target)}`` of the oracles an evaluation config asks for: the
    myopic one (``evaluation.oracle``, role ``oracle``) and the long-term one
    (``evaluation.long_term_oracle``, role ``long_term_oracle``, at the evaluation's discount)."""
    out: dict[str, tuple[PolicyFactory, str, str]] = {}
    if evaluation.oracle:
        cfg = AgentConfig(name=MYOPIC_ORACLE, family="baseline", target="rapport.agents.baselines.Oracle")
        out[MYOPIC_ORACLE] = (policy_factory(cfg, constraints), "oracle", cfg.target)
    if evaluation.long_term_oracle:
        cfg = AgentConfig(name=LONG_TERM_ORACLE, family="baseline",
                          target="rapport.agents.long_term_oracle.LongTermOracle",
                          params={"annual_discount_rate": float(evaluation.annual_discount_rate)})
        out[LONG_TERM_ORACLE] = (policy_factory(cfg, constraints), "long_term_oracle", cfg.target)
    return out
