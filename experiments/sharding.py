"""Sharded evaluation of a population too large for one process: shards as Ray actors.

API (same inputs and output as :func:`rapport.experiments.evaluation.evaluate`)::

    ev = evaluate_sharded({"mass": mass_factory, "rfm": rfm}, settings, shards=8,
                          ray=RayConfig(address="auto"))          # -> Evaluation
    with ShardPool(settings, shards=8, executor="ray") as pool:   # actors reused across runs
        r = pool.rollout(policy, seed)                            # -> ShardedRollout

Layout. The customers ``0..n-1`` of a population are summed in ``settings.n_blocks`` contiguous
evaluation blocks (the sizes of ``np.array_split``: what :func:`evaluate` sums and bootstraps).
A shard is a run of whole blocks: customers ``[start, stop)`` in a ``PopulationEnv`` with
``customer_offset=start``. Because the world's noise is keyed by (seed, customer index, episode,
week, mechanism), each row is the same customer meeting the same luck as in one process.

One week, driven from the caller's process:

1. *decide* — every shard applies last week's population-level values (``reducers``), asks its
   policy for actions on its rows and, when the policy is wrapped in a global weekly
   :class:`rapport.agents.constraints.BudgetConstraint`, sends its best-ranked budget candidates;
2. *budget reduce* (only with a budget) — the driver ranks the candidates of all shards exactly
   as ``BudgetConstraint`` ranks one batch (score, then customer index) and broadcasts the first
   customer the budget cannot fund; every shard funds the paid actions ranked above it;
3. *step* — every shard steps its env and books the week per customer exactly as
   :func:`rapport.experiments.evaluation.rollout` does, and returns per-block sums (weekly profit and
   each reducer's partials);
4. *population reduce* — each reducer combines the per-block partials of all blocks in
   population order; the value goes to every shard at the next *decide*.

What is bit-identical to one process (tested on 10^5 customers in 4 shards):

* per-customer KPI values (``rollout(...).values``), hence the block sums, means and bootstrap
  intervals, for every policy whose decision for a customer depends only on that customer's
  observation (every deterministic Rapport policy — rules, RFM, the oracle, greedy bandits and
  deterministic SB3 policies), with or without a global budget;
* the segment sums (:mod:`rapport.experiments.segments`): the value deciles are cut once over the
  whole population from every shard's start values (gathered after reset), and each shard
  books whole blocks;
* the weekly profit per block, hence the weekly curve, across any number of shards. (The
  single-process :func:`rollout` sums a week's profit over all customers at once; that float
  sum differs from the block-ordered one in the last bits.)

Batch-relative rules (``TargetingOnly``'s "top fraction of the batch") rank within a shard.

Policy randomness: shard ``i`` gives its policy ``default_rng([policy_seed, seed, start_i])``
(shard 0, and so a one-shard run: ``default_rng([policy_seed, seed])``, as :func:`rollout`), so a
stochastic policy's sharded draws are valid but not the same draws as in one process. The
budget's Monte-Carlo propensities are not computed (evaluation does not use them).

Memory: a shard holds only its rows; the driver holds per-block sums and, per week with a
budget, the candidates each shard could fund on its own (at most the customers the whole
budget pays for, per shard).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

import rapport.envs as envs
from rapport.agents.constraints import BudgetConstraint
from rapport.agents.validation import check_batch
from rapport.envs.observation import FEATURE_NAMES, STAGES
from rapport.experiments.evaluation import (
    KPI_COLUMNS,
    ROLES,
    CustomerLedger,
    EvalSettings,
    Evaluation,
    result_frames,
)
from rapport.experiments.launchers.ray_cluster import RayConfig, init_ray, shutdown_ray
from rapport.experiments.segments import segment_frame, start_values, value_segments

COL = {c: i for i, c in enumerate(KPI_COLUMNS)}
STAGE_COLS = [FEATURE_NAMES.index(f"stage_{s}") for s in STAGES]
BUDGET_TOLERANCE = 1e-12
"""Relative slack of the budget test, as in ``BudgetConstraint`` (``running <= B (1 + 1e-12)``)."""
CANDIDATE_SLACK = 1e-6
"""A shard sends candidates until its own running cost passes ``B (1 + 1e-12)(1 + 1e-6)``: float
sums of a subset can exceed the exact sum by ~n·eps, far below this, so no fundable customer is
left out."""


class PopulationReducer(Protocol):
    """Population-level state reduced across shards once a week.

    ``partial`` runs in each shard after the week's step and returns one row per customer
    (``(rows, k)`` float64); the framework sums it per evaluation block; ``combine`` gets the
    ``(n_blocks, k)`` sums of the whole population in block order (the same array whatever the
    sharding) and returns the week's value; ``apply`` hands it to every shard before the next
    week's decisions (e.g. mass-media awareness driven by total exposure).
    """

    name: str

    def partial(self, env: envs.PopulationEnv, info: dict[str, Any], active: np.ndarray) -> np.ndarray: ...

    def combine(self, week: int, block_sums: np.ndarray) -> Any: ...

    def apply(self, env: envs.PopulationEnv, value: Any) -> None: ...


# ------------------------------------------------------------------------------ layout
def block_starts(customers: int, n_blocks: int) -> np.ndarray:
    """First customer of each evaluation block (sizes as ``np.array_split`` / ``block_sums``)."""
    counts = np.full(n_blocks, customers // n_blocks, np.int64)
    counts[: customers % n_blocks] += 1
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def shard_bounds(customers: int, n_blocks: int, shards: int) -> list[tuple[int, int, int, int]]:
    """``(first block, end block, start customer, stop customer)`` of each shard: whole blocks,
    as even as blocks allow."""
    if isinstance(shards, bool) or not isinstance(shards, int | np.integer) or shards < 1:
        raise ValueError(f"shards must be an integer >= 1, got {shards!r}")
    if shards > n_blocks:
        raise ValueError(f"shards={shards} exceeds the {n_blocks} evaluation blocks (a shard is a run "
                         "of whole blocks); raise evaluation.blocks or use fewer shards")
    edges = block_starts(customers, n_blocks)
    per = np.full(shards, n_blocks // shards)
    per[: n_blocks % shards] += 1
    first = np.concatenate([[0], np.cumsum(per)])
    return [(int(first[i]), int(first[i + 1]), int(edges[first[i]]), int(edges[first[i + 1]]))
            for i in range(shards)]


# ------------------------------------------------------------------------------- budget
def split_budget(policy: Any) -> tuple[Any, BudgetConstraint | None]:
    """``(inner policy, budget)`` if ``policy`` is a BudgetConstraint, else ``(policy, None)``.

    A budget ranks customers across the whole population, so for sharded evaluation it must be
    the outermost wrapper; one found deeper raises ValueError."""
    budget = policy if isinstance(policy, BudgetConstraint) else None
    inner = budget.policy if budget is not None else policy
    node, depth = inner, 0
    while node is not None and depth < 32:
        if isinstance(node, BudgetConstraint):
            raise ValueError("a BudgetConstraint must be the outermost wrapper for sharded evaluation "
                             f"(its ranking spans all shards); found one inside {type(policy).__name__}")
        node, depth = getattr(node, "policy", None), depth + 1
    return inner, budget


@dataclass
class BudgetCandidates:
    """A shard's paid actions in ranking order, cut after its own budget is spent."""

    score: np.ndarray  # (m,) float64
    customer: np.ndarray  # (m,) int64 global customer index
    cost: np.ndarray  # (m,) float64 > 0
    truncated: bool  # the last candidate is the first that passed the budget on its own


def budget_candidates(score: np.ndarray, customer: np.ndarray, cost: np.ndarray,
                      weekly_budget: float) -> BudgetCandidates:
    if (cost < 0).any():
        raise ValueError("BudgetConstraint.cost returned a negative cost; sharded budgets need costs >= 0")
    paid = np.flatnonzero(cost > 0)
    order = paid[np.lexsort((customer[paid], -score[paid]))]
    running = np.cumsum(cost[order])
    over = np.flatnonzero(running > weekly_budget * (1 + BUDGET_TOLERANCE) * (1 + CANDIDATE_SLACK))
    keep = order if over.size == 0 else order[: over[0] + 1]
    return BudgetCandidates(score[keep], customer[keep], cost[keep], over.size > 0)


def budget_cutoff(candidates: Sequence[BudgetCandidates], weekly_budget: float) -> tuple[float, int] | None:
    """(score, customer) of the first paid action the budget cannot fund, ranked over all shards
    exactly as ``BudgetConstraint`` ranks one batch; None if every paid action fits."""
    score = np.concatenate([c.score for c in candidates])
    customer = np.concatenate([c.customer for c in candidates])
    cost = np.concatenate([c.cost for c in candidates])
    order = np.lexsort((customer, -score))
    running = np.cumsum(cost[order])  # zero-cost rows add +0.0 in one process: the same sums
    fits = running <= weekly_budget * (1 + BUDGET_TOLERANCE)
    if fits.all():
        if any(c.truncated for c in candidates):
            raise AssertionError("a shard cut its candidates although the budget fits them all")
        return None
    first = order[int(np.argmin(fits))]
    return float(score[first]), int(customer[first])


def ranked_before(score: np.ndarray, customer: np.ndarray, cutoff: tuple[float, int]) -> np.ndarray:
    """Rows ranked above the cutoff (higher score; ties by lower customer index; NaN last)."""
    cut_score, cut_customer = cutoff
    if np.isnan(cut_score):
        return ~np.isnan(score) | (customer < cut_customer)
    return (score > cut_score) | ((score == cut_score) & (customer < cut_customer))


# ------------------------------------------------------------------------------- shard
class ShardWorker:
    """Customers ``[start, stop)`` of every population, stepped week by week (a Ray actor)."""

    def __init__(self, settings: EvalSettings, start: int, stop: int, starts: np.ndarray):
        self.settings, self.start, self.stop = settings, int(start), int(stop)
        self.local_starts = np.asarray(starts, np.int64) - self.start
        self.env = envs.PopulationEnv(num_envs=self.stop - self.start, scenario=settings.scenario,
                                      horizon=settings.horizon, include_latent=True,
                                      customer_offset=self.start)
        self.customer = np.arange(self.start, self.stop, dtype=np.int64)

    def begin(self, policy_or_factory: Any, seed: int, reducers: Sequence[PopulationReducer]) -> float | None:
        """Start a population; returns the wrapped budget's ``weekly_budget`` if there is one."""
        policy = policy_or_factory if hasattr(policy_or_factory, "act") else policy_or_factory(self.env)
        self.policy, self.budget = split_budget(policy)
        key = [self.settings.policy_seed, seed] + ([self.start] if self.start else [])
        self.rng = np.random.default_rng(key)
        self.reducers = list(reducers)
        self.ledger = CustomerLedger(self.stop - self.start, self.settings)
        self.obs, self.info = self.env.reset(seed=seed)
        self.week = 0
        return None if self.budget is None else self.budget.weekly_budget

    def start_values(self) -> tuple[np.ndarray, np.ndarray]:
        """This shard's rows' residual values and prospect flags at week 0 (for the value deciles)."""
        return start_values(self.env, self.settings.weekly_discount)

    def start_segments(self, value_segment: np.ndarray) -> None:
        """Book segment sums with this shard's slice of the population's value segments."""
        counts = np.diff(np.append(self.local_starts, self.stop - self.start))
        self.ledger.start_segments(counts, value_segment, self.env.offer_names)

    def decide(self, population_values: Sequence[Any] | None, weekly_budget: float | None) -> BudgetCandidates | None:
        for reducer, value in zip(self.reducers, population_values or (), strict=False):
            reducer.apply(self.env, value)
        mask = self.info["action_mask"] if self.settings.use_action_mask else None
        if self.budget is None:
            self.actions, _ = self.policy.act(self.obs, self.rng, action_mask=mask)
            return None
        obs = check_batch(self.obs, mask, self.budget.schema).obs  # as BudgetConstraint.act
        self.actions, _ = self.policy.act(obs, self.rng, action_mask=mask)
        self.cost = self.budget.cost(obs, self.actions)
        self.score = np.asarray(self.budget.score_fn(obs), np.float64)
        assert weekly_budget is not None
        return budget_candidates(self.score, self.customer, self.cost, weekly_budget)

    def step(self, cutoff: tuple[float, int] | None) -> tuple[np.ndarray, list[np.ndarray], int]:
        """Step one week; per-block profit sums, each reducer's per-block partial sums and the
        number of customers whose action the budget cut."""
        actions, defunded = self.actions, 0
        if self.budget is not None and cutoff is not None:
            funded = (self.cost <= 0.0) | ranked_before(self.score, self.customer, cutoff)
            defunded = int((~funded & actions.any(axis=1)).sum())
            actions = np.where(funded[:, None], actions, 0)
        stage = np.argmax(self.obs[:, STAGE_COLS], axis=1)
        self.obs, reward, terminated, _, self.info = self.env.step(actions)
        active = self.ledger.active.copy()
        profit = self.ledger.add_week(self.week, self.env, stage, reward, terminated, self.info)
        self.week += 1
        partials = [np.add.reduceat(np.asarray(r.partial(self.env, self.info, active), np.float64)
                                    .reshape(len(active), -1), self.local_starts, axis=0)
                    for r in self.reducers]
        return np.add.reduceat(profit, self.local_starts), partials, defunded

    def week_step(self, population_values: Sequence[Any] | None) -> tuple[np.ndarray, list[np.ndarray], int]:
        """decide + step in one call (no budget: nothing to reduce in between)."""
        self.decide(population_values, None)
        return self.step(None)

    def finish(self, return_values: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, tuple[str, ...]]:
        """Per-block KPI sums (rows of ``block_sums``), per-customer values if asked, and the
        per-block segment sums with their columns."""
        values = self.ledger.finish(self.env)
        segments = self.ledger.segments
        return (np.add.reduceat(values, self.local_starts, axis=0), (values if return_values else None),
                segments.sums, segments.columns)


# -------------------------------------------------------------------------------- driver
@dataclass
class ShardedRollout:
    """One policy on one population, assembled from its shards."""

    block_sums: np.ndarray
    """(n_blocks, len(KPI_COLUMNS)) — equal to ``block_sums(rollout(...).values, n_blocks)``."""
    counts: np.ndarray
    """(n_blocks,) customers per block."""
    weekly_block_profit: np.ndarray
    """(horizon, n_blocks) profit of each block's cohort in each week."""
    values: np.ndarray | None
    """(customers, len(KPI_COLUMNS)) per-customer values when asked for, else None."""
    population_values: dict[str, list[Any]]
    """Each reducer's combined value, week by week."""
    defunded: np.ndarray
    """(horizon,) customers whose action the global budget cut, per week."""
    segments: np.ndarray | None = None
    """(n_blocks, len(segments.SEGMENTS), len(segment_columns)) — equal to ``rollout(...).segments``."""
    segment_columns: tuple[str, ...] = ()

    @property
    def weekly_profit(self) -> np.ndarray:
        """(horizon,) profit per customer of the cohort in each week."""
        return self.weekly_block_profit.sum(axis=1) / self.counts.sum()


class ShardPool:
    """``shards`` workers over the customers of ``settings``, reused for every rollout.

    ``executor="ray"`` runs each shard as a Ray actor (connecting with :func:`init_ray` unless
    Ray is already initialised; ``cpus_per_shard`` defaults to min(1, cluster CPUs / shards) so
    every shard fits); ``"local"`` runs them one after another in this process (the reference).
    """

    def __init__(self, settings: EvalSettings, shards: int, *, executor: str = "ray",
                 ray: RayConfig | None = None, cpus_per_shard: float | None = None):
        if executor not in ("ray", "local"):
            raise ValueError(f"executor must be 'ray' or 'local', got {executor!r}")
        self.settings, self.executor = settings, executor
        self.bounds = shard_bounds(settings.customers, settings.n_blocks, shards)
        edges = block_starts(settings.customers, settings.n_blocks)
        self.counts = np.diff(edges)
        args = [(settings, lo, hi, edges[b0:b1]) for b0, b1, lo, hi in self.bounds]
        self._owns_ray = False
        if executor == "local":
            self.workers: list[Any] = [ShardWorker(*a) for a in args]
            return
        self._owns_ray = init_ray(ray)
        import ray as ray_api

        if cpus_per_shard is None:
            cpus_per_shard = min(1.0, float(ray_api.cluster_resources().get("CPU", 1.0)) / len(args))
        remote = ray_api.remote(ShardWorker).options(num_cpus=cpus_per_shard)
        self.workers = [remote.remote(*a) for a in args]

    def _call(self, method: str, per_shard_args: Sequence[tuple]) -> list[Any]:
        if self.executor == "local":
            return [getattr(w, method)(*a) for w, a in zip(self.workers, per_shard_args, strict=True)]
        import ray as ray_api

        refs = [getattr(w, method).remote(*a) for w, a in zip(self.workers, per_shard_args, strict=True)]
        return ray_api.get(refs)

    def rollout(self, policy_or_factory: Any, seed: int, *, budget_per_customer: float | None = None,
                reducers: Sequence[PopulationReducer] = (), return_values: bool = False) -> ShardedRollout:
        """Run one policy (object or ``env -> Policy`` factory) on the population of ``seed``.

        A global weekly budget wrapped around the policy (outermost ``BudgetConstraint``) is
        shared by all shards: ``budget_per_customer × customers`` when given (as
        ``constraints.weekly_budget_per_customer`` does in one process), else the budget of the
        policy object. A factory builds its budget per shard, so it needs ``budget_per_customer``.
        """
        n_shards = len(self.workers)
        is_factory = not hasattr(policy_or_factory, "act")
        if self.executor == "ray":
            import ray as ray_api

            policy_or_factory = ray_api.put(policy_or_factory)  # shipped once, not per shard
        budgets = self._call("begin", [(policy_or_factory, seed, tuple(reducers))] * n_shards)
        # value deciles rank the whole population: gather every shard's start values, cut once
        starts = self._call("start_values", [()] * n_shards)
        segment = value_segments(np.concatenate([v for v, _ in starts]), np.concatenate([p for _, p in starts]))
        self._call("start_segments", [(segment[lo:hi],) for _, _, lo, hi in self.bounds])
        weekly_budget = None
        if budgets[0] is not None:
            if budget_per_customer is not None:
                weekly_budget = budget_per_customer * self.settings.customers
            elif not is_factory:
                weekly_budget = budgets[0]
            else:
                raise ValueError("the policy factory wraps a BudgetConstraint built per shard; pass "
                                 "budget_per_customer (the global budget is budget_per_customer x "
                                 f"{self.settings.customers} customers)")
        H, B = self.settings.horizon, len(self.counts)
        weekly, defunded = np.zeros((H, B)), np.zeros(H, np.int64)
        population: dict[str, list[Any]] = {r.name: [] for r in reducers}
        values: list[Any] | None = None
        for t in range(H):
            if weekly_budget is None:
                results = self._call("week_step", [(values,)] * n_shards)
            else:
                candidates = self._call("decide", [(values, weekly_budget)] * n_shards)
                cutoff = budget_cutoff(candidates, weekly_budget)
                results = self._call("step", [(cutoff,)] * n_shards)
            weekly[t] = np.concatenate([r[0] for r in results])
            defunded[t] = sum(r[2] for r in results)
            values = []
            for i, reducer in enumerate(reducers):
                value = reducer.combine(t, np.concatenate([r[1][i] for r in results], axis=0))
                population[reducer.name].append(value)
                values.append(value)
        finished = self._call("finish", [(return_values,)] * n_shards)
        sums = np.concatenate([f[0] for f in finished], axis=0)
        per_customer = np.concatenate([f[1] for f in finished], axis=0) if return_values else None
        segments = np.concatenate([f[2] for f in finished], axis=0)
        return ShardedRollout(sums, self.counts.copy(), weekly, per_customer, population, defunded,
                              segments, finished[0][3])

    def close(self) -> None:
        if self.executor == "ray":
            import ray as ray_api

            for w in self.workers:
                ray_api.kill(w)
            self.workers = []
            if self._owns_ray:
                shutdown_ray()
                self._owns_ray = False

    def __enter__(self) -> ShardPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def evaluate_sharded(policies: Mapping[str, Any], settings: EvalSettings, *, shards: int,
                     roles: Mapping[str, str] | None = None, executor: str = "ray",
                     ray: RayConfig | None = None, cpus_per_shard: float | None = None,
                     budget_per_customer: float | None = None) -> Evaluation:
    """:func:`rapport.experiments.evaluation.evaluate` with every population split into ``shards``."""
    roles = dict(roles or {})
    for name in policies:
        if roles.get(name, "policy") not in ROLES:
            raise ValueError(f"role of {name!r} must be one of {ROLES}, got {roles[name]!r}")
    block_rows, weekly_rows, segment_rows = [], [], []
    with ShardPool(settings, shards, executor=executor, ray=ray, cpus_per_shard=cpus_per_shard) as pool:
        for name, pol in policies.items():
            role = roles.get(name, "policy")
            for seed in settings.seeds:
                r = pool.rollout(pol, seed, budget_per_customer=budget_per_customer)
                blocks, weekly = result_frames(name, role, seed, r.block_sums, r.counts, r.weekly_profit)
                block_rows.append(blocks)
                weekly_rows.append(weekly)
                segment_rows.append(segment_frame(name, role, seed, r.segments, r.segment_columns,
                                                  settings.customers))
    return Evaluation(pd.concat(block_rows, ignore_index=True), pd.concat(weekly_rows, ignore_index=True),
                      settings, pd.concat(segment_rows, ignore_index=True))


def evaluate_configured(policies: Mapping[str, Any], es: EvalSettings, settings: Any, *,
                        roles: Mapping[str, str] | None = None, progress: bool = False) -> Evaluation:
    """What ``rapport-train``/``rapport-evaluate`` call: in this process, or sharded over Ray when
    ``settings.evaluation.shards`` > 1 (``settings`` is the app's ``RunConfig``)."""
    from rapport.experiments.evaluation import evaluate

    shards = settings.evaluation.shards
    if shards <= 1:
        return evaluate(policies, es, roles=roles, progress=progress)
    return evaluate_sharded(policies, es, shards=shards, roles=roles, ray=settings.ray,
                            budget_per_customer=settings.constraints.weekly_budget_per_customer)
