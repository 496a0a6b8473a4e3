"""Guardrails (experiments/guardrails.py): judged on the worse end of the CI, checked before any
work, parsed from the command line and read back from a run's params."""

from __future__ import annotations

import json

import pytest

from rapport.experiments import guardrails as g
from rapport.experiments.guardrails import GuardrailConfig


def metrics(**kpis: tuple[float, float, float]) -> dict[str, float]:
    """Flat metrics as a run logs them: ``name=(mean, lo, hi)``; a ``d_`` prefix is a baseline diff."""
    out = {}
    for name, (mean, lo, hi) in kpis.items():
        key = f"baseline_diff/{name[2:]}" if name.startswith("d_") else f"kpi/{name}"
        out[key], out[f"{key}/ci_low"], out[f"{key}/ci_high"] = mean, lo, hi
    return out


def test_a_max_passes_only_when_the_upper_ci_bound_respects_it():
    rule = [GuardrailConfig(kpi="opt_outs_per_customer", max=0.06)]
    (inside,) = g.judge(rule, metrics(opt_outs_per_customer=(0.04, 0.03, 0.055)), horizon=52)
    (crossing,) = g.judge(rule, metrics(opt_outs_per_customer=(0.05, 0.04, 0.07)), horizon=52)
    (above,) = g.judge(rule, metrics(opt_outs_per_customer=(0.08, 0.07, 0.09)), horizon=52)
    assert inside.passed and not crossing.passed and not above.passed
    assert g.verdict([inside]) == "pass"
    assert g.verdict([crossing]) == "fail: opt_outs_per_customer <= 0.06: 0.05 [0.04, 0.07]"
    assert g.metrics_of([inside, crossing]) == {"guardrail/passed": 0.0, "guardrail/failed": 1.0}
    assert g.verdict([]) == "" and g.metrics_of([]) == {}


def test_a_min_and_a_vs_baseline_bound_use_the_lower_end_and_the_paired_diff():
    rules = [GuardrailConfig(kpi="lifetime_value_per_customer", min=10.0),
             GuardrailConfig(kpi="churned_share", max_vs_baseline=0.01, min_vs_baseline=-0.2)]
    m = metrics(lifetime_value_per_customer=(12.0, 9.5, 14.0), churned_share=(0.3, 0.2, 0.4),
                d_churned_share=(0.004, -0.002, 0.009))
    ltv, churn_max, churn_min = g.judge(rules, m, horizon=52)
    assert not ltv.passed  # point estimate above 10, lower CI bound below
    assert churn_max.passed and churn_max.rule == "churned_share - baseline <= 0.01"
    assert churn_min.passed and churn_min.ci_low == pytest.approx(-0.002)
    # the baseline against itself differs by exactly 0; a policy without a measured diff fails
    (own,) = g.judge(rules[1:2], {}, horizon=52, is_baseline=True)[:1]
    assert own.passed and own.value == 0.0
    missing = g.judge(rules[1:2], m | {"baseline_diff/churned_share/ci_high": float("nan")}, horizon=52)
    assert not missing[0].passed
    assert "not measured" in g.Check("x <= 1", False, float("nan"), float("nan"), float("nan")).describe()


def test_per_month_divides_the_horizons_total_by_its_months():
    rule = [GuardrailConfig(kpi="contacts_per_customer_per_month", max=4)]
    m = metrics(contacts_per_customer=(40.0, 38.0, 42.0))  # over 52 weeks: 42 / 11.96 = 3.51 per month
    (check,) = g.judge(rule, m, horizon=52)
    assert check.ci_high == pytest.approx(42 * g.WEEKS_PER_MONTH / 52) and check.passed
    (short,) = g.judge(rule, m, horizon=26)  # the same contacts in half the time: 7 a month
    assert not short.passed and short.value == pytest.approx(40 * g.WEEKS_PER_MONTH / 26)


@pytest.mark.parametrize("raw, needles", [
    ({"kpi": "opt_outz", "max": 1}, ["guardrails[0].kpi", "'opt_outz'", "opt_outs_per_customer",
                                     "contacts_per_customer_per_month"]),
    ({"max": 1}, ["guardrails[0].kpi is required"]),
    ({"kpi": "opt_outs_per_customer"}, ["guardrails[0]", "at least one of max, min"]),
    ({"kpi": "opt_outs_per_customer", "maxx": 1}, ["guardrails[0]", "['maxx']", "valid: kpi, max"]),
    ({"kpi": "opt_outs_per_customer", "max": -0.1}, ["guardrails[0].max=-0.1", "never negative", "max >= 0"]),
    ({"kpi": "contacts_per_customer", "min": 0}, ["guardrails[0].min=0", "never fail"]),
    ({"kpi": "churned_share", "max": 5}, ["guardrails[0].max=5", "share in [0, 1]", "0.05"]),
    ({"kpi": "churned_share", "max_vs_baseline": 1.5}, ["max_vs_baseline=1.5", "(-1, 1)"]),
    ({"kpi": "profit_per_customer", "min": 3, "max": 2}, ["min=3 exceeds max=2"]),
    ({"kpi": "profit_per_customer", "max": float("nan")}, ["guardrails[0].max", "finite"]),
    ({"kpi": "profit_per_customer", "max": True}, ["guardrails[0].max", "finite"]),
    ("opt_outs<=1", ["guardrails[0] must be a mapping"]),
])
def test_unusable_rules_are_refused_naming_the_field(raw, needles):
    with pytest.raises(ValueError) as err:
        g.rules_from_config([raw])
    for needle in needles:
        assert needle in str(err.value)


def test_what_is_accepted():
    rules = g.rules_from_config([{"kpi": "kpi/profit_per_customer", "max": -1},  # profit may be negative
                                 {"kpi": "churned_share", "max_vs_baseline": -0.01},  # demands less churn
                                 {"kpi": "contacts_per_customer", "max": 0}])
    assert rules[0].kpi == "profit_per_customer"
    with pytest.raises(ValueError, match="needs an evaluation baseline"):
        g.rules_from_config([{"kpi": "churned_share", "max_vs_baseline": 0.01}], has_baseline=False)
    with pytest.raises(ValueError, match="lifetime_value_per_customer_per_month"):
        g.rules_from_config([{"kpi": "lifetime_value_per_customer_per_month", "max": 1}])


def test_command_line_rules_and_rules_logged_by_a_run():
    assert g.parse_rule("opt_outs_per_customer<=0.06") == GuardrailConfig(kpi="opt_outs_per_customer", max=0.06)
    assert g.parse_rule(" churned_share - baseline <= 0.01") == GuardrailConfig(kpi="churned_share",
                                                                                max_vs_baseline=0.01)
    assert g.parse_rule("lifetime_value_per_customer-baseline>=0").min_vs_baseline == 0
    for bad in ("opt_outs_per_customer<0.06", "opt_outs_per_customer<=lots", "nothing"):
        with pytest.raises(ValueError, match="KPI<=VALUE"):
            g.parse_rule(bad)
    with pytest.raises(ValueError, match="unknown KPI"):
        g.parse_rule("opt_outs<=0.06")
    logged = json.dumps([{"kpi": "opt_outs_per_customer", "max": 0.06},
                         {"kpi": "churned_share", "max_vs_baseline": 0.01, "min": None}])
    rules = g.rules_from_params({"guardrails": logged})
    assert [r.kpi for r in rules] == ["opt_outs_per_customer", "churned_share"]
    assert g.rules_from_params({}) == [] and g.rules_from_params({"guardrails": "[]"}) == []
    assert len(g.union([rules, rules[:1], [g.parse_rule("orders_per_customer>=1")]])) == 3
