"""``rapport-compare``: a leaderboard of the runs of an experiment, read back from MLflow.

Every ``rapport-train`` run stores the block sums of its evaluation (its agent, and the baseline
and oracle it was evaluated with) as ``evaluation/blocks.parquet``. Runs whose evaluation
populations coincide (same scenario, size, horizon and evaluation seeds: common random numbers)
are paired block by block, so the leaderboard's differences against the baseline are *paired*
differences, with bootstrap intervals, exactly as within one run.

Usage::

    rapport-compare --experiment demo                 # runs of the latest multirun of "demo"
    rapport-compare --experiment demo --all-runs      # every finished train run of "demo"
    rapport-compare --parent <run_id> --out results/  # the children of one multirun

Writes ``leaderboard.md``, ``leaderboard.csv``, ``leaderboard.png`` and ``pareto.png`` to ``--out``
(default ``outputs/leaderboard/<experiment>``) and prints the markdown tables.

Every KPI column carries its bootstrap CI; churned share and opt-outs also get their paired
difference against the baseline. Two columns judge trade-offs: ``pareto`` (the policy is
Pareto-efficient over profit, lifetime value, contacts, churn and opt-outs, on point
estimates: :mod:`rapport.experiments.pareto`) and ``guardrails`` (``pass``, or each failed bound
with its estimate and CI; judged on the CI's worse end: :mod:`rapport.experiments.guardrails`).
The guardrails are those the compared runs were configured with (``guardrails`` in their
logged config; the union of distinct rules when runs differ, applied to every row so that all
policies meet one yardstick), or, when given, only the ``--guardrail`` options::

    rapport-compare --experiment demo --guardrail 'opt_outs_per_customer<=0.06' \
        --guardrail 'churned_share-baseline<=0.01' --guardrail 'contacts_per_customer_per_month<=4'

API: :func:`leaderboard` (from a :class:`rapport.experiments.evaluation.Summary`),
:func:`runs_of_experiment`, :func:`collect_blocks`, :func:`leaderboard_from_runs`,
:func:`to_markdown`, :func:`log_leaderboard_to_run`; :func:`run` is the CLI returning the table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rapport.experiments import guardrails as gr
from rapport.experiments.evaluation import KPI_KEY, Summary, summarize
from rapport.experiments.pareto import OBJECTIVES, pareto_front
from rapport.experiments.tracking_store import check_tracking_uri, resolve_tracking_uri

BLOCKS_ARTIFACT = "evaluation/blocks.parquet"
DEFAULT_METRIC = "kpi/profit_per_customer"
LONG_METRIC = "kpi/lifetime_value_per_customer"
SHORT_METRIC = "kpi/short_term_profit_per_customer"
EXTRA_COLUMNS = ("kpi/contacts_per_customer", "kpi/contact_cost_per_customer", "kpi/discount_cost_per_customer",
                 "kpi/opt_outs_per_customer", "kpi/churned_share")
DIFF_COLUMNS = ("kpi/opt_outs_per_customer", "kpi/churned_share")
"""Trade-off KPIs that get a paired difference against the baseline besides the ranking metric
and lifetime value."""


def lower_is_better(metric: str) -> bool:
    """KPIs ranked ascending: costs, churn, opt-outs, contacts, unreachable customers."""
    k = metric.removeprefix("kpi/")
    return ("cost" in k or k.startswith(("churned", "opt_outs", "contacts", "unreachable")))


def leaderboard(summary: Summary, *, metric: str = DEFAULT_METRIC,
                guardrails: Sequence[gr.GuardrailConfig] = (), horizon: int | None = None) -> pd.DataFrame:
    """One row per policy, best ``metric`` first: means with CIs, paired differences against the
    baseline (with the CI an independent design would give, for contrast), regret against the
    oracle, whether short- and long-term verdicts against the baseline disagree, whether the
    policy is Pareto-efficient (``pareto``) and the verdict of ``guardrails`` (``horizon``: the
    evaluation's weeks, needed by ``*_per_month`` rules)."""
    if metric not in set(KPI_KEY.values()):
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(sorted(KPI_KEY.values()))}")
    if guardrails and horizon is None and any(r.kpi.endswith(gr.PER_MONTH) for r in guardrails):
        raise ValueError("a *_per_month guardrail needs the evaluation horizon (weeks)")
    if summary.baseline is None:
        vs = [r.kpi for r in guardrails if r.max_vs_baseline is not None or r.min_vs_baseline is not None]
        if vs:
            raise ValueError(f"guardrails on {vs} bound the difference against a baseline, but the compared "
                             "runs have none (pass --baseline)")
    k = summary.kpis.set_index(["policy", "key"])
    d = summary.diffs.set_index(["policy", "key"]) if len(summary.diffs) else None
    r = summary.regret.set_index(["policy", "key"]) if len(summary.regret) else None
    rows = []
    for p in dict.fromkeys(summary.kpis.policy):
        row: dict[str, Any] = {"policy": p, "role": summary.roles.get(p, "policy")}
        for key in dict.fromkeys((metric, LONG_METRIC, SHORT_METRIC, DEFAULT_METRIC, *EXTRA_COLUMNS)):
            row[key] = k.loc[(p, key), "mean"]
            row[f"{key} ci_low"], row[f"{key} ci_high"] = k.loc[(p, key), "ci_low"], k.loc[(p, key), "ci_high"]
        for key in dict.fromkeys((metric, LONG_METRIC, *DIFF_COLUMNS)):
            name = f"diff {key}"
            if d is not None and (p, key) in d.index:
                x = d.loc[(p, key)]
                row[name], row[f"{name} ci_low"], row[f"{name} ci_high"] = x["diff"], x.ci_low, x.ci_high
                row[f"{name} independent ci_low"] = x.indep_ci_low
                row[f"{name} independent ci_high"] = x.indep_ci_high
            else:
                for suffix in ("", " ci_low", " ci_high", " independent ci_low", " independent ci_high"):
                    row[name + suffix] = np.nan
        for key in dict.fromkeys((metric, LONG_METRIC)):
            name = f"regret {key}"
            if r is not None and (p, key) in r.index:
                x = r.loc[(p, key)]
                row[name], row[f"{name} ci_low"], row[f"{name} ci_high"] = x.regret, x.ci_low, x.ci_high
            else:
                row[name] = row[f"{name} ci_low"] = row[f"{name} ci_high"] = np.nan
        svl = summary.short_vs_long
        hit = svl[(svl.policy == p) & (svl.versus == summary.baseline)] if summary.baseline else svl.iloc[:0]
        row["short_vs_long disagrees with baseline"] = bool(hit.disagree.iloc[0]) if len(hit) else False
        row["guardrails"] = gr.verdict(gr.judge(guardrails, summary.metrics(p), horizon=horizon or 0,
                                                is_baseline=p == summary.baseline))
        rows.append(row)
    board = pd.DataFrame(rows).sort_values(metric, ascending=lower_is_better(metric), kind="stable")
    board = board.reset_index(drop=True)
    board.insert(0, "rank", np.arange(1, len(board) + 1))
    # oracles see latent truth: a policy beaten only by an oracle is still efficient among real policies
    real = ~board.role.isin(("oracle", "long_term_oracle"))
    front = pd.Series(False, index=board.index)
    if real.any():
        front[real] = pareto_front(board[real], OBJECTIVES)
    board.insert(board.columns.get_loc("guardrails"), "pareto", front)
    reference = summary.long_term_oracle if metric == LONG_METRIC and summary.long_term_oracle else summary.oracle
    board.attrs.update(metric=metric, baseline=summary.baseline, oracle=reference,
                       confidence=summary.confidence, seeds=summary.seeds, units=summary.units,
                       kendall_tau=summary.kendall_tau,
                       guardrails=gr.rule_texts(guardrails))
    return board


def _ci(row: pd.Series, key: str, digits: int = 3) -> str:
    v = row.get(key)
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    return f"{v:.{digits}f} [{row[f'{key} ci_low']:.{digits}f}, {row[f'{key} ci_high']:.{digits}f}]"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def to_markdown(board: pd.DataFrame) -> str:
    """The leaderboard as two markdown tables (value; trade-offs and guardrails), with a legend.
    Every KPI cell is ``mean [ci_low, ci_high]``."""
    metric = board.attrs.get("metric", DEFAULT_METRIC)
    base, oracle = board.attrs.get("baseline"), board.attrs.get("oracle")
    m, lt = metric.removeprefix("kpi/"), LONG_METRIC.removeprefix("kpi/")
    head = ["rank", "policy", m, f"Δ {m} vs {base or '—'} (paired)", "independent CI",
            lt, f"Δ {lt} (paired)", f"regret {m} vs {oracle or '—'}", "short-term profit", "short≠long"]
    lines = ["**Value**", "", _row(head), "|" + "---|" * len(head)]
    for _, row in board.iterrows():
        dkey = f"diff {metric}"
        indep = "—"
        if not np.isnan(row.get(dkey, np.nan)):
            indep = f"[{row[f'{dkey} independent ci_low']:.3f}, {row[f'{dkey} independent ci_high']:.3f}]"
        lines.append(_row([str(row["rank"]), f"{row['policy']} ({row['role']})", _ci(row, metric), _ci(row, dkey),
                           indep, _ci(row, LONG_METRIC), _ci(row, f"diff {LONG_METRIC}"),
                           _ci(row, f"regret {metric}"), _ci(row, SHORT_METRIC),
                           "yes" if row["short_vs_long disagrees with baseline"] else ""]))
    rules = board.attrs.get("guardrails") or []
    head = ["rank", "policy", "contacts", "contact $", "discount $", "opt-outs", "Δ opt-outs (paired)",
            "churned", "Δ churned (paired)", "pareto", "guardrails"]
    lines += ["", "**Trade-offs and guardrails**", "", _row(head), "|" + "---|" * len(head)]
    for _, row in board.iterrows():
        lines.append(_row([str(row["rank"]), str(row["policy"]), _ci(row, "kpi/contacts_per_customer", 2),
                           _ci(row, "kpi/contact_cost_per_customer"), _ci(row, "kpi/discount_cost_per_customer"),
                           _ci(row, "kpi/opt_outs_per_customer"), _ci(row, "diff kpi/opt_outs_per_customer"),
                           _ci(row, "kpi/churned_share"), _ci(row, "diff kpi/churned_share"),
                           "yes" if row.get("pareto", False) else "", row.get("guardrails", "") or "—"]))
    conf = board.attrs.get("confidence", 0.95)
    seeds = board.attrs.get("seeds", ())
    tau = board.attrs.get("kendall_tau", float("nan"))
    lines.append("")
    lines.append(f"Per customer; [{conf:.0%} bootstrap CI] over {board.attrs.get('units', '?')} customer blocks "
                 f"of {len(seeds)} evaluation population(s) shared by every policy (common random numbers). "
                 "Δ: paired difference against the baseline; 'independent CI': the interval the same "
                 "difference would have without pairing. Regret: oracle − policy; on lifetime value against "
                 "the long-term oracle when it was evaluated, otherwise against the myopic oracle (which "
                 "maximises this week's expected profit, so its long-term regret can be negative). "
                 f"short≠long: this week's and lifetime value's verdicts against the baseline disagree "
                 f"(both CIs exclude 0). Kendall τ between short- and long-term rankings: {tau:.2f}. "
                 "pareto: no other policy is at least as good on profit, lifetime value, contacts, churned "
                 "share and opt-outs and better on one (point estimates). guardrails: "
                 + (f"{'; '.join(rules)}, each passing only when the CI's worse end respects it "
                    "(upper bound for ≤, lower for ≥)." if rules else "none configured (—)."))
    return "\n".join(lines)


# ------------------------------------------------------------------------ reading runs
@dataclass
class RunBlocks:
    """Blocks of several runs relabelled for one leaderboard."""

    blocks: pd.DataFrame
    baseline: str | None
    oracle: str | None
    run_ids: list[str]
    fingerprint: str
    long_term_oracle: str | None = None


def runs_of_experiment(tracking_uri: str, experiment: str, *, parent_run_id: str | None = None,
                       all_runs: bool = False) -> list[Any]:
    """Finished train runs of ``experiment``: the children of ``parent_run_id``, else of the
    latest multirun parent, else (or with ``all_runs``) every finished train run. Newest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise ValueError(f"no MLflow experiment {experiment!r} at {tracking_uri}; experiments: {names}")
    base = "tags.`rapport.command` = 'train' and attributes.status = 'FINISHED'"
    if parent_run_id is None and not all_runs:
        parents = client.search_runs([exp.experiment_id], "tags.`rapport.role` = 'parent'",
                                     order_by=["attributes.start_time DESC"], max_results=1)
        parent_run_id = parents[0].info.run_id if parents else None
    if parent_run_id is not None and not all_runs:
        base += f" and tags.`mlflow.parentRunId` = '{parent_run_id}'"
    runs = client.search_runs([exp.experiment_id], base, order_by=["attributes.start_time DESC"], max_results=5000)
    if not runs:
        raise ValueError(f"no finished train runs in experiment {experiment!r}"
                         + (f" under parent run {parent_run_id}" if parent_run_id else ""))
    return runs


def collect_blocks(tracking_uri: str, runs: Sequence[Any]) -> RunBlocks:
    """Download and relabel the evaluation blocks of ``runs`` (MLflow Run objects, newest first):
    agent rows take the run's label; baseline and oracle rows keep their names; duplicates of
    (policy, seed, block) keep the newest run's (by CRN the baseline's are identical anyway)."""
    from mlflow.artifacts import download_artifacts

    from rapport.experiments.policy_store import quiet_mlflow

    quiet_mlflow()
    frames, fingerprints = [], {}
    baseline = oracle = long_term = None
    with tempfile.TemporaryDirectory() as tmp:
        for i, run in enumerate(runs):
            path = download_artifacts(run_id=run.info.run_id, artifact_path=BLOCKS_ARTIFACT,
                                      dst_path=str(Path(tmp) / str(i)), tracking_uri=tracking_uri)
            df = pd.read_parquet(path)
            label = run.data.tags.get("rapport.label") or run.data.params.get("agent.name", run.info.run_id)
            df.loc[df.role == "agent", "policy"] = label
            df["run_id"] = run.info.run_id
            frames.append(df)
            fingerprints.setdefault(run.data.tags.get("rapport.eval_fingerprint", "?"), []).append(run.info.run_id)
            baseline = baseline or (df.loc[df.role == "baseline", "policy"].iloc[0] if (df.role == "baseline").any() else None)
            oracle = oracle or (df.loc[df.role == "oracle", "policy"].iloc[0] if (df.role == "oracle").any() else None)
            long_term = long_term or (df.loc[df.role == "long_term_oracle", "policy"].iloc[0]
                                      if (df.role == "long_term_oracle").any() else None)
    if len(fingerprints) > 1:
        detail = "; ".join(f"{fp}: {len(ids)} run(s)" for fp, ids in fingerprints.items())
        raise ValueError("runs were evaluated on different worlds (scenario, customers, horizon or "
                         f"evaluation settings differ), so they cannot be paired: {detail}. "
                         "Compare one group at a time (--parent) or align the configs.")
    blocks = pd.concat(frames, ignore_index=True)
    if oracle is None and "oracle" in set(blocks.policy):
        oracle = "oracle"
    if oracle is not None:
        blocks.loc[blocks.policy == oracle, "role"] = "oracle"
    # a job whose agent *is* the baseline (agent=do_nothing) must not decide the row's role by
    # which run happened to finish last
    if baseline is not None:
        blocks.loc[blocks.policy == baseline, "role"] = "baseline"
    blocks = blocks.drop_duplicates(["policy", "seed", "block"], keep="first").reset_index(drop=True)
    if long_term is None and "long_term_oracle" in set(blocks.policy):
        long_term = "long_term_oracle"
    if long_term is not None:
        blocks.loc[blocks.policy == long_term, "role"] = "long_term_oracle"
    return RunBlocks(blocks, baseline, oracle, [r.info.run_id for r in runs], next(iter(fingerprints)),
                     long_term)


def guardrails_of_runs(runs: Sequence[Any]) -> tuple[list[gr.GuardrailConfig], int | None]:
    """The distinct guardrails the runs were configured with, and their evaluation horizon."""
    rules = gr.union(gr.rules_from_params(r.data.params, f"run {r.info.run_id}") for r in runs)
    horizons = {r.data.params.get("env.horizon") for r in runs} - {None}
    return rules, int(next(iter(horizons))) if len(horizons) == 1 else None


def leaderboard_from_runs(tracking_uri: str, runs: Sequence[Any], *, metric: str = DEFAULT_METRIC,
                          baseline: str | None = None, n_boot: int = 1000, confidence: float = 0.95,
                          seed: int = 0, guardrails: Sequence[gr.GuardrailConfig] | None = None
                          ) -> tuple[pd.DataFrame, Summary]:
    """The paired leaderboard of ``runs``; ``guardrails``: these rules instead of the runs' own."""
    rb = collect_blocks(tracking_uri, runs)
    base = baseline or rb.baseline
    if base is not None and base not in set(rb.blocks.policy):
        raise ValueError(f"baseline {base!r} not among the compared policies {sorted(set(rb.blocks.policy))}")
    summary = summarize(rb.blocks, baseline=base, oracle=rb.oracle, long_term_oracle=rb.long_term_oracle,
                        n_boot=n_boot, confidence=confidence, seed=seed)
    own, horizon = guardrails_of_runs(runs)
    board = leaderboard(summary, metric=metric, guardrails=own if guardrails is None else guardrails,
                        horizon=horizon)
    runs_per_label = rb.blocks.groupby("policy")["run_id"].nunique()
    board.insert(3, "runs", board.policy.map(runs_per_label).fillna(0).astype(int))
    return board, summary


def write_leaderboard(board: pd.DataFrame, out_dir: str | Path, *, title: str = "") -> dict[str, Path]:
    """leaderboard.md, leaderboard.csv, leaderboard.png and pareto.png in ``out_dir``."""
    from rapport.experiments import pareto, plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "leaderboard.md", "csv": out / "leaderboard.csv", "png": out / "leaderboard.png",
             "pareto": out / "pareto.png"}
    paths["md"].write_text((f"# {title}\n\n" if title else "") + to_markdown(board) + "\n")
    board.to_csv(paths["csv"], index=False)
    metric = board.attrs.get("metric", DEFAULT_METRIC)
    fig = plots.leaderboard_plot(board, metric, diff_column=f"diff {metric}", title=title)
    fig.savefig(paths["png"], dpi=110)
    plots.close(fig)
    fig = pareto.pareto_plot(board, title=f"{title}: Pareto front" if title else "")
    fig.savefig(paths["pareto"], dpi=110)
    plots.close(fig)
    return paths


def log_leaderboard_to_run(tracking_uri: str, run_id: str, child_run_ids: Sequence[str], *,
                           metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """Compute the leaderboard of ``child_run_ids`` and log its files to ``run_id``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    runs = sorted((client.get_run(r) for r in child_run_ids), key=lambda r: -r.info.start_time)
    runs = [r for r in runs if r.data.tags.get("rapport.command") == "train"]
    if not runs:
        raise ValueError("no train runs among the children")
    board, _ = leaderboard_from_runs(tracking_uri, runs, metric=metric)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_leaderboard(board, tmp)
        for p in paths.values():
            client.log_artifact(run_id, str(p), "leaderboard")
    client.set_tag(run_id, "rapport.best_policy", str(board.policy.iloc[0]))
    return board


# ------------------------------------------------------------------------------------ CLI
def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``rapport-compare`` (exit status 0, 2 for unusable input)."""
    run(argv)


def run(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Parse ``argv`` like the console script, print and write the leaderboard, return it."""
    ap = argparse.ArgumentParser(prog="rapport-compare", description=__doc__.split("\n")[0])
    ap.add_argument("--experiment", default="rapport", help="MLflow experiment name (default: rapport)")
    ap.add_argument("--tracking-uri", default=None,
                    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db here)")
    ap.add_argument("--parent", default=None, help="compare the children of this multirun parent run")
    ap.add_argument("--all-runs", action="store_true", help="every finished train run of the experiment")
    ap.add_argument("--metric", default=DEFAULT_METRIC, help=f"rank by this KPI key (default {DEFAULT_METRIC})")
    ap.add_argument("--baseline", default=None, help="policy to pair against (default: the runs' baseline)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--confidence", type=float, default=0.95)
    ap.add_argument("--out", default=None, help="output folder (default outputs/leaderboard/<experiment>)")
    ap.add_argument("--guardrail", action="append", default=None, metavar="RULE",
                    help="judge every policy on this rule instead of the runs' configured guardrails: "
                         "KPI<=V, KPI>=V, KPI-baseline<=V or KPI-baseline>=V (repeatable), e.g. "
                         "opt_outs_per_customer<=0.06, churned_share-baseline<=0.01")
    args = ap.parse_args(argv)
    uri = resolve_tracking_uri(args.tracking_uri)
    try:
        rules = None if args.guardrail is None else [gr.parse_rule(t) for t in args.guardrail]
        check_tracking_uri(uri)
        runs = runs_of_experiment(uri, args.experiment, parent_run_id=args.parent, all_runs=args.all_runs)
        board, _ = leaderboard_from_runs(uri, runs, metric=args.metric, baseline=args.baseline,
                                         n_boot=args.bootstrap, confidence=args.confidence, guardrails=rules)
    except ValueError as err:
        print(f"rapport-compare: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    out = Path(args.out or Path("outputs") / "leaderboard" / args.experiment)
    paths = write_leaderboard(board, out, title=f"Leaderboard: {args.experiment}")
    print(to_markdown(board))
    print(f"\nwritten: {', '.join(str(p) for p in paths.values())}")
    return board


if __name__ == "__main__":
    main()
