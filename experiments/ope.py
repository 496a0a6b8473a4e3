"""``rapport-ope``: how good is each off-policy estimator? The simulator knows the truth.

    rapport-ope                                          # conf/ope.yaml: RFM + exploration logs, 4 candidates
    rapport-ope bench.sample_sizes=[1000,4000] bench.replications=20 env.horizon=12
    rapport-ope agent=mass bench.behaviour_epsilon=0.3 tracking=none

For every replication (a world seed spawned from ``seed``) and every sample size n:

1. **Log.** The behaviour policy (``agent``, mixed with ``bench.behaviour_epsilon`` uniform
   exploration) acts for ``env.horizon`` weeks on customers 0..n−1 of that world
   (:func:`rapport.experiments.log_feedback.collect_feedback`).
2. **Estimate.** Every candidate is judged from that log by every estimator, with bootstrap
   intervals and high-confidence lower bounds (:class:`rapport.agents.ope.OffPolicyEvaluator`).

**Ground truth**, once per replication, on ``env.customers`` other customers of the same world
(same seed, so the same noise streams; disjoint from the logged customers so the truth's
simulation error is independent of the estimates):

* ``seq`` (value of deploying the candidate for the horizon): on-policy simulation of each
  candidate, mean per-customer (discounted) return. All candidates meet the same customers and
  noise (common random numbers).
* ``bandit`` (one-week value in the states the behaviour visits): the behaviour runs, and each
  week a copy of the world takes the candidate's action instead for one week — with the same
  noise, as the common random numbers are keyed by (seed, customer, week, mechanism) — and the
  candidate's rewards are averaged over the behaviour's customer-weeks.

Reported per (view, estimator, n), over replications and candidates: bias, RMSE, coverage of
the two-sided (1 − ope.alpha) bootstrap interval and its width; per lower bound: validity (share
of runs with bound <= truth, to compare with 1 − δ) and the gap truth − bound; and the safe
promotion gate (promote when the ``seq/hcope_pdis`` bound beats the behaviour's logged return)
against the truth. Tables and a plot go to MLflow.

Metric keys (all per sample size ``n<n>``):

=====================================================  ==================================================
``ope_bench/<view>/<estimator>/n<n>/bias``             mean (estimate − truth), over replications and candidates
``ope_bench/<view>/<estimator>/n<n>/rmse``             root mean squared error against the truth
``ope_bench/<view>/<estimator>/n<n>/coverage``         share of bootstrap intervals containing the truth
``ope_bench/<view>/<estimator>/n<n>/ci_width``         mean width of the bootstrap interval
``ope_bench/<view>/<bound>/n<n>/validity``             share of lower bounds <= truth (target >= 1 − δ)
``ope_bench/<view>/<bound>/n<n>/gap``                  mean (truth − lower bound): how loose the bound is
``ope_bench/promotion/n<n>/promote_rate``              share of (replication, candidate) the gate promotes
``ope_bench/promotion/n<n>/false_promotion_rate``      share promoted although not truly better than the behaviour
``ope_bench/truth/<candidate>/<view>``                 true value (mean over replications)
=====================================================  ==================================================
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

import rapport.envs as envs
from rapport.agents.ope import (
    BANDIT_ESTIMATORS,
    SEQUENTIAL_ESTIMATORS,
    OffPolicyEvaluator,
    OPESettings,
    promotion_decision,
)
from rapport.experiments.builders import check_agent, derive_seeds, resolve_scenario
from rapport.experiments.config import CONFIG_PATH, AgentConfig, RunConfig, to_settings
from rapport.experiments.errors import marks_failed_output, run_hydra_app, user_input
from rapport.experiments.log_feedback import collect_feedback, logging_policy_factory
from rapport.experiments.progress import bar, progress_enabled

PolicyFactory = Callable[[Any], Any]


# ---------------------------------------------------------------------------------- config
@dataclass
class CandidateConfig:
    """A policy to judge from the logs."""

    agent: AgentConfig | None = None
    """The candidate (``agent@candidates.<name>.agent=<file>`` in a defaults list)."""
    epsilon: float = 0.0
    """Uniform exploration mixed into the candidate (``rapport.agents.ope.ExplorationMixture``)."""

    def __post_init__(self) -> None:
        if self.agent is None:
            raise ValueError("every candidate needs an agent (candidates.<name>.agent)")
        _check_epsilon(f"candidate {self.agent.name!r} epsilon", self.epsilon)


@dataclass
class OPEOptions:
    """Estimator options (``rapport.agents.ope.OPESettings``); see there for each key."""

    bandit_estimators: list[str] = field(default_factory=lambda: list(BANDIT_ESTIMATORS))
    """Single-step estimators: ips, snips, dm, dr, sndr, switch_dr."""
    sequential_estimators: list[str] = field(default_factory=lambda: list(SEQUENTIAL_ESTIMATORS))
    """Sequential estimators: pdis, wpdis, seq_dr, fqe."""
    gamma: float = 1.0
    """Weekly discount of the sequential return."""
    clip: float | None = None
    """Cap on importance weights; null = none."""
    switch_tau: float = 100.0
    """Switch-DR threshold on the importance weight."""
    n_folds: int = 2
    """Cross-fitting folds (by customer) of the reward model and FQE."""
    ridge: float = 1.0
    """Ridge penalty of the reward model and FQE regressions."""
    interactions: bool = True
    """Per-action-dimension context effects in the reward model."""
    n_boot: int = 200
    """Bootstrap replicates per interval."""
    alpha: float = 0.1
    """Intervals are two-sided (1 − alpha)."""
    delta: float = 0.05
    """Lower bounds hold with probability 1 − delta."""
    hcope_method: str = "bernstein"
    """bernstein (Thomas et al. 2015, guaranteed) or t (approximate)."""
    mc_draws: int = 0
    """Monte-Carlo draws for stochastic candidates without an explicit distribution."""

    def settings(self, reward_lower_bound: float | None, horizon: int) -> OPESettings:
        return OPESettings(tuple(self.bandit_estimators), tuple(self.sequential_estimators), gamma=self.gamma,
                           clip=self.clip, switch_tau=self.switch_tau, n_folds=self.n_folds, ridge=self.ridge,
                           interactions=self.interactions, n_boot=self.n_boot, alpha=self.alpha, delta=self.delta,
                           reward_lower_bound=reward_lower_bound, hcope_method=self.hcope_method,
                           mc_draws=self.mc_draws, horizon=horizon)


@dataclass
class BenchConfig:
    """The OPE-of-OPE experiment design."""

    sample_sizes: list[int] = field(default_factory=lambda: [500, 2000])
    """Customers in each log (each logged for env.horizon weeks)."""
    replications: int = 10
    """Independent worlds (seeds) per sample size."""
    behaviour_epsilon: float = 0.2
    """Uniform exploration mixed into the behaviour (logging) policy ``agent``."""
    reward_lower_bound: float | None = None
    """A true lower bound on the weekly reward for the high-confidence bounds; null = derived
    from the scenario (−(dearest contact + gesture + top media spend), valid when no discount
    exceeds the gross margin)."""
    promotion_margin: float = 0.0
    """Improvement the promotion gate demands over the behaviour's value ($ per customer)."""

    def __post_init__(self) -> None:
        if not self.sample_sizes or any(isinstance(n, bool) or not isinstance(n, int) or n < 4
                                        for n in self.sample_sizes):
            raise ValueError(f"bench.sample_sizes must be integers >= 4, got {self.sample_sizes!r}")
        if isinstance(self.replications, bool) or not isinstance(self.replications, int) or self.replications < 1:
            raise ValueError(f"bench.replications must be an integer >= 1, got {self.replications!r}")
        _check_epsilon("bench.behaviour_epsilon", self.behaviour_epsilon)
        if not (isinstance(self.promotion_margin, int | float) and self.promotion_margin >= 0):
            raise ValueError(f"bench.promotion_margin must be >= 0, got {self.promotion_margin!r}")


@dataclass
class OPERunConfig(RunConfig):
    """Root config of ``rapport-ope`` (``conf/ope.yaml``): the shared run config — ``agent`` is
    the behaviour (logging) policy, ``env.customers`` the size of the ground-truth population —
    plus the candidates, estimator options and the experiment design."""

    candidates: dict[str, CandidateConfig] = field(default_factory=dict)
    ope: OPEOptions = field(default_factory=OPEOptions)
    bench: BenchConfig = field(default_factory=BenchConfig)


def _check_epsilon(where: str, value: Any) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and 0 <= value <= 1):
        raise ValueError(f"{where} must be a number in [0, 1], got {value!r}")


def to_ope_config(cfg: DictConfig | OPERunConfig) -> OPERunConfig:
    """Validated config objects (errors name the key)."""
    settings = to_settings(cfg, OPERunConfig)
    with user_input():
        if settings.agent is None:
            raise ValueError("agent (the behaviour policy) is not set: choose one with agent=<name>")
        if not settings.candidates:
            raise ValueError("no candidates: add some with agent@candidates.<name>.agent=<file> in the defaults list")
    with user_input("ope."):  # rapport.agents.ope names its fields without the config group
        settings.ope.settings(None, settings.env.horizon)  # validates the estimator options
    return settings  # type: ignore[return-value]


def scenario_reward_lower_bound(scenario: envs.Scenario) -> float:
    """Lowest possible weekly profit of a customer: every order earns list × (margin − discount)
    >= 0 when no discount exceeds the gross margin, so profit >= −(contact + gesture + media)."""
    margin = scenario.purchase.gross_margin
    if max(scenario.offers.discounts) > margin:
        raise ValueError(f"a discount ({max(scenario.offers.discounts)}) exceeds the gross margin ({margin}): orders "
                         "can lose money without bound, so set bench.reward_lower_bound yourself")
    return -(max(c.cost for c in scenario.channels) + scenario.offers.gesture_cost + max(scenario.media.spend_levels))


# ---------------------------------------------------------------------------- ground truth
@dataclass(frozen=True)
class Truth:
    """True values of one policy in one world (and their Monte-Carlo standard errors)."""

    seq: float
    seq_se: float
    bandit: float
    bandit_se: float


def ground_truth(scenario: envs.Scenario, horizon: int, customers: int, offset: int, seed: int,
                 behaviour: PolicyFactory, candidates: dict[str, PolicyFactory], *, gamma: float,
                 rng_seed: int, use_action_mask: bool = True) -> tuple[Truth, dict[str, Truth]]:
    """Behaviour's and candidates' true values (module docstring) on ``customers`` customers
    with global ids ``offset..offset+customers−1`` of world ``seed``."""
    env = envs.PopulationEnv(num_envs=customers, scenario=scenario, horizon=horizon, customer_offset=offset)
    discount = gamma ** np.arange(horizon)
    rngs = {name: np.random.default_rng([rng_seed, i]) for i, name in enumerate(["behaviour", *candidates])}
    logger = behaviour(env)
    judged = {name: f(env) for name, f in candidates.items()}
    one_week = {name: np.zeros(customers) for name in candidates}
    weeks_seen = np.zeros(customers)
    behaviour_return, behaviour_week = np.zeros(customers), np.zeros(customers)
    obs, info = env.reset(seed=seed)
    active = np.ones(customers, bool)
    for t in range(horizon):
        mask = info["action_mask"] if use_action_mask else None
        for name, policy in judged.items():
            world = copy.deepcopy(env)  # same state, same noise keys: the candidate's week instead
            actions, _ = policy.act(obs, rngs[name], action_mask=mask)
            one_week[name] += np.where(active, world.step(actions)[1], 0.0)
        weeks_seen += active
        actions, _ = logger.act(obs, rngs["behaviour"], action_mask=mask)
        obs, reward, terminated, _, info = env.step(actions)
        behaviour_return += discount[t] * np.where(active, reward, 0.0)
        behaviour_week += np.where(active, reward, 0.0)
        active &= ~terminated
    seq = {name: _on_policy_returns(env, policy, seed, horizon, discount, rngs[name], use_action_mask)
           for name, policy in judged.items()}

    def truth(returns: np.ndarray, week_sum: np.ndarray) -> Truth:
        v = week_sum.sum() / weeks_seen.sum()
        resid = week_sum - v * weeks_seen  # ratio estimator's linearisation
        return Truth(float(returns.mean()), float(returns.std(ddof=1) / np.sqrt(customers)), float(v),
                     float(np.sqrt(customers) * resid.std(ddof=1) / weeks_seen.sum()))

    return truth(behaviour_return, behaviour_week), {n: truth(seq[n], one_week[n]) for n in judged}


def _on_policy_returns(env: envs.PopulationEnv, policy: Any, seed: int, horizon: int, discount: np.ndarray,
                       rng: np.random.Generator, use_action_mask: bool) -> np.ndarray:
    """Per-customer discounted return of ``policy`` over each customer's first episode."""
    obs, info = env.reset(seed=seed)
    active = np.ones(env.num_envs, bool)
    returns = np.zeros(env.num_envs)
    for t in range(horizon):
        actions, _ = policy.act(obs, rng, action_mask=info["action_mask"] if use_action_mask else None)
        obs, reward, terminated, _, info = env.step(actions)
        returns += discount[t] * np.where(active, reward, 0.0)
        active &= ~terminated
    return returns


# ------------------------------------------------------------------------------ benchmark
def run_benchmark(settings: OPERunConfig, scenario: envs.Scenario, *, tracker: Any = None,
                  progress: bool = False) -> dict[str, Any]:
    """The experiment (module docstring) without tracking: returns the tables."""
    from rapport.experiments.tracking import NullTracker

    tracker = tracker if tracker is not None else NullTracker()
    b, H = settings.bench, settings.env.horizon
    r_min = b.reward_lower_bound if b.reward_lower_bound is not None else scenario_reward_lower_bound(scenario)
    ope_settings = settings.ope.settings(r_min, H)
    seeds = derive_seeds(settings.seed, b.replications, settings.evaluation.seed)
    behaviour = logging_policy_factory(settings, scenario, seeds, tracker, epsilon=b.behaviour_epsilon)
    candidates = {name: logging_policy_factory(replace(settings, agent=c.agent), scenario, seeds, tracker,
                                               epsilon=c.epsilon)
                  for name, c in settings.candidates.items()}
    rows, truths, promotions = [], [], []
    use_mask = settings.evaluation.use_action_mask
    timings = {"truth_s": 0.0, "log_s": 0.0, "estimate_s": 0.0}
    with bar(b.replications * len(b.sample_sizes), desc="ope benchmark", unit="log", enabled=progress) as pbar:
        for rep, world in enumerate(seeds.evaluation):
            t0 = time.perf_counter()
            truth_b, truth_c = ground_truth(scenario, H, settings.env.customers, max(b.sample_sizes), world, behaviour,
                                            candidates, gamma=settings.ope.gamma, rng_seed=seeds.policy + rep,
                                            use_action_mask=use_mask)
            timings["truth_s"] += time.perf_counter() - t0
            for name, tr in [("behaviour", truth_b), *truth_c.items()]:
                truths.append({"replication": rep, "candidate": name, "seq": tr.seq, "seq_se": tr.seq_se,
                               "bandit": tr.bandit, "bandit_se": tr.bandit_se})
            for n in b.sample_sizes:
                t0 = time.perf_counter()
                env = envs.PopulationEnv(num_envs=n, scenario=scenario, horizon=H)
                rng = np.random.default_rng([seeds.policy, rep, n])
                logged = collect_feedback(env, behaviour(env), seed=world, rng=rng, use_action_mask=use_mask)
                timings["log_s"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                evaluator = OffPolicyEvaluator(logged, ope_settings, rng)
                incumbent = evaluator.on_policy_value()["seq"]
                for name, factory in candidates.items():
                    report = evaluator.evaluate(factory(env), rng)
                    truth = {"seq": truth_c[name].seq, "bandit": truth_c[name].bandit}
                    for key, est in report.estimates.items():
                        view, estimator = key.split("/")
                        rows.append({"replication": rep, "n": n, "candidate": name, "view": view, "kind": "estimate",
                                     "estimator": estimator, "value": est.value, "ci_low": est.ci_low,
                                     "ci_high": est.ci_high, "truth": truth[view]})
                    for key, lb in report.lower_bounds.items():
                        view, bound = key.split("/")
                        rows.append({"replication": rep, "n": n, "candidate": name, "view": view, "kind": "bound",
                                     "estimator": bound, "value": lb.value_lower_bound, "ci_low": lb.value_lower_bound,
                                     "ci_high": np.inf, "truth": truth[view]})
                    if "seq/hcope_pdis" in report.lower_bounds:
                        d = promotion_decision(report.lower_bounds["seq/hcope_pdis"].value_lower_bound, incumbent,
                                               margin=b.promotion_margin, delta=settings.ope.delta)
                        promotions.append({"replication": rep, "n": n, "candidate": name, "promote": d.promote,
                                           "lower_bound": d.candidate_lower_bound, "incumbent_estimate": incumbent,
                                           "truly_better": truth_c[name].seq > truth_b.seq + b.promotion_margin})
                timings["estimate_s"] += time.perf_counter() - t0
                pbar.update(1)
    results = pd.DataFrame(rows)
    return {"results": results, "summary": summarize_benchmark(results), "truth": pd.DataFrame(truths),
            "promotions": pd.DataFrame(promotions), "reward_lower_bound": r_min, "timings": timings,
            "per_candidate": summarize_benchmark(results, by_candidate=True)}


def summarize_benchmark(results: pd.DataFrame, *, by_candidate: bool = False) -> pd.DataFrame:
    """Bias, RMSE, coverage and interval width per (view, estimator, n); validity and gap for bounds."""
    keys = ["view", "kind", "estimator", "n"] + (["candidate"] if by_candidate else [])
    df = results.assign(error=results.value - results.truth,
                        covered=(results.ci_low <= results.truth) & (results.truth <= results.ci_high),
                        width=results.ci_high - results.ci_low)
    out = df.groupby(keys, sort=False).agg(
        runs=("value", "size"), bias=("error", "mean"), rmse=("error", lambda e: float(np.sqrt(np.mean(e**2)))),
        sd=("value", "std"), coverage=("covered", "mean"), ci_width=("width", "mean"), mean_truth=("truth", "mean"))
    out = out.reset_index()
    bounds = out.kind == "bound"
    out.loc[bounds, "ci_width"] = np.nan
    out["gap"] = np.where(bounds, -out.bias, np.nan)  # truth − bound
    return out


def format_summary(summary: pd.DataFrame, alpha: float, delta: float) -> str:
    lines = []
    sizes = sorted(summary.n.unique())
    for view in ("bandit", "seq"):
        part = summary[(summary.view == view) & (summary.kind == "estimate")]
        if part.empty:
            continue
        lines.append(f"\n{view} view: bias / RMSE / coverage of the {1 - alpha:.0%} interval, per customers logged")
        lines.append(f"{'estimator':<12}" + "".join(f"{f'n={n}':>30}" for n in sizes))
        for est in dict.fromkeys(part.estimator):
            cells = []
            for n in sizes:
                r = part[(part.estimator == est) & (part.n == n)].iloc[0]
                cells.append(f"{r.bias:>+9.3f} {r.rmse:>9.3f} {r.coverage:>9.0%}")
            lines.append(f"{est:<12}" + "".join(f"{c:>30}" for c in cells))
    part = summary[summary.kind == "bound"]
    if not part.empty:
        lines.append(f"\nlower bounds: share <= truth (target >= {1 - delta:.0%}) / mean gap truth − bound")
        for (view, est), grp in part.groupby(["view", "estimator"], sort=False):
            cells = [f"n={r.n}: {r.coverage:.0%} / {r.gap:.3f}" for r in grp.itertuples()]
            lines.append(f"{view + '/' + est:<18}" + "   ".join(cells))
    return "\n".join(lines)


def benchmark_metrics(out: dict[str, Any]) -> dict[str, float]:
    """Flat metrics (module docstring glossary)."""
    m: dict[str, float] = {}
    for r in out["summary"].itertuples():
        base = f"ope_bench/{r.view}/{r.estimator}/n{r.n}"
        if r.kind == "estimate":
            m.update({f"{base}/bias": r.bias, f"{base}/rmse": r.rmse, f"{base}/coverage": r.coverage,
                      f"{base}/ci_width": r.ci_width})
        else:
            m.update({f"{base}/validity": r.coverage, f"{base}/gap": r.gap})
    promo = out["promotions"]
    if not promo.empty:
        for n, grp in promo.groupby("n"):
            m[f"ope_bench/promotion/n{n}/promote_rate"] = float(grp.promote.mean())
            m[f"ope_bench/promotion/n{n}/false_promotion_rate"] = float((grp.promote & ~grp.truly_better).mean())
    for (name, grp) in out["truth"].groupby("candidate"):
        m[f"ope_bench/truth/{name}/seq"] = float(grp.seq.mean())
        m[f"ope_bench/truth/{name}/bandit"] = float(grp.bandit.mean())
    return {k: float(v) for k, v in m.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}


def benchmark_figure(summary: pd.DataFrame, alpha: float) -> Any:
    """RMSE and interval coverage against the number of customers logged, per estimator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    est = summary[summary.kind == "estimate"]
    views = [v for v in ("bandit", "seq") if v in set(est.view)]
    fig, axes = plt.subplots(len(views), 2, figsize=(11, 3.8 * len(views)), squeeze=False)
    for i, view in enumerate(views):
        part = est[est.view == view]
        for name, grp in part.groupby("estimator", sort=False):
            axes[i, 0].plot(grp.n, grp.rmse, marker="o", label=name)
            axes[i, 1].plot(grp.n, grp.coverage, marker="o", label=name)
        axes[i, 0].set(xscale="log", yscale="log", xlabel="customers logged", ylabel="RMSE vs truth",
                       title=f"{view}: error")
        axes[i, 1].axhline(1 - alpha, color="black", lw=1, ls="--")
        axes[i, 1].set(xscale="log", ylim=(0, 1.02), xlabel="customers logged",
                       ylabel=f"coverage of {1 - alpha:.0%} interval", title=f"{view}: interval coverage")
        axes[i, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------ app
def run(cfg: DictConfig | OPERunConfig) -> dict[str, Any]:
    """Run the OPE-of-OPE benchmark and track it; returns the tables and the metrics."""
    from rapport.experiments.tracking import flatten_params, start_run

    settings = to_ope_config(cfg)
    with user_input():
        scenario = resolve_scenario(settings.env)
        check_agent(settings.agent, settings.env)
        for c in settings.candidates.values():
            check_agent(c.agent, settings.env)
        if settings.bench.reward_lower_bound is None:
            scenario_reward_lower_bound(scenario)  # raises when the scenario has no finite bound
    progress = progress_enabled(settings.progress)
    params = flatten_params(OmegaConf.to_container(OmegaConf.structured(settings)))
    tags = {"rapport.command": "ope", "rapport.behaviour": settings.agent.name,
            "rapport.candidates": ",".join(settings.candidates)}
    with start_run(settings.tracking, run_name=settings.tracking.run_name or f"ope-{settings.agent.name}-seed{settings.seed}",
                   params=params, tags=tags) as tracker:
        t0 = time.perf_counter()
        out = run_benchmark(settings, scenario, tracker=tracker, progress=progress)
        metrics = benchmark_metrics(out)
        metrics["ope_bench/time_s"] = time.perf_counter() - t0
        metrics["ope_bench/reward_lower_bound"] = out["reward_lower_bound"]
        tracker.log_metrics(metrics)
        text = format_summary(out["summary"], settings.ope.alpha, settings.ope.delta)
        if tracker.run_id is not None:
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp) / "ope_benchmark"
                folder.mkdir()
                for name in ("results", "summary", "per_candidate", "truth", "promotions"):
                    out[name].to_csv(folder / f"{name}.csv", index=False)
                (folder / "summary.txt").write_text(text + "\n")
                tracker.log_artifact(folder, "ope_benchmark")
            if settings.tracking.log_plots:
                import matplotlib.pyplot as plt

                fig = benchmark_figure(out["summary"], settings.ope.alpha)
                tracker.log_figure(fig, "plots/ope_benchmark.png")
                plt.close(fig)
    b = settings.bench
    print(f"[rapport] OPE benchmark: behaviour {settings.agent.name!r} + {b.behaviour_epsilon:.0%} exploration, "
          f"{len(settings.candidates)} candidates, {b.replications} worlds x sizes {list(b.sample_sizes)}, "
          f"{settings.env.horizon} weeks; truth on {settings.env.customers:,} other customers per world")
    print(text)
    out["metrics"] = metrics
    return out


def register_ope_config() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="rapport_ope_schema", node=OPERunConfig)


def main(argv: list[str] | None = None) -> None:
    """Console script ``rapport-ope`` (Hydra app over ``conf/ope.yaml``); ``argv``: the
    overrides (default: the command line). Failures print one line and exit non-zero."""
    import hydra

    register_ope_config()
    config_path = CONFIG_PATH

    @hydra.main(version_base="1.3", config_path=config_path, config_name="ope")
    def _app(cfg: DictConfig) -> None:
        with marks_failed_output():
            run(cfg)

    run_hydra_app(_app, argv, prog="rapport-ope")


if __name__ == "__main__":
    main()
