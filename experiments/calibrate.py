"""``rapport-calibrate``: calibrate the simulator from your own transaction log, with a report.

Usage::

    rapport-calibrate --transactions orders.parquet --calibration-end 1997-09-30 \\
        --holdout-end 1998-06-30 --out runs/cdnow \\
        [--customer-column customer_id] [--date-column date] [--amount-column amount] \\
        [--order-column order_id] [--keep-duplicates] [--replicates 100] [--seed 0] [--name NAME]

Reads a CSV or Parquet log in chunks, cleans it (exact duplicate rows dropped; returns netted
against their order when ``--order-column`` is given, otherwise dropped; $0 orders kept as
purchases; customers without a positive repeat spend left out of the Gamma-Gamma fit only),
prints one warning line per rule that excluded anything, fits BG/NBD and Gamma-Gamma, writes
``OUT/scenario.json`` (``envs.PopulationEnv(scenario="OUT/scenario.json")`` loads it), simulates
K replicate copies of the cohort through the env with marketing off, and writes
``OUT/report.json`` (cleaning counts, fits, real vs simulated statistics, every
customer-model.md §6 check with its tolerance, in-sample apart from holdout) and
``OUT/fidelity.png`` (tracking plot with the band over the replicates).

Bad input (an unreadable CSV, a missing column, an unparseable date, a NaN or infinite amount,
an empty file, a calibration end before the first purchase...) prints one line naming the file,
column or row and what is valid, exits with status 2 and writes nothing. Exit status 0 means
the files were written, whether or not every fidelity check passed (``report.json["passed"]``);
1 means they could not be written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rapport.envs.calibration import INPUT_ERRORS, LogColumns, run_calibration, write_outputs

PROG = "rapport-calibrate"
EXIT_BAD_INPUT = 2  # the same status argparse uses for a bad command line
EXIT_WRITE_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Fit the simulator's purchase model to a transaction log and report how "
                    "well the simulated cohort reproduces it (customer-model.md §6).",
    )
    parser.add_argument("--transactions", required=True, type=Path,
                        help="CSV or Parquet log: one row per purchase or order line")
    parser.add_argument("--calibration-end", required=True,
                        help="last day of the calibration period, ISO 8601 (inclusive)")
    parser.add_argument("--holdout-end", required=True,
                        help="last day of the holdout period, ISO 8601 (inclusive)")
    parser.add_argument("--out", required=True, type=Path,
                        help="output directory for scenario.json, report.json and fidelity.png")
    columns = parser.add_argument_group("columns of the log")
    columns.add_argument("--customer-column", default="customer_id",
                         help="customer id column (default customer_id)")
    columns.add_argument("--date-column", default="date",
                         help="purchase date column, ISO 8601 text, date or timestamp "
                              "(default date)")
    columns.add_argument("--amount-column", default="amount",
                         help="amount column; negative = return or refund (default amount)")
    columns.add_argument("--order-column", default=None,
                         help="order id column, optional: returns are netted against their "
                              "order (without it negative rows are dropped)")
    parser.add_argument("--keep-duplicates", action="store_true",
                        help="keep exact duplicate rows (default: drop and count them)")
    parser.add_argument("--replicates", type=int, default=100,
                        help="simulated copies of the cohort (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    parser.add_argument("--name", default=None, help='scenario name (default "calibrated")')
    return parser


def _print_report(report: dict) -> None:
    fit = report["fit"]
    bg, gg = fit["bgnbd"], fit["gamma_gamma"]
    for warning in report["cleaning"]["warnings"]:
        print(f"warning: {warning}")
    print(f"BG/NBD      r={bg['r']:.4f} alpha={bg['alpha']:.4f} a={bg['a']:.4f} b={bg['b']:.4f} "
          f"LL={bg['log_likelihood']:.2f} (n={bg['n_customers']})")
    print(f"Gamma-Gamma p={gg['p']:.4f} q={gg['q']:.4f} gamma={gg['gamma']:.4f} "
          f"LL={gg['log_likelihood']:.2f} (n={gg['n_customers']})")
    for warning in fit["warnings"]:
        print(f"warning: {warning}")
    by_name = {c["name"]: c for c in report["checks"]}
    titles = {"in_sample": "In-sample checks (calibration period, Tier B)",
              "holdout": "Holdout checks (out of sample, Tier C)"}
    for period, section in report["checks_by_period"].items():
        first, last = section["period"]
        print(f"{titles[period]}, {first} to {last}: "
              f"{section['n_passed']}/{len(section['checks'])} pass")
        for name in section["checks"]:
            check = by_name[name]
            diff = check["difference"]
            shown = "n/a" if diff is None else f"{diff:+.4f}"
            verdict = "pass" if check["passed"] else f"FAIL ({check['tolerance']})"
            print(f"  {name:<26}{shown:>12}  {verdict}")
    n_pass = sum(c["passed"] for c in report["checks"])
    print(f"{n_pass}/{len(report['checks'])} checks pass; "
          f"{report['n_simulated_customers']:,} simulated customers in "
          f"{report['runtime_seconds']['total']:.1f} s")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 written, 1 not written, 2 bad input)."""
    args = build_parser().parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        print(f"{PROG}: error: --out {args.out} exists and is not a directory", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        columns = LogColumns(args.customer_column, args.date_column, args.amount_column,
                             args.order_column)
        result = run_calibration(args.transactions, args.calibration_end, args.holdout_end,
                                 replicates=args.replicates, seed=args.seed, name=args.name,
                                 columns=columns, keep_duplicates=args.keep_duplicates)
    except INPUT_ERRORS as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        paths = write_outputs(result, args.out)
    except OSError as exc:
        print(f"{PROG}: error: cannot write the outputs to {args.out}: {exc}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    _print_report(result.report)
    for path in paths.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
