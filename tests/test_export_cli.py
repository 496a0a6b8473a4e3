"""``rapport-export`` end to end: a real ``rapport-train`` run (debug settings, SQLite store in a
temp dir) exported in every format, logged back to that run, registered with an alias, and
loaded by ``models:/NAME@champion`` -- deciding as the policy the run logged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from rapport.experiments.config import register_configs
from rapport.experiments.export.modules import EligibilityRule
from rapport.experiments.export.samples import random_observations

torch.set_num_threads(1)
CONF = str(Path(__file__).resolve().parents[1] / "conf")
NAME = "retention-policy"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export-cli")
    uri = f"sqlite:///{tmp}/mlflow.db"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    register_configs()
    from rapport.experiments.train import run as train

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        train(compose("train", overrides=["agent=linucb", "debug=fast", "tracking.experiment=cli",
                                          "tracking.log_plots=false", "progress=false",
                                          "evaluation.distill_depth=2"]))
    mlflow.set_tracking_uri(uri)
    run_id = mlflow.search_runs(experiment_names=["cli"]).run_id.iloc[0]
    yield tmp, uri, run_id
    mlflow.set_tracking_uri(None)
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


def test_rapport_export_run_registers_a_champion_that_decides_like_the_run(trained_run):
    tmp, uri, run_id = trained_run
    from rapport.experiments.export.cli import run as export
    from rapport.experiments.policy_store import load_logged_policy

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("export", overrides=[f"run_id={run_id}", f"out_dir={tmp}/out",
                                           "formats=[onnx,torchscript,mlflow]", f"register={NAME}"])
    result = export(cfg)
    assert {p.name for p in (tmp / "out").iterdir()} >= {
        "policy.onnx", "policy.pt2", "policy_card.md", "policy_card.json", "export_spec.json"}
    assert result.registered == {"name": NAME, "version": 1, "alias": "champion"}

    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"  # resuming the run to log the model left it as it was
    assert run.data.tags["export.model_uri"] == result.model_uri
    logged = {f.path for f in client.list_artifacts(run_id, "export/greedy")}
    assert {"export/greedy/policy.onnx", "export/greedy/policy_card.md"} <= logged
    version = client.get_model_version_by_alias(NAME, "champion")
    assert version.run_id == run_id and version.tags["mode"] == "greedy"

    card = json.loads((tmp / "out" / "policy_card.json").read_text())
    assert card["source"]["run_id"] == run_id
    assert card["scenario"]["name"] == "retail" and card["scenario"]["version"]
    profit = next(k for k in card["evaluation"]["kpis"] if k["key"] == "kpi/profit_per_customer")
    assert profit["mean"] == pytest.approx(run.data.metrics["kpi/profit_per_customer"])
    assert profit["ci_low"] <= profit["mean"] <= profit["ci_high"]
    assert card["source"]["agent"]["name"] == "linucb"
    stages = {r["stage"]: r for r in card["evaluation"]["by_lifecycle_stage"]}
    assert {"new", "active", "at_risk", "lapsed", "reactivated"} <= set(stages)
    contacts = sum(r["contacts"] for r in stages.values())
    assert contacts == pytest.approx(run.data.metrics["kpi/contacts_per_customer"])
    assert "What it does, by lifecycle stage" in (tmp / "out" / "policy_card.md").read_text()
    # evaluation.distill_depth=2: the tree in words as a tag and an artifact, on the card with its fidelity
    rules = run.data.tags["rapport.rules"]
    assert rules.startswith(("if ", "always")) and "no media spend" in rules
    assert 0.0 <= run.data.metrics["distill/fidelity"] <= 1.0
    lo, hi = (run.data.metrics[f"distill/lifetime_value_diff/{b}"] for b in ("ci_low", "ci_high"))
    assert lo <= run.data.metrics["distill/lifetime_value_diff"] <= hi
    assert card["evaluation"]["readable_rules"]["text"] == rules
    md = (tmp / "out" / "policy_card.md").read_text()
    assert "The policy as rules" in md and rules.splitlines()[0] in md
    assert "rules.txt" in {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run_id, "evaluation")}

    source = load_logged_policy(f"runs:/{run_id}/policy")
    obs = random_observations(source.schema, 300, np.random.default_rng(8))
    mask = EligibilityRule.from_schema(source.schema.feature_names, source.schema.channel_names,
                                       source.schema.nvec).mask(obs)
    ref, ref_prop = source.act(obs, np.random.default_rng(0), action_mask=mask)
    champion = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    frame = pd.DataFrame(obs, columns=list(source.schema.feature_names))
    out = pd.DataFrame([d.model_dump() for d in champion.predict(frame)])
    np.testing.assert_array_equal(out[["channel", "offer", "spend_level"]].to_numpy(), ref)
    np.testing.assert_allclose(out["propensity"], ref_prop, atol=1e-5)


@pytest.mark.slow
def test_console_script_exports_a_challenger(trained_run):
    tmp, uri, run_id = trained_run
    exe = Path(sys.executable).parent / "rapport-export"
    proc = subprocess.run(
        [str(exe), f"run_id={run_id}", "formats=[onnx,mlflow]", f"register={NAME}",
         "alias=challenger", f"out_dir={tmp}/challenger", f"hydra.run.dir={tmp}/hydra"],
        capture_output=True, text=True, timeout=600, cwd=tmp,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri, "CI": "true"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = mlflow.MlflowClient()
    challenger = client.get_model_version_by_alias(NAME, "challenger")
    assert challenger.run_id == run_id and challenger.aliases == ["challenger"]
    assert (tmp / "challenger" / "policy.onnx").exists()
    assert not (tmp / "challenger" / "policy.pt2").exists()
    bad = subprocess.run([str(exe), f"run_id={run_id}", "formats=[onnx,tflite]",
                          f"hydra.run.dir={tmp}/hydra-bad"], capture_output=True, text=True,
                         timeout=600, cwd=tmp, env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    assert bad.returncode != 0 and "tflite" in bad.stderr


def _incumbent_log(path: Path, schema, customers: int = 400, weeks: int = 4) -> Path:
    """Logged feedback of a uniform-random incumbent (exact propensities) on a small population."""
    import rapport.envs as envs
    from rapport.agents.baselines import UniformRandom
    from rapport.agents.ope import LoggedFeedback

    env = envs.PopulationEnv(num_envs=customers, horizon=weeks, include_latent=False)
    incumbent, rng = UniformRandom(schema), np.random.default_rng(0)
    obs, info = env.reset(seed=21)
    parts = []
    for week in range(weeks):
        actions, propensity = incumbent.act(obs, rng, action_mask=info["action_mask"])
        next_obs, profit, _, _, info_next = env.step(actions)
        parts.append(LoggedFeedback(schema.feature_names, schema.nvec, np.arange(customers),
                                    np.full(customers, week), obs, actions, propensity,
                                    profit.astype(np.float64), action_mask=info["action_mask"]))
        obs, info = next_obs, info_next
    return LoggedFeedback.concat(parts).write_parquet(path)


def test_promotion_gate_decides_the_alias_and_is_recorded(trained_run):
    tmp, uri, run_id = trained_run
    from rapport.experiments.export.cli import run as export
    from rapport.experiments.policy_store import load_logged_policy

    schema = load_logged_policy(f"runs:/{run_id}/policy").schema
    log = _incumbent_log(tmp / "incumbent.parquet", schema)
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("export", overrides=[f"run_id={run_id}", f"out_dir={tmp}/gated",
                                           "formats=[onnx,mlflow]", "register=gated-policy",
                                           "gate=true", f"gate_log={log}"])
    result = export(cfg)
    promotion = json.loads((tmp / "gated" / "policy_card.json").read_text())["promotion"]
    assert set(promotion) >= {"promote", "candidate_lower_bound", "incumbent_value", "reason"}
    assert promotion["promote"] == (promotion["candidate_lower_bound"]
                                    > promotion["incumbent_value"] + promotion["margin"])
    assert result.registered["alias"] == ("champion" if promotion["promote"] else None)
    tag = json.loads(mlflow.MlflowClient().get_run(run_id).data.tags["export.promotion"])
    assert tag["reason"] == promotion["reason"]
    assert "Promotion gate" in (tmp / "gated" / "policy_card.md").read_text()


def test_gate_defaults_to_on_exactly_when_a_gate_log_is_given(tmp_path):
    from rapport.experiments.errors import UserError
    from rapport.experiments.export.cli import to_config

    log = tmp_path / "log.parquet"
    log.write_bytes(b"")
    assert to_config({"run_id": "r"}).gate is False
    assert to_config({"run_id": "r", "gate_log": str(log), "register": "x"}).gate is True
    assert to_config({"run_id": "r", "gate_log": str(log), "register": "x", "gate": False}).gate is False
    with pytest.raises(UserError, match="gate_log=... turns the promotion gate on.*register=NAME"):
        to_config({"run_id": "r", "gate_log": str(log)})
    with pytest.raises(UserError, match="gate=true needs gate_log"):
        to_config({"run_id": "r", "register": "x", "gate": True})


def test_gate_refuses_a_run_that_fails_its_own_guardrails(trained_run):
    tmp, uri, _ = trained_run
    from rapport.experiments.export.cli import run as export
    from rapport.experiments.policy_store import load_logged_policy
    from rapport.experiments.train import run as train

    # some customers drop out within 8 weeks whatever the policy: "no churn" fails; "opt-outs <= 5
    # per customer" (there are 5 channels) passes
    rules = "guardrails=[{kpi:churned_share,max:0},{kpi:opt_outs_per_customer,max:5}]"
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        metrics = train(compose("train", overrides=["agent=linucb", "debug=fast", "tracking.experiment=cli-guard",
                                                    "tracking.log_plots=false", "progress=false",
                                                    "evaluation.oracle=false", rules]))
    assert metrics["guardrail/passed"] == 0.0 and metrics["guardrail/failed"] == 1.0
    run_id = mlflow.search_runs(experiment_names=["cli-guard"]).run_id.iloc[0]
    assert mlflow.MlflowClient().get_run(run_id).data.tags["rapport.guardrails"].startswith(
        "fail: churned_share <= 0")
    schema = load_logged_policy(f"runs:/{run_id}/policy").schema
    log = _incumbent_log(tmp / "incumbent-guard.parquet", schema)
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        gated = compose("export", overrides=[f"run_id={run_id}", f"out_dir={tmp}/guard", "formats=[onnx,mlflow]",
                                             "register=guarded-policy", f"gate_log={log}"])  # gate: default
        ungated = compose("export", overrides=[f"run_id={run_id}", f"out_dir={tmp}/unguarded",
                                               "formats=[onnx,mlflow]", "register=unguarded-policy",
                                               f"gate_log={log}", "gate=false"])
    result = export(gated)
    promotion = json.loads((tmp / "guard" / "policy_card.json").read_text())["promotion"]
    assert promotion["promote"] is False and result.registered["alias"] is None
    assert promotion["guardrails"]["passed"] is False
    assert [c["passed"] for c in promotion["guardrails"]["checks"]] == [False, True]
    assert promotion["reason"].startswith("keep the incumbent: the candidate run fails its guardrails")
    assert "churned_share <= 0" in promotion["reason"] and "off_policy_promote" in promotion
    # gate=false: no gate even with a gate_log, so the alias is set as without one
    result = export(ungated)
    assert json.loads((tmp / "unguarded" / "policy_card.json").read_text())["promotion"] is None
    assert result.registered["alias"] == "champion"
