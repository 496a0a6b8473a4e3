"""What a policy does, per segment: contacts by channel, offers by type, media spend and profit
by lifecycle stage and by value decile.

API::

    ev = evaluate(policies, settings)          # books the segments of every rollout
    table = segments_table(ev.segments)        # policy × (segment_kind, segment), per customer
    tag = segments_tag(table, "linucb")        # the agent's rows, for the policy card

Two kinds of segment, both booked per customer-week of the evaluation cohort (the same weeks
the KPIs count: until the horizon or until the customer became unreachable):

``stage``
    The customer's lifecycle stage at the week's decision (``new`` … ``reactivated``), so one
    customer moves between stage segments over the horizon.
``value_decile``
    Fixed per customer at the start of the evaluation (week 0, after reset): the decile of the
    customer's expected remaining value without marketing, from latent truth — the evaluation's
    own value definition, :func:`rapport.envs.value.residual_value` at the evaluation's weekly
    discount. Customers who have not bought yet (prospects) form the segment ``prospect``; the
    others are ranked by that value (ties by row index) and cut into 10 equal-count deciles,
    ``D1`` (lowest value) … ``D10`` (highest). Ranks span the whole population, so a sharded
    evaluation gathers every shard's start values before it cuts (see
    :mod:`rapport.experiments.sharding`).

Columns (:func:`segment_columns`), each a sum over the segment's customer-weeks:
``customers`` (cohort customers in the segment at the start; value deciles only), ``weeks``,
``contacts``, ``contacts_<channel>`` for each of :data:`rapport.envs.CHANNELS`,
``offers_<offer>`` for each of the env's ``offer_names`` (``offers_none``: contacted with no
offer, so the offer columns sum to ``contacts`` and all but ``offers_none`` sum to the KPI
``offers``), ``media_cost`` and ``profit``. Within one kind the segments sum to the policy's
KPIs (``kpi/contacts_per_customer``, ``kpi/contacts_<channel>_per_customer``,
``kpi/offers_per_customer``, ``kpi/media_cost_per_customer``, ``kpi/profit_per_customer``,
and the active customer-weeks ``Σ kpi/weeks_<stage>_per_customer``).

Sums are kept per evaluation block and segment (``np.bincount``, in row order), so a sharded
rollout, whose shards hold whole blocks, gives the same array bit for bit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

import rapport.envs as envs
from rapport.envs.observation import STAGES
from rapport.envs.value import residual_value

SEGMENT_KINDS = ("stage", "value_decile")
N_DECILES = 10
VALUE_SEGMENTS: tuple[str, ...] = ("prospect", *(f"D{i}" for i in range(1, N_DECILES + 1)))
"""Value segments in id order: 0 = prospect, i = decile Di (1 lowest value … 10 highest)."""
SEGMENTS: tuple[tuple[str, str], ...] = (tuple(("stage", s) for s in STAGES)
                                         + tuple(("value_decile", s) for s in VALUE_SEGMENTS))
"""(segment_kind, segment) of every booked segment, in the order of :class:`SegmentLedger`'s axis 1."""
SEGMENTS_TAG = "rapport.segments"
"""MLflow run tag holding the agent's segment table (JSON, :func:`segments_tag`) for the policy card."""
TAG_LIMIT = 8000  # MLflow's longest tag value
VALUE_DECILE_DEFINITION = (
    "value decile = decile of the customer's expected remaining value without marketing at the "
    "start of the evaluation, from latent truth (the evaluation's own value definition, "
    "residual_value at the evaluation's discount); D1 lowest, D10 highest, equal counts; "
    "customers who have not bought yet form 'prospect'")


def segment_columns(offer_names: Sequence[str]) -> tuple[str, ...]:
    """Columns of the segment sums for an env whose offers are ``offer_names``."""
    return ("customers", "weeks", "contacts", *(f"contacts_{ch}" for ch in envs.CHANNELS),
            *(f"offers_{o}" for o in offer_names), "media_cost", "profit")


def value_segments(value: np.ndarray, prospect: np.ndarray) -> np.ndarray:
    """(n,) int64 id into :data:`VALUE_SEGMENTS`: 0 for prospects, else 1 + the decile of
    ``value`` among the non-prospects (rank by value, ties by row index; counts differ by at
    most one)."""
    segment = np.zeros(len(value), np.int64)
    rest = np.flatnonzero(~np.asarray(prospect, bool))
    order = rest[np.argsort(value[rest], kind="stable")]
    segment[order] = 1 + (np.arange(len(order)) * N_DECILES) // max(len(order), 1)
    return segment


def start_values(env: envs.PopulationEnv, weekly_discount: float) -> tuple[np.ndarray, np.ndarray]:
    """Residual value (latent truth, no marketing) and prospect flag of every row, read right
    after ``env.reset``: what :func:`value_segments` ranks."""
    state = env.sim.state
    value = residual_value(env.scenario, state, None, weekly_discount)
    prospect = state.prospect.copy() if state.prospect.size else np.zeros(env.num_envs, bool)
    return value, prospect


class SegmentLedger:
    """Segment sums of a population (or a shard's whole blocks of it), booked week by week.

    :param block_counts: (n_blocks,) customers in each consecutive evaluation block of the rows
    :param value_segment: (n,) id into :data:`VALUE_SEGMENTS` of each row, fixed at the start
    :param offer_names: the env's offer names (offer index → name)
    """

    def __init__(self, block_counts: np.ndarray, value_segment: np.ndarray, offer_names: Sequence[str]):
        self.n_blocks, n_seg = len(block_counts), len(SEGMENTS)
        self.columns = segment_columns(offer_names)
        self.n_offers, self.first_offer = len(offer_names), f"offers_{offer_names[0]}"
        self.col = {c: i for i, c in enumerate(self.columns)}
        self.sums = np.zeros((self.n_blocks, n_seg, len(self.columns)))
        self.base = np.repeat(np.arange(self.n_blocks, dtype=np.int64) * n_seg, block_counts)
        self.value_id = self.base + len(STAGES) + np.asarray(value_segment, np.int64)
        self.sums[..., self.col["customers"]] = self._count(self.value_id, None)

    def _count(self, ids: np.ndarray, weights: np.ndarray | None, width: int = 1) -> np.ndarray:
        shape = (self.n_blocks, len(SEGMENTS)) + ((width,) if width > 1 else ())
        return np.bincount(ids, weights, minlength=int(np.prod(shape))).reshape(shape)

    def add_week(self, stage: np.ndarray, active: np.ndarray, profit: np.ndarray, info: Mapping[str, Any]) -> None:
        """Book one week: ``stage`` (n,) at the decision, ``active`` (n,) rows still counted
        before this week's terminations, ``profit`` (n,) the week's profit (0 where inactive)."""
        channel, offer = info["channel"], info["offer"]
        contacted = active & (channel > 0)
        weeks, media = active.astype(np.float64), np.where(active, info["media_cost"], 0.0)
        channel_of = channel[contacted].astype(np.int64) - 1
        offer_of = offer[contacted].astype(np.int64)
        n_ch, c, s = len(envs.CHANNELS), self.col, self.sums
        first_ch, first_off = c[f"contacts_{envs.CHANNELS[0]}"], c[self.first_offer]
        for ids in (self.base + stage, self.value_id):
            s[..., c["weeks"]] += self._count(ids, weeks)
            booked = ids[contacted]
            by_channel = self._count(booked * n_ch + channel_of, None, n_ch)
            s[..., first_ch:first_ch + n_ch] += by_channel
            s[..., c["contacts"]] += by_channel.sum(axis=-1)
            s[..., first_off:first_off + self.n_offers] += self._count(
                booked * self.n_offers + offer_of, None, self.n_offers)
            s[..., c["media_cost"]] += self._count(ids, media)
            s[..., c["profit"]] += self._count(ids, profit)

def segment_frame(name: str, role: str, seed: int, sums: np.ndarray, columns: Sequence[str],
                  customers: int) -> pd.DataFrame:
    """One policy × population's rows of :attr:`~rapport.experiments.evaluation.Evaluation.segments`:
    ``policy, role, seed, segment_kind, segment, population`` + the segment sums of ``sums``
    (n_blocks, len(SEGMENTS), len(columns)) over all blocks."""
    df = pd.DataFrame(sums.sum(axis=0), columns=list(columns))
    df.insert(0, "population", customers)
    df.insert(0, "segment", [seg for _, seg in SEGMENTS])
    df.insert(0, "segment_kind", [kind for kind, _ in SEGMENTS])
    df.insert(0, "seed", seed)
    df.insert(0, "role", role)
    df.insert(0, "policy", name)
    return df


def segments_table(segments: pd.DataFrame) -> pd.DataFrame:
    """Per policy and segment, each column per customer of the population, averaged over the
    evaluation populations as the KPI means are (Σ sums / Σ customers), plus ``contact_rate``
    (contacts / weeks: the share of the segment's customer-weeks with a contact). Rows
    (policy, segment_kind, segment) in evaluation, kind and segment order; ``customers`` is the
    segment's share of the cohort (value deciles; NaN for stages, which customers move through)."""
    keys = ["policy", "segment_kind", "segment"]
    values = [c for c in segments.columns if c not in (*keys, "role", "seed", "population")]
    grouped = segments.groupby(keys, sort=False)
    table = grouped[values].sum().div(grouped["population"].sum(), axis=0).reset_index()
    table.loc[table.segment_kind == "stage", "customers"] = np.nan
    table["contact_rate"] = table.contacts / table.weeks.where(table.weeks > 0)
    return table


def segments_tag(table: pd.DataFrame, policy: str, digits: int = 8) -> str | None:
    """``policy``'s rows of :func:`segments_table` as compact JSON for :data:`SEGMENTS_TAG`
    (``digits`` significant digits; fewer if it would not fit a tag, None if nothing fits)."""
    sub = table[table.policy == policy]
    columns = [c for c in sub.columns if c != "policy"]
    for d in (digits, 5, 3):
        rows = [[r[0], r[1], *(None if isinstance(v, float) and math.isnan(v) else float(f"{v:.{d}g}")
                               for v in r[2:])]
                for r in sub[columns].itertuples(index=False)]
        text = json.dumps({"policy": policy, "columns": columns, "rows": rows}, separators=(",", ":"))
        if len(text) <= TAG_LIMIT:
            return text
    return None


def rows_from_tag(text: str | None) -> list[dict[str, Any]]:
    """The rows of a :func:`segments_tag` as dicts (column → value); [] for a missing or bad tag."""
    try:
        data = json.loads(text) if text else {}
        return [dict(zip(data["columns"], row, strict=True)) for row in data.get("rows", [])]
    except (ValueError, KeyError, TypeError):
        return []
