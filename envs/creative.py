"""Creative catalogue: which message a contact carries, each person's taste for it, and wear-out.

Off by default (``CreativeModel.count = 0``): the action stays 3 columns and every output is
bit-identical to a scenario without this module. With ``count = C >= 1`` every contact carries a
creative ``action[:, 3]`` in ``0 … C−1`` (ignored on rows without a delivered contact).

**Catalogue.** Creative ``c`` has five attributes (levels are ints): ``theme`` (``themes``
levels), ``category`` (the scenario's ``offers.n_categories`` product categories: a creative
shows one of the products that offers recommend), ``imagery`` (``imagery_levels``), ``tone``
(``tone_levels``) and ``explicitness`` (:data:`EXPLICITNESS_LEVELS`: generic, product_based,
explicit_personal). Generated catalogues draw them from a ``numpy.random.Generator`` seeded by
``catalogue_seed`` (uniform levels; explicitness with ``explicitness_shares``), so the catalogue
is part of the scenario, known before any reset. The attributes' one-hot blocks concatenated
are ``a_c ∈ {0, 1}^A`` with ``A = themes + n_categories + imagery_levels + tone_levels + 3`` (16
by default); the embedding is ``e_c = P a_c / ‖P a_c‖`` (unit norm, float32, ``(C, D)``), where
``P`` is the identity when ``embedding_dim == A`` (the features are then the named attribute
levels ``theme_0 … explicitness_explicit_personal``) and otherwise a fixed Gaussian projection
``(D, A)`` with N(0, 1/D) entries from ``catalogue_seed`` (features ``embedding_0 …``).

**Catalogue file** (``catalogue_path``): CSV with the header line
``creative_id,theme,category,imagery,tone,explicitness`` and one line per creative; ids are the
integers ``0 … C−1``, each once (any order); the other fields are integer levels in range
(``explicitness`` may also be a level name). ``count`` must equal the number of creatives.
:func:`write_catalogue` writes this format, :func:`load_catalogue` reads it; a malformed line is
rejected with its line number and the field.

**Taste and match.** Person ``i`` has a latent taste ``t_i ∈ R^D``::

    t_i = μ + taste_spread · z_i + category_tie · Σ_k (K·w_ik − 1) · P[:, j_k]

with ``z_i ~ N(0, I_D)`` from the row's counter-based noise (``Mechanism.INIT_CREATIVE_TASTE``:
it depends only on seed, customer index, episode and draw number, so common random numbers
hold), ``μ ~ N(0, appeal_spread² I_D)`` the population's shared taste (from ``catalogue_seed``:
some creatives appeal to most people), ``w_ik`` the person's hidden category preference shares
(drawn at reset, before drift) and ``P[:, j_k]`` the embedding-space direction of category
``k``, so a creative showing the person's favourite category matches better and the firm's
observable ``belief_category`` carries information about which creative fits. The match is
``m_ic = t_i · e_c`` (a random creative to a random person: mean ≈ 0, SD ≈
sqrt(appeal_spread² + taste_spread²) plus the category part). Because ``e_c`` is a function of
the attributes, the state stores the taste in attribute form ``q_i = Pᵀ t_i`` (A int16 in
fixed point, :data:`TASTE_SCALE` = 2^−12: resolution 2.4e−4, range ±8, clipped; integer sums
are several times cheaper than float16 conversions) and computes
``m_ic = Σ_b q_i[j_b(c)] / ‖P a_c‖`` from five gathers per contacted row.

**Response.** The contact's log-rate lift (:func:`rapport.envs.marketing.marketing_effect`) is
multiplied by ``exp(match_strength·m − match_strength²·(appeal_spread² + taste_spread²)/2)``
(mean ≈ 1 over people and creatives, so the calibrated contact lifts hold on average; a
well-matched creative converts better, a badly matched one worse), by the wear-out multiplier
and, with ``privacy.enabled``, by ``exp(−creep_c)``, then capped at ``RESPONSE_CAP``.

**Privacy.** With ``privacy.enabled``, a creative of explicitness level ``k`` adds creepiness
``creep_c = privacy_interaction·creep_by_level[k]·(1 − trust)·(1 − control)/(1 + T/familiarity_weeks)``
to the contact (the same form as a personalized offer's, customer-model.md §2.11): it lowers the
lift by ``exp(−creep_c)``, the log rate by ``reactance·creep_c`` and, with the offer's creepiness,
raises the opt-out hazard and costs trust. Generic creative (level 0, ``creep_by_level[0] = 0``)
adds nothing; ``explicit_personal`` creative adds the most.

**Wear-out in bounded memory.** Each person remembers ``memory_slots`` creatives: ids (int32,
−1 = empty) and exposure stocks (float32), with one ``last exposure`` week (int16) for all
slots. Showing creative ``c`` applies ``wear = exp(−wear_rate·S)``, ``S`` the stock of ``c``
decayed to this week (``S_t+1 = 2^(−1/recovery_half_life)·S_t + [exposed]``; 0 if ``c`` is not
remembered), then adds 1 to ``c``'s slot; a creative not remembered replaces the weakest slot
(its stock is forgotten: the approximation error is at most the weakest stock). Creative state
per person: ``2·A + 8·memory_slots + 2`` bytes (58 by default) — independent of ``count``.
Tastes are stored person-major (an F-ordered (A, n) array: each person's A values adjacent), so
the five gathers of a contacted row hit one cache line.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from rapport.envs import noise
from rapport.envs.mechanism_params import EXPLICITNESS_LEVELS, _check_nonneg, _check_positive
from rapport.envs.noise import Mechanism as M

F4 = np.float32
ATTRIBUTES: tuple[str, ...] = ("theme", "category", "imagery", "tone", "explicitness")
"""Creative attributes, in embedding-block order."""
CATALOGUE_COLUMNS: tuple[str, ...] = ("creative_id", *ATTRIBUTES)
"""Header of a catalogue CSV file."""
MAX_CREATIVES = 100_000
"""Largest catalogue (``creative.count``)."""


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not lo <= value <= hi:
        raise ValueError(f"creative.{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return int(value)


@dataclass(frozen=True)
class CreativeModel:
    """The creative catalogue, people's taste for it, its wear-out and privacy interaction.

    Magnitudes not taken from a source are named assumptions; all defaults are off until
    ``count >= 1``."""

    count: int = 0
    """C: creatives in the catalogue, 0 (no catalogue: 3-column actions, today's outputs) or
    1 … 100 000. ``action[:, 3]`` is the creative id shown with a contact."""
    embedding_dim: int = 16
    """D: length of each creative's embedding (``env.creative_embeddings``). When it equals the
    number of attribute levels A (16 with the defaults and 3 categories) the embedding is the
    normalised one-hot attribute vector; otherwise a fixed random projection of it."""
    themes: int = 4
    """Levels of the ``theme`` attribute (assumption: a handful of campaign themes)."""
    imagery_levels: int = 3
    """Levels of ``imagery`` (e.g. product shot, lifestyle, illustration; assumption)."""
    tone_levels: int = 3
    """Levels of ``tone`` (e.g. informative, playful, urgent; assumption)."""
    explicitness_shares: tuple[float, float, float] = (0.5, 0.35, 0.15)
    """Share of generated creatives at each explicitness level (generic, product_based,
    explicit_personal); must sum to 1. Assumption: most creative is generic."""
    catalogue_seed: int = 0
    """Seed of the generated catalogue's attributes, the projection P and the shared taste μ."""
    catalogue_path: str = ""
    """CSV catalogue file (format in the module docstring); empty = generate the catalogue."""
    taste_spread: float = 1.0
    """SD of the idiosyncratic part of a person's match with a creative (taste_spread·z·e, e
    unit): the unit in which match is measured. Assumption."""
    appeal_spread: float = 0.5
    """SD across creatives of their match with the population's shared taste μ (some creative is
    simply better). Assumption: half the idiosyncratic spread, so personal fit matters more than
    universal appeal, in the spirit of Braun & Moe (2013, Marketing Science 32(5)), who find
    large differences between creatives and in how individuals respond to them."""
    category_tie: float = 1.0
    """Weight of the person's hidden category preference in their taste for a creative's
    category: in the identity embedding, a creative of category k adds
    category_tie·(K·w_ik − 1)/sqrt(5) to the match. Assumption."""
    match_strength: float = 0.4
    """β: the contact lift is multiplied by exp(β·match − β²·(appeal² + spread²)/2), so a
    creative one SD better matched (SD ≈ 1.1) lifts the contact's effect by ~×1.6 and one SD
    worse lowers it by ~×0.6. Assumption, of the order of the 2-3× spread in response between
    creatives that Braun & Moe (2013) report."""
    wear_rate: float = 0.2
    """ω: showing a creative with exposure stock S multiplies its lift by exp(−ω·S). Weekly
    repetition of one creative settles at S ≈ ρ/(1 − ρ) ≈ 3.8 (×0.46). Assumption, shaped by
    the wear-out after a few exposures of Pechmann & Stewart (1988) and of Braun & Moe (2013)."""
    recovery_half_life: float = 3.0
    """Weeks for a creative's exposure stock to halve while it is not shown (wear-out recovers;
    the "restoration" during a hiatus of Naik, Mantrala & Sawyer 1998). Assumption."""
    memory_slots: int = 3
    """K: creatives each person remembers for wear-out (1 … 8); each slot costs 6 bytes."""
    privacy_interaction: float = 1.0
    """Scale of a creative's creepiness relative to a personalized offer of the same
    explicitness level (privacy.creep_by_level); 0 = creative never feels creepy. Assumption:
    the same as an offer's."""

    def __post_init__(self) -> None:
        _check_int("count", self.count, 0, MAX_CREATIVES)
        _check_int("embedding_dim", self.embedding_dim, 1, 256)
        _check_int("themes", self.themes, 1, 64)
        _check_int("imagery_levels", self.imagery_levels, 1, 64)
        _check_int("tone_levels", self.tone_levels, 1, 64)
        _check_int("catalogue_seed", self.catalogue_seed, 0, 2**63 - 1)
        _check_int("memory_slots", self.memory_slots, 1, 8)
        shares = self.explicitness_shares
        if len(shares) != len(EXPLICITNESS_LEVELS):
            raise ValueError(f"creative.explicitness_shares must have one share per level "
                             f"{EXPLICITNESS_LEVELS}, got {shares!r}")
        for i, v in enumerate(shares):
            _check_nonneg("creative", f"explicitness_shares[{i}]", v)
        if abs(sum(shares) - 1.0) > 1e-9:
            raise ValueError(f"creative.explicitness_shares must sum to 1, got {shares!r} "
                             f"(sum {sum(shares)})")
        if not isinstance(self.catalogue_path, str):
            raise ValueError(f"creative.catalogue_path must be a file path string or '', "
                             f"got {self.catalogue_path!r}")
        if self.catalogue_path and self.count < 1:
            raise ValueError("creative.catalogue_path needs creative.count >= 1 (the number of "
                             "creatives in the file); count = 0 means no catalogue")
        for name in ("taste_spread", "appeal_spread", "category_tie", "match_strength",
                     "wear_rate", "privacy_interaction"):
            _check_nonneg("creative", name, getattr(self, name))
        _check_positive("creative", "recovery_half_life", self.recovery_half_life)

    @property
    def enabled(self) -> bool:
        return self.count > 0


def attribute_levels(model: CreativeModel, n_categories: int) -> dict[str, int]:
    """Number of levels of each attribute (in :data:`ATTRIBUTES` order)."""
    return {"theme": model.themes, "category": n_categories, "imagery": model.imagery_levels,
            "tone": model.tone_levels, "explicitness": len(EXPLICITNESS_LEVELS)}


@dataclass(frozen=True, eq=False)
class Catalogue:
    """A scenario's creatives and the fixed maps of the taste model (built by :func:`catalogue`)."""

    attributes: dict[str, np.ndarray]  # name -> (C,) int levels, read-only
    embeddings: np.ndarray  # (C, D) float32, unit rows, read-only
    feature_names: tuple[str, ...]  # (D,)
    level_offset: np.ndarray  # (B, C) int64 — row of q (0 … A−1) of each creative's level per attribute
    inv_norm: np.ndarray  # (C,) float32 — 1 / ‖P a_c‖
    creep_scale: np.ndarray  # (C,) float32 — privacy_interaction·creep_by_level[explicitness]
    taste_base: np.ndarray  # (A,) float32 — Pᵀμ (the shared taste in attribute form)
    taste_noise: np.ndarray  # (A, D) float32 — taste_spread·Pᵀ
    taste_category: np.ndarray  # (A, K) float32 — category_tie·PᵀP[:, j_k]
    match_offset: float  # β²(appeal² + spread²)/2, subtracted in the log multiplier
    recovery: float  # weekly stock retention 2^(−1/recovery_half_life)
    n_levels: int = field(default=0)  # A
    match_scale: np.ndarray = field(default=None)  # (C,) float32 — TASTE_SCALE / ‖P a_c‖

    @property
    def count(self) -> int:
        return int(self.inv_norm.size)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@lru_cache(maxsize=32)
def catalogue(model: CreativeModel, n_categories: int,
              creep_by_level: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Catalogue:
    """The catalogue of ``model`` (generated, or read from ``model.catalogue_path``).

    Raises ``ValueError`` naming the key for C < 1 or a file that does not match ``count``.
    """
    if model.count < 1:
        raise ValueError(f"creative.count must be >= 1 for a catalogue, got {model.count}")
    levels = attribute_levels(model, n_categories)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(model.catalogue_seed)))
    C, D = model.count, model.embedding_dim
    generated = {name: rng.integers(0, k, C) for name, k in levels.items() if name != "explicitness"}
    generated["explicitness"] = rng.choice(len(EXPLICITNESS_LEVELS), size=C,
                                           p=np.asarray(model.explicitness_shares))
    if model.catalogue_path:
        attrs = load_catalogue(model.catalogue_path, model, n_categories)
    else:
        attrs = {name: generated[name] for name in ATTRIBUTES}
    A = sum(levels.values())
    starts = np.cumsum([0, *levels.values()])[:-1]
    offset = np.stack([attrs[name].astype(np.int64) + start
                       for name, start in zip(ATTRIBUTES, starts, strict=True)])
    if D == A:
        P = np.eye(A)
        names = tuple(f"{name}_{EXPLICITNESS_LEVELS[j] if name == 'explicitness' else j}"
                      for name, k in levels.items() for j in range(k))
    else:
        P = rng.standard_normal((D, A)) / math.sqrt(D)
        names = tuple(f"embedding_{d}" for d in range(D))
    emb = P[:, offset].sum(axis=1).T  # (C, D) = (P a_c)ᵀ: the sum of each attribute's column
    norm = np.linalg.norm(emb, axis=1)
    norm = np.maximum(norm, 1e-12)
    emb = (emb / norm[:, None]).astype(F4)
    mu = rng.standard_normal(D) * model.appeal_spread
    cat_cols = P[:, starts[1]:starts[1] + n_categories]  # (D, K): direction of each category
    creep = np.asarray(creep_by_level, np.float64)[attrs["explicitness"]] * model.privacy_interaction
    return Catalogue(
        attributes={k: _readonly(v.astype(np.int64)) for k, v in attrs.items()},
        embeddings=_readonly(emb), feature_names=names, level_offset=offset,
        inv_norm=(1.0 / norm).astype(F4), match_scale=(TASTE_SCALE / norm).astype(F4),
        creep_scale=creep.astype(F4),
        taste_base=(P.T @ mu).astype(F4), taste_noise=(model.taste_spread * P.T).astype(F4),
        taste_category=(model.category_tie * P.T @ cat_cols).astype(F4),
        match_offset=0.5 * model.match_strength**2 * (model.appeal_spread**2 + model.taste_spread**2),
        recovery=2.0 ** (-1.0 / model.recovery_half_life), n_levels=A)


def write_catalogue(path: str | Path, attributes: dict[str, np.ndarray]) -> Path:
    """Write a catalogue CSV (module docstring format): creative ``i`` gets id ``i``."""
    path = Path(path)
    cols = [np.asarray(attributes[name]) for name in ATTRIBUTES]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CATALOGUE_COLUMNS)
        for i, row in enumerate(zip(*cols, strict=True)):
            w.writerow([i, *(int(v) for v in row)])
    return path


def load_catalogue(path: str | Path, model: CreativeModel, n_categories: int) -> dict[str, np.ndarray]:
    """Read a catalogue CSV; returns attribute name -> (C,) int64 levels, indexed by creative id.

    Raises ``ValueError`` naming the file, the line number and the field of the first malformed
    line, or ``creative.count`` when the file holds a different number of creatives.
    """
    path = Path(path)
    levels = attribute_levels(model, n_categories)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"creative.catalogue_path: cannot read {path}: {exc}") from exc
    lines = list(csv.reader(text.splitlines()))
    if not lines or tuple(c.strip() for c in lines[0]) != CATALOGUE_COLUMNS:
        got = lines[0] if lines else "an empty file"
        raise ValueError(f"catalogue {path} line 1: header must be {','.join(CATALOGUE_COLUMNS)}, "
                         f"got {got}")
    C = model.count
    out = {name: np.full(C, -1, np.int64) for name in ATTRIBUTES}
    seen = np.zeros(C, bool)
    rows = 0
    for lineno, fields_ in enumerate(lines[1:], start=2):
        if not fields_ or all(not f.strip() for f in fields_):
            continue  # blank line
        if len(fields_) != len(CATALOGUE_COLUMNS):
            raise ValueError(f"catalogue {path} line {lineno}: expected {len(CATALOGUE_COLUMNS)} "
                             f"fields ({','.join(CATALOGUE_COLUMNS)}), got {len(fields_)}")
        values = []
        for name, raw in zip(CATALOGUE_COLUMNS, fields_, strict=True):
            raw = raw.strip()
            hi = C if name == "creative_id" else levels[name]
            if name == "explicitness" and raw in EXPLICITNESS_LEVELS:
                raw = str(EXPLICITNESS_LEVELS.index(raw))
            try:
                v = int(raw)
            except ValueError:
                v = None
            if v is None or not 0 <= v < hi:
                valid = f"an integer in 0..{hi - 1}" + (
                    f" or one of {EXPLICITNESS_LEVELS}" if name == "explicitness" else "")
                if name == "creative_id":
                    valid += f" (creative.count = {C})"
                raise ValueError(f"catalogue {path} line {lineno}: field {name!r} must be {valid}, "
                                 f"got {raw!r}")
            values.append(v)
        cid = values[0]
        if seen[cid]:
            raise ValueError(f"catalogue {path} line {lineno}: field 'creative_id' {cid} appears twice")
        seen[cid] = True
        for name, v in zip(ATTRIBUTES, values[1:], strict=True):
            out[name][cid] = v
        rows += 1
    if rows != C:
        raise ValueError(f"creative.count ({C}) must equal the number of creatives in "
                         f"creative.catalogue_path {path} ({rows})")
    return out


# ---- per-person state ----------------------------------------------------------------------

NO_CREATIVE = np.int32(-1)
_BLOCK = 65_536
"""Contacted rows per block of the match gathers (2 MB of tastes: 3x faster at 10^6 rows)."""
TASTE_SCALE = 2.0**-12
"""Fixed-point unit of the stored int16 tastes."""
NEVER = np.int16(-10000)


def draw_tastes(cat: Catalogue, key: np.ndarray, category_pref: np.ndarray) -> np.ndarray:
    """Attribute-form tastes q = Pᵀt (A, m), int16 fixed point (:data:`TASTE_SCALE`), of new
    customers with row keys ``key`` and
    category preference shares ``category_pref`` (K, m)."""
    D = cat.taste_noise.shape[1]
    z = np.empty((D, key.size), F4)
    for pair in range((D + 1) // 2):
        z0, z1 = noise.normal_pair(key, 0, M.INIT_CREATIVE_TASTE, pair)
        z[2 * pair] = z0
        if 2 * pair + 1 < D:
            z[2 * pair + 1] = z1
    q = cat.taste_noise @ z
    K = category_pref.shape[0]
    q += cat.taste_category @ (F4(K) * category_pref.astype(F4) - F4(1.0))
    q += cat.taste_base[:, None]
    q *= F4(1.0 / TASTE_SCALE)
    np.rint(q, out=q)
    np.clip(q, -32767, 32767, out=q)
    return q.astype(np.int16)


@dataclass
class CreativeEffect:
    """This week's creative terms for the contacted rows (aligned with ``Marketing.contacted``)."""

    ids: np.ndarray  # (k,) int32 creative shown
    match: np.ndarray  # (k,) float32 latent taste·embedding
    wear: np.ndarray  # (k,) float32 wear-out multiplier applied
    log_mult: np.ndarray  # (k,) float32 log of the lift multiplier from match and wear
    slot: np.ndarray  # (k,) intp memory slot the exposure is booked in
    stock: np.ndarray  # (k,) float32 stock of the shown creative before the exposure (0 if new)
    stocks: np.ndarray  # (K, k) float32 all slots' stocks decayed to this week


def creative_effect(cat: Catalogue, match_strength: float, wear_rate: float, taste: np.ndarray,
                    mem_ids: np.ndarray, mem_stock: np.ndarray, mem_last: np.ndarray,
                    week: np.ndarray, rows: np.ndarray, ids: np.ndarray) -> CreativeEffect:
    """Match and wear-out of creative ``ids`` shown to ``rows`` (reads state, changes nothing)."""
    A = taste.shape[0]
    flat = taste.T.reshape(-1)  # person-major: a view of the F-ordered (A, n) array
    row_start = rows * A
    acc = np.zeros(rows.size, np.int32)
    for lo in range(0, rows.size, _BLOCK):  # blocks whose tastes stay in cache for all B gathers
        blk = slice(lo, lo + _BLOCK)
        blk_ids, blk_start, blk_acc = ids[blk], row_start[blk], acc[blk]
        for b in range(cat.level_offset.shape[0]):  # Σ_b q[j_b(c)]: one gather per attribute
            idx = cat.level_offset[b].take(blk_ids)
            idx += blk_start
            blk_acc += flat.take(idx)
    match = acc.astype(F4)
    match *= cat.match_scale.take(ids)
    # wear-out memory: stocks decayed to this week (one last-exposure week for all slots)
    dt = week.take(rows).astype(np.int32)
    dt -= mem_last.take(rows)
    decay = dt.astype(F4)
    decay *= F4(math.log(cat.recovery))
    np.exp(decay, out=decay)
    stocks = mem_stock.take(rows, axis=1)  # (K, k)
    stocks *= decay
    hit = mem_ids.take(rows, axis=1) == ids
    # the slot of the shown creative where remembered (key −1), else the weakest slot
    key = stocks.copy()
    np.copyto(key, F4(-1.0), where=hit)
    best = key[0].copy()
    slot = np.zeros(rows.size, np.intp)
    for k in range(1, key.shape[0]):  # first index wins ties, like argmin
        better = key[k] < best
        slot[better] = k
        np.minimum(best, key[k], out=best)
    stock = stocks.reshape(-1).take(slot * rows.size + np.arange(rows.size))
    stock *= best < 0  # a creative not remembered starts fresh
    wear_log = stock * F4(-wear_rate)
    log_mult = match * F4(match_strength)
    log_mult -= F4(cat.match_offset)
    log_mult += wear_log
    return CreativeEffect(ids, match, np.exp(wear_log), log_mult, slot, stock, stocks)


def expose(mem_ids: np.ndarray, mem_stock: np.ndarray, mem_last: np.ndarray, week: np.ndarray,
           rows: np.ndarray, eff: CreativeEffect) -> None:
    """Book this week's exposures in the wear-out memory (in place)."""
    if rows.size == 0:
        return
    stocks = eff.stocks
    # the shown creative's slot: its own stock + 1 (a replaced slot forgets its old creative)
    stocks.reshape(-1)[eff.slot * rows.size + np.arange(rows.size)] = eff.stock + F4(1.0)
    for k in range(stocks.shape[0]):  # one 1-D scatter per slot: ~10x faster than a 2-D one
        mem_stock[k][rows] = stocks[k]
    flat = eff.slot * mem_last.size
    flat += rows
    mem_ids.reshape(-1)[flat] = eff.ids
    mem_last[rows] = week[rows]


def check_creative_column(column: np.ndarray, count: int) -> np.ndarray:
    """``action[:, 3]`` as int32 creative ids; raises ``ValueError`` naming it and the valid range."""
    col = np.ascontiguousarray(column)  # one strided pass; the checks then read contiguous memory
    if not np.issubdtype(col.dtype, np.integer):
        if np.issubdtype(col.dtype, np.floating) and np.all(np.isfinite(col)) \
                and np.all(col == np.round(col)):
            col = col.astype(np.int64)
        else:
            raise ValueError(f"action[:, 3] (creative id) must hold integers, got dtype {col.dtype}")
    if col.size and (col.min() < 0 or col.max() >= count):
        row = int(np.flatnonzero((col < 0) | (col >= count))[0])
        raise ValueError(f"action[:, 3] (creative id) outside the catalogue: customer row {row} has "
                         f"{col[row]}, valid range is 0..{count - 1} (creative.count = {count})")
    return col.astype(np.int32)


def scenario_catalogue(scenario) -> Catalogue | None:
    """The catalogue of a :class:`rapport.envs.scenario.Scenario`, or None without one (cached)."""
    cm = scenario.creative
    if not cm.enabled:
        return None
    return catalogue(cm, scenario.offers.n_categories, tuple(scenario.privacy.creep_by_level))


def state_arrays(model: CreativeModel, n_categories: int, n: int) -> dict[str, np.ndarray]:
    """Zeroed per-person creative state for ``n`` rows (length-0 arrays when off)."""
    m = n if model.enabled else 0
    A = sum(attribute_levels(model, n_categories).values()) if model.enabled else 0
    K = model.memory_slots if model.enabled else 0
    return {"creative_taste": np.zeros((A, m), np.int16, order="F"),  # person-major
            "creative_ids": np.full((K, m), NO_CREATIVE, np.int32),
            "creative_stock": np.zeros((K, m), F4),
            "creative_last": np.full(m, NEVER, np.int16)}


class CatalogueView:
    """The firm's view of the creative catalogue on an env that has ``self.sim`` (a Simulator):
    shared by :class:`~rapport.envs.PopulationEnv` and :class:`~rapport.envs.CustomerEnv`."""

    sim: Any

    @property
    def creative_embeddings(self) -> np.ndarray:
        """(count, D) float32, read-only: the catalogue's embeddings (the firm knows its
        creatives); shape (0, 0) without a catalogue."""
        cat = self.sim.model.catalogue
        return np.zeros((0, 0), np.float32) if cat is None else cat.embeddings

    @property
    def creative_feature_names(self) -> tuple[str, ...]:
        """Names of the D embedding columns (empty without a catalogue)."""
        cat = self.sim.model.catalogue
        return () if cat is None else cat.feature_names

    @property
    def creative_attributes(self) -> dict[str, np.ndarray]:
        """Attribute name -> (count,) int levels (``theme, category, imagery, tone,
        explicitness``; explicitness indexes ``EXPLICITNESS_LEVELS``); empty without a catalogue."""
        cat = self.sim.model.catalogue
        return {} if cat is None else dict(cat.attributes)
