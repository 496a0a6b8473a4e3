"""Safe promotion: register a candidate as ``champion`` only if it provably beats the incumbent.

Rule: promote when the candidate's (1 − δ) high-confidence lower bound, computed from the
incumbent's own logs, exceeds the incumbent's value by at least ``margin``. Because the bound
fails with probability at most δ, a candidate that is in truth no better than the incumbent is
promoted with probability at most δ (when the incumbent's value is known; with an estimate,
pass its upper confidence limit as ``incumbent_value`` to keep the guarantee).

    from rapport.agents.ope import OffPolicyEvaluator, OPESettings, promotion_decision
    ev = OffPolicyEvaluator(incumbent_logs, OPESettings(reward_lower_bound=r_min, delta=0.05), rng)
    bound = ev.evaluate(candidate, rng).lower_bounds["seq/hcope_pdis"].value_lower_bound
    decision = promotion_decision(bound, ev.on_policy_value()["seq"], delta=0.05)
    decision.promote, decision.reason, decision.as_metrics(), decision.as_card()
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class PromotionDecision:
    """The gate's verdict and the numbers behind it (for the policy card and the MLflow run)."""

    promote: bool
    alias: str | None
    """``"champion"`` when promoted, else None."""
    candidate_lower_bound: float
    incumbent_value: float
    margin: float
    delta: float | None
    bound_name: str
    reason: str

    @property
    def gap(self) -> float:
        """Lower bound minus (incumbent value + margin); > 0 means promote."""
        return self.candidate_lower_bound - self.incumbent_value - self.margin

    def as_metrics(self, prefix: str = "promotion") -> dict[str, float]:
        out = {f"{prefix}/promote": float(self.promote), f"{prefix}/candidate_lower_bound": self.candidate_lower_bound,
               f"{prefix}/incumbent_value": self.incumbent_value, f"{prefix}/margin": self.margin,
               f"{prefix}/gap": self.gap}
        if self.delta is not None:
            out[f"{prefix}/delta"] = self.delta
        return out

    def as_card(self) -> dict[str, Any]:
        """JSON-ready record for the policy card."""
        return {**asdict(self), "gap": self.gap}


def promotion_decision(hcope_lower_bound: float, incumbent_value: float, *, margin: float = 0.0,
                       delta: float | None = None, bound_name: str = "seq/hcope_pdis",
                       alias: str = "champion") -> PromotionDecision:
    """Decide whether a candidate replaces the incumbent.

    Parameters
    ----------
    hcope_lower_bound : the candidate's (1 − δ) lower bound on its value, from the incumbent's logs
    incumbent_value : the incumbent's value on the same scale (e.g. its mean logged return)
    margin : required improvement (>= 0), in the value's units
    delta : the bound's failure probability, recorded for the card
    bound_name : which bound was used, recorded for the card
    alias : registry alias given on promotion
    """
    for name, v in (("hcope_lower_bound", hcope_lower_bound), ("incumbent_value", incumbent_value)):
        if not isinstance(v, (int, float)) or math.isnan(v):
            raise ValueError(f"{name} must be a number, got {v!r}")
    if not math.isfinite(incumbent_value):
        raise ValueError(f"incumbent_value must be finite, got {incumbent_value!r}")
    if not margin >= 0 or not math.isfinite(margin):
        raise ValueError(f"margin must be finite and >= 0, got {margin!r}")
    if delta is not None and not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    lb, inc = float(hcope_lower_bound), float(incumbent_value)
    promote = lb > inc + margin
    conf = f"{100 * (1 - delta):.0f}%-confidence " if delta is not None else ""
    if promote:
        reason = (f"promote: the candidate's {conf}lower bound {lb:.4g} ({bound_name}) exceeds the incumbent's "
                  f"value {inc:.4g} + margin {margin:.4g}")
    else:
        reason = (f"keep the incumbent: the candidate's {conf}lower bound {lb:.4g} ({bound_name}) does not exceed "
                  f"the incumbent's value {inc:.4g} + margin {margin:.4g}")
    return PromotionDecision(promote, alias if promote else None, lb, inc, float(margin), delta, bound_name, reason)
