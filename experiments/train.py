"""``rapport-train``: train (or build) an agent on a scenario, evaluate it, track it in MLflow.

    rapport-train agent=linucb env=retail seed=3
    rapport-train -m agent=ppo,linucb,mass seed=0,1,2             # parent run + nested children
    rapport-train -m experiment=demo hydra/launcher=joblib          # a named comparison, 2 processes
    rapport-train agent=mass debug=fast tracking=none               # seconds, records nothing

``run(cfg)`` is the importable entry point (tests and sweeps call it); ``main`` is the thin
``@hydra.main`` wrapper. Order of work: validate everything (config types and ranges, scenario,
agent params, baseline) → open the tracked run → log params, resolved config, seeds, scenario
version and git commit → train (per-iteration metrics) → evaluate the agent, the baseline and
the oracle on common random numbers → log KPIs with CIs, paired differences, regret, tables,
plots and the policy model; judge the run's ``guardrails`` on the agent (``guardrail/passed``,
tag ``rapport.guardrails``). Returns the agent's metrics (``dict[str, float]``).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rapport.experiments import builders, guardrails
from rapport.experiments.config import (
    CONFIG_PATH,
    RunConfig,
    check_evaluation_fits,
    register_configs,
    to_settings,
)
from rapport.experiments.errors import marks_failed_output, run_hydra_app, user_input
from rapport.experiments.evaluation import (
    EvalSettings,
    Evaluation,
    Summary,
    format_table,
    segment_table,
    summarize,
)
from rapport.experiments.progress import progress_enabled
from rapport.experiments.segments import SEGMENTS_TAG, segments_table, segments_tag
from rapport.experiments.sharding import evaluate_configured
from rapport.experiments.tracking import Tracker, flatten_params, multirun_parent, start_run

ORACLE = builders.MYOPIC_ORACLE


def validate(cfg: DictConfig | RunConfig) -> tuple[RunConfig, Any]:
    """Everything that can be checked without doing the work: raises
    :class:`~rapport.experiments.errors.UserError` (a ValueError) naming the key."""
    settings = to_settings(cfg)
    with user_input():
        if settings.agent is None:
            raise ValueError("agent is not set: choose one with agent=<name> (files in conf/agent/)")
        check_evaluation_fits(settings)
        scenario = builders.resolve_scenario(settings.env)
        builders.check_agent(settings.agent, settings.env)
        if settings.evaluation.baseline is not None:
            builders.check_agent(settings.evaluation.baseline, settings.env)
    return settings, scenario


def compose_settings(overrides: list[str]) -> tuple[RunConfig, Any]:
    """Validated settings (and the scenario) of ``rapport-train`` with these overrides, composed
    from the packaged ``conf/`` outside a Hydra app (studies, benchmark scripts)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    if GlobalHydra.instance().is_initialized():  # e.g. called from inside another Hydra app
        GlobalHydra.instance().clear()
    with initialize_config_module(config_module="rapport.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    return validate(cfg)


def default_label(settings: RunConfig, parent: dict[str, Any] | None) -> str:
    """Agent name, plus the values of keys a multirun sweeps (other than seeds and the agent)."""
    if settings.label:
        return settings.label
    label = settings.agent.name
    swept = [k for k in (parent or {}).get("swept_keys", []) if k not in ("seed", "agent", "evaluation.seed")]
    if swept:
        from hydra.core.hydra_config import HydraConfig

        task = {o.split("=", 1)[0].lstrip("+~"): o.split("=", 1)[1]
                for o in HydraConfig.get().overrides.task if "=" in o}
        parts = [f"{k}={task[k]}" for k in swept if k in task]
        if parts:
            label += "[" + ",".join(parts) + "]"
    return label


def eval_settings(settings: RunConfig, scenario: Any, seeds: builders.Seeds) -> EvalSettings:
    e = settings.evaluation
    return EvalSettings(scenario, settings.env.customers, settings.env.horizon, seeds.evaluation, blocks=e.blocks,
                        annual_discount_rate=e.annual_discount_rate, short_term_weeks=e.short_term_weeks,
                        use_action_mask=e.use_action_mask, policy_seed=seeds.policy)


def scenario_tags(scenario: Any) -> dict[str, str]:
    digest = hashlib.sha256(json.dumps(scenario.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:12]
    return {"scenario.name": scenario.name, "scenario.version": scenario.version, "scenario.sha": digest}


def _hydra_tags() -> dict[str, str]:
    """The command line's overrides and the chosen config options, when run by Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra/") and v is not None}
    return {"rapport.overrides": " ".join(hc.overrides.task)[:5000],
            "rapport.config_choices": json.dumps(choices, sort_keys=True)[:5000]}


def run(cfg: DictConfig | RunConfig, *, parent_run_id: str | None = None) -> dict[str, float]:
    """Train and evaluate the configured agent; returns its metrics (glossary keys)."""
    from rapport.experiments.training import train_agent

    settings, scenario = validate(cfg)
    seeds = builders.derive_seeds(settings.seed, settings.evaluation.seeds, settings.evaluation.seed)
    parent = multirun_parent()
    parent_run_id = parent_run_id or (parent or {}).get("run_id")
    label = default_label(settings, parent)
    progress = progress_enabled(settings.progress)
    es = eval_settings(settings, scenario, seeds)
    resolved = OmegaConf.to_yaml(OmegaConf.structured(settings))
    params = {**flatten_params(OmegaConf.to_container(OmegaConf.structured(settings))), **seeds.as_params()}
    tags = {"rapport.command": "train", "rapport.label": label, "rapport.agent": settings.agent.name,
            "rapport.family": settings.agent.family, "rapport.eval_fingerprint": es.fingerprint(),
            **scenario_tags(scenario), **_hydra_tags()}
    agent = settings.agent
    with start_run(settings.tracking, run_name=settings.tracking.run_name or f"{label}-seed{settings.seed}",
                   params=params, tags=tags, parent_run_id=parent_run_id) as tracker:
        tracker.log_text(resolved, "config.yaml")
        trained = train_agent(settings, seeds, scenario, tracker, progress=progress)

        policies: dict[str, Any] = {label: trained.policy_factory}
        roles = {label: "agent"}
        base = settings.evaluation.baseline
        if base is not None and (base.target, base.params) != (agent.target, agent.params):
            policies[base.name] = builders.policy_factory(base, settings.constraints_for(base))
            roles[base.name] = "baseline"
        baseline_name = base.name if base is not None else None
        if base is not None and base.name not in policies:  # the agent is the baseline itself
            baseline_name = label
        refs = {"oracle": None, "long_term_oracle": None}
        for name, (factory, role, target) in builders.reference_oracles(settings.evaluation,
                                                                         settings.constraints).items():
            if target != agent.target:
                policies[name], roles[name], refs[role] = factory, role, name
        if builders.needs_latent_truth(agent):  # an oracle job: the agent is its own reference
            refs["long_term_oracle" if agent.target.endswith(".LongTermOracle") else "oracle"] = label
        ev = evaluate_configured(policies, es, settings, roles=roles, progress=progress)
        summary = summarize(ev, baseline=baseline_name, oracle=refs["oracle"],
                            long_term_oracle=refs["long_term_oracle"], n_boot=settings.evaluation.bootstrap,
                            confidence=settings.evaluation.confidence, seed=seeds.policy)
        metrics = summary.metrics(label)
        checks = guardrails.judge(settings.guardrail_rules, metrics, horizon=settings.env.horizon,
                                  is_baseline=baseline_name == label)
        metrics.update(guardrails.metrics_of(checks))
        if checks:
            tracker.set_tags({guardrails.TAG: guardrails.verdict(checks)[:5000]})
        rules = None
        if settings.evaluation.distill_depth > 0 and not builders.needs_latent_truth(agent):
            from rapport.experiments.distill import RULES_TAG, distill_for_run

            distilled, rules = distill_for_run(trained.policy_factory, settings, scenario, es.seeds[0])
            metrics.update(distilled)
            tracker.set_tags({RULES_TAG: rules[:5000]})  # the policy card reads tags
            tracker.log_text(rules + "\n", "evaluation/rules.txt")
        tracker.log_metrics(metrics)
        _log_outputs(tracker, settings, trained, ev, summary, label, scenario)
        print(f"\n[rapport] {label}: {settings.env.customers:,} customers x {settings.env.horizon} weeks x "
              f"{len(es.seeds)} populations, scenario {scenario.name!r} v{scenario.version}")
        print(format_table(summary))
        if checks:
            print(f"[rapport] {label} guardrails: {guardrails.verdict(checks)}")
        if rules is not None:
            print(f"[rapport] {label} as rules (fidelity {metrics['distill/fidelity']:.2f} on the first evaluation "
                  f"population; lifetime value of the rules − the agent's {metrics['distill/lifetime_value_diff']:+.2f} "
                  f"[{metrics['distill/lifetime_value_diff/ci_low']:+.2f}, {metrics['distill/lifetime_value_diff/ci_high']:+.2f}]):\n{rules}")
        if tracker.run_id:
            print(f"[rapport] MLflow run {tracker.run_id} (experiment {settings.tracking.experiment!r})")
    return metrics


def _log_outputs(tracker: Tracker, settings: RunConfig, trained: Any, ev: Evaluation, summary: Summary,
                 label: str, scenario: Any) -> None:
    """Tables, plots and the policy model (skipped for the null tracker)."""
    if tracker.run_id is None:
        return
    from rapport.experiments import plots
    from rapport.experiments.policy_store import save_policy

    segments = segments_table(ev.segments) if ev.segments is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "evaluation"
        folder.mkdir()
        ev.blocks.to_parquet(folder / "blocks.parquet", index=False)
        ev.weekly.to_csv(folder / "weekly.csv", index=False)
        summary.kpis.to_csv(folder / "kpis.csv", index=False)
        summary.diffs.to_csv(folder / "paired_differences.csv", index=False)
        summary.regret.to_csv(folder / "regret.csv", index=False)
        segment_table(summary).to_csv(folder / "segments_by_stage.csv", index=False)
        if segments is not None:  # by stage and value decile, channel and offer type
            segments.to_csv(folder / "segments.csv", index=False)
        summary.short_vs_long.to_csv(folder / "short_vs_long.csv", index=False)
        (folder / "summary.txt").write_text(format_table(summary) + "\n")
        tracker.log_artifact(folder, "evaluation")
    tag = segments_tag(segments, label) if segments is not None else None
    if tag is not None:  # the policy card reads the run's metrics and tags, not its artifacts
        tracker.set_tags({SEGMENTS_TAG: tag})
    if settings.tracking.log_plots:
        figs = {"plots/kpi_bars.png": plots.kpi_bars(summary.kpis, title=f"{label}: KPIs per customer"),
                "plots/cumulative_profit.png": plots.cumulative_profit(ev.weekly)}
        if segments is not None:
            figs["plots/segments.png"] = plots.segment_contact_rates(segments, title=f"{label}: contact rate per segment")
        if trained.learning_curve_key and trained.history:
            figs["plots/learning_curve.png"] = plots.learning_curve(trained.history, trained.learning_curve_key,
                                                                   title=f"{label}: {trained.learning_curve_key}")
        for name, fig in figs.items():
            tracker.log_figure(fig, name)
            plots.close(fig)
    if settings.tracking.log_model:
        if trained.core_policy is None and trained.sb3_model is None:
            tracker.set_tags({"rapport.model": "not logged: the policy reads latent truth (oracle)"})
            return
        import pandas as pd

        env = builders.make_env(settings.env, customers=5, scenario=scenario)
        obs, _ = env.reset(seed=0)
        example = pd.DataFrame(obs, columns=list(env.feature_names))
        with tempfile.TemporaryDirectory() as tmp:
            folder = save_policy(Path(tmp) / "policy", schema=builders.schema_of(env), agent=settings.agent,
                                 constraints=settings.agent_constraints, core_policy=trained.core_policy,
                                 sb3_model=trained.sb3_model, greedy=settings.agent.eval_mode == "greedy",
                                 obs_normalization=trained.obs_normalization)
            uri = tracker.log_policy_model(folder, input_example=example)
        if uri:
            tracker.set_tags({"rapport.model_uri": uri})


def main(argv: list[str] | None = None) -> None:
    """Console script ``rapport-train`` (Hydra app over ``conf/train.yaml``); ``argv``: the
    overrides (default: the command line). Failures print one line and exit non-zero
    (:mod:`rapport.experiments.errors`)."""
    import hydra

    register_configs()
    config_path = CONFIG_PATH

    @hydra.main(version_base="1.3", config_path=config_path, config_name="train")
    def _app(cfg: DictConfig) -> float | None:
        with marks_failed_output():
            metrics = run(cfg)
            objective = to_settings(cfg).sweep.objective
            return metrics.get(objective)

    run_hydra_app(_app, argv, prog="rapport-train")


if __name__ == "__main__":
    main()
