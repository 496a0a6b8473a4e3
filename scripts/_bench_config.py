"""What the long-term benchmarks share: composing a run's settings from ``conf/`` as
``rapport-train`` does, and the five numbers every result shows together."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from rapport.experiments.config import RunConfig, register_configs, to_settings

CONF = Path(__file__).resolve().parents[1] / "conf"
KEYS = {"profit": "kpi/profit_per_customer", "ltv": "kpi/lifetime_value_per_customer",
        "churned": "kpi/churned_share", "opt_outs": "kpi/opt_outs_per_customer",
        "contacts": "kpi/contacts_per_customer"}
"""52-week profit, lifetime value, churned share, opt-outs and contacts per customer."""


def settings_for(overrides: list[str]) -> RunConfig:
    """Validated settings of ``rapport-train`` with these overrides."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return to_settings(compose("train", overrides=overrides))
