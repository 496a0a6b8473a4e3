"""Calibration on a large generated log: wall time and peak memory (issue 17: 10^7 rows).

Usage: .venv/bin/python scripts/bench_calibrate.py [--rows 10000000] [--format csv parquet]
       [--dir /tmp/rapport-bench] [--full] [--replicates 1]

Generates (never downloads) a transaction log of ``--rows`` rows with what real order logs
contain: customers follow BG/NBD (first purchase in the first 12 weeks, Poisson purchases,
drop-out after a purchase) with Gamma-Gamma spend, 1 % of order lines are $0, 2 % of orders have
a partial return dated a few days later, 0.5 % of rows are exact duplicates, every row has an
order id. The log is written as CSV and/or Parquet (kept in ``--dir`` and reused when the row
count matches).

Each measurement runs in a fresh child process, so ``ru_maxrss`` (peak resident memory of that
process) covers the calibration alone, not the generation:

* ``load+fit``: chunked read, cleaning, summary and the BG/NBD and Gamma-Gamma fits;
* ``full`` (with ``--full``): :func:`rapport.envs.calibration.run_calibration` end to end with
  ``--replicates`` simulated copies of the cohort (the simulation step's cost grows with
  replicates x customers; the 10^7-row target is about reading, cleaning and fitting).

Prints one line per measurement and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CAL_END, HOLD_END = "1997-09-30", "1998-06-30"
START = np.datetime64("1997-01-01")
HORIZON_DAYS = 546  # 1997-01-01 .. 1998-06-30


def generate(rows: int, seed: int = 0):
    """A messy log of exactly ``rows`` rows as a pyarrow Table (module docstring)."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    per_customer = 7.0  # a little below the measured mean (~7.7 rows per customer)
    n = int(rows / per_customer * 1.05) + 1000
    birth = rng.integers(0, 84, n)
    rate = rng.gamma(1.2, 1 / 7.0, n)  # purchases per week while alive
    p_drop = rng.beta(0.8, 6.0, n)
    nu = rng.gamma(4.0, 1 / 15.0, n)
    weeks_left = (HORIZON_DAYS - birth) / 7.0
    candidates = rng.poisson(rate * weeks_left)
    alive_for = rng.geometric(np.maximum(p_drop, 1e-9))  # repeats before drop-out, >= 1
    repeats = np.minimum(candidates, alive_for)
    # Repeat times: the first `repeats` of `candidates` uniform times, i.e. sorted uniforms.
    owner = np.repeat(np.arange(n), candidates)
    u = rng.random(owner.size)
    order = np.lexsort((u, owner))
    owner, u = owner[order], u[order]
    rank = np.arange(owner.size) - np.repeat(np.cumsum(candidates) - candidates, candidates)
    keep = rank < repeats[owner]
    owner, u = owner[keep], u[keep]
    day = np.concatenate([birth, birth[owner] + np.floor(u * weeks_left[owner] * 7).astype(int)])
    cust = np.concatenate([np.arange(n), owner])
    by = np.argsort(cust, kind="stable")
    n_dup, n_ret = int(0.005 * rows), int(0.02 * rows)
    n_base = rows - n_dup - n_ret
    if cust.size < n_base:
        raise RuntimeError(f"generated {cust.size:,} purchases, fewer than {n_base:,}")
    cust, day = cust[by][:n_base], day[by][:n_base]
    amount = np.round(rng.gamma(6.0, 1.0 / nu[cust]), 2)
    amount[rng.random(n_base) < 0.01] = 0.0
    order_id = np.arange(n_base, dtype=np.int64) + 1
    returned = rng.choice(np.flatnonzero(amount > 1), n_ret, replace=False)
    dup = rng.choice(n_base, n_dup, replace=False)
    ret_amount = -np.round(amount[returned] * rng.uniform(0.1, 0.9, returned.size), 2)
    ret_day = np.minimum(day[returned] + rng.integers(1, 15, returned.size), HORIZON_DAYS)
    cols = {
        "customer_id": np.concatenate([cust, cust[returned], cust[dup]]),
        "date": np.concatenate([day, ret_day, day[dup]]),
        "amount": np.concatenate([amount, ret_amount, amount[dup]]),
        "order_id": np.concatenate([order_id, order_id[returned], order_id[dup]]),
    }
    shuffle = rng.permutation(rows)  # logs are not sorted by customer
    dates = (START + cols["date"][shuffle].astype("timedelta64[D]")).astype("datetime64[D]")
    return pa.table({
        "customer_id": pa.array(cols["customer_id"][shuffle]),
        "date": pa.array(dates),
        "amount": pa.array(cols["amount"][shuffle]),
        "order_id": pa.array(cols["order_id"][shuffle]),
    })


def write_log(rows: int, fmt: str, folder: Path) -> Path:
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    path = folder / f"log_{rows}.{fmt}"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    table = generate(rows)
    tmp = path.with_suffix(f".tmp.{fmt}")
    if fmt == "csv":
        pa_csv.write_csv(table, tmp)
    else:
        pq.write_table(table, tmp)
    tmp.rename(path)
    print(f"generated {path} ({path.stat().st_size / 1e6:.0f} MB) in "
          f"{time.perf_counter() - start:.1f} s", flush=True)
    return path


def measure(path: str, full: bool, replicates: int) -> dict:
    """Run in the child process: time the calibration of ``path``; peak RSS of this process."""
    from rapport.envs.calibration import LogColumns, fit_models, load_cohort, run_calibration

    columns = LogColumns(order_id="order_id")
    start = time.perf_counter()
    cohort = load_cohort(path, CAL_END, HOLD_END, columns=columns)
    loaded = time.perf_counter()
    bgnbd, gg, _ = fit_models(cohort.summary)
    fitted = time.perf_counter()
    out = {
        "file": path, "rows": cohort.cleaning.rows_read, "customers": len(cohort.summary),
        "cleaning": {k: v for k, v in cohort.cleaning.to_dict().items() if k != "warnings"},
        "load_s": round(loaded - start, 2), "fit_s": round(fitted - loaded, 2),
        "load_fit_s": round(fitted - start, 2),
        "bgnbd": [round(v, 4) for v in bgnbd.params], "gamma_gamma": [round(v, 4) for v in gg.params],
    }
    out["load_fit_peak_gb"] = _peak_gb()
    if full:
        del cohort
        start = time.perf_counter()
        result = run_calibration(path, CAL_END, HOLD_END, replicates=replicates,
                                 columns=columns)
        out["full_s"] = round(time.perf_counter() - start, 2)
        out["full_runtime_seconds"] = result.report["runtime_seconds"]
        out["replicates"] = replicates
        out["full_peak_gb"] = _peak_gb()
        out["checks_passed"] = sum(c["passed"] for c in result.report["checks"])
    return out


def _peak_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)  # KiB on Linux


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--format", nargs="+", choices=("csv", "parquet"), default=["csv"])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/rapport-bench"))
    parser.add_argument("--full", action="store_true", help="also time the whole calibration")
    parser.add_argument("--replicates", type=int, default=1)
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # child-process mode
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.full, args.replicates)))
        return
    results = []
    for fmt in args.format:
        path = write_log(args.rows, fmt, args.dir)
        cmd = [sys.executable, __file__, "--measure", str(path), "--replicates",
               str(args.replicates)] + (["--full"] if args.full else [])
        child = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if child.returncode != 0:
            sys.exit(f"measurement of {path} failed:\n{child.stderr}")
        result = json.loads(child.stdout.strip().splitlines()[-1])
        results.append(result)
        line = (f"{fmt:8s} {result['rows']:>12,} rows {result['customers']:>10,} customers  "
                f"load {result['load_s']:6.1f} s  fit {result['fit_s']:6.1f} s  "
                f"load+fit {result['load_fit_s']:6.1f} s  peak {result['load_fit_peak_gb']:.2f} GB")
        if args.full:
            line += (f"  | full (K={args.replicates}) {result['full_s']:6.1f} s  "
                     f"peak {result['full_peak_gb']:.2f} GB")
        print(line, flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
