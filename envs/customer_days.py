"""Customer-days: a transaction log as sorted arrays, its RFM summary and tracking curves.

Following Fader, Hardie & Lee (2005a), a *transaction* is one customer-day: rows of the same
customer on the same day are merged and their amounts summed. These functions compute the same
table as :func:`rapport.envs.transactions.summarise` and :func:`rapport.envs.transactions.weekly_repeat_curve`
(bit for bit: group sums and means use pandas' compensated summation), from numpy arrays, so
that a 10^7-row log and a simulated log of millions of customers are summarised by one code
path in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rapport.envs.transactions import TransactionLogError

__all__ = [
    "DAY_NS",
    "CustomerDays",
    "customer_days_from_frame",
    "summarise_days",
    "weekly_repeat_curves",
]

DAY_NS = 86_400 * 10**9
_EPOCH = np.datetime64(0, "ns")


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
        """``customer_id, date, amount`` as :func:`rapport.envs.transactions.load_transactions` returns."""
        return pd.DataFrame({
            "customer_id": self.ids[self.customer],
            "date": (self.day * DAY_NS).astype("datetime64[ns]"),
            "amount": self.amount,
        })


def _day_key(customer: np.ndarray, day: np.ndarray) -> np.ndarray:
    low = int(day.min()) if day.size else 0
    span = int(day.max()) - low + 1 if day.size else 1
    return customer.astype(np.int64) * span + (day - low)



def _merge(key, customer, day, amount, ids) -> CustomerDays:
    """Sum the (sorted) rows of each customer-day."""
    if key.size == 0:
        return CustomerDays(customer, day, amount, ids)
    start = np.ones(key.size, bool)
    start[1:] = key[1:] != key[:-1]
    at = np.flatnonzero(start)
    total = np.add.reduceat(amount, at)
    # pandas sums groups with Kahan compensation, which differs from a plain sum from the third
    # term on: recompute those days the same way so summaries match rapport.envs.transactions exactly.
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
    :func:`rapport.envs.transactions.summarise` (columns ``x, t_x, T, x_holdout, monetary_value,
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
    # The mean as pandas computes it (Kahan-compensated), as rapport.envs.transactions.summarise does.
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
        As :func:`rapport.envs.transactions.weekly_repeat_curve`, one row per group.
    """
    first, last = _day_number(start), _day_number(end)
    weeks = (last - first) // 7 + 1
    use = ~days.starts() & (days.day >= first) & (days.day <= last)
    week = (days.day[use] - first) // 7
    group = np.zeros(week.size, np.int64) if groups is None else groups[days.customer[use]]
    counts = np.bincount(group * weeks + week, minlength=n_groups * weeks)
    return np.cumsum(counts.reshape(n_groups, weeks), axis=1)

