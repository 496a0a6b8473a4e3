"""Leaderboard trade-offs without MLflow: every KPI cell with its CI, paired Δ on churn and opt-outs,
the Pareto front (pure function and column, pareto.png) and the guardrails column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rapport.experiments import compare
from rapport.experiments.evaluation import KPI_COLUMNS, summarize
from rapport.experiments.guardrails import parse_rule
from rapport.experiments.pareto import OBJECTIVES, pareto_front, pareto_plot, wide
from rapport.experiments.plots import close

# per-customer means: profit, lifetime value, contacts, churned share, opt-outs
POLICIES = {
    "do_nothing": (0.0, 20.0, 0.0, 0.30, 0.00),
    "aggressive": (9.0, 15.0, 40.0, 0.45, 0.20),
    "patient": (5.0, 30.0, 8.0, 0.20, 0.02),
    "patient_twin": (5.0, 30.0, 8.0, 0.20, 0.02),
    "dominated": (4.0, 25.0, 10.0, 0.25, 0.03),
}
COLS = ("profit", "lifetime_value", "contacts", "churned", "opt_outs")


def blocks(n_blocks: int = 40, customers: int = 10) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    common = rng.normal(0, 0.05, n_blocks)  # shared luck, as with common random numbers
    frames = []
    for name, values in POLICIES.items():
        df = pd.DataFrame({"policy": name, "role": "baseline" if name == "do_nothing" else "policy", "seed": 1,
                           "block": np.arange(n_blocks), "customers": customers})
        for c in KPI_COLUMNS:
            df[c] = customers * np.abs(common)
        for c, v in zip(COLS, values, strict=True):
            df[c] = customers * v * (1 + common)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def summary():
    return summarize(blocks(), baseline="do_nothing", n_boot=300)


def test_pareto_front_drops_dominated_policies_and_keeps_ties():
    frame = pd.DataFrame({"a": [1.0, 2.0, 2.0, 0.5, np.nan], "b": [3.0, 1.0, 1.0, 2.0, 9.0]},
                         index=list("vwxyz"))
    front = pareto_front(frame, {"a": "max", "b": "max"})
    assert front.to_dict() == {"v": True, "w": True, "x": True, "y": False, "z": False}
    # direction matters: minimising b, y (a 0.5, b 2) is dominated by w and x (a 2, b 1)
    assert pareto_front(frame, {"a": "max", "b": "min"}).to_dict() == {
        "v": False, "w": True, "x": True, "y": False, "z": False}
    with pytest.raises(ValueError, match="'max' or 'min'"):
        pareto_front(frame, {"a": "up"})
    with pytest.raises(ValueError, match=r"\['c'\] not in the frame"):
        pareto_front(frame, {"c": "max"})


def test_pareto_on_a_summary(summary):
    frame = wide(summary)
    front = dict(zip(frame.policy, pareto_front(frame, OBJECTIVES), strict=True))
    assert front == {"do_nothing": True, "aggressive": True, "patient": True, "patient_twin": True,
                     "dominated": False}
    fig = pareto_plot(frame)
    assert len([ax for ax in fig.axes if ax.axison]) == 4
    close(fig)


def test_every_kpi_cell_has_its_ci_and_churn_and_opt_outs_their_paired_diff(summary):
    rules = [parse_rule("opt_outs_per_customer<=0.06"), parse_rule("churned_share-baseline<=0.01"),
             parse_rule("contacts_per_customer_per_month<=3")]
    board = compare.leaderboard(summary, guardrails=rules, horizon=52)
    assert "kpi/contacts_per_customer ci_high" in board and "diff kpi/churned_share ci_low" in board
    row = board.set_index("policy").loc["patient"]
    assert row["diff kpi/churned_share ci_low"] <= row["diff kpi/churned_share"] <= row["diff kpi/churned_share ci_high"]
    assert row["diff kpi/churned_share"] == pytest.approx(-0.10, abs=0.01)
    assert bool(row.pareto) and not bool(board.set_index("policy").loc["dominated", "pareto"])
    verdicts = board.set_index("policy")["guardrails"]
    assert verdicts["patient"] == "pass" and verdicts["do_nothing"] == "pass"  # its own diff is 0
    assert verdicts["aggressive"].startswith("fail: opt_outs_per_customer <= 0.06")
    assert "churned_share - baseline <= 0.01" in verdicts["aggressive"]
    assert "contacts_per_customer_per_month <= 3: 3.3" in verdicts["aggressive"]  # 40 in 52 weeks

    md = compare.to_markdown(board)
    value, tradeoffs = md.split("**Trade-offs and guardrails**")
    assert "| rank | policy | profit_per_customer |" in value
    line = next(x for x in tradeoffs.splitlines() if "| patient |" in x)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert len(cells) == 11 and cells[-2:] == ["yes", "pass"]
    for cell in cells[2:9]:  # contacts, contact $, discount $, opt-outs, Δ, churned, Δ: mean [lo, hi]
        assert cell.count("[") == 1 and cell.endswith("]"), cell
    short = next(x for x in value.splitlines() if "| patient (policy) |" in x)
    assert short.count("[") >= 6  # profit, Δ, independent, LTV, Δ LTV, short-term profit
    assert "churned_share - baseline <= 0.01" in md.splitlines()[-1]


def test_guardrails_that_cannot_be_judged_are_refused(summary):
    no_base = summarize(blocks(), n_boot=50)
    with pytest.raises(ValueError, match="pass --baseline"):
        compare.leaderboard(no_base, guardrails=[parse_rule("churned_share-baseline<=0.01")])
    with pytest.raises(ValueError, match="horizon"):
        compare.leaderboard(summary, guardrails=[parse_rule("contacts_per_customer_per_month<=4")])
    board = compare.leaderboard(summary)
    assert set(board.guardrails) == {""} and "none configured" in compare.to_markdown(board)


def test_write_leaderboard_adds_the_pareto_plot(summary, tmp_path):
    paths = compare.write_leaderboard(compare.leaderboard(summary), tmp_path, title="t")
    assert {p.name for p in tmp_path.iterdir()} == {"leaderboard.md", "leaderboard.csv", "leaderboard.png",
                                                    "pareto.png"}
    assert paths["pareto"].stat().st_size > 10_000
    csv = pd.read_csv(paths["csv"])
    assert {"pareto", "guardrails", "kpi/contacts_per_customer ci_low", "diff kpi/opt_outs_per_customer"} <= set(csv)


def test_a_bad_guardrail_option_exits_2_naming_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        compare.run(["--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--guardrail", "opt_outs<=0.06"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "rapport-compare: error: --guardrail 'opt_outs<=0.06'.kpi: unknown KPI 'opt_outs'" in err
    assert not (tmp_path / "mlflow.db").exists()


def test_a_lower_is_better_metric_ranks_ascending(summary):
    board = compare.leaderboard(summary, metric="kpi/churned_share")
    assert board.policy.iloc[0] == "patient" and board.policy.iloc[-1] == "aggressive"
    assert compare.leaderboard(summary).policy.iloc[0] == "aggressive"  # profit: higher first


def test_an_oracle_does_not_push_real_policies_off_the_front():
    frame = blocks()
    frame.loc[frame.policy == "aggressive", "role"] = "oracle"
    cols = dict(zip(COLS, (10.0, 40.0, 0.0, 0.0, 0.0), strict=True))  # dominates every real policy
    oracle = frame[frame.policy == "aggressive"].copy()
    oracle["policy"] = "all_seeing"
    for c, v in cols.items():
        oracle[c] = 10 * v
    board = compare.leaderboard(summarize(pd.concat([frame, oracle]), baseline="do_nothing", n_boot=100))
    front = board.set_index("policy").pareto
    assert not front["all_seeing"] and front["patient"] and not front["dominated"]
