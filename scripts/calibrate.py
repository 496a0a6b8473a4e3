"""Calibrate the simulator from your own transaction log, with a fidelity report.

Usage::

    .venv/bin/python scripts/calibrate.py --transactions tests/data/cdnow_sample.csv \\
        --calibration-end 1997-09-30 --holdout-end 1998-06-30 --out runs/cdnow \\
        [--replicates 100] [--seed 0] [--name calibrated]

Fits BG/NBD and Gamma-Gamma by maximum likelihood, writes ``OUT/scenario.json`` (the retail
preset with the fitted parameters; ``envs.PopulationEnv(scenario="OUT/scenario.json")`` loads
it), simulates K replicate copies of the cohort through the env with marketing off, and writes
``OUT/report.json`` (fits, real vs simulated statistics, every customer-model.md §6 check with
its tolerance and verdict) and ``OUT/fidelity.png``.

Bad input (a missing column, an unparseable date, a negative amount, an empty file, a
calibration end before the first purchase, a holdout end before the calibration end...) exits
with status 2 and a message naming the problem, and writes nothing: everything is computed
before ``OUT`` is created. Exit status 0 means the files were written, whether or not every
fidelity check passed (see ``report.json["passed"]``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from envs.calibration import INPUT_ERRORS, run_calibration, write_outputs

EXIT_BAD_INPUT = 2  # the same status argparse uses for a bad command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="calibrate.py",
        description="Fit the simulator's purchase model to a transaction log and report how "
                    "well the simulated cohort reproduces it (customer-model.md §6).",
    )
    parser.add_argument("--transactions", required=True, type=Path,
                        help="CSV or Parquet log with columns customer_id, date (ISO 8601), amount")
    parser.add_argument("--calibration-end", required=True,
                        help="last day of the calibration period, ISO 8601 (inclusive)")
    parser.add_argument("--holdout-end", required=True,
                        help="last day of the holdout period, ISO 8601 (inclusive)")
    parser.add_argument("--out", required=True, type=Path,
                        help="output directory for scenario.json, report.json and fidelity.png")
    parser.add_argument("--replicates", type=int, default=100,
                        help="simulated copies of the cohort (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    parser.add_argument("--name", default=None,
                        help='scenario name (default "calibrated")')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 written, 2 bad input)."""
    args = build_parser().parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        print(f"calibrate.py: error: --out {args.out} exists and is not a directory",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        result = run_calibration(args.transactions, args.calibration_end, args.holdout_end,
                                 replicates=args.replicates, seed=args.seed, name=args.name)
    except INPUT_ERRORS as exc:
        print(f"calibrate.py: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    paths = write_outputs(result, args.out)

    report = result.report
    fit = report["fit"]
    bg, gg = fit["bgnbd"], fit["gamma_gamma"]
    print(f"BG/NBD      r={bg['r']:.4f} alpha={bg['alpha']:.4f} a={bg['a']:.4f} b={bg['b']:.4f} "
          f"LL={bg['log_likelihood']:.2f} (n={bg['n_customers']})")
    print(f"Gamma-Gamma p={gg['p']:.4f} q={gg['q']:.4f} gamma={gg['gamma']:.4f} "
          f"LL={gg['log_likelihood']:.2f} (n={gg['n_customers']})")
    for warning in fit["warnings"]:
        print(f"warning: {warning}")
    print(f"{'tier':<5}{'check':<26}{'difference':>12}  result")
    for check in report["checks"]:
        diff = check["difference"]
        shown = "n/a" if diff is None else f"{diff:+.4f}"
        verdict = "pass" if check["passed"] else f"FAIL ({check['tolerance']})"
        print(f"{check['tier']:<5}{check['name']:<26}{shown:>12}  {verdict}")
    n_pass = sum(c["passed"] for c in report["checks"])
    print(f"{n_pass}/{len(report['checks'])} checks pass; "
          f"{report['n_simulated_customers']:,} simulated customers in "
          f"{report['runtime_seconds']['total']:.1f} s")
    for path in paths.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
