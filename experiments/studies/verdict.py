"""Verdicts from paired confidence intervals.

A claim "``policy`` is ``higher`` (``lower``) than ``versus`` on a KPI" is judged on the paired
difference policy − versus, evaluated on common random numbers, and its bootstrap CI:

* **supported**: the CI lies entirely on the expected side of 0;
* **contradicted**: the CI lies entirely on the other side;
* **inconclusive**: the CI contains 0 (including two arms that act alike, CI [0, 0]).

Each check is at the evaluation's confidence (95 %) unless the study sets ``correction: bonferroni``
(each of k checks at 1 − 0.05/k). Without it: with k
checks under ``all``, a false "contradicted" among k true nulls has probability up to
1 − (1 − 0.025)^k (≈ 22 % at k = 10). Read a single contradicted check of many with that in mind.

A study's verdict combines its claims' by its ``rule``:

* ``all`` — supported if every claim is supported; contradicted if any claim is contradicted;
  otherwise inconclusive (the hypothesis is a conjunction: one clear counter-example refutes it);
* ``any`` — supported if at least one claim is supported and none is contradicted; contradicted
  if every claim is contradicted; otherwise inconclusive.
"""

from __future__ import annotations

from collections.abc import Sequence

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE)


def claim_verdict(expect: str, ci_low: float, ci_high: float, *, tol: float = 0.0) -> str:
    """The verdict of one claim from the paired CI of policy − versus. Bounds within ``tol`` of 0
    count as 0 (two policies that act alike differ by rounding error, not by evidence)."""
    if expect not in ("higher", "lower"):
        raise ValueError(f"expect must be 'higher' or 'lower', got {expect!r}")
    if ci_low != ci_low or ci_high != ci_high:  # NaN: nothing to judge
        return INCONCLUSIVE
    above, below = ci_low > tol, ci_high < -tol
    if expect == "higher":
        return SUPPORTED if above else CONTRADICTED if below else INCONCLUSIVE
    return SUPPORTED if below else CONTRADICTED if above else INCONCLUSIVE


def combine(verdicts: Sequence[str], rule: str = "all") -> str:
    """A study's verdict from its claims' (see the module doc)."""
    if not verdicts:
        raise ValueError("a study needs at least one claim verdict")
    bad = set(verdicts) - set(VERDICTS)
    if bad:
        raise ValueError(f"unknown verdict(s) {sorted(bad)}; valid: {VERDICTS}")
    if rule == "all":
        if CONTRADICTED in verdicts:
            return CONTRADICTED
        return SUPPORTED if all(v == SUPPORTED for v in verdicts) else INCONCLUSIVE
    if rule == "any":
        if all(v == CONTRADICTED for v in verdicts):
            return CONTRADICTED
        return SUPPORTED if SUPPORTED in verdicts and CONTRADICTED not in verdicts else INCONCLUSIVE
    raise ValueError(f"rule must be 'all' or 'any', got {rule!r}")
