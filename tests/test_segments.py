"""What a policy does, per lifecycle stage and per value decile: the segment sums equal the KPIs
they split; deciles are equal-count and ranked by value; sharded == one process; the card and the
plot show them."""

from __future__ import annotations

import json

import numpy as np
import pytest

import rapport.envs as envs
from rapport.agents.baselines import MassMarketing, Oracle, UniformRandom
from rapport.experiments import builders, plots
from rapport.experiments.evaluation import (
    STAGES,
    EvalSettings,
    evaluate,
    rollout,
    segment_table,
    summarize,
)
from rapport.experiments.segments import (
    SEGMENTS_TAG,
    VALUE_SEGMENTS,
    rows_from_tag,
    segments_table,
    segments_tag,
    start_values,
    value_segments,
)
from rapport.experiments.sharding import ShardPool, evaluate_sharded


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


# ---- by value decile and by channel / offer type (experiments/segments.py) ---------------------
FAME = EvalSettings(envs.get_scenario("fame"), 1200, 8, (5, 6), blocks=12)  # 40 % prospects


def _policies():
    return {"mass": lambda env: MassMarketing(builders.schema_of(env), every_k_weeks=2, horizon=env.horizon),
            "random": lambda env: UniformRandom(builders.schema_of(env))}


@pytest.fixture(scope="module")
def fame_eval():
    ev = evaluate(_policies(), FAME, roles={"mass": "baseline"})
    return ev, summarize(ev, n_boot=20), segments_table(ev.segments)


@pytest.mark.parametrize("kind", ["stage", "value_decile"])
def test_segment_sums_equal_the_kpis(fame_eval, kind):
    _, s, table = fame_eval
    means = s.kpis.set_index(["policy", "key"])["mean"]
    offer_cols = [c for c in table.columns if c.startswith("offers_") and c != "offers_none"]
    for p in ("mass", "random"):
        seg = table[(table.policy == p) & (table.segment_kind == kind)]
        total = seg.sum(numeric_only=True)

        def kpi(col, p=p):
            return means[(p, f"kpi/{col}_per_customer")]

        checks = {"contacts": kpi("contacts"), "media_cost": kpi("media_cost"), "profit": kpi("profit"),
                  "weeks": sum(kpi(f"weeks_{st}") for st in STAGES)}
        checks.update({f"contacts_{ch}": kpi(f"contacts_{ch}") for ch in envs.CHANNELS})
        for col, expected in checks.items():
            np.testing.assert_allclose(total[col], expected, rtol=1e-9, atol=1e-12, err_msg=f"{p} {kind} {col}")
        np.testing.assert_allclose(total[offer_cols].sum(), kpi("offers"), rtol=1e-9, atol=1e-12)
        # every contact carries one offer type, "none" included
        np.testing.assert_allclose(total[offer_cols].sum() + total["offers_none"], total["contacts"], rtol=1e-12)
        if kind == "value_decile":
            np.testing.assert_allclose(total["customers"], 1.0, rtol=1e-12)
        else:
            assert seg.customers.isna().all()
    random = table[table.policy == "random"]
    assert (random.contacts > 0).all() and (random[offer_cols].sum(axis=1) > 0).all()
    assert set(table.segment[table.segment_kind == "value_decile"]) == set(VALUE_SEGMENTS)


def test_stage_rows_agree_with_the_stage_kpis(fame_eval):
    _, s, table = fame_eval
    old = segment_table(s).set_index(["policy", "stage"])
    new = table[table.segment_kind == "stage"].set_index(["policy", "segment"])
    for col in ("weeks", "contacts", "media_cost", "contact_rate"):
        np.testing.assert_allclose(new[col].to_numpy(), old.loc[new.index, col].to_numpy(), rtol=1e-9)


def test_value_deciles_are_equal_count_ordered_by_value_and_prospects_apart():
    env = envs.PopulationEnv(num_envs=2003, scenario=FAME.scenario, horizon=4, include_latent=True)
    env.reset(seed=5)
    value, prospect = start_values(env, FAME.weekly_discount)
    seg = value_segments(value, prospect)
    assert prospect.any() and np.array_equal(seg == 0, prospect)
    counts = np.bincount(seg[~prospect], minlength=11)[1:]
    assert counts.sum() == (~prospect).sum() and counts.max() - counts.min() <= 1
    lo = [value[seg == d].min() for d in range(1, 11)]
    hi = [value[seg == d].max() for d in range(1, 11)]
    assert all(hi[d] <= lo[d + 1] for d in range(9))  # ranked: every D(k+1) is worth at least Dk
    assert value[seg == 10].mean() > value[seg == 1].mean()
    # ties broken by row index: deterministic
    assert value_segments(np.zeros(20), np.zeros(20, bool)).tolist() == [1 + i // 2 for i in range(20)]


def test_sharded_segments_equal_one_process():
    # deterministic policies (a stochastic one draws per shard); deciles span the whole population
    s = EvalSettings(envs.get_scenario("fame"), 900, 5, (2, 3), blocks=9)
    policies = {"mass": _policies()["mass"],
                "oracle": lambda env: Oracle(builders.schema_of(env), env.expected_myopic_profit)}
    with ShardPool(s, 3, executor="local") as pool:
        for policy in policies.values():
            ref = rollout(policy, s, 2)
            assert np.array_equal(pool.rollout(policy, 2).segments, ref.segments)
    ev = evaluate_sharded(policies, s, shards=3, executor="local")
    assert ev.segments.equals(evaluate(policies, s).segments)


def test_card_shows_the_value_decile_table_and_the_plot_is_drawn(fame_eval, tmp_path):
    from rapport.experiments.export.build import build_decision_module
    from rapport.experiments.export.policy_card import build_card, card_markdown
    from rapport.experiments.export.samples import quick_bandit

    _, s, table = fame_eval
    tag = segments_tag(table, "random")
    assert tag is not None and len(tag) <= 8000
    rows = rows_from_tag(tag)
    assert len(rows) == len(table[table.policy == "random"])
    _, spec = build_decision_module(*quick_bandit("linucb", customers=200, weeks=1))
    card = build_card(spec, run={"metrics": s.metrics("random"), "tags": {SEGMENTS_TAG: tag, "x": "y"}})
    json.dumps(card)
    assert card["tags"] == {"x": "y"}
    deciles = {r["segment"]: r for r in card["evaluation"]["by_value_decile"]}
    assert list(deciles) == list(VALUE_SEGMENTS)
    means = s.kpis.set_index(["policy", "key"])["mean"]
    assert sum(r["contacts"] for r in deciles.values()) == pytest.approx(
        means[("random", "kpi/contacts_per_customer")], rel=1e-6)
    assert sum(r["offers"] for r in deciles.values()) == pytest.approx(
        means[("random", "kpi/offers_per_customer")], rel=1e-6)
    stages = {r["stage"]: r for r in card["evaluation"]["by_lifecycle_stage"]}
    assert set(stages) == set(STAGES) and set(stages["new"]["contacts_by_channel"]) == set(envs.CHANNELS)
    md = card_markdown(card)
    assert "What it does, by value decile" in md and "What it does, by lifecycle stage" in md
    assert "| D10 |" in md and "| prospect |" in md and "expected remaining value" in md
    assert "paid_media" in md and "discount_10" in md
    # an old run without the tag still gets its stage table from the metrics
    old = build_card(spec, run={"metrics": s.metrics("random")})
    assert {r["stage"] for r in old["evaluation"]["by_lifecycle_stage"]} == set(STAGES)
    assert old["evaluation"]["by_value_decile"] == []

    fig = plots.segment_contact_rates(table)
    fig.savefig(tmp_path / "segments.png")
    plots.close(fig)
    assert (tmp_path / "segments.png").stat().st_size > 10_000
