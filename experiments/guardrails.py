"""Guardrails: bounds a policy must respect on KPIs other than the one it is ranked by.

A run's config lists them (``guardrails`` in ``conf/train.yaml``; schema :class:`GuardrailConfig`)::

    guardrails:
      - {kpi: opt_outs_per_customer, max: 0.06}
      - {kpi: contacts_per_customer_per_month, max: 4}
      - {kpi: churned_share, max_vs_baseline: 0.01}

``kpi`` is a glossary key without ``kpi/`` (``experiments/GLOSSARY.md``), or such a
``*_per_customer`` key with ``_per_month`` appended: the horizon's total divided by its months
(``env.horizon`` / :data:`WEEKS_PER_MONTH`), e.g. contacts per customer per month. Each rule
sets at least one bound: ``max`` / ``min`` on the KPI itself, ``max_vs_baseline`` /
``min_vs_baseline`` on the paired difference policy − evaluation baseline (``baseline_diff/``).

**How a rule is judged: on the worse end of the confidence interval.** A ``max`` passes only
when the KPI's upper CI bound is at or below it, a ``min`` only when the lower bound is at or
above it (likewise for differences, on their paired CI). "Pass" therefore means the evaluation
*shows* the bound holds at the run's ``evaluation.confidence`` (a one-sided test at
(1 + confidence) / 2); a point estimate inside the bound with a CI that crosses it fails, and the
message gives both. A KPI or difference that was not measured fails. The evaluation baseline
compared with itself has a difference of exactly 0.

**Which thresholds are refused** (while the config is validated, naming ``guardrails[i]``): an
unknown ``kpi`` (the valid ones are listed), a rule without a bound, a bound that is not a
finite number, unknown fields, and a bound that can never fail or never pass, so that no guardrail
is decorative: on a KPI that cannot be negative (counts, costs, ``*_share``) a negative ``max``
(never passes) or a ``min`` <= 0 (never fails); on a share (in [0, 1]) a ``max`` >= 1 or a ``min``
> 1; ``min`` above ``max``. A difference against the baseline is signed and both signs mean
something (``max_vs_baseline: 0.01`` tolerates one point more churn, ``-0.01`` demands one point
less), so its sign is never refused; on a share a difference lies in (-1, 1), so a bound with
\\|value\\| >= 1 is refused, as is any ``*_vs_baseline`` rule in a run without an evaluation baseline.

In the run config the rules are plain mappings (``RunConfig.guardrails``), checked by
:func:`rules_from_config` so that every message names ``guardrails[i]`` and its field.

API: :func:`rules_from_config` / :func:`check_rule` (validation), :func:`judge` (a policy's flat metrics -> :class:`Check`
list), :func:`verdict` (one line), :func:`parse_rule` (``rapport-compare --guardrail``),
:func:`rules_from_params` (the rules a run logged).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from omegaconf import MISSING

WEEKS_PER_MONTH = 365.25 / 7 / 12
"""Weeks in an average month (4.348): ``*_per_month`` = the horizon's total × this / ``env.horizon``."""
PER_MONTH = "_per_month"
TAG = "rapport.guardrails"
"""Run tag ``rapport-train`` sets when the run has guardrails: :func:`verdict` of its agent."""
BOUNDS = ("max", "min", "max_vs_baseline", "min_vs_baseline")
SIGNED = ("profit", "short_term_profit", "discounted_profit", "lifetime_value")
"""KPI columns that can be negative (profit_from_<stage> too); every other KPI is >= 0."""
NOT_PER_MONTH = ("short_term_profit", "discounted_profit", "residual_clv", "lifetime_value")
"""``*_per_customer`` KPIs that do not accrue evenly over the horizon: no ``_per_month`` form."""


@dataclass
class GuardrailConfig:
    """One guardrail: a KPI and at least one bound (see the module doc for how it is judged)."""

    kpi: str = MISSING
    """Glossary key without ``kpi/`` (``opt_outs_per_customer``, ``churned_share``), or a
    ``*_per_customer`` key + ``_per_month`` (``contacts_per_customer_per_month``)."""
    max: float | None = None
    """The KPI's upper CI bound must be <= this."""
    min: float | None = None
    """The KPI's lower CI bound must be >= this."""
    max_vs_baseline: float | None = None
    """The paired difference policy − baseline: its upper CI bound must be <= this."""
    min_vs_baseline: float | None = None
    """The paired difference policy − baseline: its lower CI bound must be >= this."""


def _kpi_columns() -> dict[str, str]:
    """Rule name (glossary key without ``kpi/``) -> evaluation KPI column."""
    from rapport.experiments.evaluation import KPI_KEY

    names = {key.removeprefix("kpi/"): col for col, key in KPI_KEY.items()}
    for name, col in list(names.items()):
        if name.endswith("_per_customer") and col not in NOT_PER_MONTH:
            names[name + PER_MONTH] = col
    return names


def valid_kpis() -> list[str]:
    """Every KPI name a guardrail can use."""
    return list(_kpi_columns())


def _kind(column: str) -> str:
    if column.endswith("unreachable") or column == "churned":
        return "share"
    if column in SIGNED or column.startswith("profit_from_"):
        return "signed"
    return "non-negative"


def check_rule(rule: GuardrailConfig, where: str, *, has_baseline: bool = True) -> None:
    """Raise ValueError naming ``where`` (e.g. ``guardrails[0]``) if ``rule`` is unusable."""
    columns = _kpi_columns()
    if not isinstance(rule.kpi, str) or rule.kpi in ("", MISSING):
        raise ValueError(f"{where}.kpi is required: the KPI the rule bounds, e.g. opt_outs_per_customer")
    kpi = rule.kpi.removeprefix("kpi/")
    if kpi not in columns:
        import difflib

        close = difflib.get_close_matches(kpi, columns, n=4, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(f"{where}.kpi: unknown KPI {rule.kpi!r}; {hint}valid: any *_per_customer or *_share KPI of "
                         f"experiments/GLOSSARY.md (without kpi/), optionally + _per_month, e.g. opt_outs_per_customer, "
                         f"churned_share, contacts_per_customer_per_month")
    rule.kpi = kpi
    set_bounds = {b: getattr(rule, b) for b in BOUNDS if getattr(rule, b) is not None}
    if not set_bounds:
        raise ValueError(f"{where} ({kpi}): set at least one of {', '.join(BOUNDS)}")
    for b, v in set_bounds.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"{where}.{b} must be a finite number, got {v!r}")
    kind = _kind(columns[kpi])
    lo, hi = rule.min, rule.max
    if kind != "signed":
        if hi is not None and hi < 0:
            raise ValueError(f"{where}.max={hi} on {kpi}, which is never negative: the guardrail can never "
                             "pass; valid: max >= 0")
        if lo is not None and lo <= 0:
            raise ValueError(f"{where}.min={lo} on {kpi}, which is never negative: the guardrail can never "
                             "fail; valid: min > 0")
    if kind == "share":
        if hi is not None and hi >= 1:
            raise ValueError(f"{where}.max={hi} on {kpi}, a share in [0, 1]: the guardrail can never fail "
                             f"(a percentage? write {hi / 100:g}); valid: 0 <= max < 1")
        if lo is not None and lo > 1:
            raise ValueError(f"{where}.min={lo} on {kpi}, a share in [0, 1]: the guardrail can never pass; "
                             "valid: 0 < min <= 1")
        for b in ("max_vs_baseline", "min_vs_baseline"):
            v = getattr(rule, b)
            if v is not None and abs(v) >= 1:
                raise ValueError(f"{where}.{b}={v} on {kpi}: a difference of shares lies in (-1, 1), so the "
                                 "guardrail is decided before any evaluation; valid: -1 < value < 1")
    for a, b in (("min", "max"), ("min_vs_baseline", "max_vs_baseline")):
        if getattr(rule, a) is not None and getattr(rule, b) is not None and getattr(rule, a) > getattr(rule, b):
            raise ValueError(f"{where}: {a}={getattr(rule, a)} exceeds {b}={getattr(rule, b)}: the guardrail can "
                             "never pass")
    if not has_baseline and (rule.max_vs_baseline is not None or rule.min_vs_baseline is not None):
        raise ValueError(f"{where}: a *_vs_baseline bound needs an evaluation baseline, but evaluation.baseline "
                         "is null; set agent@evaluation.baseline=<name> or use max/min")


# ---------------------------------------------------------------------------- judging
@dataclass(frozen=True)
class Check:
    """One bound of one rule, judged on one policy's metrics."""

    rule: str
    """The bound in words: ``opt_outs_per_customer <= 0.06``, ``churned_share - baseline <= 0.01``."""
    passed: bool
    value: float
    ci_low: float
    ci_high: float

    def describe(self) -> str:
        if math.isnan(self.value):
            return f"{self.rule}: not measured"
        return f"{self.rule}: {self.value:.4g} [{self.ci_low:.4g}, {self.ci_high:.4g}]"


def _measure(metrics: Mapping[str, float], key: str) -> tuple[float, float, float]:
    nan = float("nan")
    return (float(metrics.get(key, nan)), float(metrics.get(f"{key}/ci_low", nan)),
            float(metrics.get(f"{key}/ci_high", nan)))


def judge(rules: Iterable[GuardrailConfig], metrics: Mapping[str, float], *, horizon: int,
          is_baseline: bool = False) -> list[Check]:
    """Every bound of ``rules`` on one policy's flat metrics (glossary keys, as
    :meth:`Summary.metrics` returns and runs log); ``horizon``: the evaluation's weeks (for
    ``*_per_month``); ``is_baseline``: the policy is the evaluation baseline (difference 0)."""
    checks = []
    for rule in rules:
        name = rule.kpi.removeprefix("kpi/")
        base = name.removesuffix(PER_MONTH) if name.endswith(PER_MONTH) else name
        scale = WEEKS_PER_MONTH / horizon if name.endswith(PER_MONTH) else 1.0
        for bound in BOUNDS:
            limit = getattr(rule, bound)
            if limit is None:
                continue
            if bound.endswith("_vs_baseline"):
                value = (0.0, 0.0, 0.0) if is_baseline else _measure(metrics, f"baseline_diff/{base}")
                text = f"{name} - baseline"
            else:
                value, text = _measure(metrics, f"kpi/{base}"), name
            mean, lo, hi = (scale * v for v in value)
            upper = bound.startswith("max")
            worse = hi if upper else lo
            passed = not math.isnan(worse) and (worse <= limit if upper else worse >= limit)
            checks.append(Check(f"{text} {'<=' if upper else '>='} {limit:g}", passed, mean, lo, hi))
    return checks


def rule_texts(rules: Iterable[GuardrailConfig]) -> list[str]:
    """Every bound of ``rules`` in words (as :attr:`Check.rule` names it)."""
    return [c.rule for c in judge(rules, {}, horizon=1)]


def verdict(checks: Sequence[Check]) -> str:
    """``pass`` / ``fail: <each failed bound with its estimate and CI>`` / ``""`` without rules."""
    if not checks:
        return ""
    failed = [c.describe() for c in checks if not c.passed]
    return "fail: " + "; ".join(failed) if failed else "pass"


def metrics_of(checks: Sequence[Check]) -> dict[str, float]:
    """``guardrail/passed`` (1 all bounds pass, else 0) and ``guardrail/failed`` (how many fail)."""
    if not checks:
        return {}
    failed = sum(not c.passed for c in checks)
    return {"guardrail/passed": float(failed == 0), "guardrail/failed": float(failed)}


# ----------------------------------------------------------------- rules from elsewhere
_RULE = re.compile(r"^\s*(?P<kpi>[\w/]+?)\s*(?P<vs>-\s*baseline)?\s*(?P<op><=|>=)\s*(?P<value>\S+)\s*$")


def parse_rule(text: str) -> GuardrailConfig:
    """``KPI<=V``, ``KPI>=V``, ``KPI-baseline<=V``, ``KPI-baseline>=V`` as a rule (checked)."""
    m = _RULE.match(text)
    try:
        value = float(m["value"]) if m else None
    except ValueError:
        value = None
    if m is None or value is None:
        raise ValueError(f"--guardrail {text!r}: write KPI<=VALUE, KPI>=VALUE, KPI-baseline<=VALUE or "
                         "KPI-baseline>=VALUE (e.g. opt_outs_per_customer<=0.06, churned_share-baseline<=0.01)")
    bound = ("max" if m["op"] == "<=" else "min") + ("_vs_baseline" if m["vs"] else "")
    rule = GuardrailConfig(kpi=m["kpi"], **{bound: value})
    check_rule(rule, f"--guardrail {text!r}")
    return rule


def rule_from_dict(raw: Any, where: str, *, has_baseline: bool = True) -> GuardrailConfig:
    """A checked rule from its config mapping (``{kpi: ..., max: ...}``)."""
    known = [f.name for f in fields(GuardrailConfig)]
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be a mapping like {{kpi: opt_outs_per_customer, max: 0.06}}, got {raw!r}")
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; valid: {', '.join(known)}")
    rule = GuardrailConfig(**{k: raw[k] for k in known if k in raw and raw[k] is not None})
    check_rule(rule, where, has_baseline=has_baseline)
    return rule


def rules_from_config(raw: Sequence[Any], *, has_baseline: bool = True,
                      where: str = "guardrails") -> list[GuardrailConfig]:
    """Checked rules from the config's list of mappings; errors name ``guardrails[i]``."""
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise ValueError(f"{where} must be a list of rules like [{{kpi: opt_outs_per_customer, max: 0.06}}], "
                         f"got {raw!r}")
    return [rule_from_dict(r, f"{where}[{i}]", has_baseline=has_baseline) for i, r in enumerate(raw)]


def rules_from_params(params: Mapping[str, str], where: str = "run") -> list[GuardrailConfig]:
    """The guardrails a ``rapport-train`` run logged (param ``guardrails``, a JSON list); [] if none."""
    text = params.get("guardrails")
    if not text:
        return []
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: the logged param 'guardrails' is not JSON ({err})") from None
    return rules_from_config(raw, where=f"{where} guardrails")


def union(rule_lists: Iterable[Sequence[GuardrailConfig]]) -> list[GuardrailConfig]:
    """Distinct rules of several runs, in first-seen order."""
    seen: dict[str, GuardrailConfig] = {}
    for rules in rule_lists:
        for r in rules:
            seen.setdefault(json.dumps(asdict(r), sort_keys=True), r)
    return list(seen.values())
