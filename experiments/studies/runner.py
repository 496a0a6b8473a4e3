"""Running a study: compose each arm's settings as ``rapport-train`` would, train it (baselines
build, bandits learn online, RL agents train with Stable-Baselines3) on its own training
population, evaluate every arm of a condition on the same evaluation populations (common random
numbers), and judge the claims on paired bootstrap CIs (:mod:`rapport.experiments.studies.verdict`).

Arms of one condition must meet the same populations: the same customers, weeks, evaluation
seeds and blocks (they may differ in the world otherwise, e.g. the mass-media budget, which is
how a budget split is compared); a study whose arms disagree fails naming the arm and the key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from rapport.experiments import builders
from rapport.experiments.config import RunConfig, register_configs
from rapport.experiments.errors import UserError
from rapport.experiments.evaluation import EvalSettings, Summary, evaluate, summarize
from rapport.experiments.studies.spec import Study, StudyError
from rapport.experiments.studies.verdict import claim_verdict, combine
from rapport.experiments.tracking import NullTracker


def compose_settings(overrides: list[str]) -> tuple[RunConfig, Any]:
    """Validated ``rapport-train`` settings (and the scenario) for these overrides."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from rapport.experiments.train import validate

    register_configs()
    if GlobalHydra.instance().is_initialized():  # e.g. called from inside another Hydra app
        GlobalHydra.instance().clear()
    with initialize_config_module(config_module="rapport.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    return validate(cfg)


@dataclass
class ConditionResult:
    """One condition of a study: every arm on the same populations."""

    name: str
    summary: Summary
    blocks: pd.DataFrame
    weekly: pd.DataFrame
    settings: dict[str, RunConfig]
    """Each arm's evaluation settings (an arm with ``train`` overrides learnt in another world)."""
    scenarios: dict[str, str]
    """Each arm's scenario name (arms may differ in the world, e.g. a mass-media budget)."""
    train_seconds: dict[str, float]
    eval_seconds: dict[str, float]


@dataclass
class StudyResult:
    study: Study
    verdict: str
    claims: pd.DataFrame
    """One row per (condition, claim): diff, ci_low, ci_high (policy − versus, paired), verdict."""
    conditions: dict[str, ConditionResult]
    seconds: float
    quick: bool
    overrides: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)


ROUNDING = 1e-9
"""Relative size of a difference that is rounding error (sums in a different order), not evidence."""
_MATCH = (("customers", "env.customers"), ("horizon", "env.horizon"), ("seeds", "evaluation seeds"),
          ("n_blocks", "evaluation.blocks"), ("annual_discount_rate", "evaluation.annual_discount_rate"))


def _check_same_populations(first: tuple[str, EvalSettings], arm: str, es: EvalSettings) -> None:
    ref_arm, ref = first
    for attr, key in _MATCH:
        if getattr(es, attr) != getattr(ref, attr):
            raise StudyError(f"arm {arm!r} is evaluated with {key}={getattr(es, attr)!r} but arm {ref_arm!r} "
                             f"with {getattr(ref, attr)!r}: the arms of a condition must meet the same "
                             "populations (common random numbers)")


def _compose(study: Study, condition: str, arm: str, overrides: list[str], what: str = "") -> tuple[RunConfig, Any]:
    try:
        return compose_settings(overrides)
    except Exception as err:  # name the arm whose overrides are wrong
        from rapport.experiments.errors import describe

        code, line = describe(err)
        if code == 2:
            where = f"study {study.name!r}, condition {condition!r}, arm {arm!r}{', ' + what if what else ''}"
            raise UserError(f"{where}: {line}") from err
        raise


def run_condition(study: Study, condition: str, *, quick: bool = False, extra: tuple[str, ...] = (),
                  log: Any = print) -> ConditionResult:
    from rapport.experiments.train import eval_settings
    from rapport.experiments.training import train_agent

    blocks, weekly, all_settings, t_train, t_eval, scen = [], [], {}, {}, {}, {}
    first: tuple[str, EvalSettings] | None = None
    for arm in study.arms:
        settings, scenario = _compose(study, condition, arm, study.overrides(condition, arm, quick=quick, extra=extra))
        train_ov = study.train_overrides(condition, arm, quick=quick, extra=extra)
        train_settings, train_scenario = (settings, scenario) if train_ov is None else \
            _compose(study, condition, arm, train_ov, "training world")
        seeds = builders.derive_seeds(settings.seed, settings.evaluation.seeds, settings.evaluation.seed)
        es = eval_settings(settings, scenario, seeds)
        if first is None:
            first = (arm, es)
        else:
            _check_same_populations(first, arm, es)
        t0 = time.perf_counter()
        trained = train_agent(train_settings, seeds, train_scenario, NullTracker(), progress=False)
        t1 = time.perf_counter()
        role = "baseline" if arm == study.baseline else "policy"
        ev = evaluate({arm: trained.policy_factory}, es, roles={arm: role})
        t2 = time.perf_counter()
        blocks.append(ev.blocks)
        weekly.append(ev.weekly)
        all_settings[arm], t_train[arm], t_eval[arm], scen[arm] = settings, t1 - t0, t2 - t1, scenario.name
        log(f"[study {study.name}] {condition}/{arm}: trained in {t1 - t0:.1f} s, evaluated in {t2 - t1:.1f} s")
    base = all_settings[study.baseline]
    bseeds = builders.derive_seeds(base.seed, base.evaluation.seeds, base.evaluation.seed)
    block_frame = pd.concat(blocks, ignore_index=True)
    summary = summarize(block_frame, baseline=study.baseline, n_boot=base.evaluation.bootstrap,
                        confidence=base.evaluation.confidence, seed=bseeds.policy)
    return ConditionResult(condition, summary, block_frame, pd.concat(weekly, ignore_index=True),
                           all_settings, scen, t_train, t_eval)


def judge(study: Study, results: dict[str, ConditionResult]) -> tuple[str, pd.DataFrame]:
    """Every claim in every condition it applies to, and the study's verdict."""
    rows = []
    for cond, res in results.items():
        base = res.settings[study.baseline]
        seed = builders.derive_seeds(base.seed, base.evaluation.seeds, base.evaluation.seed).policy
        cache: dict[str, Summary] = {study.baseline: res.summary}
        for c in study.claims_in(cond):
            if c.versus not in cache:
                cache[c.versus] = summarize(res.blocks, baseline=c.versus, n_boot=base.evaluation.bootstrap,
                                            confidence=base.evaluation.confidence, seed=seed)
            d = cache[c.versus].diffs
            hit = d[(d.policy == c.policy) & (d.key == c.key)].iloc[0]
            means = res.summary.kpis.set_index(["policy", "key"])["mean"]
            rows.append({"condition": cond, "claim": c.describe(), "policy": c.policy, "versus": c.versus,
                         "kpi": c.key, "expect": c.expect, "policy_mean": means[(c.policy, c.key)],
                         "versus_mean": means[(c.versus, c.key)], "diff": hit["diff"], "ci_low": hit.ci_low,
                         "ci_high": hit.ci_high, "verdict": claim_verdict(c.expect, hit.ci_low, hit.ci_high, tol=ROUNDING * (
                             1.0 + abs(means[(c.policy, c.key)]) + abs(means[(c.versus, c.key)]))),
                         "why": c.why})
    claims = pd.DataFrame(rows)
    return combine(list(claims.verdict), study.rule), claims


def run_study(study: Study, *, quick: bool = False, extra: tuple[str, ...] | list[str] = (),
              log: Any = print) -> StudyResult:
    """Run every condition of ``study`` and judge it; ``extra``: overrides applied to every arm last."""
    t0 = time.perf_counter()
    extra = tuple(extra)
    results = {cond: run_condition(study, cond, quick=quick, extra=extra, log=log) for cond in study.conditions}
    verdict, claims = judge(study, results)
    return StudyResult(study, verdict, claims, results, time.perf_counter() - t0, quick, extra)
