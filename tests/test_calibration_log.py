"""Real logs for calibration: cleaning rules, streaming reads, bad input (rapport.envs.calibration_log).

Messy logs are generated from the CDNOW sample by adding what real order logs contain —
exact duplicate rows, returns (with and without order ids), fully refunded orders, unmatched
refunds, $0 orders — in ways whose correct cleaning restores the original sample, so the fits
must come back to the published CDNOW estimates and every exclusion must be counted exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rapport.envs import calibration_log
from rapport.envs.btyd import fit_gamma_gamma
from rapport.envs.calibration import (
    CalibrationError,
    LogColumns,
    fit_models,
    load_cohort,
    write_outputs,
)
from rapport.envs.calibration_log import clean_log, read_log
from rapport.envs.customer_days import summarise_days
from rapport.envs.transactions import TransactionLogError, load_transactions, summarise
from rapport.experiments.calibrate import main as cli_main

DATA = Path(__file__).resolve().parent / "data"
CDNOW = DATA / "cdnow_sample.csv"
CAL_END, HOLD_END = "1997-09-30", "1998-06-30"
PUBLISHED_BGNBD = {"r": 0.2426, "alpha": 4.4136, "a": 0.7929, "b": 2.4259}  # FHL 2005a
PUBLISHED_GG = {"p": 6.25, "q": 3.74, "gamma": 15.44}  # Fader & Hardie 2013, note 025


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    frame = pd.read_csv(CDNOW, dtype={"date": str})
    return frame.assign(order_id=np.arange(len(frame)) + 1)


def messy_orders(sample: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, dict[str, int]]:
    """The sample (one order per row) plus duplicates, returns, refunds and $0 lines whose
    correct cleaning gives back the sample exactly; returns the log and the expected counts."""
    rng = np.random.default_rng(seed)
    n = len(sample)
    later = (pd.to_datetime(sample["date"]) + pd.Timedelta(days=20)).dt.strftime("%Y-%m-%d")
    # Partial returns: order i bought amount + 5 and returned 5 twenty days later (not of a
    # $0 order: that would be fully refunded, net <= 0, and dropped).
    ret = rng.choice(np.flatnonzero(sample["amount"].to_numpy() > 0), 200, replace=False)
    bought = sample.copy()
    bought.loc[ret, "amount"] = bought.loc[ret, "amount"] + 5.0
    returns = sample.iloc[ret].assign(date=later.iloc[ret].to_numpy(), amount=-5.0)
    # Fully refunded extra orders and refunds of orders that are not in the log.
    extra = sample.iloc[rng.choice(n, 50, replace=False)].assign(amount=20.0)
    extra["order_id"] = np.arange(50) + 10 * n
    refunds = extra.assign(amount=-20.0)
    orphans = sample.iloc[rng.choice(n, 30, replace=False)].assign(amount=-7.5)
    orphans["order_id"] = np.arange(30) + 20 * n
    # $0 lines added to existing orders (a free sample in the parcel) change nothing.
    # (Orders without returns: netting collapses an order to one row, the $0 line included.)
    free = sample.iloc[rng.choice(np.setdiff1d(np.arange(n), ret), 40, replace=False)]
    free = free.assign(amount=0.0)
    dups = bought.iloc[rng.choice(n, 300, replace=False)]
    log = pd.concat([bought, returns, extra, refunds, orphans, free, dups])
    log = log.sample(frac=1.0, random_state=1).reset_index(drop=True)  # file order is arbitrary
    expected = {"duplicate_rows_dropped": 300, "orders_netted": 200, "return_rows_netted": 200,
                "refunded_orders_dropped": 50, "unmatched_return_rows_dropped": 30,
                "negative_rows_dropped": 0}
    return log, expected


def assert_published_fit(summary: pd.DataFrame) -> None:
    bgnbd, gg, fit_warnings = fit_models(summary)
    assert fit_warnings == []
    assert bgnbd.log_likelihood == pytest.approx(-9582.43, abs=0.05)
    for name, value in PUBLISHED_BGNBD.items():
        assert getattr(bgnbd, name) == pytest.approx(value, rel=0.005), name
    assert gg.n_customers == 946
    assert gg.log_likelihood == pytest.approx(-4055.92, abs=0.05)
    for name, value in PUBLISHED_GG.items():
        assert getattr(gg, name) == pytest.approx(value, rel=0.01), name


# --------------------------------------------------------------------------------------------
# The crash this fixes, and the Gamma-Gamma exclusion
# --------------------------------------------------------------------------------------------


def zero_repeat_log(tmp_path: Path) -> Path:
    """The CDNOW sample plus one customer whose only repeat purchases were $0."""
    path = tmp_path / "zero_repeats.csv"
    path.write_text(CDNOW.read_text() + "9999,1997-01-05,10\n9999,1997-02-05,0\n"
                    "9999,1997-03-05,0.00\n")
    return path


def test_zero_repeat_customer_crashed_gamma_gamma_and_is_now_excluded(tmp_path):
    summary = summarise(load_transactions(zero_repeat_log(tmp_path)), CAL_END, HOLD_END)
    # The failure the issue reports: one such customer and the Gamma-Gamma fit refuses.
    with pytest.raises(ValueError, match="monetary_value must be > 0 where frequency > 0"):
        fit_gamma_gamma(summary["x"], summary["monetary_value"])
    cohort = load_cohort(zero_repeat_log(tmp_path), CAL_END, HOLD_END, keep_duplicates=True)
    bgnbd, gg, _ = fit_models(cohort.summary)
    assert bgnbd.n_customers == 2358  # still in BG/NBD: they did purchase twice more
    assert cohort.summary.loc[9999, "x"] == 2
    assert gg.n_customers == 946  # out of Gamma-Gamma only
    assert gg.p == pytest.approx(PUBLISHED_GG["p"], rel=0.01)


def test_cli_counts_the_exclusion_in_one_warning_line(tmp_path, capsys):
    out = tmp_path / "out"
    status = cli_main(["--transactions", str(zero_repeat_log(tmp_path)), "--calibration-end",
                       CAL_END, "--holdout-end", HOLD_END, "--out", str(out),
                       "--replicates", "1", "--keep-duplicates"])
    assert status == 0
    stdout = capsys.readouterr().out
    lines = [ln for ln in stdout.splitlines() if "Gamma-Gamma fit" in ln]
    assert lines == ["warning: 1 customers excluded from the Gamma-Gamma fit (kept in BG/NBD): "
                     "no repeat purchase with a positive amount in the calibration period"]
    report = json.loads((out / "report.json").read_text())
    assert report["cleaning"]["gamma_gamma_excluded_customers"] == 1
    assert report["fit"]["gamma_gamma"]["excluded_customers"] == 1
    assert report["fit"]["gamma_gamma"]["n_customers"] == 946
    assert report["cleaning"]["zero_amount_rows_kept"] == 8 + 2


# --------------------------------------------------------------------------------------------
# Cleaning rules
# --------------------------------------------------------------------------------------------


def test_summaries_equal_the_pandas_reference_bit_for_bit():
    days, report = clean_log(read_log(CDNOW), keep_duplicates=True)
    mine = summarise_days(days, pd.Timestamp(CAL_END), pd.Timestamp(HOLD_END))
    reference = summarise(load_transactions(CDNOW), CAL_END, HOLD_END)
    pd.testing.assert_frame_equal(mine, reference, check_exact=True, check_dtype=False)
    assert report.rows_read == 6919 and report.customer_days == 6696
    assert report.warnings() == []


def test_messy_log_with_order_ids_cleans_back_to_the_sample(sample, tmp_path):
    log, expected = messy_orders(sample)
    path = tmp_path / "orders.parquet"
    # Parquet with other column names: the columns are configurable.
    log.rename(columns={"customer_id": "cust", "date": "day", "amount": "value",
                        "order_id": "order"}).to_parquet(path)
    columns = LogColumns("cust", "day", "value", "order")
    cohort = load_cohort(path, CAL_END, HOLD_END, columns=columns)
    report = cohort.cleaning
    for name, count in expected.items():
        assert getattr(report, name) == count, name
    assert report.rows_read == len(log)
    assert report.zero_amount_rows_kept == 8 + 40  # the sample's $0 orders and the free lines
    assert len(report.warnings()) == 3  # duplicates, refunded orders, unmatched returns
    reference = summarise(load_transactions(CDNOW), CAL_END, HOLD_END)
    pd.testing.assert_frame_equal(cohort.summary, reference, check_dtype=False, rtol=1e-12)
    assert_published_fit(cohort.summary)


def test_returns_without_order_ids_are_dropped_and_counted(tmp_path):
    text = CDNOW.read_text().splitlines()
    rng = np.random.default_rng(3)
    rows = rng.choice(np.arange(1, len(text)), 40, replace=False)
    refunds = [",".join(text[i].split(",")[:2] + ["-9.99"]) for i in rows]
    path = tmp_path / "returns.csv"
    path.write_text("\n".join(text + refunds) + "\n")
    cohort = load_cohort(path, CAL_END, HOLD_END, keep_duplicates=True)
    assert cohort.cleaning.negative_rows_dropped == 40
    assert cohort.cleaning.warnings() == [
        "40 rows with a negative amount (returns) dropped: no order-id column to net them "
        "against (--order-column)"]
    assert_published_fit(cohort.summary)


def test_rules_on_a_small_log_by_hand(tmp_path):
    path = tmp_path / "small.csv"
    path.write_text(
        "customer_id,date,amount,order_id\n"
        "a,2020-01-01,10,1\n"
        "a,2020-01-01,10,1\n"           # exact duplicate: dropped
        "a,2020-01-01,10,2\n"           # same day and amount, other order: kept, merged
        "a,2020-01-08T10:30:00,30,3\n"
        "a,2020-01-20,-12.5,3\n"        # partial return of order 3: 17.5 left on 2020-01-08
        "a,2020-01-15,8,4\n"
        "a,2020-01-16,-8,4\n"           # order 4 fully refunded: dropped
        "b,2020-01-02,0,5\n"            # $0 trial
        "b,2020-01-09,0,6\n"            # $0 repeat: b is out of Gamma-Gamma only
        "b,2020-01-10,-3,\n"            # refund without an order id: unmatched
        "c,2020-01-03,-4,7\n"           # a refund of an order not in the log
        "d,2020-01-04,6,3\n"            # order id 3 of another customer: untouched
        "d,2020-01-05,2,3\n")
    days, report = clean_log(read_log(path, LogColumns(order_id="order_id")))
    frame = days.to_frame()
    assert frame["customer_id"].tolist() == ["a", "a", "b", "b", "d", "d"]
    assert frame["date"].dt.strftime("%m-%d").tolist() == ["01-01", "01-08", "01-02", "01-09",
                                                          "01-04", "01-05"]
    assert frame["amount"].tolist() == [20.0, 17.5, 0.0, 0.0, 6.0, 2.0]
    assert (report.duplicate_rows_dropped, report.orders_netted, report.return_rows_netted,
            report.refunded_orders_dropped, report.unmatched_return_rows_dropped,
            report.zero_amount_rows_kept) == (1, 1, 1, 1, 2, 2)
    assert report.customers == 3  # c had nothing but a refund
    kept, _ = clean_log(read_log(path, LogColumns(order_id="order_id")), keep_duplicates=True)
    assert kept.to_frame()["amount"].tolist()[0] == 30.0


def test_chunked_reading_gives_the_same_log_and_row_numbers(tmp_path, monkeypatch):
    whole = read_log(CDNOW)
    monkeypatch.setattr(calibration_log, "_CSV_BLOCK_BYTES", 4096)
    chunked = read_log(CDNOW)
    for name in ("customer", "timestamp", "amount"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name))
    assert chunked.ids.equals(whole.ids)
    lines = CDNOW.read_text().splitlines()  # lines[0] is the header: lines[k] is data row k
    lines[5000] = lines[5000].rsplit(",", 1)[0] + ",abc"  # far beyond the first 4 KiB block
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(TransactionLogError, match="non-numeric amount 'abc' in row 5000 "):
        read_log(bad)


def test_typed_csv_pass_equals_the_text_pass(tmp_path, monkeypatch):
    log, _ = messy_orders(pd.read_csv(CDNOW, dtype={"date": str}).assign(
        order_id=lambda f: np.arange(len(f)) + 1))
    path = tmp_path / "orders.csv"
    log.to_csv(path, index=False)
    typed = read_log(path, LogColumns(order_id="order_id"))
    monkeypatch.setattr(calibration_log, "_CSV_MODES", ("text",))
    text = read_log(path, LogColumns(order_id="order_id"))
    for name in ("customer", "timestamp", "amount", "order"):
        np.testing.assert_array_equal(getattr(typed, name), getattr(text, name))
    assert typed.ids.equals(text.ids)


def test_iso_8601_variants_fall_back_to_the_full_parser(tmp_path):
    path = tmp_path / "dates.csv"
    path.write_text("customer_id,date,amount\nx1,19970105,1\nx1,1997-01-06 23:30,2\n")
    days = read_log(path).timestamp // (86_400 * 10**9)
    assert (np.datetime64(0, "D") + days.astype("timedelta64[D]")).astype(str).tolist() == [
        "1997-01-05", "1997-01-06"]
    path.write_text("customer_id,date,amount\nx1,1997-01-06T23:30:00+02:00,1\n"
                    "x2,1997-01-07T01:00:00+02:00,2\n")
    raw = read_log(path)
    days = raw.timestamp // (86_400 * 10**9)
    assert (np.datetime64(0, "D") + days.astype("timedelta64[D]")).astype(str).tolist() == [
        "1997-01-06", "1997-01-07"]  # the wall-clock day where the order was placed
    assert raw.ids.tolist() == ["x1", "x2"]
    path.write_text("customer_id,date,amount\nx1,1997-01-06T23:30:00+02:00,1\n"
                    "x2,1997-01-07,2\n")
    with pytest.raises(TransactionLogError, match="mix time-zone offsets"):
        read_log(path)


def test_string_customer_ids_sort_as_text_and_integer_ids_as_numbers(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("customer_id,date,amount\n10,2020-01-01,1\n9,2020-01-02,1\n"
                    "010,2020-01-03,1\n")
    assert read_log(path).ids.tolist() == [9, 10]  # "10" and "010" are one integer id
    path.write_text("customer_id,date,amount\nb10,2020-01-01,1\nb9,2020-01-02,1\n")
    assert read_log(path).ids.tolist() == ["b10", "b9"]


# --------------------------------------------------------------------------------------------
# Bad input: one clear line, exit status 2, nothing written
# --------------------------------------------------------------------------------------------

HEADER = "customer_id,date,amount\n"
GOOD = HEADER + "1,1997-01-01,10\n1,1997-02-01,12\n2,1997-01-03,8\n"
BAD_LOGS = [  # id, file name, content (bytes or text), extra CLI args, expected message part
    ("unterminated-quote", "log.csv", GOOD + '"3,1997-03-01,5\n4,1997-03-02,6\n', [],
     "cannot read"),
    ("too-many-fields", "log.csv", GOOD + "3,1997-03-01,5,7\n", [], "Expected 3 columns"),
    ("non-numeric-amount", "log.csv", GOOD + "3,1997-03-01,ten\n", [],
     "non-numeric amount 'ten' in row 4"),
    ("empty-amount", "log.csv", GOOD + "3,1997-03-01,\n", [], "missing amount"),
    ("nan-amount", "log.csv", GOOD + "3,1997-03-01,nan\n", [], "missing amount"),
    ("infinite-amount", "log.csv", GOOD + "3,1997-03-01,-inf\n", [], "infinite amount -inf in row 4"),
    ("missing-customer-id", "log.csv", GOOD + ",1997-03-01,5\n", [], "missing customer_id"),
    ("missing-date", "log.csv", GOOD + "3,,5\n", [], "missing date in row 4"),
    ("day-first-date", "log.csv", GOOD + "3,31/01/1997,5\n", [],
     "unparseable date '31/01/1997' in row 4"),
    ("missing-order-column", "log.csv", GOOD, ["--order-column", "order"],
     "missing column(s) order"),
    ("renamed-column-not-there", "log.csv", GOOD, ["--amount-column", "value"],
     "missing column(s) value"),
    ("same-column-twice", "log.csv", GOOD, ["--amount-column", "date"],
     "column names must be distinct"),
    ("unsupported-suffix", "log.xlsx", GOOD, [], "unsupported file type '.xlsx'"),
    ("corrupt-parquet", "log.parquet", b"PAR1 this is not parquet", [], "as Parquet"),
    ("empty-file", "log.csv", "", [], "empty file"),
    ("header-only", "log.csv", HEADER, [], "has no rows"),
    ("nothing-left", "log.csv", HEADER + "1,1997-01-01,-5\n", [],
     "no purchases are left after cleaning"),
    ("only-zero-repeat-spend", "log.csv",
     HEADER + "1,1997-01-01,5\n1,1997-02-01,0\n2,1997-01-01,5\n", [],
     "no customer has a repeat purchase with a positive amount"),
]


@pytest.mark.parametrize(("name", "content", "args", "message"),
                         [case[1:] for case in BAD_LOGS], ids=[case[0] for case in BAD_LOGS])
def test_bad_log_exits_2_with_one_line(tmp_path, capsys, name, content, args, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    out = tmp_path / "out"
    status = cli_main(["--transactions", str(path), "--calibration-end", CAL_END,
                       "--holdout-end", HOLD_END, "--out", str(out), "--replicates", "1", *args])
    captured = capsys.readouterr()
    assert status == 2
    assert message in captured.err
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
    assert captured.out == ""
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [path]  # no temporary folder left either


def test_missing_file_names_it(tmp_path):
    with pytest.raises(TransactionLogError, match="transaction log not found: .*nope.csv"):
        read_log(tmp_path / "nope.csv")


def test_failed_write_leaves_no_output(tmp_path, monkeypatch, capsys):
    from rapport.envs.calibration import run_calibration

    result = run_calibration(CDNOW, CAL_END, HOLD_END, replicates=1, keep_duplicates=True)
    out = tmp_path / "out"
    write_outputs(result, out)
    assert sorted(p.name for p in out.iterdir()) == ["fidelity.png", "report.json",
                                                     "scenario.json"]
    first = (out / "report.json").read_text()
    assert json.loads(first)["replicates"] == 1

    def fail(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(result.scenario), "save", fail)
    fresh = tmp_path / "fresh"
    with pytest.raises(OSError, match="disk full"):
        write_outputs(result, fresh)
    assert not fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    status = cli_main(["--transactions", str(CDNOW), "--calibration-end", CAL_END,
                       "--holdout-end", HOLD_END, "--out", str(fresh), "--replicates", "1"])
    err = capsys.readouterr().err
    assert status == 1 and "cannot write the outputs" in err and "disk full" in err
    assert not fresh.exists()


def test_bad_dates_are_calibration_errors():
    with pytest.raises(CalibrationError, match="calibration end '1997-13-01' is not a date"):
        load_cohort(CDNOW, "1997-13-01", HOLD_END)
