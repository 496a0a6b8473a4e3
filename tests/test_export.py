"""Export building blocks: the eligibility layer against the simulator's mask, the standalone
runtime's input checks, exploration propensities, the spec, the policy card and config errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import rapport.envs as envs
from rapport.experiments.builders import schema_of
from rapport.experiments.export.build import ExportSpec, build_decision_module
from rapport.experiments.export.decision_runtime import (
    DecisionRunner,
    InvalidDecisionInput,
    validate_features,
)
from rapport.experiments.export.exporter import export_policy, normalise_formats
from rapport.experiments.export.modules import EligibilityLayer, EligibilityRule, exported
from rapport.experiments.export.policy_card import build_card, card_markdown
from rapport.experiments.export.samples import quick_bandit, random_observations

torch.set_num_threads(1)


def _rule(schema) -> EligibilityRule:
    return EligibilityRule.from_schema(schema.feature_names, schema.channel_names, schema.nvec)


# ---- eligibility ------------------------------------------------------------------------------
def test_eligibility_layer_reproduces_the_simulators_action_mask():
    """Week after week of heavy random contact (so customers opt out of channels), the mask
    computed from the observable opt-in columns equals rapport.envs.observation.action_mask."""
    env = envs.PopulationEnv(num_envs=4000, horizon=30)
    schema = schema_of(env)
    rule, layer = _rule(schema), EligibilityLayer(_rule(schema))
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=5)
    opted_out = 0
    for _ in range(12):
        for mask_of in (rule.mask, lambda o: torch.cat(layer(torch.as_tensor(o)), 1).numpy()):
            np.testing.assert_array_equal(mask_of(obs), info["action_mask"])
        opted_out = int((~info["action_mask"][:, 1:schema.nvec[0]]).any(axis=1).sum())
        actions = np.stack([rng.integers(0, k, env.num_envs) for k in schema.nvec], axis=1)
        obs, _, _, _, info = env.step(actions)
    assert opted_out > 100  # the comparison covered customers unreachable on some channel
    spend = info["action_mask"][:, sum(schema.nvec[:2]) + 1]
    offers = info["action_mask"][:, schema.nvec[0] + 1]
    assert (offers & ~spend).any()  # spend is gated by paid media, not by any reach


def test_eligibility_layer_equals_the_numpy_rule_on_any_opt_in_pattern():
    _, schema = quick_population_schema()
    obs = random_observations(schema, 5000, np.random.default_rng(1), optin_share=0.3)
    rule = _rule(schema)
    torch_mask = torch.cat(EligibilityLayer(rule)(torch.as_tensor(obs)), 1).numpy()
    np.testing.assert_array_equal(torch_mask, rule.mask(obs))
    n_ch, n_off = schema.nvec[:2]
    no_reach = ~rule.mask(obs)[:, 1:n_ch].any(axis=1)
    assert no_reach.any() and not rule.mask(obs)[no_reach, n_ch + 1:n_ch + n_off].any()


def quick_population_schema():
    env = envs.PopulationEnv(num_envs=2)
    return env, schema_of(env)


def test_eligibility_needs_opt_in_features():
    _, schema = quick_population_schema()
    names = tuple(n for n in schema.feature_names if n != "optin_sms")
    with pytest.raises(ValueError, match="optin_sms"):
        EligibilityRule.from_schema(names, schema.channel_names, schema.nvec)


# ---- the runtime on an ONNX export ------------------------------------------------------------
@pytest.fixture(scope="module")
def greedy_export(tmp_path_factory):
    bandit, schema = quick_bandit("linucb")
    result = export_policy(bandit, schema, tmp_path_factory.mktemp("greedy"), formats=["onnx"])
    return bandit, schema, result


def _frame(schema, n=50, seed=2) -> pd.DataFrame:
    obs = random_observations(schema, n, np.random.default_rng(seed))
    frame = pd.DataFrame(obs.astype(np.float64), columns=list(schema.feature_names))
    frame.insert(0, "customer_id", np.arange(n, dtype=np.int64))
    return frame


@pytest.mark.parametrize(("mutate", "column", "message"), [
    (lambda f: f.drop(columns=["frequency"]), "frequency", "missing feature column"),
    (lambda f: f.assign(coupon_code=1.0), "coupon_code", "unexpected column"),
    (lambda f: f.assign(avg_spend=f.avg_spend.astype(str)), "avg_spend", "must be numeric"),
    (lambda f: f.assign(p_alive=np.r_[f.p_alive.iloc[:-1], np.nan]), "p_alive", "NaN"),
    (lambda f: f.assign(tenure_weeks=np.r_[np.inf, f.tenure_weeks.iloc[1:]]), "tenure_weeks", "inf"),
    (lambda f: f.iloc[:0], None, "empty batch"),
    (lambda f: f.assign(customer_id=f.customer_id.astype(float) + 0.5), "customer_id", "integers"),
])
def test_runtime_rejects_bad_input_naming_the_column(greedy_export, mutate, column, message):
    _, schema, result = greedy_export
    runner = DecisionRunner(result.files["onnx"], threads=1)
    with pytest.raises(InvalidDecisionInput, match=message) as err:
        runner.decide_frame(mutate(_frame(schema)))
    assert err.value.column == column
    if column is not None:
        assert repr(column) in str(err.value) or column in str(err.value)


def test_runtime_accepts_ints_and_bools_and_keeps_ids(greedy_export):
    bandit, schema, result = greedy_export
    runner = DecisionRunner(result.files["onnx"], threads=1)
    frame = _frame(schema).assign(week=3)
    typed = frame.assign(frequency=frame.frequency.astype(np.int64),
                         optin_email=frame.optin_email.astype(bool))
    out, out_typed = runner.decide_frame(frame), runner.decide_frame(typed)
    pd.testing.assert_frame_equal(out, out_typed)
    assert list(out.columns) == ["customer_id", "week", "channel", "offer", "spend_level",
                                 "propensity"]
    obs = frame[list(schema.feature_names)].to_numpy(np.float32)
    ref, _ = bandit.policy().act(obs, np.random.default_rng(0), action_mask=_rule(schema).mask(obs))
    np.testing.assert_array_equal(out[["channel", "offer", "spend_level"]].to_numpy(), ref)
    with pytest.raises(InvalidDecisionInput, match=r"\(n_customers, 32\)|shape"):
        runner.decide(obs[:, :5])
    with pytest.raises(InvalidDecisionInput, match="recency_weeks"):
        validate_features(frame.rename(columns={"recency_weeks": "recency"}), schema.feature_names)


def test_spec_travels_with_the_onnx_file(greedy_export):
    _, schema, result = greedy_export
    runner = DecisionRunner(result.files["onnx"])
    spec = ExportSpec.from_json(json.dumps(runner.spec))
    assert spec == result.spec
    assert spec.feature_names == schema.feature_names and spec.mode == "greedy"
    assert [i.name for i in runner.session.get_inputs()] == ["features"]
    assert runner.session.get_inputs()[0].shape[0] not in (1, 4)  # symbolic batch axis
    assert [o.name for o in runner.session.get_outputs()] == ["actions", "propensity"]


# ---- exploration ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["epsilon", "thompson"])
def test_exploring_export_propensities_match_choice_frequencies(kind):
    """One customer decided 12,000 times with fresh noise (60 calls of 200): the share of each
    action is the propensity the export reports for it -- exactly for epsilon-greedy; for
    Thompson the report (hits + 1)/(M + 1) is a Monte-Carlo estimate whose ``hits/M`` part is
    unbiased, each call's M draws being shared by its rows."""
    bandit, schema = quick_bandit(kind)
    module, spec = build_decision_module(bandit, schema, "explore")
    obs = torch.as_tensor(np.repeat(random_observations(schema, 1, np.random.default_rng(4)),
                                    200, axis=0))
    rng = np.random.default_rng(0)
    actions, propensity = [], []
    calls = 60
    for _ in range(calls):
        noise = []
        for n in spec.noise_inputs:
            shape = tuple(len(obs) if s == "n" else s for s in n.shape)
            noise.append(torch.as_tensor(rng.random(shape) if n.distribution == "uniform"
                                         else rng.standard_normal(shape)))
        with torch.no_grad():
            a, p = exported(module)(obs, *noise)
        actions.append(a.numpy())
        propensity.append(p.numpy())
    joint = np.ravel_multi_index(tuple(np.concatenate(actions).T), schema.nvec)
    propensity = np.concatenate(propensity)
    values, counts = np.unique(joint, return_counts=True)
    assert len(values) > 2
    for v, c in zip(values, counts, strict=True):
        rows = joint == v
        if kind == "epsilon":  # exact: every row with this action reports the same number
            assert np.ptp(propensity[rows]) < 1e-12
        freq = c / len(joint)
        if kind == "epsilon":
            estimate, se = propensity[rows][0], np.sqrt(freq * (1 - freq) / len(joint))
        else:
            # rows of one call share the context and the M draws, so any row of the call that
            # chose v carries that call's estimate hits/M for v (the choice itself uses the
            # independent `noise` input, so conditioning on it does not bias the estimate)
            M = spec.noise_inputs[1].shape[0]
            per_call = [(propensity[k * 200:(k + 1) * 200][joint[k * 200:(k + 1) * 200] == v][0]
                         * (M + 1) - 1) / M
                        for k in range(calls) if (joint[k * 200:(k + 1) * 200] == v).any()]
            estimate = float(np.mean(per_call))
            se = np.sqrt(freq / (M * len(per_call))) + np.sqrt(freq * (1 - freq) / len(joint))
        assert abs(freq - estimate) < 3 * se + 0.003, (v, freq, estimate)


# ---- errors and config ------------------------------------------------------------------------
def test_export_rejects_what_it_cannot_export(tmp_path):
    from rapport.agents.baselines import DoNothing

    bandit, schema = quick_bandit("linucb")
    with pytest.raises(ValueError, match="unknown export format.*valid: onnx, torchscript"):
        normalise_formats(["onnx", "savedmodel"])
    assert normalise_formats(["pt2", "pyfunc", "onnx"]) == ("onnx", "torchscript", "mlflow")
    with pytest.raises(ValueError, match="mode must be one of greedy, explore"):
        export_policy(bandit, schema, tmp_path, mode="softmax")
    with pytest.raises(TypeError, match="cannot export DoNothing"):
        export_policy(DoNothing(schema), schema, tmp_path)
    with pytest.raises(ValueError, match="obs_normalization applies to SB3"):
        build_decision_module(bandit, schema, obs_normalization={"mean": [0], "var": [1]})


def test_export_config_errors_name_the_key():
    from rapport.experiments.export.cli import ExportConfig, to_config

    with pytest.raises(ValueError, match="run_id"):
        ExportConfig()
    with pytest.raises(ValueError, match="unknown export format"):
        ExportConfig(run_id="x", formats=["onnx", "tflite"])
    with pytest.raises(ValueError, match="alias must be one of champion, challenger"):
        ExportConfig(run_id="x", alias="prod")
    with pytest.raises(ValueError, match="register=NAME needs mlflow"):
        ExportConfig(run_id="x", formats=["onnx"], register="m")
    with pytest.raises(ValueError, match="gate_log"):
        ExportConfig(run_id="x", register="m", gate=True)
    with pytest.raises(ValueError, match=r"unknown export key\(s\) \['fromat'\]"):
        to_config({"run_id": "x", "fromat": "onnx"})
    assert to_config({"run_id": "x", "formats": ["pt2"], "tracking": {"uri": "sqlite:///a.db"}}) \
        == ExportConfig(run_id="x", formats=["torchscript"], tracking_uri="sqlite:///a.db")


# ---- policy card ------------------------------------------------------------------------------
def test_policy_card_carries_provenance_kpis_schema_actions_and_limits(greedy_export):
    _, schema, result = greedy_export
    run = {"run_id": "abc123", "experiment": "exp", "params": {"agent.name": "linucb", "seed": "3"},
           "metrics": {"kpi/profit_per_customer": 2.5, "kpi/profit_per_customer/ci_low": 2.1,
                       "kpi/profit_per_customer/ci_high": 2.9,
                       "baseline_diff/profit_per_customer": 0.7,
                       "baseline_diff/profit_per_customer/ci_low": 0.5,
                       "baseline_diff/profit_per_customer/ci_high": 0.9}}
    card = build_card(result.spec, run=run, files={"onnx": "policy.onnx"},
                      constraints={"max_contacts_4w": 2, "quiet_weeks": 0},
                      scenario={"name": "retail", "version": "1"})
    json.dumps(card)
    assert card["evaluation"]["kpis"] == [{"key": "kpi/profit_per_customer", "mean": 2.5,
                                           "ci_low": 2.1, "ci_high": 2.9}]
    assert [f["name"] for f in card["features"]] == list(schema.feature_names)
    assert card["actions"]["channel"][0] == "no contact" and len(card["actions"]["offer"]) == 8
    md = card_markdown(card)
    for text in ("abc123", "version `1`", "| `kpi/profit_per_customer` | 2.5 | 2.1 | 2.9 |",
                 "`optin_sms`", "max_contacts_4w", "agent.name", "Known limits",
                 "propensities are 1.0"):
        assert text in md, text
    assert (result.out_dir / "policy_card.md").is_file()
    assert json.loads((result.out_dir / "policy_card.json").read_text())["policy"]["mode"] == "greedy"
