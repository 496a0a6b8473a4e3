"""``rapport-study``: run one study, or all, and write their verdicts and reports.

Usage::

    rapport-study --list                          # the shipped studies and their questions
    rapport-study appropriate                     # one study at its default size
    rapport-study all                             # every study (see the README for the wall time)
    rapport-study all --quick                     # every study in seconds (tiny populations)
    rapport-study appropriate env.customers=2000 tracking=none   # rapport-train overrides, every arm
    rapport-study path/to/my_study.yaml           # your own study (format: rapport.experiments.studies.spec)

Writes ``outputs/studies/<name>/report.md`` (with ``claims.csv``, ``kpis.csv`` and a plot per
condition) and, for ``all``, ``outputs/studies/summary.md``; logs an MLflow parent run per study
with the verdict (tag ``rapport.verdict``) and a child run per condition × arm. Exit status 0
whatever the verdicts, 2 for bad input (an unknown study, a bad override), 1 for an internal error.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from rapport.experiments.studies.spec import StudyError, load_study, study_names


def _summary(rows: list[tuple[str, int, str, float, str]], quick: bool) -> str:
    lines = [f"# Studies{' (quick)' if quick else ''}", "", "| study | version | verdict | wall s | question |",
             "|---|---|---|---|---|"]
    lines += [f"| [{n}]({n}/report.md) | {v} | **{verdict}** | {s:.0f} | {q} |" for n, v, verdict, s, q in rows]
    lines += ["", f"Total wall time {sum(r[3] for r in rows):.0f} s."]
    return "\n".join(lines) + "\n"


def run(argv: Sequence[str] | None = None) -> dict[str, str]:
    """Parse ``argv`` like the console script; returns {study: verdict}."""
    from rapport.experiments.studies.report import log_to_mlflow, to_markdown, write_report
    from rapport.experiments.studies.runner import run_study

    ap = argparse.ArgumentParser(prog="rapport-study", description=__doc__.split("\n")[0].replace("``", ""),
                                 epilog=__doc__.split("\n", 2)[2].replace("``", "").replace("::", ":"),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", nargs="?", help="a study name, 'all', or a study .yaml path")
    ap.add_argument("overrides", nargs="*", help="rapport-train overrides applied to every arm (key=value)")
    ap.add_argument("--quick", action="store_true", help="tiny populations: seconds per study (tests)")
    ap.add_argument("--out", default="outputs/studies", help="output folder (default outputs/studies)")
    ap.add_argument("--list", action="store_true", help="list the shipped studies and exit")
    args = ap.parse_intermixed_args(argv)
    if args.list:
        for name in study_names():
            st = load_study(name)
            print(f"{name} (v{st.version}): {st.question}")
        return {}
    if not args.study:
        raise StudyError(f"name a study: one of {', '.join(study_names())}, all, or a study .yaml path "
                         "(rapport-study --list describes them)")
    from rapport.experiments.errors import check_writable
    from rapport.experiments.studies.runner import plan_study

    names = study_names() if args.study == "all" else [args.study]
    studies = [load_study(n) for n in names]
    out = check_writable("--out", args.out, folder=True)
    for st in studies:  # every study's every arm is composed and checked before any work
        plan_study(st, quick=args.quick, extra=tuple(args.overrides))
    verdicts, rows = {}, []
    t0 = time.perf_counter()
    for st in studies:
        print(f"[rapport-study] {st.name} v{st.version}: {st.question}", flush=True)
        result = run_study(st, quick=args.quick, extra=args.overrides,
                           log=lambda line: print(line, flush=True))
        paths = write_report(result, out / st.name)
        run_id = log_to_mlflow(result, paths)
        print(to_markdown(result).split("\n## ")[0])
        print(f"[rapport-study] {st.name}: {result.verdict} in {result.seconds:.0f} s; report {paths['report']}"
              + (f"; MLflow run {run_id}" if run_id else ""), flush=True)
        verdicts[st.name] = result.verdict
        rows.append((st.name, st.version, result.verdict, result.seconds, st.question))
    if len(studies) > 1:
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.md").write_text(_summary(rows, args.quick))
        print(_summary(rows, args.quick))
        print(f"[rapport-study] all {len(studies)} studies in {time.perf_counter() - t0:.0f} s")
    return verdicts


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``rapport-study``: failures print one line and exit 2 (bad input) or 1."""
    from rapport.experiments.errors import describe, full_error_requested

    try:
        run(argv)
    except SystemExit:
        raise
    except BaseException as err:
        if full_error_requested():
            raise
        code, line = describe(err)
        print(f"rapport-study: error: {line}", file=sys.stderr)
        raise SystemExit(code) from None


if __name__ == "__main__":
    main()
