"""Studies (``rapport-study``): verdict logic on cases whose answer is known, every shipped study
at ``--quick`` scale, the report and the MLflow parent run, and bad input."""

from __future__ import annotations

import mlflow
import pytest

from rapport.experiments.errors import UserError
from rapport.experiments.studies import (
    CONTRADICTED,
    INCONCLUSIVE,
    SUPPORTED,
    StudyError,
    claim_verdict,
    cli,
    combine,
    load_study,
    parse_study,
    run_study,
    study_names,
)
from rapport.experiments.studies.report import to_markdown, write_report
from rapport.experiments.studies.verdict import VERDICTS

SHIPPED = {"appropriate", "fame_vs_personal", "holistic_vs_single_lever", "people_change", "retention_backfire",
           "seven_must_haves", "targeting_ceiling"}


def _spec(**changes):
    base = {"name": "t", "version": 1, "question": "q?", "hypothesis": "h.",
            "base": ["evaluation.oracle=false", "tracking=none"],
            "arms": {"a": ["agent=mass"], "b": ["agent=mass"]}, "baseline": "a",
            "claims": [{"policy": "b", "versus": "a", "kpi": "lifetime_value", "expect": "higher"}]}
    base.update(changes)
    return base


@pytest.mark.parametrize("expect,lo,hi,verdict", [
    ("higher", 0.1, 0.5, SUPPORTED), ("higher", -0.5, -0.1, CONTRADICTED), ("higher", -0.1, 0.1, INCONCLUSIVE),
    ("lower", -0.5, -0.1, SUPPORTED), ("lower", 0.1, 0.5, CONTRADICTED), ("lower", 0.0, 0.0, INCONCLUSIVE),
    ("higher", float("nan"), 1.0, INCONCLUSIVE)])
def test_claim_verdict_from_the_paired_ci(expect, lo, hi, verdict):
    assert claim_verdict(expect, lo, hi) == verdict


def test_rounding_error_is_not_evidence():
    assert claim_verdict("lower", -1e-12, -1e-13, tol=1e-9) == INCONCLUSIVE
    assert claim_verdict("lower", -1e-12, -1e-13) == SUPPORTED


def test_rules_combine_claims():
    assert combine([SUPPORTED, SUPPORTED]) == SUPPORTED
    assert combine([SUPPORTED, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([SUPPORTED, CONTRADICTED, INCONCLUSIVE]) == CONTRADICTED
    assert combine([SUPPORTED, INCONCLUSIVE], "any") == SUPPORTED
    assert combine([SUPPORTED, CONTRADICTED], "any") == INCONCLUSIVE
    assert combine([CONTRADICTED, CONTRADICTED], "any") == CONTRADICTED
    with pytest.raises(ValueError, match="rule"):
        combine([SUPPORTED], "most")


def test_a_policy_compared_with_itself_is_inconclusive():
    result = run_study(parse_study(_spec()), quick=True, log=lambda _: None)
    row = result.claims.iloc[0]
    assert row["diff"] == 0.0 and row.ci_low == 0.0 and row.ci_high == 0.0
    assert row.verdict == INCONCLUSIVE and result.verdict == INCONCLUSIVE


def test_weekly_email_to_everyone_on_low_tolerance_is_contradicted():
    """Customers who tolerate little marketing: e-mailing everyone weekly instead of every two
    weeks loses lifetime value, so the claim that weekly keeps more is contradicted — and the
    opposite claim (weekly keeps less) is supported, on the same paired CI."""
    spec = _spec(base=["env=low_tolerance", "evaluation.oracle=false", "tracking=none"],
                 arms={"mass": ["agent=mass"], "weekly": ["agent=mass", "agent.params.every_k_weeks=1"]},
                 baseline="mass",
                 claims=[{"policy": "weekly", "versus": "mass", "kpi": "lifetime_value", "expect": "higher"},
                         {"policy": "mass", "versus": "weekly", "kpi": "lifetime_value", "expect": "higher"}],
                 rule="any")
    result = run_study(parse_study(spec), quick=True, log=lambda _: None)
    assert list(result.claims.verdict) == [CONTRADICTED, SUPPORTED]
    assert result.claims["diff"].iloc[0] == pytest.approx(-result.claims["diff"].iloc[1])
    assert result.verdict == INCONCLUSIVE  # rule any: one supported, one contradicted
    md = to_markdown(result)
    assert "**contradicted**" in md and "weekly higher lifetime_value than mass" in md


def test_bonferroni_judges_each_check_at_the_corrected_level_on_a_wider_ci():
    """Two claims in one condition: Bonferroni judges each at 1 − 0.05/2 = 97.5 %, so each CI
    contains the uncorrected one, and the report says so; too few bootstrap draws for the
    corrected tails are refused before anything trains."""
    claims = [{"policy": "weekly", "versus": "mass", "kpi": "lifetime_value", "expect": "higher"},
              {"policy": "weekly", "versus": "mass", "kpi": "profit", "expect": "higher"}]
    base = ["env=low_tolerance", "evaluation.oracle=false", "tracking=none"]
    arms = {"mass": ["agent=mass"], "weekly": ["agent=mass", "agent.params.every_k_weeks=1"]}
    plain = run_study(parse_study(_spec(base=base, arms=arms, baseline="mass", claims=claims,
                                        quick=["evaluation.bootstrap=2000"])),
                      quick=True, log=lambda _: None)
    corrected = run_study(parse_study(_spec(base=base, arms=arms, baseline="mass", claims=claims,
                                            quick=["evaluation.bootstrap=2000"], correction="bonferroni")),
                          quick=True, log=lambda _: None)
    assert list(plain.claims.confidence) == [0.95, 0.95]
    assert list(corrected.claims.confidence) == pytest.approx([0.975, 0.975])
    assert list(corrected.claims["diff"]) == list(plain.claims["diff"])
    assert (corrected.claims.ci_low <= plain.claims.ci_low).all()
    assert (corrected.claims.ci_high >= plain.claims.ci_high).all()
    assert ((corrected.claims.ci_high - corrected.claims.ci_low)
            > (plain.claims.ci_high - plain.claims.ci_low)).all()
    assert "Bonferroni over the 2 checks" in to_markdown(corrected)
    assert "no multiplicity adjustment" in to_markdown(plain)
    few = _spec(base=base, arms=arms, baseline="mass", claims=claims, quick=["evaluation.bootstrap=300"],
                correction="bonferroni")
    with pytest.raises(StudyError, match="evaluation.bootstrap >= 800"):
        run_study(parse_study(few), quick=True, log=lambda _: None)


def test_shipped_studies_load_and_name_what_they_test():
    assert set(study_names()) >= SHIPPED
    for name in study_names():
        st = load_study(name)
        assert st.name == name and st.version >= 1 and st.hypothesis and st.question
        assert st.baseline in st.arms


def test_every_study_runs_quick_with_a_report_and_an_mlflow_parent_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "studies"
    verdicts = cli.run(["all", "--quick", "--out", str(out), f"tracking.uri={uri}"])
    assert set(verdicts) == set(study_names())
    assert set(verdicts.values()) <= set(VERDICTS)
    summary = (out / "summary.md").read_text()
    for name, verdict in verdicts.items():
        report = (out / name / "report.md").read_text()
        assert f"**Verdict: {verdict}**" in report and f"| [{name}]({name}/report.md) |" in summary
        assert (out / name / "claims.csv").is_file()
        assert any(p.suffix == ".png" for p in (out / name).iterdir())
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("studies")
    parents = client.search_runs([exp.experiment_id], "tags.`rapport.command` = 'study'")
    assert {r.data.tags["rapport.study"]: r.data.tags["rapport.verdict"] for r in parents} == verdicts
    st = load_study("appropriate")
    parent = next(r for r in parents if r.data.tags["rapport.study"] == "appropriate")
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == len(st.arms) * len(st.conditions)
    assert all("kpi/lifetime_value_per_customer" in c.data.metrics for c in children)


def test_report_files(tmp_path):
    result = run_study(parse_study(_spec()), quick=True, log=lambda _: None)
    paths = write_report(result, tmp_path)
    assert paths["report"].read_text().startswith("# Study `t` (version 1) — quick")
    assert paths["main"].is_file()


@pytest.mark.parametrize("changes,message", [
    ({"arms": {"a": ["agent=mass"]}}, "at least two arm"),
    ({"baseline": "c"}, "baseline 'c' is not an arm"),
    ({"claims": [{"policy": "b", "versus": "a", "kpi": "loyalty", "expect": "higher"}]}, "unknown KPI 'loyalty'"),
    ({"claims": [{"policy": "b", "versus": "a", "kpi": "profit", "expect": "up"}]}, "expect must be one of"),
    ({"claims": [{"policy": "z", "versus": "a", "kpi": "profit", "expect": "higher"}]}, "policy: 'z' is not an arm"),
    ({"claims": [{"policy": "a", "versus": "a", "kpi": "profit", "expect": "higher"}]}, "the same arm"),
    ({"claims": [{"policy": "b", "versus": "a", "kpi": "profit", "expect": "higher", "condition": "x"}]},
     "condition 'x' is not a condition"),
    ({"rule": "most"}, "rule must be one of"),
    ({"correction": "holm"}, "correction must be one of"),
    ({"version": 0}, "version must be an integer"),
    ({"colour": "red"}, "unknown key"),
    ({"arms": {"a": ["agent=mass"], "b": ["mass"]}}, "is not key=value"),
    ({"arms": {"a": ["agent=mass"], "b": {"train": ["env.customers=1"]}}}, "'overrides' \\(required\\)"),
])
def test_bad_study_specs_name_the_key(changes, message):
    with pytest.raises(StudyError, match=message):
        parse_study(_spec(**changes))


def test_an_arm_with_a_bad_override_is_named():
    spec = parse_study(_spec(arms={"a": ["agent=mass"], "b": ["agent=mass", "agent.params.every_k_weeks=-1"]}))
    with pytest.raises(Exception, match="arm 'b'"):
        run_study(spec, quick=True, log=lambda _: None)


def test_an_arm_trains_in_its_own_world_and_is_evaluated_in_the_conditions():
    """A frozen policy: trained where ``train`` says, evaluated where the other arms are. A bad
    training-world override is named as such."""
    spec = parse_study(_spec(arms={"a": ["agent=mass"],
                                   "b": {"overrides": ["agent=linucb_owned"], "train": ["env=low_tolerance"]}}))
    assert spec.train_overrides("main", "b")[-1] == "env=low_tolerance" and spec.train_overrides("main", "a") is None
    result = run_study(spec, quick=True, log=lambda _: None)
    assert result.conditions["main"].scenarios["b"] == "retail"
    bad = parse_study(_spec(arms={"a": ["agent=mass"],
                                  "b": {"overrides": ["agent=linucb_owned"], "train": ["env.horizon=-1"]}}))
    with pytest.raises(UserError, match="arm 'b', training world: env.horizon"):
        run_study(bad, quick=True, log=lambda _: None)


def test_quick_keeps_an_arms_own_size_and_refuses_the_mismatch():
    spec = parse_study(_spec(arms={"a": ["agent=mass"], "b": ["agent=mass", "env.customers=400"]}))
    with pytest.raises(StudyError, match="arm 'b' is evaluated with env.customers=400 but arm 'a' with 300"):
        run_study(spec, quick=True, log=lambda _: None)


def test_arms_in_different_worlds_belong_in_conditions():
    spec = parse_study(_spec(arms={"a": ["agent=mass"], "b": ["agent=mass", "env=subscription"]}))
    with pytest.raises(StudyError, match="scenario 'subscription' but arm 'a' in 'retail'"):
        run_study(spec, quick=True, log=lambda _: None)


def test_an_arm_whose_world_differs_in_a_field_says_which():
    spec = parse_study(_spec(arms={"a": ["agent=mass"],
                                   "b": ["agent=mass", "+env.overrides.media.annoyance_hazard=0.05"]}))
    result = run_study(spec, quick=True, log=lambda _: None)
    assert result.conditions["main"].world_vs_baseline == {"a": [], "b": ["media.annoyance_hazard"]}
    assert "media.annoyance_hazard" in to_markdown(result)


def test_arms_on_different_populations_are_refused():
    small = ["env.customers=300", "env.horizon=8", "evaluation.blocks=20", "evaluation.seeds=1",
             "evaluation.bootstrap=50", "evaluation.oracle=false", "tracking=none"]
    spec = parse_study(_spec(base=small, arms={"a": ["agent=mass"], "b": ["agent=mass", "env.customers=301"]}))
    with pytest.raises(StudyError, match="arm 'b' is evaluated with env.customers=301 but arm 'a' with 300"):
        run_study(spec, log=lambda _: None)


def test_cli_bad_input_exits_2(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        cli.main(["no_such_study", "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "rapport-study: error: unknown study 'no_such_study'; valid: " in err and "appropriate" in err
    with pytest.raises(SystemExit) as e:
        cli.main(["appropriate", "--quick", "tracking=none", "env.customers=-5", "--out", str(tmp_path)])
    assert e.value.code == 2
    assert "command-line override(s) 'tracking=none env.customers=-5'" in capsys.readouterr().err
    assert not (tmp_path / "appropriate").exists()
    with pytest.raises(SystemExit) as e:  # would silently turn every arm into mass marketing
        cli.main(["appropriate", "--quick", "agent=mass", "--out", str(tmp_path)])
    assert e.value.code == 2 and "would replace what arm 'mass'" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit) as e:
        cli.main(["appropriate", "--quick", "--out", str(tmp_path / "a_file" / "out")])
    assert e.value.code == 2 and "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main([str(tmp_path / "mine.yaml")])
    assert e.value.code == 2 and "does not exist" in capsys.readouterr().err
