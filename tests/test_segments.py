"""What a policy does, per lifecycle stage: the segment columns sum to the KPIs they split."""

from __future__ import annotations

import numpy as np

import rapport.envs as envs
from rapport.agents.baselines import MassMarketing, Oracle
from rapport.experiments import builders
from rapport.experiments.evaluation import STAGES, EvalSettings, evaluate, segment_table, summarize


def test_stage_columns_sum_to_the_kpis_and_the_table_reads_them() -> None:
    es = EvalSettings(envs.get_scenario("retail"), 600, 20, (3,), annual_discount_rate=0.10)
    policies = {"mass": lambda env: MassMarketing(builders.schema_of(env), every_k_weeks=2, horizon=env.horizon),
                "oracle": lambda env: Oracle(builders.schema_of(env), env.expected_myopic_profit)}
    s = summarize(evaluate(policies, es), n_boot=50)
    means = s.kpis.set_index(["policy", "key"])["mean"]
    for p in policies:
        for part, total in (("contacts", "contacts"), ("offers", "offers"), ("media_cost", "media_cost")):
            parts = sum(means[(p, f"kpi/{part}_{st}_per_customer")] for st in STAGES)
            np.testing.assert_allclose(parts, means[(p, f"kpi/{total}_per_customer")], rtol=1e-9, atol=1e-12)
        weeks = sum(means[(p, f"kpi/weeks_{st}_per_customer")] for st in STAGES)
        assert 0 < weeks <= 20
    table = segment_table(s)
    assert set(table.stage) == set(STAGES) and set(table.policy) == set(policies)
    mass = table[table.policy == "mass"]
    # mass marketing e-mails every opted-in customer every other week, whatever the stage
    assert ((mass.contact_rate > 0.2) & (mass.contact_rate <= 0.55)).all(), mass
    oracle = table[table.policy == "oracle"].set_index("stage")
    assert oracle.offers.sum() > 0 and oracle.contacts.sum() > 0
