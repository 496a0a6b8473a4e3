"""Real transaction logs for calibration: streaming read, cleaning rules, customer summaries.

A log is CSV or Parquet with one row per purchase (or order line) and configurable columns for
the customer id, the date and the amount, plus an optional order id (:class:`LogColumns`). It
is read in chunks with pyarrow: each chunk is validated and reduced to four compact arrays
(customer, timestamp, amount, order), so memory grows with ~32 bytes per row and never with the
file's text.

Cleaning rules, in this order, each counted in :class:`CleaningReport`:

1. **Exact duplicates.** Rows identical in customer id, timestamp, amount and order id (if
   there is an order-id column) are dropped, keeping the first; ``keep_duplicates=True`` keeps
   them (a log without order ids cannot tell a double-loaded row from two identical purchases;
   the published CDNOW fits count them as two).
2. **Returns and refunds (negative amounts).** With an order-id column, a customer's order that
   has negative rows becomes one row: its net amount on the date of its first non-negative row.
   An order whose net is <= 0 (fully refunded) is dropped, and negative rows with no
   non-negative row of the same customer and order (or no order id) are dropped as unmatched.
   Without an order-id column every negative row is dropped.
3. **$0 rows are kept.** A free or fully discounted order is a purchase occasion, so it counts
   for BG/NBD; the Gamma-Gamma fit later excludes customers without a positive repeat spend.
4. Rows of the same customer and day are merged into one *transaction* with the amounts summed
   (Fader, Hardie & Lee 2005a), exactly as :func:`envs.transactions.summarise`.

Malformed input (unreadable CSV, missing column, NaN/inf or non-numeric amount, missing or
non-ISO date, missing customer id, empty file) raises :class:`TransactionLogError` naming the
file, the column, the 1-based data row (header excluded) and what is valid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from envs.transactions import SUPPORTED_SUFFIXES, TransactionLogError

__all__ = [
    "CleaningReport",
    "CustomerDays",
    "LogColumns",
    "RawLog",
    "clean_log",
    "customer_days_from_frame",
    "read_log",
    "summarise_days",
    "weekly_repeat_curves",
]

DAY_NS = 86_400 * 10**9
BATCH_ROWS = 1 << 20
"""Rows per Parquet batch; CSV blocks are 16 MiB of text."""
_CSV_BLOCK_BYTES = 16 << 20
_EPOCH = np.datetime64(0, "ns")


@dataclass(frozen=True)
class LogColumns:
    """Column names of a transaction log; ``order_id=None`` when the log has no order ids."""

    customer_id: str = "customer_id"
    date: str = "date"
    amount: str = "amount"
    order_id: str | None = None

    def __post_init__(self) -> None:
        names = self.names()
        for name in names:
            if not isinstance(name, str) or not name:
                raise TransactionLogError(f"column names must be non-empty strings, got {name!r}")
        if len(set(names)) != len(names):
            raise TransactionLogError(f"column names must be distinct, got {names}")

    def names(self) -> list[str]:
        return [self.customer_id, self.date, self.amount] + (
            [self.order_id] if self.order_id is not None else [])


@dataclass(frozen=True)
class RawLog:
    """A validated log as flat arrays of equal length, in file order."""

    customer: np.ndarray  # int64 code into ``ids``
    ids: pd.Index  # original customer ids, sorted (numerically when they are all integers)
    timestamp: np.ndarray  # int64 ns since 1970-01-01, naive local time
    amount: np.ndarray  # float64, finite
    order: np.ndarray | None  # int64 code per (order id), -1 where missing; None: no column
    source: str
    order_column: str | None = None


@dataclass(frozen=True)
class CustomerDays:
    """One row per customer-day (a *transaction*), sorted by customer, then day.

    ``customer`` indexes ``ids``; ``day`` counts days since 1970-01-01; ``amount`` is the
    day's total (>= 0 after cleaning).
    """

    customer: np.ndarray
    day: np.ndarray
    amount: np.ndarray
    ids: pd.Index

    def starts(self) -> np.ndarray:
        """Boolean per row: the customer's first transaction (the trial)."""
        first = np.ones(self.customer.size, bool)
        first[1:] = self.customer[1:] != self.customer[:-1]
        return first

    def subset(self, customers: np.ndarray) -> CustomerDays:
        """Only the rows of the customers (codes) where ``customers`` (bool per code) is True."""
        keep = customers[self.customer]
        return CustomerDays(self.customer[keep], self.day[keep], self.amount[keep], self.ids)

    def to_frame(self) -> pd.DataFrame:
        """``customer_id, date, amount`` as :func:`envs.transactions.load_transactions` returns."""
        return pd.DataFrame({
            "customer_id": self.ids[self.customer],
            "date": (self.day * DAY_NS).astype("datetime64[ns]"),
            "amount": self.amount,
        })


@dataclass
class CleaningReport:
    """What the cleaning rules did (module docstring), for the report; counts are rows unless
    named orders or customers."""

    rows_read: int = 0
    duplicate_rows_dropped: int = 0
    negative_rows_dropped: int = 0
    orders_netted: int = 0
    return_rows_netted: int = 0
    refunded_orders_dropped: int = 0
    unmatched_return_rows_dropped: int = 0
    zero_amount_rows_kept: int = 0
    customer_days: int = 0
    customers: int = 0
    keep_duplicates: bool = False
    order_column: str | None = None

    def warnings(self) -> list[str]:
        """One line per rule that excluded something, with the count."""
        out = []
        if self.duplicate_rows_dropped:
            key = "customer, date, amount" + (", order id" if self.order_column else "")
            out.append(f"{self.duplicate_rows_dropped:,} exact duplicate rows dropped (same "
                       f"{key}); --keep-duplicates keeps them")
        if self.negative_rows_dropped:
            out.append(f"{self.negative_rows_dropped:,} rows with a negative amount (returns) "
                       "dropped: no order-id column to net them against (--order-column)")
        if self.refunded_orders_dropped:
            out.append(f"{self.refunded_orders_dropped:,} orders dropped: fully refunded "
                       "(net amount <= 0 after netting their returns)")
        if self.unmatched_return_rows_dropped:
            out.append(f"{self.unmatched_return_rows_dropped:,} return rows dropped: no "
                       "purchase of the same customer and order id in the log")
        return out

    def to_dict(self) -> dict:
        return asdict(self) | {"warnings": self.warnings()}


# --------------------------------------------------------------------------------------------
# Reading, chunk by chunk
# --------------------------------------------------------------------------------------------


def _where(path: Path, column: str, row: int) -> str:
    return f"in row {row} (1-based, header excluded) of {path}, column {column!r}"


def _one_line(message: str, limit: int = 160) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _parse_amount(arr: pa.Array, path: Path, column: str, offset: int) -> np.ndarray:
    raw = arr
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        try:
            arr = pc.cast(arr, pa.float64())
        except pa.ArrowInvalid:
            text = pd.Series(raw.to_pylist(), dtype=object)
            coerced = pd.to_numeric(text, errors="coerce")
            i = _first(coerced.isna().to_numpy() & text.notna().to_numpy())
            raise TransactionLogError(
                f"non-numeric amount {raw[i].as_py()!r} {_where(path, column, offset + i + 1)}; "
                "amounts must be finite numbers (negative = return or refund)") from None
    elif pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_decimal(
            arr.type) or pa.types.is_null(arr.type):
        arr = pc.cast(arr, pa.float64())
    else:
        raise TransactionLogError(
            f"column {column!r} of {path} has type {arr.type}; amounts must be numbers")
    values = np.asarray(arr.to_numpy(zero_copy_only=False), np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        i = _first(bad)
        if not arr[i].is_valid:
            problem = "missing amount (empty, NA or NaN)"
        else:
            problem = f"{'NaN' if np.isnan(values[i]) else 'infinite'} amount {raw[i].as_py()!r}"
        raise TransactionLogError(
            f"{problem} {_where(path, column, offset + i + 1)}; amounts must be finite numbers "
            "(negative = return or refund)")
    return values


def _parse_dates(arr: pa.Array, path: Path, column: str, offset: int) -> np.ndarray:
    if arr.null_count:
        i = _first(np.asarray(arr.is_null(), bool))
        raise TransactionLogError(
            f"missing date {_where(path, column, offset + i + 1)}; expected ISO 8601 dates "
            "such as 1997-01-31")
    typ = arr.type
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        try:  # fast path: YYYY-MM-DD[ hh:mm:ss], no offset
            parsed = pc.cast(arr, pa.timestamp("ns"))
        except pa.ArrowInvalid:
            parsed = None
        if parsed is None:  # ISO 8601 variants (compact, offsets) and the bad row's number
            text = pd.Series(arr.to_pylist(), dtype=object)
            try:
                series = pd.to_datetime(text, format="ISO8601", errors="coerce")
            except ValueError as exc:
                raise TransactionLogError(
                    f"dates of {path}, column {column!r}, mix time-zone offsets "
                    f"({_one_line(exc)}); use one offset or none") from None
            bad = series.isna().to_numpy()
            if bad.any():
                i = _first(bad)
                raise TransactionLogError(
                    f"unparseable date {text.iloc[i]!r} {_where(path, column, offset + i + 1)}; "
                    "expected ISO 8601 dates such as 1997-01-31")
            if series.dt.tz is not None:
                series = series.dt.tz_localize(None)
            return series.to_numpy("datetime64[ns]").view(np.int64)
        arr = parsed
    elif pa.types.is_timestamp(typ):
        if typ.tz is not None:
            arr = pc.local_timestamp(arr)
        arr = pc.cast(arr, pa.timestamp("ns"))
    elif pa.types.is_date(typ):
        arr = pc.cast(pc.cast(arr, pa.timestamp("s")), pa.timestamp("ns"))
    else:
        raise TransactionLogError(
            f"column {column!r} of {path} has type {typ}; expected ISO 8601 text, dates or "
            "timestamps")
    return np.asarray(pc.cast(arr, pa.int64()).to_numpy(zero_copy_only=False), np.int64)


def _check_ids(arr: pa.Array, path: Path, column: str, offset: int) -> pa.Array:
    if arr.null_count:
        i = _first(np.asarray(arr.is_null(), bool))
        raise TransactionLogError(f"missing {column} {_where(path, column, offset + i + 1)}")
    if pa.types.is_integer(arr.type):
        return pc.cast(arr, pa.int64())
    return pc.cast(arr, pa.string())


def _batches(path: Path, columns: LogColumns):
    """Yield record batches of the wanted columns; checks the header first."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise TransactionLogError(f"unsupported file type {path.suffix!r} for {path}; "
                                  "supported: " + ", ".join(SUPPORTED_SUFFIXES))
    if not path.is_file():
        raise TransactionLogError(f"transaction log not found: {path}")
    if path.stat().st_size == 0:
        raise TransactionLogError(f"transaction log is an empty file: {path}")
    wanted = columns.names()
    if suffix == ".csv":
        read = pa_csv.ReadOptions(block_size=_CSV_BLOCK_BYTES)
        header = pa_csv.open_csv(path, read_options=read).schema.names
        _check_header(header, wanted, path)
        convert = pa_csv.ConvertOptions(
            include_columns=wanted, column_types={c: pa.string() for c in wanted},
            strings_can_be_null=True)
        yield from pa_csv.open_csv(path, read_options=read, convert_options=convert)
    else:
        parquet = pq.ParquetFile(path)
        _check_header(parquet.schema_arrow.names, wanted, path)
        yield from parquet.iter_batches(batch_size=BATCH_ROWS, columns=wanted)


def _check_header(header: list[str], wanted: list[str], path: Path) -> None:
    missing = [c for c in wanted if c not in header]
    if missing:
        raise TransactionLogError(
            f"missing column(s) {', '.join(missing)} in {path}; found columns: "
            f"{', '.join(header) or '(none)'} (name them with --customer-column, --date-column, "
            "--amount-column, --order-column)")


def read_log(path: str | Path, columns: LogColumns | None = None) -> RawLog:
    """Read and validate a log chunk by chunk (module docstring).

    Raises
    ------
    TransactionLogError
        For a missing, empty or malformed file, a missing column or a bad value; the message
        names the file, the column and the row.
    """
    path, columns = Path(path), columns or LogColumns()
    ids, stamps, amounts, orders = [], [], [], []
    offset = 0
    try:
        for batch in _batches(path, columns):
            ids.append(_check_ids(batch.column(columns.customer_id), path,
                                  columns.customer_id, offset))
            stamps.append(_parse_dates(batch.column(columns.date), path, columns.date, offset))
            amounts.append(_parse_amount(batch.column(columns.amount), path, columns.amount,
                                         offset))
            if columns.order_id is not None:
                order = batch.column(columns.order_id)
                orders.append(order if pa.types.is_integer(order.type)
                              else pc.cast(order, pa.string()))
            offset += batch.num_rows
    except (pa.ArrowInvalid, OSError) as exc:  # unreadable CSV or Parquet
        kind = "CSV" if path.suffix.lower() == ".csv" else "Parquet"
        raise TransactionLogError(
            f"cannot read {path} as {kind} after row {offset}: {_one_line(exc)} (check quoting, "
            "the number of fields per line and the file type)") from None
    if offset == 0:
        raise TransactionLogError(f"transaction log has no rows: {path}")
    customer, id_index = _encode(ids)
    order = _encode(orders)[0] if columns.order_id is not None else None
    return RawLog(customer, id_index, np.concatenate(stamps), np.concatenate(amounts), order,
                  str(path), columns.order_id)


def _encode(arrays: list[pa.Array]) -> tuple[np.ndarray, pd.Index]:
    """Codes 0..k-1 into the sorted distinct values (integers when all of them are integers);
    nulls get -1."""
    if len({a.type for a in arrays}) > 1:
        arrays = [pc.cast(a, pa.string()) for a in arrays]
    chunked = pa.chunked_array(arrays)
    if pa.types.is_integer(chunked.type) and not chunked.null_count:
        uniq, codes = np.unique(chunked.to_numpy(), return_inverse=True)
        return codes.astype(np.int64), pd.Index(uniq)
    encoded = chunked.dictionary_encode()
    dictionary = encoded.chunk(0).dictionary
    indices = np.concatenate([
        np.asarray(c.indices.fill_null(-1).to_numpy(zero_copy_only=False), np.int64)
        for c in encoded.chunks])
    try:
        as_int = np.asarray(pc.cast(dictionary, pa.int64()).to_numpy(zero_copy_only=False))
        uniq, remap = np.unique(as_int, return_inverse=True)
    except pa.ArrowInvalid:
        order = np.asarray(pc.array_sort_indices(dictionary).to_numpy(zero_copy_only=False))
        remap = np.empty(order.size, np.int64)
        remap[order] = np.arange(order.size)
        uniq = np.asarray(dictionary.take(pa.array(order)).to_pylist(), dtype=object)
    remap = np.append(remap.astype(np.int64), -1)  # index -1 (null) stays -1
    return remap[indices], pd.Index(uniq)


# --------------------------------------------------------------------------------------------
# Cleaning and customer-days
# --------------------------------------------------------------------------------------------


def clean_log(raw: RawLog, keep_duplicates: bool = False) -> tuple[CustomerDays, CleaningReport]:
    """Apply the cleaning rules (module docstring) and merge rows into customer-days."""
    report = CleaningReport(rows_read=int(raw.customer.size), keep_duplicates=keep_duplicates,
                            order_column=raw.order_column)
    day = np.floor_divide(raw.timestamp, DAY_NS)
    key = _day_key(raw.customer, day)
    perm = np.argsort(key, kind="stable")  # file order within a customer-day
    key, customer, day = key[perm], raw.customer[perm], day[perm]
    stamp, amount = raw.timestamp[perm], raw.amount[perm].copy()
    order = raw.order[perm] if raw.order is not None else None
    del perm
    keep = np.ones(key.size, bool)
    if not keep_duplicates:
        _drop_duplicates(key, stamp, amount, order, keep, report)
    if order is None:
        negative = amount < 0
        report.negative_rows_dropped = int(negative.sum())
        keep &= ~negative
    else:
        _net_returns(customer, order, amount, keep, report)
    report.zero_amount_rows_kept = int(np.count_nonzero(keep & (amount == 0)))
    days = _merge(key[keep], customer[keep], day[keep], amount[keep], raw.ids)
    report.customer_days = int(days.customer.size)
    report.customers = int(np.unique(days.customer).size) if days.customer.size else 0
    return days, report


def _day_key(customer: np.ndarray, day: np.ndarray) -> np.ndarray:
    low = int(day.min()) if day.size else 0
    span = int(day.max()) - low + 1 if day.size else 1
    return customer.astype(np.int64) * span + (day - low)


def _drop_duplicates(key, stamp, amount, order, keep, report) -> None:
    """Exact duplicates share a customer-day, so only rows in multi-row customer-days are
    compared (the key is sorted)."""
    same = key[1:] == key[:-1]
    multi = np.zeros(key.size, bool)
    multi[1:] |= same
    multi[:-1] |= same
    rows = np.flatnonzero(multi)
    if rows.size == 0:
        return
    frame = {"key": key[rows], "stamp": stamp[rows], "amount": amount[rows]}
    if order is not None:
        frame["order"] = order[rows]
    duplicate = pd.DataFrame(frame).duplicated().to_numpy()
    keep[rows[duplicate]] = False
    report.duplicate_rows_dropped = int(duplicate.sum())


def _net_returns(customer, order, amount, keep, report) -> None:
    """Rule 2 with an order-id column; edits ``amount`` and ``keep`` in place. Rows are sorted by
    customer and day, so an order's first non-negative row in array order is its purchase."""
    negative = keep & (amount < 0)
    if not negative.any():
        return
    orphan = negative & (order < 0)
    pair = customer * (int(order.max()) + 1) + order
    matched = negative & ~orphan
    rows = np.flatnonzero(keep & (order >= 0) & np.isin(pair, np.unique(pair[matched])))
    group_keys, group = np.unique(pair[rows], return_inverse=True)
    values = amount[rows]
    net = np.bincount(group, weights=values, minlength=group_keys.size)
    gross = np.bincount(group, weights=np.maximum(values, 0.0), minlength=group_keys.size)
    purchase = values >= 0
    has_purchase = np.bincount(group, weights=purchase, minlength=group_keys.size) > 0
    returns = np.bincount(group, weights=~purchase, minlength=group_keys.size).astype(np.int64)
    kept_group = has_purchase & (net > 1e-9 * gross)
    keep[rows] = False
    keep[orphan] = False
    groups_bought, first = np.unique(group[purchase], return_index=True)
    first_row = rows[np.flatnonzero(purchase)[first]]
    survivors = kept_group[groups_bought]
    keep[first_row[survivors]] = True
    amount[first_row[survivors]] = net[groups_bought[survivors]]
    report.orders_netted = int(kept_group.sum())
    report.return_rows_netted = int(returns[kept_group].sum())
    report.refunded_orders_dropped = int((has_purchase & ~kept_group).sum())
    report.unmatched_return_rows_dropped = int(returns[~has_purchase].sum() + orphan.sum())


def _merge(key, customer, day, amount, ids) -> CustomerDays:
    """Sum the (sorted) rows of each customer-day."""
    if key.size == 0:
        return CustomerDays(customer, day, amount, ids)
    start = np.ones(key.size, bool)
    start[1:] = key[1:] != key[:-1]
    at = np.flatnonzero(start)
    total = np.add.reduceat(amount, at)
    # pandas sums groups with Kahan compensation, which differs from a plain sum from the third
    # term on: recompute those days the same way so summaries match envs.transactions exactly.
    size = np.diff(np.append(at, key.size))
    long = np.flatnonzero(size >= 3)
    if long.size:
        group = np.repeat(np.arange(at.size), size)
        rows = np.isin(group, long)
        total[long] = pd.Series(amount[rows]).groupby(group[rows], sort=True).sum().to_numpy()
    return CustomerDays(customer[at], day[at], total, ids)


def customer_days_from_frame(frame: pd.DataFrame) -> CustomerDays:
    """Customer-days of an in-memory ``customer_id, date, amount`` log (e.g. a simulated one);
    same-day rows are merged, nothing is dropped."""
    uniq, customer = np.unique(frame["customer_id"].to_numpy(), return_inverse=True)
    stamp = pd.to_datetime(frame["date"]).to_numpy("datetime64[ns]").view(np.int64)
    day = np.floor_divide(stamp, DAY_NS)
    key = _day_key(customer.astype(np.int64), day)
    perm = np.argsort(key, kind="stable")
    amount = frame["amount"].to_numpy(np.float64)
    return _merge(key[perm], customer[perm].astype(np.int64), day[perm], amount[perm],
                  pd.Index(uniq))


# --------------------------------------------------------------------------------------------
# Summaries and tracking curves
# --------------------------------------------------------------------------------------------


def _day_number(value: pd.Timestamp) -> int:
    return int((value.to_datetime64().astype("datetime64[ns]") - _EPOCH) // np.timedelta64(1, "D"))


def _timestamps(days: np.ndarray) -> np.ndarray:
    return (days.astype(np.int64) * DAY_NS).astype("datetime64[ns]")


def summarise_days(days: CustomerDays, calibration_end: pd.Timestamp,
                   holdout_end: pd.Timestamp) -> pd.DataFrame:
    """Per-customer calibration/holdout summary, the same table as
    :func:`envs.transactions.summarise` (columns ``x, t_x, T, x_holdout, monetary_value,
    first_purchase, birth_week``, indexed by ``customer_id``, cohort customers only).

    Raises
    ------
    TransactionLogError
        If ``calibration_end`` is before the first purchase or ``holdout_end`` before it.
    """
    if days.customer.size == 0:
        raise TransactionLogError("no purchases are left after cleaning the log")
    cal, hold = _day_number(calibration_end), _day_number(holdout_end)
    earliest = int(days.day.min())
    if cal < earliest:
        raise TransactionLogError(
            f"calibration_end {calibration_end.date()} is before the first purchase in the log "
            f"({pd.Timestamp(_timestamps(np.array([earliest]))[0]).date()})")
    if hold < cal:
        raise TransactionLogError(
            f"holdout_end {holdout_end.date()} is before calibration_end {calibration_end.date()}")
    start = days.starts()
    group = np.cumsum(start) - 1
    n = int(group[-1]) + 1
    first = days.day[start]
    repeat_cal = ~start & (days.day <= cal)
    x = np.bincount(group[repeat_cal], minlength=n)
    # The mean as pandas computes it (Kahan-compensated), as envs.transactions.summarise does.
    monetary = np.zeros(n)
    means = pd.Series(days.amount[repeat_cal]).groupby(group[repeat_cal], sort=True).mean()
    monetary[means.index.to_numpy()] = means.to_numpy()
    last = first.copy()
    rows = np.flatnonzero(repeat_cal)
    if rows.size:
        g = group[rows]
        final = np.ones(rows.size, bool)
        final[:-1] = g[1:] != g[:-1]
        last[g[final]] = days.day[rows[final]]
    holdout = (days.day > cal) & (days.day <= hold)
    x_hold = np.bincount(group[holdout], minlength=n)
    cohort = first <= cal
    index = days.ids[days.customer[start]][cohort]
    out = pd.DataFrame({
        "x": x[cohort].astype(np.int64),
        "t_x": (last - first)[cohort] / 7.0,
        "T": (cal - first)[cohort] / 7.0,
        "x_holdout": x_hold[cohort].astype(np.int64),
        "monetary_value": monetary[cohort],
        "first_purchase": _timestamps(first[cohort]),
        "birth_week": (first - earliest)[cohort] / 7.0,
    }, index=pd.Index(index, name="customer_id"))
    return out


def weekly_repeat_curves(days: CustomerDays, start: pd.Timestamp, end: pd.Timestamp,
                         groups: np.ndarray | None = None, n_groups: int = 1) -> np.ndarray:
    """Cumulative repeat transactions by week since ``start`` (the tracking plot), per group.

    Parameters
    ----------
    groups : numpy.ndarray of int, optional
        Group of each customer code (e.g. the simulation replicate); default all in group 0.

    Returns
    -------
    numpy.ndarray of int, shape (n_groups, floor((end - start) / 7 days) + 1)
        As :func:`envs.transactions.weekly_repeat_curve`, one row per group.
    """
    first, last = _day_number(start), _day_number(end)
    weeks = (last - first) // 7 + 1
    use = ~days.starts() & (days.day >= first) & (days.day <= last)
    week = (days.day[use] - first) // 7
    group = np.zeros(week.size, np.int64) if groups is None else groups[days.customer[use]]
    counts = np.bincount(group * weeks + week, minlength=n_groups * weeks)
    return np.cumsum(counts.reshape(n_groups, weeks), axis=1)

