"""Batch scoring: customers in (Parquet), decisions with propensities out (Parquet).

    python scripts/score.py --model outputs/exports/<run_id>/greedy --input customers.parquet \\
        --output decisions.parquet [--week 12] [--seed 0] [--threads 2]

``--model``: an exported ``policy.onnx``, the folder holding it, an MLflow model folder, or an
MLflow model URI (``models:/NAME@champion``, ``models:/NAME/3``, ``runs:/ID/policy_export``).
Scoring runs the ONNX decision in onnxruntime (no torch).

Input: one row per customer with every feature column of the policy, ``customer_id`` (int) and
optionally ``episode`` and ``week`` (int; ``--week`` fills a missing ``week``). Any other column,
a missing feature, a non-numeric feature, a NaN/inf or an empty file is an error naming the
column; nothing is written then (a batch is scored whole, never partly). Every failure prints
one line (``error: ...``) and exits 2 for bad input (1 otherwise); ``--traceback`` (or
``HYDRA_FULL_ERROR=1``) shows the traceback instead. The output file appears only when the
whole batch was scored.

Output: the logged-feedback layout of :mod:`rapport.agents.ope.logged` -- ``customer_id, episode, week``,
the features (float32), ``channel, offer, spend_level, action`` (joint index), ``propensity`` --
with its file metadata (feature names, nvec, provenance). ``reward`` is there but NaN: the
outcome of a decision is observed later; fill it in (e.g. join the week's profit per customer)
and the file reads with ``LoggedFeedback.read_parquet`` for off-policy evaluation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rapport.agents.ope.logged import ACTION_COLUMNS, METADATA_KEY
from rapport.experiments.errors import (
    EXIT_INPUT,
    UserError,
    check_writable,
    describe,
    full_error_requested,
    staged_file,
)
from rapport.experiments.export.decision_runtime import (
    DecisionRunner,
    InvalidDecisionInput,
    validate_features,
)

ONNX_NAME = "policy.onnx"


def _runner(path: Path, threads: int | None) -> DecisionRunner:
    try:
        return DecisionRunner(path, threads)
    except ValueError as err:  # an ONNX file without Rapport's metadata
        raise UserError(f"--model {str(path)!r}: {err}") from err
    except Exception as err:  # onnxruntime cannot read it
        raise UserError(f"--model {str(path)!r} is not a readable ONNX file: {err}") from err


def load_runner(model: str, threads: int | None = None) -> tuple[DecisionRunner, str]:
    """The ONNX decision behind ``model`` (see the module doc) and a description of it;
    :class:`~rapport.experiments.errors.UserError` when there is none."""
    path = Path(model)
    if path.suffix == ".onnx" and path.is_file():
        return _runner(path, threads), str(path)
    if path.is_dir() and (path / ONNX_NAME).is_file():
        return _runner(path / ONNX_NAME, threads), str(path / ONNX_NAME)
    if path.is_dir() and not (path / "MLmodel").is_file():
        raise UserError(f"--model {model!r} is not an exported policy folder: it holds neither "
                        f"{ONNX_NAME} nor an MLflow MLmodel file (rapport-export writes them)")
    if path.is_dir() or ":/" in model:
        import mlflow

        try:
            inner = mlflow.pyfunc.load_model(model).unwrap_python_model()
        except Exception as err:
            raise UserError(f"cannot load MLflow model {model!r}: {err}") from err
        runner = getattr(inner, "runner", None)
        if runner is None or not hasattr(runner, "path"):
            raise UserError(f"--model {model!r} is not an exported Rapport policy (rapport-export)")
        # the model's own runner came from its code path; reload the ONNX file with this one
        return _runner(Path(runner.path), threads), model
    raise UserError(f"--model {model!r} is neither a .onnx file, a folder with "
                    f"{ONNX_NAME}, an MLflow model folder nor a models:/ or runs:/ URI")


def read_customers(path: str) -> Any:
    """The customers Parquet file as a DataFrame; :class:`UserError` when it is none."""
    if not Path(path).is_file():
        raise UserError(f"--input {path!r} is not a file")
    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"--input {path!r} is not a readable Parquet file ({err}); write the "
                        "customers with DataFrame.to_parquet") from err


def decisions_table(frame: Any, runner: DecisionRunner, *, week: int | None, seed: int | None,
                    provenance: dict[str, Any]) -> pa.Table:
    """Validate ``frame`` and decide; the logged-feedback table (reward pending)."""
    features = validate_features(frame, runner.feature_names)
    if "customer_id" not in frame.columns:
        raise InvalidDecisionInput("missing column 'customer_id': decisions must be joinable to "
                                   "their outcomes", column="customer_id")
    if "week" not in frame.columns and week is None:
        raise InvalidDecisionInput("missing column 'week': add it or pass --week", column="week")
    n = len(frame)
    rng = np.random.default_rng(seed)
    actions, propensity = runner.decide(features, rng)
    nvec = tuple(int(k) for k in runner.spec["nvec"])
    cols: dict[str, Any] = {
        "customer_id": frame["customer_id"].to_numpy(np.int64),
        "episode": (frame["episode"].to_numpy(np.int64) if "episode" in frame.columns
                    else np.zeros(n, np.int64)),
        "week": (frame["week"].to_numpy(np.int64) if "week" in frame.columns
                 else np.full(n, int(week), np.int64)),
    }
    for j, name in enumerate(runner.feature_names):
        cols[name] = features[:, j]
    for j, name in enumerate(ACTION_COLUMNS):
        cols[name] = actions[:, j]
    cols["action"] = np.ravel_multi_index(tuple(actions.T), nvec).astype(np.int64)
    cols["propensity"] = propensity
    cols["reward"] = np.full(n, np.nan)
    meta = {"feature_names": list(runner.feature_names), "nvec": list(nvec),
            "metadata": {**provenance, "reward": "pending: NaN until the outcome is joined"}}
    return pa.table(cols).replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})


def _threads(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def _week(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def score(args: argparse.Namespace) -> dict[str, Any]:
    """Validate everything, score the batch, write the output; the summary."""
    check_writable("--output", args.output)
    runner, source = load_runner(args.model, args.threads)
    frame = read_customers(args.input)
    t0 = time.perf_counter()
    try:
        table = decisions_table(frame, runner, week=args.week, seed=args.seed,
                                provenance={"model": source, "policy_kind": runner.spec["policy_kind"],
                                            "mode": runner.mode, "seed": args.seed,
                                            "input": str(args.input)})
    except InvalidDecisionInput as err:
        raise UserError(f"{args.input}: {err}") from err
    seconds = time.perf_counter() - t0
    with staged_file(args.output) as staged:
        pq.write_table(table, staged)
    summary = {"rows": table.num_rows, "output": str(args.output), "seconds": round(seconds, 4),
               "contact_share": float(np.mean(table.column("channel").to_numpy() > 0)),
               "mean_propensity": float(np.mean(table.column("propensity").to_numpy()))}
    print(json.dumps(summary))
    return summary


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        print(f"{self.prog}: error: {message} (--help lists the arguments)", file=sys.stderr)
        raise SystemExit(EXIT_INPUT)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = _Parser(prog="score.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="policy.onnx, its folder, or an MLflow model URI")
    ap.add_argument("--input", required=True, help="customers Parquet file")
    ap.add_argument("--output", required=True, help="decisions Parquet file to write")
    ap.add_argument("--week", type=_week, default=None, help="week of every row when the input has none")
    ap.add_argument("--seed", type=int, default=None, help="exploration seed (explore exports)")
    ap.add_argument("--threads", type=_threads, default=None,
                    help="parallel row blocks (default $RAPPORT_ORT_THREADS or 1)")
    ap.add_argument("--traceback", action="store_true",
                    help="on failure print the full traceback instead of one line")
    args = ap.parse_args(argv)
    try:
        return score(args)
    except Exception as err:
        if args.traceback or full_error_requested():
            raise
        code, line = describe(err)
        print(f"error: {line}", file=sys.stderr)
        raise SystemExit(EXIT_INPUT if isinstance(err, InvalidDecisionInput) else code) from None


if __name__ == "__main__":
    main()
