"""Logged feedback: the typed record that off-policy estimators consume, its checks and Parquet IO.

One row is one decision: a customer (``customer_id``, ``episode``) in a ``week``, the context the
logging policy saw, the action it took, the probability it took it with and the reward that
followed. Optionally the logging policy's full joint action distribution and the action mask it
was given are stored too.

Parquet layout (one column per item, so pandas / Spark / SQL users can read it directly)

====================  ==========================  ==================================================
column                type                        meaning
====================  ==========================  ==================================================
``customer_id``       int64                       global customer index
``episode``           int64                       customer episode (0 unless the row was reset)
``week``              int64                       decision week within the episode, 0-based
<feature names>       float32, one per feature    the context, columns named as ``feature_names``
``channel``           int64                       action dimension 0 (0 = no contact)
``offer``             int64                       action dimension 1 (0 = none)
``spend_level``       int64                       action dimension 2 (0 = no paid media)
``action``            int64                       joint index, C order over ``nvec``
``propensity``        float64                     probability of the logged action, in (0, 1]
``reward``            float64                     the week's profit (or whatever reward was logged)
``action_dist``       fixed list<float64>[K]      optional: full joint distribution of the logger
``action_mask``       fixed list<bool>[sum(nvec)] optional: per-dimension masks concatenated
``creative``          int64                       optional: creative shown (−1 = none), 0..C−1
====================  ==========================  ==================================================

File metadata (key ``rapport.logged_feedback``, JSON) holds ``feature_names``, ``nvec`` and any
free-form ``metadata`` (policy, scenario, seed...). A file without it can still be read when the
caller supplies ``feature_names`` and ``nvec``. A log with a ``creative`` column carries the
catalogue its ids index (:class:`rapport.agents.ope.catalogue.CreativeCatalogue`, in the metadata
key ``rapport.creative_catalogue``), or the reader passes it; logs without creatives are as before.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rapport.agents.ope.catalogue import CATALOGUE_KEY, CreativeCatalogue, InvalidCatalogueError
from rapport.agents.protocol import DecisionSchema

ACTION_COLUMNS = ("channel", "offer", "spend_level")
"""Names of the three action dimensions, in ``nvec`` order."""
KEY_COLUMNS = ("customer_id", "episode", "week")
REQUIRED_COLUMNS = ("customer_id", "week", *ACTION_COLUMNS, "propensity", "reward")
"""Columns every logged-feedback file must have (besides one column per feature)."""
OPTIONAL_COLUMNS = ("episode", "action", "action_dist", "action_mask", "creative")
RESERVED_COLUMNS = frozenset(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)
METADATA_KEY = b"rapport.logged_feedback"
DIST_TOLERANCE = 1e-6
"""Tolerance on sum(action_dist) == 1 and on action_dist[logged action] == propensity."""


class InvalidFeedbackError(ValueError):
    """A logged-feedback record or file breaks the schema; the message names the problem."""


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _as_int(name: str, values: Any, n: int | None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InvalidFeedbackError(f"column {name!r} must be 1-D, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise InvalidFeedbackError(f"length mismatch: column {name!r} has {arr.shape[0]} rows, "
                                   f"expected {n} (the length of 'customer_id')")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(arr == np.round(arr)):
            raise InvalidFeedbackError(f"column {name!r} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _as_float(name: str, values: Any, n: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,):
        raise InvalidFeedbackError(f"length mismatch: column {name!r} has shape {arr.shape}, "
                                   f"expected ({n},) (the length of 'customer_id')")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise InvalidFeedbackError(f"column {name!r} has a non-finite value ({arr[_first_bad(bad)]}) "
                                   f"at row {_first_bad(bad)}")
    return arr


@dataclass(frozen=True, eq=False)
class LoggedFeedback:
    """A validated batch of logged decisions (see the module docstring for the columns).

    Construction validates and normalises dtypes; anything invalid raises
    :class:`InvalidFeedbackError` naming the column, the row and what is valid.
    """

    feature_names: tuple[str, ...]
    """Context columns, in order (injected: agents never import the env)."""
    nvec: tuple[int, ...]
    """Sizes of the action dimensions (channel, offer, spend level)."""
    customer_id: np.ndarray
    """(n,) int64 global customer index."""
    week: np.ndarray
    """(n,) int64 decision week within the customer's episode."""
    context: np.ndarray
    """(n, d) float32 features the logging policy saw."""
    actions: np.ndarray
    """(n, 3) int64 logged (channel, offer, spend level)."""
    propensity: np.ndarray
    """(n,) float64 probability of the logged action under the logging policy, in (0, 1]."""
    reward: np.ndarray
    """(n,) float64 observed reward."""
    episode: np.ndarray | None = None
    """(n,) int64 customer episode; zeros when not given."""
    action_dist: np.ndarray | None = None
    """(n, K) float64 full joint action distribution of the logging policy, optional."""
    action_mask: np.ndarray | None = None
    """(n, sum(nvec)) bool mask the logging policy was given, optional."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """Free-form, JSON-serialisable provenance (policy, scenario, seed, ...)."""
    creative: np.ndarray | None = None
    """(n,) int64 creative shown with the contact, −1 where none; needs ``catalogue``."""
    catalogue: CreativeCatalogue | None = None
    """The creative catalogue ``creative`` indexes (attributes and/or embeddings), optional."""

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "feature_names", tuple(str(f) for f in self.feature_names))
        put(self, "nvec", tuple(int(k) for k in self.nvec))
        if len(self.nvec) != len(ACTION_COLUMNS) or min(self.nvec) < 1:
            raise InvalidFeedbackError(f"nvec must be {len(ACTION_COLUMNS)} positive sizes "
                                       f"{ACTION_COLUMNS}, got {self.nvec}")
        clash = sorted(RESERVED_COLUMNS.intersection(self.feature_names))
        if clash:
            raise InvalidFeedbackError(f"feature names {clash} clash with reserved column names")
        if len(set(self.feature_names)) != len(self.feature_names):
            raise InvalidFeedbackError("feature_names contain duplicates")
        cid = _as_int("customer_id", self.customer_id, None)
        n = cid.shape[0]
        if n == 0:
            raise InvalidFeedbackError("logged feedback is empty (0 rows)")
        put(self, "customer_id", cid)
        put(self, "week", _as_int("week", self.week, n))
        episode = np.zeros(n, np.int64) if self.episode is None else _as_int("episode", self.episode, n)
        put(self, "episode", episode)
        for name in ("week", "episode"):
            col = getattr(self, name)
            if (col < 0).any():
                raise InvalidFeedbackError(f"column {name!r} must be >= 0, got {col[_first_bad(col < 0)]} "
                                           f"at row {_first_bad(col < 0)}")
        put(self, "context", self._check_context(n))
        put(self, "actions", self._check_actions(n))
        put(self, "propensity", self._check_propensity(n))
        put(self, "reward", _as_float("reward", self.reward, n))
        if self.action_mask is not None:
            put(self, "action_mask", self._check_mask(n))
        if self.action_dist is not None:
            put(self, "action_dist", self._check_dist(n))
        self._check_unique_keys()
        put(self, "metadata", dict(self.metadata))
        if self.creative is not None or self.catalogue is not None:
            put(self, "creative", self._check_creative(n))

    def _check_creative(self, n: int) -> np.ndarray:
        if self.catalogue is None:
            raise InvalidFeedbackError("column 'creative' needs the catalogue its ids index: pass catalogue=")
        if self.creative is None:
            raise InvalidFeedbackError("a catalogue was given without the 'creative' column (the ids shown)")
        if not isinstance(self.catalogue, CreativeCatalogue):
            raise InvalidFeedbackError(f"catalogue must be a CreativeCatalogue, got {type(self.catalogue).__name__}")
        try:
            return self.catalogue.check_ids(self.creative, n)
        except InvalidCatalogueError as exc:
            raise InvalidFeedbackError(str(exc)) from exc

    # ---- checks ---------------------------------------------------------------------------
    def _check_context(self, n: int) -> np.ndarray:
        ctx = np.asarray(self.context)
        d = len(self.feature_names)
        if ctx.ndim != 2 or ctx.shape != (n, d):
            raise InvalidFeedbackError(f"length mismatch: context has shape {ctx.shape}, expected "
                                       f"({n}, {d}) = (rows, len(feature_names))")
        if not (np.issubdtype(ctx.dtype, np.floating) or np.issubdtype(ctx.dtype, np.integer)):
            raise InvalidFeedbackError(f"context must be numeric, got dtype {ctx.dtype}")
        ctx = ctx.astype(np.float32, copy=False)
        bad = ~np.isfinite(ctx)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise InvalidFeedbackError(f"non-finite context value in column {self.feature_names[col]!r} "
                                       f"at row {row}")
        return ctx

    def _check_actions(self, n: int) -> np.ndarray:
        act = np.asarray(self.actions)
        if act.shape != (n, len(self.nvec)):
            raise InvalidFeedbackError(f"length mismatch: actions have shape {act.shape}, expected "
                                       f"({n}, {len(self.nvec)}) = (rows, {ACTION_COLUMNS})")
        cols = [_as_int(name, act[:, j], n) for j, name in enumerate(ACTION_COLUMNS)]
        for j, (name, col) in enumerate(zip(ACTION_COLUMNS, cols, strict=True)):
            bad = (col < 0) | (col >= self.nvec[j])
            if bad.any():
                i = _first_bad(bad)
                raise InvalidFeedbackError(f"action outside the action set: {name}={col[i]} at row {i}; "
                                           f"valid {name} values are 0..{self.nvec[j] - 1} (nvec={self.nvec})")
        return np.stack(cols, axis=1)

    def _check_propensity(self, n: int) -> np.ndarray:
        p = _as_float("propensity", self.propensity, n)
        bad = (p <= 0.0) | (p > 1.0)
        if bad.any():
            i = _first_bad(bad)
            raise InvalidFeedbackError(f"propensity outside (0, 1]: {float(p[i])} at row {i}; a logged "
                                       "action must have been possible (> 0) and is a probability (<= 1)")
        return p

    def _check_mask(self, n: int) -> np.ndarray:
        mask = np.asarray(self.action_mask)
        width = sum(self.nvec)
        if mask.dtype != np.bool_ or mask.shape != (n, width):
            raise InvalidFeedbackError(f"action_mask must be bool of shape ({n}, {width}), got "
                                       f"{mask.dtype} {mask.shape}")
        return mask

    def _check_dist(self, n: int) -> np.ndarray:
        dist = np.asarray(self.action_dist, dtype=np.float64)
        K = self.n_actions
        if dist.shape != (n, K):
            raise InvalidFeedbackError(f"length mismatch: action_dist has shape {dist.shape}, expected "
                                       f"({n}, {K}) = (rows, prod(nvec))")
        bad = ~np.isfinite(dist) | (dist < 0)
        if bad.any():
            i = int(np.argwhere(bad)[0, 0])
            raise InvalidFeedbackError(f"action_dist must be finite and >= 0; row {i} is not")
        off = np.abs(dist.sum(axis=1) - 1.0) > DIST_TOLERANCE
        if off.any():
            i = _first_bad(off)
            raise InvalidFeedbackError(f"action_dist row {i} sums to {float(dist[i].sum())}, not 1")
        logged = dist[np.arange(n), self.action]
        off = np.abs(logged - self.propensity) > DIST_TOLERANCE
        if off.any():
            i = _first_bad(off)
            raise InvalidFeedbackError(f"action_dist disagrees with propensity at row {i}: "
                                       f"action_dist[logged action]={float(logged[i])}, propensity={float(self.propensity[i])}")
        return dist

    def _check_unique_keys(self) -> None:
        keys = np.stack([self.customer_id, self.episode, self.week])
        order = np.lexsort(keys[::-1])
        dup = np.all(keys[:, order[1:]] == keys[:, order[:-1]], axis=0)
        if dup.any():
            i = int(order[1:][_first_bad(dup)])
            raise InvalidFeedbackError(
                f"duplicate decision: (customer_id, episode, week)=({self.customer_id[i]}, "
                f"{self.episode[i]}, {self.week[i]}) appears more than once")

    # ---- views ----------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return int(self.customer_id.shape[0])

    @property
    def n_actions(self) -> int:
        """K = prod(nvec), the number of joint actions."""
        return int(np.prod(self.nvec))

    @property
    def action(self) -> np.ndarray:
        """(n,) int64 joint action index (C order over ``nvec``)."""
        return np.ravel_multi_index(tuple(self.actions.T), self.nvec).astype(np.int64)

    def check_schema(self, schema: DecisionSchema) -> None:
        """Raise unless the log's features and action sizes are the schema's."""
        if tuple(schema.feature_names) != self.feature_names:
            missing = [f for f in schema.feature_names if f not in self.feature_names]
            raise InvalidFeedbackError(f"log features differ from the schema's (missing: {missing}; "
                                       f"log has {len(self.feature_names)}, schema {schema.n_features})")
        if tuple(schema.nvec) != self.nvec:
            raise InvalidFeedbackError(f"log nvec {self.nvec} differs from the schema's {tuple(schema.nvec)}")

    def select(self, rows: np.ndarray) -> LoggedFeedback:
        """A new record with the given rows (bool mask or indices)."""
        def take(a):
            return None if a is None else a[rows]
        return replace(self, customer_id=self.customer_id[rows], week=self.week[rows],
                       context=self.context[rows], actions=self.actions[rows],
                       propensity=self.propensity[rows], reward=self.reward[rows],
                       episode=self.episode[rows], action_dist=take(self.action_dist),
                       action_mask=take(self.action_mask), creative=take(self.creative))

    @classmethod
    def concat(cls, parts: Sequence[LoggedFeedback]) -> LoggedFeedback:
        """Stack records with the same features and nvec (e.g. one per week)."""
        if not parts:
            raise InvalidFeedbackError("nothing to concatenate")
        first = parts[0]
        for p in parts[1:]:
            if p.feature_names != first.feature_names or p.nvec != first.nvec:
                raise InvalidFeedbackError("cannot concatenate logs with different feature_names or nvec")
        opt: dict[str, Any] = {}
        if first.catalogue is not None and any(p.catalogue is None or not p.catalogue.same_as(first.catalogue)
                                               for p in parts[1:]):
            raise InvalidFeedbackError("cannot concatenate logs with different creative catalogues")
        for name in ("action_dist", "action_mask", "creative"):
            present = [getattr(p, name) is not None for p in parts]
            if any(present) and not all(present):
                raise InvalidFeedbackError(f"{name} is present in some parts and not others")
            opt[name] = np.concatenate([getattr(p, name) for p in parts]) if all(present) else None
        def cat(name):
            return np.concatenate([getattr(p, name) for p in parts])
        return cls(first.feature_names, first.nvec, cat("customer_id"), cat("week"), cat("context"),
                   cat("actions"), cat("propensity"), cat("reward"), episode=cat("episode"),
                   metadata=first.metadata, catalogue=first.catalogue, **opt)

    # ---- Parquet --------------------------------------------------------------------------
    def to_arrow(self, *, copy_catalogue: bool = True) -> pa.Table:
        """The Parquet layout; ``copy_catalogue=False`` stores only the catalogue's size and
        fingerprint (a reference: the reader passes the catalogue)."""
        cols: dict[str, pa.Array] = {
            "customer_id": pa.array(self.customer_id), "episode": pa.array(self.episode),
            "week": pa.array(self.week)}
        for j, name in enumerate(self.feature_names):
            cols[name] = pa.array(self.context[:, j])
        for j, name in enumerate(ACTION_COLUMNS):
            cols[name] = pa.array(self.actions[:, j])
        cols["action"] = pa.array(self.action)
        cols["propensity"] = pa.array(self.propensity)
        cols["reward"] = pa.array(self.reward)
        if self.action_dist is not None:
            cols["action_dist"] = pa.FixedSizeListArray.from_arrays(
                pa.array(self.action_dist.ravel()), self.n_actions)
        if self.action_mask is not None:
            cols["action_mask"] = pa.FixedSizeListArray.from_arrays(
                pa.array(self.action_mask.ravel()), self.action_mask.shape[1])
        meta: dict[str, Any] = {"feature_names": list(self.feature_names), "nvec": list(self.nvec),
                                "metadata": dict(self.metadata)}
        schema_meta = {}
        if self.catalogue is not None:
            cols["creative"] = pa.array(self.creative)
            meta["creative_catalogue"] = {"count": self.catalogue.count, "sha256": self.catalogue.fingerprint()}
            if copy_catalogue:
                schema_meta[CATALOGUE_KEY] = self.catalogue.to_bytes()
        schema_meta[METADATA_KEY] = json.dumps(meta).encode()
        return pa.table(cols).replace_schema_metadata(schema_meta)

    def write_parquet(self, path: str | Path, *, copy_catalogue: bool = True) -> Path:
        """Write the record (with its schema metadata) to ``path``; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(self.to_arrow(copy_catalogue=copy_catalogue), path)
        return path

    @classmethod
    def read_parquet(cls, path: str | Path, *, feature_names: Sequence[str] | None = None,
                     nvec: Sequence[int] | None = None, catalogue: CreativeCatalogue | None = None) -> LoggedFeedback:
        """Read and validate a logged-feedback file (see :func:`feedback_from_arrow`)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no logged-feedback file at {path}")
        return feedback_from_arrow(pq.read_table(path), feature_names=feature_names, nvec=nvec, catalogue=catalogue)


def feedback_from_arrow(table: pa.Table, *, feature_names: Sequence[str] | None = None,
                        nvec: Sequence[int] | None = None, catalogue: CreativeCatalogue | None = None) -> LoggedFeedback:
    """Validate an Arrow table against the schema and build a :class:`LoggedFeedback`.

    ``feature_names`` / ``nvec`` come from the file's metadata; when given here too they must
    agree with it, and they are required for a file written without the metadata. Likewise
    ``catalogue`` for a file with a ``creative`` column: the file's copy, else the one given.
    """
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    meta = json.loads(raw) if raw else {}
    names = _agree("feature_names", meta.get("feature_names"), feature_names)
    sizes = _agree("nvec", meta.get("nvec"), nvec)
    missing = [c for c in (*REQUIRED_COLUMNS, *names) if c not in table.column_names]
    if missing:
        raise InvalidFeedbackError(
            f"missing column(s) {', '.join(repr(c) for c in missing)}; a logged-feedback file needs "
            f"{', '.join(REQUIRED_COLUMNS)} and one column per feature")

    def col(name: str) -> np.ndarray:
        return table.column(name).to_numpy()

    n = table.num_rows
    context = np.empty((n, len(names)), np.float32)
    for j, name in enumerate(names):
        context[:, j] = col(name)
    actions = np.stack([col(c) for c in ACTION_COLUMNS], axis=1) if n else np.zeros((0, 3), np.int64)
    extra: dict[str, Any] = {}
    if "episode" in table.column_names:
        extra["episode"] = col("episode")
    for name in ("action_dist", "action_mask"):
        if name in table.column_names:
            flat = table.column(name).combine_chunks().flatten().to_numpy(zero_copy_only=False)
            extra[name] = flat.reshape(n, -1) if n else flat.reshape(0, 0)
    if "creative" in table.column_names:
        extra["creative"] = col("creative")
        extra["catalogue"] = _file_catalogue(table, meta, catalogue)
    elif catalogue is not None:
        raise InvalidFeedbackError("catalogue= was given but the file has no 'creative' column")
    logged = LoggedFeedback(names, sizes, col("customer_id"), col("week"), context, actions,
                            col("propensity"), col("reward"), metadata=meta.get("metadata", {}), **extra)
    if "action" in table.column_names and not np.array_equal(col("action"), logged.action):
        i = _first_bad(col("action") != logged.action)
        raise InvalidFeedbackError(f"column 'action' (joint index) disagrees with "
                                   f"{ACTION_COLUMNS} at row {i} for nvec={logged.nvec}")
    return logged


def _file_catalogue(table: pa.Table, meta: Mapping[str, Any], given: CreativeCatalogue | None) -> CreativeCatalogue:
    raw = (table.schema.metadata or {}).get(CATALOGUE_KEY)
    try:
        stored = CreativeCatalogue.from_bytes(raw) if raw is not None else None
    except InvalidCatalogueError as exc:
        raise InvalidFeedbackError(str(exc)) from exc
    if stored is None and given is None:
        raise InvalidFeedbackError("the file has a 'creative' column but no copy of its catalogue; "
                                   "pass catalogue=... to read it")
    cat = stored if stored is not None else given
    sha = meta.get("creative_catalogue", {}).get("sha256")
    if sha is not None and cat.fingerprint() != sha:
        which = "the file's copy of the catalogue" if stored is not None else "catalogue given"
        raise InvalidFeedbackError(f"{which} is not the catalogue the log was written with (sha256 differs)")
    if stored is not None and given is not None and not stored.same_as(given):
        raise InvalidFeedbackError("catalogue given differs from the file's copy")
    return cat


def _agree(name: str, stored: Any, given: Sequence[Any] | None) -> tuple:
    if stored is None and given is None:
        raise InvalidFeedbackError(f"the file has no {name} metadata; pass {name}=... to read it")
    if stored is not None and given is not None and tuple(stored) != tuple(given):
        raise InvalidFeedbackError(f"{name} given ({tuple(given)}) differ from the file's ({tuple(stored)})")
    return tuple(stored if stored is not None else given)
