"""The creative catalogue a logged-feedback record can carry: attributes, embeddings, Parquet form.

A log whose contacts showed creatives holds, per row, the creative id (``creative``: −1 where
no creative was shown, else 0..C−1) and a copy of the catalogue the ids index: the categorical
``attributes`` (name -> (C,) levels, e.g. theme, category, imagery, tone, explicitness) and/or
the ``embeddings`` (C, D) with their ``feature_names`` — what the firm knew of its creatives,
which is what :mod:`rapport.agents.ope.mips` marginalises over.

In a Parquet file the catalogue travels in the schema metadata (key
``rapport.creative_catalogue``): an Arrow IPC stream, base64, of a C-row table with one int64
column per attribute and a ``fixed_size_list<float32>[D]`` column ``embedding``. A reader can
instead be handed the catalogue (a *reference*: the file then need not copy it); when both are
there they must be the same catalogue (:meth:`CreativeCatalogue.fingerprint`).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

CATALOGUE_KEY = b"rapport.creative_catalogue"
EMBEDDING_COLUMN = "embedding"
NO_CREATIVE = -1
"""Creative id of a row that showed none (no message-channel contact)."""


class InvalidCatalogueError(ValueError):
    """A creative catalogue, or creative ids against it, break the schema (the message names it)."""


@dataclass(frozen=True, eq=False)
class CreativeCatalogue:
    """C creatives' categorical attributes and/or embeddings (validated on construction)."""

    attributes: Mapping[str, np.ndarray] = field(default_factory=dict)
    """attribute name -> (C,) int64 levels >= 0."""
    embeddings: np.ndarray | None = None
    """(C, D) float32, optional."""
    feature_names: Sequence[str] = ()
    """D names of the embedding columns (default e0..e{D−1})."""

    def __post_init__(self) -> None:
        put = object.__setattr__
        attrs: dict[str, np.ndarray] = {}
        C = None
        for name, values in dict(self.attributes).items():
            name = str(name)
            if name == EMBEDDING_COLUMN:
                raise InvalidCatalogueError(f"attribute name {EMBEDDING_COLUMN!r} is reserved for the embeddings")
            arr = np.asarray(values)
            if arr.ndim != 1:
                raise InvalidCatalogueError(f"catalogue attributes[{name!r}] must be 1-D (one level per creative), "
                                            f"got shape {arr.shape}")
            if arr.size and not np.issubdtype(arr.dtype, np.integer):
                raise InvalidCatalogueError(f"catalogue attributes[{name!r}] must hold integer levels, got {arr.dtype}")
            if arr.size and arr.min() < 0:
                raise InvalidCatalogueError(f"catalogue attributes[{name!r}] has a negative level at creative "
                                            f"{int(np.flatnonzero(arr < 0)[0])}; levels are 0, 1, ...")
            if C is not None and arr.shape[0] != C:
                raise InvalidCatalogueError(f"catalogue attributes[{name!r}] has {arr.shape[0]} creatives, "
                                            f"the first attribute {C}: every attribute needs one level per creative")
            C = arr.shape[0]
            attrs[name] = arr.astype(np.int64, copy=False)
        put(self, "attributes", attrs)
        names = tuple(str(f) for f in self.feature_names)
        if self.embeddings is not None:
            emb = np.asarray(self.embeddings)
            if emb.ndim != 2 or not (np.issubdtype(emb.dtype, np.floating) or np.issubdtype(emb.dtype, np.integer)):
                raise InvalidCatalogueError(f"catalogue embeddings must be a numeric (C, D) array, got "
                                            f"{emb.dtype} {emb.shape}")
            if C is not None and emb.shape[0] != C:
                raise InvalidCatalogueError(f"catalogue embeddings have {emb.shape[0]} rows but the attributes "
                                            f"{C} creatives: one embedding row per creative is needed")
            emb = emb.astype(np.float32, copy=False)
            if not np.isfinite(emb).all():
                raise InvalidCatalogueError(f"catalogue embeddings have a non-finite value at creative "
                                            f"{int(np.argwhere(~np.isfinite(emb))[0, 0])}")
            C = emb.shape[0]
            names = names or tuple(f"e{j}" for j in range(emb.shape[1]))
            if len(names) != emb.shape[1]:
                raise InvalidCatalogueError(f"catalogue feature_names has {len(names)} names for "
                                            f"{emb.shape[1]} embedding columns")
            if len(set(names)) != len(names):
                raise InvalidCatalogueError("catalogue feature_names contain duplicates")
            put(self, "embeddings", emb)
        elif names:
            raise InvalidCatalogueError("catalogue feature_names given without embeddings")
        put(self, "feature_names", names)
        if C is None:
            raise InvalidCatalogueError("a creative catalogue needs attributes or embeddings (got neither)")
        if C < 1:
            raise InvalidCatalogueError("the creative catalogue is empty (0 creatives)")

    @property
    def count(self) -> int:
        """C, the number of creatives."""
        if self.embeddings is not None:
            return int(self.embeddings.shape[0])
        return int(next(iter(self.attributes.values())).shape[0])

    def check_ids(self, creative: np.ndarray, n: int) -> np.ndarray:
        """(n,) int64 creative ids in −1..C−1 (−1 = none shown), or an error naming ``creative``."""
        arr = np.asarray(creative)
        if arr.shape != (n,):
            raise InvalidCatalogueError(f"length mismatch: column 'creative' has shape {arr.shape}, "
                                        f"expected ({n},) (the length of 'customer_id')")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            if not np.issubdtype(arr.dtype, np.floating) or not np.all(arr == np.round(arr)):
                raise InvalidCatalogueError(f"column 'creative' must hold integer ids, got dtype {arr.dtype}")
        arr = arr.astype(np.int64, copy=False)
        bad = (arr < NO_CREATIVE) | (arr >= self.count)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InvalidCatalogueError(f"creative id {int(arr[i])} at row {i} is not in the catalogue; valid "
                                        f"ids are 0..{self.count - 1}, or {NO_CREATIVE} where none was shown")
        return arr

    # ---- serialisation ------------------------------------------------------------------
    def to_arrow(self) -> pa.Table:
        cols = {name: pa.array(v) for name, v in self.attributes.items()}
        if self.embeddings is not None:
            cols[EMBEDDING_COLUMN] = pa.FixedSizeListArray.from_arrays(
                pa.array(self.embeddings.ravel()), self.embeddings.shape[1])
        meta = {"attributes": list(self.attributes), "feature_names": list(self.feature_names)}
        return pa.table(cols).replace_schema_metadata({b"rapport.catalogue": json.dumps(meta).encode()})

    @classmethod
    def from_arrow(cls, table: pa.Table) -> CreativeCatalogue:
        raw = (table.schema.metadata or {}).get(b"rapport.catalogue")
        if raw is None:
            raise InvalidCatalogueError("the catalogue table has no rapport.catalogue metadata")
        meta = json.loads(raw)
        attrs = {name: table.column(name).to_numpy() for name in meta["attributes"]}
        emb = None
        if EMBEDDING_COLUMN in table.column_names:
            flat = table.column(EMBEDDING_COLUMN).combine_chunks().flatten().to_numpy(zero_copy_only=False)
            emb = flat.reshape(table.num_rows, -1)
        return cls(attrs, emb, tuple(meta["feature_names"]))

    def to_bytes(self) -> bytes:
        """Base64 of an Arrow IPC stream of :meth:`to_arrow` (what the Parquet metadata holds)."""
        sink = pa.BufferOutputStream()
        table = self.to_arrow()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return base64.b64encode(sink.getvalue().to_pybytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> CreativeCatalogue:
        try:
            table = pa.ipc.open_stream(pa.py_buffer(base64.b64decode(data))).read_all()
        except (pa.ArrowInvalid, ValueError) as exc:
            raise InvalidCatalogueError(f"the file's {CATALOGUE_KEY.decode()} metadata is not a readable "
                                        f"catalogue: {exc}") from exc
        return cls.from_arrow(table)

    def fingerprint(self) -> str:
        """sha256 over attribute names and levels, feature names and embeddings."""
        h = hashlib.sha256()
        for name, v in self.attributes.items():
            h.update(name.encode() + b"\0" + np.ascontiguousarray(v, "<i8").tobytes())
        h.update(json.dumps(list(self.feature_names)).encode())
        if self.embeddings is not None:
            h.update(np.ascontiguousarray(self.embeddings, "<f4").tobytes())
        return h.hexdigest()

    def same_as(self, other: CreativeCatalogue) -> bool:
        return self is other or self.fingerprint() == other.fingerprint()
