"""End to end on the embedded MLflow store: train runs, crashes, multiruns with a parent run,
the leaderboard, evaluating logged policies and Optuna sweeps (all on debug=fast sizes)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from rapport.experiments import compare, train
from rapport.experiments.config import register_configs, to_settings

CONF = Path(__file__).resolve().parents[1] / "conf"
GLOSSARY = (Path(__file__).resolve().parents[1] / "experiments" / "GLOSSARY.md").read_text()
BIN = Path(sys.executable).parent


def compose_cfg(overrides, config_name="train"):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


def client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def runs_of(uri, experiment, extra=""):
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    return c.search_runs([exp.experiment_id], extra, max_results=100) if exp else []


@pytest.fixture(scope="module")
def bandit_run(store):
    metrics = train.run(compose_cfg(["agent=linucb", "debug=fast", f"tracking.uri={store}",
                                     "tracking.experiment=e2e", "seed=3",
                                     "guardrails=[{kpi:opt_outs_per_customer,max:5},"
                                     "{kpi:churned_share,max_vs_baseline:0.9}]"]))
    (run,) = runs_of(store, "e2e", "tags.`rapport.agent` = 'linucb'")
    return run, metrics


@pytest.fixture(scope="module")
def ppo_run(store):
    metrics = train.run(compose_cfg(["agent=ppo", "debug=fast", f"tracking.uri={store}", "tracking.experiment=e2e"]))
    (run,) = runs_of(store, "e2e", "tags.`rapport.agent` = 'ppo'")
    return run, metrics


def test_bandit_run_logs_config_seeds_metrics_plots_and_model(bandit_run, store):
    run, metrics = bandit_run
    d = run.data
    assert run.info.status == "FINISHED"
    assert d.params["agent.params.alpha"] == "1.0" and d.params["env.customers"] == "300"
    assert d.params["seeds.master"] == "3" and len(d.params["seeds.evaluation"].split(",")) == 2
    assert d.tags["scenario.name"] == "retail" and d.tags["scenario.version"]
    assert len(d.tags["git.commit"]) == 40 and d.tags["rapport.label"] == "linucb"
    assert d.metrics["kpi/profit_per_customer"] == pytest.approx(metrics["kpi/profit_per_customer"])
    for key in ("kpi/lifetime_value_per_customer/ci_low", "baseline_diff/profit_per_customer",
                "regret/profit_per_customer", "short_vs_long/kendall_tau"):
        assert key in d.metrics
    # at most one opt-out per channel, churn at most 90 points above doing nothing: both must pass
    assert d.metrics["guardrail/passed"] == 1.0 and d.metrics["guardrail/failed"] == 0.0
    assert d.tags["rapport.guardrails"] == "pass"
    curve = client(store).get_metric_history(run.info.run_id, "train/profit_per_customer")
    assert sorted(m.step for m in curve) == [200 * w for w in range(1, 9)]  # 200 customers x 8 weeks
    arts = {f.path for f in client(store).list_artifacts(run.info.run_id)}
    assert {"config.yaml", "evaluation", "plots"} <= arts
    plots = {f.path for f in client(store).list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/learning_curve.png", "plots/kpi_bars.png", "plots/cumulative_profit.png",
                     "plots/segments.png"}
    evaluation = {f.path for f in client(store).list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/segments.csv", "evaluation/segments_by_stage.csv"} <= evaluation
    assert '"D10"' in d.tags["rapport.segments"]  # the agent's segment table, for the policy card
    cfg_text = client(store).download_artifacts(run.info.run_id, "config.yaml")
    assert "customers: 300" in Path(cfg_text).read_text()


def test_logged_policy_is_an_mlflow_model_that_decides(bandit_run, store):
    import mlflow

    import rapport.envs as envs
    from rapport.experiments.policy_store import load_logged_policy

    run, _ = bandit_run
    mlflow.set_tracking_uri(store)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/policy")
    env = envs.PopulationEnv(num_envs=7)
    obs, _ = env.reset(seed=2)
    out = model.predict(pd.DataFrame(obs, columns=list(env.feature_names)), params={"seed": 1})
    assert list(out.columns) == ["channel", "offer", "spend_level", "propensity"] and len(out) == 7
    policy = load_logged_policy(run.data.tags["rapport.model_uri"])
    actions, _ = policy.act(obs, np.random.default_rng(1))
    np.testing.assert_array_equal(actions, out[["channel", "offer", "spend_level"]].to_numpy())


def test_ppo_run_logs_sb3_metrics_per_iteration_and_a_loadable_model(ppo_run, store):
    from rapport.experiments.policy_store import load_logged_policy

    run, _ = ppo_run
    assert run.info.status == "FINISHED"
    hist = client(store).get_metric_history(run.info.run_id, "time/total_timesteps")
    assert hist and max(m.value for m in hist) >= 1024
    assert "train/value_loss" in run.data.metrics
    policy = load_logged_policy(f"runs:/{run.info.run_id}/policy")
    assert policy.meta["format"] == "sb3" and policy.meta["algo"] == "ppo"
    # agent=ppo trains behind VecNormalize: the frozen statistics were saved and are applied
    stats = policy.meta["obs_normalization"]
    assert len(stats["mean"]) == len(stats["var"]) == policy.schema.n_features
    assert np.ptp(stats["mean"]) > 0 and policy.core.obs_normalization is not None
    np.testing.assert_array_equal(policy.core.obs_normalization["var"], stats["var"])


def _base_key(key: str) -> str:
    key = re.sub(r"/(ci_low|ci_high)(_independent)?$", "", key)
    return re.sub(r"^baseline_diff/", "baseline_diff/<kpi>:", key)


def test_every_logged_metric_key_is_in_the_glossary(bandit_run, ppo_run):
    keys = set(bandit_run[0].data.metrics) | set(ppo_run[0].data.metrics)
    missing = []
    for key in sorted(keys):
        base = re.sub(r"/(ci_low|ci_high)(_independent)?$", "", key)
        if base.startswith("baseline_diff/"):
            base = "kpi/" + base.removeprefix("baseline_diff/")  # documented as baseline_diff/<kpi>
        if f"`{base}`" not in GLOSSARY:
            missing.append(key)
    assert not missing, f"metric keys without a glossary entry: {missing}"


def test_a_crashed_run_ends_failed(store, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("evaluation exploded")

    monkeypatch.setattr(train, "evaluate_configured", broken)
    with pytest.raises(RuntimeError, match="exploded"):
        train.run(compose_cfg(["agent=mass", "debug=fast", f"tracking.uri={store}", "tracking.experiment=crash"]))
    (run,) = runs_of(store, "crash")
    assert run.info.status == "FAILED"


def _cli(args, cwd, store):
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "CI": "true", "HYDRA_FULL_ERROR": "1"}
    return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def multirun(store, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("multirun")
    out = _cli(["rapport-train", "-m", "agent=mass,do_nothing", "debug=fast", "hydra/launcher=joblib",
                "hydra.launcher.n_jobs=2", "tracking.experiment=multirun"], cwd, store)
    assert out.returncode == 0, out.stderr[-3000:]
    return cwd


def test_multirun_nests_jobs_under_a_parent_with_the_leaderboard(multirun, store):
    runs = runs_of(store, "multirun")
    parents = [r for r in runs if r.data.tags.get("rapport.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("rapport.command") == "train"]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.data.tags["rapport.label"] for c in children} == {"mass", "do_nothing"}
    files = {f.path for f in client(store).list_artifacts(parent.info.run_id, "leaderboard")}
    assert files == {"leaderboard/leaderboard.md", "leaderboard/leaderboard.csv", "leaderboard/leaderboard.png",
                     "leaderboard/pareto.png"}
    assert parent.data.tags["rapport.best_policy"] in ("mass", "do_nothing", "oracle")


def test_a_failing_multirun_ends_its_parent_failed(store, tmp_path):
    out = _cli(["rapport-train", "-m", "agent=mass,do_nothing", "debug=fast", "env.customers=-3",
                "tracking.experiment=failing"], tmp_path, store)
    assert out.returncode != 0 and "env.customers" in out.stderr
    (parent,) = runs_of(store, "failing", "tags.`rapport.role` = 'parent'")
    assert parent.info.status == "FAILED"


def test_compare_prints_and_writes_a_paired_leaderboard(multirun, store, tmp_path, capsys):
    board = compare.run(["--experiment", "multirun", "--tracking-uri", store, "--out", str(tmp_path),
                         "--guardrail", "opt_outs_per_customer<=0.5", "--guardrail", "churned_share-baseline<=0.5"])
    printed = capsys.readouterr().out
    assert "| rank | policy" in printed and "do_nothing (baseline)" in printed
    assert "**Trade-offs and guardrails**" in printed and "opt_outs_per_customer <= 0.5" in printed
    assert {p.name for p in tmp_path.iterdir()} == {"leaderboard.md", "leaderboard.csv", "leaderboard.png",
                                                    "pareto.png"}
    csv = pd.read_csv(tmp_path / "leaderboard.csv")
    assert csv.set_index("policy").loc["do_nothing", "guardrails"] == "pass"  # no opt-outs, its own Δ is 0
    assert set(csv.guardrails) <= {"pass"} | {g for g in csv.guardrails if str(g).startswith("fail: ")}
    assert csv.pareto.dtype == bool and csv.pareto.any()
    # each job also evaluated the myopic oracle (evaluation.oracle=true): it joins as the reference
    assert list(csv.policy) == list(board.policy) and set(csv.policy) == {"mass", "do_nothing", "oracle"}
    assert set(csv[csv.policy == "oracle"].role) == {"oracle"}
    row = csv[csv.policy == "mass"].iloc[0]
    key = "diff kpi/profit_per_customer"
    assert row[f"{key} ci_low"] <= row[key] <= row[f"{key} ci_high"]
    assert row[f"{key} ci_high"] - row[f"{key} ci_low"] < \
        row[f"{key} independent ci_high"] - row[f"{key} independent ci_low"]


def test_compare_refuses_runs_from_different_worlds(store):
    for n in (200, 300):
        train.run(compose_cfg(["agent=mass", "debug=fast", f"env.customers={n}", f"tracking.uri={store}",
                               "tracking.experiment=mixed", "tracking.log_model=false", "tracking.log_plots=false"]))
    with pytest.raises(SystemExit):
        compare.run(["--experiment", "mixed", "--tracking-uri", store, "--all-runs", "--out", "/dev/null/x"])
    runs = compare.runs_of_experiment(store, "mixed", all_runs=True)
    with pytest.raises(ValueError, match="different worlds"):
        compare.collect_blocks(store, runs)


def test_evaluate_app_scores_logged_policies_with_baseline_and_oracle(bandit_run, store):
    from rapport.experiments import evaluate

    run, _ = bandit_run
    result = evaluate.run(compose_cfg([f"policies=[{run.info.run_id}]", "debug=fast", f"tracking.uri={store}"],
                                      config_name="evaluate"))
    assert set(result) == {"linucb", "do_nothing", "oracle"}
    assert "baseline_diff/profit_per_customer" in result["linucb"]
    (ev,) = runs_of(store, "evaluations")
    assert ev.info.status == "FINISHED" and "linucb/kpi/profit_per_customer" in ev.data.metrics
    names = {a.path for a in client(store).list_artifacts(ev.info.run_id, "leaderboard")}
    assert "leaderboard/segments.csv" in names  # what each policy does, by stage and value decile
    assert {a.path for a in client(store).list_artifacts(ev.info.run_id, "plots")} >= {"plots/segments.png"}
    with pytest.raises(ValueError, match="not a run id"):
        evaluate.run(compose_cfg(["policies=[nonsense]", "debug=fast", f"tracking.uri={store}"],
                                 config_name="evaluate"))


def test_optuna_sweep_nests_trials_and_logs_the_best(store):
    from rapport.experiments.sweep import run_sweep, search_space

    overrides = ["experiment=sweep_mass", "debug=fast", "sweep.n_trials=3", f"tracking.uri={store}",
                 "tracking.log_model=false"]
    study = run_sweep(overrides, to_settings(compose_cfg(overrides)), compose_fn=compose_cfg)
    assert len(study.trials) == 3
    (parent,) = runs_of(store, "sweep_mass", "tags.`rapport.command` = 'sweep'")
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["sweep/best_value"] == pytest.approx(study.best_value)
    children = runs_of(store, "sweep_mass", f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 3
    # the trials' leaderboard, with the Pareto front of the trials
    board = {a.path for a in client(store).list_artifacts(parent.info.run_id, "leaderboard")}
    assert "leaderboard/pareto.png" in board
    space = search_space({"a": "range(1, 9)", "b": "tag(log, interval(0.01, 1))", "c": "choice(x, y)"})
    assert (space["a"].low, space["a"].high) == (1, 8) and space["b"].log and space["c"].choices == ("x", "y")
    with pytest.raises(ValueError, match="sweep.params.a"):
        search_space({"a": "3"})


def test_progress_bars_are_quiet_under_ci(monkeypatch, capsys):
    from rapport.experiments.progress import bar, progress_enabled

    monkeypatch.setenv("CI", "true")
    assert not progress_enabled(True)
    with bar(10, desc="quiet", enabled=True) as b:
        b.update(10)
    assert "quiet" not in capsys.readouterr().err
    monkeypatch.delenv("CI")
    assert progress_enabled(True) and not progress_enabled(False)
