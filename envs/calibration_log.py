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
   (Fader, Hardie & Lee 2005a), exactly as :func:`rapport.envs.transactions.summarise`.

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

from rapport.envs.customer_days import (
    DAY_NS,
    CustomerDays,
    _day_key,
    _merge,
    customer_days_from_frame,
    summarise_days,
    weekly_repeat_curves,
)
from rapport.envs.transactions import SUPPORTED_SUFFIXES, TransactionLogError

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

BATCH_ROWS = 1 << 20
"""Rows per Parquet batch; CSV blocks are 16 MiB of text."""
_CSV_BLOCK_BYTES = 16 << 20


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
            problem = f"{'NaN' if np.isnan(values[i]) else 'infinite'} amount {raw[i].as_py()}"
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


class _Retry(Exception):
    """A typed CSV pass met a value its types cannot hold: read again with fewer types."""


_CSV_MODES = ("int", "str", "text")
"""CSV passes, fastest first: ids and order ids as integers, dates as timestamps and amounts
as floats parsed by the CSV reader; then ids as text; then everything as text (each bad value
then gets its own message with its row)."""


def _csv_types(columns: LogColumns, mode: str) -> dict[str, pa.DataType]:
    if mode == "text":
        return {c: pa.string() for c in columns.names()}
    ident = pa.int64() if mode == "int" else pa.string()
    types = {columns.customer_id: ident, columns.date: pa.timestamp("ns"),
             columns.amount: pa.float64()}
    if columns.order_id is not None:
        types[columns.order_id] = ident
    return types


def _batches(path: Path, columns: LogColumns, mode: str = "text"):
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
            include_columns=wanted, column_types=_csv_types(columns, mode),
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
    for mode in _CSV_MODES if path.suffix.lower() == ".csv" else ("text",):
        try:
            return _read(path, columns, mode)
        except _Retry:
            continue
    raise AssertionError("the text pass never retries")  # pragma: no cover


def _read(path: Path, columns: LogColumns, mode: str) -> RawLog:
    ids, stamps, amounts, orders = [], [], [], []
    offset = 0
    try:
        for batch in _batches(path, columns, mode):
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
        if mode != "text" and isinstance(exc, pa.ArrowInvalid):
            raise _Retry from None
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
    report.customers = int(np.count_nonzero(days.starts()))
    return days, report


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
    matched = negative & ~orphan
    # Rows of orders with a return (by order id; the customer is matched through ``pair``).
    has_return = np.zeros(int(order.max()) + 2, bool)
    has_return[order[matched]] = True
    rows = np.flatnonzero(keep & has_return[order])  # order -1 indexes the False sentinel
    pair = customer[rows] * (int(order.max()) + 1) + order[rows]
    # The same order id under another customer without a return is not this order: leave it.
    with_return = np.unique(pair[amount[rows] < 0])
    in_play = np.isin(pair, with_return)
    rows, pair = rows[in_play], pair[in_play]
    group_keys, group = np.unique(pair, return_inverse=True)
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
