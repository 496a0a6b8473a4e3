"""Paired evaluation of policies on common random numbers, with bootstrap intervals.

Every policy is run on the same evaluation populations (same seed → same customers, same noise
for the same customer, week and mechanism), so differences between policies are measured
customer by customer and the noise that both share cancels.

API::

    settings = EvalSettings(scenario, customers=20_000, horizon=52, seeds=(11, 12, 13))
    ev = evaluate({"mass": mass_factory, "do_nothing": do_nothing_factory, "oracle": oracle_factory},
                  settings, roles={"do_nothing": "baseline", "oracle": "oracle"})
    s = summarize(ev, baseline="do_nothing", oracle="oracle", n_boot=1000, confidence=0.95)
    s.kpis            # policy, role, key, mean, ci_low, ci_high
    s.diffs           # paired difference policy − baseline, with paired and independent CIs
    s.regret          # oracle − policy on profit and lifetime value (paired)
    s.short_vs_long   # pairs whose short-term and long-term verdicts disagree
    s.metrics("mass") # flat {metric key: value} for a tracker (keys in experiments/GLOSSARY.md)
    segments_table(ev.segments)  # per lifecycle stage and value decile (experiments/segments.py)

A policy is given as an object with ``act`` (reused on every population) or as a factory
``env -> Policy`` (built per population: the oracle reads that env's latent truth).

What is measured, per customer of the starting cohort (one row of the population each), over
the weeks until the horizon or until the customer has opted out of every channel (their
episode ends; the row's replacement customer is not counted): see :data:`KPIS`. Customers are
summed in ``blocks`` contiguous blocks per population; blocks are the bootstrap units,
resampled within each population (stratified bootstrap of a ratio of sums, which equals the
per-customer mean). Because every customer is independent, block sums lose nothing for means,
and they are what a run stores so that runs can be paired later (``rapport-compare``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

import rapport.envs as envs
from rapport.envs.observation import FEATURE_NAMES, STAGES
from rapport.envs.value import residual_value
from rapport.experiments.progress import bar
from rapport.experiments.segments import SegmentLedger, segment_frame, start_values, value_segments

ROLES = ("agent", "baseline", "oracle", "long_term_oracle", "policy")


def _kpi_table() -> list[tuple[str, str, str]]:
    rows = [
        ("profit", "kpi/profit_per_customer", "Profit per customer over the horizon: net revenue (incl. subscription fees) − cost of goods − contact, gesture and per-person media costs − each customer's share of the mass-media budget ($)."),
        ("revenue", "kpi/revenue_per_customer", "Net revenue (after discounts) per customer over the horizon ($)."),
        ("orders", "kpi/orders_per_customer", "Orders per customer over the horizon."),
        ("contact_cost", "kpi/contact_cost_per_customer", "Contact costs per customer, all channels, service gestures included ($)."),
        ("discount_cost", "kpi/discount_cost_per_customer", "Margin given away in discounts per customer ($)."),
        ("media_cost", "kpi/media_cost_per_customer", "Per-person paid-media spend per customer ($)."),
        ("mass_media_cost", "kpi/mass_media_cost_per_customer", "Each customer's share of the mass-media (brand) budget ($; 0 without a mass-media schedule)."),
        ("conversions", "kpi/conversions_per_customer", "First purchases by prospects per customer of the population (0 without prospects)."),
        ("offers", "kpi/offers_per_customer", "Delivered offers (discounts, recommendations, gestures) per customer."),
        ("opt_outs", "kpi/opt_outs_per_customer", "Channel opt-outs per customer (a customer can opt out of several channels)."),
    ]
    rows.append(("contacts", "kpi/contacts_per_customer", "Delivered contacts per customer, all channels."))
    for ch in envs.CHANNELS:
        rows.append((f"contacts_{ch}", f"kpi/contacts_{ch}_per_customer", f"Delivered {ch} contacts per customer."))
    for ch in envs.CHANNELS:
        rows.append((f"contact_cost_{ch}", f"kpi/contact_cost_{ch}_per_customer",
                     f"Cost of {ch} contacts (and gestures they carried) per customer ($)."))
    for st in STAGES:
        rows.append((f"profit_from_{st}", f"kpi/profit_from_{st}_per_customer",
                     f"Profit earned in weeks when the customer was in lifecycle stage '{st}' (at the "
                     "week's decision), per customer of the population; the stages sum to profit ($)."))
    for st in STAGES:
        rows += [
            (f"weeks_{st}", f"kpi/weeks_{st}_per_customer",
             f"Weeks the customer spent in lifecycle stage '{st}' (at the week's decision), per customer "
             "of the population; the stages sum to the weeks a customer was active."),
            (f"contacts_{st}", f"kpi/contacts_{st}_per_customer",
             f"Delivered contacts (all channels) in weeks when the customer was '{st}', per customer; "
             "the stages sum to contacts. Divided by weeks_" + st + ": the share of such weeks with a contact."),
            (f"offers_{st}", f"kpi/offers_{st}_per_customer",
             f"Delivered offers in weeks when the customer was '{st}', per customer; the stages sum to offers."),
            (f"media_cost_{st}", f"kpi/media_cost_{st}_per_customer",
             f"Per-person paid-media spend in weeks when the customer was '{st}', per customer ($); the "
             "stages sum to media_cost."),
        ]
    rows += [
        ("short_term_profit", "kpi/short_term_profit_per_customer", "Profit in the first `evaluation.short_term_weeks` weeks (default: this week) per customer ($)."),
        ("discounted_profit", "kpi/discounted_profit_per_customer", "Profit over the horizon discounted at `evaluation.annual_discount_rate` ($)."),
        ("residual_clv", "kpi/residual_clv_per_customer", "Customer lifetime value left at the customer's last simulated week (the horizon, or the week they became unreachable): expected discounted future profit from latent truth (alive, purchase rate, drop-out or churn probability, spend, subscription fee) without further marketing, discounted to week 0; prospects count 0 ($)."),
        ("lifetime_value", "kpi/lifetime_value_per_customer", "Long-term value: discounted profit over the horizon + residual CLV at the horizon ($)."),
        ("churned", "kpi/churned_share", "Share of customers who (latently) dropped out during the horizon."),
        ("unreachable", "kpi/unreachable_share", "Share of customers who opted out of every channel (their episode ended early)."),
    ]
    return rows


KPIS: tuple[tuple[str, str, str], ...] = tuple(_kpi_table())
"""(column, metric key, meaning) of every per-customer quantity an evaluation measures."""
KPI_COLUMNS: tuple[str, ...] = tuple(c for c, _, _ in KPIS)
KPI_KEY: dict[str, str] = {c: k for c, k, _ in KPIS}
_COL = {c: i for i, c in enumerate(KPI_COLUMNS)}
_STAGE_COLS = [FEATURE_NAMES.index(f"stage_{s}") for s in STAGES]

REGRET_COLUMNS = ("profit", "lifetime_value", "short_term_profit")
"""Quantities on which regret is reported: against the long-term oracle for lifetime value
when one was evaluated, otherwise (and always for profit) against the myopic oracle."""


@dataclass(frozen=True)
class EvalSettings:
    """Which populations every policy meets and how value is counted."""

    scenario: envs.Scenario
    customers: int
    horizon: int
    seeds: tuple[int, ...]
    blocks: int = 200
    annual_discount_rate: float = 0.10
    short_term_weeks: int = 1
    use_action_mask: bool = True
    policy_seed: int = 0
    """Seeds the generators handed to ``policy.act`` (with each population's seed)."""

    def __post_init__(self) -> None:
        if self.customers < 1 or self.horizon < 1 or not self.seeds:
            raise ValueError("EvalSettings needs customers >= 1, horizon >= 1 and at least one seed")

    @property
    def n_blocks(self) -> int:
        return min(self.blocks, self.customers)

    @property
    def weekly_discount(self) -> float:
        return (1.0 + self.annual_discount_rate) ** (-1.0 / 52.0)

    def fingerprint(self) -> str:
        """Hash of everything except the seeds: runs pair only when this matches."""
        payload = {"scenario": self.scenario.to_dict(), "customers": self.customers, "horizon": self.horizon,
                   "blocks": self.n_blocks, "rate": self.annual_discount_rate,
                   "short": self.short_term_weeks, "mask": self.use_action_mask}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def residual_clv(env: envs.PopulationEnv, rows: np.ndarray, weekly_discount: float) -> np.ndarray:
    """Expected discounted future profit of ``rows`` from now on, from latent truth, no marketing
    (:func:`rapport.envs.value.residual_value`, the same value training gets as its terminal reward)."""
    return residual_value(env.scenario, env.sim.state, rows, weekly_discount)


@dataclass
class Rollout:
    """One policy on one population: per-customer quantities and the weekly profit curve."""

    values: np.ndarray
    """(customers, len(KPI_COLUMNS)) float64, columns :data:`KPI_COLUMNS`."""
    weekly_profit: np.ndarray
    """(horizon,) profit per customer of the cohort in each week."""
    segments: np.ndarray | None = None
    """(n_blocks, len(segments.SEGMENTS), len(segment_columns)) segment sums per evaluation block."""
    segment_columns: tuple[str, ...] = ()


class CustomerLedger:
    """Per-customer KPI values of a population (or a shard's slice of it), booked week by week.

    The one place evaluation accounting lives: :func:`rollout` and the Ray shards of
    :mod:`rapport.experiments.sharding` both book through it, so sharded results stay bit-identical.
    Per-segment sums (stage, value decile: :mod:`rapport.experiments.segments`) are booked into
    ``segments`` once the value segments are known (:meth:`start_segments`).
    """

    def __init__(self, n: int, settings: EvalSettings):
        self.v = np.zeros((len(KPI_COLUMNS), n))
        self.active = np.ones(n, bool)
        self.settings = settings
        self.discount = settings.weekly_discount
        self.segments: SegmentLedger | None = None

    def start_segments(self, block_counts: np.ndarray, value_segment: np.ndarray,
                       offer_names: Sequence[str]) -> None:
        """Book segment sums from now on; ``value_segment``: each row's value segment at week 0."""
        self.segments = SegmentLedger(block_counts, value_segment, offer_names)

    def add_week(self, t: int, env: envs.PopulationEnv, stage: np.ndarray, reward: np.ndarray,
                 terminated: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        v, active, discount = self.v, self.active, self.discount
        profit = np.where(active, reward.astype(np.float64), 0.0)
        v[_COL["profit"]] += profit
        for name in ("revenue", "orders", "contact_cost", "discount_cost", "media_cost",
                     "mass_media_cost"):
            v[_COL[name]] += np.where(active, info[name], 0.0)
        v[_COL["conversions"]] += active & info["converted"]
        channel = info["channel"]
        v[_COL["offers"]] += active & (info["offer"] > 0) & (channel > 0)
        v[_COL["opt_outs"]] += np.where(active, info["opted_out"], 0)
        v[_COL["contacts"]] += active & (channel > 0)
        for j, ch in enumerate(envs.CHANNELS, start=1):
            on = active & (channel == j)
            v[_COL[f"contacts_{ch}"]] += on
            v[_COL[f"contact_cost_{ch}"]] += np.where(on, info["contact_cost"], 0.0)
        contacted, offered = active & (channel > 0), active & (info["offer"] > 0) & (channel > 0)
        for k, st in enumerate(STAGES):
            here = stage == k
            v[_COL[f"profit_from_{st}"]] += np.where(here, profit, 0.0)
            v[_COL[f"weeks_{st}"]] += active & here
            v[_COL[f"contacts_{st}"]] += contacted & here
            v[_COL[f"offers_{st}"]] += offered & here
            v[_COL[f"media_cost_{st}"]] += np.where(active & here, info["media_cost"], 0.0)
        if self.segments is not None:
            self.segments.add_week(stage, active, profit, info)
        if t < self.settings.short_term_weeks:
            v[_COL["short_term_profit"]] += profit
        v[_COL["discounted_profit"]] += discount ** (t + 1) * profit
        v[_COL["churned"]] += active & info["latent"]["dropped_out"]
        ended = active & terminated
        if ended.any():
            rows = np.flatnonzero(ended)
            v[_COL["residual_clv"], rows] = discount ** (t + 1) * residual_clv(env, rows, discount)
            v[_COL["unreachable"], rows] = 1.0
            active &= ~terminated
        return profit

    def finish(self, env: envs.PopulationEnv) -> np.ndarray:
        """(rows, len(KPI_COLUMNS)) values after the horizon."""
        v, H = self.v, self.settings.horizon
        rows = np.flatnonzero(self.active)
        v[_COL["residual_clv"], rows] = self.discount ** H * residual_clv(env, rows, self.discount)
        v[_COL["lifetime_value"]] = v[_COL["discounted_profit"]] + v[_COL["residual_clv"]]
        return v.T.copy()


def _as_policy(policy_or_factory: Any, env: envs.PopulationEnv) -> Any:
    return policy_or_factory if hasattr(policy_or_factory, "act") else policy_or_factory(env)


def rollout(policy_or_factory: Any, settings: EvalSettings, seed: int, *,
            rng: np.random.Generator | None = None, on_week: Callable[[], None] | None = None) -> Rollout:
    """Run one policy for ``settings.horizon`` weeks on the population of ``seed``."""
    env = envs.PopulationEnv(num_envs=settings.customers, scenario=settings.scenario,
                             horizon=settings.horizon, include_latent=True)
    policy = _as_policy(policy_or_factory, env)
    rng = rng if rng is not None else np.random.default_rng([settings.policy_seed, seed])
    n, H = settings.customers, settings.horizon
    ledger = CustomerLedger(n, settings)
    weekly = np.zeros(H)
    obs, info = env.reset(seed=seed)
    ledger.start_segments(block_counts(n, settings.n_blocks),
                          value_segments(*start_values(env, settings.weekly_discount)), env.offer_names)
    for t in range(H):
        mask = info["action_mask"] if settings.use_action_mask else None
        actions, _ = policy.act(obs, rng, action_mask=mask)
        stage = np.argmax(obs[:, _STAGE_COLS], axis=1)
        obs, reward, terminated, _, info = env.step(actions)
        profit = ledger.add_week(t, env, stage, reward, terminated, info)
        weekly[t] = profit.sum() / n
        if on_week is not None:
            on_week()
    return Rollout(ledger.finish(env), weekly, ledger.segments.sums, ledger.segments.columns)


def result_frames(name: str, role: str, seed: int, sums: np.ndarray, counts: np.ndarray,
                  weekly_profit: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One policy × population's rows of :attr:`Evaluation.blocks` and :attr:`Evaluation.weekly`."""
    df = pd.DataFrame(sums, columns=list(KPI_COLUMNS))
    df.insert(0, "customers", counts)
    df.insert(0, "block", np.arange(len(counts)))
    df.insert(0, "seed", seed)
    df.insert(0, "role", role)
    df.insert(0, "policy", name)
    weekly = pd.DataFrame({"policy": name, "role": role, "seed": seed,
                           "week": np.arange(1, len(weekly_profit) + 1),
                           "profit_per_customer": weekly_profit})
    return df, weekly


def block_counts(n: int, n_blocks: int) -> np.ndarray:
    """(n_blocks,) customers in each contiguous evaluation block of ``n`` customers."""
    counts = np.full(n_blocks, n // n_blocks, np.int64)
    counts[: n % n_blocks] += 1  # sizes as np.array_split: differ by at most one
    return counts


def block_sums(values: np.ndarray, n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """Sums (n_blocks, k) of contiguous customer blocks and their sizes (n_blocks,)."""
    counts = block_counts(values.shape[0], n_blocks)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.add.reduceat(values, starts, axis=0), counts


@dataclass
class Evaluation:
    """Block sums and weekly curves of several policies on the same populations."""

    blocks: pd.DataFrame
    """One row per (policy, seed, block): ``policy, role, seed, block, customers`` + KPI sums."""
    weekly: pd.DataFrame
    """One row per (policy, seed, week): ``policy, role, seed, week, profit_per_customer``."""
    settings: EvalSettings | None = None
    segments: pd.DataFrame | None = None
    """One row per (policy, seed, segment_kind, segment): sums over the population's customers
    (:func:`rapport.experiments.segments.segment_frame`; per customer: ``segments_table``)."""


def evaluate(policies: Mapping[str, Any], settings: EvalSettings, *, roles: Mapping[str, str] | None = None,
             progress: bool = False) -> Evaluation:
    """Run every policy on every population of ``settings.seeds`` (common random numbers)."""
    roles = dict(roles or {})
    block_rows, weekly_rows, segment_rows = [], [], []
    total = len(policies) * len(settings.seeds) * settings.horizon
    with bar(total, desc="evaluate", unit="week", enabled=progress) as pbar:
        for name, pol in policies.items():
            role = roles.get(name, "policy")
            if role not in ROLES:
                raise ValueError(f"role of {name!r} must be one of {ROLES}, got {role!r}")
            for seed in settings.seeds:
                r = rollout(pol, settings, seed, on_week=lambda: pbar.update(1))
                sums, counts = block_sums(r.values, settings.n_blocks)
                blocks, weekly = result_frames(name, role, seed, sums, counts, r.weekly_profit)
                block_rows.append(blocks)
                weekly_rows.append(weekly)
                segment_rows.append(segment_frame(name, role, seed, r.segments, r.segment_columns,
                                                  settings.customers))
    return Evaluation(pd.concat(block_rows, ignore_index=True), pd.concat(weekly_rows, ignore_index=True),
                      settings, pd.concat(segment_rows, ignore_index=True))


# ---------------------------------------------------------------------------- bootstrap
def bootstrap_weights(strata: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, U) resample counts of U units, resampled with replacement within each stratum."""
    U = len(strata)
    W = np.zeros((n_boot, U))
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        m = len(idx)
        draws = rng.integers(0, m, size=(n_boot, m))
        counts = np.zeros((n_boot, m))
        np.add.at(counts, (np.repeat(np.arange(n_boot), m), draws.ravel()), 1.0)
        W[:, idx] = counts
    return W


def _percentile_ci(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = 1.0 - confidence
    lo, hi = np.quantile(samples, [alpha / 2, 1 - alpha / 2], axis=0)
    return lo, hi


@dataclass
class Summary:
    """Point estimates and intervals of one evaluation (frames described in the module doc)."""

    kpis: pd.DataFrame
    diffs: pd.DataFrame
    regret: pd.DataFrame
    short_vs_long: pd.DataFrame
    kendall_tau: float
    baseline: str | None
    oracle: str | None
    confidence: float
    units: int
    seeds: tuple[int, ...]
    roles: dict[str, str] = field(default_factory=dict)
    long_term_oracle: str | None = None

    def metrics(self, policy: str) -> dict[str, float]:
        """Flat metrics of ``policy`` under the glossary's keys."""
        out: dict[str, float] = {}
        for r in self.kpis[self.kpis.policy == policy].itertuples():
            out[r.key] = r.mean
            out[f"{r.key}/ci_low"] = r.ci_low
            out[f"{r.key}/ci_high"] = r.ci_high
        for r in self.diffs[self.diffs.policy == policy].itertuples():
            k = r.key.replace("kpi/", "baseline_diff/")
            out[k] = r.diff
            out[f"{k}/ci_low"], out[f"{k}/ci_high"] = r.ci_low, r.ci_high
            out[f"{k}/ci_low_independent"] = r.indep_ci_low
            out[f"{k}/ci_high_independent"] = r.indep_ci_high
        for r in self.regret[self.regret.policy == policy].itertuples():
            k = r.key.replace("kpi/", "regret/")
            out[k] = r.regret
            out[f"{k}/ci_low"], out[f"{k}/ci_high"] = r.ci_low, r.ci_high
        if self.baseline is not None and policy != self.baseline and len(self.short_vs_long):
            row = self.short_vs_long[(self.short_vs_long.policy == policy)
                                     & (self.short_vs_long.versus == self.baseline)]
            if len(row):
                out["short_vs_long/disagrees_with_baseline"] = float(row.disagree.iloc[0])
        if not math.isnan(self.kendall_tau):
            out["short_vs_long/kendall_tau"] = self.kendall_tau
        return out


def segment_table(summary: Summary) -> pd.DataFrame:
    """What each policy does by lifecycle stage: per customer of the population, the weeks spent
    in the stage and the contacts, offers and media spend delivered in them, plus the share of
    those weeks with a contact (``contact_rate``). Rows: (policy, stage); the stages of each
    column sum to the policy's total (``kpi/contacts_per_customer`` etc.). The fuller breakdown,
    also by value decile, channel and offer type: :func:`rapport.experiments.segments.segments_table`."""
    means = summary.kpis.set_index(["policy", "key"])["mean"]
    rows = []
    for p in dict.fromkeys(summary.kpis.policy):
        for st in STAGES:
            weeks = means[(p, f"kpi/weeks_{st}_per_customer")]
            contacts = means[(p, f"kpi/contacts_{st}_per_customer")]
            rows.append((p, st, weeks, contacts, means[(p, f"kpi/offers_{st}_per_customer")],
                         means[(p, f"kpi/media_cost_{st}_per_customer")],
                         contacts / weeks if weeks > 0 else float("nan")))
    return pd.DataFrame(rows, columns=["policy", "stage", "weeks", "contacts", "offers", "media_cost",
                                       "contact_rate"])


def _pivot(blocks: pd.DataFrame, policies: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, tuple[int, ...]]:
    """Align the units (seed, block) common to every policy; sums per policy, counts, strata."""
    keyed = {p: blocks[blocks.policy == p].set_index(["seed", "block"]).sort_index() for p in policies}
    common = None
    for df in keyed.values():
        common = df.index if common is None else common.intersection(df.index)
    if common is None or len(common) == 0:
        raise ValueError("the policies share no evaluation populations (seed, block): nothing to pair")
    common = common.sort_values()
    counts = None
    sums = {}
    for p, df in keyed.items():
        if df.index.duplicated().any():
            raise ValueError(f"policy {p!r} has duplicate (seed, block) rows")
        sub = df.loc[common]
        c = sub["customers"].to_numpy(np.float64)
        if counts is None:
            counts = c
        elif not np.array_equal(counts, c):
            raise ValueError(f"policy {p!r} was evaluated on differently sized populations: cannot pair")
        sums[p] = sub[list(KPI_COLUMNS)].to_numpy(np.float64)
    seeds = np.asarray(common.get_level_values("seed"))
    return sums, counts, seeds, tuple(int(s) for s in np.unique(seeds))


def summarize(ev: Evaluation | pd.DataFrame, *, baseline: str | None = None, oracle: str | None = None,
              n_boot: int = 1000, confidence: float = 0.95, seed: int = 0,
              policies: Sequence[str] | None = None, long_term_oracle: str | None = None) -> Summary:
    """Means, bootstrap CIs, paired differences vs ``baseline``, regret, and the short- vs
    long-term comparison of every pair of policies.

    Regret (reference − policy, paired): lifetime value against ``long_term_oracle`` when given
    (the ceiling for what is maximised over a lifetime), else against ``oracle``; profit and
    short-term profit against ``oracle`` (the myopic one). Each regret row names its reference.
    """
    blocks = ev.blocks if isinstance(ev, Evaluation) else ev
    names = list(policies) if policies is not None else list(dict.fromkeys(blocks.policy))
    for ref, what in ((baseline, "baseline"), (oracle, "oracle"), (long_term_oracle, "long_term_oracle")):
        if ref is not None and ref not in names:
            raise ValueError(f"{what} {ref!r} is not among the evaluated policies {names}")
    roles = blocks.drop_duplicates("policy").set_index("policy")["role"].to_dict()
    sums, counts, strata, seeds = _pivot(blocks, names)
    rng = np.random.default_rng(seed)
    W = bootstrap_weights(strata, n_boot, rng)
    W_indep = bootstrap_weights(strata, n_boot, rng)
    Wc, Wc_indep = W @ counts, W_indep @ counts
    total = counts.sum()
    means = {p: s.sum(axis=0) / total for p, s in sums.items()}
    boots = {p: (W @ s) / Wc[:, None] for p, s in sums.items()}

    kpi_rows = []
    for p in names:
        lo, hi = _percentile_ci(boots[p], confidence)
        for j, col in enumerate(KPI_COLUMNS):
            kpi_rows.append((p, roles.get(p, "policy"), KPI_KEY[col], means[p][j], lo[j], hi[j]))
    kpis = pd.DataFrame(kpi_rows, columns=["policy", "role", "key", "mean", "ci_low", "ci_high"])

    diff_rows = []
    if baseline is not None:
        boot_b_indep = (W_indep @ sums[baseline]) / Wc_indep[:, None]
        for p in names:
            if p == baseline:
                continue
            d = boots[p] - boots[baseline]
            lo, hi = _percentile_ci(d, confidence)
            ilo, ihi = _percentile_ci(boots[p] - boot_b_indep, confidence)
            for j, col in enumerate(KPI_COLUMNS):
                diff_rows.append((p, baseline, KPI_KEY[col], means[p][j] - means[baseline][j],
                                  lo[j], hi[j], ilo[j], ihi[j]))
    diffs = pd.DataFrame(diff_rows, columns=["policy", "baseline", "key", "diff", "ci_low", "ci_high",
                                             "indep_ci_low", "indep_ci_high"])

    regret_rows = []
    for col in REGRET_COLUMNS:
        ref = long_term_oracle if col == "lifetime_value" and long_term_oracle is not None else oracle
        if ref is None:
            continue
        j = _COL[col]
        for p in names:
            r = boots[ref][:, j] - boots[p][:, j]
            lo, hi = _percentile_ci(r, confidence)
            regret_rows.append((p, ref, KPI_KEY[col], means[ref][j] - means[p][j], lo, hi))
    regret = pd.DataFrame(regret_rows, columns=["policy", "oracle", "key", "regret", "ci_low", "ci_high"])

    svl, tau = _short_vs_long(names, means, boots, confidence)
    return Summary(kpis, diffs, regret, svl, tau, baseline, oracle, confidence, len(counts), seeds, roles,
                   long_term_oracle)


def _short_vs_long(names: list[str], means: dict[str, np.ndarray], boots: dict[str, np.ndarray],
                   confidence: float) -> tuple[pd.DataFrame, float]:
    """Every ordered pair: paired short-term and long-term differences; ``disagree`` when both
    intervals exclude zero with opposite signs (one policy wins this week, the other wins
    lifetime value)."""
    s, lt = _COL["short_term_profit"], _COL["lifetime_value"]
    rows = []
    for a in names:
        for b in names:
            if a == b:
                continue
            ds = boots[a][:, s] - boots[b][:, s]
            dl = boots[a][:, lt] - boots[b][:, lt]
            slo, shi = _percentile_ci(ds, confidence)
            llo, lhi = _percentile_ci(dl, confidence)
            disagree = bool((slo > 0 and lhi < 0) or (shi < 0 and llo > 0))
            rows.append((a, b, means[a][s] - means[b][s], slo, shi, means[a][lt] - means[b][lt], llo, lhi, disagree))
    df = pd.DataFrame(rows, columns=["policy", "versus", "short_term_diff", "short_ci_low", "short_ci_high",
                                     "lifetime_value_diff", "long_ci_low", "long_ci_high", "disagree"])
    tau = kendall_tau([means[p][s] for p in names], [means[p][lt] for p in names])
    return df, tau


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's τ-a between two rankings (1: same order, −1: reversed); NaN for < 2 items."""
    n = len(x)
    if n < 2:
        return float("nan")
    conc = 0
    for i in range(n):
        for j in range(i + 1, n):
            conc += int(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]))
    return conc / (n * (n - 1) / 2)


def format_table(summary: Summary, keys: Sequence[str] = ("kpi/profit_per_customer", "kpi/lifetime_value_per_customer",
                                                          "kpi/short_term_profit_per_customer")) -> str:
    """Plain-text table of KPIs with CIs and paired differences (for the console)."""
    lines = []
    head = f"{'policy':<28}" + "".join(f"{k.split('/')[-1]:>44}" for k in keys)
    lines.append(head)
    for p in dict.fromkeys(summary.kpis.policy):
        cells = []
        for k in keys:
            r = summary.kpis[(summary.kpis.policy == p) & (summary.kpis.key == k)].iloc[0]
            cell = f"{r['mean']:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"
            d = summary.diffs[(summary.diffs.policy == p) & (summary.diffs.key == k)]
            if len(d):
                cell += f" Δ{d['diff'].iloc[0]:+.3f}"
            cells.append(f"{cell:>44}")
        lines.append(f"{p[:27]:<28}" + "".join(cells))
    if summary.baseline:
        lines.append(f"Δ: paired difference against {summary.baseline!r}; "
                     f"[{summary.confidence:.0%} bootstrap CI], {len(summary.seeds)} populations")
    return "\n".join(lines)
