"""``scripts/score.py``: customers Parquet in, decisions Parquet out in the logged-feedback
layout (readable by ``rapport.agents.ope`` once rewards are joined); bad input is refused whole."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from rapport.agents.ope.logged import feedback_from_arrow
from rapport.experiments.export.exporter import export_policy
from rapport.experiments.export.modules import EligibilityRule
from rapport.experiments.export.samples import quick_bandit, random_observations

torch.set_num_threads(1)
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "score.py"
_spec = importlib.util.spec_from_file_location("rapport_score_script", SCRIPT)
score = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(score)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    greedy_bandit, schema = quick_bandit("linucb")
    eps_bandit, _ = quick_bandit("epsilon")
    greedy = export_policy(greedy_bandit, schema, root / "greedy", formats=["onnx"])
    explore = export_policy(eps_bandit, schema, root / "explore", formats=["onnx"], mode="explore")
    obs = random_observations(schema, 3000, np.random.default_rng(5))
    frame = pd.DataFrame(obs, columns=list(schema.feature_names))
    frame.insert(0, "customer_id", np.arange(10_000, 13_000, dtype=np.int64))
    frame["week"] = np.int64(4)
    frame["frequency"] = frame["frequency"].astype(np.int64)  # integer counts are accepted
    customers = root / "customers.parquet"
    frame.to_parquet(customers)
    return root, schema, greedy_bandit, eps_bandit, greedy, explore, obs, customers


def test_score_cli_writes_logged_feedback_that_ope_reads(exports):
    root, schema, bandit, _, greedy, _, obs, customers = exports
    out = root / "decisions.parquet"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--model", str(greedy.out_dir),
                           "--input", str(customers), "--output", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["rows"] == 3000
    table = pq.read_table(out)
    assert table.column_names[:3] == ["customer_id", "episode", "week"]
    assert table.column_names[-6:] == ["channel", "offer", "spend_level", "action", "propensity",
                                       "reward"]
    assert np.isnan(table.column("reward").to_numpy()).all()  # outcome not known yet
    with pytest.raises(ValueError, match="reward"):
        feedback_from_arrow(table)
    observed = table.set_column(table.column_names.index("reward"), "reward",
                                pa.array(np.zeros(3000)))
    logged = feedback_from_arrow(observed)
    np.testing.assert_array_equal(logged.customer_id, np.arange(10_000, 13_000))
    np.testing.assert_array_equal(logged.context, obs)
    mask = EligibilityRule.from_schema(schema.feature_names, schema.channel_names,
                                       schema.nvec).mask(obs)
    ref, _ = bandit.policy().act(obs, np.random.default_rng(0), action_mask=mask)
    np.testing.assert_array_equal(logged.actions, ref)
    assert logged.metadata["policy_kind"] == "bandit:ucb" and logged.metadata["mode"] == "greedy"


def test_exploring_scores_are_seeded_and_carry_propensities(exports):
    root, schema, _, eps_bandit, _, explore, obs, customers = exports
    paths = []
    for seed in (1, 1, 2):
        paths.append(root / f"explore-{seed}-{len(paths)}.parquet")
        score.main(["--model", str(explore.files["onnx"]), "--input", str(customers),
                    "--output", str(paths[-1]), "--seed", str(seed)])
    a, b, c = (pd.read_parquet(p) for p in paths)
    pd.testing.assert_frame_equal(a, b)
    assert not a[["channel", "offer", "spend_level"]].equals(c[["channel", "offer", "spend_level"]])
    mask = EligibilityRule.from_schema(schema.feature_names, schema.channel_names,
                                       schema.nvec).mask(obs)
    ref, prop = eps_bandit.policy(explore=True).act(obs, np.random.default_rng(1), action_mask=mask)
    np.testing.assert_array_equal(a[["channel", "offer", "spend_level"]].to_numpy(), ref)
    np.testing.assert_allclose(a["propensity"], prop, atol=1e-12)
    assert (a["propensity"] < 1).mean() > 0.9  # 1 only where a single action is allowed


@pytest.mark.parametrize(("mutate", "column"), [
    (lambda f: f.drop(columns=["p_alive"]), "p_alive"),
    (lambda f: f.assign(segment="gold"), "segment"),
    (lambda f: f.assign(avg_spend=f.avg_spend.astype(str)), "avg_spend"),
    (lambda f: f.assign(recency_weeks=np.where(np.arange(len(f)) == 7, np.nan, f.recency_weeks)),
     "recency_weeks"),
    (lambda f: f.iloc[:0], "empty batch"),
    (lambda f: f.drop(columns=["customer_id"]), "customer_id"),
    (lambda f: f.drop(columns=["week"]), "week"),
])
def test_bad_input_is_refused_whole_naming_the_column(exports, tmp_path, capsys, mutate, column):
    _, _, _, _, greedy, _, _, customers = exports
    bad = tmp_path / "bad.parquet"
    mutate(pd.read_parquet(customers)).to_parquet(bad)
    out = tmp_path / "out.parquet"
    with pytest.raises(SystemExit) as exit_:
        score.main(["--model", str(greedy.files["onnx"]), "--input", str(bad),
                    "--output", str(out)])
    assert exit_.value.code == 2
    assert column in capsys.readouterr().err
    assert not out.exists()


def test_model_argument_errors(tmp_path):
    from rapport.experiments.errors import UserError

    with pytest.raises(UserError, match="neither a .onnx file"):
        score.load_runner(str(tmp_path / "nothing-here"))
    with pytest.raises(UserError, match="not an exported policy folder"):
        score.load_runner(str(tmp_path))


def test_scores_through_an_mlflow_model_folder_match_the_onnx_file(exports, tmp_path):
    from rapport.experiments.export.pyfunc import save_policy_model

    _, schema, _, _, greedy, _, obs, customers = exports
    model_dir = save_policy_model(tmp_path / "mlflow-model", greedy.files["onnx"], greedy.spec,
                                  example_features=obs[:2])
    via_onnx, via_mlflow = tmp_path / "a.parquet", tmp_path / "b.parquet"
    score.main(["--model", str(greedy.files["onnx"]), "--input", str(customers),
                "--output", str(via_onnx), "--threads", "2"])
    score.main(["--model", str(model_dir), "--input", str(customers), "--output", str(via_mlflow)])
    a, b = pd.read_parquet(via_onnx), pd.read_parquet(via_mlflow)
    pd.testing.assert_frame_equal(a, b)
