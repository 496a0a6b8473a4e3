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

import numpy as np
import pandas as pd

from rapport.experiments import builders
from rapport.experiments.config import RunConfig
from rapport.experiments.errors import UserError
from rapport.experiments.evaluation import EvalSettings, Summary, evaluate, summarize
from rapport.experiments.studies.spec import Study, StudyError
from rapport.experiments.studies.verdict import claim_verdict, combine
from rapport.experiments.tracking import NullTracker
from rapport.experiments.train import compose_settings


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
    world_vs_baseline: dict[str, list[str]] = field(default_factory=dict)
    """Per arm, the scenario fields in which its world differs from the baseline arm's."""


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
_MATCH = (("customers", "env.customers"), ("horizon", "env.horizon"),
          ("seeds", "evaluation seeds (from seed, evaluation.seed, evaluation.seeds)"),
          ("n_blocks", "evaluation.blocks"), ("annual_discount_rate", "evaluation.annual_discount_rate"))


def _check_same_populations(first: tuple[str, EvalSettings], arm: str, es: EvalSettings) -> None:
    ref_arm, ref = first
    for attr, key in _MATCH:
        if getattr(es, attr) != getattr(ref, attr):
            raise StudyError(f"arm {arm!r} is evaluated with {key}={getattr(es, attr)!r} but arm {ref_arm!r} "
                             f"with {getattr(ref, attr)!r}: the arms of a condition must meet the same "
                             "populations (common random numbers)")
    if es.scenario.name != ref.scenario.name:
        raise StudyError(f"arm {arm!r} is evaluated in scenario {es.scenario.name!r} but arm {ref_arm!r} in "
                         f"{ref.scenario.name!r}: arms of a condition share a world (they may differ in fields of "
                         "it, e.g. +env.overrides.mass_media.budget_schedule); put different worlds in conditions")


def world_difference(scenario: Any, reference: Any) -> list[str]:
    """The scenario fields (``submodel.field``) in which ``scenario`` differs from ``reference``."""
    a, b = scenario.to_dict(), reference.to_dict()
    out = []
    for k in sorted(set(a) | set(b)):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += [f"{k}.{f}" for f in sorted(set(a[k]) | set(b[k])) if a[k].get(f) != b[k].get(f)]
        elif a.get(k) != b.get(k):
            out.append(k)
    return out


def _compose(study: Study, condition: str, arm: str, overrides: list[str], what: str = "",
             extra: tuple[str, ...] = ()) -> tuple[RunConfig, Any]:
    try:
        return compose_settings(overrides)
    except Exception as err:  # name the arm whose overrides are wrong (or the command line's)
        from rapport.experiments.errors import describe

        code, line = describe(err)
        if code != 2:
            raise
        if extra and overrides[-len(extra):] == list(extra):
            try:
                compose_settings(overrides[:-len(extra)])
            except Exception:  # noqa: BLE001 - the arm's own overrides are wrong too
                pass
            else:
                raise UserError(f"study {study.name!r}: command-line override(s) {' '.join(extra)!r}: {line}") from err
        where = f"study {study.name!r}, condition {condition!r}, arm {arm!r}{', ' + what if what else ''}"
        raise UserError(f"{where}: {line}") from err


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def check_command_line(study: Study, extra: tuple[str, ...]) -> None:
    """Command-line overrides may not silently replace what an arm or condition sets."""
    for o in extra:
        if "=" not in o and not o.startswith("~"):
            raise StudyError(f"override {o!r} is not key=value (or ~key)")
        k = _key(o)
        for where, lists in (("arm", study.arms), ("condition", study.conditions), ("arm training world", study.train)):
            for name, ovs in lists.items():
                if any(_key(x) == k or _key(x).startswith(k + ".") for x in ovs):
                    raise StudyError(f"command-line override {o!r} would replace what {where} {name!r} of study "
                                     f"{study.name!r} sets ({k}); the arms are the study's — copy the study "
                                     "YAML and change it instead")


@dataclass
class _Arm:
    settings: RunConfig
    scenario: Any
    train_settings: RunConfig
    train_scenario: Any
    seeds: Any
    es: EvalSettings


def plan_condition(study: Study, condition: str, *, quick: bool = False,
                   extra: tuple[str, ...] = ()) -> dict[str, _Arm]:
    """Every arm's settings (evaluation and training world) and evaluation, checked; no work done."""
    from rapport.experiments.train import eval_settings

    arms: dict[str, _Arm] = {}
    first: tuple[str, EvalSettings] | None = None
    for arm in study.arms:
        settings, scenario = _compose(study, condition, arm, study.overrides(condition, arm, quick=quick, extra=extra),
                                      extra=extra)
        train_ov = study.train_overrides(condition, arm, quick=quick, extra=extra)
        train_settings, train_scenario = (settings, scenario) if train_ov is None else \
            _compose(study, condition, arm, train_ov, "training world")
        seeds = builders.derive_seeds(settings.seed, settings.evaluation.seeds, settings.evaluation.seed)
        es = eval_settings(settings, scenario, seeds)
        if first is None:
            first = (arm, es)
        else:
            _check_same_populations(first, arm, es)
        arms[arm] = _Arm(settings, scenario, train_settings, train_scenario, seeds, es)
    return arms


def plan_study(study: Study, *, quick: bool = False, extra: tuple[str, ...] = ()) -> dict[str, dict[str, _Arm]]:
    """Compose and check every condition × arm before anything trains (a typo in the last arm must
    not surface after hours of training)."""
    check_command_line(study, extra)
    plan = {cond: plan_condition(study, cond, quick=quick, extra=extra) for cond in study.conditions}
    for cond, arms in plan.items():
        ev = arms[study.baseline].settings.evaluation
        level = check_confidence(study, ev.confidence)
        tail = ev.bootstrap * (1.0 - level) / 2
        if study.correction != "none" and tail < MIN_TAIL_DRAWS:
            raise StudyError(
                f"{study.name}: correction={study.correction} judges each of {n_checks(study)} checks at "
                f"{level:.4%}, but evaluation.bootstrap={ev.bootstrap} leaves {tail:.1f} bootstrap draws in "
                f"each tail of the CI (condition {cond!r}); need >= {MIN_TAIL_DRAWS}: set "
                f"evaluation.bootstrap >= {int(np.ceil(2 * MIN_TAIL_DRAWS / (1.0 - level)))}")
    return plan


MIN_TAIL_DRAWS = 10
"""Fewest bootstrap draws beyond each end of a CI for its bounds to mean anything."""


def n_checks(study: Study) -> int:
    """Claims × the conditions each applies to: the family a multiplicity correction covers."""
    return sum(len(study.conditions) if c.condition is None else 1 for c in study.claims)


def check_confidence(study: Study, confidence: float) -> float:
    """The confidence each check is judged at (see :attr:`Study.correction`)."""
    if study.correction == "bonferroni":
        return 1.0 - (1.0 - confidence) / n_checks(study)
    return confidence


def run_condition(study: Study, condition: str, *, quick: bool = False, extra: tuple[str, ...] = (),
                  log: Any = print, plan: dict[str, _Arm] | None = None) -> ConditionResult:
    from rapport.experiments.training import train_agent

    plan = plan if plan is not None else plan_condition(study, condition, quick=quick, extra=extra)
    blocks, weekly, all_settings, t_train, t_eval, scen, worlds = [], [], {}, {}, {}, {}, {}
    for arm, a in plan.items():
        t0 = time.perf_counter()
        trained = train_agent(a.train_settings, a.seeds, a.train_scenario, NullTracker(), progress=False)
        t1 = time.perf_counter()
        role = "baseline" if arm == study.baseline else "policy"
        ev = evaluate({arm: trained.policy_factory}, a.es, roles={arm: role})
        t2 = time.perf_counter()
        blocks.append(ev.blocks)
        weekly.append(ev.weekly)
        all_settings[arm], t_train[arm], t_eval[arm], scen[arm] = a.settings, t1 - t0, t2 - t1, a.scenario.name
        worlds[arm] = world_difference(a.scenario, plan[study.baseline].scenario)
        log(f"[study {study.name}] {condition}/{arm}: trained in {t1 - t0:.1f} s, evaluated in {t2 - t1:.1f} s")
    base = all_settings[study.baseline]
    bseeds = builders.derive_seeds(base.seed, base.evaluation.seeds, base.evaluation.seed)
    block_frame = pd.concat(blocks, ignore_index=True)
    summary = summarize(block_frame, baseline=study.baseline, n_boot=base.evaluation.bootstrap,
                        confidence=base.evaluation.confidence, seed=bseeds.policy)
    return ConditionResult(condition, summary, block_frame, pd.concat(weekly, ignore_index=True),
                           all_settings, scen, t_train, t_eval, worlds)


def judge(study: Study, results: dict[str, ConditionResult]) -> tuple[str, pd.DataFrame]:
    """Every claim in every condition it applies to, and the study's verdict."""
    rows = []
    for cond, res in results.items():
        base = res.settings[study.baseline]
        seed = builders.derive_seeds(base.seed, base.evaluation.seeds, base.evaluation.seed).policy
        level = check_confidence(study, base.evaluation.confidence)
        cache: dict[str, Summary] = {study.baseline: res.summary} if level == base.evaluation.confidence else {}
        for i, c in enumerate(study.claims):
            if c.condition not in (None, cond):
                continue
            if c.versus not in cache:
                cache[c.versus] = summarize(res.blocks, baseline=c.versus, n_boot=base.evaluation.bootstrap,
                                            confidence=level, seed=seed)
            d = cache[c.versus].diffs
            hit = d[(d.policy == c.policy) & (d.key == c.key)].iloc[0]
            means = res.summary.kpis.set_index(["policy", "key"])["mean"]
            rows.append({"condition": cond, "index_in_spec": i, "claim": c.describe(), "policy": c.policy, "versus": c.versus,
                         "kpi": c.key, "expect": c.expect, "policy_mean": means[(c.policy, c.key)],
                         "versus_mean": means[(c.versus, c.key)], "diff": hit["diff"], "ci_low": hit.ci_low,
                         "ci_high": hit.ci_high, "confidence": level, "verdict": claim_verdict(c.expect, hit.ci_low, hit.ci_high, tol=ROUNDING * (
                             1.0 + abs(means[(c.policy, c.key)]) + abs(means[(c.versus, c.key)]))),
                         "why": c.why})
    claims = pd.DataFrame(rows)
    return combine(list(claims.verdict), study.rule), claims


def run_study(study: Study, *, quick: bool = False, extra: tuple[str, ...] | list[str] = (),
              log: Any = print) -> StudyResult:
    """Run every condition of ``study`` and judge it; ``extra``: overrides applied to every arm last."""
    t0 = time.perf_counter()
    extra = tuple(extra)
    plan = plan_study(study, quick=quick, extra=extra)
    results = {cond: run_condition(study, cond, log=log, plan=plan[cond]) for cond in study.conditions}
    verdict, claims = judge(study, results)
    return StudyResult(study, verdict, claims, results, time.perf_counter() - t0, quick, extra)
