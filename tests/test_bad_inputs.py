"""Bad input as users meet it, across the entry points: every row must exit non-zero with one
clear line that names the key, field or file (and what is valid), print no traceback, and leave
nothing that looks like a finished result (no MLflow run other than FAILED/KILLED, every Hydra
output folder marked ``FAILED``, no output file).

Rows call each app's ``main(argv)`` in this process (fast); a few end-to-end rows run the real
console scripts. The tracking store is always a SQLite file inside ``tmp_path``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rapport.experiments import evaluate, log_feedback, ope, sweep, train
from rapport.experiments.errors import EXIT_INPUT, EXIT_INTERNAL, UserError
from rapport.experiments.export import cli as export_cli

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
_spec = importlib.util.spec_from_file_location("rapport_score_script_bad", ROOT / "scripts" / "score.py")
score = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(score)

APPS = {"train": (train.main, "rapport-train"), "evaluate": (evaluate.main, "rapport-evaluate"),
        "export": (export_cli.main, "rapport-export"), "ope": (ope.main, "rapport-ope"),
        "log": (log_feedback.main, "rapport-log"), "sweep": (sweep.main, "rapport.experiments.sweep"),
        "score": (score.main, "error")}
HEX = "0123456789abcdef0123456789abcdef"


@dataclass
class Row:
    app: str
    args: list[str]
    needles: list[str]
    code: int = EXIT_INPUT
    fast: bool = True
    """Hydra apps get ``debug=fast`` prepended (300 customers, 8 weeks)."""
    writes: list[str] = field(default_factory=list)
    """Output paths (relative to the working folder) that must not exist afterwards."""
    store: bool = False
    """Start with an (empty) MLflow store in the working folder."""

    @property
    def id(self) -> str:
        return f"{self.app}:{' '.join(self.args)}"[:80]


def T(*args: str, needles: list[str], **kw) -> Row:  # noqa: N802 - table shorthand
    return Row("train", list(args), needles, **kw)


# $F is replaced by the fixtures folder (see `files`)
ROWS = [
    # ------------------------------------------------------------------ rapport-train: sizes
    T("evaluation.blocks=100000", needles=["evaluation.blocks", "1..300"]),
    T("evaluation.blocks=0", needles=["evaluation.blocks", ">= 1"]),
    T("env.customers=0", needles=["env.customers", ">= 1"]),
    T("env.customers=-5", needles=["env.customers", "-5"]),
    T("env.horizon=0", needles=["env.horizon"]),
    T("evaluation.seeds=0", needles=["evaluation.seeds"]),
    T("agent=ppo", "train.timesteps=-1", needles=["train.timesteps"]),
    T("agent=ppo", "train.rollout_size=0", needles=["train.rollout_size"]),
    T("train.customers=0", needles=["train.customers"]),
    T("train.episodes=0", needles=["train.episodes"]),
    T("evaluation.bootstrap=0", needles=["evaluation.bootstrap"]),
    T("constraints.weekly_budget_per_customer=-1", needles=["constraints.weekly_budget_per_customer", ">= 0"]),
    T("constraints.max_contacts_4w=-1", needles=["constraints.max_contacts_4w"]),
    T("evaluation.short_term_weeks=100", needles=["evaluation.short_term_weeks", "1..8"]),
    T("evaluation.shards=50", needles=["evaluation.shards", "1..20"]),
    T("seed=-1", needles=["seed", ">= 0"]),
    # ----------------------------------------------------------------- NaN / inf, wrong types
    T("constraints.weekly_budget_per_customer=nan", needles=["constraints.weekly_budget_per_customer", "nan"]),
    T("evaluation.annual_discount_rate=inf", needles=["evaluation.annual_discount_rate", "[0, 10)"]),
    T("evaluation.confidence=nan", needles=["evaluation.confidence", "(0, 1)"]),
    T("env.customers=nan", needles=["env.customers", "Integer"]),
    T("env.customers=many", needles=["env.customers", "'many'", "Integer"]),
    T("env.customers=2.5", needles=["env.customers", "Integer"]),
    T("tracking.backend=wandb", needles=["tracking.backend", "'mlflow' or 'none'"]),
    # ------------------------------------------------------- unknown keys, Hydra's own errors
    T("env.bogus=1", needles=["env.bogus", "valid keys of env", "customers"]),
    T("+env.bogus=1", needles=["env.bogus", "valid keys of env"]),
    T("foo=1", needles=["foo", "valid keys of the root config", "evaluation"]),
    T("agent=no_such_agent", needles=["agent/no_such_agent", "linucb"]),
    T("env.customers", needles=["env.customers", "EQUAL"]),
    T("+agent.params.alpah=1", needles=["alpah", "valid: alpha"]),
    T("env.scenario=atlantis", needles=["atlantis", "retail"]),
    T("agent@evaluation.baseline=linucb", needles=["evaluation.baseline", "family 'baseline'"]),
    T("agent=ppo", "agent.privileged_critic=maybe", needles=["agent.privileged_critic", "maybe"]),
    T("agent=dqn", "agent.privileged_critic=true", needles=["agent.privileged_critic", "make_ppo", "make_dqn"]),
    T("agent=ppo", "+agent.params.observable_features=3", needles=["agent.params.observable_features"]),
    # ------------------------------------------------------------- guardrails (experiments/guardrails.py)
    T("guardrails=[{kpi:opt_outz,max:0.06}]", needles=["guardrails[0].kpi", "'opt_outz'", "valid:",
                                                       "opt_outs_per_customer"]),
    T("guardrails=[{kpi:opt_outs_per_customer,max:-0.06}]", needles=["guardrails[0].max=-0.06", "never pass"]),
    T("guardrails=[{kpi:churned_share,max:6}]", needles=["guardrails[0].max=6", "share in [0, 1]"]),
    T("guardrails=[{kpi:churned_share}]", needles=["guardrails[0]", "at least one of max, min"]),
    T("guardrails=[{kpi:churned_share,maximum:0.1}]", needles=["guardrails[0]", "'maximum'", "valid: kpi"]),
    T("guardrails=[{kpi:churned_share,max_vs_baseline:0.01}]", "evaluation.baseline=null",
      needles=["guardrails[0]", "evaluation.baseline is null"]),
    # ------------------------------------------------------------------ rapport-evaluate
    Row("evaluate", [], ["policies is empty"]),
    Row("evaluate", ["policies=[$F/missing]"], ["policies entry", "no such folder", "runs:/"]),
    Row("evaluate", ["policies=[$F/empty]"], ["policies entry", "empty folder"]),
    Row("evaluate", ["policies=[$F/not_a_policy]"], ["policies entry", "without an MLmodel file"]),
    Row("evaluate", [f"policies=[{HEX}]"], [f"no run {HEX}", "tracking store"], store=True),
    Row("evaluate", [f"policies=[runs:/{HEX}/policy]"], ["tracking store", "does not exist"]),
    Row("evaluate", ["policies=[my-policy]"], ["'my-policy'", "not a run id"]),
    Row("evaluate", ["evaluation.blocks=100000", "policies=[$F/missing]"], ["evaluation.blocks", "1..300"]),
    # -------------------------------------------------------------------- rapport-export
    Row("export", [], ["run_id"], fast=False),
    Row("export", ["model_uri=$F/missing"], ["model_uri", "no such folder"], fast=False),
    Row("export", ["model_uri=$F/empty"], ["model_uri", "empty folder"], fast=False),
    Row("export", ["model_uri=$F/not_a_policy"], ["model_uri", "without an MLmodel file"], fast=False),
    Row("export", [f"run_id={HEX}"], ["run_id", "no such run"], fast=False, store=True),
    Row("export", [f"run_id={HEX}"], ["run_id", "tracking store", "does not exist"], fast=False),
    Row("export", ["run_id=abc", "formats=[onnx,tflite]"], ["tflite", "valid: onnx"], fast=False),
    Row("export", ["run_id=abc", "opset=3"], ["opset", "7..23"], fast=False),
    Row("export", ["run_id=abc", "opset=abc"], ["opset", "Integer"], fast=False),
    Row("export", ["run_id=abc", "mode=fancy"], ["mode", "greedy, explore"], fast=False),
    Row("export", ["run_id=abc", "+bogus=1"], ["bogus", "valid:"], fast=False),
    Row("export", ["run_id=abc", "out_dir=$F/a_file/sub"], ["out_dir", "not a writable folder"], fast=False),
    Row("export", ["run_id=abc", "gate=true", "register=x", "gate_log=$F/missing.parquet"], ["gate_log"],
        fast=False),
    Row("export", ["run_id=abc", "gate=true", "register=x", "gate_log=$F/good.parquet", "gate_delta=nan"],
        ["gate_delta", "(0, 1)"], fast=False),
    # ------------------------------------------------------------------------ rapport-ope
    Row("ope", ["bench.sample_sizes=[2]"], ["bench.sample_sizes", ">= 4"]),
    Row("ope", ["bench.replications=0"], ["bench.replications"]),
    Row("ope", ["bench.behaviour_epsilon=1.5"], ["bench.behaviour_epsilon", "[0, 1]"]),
    Row("ope", ["ope.alpha=nan"], ["ope.alpha", "(0, 1)"]),
    Row("ope", ["ope.gamma=inf"], ["ope.gamma", "[0, 1]"]),
    Row("ope", ["ope.bandit_estimators=[ipw]"], ["ipw", "valid:"]),
    Row("ope", ["bench.promotion_margin=nan"], ["bench.promotion_margin"]),
    # ------------------------------------------------------------------------ rapport-log
    Row("log", ["log.epsilon=-0.1"], ["log.epsilon", "[0, 1]"]),
    Row("log", ["log.epsilon=nan"], ["log.epsilon"]),
    Row("log", ["log.weeks=0"], ["log.weeks"]),
    Row("log", ["log.weeks=100", "log.output=out.parquet"], ["log.weeks", "1..8"], writes=["out.parquet"]),
    Row("log", ["log.output=''"], ["log.output"]),
    Row("log", ["log.output=$F/a_file/x.parquet"], ["log.output", "not a writable folder"]),
    # ---------------------------------------------------------------------------- sweeps
    Row("sweep", ["agent=mass", "sweep.n_trials=0"], ["sweep.n_trials"]),
    Row("sweep", ["agent=mass"], ["sweep.params is empty"]),
    Row("sweep", ["agent=mass", "+sweep.params={agent.params.every_k_weeks: 'range(9, 1)'}"],
        ["sweep.params.agent.params.every_k_weeks", "empty"]),
    # ------------------------------------------------------------ scoring payloads (score.py)
    *[Row("score", ["--model", model, "--input", f"$F/{data}", "--output", "out.parquet", *extra], needles,
          fast=False, writes=["out.parquet"])
      for model, data, extra, needles in [
          ("$F/missing", "good.parquet", [], ["--model", "neither a .onnx file"]),
          ("$F/empty", "good.parquet", [], ["--model", "not an exported policy folder"]),
          ("$F/greedy", "missing.parquet", [], ["--input", "is not a file"]),
          ("$F/greedy", "garbage.parquet", [], ["--input", "not a readable Parquet file"]),
          ("$F/greedy", "customers.csv", [], ["--input", "not a readable Parquet file"]),
          ("$F/greedy", "nan.parquet", [], ["NaN in column 'recency_weeks'", "finite"]),
          ("$F/greedy", "inf.parquet", [], ["inf in column 'avg_spend'"]),
          ("$F/greedy", "empty.parquet", [], ["empty batch"]),
          ("$F/greedy", "no_id.parquet", [], ["customer_id"]),
          ("$F/greedy", "extra.parquet", [], ["segment", "accepted columns"]),
          ("$F/greedy", "text.parquet", [], ["avg_spend", "numeric"]),
          ("$F/greedy", "good.parquet", ["--threads", "0"], ["--threads", ">= 1"]),
          ("$F/greedy", "good.parquet", ["--week", "-1"], ["--week", ">= 0"]),
      ]],
    Row("score", ["--model", "$F/greedy", "--input", "$F/good.parquet", "--output", "$F/a_file/out.parquet"],
        ["--output", "not a writable folder"], fast=False),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An exported policy, customer files good and bad, folders that are not policies."""
    from rapport.experiments.export.exporter import export_policy
    from rapport.experiments.export.samples import quick_bandit, random_observations

    root = tmp_path_factory.mktemp("bad_inputs")
    bandit, schema = quick_bandit("linucb")
    export_policy(bandit, schema, root / "greedy", formats=["onnx"])
    frame = pd.DataFrame(random_observations(schema, 40, np.random.default_rng(1)),
                         columns=list(schema.feature_names))
    frame.insert(0, "customer_id", np.arange(40, dtype=np.int64))
    frame["week"] = np.int64(3)
    frame.to_parquet(root / "good.parquet")
    frame.to_csv(root / "customers.csv", index=False)
    frame.assign(recency_weeks=np.where(np.arange(40) == 3, np.nan, frame.recency_weeks)).to_parquet(root / "nan.parquet")
    frame.assign(avg_spend=np.where(np.arange(40) == 5, np.inf, frame.avg_spend)).to_parquet(root / "inf.parquet")
    frame.iloc[:0].to_parquet(root / "empty.parquet")
    frame.drop(columns=["customer_id"]).to_parquet(root / "no_id.parquet")
    frame.assign(segment="gold").to_parquet(root / "extra.parquet")
    frame.assign(avg_spend=frame.avg_spend.astype(str)).to_parquet(root / "text.parquet")
    (root / "garbage.parquet").write_bytes(b"PAR1 this is not parquet")
    (root / "empty").mkdir()
    (root / "not_a_policy").mkdir()
    (root / "not_a_policy" / "notes.txt").write_text("a folder, but no MLmodel")
    (root / "a_file").write_text("a file where a folder is expected")
    return root


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """An MLflow SQLite store with its tables, created once (copying it skips the migrations)."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("store")
    MlflowClient(f"sqlite:///{folder}/mlflow.db").search_experiments()
    return folder / "mlflow.db"


@pytest.fixture(autouse=True)
def _restore_logging():
    """An in-process Hydra app points the root logger at this test's captured stdout; put the
    handlers back so later tests on this worker do not log to a closed stream."""
    import logging

    loggers = [logging.root, *[lg for lg in logging.Logger.manager.loggerDict.values()
                               if isinstance(lg, logging.Logger)]]
    saved = {lg: (lg.handlers[:], lg.level, lg.propagate) for lg in loggers}
    yield
    for lg in [logging.root, *[lg for lg in logging.Logger.manager.loggerDict.values()
                               if isinstance(lg, logging.Logger)]]:
        handlers, level, propagate = saved.get(lg, ([], logging.NOTSET, True))
        for h in lg.handlers:
            if h not in handlers:
                lg.removeHandler(h)
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh working folder whose store is ``sqlite:///<it>/mlflow.db`` (not created);
    tracebacks not requested."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("CI", "true")
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    return tmp_path


@pytest.fixture
def stored_workdir(workdir, empty_store):
    """:func:`workdir` with an empty store already in it."""
    shutil.copy(empty_store, workdir / "mlflow.db")
    return workdir


def run_statuses(folder: Path) -> list[str]:
    db = folder / "mlflow.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as con:
        return [status for (status,) in con.execute("select status from runs")]


def assert_nothing_looks_finished(folder: Path, writes: list[str] = ()) -> None:
    statuses = run_statuses(folder)
    assert set(statuses) <= {"FAILED", "KILLED"}, f"MLflow runs left {statuses}"
    jobs = [p.parent for p in (folder / "outputs").rglob(".hydra")] if (folder / "outputs").exists() else []
    for job in jobs:
        assert (job / "FAILED").is_file(), f"Hydra output folder {job} is not marked FAILED"
    for name in writes:
        assert not (folder / name).exists(), f"{name} was written by a failed run"
    leftovers = [p.name for p in folder.rglob("*.partial-*")]
    assert not leftovers, f"staging files left: {leftovers}"


def call(app: str, argv: list[str], capsys) -> tuple[int, str, str]:
    main, _ = APPS[app]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err


def error_lines(err: str, app: str) -> list[str]:
    prefix = APPS[app][1]
    return [line for line in err.splitlines()
            if line.startswith((f"{prefix}: error: ", "error: ", "score.py: error: "))]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_exits_with_one_clear_line(row, files, workdir, capsys, request):
    if row.store:
        request.getfixturevalue("stored_workdir")
        capsys.readouterr()
    argv = [a.replace("$F", str(files)) for a in row.args]
    if row.fast:
        argv = ["debug=fast", *argv]
    code, out, err = call(row.app, argv, capsys)
    assert code == row.code != 0
    assert "Traceback" not in out + err
    lines = error_lines(err, row.app)
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    assert len([line for line in err.splitlines() if line.strip()]) == 1, f"more than the error line:\n{err}"
    for needle in row.needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert_nothing_looks_finished(workdir, row.writes)


def test_the_table_covers_every_entry_point_with_enough_rows():
    assert len(ROWS) >= 30
    assert {r.app for r in ROWS} == set(APPS)


# ------------------------------------------------------------------------ asking for more
def test_hydra_full_error_shows_the_exception(files, workdir, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(UserError, match="evaluation.blocks"):
        train.main(["debug=fast", "evaluation.blocks=100000"])


def test_score_traceback_switch_shows_the_exception(files, workdir):
    with pytest.raises(UserError, match="not a readable Parquet file"):
        score.main(["--model", str(files / "greedy"), "--input", str(files / "garbage.parquet"),
                    "--output", "out.parquet", "--traceback"])


# ------------------------------------------------------------- faults after work started
@pytest.fixture
def cheap_train(monkeypatch):
    """rapport-train of the do-nothing policy whose evaluation is replaced by ``fault``."""
    def with_fault(fault):
        def broken(*args, **kwargs):
            fault()
        monkeypatch.setattr(train, "evaluate_configured", broken)
        return ["debug=fast", "agent=do_nothing", "evaluation.oracle=false", "tracking.experiment=fault"]
    return with_fault


def test_a_crash_mid_run_is_one_line_a_failed_run_and_a_marked_output_folder(cheap_train, stored_workdir, capsys):
    workdir = stored_workdir
    def explode():
        raise RuntimeError("evaluation exploded")

    code, out, err = call("train", cheap_train(explode), capsys)
    assert code == EXIT_INTERNAL
    (line,) = error_lines(err, "train")
    assert "internal error: RuntimeError: evaluation exploded" in line and "HYDRA_FULL_ERROR=1" in line
    assert "Traceback" not in err
    assert run_statuses(workdir) == ["FAILED"]
    (marker,) = (workdir / "outputs").rglob("FAILED")
    assert "Traceback" in marker.read_text() and "evaluation exploded" in marker.read_text()


def _ctrl_c():
    raise KeyboardInterrupt


def _sigterm():
    os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("fault, code, status", [(_ctrl_c, 130, "KILLED"), (_sigterm, 143, "FAILED")],
                         ids=["sigint", "sigterm"])
def test_interrupts_end_the_run_killed_or_failed(cheap_train, stored_workdir, capsys, fault, code, status):
    workdir = stored_workdir
    exit_code, _, err = call("train", cheap_train(fault), capsys)
    assert exit_code == code
    assert len(error_lines(err, "train")) == 1 and "Traceback" not in err
    assert run_statuses(workdir) == [status]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_failed_log_run_leaves_no_parquet(stored_workdir, capsys, monkeypatch):
    workdir = stored_workdir
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(log_feedback.LoggedFeedback, "write_parquet", broken)
    code, _, err = call("log", ["debug=fast", "agent=mass", "log.output=logs/feedback.parquet"], capsys)
    assert code != 0 and "disk full" in err
    assert not (workdir / "logs" / "feedback.parquet").exists()
    assert_nothing_looks_finished(workdir)


def test_a_failed_export_leaves_no_policy_file_that_scores(files, tmp_path, monkeypatch):
    from rapport.experiments.export import exporter, torch_export
    from rapport.experiments.export.samples import quick_bandit

    def broken(*args, **kwargs):
        raise RuntimeError("torch.export failed")

    monkeypatch.setattr(torch_export, "export_pt2", broken)
    bandit, schema = quick_bandit("linucb")
    with pytest.raises(RuntimeError, match="torch.export failed"):
        exporter.export_policy(bandit, schema, tmp_path / "out", formats=["onnx", "torchscript"])
    assert list((tmp_path / "out").iterdir()) == []  # not even the ONNX file written first


# --------------------------------------------------------------------- the real commands
def _console(args: list[str], cwd: Path, **env_extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(CI="true", MLFLOW_TRACKING_URI=f"sqlite:///{cwd}/mlflow.db", **env_extra)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, needle", [
    (["rapport-train", "debug=fast", "evaluation.blocks=100000"], "evaluation.blocks=100000 exceeds env.customers=300"),
    (["rapport-train", "debug=fast", "env.bogus=1"], "env.bogus: no such key"),
    (["rapport-ope", "debug=fast", "ope.alpha=nan"], "ope.alpha"),
], ids=["blocks", "unknown-key", "ope-nan"])
def test_console_scripts_print_one_line_and_exit_2(args, needle, tmp_path):
    proc = _console([str(BIN / args[0]), *args[1:]], tmp_path)
    assert proc.returncode == EXIT_INPUT
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith(f"{args[0]}: error: ") and needle in lines[0]
    assert_nothing_looks_finished(tmp_path)


def test_console_script_with_hydra_full_error_prints_the_traceback(tmp_path):
    proc = _console([str(BIN / "rapport-train"), "debug=fast", "env.customers=0"], tmp_path,
                    HYDRA_FULL_ERROR="1")
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "env.customers" in proc.stderr


@pytest.mark.slow
def test_a_failing_multirun_names_the_job(tmp_path):
    proc = _console([str(BIN / "rapport-train"), "-m", "agent=mass,do_nothing", "debug=fast",
                     "env.customers=-3"], tmp_path)
    assert proc.returncode == EXIT_INPUT
    lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and "job [" in lines[0] and "env.customers" in lines[0]
    assert "Traceback" not in proc.stderr
