"""A study's report: markdown a marketer reads (the question, the hypothesis, the verdict, each
claim with its paired CI, and per condition every arm's profit, lifetime value, churn, opt-outs
and contacts with CIs and paired differences), its plots, CSVs, and the MLflow parent run (the
verdict as tags and metrics; one child run per condition × arm with its KPIs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from rapport.experiments.studies.runner import StudyResult
from rapport.experiments.studies.spec import KPI_ALIASES, QUICK

SHOWN = ("profit", "lifetime_value", "churned", "opt_outs", "contacts")
"""The five numbers every result shows together (design.md §6)."""
_DIGITS = {"profit": 2, "lifetime_value": 2, "churned": 3, "opt_outs": 3, "contacts": 1}


def _ci(mean: float, lo: float, hi: float, d: int, sign: bool = False) -> str:
    f = f"{{:{'+' if sign else ''}.{d}f}}"
    return f"{f.format(mean)} [{f.format(lo)}, {f.format(hi)}]"


def kpi_table(result: StudyResult, condition: str) -> str:
    """Markdown: per arm, the five KPIs with CIs, and the paired Δ against the study's baseline."""
    res = result.conditions[condition]
    s = res.summary
    k = s.kpis.set_index(["policy", "key"])
    d = s.diffs.set_index(["policy", "key"]) if len(s.diffs) else None
    head = ["arm"] + [n.replace("_", " ") for n in SHOWN] + [f"Δ {n.replace('_', ' ')}" for n in SHOWN[:4]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm in result.study.arms:
        cells = [arm + (" (baseline)" if arm == result.study.baseline else "")]
        for n in SHOWN:
            r = k.loc[(arm, KPI_ALIASES[n])]
            cells.append(_ci(r["mean"], r.ci_low, r.ci_high, _DIGITS[n]))
        for n in SHOWN[:4]:
            if d is None or (arm, KPI_ALIASES[n]) not in d.index:
                cells.append("—")
            else:
                r = d.loc[(arm, KPI_ALIASES[n])]
                cells.append(_ci(r["diff"], r.ci_low, r.ci_high, _DIGITS[n], sign=True))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def claims_table(result: StudyResult) -> str:
    lines = ["| condition | claim | policy mean | versus mean | Δ = policy − versus (paired) [CI] | verdict |",
             "|---|---|---|---|---|---|"]
    for r in result.claims.itertuples():
        lines.append(f"| {r.condition} | {r.claim} | {r.policy_mean:.3f} | {r.versus_mean:.3f} | "
                     f"{_ci(r.diff, r.ci_low, r.ci_high, 3, sign=True)} | **{r.verdict}** |")
    return "\n".join(lines)


def to_markdown(result: StudyResult, figures: dict[str, str] | None = None) -> str:
    st = result.study
    first = next(iter(result.conditions.values()))
    base = first.settings[st.baseline]
    conf = first.summary.confidence
    lines = [f"# Study `{st.name}` (version {st.version}){' — quick' if result.quick else ''}", "",
             f"**Question.** {st.question}", "", f"**Hypothesis.** {st.hypothesis}", "",
             f"**Verdict: {result.verdict}** (rule `{st.rule}` over {len(st.claims)} claim(s) in "
             f"{len(result.conditions)} condition(s) = {len(result.claims)} check(s); each is judged on the paired "
             f"{level_text(result, conf)} bootstrap CI of policy − versus: supported when it excludes 0 on the "
             "expected side, contradicted when it excludes 0 on the other, inconclusive otherwise; "
             f"{correction_text(result)}). Means per customer: $ for profit and "
             "lifetime value, shares for churned, counts for opt-outs and contacts.", "",
             claims_table(result), ""]
    whys = [(r.claim, r.why) for r in result.claims.itertuples() if r.why]
    for claim, why in dict(whys).items():
        lines.append(f"- *{claim}*: {why}")
    if whys:
        lines.append("")
    if st.notes:
        lines += [f"**Notes.** {st.notes}", ""]
    for cond, res in result.conditions.items():
        s = res.settings[st.baseline]
        lines += [f"## Condition `{cond}`" if len(result.conditions) > 1 else "## Results", "",
                  f"{s.env.customers:,} customers × {s.env.horizon} weeks × {len(res.summary.seeds)} evaluation "
                  f"population(s) (seeds {', '.join(map(str, res.summary.seeds))}), scenario "
                  f"`{res.scenarios[st.baseline]}`; per customer, [{conf:.0%} CI]; Δ is paired against `{st.baseline}` "
                  "(common random numbers).", "", kpi_table(result, cond), ""]
        if figures and cond in figures:
            lines += [f"![{cond}]({figures[cond]})", ""]
        lines += ["| arm | overrides | world differs from the baseline's in | train s | evaluate s |",
                  "|---|---|---|---|---|"]
        for arm in st.arms:
            ov = " ".join(st.arms[arm]) or "—"
            if arm in st.train:
                ov += f"`; trained with `{' '.join(st.train[arm])}"
            world = ", ".join(res.world_vs_baseline.get(arm, [])) or "—"
            lines.append(f"| {arm} | `{ov}` | {world} | {res.train_seconds[arm]:.1f} | {res.eval_seconds[arm]:.1f} |")
        lines.append("")
    lines += [f"Base overrides: `{' '.join(st.base) or '—'}`; condition overrides: "
              + "; ".join(f"{c}: `{' '.join(o) or '—'}`" for c, o in st.conditions.items())
              + (f"; --quick: `{' '.join((*QUICK, *st.quick))}` (after base)" if result.quick else "")
              + (f"; command line: `{' '.join(result.overrides)}`" if result.overrides else "")
              + f". Bootstrap resamples: {base.evaluation.bootstrap}. Wall time {result.seconds:.0f} s.", ""]
    return "\n".join(lines)


def diff_figure(result: StudyResult, condition: str) -> Any:
    """One panel per KPI (profit, lifetime value, churned, opt-outs): each arm's paired Δ against
    the baseline with its CI."""
    from rapport.experiments.plots import plt

    s = result.conditions[condition].summary
    arms = [a for a in result.study.arms if a != result.study.baseline]
    fig, axes = plt.subplots(1, 4, figsize=(13, 0.45 * len(arms) + 1.6), sharey=True)
    for ax, n in zip(axes, SHOWN[:4], strict=True):
        d = s.diffs[s.diffs.key == KPI_ALIASES[n]].set_index("policy").reindex(arms)
        y = range(len(arms))
        ax.errorbar(d["diff"], y, xerr=[d["diff"] - d.ci_low, d.ci_high - d["diff"]], fmt="o", capsize=3)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_title(f"Δ {n.replace('_', ' ')}", fontsize=9)
        ax.set_yticks(list(y), arms, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(f"{result.study.name} · {condition}: paired difference against {result.study.baseline}", fontsize=10)
    fig.tight_layout()
    return fig


def write_report(result: StudyResult, out_dir: str | Path) -> dict[str, Path]:
    """``report.md``, ``claims.csv``, ``kpis.csv`` and one ``<condition>.png`` per condition."""
    from rapport.experiments.plots import close

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    figures = {}
    for cond in result.conditions:
        fig = diff_figure(result, cond)
        p = out / f"{cond}.png"
        fig.savefig(p, dpi=110)
        close(fig)
        figures[cond], paths[cond] = p.name, p
    result.claims.to_csv(out / "claims.csv", index=False)
    kpis = pd.concat([r.summary.kpis.assign(condition=c) for c, r in result.conditions.items()], ignore_index=True)
    kpis.to_csv(out / "kpis.csv", index=False)
    (out / "report.md").write_text(to_markdown(result, figures))
    paths.update(report=out / "report.md", claims=out / "claims.csv", kpis=out / "kpis.csv")
    return paths


def claim_metrics(result: StudyResult) -> dict[str, float]:
    """``study/<condition>/claim_<i>/{diff,ci_low,ci_high,verdict_code}`` (``i``: the claim's index in
    the study's ``claims``; verdict code 1 supported, 0 inconclusive, −1 contradicted),
    ``study/verdict_code`` and ``study/wall_seconds``."""
    m: dict[str, float] = {}
    for r in result.claims.itertuples():
        k = f"study/{r.condition}/claim_{r.index_in_spec}"
        m[f"{k}/diff"], m[f"{k}/ci_low"], m[f"{k}/ci_high"] = r.diff, r.ci_low, r.ci_high
        m[f"{k}/verdict_code"] = {"supported": 1.0, "inconclusive": 0.0, "contradicted": -1.0}[r.verdict]
    m["study/verdict_code"] = {"supported": 1.0, "inconclusive": 0.0, "contradicted": -1.0}[result.verdict]
    m["study/wall_seconds"] = result.seconds
    return m


def log_to_mlflow(result: StudyResult, paths: dict[str, Path]) -> str | None:
    """The study's parent run (verdict tags, claim metrics, the report as artifacts) and a child
    run per condition × arm with its KPIs; returns the parent's run id (None when not tracked)."""
    from omegaconf import OmegaConf

    from rapport.experiments.tracking import flatten_params, start_run

    st = result.study
    first = next(iter(result.conditions.values()))
    tracking = first.settings[st.baseline].tracking
    if tracking.backend == "none":
        return None
    tags = {"rapport.command": "study", "rapport.study": st.name, "rapport.study.version": str(st.version),
            "rapport.verdict": result.verdict, "rapport.study.quick": str(result.quick).lower(),
            "rapport.hypothesis": st.hypothesis[:5000]}
    for r in result.claims.itertuples():
        tags[f"rapport.claim.{r.condition}.{r.index_in_spec}"] = f"{r.claim}: {r.verdict}"
    with start_run(tracking, run_name=f"study-{st.name}-v{st.version}", tags=tags,
                   params={"study.name": st.name, "study.version": st.version, "study.rule": st.rule,
                           "study.quick": result.quick, "study.overrides": " ".join(result.overrides)[:5000]}) as parent:
        parent.log_metrics(claim_metrics(result))
        for p in paths.values():
            parent.log_artifact(p, "study")
        for cond, res in result.conditions.items():
            for arm, settings in res.settings.items():
                params = flatten_params(OmegaConf.to_container(OmegaConf.structured(settings)))
                with start_run(tracking, run_name=f"{st.name}/{cond}/{arm}", params=params,
                               tags={"rapport.command": "study-arm", "rapport.study": st.name,
                                     "rapport.condition": cond, "rapport.arm": arm, "rapport.label": arm,
                                     "rapport.arm.overrides": " ".join(st.arms[arm])[:5000],
                                     "rapport.arm.train_overrides": " ".join(st.train.get(arm, ()))[:5000]},
                               parent_run_id=parent.run_id) as child:
                    child.log_metrics(res.summary.metrics(arm))
        return parent.run_id


def level_text(result: Any, conf: float) -> str:
    """The confidence every check was judged at."""
    levels = sorted(set(result.claims["confidence"])) if "confidence" in result.claims else [conf]
    return " / ".join(f"{lv:.2%}" if lv > 0.99 else f"{lv:.0%}" for lv in levels)


def correction_text(result: Any) -> str:
    if result.study.correction == "bonferroni":
        return (f"Bonferroni over the {len(result.claims)} checks (each at 1 − (1 − {result_conf(result):.0%})/"
                f"{len(result.claims)}), so among true nulls a false verdict anywhere has probability ≤ "
                f"{1 - result_conf(result):.0%}")
    return ("no multiplicity adjustment (`correction: none`; `correction: bonferroni` is available), so with "
            "many checks one false 'contradicted' is not rare")


def result_conf(result: Any) -> float:
    first = next(iter(result.conditions.values()))
    return first.summary.confidence
