"""CRN evaluation: KPIs agree with the env's own totals, paired intervals are narrower than
independent ones, bootstrap intervals cover, regret and short- vs long-term verdicts are right."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import rapport.envs as envs
from rapport.agents.baselines import DoNothing, MassMarketing, Oracle
from rapport.experiments.builders import schema_of
from rapport.experiments.evaluation import (
    KPI_COLUMNS,
    KPI_KEY,
    EvalSettings,
    Evaluation,
    bootstrap_weights,
    evaluate,
    kendall_tau,
    residual_clv,
    rollout,
    summarize,
)

SCENARIO = envs.get_scenario("retail")


def do_nothing(env):
    return DoNothing(schema_of(env))


def mass(k: int = 2, offer: str | int = 0):
    def build(env):
        return MassMarketing(schema_of(env), every_k_weeks=k, offer=offer, horizon=env.horizon)
    return build


def oracle(env):
    return Oracle(schema_of(env), env.expected_myopic_profit)


def col(name: str) -> int:
    return KPI_COLUMNS.index(name)


def test_rollout_totals_match_the_envs_own_kpis():
    settings = EvalSettings(SCENARIO, customers=400, horizon=10, seeds=(5,))
    r = rollout(mass(2), settings, 5)
    env = envs.PopulationEnv(num_envs=400, scenario=SCENARIO, horizon=10)
    policy = mass(2)(env)
    obs, info = env.reset(seed=5)
    rng = np.random.default_rng([settings.policy_seed, 5])
    for _ in range(10):
        obs, *_, info = env.step(policy.act(obs, rng, action_mask=info["action_mask"])[0])
    assert r.values[:, col("unreachable")].sum() == 0  # no row ended early, so totals must agree
    summary = env.kpis.summary()
    for name in ("profit", "revenue", "orders", "contact_cost", "discount_cost", "media_cost"):
        assert r.values[:, col(name)].mean() == pytest.approx(summary[f"kpi/{name}_per_customer"], rel=1e-5, abs=1e-6)
    email = r.values[:, col("contacts_email")].mean()
    assert email == pytest.approx(summary["kpi/contacts_email_per_customer"])
    assert email > 0


def test_decompositions_add_up():
    settings = EvalSettings(SCENARIO, customers=300, horizon=12, seeds=(1,), annual_discount_rate=0.1)
    v = rollout(mass(1, offer="discount_20"), settings, 1).values
    stages = sum(v[:, col(f"profit_from_{s}")] for s in envs.STAGES)
    np.testing.assert_allclose(stages, v[:, col("profit")], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(v[:, col("lifetime_value")], v[:, col("discounted_profit")] + v[:, col("residual_clv")])
    channels = sum(v[:, col(f"contact_cost_{c}")] for c in envs.CHANNELS)
    np.testing.assert_allclose(channels, v[:, col("contact_cost")], rtol=1e-6, atol=1e-9)
    assert (v[:, col("residual_clv")] >= 0).all()
    assert set(np.unique(v[:, col("churned")])) <= {0.0, 1.0}


@pytest.mark.parametrize("scenario", ["retail", "subscription"])
def test_residual_clv_matches_simulated_discounted_profit(scenario):
    """Closed-form expected future profit of a population vs simulating it without marketing
    (BG/NBD drop-out for retail, weekly sBG churn and a fee for the subscription preset).

    A steep discount rate (200 %/year) makes 260 simulated weeks carry all but 0.4 % of the value.
    """
    if scenario not in envs.PRESETS:
        pytest.skip(f"no {scenario!r} preset")
    n, weeks, rate = 4000, 260, 2.0
    d = (1 + rate) ** (-1 / 52)
    env = envs.PopulationEnv(num_envs=n, scenario=scenario, horizon=weeks)
    env.reset(seed=11)
    predicted = residual_clv(env, np.arange(n), d).mean()
    simulated = 0.0
    nothing = np.zeros((n, 3), np.int64)
    for t in range(weeks):
        _, profit, *_ = env.step(nothing)
        simulated += d ** (t + 1) * float(profit.astype(np.float64).mean())
    # weekly discrete purchases vs the continuous-time formula, and sampling noise: within 10 %
    assert predicted == pytest.approx(simulated, rel=0.10)


def test_same_policy_twice_gives_identical_results_and_a_zero_paired_difference():
    settings = EvalSettings(SCENARIO, customers=200, horizon=6, seeds=(3, 4), blocks=10)
    ev = evaluate({"a": mass(2), "b": mass(2)}, settings)
    a = ev.blocks[ev.blocks.policy == "a"][list(KPI_COLUMNS)].to_numpy()
    b = ev.blocks[ev.blocks.policy == "b"][list(KPI_COLUMNS)].to_numpy()
    np.testing.assert_array_equal(a, b)
    s = summarize(ev, baseline="a", n_boot=100)
    d = s.diffs[s.diffs.key == "kpi/profit_per_customer"].iloc[0]
    assert d["diff"] == 0 and d.ci_low == 0 and d.ci_high == 0


@pytest.fixture(scope="module")
def mass_vs_nothing():
    settings = EvalSettings(SCENARIO, customers=2000, horizon=26, seeds=(21, 22), blocks=100)
    return evaluate({"mass": mass(2), "do_nothing": do_nothing, "oracle": oracle}, settings,
                    roles={"do_nothing": "baseline", "oracle": "oracle"}), settings


def test_paired_intervals_are_narrower_than_independent_ones(mass_vs_nothing):
    ev, settings = mass_vs_nothing
    s = summarize(ev, baseline="do_nothing", n_boot=500)
    d = s.diffs[(s.diffs.policy == "mass") & (s.diffs.key == "kpi/profit_per_customer")].iloc[0]
    paired, independent = d.ci_high - d.ci_low, d.indep_ci_high - d.indep_ci_low
    assert paired < 0.5 * independent
    assert d.ci_low <= d["diff"] <= d.ci_high

    # independent *runs*: the baseline on other populations (no common random numbers)
    other = evaluate({"do_nothing": do_nothing}, EvalSettings(SCENARIO, 2000, 26, (31, 32), blocks=100))
    unpaired = other.blocks.copy()
    unpaired["seed"] = unpaired["seed"].map({31: 21, 32: 22})  # line up block ids, not customers
    mixed = pd.concat([ev.blocks[ev.blocks.policy == "mass"], unpaired], ignore_index=True)
    s2 = summarize(mixed, baseline="do_nothing", n_boot=500)
    d2 = s2.diffs[s2.diffs.key == "kpi/profit_per_customer"].iloc[0]
    assert paired < 0.5 * (d2.ci_high - d2.ci_low)


def test_regret_against_the_oracle(mass_vs_nothing):
    ev, _ = mass_vs_nothing
    s = summarize(ev, baseline="do_nothing", oracle="oracle", n_boot=300)
    r = s.regret.set_index(["policy", "key"])
    assert r.loc[("oracle", "kpi/profit_per_customer"), "regret"] == 0
    # the myopic oracle maximises each week's expected profit: in week 1, when every policy
    # faces the same customers, it must beat the others
    for p in ("mass", "do_nothing"):
        assert r.loc[(p, "kpi/short_term_profit_per_customer"), "ci_low"] > 0
    m = s.metrics("mass")
    assert m["regret/profit_per_customer"] == pytest.approx(r.loc[("mass", "kpi/profit_per_customer"), "regret"])
    assert {"kpi/profit_per_customer/ci_low", "baseline_diff/profit_per_customer/ci_low_independent"} <= set(m)


def test_bootstrap_intervals_cover_the_true_mean():
    """The interval summarize() computes (stratified block bootstrap of a ratio of sums,
    percentile) covers a known mean about as often as it claims, on skewed data."""
    rng = np.random.default_rng(0)
    true_mean, hits, reps = 2.0, 0, 400
    strata = np.repeat([1, 2], 30)
    counts = rng.integers(5, 15, size=60).astype(float)  # unequal block sizes, as in real runs
    for _ in range(reps):
        sums = np.array([rng.exponential(true_mean, int(c)).sum() for c in counts])
        W = bootstrap_weights(strata, 400, rng)
        boot = (W @ sums) / (W @ counts)
        lo, hi = np.quantile(boot, [0.025, 0.975])
        hits += lo <= true_mean <= hi
    assert 0.90 <= hits / reps <= 0.99
    # and summarize() uses exactly this estimator: its mean is the ratio of sums
    blocks = pd.DataFrame({"policy": "p", "role": "policy", "seed": strata, "block": np.arange(60), "customers": counts})
    for c in KPI_COLUMNS:
        blocks[c] = sums
    k = summarize(blocks, n_boot=200).kpis.iloc[0]
    assert k["mean"] == pytest.approx(sums.sum() / counts.sum())
    assert k.ci_low < k["mean"] < k.ci_high


def test_stratified_bootstrap_weights_keep_each_population_size():
    strata = np.array([0] * 5 + [1] * 3)
    W = bootstrap_weights(strata, 50, np.random.default_rng(1))
    assert W.shape == (50, 8)
    np.testing.assert_array_equal(W[:, :5].sum(axis=1), 5)
    np.testing.assert_array_equal(W[:, 5:].sum(axis=1), 3)


def _synthetic(policies: dict[str, tuple[float, float]], n_blocks: int = 40, noise: float = 0.01) -> pd.DataFrame:
    """Blocks where each policy has a given (short-term, lifetime value) per customer."""
    rng = np.random.default_rng(7)
    common = rng.normal(0, 1.0, n_blocks)  # shared by all policies, as with CRN
    frames = []
    for name, (short, long) in policies.items():
        df = pd.DataFrame({"policy": name, "role": "policy", "seed": 1, "block": np.arange(n_blocks), "customers": 10})
        for c in KPI_COLUMNS:
            df[c] = 10 * (common + rng.normal(0, noise, n_blocks))
        df["short_term_profit"] += 10 * short
        df["lifetime_value"] += 10 * long
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def test_short_vs_long_disagreement_is_flagged():
    blocks = _synthetic({"aggressive": (1.0, -2.0), "patient": (0.0, 1.0), "also_patient": (-0.5, 0.5)})
    s = summarize(blocks, baseline="patient", n_boot=200)
    svl = s.short_vs_long.set_index(["policy", "versus"])
    assert bool(svl.loc[("aggressive", "patient"), "disagree"])
    assert not bool(svl.loc[("patient", "also_patient"), "disagree"])
    assert s.kendall_tau == pytest.approx(kendall_tau([1.0, 0.0, -0.5], [-2.0, 1.0, 0.5]))
    assert s.metrics("aggressive")["short_vs_long/disagrees_with_baseline"] == 1.0


def test_unpairable_inputs_are_rejected():
    blocks = _synthetic({"a": (0, 0), "b": (0, 0)})
    with pytest.raises(ValueError, match="baseline 'nope'"):
        summarize(blocks, baseline="nope")
    other = blocks.copy()
    other.loc[other.policy == "b", "seed"] = 99
    with pytest.raises(ValueError, match="share no evaluation populations"):
        summarize(other)
    sizes = blocks.copy()
    sizes.loc[sizes.policy == "b", "customers"] = 11
    with pytest.raises(ValueError, match="differently sized"):
        summarize(sizes)


def test_every_kpi_key_is_in_the_glossary():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "experiments" / "GLOSSARY.md").read_text()
    missing = [k for k in KPI_KEY.values() if f"`{k}`" not in text]
    assert not missing


def test_evaluation_object_round_trips_blocks(mass_vs_nothing):
    ev, _ = mass_vs_nothing
    assert isinstance(ev, Evaluation)
    assert set(ev.blocks.role) == {"policy", "baseline", "oracle"}
    assert ev.weekly.groupby("policy").size().eq(26 * 2).all()
