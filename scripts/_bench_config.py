"""What the long-term benchmarks share: composing a run's settings from ``conf/`` as
``rapport-train`` does, and the five numbers every result shows together."""

from __future__ import annotations

from rapport.experiments.config import RunConfig
from rapport.experiments.train import compose_settings

KEYS = {"profit": "kpi/profit_per_customer", "ltv": "kpi/lifetime_value_per_customer",
        "churned": "kpi/churned_share", "opt_outs": "kpi/opt_outs_per_customer",
        "contacts": "kpi/contacts_per_customer"}
"""52-week profit, lifetime value, churned share, opt-outs and contacts per customer."""


def settings_for(overrides: list[str]) -> RunConfig:
    """Validated settings of ``rapport-train`` with these overrides."""
    return compose_settings(overrides)[0]
