"""Transaction-log loading and RFM summaries: CDNOW statistics (customer-model.md §4, §6 step 2),
hand-checked small logs, and every bad-input case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rapport.envs.transactions import (
    TransactionLogError,
    load_transactions,
    summarise,
    weekly_repeat_curve,
)

CDNOW = Path(__file__).parent / "data" / "cdnow_sample.csv"
CAL_END, HOLD_END = "1997-09-30", "1998-06-30"


@pytest.fixture(scope="module")
def cdnow_log() -> pd.DataFrame:
    return load_transactions(CDNOW)


@pytest.fixture(scope="module")
def cdnow_summary(cdnow_log) -> pd.DataFrame:
    return summarise(cdnow_log, CAL_END, HOLD_END)


def write_csv(tmp_path: Path, text: str, name: str = "log.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------
# CDNOW (Tier A exactness)
# --------------------------------------------------------------------------------------------


def test_cdnow_rows_merge_into_customer_days(cdnow_log):
    assert len(pd.read_csv(CDNOW)) == 6919
    assert len(cdnow_log) == 6696
    assert list(cdnow_log.columns) == ["customer_id", "date", "amount"]
    assert pd.api.types.is_datetime64_any_dtype(cdnow_log["date"])


def test_cdnow_summary_tier_a_counts(cdnow_summary):
    assert len(cdnow_summary) == 2357
    assert cdnow_summary["x"].sum() == 2457
    assert (cdnow_summary["x"] == 0).sum() == 1411
    assert cdnow_summary["x_holdout"].sum() == 1882


def test_cdnow_summary_reference_statistics(cdnow_summary):
    s = cdnow_summary
    assert s["T"].min() == pytest.approx(27.0)
    assert s["T"].max() == pytest.approx(272 / 7)
    assert s["T"].mean() == pytest.approx(32.72, abs=0.005)
    repeaters = s[s["x"] > 0]
    assert repeaters["t_x"].mean() == pytest.approx(17.06, abs=0.005)
    assert len(repeaters) == 946
    assert repeaters["monetary_value"].mean() == pytest.approx(35.08, abs=0.005)
    assert repeaters["monetary_value"].median() == pytest.approx(27.50, abs=0.005)
    assert (s.loc[s["x"] == 0, ["t_x", "monetary_value"]] == 0).all().all()
    # Births spread over the first 12 weeks of 1997 (1997-01-01 ... 1997-03-25).
    assert s["birth_week"].min() == 0.0 and s["birth_week"].max() == pytest.approx(83 / 7)


def test_cdnow_first_customer_matches_lifetimes_summary(cdnow_summary):
    # lifetimes' cdnow_customers_summary_with_transactions.csv row 1: x=2, t_x=30.43, T=38.86,
    # zbar=22.35 (rounded from 22.345).
    row = cdnow_summary.loc[1]
    assert row["x"] == 2
    assert row["t_x"] == pytest.approx(30.43, abs=0.005)
    assert row["T"] == pytest.approx(38.86, abs=0.005)
    assert row["monetary_value"] == pytest.approx(22.345, abs=1e-9)
    assert row["first_purchase"] == pd.Timestamp("1997-01-01")


def test_cdnow_weekly_repeat_curve(cdnow_log):
    curve = weekly_repeat_curve(cdnow_log, "1997-01-01", HOLD_END)
    assert curve.shape == (78,)
    np.testing.assert_array_equal(
        curve[[12, 25, 38, 51, 64, 77]], [828, 1746, 2457, 3183, 3844, 4339]
    )
    assert np.all(np.diff(curve) >= 0)


def test_parquet_and_csv_load_identically(tmp_path, cdnow_log):
    path = tmp_path / "cdnow.parquet"
    pd.read_csv(CDNOW).to_parquet(path)
    pd.testing.assert_frame_equal(load_transactions(path), cdnow_log)


# --------------------------------------------------------------------------------------------
# Small hand-checked logs
# --------------------------------------------------------------------------------------------

SMALL = """customer_id,date,amount
a,2020-01-01,10
a,2020-01-01,5
a,2020-01-08,20
a,2020-01-29,40
a,2020-02-05,7
a,2020-03-04,1
a,2020-03-05,99
b,2020-01-15,3
c,2020-01-29,8
c,2020-02-12,2
d,2020-02-06,50
"""


def test_same_day_rows_merge_and_amounts_sum(tmp_path):
    log = load_transactions(
        write_csv(
            tmp_path,
            "customer_id,date,amount\n"
            "7,2020-01-01T09:00,1.5\n7,2020-01-01T18:30,2.5\n"
            "7,2020-01-02,4\n",
        )
    )
    assert log["date"].tolist() == [pd.Timestamp("2020-01-01"), pd.Timestamp("2020-01-02")]
    assert log["amount"].tolist() == [4.0, 4.0]


def test_summarise_small_log_by_hand(tmp_path):
    log = load_transactions(write_csv(tmp_path, SMALL))
    s = summarise(log, "2020-01-29", "2020-03-04")
    # d's first purchase is after calibration end: not in the cohort.
    assert s.index.tolist() == ["a", "b", "c"]
    # a: trial 01-01 (15), repeats 01-08 (20) and 01-29 (40, on calibration end: included);
    # holdout 02-05 and 03-04 (on holdout end: included); 03-05 is after the holdout.
    assert s.loc["a", ["x", "t_x", "T", "x_holdout"]].tolist() == [2, 4.0, 4.0, 2]
    assert s.loc["a", "monetary_value"] == pytest.approx(30.0)
    assert s.loc["b", ["x", "t_x", "T", "x_holdout", "monetary_value"]].tolist() == [0, 0, 2, 0, 0]
    # c: born on calibration end, so T = 0; its 02-12 purchase is a holdout repeat.
    assert s.loc["c", ["x", "t_x", "T", "x_holdout"]].tolist() == [0, 0, 0, 1]
    assert s["birth_week"].tolist() == [0.0, 2.0, 4.0]
    assert s.loc["c", "first_purchase"] == pd.Timestamp("2020-01-29")


def test_summarise_accepts_raw_rows_with_string_dates():
    raw = pd.DataFrame(
        {
            "customer_id": [1, 1, 1],
            "date": ["2020-01-01", "2020-01-08", "2020-01-08"],
            "amount": [1.0, 2.0, 3.0],
        }
    )
    s = summarise(raw, "2020-01-31", "2020-02-29")
    assert s.loc[1, "x"] == 1 and s.loc[1, "monetary_value"] == 5.0


def test_weekly_repeat_curve_small_log(tmp_path):
    log = load_transactions(write_csv(tmp_path, SMALL))
    curve = weekly_repeat_curve(log, "2020-01-01", "2020-02-06")
    # Repeats: a on 01-08 (week 1), 01-29 (week 4), 02-05 (week 5). Trials never count;
    # 37 days give 6 weeks, the last one partial.
    np.testing.assert_array_equal(curve, [0, 1, 1, 1, 2, 3])


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_error_type_is_a_value_error():
    assert issubclass(TransactionLogError, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(TransactionLogError, match="not found"):
        load_transactions(tmp_path / "nope.csv")


def test_unsupported_suffix_lists_supported_ones(tmp_path):
    path = write_csv(tmp_path, "customer_id,date,amount\n1,2020-01-01,1\n", name="log.xlsx")
    with pytest.raises(
        TransactionLogError, match=r"unsupported file type '\.xlsx'.*\.csv, \.parquet"
    ):
        load_transactions(path)


@pytest.mark.parametrize(
    ("text", "match"),
    [("", "empty file"), ("\n\n", "empty file"), ("customer_id,date,amount\n", "no rows")],
)
def test_empty_file_or_no_rows(tmp_path, text, match):
    with pytest.raises(TransactionLogError, match=match):
        load_transactions(write_csv(tmp_path, text))


def test_empty_parquet_has_no_rows(tmp_path):
    path = tmp_path / "log.parquet"
    pd.DataFrame({"customer_id": [], "date": [], "amount": []}).to_parquet(path)
    with pytest.raises(TransactionLogError, match="no rows"):
        load_transactions(path)


def test_missing_column_is_named_with_the_required_ones(tmp_path):
    path = write_csv(tmp_path, "customer_id,day,amount\n1,2020-01-01,1\n")
    with pytest.raises(
        TransactionLogError,
        match=r"missing column\(s\) date .*required columns: customer_id, date, amount",
    ):
        load_transactions(path)


@pytest.mark.parametrize("bad", ["2020-13-01", "yesterday", "01/02/2020"])
def test_unparseable_date_gives_row_and_value(tmp_path, bad):
    path = write_csv(
        tmp_path, f"customer_id,date,amount\n1,2020-01-01,1\n1,2020-01-02,1\n2,{bad},3\n"
    )
    with pytest.raises(TransactionLogError, match=rf"unparseable date '{bad}' in row 3"):
        load_transactions(path)


def test_missing_date_gives_row(tmp_path):
    path = write_csv(tmp_path, "customer_id,date,amount\n1,2020-01-01,1\n2,,3\n")
    with pytest.raises(TransactionLogError, match="unparseable date .* in row 2"):
        load_transactions(path)


@pytest.mark.parametrize(
    ("amount", "match"),
    [
        ("-5", r"negative amount .* in row 2"),
        ("", r"NaN\) amount .* in row 2"),
        ("NaN", r"NaN\) amount .* in row 2"),
        ("ten", r"non-numeric .* amount 'ten' in row 2"),
    ],
)
def test_bad_amount_gives_row(tmp_path, amount, match):
    path = write_csv(tmp_path, f"customer_id,date,amount\n1,2020-01-01,1\n1,2020-01-03,{amount}\n")
    with pytest.raises(TransactionLogError, match=match):
        load_transactions(path)


def test_missing_customer_id_gives_row(tmp_path):
    path = write_csv(tmp_path, "customer_id,date,amount\n1,2020-01-01,1\n,2020-01-03,2\n")
    with pytest.raises(TransactionLogError, match="missing customer_id in row 2"):
        load_transactions(path)


def test_calibration_end_before_first_purchase_names_both_dates(cdnow_log):
    with pytest.raises(TransactionLogError, match=r"calibration_end 1996-12-31 .*1997-01-01"):
        summarise(cdnow_log, "1996-12-31", HOLD_END)


def test_holdout_end_before_calibration_end_names_both_dates(cdnow_log):
    with pytest.raises(
        TransactionLogError, match=r"holdout_end 1997-06-30 .*calibration_end 1997-09-30"
    ):
        summarise(cdnow_log, CAL_END, "1997-06-30")


def test_summarise_requires_the_columns():
    with pytest.raises(TransactionLogError, match="missing column.*amount"):
        summarise(pd.DataFrame({"customer_id": [1], "date": ["2020-01-01"]}), CAL_END, HOLD_END)


def test_weekly_curve_end_before_start(cdnow_log):
    with pytest.raises(TransactionLogError, match=r"end 1996-01-01 is before start 1997-01-01"):
        weekly_repeat_curve(cdnow_log, "1997-01-01", "1996-01-01")
