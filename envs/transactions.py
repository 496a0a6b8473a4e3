"""Transaction logs: loading, validation and RFM summaries for BG/NBD-style models.

A transaction log has one row per purchase with the columns ``customer_id``, ``date`` and
``amount``. Following Fader, Hardie & Lee (2005a), a *transaction* is one customer-day: several
rows of the same customer on the same day are merged and their amounts summed. The first
transaction of each customer is the trial; every later one is a *repeat* transaction. Times are
measured in weeks, computed as days / 7.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "REQUIRED_COLUMNS",
    "SUPPORTED_SUFFIXES",
    "TransactionLogError",
    "load_transactions",
    "summarise",
    "weekly_repeat_curve",
]

REQUIRED_COLUMNS = ("customer_id", "date", "amount")
SUPPORTED_SUFFIXES = (".csv", ".parquet", ".pq")
_WEEK = pd.Timedelta(days=7)


class TransactionLogError(ValueError):
    """A transaction log, or a request about one, is invalid; the message says why."""


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _read_raw(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise TransactionLogError(
            f"unsupported file type {path.suffix!r} for {path}; supported: "
            + ", ".join(SUPPORTED_SUFFIXES)
        )
    if not path.is_file():
        raise TransactionLogError(f"transaction log not found: {path}")
    if path.stat().st_size == 0:
        raise TransactionLogError(f"transaction log is an empty file: {path}")
    if suffix == ".csv":
        # Read dates as text so that parsing, and its error messages, stay under our control.
        return pd.read_csv(path, dtype={"date": str})
    return pd.read_parquet(path)


def _check_columns(frame: pd.DataFrame, source: object) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise TransactionLogError(
            f"missing column(s) {', '.join(missing)} in {source}; required columns: "
            + ", ".join(REQUIRED_COLUMNS)
        )
    if frame.empty:
        raise TransactionLogError(f"transaction log has no rows: {source}")


def _row_number(frame: pd.DataFrame, mask: pd.Series) -> int:
    """1-based data-row number (header excluded) of the first True in ``mask``."""
    return int(np.flatnonzero(mask.to_numpy())[0]) + 1


def _parse_dates(frame: pd.DataFrame) -> pd.Series:
    raw = frame["date"]
    if pd.api.types.is_datetime64_any_dtype(raw):
        parsed = pd.to_datetime(raw)
    else:
        # ISO 8601 only: day-first vs month-first guessing would silently corrupt recency.
        parsed = pd.to_datetime(raw, format="ISO8601", errors="coerce")
    bad = parsed.isna()
    if bad.any():
        row = _row_number(frame, bad)
        raise TransactionLogError(
            f"unparseable date {raw.iloc[row - 1]!r} in row {row} (1-based, header excluded); "
            "expected ISO 8601 dates such as 1997-01-31"
        )
    return parsed.dt.tz_localize(None) if parsed.dt.tz is not None else parsed


def _parse_amounts(frame: pd.DataFrame) -> pd.Series:
    amount = pd.to_numeric(frame["amount"], errors="coerce")
    for mask, problem in (
        (amount.isna(), "missing or non-numeric (NaN)"),
        (amount < 0, "negative"),
    ):
        if mask.any():
            row = _row_number(frame, mask)
            raise TransactionLogError(
                f"{problem} amount {frame['amount'].iloc[row - 1]!r} in row {row} "
                "(1-based, header excluded); amounts must be >= 0"
            )
    return amount.astype(float)


def _check_ids(frame: pd.DataFrame) -> None:
    missing = frame["customer_id"].isna()
    if missing.any():
        raise TransactionLogError(
            f"missing customer_id in row {_row_number(frame, missing)} (1-based, header excluded)"
        )


def _merge_customer_days(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per customer-day with the day's amounts summed, sorted by customer and date."""
    days = frame.assign(date=frame["date"].dt.normalize())
    merged = days.groupby(["customer_id", "date"], as_index=False, sort=True)["amount"].sum()
    return merged.reset_index(drop=True)


def load_transactions(path: str | Path) -> pd.DataFrame:
    """Read and validate a transaction log.

    Parameters
    ----------
    path : str or Path
        CSV (``.csv``) or Parquet (``.parquet``, ``.pq``) file with the columns
        ``customer_id``, ``date`` (ISO 8601) and ``amount`` (>= 0); extra columns are ignored.

    Returns
    -------
    pandas.DataFrame, shape (n_transactions, 3)
        Columns ``customer_id``, ``date`` (datetime64, midnight) and ``amount`` (float); one row
        per customer-day, sorted by customer and date, with a fresh RangeIndex.

    Raises
    ------
    TransactionLogError
        If the file is missing, has an unsupported suffix, is empty or has no rows, lacks a
        required column, or has an unparseable date, a missing customer_id, or a NaN or
        negative amount (the message gives the 1-based row number, header excluded).
    """
    path = Path(path)
    try:
        frame = _read_raw(path)
    except pd.errors.EmptyDataError as exc:
        raise TransactionLogError(f"transaction log is an empty file: {path}") from exc
    _check_columns(frame, path)
    _check_ids(frame)
    frame = pd.DataFrame(
        {
            "customer_id": frame["customer_id"],
            "date": _parse_dates(frame),
            "amount": _parse_amounts(frame),
        }
    )
    return _merge_customer_days(frame)


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------


def _prepared(transactions: pd.DataFrame) -> pd.DataFrame:
    """Customer-days with a ``first`` column (each customer's first purchase) and a repeat flag."""
    _check_columns(transactions, "transactions")
    frame = _merge_customer_days(transactions.assign(date=pd.to_datetime(transactions["date"])))
    first = frame.groupby("customer_id")["date"].transform("min")
    return frame.assign(first=first, repeat=frame["date"] > first)


def summarise(
    transactions: pd.DataFrame,
    calibration_end: str | pd.Timestamp,
    holdout_end: str | pd.Timestamp,
) -> pd.DataFrame:
    """Per-customer calibration/holdout summary (the BG/NBD and Gamma-Gamma inputs).

    Parameters
    ----------
    transactions : pandas.DataFrame
        Columns ``customer_id``, ``date``, ``amount``, as returned by :func:`load_transactions`
        (rows of the same customer-day are merged again here, so raw logs also work).
    calibration_end, holdout_end : str or pandas.Timestamp
        Last day of the calibration period and of the holdout period (both inclusive).

    Returns
    -------
    pandas.DataFrame, shape (n_customers, 7), indexed by ``customer_id``
        Only customers whose first purchase is on or before ``calibration_end``. Columns:
        ``x`` repeat transactions in calibration; ``t_x`` weeks from the first purchase to the
        last calibration purchase (0 if x = 0); ``T`` weeks from the first purchase to
        ``calibration_end``; ``x_holdout`` transactions in ``(calibration_end, holdout_end]``;
        ``monetary_value`` mean amount of the calibration repeat transactions (0 if x = 0);
        ``first_purchase`` timestamp; ``birth_week`` weeks from the earliest first purchase in
        the log to this customer's first purchase. Read the age column as ``summary["T"]``:
        ``summary.T`` is the DataFrame transpose.

    Raises
    ------
    TransactionLogError
        If ``calibration_end`` is before the first purchase in the log or ``holdout_end`` is
        before ``calibration_end``.
    """
    cal_end, hold_end = pd.Timestamp(calibration_end), pd.Timestamp(holdout_end)
    frame = _prepared(transactions)
    earliest = frame["date"].min()
    if cal_end < earliest:
        raise TransactionLogError(
            f"calibration_end {cal_end.date()} is before the first purchase in the log "
            f"({earliest.date()})"
        )
    if hold_end < cal_end:
        raise TransactionLogError(
            f"holdout_end {hold_end.date()} is before calibration_end {cal_end.date()}"
        )
    frame = frame[frame["first"] <= cal_end]
    return _customer_table(frame, cal_end, hold_end, earliest)


def _customer_table(
    frame: pd.DataFrame, cal_end: pd.Timestamp, hold_end: pd.Timestamp, earliest: pd.Timestamp
) -> pd.DataFrame:
    first = frame.groupby("customer_id")["first"].first()
    cal_repeats = frame[frame["repeat"] & (frame["date"] <= cal_end)].groupby("customer_id")
    holdout = frame[(frame["date"] > cal_end) & (frame["date"] <= hold_end)]
    x = cal_repeats.size().reindex(first.index, fill_value=0)
    last = cal_repeats["date"].max().reindex(first.index).fillna(first)
    out = pd.DataFrame(
        {
            "x": x.astype(int),
            "t_x": (last - first) / _WEEK,
            "T": (cal_end - first) / _WEEK,
            "x_holdout": holdout.groupby("customer_id").size().reindex(first.index, fill_value=0),
            "monetary_value": cal_repeats["amount"].mean().reindex(first.index, fill_value=0.0),
            "first_purchase": first,
            "birth_week": (first - earliest) / _WEEK,
        }
    )
    out["x_holdout"] = out["x_holdout"].astype(int)
    return out


def weekly_repeat_curve(
    transactions: pd.DataFrame, start: str | pd.Timestamp, end: str | pd.Timestamp
) -> np.ndarray:
    """Cumulative repeat transactions by week since ``start`` (the classic tracking plot).

    Parameters
    ----------
    transactions : pandas.DataFrame
        Columns ``customer_id``, ``date``, ``amount``; every customer in it counts.
    start, end : str or pandas.Timestamp
        First and last day (inclusive) of the tracked period.

    Returns
    -------
    numpy.ndarray of int, shape (n_weeks,)
        Element k is the number of repeat transactions dated in
        ``[start, start + 7 (k + 1) days)`` and not after ``end``. ``n_weeks =
        floor((end - start) / 7 days) + 1``, so the last week may be partial. For CDNOW with
        start 1997-01-01 and end 1998-06-30 this gives 78 weeks; element 38 is the calibration
        total at 1997-09-30.

    Raises
    ------
    TransactionLogError
        If ``end`` is before ``start``.
    """
    start, end = pd.Timestamp(start), pd.Timestamp(end)
    if end < start:
        raise TransactionLogError(f"end {end.date()} is before start {start.date()}")
    frame = _prepared(transactions)
    dates = frame.loc[frame["repeat"] & (frame["date"] >= start) & (frame["date"] <= end), "date"]
    n_weeks = int((end - start) // _WEEK) + 1
    week = ((dates - start) // _WEEK).to_numpy(dtype=np.int64)
    return np.cumsum(np.bincount(week, minlength=n_weeks))
